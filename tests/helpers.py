"""Helpers the tests share: where the project is, the server version, the CLI in-process,
recording reports and moving the clock back. Tests import these from here, never from
another test module or a conftest."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel

from cutover_tui.demo import servers
from cutover_tui.reports import store as report_store
from cutover_tui.reports.models import CHECK_DETAILS, ReportKind, VerifyCheck
from cutover_tui.store.db import ensure_console_schema

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
# The server version every database test runs on (README: "Other Postgres versions").
TEST_POSTGRES = servers.requested_version(os.environ.get(servers.TEST_SETTING))


# A deployment tool in two shell commands: apply takes a copy of the env file, as a pod spec or a
# container takes its environment when it is (re)created; read back prints the copy's flags.
APPLY_BY_COPY = 'cp "$CUTOVER_ENV_FILE" "$CUTOVER_ENV_FILE.running"'
READ_BACK_COPY = 'grep "^ACCOUNT_" "$CUTOVER_ENV_FILE.running"'


# The same as a runbook file's section, for tests that write their runbook as text.
DEPLOY_SECTION = f"\n[deploy]\napply = '{APPLY_BY_COPY}'\nread_back = '{READ_BACK_COPY}'\ntimeout_seconds = 30\n"


def deploying_runbook(folder: Path, apply: str = APPLY_BY_COPY, read_back: str = READ_BACK_COPY,
                      timeout: float = 30) -> Path:
    """The shipped runbook with a `[deploy]` section, written into `folder`."""
    import tomlkit

    document = tomlkit.parse((ROOT / "runbook.toml").read_text(encoding="utf-8"))
    document["paths"]["sql_dir"] = str(ROOT / "sql")
    document["paths"]["report_dir"] = str(folder / "reports")
    deploy = tomlkit.table()
    deploy.update({"apply": apply, "read_back": read_back, "timeout_seconds": timeout})
    document["deploy"] = deploy
    path = folder / "runbook.toml"
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path


class CliRun:
    """Runs `cutover` in-process against one database and env file."""

    def __init__(self, capsys, database_url: str, env_file: Path, operator: str = "alice",
                 runbook: Path = ROOT / "runbook.toml"):
        self.capsys, self.database_url, self.env_file, self.operator = capsys, database_url, env_file, operator
        self.runbook = runbook

    def __call__(self, *args: str, operator: str | None = None) -> tuple[int, str, str]:
        from cutover_tui.cli import main

        self.capsys.readouterr()
        code = main(["--runbook", str(self.runbook), "--database-url", self.database_url,
                     "--env-file", str(self.env_file), "--operator", operator or self.operator, *args])
        out, err = self.capsys.readouterr()
        return code, out, err


def apply_v2(url: str) -> str:
    """Stage A on a legacy database, plus the console's own schema."""
    import psycopg

    from cutover_tui.store.db import ensure_console_schema
    from cutover_tui.work import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
        ensure_console_schema(conn)
    return url


def record_report(url: str, kind: ReportKind, *, ok: bool, stage: str | None = None,
                  at: datetime | None = None) -> report_store.StoredReport:
    """A report in the §4 shape, stored as the console stores its own."""
    at = at or datetime.now(UTC)
    body = {"ok": ok, "generatedAt": at.isoformat()}
    if kind == "backfill":  # a run over every table (a failing one: errors in pixbooks)
        from cutover_tui.rules.mapping import TABLES

        stages = [{"stage": t.v2, "oldCount": 1, "beforeCount": 0, "afterCount": 1, "affectedRows": 1} for t in TABLES]
        body |= {"stages": stages, "errors": [] if ok else [{"stage": "pixbooks", "error": "x", "rows": []}],
                 "warnings": []}
    else:
        body |= {"checks": [{"type": "count", "ok": ok, "table": "accounts", "oldTable": "platform_workspaces",
                             "oldCount": 1, "newCount": 1 if ok else 0}]}
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_console_schema(conn)
        return report_store.store(conn, kind, body, generated_at=at, stage=stage, path=None)


@contextmanager
def password_role(server_url: str, database_url: str, secret: str, role: str | None = None) -> Iterator[str]:
    """`database_url` through a new superuser role (`role`, else a fresh name) that must give `secret`
    (scram over the socket): its URL, with the password in it; the server's pg_hba.conf is restored
    and the role dropped after. The file is replaced whole and only then reloaded: a reload that
    read it half written would shut every role out of this test session's server."""
    import uuid

    role = role or f"pw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    original = hba.read_text()
    _replace_hba(hba, f"local all {role} scram-sha-256\n" + original)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    try:
        url = database_url.replace("postgres:@", f"{role}:{secret}@")
        assert url != database_url
        yield url
    finally:
        _replace_hba(hba, original)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE {role}")


def _replace_hba(hba: Path, text: str) -> None:
    staged = hba.with_name(hba.name + ".test")
    staged.write_text(text)
    os.replace(staged, hba)


def age_journal(url: str, hours: float) -> None:
    """Pretend every journal entry happened `hours` earlier (for the confidence period)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE cutover.journal SET at = at - %s", (timedelta(hours=hours),))
        conn.execute("UPDATE cutover.journal SET detail = jsonb_set(detail, '{since}', to_jsonb(("
                     "(detail->>'since')::timestamptz - %s)::text)) WHERE detail ? 'since'", (timedelta(hours=hours),))
        conn.execute("UPDATE cutover.reports SET generated_at = generated_at - %s", (timedelta(hours=hours),))


def promote_to_e_steady(cutover: Callable[..., tuple[int, str, str]], url: str) -> None:
    """From G to E' through `cutover` (the CLI, its runbook deploying each write), every gate
    opened by recorded reports: the read check in C, a verify in D and E, the confidence period."""
    record_report(url, "backfill", ok=True)
    record_report(url, "verify", ok=True, stage="B")
    assert cutover("promote", "C", "--yes")[0] == 0
    record_report(url, "verify-reads", ok=True)
    assert cutover("promote", "D", "--yes")[0] == 0
    record_report(url, "verify", ok=True, stage="D")
    assert cutover("promote", "E", "--yes")[0] == 0
    age_journal(url, 25)  # past the confidence period
    record_report(url, "verify", ok=True, stage="E")
    assert cutover("promote", "E-steady", "--yes")[0] == 0


def fingerprint(url: str) -> dict[str, str]:
    """Every v2 row's content, one digest per table: equal digests, equal tables row for row."""
    from cutover_tui.rules.mapping import TABLES

    with psycopg.connect(url) as conn:
        return {t.v2: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x.id), '')) FROM {t.v2} x")
                .fetchone()[0] for t in TABLES}


@contextmanager
def http_server(handler: type) -> Iterator[str]:
    """A real local HTTP server answering with `handler` (a BaseHTTPRequestHandler); its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # a client that hangs up is part of the test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def undeclared(model: Any, path: str = "") -> list[str]:
    """Every field of `model`, at any depth, that no model declares."""
    found: list[str] = []
    if isinstance(model, VerifyCheck):
        allowed = CHECK_DETAILS.get(model.type, frozenset())
        found += [f"{path}.{key} ({model.type})" for key in model.model_extra or {} if key not in allowed]
    elif isinstance(model, BaseModel):
        found += [f"{path}.{key}" for key in model.model_extra or {}]
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += undeclared(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for item in model:
            found += undeclared(item, f"{path}[]")
    elif isinstance(model, dict):
        for key, item in model.items():
            found += undeclared(item, f"{path}[{key}]")
    return found
