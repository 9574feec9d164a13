"""Deploy: make the running API take the declared flags, and find out what it runs.

The API reads its environment once, at start (SYSTEM.md §5), so a flag write changes
nothing until the team's deploy runs. The runbook's `[deploy]` names two shell commands,
run from the runbook file's folder with CUTOVER_ENV_FILE set: `apply` (exit 0 = applied)
and `read_back` (prints the running API's environment as KEY=VALUE lines). Without the
section the operator confirms each deployment by typing the stage's name.
Every outcome, failures included, is one journal row `deploy`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from ..errors import BadInput, CutoverError
from ..files.envfile import DEFAULTS, DUAL_WRITE, FLAG_NAMES, READS, WRITES, parse_flag
from ..rules.flags import Flags
from ..rules.matrix import refuse
from ..rules.runbook import Deploy
from ..store import journal
from ..store.db import server_now
from ..store.session import Session

Output = Callable[[str], None]  # one line of a command's output, as it comes

READ_BACK = "read back"
CONFIRMED = journal.CONFIRMED
_KEEP_LINES = 20  # of a failing command's output, in the journal
_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


class CommandRun(BaseModel):
    """One run of a deploy command, as the journal keeps it."""

    command: str
    exit_code: int | None  # None: it did not start, or was stopped at the timeout
    seconds: float
    timed_out: bool = False
    tail: list[str] = []  # its last lines, kept only when it failed

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class DeployOutcome(BaseModel):
    entry: journal.JournalEntry
    deployed: Flags


def run_command(command: str, *, cwd: os.PathLike[str] | str, env_file: os.PathLike[str] | str,
                timeout: float, output: Output) -> tuple[CommandRun, list[str]]:
    """Run `command` with the shell, streaming each output line; at `timeout` its whole process
    group is stopped, so a hanging `kubectl rollout status` never outlives the console's wait.
    Returns the run and its last lines."""
    started = time.monotonic()
    environ = {**os.environ, "CUTOVER_ENV_FILE": str(env_file)}
    try:
        process = subprocess.Popen(command, shell=True, cwd=cwd, env=environ, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:  # the folder is gone, or no shell: nothing ran
        output(f"cannot start: {exc.strerror or exc}")
        return CommandRun(command=command, exit_code=None, seconds=0.0, tail=[str(exc)]), []
    lines: list[str] = []
    # Read in a thread: a process the command leaves behind (a server it started) may hold the
    # pipe open long after the command itself has exited.
    reader = threading.Thread(target=_pump, args=(process, lines, output), daemon=True)
    reader.start()
    timed_out = False
    try:
        try:
            code: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
            _kill_group(process)
            process.wait()
    except BaseException:
        _kill_group(process)  # ctrl+c, or the console is closing: the command stops too
        raise
    finally:
        reader.join(_DRAIN_SECONDS)
        if process.stdout is not None:
            process.stdout.close()
    run = CommandRun(command=command, exit_code=code, seconds=round(time.monotonic() - started, 3),
                     timed_out=timed_out)
    return run.model_copy(update={"tail": [] if run.ok else lines[-_KEEP_LINES:]}), list(lines)


_DRAIN_SECONDS = 2.0


def _pump(process: subprocess.Popen[bytes], lines: list[str], output: Output) -> None:
    assert process.stdout is not None  # stdout=PIPE
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            del lines[:-200]  # enough to parse a read back and to show a failure; never a whole log
            output(line)
    except (OSError, ValueError):  # closed under us after the command ended
        return


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _failed(what: str, run: CommandRun, timeout: float) -> str:
    """The sentence for a command that did not do its job."""
    if run.timed_out:
        return f"The deploy's {what} command `{run.command}` did not finish within {timeout:g} s and was stopped"
    if run.exit_code is None:
        return f"The deploy's {what} command `{run.command}` could not be started ({(run.tail or ['?'])[0]})"
    why = {126: " (not executable)", 127: " (command not found)"}.get(run.exit_code, "")
    last = next((line for line in reversed(run.tail) if line.strip()), "")
    return (f"The deploy's {what} command `{run.command}` exited with code {run.exit_code}{why}"
            + (f": {last.strip()[:200]}" if last else ""))


def parse_read_back(lines: list[str], command: str) -> Flags:
    """The flags the API runs, from KEY=VALUE lines, read with the API's truthiness; a flag
    the environment does not carry takes the API's default, as the API itself would."""
    found: dict[str, str] = {}
    seen = False
    for line in lines:
        if not line.strip():
            continue
        match = _ASSIGNMENT.fullmatch(line.strip())
        if match is None:
            raise CutoverError(f"The deploy's read_back command `{command}` printed a line that is not KEY=VALUE: "
                               f"{line.strip()[:120]!r}; fix the command so it prints only the API's environment.")
        seen = True
        found[match.group(1)] = match.group(2)
    if not seen:
        raise CutoverError(f"The deploy's read_back command `{command}` printed no KEY=VALUE line; fix the command "
                           "so it prints the running API's environment.")
    values = {name: parse_flag(found.get(name), DEFAULTS[name]) for name in FLAG_NAMES}
    return Flags(reads=values[READS], writes=values[WRITES], dual_write=values[DUAL_WRITE])


def read_back(session: Session, output: Output) -> Flags:
    """What the running API's environment holds now; nothing is journaled."""
    deploy = _configured(session)
    run, lines = run_command(deploy.read_back, cwd=session.runbook.folder, env_file=session.settings.env_file,
                             timeout=deploy.timeout_seconds, output=output)
    if not run.ok:
        raise CutoverError(_failed("read_back", run, deploy.timeout_seconds) + ".")
    return parse_read_back(lines, deploy.read_back)


def _configured(session: Session) -> Deploy:
    if session.runbook.deploy is None:
        raise BadInput("The runbook has no [deploy] section: deploy the flags the team's way, then confirm it "
                       "with `cutover deploy --confirm STAGE`.")
    return session.runbook.deploy


def deploy(session: Session, output: Output) -> DeployOutcome:
    """Run apply, then read back, under the operator lock; journal either way. Raises with one
    sentence (exit 1) when a command fails or the API does not run the declared flags."""
    deploy_ = _configured(session)
    with session.operator_lock():
        env = session.read_env()
        assessment = session.assess(env)
        step = assessment.step("deploy")
        if not step.allowed:
            raise refuse(step)
        declared = assessment.flags
        # The new flags may serve from the moment apply starts (a rollout's first new pod): the
        # stage a successful deploy begins, begins then.
        started = server_now(session.conn)
        output(f"$ {deploy_.apply}")
        applied, _ = run_command(deploy_.apply, cwd=session.runbook.folder, env_file=session.settings.env_file,
                                 timeout=deploy_.timeout_seconds, output=output)
        detail: dict[str, object] = {"how": READ_BACK, "env_file": str(session.settings.env_file),
                                     "apply": applied.model_dump(exclude_defaults=True)}
        if not applied.ok:
            _journal(session, declared, None, detail | {"outcome": "apply failed"})
            raise CutoverError(_failed("apply", applied, deploy_.timeout_seconds)
                               + "; the flags are declared but not deployed: fix it and run deploy again.")
        output(f"$ {deploy_.read_back}")
        checked, lines = run_command(deploy_.read_back, cwd=session.runbook.folder,
                                     env_file=session.settings.env_file, timeout=deploy_.timeout_seconds,
                                     output=output)
        detail["read_back"] = checked.model_dump(exclude_defaults=True)
        try:
            if not checked.ok:
                raise CutoverError(_failed("read_back", checked, deploy_.timeout_seconds)
                                   + "; the flags were applied but what the API runs is unknown: run deploy again.")
            running = parse_read_back(lines, deploy_.read_back)
        except CutoverError as exc:
            _journal(session, declared, None, detail | {"outcome": "read back failed", "error": exc.message})
            raise
        entry = _journal(session, declared, running,
                         detail | {"outcome": "deployed" if running == declared else "read back differs"}, started)
        if running != declared:
            raise CutoverError(f"The apply command exited 0, but the API runs {running.short()} while the env file "
                               f"declares {declared.short()}; check the apply command, then run deploy again.")
    return DeployOutcome(entry=entry, deployed=running)


def confirm(session: Session, typed: str) -> journal.JournalEntry:
    """Without a [deploy] section: the operator says the declared stage is deployed by typing its name."""
    with session.operator_lock():
        assessment = session.assess()
        step = assessment.step("deploy")
        if not step.allowed:
            raise refuse(step)
        stage = assessment.stage or "A"
        if typed.strip().upper().replace("E-STEADY", "E'") != stage.upper():
            raise BadInput(f"Type the declared stage's name, {stage}, to confirm that the API runs its flags "
                           f"({assessment.flags.short()}); nothing was journaled.")
        return _journal(session, assessment.flags, assessment.flags,
                        {"how": CONFIRMED, "outcome": "deployed", "stage": stage,
                         "env_file": str(session.settings.env_file)})


def _journal(session: Session, declared: Flags, running: Flags | None, detail: dict[str, object],
             started: datetime | None = None) -> journal.JournalEntry:
    """One `deploy` row. While the same flags stay deployed, `since` carries the first such
    deployment's time, so re-running deploy never restarts a stage's clock (the confidence
    period counts from it); else `since` is when this deploy's apply started, and a row without
    one (a confirmation) began its stage when it was written."""
    if running is not None and running == declared:
        facts = session.facts()
        previous = facts.deployed
        if (previous is not None and previous.flags == running and previous.since is not None
                and (facts.flags_since is None or previous.since >= facts.flags_since)):
            detail = detail | {"since": previous.since.isoformat()}
        elif started is not None:
            detail = detail | {"since": started.isoformat()}
    return session.record("deploy", flags_before=declared, flags_after=running, detail=detail)


__all__ = ["CONFIRMED", "READ_BACK", "CommandRun", "DeployOutcome", "confirm", "deploy", "parse_read_back",
           "read_back", "run_command"]
