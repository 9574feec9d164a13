"""kill -9 of the console in the middle of a backfill and of a verify, on real Postgres.

The console runs as a child process (`python -m cutover_tui.cli ... backfill`), exactly as an
operator starts it, and is killed with SIGKILL after a random delay (a seeded
`random.Random`, so the sequence of delays repeats); the server is never touched. Every
database is a copy of one seeded template taken before any backfill, so each round starts
from the same bytes as the uninterrupted reference run it is compared with.

Backfill: rounds of one fresh copy each; in a round the backfill is killed one to four times,
each kill landing in the run the previous kill left (so resumes of resumes are killed too),
then resumed to completion. After that completing resume: every content check of the verify
passes, and every v2 table equals the reference's row for row (one digest per table; on a
mismatch the differing rows are counted). The data carries the seed's planted anomalies, so
the rows the rules leave out travel through the checkpoints too: the completing resume must
report exactly the reference run's errors and warnings.

Verify: the same console killed during `verify` on the backfilled reference; the verify run
right after the last kill completes, passes every check, and nothing the dead consoles held
(advisory locks, temp tables, the operator lock) is left.

Fast (CI): 8,000 workspaces, at least 4 backfill and 3 verify kills. Full
(`CUTOVER_RELIABILITY=full`): the M data set, at least 20 and 5.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT

from cutover_tui.store.db import JOB_LOCK_KEY, OPERATOR_LOCK_KEY
from cutover_tui.store.lock import holder
from cutover_tui.work.verify import VerifyOptions, run_verify

from .support import V2_TABLES, WORKSPACES, copy_database, fingerprint, row_counts, scale, seeded

# Fast mode needs a backfill of a couple of seconds so that random kills land inside it.
CRASH_WORKSPACES = scale(8000, WORKSPACES)
BACKFILL_KILLS = scale(4, 20)  # kills that landed while the backfill run was in progress
VERIFY_KILLS = scale(3, 5)
# A bound, so that bad luck with the delays fails instead of looping. Generous: the suite runs
# on both cores (another test's load stretches the startup), and a resumed run first waits up
# to about a second for the killed console's statements to end.
MAX_ROUNDS = scale(12, 30)
CHILD_TIMEOUT = scale(300, 1200)


def _cli(url: str, work: Path, *args: str) -> list[str]:
    env = work / "deploy.env"
    if not env.exists():
        env.write_text("ACCOUNT_SCHEMA_V2_READS=false\n", encoding="utf-8")
    return [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"),
            "--database-url", url, "--env-file", str(env), "--operator", "crash-test", *args,
            "--report", str(work / f"{args[0]}-report.json"), "--json"]


def _drop(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def _content_failures(url: str) -> dict[str, dict]:
    """The content checks of a verify that did not pass (every mapped column of every row)."""
    report = run_verify(url, VerifyOptions())
    content = [c for c in report["checks"] if c["type"] == "content"]
    assert {c["table"] for c in content} == set(V2_TABLES)
    return {c["table"]: {k: c[k] for k in ("missingInV2", "extraInV2", "different", "examples")}
            for c in content if not c["ok"]}


def _passed_but_the_reported_loss(code: int, out: str) -> bool:
    """A finished verify of the seeded data: every check passed but the counts of the tables
    whose gap is exactly the rows the backfill reported as errors (the planted anomalies),
    which fail as the runbook wants (any count mismatch blocks cutover)."""
    failed = [c for c in json.loads(out)["checks"] if not c["ok"]]
    return code == 1 and bool(failed) and all(
        c["type"] == "count" and c["extraRows"] == c["unreportedMissing"] == 0 for c in failed)


def _rows_differing(reference: str, url: str, table: str) -> int:
    """Rows of `table` missing on either side or different in any column: a merge of both
    tables in id order (byte order, so that Python's string order agrees)."""
    query = f'SELECT id, md5(x::text) FROM {table} x ORDER BY id COLLATE "C"'
    with psycopg.connect(reference) as a, psycopg.connect(url) as b:
        left, right = a.cursor(name="left"), b.cursor(name="right")
        left.execute(query)
        right.execute(query)
        x, y, differing = left.fetchone(), right.fetchone(), 0
        while x or y:
            if x and y and x[0] == y[0]:
                differing += x[1] != y[1]
                x, y = left.fetchone(), right.fetchone()
            elif y is None or (x is not None and x[0] < y[0]):
                differing, x = differing + 1, left.fetchone()
            else:
                differing, y = differing + 1, right.fetchone()
        return differing


def _issues(report: dict) -> Counter:
    return Counter({(e["stage"], e.get("error") or e.get("warning")): e["count"]
                    for e in report["errors"] + report["warnings"]})


class _Child:
    """One console process, with what it held in the server at the moment it was killed."""

    def __init__(self, command: list[str], admin: psycopg.Connection, work: Path, app: str):
        self.admin, self.app = admin, app
        # Backends started after this instant are this child's (nothing else connects meanwhile).
        self.born = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        self.out, self.err = work / "child.out", work / "child.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
        self.started = time.monotonic()

    def _held(self) -> tuple[bool, int]:
        """(this child's job holds the job lock, its backends with a write transaction open)."""
        return self.admin.execute(
            """SELECT coalesce(bool_or(l.pid IS NOT NULL), false), count(*) FILTER (WHERE a.backend_xid IS NOT NULL)
               FROM pg_stat_activity a
               LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                    AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
               WHERE a.datname = current_database() AND a.application_name = %s AND a.backend_start > %s""",
            (JOB_LOCK_KEY >> 32, JOB_LOCK_KEY & 0xFFFFFFFF, self.app, self.born)).fetchone()

    def kill_after(self, delay: float) -> dict | None:
        """SIGKILL after `delay` s; None if it exited first, else what the kill interrupted."""
        try:
            self.process.wait(timeout=delay)
            return None
        except subprocess.TimeoutExpired:
            in_job, writing = self._held()
            os.kill(self.process.pid, signal.SIGKILL)  # the console only; its server stays up
            self.process.wait()
            return {"in_job": in_job, "writing": writing, "after": time.monotonic() - self.started}

    def finish(self) -> tuple[int, str, str]:
        self.process.wait(timeout=CHILD_TIMEOUT)
        return self.process.returncode, self.out.read_text(), self.err.read_text()


def _wait_for_dead_consoles(admin: psycopg.Connection, timeout: float = 30) -> float:
    """Until no backend of a killed console is left (each ends when its running statement
    does); returns how long that took."""
    started = time.monotonic()
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name LIKE 'cutover%%'").fetchone()[0]:
        assert time.monotonic() - started < timeout, "a killed console's backend outlived its statement"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def reference(pg_server_url, tmp_path_factory):
    """The seeded template (never backfilled, only copied) and one uninterrupted CLI backfill
    on a copy of it: its duration, report and per-table digests."""
    template = seeded(pg_server_url, workspaces=CRASH_WORKSPACES, clean=False)
    url = copy_database(pg_server_url, template)
    work = tmp_path_factory.mktemp("crash-reference")
    started = time.monotonic()
    done = subprocess.run(_cli(url, work, "backfill"), cwd=ROOT, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    seconds = time.monotonic() - started
    # Exit 1 is a finished backfill that reports the planted anomalies as errors.
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] and not report["cancelled"] and report["passes"] == 1
    assert not _content_failures(url)
    yield {"template": template, "url": url, "seconds": seconds, "report": report,
           "fingerprint": fingerprint(url), "rows": sum(row_counts(url).values())}
    _drop(pg_server_url, url)
    _drop(pg_server_url, template)


def test_kill_9_backfill_at_random_moments_then_resume_equals_uninterrupted(
        pg_server_url, reference, tmp_path, figures):
    rng = random.Random(20261124)
    work_seconds = reference["report"]["durationSeconds"]
    startup = max(reference["seconds"] - work_seconds, 0.3)  # interpreter, session, gate, report
    kills, children, resumes, refused, rounds, compared, lost = Counter(), 0, 0, 0, 0, 0, 0
    moments = []  # seconds from each killed console's start to its kill
    started = time.monotonic()
    while kills["in_job"] < BACKFILL_KILLS:
        assert rounds < MAX_ROUNDS, f"only {dict(kills)} after {rounds} rounds"
        rounds += 1
        url = copy_database(pg_server_url, reference["template"])
        with psycopg.connect(url, autocommit=True) as admin:
            command = _cli(url, tmp_path, "backfill")
            worked, after_kill = 0.0, False
            for _ in range(rng.randint(1, 4)):
                # Anywhere from the interpreter starting to past the end of what is left to do.
                delay = rng.uniform(0.2, startup + max(work_seconds - worked, 0.5) * 1.1)
                child = _Child(command, admin, tmp_path, "cutover backfill")
                children, resumes = children + 1, resumes + after_kill
                killed = child.kill_after(delay)
                if killed is None:
                    break
                after_kill = True
                kills["landed"] += 1
                kills["in_job"] += killed["in_job"]
                kills["writing"] += killed["writing"] > 0
                moments.append(round(killed["after"], 2))
                worked += max(killed["after"] - startup, 0)
            left = admin.execute("SELECT state FROM cutover.backfill_runs ORDER BY id DESC LIMIT 1").fetchone()
            # The operator runs it again at once, while the dead console's backends may still
            # be finishing their statements (and holding its locks).
            resumes += after_kill
            while True:
                children += 1
                code, out, err = _Child(command, admin, tmp_path, "cutover backfill").finish()
                if code == 1 and not out and ("is running" in err or "operator lock" in err):
                    refused += 1
                    _wait_for_dead_consoles(admin)
                    continue
                break
            assert code in (0, 1), err
            report = json.loads(out)
            state = admin.execute("SELECT state FROM cutover.backfill_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
        assert state == "done" and not report["cancelled"]
        # A run the kill left behind is continued, never started over.
        assert report["resumed"] is (left is not None and left[0] == "running")
        # Issue rows counted once however many times their ranges were interrupted.
        assert _issues(report) == _issues(reference["report"])
        assert not _content_failures(url)
        digests = fingerprint(url)
        differing = {t: _rows_differing(reference["url"], url, t) for t in V2_TABLES
                     if digests[t] != reference["fingerprint"][t]}
        compared += reference["rows"]
        lost += sum(differing.values())
        assert not differing, f"round {rounds}: rows differing from the uninterrupted run: {differing}"
        _drop(pg_server_url, url)
    figures.record("crash: kill -9 backfill, resume, compare with an uninterrupted run",
                   workspaces=CRASH_WORKSPACES, runs=children, rounds=rounds, faults_injected=kills["landed"],
                   kills_during_the_run=kills["in_job"], kills_with_a_write_transaction_open=kills["writing"],
                   resumes=resumes, resumes_refused_by_a_dead_consoles_lock=refused,
                   content_checks_after_resume=rounds, rows_compared=compared, rows_lost=lost,
                   uninterrupted_backfill_s=round(reference["seconds"], 1), kill_moments_s=moments,
                   seconds=round(time.monotonic() - started, 1))
    assert kills["in_job"] >= BACKFILL_KILLS and lost == 0


def test_kill_9_verify_at_random_moments_then_verify_passes(pg_server_url, reference, tmp_path, figures):
    rng = random.Random(4)
    url = reference["url"]
    # --full: every run reads every row, so each lasts as long as the timed one (a verify
    # trusting the last would end before most of the kills spread over that time).
    command = _cli(url, tmp_path, "verify", "--full")
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as admin:
        _wait_for_dead_consoles(admin)
        clean = _Child(command, admin, tmp_path, "cutover verify")
        code, out, err = clean.finish()
        verify_seconds = time.monotonic() - clean.started
        assert _passed_but_the_reported_loss(code, out), err
        kills, attempts, finished, moments = Counter(), 0, 0, []
        while kills["in_job"] < VERIFY_KILLS:
            attempts += 1
            assert attempts <= 4 * VERIFY_KILLS, f"only {dict(kills)} in {attempts} attempts"
            child = _Child(command, admin, tmp_path, "cutover verify")
            killed = child.kill_after(rng.uniform(0.2, verify_seconds * 1.05))
            if killed is None:  # it finished first: it must have passed like any other
                finished += 1
                assert _passed_but_the_reported_loss(*child.finish()[:2])
                continue
            kills["landed"] += 1
            kills["in_job"] += killed["in_job"]
            moments.append(round(killed["after"], 2))
        # Right after the last kill, as an operator would: it must run, not be refused.
        code, out, err = _Child(command, admin, tmp_path, "cutover verify").finish()
        assert _passed_but_the_reported_loss(code, out), err
        _wait_for_dead_consoles(admin)
        # Nothing of the dead consoles is left: no lock, no temp table, no operator lock.
        assert admin.execute("SELECT pg_try_advisory_lock(%s)", (JOB_LOCK_KEY,)).fetchone()[0]
        admin.execute("SELECT pg_advisory_unlock(%s)", (JOB_LOCK_KEY,))
        assert admin.execute("SELECT pg_try_advisory_lock(%s)", (OPERATOR_LOCK_KEY,)).fetchone()[0]
        admin.execute("SELECT pg_advisory_unlock(%s)", (OPERATOR_LOCK_KEY,))
        assert holder(admin) is None
        assert admin.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'").fetchone()[0] == 0
    # A verify only reads v2.
    assert fingerprint(url) == reference["fingerprint"]
    figures.record("crash: kill -9 verify, then verify", workspaces=CRASH_WORKSPACES,
                   runs=attempts + 2, faults_injected=kills["landed"], kills_during_the_run=kills["in_job"],
                   verifies_that_finished_before_their_kill=finished, rows_lost=0,
                   uninterrupted_verify_s=round(verify_seconds, 1), kill_moments_s=moments,
                   seconds=round(time.monotonic() - started, 1))
    assert kills["in_job"] >= VERIFY_KILLS

