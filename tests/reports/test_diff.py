"""Diffs of two reports: check by check or stage by stage, across both producers."""

from __future__ import annotations

import json

import pytest
from helpers import DATA as TEST_DATA
from hypothesis import given
from hypothesis import strategies as st

from cutover_tui.errors import BadInput
from cutover_tui.reports.diff import diff_reports, render_diff
from cutover_tui.reports.models import BackfillReport, VerifyReport
from cutover_tui.reports.store import load_report

DATA = TEST_DATA / "reports"


def report(name: str):
    return load_report(DATA / name)


def verify(*checks: dict, at: str = "2026-02-23T10:11:12.345Z") -> VerifyReport:
    return VerifyReport.model_validate({"ok": all(c["ok"] for c in checks), "generatedAt": at, "checks": list(checks)})


def statuses(diff) -> dict[str, str]:
    return {entry.key: entry.status for entry in diff.entries}


def test_upstream_verify_against_console_verify():
    """The API's own report as the base, the console's (timings, content checks) as the newer."""
    diff = diff_reports(report("upstream-verify.json"), report("console-verify.json"))
    assert statuses(diff) == {
        "count:accounts": "unchanged",
        "count:account_members": "fixed",
        "count:identities": "changed",
        "count:pixbooks": "still_failing",
        "count:pixbook_snapshots": "unchanged",
        "count:audit_events": "added",
        "account_member_account_fk": "unchanged",
        "identity_account_fk": "unchanged",
        "pixbook_identity_fk": "unchanged",
        "pixbook_account_match": "unchanged",
        "snapshot_pixbook_fk": "unchanged",
        "identity_fingerprint_duplicates": "new_failure",
        "pixbook_active_duplicates": "unchanged",
        "identity_expected_collections": "fixed",
        "content:accounts": "new_failure",
        "content:identities": "added",
        "deleted_identity_count": "unchanged",
        "deleted_pixbook_count": "unchanged",
        "account_identity_pixbook_samples": "removed",
    }
    changes = {entry.key: entry.changes for entry in diff.entries if entry.changes}
    assert changes == {
        "count:account_members": {"newCount": (60, 61)},
        "count:identities": {"oldCount": (120, 121), "newCount": (120, 121)},
        "count:pixbooks": {"oldCount": (242, 243)},
        "identity_fingerprint_duplicates": {"count": (0, 1)},
        "identity_expected_collections": {"mismatchCount": (2, 0)},
    }
    assert diff.worse


def test_render_verify_diff():
    diff = diff_reports(report("upstream-verify.json"), report("console-verify.json"))
    assert render_diff(diff) == """\
verify report 2026-02-23T10:11:12+00:00 -> 2026-02-24T08:30:00+00:00
=      count:accounts
FIXED  count:account_members  newCount 60 -> 61
~      count:identities  oldCount 120 -> 121, newCount 120 -> 121
FAIL~  count:pixbooks  oldCount 242 -> 243
=FAIL  count:pixbook_snapshots
+      count:audit_events
=      account_member_account_fk
=      identity_account_fk
=      pixbook_identity_fk
=      pixbook_account_match
=      snapshot_pixbook_fk
+FAIL  identity_fingerprint_duplicates  count 0 -> 1
=      pixbook_active_duplicates
FIXED  identity_expected_collections  mismatchCount 2 -> 0
+FAIL  content:accounts
+      content:identities
=      deleted_identity_count
=      deleted_pixbook_count
-      account_identity_pixbook_samples
checks: 2 newly failing, 1 still failing, 2 fixed, 1 changed, 2 added, 1 removed, 10 unchanged; worse than before
"""


def test_upstream_backfill_against_console_backfill():
    diff = diff_reports(report("upstream-backfill.json"), report("console-backfill.json"))
    assert [(e.section, e.key, e.status) for e in diff.entries if e.section != "stage"] == [
        ("error", "pixbooks: identity account does not match pixbook account", "still_present"),
        ("error", "pixbooks: duplicate active collection after blank collection_id mapped to 'primary'", "new"),
        ("error", "pixbook_snapshots: source rows missing required pixbook", "still_present"),
        ("error", "account_members: source rows missing required workspace/user", "fixed"),
        ("warning", "identities: duplicate active identity_key_fingerprint rows were downgraded to deleted "
                    "for v2 uniqueness", "still_present"),
    ]
    stages = {e.key: e.changes for e in diff.entries if e.section == "stage"}
    assert stages["account_members"] == {"beforeCount": (0, 60), "afterCount": (60, 61),
                                         "affectedRows": (60, 61), "orphanRows": (1, 0)}
    assert stages["accounts"] == {"beforeCount": (0, 20)}  # timings and console-only counters are no change
    assert diff.worse
    assert diff.summary() == ("stages: 6 changed; errors: 1 new, 2 still present, 1 fixed; "
                              "warnings: 1 still present")


def test_render_backfill_diff_lines():
    diff = diff_reports(report("upstream-backfill.json"), report("console-backfill.json"))
    lines = render_diff(diff).splitlines()
    assert len(lines) == len(diff.entries) + 2
    assert "~      stage accounts  beforeCount 0 -> 20" in lines
    assert ("+ERR   pixbooks: duplicate active collection after blank collection_id mapped to 'primary'  "
            "rows 0 -> 1") in lines
    assert "FIXED  account_members: source rows missing required workspace/user  rows 1 -> 0" in lines
    assert "ERR    pixbooks: identity account does not match pixbook account" in lines
    assert lines[-1].endswith("; worse than before")
    assert "\x1b" not in "".join(lines)


def test_error_groups_count_true_rows_and_merge_by_stage_and_message():
    base = json.loads((DATA / "upstream-backfill.json").read_text(encoding="utf-8"))
    newer = json.loads(json.dumps(base))
    newer["errors"][1]["rowCount"] = 5000  # rows stay capped, the count is true
    newer["errors"].append({"stage": "pixbooks", "error": newer["errors"][1]["error"], "rows": [{"id": "x"}]})
    diff = diff_reports(BackfillReport.model_validate(base), BackfillReport.model_validate(newer))
    entry = next(e for e in diff.entries if e.key.startswith("pixbooks: identity account"))
    assert entry.status == "still_present" and entry.changes == {"rows": (2, 5001)}
    assert not diff.worse


def test_a_new_warning_is_not_worse():
    base = json.loads((DATA / "upstream-backfill.json").read_text(encoding="utf-8"))
    newer = base | {"warnings": [*base["warnings"], {"stage": "pixbooks", "warning": "slow", "rows": []}]}
    diff = diff_reports(BackfillReport.model_validate(base), BackfillReport.model_validate(newer))
    assert ("warning", "pixbooks: slow", "new") in [(e.section, e.key, e.status) for e in diff.entries]
    assert not diff.worse


def test_failing_check_still_failing_with_same_figures_is_unchanged_but_flagged():
    failing = {"type": "integrity", "name": "snapshot_pixbook_fk", "count": 3, "ok": False}
    diff = diff_reports(verify(failing), verify({**failing, "durationSeconds": 0.2}))
    [entry] = diff.entries
    assert (entry.status, entry.failing, entry.changes) == ("unchanged", True, {})
    assert render_diff(diff).splitlines()[1] == "=FAIL  snapshot_pixbook_fk"
    assert not diff.worse


def test_removed_failing_check_is_marked():
    failing = {"type": "integrity", "name": "pixbook_active_duplicates", "count": 1, "ok": False}
    diff = diff_reports(verify(failing), verify({"type": "count", "table": "accounts", "ok": True}))
    assert statuses(diff) == {"count:accounts": "added", "pixbook_active_duplicates": "removed"}
    assert "-FAIL  pixbook_active_duplicates" in render_diff(diff).splitlines()
    assert not diff.worse


def test_string_figures_and_containers():
    a = {"type": "sample", "name": "s", "ok": True, "mode": "fast", "mismatches": [1], "details": {"n": 1}}
    b = {**a, "mode": "full", "mismatches": [], "details": {"n": 2}}
    [entry] = diff_reports(verify(a), verify(b)).entries
    assert (entry.status, entry.changes) == ("changed", {"mode": ("fast", "full")})


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("upstream-verify.json", "upstream-backfill.json", "Cannot compare a verify report with a backfill report"),
    ("upstream-recon.json", "upstream-recon.json", "Recon reports describe schemas"),
])
def test_reports_that_cannot_be_compared(a, b, expected):
    with pytest.raises(BadInput, match=expected):
        diff_reports(report(a), report(b))


def test_diff_dumps_worse_for_json_output():
    diff = diff_reports(report("upstream-verify.json"), report("upstream-verify.json"))
    assert diff.model_dump(mode="json")["worse"] is False


# --- Properties ------------------------------------------------------------------------

KEYS = ["count:accounts", "count:pixbooks", "content:identities", "pixbook_identity_fk",
        "identity_expected_collections", "deleted_identity_count"]
# key -> (ok, figure, seconds it took)
specs = st.dictionaries(st.sampled_from(KEYS),
                        st.tuples(st.booleans(), st.integers(0, 3), st.floats(0, 5, allow_nan=False)))


def build(spec: dict[str, tuple[bool, int, float]]) -> VerifyReport:
    checks = []
    for key, (ok, figure, seconds) in spec.items():
        kind, _, table = key.partition(":")
        check = ({"type": kind, "table": table, "oldCount": figure, "newCount": figure + (not ok)} if table
                 else {"type": "integrity", "name": key, "count": figure})
        checks.append(check | {"ok": ok, "durationSeconds": seconds})
    return verify(*checks)


@given(specs)
def test_a_report_against_itself_is_unchanged(spec):
    diff = diff_reports(build(spec), build(spec))
    assert all(entry.status == "unchanged" for entry in diff.entries) and not diff.worse


@given(specs, specs)
def test_categories_partition_the_check_keys(spec_a, spec_b):
    diff = diff_reports(build(spec_a), build(spec_b))
    keys = [entry.key for entry in diff.entries]
    assert sorted(keys) == sorted(spec_a.keys() | spec_b.keys())
    for entry in diff.entries:
        in_a, in_b = entry.key in spec_a, entry.key in spec_b
        ok_a, ok_b = spec_a.get(entry.key, (None,))[0], spec_b.get(entry.key, (None,))[0]
        assert {
            "removed": in_a and not in_b,
            "added": not in_a and ok_b is True,
            "new_failure": ok_b is False and ok_a is not False,
            "fixed": ok_a is False and ok_b is True,
            "still_failing": ok_a is False and ok_b is False and bool(entry.changes),
            "changed": ok_a is True and ok_b is True and bool(entry.changes),
            "unchanged": in_a and in_b and ok_a == ok_b and not entry.changes,
        }[entry.status]
    assert diff.worse == any(entry.status == "new_failure" for entry in diff.entries)
