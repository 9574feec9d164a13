"""Connections: clear errors and never a password in any output."""

from __future__ import annotations

import helpers
import psycopg
import pytest
from helpers import ROOT

from cutover_tui.cli import main
from cutover_tui.errors import DatabaseUnreachable
from cutover_tui.store.db import CONSOLE_SCHEMA_STEPS, connect, redact, redact_url

SECRET = "s3cr3t-Pa55"


def test_redact_url_forms():
    assert redact_url(f"postgresql://bob:{SECRET}@db.internal:5432/prod") == "postgresql://bob:***@db.internal:5432/prod"
    assert redact_url("postgresql://bob@db/prod") == "postgresql://bob@db/prod"
    assert SECRET not in redact_url(f"host=db password={SECRET} dbname=prod")
    assert redact(f"failed for {SECRET}", f"postgresql://bob:{SECRET}@db/prod") == "failed for ***"


def test_unreachable_database_exit_3_without_password(capsys, tmp_path, env_file):
    url = f"postgresql://bob:{SECRET}@/prod?host={tmp_path}"  # a socket folder with no server
    code = main(["--runbook", str(ROOT / "runbook.toml"), "--database-url", url,
                 "--env-file", str(env_file), "status"])
    out, err = capsys.readouterr()
    assert code == 3
    assert err.startswith("cutover: Cannot connect to postgresql://bob:***@/prod")
    assert SECRET not in out + err and "Traceback" not in err


@pytest.fixture
def password_role(pg_server_url, empty_db_url):
    """A role that must log in with a password over the socket (pgserver trusts by default): its
    URL with `{}` where the password goes."""
    with helpers.password_role(pg_server_url, empty_db_url, SECRET, role="pw_user") as url:
        yield url.replace(f":{SECRET}@", ":{}@")


def test_wrong_password_is_unreachable_and_redacted(capsys, password_role, env_file):
    assert connect(password_role.format(SECRET)).close() is None  # the right one works
    wrong = password_role.format(SECRET + "x")
    with pytest.raises(DatabaseUnreachable) as caught:
        connect(wrong)
    assert "password authentication failed" in caught.value.message
    code = main(["--runbook", str(ROOT / "runbook.toml"), "--database-url", wrong,
                 "--env-file", str(env_file), "status"])
    out, err = capsys.readouterr()
    assert code == 3 and "password authentication failed" in err
    assert SECRET not in out + err and "pw_user:***@" in err


def test_no_command_writes_the_password_anywhere(capsys, password_role, env_file, tmp_path):
    """migrate, backfill, verify and recon with a password in the URL: stdout, stderr,
    report files, stored reports and the journal never hold it."""
    url = password_role.format(SECRET)
    admin = password_role.replace("pw_user:{}@", "postgres:@")
    from cutover_tui.demo.seed import seed_legacy
    from cutover_tui.work.migrate import apply_legacy_baseline

    with psycopg.connect(admin, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, 20)
    base = ["--runbook", str(ROOT / "runbook.toml"), "--database-url", url, "--env-file", str(env_file)]
    seen = ""
    for args in (["migrate"], ["recon", "--out", str(tmp_path / "r.json")],
                 ["backfill", "--report", str(tmp_path / "b.json")], ["verify", "--report", str(tmp_path / "v.json")],
                 ["status", "--json"], ["journal", "--json"]):
        main([*base, *args])
        out, err = capsys.readouterr()
        seen += out + err
    seen += "".join(path.read_text() for path in tmp_path.glob("*.json"))
    with psycopg.connect(admin) as conn:
        seen += str(conn.execute("SELECT json_agg(j) FROM cutover.journal j").fetchone()[0])
        seen += str(conn.execute("SELECT json_agg(r) FROM cutover.reports r").fetchone()[0])
    assert "PASS content:accounts" in seen  # the commands really ran
    assert SECRET not in seen


def test_console_schema_is_versioned_and_refuses_a_newer_one(empty_db_url):
    import psycopg

    from cutover_tui.errors import CutoverError
    from cutover_tui.store.db import ensure_console_schema

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ensure_console_schema(conn)
        ensure_console_schema(conn)  # idempotent: no step runs twice
        versions = conn.execute("SELECT version FROM cutover.schema_version ORDER BY version").fetchall()
        assert versions == [(step,) for step in range(1, CONSOLE_SCHEMA_STEPS + 1)]
        conn.execute("INSERT INTO cutover.schema_version VALUES (99)")
        with pytest.raises(CutoverError, match="version 99, newer than this console knows"):
            ensure_console_schema(conn)


def test_a_server_older_than_15_is_refused_in_one_sentence_and_nothing_is_written(capsys, env_file):
    """A real PostgreSQL 14 holding an API database: exit 2, its version and the supported range named."""
    from cutover_tui.demo.embedded import create_database, embedded_postgres
    from cutover_tui.work.migrate import apply_legacy_baseline

    with embedded_postgres(prefix="cutover-test-pg14-", version=14) as server_url:
        url = create_database(server_url, "api")
        with psycopg.connect(url, autocommit=True) as conn:
            apply_legacy_baseline(conn, ROOT / "sql")
        for command in (["status"], ["migrate"]):
            code = main(["--runbook", str(ROOT / "runbook.toml"), "--database-url", url,
                         "--env-file", str(env_file), "--operator", "alice", *command])
            out, err = capsys.readouterr()
            assert code == 2 and out == ""
            assert err.startswith("cutover: The server at ") and "runs PostgreSQL 14." in err
            assert "supports PostgreSQL 15 to 18" in err and len(err.strip().splitlines()) == 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('cutover')").fetchone()[0] is None
            assert conn.execute("SELECT to_regclass('public.accounts')").fetchone()[0] is None


def test_a_console_session_asks_the_server_to_notice_a_vanished_client(empty_db_url):
    """A console killed mid-statement must not leave that statement holding locks for long."""
    with connect(empty_db_url) as conn:
        assert conn.execute("SHOW client_connection_check_interval").fetchone()[0] == "1s"
