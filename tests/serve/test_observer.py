"""The served console without a browser: its session refuses every step and never locks, its
command line carries no password, and binding beyond loopback warns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from helpers import ROOT

from cutover_tui.errors import Refused
from cutover_tui.serve import is_loopback, observer_command
from cutover_tui.store.session import SERVED_READ_ONLY, Session, resolve_settings
from cutover_tui.work import jobs


def test_a_served_session_refuses_every_step_and_never_takes_the_lock(v2_db_url, env_file):
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=v2_db_url,
                                operator="observer").watching_only()
    with Session(settings) as session:
        assert session.read_only == SERVED_READ_ONLY
        steps = session.assess().steps
        assert steps and all(not s.allowed and SERVED_READ_ONLY in s.reasons for s in steps)
        with pytest.raises(Refused, match="Served read-only"), session.operator_lock():
            pass
        with pytest.raises(Refused, match="Served read-only"):
            jobs.backfill(session)
        assert session.lock_holder() is None


def test_the_served_command_carries_no_password(env_file):
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file,
                                database_url="postgresql://ops:s3cret-pw@db.internal/ternent", operator="ann")
    command = observer_command(settings, ROOT / "runbook.toml", "a notice")
    assert "s3cret-pw" not in command and "db.internal" not in command
    assert "tui --observer" in command and "--operator observer" in command


def test_only_loopback_counts_as_loopback():
    assert all(map(is_loopback, ("127.0.0.1", "localhost", "::1", "127.0.0.2")))
    assert not any(map(is_loopback, ("0.0.0.0", "10.0.0.5", "ops-host", "::")))


def test_binding_elsewhere_warns_that_the_page_has_no_authentication(v2_db_url, env_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"), "--env-file",
         str(env_file), "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": v2_db_url, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        warning = server.stderr.readline() if server.stderr else ""
    finally:
        server.terminate()
        server.communicate(timeout=20)
    assert warning.startswith("cutover: warning: serving on 0.0.0.0")
    assert "no authentication" in warning and "SSH tunnel or an authenticated proxy" in warning


def test_a_wrong_port_is_one_sentence(v2_db_url, env_file):
    result = subprocess.run(
        [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"), "--env-file",
         str(env_file), "serve", "--port", "70000"],
        env={**os.environ, "DATABASE_URL": v2_db_url, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "cutover: --port must be between 1 and 65535 (got 70000).\n"
