"""How the long jobs walk a table: by its legacy primary key, cut into one part per worker,
each part in ranges sized toward a target duration, on connections set up alike.

Backfill and verify both walk this way (recon estimates the same cut)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..store import db
from ..store.db import scalar

SPLIT_ROWS = 50_000  # tables larger than this are cut into one key range per worker


def job_connection(url: str, application: str) -> psycopg.Connection:
    """A connection for a job's walk: autocommit, named, never queueing long behind a lock."""
    conn = db.connect(url, autocommit=True)
    conn.execute("SELECT set_config('application_name', %s, false)", (application,))
    # Never queue behind DDL or an application's row lock for long: fail the range instead.
    conn.execute("SET lock_timeout = '5s'")
    # One worker per core already: a parallel plan per range would only contend; a range's
    # hash joins fit in memory.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET work_mem = '64MB'")
    # No JIT: a range is a statement of a fraction of a second, planned with its values, whose
    # cost estimate still passes the JIT thresholds; compiling it took longer than it saved.
    conn.execute("SET jit = off")
    return conn


def probe_by_index(conn: psycopg.Connection) -> None:
    """Inside a range's transaction: join the tables its rules read row by row, through their
    indexes. A range is a sliver of its parents: a hash or merge join reads every parent row for
    every range, so a walk would cost the square of its size (at ten times M, verify took 1.8 x
    as long a row). A full join, which can only hash or merge, still does."""
    conn.execute("SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)")


def pieces(total: int, workers: int) -> int:
    """How many parts a table of `total` legacy rows is cut into."""
    return workers if total > SPLIT_ROWS else 1


def estimate(conn: psycopg.Connection, table: str) -> int | None:
    """The planner's row count of `table`: its last statistics scaled to its size now, as the
    planner scales them; None before its first ANALYZE or VACUUM."""
    return scalar(conn, "SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0 THEN c.reltuples / c.relpages "
                        "* (pg_relation_size(c.oid) / current_setting('block_size')::int) END::bigint "
                        "FROM pg_class c WHERE c.oid = %s::regclass", (table,))


Bounds = list[tuple[str | None, str | None]]


def cut(conn: psycopg.Connection, key_at: sql.Composed, total: int, workers: int) -> Bounds:
    """The parts' (lo, hi] bounds: `key_at` finds the key `%(offset)s` rows in. With `total` an
    estimate, an offset past the last row cuts nothing: the parts still hold every key once."""
    count = pieces(total, workers)
    found = [conn.execute(key_at, {"lo": None, "hi": None, "offset": total * k // count}).fetchone()
             for k in range(1, count)]
    cuts = sorted({row[0] for row in found if row is not None})
    return list(zip([None, *cuts], [*cuts, None]))


class RangeSizer:
    """The next range's row count, aimed at `target` seconds a range: it halves at most, and
    grows by up to `step` times, or `far` times while far below the target (each range has a
    fixed cost to amortise)."""

    def __init__(self, first: int, target: float, lowest: int, highest: int, *, step: float, far: float) -> None:
        self.size, self.target = first, target
        self.lowest, self.highest, self.step, self.far = lowest, highest, step, far

    def after(self, seconds: float) -> int:
        ratio = self.target / max(seconds, 1e-3)
        factor = min(max(ratio, 0.5), self.far if ratio > self.far else self.step)
        self.size = max(self.lowest, min(int(self.size * factor), self.highest))
        return self.size
