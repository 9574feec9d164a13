"""`cutover demo --rehearsal`: a confidence period of a minute, marked on every screen (the
header), in `status`, and in every journal row's runbook."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, CliRun

from cutover_tui.demo.run import DemoEnvironment, write_demo_runbook
from cutover_tui.rules.runbook import load_runbook
from cutover_tui.store.session import resolve_settings
from cutover_tui.tui.app import make_app


@pytest.fixture
def rehearsal_runbook(tmp_path, legacy_db_url, env_file):
    demo = DemoEnvironment(folder=tmp_path, database_url=legacy_db_url, server_version="", env_file=env_file,
                           report_dir=tmp_path / "reports")
    return write_demo_runbook(load_runbook(ROOT / "runbook.toml"), demo, rehearsal=True)


def test_a_rehearsals_short_gate_is_said_and_journaled(capsys, legacy_db_url, env_file, rehearsal_runbook):
    runbook = load_runbook(rehearsal_runbook)
    assert runbook.rehearsal and runbook.gates.confidence_period_hours * 60 == pytest.approx(1)
    cutover = CliRun(capsys, legacy_db_url, env_file, runbook=rehearsal_runbook)
    code, out, _ = cutover("status")
    assert code == 0 and out.startswith("rehearsal  REHEARSAL: short gates (confidence period 1 min)")
    assert cutover("migrate")[0] == 0
    row = json.loads(cutover("journal", "--json")[1])[-1]
    assert row["runbook"]["rehearsal"] is True
    assert "REHEARSAL runbook" in cutover("journal")[1]
    shipped = CliRun(capsys, legacy_db_url, env_file)  # the shipped runbook is no rehearsal's
    assert "REHEARSAL" not in shipped("status")[1]


@pytest.mark.anyio
async def test_every_screen_says_rehearsal(legacy_db_url, env_file, rehearsal_runbook):
    settings = resolve_settings(runbook_path=rehearsal_runbook, env_file=env_file, database_url=legacy_db_url,
                                operator="alice", environ={})
    app = make_app(settings)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert "REHEARSAL: short gates (confidence period 1 min)" in app.sub_title
        await pilot.press("j")  # another screen: the header is the app's
        await pilot.pause()
        assert "REHEARSAL" in app.screen.query_one("Header").screen_sub_title


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
