"""Stage B on a real database: the §3 rules, idempotence, resume, cancel and live writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from helpers import ROOT, apply_v2, fingerprint
from psycopg import sql

from cutover_tui.demo.seed import seed_legacy
from cutover_tui.errors import Refused
from cutover_tui.rules.mapping import BY_NAME, TABLES, column_types, range_filter
from cutover_tui.store.db import JOB_LOCK_KEY
from cutover_tui.work import ranges
from cutover_tui.work.backfill import (
    PARENT_KEYS,
    Backfill,
    BackfillOptions,
    BackfillProgress,
    TableSQL,
    _run_range,
    checks_parents_itself,
    repair_rows,
)
from cutover_tui.work.migrate import apply_legacy_baseline
from cutover_tui.work.verify import run_verify

V2_TABLES = [t.v2 for t in TABLES]


def backfill(url: str, **options) -> dict:
    return Backfill(url, "test", BackfillOptions(**options)).run()


def physical(url: str) -> dict[str, str]:
    """Where and by whom every v2 row version was written: any insert, update or lock shows."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(
            f"SELECT md5(coalesce(string_agg(ctid::text || xmin::text || xmax::text, ',' ORDER BY id), '')) FROM {t}"
        ).fetchone()[0] for t in V2_TABLES}


def issues(report: dict, kind: str) -> dict[tuple[str, str], int]:
    return {(e["stage"], e[kind]): e["count"] for e in report[kind + "s"]}


def seeded(pg_server_url, name: str, workspaces: int = 20, clean: bool = False) -> str:
    from cutover_tui.demo.embedded import create_database

    url = create_database(pg_server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces, clean=clean)
    return apply_v2(url)


def test_rules_land_what_they_should_and_report_the_rest(v2_db_url):
    report = backfill(v2_db_url)
    errors = issues(report, "error")
    assert errors[("account_members", "workspace missing")] >= 1
    assert errors[("account_members", "user missing")] >= 1
    assert errors[("identities", "account missing")] >= 1
    assert errors[("pixbooks", "identity belongs to another account")] >= 1
    assert errors[("pixbooks", "identity missing")] >= 1
    assert errors[("pixbooks", "another active book of this identity has the same collection")] >= 1
    assert issues(report, "warning")[("identities", "duplicate active fingerprint: landed as deleted")] >= 1
    assert report["ok"] is False and report["passes"] >= 1
    with psycopg.connect(v2_db_url) as conn:
        # Blank and all-space collections land as 'primary' (BTRIM strips spaces only); no v2
        # book keeps a blank or space-padded one.
        assert conn.execute("SELECT count(*) FROM pixbooks WHERE btrim(collection_id) <> collection_id "
                            "OR collection_id = ''").fetchone()[0] == 0
        blanks = conn.execute("""SELECT count(*) FROM platform_books b JOIN pixbooks p USING (id)
                                 WHERE btrim(b.collection_id) = '' AND p.collection_id = 'primary'""").fetchone()[0]
        assert blanks >= 1
        # One active book per identity and collection, one active identity per fingerprint.
        assert conn.execute("""SELECT count(*) FROM (SELECT identity_id, collection_id FROM pixbooks
                               WHERE status <> 'deleted' GROUP BY 1, 2 HAVING count(*) > 1) d""").fetchone()[0] == 0
        forced = conn.execute("""SELECT count(*) FROM identities i JOIN platform_managed_users m USING (id)
                                 WHERE i.status = 'deleted' AND m.status <> 'deleted'""").fetchone()[0]
        assert forced == issues(report, "warning")[("identities", "duplicate active fingerprint: landed as deleted")]
    for stage in report["stages"]:
        assert stage["afterCount"] == stage["oldCount"] - stage["errorRows"], stage
        for entry in report["errors"] + report["warnings"]:
            assert len(entry["rows"]) == min(entry["count"], 100)


def test_idle_rerun_touches_no_tuple(v2_db_url):
    first = backfill(v2_db_url)
    before_rows, before_places = fingerprint(v2_db_url), physical(v2_db_url)
    proven = backfill(v2_db_url)  # the watermarks prove nothing changed
    again = backfill(v2_db_url)  # still the first run's findings, not the shortcut's (it has none)
    compared = backfill(v2_db_url, full_compare=True)  # every range compared by hash
    assert proven["unchangedSince"] == again["unchangedSince"] == first["runId"]
    assert proven["passes"] == again["passes"] == 0
    assert compared["passes"] == 1 and "unchangedSince" not in compared
    for report in (proven, again, compared):
        assert [s["affectedRows"] for s in report["stages"]] == [0] * len(V2_TABLES)
        assert issues(report, "error") == issues(first, "error")
        assert [s["afterCount"] for s in report["stages"]] == [s["afterCount"] for s in first["stages"]]
    assert fingerprint(v2_db_url) == before_rows
    assert physical(v2_db_url) == before_places


def test_a_v2_row_changed_by_someone_else_defeats_the_shortcut(v2_db_url):
    backfill(v2_db_url)
    expected = fingerprint(v2_db_url)
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("UPDATE pixbook_snapshots SET ledger_head = 'tampered' WHERE id = "
                     "(SELECT min(id) FROM pixbook_snapshots)")
    report = backfill(v2_db_url)
    assert "unchangedSince" not in report
    assert {s["stage"]: s["updated"] for s in report["stages"] if s["updated"]} == {"pixbook_snapshots": 1}
    assert fingerprint(v2_db_url) == expected


def test_rerun_brings_over_exactly_the_changed_rows(v2_db_url):
    backfill(v2_db_url)
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("UPDATE platform_workspaces SET name = name || '!', updated_at = now() WHERE id = 'ws_3'")
        conn.execute("INSERT INTO platform_workspace_members (id, workspace_id, user_id, role) "
                     "VALUES ('mem_new', 'ws_3', 'user_4', 'member')")
        snap = conn.execute("SELECT id FROM platform_book_snapshots l WHERE EXISTS "
                            "(SELECT 1 FROM pixbook_snapshots p WHERE p.id = l.id) ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE platform_book_snapshots SET payload_json = '{\"changed\": 1}' WHERE id = %s", (snap,))
        conn.execute("DELETE FROM platform_audit_events WHERE id = (SELECT min(id) FROM platform_audit_events)")
    report = backfill(v2_db_url)
    affected = {s["stage"]: (s["inserted"], s["updated"]) for s in report["stages"] if s["affectedRows"]}
    assert affected == {"accounts": (0, 1), "account_members": (1, 0), "pixbook_snapshots": (0, 1)}
    gone = issues(report, "warning")[("audit_events", "row deleted in legacy; kept in v2")]
    assert gone == 1
    with psycopg.connect(v2_db_url) as conn:
        assert conn.execute("SELECT name FROM accounts WHERE id = 'ws_3'").fetchone()[0].endswith("!")
        assert conn.execute("SELECT payload_json FROM pixbook_snapshots WHERE id = %s", (snap,)).fetchone()[0] == {"changed": 1}
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == \
            conn.execute("SELECT count(*) FROM platform_audit_events").fetchone()[0] + 1


def test_small_batches_give_the_same_result_and_short_transactions(pg_server_url):
    reference, batched = seeded(pg_server_url, "bf_ref"), seeded(pg_server_url, "bf_small")
    backfill(reference)
    report = backfill(batched, batch_size=7, workers=2)
    assert fingerprint(batched) == fingerprint(reference)
    assert report["longestTransactionSeconds"] < 2


def test_cancel_leaves_a_checkpoint_that_resumes(pg_server_url):
    reference, url = seeded(pg_server_url, "bf_ref2"), seeded(pg_server_url, "bf_cancel")
    backfill(reference)
    cancel = threading.Event()
    first = Backfill(url, "test", BackfillOptions(batch_size=10), progress=lambda p: cancel.set(), cancel=cancel).run()
    assert first["cancelled"] is True and first["ok"] is False
    assert any("cancelled" in e["error"] for e in first["errors"])
    second = backfill(url, batch_size=10)
    assert second["resumed"] is True and second["cancelled"] is False
    assert fingerprint(url) == fingerprint(reference)


def test_a_resumed_backfill_counts_on_from_its_checkpoint_and_times_the_rows_left(pg_server_url, capsys):
    from cutover_tui.cli import _ProgressLine

    reference, url = seeded(pg_server_url, "bf_ref_progress", 200), seeded(pg_server_url, "bf_progress", 200)
    backfill(reference)
    cancel = threading.Event()
    seen: list[BackfillProgress] = []

    def cancel_partway(p: BackfillProgress) -> None:
        seen.append(p)
        if len(seen) == 6:
            cancel.set()

    first = Backfill(url, "test", BackfillOptions(batch_size=10), progress=cancel_partway, cancel=cancel).run()
    assert first["cancelled"] is True
    with psycopg.connect(url) as conn:
        checkpoint = dict(conn.execute(
            "SELECT table_name, sum((counters ->> 'rows')::bigint)::bigint FROM cutover.backfill_parts "
            "WHERE run_id = %(run)s AND pass = (SELECT max(pass) FROM cutover.backfill_parts WHERE run_id = %(run)s) "
            "GROUP BY 1 HAVING sum((counters ->> 'rows')::bigint) > 0", {"run": first["runId"]}).fetchall())
    assert checkpoint

    resumed: list[BackfillProgress] = []
    second = Backfill(url, "test", BackfillOptions(batch_size=10), progress=resumed.append).run()
    assert second["resumed"] is True and fingerprint(url) == fingerprint(reference)
    # Before its first batch the run shows every table the checkpoint had started, where it stood.
    opening = resumed[:len(checkpoint)]
    assert {p.table: p.done for p in opening} == checkpoint
    assert all(p.checkpoint == p.done and p.rows_per_second == 0 and p.pass_no == 1 for p in opening)
    # Then it counts on from there; its rate is of this run's rows alone.
    for table, before in checkpoint.items():
        later = [p for p in resumed[len(checkpoint):] if p.table == table and p.pass_no == 1]
        assert all(p.checkpoint == before and p.done > before for p in later), table
        assert [p.done for p in later] == sorted(p.done for p in later)

    line = _ProgressLine(enabled=True)
    line(opening[0])  # no batch of this run yet: no pace to go by
    assert f"{opening[0].done:>10,}/{opening[0].total:,}" in capsys.readouterr().err.split("rows/s")[0]
    mid = next(p for p in resumed[len(checkpoint):] if p.rows_per_second and p.done < p.total)
    line._last = 0.0
    line(mid)
    out = capsys.readouterr().err
    assert f"ETA {(mid.total - mid.done) / mid.rows_per_second:5.0f}s" in out


@pytest.fixture(params=["superuser", "plain role"])
def writer_url(request, v2_db_url):
    """The database as the console's role sees it: a superuser, whose first pass switches the
    foreign keys' triggers off and checks the parents itself, or a role that may read and
    write every table but not that (a production migration role, say), whose triggers check."""
    if request.param == "superuser":
        yield v2_db_url
        return
    role = f"writer_{os.getpid()}_{random.getrandbits(32)}"
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT pg_read_all_data, pg_write_all_data TO {role}")
    try:
        yield psycopg.conninfo.make_conninfo(v2_db_url, user=role)
    finally:
        with psycopg.connect(v2_db_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_a_first_pass_checks_the_parents_itself_only_where_no_trigger_but_the_keys_would_be_silenced(
        writer_url, monkeypatch):
    import cutover_tui.work.backfill as backfill_module

    with psycopg.connect(writer_url, autocommit=True) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        assert checks_parents_itself(conn, V2_TABLES) is superuser
        # And a run's every range goes the way the role allows.
        ways: list[bool] = []
        run_range = backfill_module._run_range
        monkeypatch.setattr(backfill_module, "_run_range",
                            lambda *args: (ways.append(args[-1]), run_range(*args))[1])
        backfill(writer_url, tables=("accounts", "account_members"))
        assert ways and set(ways) == {superuser}
        if superuser:
            conn.execute("CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'")
            conn.execute("CREATE TRIGGER noop BEFORE INSERT ON pixbooks FOR EACH ROW EXECUTE FUNCTION noop()")
            assert not checks_parents_itself(conn, V2_TABLES)
            assert checks_parents_itself(conn, [t for t in V2_TABLES if t != "pixbooks"])


def test_a_first_pass_without_the_keys_triggers_locks_every_parent_it_writes_under(v2_db_url):
    backfill(v2_db_url, tables=("accounts", "identities"))
    with psycopg.connect(v2_db_url) as conn:
        table = TableSQL(BY_NAME["pixbooks"], column_types(conn, "pixbooks"))
        result = _run_range(conn, table, None, None, True, set(), own_checks=True)
        assert result.inserted > 0
        # The session's next statements (the range's checkpoint) have their triggers again.
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
        book = conn.execute("SELECT id, account_id, identity_id FROM pixbooks LIMIT 1").fetchone()
        with psycopg.connect(v2_db_url, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            # Nobody may delete a parent of a row written, or change its key, until the range
            # commits: the foreign key's own check would hold the same locks.
            for statement in ("DELETE FROM accounts WHERE id = %(account)s",
                              "DELETE FROM identities WHERE id = %(identity)s",
                              "UPDATE identities SET id = id || 'x' WHERE id = %(identity)s"):
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute(statement, {"account": book[1], "identity": book[2]})
            # Another writer's own rows under the same parents are no conflict.
            other.execute("SELECT 1 FROM accounts WHERE id = %s FOR KEY SHARE", (book[1],))
        conn.rollback()


@pytest.mark.parametrize("lock_parents", [True, False])
def test_the_rows_that_wait_are_left_out_through_a_hashed_list_never_a_join_per_row(v2_db_url, lock_parents):
    """A range's transaction joins row by row (ranges.probe_by_index); leaving the rows that
    wait out by such a join would take the square of the range's size when they all wait."""
    with psycopg.connect(v2_db_url) as conn:
        table = TableSQL(BY_NAME["account_members"], column_types(conn, "account_members"))
        ranges.probe_by_index(conn)
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN ") + table.upsert(range_filter("l", None, None), empty=True, wait_for_parents=True,
                                               lock_parents=lock_parents), {"lo": None, "hi": None}))
        assert "Anti Join" not in plan and "hashed SubPlan" in plan, plan


def test_a_row_whose_parent_is_not_in_v2_waits_for_it_without_failing_its_range(writer_url):
    backfill(writer_url)
    with psycopg.connect(writer_url, autocommit=True) as conn:
        # A signup after the backfill: a workspace, its member, an identity and a book, in legacy only.
        conn.execute("INSERT INTO platform_workspaces (id, name) VALUES ('ws_late', 'Late')")
        conn.execute("INSERT INTO platform_workspace_members (id, workspace_id, user_id, role) "
                     "VALUES ('mem_1_late', 'ws_late', 'user_1', 'owner')")
        conn.execute("INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key) "
                     "VALUES ('mu_1_late', 'ws_late', 'Late', 'key_late')")
        conn.execute("INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id) "
                     "VALUES ('book_1_late', 'ws_late', 'mu_1_late', 'Late', 'primary')")
        rolled_back = conn.execute("SELECT xact_rollback FROM pg_stat_database "
                                   "WHERE datname = current_database()").fetchone()[0]
    # Without accounts, the workspace never reaches v2: its rows wait, each reported under the
    # key it misses, and every other row is as before.
    tables = ("account_members", "identities", "pixbooks")
    report = Backfill(writer_url, "test", BackfillOptions(tables=tables, batch_size=100_000)).run()
    waiting = {(e["stage"], e["error"]): [r["id"] for r in e["rows"]] for e in report["errors"]
               if e["error"].startswith("its parent row is not in v2")}
    assert waiting == {
        ("account_members", "its parent row is not in v2 (account_members_account_id_fkey); written in legacy "
                            "after its parent's table was walked, a later pass brings both"): ["mem_1_late"],
        ("identities", "its parent row is not in v2 (identities_account_id_fkey); written in legacy after its "
                       "parent's table was walked, a later pass brings both"): ["mu_1_late"],
        ("pixbooks", "its parent row is not in v2 (pixbooks_account_id_fkey); written in legacy after its "
                     "parent's table was walked, a later pass brings both"): ["book_1_late"]}
    assert all(s["affectedRows"] == 0 for s in report["stages"])
    time.sleep(1)  # the workers' statistics reach pg_stat_database when their sessions end
    with psycopg.connect(writer_url, autocommit=True) as conn:
        # Nothing failed on the way: no range was rolled back and split down to the row.
        assert conn.execute("SELECT xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0] == rolled_back
    # The full backfill brings the workspace, then everything under it: nothing was lost.
    full = backfill(writer_url)
    assert not [e for e in full["errors"] if e["error"].startswith("its parent row is not in v2")]
    landed = {s["stage"]: s["inserted"] for s in full["stages"] if s["inserted"]}
    assert landed == {"accounts": 1, "account_members": 1, "identities": 1, "pixbooks": 1}


def test_a_child_table_walked_before_its_parent_waits_for_it_whole(writer_url):
    """A first pass without the keys' triggers locks its parents and leaves out the rows they
    lack. With them, it writes fresh ranges without probing parents; the first row whose parent
    is missing costs a savepoint, not the range's transaction, and from then on its table probes."""
    with psycopg.connect(writer_url, autocommit=True) as conn:
        rolled_back = conn.execute("SELECT xact_rollback FROM pg_stat_database "
                                   "WHERE datname = current_database()").fetchone()[0]
    report = Backfill(writer_url, "test", BackfillOptions(tables=("account_members",), batch_size=7)).run()
    [stage] = report["stages"]
    errors = {e["error"]: e["count"] for e in report["errors"]}
    waiting = errors.pop("its parent row is not in v2 (account_members_account_id_fkey); written in legacy after "
                         "its parent's table was walked, a later pass brings both")
    assert set(errors) <= {"workspace missing", "user missing"}
    assert stage["afterCount"] == 0 and waiting + sum(errors.values()) == stage["oldCount"] == stage["errorRows"]
    time.sleep(1)  # the workers' statistics reach pg_stat_database when their sessions end
    with psycopg.connect(writer_url, autocommit=True) as conn:
        assert conn.execute("SELECT xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0] == rolled_back
    full = backfill(writer_url)
    members = next(s for s in full["stages"] if s["stage"] == "account_members")
    assert members["inserted"] == waiting and members["errorRows"] == sum(errors.values())


def test_parent_keys_are_the_foreign_keys_between_v2_tables(v2_db_url):
    with psycopg.connect(v2_db_url) as conn:
        rows = conn.execute("""
            SELECT c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text,
                   array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                   array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
            FROM pg_constraint c
            WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY(%(v2)s)
                  AND c.confrelid::regclass::text = ANY(%(v2)s)
            ORDER BY c.oid""", {"v2": V2_TABLES}).fetchall()
    catalog: dict[str, list[tuple]] = {}
    for table, name, parent, columns, parent_columns in rows:
        catalog.setdefault(table, []).append((name, tuple(columns), parent, tuple(parent_columns)))
    assert catalog == {t: [k[:4] for k in keys] for t, keys in PARENT_KEYS.items()}



def cli_backfill(url: str, folder, *args: str) -> list[str]:
    """`cutover … ARGS --report`, as an operator starts it, on its own env file in `folder`."""
    env = folder / "deploy.env"
    env.write_text("ACCOUNT_SCHEMA_V2_READS=false\n")
    return [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"), "--database-url", url,
            "--env-file", str(env), *args, "--report", str(folder / "r.json")]

def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(pg_server_url, tmp_path):
    reference, url = seeded(pg_server_url, "bf_ref3", 8000), seeded(pg_server_url, "bf_kill", 8000)
    backfill(reference)
    command = cli_backfill(url, tmp_path, "--operator", "killer", "backfill", "--batch-size", "5", "--json")
    rng = random.Random(7)
    kills = 0
    while kills < 4:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.wait(timeout=rng.uniform(0.6, 1.4))
            break  # it finished before the kill: nothing left to resume
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)  # the console only; its server stays up
            child.wait()
            kills += 1
    assert kills >= 3
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode in (0, 1), final.stderr
    assert fingerprint(url) == fingerprint(reference)
    if kills == 4:
        assert json.loads((tmp_path / "r.json").read_text())["resumed"] is True


def test_lost_connection_mid_run_then_rerun_completes(pg_server_url):
    reference, url = seeded(pg_server_url, "bf_ref4"), seeded(pg_server_url, "bf_lost")
    backfill(reference)

    def sever(_progress):
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'cutover backfill' AND datname = current_database()")

    with pytest.raises(psycopg.OperationalError):
        Backfill(url, "test", BackfillOptions(batch_size=10), progress=sever).run()
    backfill(url, batch_size=10)
    assert fingerprint(url) == fingerprint(reference)


def test_a_conflicting_v2_row_is_reported_and_the_rest_lands(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (id, name) SELECT id, name FROM platform_workspaces WHERE id = 'ws_2'")
        key = conn.execute("SELECT user_key FROM platform_managed_users WHERE workspace_id = 'ws_2' "
                           "ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO identities (id, account_id, display_name, user_key) "
                     "VALUES ('squatter', 'ws_2', 'Squatter', %s)", (key,))
    report = backfill(v2_db_url)
    conflict = [e for e in report["errors"] if "identities_account_id_user_key_key" in e["error"]]
    assert conflict and conflict[0]["count"] == 1
    with psycopg.connect(v2_db_url) as conn:
        landed = conn.execute("SELECT count(*) FROM identities WHERE id <> 'squatter'").fetchone()[0]
        expected = conn.execute("SELECT count(*) FROM platform_managed_users").fetchone()[0]
    stage = next(s for s in report["stages"] if s["stage"] == "identities")
    assert landed == expected - stage["errorRows"]


def test_live_writes_are_caught_by_the_catch_up_pass(v2_db_url):
    stop = threading.Event()
    written = []

    def writer():
        with psycopg.connect(v2_db_url, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("INSERT INTO platform_audit_events (id, workspace_id, event_type) "
                             "VALUES (%s, 'ws_1', 'live')", (f"evt_live_{n:05d}",))
                conn.execute("UPDATE platform_workspaces SET name = %s WHERE id = 'ws_5'", (f"live {n}",))
                written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backfill(v2_db_url, batch_size=5)
    finally:
        stop.set()
        thread.join()
    assert written
    again = backfill(v2_db_url)
    changed = {s["stage"]: s["affectedRows"] for s in again["stages"] if s["affectedRows"]}
    # Only what the writer did after the first run's last pass over those tables may remain.
    assert set(changed) <= {"audit_events", "accounts"}
    assert backfill(v2_db_url)["stages"] and all(s["affectedRows"] == 0 for s in backfill(v2_db_url)["stages"])


def test_refused_while_another_job_runs(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (JOB_LOCK_KEY,))
        with pytest.raises(Refused, match="Another backfill or verify is running"):
            backfill(v2_db_url)


def test_repair_rows_recopies_exactly_those_ids(v2_db_url):
    backfill(v2_db_url)
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET name = 'tampered' WHERE id IN ('ws_1', 'ws_2')")
        with conn.transaction():
            result = repair_rows(conn, "accounts", ["ws_1"])
        assert (result.requested, result.updated, result.inserted) == (1, 1, 0)
        names = dict(conn.execute("SELECT id, name FROM accounts WHERE id IN ('ws_1', 'ws_2')").fetchall())
    assert names["ws_1"] != "tampered" and names["ws_2"] == "tampered"


def test_cli_says_the_database_was_lost_and_a_rerun_completes(pg_server_url, tmp_path):
    reference, url = seeded(pg_server_url, "bf_ref5", 8000), seeded(pg_server_url, "bf_cli_lost", 8000)
    backfill(reference)
    command = cli_backfill(url, tmp_path, "backfill")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with psycopg.connect(url, autocommit=True) as admin:
        for _ in range(400):  # until a batch is running, then cut every backfill connection
            if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cutover backfill' "
                             "AND datname = current_database() AND state = 'active'").fetchone()[0]:
                break
            admin.execute("SELECT pg_sleep(0.01)")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name LIKE 'cutover%%' AND datname = current_database()")
    _out, err = child.communicate(timeout=120)
    assert child.returncode == 3, err
    assert err.startswith("cutover: Lost the database at postgresql://") and "Traceback" not in err
    assert err.count("\n") == 1
    assert subprocess.run(command, capture_output=True, timeout=300).returncode in (0, 1)
    assert fingerprint(url) == fingerprint(reference)


# --- §3's re-run rules and the collection rule ----------------------------------------------

# v2 table -> (legacy table, a column a re-run brings from legacy)
RERUN_FOLLOWS = {"accounts": ("platform_workspaces", "name"),
                 "account_members": ("platform_workspace_members", "role"),
                 "identities": ("platform_managed_users", "display_name"),
                 "pixbooks": ("platform_books", "name")}
CREATED_EARLIER = {"pixbook_snapshots": ("platform_book_snapshots", "ledger_head"),
                   "audit_events": ("platform_audit_events", "event_type")}


def test_a_rerun_keeps_the_timestamps_the_api_wrote_and_brings_legacy_changes(v2_db_url):
    backfill(v2_db_url)
    early, late = datetime(2001, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    keys: dict[str, list[str]] = {}
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        for table, (legacy, column) in {**RERUN_FOLLOWS, **CREATED_EARLIER}.items():
            keys[table] = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id LIMIT 2")]
            conn.execute(f"UPDATE {legacy} SET {column} = coalesce({column}, '') || ' (renamed)' WHERE id = %s",
                         (keys[table][0],))
        for table in RERUN_FOLLOWS:
            # As the API writes: the first row touched after the backfill (and its created_at
            # other than legacy's); the second row's updated_at older than legacy's.
            conn.execute(f"UPDATE {table} SET updated_at = %s, created_at = %s WHERE id = %s",
                         (late, early, keys[table][0]))
            conn.execute(f"UPDATE {table} SET updated_at = %s WHERE id = %s", (early, keys[table][1]))
        conn.execute("UPDATE accounts SET status = 'suspended' WHERE id = %s", (keys["accounts"][0],))
        for table in CREATED_EARLIER:
            conn.execute(f"UPDATE {table} SET created_at = %s WHERE id = %s", (early, keys[table][0]))
            conn.execute(f"UPDATE {table} SET created_at = %s WHERE id = %s", (late, keys[table][1]))
    report = backfill(v2_db_url)
    assert {s["stage"]: (s["inserted"], s["updated"]) for s in report["stages"]} == dict.fromkeys(V2_TABLES, (0, 2))
    with psycopg.connect(v2_db_url) as conn:
        for table, (legacy, column) in RERUN_FOLLOWS.items():
            first, second = keys[table]
            value, created, updated = conn.execute(
                f"SELECT {column}, created_at, updated_at FROM {table} WHERE id = %s", (first,)).fetchone()
            assert value.endswith(" (renamed)") and (created, updated) == (early, late), table
            legacy_updated = conn.execute(f"SELECT updated_at FROM {legacy} WHERE id = %s", (second,)).fetchone()[0]
            assert conn.execute(f"SELECT updated_at FROM {table} WHERE id = %s", (second,)).fetchone()[0] == \
                legacy_updated, table
        assert conn.execute("SELECT status FROM accounts WHERE id = %s", (keys["accounts"][0],)).fetchone()[0] == \
            "suspended"
        for table, (legacy, column) in CREATED_EARLIER.items():
            first, second = keys[table]
            value, created = conn.execute(f"SELECT {column}, created_at FROM {table} WHERE id = %s",
                                          (first,)).fetchone()
            assert value.endswith(" (renamed)") and created == early, table
            assert conn.execute(f"SELECT created_at FROM {table} WHERE id = %s", (second,)).fetchone()[0] == \
                conn.execute(f"SELECT created_at FROM {legacy} WHERE id = %s", (second,)).fetchone()[0], table
    # Rows as the rules leave them are not rewritten: a compared re-run writes no tuple.
    before_rows, before_places = fingerprint(v2_db_url), physical(v2_db_url)
    again = backfill(v2_db_url, full_compare=True)
    assert [s["affectedRows"] for s in again["stages"]] == [0] * len(V2_TABLES)
    assert fingerprint(v2_db_url) == before_rows and physical(v2_db_url) == before_places


# (book, legacy collection_id, what lands: a collection, or None when left out as a duplicate)
COLLECTIONS = [("bt_1_spaces", "   ", "primary"), ("bt_2_tab", "\t", "\t"), ("bt_3_newline", "\n", "\n"),
               ("bt_4_padded", " x ", "x"), ("bt_5_tab_padded", "\tx ", "\tx"), ("bt_6_bare", "x", None),
               ("bt_7_empty", "", None), ("bt_8_inner", " a b ", "a b")]


def test_collection_ids_land_by_btrim_exactly(v2_db_url):
    with psycopg.connect(v2_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key) "
                     "VALUES ('mu_btrim', 'ws_1', 'Trim', 'trim_key')")
        for n, (key, collection, _) in enumerate(COLLECTIONS):
            conn.execute("INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id, "
                         "created_at) VALUES (%s, 'ws_1', 'mu_btrim', 'B', %s, '2020-01-01'::timestamptz + %s * "
                         "interval '1 day')", (key, collection, n))
    report = backfill(v2_db_url)
    duplicates = next(e for e in report["errors"]
                      if e["error"] == "another active book of this identity has the same collection")
    assert {"bt_6_bare", "bt_7_empty"} <= {r["id"] for r in duplicates["rows"]}
    with psycopg.connect(v2_db_url) as conn:
        landed = dict(conn.execute("SELECT id, collection_id FROM pixbooks WHERE identity_id = 'mu_btrim'").fetchall())
    assert landed == {key: lands for key, _, lands in COLLECTIONS if lands is not None}
    checks = {c.get("name") or f"{c['type']}:{c['table']}": c for c in run_verify(v2_db_url)["checks"]}
    assert checks["content:pixbooks"]["ok"] and checks["identity_expected_collections"]["ok"]
