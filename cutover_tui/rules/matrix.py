"""The promotion matrix: from the facts, where we are and what may happen next, and why not.

Pure: no I/O, no clock. Every refusal is one sentence an operator can act on; the
CLI, the TUI and the tests all read the same `Assessment`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import Refused
from .flags import Flags
from .runbook import STAGE_ORDER, Runbook, StageId

Action = Literal[
    "migrate", "recon", "backfill", "verify", "repair", "promote", "rollback",
    "close-rollback-window", "archive", "restore-flags", "deploy", "verify-reads",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReportFact(_Frozen):
    at: datetime
    ok: bool


class BackfillFact(ReportFact):
    """The latest backfill; `ok` only when every table's own latest run (full or partial) was
    clean, and `pending` names the tables whose latest run had errors or that none has covered."""

    pending: tuple[str, ...] = ()


class VerifyFact(ReportFact):
    stage: StageId | None = None  # where we were when the verify ran


class DeployFact(_Frozen):
    """The latest deployment on record: what the running API was read back (or confirmed) to run."""

    at: datetime
    flags: Flags | None  # None: the last deploy could not tell what the API runs
    read_back: bool  # False: confirmed by the operator, not read back
    since: datetime | None = None  # when these flags were first found deployed after they were written


class Facts(_Frozen):
    """What the env file, the migration history, the reports and the journal say now."""

    now: datetime
    flags: Flags
    legacy_applied: bool = True
    v2_applied: bool = False
    recon: ReportFact | None = None
    backfill: ReportFact | None = None  # the latest
    verifies: tuple[VerifyFact, ...] = ()  # oldest first
    recorded_flags: Flags | None = None  # the last flags the console wrote
    flags_since: datetime | None = None  # when the console wrote the declared flags
    rollback_opened_at: datetime | None = None  # set while a rollback is open
    rollback_window_closed: bool = False
    archived: bool = False
    deployed: DeployFact | None = None  # the latest deploy or confirmation
    reads_check: ReportFact | None = None  # the latest API read check

    @property
    def rollback_open(self) -> bool:
        return self.rollback_opened_at is not None

    @property
    def hand_edited(self) -> bool:
        """The env file declares other flags than the console last wrote."""
        return self.recorded_flags is not None and self.recorded_flags != self.flags

    @property
    def needs_deploy(self) -> bool:
        """Whether the declared flags must be shown deployed: unless they are the defaults the API
        started with and neither the console's writes nor a deployment says otherwise."""
        return self.recorded_flags is not None or self.deployed is not None or self.flags != Flags()

    @property
    def is_deployed(self) -> bool:
        return self.deployed is not None and self.deployed.flags == self.flags

    @property
    def declared_since(self) -> datetime | None:
        """When the declared flags were written, if the console wrote them."""
        return None if self.hand_edited else self.flags_since

    @property
    def stage_began(self) -> datetime | None:
        """When the declared stage began to run: its first deployment after the write, when one is
        on record (the API ran the old flags until then), else the write."""
        written = self.declared_since
        deployed = self.deployed.since if self.deployed is not None and self.is_deployed else None
        if written is None or deployed is None:
            return written
        return max(written, deployed)


class Step(_Frozen):
    action: Action
    target: StageId | None = None
    flags_after: Flags | None = None
    allowed: bool
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.action} {self.target}" if self.target else self.action


class Assessment(_Frozen):
    stage: StageId | None  # None: not even Stage A is applied
    flags: Flags
    flags_legal: bool
    expected_flags: Flags
    nearest_legal: Flags | None
    rollback_open: bool
    steps: tuple[Step, ...]

    def step(self, action: Action, target: StageId | None = None) -> Step:
        return next(s for s in self.steps if s.action == action and s.target == target)


def legal_flags(runbook: Runbook, archived: bool = False) -> list[Flags]:
    """Every legal row; once the legacy tables are archived, only E' still points at live tables."""
    return [runbook.row("E'")] if archived else runbook.legal_flags()


def is_legal(flags: Flags, runbook: Runbook, archived: bool = False) -> bool:
    return flags in legal_flags(runbook, archived)


def nearest_legal(flags: Flags, runbook: Runbook, archived: bool = False,
                  recorded: Flags | None = None) -> Flags:
    """Where to go back to: the flags the console last wrote when they are legal (the
    known-good state), else the legal row fewest flips away, leaning least on v2."""
    rows = legal_flags(runbook, archived)
    if recorded in rows:
        return recorded
    return min(rows, key=lambda f: (flags.distance(f), f.writes, f.reads, f.dual_write))


def _flag_stage(flags: Flags, runbook: Runbook) -> StageId | None:
    """C, D, E or E' when the flags are exactly that row; the later stages win ties."""
    for stage_id in ("E'", "E", "D", "C"):
        if runbook.row(stage_id) == flags:
            return stage_id
    return None


def current_stage(facts: Facts, runbook: Runbook) -> StageId | None:
    if facts.archived:
        return "F"
    flags = facts.flags if is_legal(facts.flags, runbook) else (facts.recorded_flags or Flags())
    live = _flag_stage(flags, runbook)
    if live:
        return live
    if not facts.v2_applied:
        return None
    if facts.backfill and facts.verifies and facts.verifies[-1].at >= facts.backfill.at:
        return "G"
    if facts.backfill:
        return "B"
    return "0" if facts.recon else "A"


def verify_stage(facts: Facts, runbook: Runbook) -> StageId | None:
    """The stage a verify taken now counts for; none while the flags are illegal or hand-edited,
    so that such a verify can never open a gate."""
    if facts.hand_edited or not is_legal(facts.flags, runbook, facts.archived):
        return None
    return current_stage(facts, runbook)


def assess(facts: Facts, runbook: Runbook) -> Assessment:
    stage = current_stage(facts, runbook)
    legal = is_legal(facts.flags, runbook, facts.archived)
    gates = _Gates(facts, runbook, stage, legal)
    steps = [
        gates.migrate(), gates.recon(), gates.backfill(), gates.verify(), gates.repair(),
        *(gates.promote(target) for target in ("C", "D", "E", "E'")),
        gates.rollback(), gates.close_rollback_window(), gates.archive(), gates.deploy(),
        gates.verify_reads(),
    ]
    if not legal or facts.hand_edited:
        restore = (nearest_legal(facts.flags, runbook, facts.archived, facts.recorded_flags) if not legal
                   else facts.recorded_flags)
        # An illegal row always has a nearest legal one, and hand-edited flags were recorded first.
        assert restore is not None
        reasons = gates.restore(restore)
        steps.append(Step(action="restore-flags", flags_after=restore, allowed=not reasons, reasons=tuple(reasons)))
    if facts.recorded_flags is not None:
        expected = facts.recorded_flags
    elif stage in ("C", "D", "E", "E'", "F"):
        expected = runbook.row(stage)
    else:
        expected = runbook.row("A")
    return Assessment(
        stage=stage, flags=facts.flags, flags_legal=legal, expected_flags=expected,
        nearest_legal=None if legal else nearest_legal(facts.flags, runbook, facts.archived, facts.recorded_flags),
        rollback_open=facts.rollback_open, steps=tuple(steps),
    )


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


_PREVIOUS: dict[StageId, StageId | None] = {"C": None, "D": "C", "E": "D", "E'": "E"}  # promotions in order

class _Gates:
    """One method per next step; each collects every reason that step is refused."""

    def __init__(self, facts: Facts, runbook: Runbook, stage: StageId | None, legal: bool):
        self.facts, self.runbook, self.stage, self.legal = facts, runbook, stage, legal

    def _step(self, action: Action, reasons: list[str], target: StageId | None = None,
              flags_after: Flags | None = None) -> Step:
        return Step(action=action, target=target, flags_after=flags_after,
                    allowed=not reasons, reasons=tuple(reasons))

    def _common(self, *, needs_v2: bool = True) -> list[str]:
        reasons = []
        if self.facts.archived:
            reasons.append("The legacy tables are archived (Stage F is done); nothing can run against them.")
        elif needs_v2 and not self.facts.v2_applied:
            reasons.append("Stage A is not applied: run migrate first.")
        return reasons

    def _flags_legal(self) -> list[str]:
        if self.legal:
            return []
        facts = self.facts
        nearest = nearest_legal(facts.flags, self.runbook, facts.archived, facts.recorded_flags)
        return [f"The declared flags ({facts.flags.short()}) are not a legal row; restore {nearest.short()} first."]

    def _deployed(self) -> list[str]:
        """The running API must run the declared flags: it reads them only at start (SYSTEM.md §5)."""
        facts = self.facts
        if not self.legal or facts.hand_edited or not facts.needs_deploy or facts.is_deployed:
            return []  # illegal or hand-edited flags have their own reason
        what = f"The declared flags ({facts.flags.short()})"
        if facts.deployed is None:
            return [f"{what} have no deployment on record, and the API reads its flags only at start: run deploy."]
        if facts.deployed.flags is None:
            return [f"The last deploy ({_stamp(facts.deployed.at)}) could not tell which flags the API runs: "
                    "run deploy again."]
        return [f"{what} are not deployed: the API was last found running {facts.deployed.flags.short()} "
                f"({_stamp(facts.deployed.at)}); run deploy."]

    def deploy(self) -> Step:
        """Deploying is always possible for legal flags the console wrote; a hand edit is restored first."""
        facts = self.facts
        reasons = self._flags_legal()
        if not reasons and facts.hand_edited and facts.recorded_flags is not None:
            reasons.append(f"The env file declares {facts.flags.short()} but the console last wrote "
                           f"{facts.recorded_flags.short()}: restore them before deploying.")
        return self._step("deploy", reasons, flags_after=facts.flags if not reasons else None)

    def verify_reads(self) -> Step:
        """The API read check only reads; it is a next step from the moment C is deployed."""
        return self._step("verify-reads", [])

    def _reads_checked(self) -> list[str]:
        """Stage C's "deploy and validate account endpoints": D needs a passing API read check
        taken after C's deployment."""
        deployed, check = self.facts.deployed, self.facts.reads_check
        since = deployed.at if deployed is not None else None
        if check is None or (since is not None and check.at < since):
            return ["No API read check has run since stage C was deployed: run the API read check."]
        if not check.ok:
            return [f"The latest API read check ({_stamp(check.at)}) failed: fix what it found and run it again."]
        return []

    def migrate(self) -> Step:
        reasons = self._common(needs_v2=False)
        if not self.facts.legacy_applied:
            reasons.append("Migrations 0001-0004 are not all recorded in platform_schema_migrations.")
        if self.facts.v2_applied:
            reasons.append("0005_accounts_v2_schema.sql is already applied.")
        return self._step("migrate", reasons)

    def recon(self) -> Step:
        return self._step("recon", self._common())

    def backfill(self) -> Step:
        reasons = self._common() + self._flags_legal()
        if self.legal and self.facts.flags.writes:
            reasons.append("v2 is the primary write store (WRITES=true): a backfill would "
                           "overwrite newer v2 rows with legacy values.")
        return self._step("backfill", reasons)

    def verify(self) -> Step:
        reasons = self._common()
        if self.facts.v2_applied and not self.facts.archived and self.facts.backfill is None:
            reasons.append("There is no backfill report yet: run the backfill first.")
        return self._step("verify", reasons)

    def repair(self) -> Step:
        """A repair copies legacy over v2, so never while v2 takes the API's writes as primary; a
        hand edit to WRITES=false does not stop a running API from writing v2 (flags are read at
        start), so the flags the console last wrote count too."""
        facts = self.facts
        reasons = list(self.verify().reasons) + self._flags_legal()
        if facts.flags.writes:
            reasons.append("v2 is the primary write store (WRITES=true): a repair would copy legacy "
                           "values over rows the API wrote in v2; run verify without repair.")
        elif facts.recorded_flags is not None and facts.recorded_flags.writes:
            reasons.append(f"The console last wrote WRITES=true ({facts.recorded_flags.short()}), so the API may "
                           "still write v2 as primary: a repair would revert those writes; run verify without repair.")
        return self._step("repair", reasons)

    def _latest_verify_since(self, since: datetime | None, what: str,
                             stage: StageId | None = None) -> list[str]:
        """The latest verify must be newer than `since`, taken in `stage` if given, and pass."""
        latest = self.facts.verifies[-1] if self.facts.verifies else None
        if latest is None or (since is not None and latest.at < since):
            return [f"No verify has run since {what}: run verify."]
        if stage is not None and latest.stage != stage:
            return [f"The latest verify was taken in stage {latest.stage or 'unknown'}, not {stage}: run verify now."]
        if not latest.ok:
            return [f"The latest verify ({_stamp(latest.at)}) failed: fix what it found and verify again."]
        return []

    def promote(self, target: StageId) -> Step:
        facts, runbook = self.facts, self.runbook
        reasons = self._common() + self._flags_legal()
        flags_after = runbook.row(target)
        if reasons:
            return self._step("promote", reasons, target, flags_after)
        if self.stage == target:
            return self._step("promote", [f"Stage {target} is already live."], target, flags_after)
        previous = _PREVIOUS[target]
        if facts.hand_edited and facts.recorded_flags is not None:
            reasons.append(f"The env file declares {facts.flags.short()} but the console last wrote "
                           f"{facts.recorded_flags.short()}: restore them first.")
        elif previous and self.stage != previous:
            reasons.append(f"Stage {previous} is not live (declared: {facts.flags.short()}).")
        elif previous is None and facts.flags.reads:
            reasons.append(f"Stage {self.stage} is past C: roll back before promoting to C again.")
        reasons += self._deployed()
        if target == "D" and not reasons:
            reasons += self._reads_checked()
        if target == "C":
            if facts.backfill is None:
                reasons.append("There is no backfill report yet: run the backfill.")
            elif not facts.backfill.ok:
                pending = getattr(facts.backfill, "pending", ())
                reasons.append(f"The latest backfill of {', '.join(pending)} had errors or none has run: fix them "
                               "and re-run the backfill of those tables." if pending else
                               "The latest backfill report has errors: fix them and re-run the backfill.")
            else:
                reasons += self._latest_verify_since(facts.backfill.at, "the latest backfill")
        elif not reasons and target in ("E", "E'"):
            since = facts.stage_began
            if since is None:
                reasons.append(f"The journal has no record of when stage {previous} began: "
                               f"promote to {previous} through the console.")
            else:
                reasons += self._latest_verify_since(
                    since, f"stage {previous} began ({_stamp(since)})", previous)
                if target == "E'":
                    period = timedelta(hours=runbook.gates.confidence_period_hours)
                    held = facts.now - since
                    if held < period:
                        reasons.append(
                            f"E has held for {hours(held)} of the {hours(period)} confidence "
                            f"period; wait until {_stamp(since + period)}.")
        if facts.rollback_open and not reasons:
            reasons += self._latest_verify_since(facts.rollback_opened_at, "the rollback was opened")
        return self._step("promote", reasons, target, flags_after)

    def restore(self, restore: Flags) -> list[str]:
        """Putting flags back may not do what a promotion could not: turning v2 reads on needs
        C's gates, and v2 writes go back on only through the promotion to E (after the archive,
        E' is the only row left, and putting it back is always allowed)."""
        facts, reasons = self.facts, list[str]()
        if facts.archived:
            return reasons
        if restore.writes and not facts.flags.writes:
            reasons.append(f"Restoring {restore.short()} would turn v2 writes back on without the gates: "
                           "promote to E through the console after a passing verify instead.")
        elif restore.reads and not facts.flags.reads:
            if facts.backfill is None or not facts.backfill.ok:
                reasons.append(f"Restoring {restore.short()} would turn v2 reads on, but the backfill is not "
                               "clean: fix it and re-run the backfill first.")
            else:
                since = max(filter(None, (facts.backfill.at, facts.rollback_opened_at)))
                reasons += self._latest_verify_since(since, "the latest backfill or rollback")
        return reasons

    def rollback_flags(self, keep_dual_write: bool = True) -> Flags | None:
        path = self.runbook.rollback_path(self.stage) if self.stage else None
        if path is None:
            return None
        after = self.facts.flags.model_copy(update=path.set.model_dump(exclude_none=True))
        if not keep_dual_write:
            return after.model_copy(update={"dual_write": False})
        if path.dual_write_kept == "unchanged":
            return after
        return after.model_copy(update={"dual_write": path.dual_write_kept})

    def rollback(self) -> Step:
        reasons = self._common() + self._flags_legal()
        flags_after = None
        if not reasons:
            flags_after = self.rollback_flags()
            if flags_after is None:
                reasons.append(f"Nothing to roll back: stage {self.stage or 'none'} has not switched reads or "
                               "writes to v2.")
        return self._step("rollback", reasons, flags_after=flags_after)

    def _steady_on_record(self) -> list[str]:
        if self.stage != "E'":
            return ["Steady state E' is not live."]
        if self.facts.declared_since is None:
            return ["The journal has no record of the promotion to E': promote through the console."]
        return []

    def close_rollback_window(self) -> Step:
        reasons = self._common() + self._flags_legal()
        if not reasons:
            reasons += self._steady_on_record()
            if self.facts.rollback_open:
                reasons.append("A rollback is open: promote through the gates again first.")
            if self.facts.rollback_window_closed:
                reasons.append("The rollback window is already closed.")
            reasons += self._deployed()
        return self._step("close-rollback-window", reasons)

    def archive(self) -> Step:
        facts, n = self.facts, self.runbook.gates.passing_verifies_before_archive
        reasons = self._common() + self._flags_legal()
        if not reasons:
            if facts.rollback_open:
                reasons.append("A rollback is open: the archive stays locked until the gates pass again.")
            reasons += self._steady_on_record()
            if not facts.rollback_window_closed:
                reasons.append("The rollback window is open: an operator must close it first.")
            reasons += self._deployed()
            since = facts.stage_began
            last = [v for v in facts.verifies[-n:] if v.stage == "E'" and since and v.at >= since]
            if len(last) < n or not all(v.ok for v in last):
                passed = sum(v.ok for v in last)
                reasons.append(f"The last {n} verifies must all have passed in steady state E' "
                               f"({passed} of the last {n} did).")
        return self._step("archive", reasons)


def hours(delta: timedelta) -> str:
    """`delta` as "H h MM min", to the minute below; never negative, whatever the clocks say."""
    minutes = max(0, int(delta.total_seconds() // 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def hand_rollback(facts: Facts, runbook: Runbook) -> Flags | None:
    """A hand edit that turned WRITES off after the console wrote WRITES=true is the rollback
    after write cutover, whoever made it: the flags to journal it with (every WRITES=false row is
    legal), or None. Once journaled, v2 writes go back on only through the promotion to E."""
    recorded = facts.recorded_flags
    if (recorded is not None and recorded.writes and not facts.flags.writes and not facts.archived
            and is_legal(facts.flags, runbook)):
        return facts.flags
    return None


def rollback_flags(facts: Facts, runbook: Runbook, keep_dual_write: bool = True) -> Flags | None:
    """The flags the rollback path of the current stage leads to, or None if there is none."""
    stage = current_stage(facts, runbook)
    legal = is_legal(facts.flags, runbook, facts.archived)
    return _Gates(facts, runbook, stage, legal).rollback_flags(keep_dual_write)


__all__ = [
    "STAGE_ORDER",
    "Assessment",
    "BackfillFact",
    "DeployFact",
    "Facts",
    "ReportFact",
    "Step",
    "VerifyFact",
    "assess",
    "current_stage",
    "hand_rollback",
    "hours",
    "is_legal",
    "nearest_legal",
    "rollback_flags",
    "verify_stage",
]


def refuse(step: Step) -> Refused:
    label = step.label[0].upper() + step.label[1:]  # "Promote E'", not "Promote e'"
    return Refused(f"{label} is refused: " + " ".join(step.reasons))
