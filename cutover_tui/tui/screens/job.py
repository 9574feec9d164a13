"""A long job's screen: what it will do, then its progress per table, its log and, for a
verify, the diff against the previous verify filling in as each check completes.

The job itself belongs to the app (it goes on while the operator looks elsewhere); this
screen reads its `JobRun` on a timer and asks the app to start, pause or cancel it.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, RichLog, Static

from ...reports.diff import diff_check, mark
from ...reports.models import VerifyCheck, VerifyReport
from ...rules import steps
from ...rules.steps import JobKind
from ...work import jobs
from ...work.jobs import JobPlan
from ..compat.footer import Footer
from ..console import Console, console_of
from ..running_job import JobRun
from ..text import literal
from ..widgets.job_progress import JobProgress, duration
from .report import ReportScreen

REDRAW_SECONDS = 0.2
_COMPARED = ("verify", "repair")  # the jobs whose checks fill in against the previous verify
_STATE_STYLES = {"running": "bold yellow", "paused": "bold cyan", "cancelling": "bold yellow",
                 "done": "bold green", "failed": "bold red", "cancelled": "bold yellow"}
_MARK_STYLES = {"new_failure": "bold red", "still_failing": "red", "fixed": "bold green", "changed": "yellow",
                "added": "", "unchanged": "dim"}


def _verdict(check: VerifyCheck | None) -> Text:
    if check is None:
        return Text("-", style="dim")
    return Text("PASS", style="green") if check.ok else Text("FAIL", style="bold red")


class JobScreen(Screen):
    HELP = ("A long job. Before it starts, the screen says what it will do and whether the runbook "
            "allows it now; enter starts it. While it runs: a bar per table with rows/s and the time "
            "left, the log, and for a verify each check against the previous verify as it completes. "
            "p pauses a backfill between batches, x cancels (the checkpoint stays valid, a re-run "
            "resumes), escape goes back while the job carries on; J brings you here again. When it "
            "has ended, o opens its report.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "start", "Start"),
        Binding("p", "pause", "Pause/resume"),
        Binding("x", "cancel", "Cancel job"),
        Binding("o", "open_report", "Open report"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, kind: JobKind, run: JobRun | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.run = run
        self.plan: JobPlan | None = run.plan if run else None
        self.previous: VerifyReport | None = None
        self._shown_version = -1
        self._shown_log = 0
        self._shown_checks = 0
        self._shown_state = Text()

    @property
    def cutover(self) -> Console:
        return console_of(self)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(Text(steps.job(self.kind).title, style="bold"), id="job-title")
        yield Static(id="job-state")
        with VerticalScroll(id="job-body"):
            yield Static(id="job-plan")
            yield JobProgress(id="job-progress")
            if self.kind in _COMPARED:  # a DataTable is the dearest part of opening the screen
                with Vertical(id="live-diff-box"):
                    yield DataTable(id="live-diff", cursor_type="row", zebra_stripes=True, show_cursor=False)
        yield RichLog(id="job-log", max_lines=2000, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#job-log").border_title = "log"
        if self.kind in _COMPARED:
            box = self.query_one("#live-diff-box")
            box.border_title = "against the previous verify"
            box.display = False
            self.query_one("#live-diff", DataTable).add_columns("", "check", "before", "now", "what changed")
        if self.plan is None:
            api = self.cutover.api_target.api if self.cutover.api_target else None
            self.cutover.run_engine(partial(jobs.plan_with_previous, kind=self.kind, api=api), self._planned,
                                    group="job-plan")
        else:
            self._planned((self.plan, self.run.previous if self.run else None))
        self.set_interval(REDRAW_SECONDS, self._redraw)

    def _planned(self, planned: tuple[JobPlan, VerifyReport | None]) -> None:
        self.plan, self.previous = planned
        if self.kind in _COMPARED:
            self.query_one("#live-diff-box").display = self.previous is not None
        self._show_plan()
        self.refresh_bindings()
        self._redraw(force=True)

    def _show_plan(self) -> None:
        plan = self.plan
        if plan is None:
            return
        lines: list[Text] = [literal(plan.summary)]
        lines.append(literal(plan.writes, "yellow") if plan.writes
                     else Text("Read-only: writes nothing but its report.", style="green"))
        lines += [literal(note, "dim") for note in plan.notes]
        if plan.tables and self.run is None:
            lines.append(Text("tables (planner's estimate): ", style="bold")
                         + literal(", ".join(f"{name} ~{'?' if rows is None else f'{rows:,}'}"
                                   for name, rows in plan.tables.items())))
        if plan.refused:
            lines.append(Text("Not allowed now:", style="bold red"))
            lines += [literal(f"  ✘ {reason}", "red") for reason in plan.refused]
        self.query_one("#job-plan", Static).update(Group(*lines))

    # -- the running job, redrawn on a timer --------------------------------------------------

    def on_screen_resume(self) -> None:
        self._redraw()  # what a kept screen missed while out of sight

    def _redraw(self, force: bool = False) -> None:
        if not (self.is_current or force):  # a kept screen out of sight: redrawn when it is back
            return
        run = self.run
        state = self.query_one("#job-state", Static)
        if run is None:
            if self.plan is None:
                state.update(Text("working out what it will do…", style="dim"))
            elif self.plan.refused:
                state.update(Text("Refused by the runbook: the reasons are below.", style="bold red"))
            else:
                state.update(Text("Ready: enter starts it, escape goes back.", style="bold"))
            return
        line = Text.assemble((run.state.upper(), _STATE_STYLES[run.state]), f" · {duration(run.elapsed())}")
        if run.error:
            line.append("  ")
            line.append_text(literal(run.error, "red"))
        elif run.stored is not None:
            line.append(f"  report {run.stored.id} ", style="bold")
            line.append("passed" if run.stored.ok else "has FAILURES", style="green" if run.stored.ok else "bold red")
        if line != self._shown_state:  # the clock moves once a second, not at every redraw
            state.update(line)
            self._shown_state = line
        if run.version == self._shown_version and not force:
            return
        self._shown_version = run.version
        items, log, checks = run.snapshot()
        progress = self.query_one(JobProgress)
        rows = len(progress.items)
        progress.items, progress.now = items, run.clock()
        progress.display = bool(items) or (run.running and self.kind != "verify-reads")  # that one has no tables
        # A line per table: the screen's layout moves only when a table joins, not with each figure.
        progress.refresh(layout=len(items) != rows or force)
        journal = self.query_one(RichLog)
        for entry in log[self._shown_log:]:
            journal.write(literal(entry, "red" if entry.startswith(("FAIL", "ERROR")) else ""))
        self._shown_log = len(log)
        self._add_checks(checks[self._shown_checks:])
        self._shown_checks = len(checks)
        self.refresh_bindings()

    def _add_checks(self, checks: list[VerifyCheck]) -> None:
        if self.previous is None or not checks:  # only a verify or a repair has a previous verify
            return
        before = {check.key: check for check in self.previous.checks}
        table = self.query_one("#live-diff", DataTable)
        for check in checks:
            old = before.get(check.key)
            entry = diff_check(old, check)
            changes = ", ".join(f"{name} {a} -> {b}" for name, (a, b) in entry.changes.items())
            style = _MARK_STYLES.get(entry.status, "")
            table.add_row(Text(mark(entry), style=style), literal(check.key, style), _verdict(old),
                          _verdict(check), literal(changes, "dim"))

    # -- keys ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.run
        if action == "start":
            return None if run is not None or self.plan is None else True
        if action == "pause":
            return True if self.kind == "backfill" and run is not None and run.running else None
        if action == "cancel":
            return True if run is not None and run.running and not run.cancel.is_set() else None
        if action == "open_report":
            return True if run is not None and run.report is not None else None
        return True

    def action_start(self) -> None:
        if self.plan is None or self.run is not None:
            return
        if self.plan.refused:
            self.notify(" ".join(self.plan.refused), title=f"{steps.job(self.kind).title} is not allowed now",
                        severity="error", timeout=10, markup=False)
            return
        self.run = self.cutover.start_job(self.kind, self.plan, self.previous)
        if self.run is not None:
            self._show_plan()
            self._redraw(force=True)

    def action_pause(self) -> None:
        if self.run is not None:
            paused = self.run.toggle_pause()
            self.notify("Paused between batches." if paused else "Resumed.", timeout=3)
            self.refresh_bindings()

    def action_cancel(self) -> None:
        if self.run is not None:
            self.run.request_cancel()
            self.refresh_bindings()

    def action_open_report(self) -> None:
        if self.run is not None and self.run.report is not None:
            self.app.push_screen(ReportScreen(self.run.report, stored=self.run.stored))

    def action_back(self) -> None:
        self.app.pop_screen()

