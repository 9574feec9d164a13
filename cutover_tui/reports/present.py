"""How a report reads, for both faces: the CLI's lines and the console's rows come from here,
from the models' typed fields (a field the console writes and reads is never a string key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .models import (
    BackfillIssue,
    BackfillReport,
    ReadsReport,
    ReconReport,
    Report,
    VerifyCheck,
    VerifyReport,
    report_kind,
)
from .store import FILE_PREFIX

# What a stage's rule set aside, as a line says it (verify's SET_ASIDE).
_ASIDE_WORDS = {"newInV2": "new in v2", "changedInV2": "changed in v2", "removedInV2": "removed in v2",
                "timestampsSinceBackfill": "written since the backfill, with each store's own timestamps",
                "legacyAuditSinceBackfill": "legacy's own audit events since the backfill",
                "v2AuditSinceBackfill": "v2's own audit events since the backfill"}


def check_line(check: VerifyCheck) -> str:
    """`PASS name` / `FAIL name`, as upstream prints a check (name or `count:<table>`); a
    failed count of the console's says how much of the gap the latest backfill reported, and a
    count or content check what the stage's rule set aside."""
    line = f"{'PASS' if check.ok else 'FAIL'} {check.key}"
    if check.type not in ("count", "content"):
        return line
    parts = []
    if not check.ok and check.type == "count" and check.detail("missingRows") is not None:
        parts.append(_count_gap(check))
    if check.type == "count" and (accepted := check.detail("acceptedAsLost")):
        parts.append(f"{accepted:,} rows accepted as lost by an operator")
    aside = [f"{check.detail(key):,} {words}" for key, words in _ASIDE_WORDS.items() if check.detail(key)]
    if aside:
        parts.append(f"set aside by the {check.detail('rule')} rule: {', '.join(aside)}")
    return f"{line} ({'; '.join(parts)})" if parts else line


def _count_gap(check: VerifyCheck) -> str:
    """Expected loss (rows the latest backfill reported as errors, by error) apart from the rest."""
    missing, extra = check.detail("missingRows"), check.detail("extraRows") or 0
    reported: dict[str, int] = check.detail("reportedByBackfill") or {}
    unreported = check.detail("unreportedMissing") or 0
    if not missing:
        return f"{extra:,} more rows in v2 than in legacy"
    parts = [f"{missing:,} rows missing in v2"]
    if missing > unreported:
        errors = ", ".join(f"{text}: {count:,}" for text, count in reported.items())
        parts.append(f"{missing - unreported:,} reported by the latest backfill as errors ({errors})")
    parts.append(f"{unreported:,} not reported by any backfill" if unreported else "none unexplained")
    return "; ".join(parts)


def unchanged_line(report: VerifyReport) -> str | None:
    """What a verify took as an earlier one found it (README: "What an earlier verify found stands")."""
    since = report.unchanged_since
    if not since:
        return None
    rows = sum(check.detail("rowsUnchanged") or 0 for check in report.checks if check.type == "content")
    return (f"{rows:,} v2 rows nothing wrote since the verify of {since} found them matching were read "
            "by key alone (`cutover verify --full` reads every row again).")


def summary_lines(report: Mapping[str, Any] | VerifyReport) -> list[str]:
    """One `check_line` per check of a verify report (or of a verify's body as the engine returns it)."""
    checks = report.checks if isinstance(report, VerifyReport) else map(VerifyCheck.model_validate, report["checks"])
    return [check_line(check) for check in checks]


def outcome_lines(report: Report) -> list[str]:
    """What a backfill, recon or API read check found, as the CLI prints it and the console logs it."""
    if isinstance(report, BackfillReport):
        lines = [f"{'stage':<18} {'old':>10} {'before':>10} {'after':>10} {'affected':>10} {'errors':>8} "
                 f"{'rows/s':>10}"]
        for st in report.stages:
            lines.append(f"{st.stage:<18} {st.old_count:>10,} {st.before_count:>10,} {st.after_count:>10,} "
                         f"{st.affected_rows:>10,} {st.error_rows or 0:>8,} {st.rows_per_second or 0:>10,.0f}")
        lines += [f"RETRIED {st.stage}: {st.retried_transactions} transactions the server rolled back (deadlock "
                  "or serialization failure) were run again" for st in report.stages if st.retried_transactions]
        lines += [f"ERROR   {e.stage}: {e.message} ({e.row_count} rows)" for e in report.errors]
        lines += [f"WARNING {w.stage}: {w.message} ({w.row_count} rows)" for w in report.warnings]
        return lines
    if isinstance(report, ReconReport):
        lines = [f"{'legacy table':<28} {'rows':>12} {'size':>10}"]
        for table, info in report.sizes.items():
            lines.append(f"{table:<28} {info.rows:>12,} {info.total_bytes / 2**20:>8.1f} MB")
        lines.append("What the backfill will report (true counts):")
        for table, issues in report.found.items():
            lines += [f"  {issue.kind.upper():<8} {table}: {text} ({issue.count:,} rows)"
                      for text, issue in issues.items()]
        estimate = report.estimated
        if estimate is not None and estimate.seconds is not None:
            lines.append(f"Estimated backfill time: {estimate.seconds:,.0f} s ({estimate.method})")
        elif estimate is not None:
            lines.append(f"Estimated backfill time: {estimate.method}")
        return lines + [f"MISSING  {name}" for name in report.missing]
    lines = []
    if isinstance(report, ReadsReport):  # upstream's figures first, as its own check prints them
        resolved = {True: "resolved", False: "not resolved", None: "not asked"}[report.pixbook_resolved]
        lines.append(f"account {report.account_id}: {report.user_count} users, {report.book_count} books, "
                     f"pixbook {resolved}")
        lines += [f"SKIP {name}  {why}" for name, why in (report.skipped or {}).items()]
    for check in report.checks:  # a verify-reads report: each call with its latency
        latency = f"  {check.latency_ms:.0f} ms" if check.latency_ms is not None else ""
        lines.append(f"{'PASS' if check.ok else 'FAIL'} {check.key}{latency}")
        if not check.ok and check.error:
            lines.append(f"     {check.error}")
    return lines


# --- the console's rows: one per check, stage, issue or table --------------------------

SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Item:
    """A row of the report: `figures` are its plain values, `details` its nested ones (example rows)."""

    tag: str
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # Shown only below, in full: the row has them in its tag and name already.
    hidden: frozenset[str] = frozenset()


def _item(tag: str, name: str, body: dict[str, Any], hidden: frozenset[str] = frozenset()) -> Item:
    return Item(tag, name, {k: v for k, v in body.items() if isinstance(v, SCALARS)},
                {k: v for k, v in body.items() if not isinstance(v, SCALARS)}, hidden)


def _dump(model: BaseModel) -> dict[str, Any]:
    body = model.model_dump(mode="json", by_alias=True)
    # A stored body comes back from jsonb with its keys reordered: the model's own fields lead.
    known = [field.alias or name for name, field in type(model).model_fields.items()]
    return {**{key: body[key] for key in known if key in body}, **body}


def _verify_items(report: VerifyReport) -> list[Item]:
    hidden = frozenset({"ok", "name", "table", "type"})
    checks = report.checks
    skipped: list[Item] = []
    if isinstance(report, ReadsReport):  # upstream's figures, all an upstream read check's output has
        checks = [report.summary_check(), *checks]
        skipped = [Item("SKIP", name, {"reason": why}) for name, why in (report.skipped or {}).items()]
    return [*(_item("PASS" if check.ok else "FAIL", check.key, _dump(check), hidden) for check in checks),
            *skipped]


def _issue(tag: str, issue: BackfillIssue, text: str) -> Item:
    body = _dump(issue)
    # `rows` holds the example rows (capped); the figure is the true count.
    examples = body.pop("rows")
    return _item(tag, f"{issue.stage}: {text}", {"rows": issue.row_count, **body, "examples": examples},
                 frozenset({"stage", "error", "warning"}))


def _backfill_items(report: BackfillReport) -> list[Item]:
    return [*(_item("stage", stage.stage, _dump(stage), frozenset({"stage"})) for stage in report.stages),
            *(_issue("ERROR", error, error.error) for error in report.errors),
            *(_issue("WARN", warning, warning.warning) for warning in report.warnings)]


def _dict(value: Any) -> dict[str, Any]:
    # A hand-made file's console fields may be anything: shown where they are dicts, else left out.
    plain = _dump(value) if isinstance(value, BaseModel) else value
    return plain if isinstance(plain, dict) else {}


def _recon_items(report: ReconReport) -> list[Item]:
    sizes, indexes = _dict(report.tables), _dict(report.indexes)
    v2_names = set(report.mapping.values())
    items = []
    for name in dict.fromkeys([*report.target_tables, *report.schemas, *sizes]):
        body: dict[str, Any] = {"v2": report.mapping[name]} if name in report.mapping else {}
        body |= _dict(sizes.get(name))
        body |= {"columns": [_dump(c) for c in report.schemas.get(name, [])],
                 "constraints": [_dump(c) for c in report.constraints.get(name, [])],
                 "indexes": indexes.get(name, [])}
        items.append(_item("v2 table" if name in v2_names else "table", name, body))
    for table, issues in _dict(report.anomalies).items():
        for text, issue in _dict(issues).items():
            found = _dict(issue)
            tag = {"error": "ERROR", "warning": "WARN"}.get(str(found.get("kind")), "anomaly")
            body = {"count": found.get("count"), "examples": found.get("rows", []),
                    **{k: v for k, v in found.items() if k not in ("kind", "count", "rows")}}
            items.append(_item(tag, f"{table}: {text}", body))
    problems = report.problems
    for problem in problems if isinstance(problems, list) else []:
        if isinstance(problem, dict):
            items.append(_item("PROBLEM", str(problem.get("table", "?")), problem, frozenset({"table"})))
    if _dict(report.estimate):
        items.append(_item("estimate", "backfill duration", _dict(report.estimate)))
    return items


def items(report: Report) -> list[Item]:
    if isinstance(report, VerifyReport):
        return _verify_items(report)
    if isinstance(report, BackfillReport):
        return _backfill_items(report)
    return _recon_items(report)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(report: Report) -> str:
    """The report in one line: what passed, failed or is missing."""
    if isinstance(report, ReadsReport) and not report.checks:
        return f"upstream's read check said {'ok' if report.ok else 'not ok'}; it compares nothing"
    if isinstance(report, VerifyReport):
        failed, total = sum(not check.ok for check in report.checks), len(report.checks)
        return f"{failed} of {total} checks failed" if failed else f"all {total} checks passed"
    if isinstance(report, BackfillReport):
        rows = sum(error.row_count for error in report.errors)
        return (f"{_count(len(report.stages), 'stage')}, {_count(len(report.errors), 'error group')} "
                f"({_count(rows, 'row')}), {_count(len(report.warnings), 'warning group')}")
    missing = report.missing_tables or []
    missing = missing if isinstance(missing, list) else [missing]
    return (f"auth user id {report.auth_user_id_type}, {len(report.discovered_better_auth_tables)} auth tables, "
            f"missing tables: {', '.join(map(str, missing)) or 'none'}")


def file_kind(report: Report, path: str) -> str:
    """A file's kind: its name tells verify-reads from verify (the shapes are the same)."""
    if Path(path).name.startswith(FILE_PREFIX["verify-reads"]):
        return "verify-reads"
    return report_kind(report)
