"""The rollback wizard on both of the runbook's paths, and what it locks while it is open."""

from __future__ import annotations

import pytest
from helpers import record_report

from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.deploy import ConfirmDeploy
from cutover_tui.tui.screens.job import JobScreen
from cutover_tui.tui.screens.rollback import RollbackWizard

from .support import flags, last_action, promote_through, run_job, screen_text, settings_for, settle, toasts

pytestmark = pytest.mark.anyio


def promoted(url: str, env_file, *stages: str) -> None:
    """Walk the flags up to the last of `stages` through the engine, a passing verify in each."""
    record_report(url, "backfill", ok=True)
    record_report(url, "verify", ok=True, stage="G")
    promote_through(url, env_file, *stages, verify_each=True)


async def test_before_write_cutover_reads_go_back_and_dual_write_can_go_too(v2_db_url, env_file):
    promoted(v2_db_url, env_file, "C", "D")
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert isinstance(app.screen, RollbackWizard)
        text = screen_text(app)
        assert "Before write cutover (from C or D)" in text
        assert "+ACCOUNT_SCHEMA_V2_READS=false" in text and "+ACCOUNT_SCHEMA_V2_DUAL_WRITE" not in text
        await pilot.press("k")  # the operator turns dual-write off as well
        await settle(pilot)
        assert "+ACCOUNT_SCHEMA_V2_DUAL_WRITE=false" in screen_text(app)
        assert flags(env_file) == (True, False, True)  # nothing written before y
        await pilot.press("y")
        await settle(pilot)
        assert flags(env_file) == (False, False, False) and last_action(v2_db_url) == "rollback-opened"
        assert isinstance(app.screen, ConfirmDeploy)  # the rollback reaches the API only when deployed
        await pilot.press("escape")  # confirmed later
        await settle(pilot)
        text = screen_text(app)
        assert "rollback is OPEN" in text and "archive (F) is locked" in text
        await pilot.press("v")  # the wizard offers the verify
        await settle(pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.kind == "verify"
        await pilot.press("escape")
        await settle(pilot)
        assert "ROLLBACK OPEN" in screen_text(app)


async def test_after_write_cutover_writes_go_back_dual_write_stays_and_the_archive_is_refused(
        clean_backfilled_url, env_file):
    backfilled_url = clean_backfilled_url
    promoted(backfilled_url, env_file, "C", "D", "E")
    app = make_app(settings_for(backfilled_url, env_file))
    async with app.run_test(size=(100, 34), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        text = screen_text(app)
        assert "After write cutover (from E or E')" in text and "+ACCOUNT_SCHEMA_V2_WRITES=false" in text
        await pilot.press("y")
        await settle(pilot)
        assert flags(env_file) == (True, False, True)  # dual-write kept for the mirrored catch-up
        assert last_action(backfilled_url) == "rollback-opened"
        assert isinstance(app.screen, ConfirmDeploy)
        await pilot.press(*"D", "enter")  # the rollback's flags are D's row
        await settle(pilot)
        assert last_action(backfilled_url) == "deploy"
        verify = await run_job(pilot, "v")  # the wizard's offer
        assert verify.kind == "verify" and verify.run.stored.ok
        await pilot.press("A")  # F during a rollback: refused, with the reason on screen
        await settle(pilot)
        assert "rollback" in toasts(app).lower() and "Archive is refused" in toasts(app)
        assert last_action(backfilled_url) == "verify"


async def test_nothing_to_roll_back_before_c(v2_db_url, env_file):
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert "Rollback is refused" in toasts(app)
