"""A job running in another console, as a console that only watches sees it: from the database.

A backfill checkpoints every batch in `cutover.backfill_parts`, so its rows per table are
there to read; a verify keeps nothing until its report, so only that it runs is known.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import psycopg
from pydantic import BaseModel

from ..rules.mapping import BY_NAME
from ..store.db import JOB_LOCK_KEY, scalar
from ..store.lock import LockHolder, holder


class TableProgress(BaseModel):
    table: str
    done: int
    total: int | None  # the server's estimate of the legacy rows; None before it has one


class RunningJob(BaseModel):
    kind: Literal["backfill", "verify"]
    operator: str | None = None
    started_at: datetime | None = None
    pass_no: int = 1
    tables: tuple[TableProgress, ...] = ()


class Activity(BaseModel):
    """What an observer polls every second: who holds the operator lock, and the job running."""

    lock_holder: LockHolder | None
    job: RunningJob | None


def _job_application(conn: psycopg.Connection) -> str | None:
    """The application name of the session holding the job lock (backfill and verify name theirs)."""
    row = conn.execute(
        """
        SELECT coalesce(a.application_name, '')
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = %s AND l.objid = %s
        """, (JOB_LOCK_KEY >> 32, JOB_LOCK_KEY & 0xFFFFFFFF)).fetchone()
    return None if row is None else str(row[0])


def _estimate(conn: psycopg.Connection, table: str) -> int | None:
    # Statistics, not count(*): an observer asks every second, and a table may hold millions of rows.
    rows = scalar(conn, "SELECT greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0)) FROM pg_class c "
                        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(%s)", (table,))
    return int(rows) if rows is not None and rows > 0 else None


def _backfill(conn: psycopg.Connection) -> RunningJob:
    run = conn.execute("SELECT id, operator, started_at, tables FROM cutover.backfill_runs WHERE state = 'running' "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    if run is None:  # between its lock and its run row
        return RunningJob(kind="backfill")
    run_id, operator, started_at, names = run
    pass_no = int(scalar(conn, "SELECT coalesce(max(pass), 1) FROM cutover.backfill_parts WHERE run_id = %s",
                         (run_id,)))
    done: dict[str, int] = dict(conn.execute(
        "SELECT table_name, sum(coalesce((counters->>'rows')::bigint, 0)) FROM cutover.backfill_parts "
        "WHERE run_id = %s AND pass = %s GROUP BY table_name", (run_id, pass_no)).fetchall())
    tables = tuple(TableProgress(table=name, done=int(done.get(name, 0)),
                                 total=_estimate(conn, BY_NAME[name].legacy) if name in BY_NAME else None)
                   for name in names)
    return RunningJob(kind="backfill", operator=operator, started_at=started_at, pass_no=pass_no, tables=tables)


def read_activity(conn: psycopg.Connection) -> Activity:
    """Reads only: the lock, the job lock and the backfill's checkpoints."""
    application = _job_application(conn)
    job = None
    if application is not None:
        job = _backfill(conn) if application == "cutover backfill" else RunningJob(kind="verify")
    return Activity(lock_holder=holder(conn), job=job)
