"""Textual's key footer, rebuilt only when the keys it shows change, and without its leak.

Textual rebuilds every key of the footer on each `refresh_bindings()` (a screen switch, a
focus change, each job progress redraw), and the footer keeps every key it ever built in its
`compact` watcher list (see `watchers`). The rebuilds and the full garbage
collections of that growing heap were what made keys late while a backfill ran (BENCHMARKS.md).

Touches Textual's internals: `_bindings_ready` (8.2's Footer). Remove when Textual's Footer
recomposes only on a change of its keys (tests/tui/test_footer.py tells), and drop
`forget_closed_watchers` with Textualize/textual#6666.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter

from .watchers import forget_closed_watchers


class Footer(TextualFooter):
    _shown: tuple | None = None

    def _keys(self) -> tuple:
        """What the footer shows: each shown binding, enabled or not, with its tooltip."""
        palette = self.app.COMMAND_PALETTE_BINDING
        return tuple((binding, enabled, tooltip)
                     for _node, binding, enabled, tooltip in self.screen.active_bindings.values()
                     if binding.show or binding.key == palette)

    def compose(self):
        if self._bindings_ready:
            self._shown = self._keys()
        yield from super().compose()

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
