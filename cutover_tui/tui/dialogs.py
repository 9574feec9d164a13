"""The one-off steps the dashboard asks about in a dialog first: Stage A (the SQL shown),
closing the rollback window, the archive (the database name typed) and the deploy (its
commands' output shown, or the stage's name typed). Each plans in a worker, asks, then
applies in a worker; the app says what happened."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from rich.text import Text

from ..errors import CutoverError
from ..ops import deploy, transitions
from ..ops.deploy import DeployOutcome
from ..rules.matrix import Assessment, refuse
from ..store.journal import JournalEntry
from ..work.archive import ArchivePlan, plan_archive, run_archive
from ..work.migrate import MigrationPlan
from .screens.archive import ArchiveConfirm
from .screens.confirm import Confirm
from .screens.deploy import ConfirmDeploy, DeployRun
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

    def deploy(self, assessment: Assessment) -> None:
        step = assessment.step("deploy")
        if not step.allowed:
            error = refuse(step)
            self.app.notify(error.message, title=error.title, severity="error", timeout=10, markup=False)
            return
        commands = self.app.settings.runbook.deploy
        flags = assessment.flags.short()
        if commands is None:
            self._ask_confirmation(assessment.stage or "A", flags)
            return
        screen = DeployRun(flags, commands.apply, commands.read_back)
        self.app.push_screen(screen)

        def output(line: str) -> None:
            self.app.call_from_thread(screen.add_line, line)

        def failed(error: CutoverError) -> None:
            screen.fail(error.message)

        self.app.run_engine(partial(deploy.deploy, output=output), partial(self._deployed, screen), failed=failed,
                            group="deploy", refresh=True, own_session=True)

    def _deployed(self, screen: DeployRun, outcome: DeployOutcome) -> None:
        text = f"Deployed: the API runs {outcome.deployed.short()} (read back); journal entry {outcome.entry.id}."
        screen.finish(text)
        self.app.changed(text, "Deploy")

    def _ask_confirmation(self, stage: str, flags: str) -> None:
        def typed(name: str | None) -> None:
            if name is None:
                self.app.notify(f"Not confirmed: press p once the API runs {flags}.", timeout=6)
                return
            self.app.run_engine(partial(deploy.confirm, typed=name), self._confirmed, group="change", refresh=True)
        self.app.push_screen(ConfirmDeploy(stage, flags), typed)

    def _confirmed(self, entry: JournalEntry) -> None:
        self.app.changed(f"Confirmed by {entry.operator}, not read back; journal entry {entry.id}.",
                         "Deployment confirmed")

    def _archived(self, plan: ArchivePlan, entry: JournalEntry) -> None:
        self.app.changed(f"Archived the legacy tables of {plan.database}; journal entry {entry.id}.", "Stage F done")
