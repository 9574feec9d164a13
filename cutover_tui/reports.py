"""Where reports live: JSON files in the §4 shapes and rows in `cutover.reports`.

The stored row keeps what the promotion matrix needs (when, passed, in which stage)
beside the whole body, so gates never have to re-read files.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

ReportKind = Literal["recon", "backfill", "verify", "verify-reads"]
FILE_PREFIX: dict[str, str] = {
    "recon": "accounts-v2-recon",
    "backfill": "accounts-v2-backfill-report",
    "verify": "accounts-v2-verify-report",
    "verify-reads": "accounts-v2-verify-reads-report",
}


class StoredReport(BaseModel):
    id: str
    kind: ReportKind
    generated_at: datetime
    ok: bool
    stage: str | None
    path: str | None


_COLUMNS = "id, kind, generated_at, ok, stage, path"


def file_name(kind: ReportKind, generated_at: datetime) -> str:
    stamp = generated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z").replace(":", "-")
    return f"{FILE_PREFIX[kind]}-{stamp}.json"


def store(conn: psycopg.Connection, kind: ReportKind, body: dict[str, Any], *,
          generated_at: datetime, stage: str | None, path: str | None) -> StoredReport:
    report_id = file_name(kind, generated_at).removesuffix(".json")
    row = conn.execute(
        f"""
        INSERT INTO cutover.reports (id, kind, generated_at, ok, stage, path, body)
        VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
        """,
        (report_id, kind, generated_at, bool(body.get("ok")), stage, path, Jsonb(body)),
    ).fetchone()
    return StoredReport(**dict(zip(_COLUMNS.split(", "), row)))


def recent(conn: psycopg.Connection, kind: ReportKind, limit: int) -> list[StoredReport]:
    """The newest `limit` reports of a kind, oldest first."""
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM cutover.reports WHERE kind = %s
            ORDER BY generated_at DESC LIMIT %s) r ORDER BY generated_at""",
        (kind, limit),
    ).fetchall()
    return [StoredReport(**dict(zip(_COLUMNS.split(", "), row))) for row in rows]


def latest(conn: psycopg.Connection, kind: ReportKind) -> StoredReport | None:
    found = recent(conn, kind, 1)
    return found[0] if found else None
