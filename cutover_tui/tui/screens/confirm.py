"""Asks before a flag change: what it does, the env diff, y or n."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...transitions import FlagChange
from ..text import literal


class ConfirmChange(ModalScreen[bool]):
    HELP = ("Confirm a flag change: the first line says what will happen, below it the exact "
            "lines of the deploy env file that will change. y writes them (the gates are checked "
            "again under the operator lock), n or escape leaves everything as it is.")

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, write it"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, change: FlagChange, env_file: str) -> None:
        super().__init__()
        self.change = change
        self.env_file = env_file

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(literal(self.change.describe(), "bold"), id="describe")
            yield Static(literal(f"in {self.env_file}:", "dim"), id="file")
            with VerticalScroll(id="diff-box"):
                yield Static(literal(self.change.diff or "(the env file already declares these flags)"),
                             id="diff")
            yield Static("Write the env file?  y = yes   n = no", id="question", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
