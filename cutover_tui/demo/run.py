"""`cutover demo`: a throwaway production look-alike, cleaned up on exit."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import tomlkit
from pydantic import BaseModel

from ..rules.runbook import Runbook
from ..work.migrate import apply_legacy_baseline
from . import servers
from .embedded import create_database, embedded_postgres
from .envfile_text import DEMO_ENV
from .seed import seed_legacy

DEMO_DATABASE = "ternent"
DEMO_RUNBOOK = "runbook.toml"  # in the demo's folder, beside the API's state file its deploy commands read

DEMO_WORKSPACES = 200  # small enough to start in seconds


class DemoEnvironment(BaseModel):
    folder: Path  # removed on exit
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
    return DemoEnvironment(folder=folder, database_url=url, server_version=version, env_file=env_file,
                           report_dir=folder / "reports")


REHEARSAL_CONFIDENCE_HOURS = 1 / 60  # a minute: a newcomer walks A to F in minutes


def write_demo_runbook(runbook: Runbook, demo: DemoEnvironment, *, rehearsal: bool = False) -> Path:
    """The loaded runbook file's text, its paths pointed at the demo's files and a [deploy] table
    added that restarts the demo's API process, so a flag write reaches the API as in production;
    a rehearsal's also has a confidence period of a minute, marked as such everywhere."""
    if runbook.source is None:
        raise ValueError("The demo needs a runbook loaded from a file.")
    document = tomlkit.parse(runbook.source.read_text(encoding="utf-8"))
    paths = document["paths"]
    paths["env_file"] = str(demo.env_file.resolve())
    paths["report_dir"] = str(demo.report_dir.resolve())
    paths["sql_dir"] = str(runbook.paths.sql_dir.resolve())
    command = f"{shlex.quote(sys.executable)} -m cutover_tui.demo.deployment"
    deploy = tomlkit.table()
    deploy.add("apply", f"{command} apply")
    deploy.add("read_back", f"{command} read-back")
    deploy.add("timeout_seconds", 60)
    document["deploy"] = deploy
    if rehearsal:
        document["rehearsal"] = True
        document["gates"]["confidence_period_hours"] = REHEARSAL_CONFIDENCE_HOURS
    path = demo.folder / DEMO_RUNBOOK
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path


@contextmanager
def demo_api(runbook: Runbook, demo: DemoEnvironment, *, rehearsal: bool = False) -> Iterator[tuple[Path, str]]:
    """The demo runbook file and the stand-in API running as its own process (flags from the
    env file as it is now): (runbook path, base URL); the process is stopped on exit."""
    from .deployment import start_api, stop_api

    runbook_path = write_demo_runbook(runbook, demo, rehearsal=rehearsal)
    try:
        yield runbook_path, start_api(demo.folder, demo.database_url, demo.env_file, os.getpid())
    finally:
        stop_api(demo.folder)


def demo_session(api_base: str, database_url: str) -> tuple[str, str, str]:
    """A session on the stand-in API for the demo's first workspace owner: account, user, cookie
    (the token, under whichever name the API's configuration gave it)."""
    import httpx

    from .api import session_cookie

    with psycopg.connect(database_url) as conn:
        account, user = conn.execute(
            "SELECT workspace_id, user_id FROM platform_workspace_members WHERE role = 'owner' "
            "AND status = 'active' ORDER BY workspace_id, user_id LIMIT 1").fetchone()
    with httpx.Client(base_url=api_base, timeout=10) as client:
        client.post("/v1/demo/session", json={"userId": user}).raise_for_status()
        return account, user, session_cookie(client.cookies)[1]


@contextmanager
def demo_environment(sql_dir: Path, workspaces: int = DEMO_WORKSPACES,
                     progress: Callable[[str, int, int], None] | None = None,
                     version: int = servers.DEFAULT) -> Iterator[DemoEnvironment]:
    """An embedded server of `version` with the demo in it; everything is removed on exit."""
    with embedded_postgres(prefix="cutover-demo-pg-", version=version) as server_url, \
            tempfile.TemporaryDirectory(prefix="cutover-demo-") as folder:
        yield prepare_demo(server_url, Path(folder), sql_dir, workspaces, progress)
