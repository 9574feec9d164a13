"""Two operators: one acts, the other reads and is told who holds the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psycopg
from helpers import ROOT

from cutover_tui.store.session import Session, resolve_settings


def _session(url, env_file, operator):
    return Session(resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file,
                                    database_url=url, operator=operator))


def test_second_console_reads_but_cannot_change(cutover):
    with _session(cutover.database_url, cutover.env_file, "alice") as alice, alice.operator_lock():
        code, out, _ = cutover("status", operator="bob")
        assert code == 0 and "held by alice" in out
        code, _, err = cutover("migrate", operator="bob")
        assert code == 1
        assert "The operator lock for this database is held by alice" in err and "since" in err
    assert cutover("migrate", operator="bob")[0] == 0


def test_lock_dies_with_its_console(cutover):
    """A console killed with -9 releases the lock with its database session."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from cutover_tui.store.session import Session, resolve_settings
        s = Session(resolve_settings(runbook_path=Path({str(ROOT / 'runbook.toml')!r}),
                    env_file=Path({str(cutover.env_file)!r}), database_url={cutover.database_url!r},
                    operator="carol"))
        with s.operator_lock():
            print("locked", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        code, _, err = cutover("migrate")
        assert code == 1 and "held by carol" in err
    finally:
        os.kill(child.pid, signal.SIGKILL)  # only the console, never the postmaster
        child.wait()
        child.stdout.close()
    # The server notices the dead client when its socket closes; wait for the backend to go.
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        for _ in range(200):
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cutover' "
                                "AND pid <> pg_backend_pid() AND datname = current_database()").fetchone()[0]:
                break
            conn.execute("SELECT pg_sleep(0.05)")
    code, out, _ = cutover("migrate")
    assert code == 0 and "Applied" in out
