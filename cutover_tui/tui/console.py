"""What a screen may ask of the console: the narrow protocol the app offers its screens.

Screens display what they are given and ask through this; none calls the engine with a
connection, none reaches the controller or the app's other methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from ..errors import CutoverError
    from ..reports.models import VerifyReport
    from ..rules.matrix import Assessment
    from ..rules.steps import JobKind
    from ..store.session import Session
    from ..work.jobs import ApiTarget, JobPlan
    from .running_job import JobRun

T = TypeVar("T")


class Console(Protocol):
    env_label: str  # the deploy env file as confirmations name it
    env_path: str  # its real path, which diffs show and the label replaces

    @property
    def api_target(self) -> ApiTarget | None: ...

    def run_engine(self, call: Callable[[Session], T], done: Callable[[T], object] | None = None, *,
            failed: Callable[[CutoverError], object] | None = None, group: str = "engine",
            exclusive: bool = False, refresh: bool = False, own_session: bool = False) -> None:
        """`call(session)` (an engine function taking the session) in a worker; `done(result)` on the UI thread."""
        ...

    def refresh_status(self) -> None: ...

    def open_job(self, kind: JobKind) -> None: ...

    def start_job(self, kind: JobKind, plan: JobPlan, previous: VerifyReport | None) -> JobRun | None: ...

    def open_migrate(self) -> None: ...

    def open_rollback(self) -> None: ...

    def open_close_window(self) -> None: ...

    def open_archive(self) -> None: ...

    def open_deploy(self, assessment: Assessment | None = None) -> None: ...

    def open_remedies(self) -> None: ...


def console_of(node: DOMNode) -> Console:
    """The console a screen runs in (the app, seen only through the protocol)."""
    return cast("Console", node.app)
