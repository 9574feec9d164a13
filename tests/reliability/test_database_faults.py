"""Database faults in the middle of a backfill and of a verify, on real Postgres.

The faults: the server restarted (a fast shutdown, then a start on the same data folder),
the console's connections killed with `pg_terminate_backend`, a `statement_timeout`, and a
table locked by another session past the console's `lock_timeout`. Each must end in one
clear sentence on stderr (exit 3 when the database was lost, 1 when it refused us; never a
traceback or the password), and leave a state from which simply running the command again
completes: the backfill with v2 equal, row for row, to an uninterrupted run on an identical
copy; the verify with every check passing.

The tests restart their server, so they run on a Postgres of their own, never the session's.
Every database is a copy of one seeded template. The console runs as a child process, as an
operator starts it; the restart and termination are also injected into the engine
in-process, from its progress callback, several times in a row (resumes of resumes).

To be sure a fault lands mid-run even on small data, the CLI tests hold the last table the
job reaches (v2 `pixbook_snapshots`) from another session, wait until the job is blocked on
it (everything before it is committed), and inject the fault then; that holder dies with the
restart and is released before the re-run.

Fast (CI): the harness's 400 workspaces. Full (`CUTOVER_RELIABILITY=full`): the M data set,
and more faults in the in-process chains.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, TEST_POSTGRES
from psycopg import sql

from cutover_tui.demo.embedded import embedded_server
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.errors import Refused
from cutover_tui.store.db import JOB_WORKERS_KEY
from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.work import backfill, jobs
from cutover_tui.work.backfill import Backfill, BackfillOptions, BackfillProgress

from .support import V2_TABLES, copy_database, fingerprint, row_counts, scale, seeded

# In every database URL here (each comes from the server's), so that "the password never
# shows" is really tested; the embedded server trusts local connections and never asks for it.
PASSWORD = "faults-s3cret-pw"
LAST_TABLE = "pixbook_snapshots"  # the v2 table the backfill and the verify reach last
CHILD_TIMEOUT = scale(120, 900)
WAIT_FOR_JOB = scale(60, 300)  # seconds until the job must be blocked on the held table
STATEMENT_TIMEOUT = "2s"  # below the console's 5 s lock_timeout, above any of its statements
ENGINE_FAULTS = scale(4, 6)  # faults in a row in the in-process chain, restarts and terminations in turn


# --- the server, the data and the reference ------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """This module's own Postgres: its tests restart it, and the session's server is shared."""
    # cleanup() stops it, restarted or not: pgserver tracks the new postmaster
    with embedded_server("cutover-faults-pg-", TEST_POSTGRES) as handle:
        yield handle


def restart(server) -> float:
    """Stop the server (fast shutdown: every session is terminated) and start it again on the
    same data folder and socket; returns the seconds it was down."""
    before = server.get_uri()
    started = time.monotonic()
    server.stop()
    with server._lock:  # what pgserver's own start() holds around this
        server.ensure_postgres_running()
    assert server.get_uri() == before
    return time.monotonic() - started


def with_password(url: str) -> str:
    assert "postgres:@" in url
    return url.replace("postgres:@", f"postgres:{PASSWORD}@", 1)


@dataclass
class World:
    server_url: str
    template: str  # seeded, v2 applied and empty; nobody connects to it after the fixture
    expected: dict[str, str]  # v2 digests after one uninterrupted backfill of a copy
    counts: dict[str, int]  # and its v2 row counts
    verify_db: str  # that backfilled reference itself (with its stored report), for the verifies


def env_file(folder: Path) -> Path:
    path = folder / "deploy.env"
    if not path.exists():
        path.write_text(DEMO_ENV, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(server, tmp_path_factory) -> World:
    server_url = with_password(server.get_uri())
    template = seeded(server_url, clean=True)  # clean: a completed backfill exits 0
    reference = copy_database(server_url, template)
    folder = tmp_path_factory.mktemp("faults-reference")
    # Through the job, as the CLI runs it: verify's gate wants a stored backfill report.
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file(folder),
                                database_url=reference, operator="reference", report_dir=folder)
    with Session(settings) as session:
        stored, _ = jobs.backfill(session, report_path=folder / "backfill.json")
    assert stored.ok
    return World(server_url, template, fingerprint(reference), row_counts(reference), reference)


@pytest.fixture
def copy(world) -> Iterator[str]:
    """A fresh copy of the seeded template, dropped afterwards (M copies are large)."""
    url = copy_database(world.server_url, world.template)
    yield url
    with psycopg.connect(world.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(psycopg.conninfo.conninfo_to_dict(url)["dbname"])))


# --- the console as a child process -----------------------------------------------------------


def cli(url: str, folder: Path, command: str) -> list[str]:
    return [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"),
            "--database-url", url, "--env-file", str(env_file(folder)), "--operator", "x", command,
            "--report", str(folder / f"{command}-{uuid.uuid4().hex[:6]}.json"), "--json"]


def start(command: list[str]) -> subprocess.Popen:
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.started_at = time.monotonic()
    return child


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float  # from start to exit: how long the operator waited for the error


def finish(child: subprocess.Popen) -> Outcome:
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    return Outcome(child.returncode, out, err, round(time.monotonic() - child.started_at, 2))


def rerun(command: list[str]) -> tuple[dict, float]:
    """The same command again, as the error sentence tells the operator: it must complete.
    Returns its report and how long it took."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"], report.get("errors") or [c for c in report.get("checks", []) if not c["ok"]]
    return report, round(time.monotonic() - started, 2)


def one_sentence(outcome: Outcome, code: int, *says: str) -> str:
    """The exit code, and stderr exactly one line: the console's own sentence, with what it must say."""
    err = outcome.err
    assert outcome.code == code, err
    assert err.startswith("cutover: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and PASSWORD not in err, err
    for words in says:
        assert words in err, err
    assert outcome.out == ""  # no report for a run that did not finish
    return err.strip()


LOST = ("cutover: Lost the database at postgresql://postgres:***@", "run the command again")


def record(figures, test: str, outcome: Outcome, sentence: str, rerun_seconds: float, rows_lost: int = 0,
           **more) -> None:
    """One fault through the CLI, then one re-run that completed."""
    figures.record(test, faults_injected=1, runs=2, reruns_completed=1, rows_lost=rows_lost,
                   exit_code=outcome.code, error=sentence, seconds_to_error=outcome.seconds,
                   rerun_seconds=rerun_seconds, **more)


@contextmanager
def held(url: str, table: str, mode: str) -> Iterator[int]:
    """Another session holding `table` in `mode` until the block ends or that session dies;
    yields its pid."""
    conn = psycopg.connect(url, application_name="fault injector")
    try:
        conn.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))
        yield conn.info.backend_pid
    finally:
        conn.close()  # its transaction ends: the lock is gone (a restart has already ended it)


def wait_until_blocked(url: str, application: str, child: subprocess.Popen) -> None:
    """Until a backend of `application` waits for the held LAST_TABLE: the job is mid-run."""
    # On the table itself: two workers filling one table also wait, on its extension lock.
    wait_until_waiting(url, child, "l.locktype = 'relation' AND l.relation = %s::regclass", LAST_TABLE,
                       application=application, what=LAST_TABLE)


def wait_until_waiting(url: str, child: subprocess.Popen, lock: str, *params, application: str,
                       what: str) -> None:
    """Until a backend of `application` waits for a lock matching `lock` (over pg_locks l)."""
    deadline = time.monotonic() + WAIT_FOR_JOB
    with psycopg.connect(url, autocommit=True, application_name="fault injector") as admin:
        while time.monotonic() < deadline:
            if admin.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                             f"WHERE NOT l.granted AND {lock} AND a.application_name = %s",
                             (*params, application)).fetchone()[0]:
                return
            if child.poll() is not None:
                pytest.fail(f"the job ended before it waited on {what}: {child.communicate()}")
            time.sleep(0.02)
    child.kill()
    pytest.fail(f"the job never waited on {what} within {WAIT_FOR_JOB} s")


def terminate_console(url: str) -> int:
    """pg_terminate_backend on every connection of the console (its session and its job's)."""
    with psycopg.connect(url, autocommit=True, application_name="fault injector") as admin:
        return admin.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND application_name LIKE 'cutover%%'").fetchone()[0]


def set_statement_timeout(url: str, value: str | None) -> None:
    """For every new session of the database (the console's too), as a DBA would set it."""
    name = sql.Identifier(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(name, sql.Literal(value))
                     if value else sql.SQL("ALTER DATABASE {} RESET statement_timeout").format(name))


# --- what the state after a fault must be -------------------------------------------------------


def v2_rows(url: str) -> int:
    return sum(row_counts(url).values())


def rows_lost(world: World, url: str) -> int:
    now = row_counts(url)
    return sum(max(0, world.counts[t] - now[t]) for t in V2_TABLES)


def backfill_state(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM cutover.backfill_runs ORDER BY id")]


def assert_stopped_mid_backfill(world: World, url: str) -> int:
    """Some of v2 is committed, not all of it, and the run is left for a re-run to resume."""
    copied = v2_rows(url)
    assert 0 < copied < sum(world.counts.values())
    assert backfill_state(url)[-1] in ("running", "failed")
    return copied


def assert_backfill_completed(world: World, url: str, report: dict, *, resumed: bool = True) -> None:
    assert report["resumed"] is resumed  # it continued from the checkpoints the fault left
    assert fingerprint(url) == world.expected
    assert backfill_state(url)[-1] == "done"


def verify_reports(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM cutover.reports WHERE kind = 'verify'").fetchone()[0]


def assert_verify_completed(report: dict) -> None:
    content = [c for c in report["checks"] if c["type"] == "content"]
    assert {c["table"] for c in content} == set(V2_TABLES)
    assert all(c["ok"] for c in report["checks"])


# --- the server restarted -------------------------------------------------------------------


def test_server_restart_mid_backfill_then_rerun_completes(server, world, copy, tmp_path, figures):
    command = cli(copy, tmp_path, "backfill")
    with held(copy, LAST_TABLE, "SHARE"):  # SHARE: reads go on, the job's writes wait
        child = start(command)
        wait_until_blocked(copy, "cutover backfill", child)
        down = restart(server)
    outcome = finish(child)
    sentence = one_sentence(outcome, 3, *LOST)
    copied = assert_stopped_mid_backfill(world, copy)
    report, again = rerun(command)
    assert_backfill_completed(world, copy, report)
    record(figures, "server restart mid-backfill (CLI)", outcome, sentence, again, rows_lost(world, copy),
           v2_rows_committed_at_fault=copied, server_down_seconds=round(down, 2))


def test_server_restart_mid_verify_then_rerun_completes(server, world, tmp_path, figures):
    command = cli(world.verify_db, tmp_path, "verify")
    before = verify_reports(world.verify_db)
    with held(world.verify_db, LAST_TABLE, "ACCESS EXCLUSIVE"):  # the verify's reads of it wait
        child = start(command)
        wait_until_blocked(world.verify_db, "cutover verify", child)
        down = restart(server)
    outcome = finish(child)
    sentence = one_sentence(outcome, 3, *LOST)
    assert verify_reports(world.verify_db) == before  # no half a verify on record
    report, again = rerun(command)
    assert_verify_completed(report)
    assert verify_reports(world.verify_db) == before + 1
    record(figures, "server restart mid-verify (CLI)", outcome, sentence, again, server_down_seconds=round(down, 2))


def fault_after(batches: int, unfinished: Callable[[str], bool], inject: Callable[[], None]
                ) -> tuple[Callable[[BackfillProgress], None], threading.Event]:
    """A backfill progress callback that injects the fault once: after at least `batches`
    committed batches, on a table that still has rows to copy, so that a worker is about to
    use the connection the fault kills. (The progress's own `done` counts this run's rows
    only, not the checkpoint's, so it cannot tell.)"""
    calls, fired, guard = [0], threading.Event(), threading.Lock()

    def progress(p: BackfillProgress) -> None:
        with guard:
            calls[0] += 1
            due = calls[0] >= batches and not fired.is_set() and unfinished(p.table)
            if due:
                fired.set()
        if due:
            inject()

    return progress, fired


def test_engine_faults_in_a_row_then_a_run_completes(server, world, copy, figures):
    """Server restarts and pg_terminate_backend in turn, each from the backfill's own progress
    callback right after a committed batch, each run resuming what the previous left; then a
    run completes.

    The other worker may be between tables when the fault lands; it then connects afresh and
    goes on until the failure stops the pass, so where a faulted run stops varies: what must
    hold is that every faulted run fails, is left for a resume, and loses nothing."""
    total = sum(world.counts.values())
    at_fault: list[int] = []

    def restart_server() -> None:
        at_fault.append(v2_rows(copy))
        restart(server)

    def terminate() -> None:
        at_fault.append(v2_rows(copy))
        with psycopg.connect(copy, autocommit=True, application_name="fault injector") as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND application_name = 'cutover backfill'")

    committed = []
    for number in range(ENGINE_FAULTS):
        # Early in each run (small first batches, so that even the fast data has many).
        progress, fired = fault_after(2, lambda table: row_counts(copy)[table] < world.counts[table],
                                      restart_server if number % 2 == 0 else terminate)
        with pytest.raises(psycopg.OperationalError):
            Backfill(copy, "op", BackfillOptions(batch_size=scale(50, 5000)), progress=progress).run()
        assert fired.is_set()
        assert at_fault[-1] < total  # the fault landed mid-run
        assert backfill_state(copy)[-1] in ("running", "failed")  # left for a resume, never "done"
        committed.append(v2_rows(copy))
    # What a faulted run committed stays: v2 never shrinks from one run to the next.
    assert committed == sorted(committed) and committed[0] > 0
    started = time.monotonic()
    report = Backfill(copy, "op", BackfillOptions()).run()
    assert report["ok"]
    assert_backfill_completed(world, copy, report)
    figures.record(f"server restart and pg_terminate_backend in turn mid-backfill, {ENGINE_FAULTS} in a row "
                   "(engine)", faults_injected=ENGINE_FAULTS, restarts=(ENGINE_FAULTS + 1) // 2,
                   terminations=ENGINE_FAULTS // 2, runs=ENGINE_FAULTS + 1, reruns_completed=1,
                   rows_lost=rows_lost(world, copy), error="psycopg.OperationalError raised to the caller",
                   v2_rows_at_each_fault=at_fault, v2_rows_when_each_faulted_run_ended=committed,
                   rerun_seconds=round(time.monotonic() - started, 2))


# --- the console's connections terminated ---------------------------------------------------------


def test_terminated_backfill_says_so_and_a_rerun_completes(world, copy, tmp_path, figures):
    command = cli(copy, tmp_path, "backfill")
    with held(copy, LAST_TABLE, "SHARE"):
        child = start(command)
        wait_until_blocked(copy, "cutover backfill", child)
        killed = terminate_console(copy)
        outcome = finish(child)
    assert killed >= 2  # the console's session and at least the job's blocked connection
    sentence = one_sentence(outcome, 3, *LOST)
    copied = assert_stopped_mid_backfill(world, copy)
    report, again = rerun(command)
    assert_backfill_completed(world, copy, report)
    record(figures, "pg_terminate_backend mid-backfill (CLI)", outcome, sentence, again, rows_lost(world, copy),
           backends_terminated=killed, v2_rows_committed_at_fault=copied)


def test_terminated_verify_says_so_and_a_rerun_completes(world, tmp_path, figures):
    command = cli(world.verify_db, tmp_path, "verify")
    before = verify_reports(world.verify_db)
    with held(world.verify_db, LAST_TABLE, "ACCESS EXCLUSIVE"):
        child = start(command)
        wait_until_blocked(world.verify_db, "cutover verify", child)
        killed = terminate_console(world.verify_db)
        outcome = finish(child)
    assert killed >= 2
    sentence = one_sentence(outcome, 3, *LOST)
    assert verify_reports(world.verify_db) == before
    report, again = rerun(command)
    assert_verify_completed(report)
    record(figures, "pg_terminate_backend mid-verify (CLI)", outcome, sentence, again, backends_terminated=killed)


# --- statement_timeout ---------------------------------------------------------------------------


def test_statement_timeout_mid_backfill_is_named_and_a_rerun_completes(world, copy, tmp_path, figures):
    command = cli(copy, tmp_path, "backfill")
    set_statement_timeout(copy, STATEMENT_TIMEOUT)
    # The held table makes the job's write to it the statement that runs too long.
    with held(copy, LAST_TABLE, "SHARE"):
        outcome = finish(start(command))
    # The database is up: 1, not "lost" (3).
    sentence = one_sentence(outcome, 1, f"statement_timeout ({STATEMENT_TIMEOUT})", "was cancelled",
                            "nothing committed was lost", "run the command again")
    copied = assert_stopped_mid_backfill(world, copy)
    assert backfill_state(copy)[-1] == "failed"  # its own connection said so before it gave up
    set_statement_timeout(copy, None)
    report, again = rerun(command)
    assert_backfill_completed(world, copy, report)
    record(figures, "statement_timeout mid-backfill (CLI)", outcome, sentence, again, rows_lost(world, copy),
           v2_rows_committed_at_fault=copied)


def test_statement_timeout_mid_verify_is_named_and_a_rerun_completes(world, tmp_path, figures):
    command = cli(world.verify_db, tmp_path, "verify")
    before = verify_reports(world.verify_db)
    set_statement_timeout(world.verify_db, STATEMENT_TIMEOUT)
    try:
        with held(world.verify_db, LAST_TABLE, "ACCESS EXCLUSIVE"):
            outcome = finish(start(command))
    finally:
        set_statement_timeout(world.verify_db, None)  # the shared verify database must stay usable
    sentence = one_sentence(outcome, 1, f"statement_timeout ({STATEMENT_TIMEOUT})", "was cancelled",
                            "run the command again")
    assert verify_reports(world.verify_db) == before
    report, again = rerun(command)
    assert_verify_completed(report)
    record(figures, "statement_timeout mid-verify (CLI)", outcome, sentence, again)


# --- a table locked past lock_timeout ---------------------------------------------------------------


def test_tables_locked_past_lock_timeout_mid_backfill(world, copy, tmp_path, figures):
    """First the first table, locked before anything is copied; then, on the run after, the
    last one, with everything before it committed; then a run completes."""
    command = cli(copy, tmp_path, "backfill")
    sentences, seconds, copied = [], [], []
    for table, mode, lock_name in (("accounts", "ACCESS EXCLUSIVE", "AccessExclusiveLock"),
                                   (LAST_TABLE, "SHARE", "ShareLock")):
        with held(copy, table, mode) as pid:
            outcome = finish(start(command))
        sentences.append(one_sentence(outcome, 1, f"Table {table} is locked by another session (pid {pid}, "
                                      f"{lock_name})", "lock_timeout", "nothing committed was lost",
                                      "run the command again"))
        seconds.append(outcome.seconds)
        copied.append(v2_rows(copy))
    assert copied[0] == 0  # accounts come first: it stopped before any row
    assert_stopped_mid_backfill(world, copy)
    report, again = rerun(command)
    assert_backfill_completed(world, copy, report)
    figures.record("accounts (ACCESS EXCLUSIVE), then pixbook_snapshots (SHARE) locked past lock_timeout "
                   "mid-backfill (CLI)", faults_injected=2, runs=3, reruns_completed=1,
                   rows_lost=rows_lost(world, copy), exit_code=[1, 1], error=sentences, seconds_to_error=seconds,
                   rerun_seconds=again, v2_rows_committed_at_fault=copied)


def test_table_locked_past_lock_timeout_mid_verify(world, tmp_path, figures):
    command = cli(world.verify_db, tmp_path, "verify")
    before = verify_reports(world.verify_db)
    with held(world.verify_db, "pixbooks", "ACCESS EXCLUSIVE") as pid:
        outcome = finish(start(command))
    sentence = one_sentence(outcome, 1, f"Table pixbooks is locked by another session (pid {pid}, "
                            "AccessExclusiveLock)", "lock_timeout", "run the command again")
    assert verify_reports(world.verify_db) == before
    report, again = rerun(command)
    assert_verify_completed(report)
    record(figures, "pixbooks locked (ACCESS EXCLUSIVE) past lock_timeout mid-verify (CLI)", outcome, sentence, again)


# --- deadlocks, and a killed console's sessions ------------------------------------------------------

# An application's trigger on the last table: every insert statement first takes an advisory
# lock that the injector holds, so the injector can close a real lock cycle with the job.
FAULT_KEY = 4242


def _trigger(url: str, body: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION public.fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$;
            CREATE TRIGGER fault AFTER INSERT OR UPDATE ON public.{LAST_TABLE}
                FOR EACH STATEMENT EXECUTE FUNCTION public.fault();""")


def _drop_trigger(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER fault ON public.{LAST_TABLE}; DROP FUNCTION public.fault()")


def _advisory(key: int) -> tuple[str, int, int]:
    return "l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s", key >> 32, key & 0xFFFFFFFF


def test_a_deadlock_mid_backfill_is_run_again_and_the_run_completes(world, copy, tmp_path, figures):
    """A real lock cycle with another session: the server rolls back the job's transaction,
    which runs it again once the other session is done; the run completes without an error."""
    _trigger(copy, f"PERFORM pg_advisory_xact_lock({FAULT_KEY});")
    command = cli(copy, tmp_path, "backfill")
    with psycopg.connect(copy, application_name="fault injector") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (FAULT_KEY,))
        child = start(command)
        lock, *key = _advisory(FAULT_KEY)
        wait_until_waiting(copy, child, lock, *key, application="cutover backfill", what="the trigger's lock")
        # The job holds the table (ROW EXCLUSIVE) and waits for us; we now wait for the table:
        # a cycle, which the job's own deadlock check (it waited first) breaks by rolling back.
        other.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(LAST_TABLE)))
        other.commit()
        other.execute("SELECT pg_advisory_unlock(%s)", (FAULT_KEY,))
        outcome = finish(child)
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)
    assert report["ok"], report["errors"]
    retried = {st["stage"]: st["retriedTransactions"] for st in report["stages"]}
    assert retried[LAST_TABLE] >= 1 and sum(retried.values()) == retried[LAST_TABLE]
    _drop_trigger(copy)
    assert_backfill_completed(world, copy, report, resumed=False)
    figures.record("a deadlock with another session mid-backfill (CLI)", faults_injected=1, runs=1,
                   exit_code=0, transactions_retried=retried[LAST_TABLE], rows_lost=rows_lost(world, copy),
                   seconds=outcome.seconds)


def test_a_deadlock_on_every_attempt_ends_in_one_sentence_and_a_rerun_completes(world, copy, tmp_path, figures):
    _trigger(copy, "IF EXISTS (SELECT 1 FROM public.fault_switch) THEN "
                   "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END IF;")
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.fault_switch (on_ boolean); INSERT INTO public.fault_switch VALUES (true)")
    command = cli(copy, tmp_path, "backfill")
    outcome = finish(start(command))
    sentence = one_sentence(outcome, 1, "rolled back one of the console's transactions because it crossed another "
                            "session's locks (deadlock detected)", "nothing committed was lost",
                            "run the command again")
    copied = assert_stopped_mid_backfill(world, copy)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("DROP TABLE public.fault_switch")
    _drop_trigger(copy)
    report, again = rerun(command)
    assert_backfill_completed(world, copy, report)
    record(figures, "a deadlock on every attempt mid-backfill (CLI)", outcome, sentence, again,
           rows_lost(world, copy), v2_rows_committed_at_fault=copied)


@contextmanager
def a_killed_consoles_worker(url: str) -> Iterator[psycopg.Connection]:
    """A backfill worker session whose console was killed: it still runs its last statement."""
    conn = psycopg.connect(url, autocommit=True, application_name="cutover backfill")
    try:
        conn.execute("SELECT pg_advisory_lock_shared(%s)", (JOB_WORKERS_KEY,))
        yield conn
    finally:
        conn.close()


def test_a_run_waits_for_a_killed_consoles_workers_before_it_writes(world, copy, tmp_path):
    command = cli(copy, tmp_path, "backfill")
    with a_killed_consoles_worker(copy):
        child = start(command)
        lock, *key = _advisory(JOB_WORKERS_KEY)
        wait_until_waiting(copy, child, lock, *key, application="cutover backfill", what="the earlier workers")
        assert v2_rows(copy) == 0 and backfill_state(copy) == []  # it waits before anything
    outcome = finish(child)
    assert outcome.code == 0, outcome.err
    assert_backfill_completed(world, copy, json.loads(outcome.out), resumed=False)


def test_a_killed_consoles_worker_that_never_ends_is_named(copy, monkeypatch):
    monkeypatch.setattr(backfill, "WORKERS_GONE_SECONDS", 1)
    with a_killed_consoles_worker(copy) as worker:
        pid = worker.info.backend_pid
        with pytest.raises(Refused) as refused:
            Backfill(copy, "x", BackfillOptions()).run()
    assert (f"Sessions of an earlier backfill whose console is gone (pid {pid}) were still "
            "running after 1 s; end them with SELECT pg_terminate_backend(pid)") in str(refused.value)
    assert backfill_state(copy) == [] and v2_rows(copy) == 0
