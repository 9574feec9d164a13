"""The bad-input catalogue, end to end through the real `cutover` command, and database text
shown literally in the CLI and the TUI.

Catalogue: every bad input the issues name (arguments, the deploy env file, runbook.toml,
the database URL, report paths, an account API that misbehaves in each way issue 5 lists but
the timeout, and reports given to `cutover diff` that are truncated, wrongly typed, huge or of
the wrong kind; the same report files through the TUI's dialog) is tried against one database
at stage G. Each must end with the documented exit code, exactly one sentence on stderr (never a
traceback) and nothing written: the env file's bytes, the journal, the stored reports, the
backfill runs, the v2 rows, the tables (of the database the case names, too) and every file in
the test's folder are the same before and after. Most cases run
in-process; a case that needs a permission bit to bind (root ignores them) runs `cutover` as
a child process without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so it meets the bits as an
ordinary operator would. Argument errors are argparse's: a usage block, then one error line
(see test_argument_errors_are_one_sentence).

Literal text: an operator name, a workspace's id and name, an identity's key fingerprint, and
report example rows holding control characters, terminal escape sequences (`\\x1b[31m`,
`\\x1b]0;title\\x07`) and Rich markup (`[red]`, `[link=...]`). "Literally" means: never
interpreted by Rich anywhere; in the TUI, control characters appear as visible escapes; from the
CLI to a pipe the text may go byte for byte (it is data for scripts; `--json` escapes it), but on
a terminal no escape sequence from the data may reach the screen raw.
"""

from __future__ import annotations

import ctypes
import json
import os
import pty
import select
import socket
import stat
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from helpers import ROOT, apply_v2, http_server

from cutover_tui.cli import main
from cutover_tui.demo.embedded import create_database
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.ops import transitions
from cutover_tui.reports import store as report_store
from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.work import jobs
from cutover_tui.work.api_check import API_ENV, COOKIE_ENV
from cutover_tui.work.migrate import apply_legacy_baseline

from .support import V2_TABLES, seeded, write_runbook

DATA = ROOT / "tests" / "data" / "reports"
# Markup, a link, colour and an OSC title change, a bell, a backspace, a tab, a carriage return.
ODD = "[red]x[/red] [link=https://evil.example]y[/link] \x1b[31mred\x1b[0m \x1b]0;title\x07 \x08\t\r!"
ODD_SHOWN = ODD.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\x08", "\\x08") \
    .replace("\t", "\\t").replace("\r", "\\r")  # what the TUI's literal() shows for it
SMALL = 20  # workspaces: these tests are about inputs and files, not volume
CHILD_TIMEOUT = 60
COOKIE = "bad-input-cookie-" + uuid.uuid4().hex  # must never be echoed


def _drop_dac() -> None:
    """In the child before exec: lose the capabilities that let root ignore permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_child(argv: list[str], *, unprivileged: bool = False, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """`cutover ARGV` as its own process; `unprivileged` makes permission bits bind even for root."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", COOKIE_ENV, API_ENV)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([sys.executable, "-m", "cutover_tui.cli", *argv], cwd=ROOT, env=env, text=True,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=CHILD_TIMEOUT, check=False,
                          preexec_fn=_drop_dac if unprivileged and os.geteuid() == 0 else None)


# --- one database at stage G, shared by the catalogue ---------------------------------------


def unprivileged_url(url: str, folder: Path) -> str | None:
    """`url` by a socket path a process without DAC capabilities can reach: the server's folder
    belongs to its own user (0700), so its socket is hard-linked into `folder`. None if the
    filesystem will not link it."""
    host = Path(url.split("host=", 1)[1].split("&")[0])
    sock = next(p for p in host.glob(".s.PGSQL.*") if p.suffix != ".lock")
    try:
        os.link(sock, folder / sock.name)
    except OSError:
        return None
    return url.replace(f"host={host}", f"host={folder}")


@dataclass
class StageG:
    server: str
    url: str
    folder: Path
    child_url: str | None  # the same database, for a child without DAC capabilities


@pytest.fixture(scope="module")
def stage_g(pg_server_url, tmp_path_factory) -> StageG:
    """Clean seed, Stage A, a clean backfill and a passing verify: every command's gate is open,
    so each bad input is met by its own check, not by a gate."""
    folder = tmp_path_factory.mktemp("stage-g")
    url = seeded(pg_server_url, workspaces=SMALL)
    env = folder / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env, database_url=url,
                                operator="setup", report_dir=folder / "reports", environ={})
    with Session(settings) as session:
        backfill, _ = jobs.backfill(session)
        verify, _ = jobs.verify(session)
        assert backfill.ok and verify.ok
        assert session.assess().step("promote", "C").allowed
    sockets = folder / "socket"
    sockets.mkdir()
    return StageG(pg_server_url, url, folder, unprivileged_url(url, sockets))


def db_state(url: str) -> dict[str, object] | None:
    """What a command could have written in the database at `url` (None: no database there).
    The console schema's mere existence is left out: test_a_wrong_database_is_left_as_it_was."""
    try:
        conn = psycopg.connect(url, connect_timeout=5)
    except psycopg.Error:
        return None
    with conn:
        def one(q):
            return conn.execute(q).fetchone()[0]
        state: dict[str, object] = {"tables": one(
            "SELECT array_agg(schemaname || '.' || tablename ORDER BY 1) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'cutover')")}
        if one("SELECT to_regclass('cutover.journal')"):
            state |= {"journal": one("SELECT coalesce(json_agg(j ORDER BY id), '[]') FROM cutover.journal j"),
                      "reports": one("SELECT array_agg(id ORDER BY id) FROM cutover.reports"),
                      "backfill runs": one("SELECT count(*) FROM cutover.backfill_runs"),
                      "lock rows": one("SELECT count(*) FROM cutover.operator_lock")}
        state["v2 rows"] = {t: one(f"SELECT count(*) FROM {t}") for t in V2_TABLES
                            if one(f"SELECT to_regclass('{t}')")}
        return state


def files_in(folder: Path) -> dict[str, object]:
    """Every path under `folder`: a regular file's bytes and mode (a sparse giant: its size and
    mtime, not 256 MB of reading), anything else its kind and mode; links are not followed."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        info, name = path.lstat(), str(path.relative_to(folder))
        if stat.S_ISREG(info.st_mode) and info.st_size <= 1 << 20:
            found[name] = (path.read_bytes(), info.st_mode)  # root reads even a mode-000 file
        else:
            found[name] = (stat.S_IFMT(info.st_mode), info.st_mode, info.st_size, info.st_mtime_ns)
    return found


class _MisbehavingApi(BaseHTTPRequestHandler):
    """An account API that fails in one way per path prefix: /401/v1/..., /nojson/v1/..."""

    ANSWERS: ClassVar[dict[str, tuple[int, bytes, str]]] = {
        "401": (401, b'{"ok": false, "error": "Not signed in."}', "application/json"),
        "403": (403, b'{"ok": false, "error": "Not a member."}', "application/json"),
        "404": (404, b'{"ok": false, "error": "No such route."}', "application/json"),
        "500": (500, b'{"ok": false, "error": "boom"}', "application/json"),
        "502": (502, b"<html>Bad gateway</html>", "text/html"),
        "nojson": (200, b"<html>sign in</html>", "text/html"),
        "nofields": (200, b'{"ok": true}', "application/json"),
        "list": (200, b"[1, 2]", "application/json"),
    }

    def do_GET(self) -> None:  # the name http.server calls
        status, body, kind = self.ANSWERS[self.path.split("/")[1]]
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def bad_api():
    with http_server(_MisbehavingApi) as base:
        yield base


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the catalogue ----------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a case builds its command line from: the database, a private folder, a runbook."""

    stage: StageG
    tmp: Path
    env: Path
    runbook: Path
    reports: Path
    api: str  # the misbehaving API's base

    def reads(self, answer: str) -> list[str]:
        """verify-reads against an API that answers `answer`; a --report path, so that no default
        report folder is created before the call fails."""
        return self.argv("verify-reads", "--api", f"{self.api}/{answer}", "--cookie", COOKIE,
                         "--report", str(self.tmp / "reads.json"))

    def argv(self, *command: str, runbook: Path | None = None, url: str | None = None,
             env: Path | None = None) -> list[str]:
        return ["--runbook", str(runbook or self.runbook), "--database-url", url or self.stage.url,
                "--env-file", str(env or self.env), "--operator", "bad-input", *command]

    def report(self, name: str, body: object) -> str:
        path = self.tmp / name
        path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
        return str(path)

    def runbook_with(self, extra: str = "", replace=()) -> Path:
        folder = self.tmp / f"rb-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        return write_runbook(folder, self.env, self.reports, extra, replace=replace)


@dataclass
class Case:
    id: str
    make: Callable[[Ctx], list[str]]
    code: int
    says: str  # in the one sentence on stderr
    argparse: bool = False  # argparse's own usage block comes before its one error line
    child: bool = False  # needs permission bits that bind: a child process without DAC capabilities
    out: str | None = ""  # stdout; None: anything (a diff shown before a refused confirmation)
    marks: tuple = ()


def fixture_report(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _unreadable(path: Path, text: str = "") -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o000)
    return path


def _no_server(c: Ctx) -> str:
    return f"postgresql://postgres@/postgres?host={c.tmp}"  # a socket folder with no server in it


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _empty_db(c: Ctx) -> str:
    return create_database(c.stage.server, f"empty_{uuid.uuid4().hex[:10]}")


def _without_audit_events(c: Ctx) -> str:
    """Stage A applied, then a legacy table gone: the backfill must say which, and write nothing."""
    url = _empty_db(c)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_legacy_baseline(conn, ROOT / "sql")
    apply_v2(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE platform_audit_events")
    return url


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


VERIFY = fixture_report("upstream-verify.json")
BACKFILL = fixture_report("upstream-backfill.json")
CONSOLE_VERIFY = str(DATA / "console-verify.json")

def _write(name: str, body: object) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
        return path
    return make


def _sparse_huge(folder: Path) -> Path:
    path = folder / "huge.json"
    with path.open("wb") as file:
        file.truncate(report_store.MAX_REPORT_BYTES + 1)  # sparse: over the limit without using the disk
    return path


def _mode_000(folder: Path) -> Path:
    return _unreadable(folder / "locked.json", json.dumps(VERIFY))


# Bad report files: (name, make(folder) -> path, what the one sentence says, needs a child, marks).
BAD_REPORTS = [
    ("truncated", _write("cut.json", json.dumps(VERIFY)[:700]), "it may be truncated", False, ()),
    ('"ok": "yes"', _write("ok.json", VERIFY | {"ok": "yes"}),
     'field ok: Input should be a valid boolean (got "yes")', False, ()),
    ("checks not a list", _write("checks.json", VERIFY | {"checks": {"a": 1}}),
     "field checks: Input should be a valid list", False, ()),
    ("a check's ok is 1", _write("one.json", VERIFY | {"checks": [{"type": "count", "table": "a", "ok": 1}]}),
     "field checks[0].ok: Input should be a valid boolean (got 1)", False, ()),
    ("a count as a string", _write("b.json", BACKFILL | {"stages": [
        {"stage": "accounts", "oldCount": "20", "beforeCount": 0, "afterCount": 20, "affectedRows": 20}]}),
     "field stages[0].oldCount: Input should be a valid integer", False, ()),
    ("generatedAt without a zone", _write("zone.json", VERIFY | {"generatedAt": "2026-02-23T10:11:12"}),
     "field generatedAt: Input should have timezone info", False, ()),
    ("errors missing from a backfill", _write("b.json", {k: v for k, v in BACKFILL.items() if k != "errors"}),
     "field errors is missing", False, ()),
    ("over the size limit", _sparse_huge, "is over 256 MB, far bigger than any report", False, ()),
    ("not JSON", _write("text.json", "PASS count:accounts\n"), "is not valid JSON", False, ()),
    ("empty", _write("empty.json", ""), "is not valid JSON", False, ()),
    ("not UTF-8", _write("latin.json", b'{"ok": "\xff"}'), "is not UTF-8 text", False, ()),
    ("JSON but not an object", _write("list.json", [VERIFY]), "is JSON but not an object", False, ()),
    ("no report shape", _write("shape.json", {"ok": True, "generatedAt": "2026-02-23T10:11:12Z"}),
     "not a recon, backfill or verify report", False, ()),
    ("missing", lambda folder: folder / "nope.json", "does not exist; check the path", False, ()),
    ("a folder", lambda folder: folder, "is a folder", False, ()),
    ("unreadable (mode 000)", _mode_000, "cannot be read (Permission denied)", True, ()),
    ("nested 100,000 deep", _write("deep.json", "[" * 100_000 + "]" * 100_000), "nests its JSON far deeper",
     False, ()),
    ("a 5,000-digit count", _write("digits.json", json.dumps(VERIFY)[:-1] + ', "x": ' + "9" * 5000 + "}"),
     "holds a value no report has", False, ()),
]

CASES = [
    # -- arguments ------------------------------------------------------------------------------
    Case("promote: unknown stage", lambda c: c.argv("promote", "Z", "--yes"), 2, "Unknown stage 'Z' for promote"),
    Case("promote: empty stage", lambda c: c.argv("promote", "", "--yes"), 2, "Unknown stage '' for promote"),
    Case("promote: stage F", lambda c: c.argv("promote", "F", "--yes"), 2, "choose one of C, D, E, E-steady"),
    Case("promote: no terminal and no --yes", lambda c: c.argv("promote", "C"), 2, "pass --yes", out=None),
    Case("promote: stage missing", lambda c: c.argv("promote"), 2, "required: stage", argparse=True),
    Case("rollback: keep and drop dual-write", lambda c: c.argv("rollback", "--keep-dual-write", "--no-dual-write"),
         2, "not allowed with argument", argparse=True),
    Case("archive: --confirm missing", lambda c: c.argv("archive"), 2, "required: --confirm", argparse=True),
    Case("archive: wrong name (gates first)", lambda c: c.argv("archive", "--confirm", "nope"), 1,
         "Archive is refused"),
    Case("unknown command", lambda c: c.argv("bogus"), 2, "invalid choice: 'bogus'", argparse=True),
    Case("backfill: --batch-size abc", lambda c: c.argv("backfill", "--batch-size", "abc"), 2,
         "invalid int value: 'abc'", argparse=True),
    Case("backfill: --batch-size 0", lambda c: c.argv("backfill", "--batch-size", "0"), 2,
         "--batch-size must be a positive number of rows (got 0)"),
    Case("backfill: --batch-size -5", lambda c: c.argv("backfill", "--batch-size", "-5"), 2, "(got -5)"),
    Case("backfill: --tables accounts,nope", lambda c: c.argv("backfill", "--tables", "accounts,nope"), 2,
         "Unknown table nope"),
    Case("backfill: --tables ,", lambda c: c.argv("backfill", "--tables", ","), 2, "Unknown table (none given)"),
    Case("verify: --sample-size 0", lambda c: c.argv("verify", "--sample-size", "0"), 2,
         "--sample-size must be a positive number of accounts (got 0)"),
    Case("verify: --sample-size -3", lambda c: c.argv("verify", "--sample-size", "-3"), 2, "(got -3)"),
    Case("verify: --sample-size x", lambda c: c.argv("verify", "--sample-size", "x"), 2, "invalid int value: 'x'",
         argparse=True),
    Case("recon: --sample-rows -1", lambda c: c.argv("recon", "--sample-rows", "-1"), 2,
         "--sample-rows must be 0 or more (got -1)"),
    Case("recon: --sample-rows many", lambda c: c.argv("recon", "--sample-rows", "many"), 2,
         "invalid int value: 'many'", argparse=True),
    Case("verify-reads: no cookie", lambda c: c.argv("verify-reads", "--api", "http://127.0.0.1:9"), 2,
         f"No session cookie: pass --cookie or set {COOKIE_ENV}"),
    Case("verify-reads: empty cookie", lambda c: c.argv("verify-reads", "--api", "http://127.0.0.1:9", "--cookie", ""),
         2, "No session cookie"),
    Case("verify-reads: profile id without key",
         lambda c: c.argv("verify-reads", "--cookie", "k", "--profile-id", "p"), 2, "go together"),
    Case("verify-reads: key without profile id",
         lambda c: c.argv("verify-reads", "--cookie", "k", "--identity-public-key", "pk"), 2, "go together"),
    Case("verify-reads: API URL without a scheme",
         lambda c: c.argv("verify-reads", "--api", "not a url", "--cookie", "k"), 2, "not a url"),
    Case("verify-reads: connection refused",
         lambda c: c.argv("verify-reads", "--api", f"http://127.0.0.1:{_closed_port()}", "--cookie", COOKIE,
                          "--report", str(c.tmp / "r.json")), 1, "was refused; check --api"),
    Case("verify-reads: 401", lambda c: c.reads("401"), 1, "with 401"),
    Case("verify-reads: 403", lambda c: c.reads("403"), 1, "with 403"),
    Case("verify-reads: 404", lambda c: c.reads("404"), 1, "with 404"),
    Case("verify-reads: 500", lambda c: c.reads("500"), 1, "with 500"),
    Case("verify-reads: 502 with an HTML body", lambda c: c.reads("502"), 1, "with 502"),
    Case("verify-reads: a body that is not JSON", lambda c: c.reads("nojson"), 1, "a body that is not JSON"),
    Case("verify-reads: an answer missing fields", lambda c: c.reads("nofields"), 1, "lacks user, workspace"),
    Case("verify-reads: an answer that is a list", lambda c: c.reads("list"), 1, "JSON that is not an object"),
    Case("demo seed: no database", lambda c: ["--runbook", str(c.runbook), "demo", "seed"], 2,
         "No database to seed: pass --database-url or set DATABASE_URL"),
    Case("demo seed: size XL", lambda c: ["--runbook", str(c.runbook), "demo", "seed", "--size", "XL"], 2,
         "invalid choice: 'XL'", argparse=True),
    Case("demo traffic: no database",
         lambda c: ["--runbook", str(c.runbook), "demo", "traffic", "--api", "http://127.0.0.1:9", "--rate", "5"], 2,
         "No database: pass --database-url"),
    Case("demo traffic: negative duration",
         lambda c: ["--runbook", str(c.runbook), "demo", "traffic", "--api", "http://127.0.0.1:9", "--rate", "5",
                    "--duration", "-1", "--database-url", c.stage.url], 2, "duration must be above 0"),
    Case("demo traffic: not loopback",
         lambda c: ["--runbook", str(c.runbook), "demo", "traffic", "--api", "http://example.com", "--rate", "5",
                    "--duration", "1", "--database-url", c.stage.url], 2, "only to a loopback address"),
    Case("demo traffic: --rate fast",
         lambda c: ["--runbook", str(c.runbook), "demo", "traffic", "--api", "http://127.0.0.1:9", "--rate", "fast"],
         2, "invalid float value: 'fast'", argparse=True),
    # -- the deploy env file ------------------------------------------------------------------
    Case("env file: missing", lambda c: c.argv("status", env=c.tmp / "nope.env"), 2, "does not exist; check the path"),
    Case("env file: missing, on promote", lambda c: c.argv("promote", "C", "--yes", env=c.tmp / "nope.env"), 2,
         "does not exist"),
    Case("env file: a folder", lambda c: c.argv("status", env=c.tmp), 2, "is a folder, not a deploy env file"),
    Case("env file: a broken link",
         lambda c: (c.tmp / "link.env").symlink_to(c.tmp / "gone.env") or c.argv("status", env=c.tmp / "link.env"),
         2, "which does not exist; fix the link"),
    Case("env file: a FIFO (must not hang)", lambda c: c.argv("promote", "C", "--yes", env=_fifo(c.tmp / "fifo.env")),
         2, "is not a regular file"),
    Case("env file: not UTF-8",
         lambda c: (c.tmp / "latin.env").write_bytes(b"A=caf\xe9\n") and c.argv("status", env=c.tmp / "latin.env"),
         2, "is not valid UTF-8 (bad byte at offset 5)"),
    Case("env file: its folder is a file", lambda c: c.argv("status", env=c.env / "deploy.env"), 2,
         "cannot be opened (Not a directory)"),
    Case("env file: unreadable (mode 000)",
         lambda c: c.argv("promote", "C", "--yes", env=_unreadable(c.tmp / "locked.env", DEMO_ENV)), 2,
         "cannot be read by this user (permission denied)", child=True),
    # -- runbook.toml -------------------------------------------------------------------------
    Case("runbook: unknown key", lambda c: c.argv("status", runbook=c.runbook_with("\n[surprise]\nkey = 1\n")), 2,
         "key `surprise`: not a known key; allowed here: api, database, deploy, gates, paths, rehearsal, rollback, stages"),
    Case("runbook: wrong type",
         lambda c: c.argv("status", runbook=c.runbook_with(replace=[("confidence_period_hours = 24.0",
                                                                      'confidence_period_hours = "soon"')])),
         2, "key `gates.confidence_period_hours`"),
    Case("runbook: bad stage name",
         lambda c: c.argv("status", runbook=c.runbook_with(replace=[('id = "C"', 'id = "Q"')])), 2,
         "key `stages.4.id`"),
    Case("runbook: stages out of order",
         lambda c: c.argv("status", runbook=c.runbook_with(replace=[('id = "C"', 'id = "X"'), ('id = "D"', 'id = "C"'),
                                                                     ('id = "X"', 'id = "D"')])),
         2, "stages must be, in this order"),
    Case("runbook: zero verifies before the archive",
         lambda c: c.argv("status", runbook=c.runbook_with(replace=[("passing_verifies_before_archive = 3",
                                                                      "passing_verifies_before_archive = 0")])),
         2, "key `gates.passing_verifies_before_archive`"),
    Case("runbook: api.base not http",
         lambda c: c.argv("status", runbook=c.runbook_with(replace=[('base = "http://localhost:3000"',
                                                                      'base = "ftp://x"')])),
         2, "must start with http:// or https://"),
    Case("runbook: not TOML", lambda c: c.argv("status", runbook=Path(c.report("rb.toml", "this = = not toml"))), 2,
         "not valid TOML"),
    Case("runbook: missing", lambda c: c.argv("status", runbook=c.tmp / "nope.toml"), 2,
         "does not exist; pass --runbook PATH"),
    Case("runbook: a folder", lambda c: c.argv("status", runbook=c.tmp), 2, "Cannot read runbook file"),
    Case("runbook: unreadable (mode 000)",
         lambda c: c.argv("status", runbook=_unreadable(c.tmp / "rb.toml")), 2, "(PermissionError)", child=True),
    # -- the database -------------------------------------------------------------------------
    Case("database: no server at that socket", lambda c: c.argv("status", url=_no_server(c)), 3,
         "Cannot connect to postgresql://postgres@/postgres"),
    Case("database: no such database",
         lambda c: c.argv("status", url=c.stage.url.replace(f"/{_dbname(c.stage.url)}?", "/nosuchdb?")), 3,
         'database "nosuchdb" does not exist'),
    Case("database: not a URL", lambda c: c.argv("status", url="not a url"), 3, "Cannot connect to not a url"),
    Case("database: URL urlsplit cannot parse", lambda c: c.argv("status", url="postgresql://bob:pw@[::1/db"), 3,
         "Cannot connect"),
    Case("database: none given",
         lambda c: ["--runbook", str(c.runbook), "--env-file", str(c.env), "status"], 2, "No database given"),
    Case("database: a legacy table missing",
         lambda c: c.argv("backfill", "--report", str(c.tmp / "b.json"), url=_without_audit_events(c)), 1,
         "The legacy table platform_audit_events is missing"),
    Case("database: no legacy tables", lambda c: c.argv("migrate", url=_empty_db(c)), 2,
         "has no platform_schema_migrations table"),
    # -- report paths -------------------------------------------------------------------------
    Case("backfill --report in a missing folder",
         lambda c: c.argv("backfill", "--report", str(c.tmp / "missing" / "b.json")), 2,
         "missing does not exist; create it or choose another path"),
    Case("verify --report under a file", lambda c: c.argv("verify", "--report", str(c.env / "v.json")), 2,
         "is a file, not a folder"),
    Case("recon --out a folder", lambda c: c.argv("recon", "--out", str(c.tmp)), 2, "is a folder; give a file name"),
    Case("verify --report in /sys (no new files, even for root)",
         lambda c: c.argv("verify", "--report", "/sys/v.json"), 2, "Report folder /sys is not writable"),
    Case("verify --report in a read-only folder",
         lambda c: (c.tmp / "ro").mkdir(mode=0o555) or c.argv("verify", "--report", str(c.tmp / "ro" / "v.json")), 2,
         "is not writable (Permission denied)", child=True),
    Case("runbook report folder under a file",
         lambda c: c.argv("backfill", runbook=c.runbook_with(replace=[(f'report_dir = "{c.reports}"',
                                                                        f'report_dir = "{c.env}/reports"')])),
         2, "cannot be created"),
    # -- reports given to diff (the same files go to the TUI's report dialog below) ---------------
    *(Case(f"diff: {name}", lambda c, make=make: c.argv("diff", str(make(c.tmp)), CONSOLE_VERIFY), 2, says,
           child=child, marks=marks) for name, make, says, child, marks in BAD_REPORTS),
    Case("diff: two kinds", lambda c: c.argv("diff", CONSOLE_VERIFY, str(DATA / "upstream-backfill.json")), 2,
         "choose two reports of the same kind"),
]


@pytest.fixture(scope="module")
def tally(figures):
    counted: Counter = Counter()
    yield counted
    figures.record("test_bad_input: the catalogue through the CLI", workspaces=SMALL, inputs_tried=counted["tried"],
                   handled_as_documented=counted["handled"], known_bugs=counted["tried"] - counted["handled"],
                   child_processes=counted["child"], nothing_written=counted["handled"], tracebacks=0)


@pytest.fixture
def ctx(stage_g, bad_api, tmp_path, monkeypatch) -> Ctx:
    for name in ("DATABASE_URL", COOKIE_ENV, API_ENV):
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    env.chmod(0o600)
    report_dir = tmp_path / "reports"
    return Ctx(stage_g, tmp_path, env, write_runbook(tmp_path, env, report_dir), report_dir, bad_api)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_bad_input_is_one_sentence_and_changes_nothing(case: Case, ctx: Ctx, capsys, tally):
    tally["tried"] += 1
    argv = case.make(ctx)
    # The shared database, and the case's own one if it names another that exists.
    urls = {ctx.stage.url, *(argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--database-url")}
    files, dbs = files_in(ctx.tmp), {url: db_state(url) for url in urls}
    if case.child:
        if ctx.stage.child_url is None:
            pytest.skip("the server's socket cannot be linked where an unprivileged child reaches it")
        tally["child"] += 1
        done = run_child([ctx.stage.child_url if a == ctx.stage.url else a for a in argv], unprivileged=True)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        capsys.readouterr()
        try:
            code = main(argv)
        except BaseException as exc:
            pytest.fail(f"main() raised {type(exc).__name__}: {exc} (a traceback in a real run)")
        out, err = capsys.readouterr()

    assert "Traceback" not in out + err and COOKIE not in out + err
    assert code == case.code, err
    lines = err.splitlines()
    # One sentence; an argument error names the subcommand (`cutover promote: ...`).
    assert len(lines) == 1 and err.endswith("\n") and lines[0].startswith("cutover"), err
    assert not case.argparse or lines[0].endswith("--help`."), err
    assert case.says in lines[-1]
    if case.out is not None:
        assert out == case.out
    # Nothing written: no file appeared, changed or lost its mode; no row anywhere.
    assert files_in(ctx.tmp) == files
    for url, before in dbs.items():
        after = db_state(url)
        assert after == before, url
    assert not ctx.reports.exists()
    tally["handled"] += 1


def test_argument_errors_are_one_sentence(ctx, capsys):
    assert main(ctx.argv("backfill", "--batch-size", "abc")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err


def test_a_malformed_url_never_shows_its_password(ctx):
    """A URL urlsplit cannot parse, as an operator meets it: `cutover` as a process, the URL holding a password."""
    secret = "Hunter2-" + uuid.uuid4().hex[:8]
    done = run_child(ctx.argv("status", url=f"postgresql://bob:{secret}@[::1/db"))
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.returncode == 3



def test_a_wrong_database_is_left_as_it_was(ctx, capsys):
    url = _empty_db(ctx)  # someone else's database, named by mistake
    for command in (("status",), ("migrate", "--dry-run"), ("journal",)):
        main(ctx.argv(*command, url=url))
    capsys.readouterr()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT array_agg(schemaname || '.' || tablename ORDER BY 1) FROM pg_tables "
                            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchone()[0] is None


def test_an_odd_flag_value_reads_false_is_flagged_and_changes_nothing(ctx, capsys, figures):
    """READS=maybe (issue 2's example): not an error; shown as the API reads it, flagged."""
    ctx.env.write_text(DEMO_ENV.replace("ACCOUNT_SCHEMA_V2_READS=false", "ACCOUNT_SCHEMA_V2_READS=maybe"))
    before, db = ctx.env.read_bytes(), db_state(ctx.stage.url)
    assert main(ctx.argv("status")) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "ACCOUNT_SCHEMA_V2_READS='maybe' is not a boolean the API knows; it reads as false" in out
    assert ctx.env.read_bytes() == before and db_state(ctx.stage.url) == db
    figures.record("test_bad_input: odd flag value", workspaces=SMALL, inputs_tried=1, changes_made=0)



def test_recon_with_sample_rows_0_skips_the_estimate(ctx, capsys):
    code = main(ctx.argv("recon", "--sample-rows", "0", "--out", str(ctx.tmp / "recon.json")))
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert "skipped: sample_rows is 0" in out


def test_archive_with_the_wrong_name_when_every_gate_passes(pg_server_url, tmp_path, capsys, figures):
    """Issue 2's `archive` with the wrong database name, met by its own check: every gate of
    Stage F passes (walked there through the CLI, verifies recorded), so only the name refuses."""
    from helpers import DEPLOY_SECTION, promote_to_e_steady, record_report

    url = seeded(pg_server_url, workspaces=SMALL)
    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    runbook = write_runbook(tmp_path, env, tmp_path / "reports", DEPLOY_SECTION)

    def cutover(*command: str) -> tuple[int, str, str]:
        code = main(["--runbook", str(runbook), "--database-url", url, "--env-file", str(env),
                     "--operator", "bad-input", *command])
        return (code, *capsys.readouterr())

    promote_to_e_steady(cutover, url)
    assert cutover("close-rollback-window")[0] == 0
    for _ in range(3):
        record_report(url, "verify", ok=True, stage="E'")
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    before, db = env.read_bytes(), db_state(url)
    tried = 0
    for typed in (dbname + "x", dbname.upper(), "", f" {dbname}", "postgres"):
        tried += 1
        code, _, err = cutover("archive", "--confirm", typed)
        assert code == 2 and err.count("\n") == 1 and "not this database's name" in err, err
    assert env.read_bytes() == before and db_state(url) == db
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('legacy.platform_workspaces_legacy')").fetchone()[0] is None
    figures.record("test_bad_input: archive with a wrong name at F", workspaces=SMALL, inputs_tried=tried, archived=0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_tui_report_dialog_gives_one_sentence_per_bad_file(stage_g, tmp_path, figures):
    """The same bad report files through the console's `o` dialog on the reports screen: one
    error notification each, saying the same sentence, and the console stays where it was."""
    from textual.widgets import Input
    from tui.support import settle, toasts, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.report_path import ReportPathScreen
    from cutover_tui.tui.screens.reports import ReportsScreen

    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    settings = resolve_settings(runbook_path=write_runbook(tmp_path, env, tmp_path / "reports"), env_file=env,
                                database_url=stage_g.url, operator="bad-input", environ={})
    files = tmp_path / "files"
    files.mkdir()
    tried = 0
    app = make_app(settings)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        app.push_screen(ReportsScreen())
        await settle(pilot)
        screen = app.screen
        for name, make, says, child, marks in BAD_REPORTS:
            if child or marks:  # root reads a mode-000 file; the known bugs have their own test
                continue
            tried += 1
            app.clear_notifications()
            await pilot.press("o")
            await wait_until(pilot, lambda: isinstance(app.screen, ReportPathScreen))
            app.screen.query_one(Input).value = str(make(files))
            await pilot.press("enter")
            await wait_until(pilot, lambda: toasts(app) != "")
            await pilot.pause()
            shown = toasts(app)
            assert app.screen is screen, name
            assert shown.startswith("Bad input") and says in shown and shown.count("Report") == 1, (name, shown)
    figures.record("test_bad_input: bad report files in the TUI", workspaces=SMALL, inputs_tried=tried, crashes=0)


@pytest.mark.anyio

async def test_tui_report_dialog_with_a_deeply_nested_file(stage_g, tmp_path):
    from textual.widgets import Input
    from tui.support import settle, toasts, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.report_path import ReportPathScreen
    from cutover_tui.tui.screens.reports import ReportsScreen

    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    app = make_app(resolve_settings(runbook_path=write_runbook(tmp_path, env, tmp_path / "reports"), env_file=env,
                                    database_url=stage_g.url, operator="bad-input", environ={}))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        app.push_screen(ReportsScreen())
        await settle(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportPathScreen))
        app.screen.query_one(Input).value = str(deep)
        await pilot.press("enter")
        await wait_until(pilot, lambda: toasts(app) != "")
        assert toasts(app).startswith("Bad input"), toasts(app)


# --- database text shown literally ----------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_world(pg_server_url, tmp_path_factory):
    """Database text holding ODD, each arriving the way it would in production:
    - two active legacy identities of one workspace share ODD as their key fingerprint, so the
      backfill lands the younger as deleted and its warning's example rows hold ODD;
    - an operator named ODD promoted to C (the journal, the lock row); the console no longer
      takes such a name, so the rows are as an older console, or anyone with write access, left them;
    - a legacy workspace with ODD as its id and name arrived after the backfill, so a verify
      fails with ODD among content:accounts' example rows;
    - a report file has a check named ODD whose example rows hold ODD."""
    tmp_path = tmp_path_factory.mktemp("odd")
    url = seeded(pg_server_url, workspaces=SMALL)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""UPDATE platform_managed_users SET identity_key_fingerprint = %s WHERE id IN (
            SELECT id FROM platform_managed_users WHERE status <> 'deleted' AND workspace_id = (
                SELECT workspace_id FROM platform_managed_users WHERE status <> 'deleted'
                GROUP BY workspace_id HAVING count(*) > 1 ORDER BY workspace_id LIMIT 1) ORDER BY id LIMIT 2)""",
                     (ODD,))
    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    runbook = write_runbook(tmp_path, env, tmp_path / "reports")

    def settings(operator: str):
        return resolve_settings(runbook_path=runbook, env_file=env, database_url=url, operator=operator, environ={})

    with Session(settings("setup")) as session:
        _, backfill = jobs.backfill(session)
        assert json.dumps(ODD) in json.dumps(backfill.model_dump(mode="json", by_alias=True)["warnings"])
        jobs.verify(session)
    with Session(settings("odd")) as session:
        transitions.apply_change(session, transitions.plan_promotion(session, "C"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE cutover.journal SET operator = %s WHERE operator = 'odd'", (ODD,))
        conn.execute("INSERT INTO platform_workspaces (id, name) VALUES (%s, %s)", (ODD, ODD))
    body = {"ok": False, "generatedAt": "2026-02-23T10:11:13Z", "checks": [
        {"type": "integrity", "name": ODD, "ok": False, "count": 1, "rows": [{"id": "ws_1", "name": ODD}]}]}
    odd_report = tmp_path / "odd-verify.json"
    odd_report.write_text(json.dumps(body), encoding="utf-8")
    return {"url": url, "env": env, "runbook": runbook, "settings": settings, "report": odd_report,
            "tmp": tmp_path}


@contextmanager
def lock_held_by(world, operator: str):
    """Another console holding the operator lock (it goes with its session), its row naming `operator`."""
    with Session(world["settings"]("holder")) as other, other.operator_lock():
        other.conn.execute("UPDATE cutover.operator_lock SET operator = %s", (operator,))
        yield


def _on_a_terminal(argv: list[str]) -> tuple[int, bytes]:
    """`cutover ARGV` with its stdout on a pseudo-terminal: the bytes the terminal would get."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    child = subprocess.Popen([sys.executable, "-m", "cutover_tui.cli", *argv], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], CHILD_TIMEOUT)
            if not ready:
                raise AssertionError(f"no output for {CHILD_TIMEOUT} s: {seen!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        code = child.wait(CHILD_TIMEOUT)
    return code, seen


# Each command that shows database or report text, and its exit code here.
SHOWN = {
    "journal": (("journal",), 0),
    "status (lock holder)": (("status",), 0),
    "diff (report file)": (("diff", "{console}", "{odd}"), 1),
    "verify (example rows)": (("verify", "--report", "{tmp}/v-{run}.json"), 1),
    "journal --json": (("journal", "--json"), 0),
}
ESCAPED_BY_JSON = ("journal --json", "verify (example rows)")  # the CLI prints these through json.dumps


def _command(world, name: str) -> list[str]:
    args = [a.format(console=CONSOLE_VERIFY, odd=world["report"], tmp=world["tmp"], run=uuid.uuid4().hex[:6])
            for a in SHOWN[name][0]]
    return ["--runbook", str(world["runbook"]), "--database-url", world["url"], "--env-file", str(world["env"]),
            "--operator", "reader", *args]


ONE_LINE_FIELDS = ("journal", "status (lock holder)")  # an operator's name: one line, whatever it holds


@pytest.mark.parametrize("name", list(SHOWN))
def test_cli_to_a_pipe_never_interprets_the_text(name, odd_world, capsys, figures):
    """To a pipe the text is data: markup is never interpreted (the CLI has no Rich), and the
    JSON forms escape control characters."""
    with lock_held_by(odd_world, ODD) if name.startswith("status") else nullcontext():
        code = main(_command(odd_world, name))
    out, err = capsys.readouterr()
    assert code == SHOWN[name][1], err
    if name in ESCAPED_BY_JSON:
        assert "\x1b" not in out  # no raw ESC byte: json.dumps wrote it as \u001b
        assert "\\u001b[31m" in out and "[red]x[/red]" in out
    else:
        # byte for byte (no markup applied, nothing dropped), but for a one-line field's line breaks
        assert (ODD.replace("\r", "\\r") if name in ONE_LINE_FIELDS else ODD) in out
        assert name != "status (lock holder)" or f"held by {ODD.replace(chr(13), chr(92) + 'r')}" in out
    if name == "verify (example rows)":
        assert "FAIL content:accounts" in out  # ODD's workspace, missing in v2, among its examples
    figures.record(f"test_bad_input: literal text to a pipe, {name}", workspaces=SMALL, inputs_tried=1, interpreted=0)


@pytest.mark.parametrize("name", list(SHOWN))
def test_cli_on_a_terminal_shows_escapes_not_sends_them(name, odd_world):
    """The CLI writes no escape codes of its own for these commands, so an ESC or BEL byte on
    the terminal came from the data, and the terminal would obey it."""
    with lock_held_by(odd_world, ODD) if name.startswith("status") else nullcontext():
        code, seen = _on_a_terminal(_command(odd_world, name))
    assert code == SHOWN[name][1], seen
    assert b"[red]x[/red]" in seen  # the text is there...
    assert b"\x1b" not in seen and b"\x07" not in seen, seen  # ...but none of its control bytes reach the screen


def _cells(table) -> list[list]:
    return [list(table.get_row_at(i)) for i in range(table.row_count)]


def _no_control_bytes(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x08\r"), repr(text)


@pytest.mark.anyio
async def test_tui_shows_database_text_literally(odd_world, figures):
    """Dashboard (lock holder), journal (operator), a saved verify's example rows and a report
    file's check name: markup shown as text, control characters as visible escapes, no style."""
    from textual.widgets import DataTable, Input
    from tui.support import screen_text, settle, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.journal import JournalScreen
    from cutover_tui.tui.screens.report import ReportScreen
    from cutover_tui.tui.screens.report_path import ReportPathScreen
    from cutover_tui.tui.screens.reports import ReportsScreen

    with Session(odd_world["settings"]("setup")) as session:
        jobs.verify(session)  # fails: ODD's workspace is missing in v2
    places = 0
    with lock_held_by(odd_world, ODD):
        app = make_app(odd_world["settings"]("reader"))
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot)
            text = screen_text(app)
            _no_control_bytes(text)
            assert f"held by {ODD_SHOWN}" in text  # the lock holder on the dashboard
            places += 1

            await pilot.press("j")
            await settle(pilot)
            assert isinstance(app.screen, JournalScreen)
            operator = next(row[1] for row in _cells(app.screen.query_one(DataTable)) if "red" in row[1].plain)
            assert operator.plain == ODD_SHOWN and operator.spans == [] and not operator.style
            places += 1

            app.push_screen(ReportsScreen())
            await settle(pilot)
            listed = app.screen.query_one(DataTable)
            for kind, check in (("verify", "content:accounts"), ("backfill", "identities: duplicate active")):
                # The newest of its kind: the failing verify, the backfill with the warning.
                listed.move_cursor(row=next(i for i, r in enumerate(_cells(listed)) if r[2].plain == kind))
                await pilot.press("enter")
                await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen))
                table = app.screen.query_one(DataTable)
                table.move_cursor(row=next(i for i, r in enumerate(_cells(table)) if r[1].plain.startswith(check)))
                await pilot.pause()
                text = screen_text(app)
                _no_control_bytes(text)
                assert json.dumps(ODD)[1:-1] in text, text  # example rows as JSON: \u001b, \u0007, \t ...
                places += 1
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, ReportsScreen))

            await pilot.press("o")
            await wait_until(pilot, lambda: isinstance(app.screen, ReportPathScreen))
            app.screen.query_one(Input).value = str(odd_world["report"])
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen))
            await pilot.pause()
            name = _cells(app.screen.query_one(DataTable))[0][1]
            assert name.plain == ODD_SHOWN and name.spans == [] and not name.style
            text = screen_text(app)
            _no_control_bytes(text)
            assert json.dumps(ODD)[1:-1] in text
            places += 1
    figures.record("test_bad_input: literal text in the TUI", workspaces=SMALL, inputs_tried=1, places_checked=places,
                   interpreted=0)
