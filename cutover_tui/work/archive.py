"""Stage F: run the manual legacy archive, only behind every gate and the typed name.

The SQL is the team's reviewed file under `sql/manual/`, run as it is in one
transaction; the console itself never drops a `platform_*` table.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pydantic import BaseModel

from ..errors import BadInput, CutoverError
from ..rules.mapping import TABLES
from ..rules.matrix import refuse
from ..store import journal
from ..store.session import Session

ARCHIVE_FILE = Path("manual") / "0009_legacy_archive_platform_tables.sql"


class ArchivePlan(BaseModel):
    database: str
    path: Path
    sql: str


def plan_archive(session: Session) -> ArchivePlan:
    step = session.assess().step("archive")
    if not step.allowed:
        raise refuse(step)
    path = session.runbook.paths.sql_dir / ARCHIVE_FILE
    try:
        sql = path.read_text(encoding="utf-8")
    except OSError:
        raise CutoverError(f"The archive SQL {path} cannot be read; restore it from the repository.") from None
    check_archive_sql(sql, path)
    return ArchivePlan(database=session.database_name, path=path, sql=sql)


_TRANSACTION = (enums.TransactionStmtKind.TRANS_STMT_BEGIN, enums.TransactionStmtKind.TRANS_STMT_START,
                enums.TransactionStmtKind.TRANS_STMT_COMMIT)


# SYSTEM.md §8: the legacy tables the archive moves, the mapped six and the permissions (nothing
# else: v2 stays put).
ARCHIVED_TABLES = (*(table.legacy for table in TABLES), "platform_permissions")


def _moves_only(statement: ast.Node) -> bool:
    """BEGIN/COMMIT, CREATE SCHEMA (nothing inside it), and ALTER TABLE … SET SCHEMA | RENAME TO
    of a legacy table."""
    match statement:
        case ast.TransactionStmt():
            return statement.kind in _TRANSACTION
        case ast.CreateSchemaStmt():
            return not statement.schemaElts
        case ast.AlterObjectSchemaStmt():
            return (statement.objectType == enums.ObjectType.OBJECT_TABLE and statement.relation is not None
                    and statement.relation.relname in ARCHIVED_TABLES)
        case ast.RenameStmt():
            return (statement.renameType == enums.ObjectType.OBJECT_TABLE and statement.relation is not None
                    and statement.relation.relname in ARCHIVED_TABLES)
    return False


def check_archive_sql(sql: str, path: Path) -> None:
    """Read the file with Postgres's own parser (pglast): the archive only moves and renames
    tables, so any other statement (DROP however spelt, TRUNCATE, DELETE, dynamic SQL in a DO
    block) refuses the whole file, naming the statement."""
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise CutoverError(f"The archive SQL {path} does not parse as SQL ({exc}); restore it from the "
                           "repository.") from None
    encoded = sql.encode("utf-8")  # the parser's offsets count bytes
    for raw in statements:
        if raw.stmt is None or not _moves_only(raw.stmt):
            start = raw.stmt_location or 0
            text = encoded[start:start + raw.stmt_len if raw.stmt_len else None].decode("utf-8", "replace")
            shown = " ".join(text.split())
            raise CutoverError(
                f"The archive SQL {path} holds a statement the archive may not run "
                f"({type(raw.stmt).__name__}: {shown[:120]}{'…' if len(shown) > 120 else ''}); it may only "
                "BEGIN/COMMIT, CREATE SCHEMA and ALTER TABLE … SET SCHEMA or RENAME TO of the legacy "
                "platform_* tables, so it is refused.")


def run_archive(session: Session, plan: ArchivePlan, confirm: str) -> journal.JournalEntry:
    if confirm != plan.database:
        raise BadInput(f"The typed name {confirm!r} is not this database's name; nothing was archived.")
    with session.operator_lock():
        assessment = session.assess()
        step = assessment.step("archive")
        if not step.allowed:
            raise refuse(step)
        # The file carries its own BEGIN/COMMIT; journal after it committed.
        try:
            session.conn.execute(plan.sql)
        except psycopg.Error as exc:
            session.conn.execute("ROLLBACK")  # the file's own BEGIN left a failed transaction
            raise session.database_error(exc) from None
        return session.record("archive", detail={"file": plan.path.name, "database": plan.database},
                              flags_before=assessment.flags, flags_after=assessment.flags)
