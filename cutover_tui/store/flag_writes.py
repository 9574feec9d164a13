"""A flag write's intent, so that no env file write goes unjournaled.

The intent (the journal rows the write will make) commits before the file is written; the
transaction that journals the rows finishes it. A console killed in between (SIGTERM, SIGINT,
the database gone) leaves it open, and the next console that may act finishes it by what the
file then holds: the flags written, so it journals the rows; the flags before, so nothing was."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from ..rules.flags import Flags
from .journal import JournalAction

Outcome = Literal["written", "not written", "written, journaled by the next console"]


class JournalRow(BaseModel):
    """A journal row a flag write makes (the change itself, and a rollback it closes)."""

    action: JournalAction
    detail: dict[str, Any] = {}
    flags_before: Flags | None = None
    flags_after: Flags | None = None


class Intent(BaseModel):
    id: int
    operator: str
    env_file: str
    flags_before: Flags
    flags_after: Flags
    journal_rows: list[JournalRow]
    started_at: datetime


_COLUMNS = "id, operator, env_file, flags_before, flags_after, journal_rows, started_at"


def open_intent(conn: psycopg.Connection, operator: str, env_file: str, flags_before: Flags, flags_after: Flags,
                rows: list[JournalRow]) -> Intent:
    """Record the intent in a transaction of its own, committed before the file is touched."""
    with conn.transaction():
        row = conn.execute(
            f"INSERT INTO cutover.flag_writes (operator, env_file, flags_before, flags_after, journal_rows) "
            f"VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (operator, env_file, Jsonb(flags_before.model_dump()), Jsonb(flags_after.model_dump()),
             Jsonb([r.model_dump(mode="json") for r in rows]))).fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row it inserted
    return Intent(**dict(zip(_COLUMNS.split(", "), row)))


def finish(conn: psycopg.Connection, intent: Intent, outcome: Outcome) -> None:
    conn.execute("UPDATE cutover.flag_writes SET finished_at = clock_timestamp(), outcome = %s WHERE id = %s",
                 (outcome, intent.id))


def open_intents(conn: psycopg.Connection) -> list[Intent]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM cutover.flag_writes WHERE finished_at IS NULL ORDER BY id")
    return [Intent(**dict(zip(_COLUMNS.split(", "), row))) for row in rows]
