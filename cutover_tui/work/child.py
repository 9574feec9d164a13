"""The long jobs (backfill, verify) in a process of their own, so that the console's process does
only UI work: in-process, the jobs' Python side competes with the UI for the GIL and both cores.

The parent writes one JSON line on the child's stdin, what to run (the database URL travels
here, never on a command line), then `pause`, `resume` and `cancel` lines as the operator asks;
its stdin closing (the console gone, even killed) cancels the job between two ranges, as a
cancel does. The child answers on its stdout, one JSON object a line: `progress` and `check`
as they come, then `report` (the job's §4 body) or `error`. An error travels as what it was:
a console failure by its class and sentence, a database error by its SQLSTATE and first line,
so the parent's session says it in the same words as for a job run in-process.

Engine code: no printing but the protocol, no UI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg

from .. import errors
from .backfill import Backfill, BackfillOptions, BackfillProgress
from .verify import CheckCallback, VerifyOptions, VerifyProgress, run_verify

JobName = Literal["backfill", "verify"]
_CONTROL_SECONDS = 0.05  # how often the parent passes a pause or cancel on
_ERRORS: dict[str, type[errors.CutoverError]] = {
    cls.__name__: cls for cls in (errors.CutoverError, errors.Refused, errors.BadInput, errors.RunbookError,
                                  errors.EnvFileError, errors.DatabaseUnreachable, errors.MigrationError)}


# -- the parent's side ------------------------------------------------------------------------------

def backfill_in_child(url: str, operator: str, options: BackfillOptions, *,
                 progress: Callable[[BackfillProgress], None] | None = None,
                 cancel: threading.Event | None = None, pause: threading.Event | None = None) -> dict[str, Any]:
    """`Backfill(url, operator, options, ...).run()` in a child process."""
    def on_line(kind: str, body: Any) -> None:
        if kind == "progress" and progress is not None:
            progress(BackfillProgress.model_validate(body))
    return _run({"job": "backfill", "url": url, "operator": operator, "options": options.model_dump(mode="json")},
                on_line, cancel or threading.Event(), pause or threading.Event())


def verify_in_child(url: str, options: VerifyOptions, *, progress: Callable[[VerifyProgress], None] | None = None,
                        cancel: threading.Event | None = None,
                        on_check: CheckCallback | None = None) -> dict[str, Any]:
    """`run_verify(url, options, ...)` in a child process."""
    def on_line(kind: str, body: Any) -> None:
        if kind == "progress" and progress is not None:
            progress(VerifyProgress.model_validate(body))
        elif kind == "check" and on_check is not None:
            on_check(body)
    return _run({"job": "verify", "url": url, "options": options.model_dump(mode="json")},
                on_line, cancel or threading.Event(), threading.Event())


def _environment() -> dict[str, str]:
    """Ours, with the package's folder on the path: a console run from a source checkout, not
    installed, still finds its package in the child."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def _run(spec: dict[str, Any], on_line: Callable[[str, Any], None], cancel: threading.Event,
         pause: threading.Event) -> dict[str, Any]:
    try:
        child = subprocess.Popen([sys.executable, "-m", "cutover_tui.work.child"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                 env=_environment())
    except OSError as exc:
        raise errors.CutoverError(f"Cannot start the {spec['job']} in a process of its own ({exc}); "
                                  "check the machine has room for another process and try again.") from None
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    stderr: deque[str] = deque(maxlen=20)
    drain = threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True,  # type: ignore[arg-type]
                             name=f"cutover-{spec['job']}-stderr")
    drain.start()
    ended = threading.Event()
    control = threading.Thread(target=_control, args=(child, cancel, pause, ended), daemon=True,
                               name=f"cutover-{spec['job']}-control")
    outcome: dict[str, Any] = {}
    try:
        child.stdin.write(json.dumps(spec) + "\n")
        child.stdin.flush()
        control.start()
        for line in child.stdout:
            message = json.loads(line)
            kind, body = next(iter(message.items()))
            if kind in ("report", "error"):
                outcome[kind] = body
            else:
                on_line(kind, body)
    except BaseException:
        child.kill()  # the parent's own failure (or Ctrl-C): leave nothing behind
        raise
    finally:
        ended.set()
        code = child.wait()
        drain.join(timeout=5)
        if control.is_alive():
            control.join(timeout=5)
        for pipe in (child.stdin, child.stdout, child.stderr):
            with suppress(OSError):  # stdin may be a broken pipe by now
                pipe.close()
    if "report" in outcome:
        return outcome["report"]
    if "error" in outcome:
        raise _error(outcome["error"])
    last = next((line.strip() for line in reversed(stderr) if line.strip()), "no output")
    raise errors.CutoverError(f"The {spec['job']}'s process ended without a report (exit code {code}: {last}); "
                              "run it again: it resumes where it stopped.")


def _control(child: subprocess.Popen, cancel: threading.Event, pause: threading.Event,
             ended: threading.Event) -> None:
    """Pass the operator's pause, resume and cancel on to the child, until it ends."""
    paused = False
    try:
        while not ended.is_set():
            if cancel.is_set():
                _send(child, "cancel")
                return
            if pause.is_set() != paused:
                paused = pause.is_set()
                _send(child, "pause" if paused else "resume")
            ended.wait(_CONTROL_SECONDS)
    except (BrokenPipeError, OSError, ValueError):
        return  # the child is gone: its output says how it ended


def _send(child: subprocess.Popen, command: str) -> None:
    assert child.stdin is not None
    child.stdin.write(command + "\n")
    child.stdin.flush()


def _error(body: dict[str, Any]) -> Exception:
    """What failed in the child, raised again here as what it was."""
    if body.get("kind") == "database":
        sqlstate, message = body.get("sqlstate"), body.get("message") or "database error"
        if sqlstate:
            try:
                return psycopg.errors.lookup(sqlstate)(message)
            except KeyError:
                pass
        return psycopg.OperationalError(message)
    return _ERRORS.get(body.get("class", ""), errors.CutoverError)(body.get("message") or "The job failed.")


# -- the child's side -------------------------------------------------------------------------------

def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


class _Output:
    """One JSON object a line on stdout, whichever thread writes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, kind: str, body: Any) -> None:
        line = json.dumps({kind: body}, default=_json)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _listen(cancel: threading.Event, pause: threading.Event) -> None:
    """The parent's commands; its stdin closing is a cancel (the console is gone)."""
    for line in sys.stdin:
        command = line.strip()
        if command == "cancel":
            break
        if command == "pause":
            pause.set()
        elif command == "resume":
            pause.clear()
    pause.clear()
    cancel.set()


def main() -> int:
    out = _Output()
    spec = json.loads(sys.stdin.readline() or "{}")
    cancel, pause = threading.Event(), threading.Event()
    threading.Thread(target=_listen, args=(cancel, pause), daemon=True, name="cutover-job-commands").start()
    try:
        if spec.get("job") == "backfill":
            body = Backfill(spec["url"], spec["operator"], BackfillOptions.model_validate(spec["options"]),
                            progress=lambda p: out("progress", p.model_dump(mode="json")),
                            cancel=cancel, pause=pause).run()
        elif spec.get("job") == "verify":
            body = run_verify(spec["url"], VerifyOptions.model_validate(spec["options"]),
                              progress=lambda p: out("progress", p.model_dump(mode="json")),
                              cancel=cancel, on_check=lambda check: out("check", check))
        else:
            raise errors.CutoverError(f"No such job: {spec.get('job')!r}.")
    except errors.CutoverError as exc:
        out("error", {"kind": "console", "class": type(exc).__name__, "message": exc.message})
        return 1
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        out("error", {"kind": "database", "sqlstate": exc.sqlstate, "message": first})
        return 1
    out("report", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
