"""One console's session: settings resolved once, a connection, the operator lock.

Both faces (CLI and TUI) open a `Session` and call the engine through it; nothing
here prints or knows about the screen.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from ..display import one_line
from ..errors import BadInput, CutoverError, DatabaseUnreachable, Refused
from ..files.envfile import EnvFile, read_env_file
from ..rules.flags import Flags
from ..rules.matrix import Assessment, Facts, assess, hand_rollback
from ..rules.runbook import Runbook, load_runbook
from . import flag_writes, journal, lock
from .db import (
    CONSOLE_SCHEMA_STEPS,
    HAND_ROLLBACK_KEY,
    OPERATOR_LOCK_KEY,
    ROLLED_BACK,
    connect,
    console_schema_version,
    database_name,
    ensure_console_schema,
    lock_blocker,
    read_only_reason,
    redact,
    redact_url,
    scalar,
    server_now,
)
from .facts import load_facts

OPERATOR_MAX = 64  # characters of --operator (or $USER): it names a person in the journal
# Why a console served to a browser refuses every step: it watches while one operator drives.
SERVED_READ_ONLY = "Served read-only: a console in a browser only watches; act from a terminal console."


class Settings(BaseModel):
    """Everything a session needs, decided once from options, environment and runbook file."""

    model_config = ConfigDict(frozen=True)

    runbook: Runbook
    database_url: str
    env_file: Path
    report_dir: Path
    operator: str
    observer: bool = False  # served to a browser: reads only, never takes the operator lock

    def watching_only(self) -> Settings:
        return self.model_copy(update={"observer": True})

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
    if not (who.isprintable() and len(who) <= OPERATOR_MAX) or not who.strip():
        raise BadInput(f"The operator name {one_line(who[:OPERATOR_MAX])!r}{'…' if len(who) > OPERATOR_MAX else ''} "
                       f"must be one printable line of at most {OPERATOR_MAX} characters; pass --operator NAME.")
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
        # Set for a role that may only watch: every step is refused with it, nothing is written.
        self.read_only: str | None = None
        try:
            self._refuse_a_foreign_database()
            self._open_console_schema()
        except CutoverError:
            self.close()
            raise
        except psycopg.Error as exc:
            error = self.database_error(exc)  # before closing: it may ask the database who holds a lock
            self.close()
            raise error from None
        self._locked = False

    def _open_console_schema(self) -> None:
        """Create or upgrade the console's schema only when it needs it; a role that can only read
        an up-to-date one watches (nothing is created for it, so no CREATE privilege is asked)."""
        if self.settings.observer:
            if console_schema_version(self.conn) != CONSOLE_SCHEMA_STEPS:
                raise CutoverError("The console's records on this database are missing or older than this "
                                   "console, and a served console writes nothing: run `cutover status` once as "
                                   "the operator, then reload the page.")
            self.read_only = SERVED_READ_ONLY
            return
        if console_schema_version(self.conn) == CONSOLE_SCHEMA_STEPS:
            self.read_only = read_only_reason(self.conn)
            if self.read_only is not None:
                return
        try:
            ensure_console_schema(self.conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            role = scalar(self.conn, "SELECT current_user")
            raise CutoverError(f"Role {role} may not create or upgrade the console's schema "
                               f"({str(exc).strip().splitlines()[0]}); run the console once as the operator role, "
                               "or grant that privilege.") from None

    def _refuse_a_foreign_database(self) -> None:
        """The console's schema goes only where the account API's migrations ran (or already is):
        a wrong URL must leave someone else's database as it was."""
        api, console = self.conn.execute("SELECT to_regclass('public.platform_schema_migrations'), "
                                         "to_regnamespace('cutover')").fetchone() or (None, None)
        if api is None and console is None:
            raise BadInput(f"Database {self.database_name} has no platform_schema_migrations table, so it is not "
                           "the account API's database; check --database-url or DATABASE_URL. Nothing was written.")

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

    def record(self, action: journal.JournalAction, **fields: Any) -> journal.JournalEntry:
        """A journal row of this session: its operator, and the runbook file in force."""
        return journal.record(self.conn, self.settings.operator, action, runbook=self.runbook.in_force(), **fields)

    @property
    def database_name(self) -> str:
        return database_name(self.conn)

    @contextmanager
    def translated(self) -> Iterator[None]:
        """The session/job boundary: a database failure inside becomes the operator's one sentence."""
        try:
            yield
        except psycopg.Error as exc:
            raise self.database_error(exc) from None

    def database_error(self, exc: psycopg.Error) -> CutoverError:
        """A database failure as one redacted sentence."""
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                      self.settings.database_url)
        # Both are OperationalErrors to psycopg, but the database is up: say what stopped us.
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return self._lock_timeout_error()
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return self._cancelled_error(exc)
        if isinstance(exc, ROLLED_BACK):
            return CutoverError(f"The database rolled back one of the console's transactions because it crossed "
                                f"another session's locks ({text}); nothing committed was lost: run the command "
                                "again, and if it repeats, find the session writing the same rows in pg_stat_activity.")
        if isinstance(exc, psycopg.OperationalError):
            return DatabaseUnreachable(f"Lost the database at {self.settings.safe_database_url} ({text}); "
                                       "check it is up and run the command again.")
        return CutoverError(f"The database refused the request ({text}).")

    def _lock_timeout_error(self) -> CutoverError:
        """A wait for a lock passed lock_timeout: name the table and who holds it, if still held."""
        try:
            blocker = lock_blocker(self.conn)
        except psycopg.Error:
            blocker = None
        if blocker is None:
            return CutoverError("Another session held a lock the console needed past the console's lock_timeout; "
                                "nothing committed was lost: run the command again once that session is done.")
        table, pid, mode = blocker
        return CutoverError(f"Table {table} is locked by another session (pid {pid}, {mode}), so the console "
                            "gave up waiting at its lock_timeout; nothing committed was lost: let that session "
                            "finish (or end it), then run the command again.")

    def _cancelled_error(self, exc: psycopg.Error) -> CutoverError:
        if "statement timeout" not in (exc.diag.message_primary or str(exc)):
            return CutoverError("Another session cancelled one of the console's statements (pg_cancel_backend); "
                                "nothing committed was lost: run the command again.")
        try:
            limit = f" ({scalar(self.conn, 'SHOW statement_timeout')})"
        except psycopg.Error:
            limit = ""
        return CutoverError(f"A statement ran longer than the database's statement_timeout{limit} and was "
                            "cancelled; nothing committed was lost: raise statement_timeout for the console's role "
                            "(0 turns it off), then run the command again.")

    def read_env(self) -> EnvFile:
        return read_env_file(self.settings.env_file)

    def facts(self, env: EnvFile | None = None, now: datetime | None = None) -> Facts:
        env = env or self.read_env()
        flags = Flags.from_env({name: value.value for name, value in env.flags.items()})
        if not self.read_only:
            self.finish_flag_writes(flags)
        facts = load_facts(self.conn, flags, self.runbook, now or server_now(self.conn))
        if not self.read_only and hand_rollback(facts, self.runbook) is not None and self._journal_hand_rollback(facts):
            facts = load_facts(self.conn, flags, self.runbook, now or server_now(self.conn))
        return facts

    def finish_flag_writes(self, declared: Flags) -> None:
        """Finish the flag writes a console was stopped in the middle of, by what the env file
        holds now: the flags it was writing, so their journal rows are written now (they were
        written, the rows were not); anything else, and nothing was written. Only while no
        console holds the operator lock, since one that does may be writing this moment."""
        try:
            with self.conn.transaction():
                if not scalar(self.conn, "SELECT pg_try_advisory_xact_lock(%s)", (OPERATOR_LOCK_KEY,)):
                    return
                for intent in flag_writes.open_intents(self.conn):
                    if declared != intent.flags_after:
                        flag_writes.finish(self.conn, intent, "not written")
                        continue
                    late = (f"by {self.settings.operator}'s console: the console that wrote the file at "
                            f"{intent.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC stopped before journaling it")
                    for row in intent.journal_rows:
                        journal.record(self.conn, intent.operator, row.action, flags_before=row.flags_before,
                                       flags_after=row.flags_after, runbook=self.runbook.in_force(),
                                       detail={**row.detail, "journaled": late})
                    flag_writes.finish(self.conn, intent, "written, journaled by the next console")
        except psycopg.errors.InsufficientPrivilege:
            return  # a console that may not write leaves it to one that may

    def _journal_hand_rollback(self, seen: Facts) -> bool:
        """Journal a hand edit that turned WRITES off after E as the rollback after write cutover,
        once, by the first console that sees it; a console that may not write leaves it to another."""
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (HAND_ROLLBACK_KEY,))
                last = journal.last_of(self.conn, journal.FLAG_WRITING_ACTIONS)
                if last is None or last.flags_after != seen.recorded_flags:
                    return True  # another console journaled it (or wrote flags) meanwhile
                self.record("rollback-opened", flags_before=seen.recorded_flags, flags_after=seen.flags,
                            detail={"path": "after-write-cutover", "by": "a hand edit of the env file",
                                    "env_file": str(self.settings.env_file)})
            return True
        except psycopg.errors.InsufficientPrivilege:
            return False

    def assess(self, env: EnvFile | None = None) -> Assessment:
        return self.watching(assess(self.facts(env), self.runbook))

    def watching(self, assessment: Assessment) -> Assessment:
        """For a role that may only watch, every step refused with the privilege it lacks."""
        if self.read_only is None:
            return assessment
        steps = tuple(step.model_copy(update={"allowed": False, "reasons": (*step.reasons, self.read_only)})
                      for step in assessment.steps)
        return assessment.model_copy(update={"steps": steps})

    def lock_holder(self) -> lock.LockHolder | None:
        return lock.holder(self.conn)

    @contextmanager
    def operator_lock(self) -> Iterator[None]:
        """Hold the operator lock for a change; re-entrant within one session. A role that may
        only watch is refused here, before anything is written."""
        if self.read_only:
            raise Refused(self.read_only)
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
