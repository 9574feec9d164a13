"""Pictures of the dashboard, reviewed by eye; clock-free: fixed report and journal times,
a fixed target label instead of the random test database name and temp paths."""

from __future__ import annotations

from helpers import record_report

from cutover_tui.tui.app import make_app

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

NOTICE = ("embedded PostgreSQL 17.4 · stand-in API http://127.0.0.1:8123 · cookie for demo@example.com: "
          "__Secure-better-auth.session_token=0123456789abcdef.SIGNATURE0123456789")


async def _settled(pilot) -> None:
    await settle(pilot)


def _backfilled_and_verified(url: str) -> None:
    record_report(url, "backfill", ok=True, at=BACKFILL_AT)
    record_report(url, "verify", ok=True, at=VERIFY_AT, stage="G")



class TestDashboard:
    def test_stage_g_before_c(self, snap_compare, v2_db_url, env_file):
        """Stage G highlighted on the stage line; all flags false and as expected; 'promote C [c]'
        green with its flags; later promotions red with their reasons; backfill and verify
        2026-01-05 ok; lock free. Wide layout: flags and last runs side by side."""
        _backfilled_and_verified(v2_db_url)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(120, 36), run_before=_settled)

    def test_stage_d(self, snap_compare, v2_db_url, env_file):
        """Stage D highlighted; READS and DUAL_WRITE true, as expected; 'promote E' red because no
        verify ran since D began (2026-01-05 11:00 UTC); 'rollback [b]' green towards READS=false."""
        _backfilled_and_verified(v2_db_url)
        promote_through(v2_db_url, env_file, "C", "D")
        set_journal_times(v2_db_url, D_SINCE)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(120, 36), run_before=_settled)

    def test_illegal_flags(self, snap_compare, v2_db_url, env_file):
        """WRITES=true with READS=false: the flag rows in red, 'ILLEGAL flag combination. Nearest
        legal row: READS=false WRITES=false DUAL_WRITE=false  press R to restore it.', and
        'restore-flags [R]' green at the top of the next steps; the other steps red, each saying
        the flags must be restored first (indented reasons, wrapped under their indent)."""
        env_file.write_text(env_file.read_text().replace("V2_WRITES=false", "V2_WRITES=true"))
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(120, 36), run_before=_settled)

    def test_small_terminal(self, snap_compare, v2_db_url, env_file):
        """80x24, stage G, compact: the header, the target and the stage line one line each; flags,
        last runs and next steps each under a one-line titled rule instead of a box; the steps
        scrollable with their first eight lines visible; the footer's keys short, refused ones
        as their key alone, the app's bare but ? Help, nothing cut mid-word."""
        _backfilled_and_verified(v2_db_url)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(80, 24), run_before=_settled)

    def test_small_terminal_refusal_with_notice(self, snap_compare, v2_db_url, env_file):
        """80x24, stage D with the demo's notice, e pressed twice and D once: the notice on one line
        cut with an ellipsis (i Connection in the footer shows it whole); one notification only, the
        newest ('Promote D is refused', 'Stage D is already live.'), in a strip over the header rows,
        full width; next steps and the footer uncovered."""
        _backfilled_and_verified(v2_db_url)
        promote_through(v2_db_url, env_file, "C", "D")
        set_journal_times(v2_db_url, D_SINCE)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL, notice=NOTICE)

        async def refused(pilot) -> None:
            await settle(pilot)
            await pilot.press("e", "e", "D")
            await settle(pilot)

        assert snap_compare(app, terminal_size=(80, 24), run_before=refused)


class TestConfirmChange:
    def test_promote_c(self, snap_compare, v2_db_url, env_file):
        """At G after pressing c: a modal over the dashboard reading 'Promote to C:
        READS=false ... -> READS=true ...', 'in deploy.env:', the env diff on its own lines
        (--- deploy.env (now), +++ deploy.env (after), -READS=false, +READS=true; no temp path) and 'Write the env file?  y = yes   n = no'."""
        _backfilled_and_verified(v2_db_url)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL, env_label="deploy.env")

        assert snap_compare(app, terminal_size=(100, 30), run_before=pressing("c"))


class TestJournal:
    def test_after_c_and_d(self, snap_compare, v2_db_url, env_file):
        """The journal after promotions to C and D by alice, each confirmed deployed, all at
        2026-01-05 11:00:00 UTC: four rows, 'all off -> READS', a deploy, 'READS -> READS+DUAL_WRITE',
        a deploy, each from 'alice@laptop, db postgres', the cursor on the last row."""
        _backfilled_and_verified(v2_db_url)
        promote_through(v2_db_url, env_file, "C", "D")
        set_journal_times(v2_db_url, D_SINCE)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)

        assert snap_compare(app, terminal_size=(120, 20), run_before=pressing("j"))


class TestHelp:
    def test_dashboard_help(self, snap_compare, v2_db_url, env_file):
        """'?' on the dashboard: a modal titled 'Help: Dashboard', one paragraph on what the
        dashboard is for, then every key (c, D, e, s, b, R, ^q, ?, d, j, r ...) with its meaning."""
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)

        async def press_help(pilot) -> None:
            await settle(pilot)
            await pilot.press("question_mark")
            await pilot.pause()

        assert snap_compare(app, terminal_size=(100, 30), run_before=pressing("question_mark"))
