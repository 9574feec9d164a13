"""Secrets: every command run with a password in the database URL and a session cookie, then
everything the console wrote or showed is searched for them.

A role that must log in with a password (scram over the socket; the embedded server trusts
everyone else) owns the walk: migrate, recon, backfill, verify, verify-reads against the
stand-in API with a demo session cookie, diff, promote C, restore-flags, promote D under
live demo traffic, promote E, rollback, promote E again, promote E', close the rollback window,
archive, status and journal in both forms; then the error paths that are most likely to echo
a secret: a wrong password that contains the right one, a cookie the API refuses that contains
the real one, an API that is not there, a refused gate, a seed refused. The console (TUI) then
opens with the same URL and an `ApiTarget` holding the cookie, runs a verify and the API read
check, shows their reports, the journal and the reports list; and once more with the wrong
password.

Searched: every command's stdout and stderr, every log record at DEBUG (caplog: the console's,
the stand-in API's, httpx's, psycopg's), every report file, every row of every table in the
`cutover` schema, the env file, the Postgres server log written meanwhile, and the text of
every TUI screen and notification. Searched for: the password and the cookie as they are,
URL-quoted and JSON-escaped, and each half of the cookie (a truncated echo). Zero hits.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helpers import ROOT, age_journal, password_role

from cutover_tui.cli import main
from cutover_tui.demo.api import serve_api
from cutover_tui.demo.deployment import LOG_FILE, STATE_FILE, environment_of, start_api, stop_api
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.demo.run import DemoEnvironment, demo_session, write_demo_runbook
from cutover_tui.rules.runbook import load_runbook
from cutover_tui.store.session import resolve_settings
from cutover_tui.work.api_check import API_ENV, COOKIE_ENV
from cutover_tui.work.jobs import ApiTarget

from .support import seeded

SMALL = 20  # workspaces: the walk is about where text goes, not volume
# No hex digits, so no checksum, id or xmin can hold a piece of it by chance.
SECRET = "pw-" + "".join(random.Random().choices("ghjkmnpqrstuvwxyzGHJKMNPQRSTUVWXYZ", k=24))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def password_url(pg_server_url):
    """A seeded legacy database (no Stage A yet) and the URL of a superuser role that must give
    SECRET to log in; the server's pg_hba.conf is restored afterwards."""
    admin = seeded(pg_server_url, workspaces=SMALL, v2=False)
    with password_role(pg_server_url, admin, SECRET) as url:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url.replace(SECRET, SECRET + "x")).close()  # the password really is needed
        yield admin, url


def forms(secret: str) -> list[str]:
    """How a secret could show: as is, URL-quoted, JSON-escaped, or half of it (cut short)."""
    half = len(secret) // 2
    return sorted({secret, quote(secret, safe=""), json.dumps(secret)[1:-1], secret[:half], secret[half:]})


def server_log_from(admin: str, offset: int) -> str:
    with psycopg.connect(admin) as conn:
        size = conn.execute("SELECT size FROM pg_stat_file('log')").fetchone()[0]
        return conn.execute("SELECT pg_read_file('log', %s, %s)", (offset, size - offset)).fetchone()[0]


def server_log_size(admin: str) -> int:
    with psycopg.connect(admin) as conn:
        return conn.execute("SELECT size FROM pg_stat_file('log')").fetchone()[0]


def console_schema(admin: str) -> str:
    """Every row of every table the console keeps, as JSON text."""
    with psycopg.connect(admin) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'cutover' ORDER BY 1")]
        assert {"journal", "reports", "backfill_runs", "operator_lock"} <= set(tables)
        return "\n".join(str(conn.execute(f"SELECT json_agg(t) FROM cutover.{t} t").fetchone()[0]) for t in tables)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.anyio
async def test_no_output_report_row_or_log_holds_the_password_or_the_cookie(
        password_url, tmp_path, capsys, caplog, monkeypatch, figures):
    admin, url = password_url
    for name in ("DATABASE_URL", COOKIE_ENV, API_ENV):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG)
    log_start = server_log_size(admin)
    env = tmp_path / "deploy.env"
    env.write_text(DEMO_ENV, encoding="utf-8")
    report_dir = tmp_path / "reports"
    # The demo's runbook: its [deploy] restarts the stand-in API, a process of its own, with the
    # env file's flags (the commands run from its folder and find the package as if installed).
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    folder = tmp_path / "demo"
    folder.mkdir()
    runbook = write_demo_runbook(load_runbook(ROOT / "runbook.toml"), DemoEnvironment(
        folder=folder, database_url=url, server_version="", env_file=env, report_dir=report_dir))
    seen: list[tuple[str, str]] = []  # (where it was, the text): everything searched
    runs: list[tuple[str, int]] = []

    def cutover(*command: str, code: int | None = 0, database_url: str = url) -> str:
        capsys.readouterr()
        got = main(["--runbook", str(runbook), "--database-url", database_url, "--env-file", str(env),
                    "--operator", "sec", *command])
        out, err = capsys.readouterr()
        seen.extend(((f"stdout of {command[0]}", out), (f"stderr of {command[0]}", err)))
        runs.append((command[0] if command[0] != "demo" else " ".join(command[:2]), got))
        assert code is None or got == code, (command, out, err)
        return out + err

    def set_flags(**values: str) -> None:
        text = env.read_text(encoding="utf-8")
        for name, value in values.items():
            key = f"ACCOUNT_SCHEMA_V2_{name}"
            text = "\n".join(f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.split("\n"))
        env.write_text(text, encoding="utf-8")

    try:
        api = start_api(folder, url, env, os.getpid())
        _, _, cookie = demo_session(api, url)
        assert len(cookie) >= 32
        # Signing in is the operator's act, not the console's: httpcore's DEBUG trace of that
        # response carries its set-cookie header, so the search starts after it.
        caplog.clear()
        reads = ("verify-reads", "--api", api, f"--cookie={cookie}")

        # Stage A, 0, B, G.
        cutover("status")
        cutover("status", "--json")
        assert "-- dry run" in cutover("migrate", "--dry-run")
        cutover("migrate")
        assert "Nothing to apply" in cutover("migrate")
        cutover("recon", "--out", str(tmp_path / "recon.json"), "--sample-rows", "200")
        cutover("recon", "--json", "--sample-rows", "50")
        cutover("backfill", "--report", str(tmp_path / "backfill.json"))
        cutover("backfill", "--json")  # the idle re-run, into the runbook's report folder
        assert "PASS content:accounts" in cutover("verify", "--report", str(tmp_path / "verify-g.json"))
        assert "PASS users" in cutover(*reads, "--report", str(tmp_path / "reads-g.json"))
        idle = next(report_dir.glob("accounts-v2-backfill-report-*.json"))  # the idle re-run's
        cutover("diff", str(tmp_path / "backfill.json"), str(idle))

        # C, a hand edit restored, D under live traffic, E, a rollback, E again, E'.
        cutover("promote", "C", "--yes")  # the runbook's [deploy] runs after every flag write
        set_flags(READS="false", WRITES="true")  # by hand, and illegal
        assert "ILLEGAL" in cutover("status") and "ok  restore-flags" in seen[-2][1]
        cutover("restore-flags", "--yes")
        assert '"ok": true' in cutover(*reads, "--json")  # after C's (latest) deployment, as D needs
        cutover("promote", "D", "--yes")
        cutover("demo", "traffic", "--api", api, "--rate", "20", "--duration", "2", "--accounts", "2",
                "--database-url", url)
        cutover("verify", "--report", str(tmp_path / "verify-d.json"))
        cutover("diff", str(tmp_path / "verify-g.json"), str(tmp_path / "verify-d.json"), "--json")
        cutover(*reads, "--report", str(tmp_path / "reads-d.json"))
        cutover("promote", "E", "--yes")
        cutover("rollback", "--yes")
        cutover("verify", "--repair", "--report", str(tmp_path / "verify-rollback.json"))
        cutover("promote", "E", "--yes")
        age_journal(admin, 25)  # past the confidence period
        cutover("verify")
        cutover("promote", "E-steady", "--yes")
        cutover("deploy")  # by hand: the same flags again

        # Error paths most likely to echo a secret.
        wrong = url.replace(SECRET, SECRET + "x")  # holds the right password as a prefix
        assert "password authentication failed" in cutover("status", code=3, database_url=wrong)
        assert "401" in cutover("verify-reads", "--api", api, f"--cookie={cookie}x", "--report",
                                str(tmp_path / "r401.json"), code=1)
        cutover("verify-reads", "--api", f"http://127.0.0.1:{closed_port()}", f"--cookie={cookie}", code=1)
        cutover("promote", "C", "--yes", code=1)  # refused by its gate
        cutover("demo", "seed", "--database-url", url, code=2)  # the database already holds legacy rows
        cutover("archive", "--confirm", "not-the-name", code=1)  # refused by its gates first

        # The console, with the same URL and an ApiTarget holding the cookie.
        console = await _walk_the_console(url, env, report_dir, ApiTarget(api=api, cookie=cookie), runbook)
        # It showed the read check's plan, and its run in the journal table.
        assert any("The session cookie is never shown or written" in text for text in console)
        assert any("sec-tui verify-reads" in text for text in console)
        seen.extend(("the console", text) for text in console)
        seen.extend(("the console, wrong password", text) for text in
                    await _walk_the_console(wrong, env, report_dir, None, runbook))

        # The archive last: it moves the legacy tables the stand-in API reads in some states.
        cutover("close-rollback-window")
        for _ in range(3):  # the passing verifies in E' the archive's gate asks for
            cutover("verify")
        dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        assert "not this database's name" in cutover("archive", "--confirm", dbname + "x", code=2)
        assert "Archived" in cutover("archive", "--confirm", dbname)
        cutover("journal")
        cutover("journal", "--json")
        cutover("status", "--json")
        cutover("tui", code=2)  # no terminal: one sentence
    finally:
        stop_api(folder)

    # What the commands left: report files (named and in the report folder), every console
    # table's rows, the env file, the logs of this process and of the server.
    # Not the demo API's state file: it keeps the URL of the database the API serves (mode 0600), as
    # a real API's deployment keeps its DATABASE_URL; the API's log is searched.
    files = sorted({*tmp_path.rglob("*.json"), *report_dir.rglob("*"), folder / LOG_FILE} - {folder / STATE_FILE})
    seen.extend((f"file {path.name}", path.read_text(encoding="utf-8")) for path in files if path.is_file())
    seen.append(("the cutover schema's rows", console_schema(admin)))
    seen.append(("the env file", env.read_text(encoding="utf-8")))
    seen.append(("caplog", caplog.text))
    seen.extend((f"log record of {r.name}", f"{r.getMessage()} {r.args!r}") for r in caplog.records)
    seen.append(("the server log", server_log_from(admin, log_start)))

    everything = "\n".join(text for _, text in seen)
    # It all ran: every stage's journal row is there, and the console did its jobs.
    assert all(f'"action": "{action}"' in everything for action in (
        "migrate", "recon", "backfill", "verify", "verify-reads", "promote", "restore-flags", "rollback-opened",
        "rollback-closed", "rollback-window-closed", "archive")), "a step did not run"
    assert "PASS content:accounts" in everything
    assert sum(path.is_file() for path in files) >= 10
    hits = {where: text[max(0, text.find(form) - 150):text.find(form) + 80]
            for where, text in seen for form in [*forms(SECRET), *forms(cookie)] if form in text}
    assert hits == {}, hits
    commands = sorted({command for command, _ in runs})
    figures.record("test_secrets: password and cookie never written", workspaces=SMALL, commands=len(commands),
                   invocations=len(runs), tui_sessions=2, report_files=sum(p.is_file() for p in files),
                   log_records=len(caplog.records), bytes_searched=len(everything.encode()),
                   forms_searched=len(forms(SECRET)) + len(forms(cookie)), leaks=0, command_names=" ".join(commands))


async def _walk_the_console(url: str, env: Path, report_dir: Path, target: ApiTarget | None,
                            runbook: Path) -> list[str]:
    """Open the console, run a verify and the API read check (with `target`), open their
    reports, the journal and the reports list; every screen's text and every notification."""
    from textual.widgets import DataTable, RichLog
    from tui.support import screen_text, settle, toasts, wait_until

    from cutover_tui.tui.app import make_app
    from cutover_tui.tui.screens.job import JobScreen
    from cutover_tui.tui.screens.report import ReportScreen
    from cutover_tui.tui.screens.reports import ReportsScreen

    settings = resolve_settings(runbook_path=runbook, env_file=env, database_url=url, operator="sec-tui",
                                report_dir=report_dir, environ={})
    shown: list[str] = []

    async def look() -> None:
        """The screen's text, its notifications, every table's cells and every log's lines."""
        await pilot.pause()
        shown.extend((screen_text(app), toasts(app)))
        for table in app.screen.query(DataTable):
            shown.append(" ".join(str(cell) for i in range(table.row_count) for cell in table.get_row_at(i)))
        shown.extend("\n".join(strip.text for strip in log.lines) for log in app.screen.query(RichLog))

    app = make_app(settings, api_target=target)
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        await look()
        if target is None:  # the wrong password: one sentence on the dashboard, nothing more
            assert "password authentication failed" in shown[-1] + shown[-2]
            return shown
        for key in ("v", "a"):  # verify, then the API read check with the cookie
            await pilot.press(key)
            await wait_until(pilot, lambda: isinstance(app.screen, JobScreen))
            screen = app.screen
            await look()
            await pilot.press("enter")
            await wait_until(pilot, lambda job=screen: job.run is not None and not job.run.running)
            await settle(pilot)
            await look()
            assert screen.run.state == "done", screen.run.error
            await pilot.press("o")
            await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen))
            await look()
            await pilot.press("escape", "escape")
            await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        await look()
        await pilot.press("d")
        app.push_screen(ReportsScreen())
        await settle(pilot)
        await look()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen))
        await look()
    return shown


def test_a_password_in_the_api_url_stays_out_of_the_logs(backfilled_url, env_file, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    with serve_api(backfilled_url, environment_of(env_file)) as api:
        _, _, cookie = demo_session(api, backfilled_url)
        caplog.clear()
        code = main(["--runbook", str(ROOT / "runbook.toml"), "--database-url", backfilled_url, "--env-file",
                     str(env_file), "verify-reads", "--api", api.replace("http://", f"http://ops:{SECRET}@"),
                     f"--cookie={cookie}", "--report", str(tmp_path / "reads.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert SECRET not in out + err + (tmp_path / "reads.json").read_text()  # the console's own outputs: clean
    assert SECRET not in caplog.text
