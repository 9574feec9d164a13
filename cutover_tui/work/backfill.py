"""Stage B: copy legacy rows into v2 by the §3 rules, in short committed batches.

Each batch covers a primary-key range and commits with its checkpoint, so a crash at
any moment resumes where it stopped. A range whose v2 rows already hash the same as
their source is skipped without writing, which makes an idle re-run nearly free; a
final catch-up pass repeats that comparison to pick up rows changed while we ran.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from ..errors import BadInput, CutoverError, Refused
from ..rules.mapping import (
    BY_NAME,
    TABLES,
    TableMap,
    column_types,
    compared_by_value,
    ids_filter,
    range_filter,
    row_hash,
    source_query,
    written_before,
)
from ..store import db
from ..store.db import JOB_LOCK_KEY, JOB_WORKERS_KEY, one_row, scalar
from . import ranges
from .ranges import RangeSizer

EXAMPLE_ROWS = 100
MAX_RANGE = 500_000  # rows compared by hash in one read-only transaction
MAX_WRITE = 50_000  # rows written in one transaction: a slow moment cannot make it long
DELETED_IN_LEGACY = "row deleted in legacy; kept in v2"
# A range whose transaction the server rolled back (a deadlock with an application's writes,
# say) is tried again this many times; its checkpoint rolled back with it, so nothing repeats.
ATTEMPTS = 5
WORKERS_GONE_SECONDS = 30  # how long a run waits for a killed console's workers to end


class ParentKey(NamedTuple):
    """One foreign key of a v2 table to another table the backfill writes."""

    constraint: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    implied: bool = False  # met whenever the table's other keys are: not probed for every row
    same_row_as: str = ""  # the key whose parent row is this one's too: its lock stands for both


# v2's foreign keys between the tables the backfill writes, as 0005 declares them, in its order (a
# test holds this list to the catalog). A row whose parent is not in v2 yet (it arrived in legacy
# after its table was walked) is left out of its range's write, rather than failing the range and
# splitting it down to that row; a later pass brings it with its parent.
PARENT_KEYS: dict[str, tuple[ParentKey, ...]] = {
    "account_members": (ParentKey("account_members_account_id_fkey", ("account_id",), "accounts", ("id",)),),
    "identities": (ParentKey("identities_account_id_fkey", ("account_id",), "accounts", ("id",)),),
    # A book's (account, identity) pair in identities means both are in v2 (an identity's
    # account is in accounts), so that one probe a row stands for all three keys.
    "pixbooks": (ParentKey("pixbooks_account_id_fkey", ("account_id",), "accounts", ("id",), implied=True),
                 ParentKey("pixbooks_identity_id_fkey", ("identity_id",), "identities", ("id",), implied=True,
                           same_row_as="pixbooks_account_identity_fk"),
                 ParentKey("pixbooks_account_identity_fk", ("account_id", "identity_id"), "identities",
                           ("account_id", "id"))),
    "pixbook_snapshots": (ParentKey("pixbook_snapshots_pixbook_id_fkey", ("pixbook_id",), "pixbooks", ("id",)),),
    "audit_events": (ParentKey("audit_events_account_id_fkey", ("account_id",), "accounts", ("id",)),),
}


def checks_parents_itself(conn: psycopg.Connection, tables: Iterable[str]) -> bool:
    """Whether a first pass may switch off the foreign keys' triggers for its plain inserts
    (`session_replication_role`, for this session only) and check and lock each range's
    parents itself, set-based: the per-row trigger checks are nearly half a row's cost. Only
    for a role allowed to, and only while the tables have no trigger but the foreign keys'
    (replica mode would silence any other)."""
    return bool(scalar(conn, """
        SELECT has_parameter_privilege('session_replication_role', 'SET')
               AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = ANY(%s::regclass[]) AND NOT tgisinternal)""",
        (list(tables),)))


def _locking(key: ParentKey) -> sql.Composable:
    """The CTE named after `key`'s constraint: the parent rows of `key` the landing rows of `s`
    name, each looked up once and locked as the foreign key's trigger would lock it. A subquery
    that locks is never merged into its query, so each is one index probe and one lock, never a
    scan of the parent."""
    cols, parent_cols = list(map(sql.Identifier, key.columns)), list(map(sql.Identifier, key.parent_columns))
    named = [sql.Identifier(f"c{i}") for i in range(len(cols))]
    return sql.SQL(
        "{locked} AS MATERIALIZED (SELECT p.* FROM (SELECT DISTINCT {named} FROM s "
        "WHERE issue_kind IS DISTINCT FROM 'error' AND {present}) d, "
        "LATERAL (SELECT {parent_cols} FROM {parent} p WHERE {match} FOR KEY SHARE) p),").format(
        locked=sql.Identifier(key.constraint),
        named=sql.SQL(", ").join(sql.SQL("s.{} AS {}").format(c, n) for c, n in zip(cols, named)),
        present=sql.SQL(" AND ").join(sql.SQL("s.{} IS NOT NULL").format(c) for c in cols),
        parent_cols=sql.SQL(", ").join(sql.SQL("p.{}").format(pc) for pc in parent_cols),
        parent=sql.Identifier(key.parent),
        match=sql.SQL(" AND ").join(sql.SQL("p.{} = d.{}").format(pc, n) for pc, n in zip(parent_cols, named)))


def parent_missing(constraint: str) -> str:
    """The issue of a row left out, or refused, because its parent is not in v2 yet."""
    return (f"its parent row is not in v2 ({constraint}); written in legacy after its parent's table was "
            "walked, a later pass brings both")


class BackfillOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    tables: tuple[str, ...] = tuple(t.v2 for t in TABLES)
    batch_size: int = Field(5000, gt=0)
    target_seconds: float = Field(0.4, gt=0)
    workers: int = Field(2, ge=1)
    max_passes: int = Field(4, ge=1)
    # Compare every range by hash even when the watermarks prove nothing changed.
    full_compare: bool = False


class BackfillProgress(BaseModel):
    table: str
    pass_no: int
    done: int  # rows of the table this pass has done, with those a resumed run's checkpoint had
    total: int
    rows_per_second: float  # of this run's rows only: the time left is (total - done) / rows_per_second
    checkpoint: int = 0  # of `done`, the rows this pass had done before this run (it resumed)


ProgressCallback = Callable[[BackfillProgress], None]


def parse_tables(text: str) -> tuple[str, ...]:
    """`--tables a,b` checked against the v2 tables, kept in dependency order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise BadInput(f"Unknown table {', '.join(unknown) or '(none given)'}: choose from "
                       f"{', '.join(BY_NAME)}.")
    return tuple(t.v2 for t in TABLES if t.v2 in names)


class _Split(Exception):
    """The range has more rows to write than one short transaction should hold."""


class _Result(BaseModel):
    """What one range did; added up per part and kept in its checkpoint."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted_in_legacy: int = 0
    seconds: float = 0.0
    longest_transaction: float = 0.0
    retried: int = 0  # transactions the server rolled back and that were run again
    issues: dict[str, dict[str, Any]] = {}

    def add_issue(self, kind: str, text: str, rows: list[Any], count: int | None = None) -> None:
        """Count `count` rows (default: as many as given) under one issue, keeping examples."""
        entry = self.issues.setdefault(f"{kind}|{text}", {"kind": kind, "issue": text, "count": 0, "rows": []})
        entry["count"] += len(rows) if count is None else count
        entry["rows"] = (entry["rows"] + rows)[:EXAMPLE_ROWS]

    def merge(self, other: _Result) -> _Result:
        merged = self.model_copy(deep=True)
        for name in ("rows", "inserted", "updated", "unchanged", "deleted_in_legacy", "seconds", "retried"):
            setattr(merged, name, getattr(self, name) + getattr(other, name))
        merged.longest_transaction = max(self.longest_transaction, other.longest_transaction)
        for entry in other.issues.values():
            merged.add_issue(entry["kind"], entry["issue"], entry["rows"], entry["count"])
        return merged

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    @property
    def seen(self) -> int:
        """Legacy rows this result read: those that landed and those the rules left out."""
        return self.rows + sum(e["count"] for e in self.issues.values() if e["kind"] == "error")


# One statement writes a range and returns its counts and its issue rows; {kept} and {conflict}
# are empty for a range v2 holds nothing of (a plain insert is cheaper than an upsert), and the
# waiting parts (below) when the rows' parents need no probe.
_WRITE = """
    WITH s AS MATERIALIZED ({source}),{waiting}
    w AS (
        INSERT INTO {v2} AS t ({cols}) SELECT {cols} FROM s WHERE issue_kind IS DISTINCT FROM 'error' {landing}
            {kept}
        {conflict}
        RETURNING (t.xmax = 0) AS inserted)
    SELECT 0, NULL, NULL, NULL,
           (SELECT count(*) FROM s WHERE issue_kind IS DISTINCT FROM 'error' {landing}),
           (SELECT count(*) FILTER (WHERE inserted) FROM w),
           (SELECT count(*) FILTER (WHERE NOT inserted) FROM w)
    UNION ALL
    SELECT 1, issue_kind, issue, issue_row, NULL, NULL, NULL FROM s WHERE issue_kind IS NOT NULL {landing}
    {waited}
    ORDER BY 1"""
# `o`: the rows that wait for their parent, each with its issue (usually none); left out of the
# write and of the rows counted, reported instead of the rules' issue of the row. NOT IN (ids
# are never NULL) is a hashed list, whatever joins the range's transaction allows: as an
# anti-join without hashing, a range whose every row waits would take the square of its size.
_WAITING = "\n    {}"
_LANDING = "AND s.id NOT IN (SELECT id FROM o)"
_WAITED = "UNION ALL SELECT 1, 'error', issue, jsonb_build_object('id', id), NULL, NULL, NULL FROM o"

_SOURCE_HASH = """
    SELECT count(*) FILTER (WHERE issue_kind IS DISTINCT FROM 'error'),
           coalesce(bit_xor({hash}) FILTER (WHERE issue_kind IS DISTINCT FROM 'error'), 0),
           coalesce(jsonb_agg(jsonb_build_array(issue_kind, issue, issue_row))
                    FILTER (WHERE issue_kind IS NOT NULL), '[]')
    FROM ({source}) s"""


class TableSQL:
    """The statements for one table, built from its mapping; ranges are bound as parameters."""

    def __init__(self, table: TableMap, types: tuple[tuple[str, str], ...]):
        self.map = table
        self.types = tuple(t for t in types if t[0] in table.columns)
        self._kinds = dict(self.types)
        self.v2 = sql.Identifier(table.v2)
        self.legacy = sql.Identifier(table.legacy)
        # The columns a re-run sets (the others it leaves as v2 has them).
        self._rerun = [c for c in table.columns if c != "id" and table.rerun_expression(c) is not None]

    def _rerun_value(self, column: str, v2: str, source: str) -> sql.Composable:
        return sql.SQL(self.map.rerun_value(column, v2, source) or "")

    def _as_rerun_leaves(self, v2: str, source: str) -> sql.Composable:
        """Whether the v2 row (alias `v2`) already holds what a re-run would set from the source
        row (alias `source`): such a row is neither rewritten nor locked by a re-run."""
        return sql.SQL("({}) IS NOT DISTINCT FROM ({})").format(
            sql.SQL(", ").join(self._as_compared(c, sql.SQL("{}.{}").format(sql.Identifier(v2), sql.Identifier(c)))
                               for c in self._rerun),
            sql.SQL(", ").join(self._as_compared(c, self._rerun_value(c, v2, source)) for c in self._rerun))

    def _kept(self, v2: str, source: str, keep_newer_v2: bool) -> sql.Composable:
        """Whether the v2 row is left as it is: already as a re-run leaves it, or (`keep_newer_v2`)
        written later than the source row, by an API that writes v2 too."""
        same = self._as_rerun_leaves(v2, source)
        if not (keep_newer_v2 and "updated_at" in self.map.columns):
            return same
        # Fixed aliases of ours (EXCLUDED must stay unquoted).
        return sql.SQL("({} OR {}.updated_at > {}.updated_at)").format(same, sql.SQL(v2), sql.SQL(source))

    def _waiting(self, lock: bool) -> sql.Composable | None:
        """The CTEs ending in `o`: the source rows the rules let land whose parent is not in v2
        (yet), each with the issue naming the first of its foreign keys (in 0005's order) it does
        not meet; None for a table without a parent in v2.

        Each key matched as the foreign key matches it (MATCH SIMPLE: a NULL column matches
        anything). Without `lock`, by one index probe per row (OFFSET 0 keeps the planner from
        hashing the whole parent table for every range instead: a range is a sliver of its
        parent table). With `lock` (the foreign keys' triggers are off), a row lands only if
        `_locking` locked its parent row (FOR KEY SHARE: nobody deletes it or changes its key
        until the range commits)."""
        keys = PARENT_KEYS.get(self.map.v2, ())
        if not keys:
            return None
        ctes: list[sql.Composable] = [_locking(key) for key in keys if lock and not key.same_row_as]
        present = {}
        for key in keys:
            cols, parent_cols = list(map(sql.Identifier, key.columns)), list(map(sql.Identifier, key.parent_columns))
            nulls = sql.SQL(" OR ").join(sql.SQL("s.{} IS NULL").format(c) for c in cols)
            if lock:
                present[key] = sql.SQL("({} OR ({}) IN (SELECT {} FROM {}))").format(
                    nulls, sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in cols),
                    sql.SQL(", ").join(parent_cols), sql.Identifier(key.same_row_as or key.constraint))
            else:
                match = sql.SQL(" AND ").join(sql.SQL("p.{} = s.{}").format(pc, c)
                                              for c, pc in zip(cols, parent_cols, strict=True))
                present[key] = sql.SQL("({} OR EXISTS (SELECT 1 FROM {} p WHERE {} OFFSET 0))").format(
                    nulls, sql.Identifier(key.parent), match)
        # Only a row that waits is probed for every key, to name the one it misses.
        issue = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN NOT {} THEN {}").format(cond, sql.Literal(parent_missing(key.constraint)))
            for key, cond in present.items()))
        ctes.append(sql.SQL("o AS MATERIALIZED (SELECT s.id, {} AS issue FROM s "
                            "WHERE issue_kind IS DISTINCT FROM 'error' AND NOT ({})),").format(
            issue, sql.SQL(" AND ").join(cond for key, cond in present.items() if lock or not key.implied)))
        return sql.SQL("\n    ").join(ctes)

    def upsert(self, where: sql.Composable, *, empty: bool = False, keep_newer_v2: bool = False,
               wait_for_parents: bool = False, lock_parents: bool = False) -> sql.Composed:
        """Write the source rows passing `where`; `empty`: v2 holds none of them yet;
        `keep_newer_v2`: never overwrite a v2 row updated later than its source row;
        `wait_for_parents`: leave out (and report) the rows whose parent is not in v2 yet;
        `lock_parents` (for a session whose foreign-key triggers are off): that, and lock the
        parents of the rows written as the triggers would."""
        cols = sql.SQL(", ").join(map(sql.Identifier, self.map.columns))
        kept: sql.Composable = sql.SQL("")
        conflict: sql.Composable = sql.SQL("")
        if not empty:
            # Rows already as a re-run leaves them are left out before the insert (ON CONFLICT
            # would lock each); the conflict's own test covers a row written meanwhile.
            kept = sql.SQL("AND NOT EXISTS (SELECT 1 FROM {} v WHERE v.id = s.id AND {})").format(
                self.v2, self._kept("v", "s", keep_newer_v2))
            conflict = sql.SQL("ON CONFLICT (id) DO UPDATE SET {sets} WHERE NOT {kept}").format(
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), self._rerun_value(c, "t", "EXCLUDED"))
                    for c in self._rerun),
                kept=self._kept("t", "EXCLUDED", keep_newer_v2))
        waiting = self._waiting(lock_parents) if wait_for_parents or lock_parents else None
        parts: dict[str, sql.Composable] = {"waiting": sql.SQL(""), "landing": sql.SQL(""), "waited": sql.SQL("")}
        if waiting is not None:
            parts = {"waiting": sql.SQL(_WAITING).format(waiting), "landing": sql.SQL(_LANDING),
                     "waited": sql.SQL(_WAITED)}
        return sql.SQL(_WRITE).format(source=source_query(self.map, where), v2=self.v2, cols=cols,
                                      kept=kept, conflict=conflict, **parts)

    def _as_compared(self, column: str, value: sql.Composable) -> sql.Composable:
        """`value` as the row hash sees it: by value, or by its text (jsonb's spelling counts)."""
        return value if compared_by_value(self._kinds[column]) else sql.SQL("({})::text").format(value)

    def source_hash(self, lo: str | None, hi: str | None) -> sql.Composed:
        return sql.SQL(_SOURCE_HASH).format(source=source_query(self.map, range_filter("l", lo, hi)),
                                            hash=row_hash("s", self.types))

    def v2_hash(self, lo: str | None, hi: str | None) -> sql.Composed:
        return sql.SQL("SELECT count(*), coalesce(bit_xor({}), 0) FROM {} t WHERE {}").format(
            row_hash("t", self.types), self.v2, range_filter("t", lo, hi))

    def v2_exists(self, lo: str | None, hi: str | None) -> sql.Composed:
        return sql.SQL("SELECT EXISTS (SELECT 1 FROM {} t WHERE {})").format(self.v2, range_filter("t", lo, hi))

    def deleted_in_legacy(self, lo: str | None, hi: str | None) -> sql.Composed:
        return sql.SQL("""
            SELECT t.id, count(*) OVER () FROM {v2} t
            WHERE {where} AND NOT EXISTS (SELECT 1 FROM {legacy} l WHERE l.id = t.id)
            ORDER BY t.id LIMIT %(limit)s""").format(
            v2=self.v2, legacy=self.legacy, where=range_filter("t", lo, hi))

    def key_at(self, lo: str | None, hi: str | None) -> sql.Composed:
        """The key `%(offset)s` rows into (lo, hi], by the legacy primary key."""
        return sql.SQL("SELECT l.id FROM {} l WHERE {} ORDER BY l.id OFFSET %(offset)s LIMIT 1").format(
            self.legacy, range_filter("l", lo, hi))

    def count_in(self, lo: str | None, hi: str | None) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {} l WHERE {}").format(self.legacy, range_filter("l", lo, hi))

    def count(self, which: str) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {}").format(self.legacy if which == "legacy" else self.v2)


def _run_range(conn: psycopg.Connection, table: TableSQL, lo: str | None, hi: str | None,
               first_pass: bool, late_parents: set[str], own_checks: bool = False) -> _Result:
    """One range in the caller's transaction: skip it if v2 already matches, else upsert.

    A first pass writes a range v2 holds nothing of with a plain insert. With `own_checks`
    (see `checks_parents_itself`) its foreign keys' triggers are off for that insert, which
    locks the range's parents itself and leaves out the rows whose parent is missing.
    Otherwise it does not probe its rows' parents: their table was walked just before, so only
    a parent written in legacy since is missing. The first such row costs a savepoint; the
    range is written again without the rows that wait, and the table joins `late_parents`,
    whose fresh ranges probe every row's parents from then on."""
    params = {"lo": lo, "hi": hi}
    result = _Result()
    where = range_filter("l", lo, hi)
    if first_pass and not scalar(conn, table.v2_exists(lo, hi), params):
        if scalar(conn, table.count_in(lo, hi), params) > MAX_WRITE:
            raise _Split
        try:
            with conn.transaction():  # a savepoint: an application may have written a row meanwhile
                if not own_checks:
                    return _upsert(conn, table, where, params, empty=True,
                                   wait_for_parents=table.map.v2 in late_parents)
                # SET LOCAL: a savepoint rolled back takes it back too; the checkpoint's own
                # write, after it, has its triggers again.
                conn.execute("SET LOCAL session_replication_role = replica")
                result = _upsert(conn, table, where, params, empty=True, lock_parents=True)
                conn.execute("SET LOCAL session_replication_role = DEFAULT")
                return result
        except psycopg.errors.UniqueViolation:
            pass
        except psycopg.errors.ForeignKeyViolation:
            late_parents.add(table.map.v2)
    else:
        count, digest, issues = one_row(conn, table.source_hash(lo, hi), params)
        if (count, digest) == tuple(one_row(conn, table.v2_hash(lo, hi), params)):
            result.rows = result.unchanged = count
            for kind, text, row in issues:
                result.add_issue(kind, text, [row])
            return result
        if count > MAX_WRITE:
            raise _Split  # narrow down by halves: only the differing parts get written
        gone = conn.execute(table.deleted_in_legacy(lo, hi), params | {"limit": EXAMPLE_ROWS}).fetchall()
        if gone:
            result.deleted_in_legacy = gone[0][1]
            result.add_issue("warning", DELETED_IN_LEGACY, [{"id": key} for key, _ in gone], gone[0][1])
    return result.merge(_upsert(conn, table, where, params, wait_for_parents=True))


def _upsert(conn: psycopg.Connection, table: TableSQL, where: sql.Composable, params: dict,
            empty: bool = False, keep_newer_v2: bool = False, wait_for_parents: bool = False,
            lock_parents: bool = False) -> _Result:
    rows = conn.execute(table.upsert(where, empty=empty, keep_newer_v2=keep_newer_v2,
                                     wait_for_parents=wait_for_parents, lock_parents=lock_parents),
                        params).fetchall()
    result = _Result(rows=rows[0][4], inserted=rows[0][5], updated=rows[0][6])
    result.unchanged = result.rows - result.inserted - result.updated
    for _, kind, text, row, *_ in rows[1:]:
        result.add_issue(kind, text, [row])
    return result


class RepairResult(BaseModel):
    table: str
    requested: int
    inserted: int
    updated: int
    left_out: dict[str, int]  # issue -> rows the rules still leave out
    kept_newer: int = 0  # rows left as v2 has them: written there later than legacy's (or agreeing by now)


def repair_rows(conn: psycopg.Connection, table_name: str, ids: list[str], *,
                keep_newer_v2: bool = False) -> RepairResult:
    """Re-copy exactly these legacy ids through the backfill rules, in the caller's transaction;
    `keep_newer_v2`: leave a v2 row updated later than its legacy row (the API wrote it last)."""
    table = TableSQL(BY_NAME[table_name], column_types(conn, table_name))
    result = _upsert(conn, table, ids_filter("l"), {"ids": ids}, keep_newer_v2=keep_newer_v2)
    return RepairResult(table=table_name, requested=len(ids), inserted=result.inserted, updated=result.updated,
                        left_out={e["issue"]: e["count"] for e in result.issues.values() if e["kind"] == "error"},
                        kept_newer=result.unchanged if keep_newer_v2 else 0)


class _Part(BaseModel):
    table: str
    part: int
    lo: str | None
    hi: str | None
    last_key: str | None
    finished: bool
    result: _Result


class Backfill:
    """One run: resumable from its checkpoints, cancellable and pausable between batches."""

    def __init__(self, url: str, operator: str, options: BackfillOptions, *,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 pause: threading.Event | None = None):
        self.url, self.operator, self.options = url, operator, options
        self.progress = progress or (lambda _: None)
        self.cancel = cancel or threading.Event()
        # While set, workers wait between batches: every range is committed, no transaction is open.
        self.pause = pause or threading.Event()
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._checkpoint_rows: dict[str, int] = {}  # of `_done`, the rows a resumed pass had done before
        self._late_parents: set[str] = set()  # tables that met a row whose parent was not in v2 yet
        self._started: dict[str, float] = {}

    # -- connections and the run row -------------------------------------------------

    def _connect(self, *, worker: bool = False) -> psycopg.Connection:
        conn = ranges.job_connection(self.url, "cutover backfill")
        if worker:
            conn.execute("SELECT pg_advisory_lock_shared(%s)", (JOB_WORKERS_KEY,))
        return conn

    def _open_run(self, conn: psycopg.Connection) -> tuple[int, dict[str, int]]:
        """Resume the unfinished run for the same tables, or start a new one."""
        self.tables = {name: TableSQL(BY_NAME[name], column_types(conn, name)) for name in self.options.tables}
        self._own_checks = checks_parents_itself(conn, self.options.tables)
        row = conn.execute(
            "SELECT id, tables, before_counts FROM cutover.backfill_runs "
            "WHERE state IN ('running', 'cancelled', 'failed') ORDER BY id DESC LIMIT 1").fetchone()
        if row and tuple(row[1]) == self.options.tables:
            conn.execute("UPDATE cutover.backfill_runs SET state = 'running' WHERE id = %s", (row[0],))
            self.resumed = True
            return row[0], row[2]
        if row:
            conn.execute("UPDATE cutover.backfill_runs SET state = 'abandoned', finished_at = now() "
                         "WHERE id = %s", (row[0],))
        before = {name: scalar(conn, t.count("v2")) for name, t in self.tables.items()}
        run_id = scalar(conn,
            "INSERT INTO cutover.backfill_runs (operator, tables, before_counts) VALUES (%s, %s, %s) RETURNING id",
            (self.operator, list(self.options.tables), Jsonb(before)))
        self.resumed = False
        return run_id, before

    def _parts(self, conn: psycopg.Connection, run_id: int, pass_no: int, name: str,
               total: int | None = None) -> list[_Part]:
        """The pass's parts of a table: as stored, or cut now from its `total` legacy rows."""
        rows = conn.execute(
            "SELECT part, lo, hi, last_key, finished, counters, issues FROM cutover.backfill_parts "
            "WHERE run_id = %s AND pass = %s AND table_name = %s ORDER BY part", (run_id, pass_no, name)).fetchall()
        if rows:
            return [_Part(table=name, part=p, lo=lo, hi=hi, last_key=k, finished=f,
                          result=_Result(**c, issues=i)) for p, lo, hi, k, f, c, i in rows]
        table = self.tables[name]
        if total is None:
            total = scalar(conn, table.count("legacy"))
        bounds = ranges.cut(conn, table.key_at(None, None), total, self.options.workers)
        with conn.transaction():
            for number, (lo, hi) in enumerate(bounds):
                conn.execute("INSERT INTO cutover.backfill_parts (run_id, pass, table_name, part, lo, hi) "
                             "VALUES (%s, %s, %s, %s, %s, %s)", (run_id, pass_no, name, number, lo, hi))
        return [_Part(table=name, part=n, lo=lo, hi=hi, last_key=lo, finished=False, result=_Result())
                for n, (lo, hi) in enumerate(bounds)]

    # -- the work ------------------------------------------------------------------

    def _report_progress(self, name: str, pass_no: int, rows: int, total: int) -> None:
        with self._lock:
            self._done[name] = self._done.get(name, 0) + rows
            elapsed = max(time.monotonic() - self._started[name], 1e-6)
            done, before = self._done[name], self._checkpoint_rows.get(name, 0)
        self.progress(BackfillProgress(table=name, pass_no=pass_no, done=done, total=total,
                                       rows_per_second=(done - before) / elapsed, checkpoint=before))

    def _run_part(self, run_id: int, pass_no: int, part: _Part, total: int) -> _Part:
        table = self.tables[part.table]
        sizer = RangeSizer(self.options.batch_size, self.options.target_seconds, 100, MAX_RANGE, step=1.5, far=4.0)
        size = sizer.size
        with self._connect(worker=True) as conn:
            while not part.finished and not self._paused_until_resumed():
                bounds = {"lo": part.last_key, "hi": part.hi, "offset": size - 1}
                found = conn.execute(table.key_at(part.last_key, part.hi), bounds).fetchone()
                batch_hi = found[0] if found else part.hi
                result = self._range_with_checkpoint(conn, run_id, pass_no, part, batch_hi, found is None)
                self._report_progress(part.table, pass_no, result.rows, total)
                size = sizer.after(result.longest_transaction)  # the longest transaction aims at the target
        return part

    def _paused_until_resumed(self) -> bool:
        """Waits out a pause; true when the run is cancelled."""
        while self.pause.is_set() and not self.cancel.is_set():
            self.cancel.wait(0.1)
        return self.cancel.is_set()

    def _range_with_checkpoint(self, conn, run_id, pass_no, part: _Part, hi, last: bool) -> _Result:
        """The range (last_key, hi] and its checkpoint, run again when the server rolls it back."""
        attempt = 1
        while True:
            try:
                return self._range_once(conn, run_id, pass_no, part, hi, last, retried=attempt - 1)
            except db.ROLLED_BACK:
                if attempt == ATTEMPTS:
                    raise
                time.sleep(0.05 * 2 ** attempt * random.uniform(1, 2))  # let the other session finish first
                attempt += 1

    def _range_once(self, conn, run_id, pass_no, part: _Part, hi, last: bool, retried: int) -> _Result:
        """The range (last_key, hi] and its checkpoint in one transaction. A range with too
        much to write, or that hits a constraint, is split in halves; a single row that
        still hits a constraint is reported and left out."""
        table = self.tables[part.table]
        lo = part.last_key
        started = time.monotonic()
        params = {"lo": lo, "hi": hi}
        try:
            with conn.transaction():
                ranges.probe_by_index(conn)
                result = _run_range(conn, table, lo, hi, pass_no == 1, self._late_parents, self._own_checks)
                result.seconds = result.longest_transaction = time.monotonic() - started
                result.retried = retried
                merged = self._checkpoint(conn, run_id, pass_no, part, hi, last, result)
        except (psycopg.errors.IntegrityError, _Split) as exc:
            count = scalar(conn, table.count_in(lo, hi), params)
            if count > 1:
                mid = scalar(conn, table.key_at(lo, hi), params | {"offset": count // 2 - 1})
                first = self._range_with_checkpoint(conn, run_id, pass_no, part, mid, False)
                return first.merge(self._range_with_checkpoint(conn, run_id, pass_no, part, hi, last))
            key = conn.execute(table.key_at(lo, hi), params | {"offset": 0}).fetchone()
            result = _Result(retried=retried)
            constraint = exc.diag.constraint_name or "constraint" if isinstance(exc, psycopg.Error) else "constraint"
            text = (parent_missing(constraint) if isinstance(exc, psycopg.errors.ForeignKeyViolation)
                    else f"conflicts with existing v2 rows ({constraint})")
            result.add_issue("error", text, [{"id": key[0] if key else None}])
            with conn.transaction():
                merged = self._checkpoint(conn, run_id, pass_no, part, hi, last, result)
        part.result, part.last_key, part.finished = merged, hi, last
        return result

    def _checkpoint(self, conn, run_id, pass_no, part: _Part, hi, last: bool, result: _Result) -> _Result:
        """Record the part's progress inside the caller's transaction; returns its new totals."""
        merged = part.result.merge(result)
        conn.execute(
            "UPDATE cutover.backfill_parts SET last_key = %s, finished = %s, counters = %s, issues = %s "
            "WHERE run_id = %s AND pass = %s AND table_name = %s AND part = %s",
            (hi, last, Jsonb(merged.model_dump(exclude={"issues"})), Jsonb(merged.issues),
             run_id, pass_no, part.table, part.part))
        return merged

    def _run_pass(self, conn: psycopg.Connection, run_id: int, pass_no: int) -> dict[str, list[_Part]]:
        """Every part of every table, on `workers` threads; a part starts once the tables
        its rules read are done. The tables others wait for go first (every worker on them:
        accounts, identities, books lie on the way to the snapshots, half of all rows), then
        the biggest; a table no other waits for fills the time its parent's last part leaves."""
        names = list(self.options.tables)
        totals = {name: scalar(conn, self.tables[name].count("legacy")) for name in names}
        by_table = {name: self._parts(conn, run_id, pass_no, name, totals[name]) for name in names}
        needs = {name: [d for d in BY_NAME[name].depends_on if d in names] for name in names}
        awaited = {d for name in names for d in needs[name]}
        pending = [p for name in names for p in by_table[name] if not p.finished]
        unfinished = {p.table for p in pending}
        failures: list[BaseException] = []
        ready = threading.Condition()
        # A resumed pass counts on from its checkpoint's rows, and shows them before its first batch.
        self._done = {name: sum(p.result.rows for p in by_table[name]) for name in names}
        self._checkpoint_rows = dict(self._done)
        for name in names:
            if self._done[name]:
                self.progress(BackfillProgress(table=name, pass_no=pass_no, done=self._done[name],
                                               total=totals[name], rows_per_second=0.0,
                                               checkpoint=self._done[name]))

        def next_part() -> _Part | None:
            with ready:
                while not (self.cancel.is_set() or failures):
                    runnable = [p for p in pending if not any(d in unfinished for d in needs[p.table])]
                    if runnable:
                        part = min(runnable, key=lambda p: (p.table not in awaited, -totals[p.table], p.part))
                        pending.remove(part)
                        self._started.setdefault(part.table, time.monotonic())
                        return part
                    if not pending:
                        return None
                    ready.wait()
                return None

        def worker() -> None:
            while (part := next_part()) is not None:
                try:
                    self._run_part(run_id, pass_no, part, totals[part.table])
                except BaseException as exc:
                    failures.append(exc)
                with ready:
                    if all(p.finished for p in by_table[part.table]):
                        unfinished.discard(part.table)
                    ready.notify_all()

        self._started.clear()
        threads = [threading.Thread(target=worker, name=f"backfill-{n}") for n in range(self.options.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return by_table

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with self._connect() as conn:
            got = scalar(conn, "SELECT pg_try_advisory_lock(%s)", (JOB_LOCK_KEY,))
            if not got:
                raise Refused("Another backfill or verify is running on this database; wait for it to finish.")
            try:
                _wait_for_earlier_workers(conn)
                run_id, before = self._open_run(conn)
                last = None if self.resumed or self.options.full_compare else self._unchanged_since(conn, run_id)
                if last is not None:
                    return self._unchanged_report(conn, run_id, before, last, time.monotonic() - started)
                first = scalar(conn, "SELECT coalesce(max(pass), 1) FROM cutover.backfill_parts WHERE run_id = %s",
                                     (run_id,))
                passes: dict[int, dict[str, list[_Part]]] = {}
                pass_no = first
                while True:
                    passes[pass_no] = self._run_pass(conn, run_id, pass_no)
                    counts = self._counts(conn)
                    if (self.cancel.is_set() or pass_no >= self.options.max_passes
                            or not self._legacy_changed(conn, run_id, pass_no, passes[pass_no], counts)):
                        break
                    pass_no += 1
                for earlier in range(1, first):
                    passes[earlier] = {n: self._parts(conn, run_id, earlier, n) for n in self.options.tables}
                if self.cancel.is_set():
                    conn.execute("UPDATE cutover.backfill_runs SET state = 'cancelled', finished_at = now() "
                                 "WHERE id = %s", (run_id,))
                else:
                    self._finish(conn, run_id, pass_no, counts)
                return self._report(run_id, before, counts, passes, time.monotonic() - started)
            except psycopg.Error:
                if not conn.closed:
                    conn.execute("UPDATE cutover.backfill_runs SET state = 'failed' WHERE state = 'running'")
                raise
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (JOB_LOCK_KEY,))

    def _counts(self, conn: psycopg.Connection) -> dict[str, list[int]]:
        """[legacy rows, v2 rows] per table, now."""
        return {name: [scalar(conn, t.count("legacy")), scalar(conn, t.count("v2"))]
                for name, t in self.tables.items()}

    def _finish(self, conn, run_id: int, final_pass: int, counts: dict[str, list[int]]) -> None:
        conn.execute(
            """UPDATE cutover.backfill_runs SET state = 'done', finished_at = now(), final_pass = %s,
                   legacy_xmin = (SELECT min(started_xmin) FROM cutover.backfill_parts
                                  WHERE run_id = %s AND pass = %s),
                   v2_xmin = pg_snapshot_xmin(pg_current_snapshot()), end_counts = %s
               WHERE id = %s""", (final_pass, run_id, final_pass, Jsonb(counts), run_id))

    def _unchanged_since(self, conn, run_id: int) -> tuple | None:
        """The last run of these tables that walked them (a shortcut run has no parts of its
        own to report from), if provably nothing changed since: no legacy row newer than its
        last pass, no v2 row newer than its end, the same counts."""
        last = conn.execute(
            """SELECT id, final_pass, legacy_xmin, v2_xmin, end_counts FROM cutover.backfill_runs
               WHERE state = 'done' AND tables = %s AND legacy_xmin IS NOT NULL AND final_pass > 0
                     AND id <> %s
               ORDER BY id DESC LIMIT 1""", (list(self.options.tables), run_id)).fetchone()
        if last is None or last[4] != self._counts(conn):
            return None
        legacy = sorted({t.legacy for t in TABLES} | {"auth_users"})
        if any(_newer_rows(conn, name, last[2]) for name in legacy):
            return None
        if any(_newer_rows(conn, name, last[3]) for name in self.options.tables):
            return None
        return last

    def _unchanged_report(self, conn, run_id: int, before: dict[str, int], last: tuple,
                          seconds: float) -> dict[str, Any]:
        """The last run's findings stand: every row unchanged, nothing written."""
        last_id, final_pass, legacy_xmin, v2_xmin, counts = last
        parts = {}
        for name in self.options.tables:
            parts[name] = self._parts(conn, last_id, final_pass, name)
            for part in parts[name]:
                part.result = part.result.model_copy(update={
                    "inserted": 0, "updated": 0, "unchanged": part.result.rows, "seconds": 0.0,
                    "longest_transaction": 0.0})
        conn.execute(
            """UPDATE cutover.backfill_runs SET state = 'done', finished_at = now(), final_pass = 0,
                   legacy_xmin = %s, v2_xmin = %s, end_counts = %s WHERE id = %s""",
            (legacy_xmin, v2_xmin, Jsonb(counts), run_id))
        report = self._report(run_id, before, counts, {0: parts}, seconds)
        return report | {"unchangedSince": last_id}

    def _legacy_changed(self, conn, run_id: int, pass_no: int, parts: dict[str, list[_Part]],
                        counts: dict[str, list[int]]) -> bool:
        """Whether legacy may differ from what this pass read, so a catch-up pass is due.

        A row inserted or updated since the pass began carries an xmin at or after the
        pass's snapshot xmin (one sequential scan per table); a deleted row shows as
        fewer rows in `counts` (taken before the scans) than the pass read. Rows that
        conflicted may land on a retry.
        """
        since = scalar(conn, "SELECT min(started_xmin) FROM cutover.backfill_parts WHERE run_id = %s AND pass = %s",
                             (run_id, pass_no))
        if any(_newer_rows(conn, name, since) for name in sorted({t.legacy for t in TABLES} | {"auth_users"})):
            return True
        for name, table_parts in parts.items():
            if sum(p.result.seen for p in table_parts) != counts[name][0]:
                return True
            if any("conflicts with existing v2 rows" in key for p in table_parts for key in p.result.issues):
                return True
        return False

    # -- the report ------------------------------------------------------------------

    def _report(self, run_id: int, before: dict[str, int], counts: dict[str, list[int]],
                passes: dict[int, dict[str, list[_Part]]], seconds: float) -> dict[str, Any]:
        last_pass = max(passes)
        stages: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        warnings: list[dict[str, Any]] = []
        longest = 0.0
        for name in self.options.tables:
            table = self.tables[name]
            every = [p.result for ps in passes.values() for p in ps.get(name, [])]
            final = _Result()
            for part in passes[last_pass].get(name, []):
                final = final.merge(part.result)
            first = _Result()
            for part in passes[min(passes)].get(name, []):
                first = first.merge(part.result)
            longest = max([longest, *(r.longest_transaction for r in every)])
            error_rows = sum(e["count"] for e in final.issues.values() if e["kind"] == "error")
            warning_rows = sum(e["count"] for e in final.issues.values() if e["kind"] == "warning")
            stages.append({
                "stage": name, "oldTable": table.map.legacy,
                "oldCount": counts[name][0],
                "beforeCount": before.get(name, 0),
                "afterCount": counts[name][1],
                "affectedRows": sum(r.changed for r in every),
                "inserted": sum(r.inserted for r in every), "updated": sum(r.updated for r in every),
                "unchanged": final.unchanged, "errorRows": error_rows, "warningRows": warning_rows,
                "deletedInLegacy": final.deleted_in_legacy,
                "retriedTransactions": sum(r.retried for r in every),
                "durationSeconds": round(sum(r.seconds for r in every), 3),
                "rowsPerSecond": round(first.rows / first.seconds, 1) if first.seconds else None,
            })
            for entry in final.issues.values():
                kind = entry["kind"]
                item = {"stage": name, kind: entry["issue"], "count": entry["count"], "rows": entry["rows"]}
                (errors if kind == "error" else warnings).append(item)
        cancelled = self.cancel.is_set()
        if cancelled:
            errors.append({"stage": "backfill", "error": "cancelled before it finished; run it again to resume",
                           "count": 0, "rows": []})
        return {
            "ok": not errors, "generatedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "runId": run_id, "resumed": self.resumed, "cancelled": cancelled, "passes": last_pass,
            "durationSeconds": round(seconds, 3), "longestTransactionSeconds": round(longest, 3),
            "stages": stages, "errors": errors, "warnings": warnings,
        }


def _wait_for_earlier_workers(conn: psycopg.Connection) -> None:
    """A killed console's workers run their last statement on until the server notices the
    client is gone; a new run on the same ranges beside them could deadlock. Wait for them."""
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{WORKERS_GONE_SECONDS}s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (JOB_WORKERS_KEY,))
    except psycopg.errors.LockNotAvailable:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY pid",
            (JOB_WORKERS_KEY >> 32, JOB_WORKERS_KEY & 0xFFFFFFFF))]
        if not pids:
            return  # they ended just now
        raise Refused(f"Sessions of an earlier backfill whose console is gone (pid {', '.join(map(str, pids))}) "
                      f"were still running after {WORKERS_GONE_SECONDS} s; end them with "
                      "SELECT pg_terminate_backend(pid), then run the command again.") from None


def _newer_rows(conn: psycopg.Connection, table: str, since) -> bool:
    """Whether any row of `table` was written by a transaction at or after xid8 `since`
    (one sequential scan; xmin is 32-bit, so compare by age)."""
    return bool(scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {} x WHERE NOT {})").format(
        sql.Identifier(table), sql.SQL(written_before("x", "since"))), {"since": since}))


def check_ready(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    """Refuse before any work when the v2 or legacy tables are not there."""
    for name in tables:
        table = BY_NAME[name]
        if scalar(conn, "SELECT to_regclass(%s)", (table.v2,)) is None:
            raise CutoverError(f"The v2 table {table.v2} does not exist: run `cutover migrate` first.")
        if scalar(conn, "SELECT to_regclass(%s)", (table.legacy,)) is None:
            raise CutoverError(f"The legacy table {table.legacy} is missing; this is not a database "
                               "the backfill can read.")
