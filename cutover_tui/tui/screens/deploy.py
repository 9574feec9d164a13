"""Deploy: the runbook's apply and read back with their output as it comes, or, without a
`[deploy]` section, the stage's name typed to confirm the API runs the declared flags."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, RichLog, Static

from ..text import literal
from .confirm import TypedConfirm

MAX_LOG_LINES = 2000  # a rollout's log can be long; the journal keeps a failure's tail anyway


class DeployRun(ModalScreen[None]):
    """Watches one deploy: lines arrive through `add_line`, the end through `finish`/`fail`.
    Escape hides it; the deploy goes on, and the console says how it ended."""

    HELP = ("A flag write reaches the API only when it restarts with the new flags: the runbook's "
            "apply command deploys them, then its read_back command prints what the API runs, "
            "which must be the declared flags. Both commands' output shows here as it comes; "
            "the journal keeps the exit codes and durations. escape hides this screen and leaves "
            "the deploy running.")

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, flags: str, apply: str, read_back: str) -> None:
        super().__init__()
        self.flags, self.apply, self.read_back = flags, apply, read_back
        self.outcome: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(literal(f"Deploy {self.flags}", "bold"), id="describe")
            yield Static(literal(f"apply: {self.apply}\nread back: {self.read_back}", "dim"), id="file")
            yield RichLog(id="deploy-log", max_lines=MAX_LOG_LINES, wrap=True, markup=False)
            yield Static(Text("running…", style="yellow"), id="question")

    def add_line(self, line: str) -> None:
        if self.is_mounted:
            self.query_one(RichLog).write(literal(line))

    def finish(self, text: str) -> None:
        self._ended(Text.assemble((text, "bold green"), ("  escape closes", "dim")))

    def fail(self, text: str) -> None:
        self._ended(Text.assemble(literal(text, "bold red"), ("  p deploys again · escape closes", "dim")))

    def _ended(self, line: Text) -> None:
        self.outcome = line.plain
        if self.is_mounted:
            self.query_one("#question", Static).update(line)

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmDeploy(TypedConfirm):
    """Without a [deploy] section: dismisses with what the operator typed (checked by the
    engine), or None to confirm later."""

    HELP = ("The API reads its flags only when it starts, and this runbook has no [deploy] section "
            "to run the deployment and read it back. Deploy the flags the team's way (restart the "
            "pods or recreate the container), then type the stage's name to confirm the API runs "
            "them: it is journaled as confirmed by you, not read back. escape confirms later (key p).")

    def __init__(self, stage: str, flags: str) -> None:
        super().__init__()
        self.stage, self.flags = stage, flags

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(literal(f"Confirm the deployment of stage {self.stage}", "bold"), id="describe")
            yield Static(Text.assemble(
                "The API reads its flags only at start. Deploy ", literal(self.flags, "bold"),
                " the team's way; once the API runs them, type ", literal(self.stage, "bold"),
                " and press enter (escape: later)."), id="question")
            yield Input(placeholder=self.stage, id="confirm-stage")
