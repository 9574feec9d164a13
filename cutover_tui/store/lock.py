"""The operator lock: one console acts on a database at a time; others read.

A session-level advisory lock, so a console that dies releases it with its session;
a row in `cutover.operator_lock` says who holds it, for the others to see.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime

import psycopg
from pydantic import BaseModel

from ..errors import Refused
from .db import OPERATOR_LOCK_KEY, scalar

UNKNOWN = "an unknown operator"  # the key is held, and no row says by whom


class LockHolder(BaseModel):
    operator: str
    since: datetime
    backend_pid: int
    client: str

    def describe(self) -> str:
        return f"{self.operator} ({self.client}) since {self.since:%Y-%m-%d %H:%M:%S %Z}".strip()


class LockHeld(Refused):
    title = "Operator lock"


def client_label() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def holder(conn: psycopg.Connection) -> LockHolder | None:
    """Who holds the lock now, judged by the live advisory lock rather than the row alone."""
    row = conn.execute(
        """
        SELECT o.operator, o.since, l.pid, coalesce(o.client, 'backend pid ' || l.pid)
        FROM pg_locks l
        LEFT JOIN cutover.operator_lock o ON o.backend_pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = %s AND l.objid = %s
        """,
        (OPERATOR_LOCK_KEY >> 32, OPERATOR_LOCK_KEY & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return None
    operator, since, pid, client = row
    if operator is None:
        operator, since = UNKNOWN, scalar(conn, "SELECT now()")
    return LockHolder(operator=operator, since=since, backend_pid=pid, client=client)


# A holder with no row is a console's moment of bookkeeping (finishing an interrupted flag write
# takes the key for one transaction) or one between taking the key and writing its row: worth
# a short wait, where a named operator's lock is refused at once.
UNNAMED_WAIT_SECONDS = 3.0


def acquire(conn: psycopg.Connection, operator: str) -> LockHolder:
    """Take the lock for this connection's session, or refuse naming who holds it."""
    deadline = time.monotonic() + UNNAMED_WAIT_SECONDS
    while not scalar(conn, "SELECT pg_try_advisory_lock(%s)", (OPERATOR_LOCK_KEY,)):
        other = holder(conn)
        if (other is None or other.operator == UNKNOWN) and time.monotonic() < deadline:  # gone, or a moment's
            time.sleep(0.05)
            continue
        who = other.describe() if other else "another console"
        raise LockHeld(f"The operator lock for this database is held by {who}; "
                       "this console is read-only until they finish.")
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO cutover.operator_lock (operator, since, backend_pid, client)
            VALUES (%s, now(), pg_backend_pid(), %s)
            ON CONFLICT (singleton) DO UPDATE SET operator = EXCLUDED.operator,
                since = EXCLUDED.since, backend_pid = EXCLUDED.backend_pid, client = EXCLUDED.client
            """,
            (operator, client_label()),
        )
    held = holder(conn)
    assert held is not None  # it was written in this session a moment ago
    return held


def release(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM cutover.operator_lock WHERE backend_pid = pg_backend_pid()")
    conn.execute("SELECT pg_advisory_unlock(%s)", (OPERATOR_LOCK_KEY,))
