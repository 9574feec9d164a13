"""The dashboard: where the cutover stands, the flags, the next steps; the keys that move the flags.

It only displays what the app sets on it (`status`, `problem`, `label`) and posts
`ChangeRequested` upwards; the app does the engine work in workers.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ...status import Status
from ..messages import ChangeRequested
from ..text import literal
from ..widgets.status_view import FactsPanel, FlagsPanel, StageLine, StepsPanel

WIDE = 110  # columns from which flags and facts sit side by side
PROMOTE = Binding.Group("Promote C/D/E/E'", compact=True)


class DashboardScreen(Screen):
    HELP = ("Where the Accounts V2 cutover stands: the stage line, the four flags as the deploy env "
            "file declares them against what the promotion matrix expects, the last backfill and "
            "verify, who holds the operator lock, and every next step, green when the runbook "
            "allows it and red with each reason when it does not. The flag keys show the env diff "
            "and ask before writing anything.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "change('promote', 'C')", "Promote C", group=PROMOTE),
        Binding("D", "change('promote', 'D')", "Promote D", group=PROMOTE),
        Binding("e", "change('promote', 'E')", "Promote E", group=PROMOTE),
        Binding("s", "change('promote', \"E'\")", "Promote E'", group=PROMOTE),
        Binding("b", "change('rollback')", "Roll back"),
        Binding("R", "change('restore')", "Restore flags"),
    ]

    status: reactive[Status | None] = reactive(None, always_update=True)
    problem: reactive[str | None] = reactive(None)
    label: reactive[str] = reactive("connecting to the database…")

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(id="target", markup=False)
        yield Static(id="problem", markup=False)
        yield StageLine(id="stage-line")
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

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Restore is dimmed while the flags are legal and match what the console wrote."""
        if action == "change" and parameters[:1] == ("restore",):
            steps = self.status.assessment.steps if self.status else ()
            return True if any(s.action == "restore-flags" for s in steps) else None
        return True

    def _status_changed(self) -> None:
        self.refresh_bindings()
        for view in (StageLine, FlagsPanel, FactsPanel, StepsPanel):
            self.query_one(view).status = self.status

    def watch_status(self) -> None:
        if self.is_mounted:
            self._status_changed()

    def watch_problem(self, problem: str | None) -> None:
        if self.is_mounted:
            box = self.query_one("#problem", Static)
            box.update(literal(problem or ""))
            box.display = bool(problem)

    def watch_label(self, label: str) -> None:
        if self.is_mounted:
            self.query_one("#target", Static).update(literal(label))

    def on_screen_resume(self) -> None:
        self._status_changed()
        self.watch_problem(self.problem)

    def action_change(self, action: str, target: str | None = None) -> None:
        self.post_message(ChangeRequested(action, target))
