"""Every step an operator can take, once: its matrix step, its title, what it does, what it writes.

The CLI, the dashboard's keys, the command palette and the job screen all read their
names and summaries from here, so a step is renamed or reworded in one place.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .matrix import Action
from .runbook import StageId

JobKind = Literal["recon", "backfill", "verify", "repair", "verify-reads"]
StepKind = Literal["job", "change", "dialog"]  # a long job; a flag change; a confirmed one-off


class StepInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the id the faces use: a job kind, "promote C", "migrate", ...
    kind: StepKind
    action: Action | None  # the matrix step that allows it; None: the matrix never refuses it
    target: StageId | None = None
    title: str
    summary: str
    writes: str | None = None  # None: it only reads


_PROMOTE = "Writes the deploy env file's flags for stage {0}, after showing the diff; journaled."

STEPS: tuple[StepInfo, ...] = (
    StepInfo(name="migrate", kind="dialog", action="migrate", title="Stage A: migrate",
             summary="Applies 0005_accounts_v2_schema.sql the way the API's own migrator does.",
             writes="Creates the v2 tables; legacy is never written."),
    StepInfo(name="recon", kind="job", action="recon", title="Recon (stage 0)",
             summary="Reads every legacy table: columns, constraints, row counts, the anomalies the backfill "
                     "will report, and an estimate of its time from a rolled-back sample."),
    StepInfo(name="backfill", kind="job", action="backfill", title="Backfill (stage B)",
             summary="Copies legacy rows into the v2 tables by primary-key ranges, each range committed with "
                     "its checkpoint, two workers; rows already equal are left untouched, a cancelled run resumes.",
             writes="Inserts and updates v2 rows only; legacy is never written."),
    StepInfo(name="verify", kind="job", action="verify", title="Verify (stage G)",
             summary="Compares v2 with legacy table by table (counts and every rule-owned column), then "
                     "integrity, duplicates and samples."),
    StepInfo(name="repair", kind="job", action="repair", title="Verify and repair",
             summary="Runs verify, re-copies exactly the rows it finds missing or different, and checks them again.",
             writes="Inserts and updates the v2 rows verify finds wrong; legacy is never written."),
    StepInfo(name="verify-reads", kind="job", action="verify-reads", title="API read check (stage C)",
             summary="Asks the account API for the session, users, identities and books, and compares "
                     "its answers with the read store the flags declare."),
    *(StepInfo(name=f"promote {stage}", kind="change", action="promote", target=stage, title=f"Promote to {stage}",
               summary=_PROMOTE.format(stage), writes="The deploy env file.")
      for stage in ("C", "D", "E", "E'")),
    StepInfo(name="rollback", kind="change", action="rollback", title="Roll back",
             summary="Takes the runbook's rollback path for the declared flags.", writes="The deploy env file."),
    StepInfo(name="restore-flags", kind="change", action="restore-flags", title="Restore the flags",
             summary="Puts illegal or hand-edited flags back to a legal row.", writes="The deploy env file."),
    StepInfo(name="deploy", kind="dialog", action="deploy", title="Deploy",
             summary="Runs the runbook's deploy commands (apply, then read back what the API runs); without "
                     "them, asks you to confirm the deployment by typing the stage's name.",
             writes="The running API's flags, by the team's deploy; the journal."),
    StepInfo(name="close-rollback-window", kind="dialog", action="close-rollback-window",
             title="Close the rollback window",
             summary="After this the console no longer offers a rollback as routine. It changes no flag.",
             writes="The journal."),
    StepInfo(name="archive", kind="dialog", action="archive", title="Stage F: archive",
             summary="Runs the team's reviewed archive SQL, after the typed database name.",
             writes="Moves the legacy tables out of the API's schema."),
)
BY_NAME: dict[str, StepInfo] = {step.name: step for step in STEPS}


def job(kind: JobKind) -> StepInfo:
    return BY_NAME[kind]
