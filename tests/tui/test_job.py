"""Long jobs on screen with a real database: pause and cancel a backfill, the live diff of a
verify against the previous one, and the job going on while the operator looks elsewhere."""

from __future__ import annotations

import psycopg
import pytest
from helpers import record_report

from cutover_tui.demo.seed import seed_legacy
from cutover_tui.rules.mapping import TABLES
from cutover_tui.tui.app import make_app
from cutover_tui.tui.running_job import JobRun
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.tui.screens.job import REDRAW_SECONDS, JobScreen
from cutover_tui.tui.screens.report import ReportScreen
from cutover_tui.tui.widgets.job_progress import JobProgress
from cutover_tui.work.backfill import BackfillProgress
from cutover_tui.work.jobs import JobPlan
from cutover_tui.work.migrate import apply_legacy_baseline

from .support import ROOT, last_action, screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def bigger_url(empty_db_url) -> str:
    """Enough rows that a backfill takes a few seconds: time to pause and cancel it."""
    from helpers import apply_v2

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=5000)
    return apply_v2(empty_db_url)


def v2_rows(url: str) -> int:
    """Every v2 row: a pause that lands late still leaves the snapshots, walked last, to write."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT " + " + ".join(f"(SELECT count(*) FROM {t.v2})" for t in TABLES)).fetchone()[0]


async def settled_rows(pilot, url: str) -> int:
    """The v2 rows once the batches in flight when the pause came have committed (each
    worker stops at its next batch boundary, up to one batch's time later)."""
    rows = v2_rows(url)
    for _ in range(20):
        await pilot.pause(0.5)
        rows, before = v2_rows(url), rows
        if rows == before:
            return rows
    raise AssertionError(f"v2 rows still moving 10 s into the pause: {rows}")


async def paused_backfill(pilot):
    """From the dashboard: the backfill's screen, started and paused at once; its run."""
    app = pilot.app
    await settle(pilot)
    await pilot.press("f")
    await settle(pilot)
    assert isinstance(app.screen, JobScreen) and "Ready" in screen_text(app)
    await pilot.press("enter", "p")
    run = app.screen.run
    assert run is not None and run.pause.is_set()
    await wait_until(pilot, lambda: "PAUSED" in screen_text(app))
    return run


async def test_pause_holds_the_backfill_and_cancel_keeps_a_checkpoint(bigger_url, env_file):
    app = make_app(settings_for(bigger_url, env_file))
    async with app.run_test(size=(120, 40)) as pilot:
        run = await paused_backfill(pilot)
        held = await settled_rows(pilot, bigger_url)
        await pilot.pause(1.0)  # a window to watch: not a wait for anything
        assert v2_rows(bigger_url) == held  # nothing moves while paused

        # settle() would wait for every worker, the paused job too: wait on what is shown instead.
        await pilot.press("escape")  # the job goes on without its screen
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("v")  # and nothing else starts meanwhile (refused on the key itself)
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen) and run.running

        await pilot.press("J")
        await wait_until(pilot, lambda: getattr(app.screen, "run", None) is run)
        await pilot.press("p")  # resume: rows move again
        await wait_until(pilot, lambda: v2_rows(bigger_url) > held)
        await pilot.press("x")
        await wait_until(pilot, lambda: not run.running)
        await settle(pilot)
        assert run.state == "cancelled" and run.report.cancelled is True
        assert "CANCELLED" in screen_text(app)
        assert last_action(bigger_url) == "backfill"

        await pilot.press("escape", "f")  # a new backfill screen: it says it resumes the cancelled run
        await settle(pilot)
        assert "Resumes run" in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.run is not None and not app.screen.run.running)
        assert app.screen.run.report.resumed is True
        # Its bars went on from the checkpoint: the log says where each table the checkpoint had started stood.
        assert any(": resumed at " in line for line in app.screen.run.snapshot()[1])
        await pilot.press("o")  # its report
        await settle(pilot)
        assert isinstance(app.screen, ReportScreen)


async def test_the_running_jobs_screen_is_kept_between_looks_and_catches_up_when_back(bigger_url, env_file):
    """J brings back the same screen (composing it anew was the dearest key while a job ran). Out
    of sight it draws nothing; back in sight it shows what the job did meanwhile; the next job's
    screen takes its place."""
    app = make_app(settings_for(bigger_url, env_file))
    async with app.run_test(size=(120, 40)) as pilot:
        run = await paused_backfill(pilot)
        await pilot.press("escape", "J")
        await wait_until(pilot, lambda: getattr(app.screen, "run", None) is run)
        kept = app.screen
        shown = [(i.name, i.done) for i in kept.query_one(JobProgress).items]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        run.toggle_pause()  # the job moves on while its screen is out of sight
        await wait_until(pilot, lambda: [(i.name, i.done) for i in run.snapshot()[0]] != shown)
        await pilot.pause(2 * REDRAW_SECONDS + 0.1)  # a window for the redraw timer to fire twice: nothing drawn
        assert [(i.name, i.done) for i in kept.query_one(JobProgress).items] == shown
        await pilot.press("J")
        await wait_until(pilot, lambda: app.screen is kept)
        assert [(i.name, i.done) for i in kept.query_one(JobProgress).items] != shown
        await pilot.press("x")
        await wait_until(pilot, lambda: not run.running)
        await pilot.press("escape", "v", "enter")
        await wait_until(pilot, lambda: app.job is not run and app.job is not None)
        await pilot.press("escape", "J")
        await wait_until(pilot, lambda: getattr(app.screen, "run", None) is app.job)
        assert app.screen is not kept and not app.is_screen_installed(kept)
        await wait_until(pilot, lambda: not app.job.running)


async def test_a_verify_fills_in_its_diff_against_the_previous_one(backfilled_url, env_file):
    record_report(backfilled_url, "backfill", ok=True)  # the gate of verify: a backfill report exists
    app = make_app(settings_for(backfilled_url, env_file))
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot)
        for first in (True, False):
            await pilot.press("v")
            await settle(pilot)
            screen = app.screen
            await pilot.press("enter")
            await wait_until(pilot, lambda screen=screen: not screen.run.running)
            await settle(pilot)
            if first:
                assert not screen.query_one("#live-diff-box").display  # nothing to compare with yet
                await pilot.press("escape")
                await settle(pilot)
        checks = len(screen.run.report.checks)
        table = screen.query_one("#live-diff")
        assert screen.query_one("#live-diff-box").display
        # The second trusted the first where nothing changed since, said so before and after.
        assert any("read by key alone (`cutover verify --full` reads every row)" in note for note in screen.plan.notes)
        assert any("were read by key alone" in line for line in screen.run.snapshot()[1])
        # One row per check, as each completed; the screen draws on its own timer, so the
        # last check may show a redraw after the job ended.
        await wait_until(pilot, lambda: table.row_count == checks)
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert all(row[0].startswith(("=", "FAIL~", "~")) for row in rows), rows
        assert any(row[1] == "content:accounts" and row[2] == row[3] == "PASS" for row in rows)


async def test_a_console_ending_otherwise_than_by_ctrl_q_cancels_its_paused_job(bigger_url, env_file):
    app = make_app(settings_for(bigger_url, env_file))
    async with app.run_test(size=(120, 40)) as pilot:
        run = await paused_backfill(pilot)
        app.exit()  # as an error or a signal ends it
    try:
        assert run.cancel.is_set() and not run.pause.is_set()
    finally:
        run.request_cancel()  # else a failure here would leave its worker waiting: the test would hang


def test_a_resumed_backfill_shows_the_whole_table_and_the_time_left_from_the_rows_left():
    """A resumed run's first figures are its checkpoint's (no pace yet); then the bar goes on from
    there and the time left is the rows left over this run's own rate."""
    now = [1000.0]
    plan = JobPlan(kind="backfill", summary="", writes=None, tables={"identities": 41_000}, notes=[], refused=[])
    run = JobRun("backfill", plan, clock=lambda: now[0])
    run.on_backfill(BackfillProgress(table="identities", pass_no=1, done=24_600, total=41_000, rows_per_second=0.0,
                                     checkpoint=24_600))
    [item], log, _ = run.snapshot()
    assert (item.done, item.total, item.eta(now[0])) == (24_600, 41_000, None)
    assert log == ["identities: resumed at 24,600 of 41,000 rows, done by the checkpoint."]
    now[0] += 2
    run.on_backfill(BackfillProgress(table="identities", pass_no=1, done=27_000, total=41_000, rows_per_second=1_200.0,
                                     checkpoint=24_600))
    [item], log, _ = run.snapshot()
    assert item.done == 27_000 and item.eta(now[0]) == (41_000 - 27_000) / 1_200
    assert len(log) == 1  # said once
