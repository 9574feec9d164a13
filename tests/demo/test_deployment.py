"""The demo's account API as a real process and a real deploy of it: the flags it started with hold
until `apply` starts a new process with the env file's, `read-back` shows what runs, sessions and
traffic ride through the restart, and nothing is left running. Real processes, no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from helpers import ROOT

from cutover_tui.demo.api import SECURE_COOKIE_NAME, session_cookie
from cutover_tui.demo.deployment import STATE_FILE, start_api, stop_api
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.demo.run import DemoEnvironment, write_demo_runbook
from cutover_tui.demo.traffic import Traffic, demo_cookies
from cutover_tui.files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file, write_flags
from cutover_tui.rules.runbook import load_runbook

ACCOUNT, USER = "ws_1", "user_1"
OLD_FLAGS = f"{READS}=false\n{WRITES}=false\n{DUAL_WRITE}=false\n{ALIAS}=true\n"


def deployment(folder, command: str, env_file=None, **extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m cutover_tui.demo.deployment COMMAND` as the console runs it: from the folder."""
    environ = {k: v for k, v in os.environ.items() if k != "CUTOVER_ENV_FILE"}
    environ["PYTHONPATH"] = str(ROOT)  # where the package is, whether installed or not
    if env_file is not None:
        environ["CUTOVER_ENV_FILE"] = str(env_file)
    return subprocess.run([sys.executable, "-m", "cutover_tui.demo.deployment", command], cwd=folder,
                          env=environ | extra, capture_output=True, text=True, timeout=90)


def state(folder) -> dict:
    return json.loads((folder / STATE_FILE).read_text())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def sign_in(base: str, user: str = USER) -> str:
    """A session token; the demo env file's base URL is https, so it goes under SECURE_COOKIE_NAME."""
    with httpx.Client(base_url=base, timeout=10) as client:
        client.post("/v1/demo/session", json={"userId": user}).raise_for_status()
        return session_cookie(client.cookies)[1]


def first_user_name(base: str, cookie: str) -> str:
    response = httpx.get(f"{base}/v1/account/users", params={"accountId": ACCOUNT},
                         cookies={SECURE_COOKIE_NAME: cookie}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["users"][0]["displayName"]


def only_in_v2(url: str, base: str, cookie: str) -> str:
    """Give the account's first identity a name in v2 only: the read store shows in the answers."""
    first = httpx.get(f"{base}/v1/account/users", params={"accountId": ACCOUNT}, cookies={SECURE_COOKIE_NAME: cookie},
                      timeout=10).json()["users"][0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE identities SET display_name = 'Only In V2' WHERE id = %s", (first["id"],))
    return first["displayName"]


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "demo"
    path.mkdir()
    return path


@pytest.fixture
def deployed(folder, backfilled_url, env_file):
    """The API running as its own process from `folder`, flags from the env file as it is now."""
    try:
        yield start_api(folder, backfilled_url, env_file, os.getpid())
    finally:
        stop_api(folder)


def test_the_api_keeps_the_flags_it_started_with(deployed, folder, env_file, backfilled_url):
    cookie = sign_in(deployed)
    legacy_name = only_in_v2(backfilled_url, deployed, cookie)
    assert first_user_name(deployed, cookie) == legacy_name
    assert deployment(folder, "read-back").stdout == OLD_FLAGS

    write_flags(read_env_file(env_file), {READS: True})
    assert first_user_name(deployed, cookie) == legacy_name  # the file changed; the process did not
    shown = deployment(folder, "read-back")
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, OLD_FLAGS, "")


def test_apply_restarts_the_api_with_the_env_files_flags(deployed, folder, env_file, backfilled_url):
    before = state(folder)
    cookie = sign_in(deployed)
    with psycopg.connect(backfilled_url) as conn:  # BetterAuth's way: the token's hash, in the database
        assert conn.execute("SELECT user_id FROM auth_sessions WHERE token_hash = %s",
                            (hashlib.sha256(cookie.encode()).hexdigest(),)).fetchone() == (USER,)
    legacy_name = only_in_v2(backfilled_url, deployed, cookie)
    write_flags(read_env_file(env_file), {READS: True})

    done = deployment(folder, "apply", env_file)
    assert done.returncode == 0, done.stderr
    after = state(folder)
    lines = done.stdout.splitlines()
    assert lines == [f"starting the account API with {env_file} …",
                     f"new process {after['pid']} answers; stopping {before['pid']}", "applied"]
    assert after["pid"] != before["pid"] and not alive(before["pid"]) and alive(after["pid"])
    assert after["port"] == before["port"] and after["owner_pid"] == before["owner_pid"] == os.getpid()
    assert first_user_name(deployed, cookie) == "Only In V2" != legacy_name  # same URL, same cookie, v2 reads
    assert deployment(folder, "read-back").stdout == OLD_FLAGS.replace(f"{READS}=false", f"{READS}=true")


def test_only_the_env_file_decides_and_an_absent_flag_is_not_read_back(deployed, folder, env_file):
    text = DEMO_ENV.replace(f"{ALIAS}=true\n", "").replace(f"{WRITES}=false", f"{WRITES}=yes")
    env_file.write_text(text + f"{WRITES}=on\n", encoding="utf-8")  # the last assignment wins
    # A flag in the deploying shell's environment is not the file's, so it does not reach the API.
    done = deployment(folder, "apply", env_file, **{DUAL_WRITE: "true", ALIAS: "false"})
    assert done.returncode == 0, done.stderr
    assert deployment(folder, "read-back").stdout == f"{READS}=false\n{WRITES}=on\n{DUAL_WRITE}=false\n"


def test_traffic_rides_through_an_apply(deployed, folder, env_file, backfilled_url):
    cookies = demo_cookies(deployed, backfilled_url, 2, exclude={ACCOUNT})
    traffic = Traffic(deployed, cookies, 40, seed=3, max_seconds=60)
    try:
        traffic.start()
        while traffic.stats().requests < 20:
            time.sleep(0.05)
        # A flag the traffic does not depend on: a store switch under running writes is C's business.
        write_flags(read_env_file(env_file), {ALIAS: False})
        done = deployment(folder, "apply", env_file)
        assert done.returncode == 0, done.stderr
        through = traffic.stats()  # requests in flight during the restart may have failed, counted
        while traffic.stats().requests < through.requests + 30:
            assert traffic.running, traffic.last_error
            time.sleep(0.05)
        after = traffic.stats()
    finally:
        traffic.stop()
    assert after.errors == through.errors, traffic.last_error  # the same cookies work on the new process
    assert after.writes > through.writes
    assert f"{ALIAS}=false" in deployment(folder, "read-back").stdout


def test_the_api_leaves_when_its_owner_is_gone(folder, legacy_db_url, env_file):
    owner = subprocess.Popen(["sleep", "60"])
    try:
        start_api(folder, legacy_db_url, env_file, owner.pid)
        pid = state(folder)["pid"]
        assert alive(pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        owner.kill()
        owner.wait()
        stop_api(folder)


def test_bad_deploys_fail_in_one_sentence_and_leave_the_api_running(deployed, folder, tmp_path):
    pid = state(folder)["pid"]
    for env_file, says in ((None, "CUTOVER_ENV_FILE is not set"), (tmp_path / "missing.env", "does not exist")):
        done = deployment(folder, "apply", env_file)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert says in done.stderr and done.stderr.count("\n") == 1 and done.stderr.endswith(".\n")
    assert state(folder)["pid"] == pid and alive(pid)

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    for command in ("apply", "read-back"):
        done = deployment(empty, command, tmp_path / "deploy.env")
        assert done.returncode == 1 and "No demo account API" in done.stderr and done.stderr.count("\n") == 1


def test_the_demo_runbooks_deploy_commands_apply_the_env_file(folder, backfilled_url, env_file):
    source = load_runbook(ROOT / "runbook.toml")
    demo = DemoEnvironment(folder=folder, database_url=backfilled_url, server_version="18", env_file=env_file,
                           report_dir=folder / "reports")
    runbook = load_runbook(write_demo_runbook(source, demo))
    assert runbook.folder == folder.resolve() and runbook.deploy is not None
    assert runbook.paths.env_file == env_file.resolve() and runbook.paths.sql_dir == source.paths.sql_dir.resolve()
    assert runbook.paths.report_dir == (folder / "reports").resolve() and runbook.deploy.timeout_seconds == 60
    assert shlex.split(runbook.deploy.apply) == [sys.executable, "-m", "cutover_tui.demo.deployment", "apply"]
    try:
        start_api(folder, backfilled_url, env_file, os.getpid())
        write_flags(read_env_file(env_file), {READS: True})
        environ = os.environ | {"CUTOVER_ENV_FILE": str(env_file), "PYTHONPATH": str(ROOT)}
        for command in (runbook.deploy.apply, runbook.deploy.read_back):  # as shell commands, from its folder
            done = subprocess.run(command, shell=True, cwd=runbook.folder, env=environ, capture_output=True,
                                  text=True, timeout=90)
            assert done.returncode == 0, done.stderr
        assert f"{READS}=true" in done.stdout.splitlines()
    finally:
        stop_api(folder)
