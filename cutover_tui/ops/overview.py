"""Where the cutover stands: one model for `cutover status`, `--json` and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from ..errors import CutoverError
from ..files.envfile import FlagValue
from ..reports import store as report_store
from ..rules.flags import Flags
from ..rules.matrix import Assessment, DeployFact, assess, hours
from ..rules.runbook import STAGE_ORDER
from ..store import losses
from ..store.db import server_now
from ..store.lock import LockHolder
from ..store.losses import AcceptedLoss
from ..store.session import Session
from . import deploy


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
    # Before the first backfill: the errors the latest recon predicts, "table: issue" -> rows.
    predicted_errors: dict[str, int] = {}
    accepted_losses: list[AcceptedLoss] = []  # rows operators accepted as lost, by operator and reason
    last_verify: report_store.StoredReport | None
    clock_skew_seconds: float  # this machine's clock minus the database server's
    rehearsal: str | None = None  # the runbook is a rehearsal's: what its short gates are
    deployed: DeployFact | None = None  # the latest deployment on record
    deploy_pending: bool = False  # the declared flags must run, and are not shown to
    deploy_reads_back: bool = False  # the runbook has a [deploy] whose read_back tells what runs
    running: Flags | None = None  # read back just now, when asked for
    running_error: str | None = None  # why reading back just now failed

    @property
    def deployment(self) -> str:
        """One line on whether the declared flags run: what the dashboard and `status` say."""
        a, deployed = self.assessment, self.deployed
        if deployed is None:
            return "none on record" + (": run deploy" if self.deploy_pending else
                                       " (the API runs the defaults it started with)")
        when = f"{deployed.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        if deployed.flags is None:
            return f"UNKNOWN: the deploy at {when} could not read back what runs; run deploy again"
        how = "read back" if deployed.read_back else "confirmed by operator, not read back"
        state = "" if deployed.flags == a.flags else "NOT the declared flags: run deploy; "
        return f"{state}{deployed.flags.short()} ({how} {when})"

    def clock_warning(self) -> str | None:
        """One sentence when this machine's clock is more than a minute off the server's."""
        skew = self.clock_skew_seconds
        if abs(skew) <= CLOCK_TOLERANCE_SECONDS:
            return None
        off = timedelta(minutes=round(abs(skew) / 60))  # to the nearest minute: a reading takes a few ms
        return (f"This machine's clock is {hours(off)} {'ahead of' if skew > 0 else 'behind'} the database "
                "server's; the gates use the server's time, but fix this machine's clock (NTP).")


CLOCK_TOLERANCE_SECONDS = 60

_PREDICTED = """
    SELECT t.key || ': ' || a.key, (a.value->>'count')::bigint
    FROM (SELECT body FROM cutover.reports WHERE kind = 'recon' ORDER BY generated_at DESC, id DESC LIMIT 1) r,
         jsonb_each(CASE WHEN jsonb_typeof(r.body->'anomalies') = 'object' THEN r.body->'anomalies' END) t,
         jsonb_each(CASE WHEN jsonb_typeof(t.value) = 'object' THEN t.value END) a
    WHERE a.value->>'kind' = 'error' AND (a.value->>'count') ~ '^[0-9]+$' AND (a.value->>'count')::bigint > 0
    ORDER BY 1"""


def _predicted_errors(session: Session) -> dict[str, int]:
    return dict(session.conn.execute(_PREDICTED).fetchall())


def gather(session: Session, *, read_back: bool = False) -> Status:
    """Where things stand; with `read_back`, also what the running API runs now (the runbook's
    read_back command, which is not journaled)."""
    machine = datetime.now(UTC)
    skew = (machine - server_now(session.conn)).total_seconds()
    env = session.read_env()
    facts = session.facts(env)
    assessment = session.watching(assess(facts, session.runbook))
    last_backfill = report_store.latest(session.conn, "backfill")
    running, running_error = None, None
    if read_back and session.runbook.deploy is not None:
        try:
            running = deploy.read_back(session, lambda line: None)
        except CutoverError as exc:
            running_error = exc.message
    return Status(
        database=session.database_name,
        database_url=session.settings.safe_database_url,
        env_file=session.settings.env_file,
        stage=assessment.stage,
        declared=env.flags,
        assessment=assessment,
        lock_holder=session.lock_holder(),
        last_backfill=last_backfill,
        predicted_errors={} if last_backfill is not None else _predicted_errors(session),
        accepted_losses=losses.accepted(session.conn),
        last_verify=report_store.latest(session.conn, "verify"),
        clock_skew_seconds=skew,
        rehearsal=session.runbook.rehearsal_note(),
        deployed=facts.deployed,
        deploy_pending=facts.needs_deploy and not facts.is_deployed,
        deploy_reads_back=session.runbook.deploy is not None,
        running=running,
        running_error=running_error,
    )
