"""What the fault and abuse harness shares: the data size, seeded databases, and the figures
each test records for RELIABILITY.md.

The fast part (the default) runs in CI on small data; `CUTOVER_RELIABILITY=full` runs the
same tests on the M data set with more faults (see RELIABILITY.md for the command).
`CUTOVER_FIGURES=PATH` writes every recorded figure to PATH as JSON at the end.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
from helpers import (
    ROOT,
    apply_v2,
    fingerprint,  # noqa: F401 - the harness's tests take it from here
)

from cutover_tui.demo.embedded import create_database
from cutover_tui.demo.seed import SIZES, seed_legacy
from cutover_tui.rules.mapping import TABLES
from cutover_tui.work.migrate import apply_legacy_baseline

FULL = os.environ.get("CUTOVER_RELIABILITY", "fast") == "full"
WORKSPACES = SIZES["M"] if FULL else 400  # fast: enough rows for several batches per table
V2_TABLES = [t.v2 for t in TABLES]


def write_runbook(folder: Path, env_file: Path, report_dir: Path, extra: str = "", *, replace=()) -> Path:
    """The project's runbook with absolute paths into `folder` (so no test writes into the repo)."""
    text = (ROOT / "runbook.toml").read_text(encoding="utf-8")
    text = text.replace('env_file = ".ops/ternent-api/.env"', f'env_file = "{env_file}"') \
        .replace('report_dir = "reports"', f'report_dir = "{report_dir}"') \
        .replace('sql_dir = "sql"', f'sql_dir = "{ROOT / "sql"}"')
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "runbook.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def scale(fast: int, full: int) -> int:
    """How many runs or faults: `fast` in CI, `full` in the full run."""
    return full if FULL else fast


class Figures:
    """What each test measured: runs, faults injected, inputs tried, rows lost, worst wait..."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, test: str, **figures: Any) -> None:
        self.rows.append({"test": test, "mode": "full" if FULL else "fast", "workspaces": WORKSPACES, **figures})


def seeded(server_url: str, *, workspaces: int = WORKSPACES, clean: bool = True, v2: bool = True) -> str:
    """A new database with the legacy schema seeded (clean: no planted anomalies) and,
    unless `v2` is false, Stage A and the console's schema applied."""
    url = create_database(server_url, f"rel_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
        seed_legacy(conn, workspaces, clean=clean)
    return apply_v2(url) if v2 else url


def copy_database(server_url: str, template_url: str) -> str:
    """A byte-for-byte copy of the database behind `template_url` (nobody may be connected to it)."""
    name = psycopg.conninfo.conninfo_to_dict(template_url)["dbname"]
    return create_database(server_url, f"rel_{uuid.uuid4().hex[:10]}", template=name)


def row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in V2_TABLES}
