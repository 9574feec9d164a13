"""Stage F: run the manual legacy archive, only behind every gate and the typed name.

The SQL is the team's reviewed file under `sql/manual/`, run as it is in one
transaction; the console itself never drops a `platform_*` table.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from pydantic import BaseModel

from . import journal
from .errors import BadInput, CutoverError
from .session import Session
from .transitions import refuse

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
    statements = re.sub(r"--[^\n]*", "", sql)
    if re.search(r"\bdrop\s+(table|schema|index)\b", statements, re.IGNORECASE):
        raise CutoverError(f"The archive SQL {path} contains DROP; the archive only moves tables, so it is refused.")
    return ArchivePlan(database=session.database_name, path=path, sql=sql)


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
        return session.record("archive",
                              detail={"file": plan.path.name, "database": plan.database},
                              flags_before=assessment.flags, flags_after=assessment.flags)
