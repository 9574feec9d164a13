"""Asks for the path of a report file; answers the path typed, or None when cancelled."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ReportPathScreen(ModalScreen[str | None]):
    HELP = ("Open a report file: the path of a JSON report written by this console or by the API's "
            "own scripts (recon, backfill, verify), absolute, relative to where the console was "
            "started, or starting with ~. enter opens it, escape goes back.")
    CSS_PATH = "../reports.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="path-dialog"):
            yield Static("Open a report file (enter opens, escape cancels):", markup=False)
            yield Input(placeholder="path/to/accounts-v2-verify-report-….json", id="path-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if path:
            self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
