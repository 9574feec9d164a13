"""The demo console's rehearsal parts: the live traffic switch with its figures, and the API
read check of stage C against the stand-in API, cookie never shown."""

from __future__ import annotations

import pytest

from cutover_tui.demo.api import serve_api
from cutover_tui.demo.run import demo_session
from cutover_tui.demo.traffic import TrafficSwitch
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.job import JobScreen
from cutover_tui.work.jobs import ApiTarget

from .support import screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio


async def test_traffic_switch_and_api_read_check(backfilled_url, env_file):
    with serve_api(backfilled_url, env_file) as base:
        account, _, cookie = demo_session(base, backfilled_url)
        switch = TrafficSwitch(base, backfilled_url, rate=30, exclude={account})
        app = make_app(settings_for(backfilled_url, env_file), api_target=ApiTarget(api=base, cookie=cookie),
                       traffic=switch)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("t")
            await wait_until(pilot, lambda: app.dashboard.traffic is not None and app.dashboard.traffic[0].requests > 5)
            text = screen_text(app)
            assert "demo traffic ON" in text and "requests/s" in text and "0 errors" in text
            assert "0 mirror failures" in text

            await pilot.press("a")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, JobScreen) and screen.kind == "verify-reads"
            assert base in screen_text(app) and "legacy" in screen_text(app)  # READS=false: legacy is the store
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen.run is not None and not screen.run.running)
            await settle(pilot)
            assert screen.run.stored.ok, screen_text(app)
            log = "\n".join(screen.run.snapshot()[1])
            assert "PASS" in log and " ms" in log
            assert cookie not in screen_text(app) and cookie not in log

            await pilot.press("escape", "t")
            await wait_until(pilot, lambda: not switch.running and "demo traffic off" in screen_text(app))
        assert not switch.running  # quitting the console stops the traffic
