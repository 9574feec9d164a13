"""The journal: every action that changed something, who did it, and the flags around it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from .flags import Flags

JournalAction = Literal[
    "migrate", "promote", "rollback-opened", "rollback-closed", "rollback-window-closed",
    "restore-flags", "archive", "backfill", "verify", "repair", "recon", "verify-reads", "setting",
]
FLAG_WRITING_ACTIONS = ("promote", "rollback-opened", "restore-flags")


class JournalEntry(BaseModel):
    id: int
    at: datetime
    operator: str
    action: JournalAction
    detail: dict[str, Any]
    flags_before: Flags | None
    flags_after: Flags | None
    report_id: str | None


_COLUMNS = "id, at, operator, action, detail, flags_before, flags_after, report_id"


def _entry(row: tuple) -> JournalEntry:
    return JournalEntry(**dict(zip(_COLUMNS.split(", "), row)))


def record(conn: psycopg.Connection, operator: str, action: JournalAction, *,
           detail: dict[str, Any] | None = None, flags_before: Flags | None = None,
           flags_after: Flags | None = None, report_id: str | None = None) -> JournalEntry:
    row = conn.execute(
        f"""
        INSERT INTO cutover.journal (operator, action, detail, flags_before, flags_after, report_id)
        VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
        """,
        (operator, action, Jsonb(detail or {}),
         Jsonb(flags_before.model_dump()) if flags_before else None,
         Jsonb(flags_after.model_dump()) if flags_after else None, report_id),
    ).fetchone()
    return _entry(row)


def entries(conn: psycopg.Connection, limit: int | None = None) -> list[JournalEntry]:
    """Oldest first; with `limit`, the newest `limit` entries."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM cutover.journal ORDER BY id DESC LIMIT %s) j ORDER BY id",
        (limit,),
    ).fetchall()
    return [_entry(row) for row in rows]


def last_of(conn: psycopg.Connection, actions: tuple[str, ...]) -> JournalEntry | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM cutover.journal WHERE action = ANY(%s) ORDER BY id DESC LIMIT 1",
        (list(actions),),
    ).fetchone()
    return _entry(row) if row else None
