"""The demo console's rehearsal parts: the live traffic switch with its figures, and the API
read check of stage C against the stand-in API, cookie never shown."""

from __future__ import annotations

import pytest

from cutover_tui.demo.api import serve_api
from cutover_tui.demo.deployment import environment_of
from cutover_tui.demo.run import demo_session
from cutover_tui.demo.traffic import TrafficSwitch
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.job import JobScreen
from cutover_tui.work.jobs import ApiTarget

from .support import screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio


async def test_traffic_switch_and_api_read_check(backfilled_url, env_file):
    with serve_api(backfilled_url, environment_of(env_file)) as base:
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


async def test_promote_c_deploys_the_stand_in_then_the_read_check_opens_d(backfilled_url, env_file, tmp_path,
                                                                         monkeypatch):
    """The demo's way through C: c, y writes the env file; the runbook's [deploy] restarts the
    stand-in API (a new process, which reads its flags only at start) and reads its environment
    back; the dashboard shows the deployment; D is refused until the API read check passes
    against the API that now reads v2; then D is written and deployed the same way."""
    import httpx
    from helpers import ROOT, record_report
    from textual.widgets import RichLog

    from cutover_tui.demo.run import DemoEnvironment, demo_api
    from cutover_tui.rules.runbook import load_runbook
    from cutover_tui.store.session import resolve_settings
    from cutover_tui.tui.screens.confirm import ConfirmChange
    from cutover_tui.tui.screens.deploy import DeployRun

    from .support import last_action, toasts

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the deploy commands run the package from this checkout
    record_report(backfilled_url, "backfill", ok=True)
    record_report(backfilled_url, "verify", ok=True, stage="G")
    demo = DemoEnvironment(folder=tmp_path, database_url=backfilled_url, server_version="", env_file=env_file,
                           report_dir=tmp_path / "reports")

    def api_pid(base: str) -> int:
        return httpx.get(f"{base}/v1/demo/stats", timeout=5).json()["pid"]

    with demo_api(load_runbook(ROOT / "runbook.toml"), demo) as (runbook, base):
        first = api_pid(base)
        _, _, cookie = demo_session(base, backfilled_url)
        settings = resolve_settings(runbook_path=runbook, env_file=env_file, database_url=backfilled_url,
                                    operator="alice", environ={})
        app = make_app(settings, api_target=ApiTarget(api=base, cookie=cookie))
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmChange))
            await pilot.press("y")
            await wait_until(pilot, lambda: isinstance(app.screen, DeployRun) and app.screen.outcome is not None,
                             rounds=600)
            deployed = app.screen
            assert deployed.outcome.startswith("Deployed: the API runs READS=true WRITES=false DUAL_WRITE=false")
            log = "\n".join(strip.text for strip in deployed.query_one(RichLog).lines)
            assert "applied" in log and "ACCOUNT_SCHEMA_V2_READS=true" in log  # apply's and read back's output
            assert api_pid(base) != first  # a real restart, on the same address
            await pilot.press("escape")
            await settle(pilot)
            assert last_action(backfilled_url) == "deploy" and app.dashboard.status.stage == "C"
            assert "deployed: READS=true WRITES=false DUAL_WRITE=false (read back" in screen_text(app)

            await pilot.press("D")  # D needs the API read check since C was deployed
            await settle(pilot)
            assert "No API read check has run since stage C was deployed" in toasts(app)
            await pilot.press("a")
            await settle(pilot)
            check = app.screen
            assert isinstance(check, JobScreen) and check.kind == "verify-reads"
            await pilot.press("enter")
            await wait_until(pilot, lambda: check.run is not None and not check.run.running, rounds=600)
            assert check.run.stored.ok, screen_text(app)
            await pilot.press("escape")
            await settle(pilot)

            app.clear_notifications()
            await pilot.press("D")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmChange))
            await pilot.press("y")
            await wait_until(pilot, lambda: isinstance(app.screen, DeployRun) and app.screen.outcome is not None,
                             rounds=600)
            assert app.screen.outcome.startswith("Deployed: the API runs READS=true WRITES=false DUAL_WRITE=true")
            await pilot.press("escape")
            await settle(pilot)
            assert app.dashboard.status.stage == "D" and not app.dashboard.status.deploy_pending
