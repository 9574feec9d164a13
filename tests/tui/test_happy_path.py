"""The whole runbook driven by keys alone, on a real seeded database: A -> 0 -> B -> G -> C ->
D -> G -> E -> E' -> close the rollback window -> F, each flag write confirmed as deployed by
typing its stage (the shipped runbook has no [deploy]), with the env file and the journal
checked after every step; and the refusals an operator meets on the way. (The API read check
against a running API, and a deploy that reads back, are walked in test_demo_console.py.)"""

from __future__ import annotations

import pytest
from helpers import age_journal, record_report

from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.archive import ArchiveConfirm
from cutover_tui.tui.screens.confirm import Confirm
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.tui.screens.deploy import ConfirmDeploy

from .support import flags, last_action, run_job, screen_text, settings_for, settle, toasts

pytestmark = pytest.mark.anyio







async def confirm(pilot, key: str, answer: str = "y") -> str:
    """Press `key`, check the confirmation shows, answer it; the dialog's text."""
    await pilot.press(key)
    await settle(pilot)
    assert isinstance(pilot.app.screen, Confirm), screen_text(pilot.app)
    shown = screen_text(pilot.app)
    await pilot.press(answer)
    await settle(pilot)
    return shown


async def deployed_by_hand(pilot, stage_name: str) -> None:
    """After a flag write the console asks for the deployment; the operator types the stage."""
    await settle(pilot)
    assert isinstance(pilot.app.screen, ConfirmDeploy), screen_text(pilot.app)
    await pilot.press(*stage_name, "enter")
    await settle(pilot)
    assert last_action(pilot.app.settings.database_url) == "deploy"


async def stage(pilot) -> str | None:
    await settle(pilot)
    return pilot.app.dashboard.status.stage


async def test_the_whole_runbook_by_keys(clean_legacy_url, env_file):
    url = clean_legacy_url
    app = make_app(settings_for(url, env_file))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        assert await stage(pilot) is None

        shown = await confirm(pilot, "m")  # Stage A: the SQL first
        assert "0005_accounts_v2_schema.sql" in shown and "CREATE TABLE" in shown
        assert await stage(pilot) == "A" and last_action(url) == "migrate"

        await run_job(pilot, "n")  # recon
        assert await stage(pilot) == "0" and last_action(url) == "recon"

        backfill = await run_job(pilot, "f")
        assert backfill.run.stored.ok and last_action(url) == "backfill"
        assert await stage(pilot) == "B"

        await run_job(pilot, "v")
        assert await stage(pilot) == "G" and last_action(url) == "verify"

        shown = await confirm(pilot, "c")
        assert "ACCOUNT_SCHEMA_V2_READS=true" in shown
        assert flags(env_file) == (True, False, False) and last_action(url) == "promote"
        await deployed_by_hand(pilot, "C")
        assert await stage(pilot) == "C"

        await pilot.press("D")  # D needs the API read check since C was deployed
        await settle(pilot)
        assert "No API read check has run since stage C was deployed" in toasts(app)
        record_report(url, "verify-reads", ok=True)
        await pilot.press("r")
        await confirm(pilot, "D")
        await deployed_by_hand(pilot, "D")
        assert flags(env_file) == (True, False, True) and await stage(pilot) == "D"

        # E before a verify taken in D: refused, and the reason is on screen.
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert "Promote E is refused" in toasts(app) and "verify" in toasts(app)
        assert flags(env_file) == (True, False, True) and last_action(url) == "deploy"

        verify = await run_job(pilot, "v")  # G again, now in D
        assert verify.run.stored.ok and verify.run.stored.stage == "D"

        await confirm(pilot, "e")
        await deployed_by_hand(pilot, "E")
        assert flags(env_file) == (True, True, True) and await stage(pilot) == "E"

        await run_job(pilot, "v")
        age_journal(url, 25)  # the confidence period (24 h in runbook.toml) has held
        await pilot.press("r")
        await settle(pilot)
        await confirm(pilot, "s")
        assert last_action(url) == "promote"
        await deployed_by_hand(pilot, "E'")
        assert flags(env_file) == (True, True, False) and await stage(pilot) == "E'"

        await confirm(pilot, "w")
        assert last_action(url) == "rollback-window-closed"

        for _ in range(3):  # N passing verifies in E' (3 in runbook.toml)
            await run_job(pilot, "v")
        await pilot.press("A")
        await settle(pilot)
        assert isinstance(app.screen, ArchiveConfirm)
        assert "ALTER TABLE" in screen_text(app)
        await pilot.press(*"wrong", "enter")
        await settle(pilot)
        assert last_action(url) == "verify"  # a wrong name archives nothing
        await pilot.press("A")
        await settle(pilot)
        database = app.dashboard.status.database
        await pilot.press(*database, "enter")
        await settle(pilot)
        assert last_action(url) == "archive"
        assert await stage(pilot) == "F"
        assert flags(env_file) == (True, True, False)


async def test_an_illegal_flag_state_refuses_every_promotion_until_restored(v2_db_url, env_file):
    """WRITES=true with READS=false is no row of the matrix: shown in red, promotions refused
    with the reason, and R restores the nearest legal row after showing the diff."""
    text = env_file.read_text(encoding="utf-8")
    env_file.write_text(text.replace("ACCOUNT_SCHEMA_V2_WRITES=false", "ACCOUNT_SCHEMA_V2_WRITES=true"),
                        encoding="utf-8")
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        assert "ILLEGAL flag combination" in screen_text(app)
        await pilot.press("c")
        await settle(pilot)
        assert "Promote C is refused" in toasts(app) and "not a legal row" in toasts(app)
        assert flags(env_file) == (False, True, False)
        shown = await confirm(pilot, "R")
        assert "+ACCOUNT_SCHEMA_V2_WRITES=false" in shown
        assert flags(env_file) == (False, False, False) and last_action(v2_db_url) == "restore-flags"
