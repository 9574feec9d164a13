"""One embedded Postgres per test session; a fresh database for each test."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import pytest

from cutover_tui.demo import servers
from cutover_tui.demo.embedded import create_database, embedded_postgres

ROOT = Path(__file__).resolve().parent.parent
# The server version every database test runs on (README: "Other Postgres versions").
TEST_POSTGRES = servers.requested_version(os.environ.get(servers.TEST_SETTING))
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server_url():
    with embedded_postgres(prefix="cutover-test-pg-", version=TEST_POSTGRES) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_server_url) -> str:
    """URL of a new, empty database."""
    return create_database(pg_server_url, f"t{next(_counter)}_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def legacy_db_url(empty_db_url) -> str:
    """A database holding the legacy schema (0001..0004 recorded), seeded small."""
    import psycopg

    from cutover_tui.demo.seed import seed_legacy
    from cutover_tui.migrate import apply_legacy_baseline

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=20)
    return empty_db_url


@pytest.fixture
def env_file(tmp_path) -> Path:
    """The demo's deploy env file, flags all at their pre-cutover values."""
    from cutover_tui.demo.envfile_text import DEMO_ENV

    path = tmp_path / "deploy.env"
    path.write_text(DEMO_ENV, encoding="utf-8")
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


@pytest.fixture
def cutover(capsys, legacy_db_url, env_file) -> CliRun:
    return CliRun(capsys, legacy_db_url, env_file)


def apply_v2(url: str) -> str:
    """Stage A on a legacy database, plus the console's own schema."""
    import psycopg

    from cutover_tui import migrate
    from cutover_tui.db import ensure_console_schema

    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
        ensure_console_schema(conn)
    return url


@pytest.fixture
def v2_db_url(legacy_db_url) -> str:
    """A seeded legacy database with the v2 schema applied and empty."""
    return apply_v2(legacy_db_url)


@pytest.fixture
def backfilled_url(legacy_db_url) -> str:
    """A seeded legacy database with v2 applied and backfilled."""
    from cutover_tui.backfill import Backfill, BackfillOptions

    apply_v2(legacy_db_url)
    Backfill(legacy_db_url, "tester", BackfillOptions()).run()
    return legacy_db_url
