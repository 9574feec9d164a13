"""An embedded Postgres from PyPI in a temp folder, always cleaned up.

pgserver runs postgres as its own system user and listens on a Unix socket only;
its data folder stays under the temp dir, never under the caller's home.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from . import servers


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is over (they are delivered then)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def embedded_server(prefix: str = "cutover-pg-", version: int = servers.DEFAULT) -> Iterator:
    """Yield a started pgserver handle of `version`; stop it and remove its folder on exit."""
    servers.binaries(version)  # a first fetch may take a while: before signals are held
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        server = None
        try:
            # A signal while the server starts would leave its postmaster running, with no
            # handle to stop it, and its folder half removed: it waits until there is one.
            with _signals_held():
                server = servers.start(Path(folder) / "data", version)
            yield server
        finally:
            if server is not None:
                server.cleanup()


@contextmanager
def embedded_postgres(prefix: str = "cutover-pg-", version: int = servers.DEFAULT) -> Iterator[str]:
    """Yield the admin URL of a server of `version`; stop it and remove its folder on exit."""
    with embedded_server(prefix, version) as server:
        yield server.get_uri()


def database_url(server_url: str, dbname: str) -> str:
    """The URL of database `dbname` on the same server."""
    base, _, query = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + dbname + ("?" + query if query else "")


def create_database(server_url: str, dbname: str, template: str | None = None) -> str:
    """A new database; with `template`, a copy of that one (nobody may be connected to it)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return database_url(server_url, dbname)
