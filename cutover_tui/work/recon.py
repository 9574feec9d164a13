"""Stage 0: what the database holds before the backfill, in upstream's recon shape plus
what an operator needs: true row counts and sizes, every anomaly the §3 rules will report
(from `mapping`, the backfill's own rules), and an estimate of the backfill's duration.

All of it runs in one REPEATABLE READ transaction that is always rolled back: one
consistent picture, and nothing lasts (the temp tables and the estimate's sample
inserts go with the rollback).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from ..rules.mapping import BY_NAME, TABLES, TableMap, column_types, ids_filter, range_filter, source_query
from ..store.db import JOB_LOCK_KEY, connect, one_row, scalar
from . import ranges
from .backfill import EXAMPLE_ROWS, BackfillOptions, TableSQL

AUTH_USERS = "auth_users"
# What the backfill reads: the mapped legacy tables and the users its joins check against;
# upstream's recon lists the same tables as its `targetTables`.
REQUIRED_TABLES: tuple[str, ...] = (AUTH_USERS, *(t.legacy for t in TABLES))

ProgressCallback = Callable[[str, int, int], None]

_LANDED_BOOKS = sql.Identifier("pg_temp", "cutover_recon_landed_books")
_BOOK_ISSUES = sql.Identifier("pg_temp", "cutover_recon_book_issues")

_COLUMNS = """
SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY(%s)
ORDER BY table_name, ordinal_position"""

# As upstream's recon writes them: NOT NULL shows as a CHECK without columns.
_CONSTRAINTS = """
SELECT tc.table_name::text, tc.constraint_name::text, tc.constraint_type::text,
       string_agg(kcu.column_name::text, ', ' ORDER BY kcu.ordinal_position)
FROM information_schema.table_constraints tc
LEFT JOIN information_schema.key_column_usage kcu
  ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
 AND kcu.table_name = tc.table_name
WHERE tc.table_schema = current_schema() AND tc.table_name = ANY(%s)
GROUP BY tc.table_name, tc.constraint_name, tc.constraint_type
ORDER BY tc.table_name, tc.constraint_type, tc.constraint_name"""

# Partial unique indexes (0003, 0004, 0005) are not constraints, yet they decide what lands.
_INDEXES = """
SELECT tablename::text, indexname::text, indexdef
FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s)
ORDER BY tablename, indexname"""

# Every issue of a source with its true count; only the example rows are capped.
_ANOMALIES = """
SELECT issue_kind, issue, count(*), jsonb_agg(issue_row ORDER BY n) FILTER (WHERE n <= %(limit)s)
FROM (SELECT issue_kind, issue, issue_row, row_number() OVER (PARTITION BY issue_kind, issue ORDER BY id) AS n
      FROM {relation} s WHERE issue_kind IS NOT NULL) x
GROUP BY issue_kind, issue ORDER BY issue_kind, issue"""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Steps:
    """Progress as (step, done, total) over a plan of named steps fixed up front."""

    def __init__(self, names: list[str], progress: ProgressCallback | None):
        self.names, self.progress, self.done = names, progress or (lambda *_: None), 0

    def start(self, name: str) -> None:
        self.progress(name, self.done, len(self.names))

    def finish(self) -> None:
        self.done += 1
        if self.done == len(self.names):
            self.progress("done", self.done, len(self.names))


def _existing(conn: psycopg.Connection, names: list[str]) -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT table_name::text FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)", (names,))}


def _by_table(rows: list[tuple], tables: list[str], shape: Callable[[tuple], dict[str, Any]]
              ) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    for row in rows:
        grouped[row[0]].append(shape(row[1:]))
    return grouped


def _describe(conn: psycopg.Connection, tables: list[str]) -> dict[str, Any]:
    """Columns, constraints and indexes of `tables`, in upstream's field format."""
    return {
        "schemas": _by_table(conn.execute(_COLUMNS, (tables,)).fetchall(), tables, lambda r: {
            "column_name": r[0], "data_type": r[1], "is_nullable": r[2], "column_default": r[3]}),
        "constraints": _by_table(conn.execute(_CONSTRAINTS, (tables,)).fetchall(), tables, lambda r: {
            "constraint_name": r[0], "constraint_type": r[1], "columns": r[2]}),
        "indexes": _by_table(conn.execute(_INDEXES, (tables,)).fetchall(), tables, lambda r: {
            "index_name": r[0], "definition": r[1]}),
    }


def _count(conn: psycopg.Connection, table: str) -> int:
    return scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))


def _anomalies(conn: psycopg.Connection, relation: sql.Composable) -> dict[str, dict[str, Any]]:
    """issue text -> {kind, count, rows} over a source (or a table holding one)."""
    query = sql.SQL(_ANOMALIES).format(relation=relation)
    return {issue: {"kind": kind, "count": count, "rows": rows or []}
            for kind, issue, count, rows in conn.execute(query, {"limit": EXAMPLE_ROWS})}


def _whole_source(table: TableMap, landed: sql.Composable | None = None) -> sql.Composable:
    query = source_query(table, sql.SQL("true"), *([landed] if landed is not None else []))
    return sql.SQL("({})").format(query)


class _Failed(Exception):
    """A query of one table failed; its savepoint is rolled back and the report says why."""


def _guarded(conn: psycopg.Connection, work: Callable[[], Any]) -> Any:
    """`work` in a savepoint, so a failure (a missing column, a timeout) spoils only itself."""
    try:
        with conn.transaction():
            return work()
    except psycopg.Error as exc:
        raise _Failed(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None


def _build_landed_books(conn: psycopg.Connection) -> None:
    """The books that will land, by the legacy rules (v2 may still be empty): their ids in a
    temp table for the snapshots' rule, and the books' issues kept for the anomalies."""
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT id, issue_kind, issue, issue_row "
                         "FROM {} s").format(_BOOK_ISSUES, _whole_source(BY_NAME["pixbooks"])))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT id FROM {} "
                         "WHERE issue_kind IS DISTINCT FROM 'error'").format(_LANDED_BOOKS, _BOOK_ISSUES))
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(_LANDED_BOOKS))
    conn.execute(sql.SQL("ANALYZE {}").format(_LANDED_BOOKS))


def _all_anomalies(conn: psycopg.Connection, runnable: list[TableMap], steps: _Steps
                   ) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Each table's anomalies, or a problem saying why its rules could not run."""
    problems: list[dict[str, str]] = []
    anomalies: dict[str, dict[str, Any]] = {}
    books_ready = False
    for table in runnable:
        steps.start(f"anomalies {table.v2}")
        try:
            if table.v2 == "pixbooks":
                _guarded(conn, lambda: _build_landed_books(conn))
                books_ready = True
                relation: sql.Composable = _BOOK_ISSUES
            elif table.v2 == "pixbook_snapshots":
                if not books_ready:
                    raise _Failed("the books' rules did not run, so which snapshots land is unknown")
                relation = _whole_source(table, _LANDED_BOOKS)
            else:
                relation = _whole_source(table)
            anomalies[table.v2] = _guarded(conn, partial(_anomalies, conn, relation))
        except _Failed as exc:
            problems.append({"table": table.v2, "legacyTable": table.legacy, "error": str(exc)})
        steps.finish()
    for table in TABLES:
        if table not in runnable:
            problems.append({"table": table.v2, "legacyTable": table.legacy,
                             "error": "not checked: a legacy table it reads is missing"})
    return anomalies, problems


# --- the estimate ----------------------------------------------------------------------

# (rows in the sample, seconds it took) per v2 table.
Timings = dict[str, tuple[int, float]]


def _timed(conn: psycopg.Connection, query: sql.Composed, params: dict[str, Any]) -> float:
    started = time.monotonic()
    conn.execute(query, params).fetchall()
    return time.monotonic() - started


def _sample_end(conn: psycopg.Connection, table: TableMap, sample_rows: int) -> tuple[int, str | None]:
    """How many rows the sample holds and its last key: the first `sample_rows` keys, the range
    the backfill's first batch of the table would cover."""
    count, last = one_row(conn, sql.SQL(
        "SELECT count(*), max(id) FROM (SELECT id FROM {} ORDER BY id LIMIT %s) k").format(
        sql.Identifier(table.legacy)), (sample_rows,))
    return count, last


def _v2_parents(conn: psycopg.Connection) -> dict[str, list[tuple[str, str]]]:
    """v2 table -> (column, v2 table it references by id), from the catalog's one-column FKs."""
    names = [t.v2 for t in TABLES]
    parents: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
    for child, column, parent in conn.execute(
            "SELECT ch.relname::text, a.attname::text, pa.relname::text FROM pg_constraint c "
            "JOIN pg_class ch ON ch.oid = c.conrelid JOIN pg_class pa ON pa.oid = c.confrelid "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND cardinality(c.conkey) = 1 "
            "AND ch.relnamespace = current_schema()::regnamespace AND pa.relnamespace = ch.relnamespace "
            "AND ch.relname = ANY(%s) AND pa.relname = ANY(%s) ORDER BY 1, 2", (names, names)):
        parents[child].append((column, parent))
    return parents


def _land_parents(conn: psycopg.Connection, parents: dict[str, list[tuple[str, str]]], table: TableMap,
                  where: sql.Composable, params: dict[str, Any]) -> None:
    """Copy, by the backfill's own upserts, the v2 rows that the rows of `table` passing `where`
    reference, parents of parents first, so the sample's inserts meet every FK."""
    for column, parent in parents[table.v2]:
        ids = [value for (value,) in conn.execute(sql.SQL(
            "SELECT DISTINCT s.{} FROM ({}) s WHERE s.{} IS NOT NULL").format(
            sql.Identifier(column), source_query(table, where), sql.Identifier(column)), params)]
        if ids:
            parent_map = BY_NAME[parent]
            _land_parents(conn, parents, parent_map, ids_filter("l"), {"ids": ids})
            conn.execute(TableSQL(parent_map, column_types(conn, parent)).upsert(ids_filter("l")), {"ids": ids})


def _write_sample(conn: psycopg.Connection, sample_rows: int) -> tuple[Timings, Timings]:
    """Per table, in dependency order: land the parents its first `sample_rows` keys need
    (untimed), then time the backfill's own upsert of that key range, then its catch-up
    comparison (source hash against v2 hash) over the same range. The caller rolls back."""
    parents = _v2_parents(conn)
    first: Timings = {}
    catch_up: Timings = {}
    for table in TABLES:
        count, last = _sample_end(conn, table, sample_rows)
        if not count:
            first[table.v2] = catch_up[table.v2] = (0, 0.0)
            continue
        statements = TableSQL(table, column_types(conn, table.v2))
        params = {"lo": None, "hi": last}
        where = range_filter("l", None, last)
        _land_parents(conn, parents, table, where, params)
        first[table.v2] = (count, _timed(conn, statements.upsert(where), params))
        catch_up[table.v2] = (count, sum(_timed(conn, q, params) for q in (
            statements.v2_exists(None, last), statements.source_hash(None, last), statements.v2_hash(None, last))))
    return first, catch_up


def _read_sample(conn: psycopg.Connection, sample_rows: int) -> Timings:
    """Each table's source SELECT over its first `sample_rows` keys, every column computed."""
    timings: Timings = {}
    for table in TABLES:
        count, last = _sample_end(conn, table, sample_rows)
        query = sql.SQL("SELECT count(s.*) FROM ({}) s").format(
            source_query(table, range_filter("l", None, last), _LANDED_BOOKS))
        timings[table.v2] = (count, _timed(conn, query, {"lo": None, "hi": last}) if count else 0.0)
    return timings


def _scale(rows: dict[str, int], timings: Timings, workers: int) -> tuple[float, dict[str, dict[str, Any]]]:
    """Each table's time from its sample's rate, and the whole run's wall-clock time as the
    backfill schedules it: tables in waves by dependency, a table over ranges.SPLIT_ROWS cut into
    one range per worker, `workers` ranges at a time."""
    known = [seconds / count for count, seconds in timings.values() if count and seconds > 0]
    fallback = sum(known) / len(known) if known else 0.0  # a table whose sample was too fast to time
    tables: dict[str, dict[str, Any]] = {}
    depth: dict[str, int] = {}
    waves: dict[int, list[tuple[str, float, int]]] = {}
    for table in TABLES:
        depth[table.v2] = 1 + max((depth[d] for d in table.depends_on), default=-1)
        count, seconds = timings[table.v2]
        cost = seconds / count if count and seconds > 0 else fallback
        total = rows.get(table.legacy, 0)
        tables[table.v2] = {"rows": total, "sampleRows": count, "sampleSeconds": round(seconds, 4),
                            "rowsPerSecond": round(count / seconds, 1) if count and seconds > 0 else None,
                            "seconds": round(total * cost, 3)}
        pieces = ranges.pieces(total, workers)
        waves.setdefault(depth[table.v2], []).append((table.v2, total * cost, pieces))
    wall = 0.0
    for wave in waves.values():
        work = sum(seconds for _, seconds, _ in wave)
        longest = max(seconds / pieces for _, seconds, pieces in wave)
        wall += max(work / workers, longest)
    return wall, tables


def _no_estimate(method: str, workers: int) -> dict[str, Any]:
    return {"seconds": None, "rowsPerSecond": None, "serialSeconds": None, "sampleRows": 0, "workers": workers,
            "catchUpSeconds": None, "method": method, "tables": {}}


def _estimate(conn: psycopg.Connection, sample_rows: int, rows: dict[str, int], v2_present: bool,
              v2_empty: bool, workers: int) -> dict[str, Any]:
    if sample_rows <= 0:
        return _no_estimate("skipped: sample_rows is 0", workers)
    why_not = ("the v2 tables do not exist yet" if not v2_present else
               "the v2 tables already hold rows" if not v2_empty else None)
    timings: tuple[Timings, Timings] | None = None
    if why_not is None:
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '2s'")
                # Never write beside a running backfill or verify; held until the final rollback.
                if scalar(conn, "SELECT pg_try_advisory_xact_lock(%s)", (JOB_LOCK_KEY,)):
                    timings = _write_sample(conn, sample_rows)
                else:
                    why_not = "a backfill or verify is running"
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            why_not = f"the write sample failed ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc})"
            timings = None
    if timings is not None:
        first, catch_up = timings
        seconds, tables = _scale(rows, first, workers)
        catch_up_seconds, catch_up_tables = _scale(rows, catch_up, workers)
        for name, entry in tables.items():
            entry["catchUpSeconds"] = catch_up_tables[name]["seconds"]
        method = (f"write sample: the backfill's own upsert of each table's first {sample_rows} keys (the "
                  "parents they reference copied first, untimed), inserted into the v2 tables and rolled "
                  f"back; scaled by each table's rows and scheduled as the backfill runs ({workers} workers, "
                  "tables in dependency waves; serialSeconds with no overlap at all). The sample runs alone "
                  "on warm pages, without batching or checkpoints, so take it as a lower bound. catchUpSeconds "
                  "is one catch-up pass (source against v2 hashes), which runs when legacy changes during "
                  "the backfill, as it will on a live database")
    else:
        seconds, tables = _scale(rows, _read_sample(conn, sample_rows), workers)
        catch_up_seconds = None
        method = (f"read-only sample: timed only the source SELECTs, on each table's first {sample_rows} keys, "
                  f"because {why_not}; writes are not measured, so expect the backfill to take longer")
    total_rows = sum(t["rows"] for t in tables.values())
    return {"seconds": round(seconds, 3), "rowsPerSecond": round(total_rows / seconds, 1) if seconds else None,
            "serialSeconds": round(sum(t["seconds"] for t in tables.values()), 3),
            "sampleRows": sum(t["sampleRows"] for t in tables.values()), "workers": workers,
            "catchUpSeconds": round(catch_up_seconds, 3) if catch_up_seconds is not None else None,
            "method": method, "tables": tables}


# --- the report ------------------------------------------------------------------------


def run_recon(url: str, *, sample_rows: int = 2000, progress: ProgressCallback | None = None,
              backfill_options: BackfillOptions | None = None) -> dict[str, Any]:
    """The recon report body (§4 recon fields plus `tables`, `anomalies`, `estimate`, ...).

    `ok` is true when every legacy table the backfill reads exists and its rules run; the
    anomalies are reported, never failed on. The estimate assumes the backfill runs with
    `backfill_options` (default: its defaults). Raises DatabaseUnreachable when it cannot connect.
    """
    workers = (backfill_options or BackfillOptions()).workers
    started = time.monotonic()
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            return _recon(conn, sample_rows, workers, progress, started)
        finally:
            conn.rollback()


def _recon(conn: psycopg.Connection, sample_rows: int, workers: int, progress: ProgressCallback | None,
           started: float) -> dict[str, Any]:
    # Never queue behind a migration's lock for long; the report then says which table failed.
    conn.execute("SET LOCAL lock_timeout = '5s'")
    v2_names = [t.v2 for t in TABLES]
    present = _existing(conn, [*REQUIRED_TABLES, *v2_names])
    missing = [name for name in REQUIRED_TABLES if name not in present]
    v2_tables = {name: name in present for name in v2_names}
    runnable = [t for t in TABLES if {AUTH_USERS, "platform_workspaces", "platform_managed_users", t.legacy}
                <= present and (t.v2 != "pixbook_snapshots" or "platform_books" in present)]
    steps = _Steps(["schemas", *(f"count {t.legacy}" for t in TABLES if t.legacy in present),
                    *(f"anomalies {t.v2}" for t in runnable), "estimate"], progress)

    steps.start("schemas")
    described = [name for name in (*REQUIRED_TABLES, *v2_names) if name in present]
    shapes = _describe(conn, described)
    auth_id_type = next((c["data_type"] for c in shapes["schemas"].get(AUTH_USERS, [])
                         if c["column_name"] == "id"), "missing")
    auth_tables = [name for (name,) in conn.execute(
        r"SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() "
        r"AND table_name LIKE 'auth\_%' ORDER BY table_name")]
    steps.finish()

    tables: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        if table.legacy not in present:
            continue
        steps.start(f"count {table.legacy}")
        entry = {"rows": _count(conn, table.legacy),
                 "totalBytes": scalar(conn, "SELECT pg_total_relation_size(%s::regclass)",
                                            (table.legacy,))}
        if v2_tables[table.v2]:
            entry["v2Rows"] = _count(conn, table.v2)
        tables[table.legacy] = entry
        steps.finish()

    anomalies, problems = _all_anomalies(conn, runnable, steps)

    steps.start("estimate")
    v2_present = all(v2_tables.values())
    v2_empty = all(entry.get("v2Rows", 0) == 0 for entry in tables.values())
    if missing or problems:
        estimate = _no_estimate("not estimated: the backfill cannot run on this database as it is", workers)
    else:
        estimate = _estimate(conn, sample_rows, {k: v["rows"] for k, v in tables.items()}, v2_present, v2_empty,
                             workers)
    steps.finish()

    return {
        "ok": not missing and not problems,
        "generatedAt": _now_iso(),
        "authUserIdType": auth_id_type,
        "discoveredBetterAuthTables": auth_tables,
        "targetTables": list(REQUIRED_TABLES),
        "schemas": shapes["schemas"],
        "constraints": shapes["constraints"],
        "mapping": {t.legacy: t.v2 for t in TABLES},
        "database": conn.info.dbname,
        "serverVersion": scalar(conn, "SHOW server_version"),
        "missingTables": missing,
        "v2Tables": v2_tables,
        "indexes": shapes["indexes"],
        "tables": tables,
        "anomalies": anomalies,
        "problems": problems,
        "estimate": estimate,
        "durationSeconds": round(time.monotonic() - started, 3),
    }
