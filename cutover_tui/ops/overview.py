"""Where the cutover stands: one model for `cutover status`, `--json` and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from ..files.envfile import FlagValue
from ..reports import store as report_store
from ..rules.matrix import Assessment, hours
from ..rules.runbook import STAGE_ORDER
from ..store.db import server_now
from ..store.lock import LockHolder
from ..store.session import Session


class Status(BaseModel):
    database: str
    database_url: str  # redacted
    env_file: Path
    stage: str | None
    stage_order: tuple[str, ...] = STAGE_ORDER
    declared: dict[str, FlagValue]
    assessment: Assessment
    lock_holder: LockHolder | None
    last_backfill: report_store.StoredReport | None
    last_verify: report_store.StoredReport | None
    clock_skew_seconds: float  # this machine's clock minus the database server's

    def clock_warning(self) -> str | None:
        """One sentence when this machine's clock is more than a minute off the server's."""
        skew = self.clock_skew_seconds
        if abs(skew) <= CLOCK_TOLERANCE_SECONDS:
            return None
        off = timedelta(minutes=round(abs(skew) / 60))  # to the nearest minute: a reading takes a few ms
        return (f"This machine's clock is {hours(off)} {'ahead of' if skew > 0 else 'behind'} the database "
                "server's; the gates use the server's time, but fix this machine's clock (NTP).")


CLOCK_TOLERANCE_SECONDS = 60


def gather(session: Session) -> Status:
    machine = datetime.now(UTC)
    skew = (machine - server_now(session.conn)).total_seconds()
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
        last_backfill=report_store.latest(session.conn, "backfill"),
        last_verify=report_store.latest(session.conn, "verify"),
        clock_skew_seconds=skew,
    )
