"""The journal: every action that changed something, who did it, and the flags around it."""

from __future__ import annotations

import os
import pwd
import socket
from datetime import datetime
from functools import cache
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from ..rules.flags import Flags

JournalAction = Literal[
    "migrate", "promote", "rollback-opened", "rollback-closed", "rollback-window-closed",
    "restore-flags", "archive", "backfill", "verify", "repair", "recon", "verify-reads", "setting",
    "deploy", "remedy", "remedy-undone", "accept-loss",
]
FLAG_WRITING_ACTIONS = ("promote", "rollback-opened", "restore-flags")
JOURNAL_CHANNEL = "cutover_journal"  # every journal row notifies it, so other consoles look again at once
CONFIRMED = "confirmed by operator, not read back"  # a `deploy` row's `how` when nothing was read back


class JournalEntry(BaseModel):
    id: int
    at: datetime
    operator: str
    action: JournalAction
    detail: dict[str, Any]
    flags_before: Flags | None
    flags_after: Flags | None
    report_id: str | None
    db_session_user: str | None = None
    db_current_user: str | None = None
    client_addr: IPv4Address | IPv6Address | None = None  # None over a Unix socket
    os_user: str | None = None
    os_host: str | None = None
    runbook: dict[str, Any] | None = None  # the runbook file in force: its sha256 and gates

    def who(self) -> str:
        """Where the action came from, beyond the operator's name."""
        machine = f"{self.os_user or '?'}@{self.os_host or '?'}"
        role = self.db_session_user or "?"
        if self.db_current_user and self.db_current_user != self.db_session_user:
            role += f" as {self.db_current_user}"
        return f"{machine}, db {role}" + (f" from {self.client_addr}" if self.client_addr else "")

    def gates(self) -> str:
        """The gates of the runbook file in force when it was written, and the file's hash."""
        if not self.runbook:
            return ""
        gates = self.runbook.get("gates") or {}
        rehearsal = "REHEARSAL " if self.runbook.get("rehearsal") else ""
        return rehearsal + (f"runbook {str(self.runbook.get('sha256') or '?')[:12]}: confidence "
                f"{gates.get('confidence_period_hours', '?')} h, {gates.get('passing_verifies_before_archive', '?')} "
                "passing verifies before the archive")


_COLUMNS = ("id, at, operator, action, detail, flags_before, flags_after, report_id, "
            "db_session_user, db_current_user, client_addr, os_user, os_host, runbook")


@cache
def _machine() -> tuple[str, str]:
    """The operating-system user (by uid, not $USER, which anyone sets) and host of this console."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid {os.getuid()}"
    return user, socket.gethostname()


def _entry(row: tuple) -> JournalEntry:
    return JournalEntry(**dict(zip(_COLUMNS.split(", "), row)))


def record(conn: psycopg.Connection, operator: str, action: JournalAction, *,
           detail: dict[str, Any] | None = None, flags_before: Flags | None = None,
           flags_after: Flags | None = None, report_id: str | None = None,
           runbook: dict[str, Any] | None = None) -> JournalEntry:
    row = conn.execute(
        f"""
        INSERT INTO cutover.journal (operator, action, detail, flags_before, flags_after, report_id, os_user, os_host,
                                     runbook)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
        """,
        (operator, action, Jsonb(detail or {}),
         Jsonb(flags_before.model_dump()) if flags_before else None,
         Jsonb(flags_after.model_dump()) if flags_after else None, report_id, *_machine(),
         Jsonb(runbook) if runbook is not None else None),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row it inserted
    conn.execute("SELECT pg_notify(%s, %s)", (JOURNAL_CHANNEL, str(row[0])))  # sent when the row commits
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
