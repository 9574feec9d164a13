"""Stage A: compatible with the API's migration history, once, and never manual/."""

from __future__ import annotations

import shutil
import threading

import psycopg
import pytest
from helpers import ROOT

from cutover_tui.errors import MigrationError
from cutover_tui.store import history
from cutover_tui.work import migrate

V2 = history.V2_MIGRATION


def _history(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return history.history(conn)


def test_legacy_baseline_is_recorded_like_the_api_migrator(legacy_db_url):
    recorded = _history(legacy_db_url)
    assert sorted(recorded) == sorted(p.name for p in (ROOT / "sql" / "legacy").glob("*.sql"))
    for name, checksum in recorded.items():
        text = (ROOT / "sql" / "legacy" / name).read_text(encoding="utf-8")
        assert checksum == migrate.checksum(text)
        assert len(checksum) == 64 and checksum == checksum.lower()


def test_migrate_applies_0005_once_and_journals_it(cutover):
    code, out, err = cutover("migrate")
    assert (code, err) == (0, "")
    assert f"Applied {V2}." in out
    assert V2 in _history(cutover.database_url)
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.pixbooks')").fetchone()[0] == "pixbooks"
        actions = conn.execute("SELECT action, operator, detail FROM cutover.journal").fetchall()
    assert actions == [("migrate", "alice", {"applied": [V2]})]

    code, out, _ = cutover("migrate")
    assert code == 0 and out.startswith("Nothing to apply:") and V2 in out
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal").fetchone()[0] == 1


def test_dry_run_prints_the_sql_and_changes_nothing(cutover):
    code, out, _ = cutover("migrate", "--dry-run")
    assert code == 0
    assert "CREATE TABLE IF NOT EXISTS accounts" in out and "dry run" in out
    assert V2 not in _history(cutover.database_url)
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.accounts')").fetchone()[0] is None


def test_refuses_naming_missing_legacy_migrations(cutover):
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM platform_schema_migrations WHERE id LIKE '0002%%' OR id LIKE '0004%%'")
    code, _, err = cutover("migrate")
    assert code == 1
    assert "Migrations 0002, 0004 are not recorded" in err
    assert V2 not in _history(cutover.database_url)


def test_database_without_legacy_tables_is_refused(capsys, empty_db_url, env_file):
    from helpers import CliRun

    code, _, err = CliRun(capsys, empty_db_url, env_file)("migrate")
    assert code == 2  # a wrong database URL is bad input, and that database is left as it was
    assert "no platform_schema_migrations table" in err


def test_changed_checksum_stops_naming_file_and_both_checksums(tmp_path, cutover):
    sql_dir = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql_dir)
    extra = sql_dir / "0006_later.sql"
    extra.write_text("CREATE TABLE later (id text);\n", encoding="utf-8")
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO platform_schema_migrations (id, checksum) VALUES (%s, %s)", (extra.name, "ab" * 32))
        with pytest.raises(MigrationError) as caught:
            migrate.plan(conn, sql_dir)
    assert extra.name in str(caught.value) and "ab" * 32 in str(caught.value)
    assert migrate.checksum(extra.read_text(encoding="utf-8")) in str(caught.value)


# SYSTEM.md §2: every name the API's own 0005 gives (constraints, then indexes of their own).
API_CATALOG = {
    "accounts": {"accounts_pkey"},
    "account_members": {"account_members_pkey", "account_members_account_id_fkey", "account_members_user_id_fkey",
                        "account_members_account_id_user_id_key", "account_members_user_idx"},
    "identities": {"identities_pkey", "identities_account_id_fkey", "identities_account_id_user_key_key",
                   "identities_account_id_id_key", "identities_account_idx",
                   "identities_account_profile_identity_idx", "identities_account_identity_fingerprint_uq"},
    "pixbooks": {"pixbooks_pkey", "pixbooks_account_id_fkey", "pixbooks_identity_id_fkey",
                 "pixbooks_account_identity_fk", "pixbooks_account_idx", "pixbooks_account_identity_collection_idx",
                 "pixbooks_identity_collection_active_uq"},
    "pixbook_snapshots": {"pixbook_snapshots_pkey", "pixbook_snapshots_pixbook_id_fkey",
                          "pixbook_snapshots_pixbook_id_version_key", "pixbook_snapshots_pixbook_idx"},
    "audit_events": {"audit_events_pkey", "audit_events_account_id_fkey", "audit_events_actor_user_id_fkey",
                     "audit_events_account_created_idx"},
}


def test_migrate_builds_the_apis_catalog_names_included(cutover):
    assert cutover("migrate")[0] == 0
    with psycopg.connect(cutover.database_url) as conn:
        for table, names in API_CATALOG.items():
            # NOT NULL constraints (catalogued from 18 on) carry no name of the API's.
            found = {n for (n,) in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype <> 'n' "
                "UNION SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = %s::regclass", (table, table))}
            assert found == names, table


def test_0005_the_apis_migrator_applied_is_stage_a_done(tmp_path, cutover):
    """The API applied its own 0005 (other bytes, another checksum): never re-applied, history kept."""
    theirs = (ROOT / "sql" / V2).read_text(encoding="utf-8") + "\n-- the API's own copy\n"
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute(theirs)
        conn.execute("INSERT INTO platform_schema_migrations (id, checksum) VALUES (%s, %s)",
                     (V2, migrate.checksum(theirs)))
    code, out, err = cutover("migrate")
    assert (code, err) == (0, "")
    ours = migrate.checksum((ROOT / "sql" / V2).read_text(encoding="utf-8"))
    assert "Stage A is done" in out and migrate.checksum(theirs) in out and ours in out
    assert _history(cutover.database_url)[V2] == migrate.checksum(theirs)
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal WHERE action = 'migrate'").fetchone()[0] == 0


def test_a_v2_table_of_another_shape_is_refused_before_anything_is_applied(cutover):
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE identities (id text PRIMARY KEY, account_id text NOT NULL, "
                     "display_name varchar(12) NOT NULL, user_key text NOT NULL)")
    for args in (("migrate", "--dry-run"), ("migrate",)):
        code, out, err = cutover(*args)
        assert code == 1 and out == ""
        assert "table identities" in err and "column display_name is character varying(12) NOT NULL" in err
        assert "column status missing" in err and "constraint identities_account_id_user_key_key missing" in err
        assert "index identities_account_identity_fingerprint_uq missing" in err
        assert len(err.strip().splitlines()) == 1
    assert V2 not in _history(cutover.database_url)
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.accounts')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'cutover_shape%%'").fetchone()[0] == 0


def test_v2_tables_already_as_0005_makes_them_are_accepted(cutover):
    """Tables the file itself made (say, by hand before the history row) are no stranger."""
    with psycopg.connect(cutover.database_url, autocommit=True) as conn:
        conn.execute((ROOT / "sql" / V2).read_text(encoding="utf-8"))
    code, out, err = cutover("migrate")
    assert (code, err) == (0, "") and f"Applied {V2}." in out


def test_manual_folder_is_never_applied(tmp_path, legacy_db_url):
    sql_dir = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql_dir)
    files = [f.id for f in migrate.migration_files(sql_dir)]
    assert files == [V2]
    with psycopg.connect(legacy_db_url, autocommit=True) as conn:
        applied = migrate.apply_plan(conn, migrate.plan(conn, sql_dir))
        assert applied == [V2]
        assert conn.execute("SELECT to_regclass('legacy.platform_workspaces_legacy')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('public.platform_workspaces')").fetchone()[0] is not None


def test_failed_file_leaves_no_trace(tmp_path, legacy_db_url):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0005_broken.sql").write_text("CREATE TABLE half_done (id text);\nSELECT 1/0;\n")
    with psycopg.connect(legacy_db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate.apply_plan(conn, migrate.plan(conn, sql_dir))
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone()[0] is None
        assert "0005_broken.sql" not in history.history(conn)


def test_two_migrators_racing_apply_once(cutover, capsys):
    """Two consoles migrate at the same moment: one applies, the other is refused or finds nothing."""
    from cutover_tui.cli import main

    barrier = threading.Barrier(2)
    codes = []

    def run(name):
        barrier.wait()
        codes.append(main(["--runbook", str(ROOT / "runbook.toml"), "--database-url", cutover.database_url,
                           "--env-file", str(cutover.env_file), "--operator", name, "migrate"]))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) in ([0, 0], [0, 1])
    with psycopg.connect(cutover.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal WHERE action = 'migrate'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM platform_schema_migrations WHERE id = %s", (V2,)).fetchone()[0] == 1


def test_missing_migration_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        migrate.migration_files(tmp_path / "nope")
