"""One report, from either producer: a row per check, stage, issue or table with its figures,
and below it the selected row in full with its example rows. Every value is shown literally."""

from __future__ import annotations

import json
from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ...ops import saved_reports
from ...reports.diff import ReportDiff, Side
from ...reports.models import Report
from ...reports.present import Item, file_kind, items, summary
from ...reports.store import StoredReport
from ..compat.footer import Footer
from ..console import console_of
from ..text import literal
from .report_diff import ReportDiffScreen, when

NAME_WIDTH = 34
TAG_STYLES = {"PASS": "green", "FAIL": "bold red", "ERROR": "red", "WARN": "yellow", "PROBLEM": "bold red"}


def _figures(item: Item) -> Text:
    return Text("  ").join(Text.assemble(literal(name), "=", literal(_plain(value)))
                           for name, value in item.figures.items() if name not in item.hidden)


def _plain(value: Any) -> str:
    """A plain value as written: strings bare (shown literally), the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _nested(name: str, value: Any, indent: str) -> list[Text]:
    """A list as one JSON line per row under its name, a dict one line per key."""
    if isinstance(value, (list, dict)) and not value:
        return [literal(f"{indent}{name}: none")]
    if isinstance(value, list):
        head = literal(f"{indent}{name} ({len(value)}):", "bold")
        return [head, *(literal(f"{indent}  {_json(row)}") for row in value)]
    if isinstance(value, dict):
        lines = [literal(f"{indent}{name}:", "bold")]
        for key, inner in value.items():
            lines += _nested(key, inner, indent + "  ")
        return lines
    return [literal(f"{indent}{name}: {_json(value)}")]


def details(item: Item) -> Text:
    """The item in full: every figure on its own line, then its nested values and example rows."""
    lines = [Text.assemble((item.tag, TAG_STYLES.get(item.tag, "bold")), "  ", literal(item.name, "bold"))]
    lines += [Text.assemble(literal(name, "dim"), ": ", literal(_plain(value)))
              for name, value in item.figures.items() if name != "ok"]
    for name, value in item.details.items():
        lines += _nested(name, value, "")
    return Text("\n").join(lines)


class ReportScreen(Screen):
    HELP = ("One report, from this console or the API's own scripts. Verify: one row per check, PASS "
            "or FAIL with its figures. Backfill: the stages with their counts, then each error and "
            "warning group with its row count. Recon: the tables, the anomalies the backfill will "
            "meet, and the estimate. Below, the selected row in full with its example rows, exactly "
            "as the report holds them. tab moves between the list and the details; = compares this "
            "report with the previous saved one of its kind (a file: with the latest saved one). "
            "x on a backfill or recon report opens the remedies of the anomalies it found.")
    CSS_PATH = "../reports.tcss"
    SUB_TITLE = "Report"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("equals_sign", "compare", "Diff with saved", key_display="="),
        Binding("x", "remedies", "Remedies"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, report: Report, *, stored: StoredReport | None = None, path: str | None = None) -> None:
        super().__init__()
        self.report, self.stored, self.path = report, stored, path
        self.kind = stored.kind if stored else file_kind(report, path or "")
        self.items = items(report)

    @property
    def side(self) -> Side:
        source = f"saved {self.stored.id}" if self.stored else f"file {self.path}"
        return Side(self.report, self.kind, source)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(self._heading(), id="report-heading")
        yield DataTable(id="report-items", cursor_type="row", zebra_stripes=True,
                        cursor_foreground_priority="renderable")  # PASS/FAIL colours stay under the cursor
        with VerticalScroll(id="report-details-box"):
            yield Static(id="report-details")
        yield Footer()

    def _heading(self) -> Text:
        verdict = Text("PASS", style="bold green") if self.report.passed else Text("FAIL", style="bold red")
        stage = f" · taken in stage {self.stored.stage}" if self.stored and self.stored.stage else ""
        return Text("\n").join([
            Text.assemble((f"{self.kind} report", "bold"), f" · {when(self.report.generated_at)} · ", verdict,
                          " · ", literal(summary(self.report))),
            literal(self.side.source + stage, "dim"),
        ])

    def on_mount(self) -> None:
        self.query_one("#report-details-box").border_title = "details"
        table = self.query_one(DataTable)
        # Names wider than this (long error messages) would push the figures off an 80-column screen;
        # the details below show them in full.
        width = min(NAME_WIDTH, max((len(item.name) for item in self.items), default=4))
        table.add_column("", key="tag")
        table.add_column("name", key="name", width=width)
        table.add_column("figures", key="figures")
        for index, item in enumerate(self.items):
            table.add_row(Text(item.tag, style=TAG_STYLES.get(item.tag, "")), literal(item.name), _figures(item),
                          key=str(index))
        self._show(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)

    def _show(self, index: int) -> None:
        box = self.query_one("#report-details", Static)
        box.update(details(self.items[index]) if 0 <= index < len(self.items) else
                   Text("This report holds no rows.", style="dim"))

    def action_compare(self) -> None:
        this, stored = self.side, self.stored
        console_of(self).run_engine(partial(saved_reports.against_saved, this=this, stored=stored), self._show_diff,
                             group="reports")

    def _show_diff(self, result: tuple[ReportDiff, Side, Side]) -> None:
        if self.is_active:  # the operator may have moved on meanwhile
            self.app.push_screen(ReportDiffScreen(*result))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Remedies are for the anomalies a backfill or a recon finds."""
        return self.kind in ("backfill", "recon") if action == "remedies" else True

    def action_remedies(self) -> None:
        console_of(self).open_remedies()

    def action_back(self) -> None:
        self.dismiss()
