"""Backfill and verify speed against a plain INSERT ... SELECT, measured in one process.

    python bench/pipeline.py --size S|M|L [--keep] [--postgres 17 18] [--traffic RATE]

Seeds an embedded Postgres (kept under the temp folder with --keep, so a second run
reuses it), then times, on the same server and data: the baseline (the same mapping as
one plain INSERT ... SELECT per table into empty v2 tables, one transaction), our first
backfill, our idle re-run, our verify with the content check, count(*) over the same
tables, and a bare md5(row::text) scan of them (planned with the server's defaults). The
idle re-run is timed twice: as it runs by default (the watermarks prove nothing changed)
and with --full-compare (every range compared by hash); the second has a target of its
own. With --size M it also runs S first, and with L (ten times M, seeded in some minutes)
M first, for the rows/s ratios. Prints the server, the machine, each figure and the
ratios the pipeline issues set, and exits 1 if a ratio is missed. --postgres runs the
whole measurement on each server version named (default 18), each against its own
baseline, and prints the versions side by side. --traffic also times verify under stage
C's rule, without traffic and while the demo's account API (its own process, with C's
flags) takes RATE requests a second through ten accounts: as the console runs it (trusting
the quiet verify where nothing changed since, as `cutover verify` trusts the latest one),
against the target of 0.3 x the first backfill, and then with --full's reading of every
row; and prints how the machine's cores were shared meanwhile.
"""

from __future__ import annotations

import argparse
import os
import platform
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
from cutover_tui.demo.deployment import start_api, stop_api
from cutover_tui.demo.embedded import create_database, database_url
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.demo.seed import SIZES, seed_legacy
from cutover_tui.demo.traffic import Traffic, demo_cookies
from cutover_tui.files.envfile import READS, read_env_file, write_flags
from cutover_tui.rules.mapping import TABLES, source_query
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.work import migrate
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.verify import VerifyOptions, run_verify

TRAFFIC_ACCOUNTS = 10  # requests go one at a time per account: enough accounts to keep the rate up
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
        def progress(table: str, done: int, total: int) -> None:
            if done == total or done % 2_000_000 == 0:
                print(f"[{size}]   {table}: {done:,} of {total:,} rows ({time.monotonic() - started:.0f} s)", flush=True)
        seed_legacy(conn, SIZES[size], progress=progress)
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


def md5_scan(conn: psycopg.Connection) -> None:
    """The bare text-hash scan of every legacy and v2 row verify compares, as a DBA would type it:
    one statement a table, planned with the server's defaults (parallel workers included, as
    verify has a connection per core)."""
    for table in TABLES:
        for name in (table.legacy, table.v2):
            conn.execute(sql.SQL("SELECT count(md5(x::text)) FROM {} x").format(sql.Identifier(name))).fetchone()


def written_tuples(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
                        "WHERE relname = ANY(%s)", ([t.v2 for t in TABLES],)).fetchone()[0]


def content_figures(report: dict) -> str:
    content = [c for c in report["checks"] if c["type"] == "content"]
    return (f"v2 rows read by key alone {sum(c['rowsUnchanged'] for c in content):,}, "
            f"ranges {sum(c['ranges'] for c in content)}, rechecked {sum(c['rangesRechecked'] for c in content)}, "
            f"settled {sum(c['rangesSettled'] for c in content)}, in flight {sum(c['rowsInFlight'] for c in content)}; "
            "slowest: " + ", ".join(f"{c.get('name') or c['type']} {c['seconds']:.2f} s" for c in
                                    sorted(report["checks"], key=lambda c: -c.get("seconds", 0))[:3]))


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far (user and system): of the whole machine, of this process (verify's threads
    and the traffic's clients) and of its child processes that are not Postgres (the stand-in API).
    What the machine spent besides is the server's (the API's backends and verify's alike)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    out = {"machine": sum(int(busy[i]) for i in (0, 1, 2, 5, 6, 7)) / tick, "this process": 0.0, "stand-in API": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(stat.parent.name) == os.getpid():
            out["this process"] += seconds
        elif int(fields[1]) == os.getpid() and b"postgres" not in command:
            out["stand-in API"] += seconds
    return out


def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    used = {name: (after[name] - before[name]) / seconds for name in before}
    rest = used["machine"] - used["this process"] - used["stand-in API"]
    return (f"{used['machine']:.2f} of {os.cpu_count()} cores busy: the stand-in API {used['stand-in API']:.2f}, "
            f"this process {used['this process']:.2f}, the rest (Postgres) {rest:.2f}")


def under_traffic(url: str, rate: float, tag: str) -> dict[str, float]:
    """Verify under C's rule, quiet, then while the demo API (C's flags, its own process) takes traffic."""
    quiet_s, quiet = timed(lambda: run_verify(url, VerifyOptions(stage="C")))
    print(f"[{tag}] quiet verify: {content_figures(quiet)}")
    folder = Path(tempfile.mkdtemp())
    env = folder / "deploy.env"
    env.write_text(DEMO_ENV)
    write_flags(read_env_file(env), {READS: True})  # C: reads from v2, writes legacy mirrored into v2
    api = start_api(folder, url, env, os.getpid())
    try:
        # A seed of its own each run: a kept database holds the rows earlier runs created, and the
        # same seed would create the same keys again (the API answers 409, as the real one would).
        seed = time.time_ns() % 1_000_000
        with Traffic(api, demo_cookies(api, url, TRAFFIC_ACCOUNTS), rate, seed=seed, max_seconds=3600) as traffic:
            time.sleep(3)  # under way before verify starts
            before = cpu_seconds()
            busy_s, busy = timed(lambda: run_verify(url, VerifyOptions(stage="C"), reference=quiet["reference"]))
            used = cores(before, cpu_seconds(), busy_s)
            before = cpu_seconds()
            full_s, full = timed(lambda: run_verify(url, VerifyOptions(stage="C", full=True)))
            used_full = cores(before, cpu_seconds(), full_s)
            stats = traffic.stats()
            last_error = traffic.last_error
    finally:
        stop_api(folder)
    print(f"[{tag}] verify under traffic: {content_figures(busy)}")
    print(f"[{tag}] while it ran (traffic seed {seed}): {used}")
    print(f"[{tag}] verify under traffic, every row (--full): {full_s:.2f} s; {content_figures(full)}")
    print(f"[{tag}] while it ran: {used_full}")
    if stats.errors:
        print(f"[{tag}] traffic: {stats.errors} of {stats.requests} requests failed; the last: {last_error}")
    failed = [c.get("name") or f"{c['type']}:{c['table']}" for c in busy["checks"] + full["checks"]
              if not c["ok"] and c["type"] != "count"]  # the seed's anomalies fail the count checks by design
    return {"verify C quiet s": quiet_s, "verify C traffic s": busy_s, "verify C traffic, every row s": full_s,
            "traffic requests/s": stats.requests_per_second, "traffic errors": stats.errors,
            "traffic failed checks": ", ".join(failed) or "none"}


def run_size(size: str, keep: bool, version: int, traffic: float | None = None) -> dict[str, float]:
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
            md5_s, _ = timed(lambda: md5_scan(conn))
            server_version = conn.execute("SHOW server_version").fetchone()[0]
            # The console's own memory: the traffic's HTTP clients below run in this process too.
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            busy = under_traffic(url, traffic, f"{size} pg{version}") if traffic else {}
    finally:
        srv.cleanup()
    figures = {
        "legacy rows": rows, "baseline s": base, "first backfill s": first_s, "idle re-run s": idle_s,
        "idle full compare s": compare_s,
        "verify s": verify_s, "count(*) s": count_s, "md5 scan s": md5_s, "rows/s": rows / first_s,
        "verify rows/s": rows / verify_s,
        "longest transaction s": first["longestTransactionSeconds"], "idle tuples written": idle_written,
        "verify ok": verify["ok"], "passes": first["passes"], **busy,
        "peak RSS MB": rss,
    }
    tag = f"{size} pg{version}"
    print(f"[{tag}] server {server_version}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    for name, value in figures.items():
        print(f"[{tag}] {name:<24} {value:>14,.3f}" if isinstance(value, float) else f"[{tag}] {name:<24} {value!s:>14}")
    return figures


SMALLER = {"M": "S", "L": "M"}  # the size a run's rows/s are held against


def checks(figures: dict, size: str, small: dict | None) -> list[tuple[str, float, str, float]]:
    """(what, value, op, target): the targets of the pipeline issues (backfill and verify speed, and
    issue 17's: 0.6 x the plain INSERT ... SELECT, verify within a bare md5 scan, 1 s transactions)."""
    out = [
        ("first backfill / baseline", figures["first backfill s"] / figures["baseline s"], "<=", 0.6),
        ("longest transaction (s)", figures["longest transaction s"], "<=", 1.0),
        ("idle re-run / first backfill", figures["idle re-run s"] / figures["first backfill s"], "<=", 0.1),
        ("idle re-run, full compare / first backfill",
         figures["idle full compare s"] / figures["first backfill s"], "<=", 0.3),
        ("tuples written by both idle re-runs", figures["idle tuples written"], "<=", 0),
        ("verify / first backfill", figures["verify s"] / figures["first backfill s"], "<=", 0.3),
        ("verify / md5 scan of legacy and v2", figures["verify s"] / figures["md5 scan s"], "<=", 1.0),
    ]
    if "verify C traffic s" in figures:
        out.append(("verify under traffic (C) / first backfill",
                    figures["verify C traffic s"] / figures["first backfill s"], "<=", 0.3))
    if small:
        smaller = SMALLER[size]
        out.append((f"rows/s {size} / rows/s {smaller}", figures["rows/s"] / small["rows/s"], ">=", 0.8))
        out.append((f"verify rows/s {size} / {smaller}", figures["verify rows/s"] / small["verify rows/s"], ">=", 0.8))
    out.append(("peak RSS so far (MB)", figures["peak RSS MB"], "<=", 100))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["S", "M", "L"], default="S")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded server under the temp folder")
    parser.add_argument("--postgres", type=int, nargs="+", choices=servers.SUPPORTED, default=[servers.DEFAULT],
                        help="the server versions to measure on, each in turn")
    parser.add_argument("--traffic", type=float, metavar="RATE",
                        help="also time verify under C's rule while the demo API takes RATE requests a second")
    args = parser.parse_args()
    results = {}
    for version in args.postgres:
        small = run_size(SMALLER[args.size], args.keep, version) if args.size in SMALLER else None
        results[version] = checks(run_size(args.size, args.keep, version, args.traffic), args.size, small)
    failed = 0
    print(f"\n{'':6}{'ratio':<44}" + "".join(f"{'pg' + str(v):>10}" for v in results) + "  target")
    for row, (name, _, op, limit) in enumerate(next(iter(results.values()))):
        values = [results[v][row][1] for v in results]
        ok = all(value <= limit if op == "<=" else value >= limit for value in values)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL':<6}{name:<44}" + "".join(f"{value:>10.3f}" for value in values)
              + f"  {op} {limit}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
