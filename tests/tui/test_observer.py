"""The console as `cutover serve` runs it for each browser: titled observer, every step and dialog
refused as served read-only (the palette reaches them without the dashboard's keys), another
console's backfill shown from the database."""

from __future__ import annotations

import psycopg
import pytest

from cutover_tui.ops.activity import RunningJob, TableProgress
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.dashboard import DashboardScreen, activity_line

from .support import settle, toasts

pytestmark = pytest.mark.anyio


async def test_an_observer_refuses_every_dialog_and_job(tui_settings, v2_db_url):
    app = make_app(tui_settings.watching_only())
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        assert "observer" in app.title and "lock free" in app.title
        for open_step in (app.open_migrate, app.open_archive, app.open_close_window, app.open_rollback,
                          app.open_deploy, lambda: app.open_job("backfill"), lambda: app.open_job("verify-reads")):
            open_step()
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        # Each refusal reached the operator (M lists them); only the newest two stay on screen.
        assert " ".join(note.message for note in app.messages).count("Served read-only") == 8
        assert toasts(app).count("Served read-only") == 2
    with psycopg.connect(v2_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal").fetchone()[0] == 0  # nothing journaled


def test_another_consoles_backfill_in_one_line():
    job = RunningJob(kind="backfill", operator="ann", pass_no=2,
                     tables=(TableProgress(table="accounts", done=500, total=1000),
                             TableProgress(table="workspaces", done=7, total=None)))
    assert activity_line(job).plain == ("backfill running by ann, pass 2: accounts █████░░░░░  50% 500/~1,000 · "
                                        "workspaces 7 rows")
    assert "verify running" in activity_line(RunningJob(kind="verify")).plain
