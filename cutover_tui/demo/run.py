"""`cutover demo`: a throwaway production look-alike, cleaned up on exit."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pydantic import BaseModel

from ..work.migrate import apply_legacy_baseline
from . import servers
from .embedded import create_database, embedded_postgres
from .envfile_text import DEMO_ENV
from .seed import seed_legacy

DEMO_DATABASE = "ternent"


DEMO_WORKSPACES = 200  # small enough to start in seconds


class DemoEnvironment(BaseModel):
    database_url: str
    server_version: str  # e.g. "17.10"
    env_file: Path
    report_dir: Path


def prepare_demo(server_url: str, folder: Path, sql_dir: Path, workspaces: int = DEMO_WORKSPACES,
                 progress: Callable[[str, int, int], None] | None = None) -> DemoEnvironment:
    """Create the seeded legacy database and a deploy env file under `folder`."""
    url = create_database(server_url, DEMO_DATABASE)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, sql_dir)
        seed_legacy(conn, workspaces, progress=progress)
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    env_file = folder / ".ops" / "ternent-api" / ".env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text(DEMO_ENV, encoding="utf-8")
    return DemoEnvironment(database_url=url, server_version=version, env_file=env_file,
                           report_dir=folder / "reports")


def demo_session(api_base: str, database_url: str) -> tuple[str, str, str]:
    """A session on the stand-in API for the demo's first workspace owner: account, user, cookie."""
    import httpx

    from .api import COOKIE_NAME

    with psycopg.connect(database_url) as conn:
        account, user = conn.execute(
            "SELECT workspace_id, user_id FROM platform_workspace_members WHERE role = 'owner' "
            "AND status = 'active' ORDER BY workspace_id, user_id LIMIT 1").fetchone()
    with httpx.Client(base_url=api_base, timeout=10) as client:
        client.post("/v1/demo/session", json={"userId": user}).raise_for_status()
        return account, user, client.cookies[COOKIE_NAME]


@contextmanager
def demo_environment(sql_dir: Path, workspaces: int = DEMO_WORKSPACES,
                     progress: Callable[[str, int, int], None] | None = None,
                     version: int = servers.DEFAULT) -> Iterator[DemoEnvironment]:
    """An embedded server of `version` with the demo in it; everything is removed on exit."""
    with embedded_postgres(prefix="cutover-demo-pg-", version=version) as server_url, \
            tempfile.TemporaryDirectory(prefix="cutover-demo-") as folder:
        yield prepare_demo(server_url, Path(folder), sql_dir, workspaces, progress)
