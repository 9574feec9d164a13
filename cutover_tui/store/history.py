"""The API migrator's history (`platform_schema_migrations`): which migrations this database has.

Read by the facts (is Stage A done?) and by `work.migrate`, which writes it."""

from __future__ import annotations

import psycopg

from .db import scalar

LEGACY_PREFIXES = ("0001", "0002", "0003", "0004")
V2_MIGRATION = "0005_accounts_v2_schema.sql"


def history(conn: psycopg.Connection) -> dict[str, str] | None:
    """Recorded migrations as id -> checksum, or None when there is no history table."""
    if scalar(conn, "SELECT to_regclass('public.platform_schema_migrations')") is None:
        return None
    return dict(conn.execute("SELECT id, checksum FROM platform_schema_migrations").fetchall())


def missing_legacy(recorded: dict[str, str]) -> list[str]:
    return [p for p in LEGACY_PREFIXES if not any(i.startswith(p + "_") for i in recorded)]
