"""The console's Textual app: screens, keys, dialogs and notifications.

The engine side (the session, every engine call in a worker, the running job) is the
`Controller`; it answers with messages, handled here. Screens ask through the `Console`
protocol this app implements, and every failure reaches the operator through `show_error`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import ClassVar, TypeVar

from textual import actions, events, on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import Notification, Notify
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from ..display import one_line, visible
from ..errors import CutoverError
from ..ops import transitions
from ..reports.models import VerifyReport
from ..rules import steps
from ..rules.matrix import Assessment
from ..rules.steps import JobKind
from ..store.session import SERVED_READ_ONLY, Session, Settings
from ..work.jobs import ApiTarget, JobPlan
from .compat.toasts import show_newest
from .compat.watchers import forget_closed_watchers
from .controller import Controller
from .dialogs import StepDialogs
from .idle_collector import IdleCollector
from .messages import (
    ActivityRead,
    ChangeApplied,
    ChangePlanned,
    ChangeRequested,
    JobEnded,
    JournalLoaded,
    JournalRequested,
    OperationFailed,
    SessionOpened,
    StatusGathered,
    TrafficRead,
    TrafficSwitched,
)
from .protocols import TrafficPanel
from .running_job import JobRun
from .screens.confirm import ConfirmChange
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.job import JobScreen
from .screens.journal import JournalScreen
from .screens.remedies import RemediesScreen
from .screens.report import ReportScreen
from .screens.report_diff import ReportDiffScreen
from .screens.reports import ReportsScreen
from .screens.rollback import RollbackWizard
from .step_keys import SHORT_LABELS, STEP_KEYS
from .watch import ExternalChanges

TRAFFIC_SECONDS = 1.0
STATUS_SECONDS = 15.0
COLLECTOR_SECONDS = 0.25
ACTIVITY_SECONDS = 1.0  # an observer sees another console's job move within a second or two
# Below either size the console is compact (app.tcss): sections titled by one line instead of boxed,
# the target and the demo's notice one line each, one notification at a time in a strip at the top.
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 30
TOASTS, COMPACT_TOASTS = 2, 1  # notifications on screen at once, the newest; `M` lists them all
MESSAGES = 100  # notifications kept for `M`
T = TypeVar("T")


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
        Binding("M", "messages", "Messages", show=False),
    ]
    SHORT_LABELS = SHORT_LABELS | {"Traffic on/off": "Traffic"}

    def __init__(self, settings: Settings, *, target_label: str | None = None,
                 env_label: str | None = None, notice: str | None = None,
                 api_target: ApiTarget | None = None, traffic: TrafficPanel | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.controller = Controller(self, settings, api_target=api_target, traffic=traffic)
        self.dialogs = StepDialogs(self)
        self.notice = notice
        self.env_label = env_label or str(settings.env_file)
        self.env_path = str(settings.env_file)
        self.fixed_label = target_label
        self.dashboard = DashboardScreen()
        self._watched: JobScreen | None = None  # the running job's screen, kept from one J to the next
        self.collector = IdleCollector()
        self.external = ExternalChanges(settings.env_file, settings.database_url, self._changed_elsewhere)
        self.observer = settings.observer
        self.messages: deque[Notification] = deque(maxlen=MESSAGES)  # every notification, newest last
        if (note := settings.runbook.rehearsal_note()) is not None:
            self.sub_title = f"{self.SUB_TITLE} · {note}"
        if self.observer:
            self.title = f"{self.TITLE} · observer"

    @property
    def api_target(self) -> ApiTarget | None:
        return self.controller.api_target

    @property
    def job(self) -> JobRun | None:
        return self.controller.job

    # -- life cycle ---------------------------------------------------------------

    def on_mount(self) -> None:
        self._fit(self.size.width, self.size.height)
        self.push_screen(self.dashboard)
        self.controller.open_session()
        # Gates move with time (the confidence period) and with other operators' changes.
        self.set_interval(STATUS_SECONDS, self._refresh_quietly)
        self.external.start()  # another operator's change or a hand edit shows within a second
        if self.controller.traffic is not None:
            self.set_interval(TRAFFIC_SECONDS, self.controller.read_traffic)
        self.collector.start()
        self.set_interval(COLLECTOR_SECONDS, self._between_keys)
        if self.observer:
            self.set_interval(ACTIVITY_SECONDS, self.controller.read_activity)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        self.set_class(width < COMPACT_WIDTH or height < COMPACT_HEIGHT, "-compact")

    @property
    def compact(self) -> bool:
        return self.has_class("-compact")

    def on_unmount(self) -> None:
        self.external.stop()
        self.collector.stop()
        self.controller.close()

    def _changed_elsewhere(self) -> None:
        with suppress(RuntimeError):  # the console is closing: nobody to show it to
            self.call_from_thread(self._refresh_quietly)

    def _between_keys(self) -> None:
        forget_closed_watchers(self)  # the title watchers of every screen's Header
        self.collector.tick()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent) and not event.is_forwarded:
            self.collector.saw_input()
        await super().on_event(event)

    def on_session_opened(self, message: SessionOpened) -> None:
        label = self.fixed_label or (f"{self.settings.operator} @ database {message.database_name} "
                                     f"({self.settings.safe_database_url}) · env {self.env_label}")
        self.dashboard.label = label
        self.dashboard.notice = self.notice
        self.dashboard.problem = None
        self.controller.gather()
        if self.observer:
            self.controller.read_activity()  # the lock in the header now, not a second later

    # -- the Console protocol: what screens may ask ----------------------------------------------

    def run_engine(self, call: Callable[[Session], T], done: Callable[[T], object] | None = None, *,
            failed: Callable[[CutoverError], object] | None = None, group: str = "engine",
            exclusive: bool = False, refresh: bool = False, own_session: bool = False) -> None:
        self.controller.run(call, done, failed=failed, group=group, exclusive=exclusive, refresh=refresh,
                            own_session=own_session)

    def refresh_status(self) -> None:
        self.controller.gather()

    def _refresh_quietly(self) -> None:
        if self.controller.connected:
            self.controller.gather()

    # -- messages from workers and screens ---------------------------------------------

    def on_status_gathered(self, message: StatusGathered) -> None:
        self.dashboard.problem = None
        self.dashboard.status = message.status

    def on_activity_read(self, message: ActivityRead) -> None:
        activity = message.activity
        holder = activity.lock_holder
        who = visible(one_line(holder.operator)) if holder else None
        self.title = f"{self.TITLE} · observer · " + (f"lock: {who}" if who else "lock free")
        if self.dashboard.activity is not None and activity.job is None:
            self.controller.gather()  # the job ended: its report is the last run now
        self.dashboard.activity = activity.job

    def _served(self, title: str) -> bool:
        """True (and says so, as a refused step does) when this console is served read-only."""
        if self.observer:
            self.notify(SERVED_READ_ONLY, title=f"{title} is refused", severity="error", timeout=10, markup=False)
        return self.observer

    def on_journal_loaded(self, message: JournalLoaded) -> None:
        if isinstance(self.screen, JournalScreen):  # the operator may have left it meanwhile
            self.screen.entries = message.entries

    @on(JournalRequested)
    def _journal_requested(self) -> None:
        if self.controller.connected:
            self.controller.load_journal()

    @on(ChangeRequested)
    def _change_requested(self, message: ChangeRequested) -> None:
        title = "Promote" if message.action == "promote" else steps.BY_NAME[
            "rollback" if message.action == "rollback" else "restore-flags"].title
        if not self._served(title) and not self._job_in_the_way():
            self.controller.plan_change(message.action, message.target)

    def on_change_planned(self, message: ChangePlanned) -> None:
        change = message.change
        if isinstance(self.screen, ModalScreen):  # a second key press while one is being asked
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.controller.apply_change(change)
            else:
                self.notify("Nothing was changed.", title=change.describe(), timeout=4)

        self.push_screen(ConfirmChange(change, self.env_path, self.env_label), answered)

    def on_change_applied(self, message: ChangeApplied) -> None:
        self.notify(transitions.written_message(message.entry, self.env_label),
                    title=message.change.describe(), timeout=6)
        self.controller.gather()
        self.dialogs.deploy(message.assessment)  # the API reads its flags only at start: the write is half the change
        if isinstance(self.screen, JournalScreen):
            self.controller.load_journal()

    def on_operation_failed(self, message: OperationFailed) -> None:
        self.show_error(message.error, fatal=message.fatal)
        if message.refresh:
            self.controller.gather()

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
        job = self.controller.job
        if job is None or not job.running:
            return False
        self.notify(f"{job.title} is running; wait for it, or cancel it (J, then x), first.",
                    title="One thing at a time", severity="warning", timeout=6)
        return True

    def open_job(self, kind: JobKind) -> None:
        """The job's screen: the running or last run of `kind`, else a fresh plan for it."""
        job = self.controller.job
        if self._served(steps.job(kind).title):
            return
        if job is not None and job.running and job.kind != kind:
            self._job_in_the_way()
            return
        if job is not None and job.kind == kind and job.running:
            self.push_screen(self._job_screen(job))
        else:
            self.push_screen(JobScreen(kind))

    def start_job(self, kind: JobKind, plan: JobPlan, previous: VerifyReport | None) -> JobRun | None:
        if self._served(steps.job(kind).title) or self._job_in_the_way():
            return None
        return self.controller.start_job(kind, plan, previous)

    def on_job_ended(self, message: JobEnded) -> None:
        run = message.run
        if run.error:
            self.notify(run.error, title=f"{run.title} failed", severity="error", timeout=10, markup=False)
        elif run.stored is not None:
            self.notify(f"Report {run.stored.id}: {'passed' if run.stored.ok else 'FAILED'}.",
                        title=f"{run.title} {run.state}", severity="information" if run.stored.ok else "warning",
                        timeout=8)
        self.controller.gather()

    def action_reports(self) -> None:
        if not isinstance(self.screen, ReportsScreen):
            self.push_screen(ReportsScreen())

    def action_watch_job(self) -> None:
        job = self.controller.job
        if job is None:
            self.notify("No job has run in this console yet.", timeout=4)
        elif not (isinstance(self.screen, JobScreen) and self.screen.run is job):
            self.push_screen(self._job_screen(job))

    def _job_screen(self, job: JobRun) -> JobScreen:
        """The job's screen, kept (installed) while it is the job last watched: composing it anew at
        each J was the dearest key while a job ran (BENCHMARKS.md). A new job's screen takes its
        place once the old one is off the screen stack; one still on it is not pushed twice."""
        kept = self._watched
        if kept is not None and not any(kept is s for s in self.screen_stack):
            if kept.run is job:
                return kept
            self.uninstall_screen(kept)
            kept.remove()
            self._watched = None
        screen = JobScreen(job.kind, job)
        if self._watched is None:
            self.install_screen(screen, f"job-{id(job)}")
            self._watched = screen
        return screen

    # -- the demo's live traffic ------------------------------------------------------------

    def action_traffic(self) -> None:
        self.controller.toggle_traffic()

    def on_traffic_switched(self, message: TrafficSwitched) -> None:
        self.notify(f"Demo traffic on: {message.rate:g} requests/s through {message.base_url}."
                    if message.running else "Demo traffic off.", timeout=4)

    def on_traffic_read(self, message: TrafficRead) -> None:
        self.dashboard.traffic = message.figures

    # -- the one-off steps, each asked in a dialog first (dialogs.py) --------------------------------

    def open_migrate(self) -> None:
        if not self._served(steps.BY_NAME["migrate"].title) and not self._job_in_the_way():
            self.dialogs.migrate()

    def open_close_window(self) -> None:
        if not self._served(steps.BY_NAME["close-rollback-window"].title) and not self._job_in_the_way():
            self.dialogs.close_window()

    def open_archive(self) -> None:
        if not self._served(steps.BY_NAME["archive"].title) and not self._job_in_the_way():
            self.dialogs.archive()

    def open_remedies(self) -> None:
        """The anomalies' remedies (they write legacy: refused while a job runs, and to observers)."""
        if not self._job_in_the_way() and not isinstance(self.screen, RemediesScreen):
            self.push_screen(RemediesScreen())

    def open_deploy(self, assessment: Assessment | None = None) -> None:
        """Deploy the declared flags, as `assessment` (else the dashboard's) last saw them; the
        engine checks the gate again."""
        status = self.dashboard.status
        assessment = assessment or (status.assessment if status is not None else None)
        if assessment is not None and not self._served(steps.BY_NAME["deploy"].title) and not self._job_in_the_way():
            self.dialogs.deploy(assessment)

    def open_rollback(self) -> None:
        if not self._served(steps.BY_NAME["rollback"].title) and not self._job_in_the_way():
            self.push_screen(RollbackWizard(self.env_label))

    def changed(self, text: str, title: str) -> None:
        """A one-off step is done: say so, and show where the cutover stands now."""
        self.notify(text, title=title, timeout=6)
        self.controller.gather()

    # -- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "traffic":
            return self.controller.traffic is not None
        modal = isinstance(self.screen, ModalScreen)
        return not (modal and action in ("dashboard", "journal", "refresh", "help", "watch_job", "traffic", "reports",
                                         "messages"))

    def action_quit_console(self) -> None:
        if self.controller.job is not None:
            self.controller.job.request_cancel()  # stops at the next batch boundary with its checkpoint kept
        self.exit(return_code=0)

    def _on_notify(self, event: Notify) -> None:
        """Every notification is kept for `M`; only the newest few are shown (compat/toasts.py)."""
        event.prevent_default()  # Textual's own would show them all
        self.messages.append(event.notification)
        show_newest(self, event.notification, COMPACT_TOASTS if self.compact else TOASTS)

    def action_messages(self) -> None:
        """Every notification of this session in full, newest first."""
        def line(note: Notification) -> str:
            title = f"{note.title}: " if note.title else ""
            return f"{datetime.fromtimestamp(note.raised_at):%H:%M:%S}  {note.severity:<11} {title}{note.message}"
        text = "\n".join(line(note) for note in reversed(self.messages)) or "No messages yet."
        self.push_screen(HelpScreen("Messages, newest first", text, [], closing="escape closes the messages"))

    def action_dashboard(self) -> None:
        while self.screen is not self.dashboard and len(self.screen_stack) > 1:
            self.pop_screen()
        self.controller.gather()

    def action_journal(self) -> None:
        # A new screen each time: Textual removes a popped screen, timers and all.
        if not isinstance(self.screen, JournalScreen):
            self.push_screen(JournalScreen())

    def action_refresh(self) -> None:
        if not self.controller.connected:
            self.controller.open_session()
        elif isinstance(self.screen, JournalScreen):
            self.controller.load_journal()
        else:
            self.controller.gather()

    def action_help(self) -> None:
        screen = self.screen
        keys = [(b.binding.key_display or self.get_key_display(b.binding), b.binding.description)
                for b in screen.active_bindings.values() if b.binding.show and b.binding.description]
        keys.append(("M", "Every message of this session in full, newest first"))
        keys.append(("^p", "Command palette: every action by name"))
        title = {DashboardScreen: "Dashboard", JournalScreen: "Journal", RollbackWizard: "Rollback wizard",
                 ReportsScreen: "Reports", ReportScreen: "Report", ReportDiffScreen: "Two reports compared",
                 }.get(type(screen))
        if title is None:
            step = steps.BY_NAME.get(getattr(screen, "kind", ""))
            title = step.title if step is not None else "Console"
        self.push_screen(HelpScreen(f"Help: {title}", screen.HELP or "", keys))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Dashboard", "Where the cutover stands", self.action_dashboard)
        yield SystemCommand("Journal", "Every recorded action", self.action_journal)
        yield SystemCommand("Refresh", "Read the env file and the database again", self.action_refresh)
        yield SystemCommand("Help", "Keys and purpose of this screen", self.action_help)
        yield SystemCommand("Messages", "Every notification of this session in full", self.action_messages)
        for key in STEP_KEYS:  # each step as its dashboard key runs it
            _, name, parameters = actions.parse(key.action)
            yield SystemCommand(key.info.title, key.palette,
                                partial(getattr(self.dashboard, f"action_{name}"), *parameters))
        yield SystemCommand("Watch the job", "The running or last job", self.action_watch_job)
        yield SystemCommand("Reports", "Saved reports, a report file, two compared", self.action_reports)


def make_app(settings: Settings, *, target_label: str | None = None,
             env_label: str | None = None, notice: str | None = None,
             api_target: ApiTarget | None = None, traffic: TrafficPanel | None = None) -> CutoverApp:
    """The console for `settings`. `target_label` replaces the database/env line and `env_label`
    the env file path in confirmations (snapshots use them to hide random test names);
    `notice` is a line shown under it (the demo's stand-in API and its cookie)."""
    return CutoverApp(settings, target_label=target_label, env_label=env_label, notice=notice,
                      api_target=api_target, traffic=traffic)


def run_tui(settings: Settings, notice: str | None = None, api_target: ApiTarget | None = None,
            traffic: TrafficPanel | None = None) -> int:
    """Run the console in the terminal until the operator quits; the exit code."""
    app = make_app(settings, notice=notice, api_target=api_target, traffic=traffic)
    app.run()
    return app.return_code or 0
