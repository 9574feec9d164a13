"""Asks before a flag change: what it does, the env diff, y or n."""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ...ops.transitions import FlagChange
from ..text import literal


def coloured_diff(diff: str) -> Text:
    """A unified diff, removed lines red and added lines green, shown literally."""
    lines = []
    for line in diff.splitlines():
        style = ("red" if line.startswith("-") and not line.startswith("---") else
                 "green" if line.startswith("+") and not line.startswith("+++") else "")
        lines.append(literal(line, style))
    return Text("\n").join(lines)


def warned(change: FlagChange) -> list[Text]:
    """The change's warnings, each on its own, to read before the diff."""
    return [Text.assemble(("WARNING: ", "bold red"), literal(warning, "red")) for warning in change.warnings]


class Confirm(ModalScreen[bool]):
    """Shows exactly what will happen (a diff, SQL), then asks y or n."""

    HELP = ("Confirm a change: the first line says what will happen, below it exactly what will be "
            "written (env-file lines or SQL). y goes ahead (the gates are checked again under the "
            "operator lock), n or escape leaves everything as it is.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, title: str, where: str, body: RenderableType, question: str) -> None:
        super().__init__()
        self.title_text, self.where, self.body, self.question = title, where, body, question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(literal(self.title_text, "bold"), id="describe")
            yield Static(literal(self.where, "dim"), id="file")
            with VerticalScroll(id="diff-box"):
                yield Static(self.body, id="diff")
            yield Static(self.question, id="question", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmChange(Confirm):
    """A flag change: the env diff, zero context lines (neighbouring lines hold secrets)."""

    def __init__(self, change: FlagChange, env_file: str, env_label: str | None = None) -> None:
        shown = env_label or env_file
        diff = change.diff.replace(env_file, shown) if env_label else change.diff
        body = coloured_diff(diff) if diff else literal("(the env file already declares these flags)")
        super().__init__(change.describe(), f"in {shown}:", Text("\n\n").join([*warned(change), body]),
                         "Write the env file?  y = yes   n = no")
        self.change = change


class TypedConfirm(ModalScreen[str | None]):
    """A confirmation typed in full (a name, a stage): dismisses with what was typed, which the
    engine checks, or None on escape. Subclasses compose the dialog around one Input."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
