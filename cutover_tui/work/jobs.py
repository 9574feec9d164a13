"""Long jobs (recon, backfill, verify) as the runbook wants them run: behind their gate,
with the report path checked before any work, under the operator lock, and with the
report saved (file and row) and journaled when they end, even when cancelled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from ..errors import BadInput, CutoverError
from ..files.envfile import READS
from ..reports import store as report_store
from ..reports.models import MODELS, Report, ReportKind, VerifyReport, js_iso
from ..rules import steps
from ..rules.mapping import BY_NAME, TABLES
from ..rules.matrix import assess, refuse, verify_stage
from ..rules.steps import JobKind
from ..store import journal, losses
from ..store.db import scalar, server_now
from ..store.session import Session
from . import api_check
from . import backfill as backfill_
from . import recon as recon_
from . import verify as verify_
from .backfill import BackfillOptions
from .verify import VerifyOptions


def run_job(session: Session, kind: ReportKind, work: Callable[[], dict[str, Any]], *,
            report_path: Path | None = None, detail: dict[str, Any] | None = None,
            action: journal.JournalAction | None = None,
            detail_from: Callable[[Report], dict[str, Any]] | None = None,
            ) -> tuple[report_store.StoredReport, Report]:
    """Run `work` (which returns a §4 report body) and keep its report; returns both.
    `action` (default: `kind`) is the matrix step and the journal action; `detail_from`
    adds to the journal what the report says. A job the matrix has a step for runs only
    when that step is allowed; the API read check only reads, so it has none."""
    action = action or kind
    facts = session.facts()
    assessment = session.watching(assess(facts, session.runbook))
    step = next((s for s in assessment.steps if s.action == action), None)
    if step is not None and not step.allowed:
        raise refuse(step)
    if report_path is not None:
        report_store.check_report_path(report_path)
    else:
        report_store.check_report_dir(session.settings.report_dir)
    with session.operator_lock():
        # The report's time is the server's, like every time a gate compares with it.
        body = {**work(), "generatedAt": js_iso(server_now(session.conn))}
        try:
            report = cast(Report, MODELS[kind].model_validate(body))
        except ValueError as exc:  # our own engine broke the §4 shape: say so, keep nothing
            raise CutoverError(f"The {kind} produced a report that does not fit its shape ({exc}).") from None
        stored = report_store.save_report(session.conn, report, kind=kind, report_dir=session.settings.report_dir,
                                     path=report_path, stage=verify_stage(facts, session.runbook))
        extra = detail_from(report) if detail_from is not None else {}
        session.record(action, report_id=stored.id,
                       detail={**(detail or {}), **extra, "ok": stored.ok, "path": stored.path},
                       flags_before=assessment.flags, flags_after=assessment.flags)
    return stored, report


# --- the jobs, as the CLI and the console both run them -------------------------------------

Stored = tuple[report_store.StoredReport, Report]


def recon(session: Session, *, sample_rows: int = 2000, progress: recon_.ProgressCallback | None = None,
          report_path: Path | None = None) -> Stored:
    if sample_rows < 0:
        raise BadInput(f"--sample-rows must be 0 or more (got {sample_rows}).")
    return run_job(session, "recon", lambda: recon_.run_recon(session.settings.database_url, sample_rows=sample_rows,
                                                              progress=progress), report_path=report_path)


def backfill(session: Session, options: BackfillOptions | None = None, *,
             progress: backfill_.ProgressCallback | None = None, cancel: threading.Event | None = None,
             pause: threading.Event | None = None, report_path: Path | None = None) -> Stored:
    options = options or BackfillOptions()

    def work() -> dict[str, Any]:
        backfill_.check_ready(session.conn, options.tables)
        body = backfill_.Backfill(session.settings.database_url, session.settings.operator, options,
                                  progress=progress, cancel=cancel, pause=pause).run()
        accepted = losses.by_class(session.conn)  # carried in every report after an accepted loss
        return body | ({"acceptedLosses": accepted} if accepted else {})

    return run_job(session, "backfill", work, report_path=report_path, detail={"tables": list(options.tables)})


def verify(session: Session, options: VerifyOptions | None = None, *,
           progress: verify_.ProgressCallback | None = None, cancel: threading.Event | None = None,
           on_check: verify_.CheckCallback | None = None, report_path: Path | None = None) -> Stored:
    # What "v2 matches legacy" means depends on the stage the verify counts for, and in E' on when it began.
    facts = session.facts()
    options = (options or VerifyOptions()).model_copy(
        update={"stage": verify_stage(facts, session.runbook), "stage_began": facts.stage_began})
    # The latest verify's findings, which this one trusts where nothing changed since (unless `full`).
    return run_job(session, "verify", lambda: verify_.run_verify(
        session.settings.database_url, options, progress=progress, cancel=cancel, on_check=on_check,
        reference=_latest_reference(session.conn)),
        report_path=report_path, detail={"repair": options.repair, "sample_size": options.sample_size},
        action="repair" if options.repair else "verify", detail_from=_repaired_rows if options.repair else None)


def _latest_reference(conn) -> dict[str, Any] | None:
    """What the latest verify left a later one to trust (`reference` of its report), if anything."""
    return scalar(conn, "SELECT (SELECT body -> 'reference' FROM cutover.reports WHERE kind = 'verify' "
                        "ORDER BY generated_at DESC LIMIT 1)")


def _repaired_rows(report: Report) -> dict[str, Any]:
    """A repair's journal row carries the rows it wrote, per table."""
    rows = {}
    for check in report.checks if isinstance(report, VerifyReport) else ():
        if check.type == "repair":
            rows[check.table] = {key: check.detail(key) for key in ("requested", "inserted", "updated", "failed")}
    return {"rows": rows}


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
    cookie = cookie or os.environ.get(api_check.COOKIE_ENV)
    if not cookie:
        raise BadInput(f"No session cookie: pass --cookie or set {api_check.COOKIE_ENV}.")
    if bool(profile_id) != bool(identity_public_key):
        raise BadInput("--profile-id and --identity-public-key go together: give both or neither.")
    base = api or os.environ.get(api_check.API_ENV) or session.runbook.api.base or api_check.DEFAULT_API
    return ApiTarget(api=api_check.check_api_url(base), cookie=cookie, profile_id=profile_id,
                     identity_public_key=identity_public_key, collection_id=collection_id or "primary")


def verify_reads(session: Session, target: ApiTarget, *, report_path: Path | None = None) -> Stored:
    return run_job(session, "verify-reads", lambda: api_check.run_verify_reads(
        session.settings.database_url, session.settings.env_file, api=target.api, cookie=target.cookie,
        profile_id=target.profile_id, identity_public_key=target.identity_public_key,
        collection_id=target.collection_id), report_path=report_path, detail={"api": api_check.redact_api(target.api)})


# --- what a job will do, shown before it starts -----------------------------------------------

class JobPlan(BaseModel):
    kind: JobKind
    summary: str
    writes: str | None  # None: read-only
    tables: dict[str, int | None]  # the tables it walks, with the planner's row estimate if it has one
    notes: list[str]
    refused: list[str]  # the matrix's reasons when the runbook does not allow it now
    previous_verify: str | None = None  # id of the verify the live diff compares against


def _estimate(conn, table: str) -> int | None:
    """The planner's row count; None for a table never analysed (reltuples -1) or missing."""
    row = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                       (f"public.{table}",)).fetchone()
    return row[0] if row and row[0] >= 0 else None


def plan(session: Session, kind: JobKind, api: str | None = None) -> JobPlan:
    """What `kind` will do here and now, and whether the runbook lets it run; `api` is the
    read check's API when the caller already knows it."""
    conn = session.conn
    step = next((s for s in session.assess().steps if s.action == kind), None)
    summary, writes = steps.job(kind).summary, steps.job(kind).writes
    tables: dict[str, int | None] = {}
    notes: list[str] = []
    previous = None
    if kind == "recon":
        tables = {t.legacy: _estimate(conn, t.legacy) for t in TABLES}
    elif kind == "backfill":
        options = BackfillOptions()
        tables = {name: _estimate(conn, BY_NAME[name].legacy) for name in options.tables}
        notes.append(f"{options.workers} workers, ranges sized toward {options.target_seconds:g} s transactions.")
        run = conn.execute("SELECT id, state, started_at FROM cutover.backfill_runs WHERE state IN "
                           "('running', 'cancelled', 'failed') ORDER BY id DESC LIMIT 1").fetchone()
        if run:
            notes.append(f"Resumes run {run[0]} ({run[1]}, started {run[2]:%Y-%m-%d %H:%M} UTC): "
                         "its finished ranges are kept.")
    elif kind in ("verify", "repair"):
        tables = {name: _estimate(conn, name) for name in verify_.COUNT_TABLES}
        last = report_store.latest(conn, "verify")
        if last is not None:
            previous = last.id
            notes.append(f"Its checks are compared live with verify {last.id} of "
                         f"{last.generated_at:%Y-%m-%d %H:%M} UTC ({'passed' if last.ok else 'FAILED'}).")
            if _latest_reference(conn) is not None:
                notes.append("Rows nothing wrote since it found them matching are read by key alone "
                             "(`cutover verify --full` reads every row).")
    else:
        base = api or os.environ.get(api_check.API_ENV) or session.runbook.api.base or api_check.DEFAULT_API
        notes.append(f"API {api_check.redact_api(base)}; reads are compared with "
                     f"{'v2' if session.read_env().declared[READS] else 'legacy'}, as the env file declares. "
                     "The session cookie is never shown or written.")
    return JobPlan(kind=kind, summary=summary, writes=writes, tables=tables, notes=notes,
                   refused=list(step.reasons) if step is not None and not step.allowed else [],
                   previous_verify=previous)


def plan_with_previous(session: Session, kind: JobKind, api: str | None = None) -> tuple[JobPlan, VerifyReport | None]:
    """The plan, and for a verify the report its checks are compared with as they complete."""
    planned = plan(session, kind, api)
    previous = None
    if planned.previous_verify is not None:
        loaded = report_store.load_stored(session.conn, planned.previous_verify)
        previous = loaded if isinstance(loaded, VerifyReport) else None
    return planned, previous
