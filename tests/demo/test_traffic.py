"""Demo traffic against the real stand-in API on a real (embedded) Postgres: the runbook walk
under load, and a mirror broken on purpose, found by verify and mended by its repair."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest
from helpers import ROOT, age_journal

from cutover_tui.demo.api import COOKIE_NAME, serve_api
from cutover_tui.demo.seed import seed_legacy
from cutover_tui.demo.traffic import Traffic, TrafficStats, demo_cookies, require_loopback, run_traffic
from cutover_tui.files.envfile import DUAL_WRITE, READS, WRITES, read_env_file
from cutover_tui.ops import transitions
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.work import api_check, jobs, migrate
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.verify import VerifyOptions, run_verify

READ_ACCOUNT, READ_USER = "ws_1", "user_1"  # verify-reads looks here; the traffic stays out of it
RATE = 40.0


def apply_v2(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
        ensure_console_schema(conn)


@pytest.fixture
def clean_db_url(empty_db_url) -> str:
    """Legacy schema seeded clean (no planted anomalies, so the backfill has no errors and C's gate
    can open), with Stage A applied."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=20, clean=True)
    apply_v2(empty_db_url)
    return empty_db_url


@pytest.fixture
def session(clean_db_url, env_file, tmp_path):
    legacy_db_url = clean_db_url
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=legacy_db_url,
                                operator="tester", report_dir=tmp_path / "reports", environ={})
    (tmp_path / "reports").mkdir()
    with Session(settings) as s:
        stored, _ = jobs.run_job(s, "backfill", lambda: Backfill(legacy_db_url, "tester", BackfillOptions()).run())
        assert stored.ok
        yield s


@pytest.fixture
def api(session, env_file):
    with serve_api(session.settings.database_url, env_file) as base:
        yield base


def flags(env_file) -> tuple[bool, bool, bool]:
    declared = read_env_file(env_file).declared
    return declared[READS], declared[WRITES], declared[DUAL_WRITE]


def failing(report: dict) -> list[dict]:
    return [c for c in report["checks"] if not c["ok"]]


def verify_ok(session: Session, traffic: Traffic | None = None) -> dict:
    """A verify recorded through the job runner (so the gates see it); must pass, content included.

    With traffic, the verify runs while the traffic is held at a request boundary: the API commits
    the primary and the mirror write in two transactions, so a verify that reads both stores
    while a write is between the two sees it on one side only (see the module's last test)."""
    url = session.settings.database_url
    box: dict = {}

    def work() -> dict:
        box["report"] = run_verify(url, VerifyOptions())
        return box["report"]

    if traffic is None:
        stored, _ = jobs.run_job(session, "verify", work)
    else:
        with traffic.paused():
            stored, _ = jobs.run_job(session, "verify", work)
    report = box["report"]
    assert {c["name"] for c in report["checks"] if c["type"] == "content"} >= {
        "content:accounts", "content:identities", "content:pixbooks", "content:pixbook_snapshots"}
    assert report["ok"] and stored.ok, failing(report)
    return report


def reads_ok(session: Session, base: str, cookie: str) -> None:
    report = api_check.run_verify_reads(session.settings.database_url, session.settings.env_file, api=base,
                                    cookie=cookie, account_id=READ_ACCOUNT)
    assert report["ok"], failing(report)


def promote(session: Session, stage: str) -> None:
    transitions.apply_change(session, transitions.plan_promotion(session, stage))


def steady(traffic: Traffic, seconds: float = 1.0) -> TrafficStats:
    time.sleep(seconds)
    stats = traffic.stats()
    assert traffic.running and stats.errors == 0, traffic.last_error
    return stats


def reader_cookie(base: str) -> str:
    with httpx.Client(base_url=base) as client:
        client.post("/v1/demo/session", json={"userId": READ_USER}).raise_for_status()
        return client.cookies[COOKIE_NAME]


# -- the engine on its own --------------------------------------------------------------------------

def test_only_loopback_and_bounded_arguments():
    assert require_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert require_loopback("http://localhost:1") == "http://localhost:1"
    assert require_loopback("http://[::1]:1") == "http://[::1]:1"
    for bad in ("http://10.0.0.1:80", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:80"):
        with pytest.raises(ValueError):
            require_loopback(bad)
    with pytest.raises(ValueError):
        Traffic("http://127.0.0.1:1", {"ws_1": "c"}, 0)
    with pytest.raises(ValueError):
        Traffic("http://127.0.0.1:1", {}, 10)


def test_errors_are_counted_never_raised():
    # Nothing listens on port 9 of loopback (discard, normally closed): every request fails.
    with Traffic("http://127.0.0.1:9", {"ws_1": "c"}, 50, max_seconds=5) as traffic:
        deadline = time.monotonic() + 5
        while traffic.stats().requests < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    stats = traffic.stats()
    assert not traffic.running
    assert stats.requests > 0 and stats.errors == stats.requests and stats.writes == 0, traffic.last_error
    assert stats.mirror_failures is None


def test_run_traffic_reports_about_once_a_second(session, api, env_file):
    verify_ok(session)
    promote(session, "C")
    seen: list[TrafficStats] = []
    final = run_traffic(api, session.settings.database_url, 30, 2.2, on_stats=seen.append)
    assert 2 <= len(seen) <= 4 and seen[-1].requests == final.requests
    assert final.errors == 0 and final.requests >= 40 and final.writes > 0
    assert 20 <= final.requests_per_second <= 35
    assert final.mirror_failures == 0 and 2.0 <= final.elapsed <= 4.0
    verify_ok(session)  # C mirrors every write to v2: the stores are in step


# -- the walk under load --------------------------------------------------------------------------

def test_the_runbook_walk_under_steady_traffic(session, api, env_file):
    url = session.settings.database_url
    reader = reader_cookie(api)
    verify_ok(session)  # G: before any traffic (B/G write v1 only, so traffic there would drift v2)
    reads_ok(session, api, reader)
    promote(session, "C")
    assert flags(env_file) == (True, False, False)
    cookies = demo_cookies(api, url, 3, exclude={READ_ACCOUNT})
    with Traffic(api, cookies, RATE, seed=7, max_seconds=120) as traffic:
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session, traffic)  # C: writes v1, mirror = read store v2
        promote(session, "D")
        assert flags(env_file) == (True, False, True)
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session, traffic)
        promote(session, "E")
        assert flags(env_file) == (True, True, True)
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session, traffic)
        # Roll back from E (v1 primary again, dual-write kept), verify, and come forward again.
        transitions.apply_change(session, transitions.plan_rollback(session))
        assert flags(env_file) == (True, False, True)
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session, traffic)
        promote(session, "E")
        steady(traffic)
        verify_ok(session, traffic)
        age_journal(url, 25)  # the confidence period has passed
        promote(session, "E'")
        e_steady_at = time.monotonic()
        assert flags(env_file) == (True, True, False)
        stats = steady(traffic)
        reads_ok(session, api, reader)
        # E': v2 only, legacy gets nothing. A verify now legitimately differs, and only in the
        # rows the traffic wrote since E' began: new ones extra in v2, changed ones different.
        with traffic.paused():
            drift = run_verify(url, VerifyOptions())
            since = traffic.writes_log(since=e_steady_at)
    written = {w.id for w in since} | {w.book_id for w in since if w.book_id}
    assert not drift["ok"] and since
    for check in (c for c in drift["checks"] if c["type"] == "content"):
        assert check["missingInV2"] == 0, check
        assert set(check["examples"]["extra"]) | {d["id"] for d in check["examples"]["different"]} <= written, check
    final = traffic.stats()
    assert final.errors == 0 and final.mirror_failures == 0, traffic.last_error
    assert final.writes > 50 and final.requests > stats.requests
    assert final.requests_per_second > RATE * 0.6


# -- a mirror broken on purpose -----------------------------------------------------------------------

BREAK = (("CREATE FUNCTION traffic_test_break() RETURNS trigger LANGUAGE plpgsql AS "
          "$$ BEGIN RAISE EXCEPTION 'mirror broken on purpose'; END $$"),
         ("CREATE TRIGGER traffic_test_break BEFORE INSERT ON pixbooks FOR EACH ROW "
          "EXECUTE FUNCTION traffic_test_break()"))
MEND = ("DROP TRIGGER traffic_test_break ON pixbooks", "DROP FUNCTION traffic_test_break()")


def run_sql(url: str, statements: tuple[str, ...]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def content(report: dict, table: str) -> dict:
    return next(c for c in report["checks"] if c.get("name") == f"content:{table}")


def test_a_broken_mirror_is_found_row_for_row_and_repaired(session, api, env_file):
    url = session.settings.database_url
    verify_ok(session)
    promote(session, "C")
    promote(session, "D")  # v1 primary, every write mirrored to v2
    cookies = demo_cookies(api, url, 3, exclude={READ_ACCOUNT})
    with Traffic(api, cookies, RATE, seed=11, max_seconds=60) as traffic:
        steady(traffic)
        before = traffic.stats().mirror_failures
        with traffic.paused():  # clean edges: no request is in flight when the break starts or ends
            run_sql(url, BREAK)
            broke_at = time.monotonic()
        time.sleep(2.0)
        with traffic.paused():
            run_sql(url, MEND)
            mended_at = time.monotonic()
        steady(traffic)
        with traffic.paused():
            done_at = time.monotonic()
            log = traffic.writes_log(until=done_at)
            failures = traffic.stats().mirror_failures - before
            found = run_verify(url, VerifyOptions())
            repaired = run_verify(url, VerifyOptions(repair=True))
            after = verify_ok(session)
        stats = traffic.stop()
    assert stats.errors == 0, traffic.last_error  # a mirror failure never fails the request

    # The books created while the mirror was broken never reached v2; every later write to them
    # (rename, remove, snapshot) failed its mirror too, and their snapshots are missing in v2.
    lost_books = {w.id for w in log if w.op == "create_book" and broke_at <= w.at < mended_at}
    assert lost_books, "the traffic created no book during the break: make the break longer"
    lost_snaps = {w.id for w in log if w.op == "save_snapshot" and w.book_id in lost_books}
    touching = [w for w in log if w.at >= broke_at and (
        (w.table == "pixbooks" and w.id in lost_books) or (w.op == "save_snapshot" and w.book_id in lost_books))]
    assert failures == len(touching)

    books, snaps = content(found, "pixbooks"), content(found, "pixbook_snapshots")
    assert books["missingInV2"] == len(lost_books) and books["different"] == books["extraInV2"] == 0
    assert set(books["examples"]["missing"]) == lost_books
    assert snaps["missingInV2"] == len(lost_snaps) and snaps["different"] == snaps["extraInV2"] == 0
    assert set(snaps["examples"]["missing"]) == lost_snaps
    others = [c for c in found["checks"] if c["type"] == "content" and c["table"] not in ("pixbooks", "pixbook_snapshots")]
    assert others and all(c["ok"] for c in others), others
    assert not found["ok"]

    fixes = {c["table"]: c for c in repaired["checks"] if c["type"] == "repair"}
    assert fixes["pixbooks"]["ok"] and fixes["pixbooks"]["inserted"] == len(lost_books)
    if lost_snaps:
        assert fixes["pixbook_snapshots"]["ok"] and fixes["pixbook_snapshots"]["inserted"] == len(lost_snaps)
    assert repaired["ok"], failing(repaired)
    assert after["ok"]


class WriteInFlight:
    """In D, an API rename of one account whose mirror write into v2 waits behind a row lock we
    hold: legacy has the new name, v2 not yet. `land()` lets the mirror through."""

    def __init__(self, session: Session, api: str) -> None:
        self.url = session.settings.database_url
        verify_ok(session)
        promote(session, "C")
        promote(session, "D")
        (self.account, cookie), = demo_cookies(api, self.url, 1, exclude={READ_ACCOUNT}).items()
        self.holder = psycopg.connect(self.url)
        self.holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (self.account,))
        self.result: dict = {}

        def rename() -> None:
            self.result["response"] = httpx.patch(
                f"{api}/v1/account/workspace", json={"accountId": self.account, "name": "In Flight"},
                headers={"cookie": f"{COOKIE_NAME}={cookie}"}, timeout=30)

        self.writer = threading.Thread(target=rename)

    def __enter__(self) -> WriteInFlight:
        self.writer.start()
        for _ in range(500):  # until the primary (legacy) write has committed
            with psycopg.connect(self.url) as conn:
                if conn.execute("SELECT name FROM platform_workspaces WHERE id = %s",
                                (self.account,)).fetchone()[0] == "In Flight":
                    break
            time.sleep(0.01)
        return self

    def land(self) -> None:
        self.holder.commit()
        self.writer.join(30)

    def __exit__(self, *exc_info: object) -> None:
        self.land()
        self.holder.close()
        assert self.result["response"].status_code == 200


def test_a_verify_sees_a_write_caught_between_primary_and_mirror(session, api, env_file):
    """Why the walk's verifies hold the traffic at a request boundary: in D the API commits the
    v1 write, then mirrors it to v2 in a second transaction. A verify that runs in between
    reports the row as different, although nothing is wrong once the mirror lands."""
    with WriteInFlight(session, api) as flight:
        mid = run_verify(flight.url, VerifyOptions())
    accounts = content(mid, "accounts")
    assert not mid["ok"] and accounts["different"] == 1
    assert [d["id"] for d in accounts["examples"]["different"]] == [flight.account]
    assert verify_ok(session)["ok"]  # the mirror landed: in step again


def test_a_write_that_reaches_its_mirror_while_verify_looks_again_is_no_difference(session, api, env_file):
    """The same write caught between primary and mirror, but the mirror lands while verify waits
    to look at the differing range again: the range settles and the verify passes."""
    with WriteInFlight(session, api) as flight:

        class MirrorLandsWhileVerifyWaits(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                flight.land()
                return super().wait(timeout)

        report = run_verify(flight.url, VerifyOptions(), cancel=MirrorLandsWhileVerifyWaits())
    accounts = content(report, "accounts")
    assert report["ok"], failing(report)
    assert accounts["rangesSettled"] == 1 and accounts["different"] == 0


def test_bounded_in_requests_and_time():
    with Traffic("http://127.0.0.1:9", {"a": "c", "b": "d"}, 200, max_requests=10, max_seconds=5) as traffic:
        time.sleep(0.5)
        assert not traffic.running
    assert 10 <= traffic.stats().requests <= 11  # each thread checks the shared bound before its next request
    started = time.monotonic()
    with Traffic("http://127.0.0.1:9", {"a": "c"}, 5, max_seconds=0.3) as traffic:
        time.sleep(0.6)
        assert not traffic.running
    assert time.monotonic() - started < 2
    with traffic.paused():  # pausing stopped traffic returns at once
        pass


def test_cli_demo_traffic_prints_figures_each_second(legacy_db_url, env_file, capsys):
    from helpers import ROOT as REPO

    from cutover_tui.cli import main
    from cutover_tui.demo.api import serve_api

    with serve_api(legacy_db_url, env_file) as base:
        code = main(["--runbook", str(REPO / "runbook.toml"), "demo", "traffic", "--api", base,
                     "--rate", "20", "--duration", "1.5", "--database-url", legacy_db_url])
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if "requests" in line]
    assert len(lines) >= 2 and "mirror failures" in lines[-1] and " 0 errors" in lines[-1]


@pytest.mark.parametrize("api, database, exit_code, says", [
    ("http://127.0.0.1:9", None, 1, "The stand-in API at http://127.0.0.1:9 gave no demo session"),
    ("http://127.0.0.1:9", "postgresql://x:pw@/nodb?host=/nonexistent", 3, "Cannot connect to postgresql://x:***@"),
])
def test_cli_demo_traffic_fails_in_one_sentence(legacy_db_url, capsys, api, database, exit_code, says):
    from helpers import ROOT as REPO

    from cutover_tui.cli import main

    code = main(["--runbook", str(REPO / "runbook.toml"), "demo", "traffic", "--api", api, "--rate", "5",
                 "--duration", "1", "--database-url", database or legacy_db_url])
    err = capsys.readouterr().err
    assert code == exit_code and says in err and err.count("\n") == 1 and "unexpected" not in err
