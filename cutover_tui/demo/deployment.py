"""The demo's account API as a real process, and a real deploy of it (SYSTEM.md §5).

The real API fixes its flags when its process starts, so a changed env file reaches it only
through a deploy: a new process with the new environment. Here that is:

    python -m cutover_tui.demo.deployment serve --port PORT --owner-pid PID
        the stand-in API with uvicorn on 127.0.0.1:PORT (SO_REUSEPORT, so a new process binds
        beside the old one), flags from its own environment; leaves when PID is gone or on SIGTERM
    python -m cutover_tui.demo.deployment apply
        with CUTOVER_ENV_FILE set: a new `serve` with that file's variables, then the old one stopped
    python -m cutover_tui.demo.deployment read-back
        the four flags the running process has, as KEY=VALUE lines (like `docker inspect`)

`apply` and `read-back` are the demo runbook's [deploy] commands; they find `demo-api.json`
(the running process: pid, port, database, owner) in their working directory, the runbook
file's folder. `start_api` starts the first process, `stop_api` the last one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

import cutover_tui

from ..errors import BadInput, CutoverError
from ..files.atomic import atomic_write
from ..files.envfile import FLAG_NAMES, read_env_file

STATE_FILE = "demo-api.json"
LOG_FILE = "demo-api.log"  # the processes' own output: never the console's terminal
ENV_FILE_VAR = "CUTOVER_ENV_FILE"
# Not DATABASE_URL: the env file carries the real API's own, which must not point the demo elsewhere.
DATABASE_VAR = "CUTOVER_DEMO_API_DATABASE_URL"
START_SECONDS = 30.0
STOP_SECONDS = 5.0
OWNER_POLL_SECONDS = 1.0


class ApiState(BaseModel):
    pid: int
    port: int
    database_url: str
    owner_pid: int
    started_at: str  # ISO 8601, UTC


def environment_of(env_file: Path) -> dict[str, str]:
    """Every KEY=VALUE of the env file as dotenv and Compose's env_file hand it to the process."""
    return read_env_file(env_file).variables


def _read_state(folder: Path) -> ApiState | None:
    try:
        return ApiState.model_validate_json((folder / STATE_FILE).read_bytes())
    except (OSError, ValidationError):
        return None


def _write_state(folder: Path, state: ApiState) -> None:
    # 0600: the database URL may hold a password.
    atomic_write(folder / STATE_FILE, state.model_dump_json(indent=2).encode("utf-8"), mode=0o600)


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped) does not."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _answering_pid(port: int) -> int | None:
    """The pid of the process that answered one request on the port, if one did."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)  # no proxy from the environment
    try:
        conn.request("GET", "/v1/demo/stats")
        response = conn.getresponse()
        pid = json.loads(response.read()).get("pid") if response.status == 200 else None
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _spawn(folder: Path, port: int, owner_pid: int, database_url: str, env_file: Path) -> int:
    """A detached `serve` process whose environment is ours plus the env file's variables; its pid.

    posix_spawn, not Popen: the process outlives any Popen object here (the one `apply` starts
    outlives `apply` itself), and is reaped by whoever waits for it (`_alive`) or by init."""
    variables = environment_of(env_file)
    # Only the env file decides the flags, as in a container: none leak in from this shell.
    environ = {k: v for k, v in os.environ.items() if k not in FLAG_NAMES} | variables
    environ[DATABASE_VAR] = database_url
    # A console run from a source checkout, not installed, still finds its package from the folder.
    package_root = str(Path(cutover_tui.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    output = (os.POSIX_SPAWN_OPEN, 1, str(folder / LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "cutover_tui.demo.deployment", "serve", "--port", str(port),
             "--owner-pid", str(owner_pid)],
            environ,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), output, (os.POSIX_SPAWN_DUP2, 1, 2)],
            setsid=True)  # not in the console's process group: a ctrl+c there is not for the API
    except OSError as exc:
        raise CutoverError(f"Cannot start the demo account API ({exc.strerror or exc}).") from None


def _start(folder: Path, port: int, owner_pid: int, database_url: str, env_file: Path) -> int:
    """A new `serve` process on the port, once it answers there itself (an old one may answer there
    too); its pid. A process that does not answer in time is killed."""
    pid = _spawn(folder, port, owner_pid, database_url, env_file)
    try:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                raise CutoverError(f"The demo account API exited at start (code {os.waitstatus_to_exitcode(status)}); "
                                   f"see {folder / LOG_FILE}.")
            if _answering_pid(port) == pid:
                return pid
            time.sleep(0.05)
        raise CutoverError(f"The demo account API did not answer within {START_SECONDS:.0f} s; "
                           f"see {folder / LOG_FILE}.")
    except BaseException:  # a timeout, or the demo itself interrupted: leave no half-started process
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise


def _stop(pid: int) -> None:
    """SIGTERM, a few seconds to finish the requests in flight, then SIGKILL."""
    for signum, seconds in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, STOP_SECONDS)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def start_api(folder: Path, database_url: str, env_file: Path, owner_pid: int) -> str:
    """Start the first `serve` process for `folder` (which then holds its state file and log);
    return its base URL once it answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(("127.0.0.1", 0))  # bound, never listening: holds a free port for the child
        port = probe.getsockname()[1]
        pid = _start(folder, port, owner_pid, database_url, env_file)
    _write_state(folder, ApiState(pid=pid, port=port, database_url=database_url, owner_pid=owner_pid,
                                  started_at=_now()))
    return f"http://127.0.0.1:{port}"


def stop_api(folder: Path) -> None:
    """Stop the process `folder`'s state file names, if any."""
    state = _read_state(folder)
    if state is not None:
        _stop(state.pid)
        (folder / STATE_FILE).unlink(missing_ok=True)


def _running(folder: Path) -> ApiState:
    state = _read_state(folder)
    if state is None or not _alive(state.pid):
        raise CutoverError(f"No demo account API is running from {folder}; start `cutover demo` first.")
    return state


# -- the commands ---------------------------------------------------------------------------------

def _serve(port: int, owner_pid: int) -> int:
    import logging

    from .api import make_server

    database_url = os.environ.get(DATABASE_VAR)
    if not database_url:
        raise BadInput(f"{DATABASE_VAR} is not set; start the API with start_api or `apply`.")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s pid %(process)d %(levelname)s %(message)s")
    server = make_server(database_url, os.environ)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # a restart's new process binds beside us
    sock.bind(("127.0.0.1", port))

    def watch_owner() -> None:  # a demo killed outright leaves nothing running behind it
        while not server.should_exit:
            if not _alive(owner_pid):
                server.should_exit = True
            time.sleep(OWNER_POLL_SECONDS)

    threading.Thread(target=watch_owner, name="owner-watch", daemon=True).start()
    server.run(sockets=[sock])  # uvicorn turns SIGTERM into a graceful shutdown
    return 0


def _apply(folder: Path) -> int:
    raw = os.environ.get(ENV_FILE_VAR)
    if not raw:
        raise BadInput(f"{ENV_FILE_VAR} is not set; it must name the deploy env file to apply.")
    env_file = Path(raw)
    environment_of(env_file)  # unreadable: a one-sentence EnvFileError before anything starts
    old = _read_state(folder)
    if old is None:
        raise CutoverError(f"No demo account API was started from {folder}; start `cutover demo` first.")
    print(f"starting the account API with {env_file} …", flush=True)
    pid = _start(folder, old.port, old.owner_pid, old.database_url, env_file)  # failing, the old one serves on
    _write_state(folder, old.model_copy(update={"pid": pid, "started_at": _now()}))
    if _alive(old.pid):
        print(f"new process {pid} answers; stopping {old.pid}", flush=True)
        _stop(old.pid)
    else:
        print(f"new process {pid} answers; the old one ({old.pid}) had already exited", flush=True)
    print("applied", flush=True)
    return 0


def _read_back(folder: Path) -> int:
    state = _running(folder)
    try:
        raw = Path(f"/proc/{state.pid}/environ").read_bytes()
    except OSError as exc:
        raise CutoverError(f"Cannot read the environment of process {state.pid} ({exc.strerror or exc}).") from None
    environ = dict(item.split("=", 1) for item in raw.decode("utf-8", "surrogateescape").split("\0") if "=" in item)
    for name in FLAG_NAMES:
        if name in environ:
            print(f"{name}={environ[name]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover_tui.demo.deployment",
                                     description="The demo account API's process and its deploy.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the stand-in API on 127.0.0.1:PORT")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--owner-pid", type=int, required=True, help="exit when this process is gone")
    sub.add_parser("apply", help=f"restart the API with the variables of ${ENV_FILE_VAR}")
    sub.add_parser("read-back", help="print the flags the running API has")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.port, args.owner_pid)
        if args.command == "apply":
            return _apply(Path.cwd())
        return _read_back(Path.cwd())
    except CutoverError as exc:
        print(f"demo deployment: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
