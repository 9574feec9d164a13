"""Stage A: apply `sql/*.sql` the way the API's own migrator does.

History lives in `platform_schema_migrations` (file name, SHA-256 hex of the text).
A file whose stored checksum differs is never re-applied; `manual/` is never applied.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel

from ..errors import MigrationError
from ..rules.mapping import TABLES
from ..store.db import scalar
from ..store.history import V2_MIGRATION, history, missing_legacy

HISTORY_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS platform_schema_migrations (
    id TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)
"""


class MigrationFile(BaseModel):
    id: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


class AppliedOtherwise(BaseModel):
    """0005 recorded with another checksum than the console's file: the API's migrator applied its own."""

    id: str
    recorded: str
    file: str


class MigrationPlan(BaseModel):
    to_apply: list[MigrationFile]
    already_applied: list[str]
    applied_otherwise: list[AppliedOtherwise] = []

    def nothing_to_apply(self) -> str:
        """What the operator reads when the plan is empty."""
        done = [f.id for f in self.applied_otherwise] + self.already_applied
        text = f"Nothing to apply: {', '.join(done) or 'no migration files'} already applied."
        for other in self.applied_otherwise:
            text += (f" {other.id} is recorded with checksum {other.recorded}, not this console's file's "
                     f"{other.file}: the API's own migrator applied it, so Stage A is done and it is never "
                     "re-applied.")
        return text


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
    to_apply, already, otherwise = [], [], []
    for file in migration_files(folder):
        stored = recorded.get(file.id)
        if stored is None:
            to_apply.append(file)
        elif stored != file.checksum and file.id == V2_MIGRATION:
            otherwise.append(AppliedOtherwise(id=file.id, recorded=stored, file=file.checksum))
        elif stored != file.checksum:
            raise MigrationError(
                f"{file.id} was applied with checksum {stored} but the file now has checksum "
                f"{file.checksum}; restore the applied version of the file, never re-apply it.")
        else:
            already.append(file.id)
    v2 = next((f for f in to_apply if f.id == V2_MIGRATION), None)
    if v2 is not None:
        refuse_other_shapes(conn, v2)
    return MigrationPlan(to_apply=to_apply, already_applied=already, applied_otherwise=otherwise)


# One table's catalog as "kind name" -> definition; NOT NULL constraints (catalogued as
# constraints from Postgres 18 on) are read from the columns, so every version reads alike.
_SHAPE = """
    SELECT 'column ' || a.attname,
           format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = %(rel)s AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conname, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE conrelid = %(rel)s AND contype <> 'n'
    UNION ALL
    SELECT 'index ' || c.relname,
           CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END
           || regexp_replace(pg_get_indexdef(i.indexrelid), '^.*? USING ', 'USING ')
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = %(rel)s AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
"""


def _shape(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str] | None:
    rel = scalar(conn, "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))::oid", (schema, table))
    if rel is None:
        return None
    return dict(conn.execute(_SHAPE, {"rel": rel}).fetchall())


def _differences(made: dict[str, str], found: dict[str, str]) -> list[str]:
    out = []
    for name in sorted(made.keys() | found.keys(), key=lambda n: (not n.startswith("column"), n)):
        if name not in found:
            out.append(f"{name} missing ({made[name]})")
        elif name not in made:
            out.append(f"{name} not in the file ({found[name]})")
        elif made[name] != found[name]:
            out.append(f"{name} is {found[name]}, the file makes {made[name]}")
    return out


def refuse_other_shapes(conn: psycopg.Connection, file: MigrationFile) -> None:
    """Refuse, before anything is applied, when a v2 table already exists unlike the one the
    file creates (its `IF NOT EXISTS` would keep the stranger silently). The file runs in a
    scratch schema inside a transaction that is rolled back, so the comparison is with exactly
    what this file creates, whichever 0005 it is."""
    existing = {t.v2 for t in TABLES if _shape(conn, "public", t.v2) is not None}
    if not existing:
        return
    scratch = f"cutover_shape_check_{os.getpid()}"
    found: dict[str, list[str]] = {}
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            # Definitions print a table's name bare where the search path finds it: public's
            # are read with public alone on the path, the file's with the scratch schema first.
            conn.execute("SET LOCAL search_path = public")
            theirs = {table: _shape(conn, "public", table) for table in existing}
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
            conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(scratch)))
            conn.execute(file.sql)
            for table in sorted(existing):
                made = _shape(conn, scratch, table)
                there = theirs[table]
                if made is not None and there is not None and made != there:
                    found[table] = _differences(made, there)
            raise psycopg.Rollback()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
        raise MigrationError(f"{file.id} could not be checked against the tables already here ({first_line}); "
                             "nothing was applied.") from exc
    if found:
        details = "; ".join(f"table {table}: {', '.join(diffs)}" for table, diffs in found.items())
        raise MigrationError(f"{file.id} was not applied, because v2 tables already exist with another shape than "
                             f"it creates ({details}); they are not the API's: make them match the file or remove "
                             "them, then run migrate again.")


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

