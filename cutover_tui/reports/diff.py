"""What changed between two reports of one kind: check by check, or stage by stage.

Either report may come from the API's scripts or from this console, so a figure only
one producer writes, or a timing that differs on every run, is never a change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, computed_field

from ..errors import BadInput
from .models import (
    BackfillError,
    BackfillReport,
    BackfillStage,
    BackfillWarning,
    ReadsReport,
    Report,
    VerifyCheck,
    VerifyReport,
    report_kind,
)

Section = Literal["check", "stage", "error", "warning"]
Status = Literal["new_failure", "fixed", "still_failing", "changed", "unchanged", "added", "removed",
                 "new", "still_present"]

# Console timings differ on every run and upstream writes none: they are not figures.
_NOT_FIGURES = frozenset({"ok", "durationSeconds", "rowsPerSecond"})
# The summary's order and words (chosen to need no plural).
_WORDS: dict[str, str] = {
    "new_failure": "newly failing", "new": "new", "still_failing": "still failing",
    "still_present": "still present", "fixed": "fixed", "changed": "changed", "added": "added",
    "removed": "removed", "unchanged": "unchanged",
}
_SECTIONS: tuple[Section, ...] = ("check", "stage", "error", "warning")
_MARKS = {"new_failure": "+FAIL", "fixed": "FIXED", "still_failing": "FAIL~", "changed": "~",
          "unchanged": "=", "added": "+", "removed": "-"}
_GROUP_TAGS = {"error": "ERR", "warning": "WARN"}


class DiffEntry(BaseModel):
    """One check, stage, or error/warning group; `changes` maps a figure to (before, after)."""

    section: Section
    key: str
    status: Status
    # Fails (check) or blocks (error group) in the newer report that has it.
    failing: bool = False
    changes: dict[str, tuple[Any, Any]] = {}


class ReportDiff(BaseModel):
    kind: Literal["backfill", "verify", "verify-reads"]
    before: datetime
    after: datetime
    entries: list[DiffEntry]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def worse(self) -> bool:
        """A check fails that did not, or an error group appeared."""
        return any(entry.status == "new_failure" or (entry.section == "error" and entry.status == "new")
                   for entry in self.entries)

    def summary(self) -> str:
        """Counts per section, e.g. `checks: 1 newly failing, 2 fixed, 12 unchanged`."""
        parts = []
        for section in _SECTIONS:
            counts: Counter[str] = Counter(entry.status for entry in self.entries if entry.section == section)
            if counts:
                parts.append(f"{section}s: " + ", ".join(
                    f"{counts[status]} {word}" for status, word in _WORDS.items() if counts[status]))
        return "; ".join(parts) or "nothing to compare"


Item = TypeVar("Item", VerifyCheck, BackfillStage)


def _keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Every key of either side: the newer report's order, then those only the older has."""
    return [*after, *(key for key in before if key not in after)]


def _figures(item: BaseModel) -> dict[str, Any]:
    body = item.model_dump(mode="json", by_alias=True)
    return {name: value for name, value in body.items()
            if name not in _NOT_FIGURES and isinstance(value, (int, float, str))}


def _changes(before: BaseModel, after: BaseModel) -> dict[str, tuple[Any, Any]]:
    old, new = _figures(before), _figures(after)
    # A figure only one producer writes is not a change.
    return {name: (value, new[name]) for name, value in old.items() if name in new and new[name] != value}


def _check_status(old: VerifyCheck | None, new: VerifyCheck | None, changed: bool) -> Status:
    if new is None:
        return "removed"
    if not new.ok:
        if old is None or old.ok:
            return "new_failure"
        return "still_failing" if changed else "unchanged"
    if old is None:
        return "added"
    if not old.ok:
        return "fixed"
    return "changed" if changed else "unchanged"


def _stage_status(old: BackfillStage | None, new: BackfillStage | None, changed: bool) -> Status:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    return "changed" if changed else "unchanged"


def _diff_items(section: Section, before: dict[str, Item], after: dict[str, Item],
                status: Callable[[Item | None, Item | None, bool], Status]) -> list[DiffEntry]:
    entries = []
    for key in _keys(before, after):
        old, new = before.get(key), after.get(key)
        changes = _changes(old, new) if old is not None and new is not None else {}
        latest = new if new is not None else old
        entries.append(DiffEntry(section=section, key=key, status=status(old, new, bool(changes)),
                                 failing=isinstance(latest, VerifyCheck) and not latest.ok,
                                 changes=changes))
    return entries


def _group_rows(issues: Sequence[BackfillError | BackfillWarning]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for issue in issues:
        key = f"{issue.stage}: {issue.message}"
        rows[key] = rows.get(key, 0) + issue.row_count
    return rows


def _diff_issues(section: Literal["error", "warning"], before: Sequence[BackfillError | BackfillWarning],
                 after: Sequence[BackfillError | BackfillWarning]) -> list[DiffEntry]:
    old, new = _group_rows(before), _group_rows(after)
    entries = []
    for key in _keys(old, new):
        rows = (old.get(key, 0), new.get(key, 0))
        status: Status = "new" if key not in old else "fixed" if key not in new else "still_present"
        entries.append(DiffEntry(section=section, key=key, status=status,
                                 failing=section == "error" and key in new,
                                 changes={"rows": rows} if rows[0] != rows[1] else {}))
    return entries


def _checks(report: VerifyReport) -> dict[str, VerifyCheck]:
    # A read check also compares on upstream's figures, all that upstream's own output holds.
    checks = [report.summary_check(), *report.checks] if isinstance(report, ReadsReport) else report.checks
    return {check.key: check for check in checks}


def diff_reports(a: Report, b: Report) -> ReportDiff:
    """What changed from `a` (the older one, the base) to `b` (the newer)."""
    kind_a, kind_b = report_kind(a), report_kind(b)
    if kind_a != kind_b:
        raise BadInput(f"Cannot compare a {kind_a} report with a {kind_b} report; choose two reports "
                       "of the same kind.")
    if isinstance(a, VerifyReport) and isinstance(b, VerifyReport):
        entries = _diff_items("check", _checks(a), _checks(b), _check_status)
    elif isinstance(a, BackfillReport) and isinstance(b, BackfillReport):
        entries = [*_diff_items("stage", {stage.stage: stage for stage in a.stages},
                                {stage.stage: stage for stage in b.stages}, _stage_status),
                   *_diff_issues("error", a.errors, b.errors),
                   *_diff_issues("warning", a.warnings, b.warnings)]
    else:
        raise BadInput("Recon reports describe schemas and hold no checks to compare; open the two "
                       "files side by side instead.")
    return ReportDiff(kind=kind_a, before=a.generated_at, after=b.generated_at, entries=entries)


def diff_check(old: VerifyCheck | None, new: VerifyCheck) -> DiffEntry:
    """One check of a verify still running against the same check of an earlier report."""
    return _diff_items("check", {new.key: old} if old is not None else {}, {new.key: new}, _check_status)[0]


def mark(entry: DiffEntry) -> str:
    """The short tag for an entry: +FAIL, FIXED, ~, = and so on."""
    if entry.section in _GROUP_TAGS:
        tag = _GROUP_TAGS[entry.section]
        return {"new": f"+{tag}", "fixed": "FIXED", "still_present": tag}[entry.status]
    # A failing check that stayed the same, or vanished, still needs the operator's eye.
    flagged = entry.failing and entry.status in ("unchanged", "removed")
    return _MARKS[entry.status] + ("FAIL" if flagged else "")


def render_diff(diff: ReportDiff) -> str:
    """Plain text for the CLI: a heading, one line per entry, the summary."""
    lines = [f"{diff.kind} report {diff.before.isoformat(timespec='seconds')} -> "
             f"{diff.after.isoformat(timespec='seconds')}"]
    for entry in diff.entries:
        label = f"stage {entry.key}" if entry.section == "stage" else entry.key
        details = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in entry.changes.items())
        lines.append(f"{mark(entry):<6} {label}" + (f"  {details}" if details else ""))
    lines.append(diff.summary() + ("; worse than before" if diff.worse else ""))
    return "\n".join(lines) + "\n"


# --- two reports chosen by the operator (the console's report screens) -----------------

@dataclass(frozen=True)
class Side:
    """A report and where it came from: `saved <id>` or `file <path>`; `kind` as stored or named."""

    report: Report
    kind: str
    source: str


def compared(a: Side, b: Side) -> tuple[ReportDiff, Side, Side]:
    """The diff with the older report as before; BadInput when the two cannot be compared."""
    if a.kind != b.kind:
        # verify and verify-reads share a shape, so the engine alone would diff them.
        raise BadInput(f"Cannot compare a {a.kind} report with a {b.kind} report; choose two reports "
                       "of the same kind.")
    before, after = sorted((a, b), key=lambda side: side.report.generated_at)
    return diff_reports(before.report, after.report), before, after
