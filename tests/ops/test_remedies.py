"""Remedies and accepted losses, through the CLI on the seed's planted anomalies: every class
counted as the backfill counts it, each remedy undone byte for byte, and the backfill gate
settled once every error is remedied or accepted."""

from __future__ import annotations

import json

import psycopg
from helpers import CliRun

from cutover_tui.ops.remedies import CLASSES, LEGACY_TABLES

MOVE = "pixbooks:identity-belongs-to-another-account"


def legacy_fingerprint(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x.id), '')) FROM {t} x")
                .fetchone()[0] for t in sorted(LEGACY_TABLES)}


def backfill_errors(cutover: CliRun) -> dict[str, int]:
    out = cutover("backfill", "--json")[1]
    return {f"{e['stage']}: {e['error']}": e["count"] for e in json.loads(out)["errors"]}


def classes(cutover: CliRun) -> dict[str, dict]:
    code, out, err = cutover("remedy", "list", "--json")
    assert code == 0, err
    return {c["key"]: c for c in json.loads(out)}


def test_every_class_is_counted_as_the_backfill_counts_it(cutover, tmp_path):
    assert cutover("migrate")[0] == 0
    errors = backfill_errors(cutover)
    found = classes(cutover)
    assert set(found) == {c.key for c in CLASSES}
    assert {f"{c['table']}: {c['issue']}": c["count"] for c in found.values()
            if c["count"] and c["kind"] == "error"} == errors
    warning = found["identities:duplicate-active-fingerprint-landed-as-deleted"]
    assert warning["kind"] == "warning" and warning["choices"] == {}
    code, out, _ = cutover("remedy", "show", MOVE, "--export", str(tmp_path / "ids.csv"))
    assert code == 0 and "rule: A book lands only in the account of its identity" in out
    assert "--choice move" in out and "--choice delete" in out
    lines = (tmp_path / "ids.csv").read_text().splitlines()
    assert lines[0] == "table,issue,id" and len(lines) - 1 == found[MOVE]["count"] > 0


def test_a_remedy_changes_what_it_showed_and_its_undo_puts_legacy_back_byte_for_byte(cutover):
    url = cutover.database_url
    assert cutover("migrate")[0] == 0
    before = legacy_fingerprint(url)
    moved = backfill_errors(cutover)["pixbooks: identity belongs to another account"]

    code, out, err = cutover("remedy", "apply", MOVE, "--choice", "move", "--yes")
    assert code == 0, err
    assert f"{moved:,} rows of the class; it changes, in legacy: {moved:,} in platform_books" in out
    assert "UPDATE platform_books b SET workspace_id = mu.workspace_id" in out
    assert legacy_fingerprint(url)["platform_books"] != before["platform_books"]
    assert "pixbooks: identity belongs to another account" not in backfill_errors(cutover)  # they land now

    code, out, _ = cutover("remedy", "undo", "1")
    assert code == 0 and f"{moved:,} rows of legacy as they were" in out
    assert legacy_fingerprint(url) == before
    code, _, err = cutover("remedy", "undo", "1")
    assert code == 1 and "already undone" in err

    # A deletion with what follows it (the books' snapshots), and its undo.
    code, out, _ = cutover("remedy", "apply", MOVE, "--choice", "delete", "--yes")
    assert code == 0 and "in platform_book_snapshots" in out
    assert cutover("remedy", "undo", "2")[0] == 0
    assert legacy_fingerprint(url) == before
    with psycopg.connect(url) as conn:
        actions = [a for (a,) in conn.execute("SELECT action FROM cutover.journal ORDER BY id")]
    assert actions.count("remedy") == 2 and actions.count("remedy-undone") == 2


def test_the_backfill_gate_settles_when_every_error_is_remedied_or_accepted(cutover, tmp_path):
    url = cutover.database_url
    assert cutover("migrate")[0] == 0
    backfill_errors(cutover)
    assert cutover("remedy", "apply", MOVE, "--choice", "move", "--yes")[0] == 0
    for key, state in classes(cutover).items():
        if state["count"] and state["kind"] == "error":
            code, _, err = cutover("accept-loss", key, "--reason", "planted by the demo seed", "--yes")
            assert code == 0, err
    assert backfill_errors(cutover)  # the accepted rows are still left out, and reported
    report = json.loads(cutover("backfill", "--json")[1])
    assert report["acceptedLosses"] and sum(report["acceptedLosses"].values()) == sum(
        e["count"] for e in report["errors"])
    assert "rows accepted as lost by alice: planted by the demo seed" in cutover("status")[1]
    status = json.loads(cutover("status", "--json")[1])
    reasons = " ".join(next(s for s in status["assessment"]["steps"] if s["target"] == "C")["reasons"])
    assert "had errors" not in reasons and "fix them" not in reasons
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(DISTINCT reason) FROM cutover.accepted_losses").fetchone()[0] == 1


def test_bad_remedy_input_is_one_sentence_and_changes_nothing(cutover, tmp_path):
    url = cutover.database_url
    assert cutover("migrate")[0] == 0
    before = legacy_fingerprint(url)
    (tmp_path / "ids.txt").write_text("not-a-row\n")
    for args, says in (
        (("remedy", "show", "pixbooks:nope"), "Unknown anomaly class 'pixbooks:nope'"),
        (("remedy", "apply", MOVE, "--choice", "burn", "--yes"), "has no remedy 'burn'; choose one of: move, delete"),
        (("accept-loss", MOVE, "--ids", str(tmp_path / "ids.txt"), "--reason", "x", "--yes"),
         "not-a-row is not a row of"),
        (("accept-loss", MOVE, "--reason", " ", "--yes"), "--reason must say"),
        (("remedy", "undo", "99"), "There is no remedy 99"),
    ):
        code, _, err = cutover(*args)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)
    assert legacy_fingerprint(url) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.accepted_losses").fetchone()[0] == 0


def test_verify_passes_a_count_whose_only_gap_is_rows_accepted_as_lost(cutover):
    assert cutover("migrate")[0] == 0
    errors = backfill_errors(cutover)
    code, out, _ = cutover("verify")
    assert code == 1 and "FAIL count:pixbooks" in out
    for key, state in classes(cutover).items():
        if state["count"] and state["kind"] == "error":
            assert cutover("accept-loss", key, "--reason", "planted by the demo seed", "--yes")[0] == 0
    code, out, _ = cutover("verify", "--json")
    body = json.loads(out)
    counts = {c["table"]: c for c in body["checks"] if c["type"] == "count"}
    assert all(c["ok"] for c in counts.values()), [c for c in counts.values() if not c["ok"]]
    accepted = sum(c.get("acceptedAsLost", 0) for c in counts.values())
    assert accepted == sum(errors.values())
    assert "rows accepted as lost by an operator" in cutover("verify")[1]
