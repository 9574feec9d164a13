"""What "v2 matches legacy" means at each stage (README, "The verify"), on a real database without
the API: writes are made the way the API makes them (each store its own NOW() and audit row), and
corruptions the way nothing legitimate makes them."""

from __future__ import annotations

import threading
from datetime import datetime

import psycopg
import pytest
from helpers import ROOT, apply_v2
from psycopg.types.json import Jsonb

from cutover_tui.demo.seed import seed_legacy
from cutover_tui.errors import Refused
from cutover_tui.reports.models import VerifyCheck, VerifyReport
from cutover_tui.reports.present import check_line
from cutover_tui.work import verify as verify_module
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.migrate import apply_legacy_baseline
from cutover_tui.work.verify import VerifyOptions, run_verify


@pytest.fixture
def clean_url(empty_db_url) -> str:
    """Seeded clean (the backfill reports no errors) and backfilled."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=20, clean=True)
    apply_v2(empty_db_url)
    assert Backfill(empty_db_url, "test", BackfillOptions()).run()["ok"]
    return empty_db_url


def verify(url: str, stage: str | None, began: datetime | None = None, **options) -> dict:
    report = run_verify(url, VerifyOptions(stage=stage, stage_began=began, **options))
    VerifyReport.model_validate(report)
    return report


def checks(report: dict) -> dict[str, dict]:
    return {c.get("name") or f"{c['type']}:{c['table']}": c for c in report["checks"]}


def failing(report: dict) -> set[str]:
    return {key for key, check in checks(report).items() if not check["ok"]}


def run(url: str, *statements: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)


def now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def audit(url: str, store: str, event_id: str, payload: dict) -> None:
    """An audit row of one store's own, as the API writes it beside each write."""
    table, account = ("platform_audit_events", "workspace_id") if store == "v1" else ("audit_events", "account_id")
    run(url, f"INSERT INTO {table} (id, {account}, event_type, payload, created_at) "
             "VALUES (%s, 'ws_3', 'test.write', %s, now())", params=(event_id, Jsonb(payload)))


def mirrored_rename(url: str, account: str, name: str, primary: str = "v1") -> None:
    """A rename the API writes to its primary and then mirrors: each store's own NOW() and audit row."""
    for store in (primary, "v2" if primary == "v1" else "v1"):
        table = "platform_workspaces" if store == "v1" else "accounts"
        run(url, f"UPDATE {table} SET name = %s, updated_at = now() WHERE id = %s", params=(name, account))
        audit(url, store, f"evt_{store}_{account}_{name}", {"id": account})


def mirrored_snapshot(url: str, snapshot: str, book: str) -> None:
    """A snapshot saved in legacy and mirrored a moment later: the mirror's created_at is later."""
    run(url, "INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256, "
             "wrapped_dek, created_at) VALUES (%s, %s, 99, 'k', 's', 'd', now())", params=(snapshot, book))
    run(url, "INSERT INTO pixbook_snapshots (id, pixbook_id, version, cipher_object_key, cipher_sha256, "
             "wrapped_dek, created_at) VALUES (%s, %s, 99, 'k', 's', 'd', clock_timestamp() + interval '5 ms')",
        params=(snapshot, book))


# --- C, D, E: the API writes both stores ------------------------------------------------------


def test_mirrored_writes_differ_only_where_the_rule_allows_from_c_on(clean_url):
    url = clean_url
    book = "book_3"
    mirrored_rename(url, "ws_3", "Renamed in D")
    mirrored_rename(url, "ws_4", "Renamed in E", primary="v2")  # v2 first: legacy's updated_at is later
    mirrored_snapshot(url, "snap_mirrored", book)
    exact = verify(url, None)
    # Compared exactly, the stores' own timestamps and audit rows are differences.
    assert {"content:accounts", "content:pixbook_snapshots", "content:audit_events"} <= failing(exact)
    for stage in ("C", "D", "E"):
        report = verify(url, stage)
        assert report["ok"], (stage, failing(report))
        found = checks(report)
        assert found["content:audit_events"]["legacyAuditSinceBackfill"] == 2
        assert found["content:audit_events"]["v2AuditSinceBackfill"] == 2
        assert found["count:audit_events"]["ok"] and found["count:audit_events"]["oldCount"] == \
            found["count:audit_events"]["newCount"]
        # The v2 rows written since the backfill, whichever store's timestamps are later.
        assert found["content:accounts"]["timestampsSinceBackfill"] == 2
        assert found["content:pixbook_snapshots"]["timestampsSinceBackfill"] == 1
    line = check_line(VerifyCheck.model_validate(checks(verify(url, "D"))["content:audit_events"]))
    assert line == ("PASS content:audit_events (set aside by the mirrored rule: 2 legacy's own audit events "
                    "since the backfill, 2 v2's own audit events since the backfill)")


def test_a_business_column_or_an_old_timestamp_still_differs_from_c_on(clean_url):
    url = clean_url
    mirrored_rename(url, "ws_3", "Renamed")
    # v2 changed behind the API's back, its updated_at untouched; and a legacy write never mirrored.
    run(url, "UPDATE identities SET display_name = display_name || '!' WHERE id = 'mu_7'",
        "UPDATE platform_books SET name = 'Unmirrored', updated_at = now() WHERE id = 'book_9'",
        # A timestamp from before the backfill that no write since explains.
        "UPDATE pixbooks SET updated_at = updated_at - interval '1 day' WHERE id = 'book_11'")
    for stage in ("C", "D", "E", "E'"):
        found = checks(verify(url, stage, now(url) if stage == "E'" else None))
        assert found["content:identities"]["examples"]["different"] == [{"id": "mu_7", "columns": ["display_name"]}]
        assert found["content:pixbooks"]["examples"]["different"] == [
            {"id": "book_11", "columns": ["updated_at"]}, {"id": "book_9", "columns": ["name", "updated_at"]}]
        assert found["content:accounts"]["ok"], stage


def test_audit_events_copied_by_the_backfill_compare_exactly(clean_url):
    url = clean_url
    run(url, "UPDATE audit_events SET event_type = 'tampered' WHERE id = (SELECT min(id) FROM audit_events)",
        "DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)")
    found = checks(verify(url, "D"))
    assert not found["content:audit_events"]["ok"] and not found["count:audit_events"]["ok"]
    assert found["content:audit_events"]["different"] == found["content:audit_events"]["missingInV2"] == 1


def test_repair_from_c_on_never_reverts_a_later_v2_write(clean_url):
    url = clean_url
    # ws_5: v2 written later than legacy (a write legacy never got); ws_6: legacy's write never mirrored.
    run(url, "UPDATE accounts SET name = 'Newer in v2', updated_at = now() WHERE id = 'ws_5'",
        "UPDATE platform_workspaces SET name = 'Newer in legacy', updated_at = now() WHERE id = 'ws_6'")
    found = checks(verify(url, "D", repair=True))
    assert found["repair:accounts"]["updated"] == 1 and found["repair:accounts"]["keptNewerInV2"] == 1
    assert not found["repair:accounts"]["ok"] and found["repair:accounts"]["stillDifferent"] == 1
    with psycopg.connect(url) as conn:
        names = dict(conn.execute("SELECT id, name FROM accounts WHERE id IN ('ws_5', 'ws_6')").fetchall())
    assert names == {"ws_5": "Newer in v2", "ws_6": "Newer in legacy"}


@pytest.mark.parametrize("stage", ["E", "E'"])
def test_repair_is_refused_while_v2_is_the_write_primary(clean_url, stage):
    with pytest.raises(Refused, match="refused while v2 is the write primary"):
        verify(clean_url, stage, repair=True)


# --- E': legacy stands still --------------------------------------------------------------------


def test_in_e_steady_what_v2_wrote_since_is_set_aside_and_counted(clean_url):
    url = clean_url
    mirrored_rename(url, "ws_3", "Renamed in E")  # before E' began: mirrored, compared as from C on
    began = now(url)
    run(url,
        # New rows in v2 only, as the API writes them in E'.
        "INSERT INTO identities (id, account_id, display_name, user_key, created_at, updated_at) "
        "VALUES ('mu_new', 'ws_3', 'New', 'new-key', now(), now())",
        "INSERT INTO pixbooks (id, account_id, identity_id, collection_id, name, created_at, updated_at) "
        "VALUES ('book_new', 'ws_3', 'mu_new', 'fresh', 'New', now(), now())",
        # Changed in v2 since E' began.
        "UPDATE identities SET display_name = 'Changed', updated_at = now() WHERE id = 'mu_7'",
        "UPDATE pixbooks SET status = 'deleted', updated_at = now() WHERE id = "
        "(SELECT min(id) FROM pixbooks WHERE status <> 'deleted' AND account_id = 'ws_4')",
        # A member removed in v2, which the API's audit trail names.
        "DELETE FROM account_members WHERE id = (SELECT min(id) FROM account_members WHERE role <> 'owner')")
    with psycopg.connect(url) as conn:
        removed = conn.execute("SELECT min(id) FROM platform_workspace_members WHERE role <> 'owner'").fetchone()[0]
    audit(url, "v2", "evt_member_removed", {"id": removed})
    for _ in range(3):  # the archive gate counts three verifies in E'
        report = verify(url, "E'", began)
        assert report["ok"], failing(report)
    found = checks(report)
    assert found["content:identities"]["newInV2"] == 1 and found["content:identities"]["changedInV2"] == 1
    assert found["content:pixbooks"]["newInV2"] == 1 and found["content:pixbooks"]["changedInV2"] == 1
    assert found["content:account_members"]["removedInV2"] == 1
    assert found["content:audit_events"]["v2AuditSinceBackfill"] == 2  # the rename's mirror and the removal
    assert (found["count:identities"]["newCount"], found["count:identities"]["newInV2"]) == (
        found["count:identities"]["oldCount"] + 1, 1)
    assert found["deleted_pixbook_count"]["ok"] and found["identity_expected_collections"]["changedInV2"] >= 1
    assert found["account_identity_pixbook_samples"]["changedInV2"] >= 2
    line = check_line(VerifyCheck.model_validate(found["count:identities"]))
    assert line == "PASS count:identities (set aside by the E' rule: 1 new in v2)"
    # The same database compared as in E: what v2 wrote alone is a difference there.
    assert {"count:identities", "content:identities", "content:account_members"} <= failing(verify(url, "E"))


def test_in_e_steady_a_row_gone_from_v2_unexplained_or_changed_without_a_write_fails(clean_url):
    url = clean_url
    began = now(url)
    run(url, "DELETE FROM account_members WHERE id = (SELECT min(id) FROM account_members WHERE role <> 'owner')",
        "UPDATE accounts SET name = name || '!' WHERE id = 'ws_8'")
    found = checks(verify(url, "E'", began))
    assert not found["content:account_members"]["ok"] and not found["count:account_members"]["ok"]
    assert found["content:account_members"]["missingInV2"] == 1
    assert found["content:accounts"]["examples"]["different"] == [{"id": "ws_8", "columns": ["name"]}]


def test_in_e_steady_rows_gone_with_their_removed_account_are_removals(clean_url):
    url = clean_url
    began = now(url)
    run(url, "DELETE FROM accounts WHERE id = 'ws_12'")  # cascades to its members, identities, books, snapshots
    audit(url, "v2", "evt_account_removed", {"accountId": "ws_12"})
    report = verify(url, "E'", began)
    assert report["ok"], failing(report)
    found = checks(report)
    assert found["content:accounts"]["removedInV2"] == 1 and found["content:identities"]["removedInV2"] > 0
    assert found["content:audit_events"]["changedInV2"] > 0  # their account set null by the foreign key


# --- a second look reports only what differed at every look -----------------------------------------


def test_a_different_write_in_flight_at_each_look_is_no_difference(clean_url, monkeypatch):
    """Live traffic: each look catches another write between primary and mirror; none of them stays."""
    url = clean_url
    identity, account = "mu_7", "ws_3"
    with psycopg.connect(url) as conn:
        account = conn.execute("SELECT account_id FROM identities WHERE id = %s", (identity,)).fetchone()[0]
    settle, looks = verify_module._Verify._settle, []

    def next_write_in_flight(self, check: str, until: float | None = None) -> None:
        if check == "identity_expected_collections":
            n = len(looks)
            looks.append(n)
            if n:  # the previous look's book lands in v2; a new one is on its way
                run(url, "INSERT INTO pixbooks (id, account_id, identity_id, collection_id, name, created_at, "
                         "updated_at) SELECT id, workspace_id, managed_user_id, collection_id, name, created_at, "
                         "updated_at FROM platform_books WHERE id = %s", params=(f"book_flight_{n - 1}",))
            run(url, "INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id) "
                     "VALUES (%s, %s, %s, 'In flight', %s)", params=(f"book_flight_{n}", account, identity, f"c{n}"))
        settle(self, check, until)

    run(url, "INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id) "
             "VALUES ('book_flight_first', %s, %s, 'In flight', 'c_first')", params=(account, identity))
    monkeypatch.setattr(verify_module._Verify, "_settle", next_write_in_flight)
    found = checks(run_verify(url, VerifyOptions(stage="D", reconcile=False)))["identity_expected_collections"]
    assert looks and (found["ok"], found["firstLookCount"], found["count"], found["rows"]) == (False, 1, 1, [
        {"identity_id": identity, "collection_id": "c_first", "problem": "missing in v2"}])


def test_ranges_that_differ_are_looked_at_again_after_one_shared_pause(clean_url, monkeypatch):
    """Writes caught between primary and mirror in many ranges of a table: the walk goes on and
    looks at all of them again after one pause per part, not one pause per range."""
    monkeypatch.setattr(verify_module, "FIRST_RANGE_ROWS", 2)
    monkeypatch.setattr(verify_module, "MIN_RANGE_ROWS", 2)
    monkeypatch.setattr(verify_module, "MAX_RANGE_ROWS", 2)
    url = clean_url
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM platform_workspaces ORDER BY id").fetchall()][::4]
    run(url, "UPDATE platform_workspaces SET name = name || ' (renamed)' WHERE id = ANY(%s)", params=(ids,))
    waits: list[float] = []

    class MirrorsLandWhileVerifyWaits(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if not waits:
                run(url, "UPDATE accounts SET name = name || ' (renamed)' WHERE id = ANY(%s)", params=(ids,))
            waits.append(timeout or 0.0)
            return super().wait(timeout)

    report = run_verify(url, VerifyOptions(stage="D", workers=1), cancel=MirrorsLandWhileVerifyWaits())
    accounts = checks(report)["content:accounts"]
    assert report["ok"], failing(report)
    assert accounts["rangesSettled"] == len(ids) >= 5 and accounts["different"] == 0
    assert len(waits) == len(ids) and sum(waits) <= verify_module.SETTLE_SECONDS
