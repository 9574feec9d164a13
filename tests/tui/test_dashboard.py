"""The dashboard on a real seeded database: what it shows and the flag keys."""

from __future__ import annotations

import psycopg
import pytest
from helpers import record_report

from cutover_tui.files.envfile import read_env_file
from cutover_tui.ops import transitions
from cutover_tui.store import journal
from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.confirm import ConfirmChange
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.tui.screens.deploy import ConfirmDeploy
from cutover_tui.tui.screens.journal import JournalScreen

from .support import ROOT, screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio


def _journal_actions(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [e.action for e in journal.entries(conn)]


def _set_flags(env_file, **values: str) -> None:
    text = env_file.read_text(encoding="utf-8")
    for name, value in values.items():
        key = f"ACCOUNT_SCHEMA_V2_{name}"
        text = text.replace(f"{key}=false", f"{key}={value}")
    env_file.write_text(text, encoding="utf-8")


async def test_shows_stage_and_flags(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        status = app.dashboard.status
        assert status is not None and status.stage == "A"
        text = screen_text(app)
        assert "stage" in text and "E'" in text
        assert "SCHEMA_V2_READS" in text and "SCHEMA_V2_DUAL_WRITE" in text
        assert "API_ACCEPT_WORKSPACE_ALIAS" in text
        assert "There is no backfill report yet" in text  # a red step with its reason
        assert "lock" in text and "free" in text


async def test_c_then_y_promotes_to_c(v2_db_url, env_file):
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.dashboard.status.stage == "G"
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmChange)
        assert "Promote to C" in screen_text(app)
        assert "ACCOUNT_SCHEMA_V2_READS=true" in screen_text(app)  # the env diff
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDeploy)  # the write is half the change
        assert "type C and press enter" in screen_text(app)
        await pilot.press("C", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert app.dashboard.status.stage == "C"
        assert "confirmed by operator, not read back" in screen_text(app)
    assert read_env_file(env_file).flags["ACCOUNT_SCHEMA_V2_READS"].raw == "true"
    assert "promote" in _journal_actions(v2_db_url)


async def test_n_changes_nothing(v2_db_url, env_file):
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    before = env_file.read_bytes()
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
    assert env_file.read_bytes() == before
    assert "promote" not in _journal_actions(v2_db_url)


async def test_refused_step_shows_the_reason_and_changes_nothing(tui_settings, env_file):
    before = env_file.read_bytes()
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmChange)
        reason = app.dashboard.status.assessment.step("promote", "E").reasons[0]
        toasts = [t.render().plain for t in app.screen.query("Toast")]
        assert any("is refused" in t and reason in t for t in toasts), toasts
    assert env_file.read_bytes() == before
    assert _journal_actions(tui_settings.database_url) == []


async def test_illegal_flags_show_nearest_legal_row_and_r_restores(v2_db_url, env_file):
    _set_flags(env_file, WRITES="true")
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        a = app.dashboard.status.assessment
        assert not a.flags_legal
        text = screen_text(app)
        assert "ILLEGAL flag combination" in text
        assert a.nearest_legal.short() in text and "press R to restore it" in text
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmChange)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDeploy)  # restored flags too reach the API by a deploy
        await pilot.press("escape")
        await settle(pilot)
        assert app.dashboard.status.assessment.flags_legal
    assert read_env_file(env_file).flags["ACCOUNT_SCHEMA_V2_WRITES"].value is False
    assert "restore-flags" in _journal_actions(v2_db_url)


async def test_env_text_is_shown_literally(v2_db_url, env_file):
    _set_flags(env_file, READS="[red]maybe[/red]", DUAL_WRITE="\x1b[31mno")
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "[red]maybe[/red]" in text
        assert "\\x1b[31mno" in text and "\x1b" not in text
        assert "is not a boolean the API knows" in text


async def test_journal_lists_the_promotion(v2_db_url, env_file):
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("c", "y")
        await settle(pilot)
        await pilot.press("escape")  # the deployment is confirmed later
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        assert isinstance(app.screen, JournalScreen)
        table = app.screen.query_one("DataTable")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert any(r[1] == "alice" and r[2] == "promote" and r[3] == "all off -> READS"
                   for r in rows), rows


async def test_lock_held_elsewhere_is_shown_and_refuses_the_change(v2_db_url, env_file):
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    before = env_file.read_bytes()
    bob = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file,
                           database_url=v2_db_url, operator="bob", environ={})
    with Session(bob) as other, other.operator_lock():
        app = make_app(settings_for(v2_db_url, env_file))
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await settle(pilot)
            assert "held by bob" in screen_text(app)
            await pilot.press("c")
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            toasts = " ".join(t.render().plain for t in app.screen.query("Toast"))
            assert "bob" in toasts
            assert isinstance(app.screen, DashboardScreen)
    assert env_file.read_bytes() == before
    assert "promote" not in _journal_actions(v2_db_url)


async def test_operator_name_from_the_database_is_shown_literally(v2_db_url, env_file):
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    odd = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file,
                           database_url=v2_db_url, operator="[red]boom[/red]", environ={})
    with Session(odd) as session:
        transitions.apply_change(session, transitions.plan_promotion(session, "C"))
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        table = app.screen.query_one("DataTable")
        assert str(table.get_row_at(0)[1]) == "[red]boom[/red]"


async def test_r_rereads_the_env_file(v2_db_url, env_file):
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.dashboard.status.assessment.flags_legal
        _set_flags(env_file, WRITES="true")  # someone edits the file by hand meanwhile
        await pilot.press("r")
        await settle(pilot)
        assert not app.dashboard.status.assessment.flags_legal
        assert "ILLEGAL flag combination" in screen_text(app)


async def test_the_journal_opens_again_after_leaving_it(v2_db_url, env_file):
    """j, d, j: a fresh journal screen each time, filled again; leaving it before its rows
    arrive is no crash."""
    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    with Session(settings_for(v2_db_url, env_file)) as session:
        transitions.apply_change(session, transitions.plan_promotion(session, "C"))
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("j", "d")  # gone before its rows land
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        for _ in range(2):
            await pilot.press("j")
            await settle(pilot)
            assert isinstance(app.screen, JournalScreen)
            assert app.screen.query_one("DataTable").row_count == 1
            # Its repaint timer: a popped screen pushed again had none and never painted.
            assert app.screen._timers
            await pilot.press("d")
            await settle(pilot)
        assert app.return_code is None  # still running: nothing crashed


async def test_another_operators_promotion_and_a_hand_edit_show_within_two_seconds(v2_db_url, env_file):
    """No key pressed: the journal's notification and the env file's change bring the dashboard
    up to date well before its periodic refresh (15 s)."""
    import time

    record_report(v2_db_url, "backfill", ok=True)
    record_report(v2_db_url, "verify", ok=True)
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.dashboard.status.stage == "G"
        bob = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=v2_db_url,
                               operator="bob", environ={})
        with Session(bob) as session:  # another operator's CLI, as far as this console knows
            transitions.apply_change(session, transitions.plan_promotion(session, "C"))
        started = time.monotonic()
        await wait_until(pilot, lambda: app.dashboard.status.stage == "C")
        assert time.monotonic() - started < 2

        text = env_file.read_text(encoding="utf-8")  # a hand edit, to an illegal row
        env_file.write_text(text.replace("V2_READS=true", "V2_READS=false").replace("V2_WRITES=false", "V2_WRITES=true"),
                            encoding="utf-8")
        started = time.monotonic()
        await wait_until(pilot, lambda: not app.dashboard.status.assessment.flags_legal)
        assert time.monotonic() - started < 2


async def test_before_the_backfill_the_dashboard_shows_the_errors_recon_predicts(v2_db_url, env_file):
    from cutover_tui.work import jobs

    with Session(settings_for(v2_db_url, env_file)) as session:
        stored, report = jobs.recon(session, sample_rows=0)
    assert not stored.ok and report.predicted_errors
    app = make_app(settings_for(v2_db_url, env_file))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert f"FAIL: the backfill will leave out {report.predicted_errors:,} rows" in text
        assert "pixbooks: identity belongs to another account" in text
