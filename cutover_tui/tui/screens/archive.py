"""Stage F: the archive SQL in full, and the database's name typed to confirm it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Static

from ...work.archive import ArchivePlan
from ..text import literal
from .confirm import TypedConfirm


class ArchiveConfirm(TypedConfirm):
    """Dismisses with what the operator typed (checked by the engine), or None."""

    HELP = ("Stage F moves the legacy platform_* tables out of the way in one transaction; it drops "
            "nothing. It is the one step with no way back through the console, so it asks for the "
            "database's name, typed in full. escape leaves everything as it is.")

    def __init__(self, plan: ArchivePlan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="danger"):
            yield Static(Text.assemble(("Archive the legacy tables of ", "bold"),
                                       literal(self.plan.database, "bold reverse")), id="describe")
            yield Static(literal(f"runs {self.plan.path.name}:", "dim"), id="file")
            with VerticalScroll(id="diff-box"):
                yield Static(literal(self.plan.sql), id="diff")
            yield Static(Text.assemble("Type the database name (", literal(self.plan.database, "bold"),
                                       ") and press enter:"), id="question")
            yield Input(placeholder=self.plan.database, id="confirm-name")
