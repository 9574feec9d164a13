"""The help for whichever screen was on top: what it is for and its keys."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, title: str, purpose: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.purpose, self.keys = title, purpose, keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, description in self.keys:
            table.add_row(Text(key), Text(description))
        with Vertical(id="help-dialog"):
            yield Static(Text(self.title_text, style="bold"), id="help-title")
            yield Static(Text(self.purpose), id="help-purpose")
            yield Static(table, id="help-keys")
            yield Static(Text("escape closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
