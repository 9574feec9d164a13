"""`cutover serve`: the console in browsers, read-only, for those who watch while one operator drives.

textual-serve starts one console process per browser (the command below, in observer mode) on
the same database. The database URL reaches each child through its environment, never its
command line: textual-serve prints and logs the command, and the page shows its title.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import sys
from pathlib import Path

from .errors import BadInput
from .store.session import Session, Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PAGE_TITLE = "Cutover console (observer)"
OBSERVER = "observer"  # the name each browser's console goes by (it journals nothing)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def observer_command(settings: Settings, runbook: Path, notice: str | None = None) -> str:
    """The console each browser gets; the database URL goes in DATABASE_URL, not here."""
    argv = [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(runbook.resolve()),
            "--env-file", str(settings.env_file.resolve()), "--operator", OBSERVER, "tui", "--observer"]
    if notice:
        argv += ["--notice", notice]
    return shlex.join(argv)


def serve(settings: Settings, runbook: Path, *, host: str, port: int, notice: str | None = None) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); the database is checked first, so a wrong URL
    is one sentence here rather than an error page in every browser."""
    try:
        from textual_serve.server import Server
    except ModuleNotFoundError:
        raise BadInput("Serving needs textual-serve: run python3 -m pip install textual-serve.") from None
    if not 0 < port < 65536:
        raise BadInput(f"--port must be between 1 and 65535 (got {port}).")
    with Session(settings) as session, session.translated():
        database = session.database_name
    if not is_loopback(host):
        print(f"cutover: warning: serving on {host}, to anyone who can reach it: the page has no authentication "
              "of its own, so put it behind the team's SSH tunnel or an authenticated proxy.", file=sys.stderr)
    os.environ["DATABASE_URL"] = settings.database_url  # each browser's console reads it from here
    print(f"Serving the console of database {database} read-only at http://{host}:{port} "
          f"({settings.safe_database_url}); Ctrl-C stops it.", flush=True)
    server = Server(observer_command(settings, runbook, notice), host=host, port=port, title=PAGE_TITLE)
    try:
        server.serve()
    except OSError as exc:
        raise BadInput(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
                       "stop what uses it.") from None
    return 0
