"""Asks before a flag change: what it does, the env diff, y or n."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...transitions import FlagChange
from ..text import literal


def _coloured(diff: str) -> Text:
    """A unified diff, removed lines red and added lines green, shown literally."""
    lines = []
    for line in diff.splitlines():
        style = ("red" if line.startswith("-") and not line.startswith("---") else
                 "green" if line.startswith("+") and not line.startswith("+++") else "")
        lines.append(literal(line, style))
    return Text("\n").join(lines)


class ConfirmChange(ModalScreen[bool]):
    HELP = ("Confirm a flag change: the first line says what will happen, below it the exact "
            "lines of the deploy env file that will change. y writes them (the gates are checked "
            "again under the operator lock), n or escape leaves everything as it is.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes, write it"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, change: FlagChange, env_file: str, env_label: str | None = None) -> None:
        super().__init__()
        self.change = change
        self.env_file = env_label or env_file
        self.diff = change.diff.replace(env_file, self.env_file) if env_label else change.diff

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(literal(self.change.describe(), "bold"), id="describe")
            yield Static(literal(f"in {self.env_file}:", "dim"), id="file")
            with VerticalScroll(id="diff-box"):
                yield Static(_coloured(self.diff) if self.diff else
                             literal("(the env file already declares these flags)"), id="diff")
            yield Static("Write the env file?  y = yes   n = no", id="question", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
