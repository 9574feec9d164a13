"""Helpers the TUI tests share: settings for a test database, waiting for workers, screen text."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from helpers import ROOT
from rich.console import Console, ConsoleRenderable
from textual.pilot import Pilot
from textual.widgets import Static

from cutover_tui.store.session import Settings, resolve_settings

BACKFILL_AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
VERIFY_AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def settings_for(url: str, env_file: Path) -> Settings:
    return resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=url,
                            operator="alice", environ={})


async def settle(pilot: Pilot, rounds: int = 4) -> None:
    """Let workers finish and the messages they posted be handled, a few times over."""
    for _ in range(rounds):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def set_journal_times(url: str, at: datetime) -> None:
    """Pin every journal entry to `at`, and the machine it came from to alice's laptop, so what
    the screens show depends on neither the clock nor the machine the tests run on."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE cutover.journal SET at = %s, os_user = 'alice', os_host = 'laptop'", (at,))


def screen_text(app) -> str:
    """Everything the current screen and its notifications show, as plain text."""
    console = Console(width=300, record=True, file=io.StringIO(), color_system=None)
    for widget in app.screen.query("*"):
        # A Static holding a Rich renderable (a Group, a Table) shows it through a wrapper.
        rendered = widget.content if isinstance(widget, Static) else widget.render()
        plain = getattr(rendered, "plain", None)
        if plain is not None:
            console.print(plain, markup=False, highlight=False)
        elif isinstance(rendered, ConsoleRenderable):
            console.print(rendered)
    return console.export_text()


def toasts(app) -> str:
    """The text of the notifications on screen (run the app with `notifications=True`)."""
    return " ".join(toast.render().plain for toast in app.screen.query("Toast"))


async def wait_until(pilot: Pilot, condition, rounds: int = 300) -> None:
    """Pause until `condition()` holds (30 s at most); a job in a worker may take a while,
    and `settle` would wait for every worker, a paused job's too."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(screen_text(pilot.app))
