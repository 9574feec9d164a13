"""The journal: every action the console recorded, oldest first, with flags before and after."""

from __future__ import annotations

from datetime import timezone

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from ...journal import JournalEntry
from ..messages import JournalRequested
from ..text import literal

COLUMNS = ("time", "operator", "action", "flags before -> after", "report")


def _flags(entry: JournalEntry) -> Text:
    if entry.flags_before is None and entry.flags_after is None:
        return Text("")
    before = entry.flags_before.short() if entry.flags_before else "?"
    after = entry.flags_after.short() if entry.flags_after else "?"
    return Text(before if before == after else f"{before} -> {after}")


class JournalScreen(Screen):
    HELP = ("The journal kept in the database beside the data: every action an operator took "
            "through the console or the command line, when, by whom, the flags before and after "
            "and the report it refers to. Two operators on two laptops see the same rows.")

    entries: reactive[list[JournalEntry]] = reactive(list, always_update=True)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DataTable(id="journal", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)

    def on_screen_resume(self) -> None:
        self.post_message(JournalRequested())

    def watch_entries(self, entries: list[JournalEntry]) -> None:
        if not self.is_mounted:
            return
        table = self.query_one(DataTable)
        table.clear()
        for entry in entries:
            table.add_row(Text(f"{entry.at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"), literal(entry.operator),
                          literal(entry.action), _flags(entry), literal(entry.report_id or ""),
                          key=str(entry.id))
        if entries:
            table.move_cursor(row=len(entries) - 1)
