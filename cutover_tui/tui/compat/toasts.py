"""Textual shows every notification at once, each toast as tall as its text, stacked from the
bottom right: a burst of refusals covered the next steps, a job's log and the diff panel. The
console keeps only the newest few on screen (every one stays in the app's message list, `M`).

Touches Textual's internals: the app's `_notifications`, `_unnotify` and `_refresh_notifications`
(8.2). Remove when Textual can cap the toasts it shows (tests/tui/test_toasts.py tells)."""

from __future__ import annotations

from textual.app import App
from textual.notifications import Notification


def show_newest(app: App, notification: Notification, limit: int) -> None:
    """Show `notification`, dropping the oldest shown ones beyond `limit`."""
    shown = app._notifications
    shown.add(notification)
    for old in list(shown)[:-limit]:
        app._unnotify(old, refresh=False)
    app._refresh_notifications()
