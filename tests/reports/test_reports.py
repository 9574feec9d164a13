"""Reports from either producer load, round-trip unchanged, fail with one clear sentence,
and save as a file plus a row that always agree."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from helpers import DATA as TEST_DATA

from cutover_tui.errors import BadInput
from cutover_tui.reports import store as report_store
from cutover_tui.reports.models import BackfillReport, ReconReport, VerifyCheck, VerifyReport, dump_report, report_kind
from cutover_tui.reports.store import (
    check_report_dir,
    check_report_path,
    file_name,
    latest,
    load_report,
    load_stored,
    save_report,
)
from cutover_tui.store.db import ensure_console_schema

DATA = TEST_DATA / "reports"
FIXTURES = sorted(DATA.glob("*.json"))
UPSTREAM_CHECKS = [
    "count:accounts", "count:account_members", "count:identities", "count:pixbooks", "count:pixbook_snapshots",
    "account_member_account_fk", "identity_account_fk", "pixbook_identity_fk", "pixbook_account_match",
    "snapshot_pixbook_fk", "identity_fingerprint_duplicates", "pixbook_active_duplicates",
    "account_identity_pixbook_samples", "identity_expected_collections",
    "deleted_identity_count", "deleted_pixbook_count",
]


def fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def write_json(path: Path, body: object) -> Path:
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- Loading and round-trips -----------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_written_back_is_the_same_file(path):
    """Upstream's JSON.stringify(report, null, 2) layout and key order survive load + dump."""
    assert dump_report(load_report(path)) == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "model", "kind"), [
    ("upstream-recon.json", ReconReport, "recon"),
    ("upstream-backfill.json", BackfillReport, "backfill"),
    ("upstream-verify.json", VerifyReport, "verify"),
    ("console-backfill.json", BackfillReport, "backfill"),
    ("console-verify.json", VerifyReport, "verify"),
])
def test_kind_is_told_by_shape(name, model, kind):
    report = load_report(DATA / name)
    assert type(report) is model and report_kind(report) == kind


def test_upstream_verify_fields():
    report = load_report(DATA / "upstream-verify.json")
    assert report.generated_at == datetime(2026, 2, 23, 10, 11, 12, 345000, tzinfo=UTC)
    assert [check.key for check in report.checks] == UPSTREAM_CHECKS
    count = report.checks[3]
    assert (count.type, count.table, count.old_table, count.old_count, count.new_count, count.ok) == (
        "count", "pixbooks", "platform_books", 242, 240, False)
    reconcile = report.checks[-2]
    assert reconcile.model_extra == {"forcedDeletedForFingerprintUniqueness": 1, "expectedNewCount": 5}
    assert not report.ok and not report.clean and not report.passed


def test_upstream_backfill_fields():
    report = load_report(DATA / "upstream-backfill.json")
    assert [stage.stage for stage in report.stages] == [
        "accounts", "account_members", "identities", "pixbooks", "pixbook_snapshots", "audit_events"]
    assert report.stages[3].model_extra == {"missingIdentityRows": 0, "accountMismatchRows": 2}
    assert [(e.stage, e.row_count) for e in report.errors] == [
        ("account_members", 1), ("pixbooks", 2), ("pixbook_snapshots", 4)]
    assert report.warnings[0].message.startswith("duplicate active identity_key_fingerprint")
    assert not report.ok and not report.clean


def test_upstream_recon_fields():
    report = load_report(DATA / "upstream-recon.json")
    assert report.auth_user_id_type == "text"
    assert report.mapping["platform_books"] == "pixbooks"
    assert report.schemas["auth_users"][0].column_default is None
    assert any(c.columns is None for c in report.constraints["auth_users"])  # NOT NULL constraints
    assert report.passed


def test_console_row_count_prefers_the_true_count_over_capped_rows():
    body = fixture("console-backfill.json")
    body["errors"][0] |= {"count": 5000}
    body["errors"][1] |= {"count": None, "rowCount": 7}  # a null count is not a count
    errors = BackfillReport.model_validate(body).errors
    assert [e.row_count for e in errors] == [5000, 7, 4]


def test_unknown_fields_are_kept_at_every_level():
    body = fixture("upstream-backfill.json")
    body["runner"] = {"host": "ops-1", "tags": ["b", None]}
    body["stages"][0]["vacuumed"] = True
    body["errors"][1]["hint"] = "fix the books"
    body["errors"][1]["rows"][0]["extra"] = [1, 2.5]
    body["warnings"][0]["severity"] = "low"
    report = BackfillReport.model_validate(body)
    assert json.loads(dump_report(report)) == body
    recon = fixture("upstream-recon.json")
    recon["schemas"]["auth_users"][0]["ordinal"] = 1
    recon["constraints"]["auth_users"][0]["deferrable"] = "NO"
    assert json.loads(dump_report(ReconReport.model_validate(recon))) == recon


def test_absent_optional_fields_stay_absent_and_given_nulls_stay_null():
    body = {"ok": True, "generatedAt": "2026-02-23T10:11:12.345Z",
            "checks": [{"type": "integrity", "name": "x", "count": 0, "ok": True},
                       {"type": "count", "table": "accounts", "oldTable": None, "ok": True}]}
    assert json.loads(dump_report(VerifyReport.model_validate(body))) == body


def test_report_built_in_code_dumps_camel_case_and_upstream_stamp():
    check = VerifyCheck(type="count", table="accounts", old_table="platform_workspaces", old_count=3,
                        new_count=3, ok=True)
    at = datetime(2026, 2, 24, 8, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    body = json.loads(dump_report(VerifyReport(ok=True, generated_at=at, checks=[check])))
    assert body == {"ok": True, "generatedAt": "2026-02-24T07:30:00.123Z",
                    "checks": [{"type": "count", "ok": True, "table": "accounts", "oldTable": "platform_workspaces",
                                "oldCount": 3, "newCount": 3}]}


def test_stamp_written_as_read_until_changed():
    body = fixture("upstream-verify.json") | {"generatedAt": "2026-02-23T12:11:12+02:00"}
    report = VerifyReport.model_validate(body)
    assert report.generated_at == datetime(2026, 2, 23, 10, 11, 12, tzinfo=UTC)
    assert json.loads(dump_report(report))["generatedAt"] == "2026-02-23T12:11:12+02:00"
    moved = report.model_copy(update={"generated_at": report.generated_at + timedelta(seconds=1)})
    assert json.loads(dump_report(moved))["generatedAt"] == "2026-02-23T10:11:13.000Z"


def test_backfill_ok_is_derived_when_missing_and_kept_when_inconsistent():
    body = fixture("upstream-backfill.json")
    del body["ok"]
    assert BackfillReport.model_validate(body).ok is False
    claimed = BackfillReport.model_validate(body | {"ok": True})
    assert claimed.ok is True and not claimed.clean and not claimed.passed
    assert json.loads(dump_report(claimed))["ok"] is True


def test_verify_passes_only_when_every_check_does():
    body = fixture("upstream-verify.json") | {"ok": True}
    assert not VerifyReport.model_validate(body).passed
    for check in body["checks"]:
        check["ok"] = True
    assert VerifyReport.model_validate(body).passed


# --- Bad input -------------------------------------------------------------------------


def upstream_verify_with(**changes) -> dict:
    return fixture("upstream-verify.json") | changes


@pytest.mark.parametrize(("body", "expected"), [
    (upstream_verify_with(ok="yes"), 'not a valid verify report: field ok: Input should be a valid boolean (got "yes")'),
    ({**fixture("upstream-verify.json"), "checks": [{"type": "count", "table": "a", "ok": 1}]},
     "field checks[0].ok: Input should be a valid boolean (got 1)"),
    ({**fixture("upstream-verify.json"), "checks": [{"type": "count", "ok": True}]},
     "field checks[0]: a check needs a name or a table"),
    (upstream_verify_with(checks={"a": 1}), "field checks: Input should be a valid list"),
    (upstream_verify_with(generatedAt="2026-02-23T10:11:12"), "field generatedAt: Input should have timezone info"),
    (upstream_verify_with(generatedAt=1771841472), "field generatedAt: should be an ISO 8601 timestamp"),
    (upstream_verify_with(checks=[{"type": "integrity", "name": "x", "ok": True}] * 2),
     "two checks are both named 'x'"),
    ({"ok": True, "generatedAt": "2026-02-23T10:11:12.345Z"},
     "not a recon, backfill or verify report: it has none of `checks`, `stages`, `schemas` or `mapping`"),
    ({k: v for k, v in fixture("upstream-backfill.json").items() if k != "errors"},
     "not a valid backfill report: field errors is missing"),
    ({**fixture("upstream-backfill.json"), "stages": [{"stage": "accounts", "oldCount": "20", "beforeCount": 0,
                                                        "afterCount": 20, "affectedRows": 20}]},
     'field stages[0].oldCount: Input should be a valid integer (got "20")'),
    ({**fixture("upstream-recon.json"), "mapping": ["accounts"]}, "not a valid recon report: field mapping"),
    ([fixture("upstream-verify.json")], "is JSON but not an object"),
])
def test_wrong_shape_names_file_and_field(tmp_path, body, expected):
    path = write_json(tmp_path / "report.json", body)
    with pytest.raises(BadInput) as raised:
        load_report(path)
    assert str(raised.value).startswith(f"Report file {path} ")
    assert expected in str(raised.value)


def test_several_problems_are_counted_in_one_sentence(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": True, "generatedAt": "2026-02-23T10:11:12Z", "stages": [{}]})
    with pytest.raises(BadInput, match=r"field stages\[0\]\.stage is missing \(and 6 more problems\)\.$"):
        load_report(path)


def test_truncated_json(tmp_path):
    text = (DATA / "upstream-verify.json").read_text(encoding="utf-8")
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(BadInput, match=r"is not valid JSON \(.* at line \d+, column \d+\); it may be truncated"):
        load_report(path)


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is not valid JSON"),
    (b'{"ok": "\xff"}', "is not UTF-8 text"),
])
def test_not_json(tmp_path, content, expected):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=expected):
        load_report(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInput, match=r"does not exist; check the path"):
        load_report(tmp_path / "nope.json")
    with pytest.raises(BadInput, match=r"is a folder; give the path of a report file"):
        load_report(tmp_path)


def test_huge_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as file:
        file.truncate(report_store.MAX_REPORT_BYTES + 1)  # sparse: no disk, no time
    with pytest.raises(BadInput, match=r"is over 256 MB, far bigger than any report"):
        load_report(path)


def test_huge_stream_without_a_size_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setattr(report_store, "MAX_REPORT_BYTES", 1000)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)

    def feed():
        with fifo.open("wb") as pipe:
            pipe.write(b" " * 5000)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with pytest.raises(BadInput, match="far bigger than any report"):
            load_report(fifo)
    finally:
        writer.join(timeout=10)


# --- Report paths ----------------------------------------------------------------------


def test_report_path_in_a_writable_folder(tmp_path):
    assert check_report_path(tmp_path / "r.json") == tmp_path / "r.json"
    assert leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("relative", "expected"), [
    ("missing/r.json", r"Report folder .*missing does not exist; create it or choose another path\."),
    ("a-file/r.json", r"Report folder .*a-file is a file, not a folder; choose another path\."),
    ("a-folder", r"Report path .*a-folder is a folder; give a file name, such as .*report\.json\."),
])
def test_report_path_refused_before_any_work(tmp_path, relative, expected):
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(BadInput, match=expected):
        check_report_path(tmp_path / relative)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux sysfs")
def test_report_path_in_a_folder_nobody_can_write():
    """sysfs takes no new files even from root, so this runs as root too."""
    with pytest.raises(BadInput, match=r"Report folder /sys is not writable \(.+\); fix its permissions"):
        check_report_path("/sys/r.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_report_path_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(BadInput, match=r"is not writable \(Permission denied\)"):
            check_report_path(folder / "r.json")
    finally:
        folder.chmod(0o700)


def test_report_dir_is_created_or_refused(tmp_path):
    assert check_report_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    with pytest.raises(BadInput, match=r"Report folder .*a-file/b cannot be created \(.+\); create it"):
        check_report_dir(tmp_path / "a-file" / "b")


# --- Saving: file and row --------------------------------------------------------------


@pytest.fixture
def conn(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ensure_console_schema(conn)
        yield conn


def test_save_writes_default_name_and_row(conn, tmp_path):
    report = load_report(DATA / "console-verify.json")
    folder = tmp_path / "reports" / "new"
    old_umask = os.umask(0o022)
    try:
        stored = save_report(conn, report, kind="verify", report_dir=folder, stage="G")
    finally:
        os.umask(old_umask)
    target = folder / file_name("verify", report.generated_at)
    assert target.name == "accounts-v2-verify-report-2026-02-24T08-30-00-000Z.json"
    assert target.read_text(encoding="utf-8") == (DATA / "console-verify.json").read_text(encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # like upstream's writeFile, not mkstemp's 0600
    assert leftovers(folder) == []
    assert stored == report_store.StoredReport(id=target.stem, kind="verify", generated_at=report.generated_at,
                                          ok=False, stage="G", path=str(target))
    assert latest(conn, "verify") == stored
    # jsonb keeps no key order, so the row's body equals the file as JSON, not as text.
    assert json.loads(dump_report(load_stored(conn, stored.id))) == json.loads(dump_report(report))


def test_save_to_explicit_path(conn, tmp_path):
    report = load_report(DATA / "upstream-recon.json")
    target = tmp_path / "mine.json"
    stored = save_report(conn, report, kind="recon", report_dir=tmp_path / "unused", path=target)
    assert stored.path == str(target) and stored.ok
    assert not (tmp_path / "unused").exists()
    assert json.loads(dump_report(load_report(target))) == json.loads(dump_report(load_stored(conn, stored.id)))


def test_row_says_failed_when_the_body_contradicts_ok(conn, tmp_path):
    body = fixture("upstream-backfill.json") | {"ok": True}
    stored = save_report(conn, BackfillReport.model_validate(body), kind="backfill", report_dir=tmp_path)
    assert stored.ok is False
    assert load_stored(conn, stored.id).ok is True  # the body itself is kept as written


def test_saving_the_same_report_twice_keeps_the_first(conn, tmp_path):
    report = load_report(DATA / "upstream-verify.json")
    first = save_report(conn, report, kind="verify", report_dir=tmp_path)
    before = Path(first.path).read_text(encoding="utf-8")
    with pytest.raises(BadInput, match=r"A verify report generated at 2026-02-23T10:11:12.345Z is already stored"):
        save_report(conn, report, kind="verify", report_dir=tmp_path)
    assert Path(first.path).read_text(encoding="utf-8") == before
    assert leftovers(tmp_path) == []


def test_no_file_without_its_row(conn, tmp_path):
    conn.execute("DROP TABLE cutover.reports")
    with pytest.raises(psycopg.errors.UndefinedTable):
        save_report(conn, load_report(DATA / "upstream-backfill.json"), kind="backfill", report_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_file_when_the_commit_fails_after_the_rename(conn, tmp_path):
    conn.execute("""
        CREATE FUNCTION cutover.refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN RAISE EXCEPTION 'refused at commit'; END$$;
        CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON cutover.reports
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cutover.refuse();
    """)
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        save_report(conn, load_report(DATA / "upstream-verify.json"), kind="verify", report_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert latest(conn, "verify") is None


def test_save_refuses_a_kind_the_model_does_not_hold(conn, tmp_path):
    with pytest.raises(ValueError, match="cannot be saved as a backfill report"):
        save_report(conn, load_report(DATA / "upstream-verify.json"), kind="backfill", report_dir=tmp_path)


def test_load_stored_unknown_or_malformed(conn):
    with pytest.raises(BadInput, match=r"No report 'nope' is stored in this database"):
        load_stored(conn, "nope")
    at = datetime(2026, 2, 23, tzinfo=UTC)
    stored = report_store.store(conn, "verify", {"ok": True, "generatedAt": at.isoformat()}, generated_at=at,
                           stage=None, path=None)
    with pytest.raises(BadInput, match=rf"Stored report {stored.id} is not a valid verify report: field checks"):
        load_stored(conn, stored.id)


def test_recent_all_lists_every_kind_newest_first_and_previous_keeps_to_the_kind(conn):
    at = datetime(2026, 2, 23, tzinfo=UTC)

    def put(kind, hours):
        body = {"ok": True, "generatedAt": (at + timedelta(hours=hours)).isoformat(), "checks": []}
        return report_store.store(conn, kind, body, generated_at=at + timedelta(hours=hours), stage=None, path=None)

    first, backfill, second, reads = put("verify", 0), put("backfill", 1), put("verify", 2), put("verify-reads", 3)
    assert report_store.recent_all(conn, 10) == [reads, second, backfill, first]
    assert report_store.recent_all(conn, 2) == [reads, second]
    assert report_store.previous(conn, second.id) == first
    assert report_store.previous(conn, first.id) is None
    assert report_store.previous(conn, reads.id) is None  # verify-reads is a kind of its own
    assert report_store.previous(conn, "nope") is None
