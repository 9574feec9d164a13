"""The help for whichever screen was on top: what it is for and its keys."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, title: str, purpose: str, keys: list[tuple[str, str]], *,
                 closing: str = "escape closes this help") -> None:
        super().__init__()
        self.title_text, self.purpose, self.keys, self.closing = title, purpose, keys, closing

    def compose(self) -> ComposeResult:
        width = max((len(key) for key, _ in self.keys), default=0)
        keys = Text("\n").join(Text.assemble((key.ljust(width + 2), "bold"), description)
                               for key, description in self.keys)
        with VerticalScroll(id="help-dialog"):
            yield Static(Text(self.title_text, style="bold"), id="help-title")
            yield Static(Text(self.purpose), id="help-purpose")
            if self.keys:
                yield Static(keys, id="help-keys")
            yield Static(Text(self.closing, style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
