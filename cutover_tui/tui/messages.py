"""Every message the console's widgets and workers post: small, past tense, data only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textual.message import Message

from ..errors import CutoverError
from ..ops.activity import Activity
from ..ops.overview import Status
from ..ops.transitions import FlagChange
from ..rules.matrix import Assessment
from ..store.journal import JournalEntry
from .protocols import TrafficFigures
from .running_job import JobRun

ChangeKey = Literal["promote", "rollback", "restore"]  # the flag changes a key or the palette asks for


@dataclass
class SessionOpened(Message):
    """The database answered and the console's schema is in place."""

    database_name: str


@dataclass
class StatusGathered(Message):
    status: Status


@dataclass
class JournalLoaded(Message):
    entries: list[JournalEntry]


@dataclass
class ChangeRequested(Message):
    """The operator pressed a flag-change key; `action` is promote, rollback or restore."""

    action: ChangeKey
    target: str | None = None


@dataclass
class ChangePlanned(Message):
    change: FlagChange


@dataclass
class ChangeApplied(Message):
    change: FlagChange
    entry: JournalEntry
    assessment: Assessment  # right after the write, for the deploy it asks for


@dataclass
class JournalRequested(Message):
    pass


@dataclass
class OperationFailed(Message):
    """An engine call failed; `fatal` means the console has no working session."""

    error: CutoverError
    fatal: bool = False
    refresh: bool = False  # show the status again: something may have changed


@dataclass
class JobEnded(Message):
    """The long job finished, failed or was cancelled; `run` holds its report or error."""

    run: JobRun


@dataclass
class TrafficSwitched(Message):
    running: bool
    rate: float
    base_url: str


@dataclass
class TrafficRead(Message):
    """The demo traffic's figures and whether it runs; None when they could not be read."""

    figures: tuple[TrafficFigures, bool] | None


@dataclass
class ActivityRead(Message):
    """An observer's poll: who holds the operator lock, and the job another console runs."""

    activity: Activity
