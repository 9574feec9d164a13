"""The promotion matrix: an exhaustive search, a random walk, and readable scenarios.

The search and the random walk move the world only through what `assess` allows, plus
what the environment does (time passes, someone edits the env file by hand), and check
every step against an oracle written from CONSOLE.md and the runbook, not from the matrix.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from helpers import ROOT
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cutover_tui.rules.flags import Flags
from cutover_tui.rules.matrix import (
    Assessment,
    DeployFact,
    Facts,
    ReportFact,
    Step,
    VerifyFact,
    assess,
    current_stage,
    hand_rollback,
    rollback_flags,
    verify_stage,
)
from cutover_tui.rules.runbook import Runbook, StageId, load_runbook


class _Runbook(Runbook):
    """The runbook with `legal_flags()` worked out once: it is a pure function of a frozen
    model, and the matrix asks for it a dozen times per assessment (over 1 ms when the
    declared row is illegal), which would otherwise dominate the search."""

    @functools.cached_property
    def legal_rows(self) -> list[Flags]:
        return super().legal_flags()

    def legal_flags(self) -> list[Flags]:
        return self.legal_rows


RUNBOOK = _Runbook.model_validate(dict(load_runbook(ROOT / "runbook.toml")))
LEGAL = frozenset(RUNBOOK.legal_flags())
ROW = {stage: RUNBOOK.row(stage) for stage in ("C", "D", "E", "E'")}
ALL_FLAGS = tuple(Flags(reads=r, writes=w, dual_write=d)
                  for r, w, d in itertools.product((False, True), repeat=3))
PERIOD = timedelta(hours=RUNBOOK.gates.confidence_period_hours)
N = RUNBOOK.gates.passing_verifies_before_archive
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
START = Facts(now=T0, flags=Flags())  # an empty database, the env file's defaults

# What the search covers with the shipped runbook.toml. A fix to the matrix may prune a
# little; a regression that shrinks the search loses far more than a tenth.
# (Down from 11,664 and 173,173 when a hand edit turning WRITES off after E became a journaled
# rollback: those edits no longer leave a hand-edited state of their own.)
# (Up from 8,896 and 135,973 when deployments became facts: the flags last found running and
# the API read check since C's deployment multiply the states.)
EXPLORED_STATES = 58_478
EXPLORED_TRANSITIONS = 1_045_466
FLOOR = 0.9

# -- The world: console actions, taken only when allowed, and environment events ------

def _write_flags(flags: Flags, at: datetime) -> dict:
    return {"flags": flags, "recorded_flags": flags, "flags_since": at}


def _effects(facts: Facts, step: Step) -> Iterator[tuple[str, dict]]:
    """What taking an allowed `step` does to the facts, one entry per operator choice."""
    now = facts.now
    match step.action:
        case "migrate":
            yield "migrate", {"v2_applied": True}
        case "recon":
            yield "recon", {"recon": ReportFact(at=now, ok=True)}
        case "backfill":
            for ok, outcome in ((True, "clean"), (False, "with errors")):
                yield f"backfill {outcome}", {"backfill": ReportFact(at=now, ok=ok)}
        case "verify" | "repair":  # a repair's report is a verify's
            stage = verify_stage(facts, RUNBOOK)
            for ok, outcome in ((True, "passes"), (False, "fails")):
                verify = VerifyFact(at=now, ok=ok, stage=stage)
                yield f"{step.action} {outcome}", {"verifies": (*facts.verifies, verify)}
        case "promote":
            yield step.label, {**_write_flags(step.flags_after, now), "rollback_opened_at": None}
        case "rollback":
            for keep, choice in ((True, "keeping dual-write"), (False, "with dual-write off")):
                yield f"rollback {choice}", {
                    **_write_flags(rollback_flags(facts, RUNBOOK, keep), now),
                    "rollback_opened_at": now, "rollback_window_closed": False}
        case "close-rollback-window":
            yield step.action, {"rollback_window_closed": True}
        case "archive":
            yield step.action, {"archived": True}
        case "restore-flags":
            yield step.action, _write_flags(step.flags_after, now)
        case "deploy":
            # A re-deploy of the flags already running keeps the time they began to run.
            previous = facts.deployed
            kept = previous.since if previous is not None and previous.flags == facts.flags else None
            yield "deploy", {"deployed": DeployFact(at=now, flags=facts.flags, read_back=True, since=kept or now)}
            yield "deploy fails", {"deployed": DeployFact(at=now, flags=None, read_back=True)}
        case "verify-reads":
            for ok, outcome in ((True, "passes"), (False, "fails")):
                yield f"API read check {outcome}", {"reads_check": ReportFact(at=now, ok=ok)}
        case _:
            raise AssertionError(f"the world has no model of the action {step.action!r}")


def console_moves(facts: Facts, assessment: Assessment) -> dict[str, Facts]:
    """Every console action `assess` allows, each taking a minute."""
    return {label: facts.model_copy(update={**changes, "now": facts.now + MINUTE})
            for step in assessment.steps if step.allowed
            for label, changes in _effects(facts, step)}


def wait(facts: Facts, delta: timedelta) -> Facts:
    return facts.model_copy(update={"now": facts.now + delta})


def hand_edit(facts: Facts, flags: Flags) -> Facts:
    """Someone edits the env file behind the console's back; one that turns WRITES off after E
    is journaled by the console, when it first sees it, as the rollback after write cutover."""
    edited = facts.model_copy(update={"flags": flags})
    rolled_back = hand_rollback(edited, RUNBOOK)
    if rolled_back is None:
        return edited
    return edited.model_copy(update={**_write_flags(rolled_back, facts.now), "rollback_opened_at": facts.now,
                                     "rollback_window_closed": False})


WAITS = {"an hour passes": HOUR, "the confidence period passes": PERIOD}
HAND_EDITS = {f"env hand-edited to {flags.short()}": flags for flags in ALL_FLAGS}


def moves(facts: Facts, assessment: Assessment) -> dict[str, Facts]:
    """Everything that can happen next: console actions and environment events."""
    return (console_moves(facts, assessment)
            | {label: wait(facts, delta) for label, delta in WAITS.items()}
            | {label: hand_edit(facts, flags) for label, flags in HAND_EDITS.items() if flags != facts.flags})


# -- The runbook's own path, for scenarios and as starting points -------------------

def take(facts: Facts, *labels: str | timedelta) -> Facts:
    """Take each console action in turn (each must be allowed), or let time pass."""
    for label in labels:
        if isinstance(label, timedelta):
            facts = wait(facts, label)
            continue
        assessment = assess(facts, RUNBOOK)
        actions = console_moves(facts, assessment)
        assert label in actions, (label, {s.label: s.reasons for s in assessment.steps if not s.allowed})
        facts = actions[label]
    return facts


HAPPY_PATH = (  # each console action (or wait) with the stage it leaves us in
    ("migrate", "A"), ("recon", "0"), ("backfill clean", "B"), ("verify passes", "G"),
    ("promote C", "C"), ("deploy", "C"), ("API read check passes", "C"), ("promote D", "D"), ("deploy", "D"),
    ("verify passes", "D"), ("promote E", "E"), ("deploy", "E"),
    (PERIOD, "E"), ("verify passes", "E"), ("promote E'", "E'"), ("deploy", "E'"), ("close-rollback-window", "E'"),
    *[("verify passes", "E'")] * N, ("archive", "F"),
)
READY_TO_ARCHIVE = [move for move, _ in HAPPY_PATH[:-1]]
TO_C = ("migrate", "backfill clean", "verify passes", "promote C", "deploy", "API read check passes")
TO_D = (*TO_C, "promote D", "deploy")  # D is written 00:06 and begins (deployed) 00:07
TO_E = (*TO_D, "verify passes", "promote E", "deploy")  # E begins 00:10


# -- The oracle: the rules of CONSOLE.md, checked against every step ------------------

def _console_live(facts: Facts, stage: StageId) -> bool:
    """`stage`'s row is declared, and the console itself wrote it."""
    return facts.flags == facts.recorded_flags == ROW[stage] and facts.flags_since is not None


def _deployed(facts: Facts) -> bool:
    """The running API was found running the declared flags; before the console writes any
    flags the API runs the defaults it started with, unless a deployment says otherwise."""
    if facts.deployed is None:
        return facts.recorded_flags is None and facts.flags == Flags()
    return facts.deployed.flags == facts.flags


def _began(facts: Facts) -> datetime | None:
    """When the declared stage began to run: not before it was written, nor before it was deployed."""
    if facts.flags_since is None or facts.deployed is None or facts.deployed.flags != facts.flags:
        return facts.flags_since
    return max(facts.flags_since, facts.deployed.since)


def _latest_verify_passed(facts: Facts, since: datetime, stage: StageId | None = None) -> bool:
    latest = facts.verifies[-1] if facts.verifies else None
    return (latest is not None and latest.ok and latest.at >= since
            and (stage is None or latest.stage == stage))


def _counts_for_archive(facts: Facts, verify: VerifyFact) -> bool:
    """A verify the archive gate may count: passed, in E', since the console wrote E'."""
    began = _began(facts)
    return (verify.ok and verify.stage == "E'" and facts.recorded_flags == ROW["E'"]
            and began is not None and verify.at >= began)


def _one_sentence(text: str) -> bool:
    return text.endswith(".") and not re.search(r"[.!?]\s|\n", text)


# Each rule names the step it is about when allowed (None: every step, allowed or not).
PROPERTIES: dict[str, tuple[str | None, Callable[[Facts, Step], bool]]] = {
    "E only after a passing verify in D since D was deployed": ("promote E", lambda facts, step: (
        _console_live(facts, "D") and _latest_verify_passed(facts, _began(facts), "D"))),
    "E' only after the confidence period and a passing verify in E, counted from E's deployment": (
        "promote E'", lambda facts, step: (
            _console_live(facts, "E") and facts.now - _began(facts) >= PERIOD
            and _latest_verify_passed(facts, _began(facts), "E"))),
    "D only after a passing API read check since C was deployed": ("promote D", lambda facts, step: (
        facts.reads_check is not None and facts.reads_check.ok and facts.deployed is not None
        and facts.reads_check.at >= facts.deployed.at)),
    "promotions, closing the window and the archive only when the declared flags run": (None, lambda facts, step: (
        not step.allowed or step.action not in ("promote", "close-rollback-window", "archive")
        or _deployed(facts))),
    "archive only from E' with the window closed and N passing verifies in E'": ("archive", lambda facts, step: (
        _console_live(facts, "E'") and facts.rollback_window_closed and not facts.rollback_open
        and len(facts.verifies) >= N and all(_counts_for_archive(facts, v) for v in facts.verifies[-N:]))),
    "no archive during a rollback": ("archive", lambda facts, step: not facts.rollback_open),
    "only legal flags are written": (None, lambda facts, step: not step.allowed or all(
        flags is None or flags in LEGAL for flags in (
            step.flags_after,
            rollback_flags(facts, RUNBOOK, keep_dual_write=False) if step.action == "rollback" else None))),
    "no backfill while v2 is the write primary": ("backfill", lambda facts, step: not facts.flags.writes),
    "v2 writes go back on only by promotion": ("restore-flags", lambda facts, step: (
        facts.archived or facts.flags.writes or not step.flags_after.writes)),
    "a restore turns v2 reads on only after a passing verify newer than the backfill": (
        "restore-flags", lambda facts, step: facts.archived or facts.flags.reads or not step.flags_after.reads or (
            facts.backfill is not None and facts.backfill.ok and _latest_verify_passed(facts, facts.backfill.at))),
    "no repair while v2 is, or was last written as, the write primary": ("repair", lambda facts, step: (
        not facts.flags.writes and not (facts.recorded_flags and facts.recorded_flags.writes))),
    "refusals give reasons, one sentence each": (None, lambda facts, step: (
        step.allowed or bool(step.reasons)) and all(_one_sentence(r) for r in step.reasons)),
    "C only after a clean backfill and a passing verify newer than it": ("promote C", lambda facts, step: (
        facts.backfill is not None and facts.backfill.ok
        and _latest_verify_passed(facts, facts.backfill.at))),
    "after archive, nothing but putting E' back in the env file, deploying it and reading": (
        None, lambda facts, step: (
            not (facts.archived and step.allowed) or step.action == "verify-reads"
            or (step.action in ("restore-flags", "deploy") and step.flags_after == ROW["E'"]))),
}


def violations(facts: Facts, assessment: Assessment) -> Iterator[tuple[str, Step]]:
    for step in assessment.steps:
        label = step.label
        for name, (about, holds) in PROPERTIES.items():
            if (about is None or (step.allowed and about == label)) and not holds(facts, step):
                yield name, step


# -- Canonical states: what the matrix can observe, with times made relative ---------

class LatestVerify(NamedTuple):
    """The one verify whose time and stage a gate compares; None: nothing to compare with."""

    stage: StageId | None
    after_backfill: bool | None
    after_flags_since: bool | None
    after_rollback_opened: bool | None


Bits = tuple[bool, bool, bool]  # reads, writes, dual-write: cheaper to hash than Flags


def _bits(flags: Flags | None) -> Bits | None:
    return flags and (flags.reads, flags.writes, flags.dual_write)


def _flags(bits: Bits | None) -> Flags | None:
    return bits and Flags(reads=bits[0], writes=bits[1], dual_write=bits[2])


C_BITS, D_BITS, E_BITS = _bits(ROW["C"]), _bits(ROW["D"]), _bits(ROW["E"])


class Canonical(NamedTuple):
    flags: Bits
    recorded_flags: Bits | None
    v2_applied: bool
    recon: bool
    backfill_ok: bool | None
    verify_oks: tuple[bool, ...]  # the last N, oldest first
    archive_counts: tuple[bool, ...]  # of the last N, those the archive gate may count
    latest_verify: LatestVerify | None
    flags_since_aged: bool | None  # E written at least the confidence period ago
    rollback_open: bool
    rollback_window_closed: bool
    archived: bool
    deployed: tuple[Bits | None] | None = None  # the flags last found running (None inside: unknown)
    reads_check_ok: bool | None = None  # the API read check since C's deployment, while C runs


def _at_or_after(at: datetime, reference: datetime | None) -> bool | None:
    return None if reference is None else at >= reference


def canonical(facts: Facts) -> Canonical:
    """Keep what the matrix can observe now or later; blank what it never will again.

    Every new timestamp is the newest, so a comparison no gate makes any more (of a verify
    that is no longer the latest, or with a reference time since replaced) stays out of
    reach for good.
    """
    if facts.archived:  # every gate stops at "archived"; only the flags are still read
        return Canonical(_bits(facts.flags), _bits(facts.recorded_flags), facts.v2_applied, recon=False,
                         backfill_ok=None, verify_oks=(), archive_counts=(), latest_verify=None,
                         flags_since_aged=None,
                         rollback_open=facts.rollback_open, rollback_window_closed=False, archived=True)
    # Only promote E and E' compare the latest verify with the flags' time, and only while
    # the console's last write is D's or E's row: any other write makes a new, newer time.
    recorded = _bits(facts.recorded_flags)
    timed_by_flags = recorded in (D_BITS, E_BITS)
    latest = facts.verifies[-1] if facts.verifies else None
    began = _began(facts)
    # Until the written flags run, every gate timed by them refuses for that alone, and the
    # deployment that ends it begins the stage anew: no verify so far can count.
    undeployed = not facts.is_deployed and facts.needs_deploy
    after_flags_since = (_at_or_after(latest.at, began) if latest and timed_by_flags and not undeployed
                         else None)
    deployed = facts.deployed
    # Only promote D reads the read check, against C's deployment: while C runs (a rollback may
    # write C again without a deployment); any other deployment makes every check older.
    reads_check = facts.reads_check
    reads_check_ok = (reads_check.ok if deployed is not None and reads_check is not None
                      and _bits(deployed.flags) == C_BITS and reads_check.at >= deployed.at else None)
    return Canonical(
        flags=_bits(facts.flags), recorded_flags=recorded, v2_applied=facts.v2_applied,
        recon=facts.recon is not None and facts.backfill is None,  # a backfill outranks a recon
        backfill_ok=facts.backfill.ok if facts.backfill else None,
        verify_oks=tuple(v.ok for v in facts.verifies[-N:]),
        archive_counts=tuple(_counts_for_archive(facts, v) for v in facts.verifies[-N:]),
        latest_verify=latest and LatestVerify(
            latest.stage if after_flags_since else None,
            _at_or_after(latest.at, facts.backfill and facts.backfill.at),
            after_flags_since, _at_or_after(latest.at, facts.rollback_opened_at)),
        flags_since_aged=None if began is None else (
            recorded == E_BITS and not undeployed and facts.now - began >= PERIOD),
        rollback_open=facts.rollback_open, rollback_window_closed=facts.rollback_window_closed,
        archived=False, deployed=None if deployed is None else (_bits(deployed.flags),),
        reads_check_ok=reads_check_ok,
    )


def materialise(state: Canonical) -> Facts:
    """A member of `state`'s class unlike those short paths reach: every detail the canonical
    form leaves out is filled in the other way (older verifies and a recon as new as they can
    be, erased comparisons reversed, the clock late in its bucket but an hour short of the
    next, an archive over failures). Times are minutes around the latest verify, at T0."""
    if state.archived:
        state = state._replace(recon=True, backfill_ok=False, verify_oks=(False,), archive_counts=(False,),
                               latest_verify=LatestVerify("E'", True, None, None),
                               rollback_window_closed=True)
    latest = state.latest_verify or LatestVerify(None, None, None, None)

    def around(minutes: int, verify_after_it: bool | None) -> datetime:
        return T0 + (-minutes if verify_after_it is not False else minutes) * MINUTE

    since = around(2, latest.after_flags_since)
    older = tuple(VerifyFact(at=T0 - (len(state.verify_oks) - i) * timedelta(seconds=1), ok=ok,
                             stage="E'" if counts else "E")
                  for i, (ok, counts) in enumerate(zip(state.verify_oks[:-1], state.archive_counts), start=1))
    # A kept stage may be None (a verify under hand-edited flags); a blanked one is filled in.
    stage = latest.stage if latest.after_flags_since else latest.stage or "D"
    verifies = older + tuple(VerifyFact(at=T0, ok=ok, stage="E'" if counts else stage)
                             for ok, counts in zip(state.verify_oks[-1:], state.archive_counts[-1:]))
    if state.flags_since_aged is None:
        now = T0 + 5 * MINUTE
    else:
        now = since + (10 * PERIOD if state.flags_since_aged else PERIOD - HOUR)
    return Facts(
        now=now, flags=_flags(state.flags), v2_applied=state.v2_applied,
        recon=ReportFact(at=T0 + 4 * MINUTE, ok=True)
        if state.recon or state.backfill_ok is not None else None,
        backfill=None if state.backfill_ok is None else ReportFact(
            at=around(1, latest.after_backfill), ok=state.backfill_ok),
        verifies=verifies, recorded_flags=_flags(state.recorded_flags),
        flags_since=None if state.flags_since_aged is None else since,
        rollback_opened_at=around(3, latest.after_rollback_opened) if state.rollback_open else None,
        rollback_window_closed=state.rollback_window_closed, archived=state.archived,
        deployed=None if state.deployed is None else DeployFact(
            at=since, flags=_flags(state.deployed[0]), read_back=True, since=since if state.deployed[0] else None),
        reads_check=None if state.reads_check_ok is None else ReportFact(at=since, ok=state.reads_check_ok),
    )


_CLOCK_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC|\d+ h \d\d min")


def observable(assessment: Assessment) -> dict:
    """The assessment with the clock readings in its sentences blanked out."""
    seen = assessment.model_dump()
    for step in seen["steps"]:
        step["reasons"] = [_CLOCK_TEXT.sub("<clock>", reason) for reason in step["reasons"]]
    return seen


def stands_in_for(state: Canonical, assessment: Assessment, next_states: dict[str, Canonical]) -> bool:
    """The made-up facts of `state` look the same as the real ones, and the console's actions
    lead both to the same states. (The environment's events need no such check: a hand-edit
    changes only the flags, which the canonical form copies; waits only the clock's bucket.)"""
    stand_in = materialise(state)
    stand_in_assessment = assess(stand_in, RUNBOOK)
    stand_in_next = {label: canonical(after)
                     for label, after in console_moves(stand_in, stand_in_assessment).items()}
    console_next = {label: key for label, key in next_states.items()
                    if label not in WAITS and label not in HAND_EDITS}
    return (canonical(stand_in) == state
            and observable(stand_in_assessment) == observable(assessment)
            and stand_in_next == console_next)


# -- The exhaustive search ------------------------------------------------------------

@dataclass
class Exploration:
    states: int = 0
    transitions: int = 0
    landmarks: set[str] = field(default_factory=set)
    counterexamples: dict[str, str] = field(default_factory=dict)  # property: the first path
    unsound: list[str] = field(default_factory=list)  # paths to states the canonical form misrepresents


def _landmarks(facts: Facts, assessment: Assessment, next_states: dict[str, Canonical]) -> set[str]:
    reached = {f"allowed: {step.label}" for step in assessment.steps if step.allowed}
    if not assessment.flags_legal:
        reached.add("illegal flags")
    if facts.flags == facts.recorded_flags:  # as the console wrote them, not by hand
        reached.add(f"stage {assessment.stage}")
        if any(label.startswith("rollback") for label in next_states):
            reached.add(f"rollback from {assessment.stage}")
    return reached


@functools.cache
def explore() -> Exploration:
    """Breadth-first over canonical states from an empty database and the default env file."""
    result = Exploration()
    parents: dict[Canonical, tuple[Canonical, str] | None] = {canonical(START): None}

    def path_to(state: Canonical) -> str:
        labels = []
        while parents[state] is not None:
            state, label = parents[state]
            labels.append(label)
        return " -> ".join(reversed(labels)) or "(start)"

    queue = deque([START])
    while queue:
        facts = queue.popleft()
        state, assessment = canonical(facts), assess(facts, RUNBOOK)
        following = moves(facts, assessment)
        next_states = {label: canonical(after) for label, after in following.items()}
        result.states += 1
        result.transitions += len(following)
        if not stands_in_for(state, assessment, next_states):
            result.unsound.append(path_to(state))
        for name, step in violations(facts, assessment):
            result.counterexamples.setdefault(name, f"after {path_to(state)}: {step!r}")
        result.landmarks |= _landmarks(facts, assessment, next_states)
        for label, key in next_states.items():
            if key not in parents:
                parents[key] = (state, label)
                queue.append(following[label])
    return result


def test_canonical_states_keep_everything_the_matrix_observes():
    assert not explore().unsound, explore().unsound[:3]


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_property_holds_in_every_reachable_state(name):
    assert name not in explore().counterexamples, explore().counterexamples[name]


def test_search_reaches_every_stage_every_action_rollbacks_and_illegal_flags():
    exploration = explore()
    every_action = {f"allowed: {step.label}" for step in assess(START, RUNBOOK).steps}
    assert every_action | {
        "allowed: restore-flags", "illegal flags", "rollback from D", "rollback from E",
        "stage C", "stage D", "stage E", "stage E'", "stage F",
    } <= exploration.landmarks
    assert exploration.states >= FLOOR * EXPLORED_STATES
    assert exploration.transitions >= FLOOR * EXPLORED_TRANSITIONS


# -- The random walk ------------------------------------------------------------------

class CutoverWorld(RuleBasedStateMachine):
    """Random operators on a random clock: the search's moves and properties, real times."""

    def __init__(self) -> None:
        super().__init__()
        self.facts = START

    @initialize(progress=st.integers(min_value=0, max_value=len(HAPPY_PATH)))
    def start_somewhere_on_the_happy_path(self, progress):
        """A walk from the start alone seldom gets past D; this one may start as far as F."""
        self.facts = take(START, *(move for move, _ in HAPPY_PATH[:progress]))

    @rule(data=st.data())
    def console_action(self, data):
        actions = console_moves(self.facts, assess(self.facts, RUNBOOK))
        if actions:
            self.facts = actions[data.draw(st.sampled_from(sorted(actions)), label="action")]

    @rule(minutes=st.integers(min_value=1, max_value=2 * 24 * 60))
    def time_passes(self, minutes):
        self.facts = wait(self.facts, minutes * MINUTE)

    @rule(flags=st.sampled_from(ALL_FLAGS))
    def env_hand_edited(self, flags):
        self.facts = hand_edit(self.facts, flags)

    @invariant()
    def properties_hold(self):
        broken = [(name, step.label) for name, step in violations(self.facts, assess(self.facts, RUNBOOK))]
        assert broken == [], self.facts


TestCutoverWorld = CutoverWorld.TestCase
TestCutoverWorld.settings = settings(max_examples=300, stateful_step_count=50, deadline=None, database=None)


# -- Scenarios ------------------------------------------------------------------------

def test_happy_path_walks_the_runbook_from_a_to_f():
    facts = START
    for move, stage in HAPPY_PATH:
        facts = take(facts, move)
        assert current_stage(facts, RUNBOOK) == stage, move
    assert facts.flags == ROW["E'"]
    assert [s.label for s in assess(facts, RUNBOOK).steps if s.allowed] == ["deploy", "verify-reads"]


def test_e_needs_a_passing_verify_taken_in_d():
    in_d = take(START, *TO_D)
    assert assess(in_d, RUNBOOK).step("promote", "E").reasons == (
        "No verify has run since stage D began (2026-03-01 00:07 UTC): run verify.",)
    failed = take(in_d, "verify fails")
    assert assess(failed, RUNBOOK).step("promote", "E").reasons == (
        "The latest verify (2026-03-01 00:08 UTC) failed: fix what it found and verify again.",)
    assert assess(take(failed, "verify passes"), RUNBOOK).step("promote", "E").allowed


def test_e_prime_waits_out_the_confidence_period():
    verified_in_e = take(START, *TO_E, "verify passes")
    began = verified_in_e.stage_began
    hour_short = wait(verified_in_e, began + PERIOD - HOUR - verified_in_e.now)
    assert assess(hour_short, RUNBOOK).step("promote", "E'").reasons == (
        "E has held for 23 h 00 min of the 24 h 00 min confidence period; wait until 2026-03-02 00:10 UTC.",)
    assert not assess(wait(hour_short, HOUR - MINUTE), RUNBOOK).step("promote", "E'").allowed
    assert assess(wait(hour_short, HOUR), RUNBOOK).step("promote", "E'").allowed


def test_archive_is_refused_while_a_rollback_is_open():
    ready = take(START, *READY_TO_ARCHIVE)
    assert assess(ready, RUNBOOK).step("archive").allowed
    for choice in ("rollback keeping dual-write", "rollback with dual-write off"):
        archive = assess(take(ready, choice), RUNBOOK).step("archive")
        assert "A rollback is open: the archive stays locked until the gates pass again." in archive.reasons


@pytest.mark.parametrize(("path", "dual_write", "nearest"), [
    pytest.param(("migrate",), False, Flags(), id="no record: fewest flips"),
    pytest.param(("migrate",), True, Flags(dual_write=True), id="no record: fewest flips, dual-write kept"),
    pytest.param(TO_D, False, ROW["D"], id="back to what the console last wrote"),
])
def test_illegal_flags_show_the_nearest_legal_row_and_a_way_back(path, dual_write, nearest):
    edited = hand_edit(take(START, *path), Flags(reads=False, writes=True, dual_write=dual_write))
    assessment = assess(edited, RUNBOOK)
    assert (assessment.flags_legal, assessment.nearest_legal) == (False, nearest)
    assert assessment.step("promote", "E").reasons == (
        f"The declared flags ({edited.flags.short()}) are not a legal row; restore {nearest.short()} first.",)
    assert assessment.step("restore-flags") == Step(action="restore-flags", flags_after=nearest, allowed=True)
    assert assess(take(edited, "restore-flags"), RUNBOOK).flags_legal


def _live_in(stage: StageId) -> Facts:
    return Facts(now=T0, flags=ROW[stage], v2_applied=True, recorded_flags=ROW[stage], flags_since=T0)


@pytest.mark.parametrize(("stage", "keep_dual_write", "after"), [
    ("C", True, Flags()), ("C", False, Flags()),
    ("D", True, Flags(dual_write=True)), ("D", False, Flags()),
    ("E", True, Flags(reads=True, dual_write=True)), ("E", False, Flags(reads=True)),
    ("E'", True, Flags(reads=True, dual_write=True)), ("E'", False, Flags(reads=True)),
])
def test_rollback_paths_follow_the_runbook(stage, keep_dual_write, after):
    facts = _live_in(stage)
    assert rollback_flags(facts, RUNBOOK, keep_dual_write) == after
    rollback = assess(facts, RUNBOOK).step("rollback")
    assert rollback.allowed and rollback.flags_after == rollback_flags(facts, RUNBOOK)  # dual-write kept


def test_hand_edited_env_file_blocks_promotion_and_offers_the_recorded_flags():
    edited = hand_edit(take(START, *TO_C), ROW["D"])
    assessment = assess(edited, RUNBOOK)
    assert assessment.step("promote", "E").reasons == (
        "The env file declares READS=true WRITES=false DUAL_WRITE=true but the console last wrote "
        "READS=true WRITES=false DUAL_WRITE=false: restore them first.",)
    restore = assessment.step("restore-flags")
    assert restore == Step(action="restore-flags", flags_after=ROW["C"], allowed=True)


@pytest.mark.parametrize("before_the_edit", [
    pytest.param(("migrate", "backfill clean", "verify passes"), id="console never wrote flags"),
    pytest.param(TO_C, id="console wrote C"),
])
def test_steady_state_made_by_hand_opens_no_way_to_the_archive(before_the_edit):
    edited = hand_edit(take(START, *before_the_edit, *["verify passes"] * N), ROW["E'"])
    assessment = assess(edited, RUNBOOK)
    for label in ("close-rollback-window", "archive"):
        assert "The journal has no record of the promotion to E': promote through the console." in (
            assessment.step(label).reasons)


def test_after_archive_a_hand_edited_env_file_can_only_go_back_to_e_prime():
    edited = hand_edit(take(START, *READY_TO_ARCHIVE, "archive"), Flags())
    assessment = assess(edited, RUNBOOK)
    assert (assessment.flags_legal, assessment.nearest_legal) == (False, ROW["E'"])
    assert [step for step in assessment.steps if step.allowed and step.action != "verify-reads"] == [
        Step(action="restore-flags", flags_after=ROW["E'"], allowed=True)]


# -- Deployment: the API runs its flags only after a deploy ---------------------------

def test_a_written_stage_counts_only_once_deployed():
    written = take(START, "migrate", "backfill clean", "verify passes", "promote C")
    assert assess(written, RUNBOOK).step("promote", "D").reasons == (
        "The declared flags (READS=true WRITES=false DUAL_WRITE=false) have no deployment on record, and the API "
        "reads its flags only at start: run deploy.",)
    failed = take(written, "deploy fails")
    assert assess(failed, RUNBOOK).step("promote", "D").reasons == (
        "The last deploy (2026-03-01 00:04 UTC) could not tell which flags the API runs: run deploy again.",)
    in_d = take(START, *TO_D, "verify passes", "promote E")  # E written, D still running
    assert assess(in_d, RUNBOOK).step("promote", "E'").reasons == (
        "The declared flags (READS=true WRITES=true DUAL_WRITE=true) are not deployed: the API was last found "
        "running READS=true WRITES=false DUAL_WRITE=true (2026-03-01 00:07 UTC); run deploy.",)


def test_d_needs_an_api_read_check_after_c_was_deployed():
    deployed = take(START, "migrate", "backfill clean", "verify passes", "promote C", "API read check passes",
                    "deploy")
    assert assess(deployed, RUNBOOK).step("promote", "D").reasons == (
        "No API read check has run since stage C was deployed: run the API read check.",)
    failed = take(deployed, "API read check fails")
    assert assess(failed, RUNBOOK).step("promote", "D").reasons == (
        "The latest API read check (2026-03-01 00:06 UTC) failed: fix what it found and run it again.",)
    assert assess(take(failed, "API read check passes"), RUNBOOK).step("promote", "D").allowed


def test_deploying_again_keeps_the_confidence_period_running():
    in_e = take(START, *TO_E, "verify passes")
    began = in_e.stage_began
    redeployed = take(wait(in_e, PERIOD), "deploy", "verify passes")
    assert redeployed.stage_began == began
    assert assess(redeployed, RUNBOOK).step("promote", "E'").allowed


def test_a_rollback_needs_no_deployment_but_what_follows_does():
    written_e = take(START, *TO_D, "verify passes", "promote E")
    assert assess(written_e, RUNBOOK).step("rollback").allowed
    ready = take(START, *READY_TO_ARCHIVE)
    undeployed = ready.model_copy(update={"deployed": DeployFact(at=ready.now, flags=None, read_back=True)})
    for label in ("archive", "close-rollback-window"):
        assert any("could not tell which flags the API runs" in r for r in assess(undeployed, RUNBOOK).step(
            label).reasons), label
