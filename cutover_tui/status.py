"""Where the cutover stands: one model for `cutover status`, `--json` and the dashboard."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from . import reports
from .envfile import FlagValue
from .lock import LockHolder
from .matrix import Assessment
from .runbook import STAGE_ORDER
from .session import Session


class Status(BaseModel):
    database: str
    database_url: str  # redacted
    env_file: Path
    stage: str | None
    stage_order: tuple[str, ...] = STAGE_ORDER
    declared: dict[str, FlagValue]
    assessment: Assessment
    lock_holder: LockHolder | None
    last_backfill: reports.StoredReport | None
    last_verify: reports.StoredReport | None


def gather(session: Session) -> Status:
    env = session.read_env()
    assessment = session.assess(env)
    return Status(
        database=session.database_name,
        database_url=session.settings.safe_database_url,
        env_file=session.settings.env_file,
        stage=assessment.stage,
        declared=env.flags,
        assessment=assessment,
        lock_holder=session.lock_holder(),
        last_backfill=reports.latest(session.conn, "backfill"),
        last_verify=reports.latest(session.conn, "verify"),
    )
