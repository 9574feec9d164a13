"""Two reports of one kind side by side: each check, stage or error group with its mark,
before and after, what changed coloured."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ...reports.diff import DiffEntry, ReportDiff, Side, mark
from ...reports.models import Report, VerifyCheck, VerifyReport
from ..compat.footer import Footer
from ..text import literal

ABSENT = "—"
WHAT_WIDTH = 34


def when(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _style(entry: DiffEntry) -> str:
    """New failure red, fixed green, changed yellow, unchanged dim (red while still failing)."""
    if entry.status == "new_failure" or (entry.status == "new" and entry.section == "error"):
        return "bold red"
    if entry.status == "fixed":
        return "green"
    if entry.status in ("unchanged", "still_present") and not entry.changes:
        return "red" if entry.failing else "dim"
    return "yellow"


def _state(entry: DiffEntry, check: VerifyCheck | None, present: bool) -> Text:
    if not present:
        return Text(ABSENT, style="dim")
    if entry.section == "check" and check is not None:
        return Text("PASS", style="green") if check.ok else Text("FAIL", style="bold red")
    if entry.section in ("error", "warning"):
        return Text(entry.section.upper(), style="red" if entry.section == "error" else "yellow")
    return Text("")


def _side(entry: DiffEntry, check: VerifyCheck | None, present: bool, index: int) -> Text:
    """PASS/FAIL (or presence) on the first line, then the changed figures' values on this side."""
    lines = [_state(entry, check, present)]
    if present:
        lines += [Text.assemble(literal(name), " ", literal(values[index], "yellow"))
                  for name, values in entry.changes.items()]
    return Text("\n").join(line for line in lines if line.plain)


def _present(entry: DiffEntry, checks: list[dict[str, VerifyCheck]]) -> list[bool]:
    """Whether the entry is in the before and in the after report."""
    if entry.section == "check":
        return [entry.key in side for side in checks]
    return [entry.status not in ("added", "new"), entry.status not in ("removed", "fixed")]


def _checks(report: Report) -> dict[str, VerifyCheck]:
    return {check.key: check for check in report.checks} if isinstance(report, VerifyReport) else {}


class ReportDiffScreen(Screen):
    HELP = ("Two reports of one kind compared, the older as before and the newer as after: one row "
            "per check (verify) or per stage, error and warning group (backfill). The mark says what "
            "happened: +FAIL newly failing (red), FIXED (green), FAIL~ still failing with changed "
            "figures, ~ changed (yellow), = unchanged (dim), =FAIL unchanged and still failing, + added, "
            "- removed, +ERR and +WARN a new error or warning group, ERR and WARN one still present. "
            "Before and after show PASS or FAIL and the values of the figures that changed. The "
            "summary on top says 'worse than before' when a check newly fails or an error group appeared.")
    CSS_PATH = "../reports.tcss"
    SUB_TITLE = "Report diff"

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, diff: ReportDiff, before: Side, after: Side) -> None:
        super().__init__()
        self.diff, self.before, self.after = diff, before, after

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(self._heading(), id="diff-heading")
        yield Static(self._summary(), id="diff-summary")
        yield DataTable(id="diff-entries", cursor_type="row", zebra_stripes=True,
                        cursor_foreground_priority="renderable")  # PASS/FAIL colours stay under the cursor
        yield Footer()

    def _heading(self) -> Text:
        return Text("\n").join(
            Text.assemble((f"{label:<7}", "bold"), when(side.report.generated_at), "  ",
                          literal(side.source, "dim"))
            for label, side in (("before", self.before), ("after", self.after)))

    def _summary(self) -> Text:
        summary = Text.assemble((f"{self.diff.kind}: ", "bold"), literal(self.diff.summary()))
        if self.diff.worse:
            summary.append("; worse than before", style="bold red")
        return summary

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        labels = [f"stage {entry.key}" if entry.section == "stage" else entry.key for entry in self.diff.entries]
        table.add_column("mark")
        # Long error groups wrap rather than push before and after off an 80-column screen.
        table.add_column("what", width=min(WHAT_WIDTH, max(map(len, labels), default=4)))
        table.add_columns("before", "after")
        checks = [_checks(self.before.report), _checks(self.after.report)]
        for entry, label in zip(self.diff.entries, labels, strict=True):
            style, present = _style(entry), _present(entry, checks)
            table.add_row(Text(mark(entry), style=style), literal(label, style),
                          *(_side(entry, checks[i].get(entry.key), present[i], i) for i in (0, 1)), height=None)
        # Start on the first row that needs the operator's eye.
        first = next((i for i, entry in enumerate(self.diff.entries) if _style(entry) != "dim"), 0)
        table.move_cursor(row=first)

    def action_back(self) -> None:
        self.dismiss()

