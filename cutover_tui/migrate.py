"""Stage A: apply `sql/*.sql` the way the API's own migrator does.

History lives in `platform_schema_migrations` (file name, SHA-256 hex of the text).
A file whose stored checksum differs is never re-applied; `manual/` is never applied.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
from pydantic import BaseModel

from .errors import MigrationError

HISTORY_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS platform_schema_migrations (
    id TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)
"""
LEGACY_PREFIXES = ("0001", "0002", "0003", "0004")
V2_MIGRATION = "0005_accounts_v2_schema.sql"


class MigrationFile(BaseModel):
    id: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


class MigrationPlan(BaseModel):
    to_apply: list[MigrationFile]
    already_applied: list[str]


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def migration_files(folder: Path) -> list[MigrationFile]:
    """The `*.sql` files directly in `folder`, by name; sub-folders (manual/, legacy/) never."""
    if not folder.is_dir():
        raise MigrationError(f"Migration folder {folder} does not exist; check paths.sql_dir in the runbook file.")
    files = []
    for path in sorted(folder.glob("*.sql")):
        if "manual" in path.parts[len(folder.parts):]:
            continue
        files.append(MigrationFile(id=path.name, path=path, checksum=checksum(path.read_text(encoding="utf-8"))))
    return files


def history(conn: psycopg.Connection) -> dict[str, str] | None:
    """Recorded migrations as id -> checksum, or None when there is no history table."""
    if conn.execute("SELECT to_regclass('public.platform_schema_migrations')").fetchone()[0] is None:
        return None
    return dict(conn.execute("SELECT id, checksum FROM platform_schema_migrations").fetchall())


def missing_legacy(recorded: dict[str, str]) -> list[str]:
    return [p for p in LEGACY_PREFIXES if not any(i.startswith(p + "_") for i in recorded)]


def plan(conn: psycopg.Connection, folder: Path) -> MigrationPlan:
    """What `migrate` would apply, after every safety check; raises instead of guessing."""
    recorded = history(conn)
    if recorded is None:
        raise MigrationError(
            "This database has no platform_schema_migrations table, so it is not the account "
            "API's database or its migrations never ran; check the database URL.")
    missing = missing_legacy(recorded)
    if missing:
        raise MigrationError(
            f"Migrations {', '.join(missing)} are not recorded in platform_schema_migrations; "
            "apply the API's migrations through 0004_platform_books_collection.sql first.")
    to_apply, already = [], []
    for file in migration_files(folder):
        stored = recorded.get(file.id)
        if stored is None:
            to_apply.append(file)
        elif stored != file.checksum:
            raise MigrationError(
                f"{file.id} was applied with checksum {stored} but the file now has checksum "
                f"{file.checksum}; restore the applied version of the file, never re-apply it.")
        else:
            already.append(file.id)
    return MigrationPlan(to_apply=to_apply, already_applied=already)


def apply_file(conn: psycopg.Connection, file: MigrationFile) -> None:
    """Run one file and record it, in one transaction."""
    with conn.transaction():
        conn.execute(HISTORY_TABLE_DDL)
        conn.execute(file.sql)
        conn.execute("INSERT INTO platform_schema_migrations (id, checksum) VALUES (%s, %s)",
                     (file.id, file.checksum))


def apply_plan(conn: psycopg.Connection, migration_plan: MigrationPlan) -> list[str]:
    for file in migration_plan.to_apply:
        apply_file(conn, file)
    return [file.id for file in migration_plan.to_apply]


def apply_legacy_baseline(conn: psycopg.Connection, sql_dir: Path) -> list[str]:
    """Build the pre-cutover schema (0001..0004) for demos and tests, recorded as the API does."""
    recorded = history(conn) or {}
    applied = []
    for file in migration_files(sql_dir / "legacy"):
        if file.id not in recorded:
            apply_file(conn, file)
            applied.append(file.id)
    return applied

