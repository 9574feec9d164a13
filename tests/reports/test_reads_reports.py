"""The API read check's reports: upstream's output (`{ok, accountId, userCount, bookCount,
pixbookResolved}`, no checks, no time) loads as a verify-reads report and diffs against the console's."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from helpers import undeclared

from cutover_tui.cli import main
from cutover_tui.errors import BadInput
from cutover_tui.reports.diff import Side, compared, diff_reports, render_diff
from cutover_tui.reports.models import READS_SUMMARY, ReadsReport, VerifyReport, dump_report, parse_report
from cutover_tui.reports.present import file_kind, items, outcome_lines, summary
from cutover_tui.reports.store import load_report

UPSTREAM = {"ok": True, "accountId": "ws_1", "userCount": 3, "bookCount": 2, "pixbookResolved": True}


def console(user_count: int = 4, users_ok: bool = False) -> dict:
    """A console verify-reads body, as run_verify_reads writes it."""
    return {"ok": users_ok, "generatedAt": "2026-02-23T10:11:12.345Z", "accountId": "ws_1",
            "userCount": user_count, "bookCount": 2, "pixbookResolved": True, "api": "http://127.0.0.1:3000",
            "readStore": "v2", "flagsFrom": "env file", "aliasAccepted": False, "skipped": {},
            "checks": [{"type": "reads", "name": "session", "ok": True, "accountId": "ws_1", "workspaceId": "ws_1",
                        "cookieNames": ["better-auth.session_token"], "latencyMs": 3.0},
                       {"type": "reads", "name": "users", "ok": users_ok, "store": "v2", "expectedCount": 3,
                        "actualCount": user_count, "mismatchCount": 0 if users_ok else 1, "mismatches": [],
                        "accountIdsMatch": True, "latencyMs": 4.0}]}


def write(path, body: dict, mtime: float | None = None):
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_upstreams_output_loads_as_a_read_check_dated_by_its_file(tmp_path):
    when = datetime(2026, 2, 23, 9, 0, tzinfo=UTC)
    path = write(tmp_path / "reads.json", UPSTREAM, when.timestamp())
    report = load_report(path)
    assert isinstance(report, ReadsReport) and report.KIND == "verify-reads" and file_kind(report, str(path)) == \
        "verify-reads"
    assert report.generated_at == when and report.checks == [] and report.passed
    assert (report.account_id, report.user_count, report.book_count, report.pixbook_resolved) == ("ws_1", 3, 2, True)
    # Written back, it is the same object: no time, no checks added.
    assert json.loads(dump_report(report)) == UPSTREAM
    assert undeclared(report) == []
    assert "compares nothing" in summary(report)
    assert outcome_lines(report)[0] == "account ws_1: 3 users, 2 books, pixbook resolved"
    assert [item.name for item in items(report)] == [READS_SUMMARY]


def test_without_a_file_upstreams_output_needs_its_time(tmp_path):
    with pytest.raises(BadInput, match="generatedAt is missing"):
        parse_report(UPSTREAM, "Stored report x")
    with pytest.raises(BadInput, match="userCount: Input should be a valid integer"):
        load_report(write(tmp_path / "bad.json", {**UPSTREAM, "userCount": "3"}))


def test_the_consoles_read_check_is_a_read_check_and_keeps_upstreams_fields(tmp_path):
    report = load_report(write(tmp_path / "console.json", console()))
    assert isinstance(report, ReadsReport) and undeclared(report) == []
    assert json.loads(dump_report(report)) == console()
    # A plain verify stays a verify.
    plain = load_report(write(tmp_path / "verify.json", {"ok": True, "generatedAt": "2026-02-23T10:11:12.345Z",
                                                         "checks": [{"type": "count", "table": "a", "ok": True}]}))
    assert type(plain) is VerifyReport and plain.KIND == "verify"


def test_upstreams_output_diffs_against_a_console_report(tmp_path, capsys):
    before = write(tmp_path / "upstream.json", UPSTREAM, datetime(2026, 2, 23, 9, 0, tzinfo=UTC).timestamp())
    after = write(tmp_path / "console.json", console())
    diff = diff_reports(load_report(before), load_report(after))
    assert diff.kind == "verify-reads"
    entries = {entry.key: entry for entry in diff.entries}
    assert entries[READS_SUMMARY].status == "new_failure"
    assert entries[READS_SUMMARY].changes == {"userCount": (3, 4)}
    assert (entries["session"].status, entries["users"].status) == ("added", "new_failure")
    assert diff.worse and "read_check" in render_diff(diff)

    # The same through the CLI, either order of arguments as the files are dated.
    code = main(["diff", str(before), str(after), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["kind"] == "verify-reads"

    # Two passing runs that agree: nothing changed.
    again = write(tmp_path / "again.json", {**console(3, True), "generatedAt": "2026-02-24T10:11:12.345Z"})
    diff = diff_reports(load_report(before), load_report(again))
    assert {e.key: e.status for e in diff.entries}[READS_SUMMARY] == "unchanged" and not diff.worse


def test_a_read_check_and_a_verify_do_not_compare(tmp_path):
    reads = load_report(write(tmp_path / "upstream.json", UPSTREAM))
    verify = load_report(write(tmp_path / "verify.json", {"ok": True, "generatedAt": "2026-02-23T10:11:12.345Z",
                                                          "checks": [{"type": "count", "table": "a", "ok": True}]}))
    with pytest.raises(BadInput, match="Cannot compare a verify-reads report with a verify report"):
        diff_reports(reads, verify)
    with pytest.raises(BadInput):
        compared(Side(reads, "verify-reads", "file a"), Side(verify, "verify", "file b"))
