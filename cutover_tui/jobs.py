"""Long jobs (recon, backfill, verify) as the runbook wants them run: behind their gate,
with the report path checked before any work, under the operator lock, and with the
report saved (file and row) and journaled when they end, even when cancelled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import backfill as backfill_
from . import journal, reads, reports
from . import recon as recon_
from . import verify as verify_
from .backfill import BackfillOptions
from .db import server_now
from .envfile import READS
from .mapping import BY_NAME, TABLES
from .errors import BadInput, CutoverError
from .matrix import assess, verify_stage
from .session import Session
from .transitions import refuse
from .verify import VerifyOptions


def run_job(session: Session, kind: reports.ReportKind, work: Callable[[], dict[str, Any]], *,
            report_path: Path | None = None, detail: dict[str, Any] | None = None,
            action: journal.JournalAction | None = None,
            detail_from: Callable[[reports.Report], dict[str, Any]] | None = None,
            ) -> tuple[reports.StoredReport, reports.Report]:
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
        reports.check_report_path(report_path)
    else:
        reports.check_report_dir(session.settings.report_dir)
    with session.operator_lock():
        # The report's time is the server's, like every time a gate compares with it.
        body = {**work(), "generatedAt": reports.js_iso(server_now(session.conn))}
        try:
            report = reports.MODELS[kind].model_validate(body)
        except ValueError as exc:  # our own engine broke the §4 shape: say so, keep nothing
            raise CutoverError(f"The {kind} produced a report that does not fit its shape ({exc}).") from None
        stored = reports.save_report(session.conn, report, kind=kind, report_dir=session.settings.report_dir,
                                     path=report_path, stage=verify_stage(facts, session.runbook))
        extra = detail_from(report) if detail_from is not None else {}
        session.record(action, report_id=stored.id,
                       detail={**(detail or {}), **extra, "ok": stored.ok, "path": stored.path},
                       flags_before=assessment.flags, flags_after=assessment.flags)
    return stored, report


# --- the jobs, as the CLI and the console both run them -------------------------------------

Stored = tuple[reports.StoredReport, reports.Report]


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
        return backfill_.Backfill(session.settings.database_url, session.settings.operator, options,
                                  progress=progress, cancel=cancel, pause=pause).run()

    return run_job(session, "backfill", work, report_path=report_path, detail={"tables": list(options.tables)})


def verify(session: Session, options: VerifyOptions | None = None, *,
           progress: verify_.ProgressCallback | None = None, cancel: threading.Event | None = None,
           on_check: verify_.CheckCallback | None = None, report_path: Path | None = None) -> Stored:
    options = options or VerifyOptions()
    return run_job(session, "verify", lambda: verify_.run_verify(
        session.settings.database_url, options, progress=progress, cancel=cancel, on_check=on_check),
        report_path=report_path, detail={"repair": options.repair, "sample_size": options.sample_size},
        action="repair" if options.repair else "verify", detail_from=_repaired_rows if options.repair else None)


def _repaired_rows(report: reports.Report) -> dict[str, Any]:
    """A repair's journal row carries the rows it wrote, per table."""
    rows = {}
    for check in report.checks:
        extra = check.model_extra or {}
        if check.type == "repair":
            rows[check.table] = {key: extra[key] for key in ("requested", "inserted", "updated", "failed")}
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
    cookie = cookie or os.environ.get(reads.COOKIE_ENV)
    if not cookie:
        raise BadInput(f"No session cookie: pass --cookie or set {reads.COOKIE_ENV}.")
    if bool(profile_id) != bool(identity_public_key):
        raise BadInput("--profile-id and --identity-public-key go together: give both or neither.")
    base = api or os.environ.get(reads.API_ENV) or session.runbook.api.base or reads.DEFAULT_API
    return ApiTarget(api=reads.check_api_url(base), cookie=cookie, profile_id=profile_id, identity_public_key=identity_public_key,
                     collection_id=collection_id or "primary")


def verify_reads(session: Session, target: ApiTarget, *, report_path: Path | None = None) -> Stored:
    return run_job(session, "verify-reads", lambda: reads.run_verify_reads(
        session.settings.database_url, session.settings.env_file, api=target.api, cookie=target.cookie,
        profile_id=target.profile_id, identity_public_key=target.identity_public_key,
        collection_id=target.collection_id), report_path=report_path, detail={"api": reads.redact_api(target.api)})


# --- what a job will do, shown before it starts -----------------------------------------------

JobKind = Literal["recon", "backfill", "verify", "repair", "verify-reads"]
_SUMMARIES: dict[str, tuple[str, str | None]] = {
    "recon": ("Reads every legacy table: columns, constraints, row counts, the anomalies the backfill "
              "will report, and an estimate of its time from a rolled-back sample.",
              None),
    "backfill": ("Copies legacy rows into the v2 tables by primary-key ranges, each range committed with "
                 "its checkpoint, two workers; rows already equal are left untouched, a cancelled run resumes.",
                 "Inserts and updates v2 rows only; legacy is never written."),
    "verify": ("Compares v2 with legacy table by table (counts and every rule-owned column), then "
               "integrity, duplicates and samples.", None),
    "repair": ("Runs verify, re-copies exactly the rows it finds missing or different, and checks them again.",
               "Inserts and updates the v2 rows verify finds wrong; legacy is never written."),
    "verify-reads": ("Asks the account API for the session, users, identities and books, and compares "
                     "its answers with the read store the flags declare.", None),
}


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
    summary, writes = _SUMMARIES[kind]
    tables: dict[str, int] = {}
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
        last = reports.latest(conn, "verify")
        if last is not None:
            previous = last.id
            notes.append(f"Its checks are compared live with verify {last.id} of "
                         f"{last.generated_at:%Y-%m-%d %H:%M} UTC ({'passed' if last.ok else 'FAILED'}).")
    else:
        base = api or os.environ.get(reads.API_ENV) or session.runbook.api.base or reads.DEFAULT_API
        notes.append(f"API {reads.redact_api(base)}; reads are compared with "
                     f"{'v2' if session.read_env().declared[READS] else 'legacy'}, as the env file declares. "
                     "The session cookie is never shown or written.")
    return JobPlan(kind=kind, summary=summary, writes=writes, tables=tables, notes=notes,
                   refused=list(step.reasons) if step is not None and not step.allowed else [],
                   previous_verify=previous)
