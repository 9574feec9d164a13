"""Where reports live: JSON files in the §4 shapes and rows in `cutover.reports`.

The stored row keeps what the promotion matrix needs (when, passed, in which stage)
beside the whole body, so gates never have to re-read files.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from ..errors import BadInput, CutoverError
from ..files.atomic import place, write_temp
from .models import MODELS, Report, ReportKind, dump_report, js_iso, parse_report

FILE_PREFIX: dict[str, str] = {
    "recon": "accounts-v2-recon",
    "backfill": "accounts-v2-backfill-report",
    "verify": "accounts-v2-verify-report",
    "verify-reads": "accounts-v2-verify-reads-report",
}
# Real reports are kilobytes to a few megabytes; anything this big is the wrong file.
MAX_REPORT_BYTES = 256 * 1024 * 1024


class StoredReport(BaseModel):
    id: str
    kind: ReportKind
    generated_at: datetime
    ok: bool
    stage: str | None
    path: str | None


_COLUMNS = "id, kind, generated_at, ok, stage, path"


def file_name(kind: ReportKind, generated_at: datetime) -> str:
    """`accounts-v2-verify-report-2026-02-23T10-11-12-345Z.json`, as the API's scripts name them."""
    utc = generated_at.astimezone(UTC)
    stamp = utc.isoformat(timespec="milliseconds").replace("+00:00", "Z").replace(":", "-").replace(".", "-")
    return f"{FILE_PREFIX[kind]}-{stamp}.json"


def store(conn: psycopg.Connection, kind: ReportKind, body: dict[str, Any], *,
          generated_at: datetime, stage: str | None, path: str | None,
          ok: bool | None = None) -> StoredReport:
    """Insert the row; `ok` defaults to the body's own `ok`."""
    report_id = file_name(kind, generated_at).removesuffix(".json")
    row = conn.execute(
        f"""
        INSERT INTO cutover.reports (id, kind, generated_at, ok, stage, path, body)
        VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
        """,
        (report_id, kind, generated_at, bool(body.get("ok")) if ok is None else ok, stage, path,
         Jsonb(body)),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row it inserted
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


def recent_all(conn: psycopg.Connection, limit: int) -> list[StoredReport]:
    """The newest `limit` reports of every kind, newest first (the console's list)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM cutover.reports ORDER BY generated_at DESC, id LIMIT %s",
                        (limit,)).fetchall()
    return [StoredReport(**dict(zip(_COLUMNS.split(", "), row))) for row in rows]


def previous(conn: psycopg.Connection, report_id: str) -> StoredReport | None:
    """The report of the same kind stored just before `report_id` (None if it is the first)."""
    columns = ", ".join(f"p.{name}" for name in _COLUMNS.split(", "))
    row = conn.execute(
        f"""SELECT {columns} FROM cutover.reports p JOIN cutover.reports s
            ON p.kind = s.kind AND p.generated_at < s.generated_at
            WHERE s.id = %s ORDER BY p.generated_at DESC LIMIT 1""",
        (report_id,),
    ).fetchone()
    return StoredReport(**dict(zip(_COLUMNS.split(", "), row))) if row else None


def _too_big(path: Path) -> BadInput:
    return BadInput(f"Report file {path} is over {MAX_REPORT_BYTES // 2**20} MB, far bigger than any "
                    "report; check that it is the right file.")


def load_report(path: str | os.PathLike[str]) -> Report:
    """The report in a JSON file, its kind told by its shape (checks, stages, schemas, or upstream's
    read check output, which has no time of its own: the file's modification time dates it)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            # Refuse before reading: a wrong file (a dump, a log) must not fill memory.
            status = os.fstat(file.fileno())
            if status.st_size > MAX_REPORT_BYTES:
                raise _too_big(path)
            # Bounded too: a pipe has no size up front.
            raw = file.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"Report file {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise BadInput(f"Report path {path} is a folder; give the path of a report file.") from None
    except OSError as exc:
        raise BadInput(f"Report file {path} cannot be read ({exc.strerror}).") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise _too_big(path)
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BadInput(f"Report file {path} is not UTF-8 text, so it is not a JSON report.") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"Report file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                       f"column {exc.colno}); it may be truncated.") from None
    except RecursionError:
        raise BadInput(f"Report file {path} nests its JSON far deeper than any report; check that it is "
                       "the right file.") from None
    except ValueError as exc:  # Python refuses integers of more than 4,300 digits
        raise BadInput(f"Report file {path} holds a value no report has ({exc}); check that it is the "
                       "right file.") from None
    try:
        return parse_report(data, f"Report file {path}",
                            written_at=datetime.fromtimestamp(status.st_mtime, UTC))
    except RecursionError:  # validation walks the nesting too
        raise BadInput(f"Report file {path} nests its JSON far deeper than any report; check that it is "
                       "the right file.") from None


def load_stored(conn: psycopg.Connection, report_id: str) -> Report:
    """The report stored under `report_id`, read from its row's body."""
    row = conn.execute("SELECT kind, body FROM cutover.reports WHERE id = %s", (report_id,)).fetchone()
    if row is None:
        raise BadInput(f"No report {report_id!r} is stored in this database; check the id.")
    kind, body = row
    return parse_report(body, f"Stored report {report_id}", MODELS[kind])


# --- Writing -------------------------------------------------------------------------


def _probe_writable(folder: Path) -> None:
    try:
        # Creating a throwaway file is the honest test: permission bits do not bind root,
        # while read-only mounts, ACLs and root-squashed NFS still do.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadInput(f"Report folder {folder} is not writable ({exc.strerror}); fix its "
                       "permissions or choose another folder.") from None


def check_report_path(path: str | os.PathLike[str]) -> Path:
    """Fail before any work if a report cannot be written at `path` (its folder must exist)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise BadInput(f"Report path {path} is a folder; give a file name, such as "
                       f"{path / 'report.json'}.")
    if not folder.exists():
        raise BadInput(f"Report folder {folder} does not exist; create it or choose another path.")
    if not folder.is_dir():
        raise BadInput(f"Report folder {folder} is a file, not a folder; choose another path.")
    _probe_writable(folder)
    return path


def check_report_dir(folder: str | os.PathLike[str]) -> Path:
    """The report folder, created if missing; fails before any work if it cannot take files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"Report folder {folder} cannot be created ({exc.strerror}); create it "
                       "or set another report folder in the runbook.") from None
    _probe_writable(folder)
    return folder


def save_report(conn: psycopg.Connection, report: Report, *, kind: ReportKind,
                report_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                stage: str | None = None) -> StoredReport:
    """Write the file atomically (to `path`, else the default name in `report_dir`) and its row."""
    if not isinstance(report, MODELS[kind]):
        raise ValueError(f"a {type(report).__name__} cannot be saved as a {kind} report")
    target = (Path(path) if path is not None
              else check_report_dir(report_dir) / file_name(kind, report.generated_at)).absolute()
    text = dump_report(report)
    try:
        temp = write_temp(target, text.encode("utf-8"))
    except OSError as exc:
        raise CutoverError(f"Cannot write report {target} ({exc.strerror}).", title="Report file") from None
    placed = False
    try:
        # The row and the rename commit together: no file without its row, no row without its file.
        with conn.transaction():
            stored = store(conn, kind, json.loads(text), generated_at=report.generated_at,
                           stage=stage, path=str(target), ok=report.passed)
            place(temp, target)
            placed = True
    except BaseException as exc:
        (target if placed else temp).unlink(missing_ok=True)
        if isinstance(exc, psycopg.errors.UniqueViolation):
            raise BadInput(f"A {kind} report generated at {js_iso(report.generated_at)} is already "
                           "stored; nothing was written.") from None
        raise
    return stored
