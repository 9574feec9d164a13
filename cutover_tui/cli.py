"""`cutover`: the command line over the engine.

Data goes to stdout, diagnostics to stderr, one sentence each. Exit codes: 0 done,
1 refused by a gate or a failed check, 2 bad input, 3 database unreachable.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

from .display import one_line, visible
from .errors import BadInput, CutoverError
from .ops import deploy, remedies, transitions
from .ops.overview import Status, gather
from .reports.diff import diff_reports, render_diff
from .reports.models import VerifyCheck, VerifyReport, dump_report
from .reports.present import check_line, outcome_lines, summary_lines, unchanged_line
from .reports.store import load_report
from .rules.mapping import BY_NAME
from .rules.matrix import refuse
from .rules.runbook import DEFAULT_RUNBOOK
from .serve import DEFAULT_HOST, DEFAULT_PORT, serve
from .store import journal
from .store.db import redact
from .store.session import Session, Settings, resolve_settings
from .work import jobs
from .work.api_check import API_ENV, COOKIE_ENV
from .work.archive import plan_archive, run_archive
from .work.backfill import BackfillOptions, BackfillProgress, parse_tables
from .work.verify import VerifyOptions

if TYPE_CHECKING:
    from .tui.protocols import TrafficPanel

T = TypeVar("T")


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise BadInput("No terminal to confirm on: pass --yes to go ahead without a prompt.")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise BadInput("Not confirmed; nothing was changed.")


def render_status(status: Status) -> str:
    a = status.assessment
    line = " ".join(f"[{s}]" if s == status.stage else s for s in status.stage_order)
    lines = [
        *([f"rehearsal  {note}"] if (note := status.rehearsal) else []),
        f"database   {status.database}  ({status.database_url})",
        f"env file   {status.env_file}",
        f"stage      {status.stage or 'not started (Stage A not applied)'}    {line}",
        f"flags      {a.flags.short()}  "
        + ("legal" if a.flags_legal else f"ILLEGAL: nearest legal is {a.nearest_legal.short()}"),
    ]
    lines.append(f"deployed   {status.deployment}")
    if status.running is not None:
        lines.append(f"running    {status.running.short()} (read back now"
                     + ("" if status.running == a.flags else ": NOT the declared flags") + ")")
    elif status.running_error:
        lines.append(f"running    unknown: {status.running_error}")
    if a.expected_flags != a.flags:
        lines.append(f"expected   {a.expected_flags.short()} (last written by the console)")
    for value in status.declared.values():
        if value.odd:
            lines.append(f"           {value.name}={value.raw!r} is not a boolean the API knows; it reads as false")
    lines.append(f"rollback   {'OPEN' if a.rollback_open else 'none open'}")
    if warning := status.clock_warning():
        lines.append(f"clock      {warning}")
    holder = status.lock_holder
    lines.append("lock       " + (f"held by {one_line(holder.describe())}" if holder else "free"))
    for label, report in (("backfill", status.last_backfill), ("verify", status.last_verify)):
        summary = (f"{report.generated_at:%Y-%m-%d %H:%M:%S} {'ok' if report.ok else 'FAILED'}"
                   if report else "none yet")
        lines.append(f"{label:<10} {summary}")
    lines.extend(f"lost       {loss.rows:,} rows accepted as lost by {one_line(loss.operator)}: {one_line(loss.reason)}"
                 for loss in status.accepted_losses)
    if status.predicted_errors:
        lines.append(f"recon      FAIL: the backfill will leave out {sum(status.predicted_errors.values()):,} rows")
        lines.extend(f"             {count:>8,}  {name}" for name, count in status.predicted_errors.items())
    lines.append("next steps")
    for step in a.steps:
        mark = "ok " if step.allowed else "no "
        after = f" -> {step.flags_after.short()}" if step.flags_after and step.allowed else ""
        lines.append(f"  {mark} {step.label}{after}")
        lines.extend(f"        {reason}" for reason in step.reasons)
    return "\n".join(lines)


def cmd_status(session: Session, args: argparse.Namespace) -> int:
    status = gather(session, read_back=True)
    if args.json:
        _print_json(status.model_dump(mode="json"))
    else:
        print(render_status(status))
    return 0


def cmd_migrate(session: Session, args: argparse.Namespace) -> int:
    plan = transitions.plan_stage_a(session)
    if not plan.to_apply:
        print(plan.nothing_to_apply())
        return 0
    if args.dry_run:
        step = session.assess().step("migrate")
        if not step.allowed:
            raise refuse(step)
        for file in plan.to_apply:
            print(f"-- {file.id} (sha256 {file.checksum})\n{file.sql}")
        print(f"-- dry run: {len(plan.to_apply)} file(s) would be applied; nothing was changed.")
        return 0
    applied = transitions.apply_stage_a(session, plan)
    print(f"Applied {', '.join(applied)}.")
    return 0


def _flag_change(session: Session, change: transitions.FlagChange, yes: bool) -> int:
    print(change.describe())
    for warning in change.warnings:
        print(f"WARNING: {warning}")
    print(change.diff or "(the env file already declares these flags)")
    _confirm(f"Write {session.settings.env_file}?", yes)
    entry = transitions.apply_change(session, change)
    print(transitions.written_message(entry, str(session.settings.env_file)))
    return _deploy_written(session, yes)


def _deploy_written(session: Session, yes: bool) -> int:
    """A written flag change reaches the API only by a deploy: run it, or have it confirmed."""
    if session.runbook.deploy is not None:
        return cmd_deploy(session, argparse.Namespace(confirm=None))
    stage = session.assess().stage or "A"
    later = f"Deploy it the team's way, then confirm with `cutover deploy --confirm {_stage_arg(stage)}`."
    if yes or not sys.stdin.isatty():
        print(f"The API reads its flags only at start. {later}")
        return 0
    typed = input(f"The API reads its flags only at start: deploy now, then type {stage} once it runs them "
                  "(or press enter to confirm later): ").strip()
    if not typed:
        print(later)
        return 0
    return cmd_deploy(session, argparse.Namespace(confirm=typed))


def _stage_arg(stage: str) -> str:
    return "E-steady" if stage == "E'" else stage


def cmd_deploy(session: Session, args: argparse.Namespace) -> int:
    if args.confirm is not None:
        if session.runbook.deploy is not None:
            raise BadInput("The runbook's [deploy] reads back what the API runs: run `cutover deploy` without "
                           "--confirm.")
        entry = deploy.confirm(session, args.confirm)
        print(f"Deployment confirmed by {session.settings.operator}, not read back; journal entry {entry.id}.")
        return 0
    outcome = deploy.deploy(session, lambda line: print(f"  {line}", flush=True))
    print(f"Deployed: the API runs {outcome.deployed.short()} (read back); journal entry {outcome.entry.id}.")
    return 0


def cmd_promote(session: Session, args: argparse.Namespace) -> int:
    target = transitions.parse_stage(args.stage)
    return _flag_change(session, transitions.plan_promotion(session, target), args.yes)


def cmd_rollback(session: Session, args: argparse.Namespace) -> int:
    return _flag_change(session, transitions.plan_rollback(session, not args.no_dual_write), args.yes)


def cmd_restore_flags(session: Session, args: argparse.Namespace) -> int:
    return _flag_change(session, transitions.plan_restore(session), args.yes)


SHOWN_IDS = 100  # on the terminal; --export writes every one


def cmd_remedy(session: Session, args: argparse.Namespace) -> int:
    if args.remedy_command == "list":
        found = remedies.states(session)
        if args.json:
            _print_json([state.model_dump() for state in found])
            return 0
        for state in found:
            accepted = f", {state.accepted:,} accepted as lost" if state.accepted else ""
            print(f"{state.key:<72} {state.count:>8,} rows{accepted}  remedies: {', '.join(state.choices)}")
        return 0
    if args.remedy_command == "show":
        cls = remedies.anomaly_class(args.anomaly)
        ids = list(remedies.affected_ids_of(session, cls))
        print(f"{cls.key}: {cls.issue} ({cls.table})\nrule: {cls.rule}\nrows now: {len(ids):,}")
        for choice in cls.choices:
            print(f"  --choice {choice.name}: {choice.summary}")
        if args.export:
            remedies.export(ids, cls, args.export)
            print(f"Wrote the {len(ids):,} ids to {args.export}.")
        else:
            print("\n".join(ids[:SHOWN_IDS]) + (f"\n… {len(ids) - SHOWN_IDS:,} more: --export PATH writes them all"
                                                if len(ids) > SHOWN_IDS else ""))
        return 0
    if args.remedy_command == "apply":
        plan = remedies.plan(session, args.anomaly, args.choice)
        print(f"{plan.key} --choice {plan.choice}: {plan.summary}")
        print(f"{len(plan.ids):,} rows of the class; it changes, in legacy: "
              + ", ".join(f"{count:,} in {table}" for table, count in plan.counts.items()))
        print("\n".join(f"  {statement};" for statement in plan.sql))
        _confirm("Apply it to legacy (every touched row kept for `cutover remedy undo`)?", args.yes)
        entry = remedies.apply(session, plan)
        print(f"Remedy {entry.detail['remedy']} applied; journal entry {entry.id}. Run the backfill again.")
        return 0
    entry = remedies.undo(session, args.remedy_id)
    print(f"Remedy {args.remedy_id} undone: {entry.detail['rows']:,} rows of legacy as they were; journal entry "
          f"{entry.id}.")
    return 0


def cmd_accept_loss(session: Session, args: argparse.Namespace) -> int:
    ids = remedies.read_ids(args.ids) if args.ids else None
    cls = remedies.anomaly_class(args.anomaly)
    _confirm(f"Accept the loss of {'every row' if ids is None else f'{len(ids):,} rows'} of {cls.key}?", args.yes)
    entry = remedies.accept_loss(session, cls.key, args.reason, ids)
    print(f"{entry.detail['rows']:,} rows of {cls.key} accepted as lost by {entry.operator}; journal entry "
          f"{entry.id}.")
    return 0


def cmd_close_rollback_window(session: Session, args: argparse.Namespace) -> int:
    entry = transitions.close_rollback_window(session)
    print(f"Rollback window closed; journal entry {entry.id}.")
    return 0


def cmd_archive(session: Session, args: argparse.Namespace) -> int:
    plan = plan_archive(session)
    print(f"-- {plan.path}\n{plan.sql}")
    entry = run_archive(session, plan, args.confirm)
    print(f"Archived the legacy tables of {plan.database}; journal entry {entry.id}.")
    return 0


def cmd_journal(session: Session, args: argparse.Namespace) -> int:
    rows = journal.entries(session.conn)
    if args.json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return 0
    for row in rows:
        flags = (f"  {row.flags_before.short()} -> {row.flags_after.short()}"
                 if row.flags_before and row.flags_after and row.flags_before != row.flags_after else "")
        extra = f"  report {row.report_id}" if row.report_id else ""
        print(f"{row.id:>5}  {row.at:%Y-%m-%d %H:%M:%S}  {one_line(row.operator):<12} {one_line(row.action)}"
              f"{flags}{one_line(extra)}  ({one_line(row.who())}{'; ' + one_line(row.gates()) if row.runbook else ''})")
    if not rows:
        print("The journal is empty.")
    return 0


class _ProgressLine:
    """One self-rewriting line on stderr with rows/s and ETA; silent when not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, p: BackfillProgress) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and p.done < p.total):
            return
        self._last = now
        # `done` counts a resumed run's checkpoint too (the whole table's share) and the rate only
        # this run's rows: the time left is the rows left at this run's pace, unknown before its first batch.
        share = min(p.done / p.total, 1.0) if p.total else 1.0
        left = max(p.total - p.done, 0)
        eta = f"{left / p.rows_per_second:5.0f}s" if p.rows_per_second else "    …" if left else "    0s"
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r\x1b[2K pass {p.pass_no} {p.table:<18} [{bar:<30}] {share:4.0%} "
                         f"{p.done:>10,}/{p.total:,} {p.rows_per_second:>9,.0f} rows/s ETA {eta}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _cancellable(work: Callable[[threading.Event], T]) -> T:
    """Run `work` in a thread so Ctrl-C becomes a clean cancel with a valid checkpoint."""
    cancel = threading.Event()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = work(cancel)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="cutover-job")
    thread.start()
    while thread.is_alive():
        try:
            thread.join(0.2)
        except KeyboardInterrupt:
            print("\ncutover: cancelling at the next batch boundary...", file=sys.stderr)
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _print_report(stored, report, as_json: bool, lines: list[str]) -> int:
    if as_json:
        print(dump_report(report), end="")
    else:
        print("\n".join(lines))
        print(f"Report {stored.id} written to {stored.path}.")
    return 0 if stored.ok else 1


def cmd_backfill(session: Session, args: argparse.Namespace) -> int:
    tables = parse_tables(args.tables) if args.tables else BackfillOptions().tables
    if args.batch_size is not None and args.batch_size <= 0:
        raise BadInput(f"--batch-size must be a positive number of rows (got {args.batch_size}).")
    options = BackfillOptions(tables=tables, full_compare=args.full_compare,
                              **({"batch_size": args.batch_size} if args.batch_size else {}))
    progress = _ProgressLine(sys.stderr.isatty() and not args.json)
    try:
        stored, report = _cancellable(lambda cancel: jobs.backfill(session, options, progress=progress, cancel=cancel,
                                                                 report_path=args.report))
    finally:
        progress.close()
    lines = outcome_lines(report)
    return _print_report(stored, report, args.json, lines)


def cmd_verify(session: Session, args: argparse.Namespace) -> int:
    if args.sample_size <= 0:
        raise BadInput(f"--sample-size must be a positive number of accounts (got {args.sample_size}).")
    options = VerifyOptions(sample_size=args.sample_size, reconcile=args.reconcile, repair=args.repair, full=args.full)
    live = sys.stdout.isatty() and not args.json

    def show(check: dict) -> None:
        if live:
            print(check_line(VerifyCheck.model_validate(check)), flush=True)

    stored, report = _cancellable(lambda cancel: jobs.verify(session, options, cancel=cancel, on_check=show,
                                                             report_path=args.report))
    lines = [] if live else summary_lines(report)
    for check in report.checks:
        if not check.ok and check.examples:
            lines.append(f"  {check.key}: {json.dumps(check.examples, default=str)[:300]}")
    if isinstance(report, VerifyReport) and (line := unchanged_line(report)):
        lines.append(line)
    return _print_report(stored, report, args.json, lines)


def cmd_verify_reads(session: Session, args: argparse.Namespace) -> int:
    target = jobs.api_target(session, api=args.api, cookie=args.cookie, profile_id=args.profile_id,
                             identity_public_key=args.identity_public_key, collection_id=args.collection_id)
    stored, report = jobs.verify_reads(session, target, report_path=args.report)
    return _print_report(stored, report, args.json, outcome_lines(report))


def cmd_recon(session: Session, args: argparse.Namespace) -> int:
    stored, report = jobs.recon(session, sample_rows=args.sample_rows, report_path=args.out)
    lines = outcome_lines(report)
    return _print_report(stored, report, args.json, lines)


def cmd_diff(session: Session | None, args: argparse.Namespace) -> int:
    diff = diff_reports(load_report(args.before), load_report(args.after))
    if args.json:
        _print_json(diff.model_dump(mode="json"))
    else:
        print(render_diff(diff))
    return 1 if diff.worse else 0


def _on_a_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_console(settings: Settings, notice: str | None = None, api_target: jobs.ApiTarget | None = None,
                traffic: TrafficPanel | None = None) -> int:
    from .tui.app import run_tui

    return run_tui(settings, notice, api_target, traffic)


class _Parser(argparse.ArgumentParser):
    """Argument errors in one sentence, like every other diagnostic (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cutover", description=__doc__.splitlines()[0])
    parser.add_argument("--runbook", type=Path, default=DEFAULT_RUNBOOK, help="runbook file (default ./runbook.toml)")
    parser.add_argument("--env-file", type=Path, help="deploy env file (overrides the runbook file)")
    parser.add_argument("--database-url", help="target database (else DATABASE_URL, else the runbook file)")
    parser.add_argument("--operator", help="who is acting, for the journal (default $USER)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    from .demo.cli import add_demo_parser  # its options only: the demo itself loads when it runs

    tui = sub.add_parser("tui", help="Open the console (the default with no command).",
                         description="Open the console on the configured database and env file.")
    # What `cutover serve` runs for each browser: no terminal needed, every step refused, no lock taken.
    tui.add_argument("--observer", action="store_true", help=argparse.SUPPRESS)
    tui.add_argument("--notice", help=argparse.SUPPRESS)
    command("status", cmd_status, "Where the cutover stands and what may happen next.").add_argument(
        "--json", action="store_true")
    command("migrate", cmd_migrate, "Stage A: apply 0005_accounts_v2_schema.sql.").add_argument(
        "--dry-run", action="store_true", help="print the SQL and change nothing")
    p = command("promote", cmd_promote, "Move the flags to stage C, D, E or E-steady.")
    p.add_argument("stage", help="C, D, E or E-steady")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = command("rollback", cmd_rollback, "Take the runbook's rollback path for the declared flags.")
    dual = p.add_mutually_exclusive_group()
    dual.add_argument("--keep-dual-write", action="store_true", help="keep dual-write (the default)")
    dual.add_argument("--no-dual-write", action="store_true", help="set DUAL_WRITE=false")
    p.add_argument("--yes", action="store_true")
    command("restore-flags", cmd_restore_flags,
            "Put illegal or hand-edited flags back to a legal row.").add_argument("--yes", action="store_true")
    p = command("deploy", cmd_deploy, "Run the runbook's deploy (apply, then read back what the API runs).")
    p.add_argument("--confirm", metavar="STAGE",
                   help="without a [deploy] section: the declared stage's name, typed to confirm the API runs it")
    remedy = command("remedy", cmd_remedy, "The backfill's anomalies: their rules, rows and remedies on legacy.")
    remedy_sub = remedy.add_subparsers(dest="remedy_command", metavar="ACTION", required=True)
    remedy_sub.add_parser("list", help="every error class with its rows now").add_argument(
        "--json", action="store_true")
    p = remedy_sub.add_parser("show", help="one class: its rule, remedies and every affected id")
    p.add_argument("anomaly", metavar="CLASS")
    p.add_argument("--export", type=Path, metavar="PATH", help="write every id (.csv or .json)")
    p = remedy_sub.add_parser("apply", help="run one remedy on legacy, after showing what it changes")
    p.add_argument("anomaly", metavar="CLASS")
    p.add_argument("--choice", required=True)
    p.add_argument("--yes", action="store_true")
    remedy_sub.add_parser("undo", help="put back every row a remedy touched").add_argument(
        "remedy_id", type=int, metavar="N")
    p = command("accept-loss", cmd_accept_loss, "Accept the loss of an error class's rows, with a reason.")
    p.add_argument("anomaly", metavar="CLASS")
    p.add_argument("--ids", type=Path, metavar="FILE", help="only these ids (one per line, or a JSON list)")
    p.add_argument("--reason", required=True)
    p.add_argument("--yes", action="store_true")
    command("close-rollback-window", cmd_close_rollback_window, "Close the rollback window (E' only).")
    command("archive", cmd_archive, "Stage F: archive the legacy tables.").add_argument(
        "--confirm", required=True, metavar="DBNAME", help="the database name, typed to confirm")
    command("journal", cmd_journal, "Every action the console took.").add_argument("--json", action="store_true")
    p = command("backfill", cmd_backfill, "Stage B: copy legacy rows into v2 by the backfill rules.")
    p.add_argument("--report", type=Path, help="report file (default: the runbook's report folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--batch-size", type=int, help="rows in the first batch (it adapts toward 0.4 s)")
    p.add_argument("--tables", help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    p.add_argument("--full-compare", action="store_true",
                   help="compare every range by hash even when nothing changed since the last run")
    p = command("verify", cmd_verify, "Stage G: prove v2 matches legacy under the backfill rules.")
    p.add_argument("--report", type=Path, help="report file (default: the runbook's report folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--sample-size", type=int, default=50, help="accounts compared in the sample checks")
    p.add_argument("--reconcile", action=argparse.BooleanOptionalAction, default=True,
                   help="the deleted-row reconciliation checks (default on)")
    p.add_argument("--repair", action="store_true",
                   help="re-copy the rows the content check finds missing or different, then check again")
    p.add_argument("--full", action="store_true",
                   help="read every row again, trusting no earlier verify (by default a row nothing wrote "
                        "since the last verify found it matching is read by key alone)")
    p = command("verify-reads", cmd_verify_reads,
                "Check the account API's answers against the read store the flags declare.")
    p.add_argument("--api", help=f"API base (else ${API_ENV}, else the runbook file)")
    p.add_argument("--cookie", help=f"session cookie (else ${COOKIE_ENV}); never written anywhere; "
                   "write --cookie=VALUE when it starts with -")
    p.add_argument("--profile-id")
    p.add_argument("--identity-public-key")
    p.add_argument("--collection-id", default="primary")
    p.add_argument("--report", type=Path, help="report file (default: the runbook's report folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = command("recon", cmd_recon, "Stage 0: describe the legacy schema and what the backfill will meet.")
    p.add_argument("--out", type=Path, help="report file (default: the runbook's report folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--sample-rows", type=int, default=2000,
                   help="rows per table read and timed for the estimate (nothing is written); 0 skips it")
    p = sub.add_parser("serve", help="Serve the console read-only to browsers, for those who watch.",
                       description="Serve the console read-only to browsers (textual-serve): each browser gets "
                       "its own console on the same database, which refuses every step and never takes the "
                       "operator lock. The page has no authentication of its own.")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}); another needs an SSH tunnel or an "
                   "authenticated proxy in front")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--read-only", action="store_true",
                   help="the only mode, stated: a served console never writes; act from a terminal console")
    p.add_argument("--notice", help=argparse.SUPPRESS)  # the demo's line under the target, for each browser
    p = command("diff", cmd_diff, "Compare two reports (either producer), check by check.")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(offline=True)
    add_demo_parser(sub)
    return parser


class _Literal(io.TextIOBase):
    """stdout on a terminal: text from the database or a report may hold escape sequences;
    they are written as visible escapes, never obeyed. (To a pipe it goes byte for byte.)"""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(visible(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True


@contextmanager
def _shown_literally() -> Iterator[None]:
    if not sys.stdout.isatty():
        yield
        return
    real = sys.stdout
    sys.stdout = _Literal(real)
    try:
        yield
    finally:
        sys.stdout = real


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 2 if exit_.code not in (0, None) else 0
    url_hint = args.database_url
    try:
        if args.command == "demo":
            from .demo.cli import cmd_demo

            return cmd_demo(args)
        if getattr(args, "offline", False):
            with _shown_literally():
                return args.run(None, args)
        observer = getattr(args, "observer", False)
        if args.command in (None, "tui") and not observer and not _on_a_terminal():
            raise BadInput("The console needs a terminal; use `cutover status` and the other commands in scripts.")
        if args.command in (None, "tui", "serve"):
            settings = resolve_settings(runbook_path=args.runbook, env_file=args.env_file,
                                        database_url=args.database_url, operator=args.operator)
            url_hint = settings.database_url
            if args.command == "serve":
                return serve(settings, args.runbook, host=args.host, port=args.port, notice=args.notice)
            if observer:
                return run_console(settings.watching_only(), args.notice)
            return run_console(settings)
        settings = resolve_settings(runbook_path=args.runbook, env_file=args.env_file,
                                              database_url=args.database_url, operator=args.operator)
        url_hint = settings.database_url
        with Session(settings) as session, _shown_literally(), session.translated():
            return args.run(session, args)
    except CutoverError as exc:
        print(f"cutover: {visible(redact(exc.message, url_hint))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cutover: interrupted; nothing more was done.", file=sys.stderr)
        return 130
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(f"cutover: unexpected {type(exc).__name__}: {visible(redact(first_line, url_hint))}; "
              "please report this.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
