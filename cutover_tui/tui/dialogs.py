"""The one-off steps the dashboard asks about in a dialog first: Stage A (the SQL shown),
closing the rollback window, and the archive (the database name typed). Each plans in a
worker, asks, then applies in a worker; the app says what happened."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from rich.text import Text

from ..ops import transitions
from ..store.journal import JournalEntry
from ..work.archive import ArchivePlan, plan_archive, run_archive
from ..work.migrate import MigrationPlan
from .screens.archive import ArchiveConfirm
from .screens.confirm import Confirm
from .text import literal

if TYPE_CHECKING:
    from .app import CutoverApp


class StepDialogs:
    def __init__(self, app: CutoverApp) -> None:
        self.app = app

    def migrate(self) -> None:
        self.app.run_engine(transitions.plan_stage_a, self._ask_stage_a, group="change")

    def _ask_stage_a(self, plan: MigrationPlan) -> None:
        if not plan.to_apply:
            self.app.notify(plan.nothing_to_apply(), timeout=6)
            return
        body = Text("\n\n").join(literal(f"-- {f.id} (sha256 {f.checksum})\n{f.sql}") for f in plan.to_apply)

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.run_engine(partial(transitions.apply_stage_a, shown=plan), self._stage_a_applied,
                                    group="change", refresh=True)
        self.app.push_screen(Confirm(f"Stage A: apply {', '.join(f.id for f in plan.to_apply)}",
                                     f"from {self.app.settings.runbook.paths.sql_dir}, each file in one transaction:",
                                     body, "Apply it?  y = yes   n = no"), answered)

    def _stage_a_applied(self, applied: list[str]) -> None:
        self.app.changed(f"Applied {', '.join(applied)}.", "Stage A")

    def close_window(self) -> None:
        runbook = self.app.settings.runbook
        body = Text(f"After this the console no longer offers a rollback as routine: Stage F (archive) opens "
                    f"once the last {runbook.gates.passing_verifies_before_archive} verifies in E' passed. "
                    "It changes no flag.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.run_engine(transitions.close_rollback_window, self._window_closed, group="change",
                                    refresh=True)
        self.app.push_screen(Confirm("Close the rollback window", "recorded in the journal:", body,
                                     "Close it?  y = yes   n = no"), answered)

    def _window_closed(self, entry: JournalEntry) -> None:
        self.app.changed(f"Journal entry {entry.id}.", "Rollback window closed")

    def archive(self) -> None:
        self.app.run_engine(plan_archive, self._ask_archive, group="change")

    def _ask_archive(self, plan: ArchivePlan) -> None:
        def typed(name: str | None) -> None:
            if name is None:
                self.app.notify("Nothing was archived.", timeout=4)
                return
            self.app.run_engine(partial(run_archive, plan=plan, confirm=name), partial(self._archived, plan),
                                group="change", refresh=True)
        self.app.push_screen(ArchiveConfirm(plan), typed)

    def _archived(self, plan: ArchivePlan, entry: JournalEntry) -> None:
        self.app.changed(f"Archived the legacy tables of {plan.database}; journal entry {entry.id}.", "Stage F done")
