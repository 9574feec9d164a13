"""The report screens on a real database: the list, one report, a file, a diff side by side."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from helpers import DATA as TEST_DATA
from textual.widgets import DataTable, Input

from cutover_tui.reports.models import ReconReport
from cutover_tui.reports.present import items
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.report import ReportScreen, details
from cutover_tui.tui.screens.report_diff import ReportDiffScreen
from cutover_tui.tui.screens.report_path import ReportPathScreen
from cutover_tui.tui.screens.reports import ReportsScreen

from .support import screen_text, settings_for, settle, store, two_verifies, verify_body

pytestmark = pytest.mark.anyio

DATA = TEST_DATA / "reports"
def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def toasts(app) -> list[str]:
    return [toast.render().plain for toast in app.screen.query("Toast")]


async def opened(app, pilot) -> ReportsScreen:
    await settle(pilot)
    screen = ReportsScreen()
    app.push_screen(screen)
    await settle(pilot)
    return screen


async def test_the_list_shows_saved_reports_newest_first(v2_db_url, env_file):
    older, newer = two_verifies(v2_db_url)
    backfill = store(v2_db_url, "backfill", json.loads((DATA / "upstream-backfill.json").read_text()))
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await opened(app, pilot)
        table = screen.query_one(DataTable)
        assert [row[-1] for row in rows(table)] == [backfill.id, newer.id, older.id]
        assert rows(table)[1][1:5] == ["2026-01-06 10:00:00", "verify", "FAIL", "G"]
        assert rows(table)[0][1:5] == ["2026-02-23 10:02:44", "backfill", "FAIL", "—"]
        await pilot.press("question_mark")
        await pilot.pause()
        help_text = screen_text(app)
        assert "Every report saved in the database" in help_text
        assert all(key in help_text for key in ("Open", "Mark", "Diff prev", "Open file"))


async def test_enter_opens_a_verify_with_pass_fail_figures_and_example_rows(v2_db_url, env_file):
    two_verifies(v2_db_url)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(app, pilot)
        await pilot.press("enter")  # the newest: the duplicates check fails
        await settle(pilot)
        assert isinstance(app.screen, ReportScreen)
        checks = rows(app.screen.query_one(DataTable))
        assert [row[:2] for row in checks] == [["PASS", "count:accounts"],
                                               ["FAIL", "identity_fingerprint_duplicates"],
                                               ["PASS", "identity_expected_collections"]]
        assert checks[0][2] == "oldTable=platform_workspaces  oldCount=20  newCount=20"
        assert "FAIL" in screen_text(app) and "1 of 3 checks failed" in screen_text(app)
        await pilot.press("down")
        await pilot.pause()
        details = screen_text(app)
        assert "examples (2):" in details
        assert '"id": "mu_1"' in details


async def test_values_from_the_report_are_shown_literally(v2_db_url, env_file):
    two_verifies(v2_db_url)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(app, pilot)
        await pilot.press("enter", "down")
        await settle(pilot)
        figures = rows(app.screen.query_one(DataTable))[1][2]
        assert "note=[red]x[/red] \\x1b[31mred" in figures  # the escape shown, not obeyed
        details = screen_text(app)
        assert "note: [red]x[/red] \\x1b[31mred" in details
        assert '"display_name": "[red]x[/red] \\u001b[31mred"' in details  # example rows as JSON
        assert "\x1b" not in details + figures


async def test_two_marked_verifies_diff_side_by_side_with_the_new_failure_marked(v2_db_url, env_file):
    older, newer = two_verifies(v2_db_url)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await opened(app, pilot)
        await pilot.press("space", "down", "space")  # the newer first: order of marking does not matter
        assert screen.marked == [newer.id, older.id]
        assert rows(screen.query_one(DataTable))[0][0] == "*"
        await pilot.press("equals_sign")
        await settle(pilot)
        assert isinstance(app.screen, ReportDiffScreen)
        assert (app.screen.before.source, app.screen.after.source) == (f"saved {older.id}", f"saved {newer.id}")
        entries = {row[1]: row for row in rows(app.screen.query_one(DataTable))}
        assert entries["identity_fingerprint_duplicates"] == [
            "+FAIL", "identity_fingerprint_duplicates", "PASS\ncount 0", "FAIL\ncount 2"]
        assert entries["identity_expected_collections"] == [
            "FIXED", "identity_expected_collections", "FAIL\nmismatchCount 2", "PASS\nmismatchCount 0"]
        assert entries["count:accounts"] == ["=", "count:accounts", "PASS", "PASS"]
        text = screen_text(app)
        assert "checks: 1 newly failing, 1 fixed, 1 unchanged; worse than before" in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_one_marked_diffs_against_the_selected_and_a_third_mark_is_refused(v2_db_url, env_file):
    older, _newer = two_verifies(v2_db_url)
    third = store(v2_db_url, "verify", verify_body(datetime(2026, 1, 7, tzinfo=UTC), duplicates=0))
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await opened(app, pilot)
        await pilot.press("space", "down", "down", "equals_sign")  # the newest marked, the oldest selected
        await settle(pilot)
        assert isinstance(app.screen, ReportDiffScreen)
        assert (app.screen.before.source, app.screen.after.source) == (f"saved {older.id}", f"saved {third.id}")
        await pilot.press("escape", "space", "up", "space")
        await pilot.pause()
        assert "Two reports are marked already; unmark one with space first." in toasts(app)
        assert screen.marked == [third.id, older.id]


async def test_p_diffs_against_the_previous_of_its_kind(v2_db_url, env_file):
    older, _newer = two_verifies(v2_db_url)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await opened(app, pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ReportDiffScreen)
        assert app.screen.before.source == f"saved {older.id}"
        await pilot.press("escape", "down", "p")
        await settle(pilot)
        assert isinstance(app.screen, ReportsScreen)
        assert ("No verify report was saved before this one, so there is nothing to compare it with."
                in " ".join(toasts(app)))


async def test_a_report_file_opens_and_compares_with_the_latest_saved(v2_db_url, env_file, tmp_path):
    _older, newer = two_verifies(v2_db_url)
    path = tmp_path / "accounts-v2-verify-report-upstream.json"
    path.write_text((DATA / "upstream-verify.json").read_text())
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(app, pilot)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, ReportPathScreen)
        app.screen.query_one(Input).value = str(path)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ReportScreen)
        text = screen_text(app)
        assert f"file {path}" in text and "verify report · 2026-02-23 10:11:12 UTC · FAIL" in text
        assert ["FAIL", "count:account_members"] in [row[:2] for row in rows(app.screen.query_one(DataTable))]
        await pilot.press("equals_sign")
        await settle(pilot)
        assert isinstance(app.screen, ReportDiffScreen)
        assert (app.screen.before.source, app.screen.after.source) == (f"saved {newer.id}", f"file {path}")


async def test_a_bad_path_is_one_sentence_and_nothing_else(v2_db_url, env_file, tmp_path):
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await opened(app, pilot)
        await pilot.press("o")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "nope.json")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen
        assert toasts(app) == [f"Bad input\nReport file {tmp_path / 'nope.json'} does not exist; check the path."]
        await pilot.press("o")
        await pilot.pause()
        await pilot.press("escape")  # cancelled: nothing loaded, nothing said
        await settle(pilot)
        assert app.screen is screen and len(toasts(app)) == 1


async def test_a_backfill_shows_stages_errors_and_their_rows(v2_db_url, env_file):
    store(v2_db_url, "backfill", json.loads((DATA / "upstream-backfill.json").read_text()))
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(app, pilot)
        await pilot.press("enter")
        await settle(pilot)
        items = rows(app.screen.query_one(DataTable))
        assert items[0][:2] == ["stage", "accounts"] and "afterCount=20" in items[0][2]
        error = next(i for i, row in enumerate(items) if row[1].startswith("pixbooks: identity account"))
        assert items[error][0] == "ERROR" and "rows=2" in items[error][2]
        app.screen.query_one(DataTable).move_cursor(row=error)
        await pilot.pause()
        assert '"id": "bk_0117"' in screen_text(app)


async def test_recon_opens_but_cannot_be_diffed(v2_db_url, env_file):
    body = json.loads((DATA / "upstream-recon.json").read_text())
    store(v2_db_url, "recon", body)
    store(v2_db_url, "recon", body | {"generatedAt": "2026-02-24T09:58:01.112Z"})
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await opened(app, pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert ["table", "platform_workspaces"] in [row[:2] for row in rows(app.screen.query_one(DataTable))]
        await pilot.press("escape", "space", "down", "space", "equals_sign")
        await settle(pilot)
        assert app.screen is screen
        assert any("Recon reports describe schemas and hold no checks to compare" in t for t in toasts(app))


async def test_odd_console_fields_in_a_recon_file_do_not_break_it():
    body = json.loads((DATA / "upstream-recon.json").read_text()) | {
        "tables": ["not", "a", "dict"], "anomalies": {"pixbooks": "x", "identities": {"dup": 3}},
        "problems": 3, "missingTables": "auth_users", "estimate": {"seconds": 1.5, "tables": {}}}
    shown = items(ReconReport.model_validate(body))
    assert [(item.tag, item.name) for item in shown][-2:] == [("anomaly", "identities: dup"),
                                                             ("estimate", "backfill duration")]
    assert details(shown[-1]).plain.splitlines() == ["estimate  backfill duration", "seconds: 1.5", "tables: none"]


async def test_leaving_the_list_before_its_rows_arrive_is_no_failure(v2_db_url, env_file):
    """o, enter, d at once (as a new operator did, 3 of 3 tries): the list's reload lands after
    its screen is closed and is dropped; no "Unexpected failure", the dashboard stays."""
    from cutover_tui.tui.screens.dashboard import DashboardScreen

    two_verifies(v2_db_url)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        for _ in range(3):
            await pilot.press("o", "enter", "d")
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen)
            assert not any("Unexpected failure" in text for text in toasts(app)), toasts(app)
