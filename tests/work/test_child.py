"""The long jobs in a process of their own: the same reports, progress and checks as in-process,
the operator's pause and cancel passed on, a console that goes away cancelling its job, and every
failure raised in the parent as what it was."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from helpers import ROOT

from cutover_tui.errors import DatabaseUnreachable, Refused
from cutover_tui.store.db import JOB_LOCK_KEY
from cutover_tui.work.backfill import Backfill, BackfillOptions, BackfillProgress
from cutover_tui.work.child import backfill_in_child, verify_in_child
from cutover_tui.work.verify import VerifyOptions, run_verify

SMALL = BackfillOptions(batch_size=100, target_seconds=0.01)  # many short ranges: progress to see


def v2_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in SMALL.tables)


def test_a_backfill_in_a_child_reports_as_one_in_process(v2_db_url):
    seen: list[BackfillProgress] = []
    report = backfill_in_child(v2_db_url, "tester", SMALL, progress=seen.append)
    assert report["ok"] is False and report["passes"] >= 1  # the seed's planted anomalies are errors
    assert {p.table for p in seen} == set(SMALL.tables) and all(p.done <= p.total for p in seen)
    assert sum(s["inserted"] for s in report["stages"]) == v2_rows(v2_db_url) > 0
    again = Backfill(v2_db_url, "tester", SMALL).run()  # in-process, over what the child wrote: nothing left
    assert sum(s["inserted"] + s["updated"] for s in again["stages"]) == 0
    assert [e["count"] for e in again["errors"]] == [e["count"] for e in report["errors"]]


def test_a_verify_in_a_child_gives_the_checks_of_one_in_process(backfilled_url):
    checks: list[dict] = []
    report = verify_in_child(backfilled_url, VerifyOptions(), on_check=checks.append)
    here = run_verify(backfilled_url, VerifyOptions())
    names = [c.get("name") or f"{c['type']}:{c['table']}" for c in report["checks"]]
    assert names == [c.get("name") or f"{c['type']}:{c['table']}" for c in here["checks"]]
    assert [c["ok"] for c in report["checks"]] == [c["ok"] for c in here["checks"]]
    assert len(checks) == len(report["checks"])


def test_pause_and_cancel_reach_the_child(v2_db_url):
    pause, cancel = threading.Event(), threading.Event()
    seen: list[BackfillProgress] = []

    def progress(p: BackfillProgress) -> None:
        seen.append(p)
        if len(seen) == 1:
            pause.set()

    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        backfill_in_child(v2_db_url, "tester", SMALL, progress=progress, cancel=cancel, pause=pause)))
    worker.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # paused: a range in flight at the pause ends, then nothing moves
    held = len(seen)
    time.sleep(0.5)
    assert len(seen) == held
    cancel.set()
    worker.join(30)
    assert result["cancelled"] is True and not result["ok"]


def test_a_console_gone_cancels_its_job(v2_db_url):
    """The child's stdin closes when the console's process ends, even killed: the job stops
    between two ranges and says it was cancelled."""
    with subprocess.Popen([sys.executable, "-m", "cutover_tui.work.child"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=ROOT) as child:
        child.stdin.write(json.dumps({"job": "backfill", "url": v2_db_url, "operator": "tester",
                                      "options": SMALL.model_dump(mode="json")}) + "\n")
        child.stdin.flush()
        assert "progress" in json.loads(child.stdout.readline())
        child.stdin.close()
        lines = [json.loads(line) for line in child.stdout]
        assert child.wait(30) == 0
    assert lines[-1]["report"]["cancelled"] is True


def test_a_refusal_in_the_child_is_a_refusal_here(backfilled_url):
    with psycopg.connect(backfilled_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (JOB_LOCK_KEY,))
        with pytest.raises(Refused, match="Another backfill or verify is running"):
            verify_in_child(backfilled_url, VerifyOptions())


def test_a_database_error_in_the_child_is_that_error_here(v2_db_url):
    """Raised here by its SQLSTATE, the session says it as for a job in-process (here: the lock wait)."""
    with psycopg.connect(v2_db_url) as holder:
        holder.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            backfill_in_child(v2_db_url, "tester", SMALL)


def test_a_database_out_of_reach_is_said_as_in_process(pg_server_url):
    missing = pg_server_url.replace("/postgres?", "/no_such_database?")
    with pytest.raises(DatabaseUnreachable, match=r"no_such_database.*check --database-url"):
        backfill_in_child(missing, "tester", SMALL)
