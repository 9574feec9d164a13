"""Fixtures for the TUI tests; the database fixtures come from tests/conftest.py."""

from __future__ import annotations

import pytest

from cutover_tui.store.session import Settings

from .support import settings_for


@pytest.fixture
def tui_settings(v2_db_url, env_file) -> Settings:
    return settings_for(v2_db_url, env_file)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here run on asyncio through anyio's pytest plugin (marked `anyio`)."""
    return "asyncio"
