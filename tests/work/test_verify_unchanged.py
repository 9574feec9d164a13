"""A verify given the last one's findings (`reference`) reads a row's key alone where nothing
changed since that verify found it matching, and still finds every difference."""

from __future__ import annotations

import threading

import pytest
from test_verify import by_key, execute, filled, scalar

from cutover_tui.reports.models import VerifyReport
from cutover_tui.work import verify as verify_module
from cutover_tui.work.verify import VerifyOptions, run_verify

CONTENT = ["accounts", "account_members", "identities", "pixbooks", "pixbook_snapshots", "audit_events"]


def verify(url: str, reference: dict | None = None, **options) -> dict:
    report = run_verify(url, VerifyOptions(**options), reference=reference)
    VerifyReport.model_validate(report)
    return report


def content(report: dict) -> dict[str, dict]:
    return {name: by_key(report)[f"content:{name}"] for name in CONTENT}


def differences(report: dict) -> dict[str, tuple]:
    return {name: (c["missingInV2"], c["extraInV2"], c["different"]) for name, c in content(report).items()
            if (c["missingInV2"], c["extraInV2"], c["different"]) != (0, 0, 0)}


@pytest.fixture
def first(legacy_db_url) -> tuple[str, dict]:
    filled(legacy_db_url)
    report = verify(legacy_db_url)
    assert differences(report) == {} and "reference" in report
    return legacy_db_url, report


def test_rows_nothing_wrote_since_are_read_by_key_and_a_write_on_either_side_is_found(first):
    url, before = first
    again = verify(url, before["reference"])
    assert again["unchangedSince"] == before["reference"]["began"]
    assert all(content(again)[n]["rowsUnchanged"] == by_key(again)[f"count:{n}"]["newCount"] > 0 for n in CONTENT)
    assert differences(again) == {} and by_key(again)["content:pixbooks"]["ok"] is True

    execute(url, "UPDATE pixbook_snapshots SET wrapped_dek = 'x' WHERE id = 'snap_10'",
            "DELETE FROM account_members WHERE id = (SELECT min(id) FROM account_members)",
            "UPDATE platform_books SET name = name || ' (renamed)' WHERE id = 'book_7'")
    found = verify(url, before["reference"])
    assert differences(found) == {"pixbook_snapshots": (0, 0, 1), "account_members": (1, 0, 0), "pixbooks": (0, 0, 1)}
    assert content(found)["pixbook_snapshots"]["examples"]["different"] == [{"id": "snap_10",
                                                                            "columns": ["wrapped_dek"]}]
    assert content(found)["pixbooks"]["differentByColumn"] == {"name": 1}
    # The ranges that differ are read in full at the later looks; the others by key alone.
    assert content(found)["pixbook_snapshots"]["rowsUnchanged"] < content(again)["pixbook_snapshots"]["rowsUnchanged"]
    assert content(found)["audit_events"]["rowsUnchanged"] == content(again)["audit_events"]["rowsUnchanged"]


def test_a_difference_found_then_is_found_again_though_neither_row_changed_since(legacy_db_url):
    """The reference's ranges that differed at their first look are never taken as they were."""
    filled(legacy_db_url)
    execute(legacy_db_url, "UPDATE identities SET display_name = 'Not the legacy name' WHERE id = 'mu_3'")
    before = verify(legacy_db_url)
    assert differences(before) == {"identities": (0, 0, 1)}
    assert before["reference"]["lookedAgain"]["identities"]
    again = verify(legacy_db_url, before["reference"])
    assert differences(again) == {"identities": (0, 0, 1)}
    assert content(again)["identities"]["examples"]["different"] == [{"id": "mu_3", "columns": ["display_name"]}]
    assert content(again)["accounts"]["rowsUnchanged"] == content(again)["accounts"]["compared"]


def test_an_older_twin_written_since_makes_its_unchanged_twin_land_deleted(first, monkeypatch):
    """An identity's status follows its older twins (mapping.Twins): the list of twins as it was
    then tells which unchanged identities to read in full, though the twin written since sits in
    another range (a range of three)."""
    url, before = first
    monkeypatch.setattr(verify_module, "FIRST_RANGE_ROWS", 3)
    monkeypatch.setattr(verify_module, "MIN_RANGE_ROWS", 3)
    monkeypatch.setattr(verify_module, "MAX_RANGE_ROWS", 3)
    workspace, fingerprint, created = scalar(
        url, "SELECT (workspace_id, identity_key_fingerprint, created_at)::text FROM platform_managed_users "
             "WHERE status <> 'deleted' AND identity_key_fingerprint IS NOT NULL ORDER BY id LIMIT 1"
    ).strip("()").split(",", 2)
    key = scalar(url, "SELECT id FROM platform_managed_users WHERE workspace_id = %s AND identity_key_fingerprint = %s "
                      "AND status <> 'deleted' ORDER BY created_at, id LIMIT 1", (workspace, fingerprint))
    execute(url, "INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key, "
                 "identity_key_fingerprint, created_at) VALUES ('zz_older', %s, 'Older', 'older-key', %s, "
                 "%s::timestamptz - interval '1 day')", params=(workspace, fingerprint, created.strip('"')))
    found = verify(url, before["reference"])
    identities = content(found)["identities"]
    assert identities["examples"]["missing"] == ["zz_older"]
    assert identities["examples"]["different"] == [{"id": key, "columns": ["status"]}]


def test_nothing_is_trusted_under_another_rule_in_full_or_after_a_table_is_rewritten(first):
    url, before = first
    for report in (verify(url, before["reference"], stage="C"), verify(url, before["reference"], full=True)):
        assert "unchangedSince" not in report
        assert all(c["rowsUnchanged"] == 0 for c in content(report).values())
    execute(url, "VACUUM FULL pixbook_snapshots")
    rewritten = verify(url, before["reference"])
    assert "unchangedSince" not in rewritten and differences(rewritten) == {}
    # A reference of another shape, or from a verify that did not walk every table, is none.
    assert "unchangedSince" not in verify(url, {"xmin": "not a number"})
    cancelled = threading.Event()
    cancelled.set()
    assert "reference" not in run_verify(url, VerifyOptions(), cancel=cancelled)
