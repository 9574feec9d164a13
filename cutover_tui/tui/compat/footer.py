"""Textual's key footer, rebuilt only when the keys it shows change, and without its leak.

Textual rebuilds every key of the footer on each `refresh_bindings()` (a screen switch, a
focus change, each job progress redraw), and the footer keeps every key it ever built in its
`compact` watcher list (see `watchers`). The rebuilds and the full garbage
collections of that growing heap were what made keys late while a backfill ran (BENCHMARKS.md).

Below `NARROW` columns it is tighter and short: each label as the app's `SHORT_LABELS` has it,
and a key refused now, or the app's own (`?` lists them all), as its key alone, so a screen's
keys fit 80 columns instead of running off mid-word.

Touches Textual's internals: `_bindings_ready` (8.2's Footer) and what its `compose` yields.
Remove when Textual's Footer recomposes only on a change of its keys and can shorten its labels
(tests/tui/test_footer.py tells), and drop `forget_closed_watchers` with Textualize/textual#6666.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey, FooterLabel

from .watchers import forget_closed_watchers

NARROW = 100  # columns below which the footer is tighter and its labels short
_KEPT = ("question_mark",)  # the app's keys that keep their label when narrow


class Footer(TextualFooter):
    _shown: tuple | None = None
    _narrow: bool | None = None

    def _keys(self) -> tuple:
        """What the footer shows: each shown binding, enabled or not, with its tooltip."""
        palette = self.app.COMMAND_PALETTE_BINDING
        return tuple((binding, enabled, tooltip)
                     for _node, binding, enabled, tooltip in self.screen.active_bindings.values()
                     if binding.show or binding.key == palette)

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = self._keys()
        narrow = self._narrow = self.app.size.width < NARROW
        self.set_class(narrow, "-narrow")  # app.tcss: one space between a key and its label
        if not narrow:
            yield from super().compose()
            return
        short: dict[str, str] = getattr(self.app, "SHORT_LABELS", {})
        app_keys = {binding.key for node, binding, _e, _t in self.screen.active_bindings.values()
                    if node is self.app and binding.key not in _KEPT}
        for widget in super().compose():
            if isinstance(widget, FooterLabel):
                text = str(widget.content)
                widget = FooterLabel(short.get(text, text))
            elif isinstance(widget, FooterKey) and "-command-palette" not in widget.classes:
                if widget._disabled or widget.key in app_keys:
                    widget.description = ""
                elif widget.description:
                    widget.description = " " + short.get(widget.description, widget.description)
            yield widget

    def on_resize(self, event: Resize) -> None:
        if self._narrow is not None and (self.app.size.width < NARROW) != self._narrow:
            self.call_after_refresh(self.recompose)

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        # Several changes may be queued before the first rebuild: each looks again.
        if not self.is_attached or self._keys() == self._shown:
            return
        await self.recompose()
        forget_closed_watchers(self)
