"""Long jobs (recon, backfill, verify) as the runbook wants them run: behind their gate,
with the report path checked before any work, under the operator lock, and with the
report saved (file and row) and journaled when they end, even when cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import journal, reports
from .errors import CutoverError
from .matrix import assess, verify_stage
from .session import Session
from .transitions import refuse

def run_job(session: Session, kind: reports.ReportKind, work: Callable[[], dict[str, Any]], *,
            report_path: Path | None = None, detail: dict[str, Any] | None = None,
            ) -> tuple[reports.StoredReport, reports.Report]:
    """Run `work` (which returns a §4 report body) and keep its report; returns both.
    A job the matrix has a step for runs only when that step is allowed; the API read
    check only reads, so it has none."""
    facts = session.facts()
    assessment = assess(facts, session.runbook)
    step = next((s for s in assessment.steps if s.action == kind), None)
    if step is not None and not step.allowed:
        raise refuse(step)
    if report_path is not None:
        reports.check_report_path(report_path)
    else:
        reports.check_report_dir(session.settings.report_dir)
    with session.operator_lock():
        body = work()
        try:
            report = reports.MODELS[kind].model_validate(body)
        except ValueError as exc:  # our own engine broke the §4 shape: say so, keep nothing
            raise CutoverError(f"The {kind} produced a report that does not fit its shape ({exc}).") from None
        stored = reports.save_report(session.conn, report, kind=kind, report_dir=session.settings.report_dir,
                                     path=report_path, stage=verify_stage(facts, session.runbook))
        journal.record(session.conn, session.settings.operator, kind, report_id=stored.id,
                       detail={**(detail or {}), "ok": stored.ok, "path": stored.path},
                       flags_before=assessment.flags, flags_after=assessment.flags)
    return stored, report
