"""Backfill and verify speed against a plain INSERT ... SELECT, measured in one process.

    python bench/pipeline.py --size S|M [--keep] [--postgres 17 18]

Seeds an embedded Postgres (kept under the temp folder with --keep, so a second run
reuses it), then times, on the same server and data: the baseline (the same mapping
as one plain INSERT ... SELECT per table into empty v2 tables, one transaction), our
first backfill, our idle re-run, our verify with the content check, and count(*) over
the same tables. The idle re-run is timed twice: as it runs by default (the watermarks
prove nothing changed) and with --full-compare (every range compared by hash); the
second has a target of its own. With --size M it also runs S first, for the rows/s ratio. Prints each
figure and the ratios the pipeline issues set, and exits 1 if a ratio is missed. --postgres runs
the whole measurement on each server version named (default 18), each against its own baseline,
and prints the versions side by side.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cutover_tui.demo import servers
from cutover_tui.demo.embedded import create_database, database_url
from cutover_tui.demo.seed import SIZES, seed_legacy
from cutover_tui.rules.mapping import TABLES, source_query
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.work import migrate
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.verify import VerifyOptions, run_verify

V2 = sql.SQL(", ").join(sql.Identifier(t.v2) for t in TABLES)


def server(size: str, keep: bool, version: int):
    folder = Path(tempfile.gettempdir()) / f"cutover-bench-{size}-pg{version}" if keep else Path(tempfile.mkdtemp())
    folder.mkdir(exist_ok=True)
    return servers.start(folder / "data", version, cleanup_mode="stop" if keep else "delete")


def seeded(server_url: str, size: str) -> str:
    name = f"bench_{size.lower()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        url = database_url(server_url, name)
        print(f"[{size}] reusing the seeded database {name}")
        return url
    url = create_database(server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_legacy_baseline(conn, ROOT / "sql")
        started = time.monotonic()
        seed_legacy(conn, SIZES[size])
        print(f"[{size}] seeded in {time.monotonic() - started:.1f} s")
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
        ensure_console_schema(conn)
        conn.execute("VACUUM ANALYZE")
    return url


def reset(conn: psycopg.Connection) -> None:
    """Empty v2 and the console's own state (a reused database may hold an older one)."""
    conn.execute(sql.SQL("TRUNCATE {}").format(V2))
    conn.execute("DROP SCHEMA IF EXISTS cutover CASCADE")
    ensure_console_schema(conn)
    conn.execute("CHECKPOINT")


def timed(work) -> tuple[float, object]:
    started = time.monotonic()
    result = work()
    return time.monotonic() - started, result


def baseline(conn: psycopg.Connection) -> float:
    """The same mapping, one plain INSERT ... SELECT per table, in one transaction."""
    def work():
        with conn.transaction():
            for table in TABLES:
                cols = sql.SQL(", ").join(map(sql.Identifier, table.columns))
                conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM ({}) s WHERE issue_kind IS DISTINCT FROM 'error'")
                             .format(sql.Identifier(table.v2), cols, cols, source_query(table, sql.SQL("true"))))
    seconds, _ = timed(work)
    reset(conn)
    return seconds


def written_tuples(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
                        "WHERE relname = ANY(%s)", ([t.v2 for t in TABLES],)).fetchone()[0]


def run_size(size: str, keep: bool, version: int) -> dict[str, float]:
    srv = server(size, keep, version)
    try:
        url = seeded(srv.get_uri(), size)
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn)
            rows = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.legacy))).fetchone()[0]
                       for t in TABLES)
            base = baseline(conn)
            first_s, first = timed(lambda: Backfill(url, "bench", BackfillOptions()).run())
            before = written_tuples(conn)
            idle_s, _ = timed(lambda: Backfill(url, "bench", BackfillOptions()).run())
            compare_s, _ = timed(lambda: Backfill(url, "bench", BackfillOptions(full_compare=True)).run())
            idle_written = written_tuples(conn) - before
            verify_s, verify = timed(lambda: run_verify(url, VerifyOptions()))
            count_s, _ = timed(lambda: [conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(n))).fetchone()
                                        for t in TABLES for n in (t.legacy, t.v2)])
    finally:
        srv.cleanup()
    figures = {
        "legacy rows": rows, "baseline s": base, "first backfill s": first_s, "idle re-run s": idle_s,
        "idle full compare s": compare_s,
        "verify s": verify_s, "count(*) s": count_s, "rows/s": rows / first_s,
        "longest transaction s": first["longestTransactionSeconds"], "idle tuples written": idle_written,
        "verify ok": verify["ok"], "passes": first["passes"],
    }
    tag = f"{size} pg{version}"
    for name, value in figures.items():
        print(f"[{tag}] {name:<24} {value:>14,.3f}" if isinstance(value, float) else f"[{tag}] {name:<24} {value!s:>14}")
    return figures


def checks(figures: dict, small: dict | None) -> list[tuple[str, float, str, float]]:
    out = [
        ("first backfill / baseline", figures["first backfill s"] / figures["baseline s"], "<=", 1.0),
        ("longest transaction (s)", figures["longest transaction s"], "<=", 2.0),
        ("idle re-run / first backfill", figures["idle re-run s"] / figures["first backfill s"], "<=", 0.1),
        ("idle re-run, full compare / first backfill",
         figures["idle full compare s"] / figures["first backfill s"], "<=", 0.3),
        ("tuples written by both idle re-runs", figures["idle tuples written"], "<=", 0),
        ("verify / first backfill", figures["verify s"] / figures["first backfill s"], "<=", 0.3),
    ]
    if small:
        out.append(("rows/s M / rows/s S", figures["rows/s"] / small["rows/s"], ">=", 0.8))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["S", "M"], default="S")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded server under the temp folder")
    parser.add_argument("--postgres", type=int, nargs="+", choices=servers.SUPPORTED, default=[servers.DEFAULT],
                        help="the server versions to measure on, each in turn")
    args = parser.parse_args()
    results = {}
    for version in args.postgres:
        small = run_size("S", args.keep, version) if args.size == "M" else None
        results[version] = checks(run_size(args.size, args.keep, version), small)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    failed = 0
    print(f"\n{'':6}{'ratio':<44}" + "".join(f"{'pg' + str(v):>10}" for v in results) + "  target")
    for row, (name, _, op, limit) in enumerate(next(iter(results.values()))):
        values = [results[v][row][1] for v in results]
        ok = all(value <= limit if op == "<=" else value >= limit for value in values)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL':<6}{name:<44}" + "".join(f"{value:>10.3f}" for value in values)
              + f"  {op} {limit}")
    ok = peak_rss <= 200
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL':<6}{'peak RSS of the whole run (MB)':<44}{peak_rss:>10.1f}  <= 200")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
