"""One long job the console runs: its worker thread writes here, the job screen reads on a timer.

Plain Python and thread-safe, so the engine's callbacks (called on worker threads, often
thousands of times) cost a lock and an assignment, and the UI redraws at its own pace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..reports.models import Report, VerifyCheck, VerifyReport
from ..reports.present import check_line, outcome_lines, unchanged_line
from ..reports.store import StoredReport
from ..rules import steps
from ..rules.steps import JobKind
from ..work.backfill import BackfillProgress
from ..work.jobs import JobPlan
from ..work.verify import VerifyProgress

State = Literal["running", "paused", "cancelling", "done", "failed", "cancelled"]

@dataclass
class ItemProgress:
    """One table (or check) of a job: rows done of total, and how fast."""

    name: str
    started: float
    done: int = 0
    total: int = 0
    rate: float | None = None  # rows/s the engine measured; else worked out here

    def rows_per_second(self, now: float) -> float:
        if self.rate is not None:
            return self.rate
        elapsed = now - self.started
        return self.done / elapsed if elapsed > 0.05 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate; None while there is no rate to go by."""
        if self.total <= self.done:
            return 0.0
        rate = self.rows_per_second(now)
        return (self.total - self.done) / rate if rate > 0 else None


class JobRun:
    def __init__(self, kind: JobKind, plan: JobPlan, previous: VerifyReport | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind, self.plan = kind, plan
        self.previous = previous  # the verify a running verify is compared with
        self.clock = clock  # a fixed clock gives pictures that do not change from run to run
        self.cancel = threading.Event()
        self.pause = threading.Event()
        self.started = clock()
        self.finished: float | None = None
        self.stored: StoredReport | None = None
        self.report: Report | None = None
        self.error: str | None = None
        self._state: State = "running"
        self._lock = threading.Lock()
        self._items: dict[str, ItemProgress] = {}
        self._log: list[str] = []
        self._checks: list[VerifyCheck] = []
        self._pass = 1
        self.version = 0  # bumped on every change: the screen redraws only when it moved

    @property
    def title(self) -> str:
        return steps.job(self.kind).title

    # -- written from the worker thread ---------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    def progress(self, name: str, done: int, total: int, rate: float | None = None) -> None:
        with self._lock:
            item = self._items.get(name)
            if item is None:
                item = self._items[name] = ItemProgress(name, self.clock())
            item.done, item.total, item.rate = done, total, rate
            self._changed()

    def on_backfill(self, p: BackfillProgress) -> None:
        """A resumed run's `done` starts at its checkpoint's rows, so the bar is the whole table's;
        its rate is this run's alone, so the time left is the rows left at this run's pace."""
        if p.pass_no != self._pass:
            self._pass = p.pass_no
            self.note(f"Catch-up pass {p.pass_no}: legacy changed while the last pass ran.")
        if p.checkpoint and p.table not in self._items:
            self.note(f"{p.table}: resumed at {p.checkpoint:,} of {p.total:,} rows, done by the checkpoint.")
        self.progress(p.table, p.done, p.total, p.rows_per_second)

    def on_verify(self, p: VerifyProgress) -> None:
        self.progress(p.check, p.done, p.total)

    def on_recon(self, step: str, done: int, total: int) -> None:
        """Recon reports steps (schemas, a count per table, ...), not rows: one bar, each step logged."""
        if done < total:
            self.note(f"{step}…")
        self.progress("recon steps", done, total)

    def on_check(self, check: dict[str, Any]) -> None:
        model = VerifyCheck.model_validate(check)
        with self._lock:
            self._checks.append(model)
        self.note(check_line(model))

    def note(self, line: str) -> None:
        with self._lock:
            self._log.append(line)
            self._changed()

    def finish(self, stored: StoredReport, report: Report) -> None:
        with self._lock:
            self.stored, self.report = stored, report
            self._state = "cancelled" if self.cancel.is_set() else "done"
            self.finished = self.clock()
            self._changed()
        if self.kind not in ("verify", "repair"):  # a verify logged each check as it completed
            for line in outcome_lines(report):
                self.note(line)
        elif isinstance(report, VerifyReport) and (unchanged := unchanged_line(report)):
            self.note(unchanged)
        self.note(f"{'Cancelled; report' if self.cancel.is_set() else 'Finished; report'} {stored.id} "
                  f"{'passed' if stored.ok else 'has FAILURES'}, written to {stored.path}.")

    def fail(self, message: str) -> None:
        with self._lock:
            self.error, self._state = message, "failed"
            self.finished = self.clock()
            self._changed()
        self.note(f"FAILED: {message}")

    # -- from the UI ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._state == "running":
            if self.cancel.is_set():
                return "cancelling"
            if self.pause.is_set():
                return "paused"
        return self._state

    @property
    def running(self) -> bool:
        return self.finished is None

    def toggle_pause(self) -> bool:
        """Pauses or resumes; true when now paused."""
        if self.pause.is_set():
            self.pause.clear()
            self.note("Resumed.")
        else:
            self.pause.set()
            self.note("Paused after the ranges in flight; no transaction stays open.")
        return self.pause.is_set()

    def request_cancel(self) -> None:
        if self.running and not self.cancel.is_set():
            self.cancel.set()
            self.pause.clear()
            self.note("Cancelling at the next batch boundary; the checkpoint stays valid.")

    def snapshot(self) -> tuple[list[ItemProgress], list[str], list[VerifyCheck]]:
        with self._lock:
            return ([ItemProgress(i.name, i.started, i.done, i.total, i.rate) for i in self._items.values()],
                    list(self._log), list(self._checks))

    def elapsed(self) -> float:
        return (self.finished or self.clock()) - self.started
