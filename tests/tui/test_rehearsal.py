"""A newcomer's rehearsal from A to F, by keys alone, as the README walks it: the demo's
rehearsal runbook (a confidence period of a minute, its deploy restarting the stand-in API),
live traffic from C on, the seed's anomalies fixed with the remedies; no psql, no hand-made
runbook."""

from __future__ import annotations

import time

import pytest
from helpers import ROOT, age_journal

from cutover_tui.demo.run import DemoEnvironment, demo_api, demo_session
from cutover_tui.demo.traffic import TrafficSwitch
from cutover_tui.rules.runbook import load_runbook
from cutover_tui.store.session import resolve_settings
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.archive import ArchiveConfirm
from cutover_tui.tui.screens.confirm import Confirm
from cutover_tui.tui.screens.deploy import DeployRun
from cutover_tui.tui.screens.remedies import RemediesScreen
from cutover_tui.work.jobs import ApiTarget

from .support import flags, last_action, run_job, screen_text, settle, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def confirmed(pilot, key: str) -> None:
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, Confirm))
    await pilot.press("y")
    await settle(pilot)


async def promoted(pilot, key: str, stage: str) -> None:
    """The promotion, then its deploy (the stand-in restarted and read back), closed."""
    await confirmed(pilot, key)
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, DeployRun) and app.screen.outcome is not None,
                     rounds=600)
    assert app.screen.outcome.startswith("Deployed:"), app.screen.outcome
    await pilot.press("escape")
    await settle(pilot)
    assert app.dashboard.status.stage == stage and not app.dashboard.status.deploy_pending


async def remedied(pilot) -> int:
    """x, then the first remedy of every class with rows, until none has any; how many ran."""
    app = pilot.app
    await pilot.press("x")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, RemediesScreen)
    ran = 0
    while True:
        await wait_until(pilot, lambda: bool(screen.states))
        pending = [i for i, state in enumerate(screen.states) if state.count and state.kind == "error"]
        if not pending:
            break
        screen.query_one("DataTable").move_cursor(row=pending[0])
        await pilot.press("1")
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        screen.states = []
        await pilot.press("y")
        await settle(pilot)
        ran += 1
        assert ran < 20, "the remedies did not settle"
    await pilot.press("escape")
    await settle(pilot)
    return ran


async def test_a_rehearsal_from_a_to_f_under_traffic_with_the_remedies(legacy_db_url, env_file, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the deploy commands run the package from this checkout
    url = legacy_db_url
    demo = DemoEnvironment(folder=tmp_path, database_url=url, server_version="", env_file=env_file,
                           report_dir=tmp_path / "reports")
    started = time.monotonic()
    with demo_api(load_runbook(ROOT / "runbook.toml"), demo, rehearsal=True) as (runbook, api):
        account, _, cookie = demo_session(api, url)
        settings = resolve_settings(runbook_path=runbook, env_file=env_file, database_url=url, operator="newcomer",
                                    environ={})
        switch = TrafficSwitch(api, url, rate=20, exclude={account})
        app = make_app(settings, api_target=ApiTarget(api=api, cookie=cookie), traffic=switch)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            assert "REHEARSAL" in app.sub_title
            await confirmed(pilot, "m")  # Stage A
            recon = await run_job(pilot, "n")
            assert not recon.run.stored.ok  # it predicts the seed's anomalies
            assert "FAIL: the backfill will leave out" in screen_text(app)
            assert await remedied(pilot) > 0
            backfill = await run_job(pilot, "f")
            assert backfill.run.stored.ok, "\n".join(backfill.run.snapshot()[1])
            assert (await run_job(pilot, "v")).run.stored.ok
            await promoted(pilot, "c", "C")
            # Traffic from C on, once the API mirrors its writes into v2 (before C, a write lands in
            # legacy alone and the next backfill brings it, as the README says).
            await pilot.press("t")
            await wait_until(pilot, lambda: switch.running)
            assert (await run_job(pilot, "a")).run.stored.ok  # the API read check, against the restarted API
            await promoted(pilot, "D", "D")
            assert (await run_job(pilot, "v")).run.stored.ok
            await promoted(pilot, "e", "E")
            assert (await run_job(pilot, "v")).run.stored.ok
            age_journal(url, 2 / 60)  # the rehearsal's confidence period (a minute) has held
            await pilot.press("r")
            await settle(pilot)
            assert (await run_job(pilot, "v")).run.stored.ok
            await promoted(pilot, "s", "E'")
            await confirmed(pilot, "w")
            for _ in range(3):
                assert (await run_job(pilot, "v")).run.stored.ok
            await pilot.press("t")  # traffic off before the archive moves the tables it writes
            await wait_until(pilot, lambda: not switch.running)
            await pilot.press("A")
            await wait_until(pilot, lambda: isinstance(app.screen, ArchiveConfirm))
            await pilot.press(*app.dashboard.status.database, "enter")
            await settle(pilot)
            assert last_action(url) == "archive" and app.dashboard.status.stage == "F"
            assert flags(env_file) == (True, True, False)
    assert time.monotonic() - started < 600  # under ten minutes, as the issue asks of a newcomer
