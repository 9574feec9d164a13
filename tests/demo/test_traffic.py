"""Demo traffic against the real stand-in API on a real (embedded) Postgres: the runbook walk
under load with every verify passing by its stage's rule, a corruption planted at each stage and
caught there, and a mirror broken on purpose, found by verify and mended by its repair."""

from __future__ import annotations

import os
import threading
import time

import httpx
import psycopg
import pytest
from helpers import ROOT, age_journal

from cutover_tui.demo.api import serve_api, session_cookie
from cutover_tui.demo.deployment import environment_of, start_api, stop_api
from cutover_tui.demo.run import DemoEnvironment, write_demo_runbook
from cutover_tui.demo.seed import seed_legacy
from cutover_tui.demo.traffic import WRITES as WRITE_KINDS
from cutover_tui.demo.traffic import Traffic, TrafficStats, demo_cookies, require_loopback, run_traffic
from cutover_tui.files.envfile import DUAL_WRITE, READS, WRITES, read_env_file, write_flags
from cutover_tui.ops import deploy as deployment
from cutover_tui.ops import transitions
from cutover_tui.reports.models import VerifyCheck
from cutover_tui.reports.present import check_line
from cutover_tui.rules.runbook import load_runbook
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.work import api_check, jobs, migrate
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.verify import VerifyOptions, run_verify

READ_ACCOUNT, READ_USER = "ws_1", "user_1"  # verify-reads looks here; the traffic stays out of it
RATE = 200.0  # operations per second (the rehearsal rate)
ACCOUNTS = 10  # each account's requests go one at a time: enough of them to keep RATE up


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
def folder(tmp_path, monkeypatch):
    """The demo's folder: its runbook file, whose [deploy] commands restart the API, and the API's
    state file. The commands run from it, and find the package as an installed console would."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    path = tmp_path / "demo"
    path.mkdir()
    return path


@pytest.fixture
def session(clean_db_url, env_file, tmp_path, folder):
    legacy_db_url = clean_db_url
    demo = DemoEnvironment(folder=folder, database_url=legacy_db_url, server_version="", env_file=env_file,
                           report_dir=tmp_path / "reports")
    runbook = write_demo_runbook(load_runbook(ROOT / "runbook.toml"), demo)
    settings = resolve_settings(runbook_path=runbook, env_file=env_file, database_url=legacy_db_url,
                                operator="tester", report_dir=tmp_path / "reports", environ={})
    (tmp_path / "reports").mkdir()
    with Session(settings) as s:
        stored, _ = jobs.run_job(s, "backfill", lambda: Backfill(legacy_db_url, "tester", BackfillOptions()).run())
        assert stored.ok
        yield s


@pytest.fixture
def api(session, env_file, folder):
    """The stand-in API as its own process, with the flags of the env file as it is now."""
    try:
        yield start_api(folder, session.settings.database_url, env_file, os.getpid())
    finally:
        stop_api(folder)


@pytest.fixture
def deploy(session, api):
    """deploy(): the console's deploy after a flag write: the demo runbook's apply restarts the API
    (same address, same sessions) with the env file's flags, which it reads only when it starts,
    and its read_back shows them running."""
    def deploy() -> None:
        outcome = deployment.deploy(session, lambda line: None)
        assert outcome.entry.detail["outcome"] == "deployed"
    return deploy


def flags(env_file) -> tuple[bool, bool, bool]:
    declared = read_env_file(env_file).declared
    return declared[READS], declared[WRITES], declared[DUAL_WRITE]


def failing(report: dict) -> list[dict]:
    return [c for c in report["checks"] if not c["ok"]]


def verify(session: Session, options: VerifyOptions | None = None) -> dict:
    """A verify as the console runs it (jobs.verify: the stage it counts for decides what matches),
    recorded so the gates see it, with no pause of whatever traffic is running."""
    stored, report = jobs.verify(session, options)
    body = report.model_dump(mode="json", by_alias=True)
    assert stored.ok == body["ok"]
    return body


def verify_ok(session: Session) -> dict:
    """A verify that must pass, content included."""
    report = verify(session)
    assert {c["name"] for c in report["checks"] if c["type"] == "content"} >= {
        "content:accounts", "content:identities", "content:pixbooks", "content:pixbook_snapshots"}
    assert report["ok"], failing(report)
    return report


def reads_ok(session: Session, base: str, cookie: str) -> None:
    """The API read check, kept like the console keeps it (D's gate asks for one after C's deploy)."""
    box: dict = {}

    def work() -> dict:
        box["report"] = api_check.run_verify_reads(session.settings.database_url, session.settings.env_file,
                                                   api=base, cookie=cookie, account_id=READ_ACCOUNT)
        return box["report"]

    stored, _ = jobs.run_job(session, "verify-reads", work)
    assert box["report"]["ok"] and stored.ok, failing(box["report"])


def promote(session: Session, stage: str) -> None:
    transitions.apply_change(session, transitions.plan_promotion(session, stage))


def to_d(session: Session, api: str, deploy) -> None:
    """C deployed and its API read check passed, then D deployed: v1 primary, every write mirrored to v2."""
    verify_ok(session)
    promote(session, "C")
    deploy()
    reads_ok(session, api, reader_cookie(api))
    promote(session, "D")
    deploy()


def deployed(deploy, traffic: Traffic) -> float:
    """Deploy with the traffic held between two requests: a request caught by the restart may fail
    (test_deployment shows the traffic riding through); here every request must succeed. Returns
    the seconds the traffic was held."""
    started = time.monotonic()
    with traffic.paused():
        deploy()
    return time.monotonic() - started


def steady(traffic: Traffic, seconds: float = 1.0) -> TrafficStats:
    time.sleep(seconds)
    stats = traffic.stats()
    assert traffic.running and stats.errors == 0, traffic.last_error
    return stats


def reader_cookie(base: str) -> str:
    with httpx.Client(base_url=base) as client:
        client.post("/v1/demo/session", json={"userId": READ_USER}).raise_for_status()
        return session_cookie(client.cookies)[1]


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


def test_traffic_makes_every_kind_of_write_without_errors(backfilled_url, env_file):
    """One account at a modest rate, so its random stream (fixed by the seed) plays out the same
    each run: every kind of write, each mirrored to v2 (D) without a failure or a mismatch."""
    write_flags(read_env_file(env_file), {READS: True, DUAL_WRITE: True})
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        cookies = demo_cookies(base, backfilled_url, 1, exclude={READ_ACCOUNT})
        (cookie,) = cookies.values()
        assert cookie.startswith("__Secure-better-auth.session_token=")  # the demo env file's base URL is https
        with Traffic(base, cookies, 50, seed=5, max_requests=400, max_seconds=60) as traffic:
            while traffic.running:
                time.sleep(0.1)
        stats = traffic.stats()
    assert stats.errors == 0 and stats.requests == 400, traffic.last_error
    assert stats.mirror_failures == stats.result_mismatches == 0
    log = traffic.writes_log()
    assert {w.op for w in log} == set(WRITE_KINDS) and stats.writes == len(log)
    # Every row the traffic wrote, or changed with a write, reads alike in both stores (or is gone from both).
    touched = {table: {w.id for w in log if w.table == table} for table in MIRRORED}
    touched["pixbooks"] |= {b for w in log if w.op == "remove_identity" for b in w.also}
    touched["account_members"] |= {m for w in log if w.op in ("create_account", "remove_account") for m in w.also}
    with psycopg.connect(backfilled_url) as conn:
        for table, (legacy, v2) in MIRRORED.items():
            ids = sorted(touched[table])
            assert ids and conn.execute(legacy, (ids,)).fetchall() == conn.execute(v2, (ids,)).fetchall(), table


MIRRORED = {  # the business columns of each table, legacy and v2
    "accounts": ("SELECT id, name FROM platform_workspaces WHERE id = ANY(%s) ORDER BY id",
                 "SELECT id, name FROM accounts WHERE id = ANY(%s) ORDER BY id"),
    "account_members": ("SELECT id, workspace_id, user_id, role, status FROM platform_workspace_members "
                        "WHERE id = ANY(%s) ORDER BY id",
                        "SELECT id, account_id, user_id, role, status FROM account_members "
                        "WHERE id = ANY(%s) ORDER BY id"),
    "identities": ("SELECT id, workspace_id, display_name, user_key, status FROM platform_managed_users "
                   "WHERE id = ANY(%s) ORDER BY id",
                   "SELECT id, account_id, display_name, user_key, status FROM identities "
                   "WHERE id = ANY(%s) ORDER BY id"),
    "pixbooks": ("SELECT id, managed_user_id, name, coalesce(nullif(btrim(collection_id), ''), 'primary'), status, "
                 "current_version FROM platform_books WHERE id = ANY(%s) ORDER BY id",  # §3's collection rule
                 "SELECT id, identity_id, name, collection_id, status, current_version FROM pixbooks "
                 "WHERE id = ANY(%s) ORDER BY id"),
    "pixbook_snapshots": ("SELECT id, book_id, version, cipher_sha256 FROM platform_book_snapshots "
                          "WHERE id = ANY(%s) ORDER BY id",
                          "SELECT id, pixbook_id, version, cipher_sha256 FROM pixbook_snapshots "
                          "WHERE id = ANY(%s) ORDER BY id"),
}


def test_run_traffic_reports_about_once_a_second(session, api, deploy):
    verify_ok(session)
    promote(session, "C")
    deploy()
    seen: list[TrafficStats] = []
    final = run_traffic(api, session.settings.database_url, 30, 2.2, on_stats=seen.append)
    assert 2 <= len(seen) <= 4 and seen[-1].requests == final.requests
    assert final.errors == 0 and final.requests >= 40 and final.writes > 0
    assert 20 <= final.requests_per_second <= 35
    assert final.mirror_failures == final.result_mismatches == 0 and 2.0 <= final.elapsed <= 4.0
    verify_ok(session)  # C mirrors every write to v2: the stores are in step


# -- the walk under load --------------------------------------------------------------------------

def content_of(report: dict) -> dict[str, dict]:
    return {c["table"]: c for c in report["checks"] if c["type"] == "content"}


def test_the_runbook_walk_under_steady_traffic(session, api, deploy, env_file):
    """G, C, D, E, a rollback to D and E again, then E' with three verifies: every verify runs
    beside live traffic (never held) and passes by its stage's rule, and the archive's verify gate
    holds in E' while v2 keeps taking writes."""
    url = session.settings.database_url
    reader = reader_cookie(api)
    verify_ok(session)  # G: before any traffic (B/G write v1 only, so traffic there would drift v2)
    reads_ok(session, api, reader)
    promote(session, "C")
    assert flags(env_file) == (True, False, False)
    deploy()
    cookies = demo_cookies(api, url, ACCOUNTS, exclude={READ_ACCOUNT})
    held = 0.0  # seconds the traffic was held for deploys
    with Traffic(api, cookies, RATE, seed=7, max_seconds=180) as traffic:
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session)  # C: writes v1, mirror = read store v2
        promote(session, "D")
        assert flags(env_file) == (True, False, True)
        held += deployed(deploy, traffic)
        steady(traffic)
        reads_ok(session, api, reader)
        in_d = verify_ok(session)
        # Each store writes its own audit rows (fresh ids) and timestamps: counted per store, not failed.
        audit = content_of(in_d)["audit_events"]
        assert audit["rule"] == "mirrored" and audit["legacyAuditSinceBackfill"] > 0 and audit["v2AuditSinceBackfill"] > 0
        assert "legacy's own audit events since the backfill" in check_line(VerifyCheck.model_validate(audit))
        promote(session, "E")
        assert flags(env_file) == (True, True, True)
        held += deployed(deploy, traffic)
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session)
        # Roll back from E (v1 primary again, dual-write kept), verify, and come forward again.
        transitions.apply_change(session, transitions.plan_rollback(session))
        assert flags(env_file) == (True, False, True)
        held += deployed(deploy, traffic)
        steady(traffic)
        reads_ok(session, api, reader)
        verify_ok(session)
        promote(session, "E")
        held += deployed(deploy, traffic)
        steady(traffic)
        verify_ok(session)
        age_journal(url, 25)  # the confidence period has passed
        promote(session, "E'")
        assert flags(env_file) == (True, True, False)
        held += deployed(deploy, traffic)
        e_steady_at = time.monotonic()  # from here the running API writes v2 only
        stats = steady(traffic)
        reads_ok(session, api, reader)
        # E': legacy stands still, v2 takes every write; what v2 wrote since E' began is set aside.
        steady_reports = []
        for _ in range(3):
            steady(traffic)
            steady_reports.append(verify_ok(session))
        since = traffic.writes_log(since=e_steady_at)
    new_rows = {t: c.get("newInV2", 0) for t, c in content_of(steady_reports[-1]).items()}
    created = {w.table for w in since if w.op.startswith("create_")} - {"accounts"}
    assert created and all(new_rows[t] > 0 for t in created), (created, new_rows)
    assert all(c["rule"] == "E'" for c in content_of(steady_reports[-1]).values())
    counts = {c["table"]: c for c in steady_reports[-1]["checks"] if c["type"] == "count"}
    assert all(c["ok"] for c in counts.values()) and counts["identities"]["newCount"] > counts["identities"]["oldCount"]
    transitions.close_rollback_window(session)
    archive = session.assess().step("archive")
    assert not any("verifies must all have passed" in r for r in archive.reasons), archive.reasons
    final = traffic.stats()
    assert final.errors == 0 and final.mirror_failures == 0 and final.result_mismatches == 0, traffic.last_error
    assert final.writes > 100 and final.requests > stats.requests
    assert final.requests / (final.elapsed - held) > RATE * 0.6


# Business-column corruptions no API write makes, one per stage, outside the accounts the traffic writes.
CORRUPTIONS = {
    # C and D: legacy (the primary) changed without a mirror, updated_at moved as a write moves it.
    "C": ("accounts", "UPDATE platform_workspaces SET name = name || ' (unmirrored)', updated_at = now() "
                      "WHERE id = %s RETURNING id"),
    # D, E, E': v2 changed behind the API's back, its updated_at left as it was.
    "D": ("pixbooks", "UPDATE pixbooks SET name = name || '!' WHERE account_id = %s AND id = "
                      "(SELECT min(id) FROM pixbooks WHERE account_id = %s) RETURNING id"),
    "E": ("identities", "UPDATE identities SET display_name = display_name || '!' WHERE account_id = %s AND id = "
                        "(SELECT min(id) FROM identities WHERE account_id = %s) RETURNING id"),
    "E'": ("accounts", "UPDATE accounts SET name = name || '!' WHERE id = %s RETURNING id"),
}


def planted(url: str, stage: str, account: str) -> tuple[str, str, tuple]:
    """Plant the stage's corruption; returns the table, the row, and how to put it back."""
    table, statement = CORRUPTIONS[stage]
    with psycopg.connect(url, autocommit=True) as conn:
        snapshot = conn.execute("SELECT (SELECT to_jsonb(w) FROM platform_workspaces w WHERE id = %s), "
                                "(SELECT to_jsonb(a) FROM accounts a WHERE id = %s)", (account, account)).fetchone()
        params = (account,) * statement.count("%s")
        row = conn.execute(statement, params).fetchone()[0]
        undo = {"accounts": "SELECT 1", "pixbooks": "UPDATE pixbooks SET name = left(name, -1) WHERE id = %s",
                "identities": "UPDATE identities SET display_name = left(display_name, -1) WHERE id = %s"}[table]
    return table, row, (undo, snapshot)


def put_back(url: str, stage: str, row: str, undo: tuple) -> None:
    statement, (legacy, v2) = undo
    with psycopg.connect(url, autocommit=True) as conn:
        if stage == "C":
            conn.execute("UPDATE platform_workspaces SET name = %s, updated_at = %s::timestamptz WHERE id = %s",
                         (legacy["name"], legacy["updated_at"], row))
        elif stage == "E'":
            conn.execute("UPDATE accounts SET name = %s WHERE id = %s", (v2["name"], row))
        else:
            conn.execute(statement, (row,))


def test_a_corruption_planted_at_each_stage_is_caught_at_that_stage(session, api, deploy):
    """C, D, E and E' under live traffic: each stage's planted corruption of a business column fails
    that stage's verify on exactly that row; put back, the verify passes and the walk goes on."""
    url = session.settings.database_url
    verify_ok(session)
    promote(session, "C")
    deploy()
    cookies = demo_cookies(api, url, ACCOUNTS, exclude={READ_ACCOUNT})
    quiet = next(a for a in demo_cookies(api, url, ACCOUNTS + 2, exclude={READ_ACCOUNT}) if a not in cookies)
    with Traffic(api, cookies, RATE, seed=13, max_seconds=180) as traffic:
        for stage in ("C", "D", "E", "E'"):
            if stage == "D":
                reads_ok(session, api, reader_cookie(api))
            if stage != "C":
                if stage == "E'":
                    age_journal(url, 25)
                promote(session, stage)
                deployed(deploy, traffic)
            steady(traffic)
            table, row, undo = planted(url, stage, quiet)
            caught = verify(session)
            check = content_of(caught)[table]
            assert not caught["ok"] and not check["ok"], stage
            assert [d["id"] for d in check["examples"]["different"]] == [row], (stage, check)
            assert [c["key"] for c in failing_checks(caught)] == [f"content:{table}"], (stage, failing(caught))
            put_back(url, stage, row, undo)
            verify_ok(session)
    assert traffic.stats().errors == 0, traffic.last_error


def failing_checks(report: dict) -> list[dict]:
    return [{"key": c.get("name") or f"{c['type']}:{c['table']}"} for c in failing(report)]


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


def test_a_broken_mirror_is_found_row_for_row_and_repaired(session, api, deploy):
    url = session.settings.database_url
    to_d(session, api, deploy)
    cookies = demo_cookies(api, url, ACCOUNTS, exclude={READ_ACCOUNT})
    with Traffic(api, cookies, RATE, seed=11, max_seconds=60) as traffic:
        steady(traffic)
        before = traffic.stats()
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
            failures = traffic.stats().mirror_failures - before.mirror_failures
            mismatches = traffic.stats().result_mismatches - before.result_mismatches
            found = verify(session)
            repaired = verify(session, VerifyOptions(repair=True))
            after = verify_ok(session)
        stats = traffic.stop()
    assert stats.errors == 0, traffic.last_error  # a mirror failure never fails the request

    # The books created while the mirror was broken never reached v2 (each a mirror-error); every
    # later write to them (rename, remove, snapshot, their identity's removal) found nothing in v2
    # (each a result-mismatch), and their snapshots are missing in v2.
    lost_books = {w.id for w in log if w.op == "create_book" and broke_at <= w.at < mended_at}
    assert lost_books, "the traffic created no book during the break: make the break longer"
    lost_snaps = {w.id for w in log if w.op == "save_snapshot" and w.book_id in lost_books}
    touching = [w for w in log if w.at >= broke_at and w.op != "create_book" and (
        (w.table == "pixbooks" and w.id in lost_books) or (w.op == "save_snapshot" and w.book_id in lost_books)
        or (w.op == "remove_identity" and lost_books & set(w.also)))]
    assert failures == len(lost_books) and mismatches == len(touching)

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

    def __init__(self, session: Session, api: str, deploy) -> None:
        self.url = session.settings.database_url
        to_d(session, api, deploy)
        (self.account, cookie), = demo_cookies(api, self.url, 1, exclude={READ_ACCOUNT}).items()
        self.holder = psycopg.connect(self.url)
        self.holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (self.account,))
        self.result: dict = {}

        def rename() -> None:
            self.result["response"] = httpx.patch(
                f"{api}/v1/account/workspace", json={"accountId": self.account, "name": "In Flight"},
                headers={"cookie": cookie}, timeout=30)  # demo_cookies gives name=value

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


def test_a_verify_sees_a_write_caught_between_primary_and_mirror(session, api, deploy):
    """In D the API commits the v1 write, then mirrors it to v2 in a second transaction. A mirror
    held back through every look of a verify leaves the row reported as different (a mirror that
    never lands is a difference), although nothing is wrong once the mirror lands."""
    with WriteInFlight(session, api, deploy) as flight:
        mid = run_verify(flight.url, VerifyOptions(stage="D"))
    accounts = content(mid, "accounts")
    assert not mid["ok"] and accounts["different"] == 1
    assert [d["id"] for d in accounts["examples"]["different"]] == [flight.account]
    assert verify_ok(session)["ok"]  # the mirror landed: in step again


def test_a_write_that_reaches_its_mirror_while_verify_looks_again_is_no_difference(session, api, deploy):
    """The same write caught between primary and mirror, but the mirror lands while verify waits
    to look at the differing range again: the range settles and the verify passes."""
    with WriteInFlight(session, api, deploy) as flight:

        class MirrorLandsWhileVerifyWaits(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                flight.land()
                return super().wait(timeout)

        report = run_verify(flight.url, VerifyOptions(stage="D"), cancel=MirrorLandsWhileVerifyWaits())
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

    with serve_api(legacy_db_url, environment_of(env_file)) as base:
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
