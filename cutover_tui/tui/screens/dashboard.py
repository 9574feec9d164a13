"""The dashboard: where the cutover stands, the flags, the next steps; the keys that move the flags.

It only displays what the app sets on it (`status`, `problem`, `label`) and posts
`ChangeRequested` upwards; the app does the engine work in workers.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import actions
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.events import Key, Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Header, Static

from ...ops.activity import RunningJob
from ...ops.overview import Status
from ...rules.matrix import Step
from ...rules.steps import JobKind
from ..compat.footer import Footer
from ..console import Console, console_of
from ..messages import ChangeKey, ChangeRequested
from ..protocols import TrafficFigures
from ..step_keys import STEP_KEYS
from ..text import field, literal
from ..widgets.status_view import FactsPanel, FlagsPanel, StageLine, StatusView, StepsPanel
from .help import HelpScreen

WIDE = 110  # columns from which flags and facts sit side by side
# Each key's action as Textual parses it, so a key press finds its step.
_KEYS_BY_PARSED = {(name, tuple(parameters)): key for key in STEP_KEYS
                   for _, name, parameters in [actions.parse(key.action)]}


def traffic_line(stats: TrafficFigures, running: bool) -> Text:
    """The demo's traffic in one line: errors and mirror failures in red when there are any."""
    def figure(value: int | None, label: str) -> Text:
        shown = "?" if value is None else f"{value:,}"
        return Text(f"{shown} {label}", style="bold red" if value else "")
    return Text(" · ").join([
        Text(f"demo traffic {'ON' if running else 'off'}", style="bold green" if running else "dim"),
        Text(f"{stats.requests_per_second:,.1f} requests/s"), Text(f"{stats.requests:,} requests"),
        figure(stats.errors, "errors"), figure(stats.mirror_failures, "mirror failures")])


def activity_line(job: RunningJob) -> Text:
    """Another console's job as an observer sees it: a backfill's rows per table from its checkpoints."""
    if job.kind == "verify":
        return Text.assemble(("verify running", "bold yellow"),
                             " in the operator's console: its checks show in its report when it ends (o)")
    who = field(f" by {job.operator}") if job.operator else Text()
    parts = []
    for table in job.tables:
        if table.total:
            share = min(table.done / table.total, 1.0)
            bar = "█" * round(share * 10)
            parts.append(Text(f"{table.table} {bar:░<10} {share:4.0%} {table.done:,}/~{table.total:,}"))
        else:
            parts.append(Text(f"{table.table} {table.done:,} rows"))
    return Text.assemble(("backfill running", "bold yellow"), who, f", pass {job.pass_no}: ",
                         Text(" · ").join(parts) if parts else "starting…")


class DashboardScreen(Screen):
    HELP = ("Where the Accounts V2 cutover stands: the stage line, the four flags as the deploy env "
            "file declares them against what the promotion matrix expects, the last backfill and "
            "verify, who holds the operator lock, and every next step, green when the runbook "
            "allows it and red with each reason when it does not. One key per stage runs it: a "
            "job shows what it will do before it starts, a flag change shows the env diff and "
            "asks, then deploys it (p deploys again). x opens the remedies of the backfill's anomalies. "
            "A dimmed key is refused now; pressing it says why. In a small terminal the target and the "
            "demo's notice (the stand-in API and its cookie) are cut to a line each; i shows them in full.")

    BINDINGS: ClassVar[list[BindingType]] = [*(key.binding() for key in STEP_KEYS),
                                             Binding("x", "remedies", "Remedies"),
                                             Binding("i", "connection", "Connection")]

    status: reactive[Status | None] = reactive(None, always_update=True)
    problem: reactive[str | None] = reactive(None)
    label: reactive[str] = reactive("connecting to the database…")
    notice: reactive[str | None] = reactive(None)  # the demo's stand-in API and its cookie
    traffic: reactive[tuple[TrafficFigures, bool] | None] = reactive(None)  # the demo's traffic: figures, running
    activity: reactive[RunningJob | None] = reactive(None)  # an observer's view of another console's job

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(id="target", markup=False)
        yield Static(id="notice", markup=False)
        yield Static(id="problem", markup=False)
        yield StageLine(id="stage-line")
        yield Static(id="traffic")
        yield Static(id="activity", markup=False)
        with Horizontal(id="top"):
            yield FlagsPanel(id="flags")
            yield FactsPanel(id="facts")
        with VerticalScroll(id="steps-box"):
            yield StepsPanel(id="steps")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#flags").border_title = "flags"
        self.query_one("#facts").border_title = "last runs"
        self.query_one("#steps-box").border_title = "next steps"
        self.query_one("#target", Static).update(literal(self.label))
        self.watch_notice(self.notice)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def _step_for(self, action: str, parameters: tuple[object, ...]) -> Step | None:
        key = _KEYS_BY_PARSED.get((action, tuple(parameters)))
        if self.status is None or key is None or key.info.action is None:
            return None
        wanted = (key.info.action, key.info.target)
        return next((s for s in self.status.assessment.steps if (s.action, s.target) == wanted), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A key whose step the runbook refuses now is dimmed; pressing it says why. Restore is
        dimmed while the flags are legal and match what the console wrote."""
        if action == "connection":  # shown only where there is more than the target to see
            return self.notice is not None
        if action == "change" and parameters[:1] == ("restore",):
            steps = self.status.assessment.steps if self.status else ()
            return True if any(s.action == "restore-flags" for s in steps) else None
        step = self._step_for(action, parameters)
        return None if step is not None and not step.allowed else True

    def on_key(self, event: Key) -> None:
        """A dimmed key still answers: with the matrix's reasons, never silence."""
        for key in STEP_KEYS:
            if key.key != event.key:
                continue
            _, action, parameters = actions.parse(key.action)
            step = self._step_for(action, parameters)
            if step is not None and not step.allowed:
                event.stop()
                self.notify(" ".join(step.reasons), title=f"{step.label[0].upper()}{step.label[1:]} is refused",
                            severity="error", timeout=10, markup=False)
                self.cutover.refresh_status()  # in case the facts moved since the screen last looked
                return

    # The dashboard lives as long as the app, and a worker's message may land while the app is
    # closing and its widgets are already gone: each watcher updates what is still there.

    def _status_changed(self) -> None:
        self.refresh_bindings()
        for view in self.query(StatusView):  # the stage line, flags, facts and steps
            view.status = self.status

    def watch_status(self) -> None:
        if self.is_mounted:
            self._status_changed()

    def watch_problem(self, problem: str | None) -> None:
        for box in self.query("#problem").results(Static):
            box.update(literal(problem or ""))
            box.display = bool(problem)

    def watch_traffic(self, traffic: tuple[TrafficFigures, bool] | None) -> None:
        for box in self.query("#traffic").results(Static):
            box.display = traffic is not None
            if traffic is not None:
                box.update(traffic_line(*traffic))

    def watch_activity(self, job: RunningJob | None) -> None:
        for box in self.query("#activity").results(Static):
            box.display = job is not None
            if job is not None:
                box.update(activity_line(job))

    def watch_label(self, label: str) -> None:
        for box in self.query("#target").results(Static):
            box.update(literal(label))

    def watch_notice(self, notice: str | None) -> None:
        for box in self.query("#notice").results(Static):
            box.update(literal(notice or ""))
            box.display = notice is not None
            self.refresh_bindings()

    def action_connection(self) -> None:
        """The target and the demo's notice in full (cut to a line each in a small terminal)."""
        self.app.push_screen(HelpScreen("Connection", "\n".join(filter(None, (self.label, self.notice))), [],
                                        closing="escape closes this"))

    def on_screen_resume(self) -> None:
        self._status_changed()
        self.watch_problem(self.problem)
        self.watch_traffic(self.traffic)
        self.watch_activity(self.activity)

    @property
    def cutover(self) -> Console:
        return console_of(self)

    def action_change(self, action: ChangeKey, target: str | None = None) -> None:
        self.post_message(ChangeRequested(action, target))

    def action_job(self, kind: JobKind) -> None:
        self.cutover.open_job(kind)

    def action_migrate(self) -> None:
        self.cutover.open_migrate()

    def action_rollback(self) -> None:
        self.cutover.open_rollback()

    def action_close_window(self) -> None:
        self.cutover.open_close_window()

    def action_archive(self) -> None:
        self.cutover.open_archive()

    def action_remedies(self) -> None:
        self.cutover.open_remedies()

    def action_deploy(self) -> None:
        self.cutover.open_deploy()
