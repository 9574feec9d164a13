"""The console's engine side: one `Session`, every engine call in a thread worker, the one
long job at a time, and the demo's traffic switch.

Nothing here draws. Results and failures go back to the app as messages (`messages.py`);
screens reach the controller only through the app's `Console` protocol (`console.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import Worker

from ..errors import CutoverError
from ..ops import transitions
from ..ops.activity import read_activity
from ..ops.overview import gather
from ..reports.models import VerifyReport
from ..rules.steps import JobKind
from ..store import journal
from ..store.session import Session, Settings
from ..work import jobs
from ..work.jobs import ApiTarget, JobPlan
from ..work.verify import VerifyOptions
from .messages import (
    ActivityRead,
    ChangeApplied,
    ChangeKey,
    ChangePlanned,
    JobEnded,
    JournalLoaded,
    OperationFailed,
    SessionOpened,
    StatusGathered,
    TrafficRead,
    TrafficSwitched,
)
from .running_job import JobRun

if TYPE_CHECKING:
    from collections.abc import Iterator

    from textual.app import App

    from .protocols import TrafficPanel

JOURNAL_ROWS = 500
T = TypeVar("T")


def _unless_closed(done: Callable[[T], object], result: T) -> None:
    """A result for a screen the operator has closed meanwhile goes nowhere: its widgets are gone."""
    owner = getattr(done, "__self__", None)
    if isinstance(owner, Screen):
        if owner not in owner.app.screen_stack:  # popped, perhaps not yet taken down
            return
    elif isinstance(owner, Widget) and not owner.is_attached:
        return
    done(result)


class NoSession(CutoverError):
    title = "Not connected"


class Controller:
    def __init__(self, app: App[Any], settings: Settings, *, api_target: ApiTarget | None = None,
                 traffic: TrafficPanel | None = None) -> None:
        self.app = app
        self.settings = settings
        self.api_target = api_target  # the read check's API and cookie; else from the environment
        self.traffic = traffic  # the demo's live traffic switch; None outside the demo
        self.session: Session | None = None
        self.job: JobRun | None = None  # the one long job at a time, running or last finished
        # One connection runs one engine call at a time: two threads' transactions on it would nest.
        self._engine = threading.Lock()

    # -- the session ------------------------------------------------------------------------

    def open_session(self) -> None:
        self._worker(self._open_session, group="session", exclusive=True)

    def _open_session(self) -> None:
        try:
            session = Session(self.settings)
        except CutoverError as error:
            self.app.post_message(OperationFailed(error, fatal=True))
            return
        except psycopg.Error as exc:
            self.app.post_message(OperationFailed(CutoverError(
                f"Could not open the console's records in {self.settings.safe_database_url} "
                f"({type(exc).__name__}); check the database and start again."), fatal=True))
            return
        self.session = session
        self.app.post_message(SessionOpened(session.database_name))

    @property
    def connected(self) -> bool:
        return self.session is not None

    def close(self) -> None:
        """However the console ends: a paused job would never let it exit."""
        if self.job is not None:
            self.job.request_cancel()
        if self.traffic is not None:
            self.traffic.stop()
        if self.session is not None:
            self.session.close()
            self.session = None

    def _session(self) -> Session:
        if self.session is None:
            raise NoSession("The console is not connected to the database; fix the connection "
                            "and press r to try again.")
        return self.session

    # -- engine calls, always in workers ------------------------------------------------------

    def _worker(self, work: Callable[[], None], *, group: str, exclusive: bool = False) -> Worker[None]:
        return self.app.run_worker(work, thread=True, group=group, exclusive=exclusive, exit_on_error=False)

    @contextmanager
    def _reported(self, *, refresh: bool = False) -> Iterator[Session]:
        """Inside a worker: the session, whose failures (typed, or the database's, translated
        at the session's boundary) become one `OperationFailed` message."""
        try:
            session = self._session()
            with self._engine, session.translated():
                yield session
        except CutoverError as error:
            self.app.post_message(OperationFailed(error, refresh=refresh))

    def run(self, call: Callable[[Session], T], done: Callable[[T], object] | None = None, *,
            failed: Callable[[CutoverError], object] | None = None, group: str = "engine",
            exclusive: bool = False, refresh: bool = False, own_session: bool = False) -> None:
        """`call(session)` in a thread worker; `done(result)` then runs on the UI thread. A
        failure becomes one error notification, like every other engine call, and `failed(error)`.
        With `own_session`, the call gets a connection of its own for as long as it runs (a deploy
        may take minutes), so the dashboard's calls need not wait for it."""
        def work() -> None:
            try:
                if own_session:
                    self._session()  # not connected: say so, as every call does
                    with Session(self.settings) as own, own.translated():
                        result = call(own)
                else:
                    session = self._session()
                    with self._engine, session.translated():
                        result = call(session)
            except CutoverError as error:
                self.app.post_message(OperationFailed(error, refresh=refresh))
                if failed is not None:
                    self.app.call_from_thread(_unless_closed, failed, error)
                return
            if done is not None:
                self.app.call_from_thread(_unless_closed, done, result)
        self._worker(work, group=group, exclusive=exclusive)

    def gather(self) -> None:
        def work() -> None:
            with self._reported() as session:
                self.app.post_message(StatusGathered(gather(session)))
        self._worker(work, group="status", exclusive=True)

    def read_activity(self) -> None:
        """For an observer: the lock and another console's job, every second (a few cheap reads)."""
        session = self.session
        if session is None:
            return

        def work() -> None:
            try:
                with self._engine, session.translated():
                    activity = read_activity(session.conn)
            except CutoverError:
                return  # the status refresh says what is wrong, once, not every second
            self.app.post_message(ActivityRead(activity))
        self._worker(work, group="activity", exclusive=True)

    def load_journal(self) -> None:
        def work() -> None:
            with self._reported() as session:
                self.app.post_message(JournalLoaded(journal.entries(session.conn, JOURNAL_ROWS)))
        self._worker(work, group="journal", exclusive=True)

    def plan_change(self, action: ChangeKey, target: str | None) -> None:
        def work() -> None:
            with self._reported() as session:
                if action == "promote":
                    change = transitions.plan_promotion(session, transitions.parse_stage(target or ""))
                elif action == "rollback":
                    change = transitions.plan_rollback(session, keep_dual_write=True)
                else:
                    change = transitions.plan_restore(session)
                self.app.post_message(ChangePlanned(change))
        self._worker(work, group="change", exclusive=True)

    def apply_change(self, change: transitions.FlagChange) -> None:
        def work() -> None:
            with self._reported(refresh=True) as session:
                entry = transitions.apply_change(session, change)
                self.app.post_message(ChangeApplied(change, entry, session.assess()))
        self._worker(work, group="change", exclusive=True)

    # -- the one long job ---------------------------------------------------------------------

    def start_job(self, kind: JobKind, plan: JobPlan, previous: VerifyReport | None) -> JobRun:
        run = self.job = JobRun(kind, plan, previous)
        self._worker(lambda: self._run_job(run), group="job")
        return run

    def _job_call(self, session: Session, run: JobRun) -> jobs.Stored:
        if run.kind == "recon":
            return jobs.recon(session, progress=run.on_recon)
        if run.kind == "backfill":
            return jobs.backfill(session, progress=run.on_backfill, cancel=run.cancel, pause=run.pause)
        if run.kind == "verify-reads":
            return jobs.verify_reads(session, self.api_target or jobs.api_target(session))
        return jobs.verify(session, VerifyOptions(repair=run.kind == "repair"), progress=run.on_verify,
                           cancel=run.cancel, on_check=run.on_check)

    def _run_job(self, run: JobRun) -> None:
        try:
            self._session()  # not connected: say so, as every call does
            # A connection of its own for as long as the job runs: the dashboard's calls share theirs.
            with Session(self.settings) as session, session.translated():
                stored, report = self._job_call(session, run)
        except CutoverError as error:
            run.fail(error.message)
        else:
            run.finish(stored, report)
        with suppress(RuntimeError):  # the operator quit while it wound down: nobody to tell
            self.app.post_message(JobEnded(run))

    # -- the demo's live traffic ----------------------------------------------------------------

    def toggle_traffic(self) -> None:
        switch = self.traffic
        if switch is None:
            return

        def work() -> None:
            try:
                running = switch.toggle()
            except (CutoverError, ValueError) as exc:
                self.app.post_message(OperationFailed(exc if isinstance(exc, CutoverError) else CutoverError(str(exc))))
                return
            self.app.post_message(TrafficSwitched(running, switch.rate, switch.base_url))
            self._read_traffic(switch)
        self._worker(work, group="traffic", exclusive=True)

    def read_traffic(self) -> None:
        switch = self.traffic
        if switch is not None:
            self._worker(lambda: self._read_traffic(switch), group="traffic-figures", exclusive=True)

    def _read_traffic(self, switch: TrafficPanel) -> None:
        stats = switch.stats()
        self.app.post_message(TrafficRead(None if stats is None else (stats, switch.running)))
