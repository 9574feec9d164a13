"""One console's session: settings resolved once, a connection, the operator lock.

Both faces (CLI and TUI) open a `Session` and call the engine through it; nothing
here prints or knows about the screen.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict

from . import lock
from .db import connect, database_name, ensure_console_schema, redact, redact_url
from .envfile import EnvFile, read_env_file
from .errors import BadInput, CutoverError, DatabaseUnreachable
from .flags import Flags
from .matrix import Assessment, Facts, assess
from .runbook import Runbook, load_runbook
from .state import load_facts


class Settings(BaseModel):
    """Everything a session needs, decided once from options, environment and runbook file."""

    model_config = ConfigDict(frozen=True)

    runbook: Runbook
    database_url: str
    env_file: Path
    report_dir: Path
    operator: str

    @property
    def safe_database_url(self) -> str:
        return redact_url(self.database_url)


def resolve_settings(*, runbook_path: Path, env_file: Path | None = None,
                     database_url: str | None = None, operator: str | None = None,
                     report_dir: Path | None = None,
                     environ: Mapping[str, str] = os.environ) -> Settings:
    runbook = load_runbook(runbook_path)
    url = database_url or environ.get("DATABASE_URL") or runbook.database.url
    if not url:
        raise BadInput("No database given: pass --database-url, set DATABASE_URL, or set "
                       "database.url in the runbook file.")
    who = operator or environ.get("USER") or _login_name()
    return Settings(runbook=runbook, database_url=url,
                    env_file=env_file or runbook.paths.env_file,
                    report_dir=report_dir or runbook.paths.report_dir, operator=who)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Session:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection = connect(settings.database_url, autocommit=True)
        try:
            ensure_console_schema(self.conn)
        except psycopg.Error as exc:
            self.close()
            raise self.database_error(exc) from None
        self._locked = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()

    @property
    def runbook(self) -> Runbook:
        return self.settings.runbook

    @property
    def database_name(self) -> str:
        return database_name(self.conn)

    def database_error(self, exc: psycopg.Error) -> CutoverError:
        """A database failure as one redacted sentence."""
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                      self.settings.database_url)
        if isinstance(exc, psycopg.OperationalError):
            return DatabaseUnreachable(f"Lost the database at {self.settings.safe_database_url} ({text}); "
                                       "check it is up and run the command again.")
        return CutoverError(f"The database refused the request ({text}).")

    def read_env(self) -> EnvFile:
        return read_env_file(self.settings.env_file)

    def facts(self, env: EnvFile | None = None, now: datetime | None = None) -> Facts:
        env = env or self.read_env()
        flags = Flags.from_env({name: value.value for name, value in env.flags.items()})
        return load_facts(self.conn, flags, self.runbook, now or datetime.now(timezone.utc))

    def assess(self, env: EnvFile | None = None) -> Assessment:
        return assess(self.facts(env), self.runbook)

    def lock_holder(self) -> lock.LockHolder | None:
        return lock.holder(self.conn)

    @contextmanager
    def operator_lock(self) -> Iterator[None]:
        """Hold the operator lock for a change; re-entrant within one session."""
        if self._locked:
            yield
            return
        lock.acquire(self.conn, self.settings.operator)
        self._locked = True
        try:
            yield
        finally:
            self._locked = False
            if not self.conn.closed:
                lock.release(self.conn)
