"""The rollback wizard: the path the declared flags call for, the env diff, the write, then verify.

Before write cutover (from C or D) reads go back to legacy; after it (from E or E')
writes do, with dual-write kept on for mirrored catch-up unless the operator turns it off.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from ...errors import CutoverError
from ...ops import transitions
from ...ops.transitions import FlagChange
from ...rules.matrix import Assessment
from ...store.journal import JournalEntry
from ...store.session import Session
from ..compat.footer import Footer
from ..console import Console, console_of
from ..text import literal
from .confirm import coloured_diff, warned


def _path(change: FlagChange) -> tuple[str, str]:
    """The runbook's path for the declared flags: its name and what it does."""
    if change.flags_before.writes:
        return ("After write cutover (from E or E')",
                "WRITES goes back to false so legacy takes the writes again. v2 tables stay; with "
                "DUAL_WRITE kept true the API mirrors every write into v2 for the catch-up.")
    return ("Before write cutover (from C or D)",
            "READS goes back to false so the API reads legacy again; v2 tables stay. DUAL_WRITE may "
            "stay true to keep v2 warm, or go false.")


class RollbackWizard(Screen):
    HELP = ("Roll back as the runbook says. Step 1: the path, derived from the flags the env file "
            "declares, and the exact env diff; k turns keeping dual-write on or off; y writes it. "
            "Step 2: the rollback is open, the archive is locked and promotion must pass its gates "
            "again; v runs a verify now. escape returns to the dashboard at any point.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "write", "Write the rollback"),
        Binding("k", "dual_write", "Keep dual-write on/off"),
        Binding("v", "verify", "Run verify"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, env_label: str) -> None:
        super().__init__()
        self.env_label = env_label
        self.keep_dual_write = True
        self.change: FlagChange | None = None
        self.refused: str | None = None
        self.written: JournalEntry | None = None

    @property
    def cutover(self) -> Console:
        return console_of(self)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(Text("Rollback wizard", style="bold red"), id="wizard-title")
        with VerticalScroll(id="wizard-body"):
            yield Static(Text("working out the path from the declared flags…", style="dim"), id="wizard-path")
            yield Static(id="wizard-diff")
            yield Static(id="wizard-next")
        yield Footer()

    def on_mount(self) -> None:
        self._plan()

    def _plan(self) -> None:
        keep = self.keep_dual_write
        self.cutover.run_engine(partial(transitions.plan_rollback, keep_dual_write=keep), self._planned,
                                failed=self._refused, group="rollback")

    def _planned(self, change: FlagChange) -> None:
        self.change, self.refused = change, None
        self._show()

    def _refused(self, error: CutoverError) -> None:
        self.change, self.refused = None, error.message
        self._show()

    def _show(self) -> None:
        self.refresh_bindings()
        path, diff, after = self.query_one("#wizard-path", Static), self.query_one("#wizard-diff", Static), \
            self.query_one("#wizard-next", Static)
        if self.refused is not None:
            path.update(Group(Text("No rollback to make now.", style="bold"), literal(self.refused, "red")))
            diff.update("")
            after.update("")
            return
        change = self.change
        if change is None:
            return
        name, what = _path(change)
        step = "Step 2 of 2: rollback written" if self.written else "Step 1 of 2: the change"
        path.update(Group(Text(step, style="bold"), Text(name, style="bold yellow"), literal(what),
                          Text.assemble("flags ", (change.flags_before.short(), "bold"), " -> ",
                                        (change.flags_after.short(), "bold"),
                                        ("   dual-write kept" if change.flags_after.dual_write else
                                         "   dual-write off"), style="")))
        diff.update(Group(*warned(change), literal(f"in {self.env_label}:", "dim"),
                          coloured_diff(change.diff.replace(self.cutover.env_path, self.env_label))
                          if change.diff else literal("(the env file already declares these flags)")))
        if self.written is None:
            after.update(Text("y writes it (the gate is checked again under the operator lock); "
                              "k switches dual-write; escape leaves everything as it is.", style="bold"))
        else:
            after.update(Group(
                Text(f"Written; journal entry {self.written.id}. The rollback is OPEN.", style="bold green"),
                Text("The archive (F) is locked and no platform_* table may be dropped while it is open.", style="red"),
                Text("To leave the rollback, promote again: every gate must pass again, starting with "
                     "a fresh verify.", style=""),
                Text("v runs verify now; escape returns to the dashboard.", style="bold")))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("write", "dual_write"):
            return True if self.change is not None and self.written is None else None
        if action == "verify":
            return True if self.written is not None else None
        return True

    def action_dual_write(self) -> None:
        self.keep_dual_write = not self.keep_dual_write
        self._plan()

    def action_write(self) -> None:
        change = self.change
        if change is None or self.written is not None:
            return
        self.cutover.run_engine(partial(_written_and_assessed, change=change), self._written,
                                group="rollback", refresh=True)

    def _written(self, outcome: tuple[JournalEntry, Assessment]) -> None:
        entry, assessment = outcome
        self.written = entry
        self.notify(transitions.written_message(entry, self.env_label), title=self.change.describe()
                    if self.change else "Roll back", timeout=6)
        self.cutover.refresh_status()
        self._show()
        self.cutover.open_deploy(assessment)  # a rollback too reaches the API only when it is deployed

    def action_verify(self) -> None:
        self.app.pop_screen()
        self.cutover.open_job("verify")

    def action_back(self) -> None:
        self.app.pop_screen()


def _written_and_assessed(session: Session, change: FlagChange) -> tuple[JournalEntry, Assessment]:
    """The rollback written, and where that leaves the gates (for the deploy it asks for)."""
    return transitions.apply_change(session, change), session.assess()
