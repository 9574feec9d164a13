"""The journal: every action the console recorded, oldest first, with flags before and after."""

from __future__ import annotations

from datetime import UTC

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Header

from ...rules.flags import Flags
from ...store.journal import JournalEntry
from ..compat.footer import Footer
from ..messages import JournalRequested
from ..text import field

COLUMNS = ("time", "operator", "action", "flags on: before -> after", "report", "from")


def _on(flags: Flags | None) -> str:
    """The flags that are true, `READS+DUAL_WRITE`, or `all off`."""
    if flags is None:
        return "?"
    names = [name for name, on in (("READS", flags.reads), ("WRITES", flags.writes),
                                   ("DUAL_WRITE", flags.dual_write)) if on]
    return "+".join(names) or "all off"


def _flags(entry: JournalEntry) -> Text:
    if entry.flags_before is None and entry.flags_after is None:
        return Text("")
    before, after = _on(entry.flags_before), _on(entry.flags_after)
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
            table.add_row(Text(f"{entry.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"), field(entry.operator),
                          field(entry.action), _flags(entry), field(entry.report_id or ""),
                          field(entry.who(), "dim"), key=str(entry.id))
        if entries:
            table.move_cursor(row=len(entries) - 1)
