"""The command line end to end on a real database: the runbook, its gates and its errors."""

from __future__ import annotations

import json

import psycopg
import pytest
from helpers import age_journal, promote_to_e_steady, record_report

from cutover_tui.demo.envfile_text import DEMO_ENV

FLAG_LINES = ("ACCOUNT_SCHEMA_V2_READS", "ACCOUNT_SCHEMA_V2_WRITES", "ACCOUNT_SCHEMA_V2_DUAL_WRITE")


def declared(env_file) -> tuple[str, str, str]:
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith(FLAG_LINES))
    return tuple(values[name] for name in FLAG_LINES)


def journal_actions(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT action, operator, flags_before, flags_after FROM cutover.journal ORDER BY id").fetchall()


def non_flag_lines(env_file) -> list[str]:
    return [line for line in env_file.read_text().splitlines(keepends=True) if not line.startswith(FLAG_LINES)]


def to_stage_g(cutover) -> None:
    assert cutover("migrate")[0] == 0
    record_report(cutover.database_url, "backfill", ok=True)
    record_report(cutover.database_url, "verify", ok=True, stage="B")


def to_stage_c(cutover) -> None:
    """Stage C written, deployed by the runbook's deploy, and its API read check passed."""
    to_stage_g(cutover)
    assert cutover("promote", "C", "--yes")[0] == 0
    record_report(cutover.database_url, "verify-reads", ok=True)


def status_json(cutover) -> dict:
    code, out, _ = cutover("status", "--json")
    assert code == 0
    return json.loads(out)


def test_status_on_a_fresh_database(cutover):
    code, out, err = cutover("status")
    assert (code, err) == (0, "")
    assert "not started" in out and "[A]" not in out
    assert "ok  migrate" in out
    assert "no  promote C" in out and "Stage A is not applied: run migrate first." in out
    data = status_json(cutover)
    assert data["stage"] is None and data["assessment"]["flags_legal"] is True
    assert data["database_url"].startswith("postgresql://")


def test_happy_path_to_archive(cutover):
    url, env = cutover.database_url, cutover.env_file
    before = non_flag_lines(env)
    to_stage_g(cutover)
    assert status_json(cutover)["stage"] == "G"

    code, out, _ = cutover("promote", "C", "--yes")
    assert code == 0 and "-ACCOUNT_SCHEMA_V2_READS=false" in out and "+ACCOUNT_SCHEMA_V2_READS=true" in out
    assert "Deployed: the API runs READS=true WRITES=false DUAL_WRITE=false (read back)" in out
    assert declared(env) == ("true", "false", "false")
    code, _, err = cutover("promote", "D", "--yes")
    assert code == 1 and "No API read check has run since stage C was deployed" in err
    record_report(url, "verify-reads", ok=True)
    assert cutover("promote", "D", "--yes")[0] == 0
    assert declared(env) == ("true", "false", "true")

    code, _, err = cutover("promote", "E", "--yes")
    assert code == 1 and "No verify has run since stage D began" in err
    assert declared(env) == ("true", "false", "true")
    record_report(url, "verify", ok=True, stage="D")
    assert cutover("promote", "E", "--yes")[0] == 0
    assert declared(env) == ("true", "true", "true")

    record_report(url, "verify", ok=True, stage="E")
    code, _, err = cutover("promote", "E-steady", "--yes")
    assert code == 1 and "confidence period" in err
    age_journal(url, 25)
    record_report(url, "verify", ok=True, stage="E")
    code, out, _ = cutover("promote", "E-steady", "--yes")
    assert code == 0 and "WARNING: Dual-write goes off: from now on nothing is mirrored" in out
    assert declared(env) == ("true", "true", "false")

    code, _, err = cutover("archive", "--confirm", "whatever")
    assert code == 1 and "The rollback window is open" in err
    assert cutover("close-rollback-window")[0] == 0
    for _ in range(3):
        record_report(url, "verify", ok=True, stage="E'")
    dbname = status_json(cutover)["database"]
    code, _, err = cutover("archive", "--confirm", dbname + "x")
    assert code == 2 and "not this database's name" in err
    code, out, _ = cutover("archive", "--confirm", dbname)
    assert code == 0 and "Archived" in out
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM legacy.platform_workspaces_legacy").fetchone()[0] == 20
    assert status_json(cutover)["stage"] == "F"

    assert [a for a, *_ in journal_actions(url)] == [
        "migrate", *["promote", "deploy"] * 4, "rollback-window-closed", "archive"]
    promote_rows = [row for row in journal_actions(url) if row[0] == "promote"]
    assert promote_rows[0][2:] == ({"reads": False, "writes": False, "dual_write": False},
                                   {"reads": True, "writes": False, "dual_write": False})
    assert all(row[1] == "alice" for row in journal_actions(url))
    assert non_flag_lines(env) == before


def test_c_refused_while_the_backfill_has_errors(cutover):
    assert cutover("migrate")[0] == 0
    record_report(cutover.database_url, "backfill", ok=False)
    record_report(cutover.database_url, "verify", ok=True, stage="B")
    code, _, err = cutover("promote", "C", "--yes")
    assert code == 1 and "The latest backfill of pixbooks had errors" in err
    assert declared(cutover.env_file) == ("false", "false", "false")


@pytest.mark.parametrize("keep, dual", [((), "true"), (("--no-dual-write",), "false")])
def test_rollback_before_write_cutover(cutover, keep, dual):
    to_stage_c(cutover)
    cutover("promote", "D", "--yes")
    code, out, _ = cutover("rollback", *keep, "--yes")
    assert code == 0 and "Roll back" in out
    assert declared(cutover.env_file) == ("false", "false", dual)
    data = status_json(cutover)
    assert data["assessment"]["rollback_open"] is True
    # Leaving the rollback means passing the gates again: a verify after the rollback.
    code, _, err = cutover("promote", "C", "--yes")
    assert code == 1 and "since the rollback was opened" in err
    record_report(cutover.database_url, "verify", ok=True, stage="G")
    assert cutover("promote", "C", "--yes")[0] == 0
    assert [a for a, *_ in journal_actions(cutover.database_url)][-3:] == ["rollback-closed", "promote", "deploy"]


def test_rollback_after_write_cutover_keeps_dual_write_and_locks_archive(cutover):
    to_stage_c(cutover)
    cutover("promote", "D", "--yes")
    record_report(cutover.database_url, "verify", ok=True, stage="D")
    assert cutover("promote", "E", "--yes")[0] == 0
    assert cutover("rollback", "--yes")[0] == 0
    assert declared(cutover.env_file) == ("true", "false", "true")
    code, _, err = cutover("archive", "--confirm", status_json(cutover)["database"])
    assert code == 1 and "A rollback is open" in err
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.platform_workspaces')").fetchone()[0] is not None


def test_illegal_flags_are_shown_and_restored(cutover):
    to_stage_g(cutover)
    cutover.env_file.write_text(DEMO_ENV.replace("ACCOUNT_SCHEMA_V2_WRITES=false", "ACCOUNT_SCHEMA_V2_WRITES=true"))
    code, out, _ = cutover("status")
    assert "ILLEGAL: nearest legal is READS=false WRITES=false DUAL_WRITE=false" in out
    code, _, err = cutover("promote", "C", "--yes")
    assert code == 1 and "not a legal row" in err
    assert cutover("restore-flags", "--yes")[0] == 0
    assert declared(cutover.env_file) == ("false", "false", "false")
    assert status_json(cutover)["assessment"]["flags_legal"] is True


def test_odd_flag_value_reads_as_false_and_is_flagged(cutover):
    cutover.env_file.write_text(DEMO_ENV.replace("ACCOUNT_SCHEMA_V2_READS=false", "ACCOUNT_SCHEMA_V2_READS=maybe"))
    code, out, _ = cutover("status")
    assert code == 0
    assert "ACCOUNT_SCHEMA_V2_READS='maybe' is not a boolean the API knows; it reads as false" in out
    assert "READS=false WRITES=false DUAL_WRITE=false  legal" in out


def test_unknown_stage_and_unconfirmed_promotion_change_nothing(cutover):
    to_stage_g(cutover)
    code, _, err = cutover("promote", "Z", "--yes")
    assert code == 2 and "Unknown stage 'Z'" in err
    code, _, err = cutover("promote", "C")  # no terminal under pytest, no --yes
    assert code == 2 and "pass --yes" in err
    assert declared(cutover.env_file) == ("false", "false", "false")
    assert [a for a, *_ in journal_actions(cutover.database_url)] == ["migrate"]


@pytest.mark.parametrize("make, says", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: (p.unlink(), p.mkdir()), "is a folder"),
])
def test_bad_env_file_is_a_clear_error(cutover, make, says):
    make(cutover.env_file)
    code, _out, err = cutover("status")
    assert code == 2 and says in err and str(cutover.env_file) in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_bad_runbook_is_a_clear_error(capsys, tmp_path, legacy_db_url, env_file):
    from helpers import ROOT

    from cutover_tui.cli import main

    runbook = tmp_path / "runbook.toml"
    runbook.write_text((ROOT / "runbook.toml").read_text() + "\n[surprise]\nkey = 1\n")
    code = main(["--runbook", str(runbook), "--database-url", legacy_db_url, "status"])
    err = capsys.readouterr().err
    assert code == 2 and str(runbook) in err and "surprise" in err


def test_journal_lists_every_action(cutover):
    to_stage_g(cutover)
    cutover("promote", "C", "--yes", operator="bob")
    code, out, _ = cutover("journal")
    assert code == 0 and "migrate" in out and "bob" in out
    assert "READS=false WRITES=false DUAL_WRITE=false -> READS=true WRITES=false DUAL_WRITE=false" in out
    rows = json.loads(cutover("journal", "--json")[1])
    assert [(r["action"], r["operator"]) for r in rows] == [("migrate", "alice"), ("promote", "bob"), ("deploy", "bob")]


def test_demo_seed_fills_and_reports_anomalies(capsys, empty_db_url):
    from helpers import ROOT

    from cutover_tui.cli import main

    code = main(["--runbook", str(ROOT / "runbook.toml"), "demo", "seed", "--size", "S",
                 "--database-url", empty_db_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["rows"]["platform_workspaces"] == 10_000
    assert summary["anomalies"]["duplicate_active_fingerprints"] > 0
    code = main(["--runbook", str(ROOT / "runbook.toml"), "demo", "seed", "--database-url", empty_db_url])
    err = capsys.readouterr().err
    assert code == 2 and "already holds legacy rows" in err


def test_backfill_command_writes_report_and_journal(cutover, tmp_path):
    assert cutover("migrate")[0] == 0
    code, out, _err = cutover("backfill", "--report", str(tmp_path / "b.json"))
    assert code == 1  # the seeded anomalies are errors: not a clean backfill
    assert "ERROR   pixbooks: identity belongs to another account" in out and "written to" in out
    body = json.loads((tmp_path / "b.json").read_text())
    assert body["ok"] is False and {s["stage"] for s in body["stages"]} >= {"accounts", "pixbook_snapshots"}
    rows = json.loads(cutover("journal", "--json")[1])
    assert rows[-1]["action"] == "backfill" and rows[-1]["report_id"].startswith("accounts-v2-backfill-report-")
    code, out, _ = cutover("backfill", "--json", "--report", str(tmp_path / "again.json"))
    assert json.loads(out)["stages"][0]["affectedRows"] == 0


@pytest.mark.parametrize("args, says", [
    (("--batch-size", "0"), "--batch-size must be a positive number"),
    (("--batch-size", "-5"), "--batch-size must be a positive number"),
    (("--tables", "accounts,nope"), "Unknown table nope"),
])
def test_backfill_bad_input_changes_nothing(cutover, args, says):
    assert cutover("migrate")[0] == 0
    code, _, err = cutover("backfill", *args)
    assert code == 2 and says in err
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0


def test_backfill_refused_before_migrate_and_with_a_bad_report_folder(cutover, tmp_path):
    code, _, err = cutover("backfill")
    assert code == 1 and "Stage A is not applied: run migrate first." in err
    assert cutover("migrate")[0] == 0
    code, _, err = cutover("backfill", "--report", str(tmp_path / "missing" / "r.json"))
    assert code == 2 and "missing" in err
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0


def test_backfill_without_a_legacy_table_is_a_clear_error(cutover):
    assert cutover("migrate")[0] == 0
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE platform_audit_events")
    code, _, err = cutover("backfill")
    assert code == 1 and "The legacy table platform_audit_events is missing" in err


def test_diff_of_two_reports(cutover, tmp_path):
    from helpers import ROOT

    data = ROOT / "tests" / "data" / "reports"
    code, out, _ = cutover("diff", str(data / "upstream-verify.json"), str(data / "console-verify.json"))
    assert code == 1  # a check newly fails: worse than before
    lines = [line for line in out.splitlines() if line]
    assert "FIXED  count:account_members  newCount 60 -> 61" in lines
    assert "+FAIL  identity_fingerprint_duplicates  count 0 -> 1" in lines
    assert lines[-1].endswith("worse than before")
    code, _, err = cutover("diff", str(data / "upstream-verify.json"), str(data / "upstream-backfill.json"))
    assert code == 2 and "choose two reports of the same kind" in err


def test_recon_command_prints_counts_anomalies_and_estimate(cutover, tmp_path):
    assert cutover("migrate")[0] == 0
    code, out, err = cutover("recon", "--out", str(tmp_path / "recon.json"))
    assert (code, err) == (1, "")  # FAIL: it predicts the backfill errors of the seed's anomalies
    assert "platform_book_snapshots" in out and "ERROR    pixbooks: identity belongs to another account" in out
    assert "Estimated backfill time" in out
    body = json.loads((tmp_path / "recon.json").read_text())
    assert body["mapping"]["platform_workspaces"] == "accounts"
    assert json.loads(cutover("journal", "--json")[1])[-1]["action"] == "recon"
    assert status_json(cutover)["stage"] == "0"
    predicted = sum(a["count"] for found in body["anomalies"].values() for a in found.values() if a["kind"] == "error")
    status = cutover("status")[1]  # before B, the dashboard and status show what the backfill will leave out
    assert f"recon      FAIL: the backfill will leave out {predicted:,} rows" in status
    assert "pixbooks: identity belongs to another account" in status
    assert status_json(cutover)["predicted_errors"]["pixbooks: identity belongs to another account"] > 0
    code, _, err = cutover("recon", "--sample-rows", "-1")
    assert code == 2 and "--sample-rows" in err


def _failed(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("FAIL ")]


def test_verify_command_passes_after_backfill_and_repairs(cutover, tmp_path):
    """The default seed plants rows the backfill reports as errors: their count checks fail by
    design (any count difference blocks the cutover), every other check passes."""
    assert cutover("migrate")[0] == 0
    cutover("backfill", "--report", str(tmp_path / "b.json"))
    code, out, _ = cutover("verify", "--report", str(tmp_path / "v1.json"))
    counts = _failed(out)
    assert code == 1 and "PASS content:pixbook_snapshots" in out
    assert counts and all(name.startswith("count:") for name in counts) and "none unexplained" in out
    assert status_json(cutover)["stage"] == "G"
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute("UPDATE pixbooks SET name = name || 'x' WHERE id = (SELECT min(id) FROM pixbooks)")
    code, out, _ = cutover("verify", "--report", str(tmp_path / "v2.json"))
    assert code == 1 and set(_failed(out)) == {*counts, "content:pixbooks"}
    # It trusted the first where nothing changed since, and says so; --full trusts nothing.
    first = json.loads((tmp_path / "v1.json").read_text())
    assert json.loads((tmp_path / "v2.json").read_text())["unchangedSince"] == first["reference"]["began"]
    assert "were read by key alone (`cutover verify --full` reads every row again)." in out
    code, out, _ = cutover("verify", "--full", "--report", str(tmp_path / "v2full.json"))
    assert set(_failed(out)) == {*counts, "content:pixbooks"} and "read by key alone" not in out
    assert "unchangedSince" not in json.loads((tmp_path / "v2full.json").read_text())
    code, out, _ = cutover("verify", "--repair", "--report", str(tmp_path / "v3.json"))
    assert code == 1 and "PASS repair:pixbooks" in out and _failed(out) == counts
    journal = json.loads(cutover("journal", "--json")[1])
    assert [r["action"] for r in journal][-4:] == ["verify", "verify", "verify", "repair"]
    assert journal[-1]["detail"]["repair"] is True
    code, out, _ = cutover("diff", str(tmp_path / "v1.json"), str(tmp_path / "v2.json"))
    assert code == 1 and "content:pixbooks" in out
    code, _, err = cutover("verify", "--sample-size", "0")
    assert code == 2 and "--sample-size" in err


def test_progress_line_shows_rows_per_second_and_eta_only_on_a_terminal(capsys):
    from cutover_tui.cli import _ProgressLine
    from cutover_tui.work.backfill import BackfillProgress

    progress = BackfillProgress(table="pixbooks", pass_no=1, done=500, total=2000, rows_per_second=100.0)
    _ProgressLine(enabled=True)(progress)
    line = capsys.readouterr().err
    assert "pixbooks" in line and " 25%" in line and "100 rows/s" in line and "ETA    15s" in line
    _ProgressLine(enabled=False)(progress)  # --json, or not a terminal: nothing extra
    assert capsys.readouterr() == ("", "")


def test_demo_without_a_terminal_prints_status_and_the_stand_in_api(capsys):
    from helpers import ROOT

    from cutover_tui.cli import main

    code = main(["--runbook", str(ROOT / "runbook.toml"), "--operator", "demo", "demo"])
    out, err = capsys.readouterr()
    assert code == 0 and "no terminal to open the console on" in err
    assert "database   ternent" in out and "ok  migrate" in out
    assert "stand-in API http://127.0.0.1:" in out and "cookie for user_" in out


def test_the_demo_runs_on_the_postgres_version_asked_for(capsys):
    """Production runs 17: a rehearsal can run on the same major version."""
    from helpers import ROOT

    from cutover_tui.cli import main

    code = main(["--runbook", str(ROOT / "runbook.toml"), "--operator", "demo", "demo", "--no-tui", "--postgres", "16"])
    out, _ = capsys.readouterr()
    assert code == 0 and "embedded PostgreSQL 16." in out and "ok  migrate" in out


def test_the_console_without_a_terminal_points_to_the_commands(cutover):
    code, _, err = cutover("tui")
    assert code == 2 and "The console needs a terminal; use `cutover status`" in err


# Seconds after the postmaster's pid file appears: while it starts (writing its first WAL and
# catalogs; half of such kills once left the folder half removed), then while the demo seeds.
@pytest.mark.parametrize("after", [0.0, 0.05, 0.1, 0.2, 0.4, 1.0])
def test_demo_killed_with_sigterm_removes_its_embedded_server(tmp_path, after):
    """A closed terminal or a plain kill must not leave the demo's postmaster running or its
    folder behind, whenever it comes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    child = subprocess.Popen([sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"),
                              "demo", "--size", "S", "--no-tui"], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(3000):
            if list(tmp_path.glob("cutover-demo-pg-*/data/postmaster.pid")):
                break
            time.sleep(0.01)
        time.sleep(after)
        folders = list(tmp_path.glob("cutover-demo-pg-*"))
        assert folders, "the demo's embedded server never started"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == 128 + signal.SIGTERM and b"Traceback" not in err
    finally:
        child.kill()
        child.communicate()
    assert not folders[0].exists()
    running = subprocess.run(["pgrep", "-f", str(folders[0])], capture_output=True, text=True).stdout
    assert running == "", running


def test_a_rollback_from_e_prime_warns_of_the_rows_only_v2_has(cutover):
    url = cutover.database_url
    assert cutover("migrate")[0] == 0 and cutover("backfill")[0] in (0, 1)  # v2 has rows (the seed's anomalies: 1)
    promote_to_e_steady(cutover, url)
    with psycopg.connect(url, autocommit=True) as conn:  # the API's writes in E': v2 only
        conn.execute("UPDATE accounts SET name = name || ' (renamed)', updated_at = now() "
                     "WHERE id IN (SELECT id FROM accounts ORDER BY id LIMIT 2)")
    code, out, _ = cutover("rollback", "--yes")
    assert code == 0
    assert "WARNING: Rows written since E' began exist only in v2 (2 in accounts)" in out
