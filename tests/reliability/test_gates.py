"""Gates you can trust: the paths a hostile or hurried operator found around the promotion
matrix, each driven through the real `cutover` command or the console on a real database.

Repair: in E and E' (v2 is the write primary) a repair would copy legacy over the API's v2
writes; it is refused in the CLI and the console, and a repair where it is allowed is journaled
as `repair` with the rows it wrote.

Partial runs: the backfill gate holds per table, so a clean `--tables accounts` after a run
with errors elsewhere opens nothing.

Who did it: `--operator` is one printable line of at most 64 characters; each journal row also
holds the database's session and current user, the client address and the machine's user and
host; a line break in a stored name never forges a line of `cutover journal`.


The runbook file: it may tighten the gates, never change the runbook. A stage row or a rollback
path other than the runbook's, or a gate that is not a finite number in range, is refused naming
the key; every journal row records the file's hash and the gates in force.

One clock: the gates take every time from the database server (reports are stamped with it), so
a console whose machine clock is 25 h fast or 2 h slow opens no gate early, hides no newer
failing verify and prints no negative duration; `status` warns when the clocks differ.

The archive guard: the file is read with Postgres's own parser; only BEGIN/COMMIT, CREATE SCHEMA
and ALTER TABLE … SET SCHEMA | RENAME TO of the legacy tables pass, anything else (DROP however
spelt, TRUNCATE, DELETE, dynamic SQL) refuses the whole file, naming the statement.

A hand-made WRITES=false after E is the rollback after write cutover: journaled as such (once)
by the first console that sees it, so that WRITES=true comes back only through the promotion to E
and its verify, never through restore-flags.

A `cutover` schema someone else made: a role that pre-creates it (its tables, a trigger on the
journal) would run its trigger as the operator and could forge the journal; the console refuses
any such schema, table, function, view, trigger, rule or policy in one sentence naming the owner
and the object, before running anything in it.

Observers: a role with only SELECT on the tables and USAGE on `cutover` runs status, journal, diff
and the console, read-only: nothing is created for it, and every action is refused naming the
privilege it lacks."""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import time_machine
from helpers import DEPLOY_SECTION, ROOT, CliRun, age_journal, deploying_runbook, record_report
from tui.support import settings_for, settle, toasts, wait_until

from cutover_tui.errors import CutoverError
from cutover_tui.store import journal
from cutover_tui.store.db import JOB_LOCK_KEY, connect
from cutover_tui.tui.app import make_app
from cutover_tui.tui.screens.dashboard import DashboardScreen
from cutover_tui.work.archive import check_archive_sql

from .support import copy_database, seeded, write_runbook

SMALL = 20
def read_checked(run: CliRun) -> None:
    """The API read check after C's deployment, as D's gate needs it (no API runs here)."""
    record_report(run.database_url, "verify-reads", ok=True)


TO_E = (("migrate",), ("backfill",), ("verify",), ("promote", "C", "--yes"), read_checked,
        ("promote", "D", "--yes"), ("verify",), ("promote", "E", "--yes"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def clean(pg_server_url) -> str:
    """Stage A applied on clean data (no anomalies), so every gate can open; tests take copies."""
    return seeded(pg_server_url, workspaces=SMALL)


@pytest.fixture(scope="module")
def anomalies(pg_server_url) -> str:
    """Stage A applied on data with the seeded anomalies: a full backfill reports errors."""
    return seeded(pg_server_url, workspaces=SMALL, clean=False)


@pytest.fixture
def run(capsys, pg_server_url, clean, env_file, tmp_path) -> CliRun:
    """The CLI on a copy of the clean database, each flag write deployed by real commands."""
    return CliRun(capsys, copy_database(pg_server_url, clean), env_file, runbook=deploying_runbook(tmp_path))


def walk(run: CliRun, *steps: tuple[str, ...] | Callable[[CliRun], None]) -> None:
    for args in steps:
        if callable(args):
            args(run)
            continue
        code, _, err = run(*args)
        assert code == 0, (args, err)


def actions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [e.action for e in journal.entries(conn)]


def rename_in_v2(url: str) -> tuple[str, str]:
    """What the API does in E: a write to the primary, v2, that legacy never sees."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("UPDATE identities SET display_name = 'renamed in v2' "
                            "WHERE id = (SELECT min(id) FROM identities) RETURNING id, display_name").fetchone()


# --- repair over the write primary ---------------------------------------------------------------


@pytest.mark.parametrize("stage", ["E", "E'"])
def test_repair_is_refused_while_v2_is_the_write_primary(run, stage):
    walk(run, *TO_E)
    if stage == "E'":
        age_journal(run.database_url, 25)
        walk(run, ("verify",), ("promote", "E-steady", "--yes"))
    renamed = rename_in_v2(run.database_url)
    before = actions(run.database_url)

    code, out, err = run("verify", "--repair")

    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "WRITES=true" in err and "repair would copy legacy values over rows the API wrote" in err
    with psycopg.connect(run.database_url) as conn:
        assert conn.execute("SELECT id, display_name FROM identities WHERE id = %s", (renamed[0],)).fetchone() == renamed
    assert actions(run.database_url) == before


def test_a_repair_where_it_is_allowed_is_journaled_as_repair_with_its_rows(run):
    walk(run, ("migrate",), ("backfill",))
    renamed = rename_in_v2(run.database_url)  # in G the rules own every v2 row: a repair puts it back

    code, _out, err = run("verify", "--repair")

    assert code == 0, err
    with psycopg.connect(run.database_url) as conn:
        assert conn.execute("SELECT display_name FROM identities WHERE id = %s", (renamed[0],)).fetchone()[0] \
            != "renamed in v2"
        entry = journal.entries(conn)[-1]
    assert entry.action == "repair" and entry.detail["repair"] is True
    assert entry.detail["rows"]["identities"] == {"requested": 1, "inserted": 0, "updated": 1, "failed": 0}
    assert all(rows["updated"] == 0 for table, rows in entry.detail["rows"].items() if table != "identities")


@pytest.mark.anyio
async def test_the_console_dims_repair_at_e_and_says_why(run):
    walk(run, *TO_E)
    app = make_app(settings_for(run.database_url, run.env_file))
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("V")
        await wait_until(pilot, lambda: "repair would copy legacy values" in toasts(app))
        assert isinstance(app.screen, DashboardScreen) and "WRITES=true" in toasts(app)
    assert actions(run.database_url)[-2:] == ["promote", "deploy"]



# --- partial runs --------------------------------------------------------------------------------


def test_a_clean_partial_backfill_does_not_clear_the_gate_of_the_other_tables(capsys, pg_server_url, anomalies,
                                                                                env_file):
    run = CliRun(capsys, copy_database(pg_server_url, anomalies), env_file)
    assert run("backfill")[0] == 1  # errors: rows left out
    assert run("backfill", "--tables", "accounts")[0] == 0  # clean on its own
    run("verify")

    code, _, err = run("promote", "C", "--yes")

    assert code == 1 and "The latest backfill of " in err and "pixbooks" in err and "accounts," not in err
    assert "ACCOUNT_SCHEMA_V2_READS=false" in env_file.read_text()
    assert "promote" not in actions(run.database_url)


# --- who did it ----------------------------------------------------------------------------------


FORGED = "eve\n    9  2026-01-01 00:00:00  root         archive"


@pytest.mark.parametrize("operator", [FORGED, "eve\r", "x" * 65, "bell\x07", "tab\there", " "])
def test_an_operator_name_that_is_not_one_printable_line_is_bad_input(run, operator):
    code, out, err = run("promote", "C", "--yes", operator=operator)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "must be one printable line of at most 64 characters" in err
    with psycopg.connect(run.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal").fetchone()[0] == 0
    assert "ACCOUNT_SCHEMA_V2_READS=false" in run.env_file.read_text()


def test_journal_rows_say_who_from_the_database_and_the_machine(run):
    walk(run, ("backfill",))
    with psycopg.connect(run.database_url) as conn:
        entry = journal.entries(conn)[-1]
        session_user = conn.execute("SELECT session_user").fetchone()[0]
    assert (entry.operator, entry.db_session_user, entry.db_current_user) == ("alice", session_user, session_user)
    assert (entry.os_user, entry.os_host) == (pwd.getpwuid(os.getuid()).pw_name, socket.gethostname())
    assert entry.client_addr is None  # a Unix socket has no address; over TCP the server fills it in
    code, out, _ = run("journal")
    assert code == 0 and f"{entry.os_user}@{entry.os_host}, db {session_user}" in out


def test_a_stored_name_with_line_breaks_stays_on_its_own_line(run):
    """A row written by an older console, or by hand: `cutover journal` prints one line per row."""
    walk(run, ("backfill",))
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        conn.execute("UPDATE cutover.journal SET operator = %s", (FORGED,))
    code, out, _ = run("journal")
    assert code == 0 and len(out.strip().splitlines()) == 1 and "eve\\n    9" in out


def with_runbook(run: CliRun, tmp_path, *replace: tuple[str, str]) -> CliRun:
    """`run`'s database and env file under the project's runbook file with `replace` applied."""
    runbook = write_runbook(tmp_path, run.env_file, tmp_path / "reports", DEPLOY_SECTION, replace=replace)
    return CliRun(run.capsys, run.database_url, run.env_file, runbook=runbook)


# --- the runbook file ----------------------------------------------------------------------------


C_ROW = 'id = "C"\ntitle = "Reads on v2"\nflags = { reads = true, writes = false, dual_write = false }'


@pytest.mark.parametrize("replace, key", [
    ((C_ROW, C_ROW.replace("reads = true", "reads = false")), "`stages.4.flags.reads` of stage C must be true"),
    (('id = "E"\ntitle = "Write cutover"\nflags = { reads = true, writes = true, dual_write = true }',
      'id = "E"\ntitle = "Write cutover"\nflags = { reads = true, writes = true, dual_write = false }'),
     "`stages.6.flags.dual_write` of stage E must be true"),
    (("set = { writes = false }\ndual_write_kept = true", "set = { writes = false }\ndual_write_kept = false"),
     "`rollback.1.dual_write_kept` of after-write-cutover must be True"),
    (('from = ["C", "D"]', 'from = ["C"]'), "`rollback.0.from` of before-write-cutover must be ['C', 'D']"),
    (("confidence_period_hours = 24.0", "confidence_period_hours = inf"), "gates.confidence_period_hours"),
    (("confidence_period_hours = 24.0", "confidence_period_hours = nan"), "gates.confidence_period_hours"),
    (("confidence_period_hours = 24.0", "confidence_period_hours = 1e12"), "less than or equal to 720"),
    (("confidence_period_hours = 24.0", "confidence_period_hours = 0.0"), "greater than 0"),
    (("passing_verifies_before_archive = 3", "passing_verifies_before_archive = 0"), "greater than or equal to 1"),
    (("passing_verifies_before_archive = 3", "passing_verifies_before_archive = 101"), "less than or equal to 100"),
])
def test_a_runbook_file_that_changes_the_runbook_is_refused_naming_the_key(run, tmp_path, replace, key):
    changed = with_runbook(run, tmp_path, replace)
    for command in (("status",), ("promote", "D", "--yes")):
        code, out, err = changed(*command)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert key in err and str(changed.runbook) in err
    assert "ACCOUNT_SCHEMA_V2_READS=false" in run.env_file.read_text()
    with psycopg.connect(run.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cutover.journal").fetchone()[0] == 0


def test_every_journal_row_records_the_runbook_file_and_its_gates(run, tmp_path):
    """A rehearsal's short confidence period stays visible in the journal afterwards."""
    rehearsal = with_runbook(run, tmp_path, ("confidence_period_hours = 24.0", "confidence_period_hours = 0.05"))
    walk(rehearsal, ("backfill",))
    with psycopg.connect(run.database_url) as conn:
        entry = journal.entries(conn)[-1]
    runbook = rehearsal.runbook
    assert entry.runbook == {"file": str(runbook), "sha256": hashlib.sha256(runbook.read_bytes()).hexdigest(),
                             "gates": {"confidence_period_hours": 0.05, "passing_verifies_before_archive": 3}}
    code, out, _ = rehearsal("journal")
    assert code == 0 and "confidence 0.05 h, 3 passing verifies before the archive" in out


# --- one clock -----------------------------------------------------------------------------------


@contextmanager
def machine_clock(hours: float):
    """This process's clock `hours` off the real one (the database server keeps the real time)."""
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=hours), tick=True):
        yield


def test_a_fast_machine_clock_does_not_shorten_the_confidence_period(run):
    walk(run, *TO_E)
    with machine_clock(25):
        walk(run, ("verify",))
        code, _, err = run("promote", "E-steady", "--yes")
    assert code == 1 and "E has held for 0 h 0" in err and "of the 24 h 00 min confidence period" in err
    assert "ACCOUNT_SCHEMA_V2_DUAL_WRITE=true" in run.env_file.read_text()


def test_a_verify_from_a_fast_clock_does_not_hide_a_newer_failing_one(run):
    walk(run, *TO_E[:-2])  # D
    with machine_clock(25):
        walk(run, ("verify",))  # passes, on a machine 25 h ahead
    rename_in_v2(run.database_url)  # then v2 drifts, and a verify on a right clock fails
    assert run("verify")[0] == 1

    code, _, err = run("promote", "E", "--yes")

    assert code == 1 and "The latest verify" in err and "failed" in err
    assert "ACCOUNT_SCHEMA_V2_WRITES=false" in run.env_file.read_text()


def test_a_slow_machine_clock_prints_no_negative_duration(run):
    walk(run, *TO_E)
    with machine_clock(-2):
        walk(run, ("verify",))
        code, _, err = run("promote", "E-steady", "--yes")
    assert code == 1 and "E has held for 0 h 0" in err and "-" not in err.split("held for")[1].split("of the")[0]


@pytest.mark.parametrize("hours, says", [(25, "25 h 00 min ahead of"), (-2, "2 h 00 min behind")])
def test_status_warns_when_the_machine_clock_is_off_the_servers(run, hours, says):
    assert "clock " not in run("status")[1]
    with machine_clock(hours):
        code, out, _ = run("status")
    assert code == 0 and f"This machine's clock is {says} the database server's" in out


# --- the archive guard ---------------------------------------------------------------------------


ARCHIVE = ROOT / "sql" / "manual" / "0009_legacy_archive_platform_tables.sql"
COMMIT = "\nCOMMIT;"


@pytest.mark.parametrize("inserted, named", [
    ("DROP/**/TABLE platform_books;", "DropStmt: DROP/**/TABLE platform_books"),
    ("drop\ttable\nplatform_books;", "DropStmt: drop table platform_books"),
    ("TRUNCATE platform_books;", "TruncateStmt"),
    ("DELETE FROM public.platform_books;", "DeleteStmt"),
    ("DO $$ BEGIN EXECUTE 'DROP ' || 'TABLE platform_books'; END $$;", "DoStmt"),
    ("ALTER TABLE legacy.platform_books_legacy DROP COLUMN name;", "AlterTableStmt"),
    ("ALTER TABLE IF EXISTS public.accounts SET SCHEMA legacy;", "AlterObjectSchemaStmt"),
    ("CREATE SCHEMA sneaky CREATE TABLE t (id int);", "CreateSchemaStmt"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity;", "SelectStmt"),
])
def test_the_archive_file_may_only_move_and_rename_the_legacy_tables(inserted, named):
    text = ARCHIVE.read_text(encoding="utf-8").replace(COMMIT, f"\n{inserted}{COMMIT}")
    with pytest.raises(CutoverError) as caught:
        check_archive_sql(text, ARCHIVE)
    assert named in str(caught.value) and "so it is refused" in str(caught.value)


def test_the_shipped_archive_file_passes_and_a_broken_one_is_refused():
    check_archive_sql(ARCHIVE.read_text(encoding="utf-8"), ARCHIVE)
    with pytest.raises(CutoverError, match="does not parse as SQL"):
        check_archive_sql("ALTER TABL platform_books SET SCHEMA legacy;", ARCHIVE)


def test_a_tampered_archive_file_archives_nothing_even_with_every_gate_open(run, tmp_path):
    sql_dir = tmp_path / "sql"
    (sql_dir / "manual").mkdir(parents=True)
    (sql_dir / "0005_accounts_v2_schema.sql").write_bytes((ROOT / "sql" / "0005_accounts_v2_schema.sql").read_bytes())
    (sql_dir / "manual" / ARCHIVE.name).write_text(
        ARCHIVE.read_text(encoding="utf-8").replace(COMMIT, f"\nDROP/**/TABLE legacy.platform_books_legacy;{COMMIT}"))
    tampered = with_runbook(run, tmp_path, (f'sql_dir = "{ROOT / "sql"}"', f'sql_dir = "{sql_dir}"'))
    url = run.database_url

    record_report(url, "backfill", ok=True)
    record_report(url, "verify", ok=True, stage="B")
    walk(tampered, ("promote", "C", "--yes"), read_checked, ("promote", "D", "--yes"))
    record_report(url, "verify", ok=True, stage="D")
    walk(tampered, ("promote", "E", "--yes"))
    age_journal(url, 25)
    record_report(url, "verify", ok=True, stage="E")
    walk(tampered, ("promote", "E-steady", "--yes"), ("close-rollback-window",))
    for _ in range(3):
        record_report(url, "verify", ok=True, stage="E'")
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]

    code, out, err = tampered("archive", "--confirm", dbname)

    assert code == 1 and out == "" and "DropStmt: DROP/**/TABLE legacy.platform_books_legacy" in err
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('public.platform_books')").fetchone()[0] == "platform_books"
        assert conn.execute("SELECT to_regnamespace('legacy')").fetchone()[0] is None
    assert "archive" not in actions(url)


# --- a hand-made rollback ------------------------------------------------------------------------


def test_a_hand_made_writes_false_after_e_is_a_rollback_and_writes_return_only_through_the_gates(run):
    walk(run, *TO_E)
    text = run.env_file.read_text()
    run.env_file.write_text(text.replace("ACCOUNT_SCHEMA_V2_WRITES=true", "ACCOUNT_SCHEMA_V2_WRITES=false"))

    for _ in range(2):  # seen twice, journaled once
        code, out, _ = run("status")
        assert code == 0 and "rollback   OPEN" in out
    with psycopg.connect(run.database_url) as conn:
        rollbacks = [e for e in journal.entries(conn) if e.action == "rollback-opened"]
    assert len(rollbacks) == 1 and rollbacks[0].detail["path"] == "after-write-cutover"
    assert rollbacks[0].flags_before.writes and not rollbacks[0].flags_after.writes

    code, _, err = run("restore-flags", "--yes")
    assert code == 1 and "ACCOUNT_SCHEMA_V2_WRITES=false" in run.env_file.read_text()
    code, _, err = run("promote", "E", "--yes")
    assert code == 1 and "are not deployed: the API was last found running READS=true WRITES=true" in err
    walk(run, ("deploy",))  # the hand-made rollback reaches the API
    code, _, err = run("promote", "E", "--yes")
    assert code == 1 and "No verify has run since" in err
    walk(run, ("verify",), ("promote", "E", "--yes"))
    assert "ACCOUNT_SCHEMA_V2_WRITES=true" in run.env_file.read_text()


def test_a_hand_made_rollback_is_journaled_while_a_backfill_or_verify_runs(run):
    """Each purpose has its own advisory key: a running job never holds up the journaling."""
    walk(run, *TO_E)
    run.env_file.write_text(run.env_file.read_text().replace("ACCOUNT_SCHEMA_V2_WRITES=true",
                                                             "ACCOUNT_SCHEMA_V2_WRITES=false"))
    outcome: list = []
    with psycopg.connect(run.database_url, autocommit=True) as job:
        job.execute("SELECT pg_advisory_lock(%s)", (JOB_LOCK_KEY,))  # as a running backfill holds it
        status = threading.Thread(target=lambda: outcome.append(run("status")), daemon=True)
        status.start()
        status.join(timeout=30)
        if status.is_alive():
            job.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'cutover'")
            pytest.fail("the console waited on the running job's lock to journal the rollback")
    code, out, _ = outcome[0]
    assert code == 0 and "rollback   OPEN" in out
    assert actions(run.database_url).count("rollback-opened") == 1


# --- a console schema someone else made ----------------------------------------------------------


def _fresh_api_database(pg_server_url) -> str:
    """An API database (legacy schema, seeded) with no console schema yet."""
    return seeded(pg_server_url, workspaces=SMALL, v2=False)


def _as(url: str, role: str) -> str:
    return url.replace("postgres:@", f"{role}:@", 1)


@pytest.fixture
def mallory(pg_server_url):
    """A role that may create schemas in the database, and nothing else."""
    name = f"mallory_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    return name


TRAP = """
    CREATE SCHEMA cutover;
    CREATE TABLE cutover.journal (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
        operator text NOT NULL, action text NOT NULL, detail jsonb NOT NULL DEFAULT '{{}}', flags_before jsonb,
        flags_after jsonb, report_id text);
    CREATE FUNCTION cutover.grab() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN EXECUTE 'GRANT SELECT ON public.auth_users TO {role}'; RETURN NEW; END $$;
    CREATE TRIGGER grab BEFORE INSERT ON cutover.journal FOR EACH ROW EXECUTE FUNCTION cutover.grab();
"""


def test_a_cutover_schema_another_role_made_is_refused_and_its_trigger_never_runs(capsys, pg_server_url, env_file,
                                                                                   mallory):
    url = _fresh_api_database(pg_server_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON DATABASE {psycopg.conninfo.conninfo_to_dict(url)['dbname']} TO {mallory}")
    with psycopg.connect(_as(url, mallory), autocommit=True) as conn:
        conn.execute(TRAP.format(role=mallory))
    run = CliRun(capsys, url, env_file)
    for command in (("status",), ("migrate",)):
        code, out, err = run(*command)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
        assert f"The schema cutover (owner {mallory}) is not the console's own" in err
    with psycopg.connect(url) as conn:
        assert not conn.execute("SELECT has_table_privilege(%s, 'public.auth_users', 'SELECT')", (mallory,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM cutover.journal").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('public.accounts')").fetchone()[0] is None


@pytest.mark.parametrize("plant, named", [
    ("CREATE VIEW cutover.latest AS SELECT 1 AS ok", "view cutover.latest"),
    ("CREATE FUNCTION cutover.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "function cutover.f"),
    ("CREATE FUNCTION cutover.t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
     "CREATE TRIGGER t BEFORE INSERT ON cutover.reports FOR EACH ROW EXECUTE FUNCTION cutover.t()", "function cutover.t"),
    ("CREATE RULE r AS ON INSERT TO cutover.journal DO ALSO NOTIFY cutover", "rule r on cutover.journal"),
    ("ALTER TABLE cutover.reports ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON cutover.reports USING (ok)",
     "policy p on cutover.reports"),
])
def test_an_object_the_console_did_not_make_in_its_schema_is_refused(run, plant, named):
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        conn.execute(plant)
    code, out, err = run("status")
    assert code == 1 and out == "" and named in err and "(owner postgres)" in err


def test_a_table_in_the_console_schema_owned_by_another_role_is_refused(capsys, pg_server_url, env_file, mallory):
    url = _fresh_api_database(pg_server_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA cutover; GRANT USAGE, CREATE ON SCHEMA cutover TO {mallory}")
    with psycopg.connect(_as(url, mallory), autocommit=True) as conn:
        conn.execute("CREATE TABLE cutover.reports (id text PRIMARY KEY)")
    code, _, err = CliRun(capsys, url, env_file)("status")
    assert code == 1 and f"The table cutover.reports (owner {mallory}) is not the console's own" in err


def test_every_console_session_has_its_search_path_pinned(run):
    """A role whose own search_path puts a schema of its choosing first changes nothing."""
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shadow; CREATE TABLE shadow.platform_workspaces (id text)")
        conn.execute(f"ALTER ROLE postgres IN DATABASE {psycopg.conninfo.conninfo_to_dict(run.database_url)['dbname']} "
                     "SET search_path = shadow, public")
    with connect(run.database_url) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "public, pg_temp"
        assert conn.execute("SELECT count(*) FROM platform_workspaces").fetchone()[0] == SMALL
    walk(run, ("backfill",))


# --- observers -----------------------------------------------------------------------------------


@pytest.fixture
def observer(pg_server_url, run):
    """A role that may read the API's tables and the console's state, and nothing more."""
    name = f"observer_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}; GRANT USAGE ON SCHEMA cutover TO {name}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA cutover TO {name}")
        dbname = psycopg.conninfo.conninfo_to_dict(run.database_url)["dbname"]
        conn.execute(f"REVOKE CREATE, TEMPORARY ON DATABASE {dbname} FROM PUBLIC")
    return name


def test_an_observer_reads_everything_and_is_told_why_it_may_change_nothing(capsys, run, observer, tmp_path):
    walk(run, ("backfill",), ("verify", "--report", str(tmp_path / "v1.json")))
    before = actions(run.database_url)
    watcher = CliRun(capsys, _as(run.database_url, observer), run.env_file, operator="olivia")

    code, out, err = watcher("status")
    assert (code, err) == (0, "") and "✔" not in out and "lacks INSERT on cutover.journal" in out
    code, out, _ = watcher("journal")
    assert code == 0 and "backfill" in out
    assert watcher("diff", str(tmp_path / "v1.json"), str(tmp_path / "v1.json"))[0] == 0
    assert watcher("migrate")[1].startswith("Nothing to apply")  # Stage A is done: nothing to refuse
    code, _, err = watcher("restore-flags", "--yes")
    assert code == 1 and "nothing to restore" in err  # the flags are as the console wrote them
    for command in (("promote", "C", "--yes"), ("backfill",), ("verify",), ("close-rollback-window",), ("recon",)):
        code, out, err = watcher(*command)
        assert code == 1 and len(err.strip().splitlines()) == 1, (command, err)
        assert f"Role {observer} may only read" in err, (command, err)
    assert actions(run.database_url) == before
    assert "ACCOUNT_SCHEMA_V2_READS=false" in run.env_file.read_text()


@pytest.mark.anyio
async def test_the_console_of_an_observer_dims_every_key_and_says_why(run, observer):
    walk(run, ("backfill",), ("verify",))
    app = make_app(settings_for(_as(run.database_url, observer), run.env_file))
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await wait_until(pilot, lambda: "may only read the console's state" in toasts(app))
        assert isinstance(app.screen, DashboardScreen)
    assert "ACCOUNT_SCHEMA_V2_READS=false" in run.env_file.read_text()
