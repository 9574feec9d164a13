"""Helpers the TUI tests share: settings for a test database, waiting for workers, screen text."""

from __future__ import annotations

import io
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from helpers import ROOT, record_report
from rich.console import Console, ConsoleRenderable
from textual.pilot import Pilot
from textual.widgets import Static
from textual.worker import WorkerCancelled

from cutover_tui.files.envfile import DUAL_WRITE, READS, WRITES, read_env_file
from cutover_tui.ops import deploy, transitions
from cutover_tui.reports import store as report_store
from cutover_tui.reports.models import ReportKind
from cutover_tui.store import journal
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.store.session import Session, Settings, resolve_settings
from cutover_tui.tui.screens.job import JobScreen

BACKFILL_AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
VERIFY_AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def settings_for(url: str, env_file: Path) -> Settings:
    return resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=url,
                            operator="alice", environ={})


def promote_through(url: str, env_file: Path, *stages: str, verify_each: bool = False) -> None:
    """Promote through the engine, each stage confirmed deployed by alice, with the API read
    check passed in C (D's gate) and, with `verify_each`, a passing verify in every stage."""
    with Session(settings_for(url, env_file)) as session:
        for stage in stages:
            transitions.apply_change(session, transitions.plan_promotion(session, stage))
            deploy.confirm(session, stage)
            if stage == "C":
                record_report(url, "verify-reads", ok=True)
            if verify_each:
                record_report(url, "verify", ok=True, stage=stage)


async def settle(pilot: Pilot, rounds: int = 4) -> None:
    """Let workers finish and the messages they posted be handled, a few times over. A worker
    a newer one of its exclusive group replaced (a status refresh, say) counts as finished."""
    for _ in range(rounds):
        with suppress(WorkerCancelled):
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


# --- shared by several screens' tests -----------------------------------------------------

LABEL = "alice @ test database · env deploy.env"
D_SINCE = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)


def pressing(key: str):
    """A `run_before` that waits for the app, presses `key`, and waits again."""
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
    return run_before


def flags(env_file) -> tuple[bool, bool, bool]:
    declared = read_env_file(env_file).declared
    return declared[READS], declared[WRITES], declared[DUAL_WRITE]


def last_action(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return journal.entries(conn)[-1].action


async def run_job(pilot, key: str) -> JobScreen:
    """Press the job's key, start the job, wait for it to end, and go back."""
    app = pilot.app
    await pilot.press(key)
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, JobScreen), screen_text(app)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.run is not None and not screen.run.running)
    await settle(pilot)
    assert screen.run.error is None, screen.run.error
    await pilot.press("escape")
    await settle(pilot)
    return screen


OLDER = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
NEWER = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)
ODD = "[red]x[/red] \x1b[31mred"  # markup and an escape code, as a database row might hold them


def verify_body(at: datetime, *, duplicates: int) -> dict:
    """A verify report in the upstream shape: duplicates > 0 fails one check, with example rows."""
    return {"ok": duplicates == 0, "generatedAt": at.isoformat(), "checks": [
        {"type": "count", "table": "accounts", "oldTable": "platform_workspaces", "oldCount": 20,
         "newCount": 20, "ok": True},
        {"type": "integrity", "name": "identity_fingerprint_duplicates", "count": duplicates,
         "ok": duplicates == 0, "note": ODD,
         "examples": [{"id": f"mu_{n}", "display_name": ODD} for n in range(duplicates)]},
        {"type": "sample", "name": "identity_expected_collections", "mismatchCount": 2 - min(duplicates, 2),
         "mismatches": [], "ok": duplicates > 0},
    ]}


def store(url: str, kind: ReportKind, body: dict, stage: str | None = None) -> report_store.StoredReport:
    at = datetime.fromisoformat(body["generatedAt"].replace("Z", "+00:00"))
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_console_schema(conn)
        return report_store.store(conn, kind, body, generated_at=at, stage=stage, path=None)


def two_verifies(url: str) -> tuple[report_store.StoredReport, report_store.StoredReport]:
    """An older verify whose sample check failed, a newer one where a duplicate check fails instead."""
    return (store(url, "verify", verify_body(OLDER, duplicates=0) | {"ok": False}, stage="B"),
            store(url, "verify", verify_body(NEWER, duplicates=2), stage="G"))
