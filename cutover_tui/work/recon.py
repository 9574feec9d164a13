"""Stage 0: what the database holds before the backfill, in upstream's recon shape plus
what an operator needs: true row counts and sizes, every anomaly the §3 rules will report
(from `mapping`, the backfill's own rules), and an estimate of the backfill's duration.

All of it runs in one REPEATABLE READ READ ONLY transaction: one consistent picture, and
the server itself refuses any write, so recon writes nothing, not even rows it would roll back
(it creates no temp table either: the books that land are a subquery). The estimate comes
from reads alone: the backfill's own mapping SELECT, timed over a sample of each table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from ..rules.mapping import BY_NAME, TABLES, TableMap, column_types, range_filter, source_query
from ..store.db import connect, one_row, scalar
from . import ranges
from .backfill import EXAMPLE_ROWS, BackfillOptions, TableSQL

AUTH_USERS = "auth_users"
# BetterAuth's own tables, as upstream's recon lists them; the legacy demo has `auth_*` stand-ins.
BETTER_AUTH_TABLES = ("user", "session", "account", "verification", "passkey")
# What the backfill reads: the mapped legacy tables and the users its joins check against;
# upstream's recon lists the same tables as its `targetTables`.
REQUIRED_TABLES: tuple[str, ...] = (AUTH_USERS, *(t.legacy for t in TABLES))

ProgressCallback = Callable[[str, int, int], None]

# The estimate's stand-in for v2 `pixbooks` in the snapshots' join: legacy books, which hold
# about as many rows as pixbooks will while the backfill runs (v2 may be empty or missing now).
_BOOKS_STAND_IN = sql.Identifier("platform_books")

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


def _landed_books() -> sql.Composable:
    """The ids of the books that will land, by the legacy rules (v2 may still be empty)."""
    return sql.SQL("(SELECT b.id FROM {} b WHERE b.issue_kind IS DISTINCT FROM 'error')").format(
        _whole_source(BY_NAME["pixbooks"]))


def _all_anomalies(conn: psycopg.Connection, runnable: list[TableMap], steps: _Steps
                   ) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Each table's anomalies, or a problem saying why its rules could not run."""
    problems: list[dict[str, str]] = []
    anomalies: dict[str, dict[str, Any]] = {}
    books_ready = False
    for table in runnable:
        steps.start(f"anomalies {table.v2}")
        try:
            if table.v2 == "pixbook_snapshots":
                if not books_ready:
                    raise _Failed("the books' rules did not run, so which snapshots land is unknown")
                relation = _whole_source(table, _landed_books())
            else:
                relation = _whole_source(table)
            anomalies[table.v2] = _guarded(conn, partial(_anomalies, conn, relation))
            books_ready = books_ready or table.v2 == "pixbooks"
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


def _read_sample(conn: psycopg.Connection, sample_rows: int, v2_present: bool) -> tuple[Timings, Timings | None]:
    """Per table, over its first `sample_rows` keys (the range the backfill's first batch covers):
    the backfill's mapping SELECT with every column computed, and (with v2 present) the
    catch-up pass's source hash over the same range."""
    reads: Timings = {}
    catch_up: Timings | None = {} if v2_present else None
    for table in TABLES:
        count, last = _sample_end(conn, table, sample_rows)
        params = {"lo": None, "hi": last}
        query = sql.SQL("SELECT count(s.*) FROM ({}) s").format(
            source_query(table, range_filter("l", None, last), _BOOKS_STAND_IN))
        reads[table.v2] = (count, _timed(conn, query, params) if count else 0.0)
        if catch_up is not None:
            source_hash = TableSQL(table, column_types(conn, table.v2)).source_hash(None, last)
            # v2's side of the pass hashes the same rows once they landed: counted as costing the same.
            catch_up[table.v2] = (count, 2 * _timed(conn, source_hash, params) if count else 0.0)
    return reads, catch_up


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
                            "seconds": float(f"{total * cost:.3g}")}  # small tables: never rounded to 0
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
              workers: int) -> dict[str, Any]:
    if sample_rows <= 0:
        return _no_estimate("skipped: sample_rows is 0", workers)
    reads, catch_up = _read_sample(conn, sample_rows, v2_present)
    seconds, tables = _scale(rows, reads, workers)
    catch_up_seconds = None
    if catch_up is not None:
        catch_up_seconds, catch_up_tables = _scale(rows, catch_up, workers)
        for name, entry in tables.items():
            entry["catchUpSeconds"] = catch_up_tables[name]["seconds"]
    method = (f"read-only sample: timed the backfill's own mapping SELECT (every column and rule computed, "
              f"the snapshots joined to legacy books standing in for v2 pixbooks) over each table's first "
              f"{sample_rows} keys, scaled by each table's rows and scheduled as the backfill runs ({workers} "
              "workers, tables in dependency waves; serialSeconds with no overlap at all). Nothing is written "
              "to measure it, so the writes (inserts, index upkeep, WAL, checkpoints per batch) are not in it: "
              "take it as a lower bound. "
              + ("catchUpSeconds is one catch-up pass (source against v2 hashes), which runs when legacy "
                 "changes during the backfill, as it will on a live database: its source side timed, its v2 "
                 "side counted as the same" if catch_up is not None else
                 "No catch-up estimate: the v2 tables do not exist yet"))
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

    `ok` is true when every legacy table the backfill reads exists, its rules run, and they
    predict no backfill error (a row the backfill would leave out); warnings do not fail it.
    The estimate assumes the backfill runs with
    `backfill_options` (default: its defaults). Raises DatabaseUnreachable when it cannot connect.
    """
    workers = (backfill_options or BackfillOptions()).workers
    started = time.monotonic()
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        # The server refuses every write in the transaction: recon is read-only by construction.
        conn.read_only = True
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
    auth_tables = [name for (name,) in conn.execute(
        r"SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() "
        r"AND (table_name = ANY(%s) OR table_name LIKE 'auth\_%%') ORDER BY table_name",
        (list(BETTER_AUTH_TABLES),))]
    # BetterAuth's `user` holds the users when present; the legacy demo keeps them in auth_users.
    auth_id_type = scalar(conn, "SELECT coalesce(max(data_type::text), 'missing') FROM information_schema.columns "
                                "WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'",
                          ("user" if "user" in auth_tables else AUTH_USERS,))
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
    if missing or problems:
        estimate = _no_estimate("not estimated: the backfill cannot run on this database as it is", workers)
    else:
        estimate = _estimate(conn, sample_rows, {k: v["rows"] for k, v in tables.items()},
                             all(v2_tables.values()), workers)
    steps.finish()

    predicted = sum(a["count"] for found in anomalies.values() for a in found.values() if a["kind"] == "error")
    return {
        "ok": not missing and not problems and not predicted,
        "predictedErrors": predicted,
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
        "readOnly": scalar(conn, "SHOW transaction_read_only") == "on",
        "durationSeconds": round(time.monotonic() - started, 3),
    }
