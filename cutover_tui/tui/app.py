"""The console's Textual app: one `Session`, opened and used only in worker threads.

Screens display what the app sets on them and post messages up; every engine call
runs here in a worker, and every failure reaches the operator through `show_error`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import ClassVar, TypeVar

import psycopg
from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from rich.text import Text
from textual.worker import Worker, WorkerState

from .. import jobs, journal, transitions
from ..archive import plan_archive, run_archive
from ..demo.traffic import TrafficSwitch
from ..errors import CutoverError
from ..jobs import ApiTarget, JobKind, JobPlan
from ..reports import VerifyReport
from ..session import Session, Settings
from ..status import gather
from ..verify import VerifyOptions
from .idle_collector import IdleCollector
from .job_run import TITLES, JobRun
from .messages import (
    ChangeApplied,
    ChangePlanned,
    ChangeRequested,
    JournalLoaded,
    JournalRequested,
    OperationFailed,
    SessionOpened,
    StatusGathered,
)
from .screens.archive import ArchiveConfirm
from .screens.confirm import Confirm, ConfirmChange
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.job import JobScreen
from .screens.journal import JournalScreen
from .screens.report import ReportScreen
from .screens.report_diff import ReportDiffScreen
from .screens.reports import ReportsScreen
from .screens.rollback import RollbackWizard
from .text import literal
from .watchers import forget_closed_watchers

JOURNAL_ROWS = 500
TRAFFIC_SECONDS = 1.0
STATUS_SECONDS = 15.0
COLLECTOR_SECONDS = 0.25
T = TypeVar("T")


class NoSession(CutoverError):
    title = "Not connected"


class CutoverApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "Cutover console"
    SUB_TITLE = "Accounts V2"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit_console", "Quit", priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("d", "dashboard", "Dashboard"),
        Binding("j", "journal", "Journal"),
        Binding("r", "refresh", "Refresh"),
        Binding("o", "reports", "Reports"),
        Binding("J", "watch_job", "Job"),
        Binding("t", "traffic", "Traffic on/off"),
    ]

    def __init__(self, settings: Settings, *, target_label: str | None = None,
                 env_label: str | None = None, notice: str | None = None,
                 api_target: ApiTarget | None = None, traffic: TrafficSwitch | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.api_target = api_target  # the read check's API and cookie; else from the environment
        self.traffic = traffic  # the demo's live traffic switch; None outside the demo
        self.job: JobRun | None = None  # the one long job at a time, running or last finished
        self.notice = notice
        self.env_label = env_label or str(settings.env_file)
        self.session: Session | None = None
        self.fixed_label = target_label
        self.dashboard = DashboardScreen()
        self.collector = IdleCollector()

    # -- life cycle ---------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self.dashboard)
        self._open_session()
        # Gates move with time (the confidence period) and with other operators' changes.
        self.set_interval(STATUS_SECONDS, self._refresh_quietly)
        if self.traffic is not None:
            self.set_interval(TRAFFIC_SECONDS, self._traffic_figures)
        self.collector.start()
        self.set_interval(COLLECTOR_SECONDS, self._between_keys)

    def on_unmount(self) -> None:
        self.collector.stop()
        if self.job is not None:  # however the console ends: a paused job would never let it exit
            self.job.request_cancel()
        if self.traffic is not None:
            self.traffic.stop()
        if self.session is not None:
            self.session.close()
            self.session = None

    def _between_keys(self) -> None:
        forget_closed_watchers(self)  # the title watchers of every screen's Header
        self.collector.tick()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent) and not event.is_forwarded:
            self.collector.saw_input()
        await super().on_event(event)

    @work(thread=True, exclusive=True, exit_on_error=False, group="session")
    def _open_session(self) -> None:
        try:
            session = Session(self.settings)
        except CutoverError as error:
            self.post_message(OperationFailed(error, fatal=True))
            return
        except psycopg.Error as exc:
            self.post_message(OperationFailed(CutoverError(
                f"Could not open the console's records in {self.settings.safe_database_url} "
                f"({type(exc).__name__}); check the database and start again."), fatal=True))
            return
        self.session = session
        label = self.fixed_label or (f"{self.settings.operator} @ database {session.database_name} "
                                     f"({self.settings.safe_database_url}) · env {self.env_label}")
        self.post_message(SessionOpened(label + (f"\n{self.notice}" if self.notice else "")))

    def on_session_opened(self, message: SessionOpened) -> None:
        self.dashboard.label = message.label
        self.dashboard.problem = None
        self._gather()

    # -- engine work, always in workers ---------------------------------------------

    def _as_error(self, exc: CutoverError | psycopg.Error) -> CutoverError:
        if isinstance(exc, CutoverError):
            return exc
        return self.session.database_error(exc) if self.session else CutoverError(str(exc))

    @contextmanager
    def _reported(self, *, refresh: bool = False) -> Iterator[None]:
        """Inside a worker: a typed or database failure becomes one `OperationFailed` message."""
        try:
            yield
        except (CutoverError, psycopg.Error) as exc:
            self.post_message(OperationFailed(self._as_error(exc), refresh=refresh))

    def _session(self) -> Session:
        if self.session is None:
            raise NoSession("The console is not connected to the database; fix the connection "
                            "and press r to try again.")
        return self.session

    def run_engine(self, call: Callable[[Session], T], done: Callable[[T], object] | None = None, *,
                   failed: Callable[[CutoverError], object] | None = None, group: str = "engine",
                   exclusive: bool = False, refresh: bool = False) -> Worker[None]:
        """Run `call(session)` in a thread worker; `done(result)` then runs on the UI thread.
        A failure becomes one error notification, like every other engine call, and `failed(error)`."""
        def work() -> None:
            try:
                result = call(self._session())
            except (CutoverError, psycopg.Error) as exc:
                error = self._as_error(exc)
                self.post_message(OperationFailed(error, refresh=refresh))
                if failed is not None:
                    self.call_from_thread(failed, error)
                return
            if done is not None:
                self.call_from_thread(done, result)
        return self.run_worker(work, thread=True, group=group, exclusive=exclusive, exit_on_error=False)

    def refresh_status(self) -> None:
        self._gather()

    def _refresh_quietly(self) -> None:
        if self.session is not None:
            self._gather()

    @work(thread=True, exclusive=True, exit_on_error=False, group="status")
    def _gather(self) -> None:
        with self._reported():
            self.post_message(StatusGathered(gather(self._session())))

    @work(thread=True, exclusive=True, exit_on_error=False, group="journal")
    def _load_journal(self) -> None:
        with self._reported():
            self.post_message(JournalLoaded(journal.entries(self._session().conn, JOURNAL_ROWS)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="change")
    def _plan_change(self, action: str, target: str | None) -> None:
        with self._reported():
            session = self._session()
            if action == "promote":
                change = transitions.plan_promotion(session, transitions.parse_stage(target or ""))
            elif action == "rollback":
                change = transitions.plan_rollback(session, keep_dual_write=True)
            else:
                change = transitions.plan_restore(session)
            self.post_message(ChangePlanned(change))

    @work(thread=True, exclusive=True, exit_on_error=False, group="change")
    def _apply_change(self, change: transitions.FlagChange) -> None:
        with self._reported(refresh=True):
            self.post_message(ChangeApplied(change, transitions.apply_change(self._session(), change)))

    # -- messages from workers and screens ---------------------------------------------

    def on_status_gathered(self, message: StatusGathered) -> None:
        self.dashboard.problem = None
        self.dashboard.status = message.status

    def on_journal_loaded(self, message: JournalLoaded) -> None:
        if isinstance(self.screen, JournalScreen):  # the operator may have left it meanwhile
            self.screen.entries = message.entries

    @on(JournalRequested)
    def _journal_requested(self) -> None:
        if self.session is not None:
            self._load_journal()

    @on(ChangeRequested)
    def _change_requested(self, message: ChangeRequested) -> None:
        if not self._job_in_the_way():
            self._plan_change(message.action, message.target)

    def on_change_planned(self, message: ChangePlanned) -> None:
        change = message.change
        if isinstance(self.screen, ModalScreen):  # a second key press while one is being asked
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._apply_change(change)
            else:
                self.notify("Nothing was changed.", title=change.describe(), timeout=4)

        self.push_screen(ConfirmChange(change, str(self.settings.env_file), self.env_label), answered)

    def on_change_applied(self, message: ChangeApplied) -> None:
        self.notify(f"Written {self.env_label}; journal entry {message.entry.id}.",
                    title=message.change.describe(), timeout=6)
        self._gather()
        if isinstance(self.screen, JournalScreen):
            self._load_journal()

    def on_operation_failed(self, message: OperationFailed) -> None:
        self.show_error(message.error, fatal=message.fatal)
        if message.refresh:
            self._gather()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.show_error(CutoverError(f"Unexpected failure: {type(error).__name__}: {error}. "
                                         "Nothing more was done; refresh with r and look again."))

    def show_error(self, error: CutoverError, *, fatal: bool = False) -> None:
        """The one place a failure becomes something the operator sees."""
        if fatal:
            self.dashboard.problem = f"{error.message} Press r to try again."
            self.dashboard.label = "not connected"
        self.notify(error.message, title=error.title, severity="error", timeout=10, markup=False)

    # -- long jobs ------------------------------------------------------------------------

    def _job_in_the_way(self) -> bool:
        """True (and says so) while a job runs: nothing else may change underneath it."""
        if self.job is None or not self.job.running:
            return False
        self.notify(f"{self.job.title} is running; wait for it, or cancel it (J, then x), first.",
                    title="One thing at a time", severity="warning", timeout=6)
        return True

    def open_job(self, kind: JobKind) -> None:
        """The job's screen: the running or last run of `kind`, else a fresh plan for it."""
        if self.job is not None and self.job.running and self.job.kind != kind:
            self._job_in_the_way()
            return
        run = self.job if self.job is not None and self.job.kind == kind and self.job.running else None
        self.push_screen(JobScreen(kind, run))

    def start_job(self, kind: JobKind, plan: JobPlan, previous: VerifyReport | None) -> JobRun | None:
        if self._job_in_the_way():
            return None
        run = self.job = JobRun(kind, plan, previous)
        self.run_worker(lambda: self._run_job(run), thread=True, group="job", exit_on_error=False)
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
            stored, report = self._job_call(self._session(), run)
        except (CutoverError, psycopg.Error) as exc:
            run.fail(self._as_error(exc).message)
        else:
            run.finish(stored, report)
        with suppress(RuntimeError):  # the operator quit while it wound down: nobody to tell
            self.call_from_thread(self._job_ended, run)

    def _job_ended(self, run: JobRun) -> None:
        if run.error:
            self.notify(run.error, title=f"{run.title} failed", severity="error", timeout=10, markup=False)
        elif run.stored is not None:
            self.notify(f"Report {run.stored.id}: {'passed' if run.stored.ok else 'FAILED'}.",
                        title=f"{run.title} {run.state}", severity="information" if run.stored.ok else "warning",
                        timeout=8)
        self._gather()

    def action_reports(self) -> None:
        if not isinstance(self.screen, ReportsScreen):
            self.push_screen(ReportsScreen())

    def action_watch_job(self) -> None:
        if self.job is None:
            self.notify("No job has run in this console yet.", timeout=4)
        elif not (isinstance(self.screen, JobScreen) and self.screen.run is self.job):
            self.push_screen(JobScreen(self.job.kind, self.job))

    # -- the demo's live traffic ------------------------------------------------------------

    def action_traffic(self) -> None:
        switch = self.traffic
        if switch is None:
            return

        def toggle() -> None:
            try:
                running = switch.toggle()
            except (CutoverError, ValueError) as exc:
                self.post_message(OperationFailed(exc if isinstance(exc, CutoverError) else CutoverError(str(exc))))
                return
            self.call_from_thread(self.notify, f"Demo traffic {'on' if running else 'off'}: "
                                  f"{switch.rate:g} requests/s through {switch.base_url}." if running
                                  else "Demo traffic off.", timeout=4)
            self._traffic_figures()
        self.run_worker(toggle, thread=True, group="traffic", exclusive=True, exit_on_error=False)

    def _traffic_figures(self) -> None:
        switch = self.traffic
        if switch is None:
            return

        def read() -> None:
            stats = switch.stats()
            self.call_from_thread(setattr, self.dashboard, "traffic", None if stats is None else (stats, switch.running))
        self.run_worker(read, thread=True, group="traffic-figures", exclusive=True, exit_on_error=False)

    # -- stage A, the rollback window, the archive, the wizard ----------------------------------

    def open_migrate(self) -> None:
        if self._job_in_the_way():
            return

        def planned(plan) -> None:
            if not plan.to_apply:
                self.notify(plan.nothing_to_apply(), timeout=6)
                return
            body = Text("\n\n").join(literal(f"-- {f.id} (sha256 {f.checksum})\n{f.sql}") for f in plan.to_apply)
            self.push_screen(Confirm(f"Stage A: apply {', '.join(f.id for f in plan.to_apply)}",
                                     f"from {self.settings.runbook.paths.sql_dir}, each file in one transaction:",
                                     body, "Apply it?  y = yes   n = no"),
                             lambda yes: self._apply_stage_a(plan) if yes else None)
        self.run_engine(transitions.plan_stage_a, planned, group="change")

    def _apply_stage_a(self, plan) -> None:
        self.run_engine(lambda session: transitions.apply_stage_a(session, plan),
                        lambda applied: self._changed(f"Applied {', '.join(applied)}.", "Stage A"),
                        group="change", refresh=True)

    def _changed(self, text: str, title: str) -> None:
        self.notify(text, title=title, timeout=6)
        self._gather()

    def open_close_window(self) -> None:
        if self._job_in_the_way():
            return
        runbook = self.settings.runbook
        body = Text(f"After this the console no longer offers a rollback as routine: Stage F (archive) opens "
                    f"once the last {runbook.gates.passing_verifies_before_archive} verifies in E' passed. It changes no flag.")
        self.push_screen(Confirm("Close the rollback window", "recorded in the journal:", body,
                                 "Close it?  y = yes   n = no"),
                         lambda yes: self.run_engine(
                             transitions.close_rollback_window,
                             lambda entry: self._changed(f"Journal entry {entry.id}.", "Rollback window closed"),
                             group="change", refresh=True) if yes else None)

    def open_archive(self) -> None:
        if self._job_in_the_way():
            return

        def planned(plan) -> None:
            self.push_screen(ArchiveConfirm(plan), lambda typed: self._archive(plan, typed))
        self.run_engine(plan_archive, planned, group="change")

    def _archive(self, plan, typed: str | None) -> None:
        if typed is None:
            self.notify("Nothing was archived.", timeout=4)
            return
        self.run_engine(lambda session: run_archive(session, plan, typed),
                        lambda entry: self._changed(f"Archived the legacy tables of {plan.database}; "
                                                    f"journal entry {entry.id}.", "Stage F done"),
                        group="change", refresh=True)

    def open_rollback(self) -> None:
        if not self._job_in_the_way():
            self.push_screen(RollbackWizard(self.env_label))

    # -- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "traffic":
            return self.traffic is not None
        modal = isinstance(self.screen, ModalScreen)
        return not (modal and action in ("dashboard", "journal", "refresh", "help", "watch_job", "traffic", "reports"))

    def action_quit_console(self) -> None:
        if self.job is not None:
            self.job.request_cancel()  # stops at the next batch boundary with its checkpoint kept
        self.exit(return_code=0)

    def action_dashboard(self) -> None:
        while self.screen is not self.dashboard and len(self.screen_stack) > 1:
            self.pop_screen()
        self._gather()

    def action_journal(self) -> None:
        # A new screen each time: Textual removes a popped screen, timers and all.
        if not isinstance(self.screen, JournalScreen):
            self.push_screen(JournalScreen())

    def action_refresh(self) -> None:
        if self.session is None:
            self._open_session()
        elif isinstance(self.screen, JournalScreen):
            self._load_journal()
        else:
            self._gather()

    def action_help(self) -> None:
        screen = self.screen
        keys = [(b.binding.key_display or self.get_key_display(b.binding), b.binding.description)
                for b in screen.active_bindings.values() if b.binding.show and b.binding.description]
        keys.append(("^p", "Command palette: every action by name"))
        title = {DashboardScreen: "Dashboard", JournalScreen: "Journal", RollbackWizard: "Rollback wizard",
                 ReportsScreen: "Reports", ReportScreen: "Report", ReportDiffScreen: "Two reports compared",
                 }.get(type(screen)) or TITLES.get(getattr(screen, "kind", ""), "Console")
        self.push_screen(HelpScreen(f"Help: {title}", screen.HELP or "", keys))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Dashboard", "Where the cutover stands", self.action_dashboard)
        yield SystemCommand("Journal", "Every recorded action", self.action_journal)
        yield SystemCommand("Refresh", "Read the env file and the database again", self.action_refresh)
        yield SystemCommand("Help", "Keys and purpose of this screen", self.action_help)
        for label, action, target in (("Promote to C", "promote", "C"), ("Promote to D", "promote", "D"),
                                      ("Promote to E", "promote", "E"), ("Promote to E'", "promote", "E'"),
                                      ("Restore the flags", "restore", None)):
            yield SystemCommand(label, "Shows the env diff and asks before writing",
                                lambda a=action, t=target: self.post_message(ChangeRequested(a, t)))
        yield SystemCommand("Roll back", "The rollback wizard: path, env diff, write, verify", self.open_rollback)
        yield SystemCommand("Stage A: migrate", "Shows the SQL and asks before applying it", self.open_migrate)
        for kind in ("recon", "backfill", "verify", "repair", "verify-reads"):
            yield SystemCommand(TITLES[kind], "Shows what it will do; enter starts it",
                                lambda k=kind: self.open_job(k))
        yield SystemCommand("Watch the job", "The running or last job", self.action_watch_job)
        yield SystemCommand("Reports", "Saved reports, a report file, two compared", self.action_reports)
        yield SystemCommand("Close the rollback window", "Asks first; journaled", self.open_close_window)
        yield SystemCommand("Stage F: archive", "Shows the SQL; type the database name to run it", self.open_archive)


def make_app(settings: Settings, *, target_label: str | None = None,
             env_label: str | None = None, notice: str | None = None,
             api_target: ApiTarget | None = None, traffic: TrafficSwitch | None = None) -> CutoverApp:
    """The console for `settings`. `target_label` replaces the database/env line and `env_label`
    the env file path in confirmations (snapshots use them to hide random test names);
    `notice` is a line shown under it (the demo's stand-in API and its cookie)."""
    return CutoverApp(settings, target_label=target_label, env_label=env_label, notice=notice,
                      api_target=api_target, traffic=traffic)


def run_tui(settings: Settings, notice: str | None = None, api_target: ApiTarget | None = None,
            traffic: TrafficSwitch | None = None) -> int:
    """Run the console in the terminal until the operator quits; the exit code."""
    app = make_app(settings, notice=notice, api_target=api_target, traffic=traffic)
    app.run()
    return app.return_code or 0
