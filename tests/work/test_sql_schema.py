"""The SQL files build exactly SYSTEM.md §1 (legacy 0001-0004) and §2 (v2 0005),
and the manual Stage F archive (§7) moves the platform_* tables without losing rows."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
from helpers import ROOT

SQL = ROOT / "sql"
LEGACY = [
    SQL / "legacy" / name
    for name in (
        "0001_platform_base.sql",
        "0002_platform_snapshot_payload.sql",
        "0003_platform_managed_user_identity.sql",
        "0004_platform_books_collection.sql",
    )
]
V2 = SQL / "0005_accounts_v2_schema.sql"
ARCHIVE = SQL / "manual" / "0009_legacy_archive_platform_tables.sql"


class Table(NamedTuple):
    """columns: name -> (data_type, is_nullable, column_default);
    constraints: name -> pg_get_constraintdef;
    indexes (those not backing a constraint): name -> "[UNIQUE ](columns)[ WHERE (predicate)]"."""

    columns: dict
    constraints: dict
    indexes: dict


# Column shapes, as information_schema.columns reports them.
TEXT = ("text", "YES", None)
REQUIRED = ("text", "NO", None)
STATUS = ("text", "NO", "'active'::text")
COLLECTION = ("text", "NO", "'primary'::text")
STAMP = ("timestamp with time zone", "NO", "now()")
EXPIRY = ("timestamp with time zone", "NO", None)
VERSION = ("bigint", "NO", None)
COUNTER = ("bigint", "NO", "0")
PAYLOAD = ("jsonb", "NO", "'{}'::jsonb")
PAYLOAD_JSON = ("jsonb", "YES", None)
TIMESTAMPS = {"created_at": STAMP, "updated_at": STAMP}

PK = "PRIMARY KEY (id)"


def fk(columns: str, target: str, on_delete: str = "CASCADE") -> str:
    return f"FOREIGN KEY ({columns}) REFERENCES {target} ON DELETE {on_delete}"


def unique(columns: str) -> str:
    return f"UNIQUE ({columns})"


NOT_DELETED = "(status <> 'deleted'::text)"

# SYSTEM.md §1 as left by 0001..0004, plus the auth tables 0001 also creates.
LEGACY_SCHEMA = {
    "auth_users": Table(
        {"id": REQUIRED, "email": TEXT, "name": TEXT, **TIMESTAMPS},
        {"auth_users_pkey": PK, "auth_users_email_key": unique("email")},
        {},
    ),
    "auth_sessions": Table(
        {
            "id": REQUIRED,
            "user_id": REQUIRED,
            "token_hash": REQUIRED,
            "expires_at": EXPIRY,
            **TIMESTAMPS,
        },
        {
            "auth_sessions_pkey": PK,
            "auth_sessions_user_id_fkey": fk("user_id", "auth_users(id)"),
            "auth_sessions_token_hash_key": unique("token_hash"),
        },
        {"idx_auth_sessions_user": "(user_id)"},
    ),
    "auth_passkeys": Table(
        {
            "id": REQUIRED,
            "user_id": REQUIRED,
            "credential_id": REQUIRED,
            "public_key": REQUIRED,
            "counter": COUNTER,
            **TIMESTAMPS,
        },
        {
            "auth_passkeys_pkey": PK,
            "auth_passkeys_user_id_fkey": fk("user_id", "auth_users(id)"),
            "auth_passkeys_credential_id_key": unique("credential_id"),
        },
        {"idx_auth_passkeys_user": "(user_id)"},
    ),
    "auth_email_verifications": Table(
        {
            "id": REQUIRED,
            "user_id": REQUIRED,
            "email": REQUIRED,
            "code_hash": REQUIRED,
            "expires_at": EXPIRY,
            "created_at": STAMP,
        },
        {
            "auth_email_verifications_pkey": PK,
            "auth_email_verifications_user_id_fkey": fk("user_id", "auth_users(id)"),
        },
        {"idx_auth_email_verifications_user": "(user_id)"},
    ),
    "platform_workspaces": Table(
        {"id": REQUIRED, "name": REQUIRED, **TIMESTAMPS},
        {"platform_workspaces_pkey": PK},
        {},
    ),
    "platform_workspace_members": Table(
        {
            "id": REQUIRED,
            "workspace_id": REQUIRED,
            "user_id": REQUIRED,
            "role": REQUIRED,
            "status": STATUS,
            **TIMESTAMPS,
        },
        {
            "platform_workspace_members_pkey": PK,
            "platform_workspace_members_workspace_id_fkey": fk("workspace_id", "platform_workspaces(id)"),
            "platform_workspace_members_user_id_fkey": fk("user_id", "auth_users(id)"),
            "platform_workspace_members_workspace_user_key": unique("workspace_id, user_id"),
        },
        {"idx_platform_workspace_members_user_status": "(user_id, status)"},
    ),
    "platform_permissions": Table(
        {"id": REQUIRED, "member_id": REQUIRED, "capability": REQUIRED, "created_at": STAMP},
        {
            "platform_permissions_pkey": PK,
            "platform_permissions_member_id_fkey": fk("member_id", "platform_workspace_members(id)"),
            "platform_permissions_member_capability_key": unique("member_id, capability"),
        },
        {},
    ),
    "platform_audit_events": Table(
        {
            "id": REQUIRED,
            "workspace_id": TEXT,
            "actor_user_id": TEXT,
            "event_type": REQUIRED,
            "payload": PAYLOAD,
            "created_at": STAMP,
        },
        {
            "platform_audit_events_pkey": PK,
            "platform_audit_events_workspace_id_fkey": fk(
                "workspace_id", "platform_workspaces(id)", "SET NULL"
            ),
            "platform_audit_events_actor_user_id_fkey": fk("actor_user_id", "auth_users(id)", "SET NULL"),
        },
        {},
    ),
    "platform_managed_users": Table(
        {
            "id": REQUIRED,
            "workspace_id": REQUIRED,
            "display_name": REQUIRED,
            "avatar_public_id": TEXT,
            "user_key": REQUIRED,
            "status": STATUS,
            **TIMESTAMPS,
            "profile_id": TEXT,
            "identity_public_key": TEXT,
            "identity_key_fingerprint": TEXT,
        },
        {
            "platform_managed_users_pkey": PK,
            "platform_managed_users_workspace_id_fkey": fk("workspace_id", "platform_workspaces(id)"),
            "platform_managed_users_workspace_user_key_key": unique("workspace_id, user_key"),
        },
        {
            "uq_platform_managed_users_workspace_profile_fingerprint": (
                "UNIQUE (workspace_id, profile_id, identity_key_fingerprint)"
                " WHERE ((profile_id IS NOT NULL) AND (identity_key_fingerprint IS NOT NULL))"
            ),
        },
    ),
    "platform_books": Table(
        {
            "id": REQUIRED,
            "workspace_id": REQUIRED,
            "managed_user_id": REQUIRED,
            "name": REQUIRED,
            "status": STATUS,
            "current_version": COUNTER,
            **TIMESTAMPS,
            "collection_id": COLLECTION,
        },
        {
            "platform_books_pkey": PK,
            "platform_books_workspace_id_fkey": fk("workspace_id", "platform_workspaces(id)"),
            "platform_books_managed_user_id_fkey": fk("managed_user_id", "platform_managed_users(id)"),
        },
        {
            "uq_platform_books_workspace_user_collection_active": (
                f"UNIQUE (workspace_id, managed_user_id, collection_id) WHERE {NOT_DELETED}"
            ),
        },
    ),
    "platform_book_snapshots": Table(
        {
            "id": REQUIRED,
            "book_id": REQUIRED,
            "version": VERSION,
            "cipher_object_key": REQUIRED,
            "cipher_sha256": REQUIRED,
            "wrapped_dek": REQUIRED,
            "ledger_head": TEXT,
            "created_at": STAMP,
            "payload_json": PAYLOAD_JSON,
        },
        {
            "platform_book_snapshots_pkey": PK,
            "platform_book_snapshots_book_id_fkey": fk("book_id", "platform_books(id)"),
            "platform_book_snapshots_book_version_key": unique("book_id, version"),
        },
        {},
    ),
}

# SYSTEM.md §2: what 0005 adds.
V2_SCHEMA = {
    "accounts": Table(
        {"id": REQUIRED, "name": REQUIRED, "status": STATUS, **TIMESTAMPS},
        {"accounts_pkey": PK},
        {},
    ),
    "account_members": Table(
        {
            "id": REQUIRED,
            "account_id": REQUIRED,
            "user_id": REQUIRED,
            "role": REQUIRED,
            "status": STATUS,
            **TIMESTAMPS,
        },
        {
            "account_members_pkey": PK,
            "account_members_account_id_fkey": fk("account_id", "accounts(id)"),
            "account_members_user_id_fkey": fk("user_id", "auth_users(id)"),
            "account_members_account_id_user_id_key": unique("account_id, user_id"),
        },
        {"account_members_user_idx": "(user_id, status)"},
    ),
    "identities": Table(
        {
            "id": REQUIRED,
            "account_id": REQUIRED,
            "display_name": REQUIRED,
            "avatar_public_id": TEXT,
            "user_key": REQUIRED,
            "profile_id": TEXT,
            "identity_public_key": TEXT,
            "identity_key_fingerprint": TEXT,
            "status": STATUS,
            **TIMESTAMPS,
        },
        {
            "identities_pkey": PK,
            "identities_account_id_fkey": fk("account_id", "accounts(id)"),
            "identities_account_id_user_key_key": unique("account_id, user_key"),
            "identities_account_id_id_key": unique("account_id, id"),
        },
        {
            "identities_account_idx": "(account_id, status)",
            "identities_account_profile_identity_idx": (
                "(account_id, profile_id, identity_key_fingerprint)"
            ),
            "identities_account_identity_fingerprint_uq": (
                "UNIQUE (account_id, identity_key_fingerprint)"
                f" WHERE ((identity_key_fingerprint IS NOT NULL) AND {NOT_DELETED})"
            ),
        },
    ),
    "pixbooks": Table(
        {
            "id": REQUIRED,
            "account_id": REQUIRED,
            "identity_id": REQUIRED,
            "collection_id": COLLECTION,
            "name": REQUIRED,
            "status": STATUS,
            "current_version": COUNTER,
            **TIMESTAMPS,
        },
        {
            "pixbooks_pkey": PK,
            "pixbooks_account_id_fkey": fk("account_id", "accounts(id)"),
            "pixbooks_identity_id_fkey": fk("identity_id", "identities(id)"),
            "pixbooks_account_identity_fk": fk("account_id, identity_id", "identities(account_id, id)"),
        },
        {
            "pixbooks_account_idx": "(account_id, status)",
            "pixbooks_account_identity_collection_idx": (
                "(account_id, identity_id, collection_id, status)"
            ),
            "pixbooks_identity_collection_active_uq": (
                f"UNIQUE (identity_id, collection_id) WHERE {NOT_DELETED}"
            ),
        },
    ),
    "pixbook_snapshots": Table(
        {
            "id": REQUIRED,
            "pixbook_id": REQUIRED,
            "version": VERSION,
            "cipher_object_key": REQUIRED,
            "cipher_sha256": REQUIRED,
            "wrapped_dek": REQUIRED,
            "ledger_head": TEXT,
            "payload_json": PAYLOAD_JSON,
            "created_at": STAMP,
        },
        {
            "pixbook_snapshots_pkey": PK,
            "pixbook_snapshots_pixbook_id_fkey": fk("pixbook_id", "pixbooks(id)"),
            "pixbook_snapshots_pixbook_id_version_key": unique("pixbook_id, version"),
        },
        {"pixbook_snapshots_pixbook_idx": "(pixbook_id, created_at DESC)"},
    ),
    "audit_events": Table(
        {
            "id": REQUIRED,
            "account_id": TEXT,
            "actor_user_id": TEXT,
            "event_type": REQUIRED,
            "payload": PAYLOAD,
            "created_at": STAMP,
        },
        {
            "audit_events_pkey": PK,
            "audit_events_account_id_fkey": fk("account_id", "accounts(id)", "SET NULL"),
            "audit_events_actor_user_id_fkey": fk("actor_user_id", "auth_users(id)", "SET NULL"),
        },
        {"audit_events_account_created_idx": "(account_id, created_at DESC)"},
    ),
}

ARCHIVED = (
    "platform_workspaces",
    "platform_workspace_members",
    "platform_managed_users",
    "platform_books",
    "platform_book_snapshots",
    "platform_audit_events",
    "platform_permissions",
)


def apply(url: str, *files: Path) -> None:
    """Each migration file in its own transaction, as the migrator runs them."""
    for file in files:
        with psycopg.connect(url) as conn:
            conn.execute(file.read_text())


def run_archive(url: str) -> None:
    # Autocommit, like psql: the file brings its own BEGIN/COMMIT.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ARCHIVE.read_text())


def public_schema(url: str) -> dict[str, Table]:
    tables: dict[str, Table] = defaultdict(lambda: Table({}, {}, {}))
    with psycopg.connect(url) as conn:
        for table, column, *shape in conn.execute(
            """SELECT table_name, column_name, data_type, is_nullable, column_default
               FROM information_schema.columns WHERE table_schema = 'public'"""
        ):
            tables[table].columns[column] = tuple(shape)
        # Postgres 18 also lists NOT NULL as constraints (contype 'n'); the
        # columns above already cover nullability.
        for table, name, definition in conn.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
               FROM pg_constraint
               WHERE connamespace = 'public'::regnamespace AND contype <> 'n'"""
        ):
            tables[table].constraints[name] = definition
        for table, name, definition in conn.execute(
            """SELECT tablename, indexname, indexdef FROM pg_indexes
               WHERE schemaname = 'public' AND indexname NOT IN (
                 SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))"""
        ):
            # Keep "[UNIQUE ](columns)[ WHERE ...]"; anything but btree stays visible.
            tables[table].indexes[name] = re.sub(
                r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ USING btree ", r"\1", definition
            )
    return dict(tables)


def assert_schema(url: str, expected: dict[str, Table]) -> None:
    actual = public_schema(url)
    assert sorted(actual) == sorted(expected)
    for table, spec in expected.items():
        assert actual[table] == spec, table


def tables_in(conn: psycopg.Connection, schema: str) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {name for (name,) in rows}


@pytest.fixture
def v2_db(empty_db_url: str) -> str:
    apply(empty_db_url, *LEGACY, V2)
    return empty_db_url


@pytest.fixture
def v2_conn(v2_db: str):
    with psycopg.connect(v2_db, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO accounts (id, name) VALUES ('a1', 'One'), ('a2', 'Two');
               INSERT INTO identities (id, account_id, display_name, user_key)
               VALUES ('i1', 'a1', 'Ann', 'ann'), ('i2', 'a2', 'Bob', 'bob')"""
        )
        yield conn


def test_legacy_migrations_build_section_1(empty_db_url: str) -> None:
    apply(empty_db_url, *LEGACY)
    assert_schema(empty_db_url, LEGACY_SCHEMA)


def test_v2_migration_builds_section_2_beside_legacy(v2_db: str) -> None:
    assert_schema(v2_db, LEGACY_SCHEMA | V2_SCHEMA)


def test_v2_migration_applied_twice_is_harmless(v2_db: str) -> None:
    apply(v2_db, V2)
    assert_schema(v2_db, LEGACY_SCHEMA | V2_SCHEMA)


def test_composite_fk_rejects_identity_of_another_account(v2_conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught:
        v2_conn.execute(
            "INSERT INTO pixbooks (id, account_id, identity_id, name) VALUES ('b1', 'a1', 'i2', 'x')"
        )
    assert caught.value.diag.constraint_name == "pixbooks_account_identity_fk"


def test_one_live_pixbook_per_identity_and_collection(v2_conn: psycopg.Connection) -> None:
    insert = """INSERT INTO pixbooks (id, account_id, identity_id, name, status, collection_id)
                VALUES (%s, 'a1', 'i1', 'x', %s, %s)"""
    v2_conn.execute(insert, ("b1", "active", "primary"))
    v2_conn.execute(insert, ("b2", "deleted", "primary"))
    v2_conn.execute(insert, ("b3", "active", "other"))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        v2_conn.execute(insert, ("b4", "active", "primary"))
    assert caught.value.diag.constraint_name == "pixbooks_identity_collection_active_uq"


def test_fingerprint_unique_among_live_identities_of_an_account(v2_conn: psycopg.Connection) -> None:
    insert = """INSERT INTO identities
                  (id, account_id, display_name, user_key, identity_key_fingerprint, status)
                VALUES (%s, %s, 'x', %s, %s, %s)"""
    v2_conn.execute(insert, ("f1", "a1", "k1", "fp", "active"))
    v2_conn.execute(insert, ("f2", "a1", "k2", "fp", "deleted"))
    v2_conn.execute(insert, ("f3", "a2", "k3", "fp", "active"))
    v2_conn.execute(insert, ("f4", "a1", "k4", None, "active"))
    v2_conn.execute(insert, ("f5", "a1", "k5", None, "active"))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        v2_conn.execute(insert, ("f6", "a1", "k6", "fp", "active"))
    assert caught.value.diag.constraint_name == "identities_account_identity_fingerprint_uq"


def test_archive_moves_the_seven_tables_with_their_rows(v2_db: str) -> None:
    with psycopg.connect(v2_db) as conn:
        conn.execute(
            """INSERT INTO auth_users (id) VALUES ('u1');
               INSERT INTO platform_workspaces (id, name) VALUES ('w1', 'W');
               INSERT INTO platform_workspace_members (id, workspace_id, user_id, role)
               VALUES ('m1', 'w1', 'u1', 'owner');
               INSERT INTO platform_permissions (id, member_id, capability) VALUES ('p1', 'm1', 'books');
               INSERT INTO platform_audit_events (id, workspace_id, event_type)
               VALUES ('e1', 'w1', 'created');
               INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key)
               VALUES ('mu1', 'w1', 'Ann', 'ann');
               INSERT INTO platform_books (id, workspace_id, managed_user_id, name)
               VALUES ('b1', 'w1', 'mu1', 'B');
               INSERT INTO platform_book_snapshots
                 (id, book_id, version, cipher_object_key, cipher_sha256, wrapped_dek)
               VALUES ('s1', 'b1', 1, 'k', 'h', 'd')"""
        )
        before = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ARCHIVED}

    run_archive(v2_db)

    with psycopg.connect(v2_db) as conn:
        assert tables_in(conn, "legacy") == {f"{t}_legacy" for t in ARCHIVED}
        assert tables_in(conn, "public") == set(LEGACY_SCHEMA) - set(ARCHIVED) | set(V2_SCHEMA)
        for table, rows in before.items():
            assert conn.execute(f"SELECT * FROM legacy.{table}_legacy").fetchall() == rows, table


def test_archive_never_drops() -> None:
    assert "drop" not in ARCHIVE.read_text().lower()


def test_archive_skips_tables_that_are_absent(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            """CREATE TABLE platform_workspaces (id TEXT PRIMARY KEY);
               INSERT INTO platform_workspaces VALUES ('w1')"""
        )

    run_archive(empty_db_url)
    run_archive(empty_db_url)  # a second run finds nothing left in public

    with psycopg.connect(empty_db_url) as conn:
        assert tables_in(conn, "legacy") == {"platform_workspaces_legacy"}
        assert tables_in(conn, "public") == set()
        assert conn.execute("SELECT id FROM legacy.platform_workspaces_legacy").fetchall() == [("w1",)]
