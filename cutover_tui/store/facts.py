"""Gather the promotion matrix's facts from the env file, the history, reports and journal."""

from __future__ import annotations

from datetime import datetime

import psycopg

from ..reports import store as report_store
from ..rules.flags import Flags
from ..rules.mapping import TABLES
from ..rules.matrix import BackfillFact, DeployFact, Facts, ReportFact, VerifyFact
from ..rules.runbook import Runbook
from . import history, journal
from .db import scalar

# Enough verifies for any sane archive gate, without reading the whole history.
_VERIFIES_KEPT = 100


def _fact(report: report_store.StoredReport | None) -> ReportFact | None:
    return ReportFact(at=report.generated_at, ok=report.ok) if report else None


# Per table, whether its latest backfill run (full or partial) was clean: no error of that
# table but those accepted as lost, and none of the run as a whole (a cancelled run's); a table
# no run covered is missing.
_TABLE_RUNS = """
    SELECT DISTINCT ON (t.name) t.name,
           NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(r.body->'errors', '[]')) e
                       WHERE (e->>'stage' = t.name OR NOT coalesce(e->>'stage' = ANY(%(tables)s), false))
                         -- an error class whose rows an operator accepted as lost is settled
                         AND NOT coalesce((SELECT count(*) FROM cutover.accepted_losses a
                                           WHERE a.table_name = e->>'stage' AND a.issue = e->>'error')
                                          >= (e->>'count')::bigint, false))
    FROM unnest(%(tables)s::text[]) AS t(name)
    JOIN cutover.reports r ON r.kind = 'backfill'
     AND r.body->'stages' @> jsonb_build_array(jsonb_build_object('stage', t.name))
    ORDER BY t.name, r.generated_at DESC, r.id DESC"""


def _backfill_fact(conn: psycopg.Connection) -> BackfillFact | None:
    latest = report_store.latest(conn, "backfill")
    if latest is None:
        return None
    tables = [t.v2 for t in TABLES]
    clean: dict[str, bool] = dict(conn.execute(_TABLE_RUNS, {"tables": tables}).fetchall())
    pending = tuple(t for t in tables if not clean.get(t, False))
    return BackfillFact(at=latest.generated_at, ok=not pending, pending=pending)


def _deploy_fact(conn: psycopg.Connection) -> DeployFact | None:
    last = journal.last_of(conn, ("deploy",))
    if last is None:
        return None
    since = last.detail.get("since")
    return DeployFact(at=last.at, flags=last.flags_after, read_back=last.detail.get("how") != journal.CONFIRMED,
                      since=datetime.fromisoformat(since) if since else (last.at if last.flags_after else None))


def load_facts(conn: psycopg.Connection, flags: Flags, runbook: Runbook, now: datetime) -> Facts:
    recorded = history.history(conn) or {}
    last_flags = journal.last_of(conn, journal.FLAG_WRITING_ACTIONS)
    last_rollback = journal.last_of(conn, ("rollback-opened", "rollback-closed"))
    rollback_open = last_rollback is not None and last_rollback.action == "rollback-opened"
    window = journal.last_of(conn, ("rollback-opened", "rollback-window-closed"))
    archived = journal.last_of(conn, ("archive",)) is not None or bool(scalar(
        conn, "SELECT to_regclass('legacy.platform_workspaces_legacy') IS NOT NULL"))
    keep = max(_VERIFIES_KEPT, runbook.gates.passing_verifies_before_archive)
    return Facts(
        now=now,
        flags=flags,
        legacy_applied=not history.missing_legacy(recorded) if recorded else False,
        v2_applied=history.V2_MIGRATION in recorded,
        recon=_fact(report_store.latest(conn, "recon")),
        backfill=_backfill_fact(conn),
        verifies=tuple(VerifyFact(at=r.generated_at, ok=r.ok, stage=r.stage)
                       for r in report_store.recent(conn, "verify", keep)),
        recorded_flags=last_flags.flags_after if last_flags else None,
        flags_since=last_flags.at if last_flags else None,
        rollback_opened_at=last_rollback.at if last_rollback is not None and rollback_open else None,
        rollback_window_closed=window is not None and window.action == "rollback-window-closed",
        archived=archived,
        deployed=_deploy_fact(conn),
        reads_check=_fact(report_store.latest(conn, "verify-reads")),
    )
