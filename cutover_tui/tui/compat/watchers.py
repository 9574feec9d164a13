"""Textual drops a watcher of another object's reactive only when that reactive next changes
(Textualize/textual#6666). Every Header ever mounted watches the app's title, and every key
a footer ever built watches the footer's `compact`; neither changes in the console, so each
removed widget would stay in memory for the console's life, and every full garbage
collection would walk it again (BENCHMARKS.md).

Touches Textual's internals: a DOMNode's `__watchers` and `_closing` (8.2). Remove when
Textualize/textual#6666 is fixed in the pinned Textual (the leak tests in tests/tui tell)."""

from __future__ import annotations

from textual.dom import DOMNode


def forget_closed_watchers(watched: DOMNode) -> None:
    """Drop the watchers of `watched` whose widget has been removed, as Textual would."""
    for watchers in getattr(watched, "__watchers", {}).values():
        watchers[:] = [(node, callback) for node, callback in watchers if not node._closing]
