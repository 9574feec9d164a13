"""The app as a whole: connecting, quitting, help, the journal key, a bad database."""

from __future__ import annotations

import pytest

from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.tui.screens.help import HelpScreen
from cutover_tui.tui.screens.journal import JournalScreen

from .support import screen_text, settings_for, settle

pytestmark = pytest.mark.anyio


async def test_ctrl_q_exits_with_code_zero(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.session is not None
        await pilot.press("ctrl+q")
    assert app.return_code == 0
    assert app.session is None  # closed on exit


async def test_ctrl_q_exits_from_the_journal_too(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_question_mark_shows_the_screens_help(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "Help: Dashboard" in text
        assert "Promote C" in text and "Restore flags" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_unreachable_database_is_one_sentence(env_file, tmp_path):
    settings = settings_for(f"postgresql://nobody@/nodb?host={tmp_path}&port=1", env_file)
    app = make_app(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.dashboard.problem is not None
        assert app.dashboard.problem.startswith("Cannot connect to")
        assert "Traceback" not in screen_text(app)
        await pilot.press("c")  # keys still answer, with the same clear sentence
        await settle(pilot)
        assert app.dashboard.problem.startswith("Cannot connect to")
        assert "Traceback" not in screen_text(app)
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_j_shows_the_journal_and_d_goes_back(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        assert isinstance(app.screen, JournalScreen)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)


async def test_every_action_is_in_the_command_palette(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
    assert {"Dashboard", "Journal", "Refresh", "Help", "Promote to C", "Promote to D", "Promote to E",
            "Promote to E'", "Roll back", "Restore the flags", "Quit"} <= titles


async def test_journal_has_its_own_help(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "Help: Journal" in text and "journal kept in the database" in text
