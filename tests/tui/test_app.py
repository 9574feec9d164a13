"""The app as a whole: connecting, quitting, help, the journal key, a bad database."""

from __future__ import annotations

import gc

import pytest
from textual.widgets import Header

from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.tui.screens.help import HelpScreen
from cutover_tui.tui.screens.journal import JournalScreen

from .support import screen_text, settings_for, settle, wait_until

pytestmark = pytest.mark.anyio


async def test_ctrl_q_exits_with_code_zero(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.controller.session is not None
        await pilot.press("ctrl+q")
    assert app.return_code == 0
    assert app.controller.session is None  # closed on exit


async def test_full_collections_wait_for_the_console_and_python_gets_its_settings_back(tui_settings):
    saved = gc.get_threshold()
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert gc.get_threshold()[2] > 10**8  # Python starts none in the middle of a key
        await pilot.press("ctrl+q")
    assert gc.get_threshold() == saved


async def test_screens_left_behind_are_not_kept_alive_by_their_headers(tui_settings):
    app = make_app(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        for _ in range(10):  # a new journal screen each time, with a Header watching the app's title
            await pilot.press("j")
            await wait_until(pilot, lambda: isinstance(app.screen, JournalScreen))
            await pilot.press("d")
            await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))

        def watching() -> int:
            return len(getattr(app, "__watchers")["title"])

        # Textual would keep all eleven (Textualize/textual#6666); only the dashboard's is alive.
        await wait_until(pilot, lambda: watching() == len(app.screen.query(Header)) == 1)


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
