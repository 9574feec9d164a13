"""Connections to the target database, with passwords kept out of every message.

All console state lives in the `cutover` schema of the target database, so two
operators on two laptops see one truth.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql
from psycopg.abc import Params

from ..errors import BadInput, CutoverError, DatabaseUnreachable

CONSOLE_SCHEMA = "cutover"
# The catalog is searched first when it is not named; creation goes to public (the API's migrations).
SEARCH_PATH = "public, pg_temp"
OLDEST_SERVER = 15  # production runs 17; every statement of the console runs on 15 to 18

# The console's own tables, as numbered steps: a database that holds an older console
# schema gets only the steps it lacks. Add a step; never edit one that has shipped.
_CONSOLE_STEPS: tuple[str, ...] = ("""
CREATE TABLE IF NOT EXISTS cutover.journal (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    operator text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    flags_before jsonb,
    flags_after jsonb,
    report_id text
);
CREATE TABLE IF NOT EXISTS cutover.reports (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('recon', 'backfill', 'verify', 'verify-reads')),
    generated_at timestamptz NOT NULL,
    ok boolean NOT NULL,
    stage text,
    path text,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_kind_generated_at ON cutover.reports (kind, generated_at DESC);
CREATE TABLE IF NOT EXISTS cutover.backfill_runs (
    id bigserial PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'cancelled', 'failed', 'abandoned')),
    operator text NOT NULL,
    tables text[] NOT NULL,
    before_counts jsonb NOT NULL DEFAULT '{}',
    -- Watermarks of a finished run, so that a later run can prove nothing changed since:
    -- legacy rows written after its last pass began, or v2 rows after it ended, are newer.
    final_pass integer,
    legacy_xmin xid8,
    v2_xmin xid8,
    end_counts jsonb
);
-- One row per table part per pass; written in the same transaction as each batch,
-- so after a crash the checkpoint and the v2 rows always agree.
CREATE TABLE IF NOT EXISTS cutover.backfill_parts (
    run_id bigint NOT NULL REFERENCES cutover.backfill_runs(id) ON DELETE CASCADE,
    pass integer NOT NULL,
    table_name text NOT NULL,
    part integer NOT NULL,
    lo text,
    hi text,
    last_key text,
    finished boolean NOT NULL DEFAULT false,
    -- the pass's snapshot xmin: legacy rows written later have an xmin at or after it
    started_xmin xid8 NOT NULL DEFAULT pg_snapshot_xmin(pg_current_snapshot()),
    counters jsonb NOT NULL DEFAULT '{}',
    issues jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, pass, table_name, part)
);
CREATE TABLE IF NOT EXISTS cutover.operator_lock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    operator text NOT NULL,
    since timestamptz NOT NULL,
    backend_pid integer NOT NULL,
    client text NOT NULL
);
""", """
-- Who did it beyond the --operator name (the database's own view of the session, filled by the
-- server; the console's operating-system user and host), and under which runbook file.
ALTER TABLE cutover.journal
    ADD COLUMN IF NOT EXISTS db_session_user text DEFAULT session_user,
    ADD COLUMN IF NOT EXISTS db_current_user text DEFAULT current_user,
    ADD COLUMN IF NOT EXISTS client_addr inet DEFAULT inet_client_addr(),
    ADD COLUMN IF NOT EXISTS os_user text,
    ADD COLUMN IF NOT EXISTS os_host text,
    -- the runbook file in force (its hash and gates), so a rehearsal's short gate shows afterwards
    ADD COLUMN IF NOT EXISTS runbook jsonb;
""", """
-- A flag write's intent: committed before the env file is written, finished in the transaction
-- that journals it. A console killed in between leaves it open; the next one finishes it by
-- what the file then holds (journaling the rows, or recording that nothing was written).
CREATE TABLE IF NOT EXISTS cutover.flag_writes (
    id bigserial PRIMARY KEY,
    operator text NOT NULL,
    env_file text NOT NULL,
    flags_before jsonb NOT NULL,
    flags_after jsonb NOT NULL,
    journal_rows jsonb NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome text CHECK (outcome IN ('written', 'not written', 'written, journaled by the next console'))
);
""", """
-- Remedies of the backfill's anomalies: each one transaction on legacy, every row it touched kept
-- whole as it was (to_jsonb of the row), so that undoing it restores legacy exactly.
CREATE TABLE IF NOT EXISTS cutover.remedies (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    operator text NOT NULL,
    class text NOT NULL,
    choice text NOT NULL,
    counts jsonb NOT NULL DEFAULT '{}',
    undone_at timestamptz,
    undone_by text
);
CREATE TABLE IF NOT EXISTS cutover.remedy_rows (
    remedy_id bigint NOT NULL REFERENCES cutover.remedies(id),
    seq integer NOT NULL,
    table_name text NOT NULL,
    row_id text NOT NULL,
    change text NOT NULL CHECK (change IN ('deleted', 'updated')),
    before jsonb NOT NULL,
    PRIMARY KEY (remedy_id, seq)
);
-- Rows an operator accepted as lost, with the reason: the backfill gate counts them as settled.
CREATE TABLE IF NOT EXISTS cutover.accepted_losses (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    operator text NOT NULL,
    table_name text NOT NULL,
    issue text NOT NULL,
    row_id text NOT NULL,
    reason text NOT NULL,
    UNIQUE (table_name, issue, row_id)
);
""")

CONSOLE_SCHEMA_STEPS = len(_CONSOLE_STEPS)

# The console's advisory lock keys, one per purpose and all here, so no two can collide:
# "cutover" spelled as an int8, plus a number.
_KEY_BASE = 0x6375746F766572
OPERATOR_LOCK_KEY = _KEY_BASE  # one operator acts on a database at a time
CONSOLE_SCHEMA_KEY = _KEY_BASE + 1  # concurrent first runs create the console schema once
JOB_LOCK_KEY = _KEY_BASE + 2  # one backfill or verify at a time
HAND_ROLLBACK_KEY = _KEY_BASE + 3  # one console journals a hand-made rollback
# Held shared by every backfill worker session: a new run waits for a killed console's
# workers, whose statements run on until the server notices their client is gone.
JOB_WORKERS_KEY = _KEY_BASE + 4


# What the server rolls back for crossing another session (SQLSTATE 40001, 40P01): running
# the same transaction again is safe and usually succeeds.
ROLLED_BACK = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def password_of(url: str) -> str | None:
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
        return str(password) if password else None
    except psycopg.ProgrammingError:
        match = re.search(r"://[^:/@]*:([^@]*)@", url)
        return match.group(1) if match else None


def redact_url(url: str) -> str:
    """The URL with its password shown as `***`, for any output; never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a URL urlsplit cannot parse (an unclosed IPv6 bracket) still hides its password
        return re.sub(r"(//[^/:@]*:)[^@]*@", r"\1***@", url)
    if parts.scheme and "@" in parts.netloc:
        creds, _, host = parts.netloc.rpartition("@")
        if ":" in creds:
            user = creds.split(":", 1)[0]
            return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
        return url
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)


def redact(text: str, url: str | None) -> str:
    """`text` with the password of `url` (wherever it appears) replaced by `***`."""
    if url:
        secret = password_of(url)
        if secret:
            text = text.replace(secret, "***")
        text = text.replace(url, redact_url(url))
    return text


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection or raise one clear sentence naming the (redacted) target; a server
    older than the console supports is refused before anything is read or written."""
    try:
        conn = psycopg.connect(
            url, autocommit=autocommit, connect_timeout=10, application_name="cutover"
        )
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        reason = redact(str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__, url)
        raise DatabaseUnreachable(
            f"Cannot connect to {redact_url(url)} ({reason}); check --database-url or "
            "DATABASE_URL and that the server is up."
        ) from None
    version = conn.info.server_version  # e.g. 170002 for 17.2
    if version < OLDEST_SERVER * 10000:
        conn.close()
        raise BadInput(f"The server at {redact_url(url)} runs PostgreSQL {version // 10000}.{version % 10000}, and "
                       f"the console supports PostgreSQL {OLDEST_SERVER} to 18; upgrade the server or point "
                       "--database-url at a supported one. Nothing was written.")
    # Names resolve the same for every console session, whatever the role's own search_path:
    # the catalog first, the API's tables, and temporary tables last (never shadowing either).
    conn.execute(f"SET search_path = {SEARCH_PATH}")
    # A console killed mid-statement (kill -9, a dropped SSH session) leaves its statement
    # running, holding locks, until the server notices; make the server look every second.
    conn.execute("SET client_connection_check_interval = '1s'")
    if not autocommit:
        conn.commit()  # a session setting: it holds after the transaction the SET opened
    return conn


def one_row(conn: psycopg.Connection, query: str | sql.Composed, params: Params | None = None) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, a function call, SHOW)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, "a one-row query returned no row"
    return row


def scalar(conn: psycopg.Connection, query: str | sql.Composed, params: Params | None = None) -> Any:
    """The one value of such a query."""
    return one_row(conn, query, params)[0]


def server_now(conn: psycopg.Connection) -> datetime:
    """The database server's clock: every time the gates compare comes from it, so that a
    console on a machine whose clock is off can neither open a gate early nor hide a report."""
    return scalar(conn, "SELECT clock_timestamp()")


def lock_blocker(conn: psycopg.Connection) -> tuple[str, int, str] | None:
    """A table of this database another session holds in a mode that blocks the console's
    reads or writes, as (table, pid, lock mode); None if there is none (a row lock, say)."""
    return conn.execute("""
        SELECT c.relname, l.pid, l.mode FROM pg_locks l
        JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
          AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        ORDER BY l.mode = 'AccessExclusiveLock' DESC, c.relname, l.pid LIMIT 1""").fetchone()


# Objects in or on the `cutover` schema the console did not make, or that another role owns: a
# role that pre-created the schema could run its trigger as the operator, or forge the journal.
_FOREIGN_OBJECTS = """
    WITH RECURSIVE mine(oid) AS (  -- the roles this one is a member of (a superuser's too: no bypass)
        SELECT oid FROM pg_roles WHERE rolname = current_user
        UNION SELECT m.roleid FROM pg_auth_members m JOIN mine ON m.member = mine.oid)
    SELECT * FROM (
        SELECT 0 AS rank, 'schema cutover' AS what, pg_get_userbyid(n.nspowner) AS owner
        FROM pg_namespace n WHERE n.oid = %(ns)s AND n.nspowner NOT IN (SELECT oid FROM mine)
        UNION ALL
        SELECT 1, CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                                 WHEN 'f' THEN 'foreign table ' ELSE 'table ' END || 'cutover.' || c.relname,
               pg_get_userbyid(c.relowner)
        FROM pg_class c WHERE c.relnamespace = %(ns)s
          AND (c.relkind IN ('v', 'm', 'f') OR c.relowner NOT IN (SELECT oid FROM mine))
        UNION ALL
        SELECT 2, 'function cutover.' || p.proname, pg_get_userbyid(p.proowner)
        FROM pg_proc p WHERE p.pronamespace = %(ns)s
        UNION ALL
        SELECT 3, 'trigger ' || t.tgname || ' on cutover.' || c.relname, pg_get_userbyid(c.relowner)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = %(ns)s AND NOT t.tgisinternal
        UNION ALL
        SELECT 4, 'rule ' || r.rulename || ' on cutover.' || c.relname, pg_get_userbyid(c.relowner)
        FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = %(ns)s AND c.relkind <> 'v'
        UNION ALL
        SELECT 5, 'policy ' || p.polname || ' on cutover.' || c.relname, pg_get_userbyid(c.relowner)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = %(ns)s
    ) found ORDER BY rank, what LIMIT 1"""


def refuse_a_foreign_console_schema(conn: psycopg.Connection) -> None:
    """The console trusts only a `cutover` schema of its own: one sentence naming the first object
    that is not (the console makes no function, view, trigger, rule or policy)."""
    namespace = scalar(conn, "SELECT to_regnamespace('cutover')::oid")
    if namespace is None:
        return
    found = conn.execute(_FOREIGN_OBJECTS, {"ns": namespace}).fetchone()
    if found is not None:
        _, what, owner = found
        raise CutoverError(f"The {what} (owner {owner}) is not the console's own, so the console will not use the "
                           "cutover schema: have a database owner inspect and remove it, then run the command again.",
                           title="Foreign console schema")


def console_schema_version(conn: psycopg.Connection) -> int | None:
    """The console schema's version, read without creating anything; None when it is absent."""
    if scalar(conn, "SELECT to_regclass('cutover.schema_version')") is None:
        return None
    return int(scalar(conn, "SELECT coalesce(max(version), 0) FROM cutover.schema_version"))


def read_only_reason(conn: psycopg.Connection) -> str | None:
    """Why this role may only watch (it cannot write the console's journal), or None."""
    if scalar(conn, "SELECT has_table_privilege('cutover.journal', 'INSERT')"):
        return None
    role = scalar(conn, "SELECT current_user")
    return (f"Role {role} may only read the console's state (it lacks INSERT on cutover.journal), so this "
            "console watches and changes nothing: run it as the operator role to act.")


def ensure_console_schema(conn: psycopg.Connection) -> None:
    """Bring the console's own schema up to date (idempotent), after refusing one that is not its own."""
    with conn.transaction():
        # Serialise concurrent first runs: CREATE ... IF NOT EXISTS still races.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CONSOLE_SCHEMA_KEY,))
        refuse_a_foreign_console_schema(conn)
        conn.execute("CREATE SCHEMA IF NOT EXISTS cutover")
        conn.execute("CREATE TABLE IF NOT EXISTS cutover.schema_version (version integer NOT NULL)")
        current = scalar(conn, "SELECT max(version) FROM cutover.schema_version") or 0
        if current > len(_CONSOLE_STEPS):
            raise CutoverError(f"This database's console schema is version {current}, newer than this "
                               f"console knows ({len(_CONSOLE_STEPS)}); upgrade cutover-tui.")
        for version, step in enumerate(_CONSOLE_STEPS[current:], start=current + 1):
            conn.execute(step)
            conn.execute("INSERT INTO cutover.schema_version (version) VALUES (%s)", (version,))


def database_name(conn: psycopg.Connection) -> str:
    return conn.info.dbname
