"""The legacy seeder: deterministic, at the production ratios, with exactly the damage it reports.

Every planted kind is counted here by its own query, written from §3 of the design
(what the backfill will see), never by the seeder's bookkeeping.
"""

from __future__ import annotations

import uuid
from collections import Counter

import psycopg
import pytest
from helpers import ROOT
from psycopg import sql

from cutover_tui.demo import seed as seed_module
from cutover_tui.demo.embedded import create_database
from cutover_tui.demo.seed import SIZES, SeedSummary, seed_legacy
from cutover_tui.errors import BadInput
from cutover_tui.work.migrate import apply_legacy_baseline

N = 2000
TABLES = ("platform_workspaces", "auth_users", "platform_workspace_members", "platform_managed_users",
          "platform_books", "platform_book_snapshots", "platform_audit_events")
RATIOS = {"platform_workspaces": 1, "auth_users": 1, "platform_workspace_members": 1.5,
          "platform_managed_users": 2, "platform_books": 2, "platform_book_snapshots": 10,
          "platform_audit_events": 3}
ORPHANS = {  # kind -> (table, the FK its rows break, an insert that breaks it again)
    "orphan_members_missing_workspace": (
        "platform_workspace_members", "platform_workspace_members_workspace_id_fkey",
        "INSERT INTO platform_workspace_members (id, workspace_id, user_id, role)"
        " VALUES ('mem_new', 'ws_nope', 'user_1', 'member')"),
    "orphan_members_missing_user": (
        "platform_workspace_members", "platform_workspace_members_user_id_fkey",
        "INSERT INTO platform_workspace_members (id, workspace_id, user_id, role)"
        " VALUES ('mem_new', 'ws_1', 'user_nope', 'member')"),
    "orphan_managed_users_missing_workspace": (
        "platform_managed_users", "platform_managed_users_workspace_id_fkey",
        "INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key)"
        " VALUES ('mu_new', 'ws_nope', 'New', 'key_new')"),
    "orphan_books_missing_managed_user": (
        "platform_books", "platform_books_managed_user_id_fkey",
        "INSERT INTO platform_books (id, workspace_id, managed_user_id, name)"
        " VALUES ('book_new', 'ws_1', 'mu_nope', 'New')"),
    "orphan_snapshots_missing_book": (
        "platform_book_snapshots", "platform_book_snapshots_book_id_fkey",
        "INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256, wrapped_dek)"
        " VALUES ('snap_new', 'book_nope', 1, 'k', 's', 'd')"),
}

INFORMATIONAL = ("deleted_rows", "null_and_unicode_names", "large_payloads")

_OLDER_ACTIVE_TWIN = """EXISTS (
    SELECT 1 FROM platform_managed_users o
    WHERE o.workspace_id = m.workspace_id AND o.identity_key_fingerprint = m.identity_key_fingerprint
      AND o.status <> 'deleted' AND (o.created_at, o.id) < (m.created_at, m.id))"""
QUERIES = {
    "duplicate_active_fingerprints":
        f"SELECT count(*) FROM platform_managed_users m WHERE m.status <> 'deleted' AND {_OLDER_ACTIVE_TWIN}",
    "duplicate_fingerprint_already_deleted":
        f"SELECT count(*) FROM platform_managed_users m WHERE m.status = 'deleted' AND {_OLDER_ACTIVE_TWIN}",
    "books_identity_other_workspace": """
        SELECT count(*) FROM platform_books b JOIN platform_managed_users m ON m.id = b.managed_user_id
        WHERE m.workspace_id <> b.workspace_id""",
    "blank_collection_ids": "SELECT count(*) FROM platform_books WHERE collection_id = ''",
    "whitespace_collection_ids": r"SELECT count(*) FROM platform_books WHERE collection_id ~ '^\s+$'",
    # After blank -> 'primary', more than one live book of an identity lands in 'primary'.
    "blank_and_primary_same_identity": r"""
        SELECT count(*) FROM (
            SELECT 1 FROM platform_books
            WHERE status <> 'deleted' AND (collection_id = 'primary' OR collection_id ~ '^\s*$')
            GROUP BY workspace_id, managed_user_id
            HAVING count(*) > 1 AND bool_or(collection_id = '')) x""",
    "orphan_members_missing_workspace": """
        SELECT count(*) FROM platform_workspace_members m
        LEFT JOIN platform_workspaces w ON w.id = m.workspace_id WHERE w.id IS NULL""",
    "orphan_members_missing_user": """
        SELECT count(*) FROM platform_workspace_members m
        LEFT JOIN auth_users u ON u.id = m.user_id WHERE u.id IS NULL""",
    "orphan_managed_users_missing_workspace": """
        SELECT count(*) FROM platform_managed_users m
        LEFT JOIN platform_workspaces w ON w.id = m.workspace_id WHERE w.id IS NULL""",
    "orphan_books_missing_managed_user": """
        SELECT count(*) FROM platform_books b
        LEFT JOIN platform_managed_users m ON m.id = b.managed_user_id WHERE m.id IS NULL""",
    "orphan_snapshots_missing_book": """
        SELECT count(*) FROM platform_book_snapshots s
        LEFT JOIN platform_books b ON b.id = s.book_id WHERE b.id IS NULL""",
    "deleted_rows": """
        SELECT (SELECT count(*) FROM platform_workspace_members WHERE status = 'deleted')
             + (SELECT count(*) FROM platform_managed_users WHERE status = 'deleted')
             + (SELECT count(*) FROM platform_books WHERE status = 'deleted')""",
    "null_and_unicode_names": r"""
        SELECT (SELECT count(*) FROM auth_users WHERE name IS NULL OR name ~ '[^\x01-\x7f]')
             + (SELECT count(*) FROM platform_workspaces WHERE name ~ '[^\x01-\x7f]')
             + (SELECT count(*) FROM platform_managed_users WHERE display_name ~ '[^\x01-\x7f]')
             + (SELECT count(*) FROM platform_books WHERE name ~ '[^\x01-\x7f]')""",
    "large_payloads": "SELECT count(*) FROM platform_book_snapshots WHERE octet_length(payload_json::text) > 40000",
}


def legacy_schema(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
    return url


def seeded_db(server_url: str, workspaces: int, **options) -> tuple[str, SeedSummary]:
    url = legacy_schema(create_database(server_url, f"seed_{uuid.uuid4().hex[:12]}"))
    with psycopg.connect(url, autocommit=True) as conn:
        return url, seed_legacy(conn, workspaces, **options)


def value(url: str, query: str):
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def content(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM {} t").format(
            sql.Identifier(t))).fetchone()[0] for t in TABLES}


def foreign_keys(url: str) -> dict[str, tuple[bool, str]]:
    """FK name -> (validated, definition) for the seeded tables."""
    with psycopg.connect(url) as conn:
        return {name: (valid, definition) for name, valid, definition in conn.execute(
            "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])", (list(TABLES),))}


@pytest.fixture(scope="module")
def damaged(pg_server_url) -> tuple[str, SeedSummary]:
    return seeded_db(pg_server_url, N, seed=3)


@pytest.fixture(scope="module")
def clean(pg_server_url) -> tuple[str, SeedSummary]:
    return seeded_db(pg_server_url, N, seed=3, clean=True)


def test_sizes_are_the_documented_workspace_counts():
    assert SIZES == {"S": 10_000, "M": 100_000, "L": 1_000_000}


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(pg_server_url):
    first = content(seeded_db(pg_server_url, 300, seed=5)[0])
    assert content(seeded_db(pg_server_url, 300, seed=5)[0]) == first
    other = content(seeded_db(pg_server_url, 300, seed=6)[0])
    assert all(other[t] != first[t] for t in TABLES)


def test_chunking_changes_nothing_and_progress_reaches_every_total(pg_server_url, monkeypatch):
    whole = content(seeded_db(pg_server_url, 250)[0])
    monkeypatch.setattr(seed_module, "_CHUNK", 700)
    calls = []
    url, _ = seeded_db(pg_server_url, 250, progress=lambda *call: calls.append(call))
    assert content(url) == whole
    assert list(dict.fromkeys(table for table, _, _ in calls)) == list(TABLES)
    finals = {table: (done, total) for table, done, total in calls}
    assert finals == {t: (int(250 * RATIOS[t]),) * 2 for t in TABLES}
    assert [c for c in calls if c[0] == "platform_book_snapshots"] == [
        ("platform_book_snapshots", done, 2500) for done in (700, 1400, 2100, 2500)]


def test_counts_follow_the_ratios_plus_the_orphans(damaged):
    url, summary = damaged
    orphans = Counter()
    for kind, (table, _, _) in ORPHANS.items():
        orphans[table] += summary.anomalies[kind]
    expected = {t: int(N * ratio) + orphans[t] for t, ratio in RATIOS.items()}
    assert summary.rows == expected
    assert {t: value(url, f"SELECT count(*) FROM {t}") for t in TABLES} == expected


@pytest.mark.parametrize("kind", QUERIES)
def test_each_kind_is_present_at_exactly_the_reported_count(damaged, kind):
    url, summary = damaged
    assert summary.anomalies.keys() == QUERIES.keys()
    assert value(url, QUERIES[kind]) == summary.anomalies[kind] > 0


def test_every_kind_is_planted_at_twenty_workspaces(empty_db_url):
    with psycopg.connect(legacy_schema(empty_db_url), autocommit=True) as conn:
        summary = seed_legacy(conn, workspaces=20)
    assert {kind: value(empty_db_url, q) for kind, q in QUERIES.items()} == summary.anomalies
    assert all(count >= 1 for kind, count in summary.anomalies.items() if kind not in INFORMATIONAL)


def test_orphans_sit_behind_the_same_fks_made_not_valid_which_still_guard_new_rows(damaged, clean):
    url, _ = damaged
    damaged_fks, clean_fks = foreign_keys(url), foreign_keys(clean[0])
    broken = {constraint for _, constraint, _ in ORPHANS.values()}
    assert damaged_fks.keys() == clean_fks.keys() >= broken
    for name, (valid, definition) in damaged_fks.items():
        if name in broken:
            assert (valid, definition) == (False, clean_fks[name][1] + " NOT VALID")
        else:
            assert (valid, definition) == clean_fks[name]
    with psycopg.connect(url) as conn:
        for _, constraint, insert in ORPHANS.values():
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match=constraint), conn.transaction():
                conn.execute(insert)


def test_clean_has_no_anomaly_and_every_fk_validated(clean):
    url, summary = clean
    assert summary.anomalies == dict.fromkeys(QUERIES, 0)
    assert {kind: value(url, q) for kind, q in QUERIES.items()} == summary.anomalies
    assert summary.rows == {t: int(N * ratio) for t, ratio in RATIOS.items()}
    fks = foreign_keys(url)
    assert len(fks) == 8 and all(valid for valid, _ in fks.values())


def test_the_data_looks_real(damaged):
    url, _ = damaged
    assert value(url, "SELECT array_agg(DISTINCT role ORDER BY role) FROM platform_workspace_members") == [
        "admin", "member", "owner"]
    for table in ("platform_workspace_members", "platform_managed_users", "platform_books"):
        assert value(url, f"SELECT count(*) FROM {table} WHERE status = 'deleted'") > 0
    assert value(url, "SELECT count(*) FROM platform_managed_users WHERE avatar_public_id IS NULL") > 0
    assert 0 < value(url, "SELECT count(*) FROM auth_users WHERE email IS NULL") < N / 50
    names = ("SELECT name FROM auth_users UNION ALL SELECT name FROM platform_workspaces"
             " UNION ALL SELECT display_name FROM platform_managed_users UNION ALL SELECT name FROM platform_books")
    for script in (r"[\u4e00-\u9fff]", r"[\U0001F300-\U0001FAFF]", "[éøñ]"):  # CJK, emoji, accents
        assert value(url, f"SELECT count(*) FROM ({names}) n(name) WHERE name ~ '{script}'") > 0
    assert value(url, f"SELECT max(char_length(name)) FROM ({names}) n(name)") > 200
    assert 180 < value(url, "SELECT avg(octet_length(payload_json::text)) FROM platform_book_snapshots"
                            " WHERE octet_length(payload_json::text) < 1000") < 260
    for table in TABLES:
        assert value(url, f"SELECT min(created_at) >= '2025-01-01Z' AND max(created_at) < '2026-01-01Z'"
                          f" FROM {table}")


def test_refuses_a_database_that_already_holds_rows_and_writes_nothing(empty_db_url):
    url = legacy_schema(empty_db_url)
    with psycopg.connect(url, autocommit=True) as conn:
        seed_legacy(conn, workspaces=20)
        before = content(url), foreign_keys(url)
        with pytest.raises(BadInput, match=r"already holds legacy rows .*seed an empty legacy schema"):
            seed_legacy(conn, workspaces=20, seed=2)
        assert (content(url), foreign_keys(url)) == before
        # The seeding session leaves no helpers behind.
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()").fetchone()[0] == 0


def test_refuses_a_database_without_the_legacy_schema(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(BadInput, match=r"no complete legacy schema .*build it first"):
            seed_legacy(conn)
        with pytest.raises(BadInput, match="at least 1"):
            seed_legacy(conn, workspaces=0)
