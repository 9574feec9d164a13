"""Widgets that each render one slice of the dashboard's `Status`, set on them by the screen."""

from __future__ import annotations

from datetime import UTC

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ...files.envfile import DUAL_WRITE, READS, WRITES
from ...ops.overview import Status
from ...rules.flags import Flags
from ..step_keys import KEY_OF_STEP
from ..text import field, literal

_FLAG_ATTR = {READS: "reads", WRITES: "writes", DUAL_WRITE: "dual_write"}


def _word(value: bool) -> str:
    return "true" if value else "false"


class StatusView(Widget):
    """Renders nothing until the screen sets `status`."""

    status: reactive[Status | None] = reactive(None, layout=True, always_update=True)

    def render(self) -> RenderableType:
        return Text("…") if self.status is None else self.render_status(self.status)

    def render_status(self, status: Status) -> RenderableType:
        raise NotImplementedError


class StageLine(StatusView):
    """A 0 B G C D E E' F with the current stage highlighted."""

    def render_status(self, status: Status) -> RenderableType:
        line = Text("stage  ")
        for stage in status.stage_order:
            current = stage == status.stage
            line.append(f" {stage} ", style="bold reverse green" if current else "dim")
            line.append(" ")
        if status.stage is None:
            line.append("  not started: Stage A is not applied", style="yellow")
        if status.assessment.rollback_open:
            line.append("  ROLLBACK OPEN: no archive, promote through the gates again", style="bold red")
        return line


class FlagsPanel(StatusView):
    """The flags as declared in the env file, as the running API was last found with them
    (deployed), and as the matrix expects them."""

    def render_status(self, status: Status) -> RenderableType:
        a = status.assessment
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("flag")
        table.add_column("declared")
        table.add_column("reads as")
        table.add_column("deployed")
        table.add_column("expected")
        deployed = status.deployed.flags if status.deployed is not None else None
        for name, value in status.declared.items():
            attr = _FLAG_ATTR.get(name)
            expected = _word(getattr(a.expected_flags, attr)) if attr else "-"
            differs = attr is not None and getattr(a.expected_flags, attr) != value.value
            style = "red" if (not a.flags_legal and attr) or differs else ""
            raw = literal("(not set)", "dim") if value.raw is None else literal(value.raw)
            if value.odd:
                raw.stylize("bold red")
            table.add_row(literal(name.removeprefix("ACCOUNT_")), raw,
                          Text(_word(value.value), style=style), _deployed_cell(deployed, attr, value.value),
                          Text(expected))
        notes: list[RenderableType] = [table]
        line = Text.assemble(("deployed: ", "bold"), status.deployment)
        if status.deploy_pending:
            line.stylize("bold yellow")
            line.append("  press p", style="bold")
        elif status.deployed is not None and not status.deployed.read_back:
            line.stylize("yellow")  # unverified: nobody read back what runs
        notes.append(line)
        for value in status.declared.values():
            if value.odd:
                note = literal(f"{value.name}={value.raw} is not a boolean the API knows; it reads as false.",
                               "yellow")
                notes.append(note)
        if not a.flags_legal and a.nearest_legal is not None:
            notes.append(Text.assemble(("ILLEGAL flag combination. ", "bold red"),
                                       ("Nearest legal row: ", "red"), (a.nearest_legal.short(), "bold"),
                                       ("  press R to restore it.", "red")))
        elif a.expected_flags != a.flags:
            notes.append(Text.assemble(("The env file differs from what the console last wrote (",
                                        "yellow"), (a.expected_flags.short(), "bold"),
                                       (")  press R to restore it.", "yellow")))
        return Group(*notes)


def _deployed_cell(deployed: Flags | None, attr: str | None, declared: bool) -> Text:
    """A flag as the API was last found running it; red where it is not the declared value."""
    if attr is None or deployed is None:
        return Text("?" if attr else "-", style="dim")
    value = getattr(deployed, attr)
    return Text(_word(value), style="" if value == declared else "bold red")


class FactsPanel(StatusView):
    """The last backfill and verify, the rollback window and who holds the operator lock."""

    def render_status(self, status: Status) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        for label, report in (("backfill", status.last_backfill), ("verify", status.last_verify)):
            if report is None:
                table.add_row(label, Text("none yet", style="dim"))
            else:
                table.add_row(label, Text.assemble(
                    f"{report.generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ",
                    ("ok", "green") if report.ok else ("FAILED", "bold red"),
                    *((f"  (in {report.stage})",) if report.stage else ())))
        if status.predicted_errors:
            total = sum(status.predicted_errors.values())
            table.add_row("recon", Text(f"FAIL: the backfill will leave out {total:,} rows", style="bold red"))
            for name, count in status.predicted_errors.items():
                table.add_row("", literal(f"{count:,}  {name}", "red"))
        for loss in status.accepted_losses:
            table.add_row("lost", literal(f"{loss.rows:,} rows accepted as lost by {loss.operator}: {loss.reason}",
                                          "yellow"))
        holder = status.lock_holder
        table.add_row("lock", field(f"held by {holder.describe()}", "yellow") if holder
                      else Text("free", style="green"))
        if warning := status.clock_warning():
            table.add_row("clock", Text(warning, style="bold red"))
        return table


class StepsPanel(StatusView):
    """Every next step: green when the matrix allows it, red with every reason when not."""

    def render_status(self, status: Status) -> RenderableType:
        lines: list[RenderableType] = []
        # What needs doing first: restoring illegal or hand-edited flags comes before the rest.
        # ... and a pending deploy before everything it gates.
        first = ("restore-flags", "deploy") if status.deploy_pending else ("restore-flags",)
        steps = sorted(status.assessment.steps, key=lambda s: s.action not in first)
        for step in steps:
            key = KEY_OF_STEP.get((step.action, step.target))
            line = Text()
            line.append("✔ " if step.allowed else "✘ ", style="bold green" if step.allowed else "bold red")
            line.append(step.label, style="green" if step.allowed else "red")
            if key:
                line.append(f"  [{key}]", style="bold")
            if step.allowed and isinstance(step.flags_after, Flags):
                line.append(f"  -> {step.flags_after.short()}", style="dim")
            lines.append(line)
            lines.extend(Padding(literal(reason, "red"), (0, 0, 0, 4)) for reason in step.reasons)
        return Group(*lines)
