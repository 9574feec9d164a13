"""One embedded Postgres per test session; a fresh database for each test."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest
from helpers import ROOT, TEST_POSTGRES, CliRun, apply_v2, deploying_runbook

from cutover_tui.demo.embedded import create_database, embedded_postgres

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
    from cutover_tui.work.migrate import apply_legacy_baseline

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


@pytest.fixture
def cutover(capsys, legacy_db_url, env_file, tmp_path) -> CliRun:
    """The CLI on a runbook whose deploy runs real commands (helpers.APPLY_BY_COPY)."""
    return CliRun(capsys, legacy_db_url, env_file, runbook=deploying_runbook(tmp_path))


@pytest.fixture
def v2_db_url(legacy_db_url) -> str:
    """A seeded legacy database with the v2 schema applied and empty."""
    return apply_v2(legacy_db_url)


@pytest.fixture
def backfilled_url(legacy_db_url) -> str:
    """A seeded legacy database with v2 applied and backfilled."""
    from cutover_tui.work.backfill import Backfill, BackfillOptions

    apply_v2(legacy_db_url)
    Backfill(legacy_db_url, "tester", BackfillOptions()).run()
    return legacy_db_url
