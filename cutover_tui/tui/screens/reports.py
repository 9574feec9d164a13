"""The saved reports, newest first: open one, open a file, compare two side by side."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ...ops import saved_reports
from ...reports.diff import ReportDiff, Side
from ...reports.store import StoredReport
from ..compat.footer import Footer
from ..console import console_of
from ..text import literal
from .report import ReportScreen
from .report_diff import ReportDiffScreen, when
from .report_path import ReportPathScreen

LIST_ROWS = 500
COLUMNS = (("mark", ""), ("time", "time (UTC)"), ("kind", "kind"), ("result", "result"), ("stage", "stage"),
           ("id", "id"))
MARKED = "bold yellow"


def _cells(stored: StoredReport, marked: bool) -> dict[str, Text]:
    style = MARKED if marked else ""
    return {
        "mark": Text("*" if marked else " ", style=style),
        "time": Text(when(stored.generated_at).removesuffix(" UTC"), style=style),
        "kind": literal(stored.kind, style),
        "result": Text("PASS", style="green") if stored.ok else Text("FAIL", style="bold red"),
        "stage": literal(stored.stage or "—", style),
        "id": literal(stored.id, style),
    }


class ReportsScreen(Screen):
    HELP = ("Every report saved in the database (recon, backfill, verify, verify-reads), newest "
            "first, whoever ran it. enter opens the selected one; o opens a report file instead, "
            "such as one written by the API's own scripts. To compare two reports side by side, "
            "mark them with space (at most two) and press =, or mark one, move to another and press "
            "=; p compares the selected report with the one of its kind saved before it. The older "
            "report is always the 'before'.")
    CSS_PATH = "../reports.tcss"
    SUB_TITLE = "Reports"

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority, so the list's own (hidden) enter does not shadow it in the footer.
        Binding("enter", "open", "Open", priority=True),
        Binding("space", "mark", "Mark"),
        Binding("equals_sign", "compare_marked", "Diff", key_display="="),
        Binding("p", "compare_previous", "Diff prev"),
        Binding("o", "open_file", "Open file"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, StoredReport] = {}
        self.marked: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DataTable(id="report-list", cursor_type="row", zebra_stripes=True,
                        cursor_foreground_priority="renderable")  # PASS/FAIL colours stay under the cursor
        yield Static(id="report-list-empty", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)

    def on_screen_resume(self) -> None:
        self.action_reload()

    # -- the list -----------------------------------------------------------------------

    def action_reload(self) -> None:
        console_of(self).run_engine(partial(saved_reports.recent, limit=LIST_ROWS), self._show_list,
                                    group="reports-list", exclusive=True)

    def _show_list(self, found: list[StoredReport]) -> None:
        table = self.query_one(DataTable)
        keep = self.selected.id if self.selected else None
        self.saved = {stored.id: stored for stored in found}
        self.marked = [report_id for report_id in self.marked if report_id in self.saved]
        table.clear()
        for stored in found:
            table.add_row(*_cells(stored, stored.id in self.marked).values(), key=stored.id)
        if keep in self.saved:
            table.move_cursor(row=table.get_row_index(keep))
        empty = self.query_one("#report-list-empty", Static)
        empty.update("No reports are saved in this database yet; run a recon, backfill or verify, "
                     "or press o to open a report file." if not found else "")
        empty.display = not found

    @property
    def selected(self) -> StoredReport | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return self.saved.get(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or "")

    def action_mark(self) -> None:
        stored = self.selected
        if stored is None:
            return
        if stored.id in self.marked:
            self.marked.remove(stored.id)
        elif len(self.marked) == 2:
            self.notify("Two reports are marked already; unmark one with space first.", severity="warning",
                        markup=False)
            return
        else:
            self.marked.append(stored.id)
        table = self.query_one(DataTable)
        for column, cell in _cells(stored, stored.id in self.marked).items():
            table.update_cell(stored.id, column, cell)

    # -- opening and comparing: each read runs in a worker -------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()  # a click on the selected row

    def action_open(self) -> None:
        stored = self.selected
        if stored is not None:
            console_of(self).run_engine(partial(saved_reports.load, stored=stored),
                                 lambda report: self._push(ReportScreen(report, stored=stored)), group="reports")

    def action_open_file(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                console_of(self).run_engine(partial(saved_reports.load_file, path=path),
                                     lambda report: self._push(ReportScreen(report, path=path)), group="reports")
        self.app.push_screen(ReportPathScreen(), chosen)

    def action_compare_marked(self) -> None:
        selected = self.selected
        if len(self.marked) == 2:
            pair = [self.saved[report_id] for report_id in self.marked]
        elif len(self.marked) == 1 and selected is not None and selected.id != self.marked[0]:
            pair = [self.saved[self.marked[0]], selected]
        else:
            self.notify("Mark two reports with space and press =, or mark one and move to another; "
                        "p compares the selected one with the previous of its kind.", severity="warning",
                        markup=False)
            return
        console_of(self).run_engine(partial(saved_reports.compare, first=pair[0], second=pair[1]), self._show_diff,
                             group="reports")

    def action_compare_previous(self) -> None:
        stored = self.selected
        if stored is not None:
            console_of(self).run_engine(partial(saved_reports.against_previous, stored=stored), self._show_diff,
                                 group="reports")

    def _show_diff(self, result: tuple[ReportDiff, Side, Side]) -> None:
        self._push(ReportDiffScreen(*result))

    def _push(self, screen: Screen) -> None:
        if self.is_active:  # the operator may have moved on while it loaded
            self.app.push_screen(screen)

    def action_back(self) -> None:
        self.dismiss()
