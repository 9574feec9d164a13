"""Pictures of the report diff, reviewed by eye; clock-free: fixed report times, a fixed target label."""

from __future__ import annotations

import json

from helpers import DATA as TEST_DATA

from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.reports import ReportsScreen

from .support import LABEL, settings_for, settle, store, two_verifies


def diffing(*keys: str):
    """A `run_before` that opens the reports list, presses `keys` there, and waits."""
    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.push_screen(ReportsScreen())
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)
    return run_before


class TestReportDiff:
    def test_new_failure_and_fix(self, snap_compare, v2_db_url, env_file):
        """Two verifies marked and compared: 'before 2026-01-05 10:00:00 UTC' and 'after 2026-01-06
        10:00:00 UTC' with their saved ids; the summary 'checks: 1 newly failing, 1 fixed, 1
        unchanged' then 'worse than before' in red. Rows: '=' count:accounts dim, PASS | PASS;
        '+FAIL' identity_fingerprint_duplicates in red, 'PASS / count 0' | 'FAIL / count 2';
        'FIXED' identity_expected_collections in green, 'FAIL / mismatchCount 2' | 'PASS /
        mismatchCount 0'. PASS green and FAIL red in both columns, changed values yellow."""
        two_verifies(v2_db_url)
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        marked = diffing("space", "down", "space", "equals_sign")
        assert snap_compare(app, terminal_size=(100, 30), run_before=marked)

    def test_backfill_at_80x24(self, snap_compare, v2_db_url, env_file):
        """80x24, the API's backfill (2026-02-23 10:02:44) against the console's (2026-02-24
        08:20:00) by p: the heading wrapped under 80 columns; the summary ending 'worse than
        before' in red; six '~' stage rows in yellow with the changed counts before and after
        (beforeCount 0 -> 20 ...); below, scrollable, 'ERR' groups in red with their text wrapped
        in the 'what' column and '+ERR' (red, bold) for the new one; the footer keys at the bottom."""
        for name in ("upstream-backfill.json", "console-backfill.json"):
            store(v2_db_url, "backfill", json.loads((TEST_DATA / "reports" / name).read_text()))
        app = make_app(settings_for(v2_db_url, env_file), target_label=LABEL)
        assert snap_compare(app, terminal_size=(80, 24), run_before=diffing("p"))
