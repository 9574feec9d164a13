"""Stage 0 recon: upstream's report shape, true anomaly counts that agree with the seed and
with what the backfill then reports, an estimate, and not one lasting change to the database."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from helpers import ROOT
from psycopg import sql

from cutover_tui.demo.seed import SeedSummary, seed_legacy
from cutover_tui.errors import DatabaseUnreachable
from cutover_tui.reports.models import ReconReport, dump_report
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.work import migrate
from cutover_tui.work.backfill import EXAMPLE_ROWS, Backfill, BackfillOptions
from cutover_tui.work.recon import run_recon

# §3 of the design, written out here so the test does not take the pairs from the code under test.
MAPPING = {
    "platform_workspaces": "accounts",
    "platform_workspace_members": "account_members",
    "platform_managed_users": "identities",
    "platform_books": "pixbooks",
    "platform_book_snapshots": "pixbook_snapshots",
    "platform_audit_events": "audit_events",
}
LEGACY = ["auth_users", *MAPPING]
V2 = list(MAPPING.values())

# Planted kind -> (v2 table, issue, kind): the kinds that map one to one onto a §3 issue.
ONE_TO_ONE = {
    "duplicate_active_fingerprints": ("identities", "duplicate active fingerprint: landed as deleted", "warning"),
    "books_identity_other_workspace": ("pixbooks", "identity belongs to another account", "error"),
    "blank_and_primary_same_identity":
        ("pixbooks", "another active book of this identity has the same collection", "error"),
    "orphan_members_missing_workspace": ("account_members", "workspace missing", "error"),
    "orphan_members_missing_user": ("account_members", "user missing", "error"),
    "orphan_managed_users_missing_workspace": ("identities", "account missing", "error"),
    "orphan_books_missing_managed_user": ("pixbooks", "identity missing", "error"),
}


@pytest.fixture
def seeded(empty_db_url) -> tuple[str, SeedSummary]:
    """The legacy_db_url database (20 workspaces, every anomaly planted) with 0005 applied,
    and the seed's own account of what it planted."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.apply_legacy_baseline(conn, ROOT / "sql")
        summary = seed_legacy(conn, workspaces=20)
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
    return empty_db_url, summary


@pytest.fixture
def v2_db_url(legacy_db_url) -> str:
    with psycopg.connect(legacy_db_url, autocommit=True) as conn:
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
    return legacy_db_url


def _value(url: str, query: sql.Composable | str, params=None):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def _count(url: str, table: str) -> int:
    return _value(url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))


def _issues(body: dict) -> dict[tuple[str, str], tuple[str, int]]:
    return {(table, issue): (entry["kind"], entry["count"])
            for table, issues in body["anomalies"].items() for issue, entry in issues.items()}


def _backfill(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_console_schema(conn)
    return Backfill(url, "test", BackfillOptions()).run()


# --- the report ------------------------------------------------------------------------


def test_report_has_upstreams_shape_and_describes_every_table(v2_db_url):
    body = run_recon(v2_db_url)
    report = ReconReport.model_validate(body)
    assert json.loads(dump_report(report)) == body  # written and read back as it is
    # The seed's planted anomalies: the backfill would leave rows out, so recon says FAIL.
    assert not report.ok and body["missingTables"] == [] and body["problems"] == []
    errors = sum(a["count"] for found in body["anomalies"].values() for a in found.values() if a["kind"] == "error")
    assert body["predictedErrors"] == errors > 0
    assert body["mapping"] == MAPPING
    assert report.auth_user_id_type == "text"
    assert report.discovered_better_auth_tables == [
        "auth_email_verifications", "auth_passkeys", "auth_sessions", "auth_users"]
    assert sorted(report.target_tables) == sorted(LEGACY)
    assert body["v2Tables"] == dict.fromkeys(V2, True)
    assert set(body["schemas"]) == set(body["constraints"]) == {*LEGACY, *V2}

    columns = {(t, c["column_name"]): (c["data_type"], c["is_nullable"], c["column_default"])
               for t, cs in body["schemas"].items() for c in cs}
    assert columns[("auth_users", "email")] == ("text", "YES", None)
    assert columns[("platform_workspaces", "created_at")] == ("timestamp with time zone", "NO", "now()")
    assert columns[("platform_workspace_members", "status")] == ("text", "NO", "'active'::text")
    assert columns[("platform_managed_users", "identity_key_fingerprint")] == ("text", "YES", None)
    assert columns[("platform_books", "collection_id")] == ("text", "NO", "'primary'::text")
    assert columns[("platform_books", "current_version")] == ("bigint", "NO", "0")
    assert columns[("platform_book_snapshots", "payload_json")] == ("jsonb", "YES", None)
    assert columns[("platform_audit_events", "payload")] == ("jsonb", "NO", "'{}'::jsonb")
    assert columns[("pixbook_snapshots", "wrapped_dek")] == ("text", "NO", None)
    # Columns come in table order, as upstream lists them.
    assert [c["column_name"] for c in body["schemas"]["platform_workspaces"]] == [
        "id", "name", "created_at", "updated_at"]
    for table in (*LEGACY, *V2):
        assert len(body["schemas"][table]) == _value(
            v2_db_url, "SELECT count(*) FROM information_schema.columns WHERE table_name = %s", (table,))

    def keys(table: str, kind: str) -> set[str | None]:
        return {c["columns"] for c in body["constraints"][table] if c["constraint_type"] == kind}

    assert keys("platform_workspace_members", "FOREIGN KEY") == {"workspace_id", "user_id"}
    assert keys("platform_workspace_members", "UNIQUE") == {"workspace_id, user_id"}
    assert keys("platform_workspace_members", "PRIMARY KEY") == {"id"}
    assert keys("platform_book_snapshots", "UNIQUE") == {"book_id, version"}
    assert keys("platform_managed_users", "UNIQUE") == {"workspace_id, user_key"}
    assert keys("platform_books", "FOREIGN KEY") == {"workspace_id", "managed_user_id"}
    assert keys("auth_users", "UNIQUE") == {"email"}
    assert keys("pixbooks", "FOREIGN KEY") == {"account_id", "identity_id", "account_id, identity_id"}
    assert keys("identities", "UNIQUE") == {"account_id, user_key", "account_id, id"}
    assert None in keys("platform_books", "CHECK")  # NOT NULL, as upstream shows it
    # The partial unique indexes that are no constraints still show, among the indexes.
    assert any(i["index_name"] == "pixbooks_identity_collection_active_uq" for i in body["indexes"]["pixbooks"])


def test_counts_sizes_and_an_estimate_from_reads_alone(v2_db_url):
    body = run_recon(v2_db_url, sample_rows=25)
    assert set(body["tables"]) == set(MAPPING)
    for legacy in MAPPING:
        entry = body["tables"][legacy]
        assert entry["rows"] == _count(v2_db_url, legacy) > 0
        assert entry["v2Rows"] == 0
        assert entry["totalBytes"] == _value(v2_db_url, "SELECT pg_total_relation_size(%s::regclass)", (legacy,))

    estimate = body["estimate"]
    assert estimate["method"].startswith("read-only sample") and estimate["workers"] == BackfillOptions().workers
    assert "lower bound" in estimate["method"] and "Nothing is written" in estimate["method"]
    assert set(estimate["tables"]) == set(V2)
    for legacy, v2 in MAPPING.items():
        table = estimate["tables"][v2]
        assert table["rows"] == body["tables"][legacy]["rows"]
        assert table["sampleRows"] == min(25, table["rows"])
        assert table["seconds"] > 0 and table["catchUpSeconds"] > 0 and table["rowsPerSecond"] > 0
    assert estimate["sampleRows"] == sum(t["sampleRows"] for t in estimate["tables"].values())
    # Two workers overlap tables of one dependency wave, never more than the serial sum.
    assert 0 < estimate["seconds"] <= estimate["serialSeconds"] + 0.01
    assert estimate["catchUpSeconds"] > 0


def test_the_better_auth_tables_are_listed_when_present(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE "user" (id text PRIMARY KEY, email text)')
        conn.execute("CREATE TABLE session (id text PRIMARY KEY)")
        conn.execute("CREATE TABLE verification (id text PRIMARY KEY)")
    report = ReconReport.model_validate(run_recon(v2_db_url, sample_rows=0))
    assert report.discovered_better_auth_tables == [
        "auth_email_verifications", "auth_passkeys", "auth_sessions", "auth_users", "session", "user",
        "verification"]
    assert report.auth_user_id_type == "text"  # BetterAuth's `user`, where it holds the users


def test_anomalies_are_the_planted_ones_and_what_the_backfill_then_reports(seeded):
    url, summary = seeded
    body = run_recon(url)
    issues = _issues(body)
    for kind, (table, issue, level) in ONE_TO_ONE.items():
        assert issues[(table, issue)] == (level, summary.anomalies[kind]), kind
        assert summary.anomalies[kind] >= 1
    assert set(body["anomalies"]) == set(V2)
    assert body["anomalies"]["accounts"] == {}

    report = _backfill(url)
    done = {(e["stage"], e["error"]): ("error", e["count"]) for e in report["errors"]}
    done |= {(w["stage"], w["warning"]): ("warning", w["count"]) for w in report["warnings"]}
    assert issues == done
    # With under 100 rows, the examples are all of them: the same rows the backfill names.
    backfill_rows = {(e["stage"], e.get("error") or e.get("warning")): e["rows"]
                     for e in report["errors"] + report["warnings"]}
    for table, entries in body["anomalies"].items():
        for issue, entry in entries.items():
            assert len(entry["rows"]) == entry["count"]
            assert sorted(r["id"] for r in entry["rows"]) == sorted(r["id"] for r in backfill_rows[(table, issue)])
    stages = {s["stage"]: s for s in report["stages"]}
    for table in V2:
        counted = [e for (t, _), e in issues.items() if t == table]
        assert stages[table]["errorRows"] == sum(n for k, n in counted if k == "error")
        assert stages[table]["warningRows"] == sum(n for k, n in counted if k == "warning")

    # After the backfill, the rules give the same picture (v2 now holds the books that landed).
    again = run_recon(url)
    assert _issues(again) == issues
    assert again["tables"]["platform_books"]["v2Rows"] == stages["pixbooks"]["afterCount"]
    assert again["estimate"]["method"].startswith("read-only sample") and again["estimate"]["seconds"] > 0


def test_counts_past_one_hundred_are_true_and_only_examples_are_capped(v2_db_url):
    extra = 150
    with psycopg.connect(v2_db_url, autocommit=True) as conn, conn.transaction():
        fk = "platform_workspace_members_workspace_id_fkey"
        definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s",
                                  (fk,)).fetchone()[0]
        conn.execute(f"ALTER TABLE platform_workspace_members DROP CONSTRAINT {fk}")
        conn.execute("INSERT INTO platform_workspace_members (id, workspace_id, user_id, role) "
                     "SELECT 'mem_extra_' || g, 'ws_vanished_' || g, 'user_1', 'member' "
                     "FROM generate_series(1, %s) g", (extra,))
        conn.execute(f"ALTER TABLE platform_workspace_members ADD CONSTRAINT {fk} {definition} NOT VALID")
    missing = _value(v2_db_url, "SELECT count(*) FROM platform_workspace_members m WHERE NOT EXISTS "
                                "(SELECT 1 FROM platform_workspaces w WHERE w.id = m.workspace_id)")
    assert missing > 100

    entry = run_recon(v2_db_url)["anomalies"]["account_members"]["workspace missing"]
    assert entry["count"] == missing
    assert len(entry["rows"]) == EXAMPLE_ROWS == 100
    assert len({r["id"] for r in entry["rows"]}) == 100

    backfilled = _backfill(v2_db_url)
    [error] = [e for e in backfilled["errors"] if e["error"] == "workspace missing"]
    assert error["count"] == missing


# --- read-only ---------------------------------------------------------------------------


def _quiet(conn: psycopg.Connection) -> None:
    """Wait until no other session is in this database, so every write it made is in the stats."""
    deadline = time.monotonic() + 15
    while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline, "another session stayed in the test database"
        time.sleep(0.05)


def _stats(conn: psycopg.Connection) -> dict[str, tuple[int, int, int, int]]:
    """Per user table: inserted, updated, deleted (attempted, as the server counts them) and live rows,
    read until two reads agree so that no flush is still on its way."""
    query = ("SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup FROM pg_stat_user_tables "
             "WHERE schemaname = current_schema()")
    previous = None
    for _ in range(50):
        conn.execute("SELECT pg_stat_clear_snapshot()")
        current = {name: tuple(rest) for name, *rest in conn.execute(query)}
        if current == previous:
            return current
        previous = current
        time.sleep(0.1)
    raise AssertionError("the table statistics kept moving")


def _snapshot(conn: psycopg.Connection) -> dict[str, tuple[int, str | None]]:
    """Row count and a content hash of every table in the database's own schemas."""
    tables = [(s, t) for s, t in conn.execute(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")]
    return {f"{s}.{t}": tuple(conn.execute(sql.SQL(
        "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {}.{} x").format(
        sql.Identifier(s), sql.Identifier(t))).fetchone()) for s, t in tables}


def _relations(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT relnamespace::regnamespace::text, relname::text FROM pg_class "
                        "WHERE relnamespace::regnamespace::text NOT LIKE 'pg_%' "
                        "AND relnamespace::regnamespace::text <> 'information_schema' ORDER BY 1, 2").fetchall()


def test_recon_changes_nothing_and_v2_stays_empty(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        _quiet(conn)
        before = _snapshot(conn), _stats(conn), _relations(conn)
        body = run_recon(v2_db_url)
        assert body["estimate"]["method"].startswith("read-only sample") and body["estimate"]["seconds"] > 0
        assert body["readOnly"] is True
        _quiet(conn)
        after = _snapshot(conn), _stats(conn), _relations(conn)
        # No connection of the recon is left behind, and nothing it made outlived it.
        assert after[2] == before[2]
        assert after[0] == before[0]
        assert all(after[0][f"public.{t}"][0] == 0 for t in V2)
        # The server counts even a write rolled back; recon attempted none on any table.
        assert after[1] == before[1]
        # The statistics do show such an attempt once flushed, so the comparison above can fail.
        with psycopg.connect(v2_db_url) as writer:
            writer.execute("INSERT INTO accounts (id, name) VALUES ('probe', 'probe')")
            writer.rollback()
        _quiet(conn)
        assert _stats(conn)["accounts"][0] == before[1]["accounts"][0] + 1
        after = _snapshot(conn), _stats(conn), _relations(conn)

        # Without a sample, not even an attempted write.
        body = run_recon(v2_db_url, sample_rows=0)
        assert body["estimate"]["method"].startswith("skipped") and body["estimate"]["seconds"] is None
        _quiet(conn)
        assert _stats(conn) == after[1]
        assert _snapshot(conn) == before[0]


def test_recon_runs_whole_on_a_database_that_refuses_every_write(seeded):
    # As on a hot standby: every transaction is read-only, so a single write (a temp table, a
    # sample insert rolled back) would fail; recon must still give every finding and its estimate.
    url, summary = seeded
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(name)))
    body = run_recon(url, sample_rows=50)
    assert body["problems"] == [] and body["readOnly"] is True and body["predictedErrors"] > 0
    assert body["anomalies"]["pixbook_snapshots"]["its book did not land"]["count"] > 0
    assert body["estimate"]["seconds"] > 0 and body["estimate"]["catchUpSeconds"] > 0
    for kind, (table, issue, level) in ONE_TO_ONE.items():
        assert _issues(body)[(table, issue)] == (level, summary.anomalies[kind]), kind


def test_writes_inside_recon_are_refused_by_the_server(v2_db_url, monkeypatch):
    # Recon's transaction is READ ONLY: were any of its statements to write, the server would refuse it.
    from cutover_tui.work import recon

    seen = []
    original = recon._count

    def count_then_try_to_write(conn, table):
        try:
            with conn.transaction():
                conn.execute("INSERT INTO accounts (id, name) VALUES ('x', 'x')")
        except psycopg.errors.ReadOnlySqlTransaction:
            seen.append(table)
        return original(conn, table)

    monkeypatch.setattr(recon, "_count", count_then_try_to_write)
    run_recon(v2_db_url, sample_rows=0)
    assert seen and _count(v2_db_url, "accounts") == 0


# --- before Stage A, and damaged databases --------------------------------------------------


def test_without_v2_the_report_still_comes_and_the_estimate_times_reads_only(legacy_db_url):
    calls = []
    body = run_recon(legacy_db_url, sample_rows=500, progress=lambda *call: calls.append(call))
    report = ReconReport.model_validate(body)
    assert report.predicted_errors and not report.ok  # the seed's anomalies
    assert body["v2Tables"] == dict.fromkeys(V2, False)
    assert set(body["schemas"]) == set(LEGACY)
    assert all("v2Rows" not in entry for entry in body["tables"].values())
    estimate = body["estimate"]
    assert estimate["method"].startswith("read-only") and "v2 tables do not exist" in estimate["method"]
    assert estimate["seconds"] > 0 and estimate["rowsPerSecond"] > 0 and estimate["catchUpSeconds"] is None
    assert set(estimate["tables"]) == set(V2)
    assert all(t["rows"] == body["tables"][legacy]["rows"] for legacy, v2 in MAPPING.items()
               for t in [estimate["tables"][v2]])
    # Anomalies need no v2: which books land comes from the legacy rules.
    assert body["anomalies"]["pixbook_snapshots"]["its book did not land"]["count"] > 0
    # Progress walks every step once, in order, to the end.
    assert calls[0] == ("schemas", 0, calls[0][2]) and calls[-1] == ("done", calls[0][2], calls[0][2])
    assert [done for _, done, _ in calls] == list(range(len(calls)))


def test_a_missing_legacy_table_is_reported_not_raised(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE platform_audit_events")
    body = run_recon(v2_db_url)
    report = ReconReport.model_validate(body)
    assert not report.ok and not report.passed
    assert body["missingTables"] == ["platform_audit_events"]
    assert "platform_audit_events" not in body["schemas"] and "platform_audit_events" not in body["tables"]
    assert [p["table"] for p in body["problems"]] == ["audit_events"]
    assert body["anomalies"]["identities"]  # the rest is still looked at
    assert body["estimate"]["seconds"] is None


def test_a_rule_that_cannot_run_is_a_problem_not_a_crash(v2_db_url):
    # As if 0004 never ran: the collection rule has no column to read.
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE platform_books DROP COLUMN collection_id")
    body = run_recon(v2_db_url)
    assert not body["ok"] and body["missingTables"] == []
    problems = {p["table"]: p["error"] for p in body["problems"]}
    assert set(problems) == {"pixbooks", "pixbook_snapshots"}
    assert "collection_id" in problems["pixbooks"]
    assert body["anomalies"]["identities"]  # counted in the same transaction, after the failure


def test_an_unreachable_database_raises_the_typed_error(tmp_path):
    with pytest.raises(DatabaseUnreachable):
        run_recon(f"postgresql://nobody@/nowhere?host={tmp_path}&connect_timeout=1")
