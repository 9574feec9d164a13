"""The console's Textual app: one `Session`, opened and used only in worker threads.

Screens display what the app sets on them and post messages up; every engine call
runs here in a worker, and every failure reaches the operator through `show_error`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar, TypeVar

import psycopg
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from .. import journal, transitions
from ..errors import CutoverError
from ..session import Session, Settings
from ..status import gather
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
from .screens.confirm import ConfirmChange
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.journal import JournalScreen

JOURNAL_ROWS = 500
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
    ]

    def __init__(self, settings: Settings, *, target_label: str | None = None,
                 env_label: str | None = None, notice: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.notice = notice
        self.env_label = env_label or str(settings.env_file)
        self.session: Session | None = None
        self.fixed_label = target_label
        self.dashboard = DashboardScreen()
        self.journal_screen = JournalScreen()

    # -- life cycle ---------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self.dashboard)
        self._open_session()

    def on_unmount(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

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

    @contextmanager
    def _reported(self, *, refresh: bool = False) -> Iterator[None]:
        """Inside a worker: a typed or database failure becomes one `OperationFailed` message."""
        try:
            yield
        except CutoverError as error:
            self.post_message(OperationFailed(error, refresh=refresh))
        except psycopg.Error as exc:
            error = self.session.database_error(exc) if self.session else CutoverError(str(exc))
            self.post_message(OperationFailed(error, refresh=refresh))

    def _session(self) -> Session:
        if self.session is None:
            raise NoSession("The console is not connected to the database; fix the connection "
                            "and press r to try again.")
        return self.session

    def run_engine(self, call: Callable[[Session], T], done: Callable[[T], object] | None = None, *,
                   group: str = "engine", exclusive: bool = False, refresh: bool = False) -> Worker[None]:
        """Run `call(session)` in a thread worker; `done(result)` then runs on the UI thread.
        A failure becomes one error notification, like every other engine call."""
        def work() -> None:
            with self._reported(refresh=refresh):
                result = call(self._session())
                if done is not None:
                    self.call_from_thread(done, result)
        return self.run_worker(work, thread=True, group=group, exclusive=exclusive, exit_on_error=False)

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
        self.journal_screen.entries = message.entries

    @on(JournalRequested)
    def _journal_requested(self) -> None:
        if self.session is not None:
            self._load_journal()

    @on(ChangeRequested)
    def _change_requested(self, message: ChangeRequested) -> None:
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
        if self.screen is self.journal_screen:
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

    # -- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        modal = isinstance(self.screen, ModalScreen)
        return not (modal and action in ("dashboard", "journal", "refresh", "help"))

    def action_quit_console(self) -> None:
        self.exit(return_code=0)

    def action_dashboard(self) -> None:
        while self.screen is not self.dashboard and len(self.screen_stack) > 1:
            self.pop_screen()
        self._gather()

    def action_journal(self) -> None:
        if self.screen is not self.journal_screen:
            self.push_screen(self.journal_screen)

    def action_refresh(self) -> None:
        if self.session is None:
            self._open_session()
        elif self.screen is self.journal_screen:
            self._load_journal()
        else:
            self._gather()

    def action_help(self) -> None:
        screen = self.screen
        keys = [(b.binding.key_display or self.get_key_display(b.binding), b.binding.description)
                for b in screen.active_bindings.values() if b.binding.show and b.binding.description]
        keys.append(("^p", "Command palette: every action by name"))
        title = {DashboardScreen: "Dashboard", JournalScreen: "Journal"}.get(type(screen), "Console")
        self.push_screen(HelpScreen(f"Help: {title}", screen.HELP or "", keys))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Dashboard", "Where the cutover stands", self.action_dashboard)
        yield SystemCommand("Journal", "Every recorded action", self.action_journal)
        yield SystemCommand("Refresh", "Read the env file and the database again", self.action_refresh)
        yield SystemCommand("Help", "Keys and purpose of this screen", self.action_help)
        for label, action, target in (("Promote to C", "promote", "C"), ("Promote to D", "promote", "D"),
                                      ("Promote to E", "promote", "E"), ("Promote to E'", "promote", "E'"),
                                      ("Roll back", "rollback", None), ("Restore the flags", "restore", None)):
            yield SystemCommand(label, "Shows the env diff and asks before writing",
                                lambda a=action, t=target: self._plan_change(a, t))


def make_app(settings: Settings, *, target_label: str | None = None,
             env_label: str | None = None, notice: str | None = None) -> CutoverApp:
    """The console for `settings`. `target_label` replaces the database/env line and `env_label`
    the env file path in confirmations (snapshots use them to hide random test names);
    `notice` is a line shown under it (the demo's stand-in API and its cookie)."""
    return CutoverApp(settings, target_label=target_label, env_label=env_label, notice=notice)


def run_tui(settings: Settings, notice: str | None = None) -> int:
    """Run the console in the terminal until the operator quits; the exit code."""
    app = make_app(settings, notice=notice)
    app.run()
    return app.return_code or 0
