"""Fixtures for the TUI tests; the database fixtures come from tests/conftest.py."""

from __future__ import annotations

import psycopg
import pytest
from helpers import ROOT, apply_v2

from cutover_tui.demo.seed import seed_legacy
from cutover_tui.store.session import Settings
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.migrate import apply_legacy_baseline

from .support import settings_for


@pytest.fixture
def clean_legacy_url(empty_db_url) -> str:
    """The legacy schema only (Stage A not applied), seeded without anomalies, so the gates open."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces=20, clean=True)
    return empty_db_url


@pytest.fixture
def clean_backfilled_url(clean_legacy_url) -> str:
    """Clean data, v2 applied and backfilled: a verify passes (no count differs)."""
    apply_v2(clean_legacy_url)
    Backfill(clean_legacy_url, "tester", BackfillOptions()).run()
    return clean_legacy_url


@pytest.fixture
def tui_settings(v2_db_url, env_file) -> Settings:
    return settings_for(v2_db_url, env_file)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here run on asyncio through anyio's pytest plugin (marked `anyio`)."""
    return "asyncio"
