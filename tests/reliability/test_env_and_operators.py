"""The deploy env file and the operators, end to end through the real `cutover` and the console.

Env file: another process edits the file between the plan (the diff on screen) and the write,
in the TUI (c, edit, y) and at the CLI's own y/N prompt (a child on a pseudo-terminal): the
write is refused in one sentence, the other process's bytes stay exactly, nothing is journaled.
The folder read-only and the disk full at the moment of writing (`cutover promote C --yes` as a
child: without CAP_DAC_OVERRIDE so the folder's bits bind even for root; under RLIMIT_FSIZE
with SIGXFSZ ignored, so the kernel refuses the temp file's bytes with EFBIG as a full disk
refuses them with ENOSPC): a clear error, exit 2, the old file intact, no temp file left, no
journal row. A symlinked env file stays a link with its target written; the file's mode is kept.

Operators: two consoles promoting at once, deterministically (the first held inside its
promotion, under the operator lock, by a test transaction that holds the journal table) and in
free races of two `cutover` processes: exactly one wins, the other is refused. A console killed
with -9 in the middle of its promotion, lock held: nothing of it is journaled or written, its
lock goes with its session, and the next console takes over. The same with two TUI consoles:
the first (a child process driving the app with Pilot) holds the lock, the second shows who.
"""

from __future__ import annotations

import ctypes
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, record_report

from cutover_tui.cli import main
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.files.envfile import EnvFileChanged
from cutover_tui.ops import transitions
from cutover_tui.store.lock import holder
from cutover_tui.store.session import Session, resolve_settings

from .support import copy_database, scale, seeded

READS_OFF = "ACCOUNT_SCHEMA_V2_READS=false"
READS_ON = "ACCOUNT_SCHEMA_V2_READS=true"
PROMOTED = DEMO_ENV.replace(READS_OFF, READS_ON)  # exactly what promote C writes: one line changed
SMALL = 20  # workspaces: these tests are about inputs and files, not volume
CHILD_TIMEOUT = 90
RACES = scale(4, 20)


@pytest.fixture(scope="module")
def template(pg_server_url) -> str:
    """A database at stage G (Stage A applied, a clean backfill report, a passing verify after
    it); every test works on its own copy."""
    url = seeded(pg_server_url, workspaces=SMALL)
    record_report(url, "backfill", ok=True)
    record_report(url, "verify", ok=True, stage="B")
    return url


@pytest.fixture
def stage_g(pg_server_url, template) -> str:
    return copy_database(pg_server_url, template)


@pytest.fixture
def env(tmp_path) -> Path:
    path = tmp_path / "deploy.env"
    path.write_text(DEMO_ENV, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def argv(url: str, env_file: Path, operator: str, *command: str) -> list[str]:
    return ["--runbook", str(ROOT / "runbook.toml"), "--database-url", url, "--env-file", str(env_file),
            "--operator", operator, *command]


def child_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONDONTWRITEBYTECODE": "1"}


def journal(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT action, operator FROM cutover.journal ORDER BY id").fetchall()


def promotions(url: str) -> list[str]:
    return [operator for action, operator in journal(url) if action == "promote"]


def folder_names(folder: Path) -> list[str]:
    """What is in the env file's folder: a temp file left by a write would show here."""
    return sorted(p.name for p in folder.iterdir())


def one_sentence(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("cutover: "), err
    assert "Traceback" not in err
    return err


# --- another process edits the file between the plan and the write -----------------------------

def _append(path: Path) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write("OTHER_WRITER=1\n")


def _editor_save(path: Path) -> None:
    temp = path.with_name("x.tmp")
    temp.write_text(DEMO_ENV + "# edited\n", encoding="utf-8")
    os.replace(temp, path)


EDITS = {
    # Another tool appends a key in place (same inode).
    "append in place": _append,
    # Someone flips the flag by hand, to exactly what the console was about to write.
    "the same flag by hand": lambda path: path.write_text(PROMOTED, encoding="utf-8"),
    # An editor saves by writing a new file and renaming it over (a new inode).
    "editor-style rename": _editor_save,
    # A deploy tool truncates the file.
    "truncated": lambda path: path.write_bytes(b""),
}


@pytest.mark.anyio
async def test_tui_promotion_refused_when_the_file_changes_under_the_confirmation(stage_g, env, figures):
    """c shows the diff; another process then rewrites the file; y is refused with a sentence,
    the other process's bytes are kept, and no promotion is journaled."""
    from tui.support import screen_text, settle, toasts, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.confirm import ConfirmChange
    from cutover_tui.tui.screens.dashboard import DashboardScreen

    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env, database_url=stage_g,
                                operator="alice", environ={})
    tried = 0
    app = make_app(settings)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        for name, edit in EDITS.items():
            tried += 1
            env.write_text(DEMO_ENV, encoding="utf-8")
            app.clear_notifications()
            await pilot.press("r")
            await settle(pilot)
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmChange))
            assert "+" + READS_ON in screen_text(app)  # the plan on screen
            edit(env)
            edited = env.read_bytes()
            await pilot.press("y")
            await wait_until(pilot, lambda: "changed on disk" in toasts(app))
            await settle(pilot)
            shown = toasts(app)
            assert "changed on disk since it was read; nothing was written" in shown, (name, shown)
            assert isinstance(app.screen, DashboardScreen)
            assert env.read_bytes() == edited, name  # the other process's edit, byte for byte
            assert folder_names(env.parent) == ["deploy.env"]  # no temp file left
            assert promotions(stage_g) == [], name
    figures.record("test_env_and_operators: env file edited under the TUI's confirmation", workspaces=SMALL,
                   runs=tried, refused=tried, edits_kept=tried, journal_rows=0, lost=0)


def _prompted_promotion(url: str, env_file: Path, edit) -> tuple[int, str, str, bytes]:
    """`cutover promote C` in a child whose stdin is a terminal: wait for its y/N prompt, let
    `edit` change the file, answer y. Returns (exit code, stdout, stderr, the file as edited)."""
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "cutover_tui.cli", *argv(url, env_file, "alice", "promote", "C")],
                             cwd=ROOT, env=child_env(), stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    os.close(slave)
    try:
        out = b""
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not out.endswith(b"[y/N] "):  # input() flushes its prompt: no newline after it
            assert time.monotonic() < deadline and child.poll() is None, out
            ready, _, _ = select.select([child.stdout], [], [], 1)
            if ready:
                out += os.read(child.stdout.fileno(), 4096)
        edit(env_file)
        edited = env_file.read_bytes()
        os.write(master, b"y\n\n")  # yes; then enter at the deploy's question: confirm it later
        rest, err = child.communicate(timeout=CHILD_TIMEOUT)
        return child.returncode, (out + rest).decode(), err.decode(), edited
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        os.close(master)


@pytest.mark.parametrize("edit", list(EDITS))
def test_cli_promotion_refused_when_the_file_changes_at_the_prompt(edit, stage_g, env, figures):
    code, out, err, edited = _prompted_promotion(stage_g, env, EDITS[edit])
    assert edited != DEMO_ENV.encode()  # the edit happened
    assert "-" + READS_OFF in out and "+" + READS_ON in out  # the diff was shown before the prompt
    assert code == 1 and "changed on disk since it was read; nothing was written" in one_sentence(err)
    assert env.read_bytes() == edited and folder_names(env.parent) == ["deploy.env"]  # the edit, byte for byte
    assert promotions(stage_g) == []
    figures.record(f"test_env_and_operators: env file edited at the CLI prompt, {edit}", workspaces=SMALL, runs=1,
                   refused=1, journal_rows=0, lost=0)


def test_cli_promotion_at_the_prompt_goes_through_when_nobody_edits(stage_g, env):
    """The control for the test above: the same prompt, no edit, and the promotion is written."""
    code, out, err, _ = _prompted_promotion(stage_g, env, lambda path: None)
    assert (code, err) == (0, "") and "Written" in out
    assert "type C once it runs them" in out and "`cutover deploy --confirm C`" in out
    assert env.read_text(encoding="utf-8") == PROMOTED and promotions(stage_g) == ["alice"]


# --- the folder read-only, the disk full -------------------------------------------------------


def _drop_dac() -> None:
    """In the child before exec: lose the capabilities that let root ignore permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unprivileged_url(url: str, folder: Path) -> str:
    """`url` by a socket path a process without DAC capabilities can reach: the server's folder
    belongs to its own user (0700), so its socket is hard-linked into `folder`."""
    host = Path(url.split("host=", 1)[1].split("&")[0])
    sock = next(p for p in host.glob(".s.PGSQL.*") if p.suffix != ".lock")
    try:
        os.link(sock, folder / sock.name)
    except OSError as exc:
        pytest.skip(f"cannot link the server's socket where an unprivileged child reaches it ({exc})")
    return url.replace(f"host={host}", f"host={folder}")


def test_read_only_folder_at_write_time(stage_g, tmp_path, figures):
    folder = tmp_path / "deploy"
    folder.mkdir()
    env_file = folder / "deploy.env"
    env_file.write_text(DEMO_ENV, encoding="utf-8")
    env_file.chmod(0o600)
    sockets = tmp_path / "socket"
    sockets.mkdir()
    url = unprivileged_url(stage_g, sockets)
    folder.chmod(0o555)  # the file itself stays writable: only a new file beside it is refused
    try:
        done = subprocess.run([sys.executable, "-m", "cutover_tui.cli",
                               *argv(url, env_file, "alice", "promote", "C", "--yes")], cwd=ROOT, env=child_env(),
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
                              preexec_fn=_drop_dac if os.geteuid() == 0 else None)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2, done.stderr
    err = one_sentence(done.stderr)
    assert "(Permission denied); the file was left as it was" in err and f"Check that {folder} is writable" in err
    assert "+" + READS_ON in done.stdout  # the diff it was about to write
    assert env_file.read_text(encoding="utf-8") == DEMO_ENV and stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert folder_names(folder) == ["deploy.env"] and promotions(stage_g) == []
    figures.record("test_env_and_operators: read-only folder at write time", workspaces=SMALL, runs=1,
                   faults_injected=1, refused=1, old_file_intact=1, journal_rows=0)


def test_disk_full_at_write_time(stage_g, env, figures):
    limit = 64  # bytes: far below the env file, so the temp file's write fails part-way
    assert len(DEMO_ENV) > 10 * limit
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG instead of a kill, as ENOSPC would be
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              "from cutover_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, *argv(stage_g, env, "alice", "promote", "C", "--yes")],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          check=False)
    assert done.returncode == 2, done.stderr
    err = one_sentence(done.stderr)
    assert "(File too large); the file was left as it was" in err and "has free space" in err
    assert env.read_text(encoding="utf-8") == DEMO_ENV and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert folder_names(env.parent) == ["deploy.env"] and promotions(stage_g) == []
    figures.record("test_env_and_operators: disk full at write time", workspaces=SMALL, runs=1, faults_injected=1,
                   refused=1, old_file_intact=1, journal_rows=0)


# --- a symlink, the mode ---------------------------------------------------------------------------


def test_a_symlinked_env_file_stays_a_link(stage_g, tmp_path, capsys, figures):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "ternent.env"
    target.write_text(DEMO_ENV, encoding="utf-8")
    target.chmod(0o640)
    link = tmp_path / "links" / ".env"
    link.symlink_to(Path("..") / "real" / "ternent.env")

    code = main(argv(stage_g, link, "alice", "promote", "C", "--yes"))
    err = capsys.readouterr().err
    assert (code, err) == (0, ""), err
    assert link.is_symlink() and os.readlink(link) == str(Path("..") / "real" / "ternent.env")
    assert target.read_text(encoding="utf-8") == PROMOTED and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "links", "links/.env", "real", "real/ternent.env"]
    with psycopg.connect(stage_g) as conn:
        assert conn.execute("SELECT detail->>'env_file' FROM cutover.journal WHERE action = 'promote'"
                            ).fetchone()[0] == str(link)
    figures.record("test_env_and_operators: symlinked env file", workspaces=SMALL, runs=1, link_kept=1, mode_kept=1)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_the_mode_is_kept_through_promote_and_rollback(mode, stage_g, env, capsys, figures):
    """0400 too: the file is replaced by rename, so its own write bit never mattered."""
    env.chmod(mode)
    for command, after in ((("promote", "C", "--yes"), PROMOTED), (("rollback", "--yes"), DEMO_ENV)):
        assert main(argv(stage_g, env, "alice", *command)) == 0, capsys.readouterr().err
        assert env.read_text(encoding="utf-8") == after and stat.S_IMODE(env.stat().st_mode) == mode
    assert folder_names(env.parent) == ["deploy.env"]
    figures.record(f"test_env_and_operators: mode {mode:o} kept", workspaces=SMALL, runs=2, mode_kept=2)


# --- two consoles -----------------------------------------------------------------------------------


@contextmanager
def held(url: str, table: str):
    """A transaction holding one of the console's tables: a console reaching its row there waits,
    inside its promotion, with the operator lock held. Reads go on (EXCLUSIVE allows SELECT).
    `cutover.flag_writes` holds it before it writes the env file, `cutover.journal` after."""
    conn = psycopg.connect(url)
    try:
        conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def start_cli(url: str, env_file: Path, operator: str, *command: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cutover_tui.cli", *argv(url, env_file, operator, *command)],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_holder(url: str, operator: str, child: subprocess.Popen) -> None:
    """Until `operator` holds the operator lock (the child is then inside its promotion)."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while (found := holder(conn)) is None or found.operator != operator:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the console never took the lock"
            time.sleep(0.05)


def wait_for_no_backend(url: str, pid: int) -> float:
    """Until the killed console's backend has gone (the server notices the closed socket); seconds."""
    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]:
            assert time.monotonic() - start < 30, "the dead console's backend stayed"
            time.sleep(0.05)
    return time.monotonic() - start


def test_two_consoles_promote_at_once_one_is_refused_naming_the_holder(stage_g, env, capsys, figures):
    with held(stage_g, "cutover.flag_writes"):
        bob = start_cli(stage_g, env, "bob", "promote", "C", "--yes")
        try:
            wait_for_holder(stage_g, "bob", bob)
            code = main(argv(stage_g, env, "alice", "promote", "C", "--yes"))
            _, err = capsys.readouterr()
            assert code == 1
            assert "The operator lock for this database is held by bob (" in one_sentence(err) and " since " in err
            assert env.read_text(encoding="utf-8") == DEMO_ENV  # bob has not written yet, alice never will
        except BaseException:
            bob.kill()
            raise
    out, err = bob.communicate(timeout=CHILD_TIMEOUT)
    assert (bob.returncode, err) == (0, "") and "Written" in out
    assert env.read_text(encoding="utf-8") == PROMOTED and promotions(stage_g) == ["bob"]
    figures.record("test_env_and_operators: two consoles, one inside its promotion", workspaces=SMALL, runs=1,
                   winners=1, refused_naming_holder=1, lost=0)


def test_free_races_of_two_consoles_have_exactly_one_winner(pg_server_url, template, tmp_path, figures):
    """Two `cutover promote C --yes` started together, RACES times, each on a fresh copy: one
    writes and journals; the other is refused (the lock, the gate or the changed file)."""
    outcomes: dict[str, int] = {}
    for round_ in range(RACES):
        url = copy_database(pg_server_url, template)
        env_file = tmp_path / f"race-{round_}.env"
        env_file.write_text(DEMO_ENV, encoding="utf-8")
        racers = {name: start_cli(url, env_file, name, "promote", "C", "--yes") for name in ("ann", "ben")}
        done = {name: (child.wait(CHILD_TIMEOUT), *child.communicate()) for name, child in racers.items()}
        winners = [name for name, (code, _, _) in done.items() if code == 0]
        assert len(winners) == 1, done
        (loser_code, _, loser_err), = [v for name, v in done.items() if name not in winners]
        assert loser_code == 1, loser_err
        reason = next(kind for kind, words in (("lock held", "operator lock for this database is held by"),
                                               ("file changed", "changed on disk since it was read"),
                                               ("gate refused", "Promote C is refused"))
                      if words in one_sentence(loser_err))
        outcomes[reason] = outcomes.get(reason, 0) + 1
        assert env_file.read_text(encoding="utf-8") == PROMOTED and promotions(url) == winners
    figures.record("test_env_and_operators: free races of two consoles", workspaces=SMALL, runs=RACES, winners=RACES,
                   double_writes=0, **{f"loser_{k.replace(' ', '_')}": v for k, v in sorted(outcomes.items())})


def test_a_console_killed_mid_promotion_releases_the_lock(stage_g, env, capsys, figures):
    """kill -9 while it holds the lock inside its promotion: no journal row, no write, and the
    next console takes the lock and promotes."""
    with held(stage_g, "cutover.flag_writes") as blocker:
        carol = start_cli(stage_g, env, "carol", "promote", "C", "--yes")
        try:
            wait_for_holder(stage_g, "carol", carol)
            with psycopg.connect(stage_g, autocommit=True) as conn:
                backend = holder(conn).backend_pid
            code = main(argv(stage_g, env, "alice", "promote", "C", "--yes"))
            assert code == 1 and "held by carol" in one_sentence(capsys.readouterr().err)
        finally:
            os.kill(carol.pid, signal.SIGKILL)  # the console only, never the server
            carol.communicate()
        blocker.rollback()  # its backend now finishes the insert, finds the client gone, rolls back
    gone_after = wait_for_no_backend(stage_g, backend)
    assert carol.returncode == -signal.SIGKILL
    assert env.read_text(encoding="utf-8") == DEMO_ENV and promotions(stage_g) == []
    with psycopg.connect(stage_g, autocommit=True) as conn:
        assert holder(conn) is None
    code = main(argv(stage_g, env, "alice", "promote", "C", "--yes"))
    assert code == 0, capsys.readouterr().err
    assert env.read_text(encoding="utf-8") == PROMOTED and promotions(stage_g) == ["alice"]
    assert folder_names(env.parent) == ["deploy.env"]
    figures.record("test_env_and_operators: console killed -9 holding the lock", workspaces=SMALL, runs=1,
                   faults_injected=1, lock_released=1, next_console_took_over=1, journal_rows_of_the_dead=0,
                   seconds_until_its_backend_went=round(gone_after, 2))


def test_a_console_killed_between_its_env_write_and_its_journal_row_is_journaled_by_the_next(
        stage_g, env, capsys, figures):
    """kill -9 after the env file is written and before its journal row commits: the next
    console journals the promotion (as carol's, saying by whom and why), so the console's own
    write is never taken for a hand edit and nothing offers to undo it."""
    with held(stage_g, "cutover.journal") as blocker:
        carol = start_cli(stage_g, env, "carol", "promote", "C", "--yes")
        try:
            wait_for_holder(stage_g, "carol", carol)
            deadline = time.monotonic() + CHILD_TIMEOUT
            while env.read_text(encoding="utf-8") != PROMOTED:  # written; its journal row waits on us
                assert time.monotonic() < deadline and carol.poll() is None, carol.communicate()
                time.sleep(0.05)
            with psycopg.connect(stage_g, autocommit=True) as conn:
                backend = holder(conn).backend_pid
        finally:
            os.kill(carol.pid, signal.SIGKILL)
            carol.communicate()
        blocker.rollback()
    wait_for_no_backend(stage_g, backend)
    assert promotions(stage_g) == []  # the file says C, the journal knows nothing of it yet

    code = main(argv(stage_g, env, "alice", "status"))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert promotions(stage_g) == ["carol"] and "restore" not in out.lower() and "hand" not in out.lower()
    with psycopg.connect(stage_g) as conn:
        detail = conn.execute("SELECT detail FROM cutover.journal WHERE action = 'promote'").fetchone()[0]
        outcome = conn.execute("SELECT outcome FROM cutover.flag_writes").fetchall()
    assert detail["journaled"].startswith("by alice's console: the console that wrote the file at ")
    assert outcome == [("written, journaled by the next console",)]
    code = main(argv(stage_g, env, "alice", "promote", "C", "--yes"))
    assert code == 1 and "already live" in capsys.readouterr().err  # C is where the journal says it is
    figures.record("test_env_and_operators: console killed -9 between its env write and its journal row",
                   workspaces=SMALL, runs=2, faults_injected=1, journaled_by_the_next_console=1,
                   taken_for_a_hand_edit=0)


def test_a_hard_linked_env_file_is_promoted_in_place_and_says_so(stage_g, env, capsys):
    """The API's copy is another name of the same file: both must say C afterwards."""
    other = env.parent / "the-apis.env"
    os.link(env, other)
    code = main(argv(stage_g, env, "alice", "promote", "C", "--yes"))
    out = capsys.readouterr().out
    assert code == 0 and "(in place, because it has 2 hard links); journal entry" in out
    assert other.read_text(encoding="utf-8") == PROMOTED and other.stat().st_ino == env.stat().st_ino
    with psycopg.connect(stage_g) as conn:
        detail = conn.execute("SELECT detail FROM cutover.journal WHERE action = 'promote'").fetchone()[0]
    assert detail["written"] == "in place, because it has 2 hard links"


def test_a_write_that_failed_finishes_its_intent_as_not_written(stage_g, env):
    """The file changed between the plan and the write: nothing was written, and the intent says so."""
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env, database_url=stage_g,
                                operator="alice", environ={})
    with Session(settings) as session:
        change = transitions.plan_promotion(session, "C")
        env.write_text(DEMO_ENV + "# edited meanwhile\n", encoding="utf-8")
        with pytest.raises(EnvFileChanged):
            transitions.apply_change(session, change)
    with psycopg.connect(stage_g) as conn:
        assert conn.execute("SELECT outcome FROM cutover.flag_writes").fetchall() == [("not written",)]
    assert promotions(stage_g) == [] and env.read_text(encoding="utf-8") == DEMO_ENV + "# edited meanwhile\n"


FIRST_CONSOLE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from cutover_tui.store.session import resolve_settings
    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.confirm import ConfirmChange

    async def main(url, env_file, runbook):
        settings = resolve_settings(runbook_path=Path(runbook), env_file=Path(env_file), database_url=url,
                                    operator="carol", environ={})
        app = make_app(settings)
        async with app.run_test(size=(100, 30)) as pilot:
            while app.dashboard.status is None:
                await pilot.pause(0.05)
            await pilot.press("c")
            while not isinstance(app.screen, ConfirmChange):
                await pilot.pause(0.05)
            await pilot.press("y")
            print("pressed y", flush=True)
            await asyncio.sleep(600)  # its worker waits inside the promotion, lock held

    asyncio.run(main(*sys.argv[1:]))
""")


@pytest.mark.anyio
async def test_two_tui_consoles_the_second_sees_the_holder_then_takes_over(stage_g, env, tmp_path, figures):
    from tui.support import screen_text, settle, toasts, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.confirm import ConfirmChange

    script = tmp_path / "first_console.py"
    script.write_text(FIRST_CONSOLE, encoding="utf-8")
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env, database_url=stage_g,
                                operator="alice", environ={})
    with held(stage_g, "cutover.flag_writes") as blocker:
        # The first console is a process of its own (to be killed); the loop is not running an app yet.
        first = subprocess.Popen([sys.executable, str(script), stage_g, str(env), str(ROOT / "runbook.toml")],
                                 cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_holder(stage_g, "carol", first)
            with psycopg.connect(stage_g, autocommit=True) as conn:
                backend = holder(conn).backend_pid
            app = make_app(settings)
            async with app.run_test(size=(120, 40), notifications=True) as pilot:
                await settle(pilot)
                assert "held by carol (" in screen_text(app)  # the dashboard names the holder
                await pilot.press("c")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmChange))
                await pilot.press("y")
                await wait_until(pilot, lambda: "held by carol" in toasts(app))
                assert "read-only until they finish" in toasts(app)
                assert env.read_text(encoding="utf-8") == DEMO_ENV

                os.kill(first.pid, signal.SIGKILL)  # the first console dies, lock and all
                first.communicate()
                blocker.rollback()
                wait_for_no_backend(stage_g, backend)
                app.clear_notifications()
                await pilot.press("r")
                await settle(pilot)
                assert "held by" not in screen_text(app) and "free" in screen_text(app)
                await pilot.press("c")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmChange))
                await pilot.press("y")
                await wait_until(pilot, lambda: "journal entry" in toasts(app))
                await settle(pilot)
                assert app.dashboard.status.stage == "C", (toasts(app), screen_text(app))
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
    assert env.read_text(encoding="utf-8") == PROMOTED and promotions(stage_g) == ["alice"]
    figures.record("test_env_and_operators: two TUI consoles, the first killed -9", workspaces=SMALL, runs=1,
                   faults_injected=1, holder_shown=1, refused_naming_holder=1, next_console_took_over=1, lost=0)
