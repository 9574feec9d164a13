"""Pictures of the job screen, a refused gate and the rollback wizard, reviewed by eye; clock-free:
fixed report and journal times, a fixed clock for the job's figures, fixed labels."""

from __future__ import annotations

from helpers import record_report

from cutover_tui.store.session import Session
from cutover_tui.tui.app import make_app
from cutover_tui.tui.running_job import JobRun
from cutover_tui.tui.screens.job import JobScreen
from cutover_tui.work import jobs
from cutover_tui.work.backfill import BackfillProgress

from .support import (
    BACKFILL_AT,
    D_SINCE,
    LABEL,
    VERIFY_AT,
    pressing,
    promote_through,
    set_journal_times,
    settings_for,
    settle,
)


def _in_d(url: str, env_file) -> None:
    record_report(url, "backfill", ok=True, at=BACKFILL_AT)
    record_report(url, "verify", ok=True, at=VERIFY_AT, stage="G")
    promote_through(url, env_file, "C", "D")
    set_journal_times(url, D_SINCE)


class TestJob:
    def test_backfill_running(self, snap_compare, v2_db_url, env_file):
        """A backfill 42 s in, as the engine's progress callbacks left it: 'RUNNING  42s';
        the plan (what it does, that it writes v2 rows only, 2 workers); a bar per table:
        accounts (10,000/10,000) and account_members 100% 'done' in green, identities 60%
        (24,600/41,000) at 1,200 rows/s with '14s' left, pixbooks 10% at 800 rows/s with '46s' left; the log below with the
        catch-up pass line; footer with p Pause/resume and x Cancel job lit, Start dimmed."""
        app, run_before = _backfill_42s_in(v2_db_url, env_file, TABLES[:4])
        assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)

    def test_backfill_at_80x24(self, snap_compare, v2_db_url, env_file):
        """80x24, the same backfill with all six tables: 'Backfill (stage B)', 'RUNNING · 42s', the plan
        without a blank line after it, a bar for every table (accounts, account_members done in green;
        identities 60%, pixbooks 10%, pixbook_snapshots 30%, audit_events 0%), the log as a one-line
        titled rule with the catch-up line under it, and the footer's keys short: ⏎ dimmed, p Pause,
        x Cancel, o dimmed, esc Back, then the app's keys bare and ? Help; nothing cut mid-word."""
        app, run_before = _backfill_42s_in(v2_db_url, env_file, TABLES)
        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


# Each table's total rows, share done and rows/s, 42 s into a backfill.
TABLES = (("accounts", 10_000, 1.0, 1500.0), ("account_members", 32_000, 1.0, 2100.0),
          ("identities", 41_000, 0.6, 1200.0), ("pixbooks", 41_000, 0.1, 800.0),
          ("pixbook_snapshots", 90_000, 0.3, 2400.0), ("audit_events", 120_000, 0.0, 0.0))


def _backfill_42s_in(url: str, env_file, tables):
    """The app and a `run_before` showing a backfill 42 s in, as the engine's progress callbacks
    left it: `tables` in the first pass, accounts in the catch-up pass."""
    settings = settings_for(url, env_file)
    with Session(settings) as session:
        plan = jobs.plan(session, "backfill")
    now = [1000.0]
    run = JobRun("backfill", plan, clock=lambda: now[0])
    for name, total, share, rate in tables:
        run.on_backfill(BackfillProgress(table=name, pass_no=1, done=int(total * share), total=total,
                                         rows_per_second=rate))
    run.on_backfill(BackfillProgress(table="accounts", pass_no=2, done=10_000, total=10_000, rows_per_second=1500.0))
    now[0] = 1042.0
    app = make_app(settings, target_label=LABEL)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await app.push_screen(JobScreen("backfill", run))
        await settle(pilot)

    return app, run_before


class TestGate:
    def test_promote_e_refused_in_d(self, snap_compare, v2_db_url, env_file):
        """Stage D, e pressed before any verify in D: the dashboard stays, 'promote E [e]' red
        with its reason (no verify since D began, 2026-01-05 11:00 UTC), and an error toast
        'Promote E is refused' repeating the reason; e is dimmed in the footer's promote group."""
        _in_d(v2_db_url, env_file)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(120, 36), run_before=pressing("e"))


class TestRollbackWizard:
    def test_from_d(self, snap_compare, v2_db_url, env_file):
        """b at stage D: 'Rollback wizard', 'Step 1 of 2: the change', 'Before write cutover
        (from C or D)' with what it does, 'flags READS=true WRITES=false DUAL_WRITE=true ->
        READS=false ... DUAL_WRITE=true   dual-write kept', the env diff for deploy.env
        (-READS=true, +READS=false), and the y / k / escape line; footer: y, k lit, v dimmed."""
        _in_d(v2_db_url, env_file)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL, env_label="deploy.env")
        assert snap_compare(app, terminal_size=(100, 30), run_before=pressing("b"))

    def test_from_d_at_80x24(self, snap_compare, v2_db_url, env_file):
        """80x24, b at stage D: the same wizard, every line of it on screen without scrolling: step,
        path and what it does, the flags line, the env diff for deploy.env, the y / k / escape line;
        footer short: y Write, k Dual-write, v dimmed, esc Back."""
        _in_d(v2_db_url, env_file)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL, env_label="deploy.env")
        assert snap_compare(app, terminal_size=(80, 24), run_before=pressing("b"))
