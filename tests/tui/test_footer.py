"""The key footer: rebuilt when the keys it shows change, and only then, without leaking."""

from __future__ import annotations

from typing import ClassVar

import pytest
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets._footer import FooterKey

from cutover_tui.tui.compat.footer import Footer

from .support import wait_until

pytestmark = pytest.mark.anyio


class _Stage(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("p", "promote", "Promote"),
                                             Binding("x", "hidden", "Hidden", show=False)]
    allowed = True

    def compose(self) -> ComposeResult:
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # None: shown dimmed, as the console shows a step the matrix forbids.
        return True if action != "promote" or self.allowed else None

    def action_promote(self) -> None:
        pass


class _Console(App):
    def on_mount(self) -> None:
        self.push_screen(_Stage())


def _keys(footer: Footer) -> list[FooterKey]:
    return list(footer.query(FooterKey))


def _promote(footer: Footer) -> FooterKey:
    return next(k for k in _keys(footer) if k.key == "p")


def _compact_watchers(footer: Footer) -> int:
    return len(getattr(footer, "__watchers", {}).get("compact", []))


async def test_redraws_that_change_no_key_keep_the_same_footer():
    app = _Console()
    async with app.run_test(size=(80, 10)) as pilot:
        footer = app.screen.query_one(Footer)
        await wait_until(pilot, lambda: _keys(footer))
        shown = _keys(footer)
        for _ in range(20):  # what each progress redraw of a running job asks for
            app.screen.refresh_bindings()
            await pilot.pause()
        assert _keys(footer) == shown and all(k.is_attached for k in shown)
        assert [k.key for k in shown] == ["p", "ctrl+p"]


async def test_a_key_that_becomes_forbidden_is_dimmed_and_back_again():
    app = _Console()
    async with app.run_test(size=(80, 10)) as pilot:
        footer = app.screen.query_one(Footer)
        await wait_until(pilot, lambda: _keys(footer))
        assert not _promote(footer).has_class("-disabled")
        app.screen.allowed = False
        app.screen.refresh_bindings()
        await wait_until(pilot, lambda: _promote(footer).has_class("-disabled"))
        app.screen.allowed = True
        app.screen.refresh_bindings()
        await wait_until(pilot, lambda: not _promote(footer).has_class("-disabled"))


async def test_many_rebuilds_leave_only_the_shown_keys_watched():
    app = _Console()
    async with app.run_test(size=(80, 10)) as pilot:
        footer = app.screen.query_one(Footer)
        await wait_until(pilot, lambda: _keys(footer))
        for turn in range(30):
            app.screen.allowed = turn % 2 == 1
            app.screen.refresh_bindings()
            await wait_until(pilot, lambda turn=turn: _promote(footer).has_class("-disabled") == (turn % 2 == 0))
        # One per bound key; Textual's own footer keeps every key it ever built (#6666): 31 here.
        assert _compact_watchers(footer) == len([k for k in _keys(footer) if not k.has_class("-command-palette")])
