"""Long jobs (recon, backfill, verify) as the runbook wants them run: behind their gate,
with the report path checked before any work, under the operator lock, and with the
report saved (file and row) and journaled when they end, even when cancelled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from . import backfill as backfill_
from . import journal, reads, reports
from . import recon as recon_
from . import verify as verify_
from .backfill import BackfillOptions
from .errors import BadInput, CutoverError
from .matrix import assess, verify_stage
from .session import Session
from .transitions import refuse
from .verify import VerifyOptions


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


# --- the jobs, as the CLI and the console both run them -------------------------------------

Stored = tuple[reports.StoredReport, reports.Report]


def recon(session: Session, *, sample_rows: int = 2000, progress: recon_.ProgressCallback | None = None,
          report_path: Path | None = None) -> Stored:
    if sample_rows < 0:
        raise BadInput(f"The sample must be 0 rows or more (got {sample_rows}).")
    return run_job(session, "recon", lambda: recon_.run_recon(session.settings.database_url, sample_rows=sample_rows,
                                                              progress=progress), report_path=report_path)


def backfill(session: Session, options: BackfillOptions | None = None, *,
             progress: backfill_.ProgressCallback | None = None, cancel: threading.Event | None = None,
             pause: threading.Event | None = None, report_path: Path | None = None) -> Stored:
    options = options or BackfillOptions()

    def work() -> dict[str, Any]:
        backfill_.check_ready(session.conn, options.tables)
        return backfill_.Backfill(session.settings.database_url, session.settings.operator, options,
                                  progress=progress, cancel=cancel, pause=pause).run()

    return run_job(session, "backfill", work, report_path=report_path, detail={"tables": list(options.tables)})


def verify(session: Session, options: VerifyOptions | None = None, *,
           progress: verify_.ProgressCallback | None = None, cancel: threading.Event | None = None,
           on_check: verify_.CheckCallback | None = None, report_path: Path | None = None) -> Stored:
    options = options or VerifyOptions()
    return run_job(session, "verify", lambda: verify_.run_verify(
        session.settings.database_url, options, progress=progress, cancel=cancel, on_check=on_check),
        report_path=report_path, detail={"repair": options.repair, "sample_size": options.sample_size})


class ApiTarget(BaseModel):
    """Where and as whom the API read check asks; the cookie never leaves this object."""

    api: str
    cookie: str = Field(repr=False)
    profile_id: str | None = None
    identity_public_key: str | None = None
    collection_id: str = "primary"


def api_target(session: Session, *, api: str | None = None, cookie: str | None = None,
               profile_id: str | None = None, identity_public_key: str | None = None,
               collection_id: str | None = None) -> ApiTarget:
    """The read check's target: the arguments, else the environment of §6, else the runbook."""
    cookie = cookie or os.environ.get(reads.COOKIE_ENV)
    if not cookie:
        raise BadInput(f"No session cookie: pass --cookie or set {reads.COOKIE_ENV}.")
    if bool(profile_id) != bool(identity_public_key):
        raise BadInput("--profile-id and --identity-public-key go together: give both or neither.")
    return ApiTarget(api=api or os.environ.get(reads.API_ENV) or session.runbook.api.base or reads.DEFAULT_API,
                     cookie=cookie, profile_id=profile_id, identity_public_key=identity_public_key,
                     collection_id=collection_id or "primary")


def verify_reads(session: Session, target: ApiTarget, *, report_path: Path | None = None) -> Stored:
    return run_job(session, "verify-reads", lambda: reads.run_verify_reads(
        session.settings.database_url, session.settings.env_file, api=target.api, cookie=target.cookie,
        profile_id=target.profile_id, identity_public_key=target.identity_public_key,
        collection_id=target.collection_id), report_path=report_path, detail={"api": reads.redact_api(target.api)})
