"""The dashboard's key for each step, and how the palette offers it: the one table the
dashboard's bindings, the key shown beside each next step, and the palette come from.
Each step's title and summary live in `rules.steps`."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from ..rules import steps
from ..rules.steps import StepInfo

PROMOTE = Binding.Group("Promote C/D/E/E'", compact=True)
RUN = Binding.Group("Recon/backfill/verify/repair/API check", compact=True)
_ASKS = "Shows the env diff and asks before writing"
_JOB = "Shows what it will do; enter starts it"


@dataclass(frozen=True)
class StepKey:
    key: str
    step: str  # its name in rules.steps
    label: str  # the footer's short label
    action: str  # the dashboard action the key runs
    palette: str  # what the palette says it does
    group: Binding.Group | None = None

    @property
    def info(self) -> StepInfo:
        return steps.BY_NAME[self.step]

    def binding(self) -> Binding:
        return Binding(self.key, self.action, self.label, group=self.group)


STEP_KEYS: tuple[StepKey, ...] = (
    StepKey("c", "promote C", "Promote C", "change('promote', 'C')", _ASKS, PROMOTE),
    StepKey("D", "promote D", "Promote D", "change('promote', 'D')", _ASKS, PROMOTE),
    StepKey("e", "promote E", "Promote E", "change('promote', 'E')", _ASKS, PROMOTE),
    StepKey("s", "promote E'", "Promote E'", "change('promote', \"E'\")", _ASKS, PROMOTE),
    StepKey("m", "migrate", "Migrate (A)", "migrate", "Shows the SQL and asks before applying it"),
    StepKey("n", "recon", "Recon", "job('recon')", _JOB, RUN),
    StepKey("f", "backfill", "Backfill", "job('backfill')", _JOB, RUN),
    StepKey("v", "verify", "Verify", "job('verify')", _JOB, RUN),
    StepKey("V", "repair", "Verify and repair", "job('repair')", _JOB, RUN),
    StepKey("a", "verify-reads", "API read check", "job('verify-reads')", _JOB, RUN),
    StepKey("b", "rollback", "Roll back", "rollback", "The rollback wizard: path, env diff, write, verify"),
    StepKey("R", "restore-flags", "Restore flags", "change('restore')", _ASKS),
    StepKey("w", "close-rollback-window", "Close window", "close_window", "Asks first; journaled"),
    StepKey("A", "archive", "Archive (F)", "archive", "Shows the SQL; type the database name to run it"),
    StepKey("p", "deploy", "Deploy", "deploy", "Runs the runbook's deploy and reads back what the API runs, "
            "or asks you to confirm it"),
)
# The footer's labels below 100 columns (compat/footer.py), so the dashboard's keys fit 80.
SHORT_LABELS: dict[str, str] = {
    PROMOTE.description: "Promote", RUN.description: "Run", "Migrate (A)": "Migrate",
    "Restore flags": "Restore", "Close window": "Close", "Archive (F)": "Archive",
    "Pause/resume": "Pause", "Cancel job": "Cancel", "Open report": "Report",
    "Write the rollback": "Write", "Keep dual-write on/off": "Dual-write", "Run verify": "Verify", "Connection": "Info",
}
# The key beside each next step the matrix lists, by (action, target).
KEY_OF_STEP: dict[tuple[str, str | None], str] = {(k.info.action, k.info.target): k.key
                                                   for k in STEP_KEYS if k.info.action is not None}
