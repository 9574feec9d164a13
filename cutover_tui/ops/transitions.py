"""Changes the runbook allows: Stage A, promote, rollback, restore, and closing the window.

Each is planned first (the env diff the operator confirms), then applied under the
operator lock after the gates are checked again, so a plan can never outlive its gates.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from ..errors import BadInput, CutoverError, Refused
from ..files.envfile import EnvFile, env_diff, write_flags
from ..rules.flags import Flags
from ..rules.mapping import TABLES
from ..rules.matrix import Assessment, Step, refuse, rollback_flags
from ..rules.runbook import PROMOTABLE, StageId
from ..store import flag_writes, journal
from ..store.db import scalar
from ..store.flag_writes import JournalRow
from ..store.session import Session
from ..work import migrate

ChangeAction = Literal["promote", "rollback-opened", "restore-flags"]


class FlagChange(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    action: ChangeAction
    target: StageId | None
    flags_before: Flags
    flags_after: Flags
    env: EnvFile
    diff: str
    warnings: tuple[str, ...] = ()  # what the operator must know before saying yes

    def describe(self) -> str:
        what = {"promote": f"Promote to {self.target}", "rollback-opened": "Roll back",
                "restore-flags": "Restore the flags"}[self.action]
        return f"{what}: {self.flags_before.short()} -> {self.flags_after.short()}"


def parse_stage(name: str) -> StageId:
    """C, D, E, or E' (also spelled E-steady, which needs no shell quoting)."""
    stage = name.strip().upper()
    stage = "E'" if stage in ("E-STEADY", "E'") else stage
    if stage not in PROMOTABLE:
        raise BadInput(f"Unknown stage {name!r} for promote: choose one of C, D, E, E-steady.")
    return stage


def _plan(session: Session, action: ChangeAction, step: Step, flags_after: Flags | None,
          target: StageId | None, env: EnvFile, assessment: Assessment) -> FlagChange:
    if not step.allowed or flags_after is None:  # an allowed flag change always has the row it writes
        raise refuse(step)
    return FlagChange(action=action, target=target, flags_before=assessment.flags,
                      flags_after=flags_after, env=env, diff=env_diff(env, flags_after.as_env()),
                      warnings=_warnings(session, assessment, flags_after))


def _warnings(session: Session, assessment: Assessment, flags_after: Flags) -> tuple[str, ...]:
    """Dual-write going off, and a rollback from E' that leaves E's writes behind in v2 alone."""
    warnings = []
    if assessment.flags.dual_write and not flags_after.dual_write and flags_after.writes:
        warnings.append("Dual-write goes off: from now on nothing is mirrored, legacy stops changing while v2 takes "
                        "every write, and a rollback after this leaves those writes in v2 alone.")
    if assessment.stage == "E'" and not flags_after.writes:
        since = session.facts().stage_began
        written = v2_writes_since(session.conn, since) if since is not None else {}
        if written:
            counts = ", ".join(f"{count:,} in {table}" for table, count in written.items())
            warnings.append(f"Rows written since E' began exist only in v2 ({counts}): legacy, the write primary "
                            "again after this rollback, does not have them; copy them back by hand or roll forward.")
    return tuple(warnings)


def v2_writes_since(conn: psycopg.Connection, since: datetime) -> dict[str, int]:
    """Per v2 table, the rows created or changed at or after `since` (nothing mirrors them in E')."""
    found = {}
    for table in TABLES:
        column = "updated_at" if "updated_at" in table.columns else "created_at"
        count = scalar(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s").format(
            sql.Identifier(table.v2), sql.Identifier(column)), (since,))
        if count:
            found[table.v2] = count
    return found


def plan_promotion(session: Session, target: StageId) -> FlagChange:
    env = session.read_env()
    assessment = session.assess(env)
    step = assessment.step("promote", target)
    return _plan(session, "promote", step, step.flags_after, target, env, assessment)


def plan_rollback(session: Session, keep_dual_write: bool = True) -> FlagChange:
    env = session.read_env()
    facts = session.facts(env)
    assessment = session.assess(env)
    step = assessment.step("rollback")
    after = rollback_flags(facts, session.runbook, keep_dual_write) if step.allowed else None
    return _plan(session, "rollback-opened", step, after or facts.flags, None, env, assessment)


def plan_restore(session: Session) -> FlagChange:
    env = session.read_env()
    assessment = session.assess(env)
    step = next((s for s in assessment.steps if s.action == "restore-flags"), None)
    if step is None:
        raise Refused("The declared flags are legal and match what the console last wrote; nothing to restore.")
    return _plan(session, "restore-flags", step, step.flags_after, None, env, assessment)


def _still_allowed(session: Session, change: FlagChange) -> None:
    """Re-check the gate under the lock: facts may have moved since the plan was shown."""
    assessment = session.assess(change.env)
    if change.action == "promote":
        step = assessment.step("promote", change.target)
    elif change.action == "rollback-opened":
        step = assessment.step("rollback")
    else:
        restore = next((s for s in assessment.steps if s.action == "restore-flags"), None)
        if restore is None or restore.flags_after != change.flags_after:
            raise Refused("The flags changed since the plan was made; look again and retry.")
        step = restore
    if not step.allowed:
        raise refuse(step)


def apply_change(session: Session, change: FlagChange) -> journal.JournalEntry:
    """Write the env file and journal it as one step: the journal row commits only after the write."""
    with session.operator_lock():
        _still_allowed(session, change)
        rows = []
        if change.action == "promote" and session.facts(change.env).rollback_open:
            rows.append(JournalRow(action="rollback-closed", detail={"by": f"promote {change.target}"}))
        rows.append(JournalRow(action=change.action, flags_before=change.flags_before, flags_after=change.flags_after,
                               detail={"target": change.target, "env_file": str(session.settings.env_file)}))
        # The intent commits first: a console stopped after the file is written and before its
        # journal rows commit leaves it open, and the next console journals the rows.
        intent = flag_writes.open_intent(session.conn, session.settings.operator, str(session.settings.env_file),
                                         change.flags_before, change.flags_after, rows)
        try:
            written = write_flags(change.env, change.flags_after.as_env())
        except CutoverError:  # refused or failed before anything was put in place
            with contextlib.suppress(Exception), session.conn.transaction():  # the failure at hand is what counts
                flag_writes.finish(session.conn, intent, "not written")
            raise
        except BaseException:  # interrupted (a signal): what the file holds now tells
            with contextlib.suppress(Exception):
                session.finish_flag_writes(_declared(session))
            raise
        with session.conn.transaction():
            entries = [session.record(row.action, flags_before=row.flags_before, flags_after=row.flags_after,
                                      detail=row.detail | _how(written.written))
                       for row in rows]
            flag_writes.finish(session.conn, intent, "written")
    return entries[-1]


def _how(written: str | None) -> dict[str, str]:
    """Only a write that did not replace the file is worth a word in the journal."""
    return {"written": written} if written and written != "replaced" else {}


def written_message(entry: journal.JournalEntry, env_label: str) -> str:
    """What the CLI and the console say after a flag write."""
    how = entry.detail.get("written")
    return f"Written {env_label}{f' ({how})' if how else ''}; journal entry {entry.id}."


def _declared(session: Session) -> Flags:
    env = session.read_env()
    return Flags.from_env({name: value.value for name, value in env.flags.items()})


def close_rollback_window(session: Session) -> journal.JournalEntry:
    with session.operator_lock():
        assessment = session.assess()
        step = assessment.step("close-rollback-window")
        if not step.allowed:
            raise refuse(step)
        return session.record("rollback-window-closed", flags_before=assessment.flags, flags_after=assessment.flags)


def plan_stage_a(session: Session) -> migrate.MigrationPlan:
    """What Stage A would apply here; shown to the operator before `apply_stage_a`."""
    return migrate.plan(session.conn, session.runbook.paths.sql_dir)


def apply_stage_a(session: Session, shown: migrate.MigrationPlan) -> list[str]:
    """Apply what the operator saw, under the operator lock and behind the gate; the files
    are planned again first, so a file changed since it was shown is refused, never applied."""
    with session.operator_lock():
        fresh = plan_stage_a(session)
        if [(f.id, f.checksum) for f in fresh.to_apply] != [(f.id, f.checksum) for f in shown.to_apply]:
            raise Refused("The migration files or the history changed since they were shown; look again and retry.")
        if not fresh.to_apply:
            return []
        step = session.assess().step("migrate")
        if not step.allowed:
            raise refuse(step)
        applied = migrate.apply_plan(session.conn, fresh)
        session.record("migrate", detail={"applied": applied})
    return applied
