"""Gather the promotion matrix's facts from the env file, the history, reports and journal."""

from __future__ import annotations

from datetime import datetime

import psycopg

from . import journal, migrate, reports
from .flags import Flags
from .matrix import Facts, ReportFact, VerifyFact
from .runbook import Runbook

# Enough verifies for any sane archive gate, without reading the whole history.
_VERIFIES_KEPT = 100


def _fact(report: reports.StoredReport | None) -> ReportFact | None:
    return ReportFact(at=report.generated_at, ok=report.ok) if report else None


def load_facts(conn: psycopg.Connection, flags: Flags, runbook: Runbook, now: datetime) -> Facts:
    recorded = migrate.history(conn) or {}
    last_flags = journal.last_of(conn, journal.FLAG_WRITING_ACTIONS)
    last_rollback = journal.last_of(conn, ("rollback-opened", "rollback-closed"))
    rollback_open = last_rollback is not None and last_rollback.action == "rollback-opened"
    window = journal.last_of(conn, ("rollback-opened", "rollback-window-closed"))
    archived = journal.last_of(conn, ("archive",)) is not None or conn.execute(
        "SELECT to_regclass('legacy.platform_workspaces_legacy') IS NOT NULL").fetchone()[0]
    keep = max(_VERIFIES_KEPT, runbook.gates.passing_verifies_before_archive)
    return Facts(
        now=now,
        flags=flags,
        legacy_applied=not migrate.missing_legacy(recorded) if recorded else False,
        v2_applied=migrate.V2_MIGRATION in recorded,
        recon=_fact(reports.latest(conn, "recon")),
        backfill=_fact(reports.latest(conn, "backfill")),
        verifies=tuple(VerifyFact(at=r.generated_at, ok=r.ok, stage=r.stage)
                       for r in reports.recent(conn, "verify", keep)),
        recorded_flags=last_flags.flags_after if last_flags else None,
        flags_since=last_flags.at if last_flags else None,
        rollback_opened_at=last_rollback.at if rollback_open else None,
        rollback_window_closed=window is not None and window.action == "rollback-window-closed",
        archived=archived,
    )
