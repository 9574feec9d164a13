"""The remedies screen: x from the dashboard, a class's rule and rows, a remedy shown with its SQL
and applied after y, a loss accepted with a typed reason."""

from __future__ import annotations

import psycopg
import pytest
from textual.widgets import DataTable

from cutover_tui.ops.remedies import CLASSES
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.confirm import Confirm
from cutover_tui.tui.screens.remedies import AcceptLoss, RemediesScreen

from .support import screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio

MOVE = "pixbooks:identity-belongs-to-another-account"


def journal_actions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [a for (a,) in conn.execute("SELECT action FROM cutover.journal ORDER BY id")]


async def test_x_shows_the_classes_and_a_remedy_runs_after_its_sql_is_shown(backfilled_url, env_file):
    app = make_app(settings_for(backfilled_url, env_file))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RemediesScreen)
        await wait_until(pilot, lambda: len(screen.states) == len(CLASSES))
        table = screen.query_one(DataTable)
        table.move_cursor(row=[s.key for s in screen.states].index(MOVE))
        await pilot.pause()
        assert "rule: A book lands only in the account of its identity" in screen_text(app)
        await wait_until(pilot, lambda: bool(screen.ids))  # every affected id, a page at a time
        assert f"ids 1–{len(screen.ids):,} of" in screen_text(app) and screen.ids[0] in screen_text(app)
        await pilot.press("1")
        await settle(pilot)
        assert isinstance(app.screen, Confirm)
        shown = screen_text(app)
        assert "UPDATE platform_books b SET workspace_id = mu.workspace_id" in shown and "in platform_books" in shown
        await pilot.press("y")
        await settle(pilot)
        assert journal_actions(backfilled_url)[-1] == "remedy"
        await wait_until(pilot, lambda: next(s for s in screen.states if s.key == MOVE).count == 0)

        movable = next(s for s in screen.states if s.count and s.kind == "error")
        table.move_cursor(row=screen.states.index(movable))
        await pilot.press("l")
        await settle(pilot)
        assert isinstance(app.screen, AcceptLoss)
        await pilot.press(*"planted by the seed", "enter")
        await settle(pilot)
        assert journal_actions(backfilled_url)[-1] == "accept-loss"
        await wait_until(pilot, lambda: next(s for s in screen.states if s.key == movable.key).accepted
                         == movable.count)
        await pilot.press("escape")
        await wait_until(pilot, lambda: "rows accepted as lost by alice: planted by the seed" in screen_text(app))


async def test_x_on_a_backfill_report_opens_the_remedies(backfilled_url, env_file):
    from cutover_tui.ops import saved_reports
    from cutover_tui.reports import store as report_store
    from cutover_tui.store.session import Session
    from cutover_tui.tui.screens.report import ReportScreen
    from cutover_tui.work import jobs

    with Session(settings_for(backfilled_url, env_file)) as session:
        jobs.backfill(session)  # a report saved as the console saves it (errors: the seed's anomalies)
        stored = report_store.latest(session.conn, "backfill")
        report = saved_reports.load(session, stored=stored)
    app = make_app(settings_for(backfilled_url, env_file))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.push_screen(ReportScreen(report, stored=stored))
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, RemediesScreen)
