"""Stage G: check v2 against legacy through the §3 rules of `mapping`, set-wise and in short reads.

Counts, row contents and the reconcile figures come from one walk over each legacy
primary key in ranges, comparing count + xor of row hashes per range and joining the
two sides only where they differ (a row nothing wrote since an earlier verify found it
matching is hashed by its key alone: `_Trust`); integrity and sample checks are single
set-wise queries.
What "v2 matches legacy" means depends on the stage the verify counts for (`_Rule`, and the
README's "The verify"): exact before C, business columns from C on, legacy frozen in E'.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..errors import CutoverError, Refused
from ..rules.mapping import (
    AUDIT_EVENTS,
    BY_NAME,
    PARENT_TABLES,
    PIXBOOK_SNAPSHOTS,
    PIXBOOKS,
    TABLES,
    TableMap,
    absent_ids,
    column_types,
    compared_by_value,
    named_but_absent,
    own_columns,
    range_filter,
    row_hash,
    source_query,
    written_before,
)
from ..rules.runbook import StageId
from ..store.db import JOB_LOCK_KEY, one_row, scalar
from . import ranges
from .backfill import TableSQL, repair_rows
from .ranges import RangeSizer

EXAMPLE_ROWS = 100
FIRST_RANGE_ROWS = 20_000
MIN_RANGE_ROWS, MAX_RANGE_ROWS = 1_000, 200_000
TARGET_RANGE_SECONDS = 0.25  # each range is one short read-only transaction
SETTLE_SECONDS = 0.5  # time for a dual-write in flight to reach its mirror
LOOKS = 3  # at most this many looks at what differs: a write in flight at every one is no accident
FOUND_LIMIT = 10_000  # differing rows a sample check keeps to compare looks; beyond, the last look stands
REPAIR_CHUNK = 5_000  # ids re-copied per committed transaction

# The upstream order of the count checks (audit events are the console's addition).
COUNT_TABLES = ("accounts", "account_members", "identities", "pixbooks", "pixbook_snapshots", "audit_events")
INTEGRITY_CHECKS = ("account_member_account_fk", "identity_account_fk", "pixbook_identity_fk",
                    "pixbook_account_match", "snapshot_pixbook_fk", "identity_fingerprint_duplicates",
                    "pixbook_active_duplicates", "pixbook_on_deleted_identity")
SAMPLE_CHECKS = ("account_identity_pixbook_samples", "identity_expected_collections")
RECONCILE_CHECKS = {"deleted_identity_count": "identities", "deleted_pixbook_count": "pixbooks"}
CANCELLED_CHECK = "run_completed"


class VerifyOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    sample_size: int = Field(50, gt=0)
    reconcile: bool = True
    repair: bool = False
    workers: int = Field(2, ge=1)
    # Read every row again, trusting no earlier verify (`reference` of run_verify).
    full: bool = False
    # The stage the verify counts for (None: compared exactly, as before C) and when it began
    # (E': legacy stands still from then); jobs.verify fills both in from the facts.
    stage: StageId | None = None
    stage_began: AwareDatetime | None = None


class VerifyProgress(BaseModel):
    check: str
    done: int
    total: int


ProgressCallback = Callable[[VerifyProgress], None]
CheckCallback = Callable[[dict[str, Any]], None]
# A set-wise check: its result and the keys it found differing; given keys, it looks at just those.
_Check = Callable[[psycopg.Connection, list[str] | None], tuple[dict[str, Any], list[dict[str, Any]]]]


# --- connections -----------------------------------------------------------------------


def _connect(url: str, *, read_only: bool) -> psycopg.Connection:
    conn = ranges.job_connection(url, "cutover verify")
    # Never prepared: each range is planned with its values, so that the books left out are a
    # hashed list (a generic plan reads the whole list for every snapshot: 2.8 x a range's time).
    conn.prepare_threshold = None
    if read_only:
        # Each range reads both sides in one snapshot; BEGIN carries these.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    return conn


# The books the rules land, from legacy alone: every legacy book but those the walk of the books
# found the rules leave out (bound as `%(left_out)s`, a hashed list, as each statement is planned
# with its values), so that the book rules run once a verify (built per connection, they cost
# 0.9 s of a 5.6 s verify on M). The collections check reads them.
_BOOKS_LANDED = sql.SQL("({})").format(own_columns(PIXBOOKS, sql.SQL("l.id <> ALL(%(left_out)s)")))
# The lists a first look reads instead of looking up each row's parents and twins (a look-up
# per row took 1.5 of verify's 9.8 worker-seconds on M, the twins 0.6 of 8.3), taken once before
# the walks, each by its parameter's name: per parent table the ids named but absent
# (mapping.Parent), per table with a twin rule the rows with an older twin (mapping.Twins), and
# the book ids legacy's snapshots name that no legacy book has (its foreign key may be NOT
# VALID). A snapshot's book lands but those and the books the walk of the books left out
# (`%(not_landing)s`). Whatever came or went since is a difference at the first look only: a
# later look reads the tables afresh.
_LISTS: dict[str, sql.Composed] = {
    "nameless": named_but_absent(PIXBOOKS.legacy, [(PIXBOOK_SNAPSHOTS.legacy, "book_id")]),
    **{f"absent_{t}": absent_ids(t) for t in PARENT_TABLES},
    **{f"twins_{t.twins.table}": t.twins.ids() for t in TABLES if t.twins}}
_CONTENT_LISTS = tuple(name for t in TABLES for name in t.content_lists())  # what a reference keeps (`_Trust`)


class _Connections:
    """One read-only connection per worker thread."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[psycopg.Connection] = []

    def get(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = _connect(self.url, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _check_ready(conn: psycopg.Connection) -> None:
    for table in TABLES:
        if scalar(conn, "SELECT to_regclass(%s)", (table.v2,)) is None:
            raise CutoverError(f"The v2 table {table.v2} does not exist, so there is nothing to verify: "
                               "run `cutover migrate` (and the backfill) first.")
    for name in (*(t.legacy for t in TABLES), "auth_users"):
        if scalar(conn, "SELECT to_regclass(%s)", (name,)) is None:
            raise CutoverError(f"The legacy table {name} is missing, so v2 cannot be checked against it; "
                               "verify needs the legacy tables in place (they are only archived in Stage F).")


# --- what "matches" means at a stage ---------------------------------------------------

MIRRORED_STAGES = ("C", "D", "E", "E'")  # the API writes both stores (E' only v2, but its past was mirrored)
_STAMPS = ("created_at", "updated_at")
# A v2 table's parent by a cascading foreign key: a row whose parent is gone from v2 went with it.
_CASCADE_PARENT = {"account_members": ("account_id", "accounts"), "identities": ("account_id", "accounts"),
                   "pixbooks": ("identity_id", "identities"), "pixbook_snapshots": ("pixbook_id", "pixbooks")}
# Why the stage's rule sets a differing row aside (counted and shown, never failed), by the names reports use.
SET_ASIDE = ("timestampsSinceBackfill", "legacyAuditSinceBackfill", "v2AuditSinceBackfill", "newInV2",
             "changedInV2", "removedInV2")


@dataclass(frozen=True)
class _Rule:
    """What "v2 matches legacy" means at the stage a verify counts for (README, "The verify").

    Before C: exactly, as a re-run of the backfill would leave v2. From C on the API writes
    both stores, each with its own NOW() and its own audit rows: ids and business columns
    still agree, but timestamps written since the backfill (`since`, per table) may differ
    either way (the mirror lands later than the primary, in v2 in C/D and in legacy in E;
    the re-run rules keep the later updated_at and the earlier created_at, so rows written
    before the backfill began are as exact as ever), and audit rows written since are each
    store's own. In E' legacy stands still from `began`: a v2 row changed since differs,
    a new one is v2's alone, one removed is gone from v2 only."""

    stage: StageId | None = None
    since: dict[str, datetime] = field(default_factory=dict)  # per table: its latest finished backfill's start
    began: datetime | None = None  # E' only

    @property
    def mirrored(self) -> bool:
        return self.stage in MIRRORED_STAGES

    @property
    def steady(self) -> bool:
        """E' with a known start (without one, nothing can be told new, and E's rule holds)."""
        return self.stage == "E'" and self.began is not None

    @property
    def name(self) -> str:
        return "E'" if self.steady else "mirrored" if self.mirrored else "exact"

    def params(self, table: str) -> dict[str, Any]:
        return {"since": self.since.get(table), "began": self.began if self.steady else None}


_SINCE = sql.SQL("coalesce(%(since)s::timestamptz, 'infinity')")  # no backfill on record: nothing is newer
_BEGAN = sql.SQL("coalesce(%(began)s::timestamptz, 'infinity')")

# A row unchanged since a verify found its range matching at the first look (`TableMap.unchanged`
# for the source's rows) is hashed by its key alone, under a seed of its own: a pair of such rows
# cancels out as their contents did then, and a row whose partner changed or went since is still
# a difference, which the later looks read in full. Under traffic only the rows it wrote are
# hashed whole: 0.5-0.7 of the time of reading everything on M (BENCHMARKS.md).
_KEY_SEED = 0x4B4559  # "KEY"
_V2_UNCHANGED = sql.SQL(f"(%(trusting)s AND {written_before('t', 'reference_xmin')})")


def _row_or_key(alias: str, types: tuple[tuple[str, str], ...]) -> sql.Composable:
    return sql.SQL("CASE WHEN {a}.unchanged THEN hashtextextended({a}.id, {seed}) ELSE {row} END").format(
        a=sql.Identifier(alias), seed=sql.Literal(_KEY_SEED), row=row_hash(alias, types))


def _col(alias: str, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))


# --- the statements for one table ------------------------------------------------------

def _differs(table: TableMap, name: str, kind: str) -> sql.Composable:
    """Whether v2 (`t`) holds another value than the rules give from the source (`s`): the
    backfill's own test of a row already as a re-run leaves it, so that verify passes
    exactly when a re-run would write nothing.

    A column a re-run leaves alone (accounts.status, created_at of accounts, members,
    identities and books: v2 owns it once the row landed) is never a difference; one a
    re-run sets from both sides (updated_at: the later of the two; created_at of snapshots
    and audit events: the earlier) is right when a re-run would leave it as it is; every
    other column must equal the source, compared like `row_hash` compares it (typed, or by
    canonical text).
    """
    v2 = _col("t", name)
    rerun = table.rerun_value(name, "t", "s")
    if rerun is None:
        return sql.SQL("false")
    expected = sql.SQL(rerun)
    if compared_by_value(kind):
        return sql.SQL("{} IS DISTINCT FROM ({})").format(v2, expected)
    return sql.SQL("{}::text IS DISTINCT FROM ({})::text").format(v2, expected)


class _Statements(TableSQL):
    """The SQL of one table's content walk: the backfill's statements, plus the comparison."""

    def __init__(self, table: TableMap, types: tuple[tuple[str, str], ...], rule: _Rule):
        super().__init__(table, types)
        self.rule = rule
        self.needs_landed = "{landed_books}" in table.source_sql()
        self.lands_books = table is PIXBOOKS  # its walk names the books the rules leave out
        self.has_status = "status" in table.columns
        self.compared = [(n, k) for n, k in self.types if n != "id"]

    def source(self, lo: str | None, hi: str | None, fresh: bool = False) -> sql.Composed:
        """The range's source rows. A first look reads the parents the rules need to exist, the
        snapshots' books and the twins from lists taken before the walk (`_LISTS`). `fresh`: read
        them all now, in this snapshot (one the API wrote or removed since is a difference at
        the first look only)."""
        where = range_filter("l", lo, hi)
        if not fresh:
            return source_query(self.map, where, listed=True, unchanged=True)
        if not self.needs_landed:
            return source_query(self.map, where)
        return source_query(self.map, where, landed_books=_landing_books(
            sql.SQL("l.id IN (SELECT x.book_id FROM {} x WHERE {})").format(self.legacy, range_filter("x", lo, hi))))

    def _issue_in(self, kind: str) -> sql.Composable:
        """Whether a source row's issue (each issue text belongs to one kind) is of `kind`."""
        texts = [sql.Literal(i.text) for i in self.map.issues if i.kind == kind]
        if not texts:
            return sql.SQL("false")
        return sql.SQL("coalesce(s.issue IN ({}), false)").format(sql.SQL(", ").join(texts))

    def _own(self, alias: str) -> sql.Composable:
        """Whether a row is an audit event one store wrote since the backfill (each store writes its
        own, with a fresh id): from C on counted per store, never compared."""
        if not (self.rule.mirrored and self.map is AUDIT_EVENTS):
            return sql.SQL("false")
        return sql.SQL("coalesce({} >= {}, false)").format(_col(alias, "created_at"), _SINCE)

    def _hashed(self, alias: str) -> sql.Composable:
        """The columns as the digest hashes them: from C on, a timestamp at or after the backfill
        hashes as 'infinity', so that two rows hash alike exactly when the stage's rule accepts
        their timestamps (equal, or both since the backfill; see `_strict`)."""
        def one(name: str) -> sql.Composable:
            col = _col(alias, name)
            if self.rule.mirrored and name in _STAMPS:
                return sql.SQL("CASE WHEN {col} >= {since} THEN 'infinity'::timestamptz ELSE {col} END AS {name}"
                               ).format(col=col, since=_SINCE, name=sql.Identifier(name))
            return col
        return sql.SQL(", ").join(one(n) for n, _ in self.types)

    def _written(self, alias: str) -> sql.Composable:
        """Whether a row carries a timestamp from since the backfill: one of each store's own from C on."""
        stamps = [n for n, _ in self.types if n in _STAMPS]
        if not (self.rule.mirrored and stamps):
            return sql.SQL("false")
        return sql.SQL("coalesce({}, false)").format(sql.SQL(" OR ").join(
            sql.SQL("{} >= {}").format(_col(alias, n), _SINCE) for n in stamps))

    def digest(self, lo: str | None, hi: str | None, fresh: bool = False) -> sql.Composed:
        """Per range, in one snapshot: count and xor of row hashes of the landing source rows
        and of the v2 rows (as the stage's rule compares them), the rows per issue, the deleted
        ones, and what the rule counts apart: each store's own audit rows since the backfill, and
        the v2 rows written since; and of those, the rows unchanged since a verify found them
        matching (a first look only: `_row_or_key`).

        Plain aggregates with FILTER, as a GROUP BY makes the planner sort the range; the
        source sits behind OFFSET 0 so that each of its columns is computed once per row
        (the planner otherwise repeats a rule's sub-query at every use of a column)."""
        landing = sql.SQL("NOT {}").format(self._issue_in("error"))
        compared = sql.SQL("{} AND NOT s.own").format(landing)
        source = [sql.SQL("count(*)"), sql.SQL("count(*) FILTER (WHERE {})").format(landing),
                  sql.SQL("coalesce(bit_xor({}) FILTER (WHERE {}), 0)").format(_row_or_key("s", self.types), compared)]
        source += [sql.SQL("count(*) FILTER (WHERE s.issue = {})").format(sql.Literal(i.text))
                   for i in self.map.issues]
        if self.lands_books:
            source.append(sql.SQL("coalesce(array_agg(s.id) FILTER (WHERE NOT {}), '{{}}')").format(landing))
        v2 = [sql.SQL("count(*)"), sql.SQL("coalesce(bit_xor({}) FILTER (WHERE NOT t.own), 0)").format(
            _row_or_key("t", self.types))]
        if self.has_status:
            source += [sql.SQL("count(*) FILTER (WHERE {} AND s.status = 'deleted')").format(landing),
                       sql.SQL("count(*) FILTER (WHERE {} AND s.status = 'deleted')").format(
                           self._issue_in("warning"))]
            v2.append(sql.SQL("count(*) FILTER (WHERE t.status = 'deleted')"))
        source += [sql.SQL("count(*) FILTER (WHERE {})").format(compared),
                   sql.SQL("count(*) FILTER (WHERE {} AND s.own)").format(landing)]
        v2 += [sql.SQL("count(*) FILTER (WHERE NOT t.own)"), sql.SQL("count(*) FILTER (WHERE t.own)"),
               sql.SQL("count(*) FILTER (WHERE t.written AND NOT t.own)"),
               sql.SQL("count(*) FILTER (WHERE t.unchanged AND NOT t.own)")]
        return sql.SQL("""
            SELECT * FROM (SELECT {source} FROM (SELECT {columns}, x.issue, {own_x} AS own, {unchanged_x} AS unchanged
                                                 FROM ({query}) x OFFSET 0) s) a,
                          (SELECT {v2} FROM (SELECT {columns_t}, {own_t} AS own, {written} AS written,
                                                    {unchanged_t} AS unchanged
                                             FROM {table} t WHERE {range_t}) t) b""").format(
            source=sql.SQL(", ").join(source), columns=self._hashed("x"), own_x=self._own("x"),
            unchanged_x=sql.SQL("false" if fresh else "x.unchanged"),
            query=self.source(lo, hi, fresh), v2=sql.SQL(", ").join(v2), columns_t=self._hashed("t"),
            own_t=self._own("t"), written=self._written("t"), table=self.v2, range_t=range_filter("t", lo, hi),
            unchanged_t=sql.SQL("false") if fresh else _V2_UNCHANGED)

    def _strict(self, name: str, kind: str) -> sql.Composable:
        """Whether column `name` differs in a way the stage's rule does not accept: from C on, a
        timestamp both stores wrote since the backfill may differ either way."""
        differs = _differs(self.map, name, kind)
        if not (self.rule.mirrored and name in _STAMPS):
            return differs
        return sql.SQL("({} AND NOT ({} >= {since} AND {} >= {since}))").format(
            differs, _col("t", name), _col("s", name), since=_SINCE)

    def _set_aside(self) -> sql.Composable:
        """Why the stage's rule accepts a differing row (one of SET_ASIDE), or NULL: over the
        joined `s` and `t` and the row's strict differences `c.columns`."""
        rule, name = self.rule, self.map.v2
        if not rule.mirrored:
            return sql.SQL("NULL::text")
        # Timestamps the rule accepts are no difference (`_strict`), and each store's own audit
        # rows since the backfill are counted by the digest, never compared: neither is here.
        missing: list[sql.Composable] = []
        extra: list[sql.Composable] = []
        changed: list[sql.Composable] = []
        if rule.steady:
            extra.append(sql.SQL("WHEN t.created_at >= {} THEN 'newInV2'").format(_BEGAN))
            # Removed in v2 only: the API's audit trail since E' began names it, or its parent went (the cascade).
            gone: list[sql.Composable] = [sql.SQL(
                "EXISTS (SELECT 1 FROM audit_events e WHERE e.created_at >= {} AND jsonb_path_exists("
                "e.payload, '$.** ? (@ == $id)', jsonb_build_object('id', s.id)))").format(_BEGAN)]
            if name in _CASCADE_PARENT:
                column, parent = _CASCADE_PARENT[name]
                gone.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {} p WHERE p.id = {})").format(
                    sql.Identifier(parent), _col("s", column)))
            missing.append(sql.SQL("WHEN {} THEN 'removedInV2'").format(sql.SQL(" OR ").join(gone)))
            if "updated_at" in self.map.columns:
                changed.append(sql.SQL("WHEN cardinality(c.columns) > 0 AND t.updated_at >= {} "
                                       "THEN 'changedInV2'").format(_BEGAN))
            if self.map is AUDIT_EVENTS:  # its account removed in v2 only: the foreign key set it null there
                changed.append(sql.SQL(
                    "WHEN c.columns = ARRAY['account_id'] AND t.account_id IS NULL "
                    "AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id) THEN 'changedInV2'"))

        def case(whens: list[sql.Composable]) -> sql.Composable:
            return sql.SQL("CASE {} END").format(sql.SQL(" ").join(whens)) if whens else sql.SQL("NULL")

        return sql.SQL("CASE WHEN t.id IS NULL THEN {} WHEN s.id IS NULL THEN {} ELSE {} END").format(
            case(missing), case(extra), case(changed))

    def _differences(self, lo: str | None, hi: str | None, fresh: bool) -> sql.Composed:
        """The rows of a range that differ: missing (a landing source row, no v2 row), extra
        (a v2 row, no landing source row) or different (with the columns that differ the
        stage's rule does not accept), each with why the rule sets it aside, if it does."""
        cols = sql.SQL(", ").join(sql.Identifier(n) for n, _ in self.types)
        checks = sql.SQL(", ").join(
            sql.SQL("CASE WHEN {} THEN {} END").format(self._strict(n, k), sql.Literal(n)) for n, k in self.compared)
        deleted = [sql.SQL("coalesce({}.status = 'deleted', false)").format(sql.Identifier(a)) if self.has_status
                   else sql.SQL("false") for a in ("s", "t")]
        return sql.SQL("""
            WITH s AS MATERIALIZED (SELECT {cols} FROM ({source}) x
                                    WHERE x.issue_kind IS DISTINCT FROM 'error' AND NOT {own_x}),
            t AS MATERIALIZED (SELECT {cols} FROM {v2} t WHERE {range_t} AND NOT {own_t}),
            d AS MATERIALIZED (
                SELECT coalesce(s.id, t.id) AS id,
                       CASE WHEN t.id IS NULL THEN 'missing' WHEN s.id IS NULL THEN 'extra'
                            ELSE 'different' END AS kind,
                       c.columns, {set_aside} AS set_aside, {s_deleted} AS s_deleted, {t_deleted} AS t_deleted,
                       md5(coalesce(s::text, '') || '|' || coalesce(t::text, '')) AS state
                FROM s FULL JOIN t ON t.id = s.id
                CROSS JOIN LATERAL (SELECT CASE WHEN s.id IS NOT NULL AND t.id IS NOT NULL
                                           THEN array_remove(ARRAY[{checks}]::text[], NULL) END AS columns) c),
            f AS MATERIALIZED (SELECT * FROM d
                               WHERE kind <> 'different' OR cardinality(columns) > 0 OR set_aside IS NOT NULL)
            """).format(cols=cols, source=self.source(lo, hi, fresh), v2=self.v2,
                        range_t=range_filter("t", lo, hi), checks=checks, set_aside=self._set_aside(),
                        s_deleted=deleted[0], t_deleted=deleted[1], own_x=self._own("x"), own_t=self._own("t"))

    def diff(self, lo: str | None, hi: str | None, fresh: bool = False) -> sql.Composed:
        """Per kind and reason set aside: rows, of them deleted in legacy and in v2; and for the
        rows the rule does not accept, every id with its columns and deleted flags (to compare looks)."""
        return self._differences(lo, hi, fresh) + sql.SQL("""
            SELECT kind, set_aside, count(*), count(*) FILTER (WHERE s_deleted), count(*) FILTER (WHERE t_deleted),
                   array_agg(id ORDER BY id) FILTER (WHERE set_aside IS NULL),
                   array_agg(array_to_string(columns, ',') ORDER BY id) FILTER (WHERE set_aside IS NULL),
                   array_agg(s_deleted ORDER BY id) FILTER (WHERE set_aside IS NULL),
                   array_agg(t_deleted ORDER BY id) FILTER (WHERE set_aside IS NULL),
                   array_agg(state ORDER BY id) FILTER (WHERE set_aside IS NULL)
            FROM f GROUP BY kind, set_aside""")


# --- what a walk finds ----------------------------------------------------------------


def _capped(a: list, b: list) -> list:
    return (a + b)[:EXAMPLE_ROWS] if len(a) < EXAMPLE_ROWS else a


@dataclass
class _Tally:
    """What the ranges of one table (or one part of it) showed, added up in key order."""

    legacy: int = 0  # source rows, landing or not
    expected: int = 0  # source rows that land
    issues: Counter = field(default_factory=Counter)  # (issue_kind, issue) -> rows
    landed_deleted: int = 0
    forced_deleted: int = 0  # landed deleted with a warning: deleted by a rule, not in legacy
    v2_rows: int = 0
    v2_deleted: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    by_column: Counter = field(default_factory=Counter)
    examples: dict[str, list] = field(default_factory=lambda: {"missing": [], "extra": [], "different": []})
    to_repair: list[str] = field(default_factory=list)  # ids found missing or different at every look
    unlanded: list[str] = field(default_factory=list)  # the books walk only: ids of the books the rules leave out
    set_aside: Counter = field(default_factory=Counter)  # SET_ASIDE reason -> rows the stage's rule accepts
    in_flight: int = 0  # rows that differed at the last look only: a write on its way to its mirror
    unchanged: int = 0  # v2 rows a first look took as they were when the reference verify found them matching
    aside_deleted: int = 0  # of the rows set aside or in flight: deleted in legacy (they leave the reconcile)
    aside_v2_deleted: int = 0  # and deleted in v2
    ranges: int = 0
    rechecked: int = 0
    settled: int = 0  # ranges that differed at first look and agreed a moment later
    seconds: float = 0.0
    longest: float = 0.0

    _SUMS = ("legacy", "expected", "landed_deleted", "forced_deleted", "v2_rows", "v2_deleted", "missing", "extra",
             "different", "to_repair", "unlanded", "in_flight", "unchanged", "aside_deleted", "aside_v2_deleted",
             "ranges", "rechecked", "settled", "seconds")

    def add(self, other: _Tally) -> None:
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.issues.update(other.issues)
        self.by_column.update(other.by_column)
        self.set_aside.update(other.set_aside)
        for kind in self.examples:
            self.examples[kind] = _capped(self.examples[kind], other.examples[kind])
        self.longest = max(self.longest, other.longest)

    def found(self, last: dict[str, _Row], persistent: dict[str, _Row]) -> None:
        """The differences are the rows that differed at every look (`persistent`); the rows
        only the last look saw are in flight, and leave the reconcile like those set aside."""
        for row_id in sorted(persistent):
            kind, columns, *_ = persistent[row_id]
            setattr(self, kind, getattr(self, kind) + 1)
            if kind == "different":
                self.by_column.update(columns)
            if len(self.examples[kind]) < EXAMPLE_ROWS:
                self.examples[kind].append({"id": row_id, "columns": columns} if kind == "different" else row_id)
            if kind != "extra":
                self.to_repair.append(row_id)
        for row_id, (_, _, legacy_deleted, v2_deleted, _) in last.items():
            if row_id not in persistent:
                self.in_flight += 1
                self.aside_deleted += legacy_deleted
                self.aside_v2_deleted += v2_deleted

    @property
    def left_out(self) -> int:
        return self.legacy - self.expected

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.extra or self.different)

    def of_kind(self, kind: str) -> dict[str, int]:
        return {text: n for (k, text), n in sorted(self.issues.items()) if k == kind and n}


# A row found differing, by id: its kind, the columns that differ, deleted in legacy, deleted in v2,
# and both sides' contents as one digest (a row that changed between looks is a write in flight).
_Row = tuple[str, list[str], bool, bool, str]


@dataclass
class _Reported:
    """The errors the latest finished backfill of a table reported: its run and rows per error."""

    run_id: int | None = None
    errors: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)  # rows per error an operator accepted as lost


def _reported_errors(conn: psycopg.Connection) -> dict[str, _Reported]:
    """Per table, the rows its latest finished backfill (full or partial) reported as errors,
    by error, from the run's checkpoints (a run that proved nothing changed has none of its
    own: the run it relied on speaks for it)."""
    if scalar(conn, "SELECT to_regclass('cutover.backfill_parts')") is None:
        return {}
    rows = conn.execute("""
        WITH latest AS (
            SELECT DISTINCT ON (t.name) t.name, r.id, r.final_pass
            FROM cutover.backfill_runs r CROSS JOIN unnest(r.tables) AS t(name)
            WHERE r.state = 'done' AND r.final_pass > 0
            ORDER BY t.name, r.id DESC)
        SELECT l.name, l.id, e.value ->> 'issue', sum((e.value ->> 'count')::bigint)
        FROM latest l
        LEFT JOIN cutover.backfill_parts p ON p.run_id = l.id AND p.pass = l.final_pass AND p.table_name = l.name
        LEFT JOIN LATERAL jsonb_each(p.issues) e ON e.value ->> 'kind' = 'error'
        GROUP BY 1, 2, 3 ORDER BY 1, 3""").fetchall()
    found: dict[str, _Reported] = {}
    for table, run_id, issue, count in rows:
        found.setdefault(table, _Reported(run_id))
        if issue is not None and count:
            found[table].errors[issue] = int(count)
    if scalar(conn, "SELECT to_regclass('cutover.accepted_losses')") is not None:
        for table, issue, count in conn.execute("SELECT table_name, issue, count(*) FROM cutover.accepted_losses "
                                                "GROUP BY 1, 2").fetchall():
            if table in found and issue in found[table].errors:
                found[table].accepted[issue] = min(int(count), found[table].errors[issue])
    return found


def _backfill_starts(conn: psycopg.Connection) -> dict[str, datetime]:
    """Per table, when its latest finished backfill began: rows written before are as a re-run left
    them (its rules keep the later updated_at and the earlier created_at), rows since may differ."""
    if scalar(conn, "SELECT to_regclass('cutover.backfill_runs')") is None:
        return {}
    return dict(conn.execute(
        "SELECT t.name, max(r.started_at) FROM cutover.backfill_runs r CROSS JOIN unnest(r.tables) AS t(name) "
        "WHERE r.state = 'done' GROUP BY t.name").fetchall())


def _count_check(name: str, tally: _Tally, reported: _Reported, rule: _Rule) -> dict[str, Any]:
    """Legacy against v2 rows. Before C any difference fails (the runbook: a count mismatch
    blocks cutover); from C on, the rows the stage's rule sets aside are counted apart and
    every other legacy row must be in v2 and every other v2 row in legacy. The rows the
    latest backfill reported as errors are told apart from the rest, and those an operator
    accepted as lost (with a reason, journaled) are the one difference that passes."""
    if rule.mirrored:
        missing, extra = tally.left_out + tally.missing, tally.extra
    else:
        missing, extra = max(tally.legacy - tally.v2_rows, 0), max(tally.v2_rows - tally.legacy, 0)
    explained = min(sum(reported.errors.values()), missing)
    accepted = min(sum(reported.accepted.values()), missing)
    return {"type": "count", "table": name, "oldTable": BY_NAME[name].legacy, "ok": missing == accepted and not extra,
            "oldCount": tally.legacy, "newCount": tally.v2_rows, "expectedCount": tally.expected,
            "missingRows": missing, "extraRows": extra,
            "backfillRun": reported.run_id, "reportedByBackfill": dict(reported.errors),
            "unreportedMissing": missing - explained,
            **({"acceptedAsLost": accepted, "acceptedByIssue": dict(reported.accepted)} if accepted else {}),
            "leftOutByBackfill": tally.left_out, "leftOutByIssue": tally.of_kind("error"),
            "landedWithWarning": tally.of_kind("warning"), **_set_aside(tally, rule, counts=True)}


def _set_aside(tally: _Tally, rule: _Rule, counts: bool = False) -> dict[str, Any]:
    """The stage's rule and what it set aside; a count check leaves out the rows both stores hold."""
    if not rule.mirrored:
        return {}
    reasons = [r for r in SET_ASIDE if not counts or r not in ("timestampsSinceBackfill", "changedInV2")]
    return {"rule": rule.name, **{r: tally.set_aside[r] for r in reasons if tally.set_aside[r]}}


def _content_check(name: str, tally: _Tally, rule: _Rule) -> dict[str, Any]:
    return {
        "type": "content", "name": f"content:{name}", "table": name,
        "ok": tally.missing == tally.extra == tally.different == 0,
        "compared": tally.expected, "missingInV2": tally.missing, "extraInV2": tally.extra,
        "different": tally.different, "expectedLeftOut": tally.left_out,
        "differentByColumn": dict(sorted(tally.by_column.items())),
        "examples": tally.examples, "ranges": tally.ranges, "rangesRechecked": tally.rechecked,
        "rangesSettled": tally.settled, "rowsInFlight": tally.in_flight, "rowsUnchanged": tally.unchanged,
        **_set_aside(tally, rule),
        "seconds": round(tally.seconds, 3), "longestRangeSeconds": round(tally.longest, 3),
    }


def _reconcile_check(name: str, tally: _Tally) -> dict[str, Any]:
    """Deleted rows the rules land against deleted v2 rows, both without the rows the stage's
    rule set aside or that were in flight (the content check accounts for those)."""
    expected, actual = tally.landed_deleted - tally.aside_deleted, tally.v2_deleted - tally.aside_v2_deleted
    check = {"type": "reconcile", "name": name, "ok": expected == actual, "expected": expected, "actual": actual,
             "legacyDeleted": tally.landed_deleted - tally.forced_deleted}
    if name == "deleted_identity_count":
        check["forcedByFingerprintRule"] = tally.forced_deleted
    return check


# --- integrity and sample checks ------------------------------------------------------

# name -> (rows with the total as `count(*) OVER ()`, ordered and capped), all set-wise.
_ORPHANS = {
    "account_member_account_fk": """
        SELECT jsonb_build_object('id', m.id, 'account_id', m.account_id), count(*) OVER ()
        FROM account_members m WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = m.account_id)
        ORDER BY m.id LIMIT %(examples)s""",
    "identity_account_fk": """
        SELECT jsonb_build_object('id', i.id, 'account_id', i.account_id), count(*) OVER ()
        FROM identities i WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = i.account_id)
        ORDER BY i.id LIMIT %(examples)s""",
    "pixbook_identity_fk": """
        SELECT jsonb_build_object('id', p.id, 'account_id', p.account_id, 'identity_id', p.identity_id),
               count(*) OVER ()
        FROM pixbooks p WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.id = p.identity_id)
        ORDER BY p.id LIMIT %(examples)s""",
    "pixbook_account_match": """
        SELECT jsonb_build_object('id', p.id, 'account_id', p.account_id, 'identity_id', p.identity_id,
                                  'identity_account_id', i.account_id), count(*) OVER ()
        FROM pixbooks p JOIN identities i ON i.id = p.identity_id
        WHERE p.account_id IS DISTINCT FROM i.account_id
        ORDER BY p.id LIMIT %(examples)s""",
    # The orphans' book ids first, from the book index alone (0.5 of the 0.8 CPU-seconds a
    # scan of the snapshots took on M), then the examples through it.
    "snapshot_pixbook_fk": """
        WITH o AS MATERIALIZED (
            SELECT s.pixbook_id, count(*) AS n FROM pixbook_snapshots s
            WHERE NOT EXISTS (SELECT 1 FROM pixbooks p WHERE p.id = s.pixbook_id) GROUP BY s.pixbook_id)
        SELECT jsonb_build_object('id', s.id, 'pixbook_id', s.pixbook_id), (SELECT sum(n) FROM o)::bigint
        FROM pixbook_snapshots s WHERE s.pixbook_id IN (SELECT pixbook_id FROM o)
        ORDER BY s.id LIMIT %(examples)s""",
}

# name -> (table, the columns that must be unique among active rows, extra filter): the
# count is the number of groups breaking it, `rowCount` the rows in them.
_DUPLICATES = {
    "identity_fingerprint_duplicates": ("identities", ("account_id", "identity_key_fingerprint"),
                                        "identity_key_fingerprint IS NOT NULL"),
    "pixbook_active_duplicates": ("pixbooks", ("identity_id", "collection_id"), "true"),
}


def _orphan_check(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    rows = conn.execute(_ORPHANS[name], {"examples": EXAMPLE_ROWS}).fetchall()
    count = rows[0][1] if rows else 0
    return {"type": "integrity", "name": name, "ok": count == 0, "count": count, "rows": [r[0] for r in rows]}


def _duplicate_check(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    table, keys, extra = _DUPLICATES[name]
    key_list = sql.SQL(", ").join(map(sql.Identifier, keys))
    match = sql.SQL(" AND ").join(sql.SQL("x.{0} = g.{0}").format(sql.Identifier(k)) for k in keys)
    rows = conn.execute(sql.SQL("""
        SELECT jsonb_build_object({pairs}, 'count', g.n, 'ids',
                   (SELECT array_agg(x.id ORDER BY x.id) FROM {table} x
                    WHERE {match} AND x.status <> 'deleted')),
               g.groups, g.total
        FROM (SELECT *, count(*) OVER () AS groups, sum(n) OVER () AS total
              FROM (SELECT {keys}, count(*) AS n FROM {table}
                    WHERE status <> 'deleted' AND {extra} GROUP BY {keys} HAVING count(*) > 1) d
              ORDER BY {keys} LIMIT %(examples)s) g
        ORDER BY {gkeys}""").format(
        pairs=sql.SQL(", ").join(sql.SQL("{}, g.{}").format(sql.Literal(k), sql.Identifier(k)) for k in keys),
        table=sql.Identifier(table), match=match, keys=key_list, extra=sql.SQL(extra),
        gkeys=sql.SQL(", ").join(sql.SQL("g.{}").format(sql.Identifier(k)) for k in keys)),
        {"examples": EXAMPLE_ROWS}).fetchall()
    groups, total = (rows[0][1], int(rows[0][2])) if rows else (0, 0)
    return {"type": "integrity", "name": name, "ok": groups == 0, "count": groups, "rowCount": total,
            "rows": [r[0] for r in rows]}


def _deleted_identity_books(conn: psycopg.Connection) -> dict[str, Any]:
    """Active books whose identity was active in legacy but landed deleted (the fingerprint
    rule): visible before, hidden in v2. A warning; books already hidden in legacy (their
    identity deleted there) are only counted beside it."""
    count, total, rows = one_row(conn, """
        WITH b AS MATERIALIZED (
            SELECT p.id, p.account_id, p.identity_id, coalesce(m.status <> 'deleted', false) AS by_rule
            FROM pixbooks p JOIN identities i ON i.id = p.identity_id
            LEFT JOIN platform_managed_users m ON m.id = i.id
            WHERE p.status <> 'deleted' AND i.status = 'deleted')
        SELECT (SELECT count(*) FROM b WHERE by_rule), (SELECT count(*) FROM b),
               (SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'account_id', x.account_id,
                                                             'identity_id', x.identity_id) ORDER BY x.id), '[]')
                FROM (SELECT * FROM b WHERE by_rule ORDER BY id LIMIT %(examples)s) x)""",
        {"examples": EXAMPLE_ROWS})
    return {"type": "integrity", "name": "pixbook_on_deleted_identity", "ok": True, "warning": count > 0,
            "count": count, "alsoOnIdentitiesDeletedInLegacy": total - count, "rows": rows}


def _landing_books(where: sql.Composable) -> sql.Composable:
    """The books the rules land among the legacy books passing `where`, read in the caller's
    snapshot (the landed-books table is as old as its connection's first need of it)."""
    return sql.SQL("(SELECT s.id, s.account_id, s.identity_id, s.collection_id, s.status FROM ({}) s "
                   "WHERE s.issue_kind IS DISTINCT FROM 'error')").format(source_query(PIXBOOKS, where))


def _sample_check(conn: psycopg.Connection, size: int, began: datetime | None, accounts: list[str] | None = None,
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """For accounts picked by a hash of their id (or these `accounts`, looked at again): the
    active identities and books v2 holds against those the rules land from legacy, in this
    snapshot (a book the API wrote since verify began lands too); with the rows found differing
    (at most FOUND_LIMIT). In E' (`began`), a row v2 changed since, or
    whose account v2 removed, is set aside."""
    if accounts is None:
        accounts = [r[0] for r in conn.execute(
            "SELECT id FROM platform_workspaces ORDER BY hashtextextended(id, 0), id LIMIT %s", (size,))]
    books = _landing_books(sql.SQL("l.workspace_id = ANY(%(accounts)s)"))
    identities = source_query(BY_NAME["identities"], sql.SQL("l.workspace_id = ANY(%(accounts)s)"))
    aside: sql.Composable = sql.SQL("false")
    if began is not None:
        aside = sql.SQL("""(NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = d0.account_id)
            OR CASE d0.kind WHEN 'identity' THEN EXISTS (SELECT 1 FROM identities x WHERE x.id = d0.id
                                                         AND x.updated_at >= %(began)s)
                            ELSE EXISTS (SELECT 1 FROM pixbooks x WHERE x.id = d0.id AND x.updated_at >= %(began)s)
               END)""")
    row = one_row(conn, sql.SQL("""
        WITH ei AS (SELECT s.account_id, s.id FROM ({identities}) s
                    WHERE s.issue_kind IS DISTINCT FROM 'error' AND s.status <> 'deleted'),
        ai AS (SELECT account_id, id FROM identities WHERE account_id = ANY(%(accounts)s) AND status <> 'deleted'),
        eb AS (SELECT account_id, id, identity_id, collection_id FROM {books} b
               WHERE account_id = ANY(%(accounts)s) AND status <> 'deleted'),
        ab AS (SELECT account_id, id, identity_id, collection_id FROM pixbooks
               WHERE account_id = ANY(%(accounts)s) AND status <> 'deleted'),
        d0 AS MATERIALIZED (
            SELECT 'identity' AS kind, coalesce(e.account_id, a.account_id) AS account_id, coalesce(e.id, a.id) AS id,
                   CASE WHEN a.id IS NULL THEN 'missing in v2' ELSE 'extra in v2' END AS problem
            FROM ei e FULL JOIN ai a ON a.account_id = e.account_id AND a.id = e.id
            WHERE e.id IS NULL OR a.id IS NULL
            UNION ALL
            SELECT 'pixbook', coalesce(e.account_id, a.account_id), coalesce(e.id, a.id),
                   CASE WHEN a.id IS NULL THEN 'missing in v2' WHEN e.id IS NULL THEN 'extra in v2'
                        ELSE 'identity or collection differs' END
            FROM eb e FULL JOIN ab a ON a.account_id = e.account_id AND a.id = e.id
            WHERE e.id IS NULL OR a.id IS NULL
               OR (e.identity_id, e.collection_id) IS DISTINCT FROM (a.identity_id, a.collection_id)),
        d AS MATERIALIZED (SELECT * FROM d0 WHERE NOT {aside})
        SELECT (SELECT count(*) FROM ei), (SELECT count(*) FROM eb), (SELECT count(*) FROM d),
               (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.account_id, x.kind, x.id), '[]')
                FROM (SELECT * FROM d ORDER BY account_id, kind, id LIMIT %(found)s) x),
               (SELECT count(*) FROM d0) - (SELECT count(*) FROM d)""").format(
        identities=identities, books=books, aside=aside),
        {"accounts": accounts, "found": FOUND_LIMIT, "began": began})
    ids, books_count, count, found, changed = row
    result = {"type": "sample", "name": "account_identity_pixbook_samples", "ok": count == 0,
              "sampleSize": size, "sampled": len(accounts), "expectedIdentities": ids,
              "expectedPixbooks": books_count, "count": count, "accounts": accounts[:EXAMPLE_ROWS]}
    if began is not None:
        result["changedInV2"] = changed
    return result, found


def _collections_check(conn: psycopg.Connection, began: datetime | None, left_out: list[str],
                       identities: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per identity (or these `identities`, looked at again), the collections of its active
    books: as the rules land them (the collection rule applied to legacy, every book but those
    the rules leave out: `left_out`) against v2, one set difference over all identities; with
    the rows found differing (at most FOUND_LIMIT). In E' (`began`), a collection of a book or
    identity v2 changed since, or of an identity v2 removed, is set aside."""
    books: sql.Composable = _BOOKS_LANDED
    only: sql.Composable = sql.SQL("true")
    if identities is not None:
        books = _landing_books(sql.SQL("l.managed_user_id = ANY(%(ids)s)"))
        only = sql.SQL("identity_id = ANY(%(ids)s)")
    aside: sql.Composable = sql.SQL("false")
    if began is not None:
        aside = sql.SQL("""(NOT EXISTS (SELECT 1 FROM identities i WHERE i.id = d0.identity_id)
            OR EXISTS (SELECT 1 FROM identities i WHERE i.id = d0.identity_id AND i.updated_at >= %(began)s)
            OR EXISTS (SELECT 1 FROM pixbooks x WHERE x.identity_id = d0.identity_id
                       AND x.collection_id = d0.collection_id AND x.updated_at >= %(began)s)
            OR EXISTS (SELECT 1 FROM {books} b JOIN pixbooks x ON x.id = b.id WHERE b.identity_id = d0.identity_id
                       AND b.collection_id = d0.collection_id AND x.updated_at >= %(began)s))""").format(books=books)
    row = one_row(conn, sql.SQL("""
        WITH e AS (SELECT DISTINCT identity_id, collection_id FROM {books} b WHERE status <> 'deleted'),
        a AS (SELECT DISTINCT identity_id, collection_id FROM pixbooks WHERE status <> 'deleted' AND {only}),
        d0 AS MATERIALIZED (
            SELECT coalesce(e.identity_id, a.identity_id) AS identity_id,
                   coalesce(e.collection_id, a.collection_id) AS collection_id,
                   CASE WHEN a.identity_id IS NULL THEN 'missing in v2' ELSE 'extra in v2' END AS problem
            FROM e FULL JOIN a ON a.identity_id = e.identity_id AND a.collection_id = e.collection_id
            WHERE e.identity_id IS NULL OR a.identity_id IS NULL),
        d AS MATERIALIZED (SELECT * FROM d0 WHERE NOT {aside})
        SELECT (SELECT count(*) FROM (SELECT identity_id FROM e GROUP BY 1) i), (SELECT count(*) FROM d),
               (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.identity_id, x.collection_id), '[]')
                FROM (SELECT * FROM d ORDER BY identity_id, collection_id LIMIT %(found)s) x),
               (SELECT count(*) FROM d0) - (SELECT count(*) FROM d)""").format(
        books=books, only=only, aside=aside),
        {"found": FOUND_LIMIT, "ids": identities, "began": began, "left_out": left_out})
    expected, count, found, changed = row
    result = {"type": "sample", "name": "identity_expected_collections", "ok": count == 0,
              "identities": expected, "count": count}
    if began is not None:
        result["changedInV2"] = changed
    return result, found


# A check that compares legacy with v2 can catch a write between the API's two transactions
# (primary, then mirror): name -> what a second look is scoped by, and the figure counting it.
_SECOND_LOOK = {
    "account_identity_pixbook_samples": ("account_id", "accountsWithMismatch"),
    "identity_expected_collections": ("identity_id", "identitiesWithMismatch"),
}


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


# --- the run ----------------------------------------------------------------------------


@dataclass
class _Part:
    table: str
    index: int
    lo: str | None
    hi: str | None


@dataclass
class _RepairStats:
    requested: int = 0
    inserted: int = 0
    updated: int = 0
    left_out: Counter = field(default_factory=Counter)
    failed: list[dict[str, Any]] = field(default_factory=list)
    failed_count: int = 0
    kept_newer: int = 0  # rows v2 holds from a later write than legacy's: a repair would revert it


def _order(check: dict[str, Any]) -> tuple[int, int]:
    kind, name, table = check["type"], check.get("name"), check.get("table")
    if kind in ("count", "content", "repair"):
        rank = {"count": 0, "content": 5, "repair": 6}[kind]
        return rank, COUNT_TABLES.index(table) if table in COUNT_TABLES else len(COUNT_TABLES)
    for rank, names in ((1, INTEGRITY_CHECKS), (2, SAMPLE_CHECKS), (3, tuple(RECONCILE_CHECKS))):
        if name in names:
            return rank, names.index(name)
    return 9, 0


@dataclass
class _Range:
    """One range of a content walk: its bounds, its latest look's figures and differing rows, the
    rows that differed (unchanged) at every look so far, and when it was last looked at."""

    lo: str | None
    hi: str | None
    tally: _Tally
    last: dict[str, _Row]
    persistent: dict[str, _Row]
    looked: float
    looks: int = 1


_XID_SPAN = 1 << 30  # transactions since a reference verify began beyond which it is not trusted (xids wrap at 2**31)
_OUTSIDE = """SELECT NOT EXISTS (
    SELECT 1 FROM unnest(%(d_lo)s::text[], %(d_hi)s::text[]) d(lo, hi)
    WHERE (d.hi IS NULL OR %(lo)s::text IS NULL OR %(lo)s::text < d.hi)
      AND (d.lo IS NULL OR %(hi)s::text IS NULL OR d.lo < %(hi)s::text))"""


@dataclass
class _Trust:
    """What a first look may take as it was when a reference verify found it matching: the
    rows no transaction wrote since that verify began (`TableMap.unchanged`), outside the
    ranges it had to look at again, whose listed inputs are as they were then."""

    NONE: ClassVar[dict[str, Any]] = {"trusting": False, "reference_xmin": "0",
                                      **{f"changed_{name}": [] for name in _CONTENT_LISTS}}

    reference_xmin: str  # the oldest transaction running when the reference verify began (xid8)
    lists: dict[str, list[str]]  # the lists of `_CONTENT_LISTS` its first looks read
    looked_again: dict[str, list[list[str | None]]]  # per table, the ranges (lo, hi] it looked at again
    began: str  # when it began, as the server told it
    changed: dict[str, list[str]] = field(default_factory=dict)  # per list: the ids on it then or now, not both

    def compare(self, name: str, now: list[str]) -> None:
        if name in _CONTENT_LISTS:
            self.changed[name] = sorted(set(self.lists[name]) ^ set(now))

    def params(self, conn: psycopg.Connection, table: str, lo: str | None, hi: str | None) -> dict[str, Any]:
        again = self.looked_again.get(table, [])
        trusting = not again or scalar(conn, _OUTSIDE, {"lo": lo, "hi": hi, "d_lo": [r[0] for r in again],
                                                        "d_hi": [r[1] for r in again]})
        return {**self.NONE, "trusting": bool(trusting), "reference_xmin": self.reference_xmin,
                **{f"changed_{name}": ids for name, ids in self.changed.items()}}


def _fingerprint(conn: psycopg.Connection, statements: dict[str, _Statements]) -> str:
    """What a reference verify's findings hold for: this database's tables as they are stored
    (a rewrite or a restore makes new files), and the rules and comparisons of this console."""
    names = sorted({t.legacy for t in TABLES} | {t.v2 for t in TABLES} | set(PARENT_TABLES))
    files = conn.execute("SELECT current_database(), array_agg(concat_ws(':', n, to_regclass(n)::oid, "
                         "pg_relation_filenode(to_regclass(n))) ORDER BY n) FROM unnest(%s::text[]) n",
                         (names,)).fetchone()
    text = json.dumps([files, *(st.digest(None, None).as_string(conn) for st in statements.values()),
                       *(query.as_string(conn) for query in _LISTS.values())])
    return hashlib.sha256(text.encode()).hexdigest()


class _Verify:
    def __init__(self, url: str, options: VerifyOptions, progress: ProgressCallback | None,
                 cancel: threading.Event | None, on_check: CheckCallback | None,
                 reference: dict[str, Any] | None = None):
        self.url, self.options = url, options
        self._given = None if options.full else reference
        self._trust: _Trust | None = None
        self._looked_again: dict[str, list[list[str | None]]] = {}
        self._reference: dict[str, Any] | None = None
        self.progress = progress or (lambda _: None)
        self.cancel = cancel or threading.Event()
        self.on_check = on_check or (lambda _: None)
        self._failed = threading.Event()
        self._books_walked = threading.Event()
        self._unlanded: list[str] = []
        self._lists: dict[str, list[str]] = {}  # `_LISTS`, taken before any walk (`_take_list`)
        self._listed = threading.Event()
        self._lock = threading.Lock()
        self.checks: dict[str, dict[str, Any]] = {}

    def _stopping(self) -> bool:
        return self.cancel.is_set() or self._failed.is_set()

    def _wait_for(self, event: threading.Event) -> None:
        with self._idle():
            while not event.wait(0.02):
                if self._stopping():
                    raise _Stopped

    def _in_slot(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work` on a worker thread holding one of the `workers` slots: there are twice as
        many threads, so that one waiting (`_idle`) leaves its slot to another's statements."""
        with self._slots:
            return work(*args)

    @contextmanager
    def _idle(self) -> Iterator[None]:
        """While a worker waits (for a list, the books, or a write in flight to land), another
        runs its statements: under traffic a look again half a second later had left one of
        the two connections idle that long."""
        self._slots.release()
        try:
            yield
        finally:
            self._slots.acquire()

    def _unlanded_books(self) -> list[str]:
        """The books the rules leave out, as the walk of the books found them: waits for that walk."""
        self._wait_for(self._books_walked)
        return self._unlanded

    def _take_list(self, pool: _Connections, name: str, query: sql.Composed, lists: int) -> None:
        """Take one of the `lists` lists a first look reads (`_Statements.source`); the last to end
        lets the walks begin."""
        taken = scalar(pool.get(), query)
        with self._lock:
            self._lists[name] = taken
            if self._trust:
                self._trust.compare(name, taken)
            if len(self._lists) == lists:
                self._listed.set()

    def _emit(self, check: dict[str, Any]) -> None:
        key = check.get("name") or f"{check['type']}:{check['table']}"
        self.checks[key] = check
        self.on_check(check)

    # -- the content walk ----------------------------------------------------------

    def _parts(self, conn: psycopg.Connection, name: str) -> tuple[list[_Part], int]:
        """A table's parts and its rows as the planner estimates them (counted when it cannot: a
        count of each big table, beside the walk of the books, took 0.3 s of the two cores on M)."""
        st = self.statements[name]
        total = ranges.estimate(conn, st.map.legacy)
        if total is None:
            total = scalar(conn, st.count("legacy"))
        bounds = ranges.cut(conn, st.key_at(None, None), total, self.options.workers)
        return [_Part(name, i, lo, hi) for i, (lo, hi) in enumerate(bounds)], total

    def _walk_part(self, pool: _Connections, part: _Part, total: int) -> _Tally:
        """Walk a part range by range; the ranges that differ at a first look are looked at again
        once the walk is through (`_look_again_at`), so that the moment a write in flight needs to
        reach its mirror is waited for once per round, not once per range."""
        st = self.statements[part.table]
        self._wait_for(self._listed)
        if st.needs_landed:
            self._unlanded_books()
        conn = pool.get()
        walked: list[_Range] = []
        sizer = RangeSizer(FIRST_RANGE_ROWS, TARGET_RANGE_SECONDS, MIN_RANGE_ROWS, MAX_RANGE_ROWS, step=2.0, far=2.0)
        size, last = sizer.size, part.lo
        while not self._stopping():
            found = conn.execute(st.key_at(last, part.hi), {"lo": last, "hi": part.hi, "offset": size - 1}).fetchone()
            hi = found[0] if found else part.hi
            started = time.monotonic()
            tally, rows = self._look(conn, st, last, hi)
            tally.seconds = tally.longest = time.monotonic() - started
            walked.append(_Range(last, hi, tally, rows, rows, time.monotonic()))
            with self._lock:
                self._done[part.table] += tally.legacy
                done = self._done[part.table]
            # The total is the planner's estimate until the table's walk is through (`_finish_table`).
            self.progress(VerifyProgress(check=f"content:{part.table}", done=done, total=max(total, done)))
            if found is None:
                with self._lock:
                    self._looked_again.setdefault(part.table, []).extend(
                        [r.lo, r.hi] for r in walked if r.tally.rechecked)
                return self._look_again_at(conn, st, walked)
            last = hi
            size = sizer.after(tally.seconds)
        raise _Stopped

    def _look_again_at(self, conn: psycopg.Connection, st: _Statements, walked: list[_Range]) -> _Tally:
        """The walked ranges' figures, added up in key order, after looking again at those that
        differed, up to LOOKS looks in all, each a moment after the range's previous look.

        Under live traffic the API commits a write to its primary, then mirrors it in a second
        transaction: a later look (reading the landed books afresh) reports only what differed
        at every look. A row that differed at every look but changed in between is a hot row the
        API writes again and again, in flight each time, not a difference; a range whose every
        differing row stayed as it was needs no further look."""
        again, looks = [r for r in walked if r.persistent], 1
        while again and looks < LOOKS and not self._stopping():
            still = []
            for one in again:
                self._settle(f"content:{st.map.v2}", until=one.looked + SETTLE_SECONDS)
                started = time.monotonic()
                tally, last = self._look(conn, st, one.lo, one.hi, fresh=True)
                one.looked = time.monotonic()
                tally.seconds = tally.longest = one.tally.seconds + one.looked - started
                persistent = {k: v for k, v in last.items() if one.persistent.get(k) == v}
                one.tally, one.last, one.persistent, one.looks = tally, last, persistent, looks + 1
                if persistent and persistent.keys() != last.keys():
                    still.append(one)
            again, looks = still, looks + 1
        total = _Tally()
        for one in walked:
            one.tally.found(one.last, one.persistent)
            one.tally.settled = int(one.looks > 1 and not one.persistent)
            total.add(one.tally)
        return total

    def _settle(self, check: str, until: float | None = None) -> None:
        """The moment a write in flight needs to reach its mirror, before `check` looks again:
        SETTLE_SECONDS, or until `until` (monotonic), which may have passed already."""
        with self._idle():
            self.cancel.wait(SETTLE_SECONDS if until is None else max(until - time.monotonic(), 0.0))

    def _look(self, conn: psycopg.Connection, st: _Statements, lo: str | None, hi: str | None,
              fresh: bool = False) -> tuple[_Tally, dict[str, _Row]]:
        """One look at a range in one snapshot: its figures, and the rows the stage's rule does not accept."""
        tally = _Tally(ranges=1)
        rows: dict[str, _Row] = {}
        params = {"lo": lo, "hi": hi, "left_out": self._unlanded, **self._lists,
                  "not_landing": self._unlanded + self._lists["nameless"]} | self.rule.params(st.map.v2)
        params |= self._trust.params(conn, st.map.v2, lo, hi) if self._trust and not fresh else _Trust.NONE
        with conn.transaction():
            # A later look at snapshots reads the books that land afresh: through indexes the book
            # rules would run once per snapshot, as the server plans it once per book (a
            # 100,000-snapshot range on M: 1.08 s against 0.58 s).
            if not (fresh and st.needs_landed):
                ranges.probe_by_index(conn)
            row = list(one_row(conn, st.digest(lo, hi, fresh), params))
            tally.legacy, tally.expected, digest = row[:3]
            issues, row = row[3:3 + len(st.map.issues)], row[3 + len(st.map.issues):]
            tally.issues.update({(i.kind, i.text): n for i, n in zip(st.map.issues, issues)})
            if st.lands_books:
                tally.unlanded, row = row[0], row[1:]
            if st.has_status:
                tally.landed_deleted, tally.forced_deleted = row[:2]
                row = row[2:]
            compared, legacy_own, tally.v2_rows, v2_digest = row[:4]
            if st.has_status:
                tally.v2_deleted = row[4]
            v2_compared, v2_own, v2_written, tally.unchanged = row[-4:]
            tally.set_aside.update({"legacyAuditSinceBackfill": legacy_own, "v2AuditSinceBackfill": v2_own,
                                    "timestampsSinceBackfill": v2_written})
            if (compared, digest) == (v2_compared, v2_digest):
                return tally, rows
            tally.rechecked = 1
            for kind, reason, count, legacy_deleted, v2_deleted, ids, columns, s_del, t_del, states in conn.execute(
                    st.diff(lo, hi, fresh), params):
                if reason is not None:
                    tally.set_aside[reason] += count
                    tally.aside_deleted += legacy_deleted
                    tally.aside_v2_deleted += v2_deleted
                    continue
                for i, row_id in enumerate(ids):
                    rows[row_id] = (kind, columns[i].split(",") if columns[i] else [], s_del[i], t_del[i], states[i])
        return tally, rows

    def _phase(self, tables: list[str], others: list[tuple[str, _Check]]) -> dict[str, _Tally]:
        """Walk `tables` and run `others` (name, check) on the worker connections, biggest work
        first; emits each table's checks as its last part ends."""
        pool = _Connections(self.url)
        tallies: dict[str, _Tally] = {}
        sized: dict[str, tuple[list[_Part], int]] = {}
        results: dict[str, dict[int, _Tally]] = {name: {} for name in tables}
        self._done: Counter[str] = Counter()
        try:
            self._slots = threading.BoundedSemaphore(self.options.workers)
            with ThreadPoolExecutor(max_workers=2 * self.options.workers, thread_name_prefix="verify") as executor:
                futures: dict[Future, Any] = {}

                def walk(names: list[str]) -> None:
                    sized.update({name: self._parts(self.main, name) for name in names})
                    for part, total in sorted(((p, sized[n][1]) for n in names for p in sized[n][0]),
                                              key=lambda pt: -pt[1] / len(sized[pt[0].table][0])):
                        futures[executor.submit(self._in_slot, self._walk_part, pool, part, total)] = part

                try:
                    # The lists a first look reads, on both connections, while the main one
                    # cuts the tables. Then the books: the snapshots and the collections wait
                    # for the books they leave out (at most one part per worker, so none waits
                    # on a part not yet begun). The other tables are walked biggest pieces
                    # first, so that both connections stay busy to the end.
                    for name, query in _LISTS.items():
                        futures[executor.submit(self._in_slot, self._take_list, pool, name, query, len(_LISTS))] = name
                    walk([n for n in tables if n == PIXBOOKS.v2])
                    walk([n for n in tables if n != PIXBOOKS.v2])
                    for name, check in others:
                        futures[executor.submit(self._in_slot, self._other, pool, name, check)] = name
                    pending = set(futures)
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            what = futures[future]
                            try:
                                result = future.result()
                            except _Stopped:
                                continue
                            if isinstance(what, _Part):
                                results[what.table][what.index] = result
                                if len(results[what.table]) == len(sized[what.table][0]):
                                    tallies[what.table] = self._finish_table(what.table, results[what.table])
                            elif result is not None:
                                self._emit(result)
                except BaseException:
                    self._failed.set()
                    executor.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            pool.close()
        return tallies

    def _other(self, pool: _Connections, name: str, check: _Check) -> dict[str, Any] | None:
        if self._stopping():
            return None
        self.progress(VerifyProgress(check=name, done=0, total=1))
        started = time.monotonic()
        conn = pool.get()
        with conn.transaction():
            result, found = check(conn, None)
        if name in _SECOND_LOOK:
            result = self._look_again(conn, name, check, result, found)
        result["seconds"] = round(time.monotonic() - started, 3)
        self.progress(VerifyProgress(check=name, done=1, total=1))
        return result

    def _look_again(self, conn: psycopg.Connection, name: str, check: _Check, result: dict[str, Any],
                    found: list[dict[str, Any]]) -> dict[str, Any]:
        """What differs may be a write in flight: look at just its scope again after a moment, in
        a new snapshot, and report only the rows that differed at every look (when the first look
        found more than it keeps, the last look's own figures stand)."""
        scope, figure = _SECOND_LOOK[name]
        result["firstLookCount"] = result["count"]
        whole = result["count"] <= len(found)
        persistent, last, looks = found, found, 1
        while persistent and looks < LOOKS and not self._stopping():
            self._settle(name)
            with conn.transaction():
                again, last = check(conn, sorted({row[scope] for row in persistent}))
            looks += 1
            if not whole:
                result |= {key: again[key] for key in ("count", "ok")}
                persistent = last
                break
            keys = {_row_key(row) for row in persistent}
            persistent = [row for row in last if _row_key(row) in keys]
            if len(persistent) == len(last):
                break
        if whole:
            result |= {"count": len(persistent), "ok": not persistent}
        result[figure] = len({row[scope] for row in persistent})
        result["rows"] = persistent[:EXAMPLE_ROWS]
        return result

    def _finish_table(self, name: str, parts: dict[int, _Tally]) -> _Tally:
        tally = _Tally()
        for index in sorted(parts):
            tally.add(parts[index])
        self.progress(VerifyProgress(check=f"content:{name}", done=tally.legacy, total=tally.legacy))
        if name == PIXBOOKS.v2 and not self._books_walked.is_set():
            self._unlanded = tally.unlanded
            self._books_walked.set()
        self._emit(_count_check(name, tally, self.reported.get(name, _Reported()), self.rule))
        self._emit(_content_check(name, tally, self.rule))
        if self.options.reconcile:
            for check, table in RECONCILE_CHECKS.items():
                if table == name:
                    self._emit(_reconcile_check(check, tally))
        return tally

    def _other_checks(self) -> list[tuple[str, _Check]]:
        def once(check: Callable[[psycopg.Connection], dict]) -> _Check:
            return lambda conn, _found: (check(conn), [])

        began = self.rule.began if self.rule.steady else None
        # The checks that may look again first, so that their pauses overlap the rest.
        checks: list[tuple[str, _Check]] = [
            ("identity_expected_collections",
             lambda conn, found: _collections_check(conn, began, self._unlanded_books(), found)),
            ("account_identity_pixbook_samples",
             lambda conn, found: _sample_check(conn, self.options.sample_size, began, found))]
        checks += [(n, once(partial(_orphan_check, name=n))) for n in _ORPHANS]
        checks += [(n, once(partial(_duplicate_check, name=n))) for n in _DUPLICATES]
        checks.append(("pixbook_on_deleted_identity", once(_deleted_identity_books)))
        return checks

    # -- repair ---------------------------------------------------------------------

    def _repair(self, tallies: dict[str, _Tally]) -> dict[str, _RepairStats]:
        """Re-copy the rows found missing or different at every look through the backfill rules,
        parents first; extra rows and the rows the stage's rule set aside are never touched."""
        done: dict[str, _RepairStats] = {}
        for table in TABLES:
            tally = tallies.get(table.v2)
            if tally is None or not tally.to_repair or self._stopping():
                continue
            stats = _RepairStats()
            for start in range(0, len(tally.to_repair), REPAIR_CHUNK):
                if self._stopping():
                    break
                self._repair_ids(table.v2, tally.to_repair[start:start + REPAIR_CHUNK], stats)
                self.progress(VerifyProgress(check=f"repair:{table.v2}", done=stats.requested,
                                             total=len(tally.to_repair)))
            done[table.v2] = stats
        return done

    def _repair_ids(self, name: str, ids: list[str], stats: _RepairStats) -> None:
        """One committed transaction; on a conflict, halve until the offending rows stand alone."""
        try:
            with self.main.transaction():
                # From C on the API writes v2 too: a row it wrote there later than legacy's stays.
                result = repair_rows(self.main, name, ids, keep_newer_v2=self.rule.mirrored)
        except psycopg.errors.IntegrityError as exc:
            if len(ids) > 1:
                half = len(ids) // 2
                self._repair_ids(name, ids[:half], stats)
                self._repair_ids(name, ids[half:], stats)
                return
            stats.requested += 1
            stats.failed_count += 1
            if len(stats.failed) < EXAMPLE_ROWS:
                stats.failed.append({"id": ids[0], "error": str(exc).strip().splitlines()[0],
                                     "constraint": exc.diag.constraint_name})
            return
        stats.requested += result.requested
        stats.inserted += result.inserted
        stats.updated += result.updated
        stats.kept_newer += result.kept_newer
        stats.left_out.update(result.left_out)

    def _repair_check(self, name: str, stats: _RepairStats, before: _Tally, after: _Tally | None) -> dict[str, Any]:
        still = None if after is None else after.missing + after.different
        return {"type": "repair", "name": f"repair:{name}", "table": name,
                "ok": still == 0 and stats.failed_count == 0,
                "requested": stats.requested, "repaired": stats.inserted + stats.updated,
                "inserted": stats.inserted, "updated": stats.updated,
                "leftOutByRules": dict(stats.left_out), "failed": stats.failed_count, "failedRows": stats.failed,
                "keptNewerInV2": stats.kept_newer,
                "foundMissing": before.missing, "foundDifferent": before.different,
                "extraLeftAlone": before.extra, "stillDifferent": still,
                "rechecked": after is not None}

    # -- the whole run ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if self.options.repair and self.options.stage in ("E", "E'"):
            raise Refused("A repair copies legacy over v2, so it is refused while v2 is the write primary "
                          f"(stage {self.options.stage}); run verify without repair.")
        started = time.monotonic()
        self.main = _connect(self.url, read_only=False)
        try:
            _check_ready(self.main)
            if not scalar(self.main, "SELECT pg_try_advisory_lock(%s)", (JOB_LOCK_KEY,)):
                raise Refused("Another backfill or verify is running on this database; wait for it to finish.")
            try:
                self._run()
            finally:
                if not self.main.closed and not self.main.broken:
                    self.main.execute("SELECT pg_advisory_unlock(%s)", (JOB_LOCK_KEY,))
        finally:
            self.main.close()
        return self._report(time.monotonic() - started)

    def _run(self) -> None:
        # Before anything is read: a row no transaction running now or later wrote is one this verify sees.
        xmin, self._began = one_row(self.main, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, now()")
        self.rule = _Rule(self.options.stage, _backfill_starts(self.main), self.options.stage_began)
        self.statements = {t.v2: _Statements(t, column_types(self.main, t.v2), self.rule) for t in TABLES}
        self.reported = _reported_errors(self.main)
        fingerprint = _fingerprint(self.main, self.statements)
        self._trust = self._trusted(self._given, fingerprint)
        if self._stopping():
            return
        names = [t.v2 for t in TABLES]
        others = self._other_checks()
        tallies = self._phase(names, [] if self.options.repair else others)
        if not self.options.repair or self._stopping():
            self._keep_reference(xmin, fingerprint, tallies)
            return
        stats = self._repair(tallies)
        fresh = self._phase([n for n in names if n in stats], others) if not self._stopping() else {}
        for name, repair in stats.items():
            self._emit(self._repair_check(name, repair, tallies[name], fresh.get(name)))
        self._keep_reference(xmin, fingerprint, tallies)

    def _rule_key(self) -> dict[str, Any]:
        return json.loads(json.dumps({"name": self.rule.name, "since": self.rule.since,
                                      "began": self.rule.began if self.rule.steady else None}, default=str))

    def _trusted(self, reference: dict[str, Any] | None, fingerprint: str) -> _Trust | None:
        """The reference verify's findings, when they hold here: the same tables, rules and stage
        rule, and begun few enough transactions ago to tell its rows from later ones."""
        if not reference:
            return None
        try:
            if reference["fingerprint"] != fingerprint or reference["rule"] != self._rule_key():
                return None
            xmin = int(reference["xmin"])
            now = int(scalar(self.main, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
            if not 0 <= now - xmin < _XID_SPAN:
                return None
            return _Trust(str(xmin), {name: list(reference["lists"][name]) for name in _CONTENT_LISTS},
                          {k: [list(r) for r in v] for k, v in reference["lookedAgain"].items()},
                          str(reference["began"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a reference of another shape is no reference

    def _keep_reference(self, xmin: str, fingerprint: str, tallies: dict[str, _Tally]) -> None:
        """What the next verify may trust of this one's first looks (`_Trust`): only of a walk of every table."""
        if self._stopping() or len(tallies) < len(TABLES):
            return
        self._reference = {"xmin": xmin, "began": self._began.isoformat(), "fingerprint": fingerprint,
                           "rule": self._rule_key(),
                           "lists": {name: self._lists[name] for name in _CONTENT_LISTS},
                           "lookedAgain": self._looked_again}

    def _report(self, seconds: float) -> dict[str, Any]:
        cancelled = self.cancel.is_set()
        if cancelled:
            self._emit({"type": "run", "name": CANCELLED_CHECK, "ok": False,
                        "message": "verify was cancelled before it finished; checks not listed did not run"})
        checks = sorted(self.checks.values(), key=_order)
        return {
            "ok": not cancelled and all(c["ok"] for c in checks),
            "generatedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "checks": checks, "cancelled": cancelled, "durationSeconds": round(seconds, 3),
            "options": self.options.model_dump(mode="json", by_alias=True),
            # The verify whose first looks this one trusted where nothing changed since, and what the next may trust.
            **({"unchangedSince": self._trust.began} if self._trust else {}),
            **({"reference": self._reference} if self._reference else {}),
        }


class _Stopped(Exception):
    """A worker saw the cancel (or another worker's failure) and stopped between ranges."""


def run_verify(url: str, options: VerifyOptions | None = None, *, progress: ProgressCallback | None = None,
               cancel: threading.Event | None = None, on_check: CheckCallback | None = None,
               reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify v2 against legacy; returns the §4 verify report body (plus `cancelled`,
    `durationSeconds`, `options`, and the `reference` a later verify may trust, given back as
    `reference`; unless `options.full`). `on_check` gets each check as it completes."""
    return _Verify(url, options or VerifyOptions(), progress, cancel, on_check, reference).run()


__all__ = ["EXAMPLE_ROWS", "VerifyOptions", "VerifyProgress", "run_verify"]
