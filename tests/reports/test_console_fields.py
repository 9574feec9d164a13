"""Every field the console writes into its reports is a typed model field, or a check detail
its type declares: a misspelt or undeclared name fails here instead of passing silently."""

from __future__ import annotations

import psycopg
from helpers import ROOT, apply_v2, undeclared

from cutover_tui.demo.seed import seed_legacy
from cutover_tui.reports.models import BackfillReport, ReconReport, VerifyCheck, VerifyReport
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.migrate import apply_legacy_baseline
from cutover_tui.work.recon import run_recon
from cutover_tui.work.verify import VerifyOptions, run_verify

STAMP = {"generatedAt": "2026-01-01T00:00:00.000Z"}


def test_the_console_writes_no_undeclared_field(empty_db_url):
    url = empty_db_url
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=30)  # with the planted anomalies: errors and warnings too
    recon = ReconReport.model_validate({**run_recon(url, sample_rows=50), **STAMP})
    apply_v2(url)
    backfill = BackfillReport.model_validate(Backfill(url, "tester", BackfillOptions()).run())
    with psycopg.connect(url, autocommit=True) as conn:  # a difference to find and repair
        conn.execute("UPDATE pixbooks SET name = name || ' (edited)' WHERE id = (SELECT min(id) FROM pixbooks)")
        conn.execute("DELETE FROM identities WHERE id = (SELECT max(id) FROM identities)")
    failing = VerifyReport.model_validate({**run_verify(url), **STAMP})
    assert any(not c.ok for c in failing.checks if c.type == "content")  # the failing shapes are covered too
    repaired = VerifyReport.model_validate({**run_verify(url, VerifyOptions(repair=True)), **STAMP})
    assert {c.type for c in repaired.checks} >= {"count", "content", "reconcile", "integrity", "sample", "repair"}
    assert sum(c.detail("requested") for c in repaired.checks if c.type == "repair") >= 2
    assert [undeclared(report) for report in (recon, backfill, failing, repaired)] == [[], [], [], []]
    assert backfill.errors and all(issue.count is not None for issue in backfill.errors)
    assert recon.tables and recon.anomalies and recon.estimate is not None


def test_a_detail_its_type_does_not_write_is_a_bug():
    check = VerifyCheck.model_validate({"type": "repair", "name": "repair:accounts", "ok": True, "requested": 3})
    assert check.detail("requested") == 3 and check.detail("failed") is None
    try:
        check.detail("requestd")
    except KeyError as exc:
        assert "repair check has no detail 'requestd'" in str(exc)
    else:
        raise AssertionError("a misspelt detail was read")
