"""`cutover serve` in a real headless Chromium: one walk on one served console (a browser and a
console process cost seconds to start, so the checks share them).

The database role logs in with a password, and the served command is given the URL only
through its environment. The walk: the dashboard renders with its stage line and "observer";
a backfill started outside the browser (through the engine, as a terminal console runs it)
shows its rows in the browser within 2 s; a write key pressed in the browser is refused as
served read-only; and the password is in nothing the browser got (page source, every network
event Chrome logged, every websocket frame), nor in the server's output or any process's
command line.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import ROOT, apply_v2, deploying_runbook, password_role

from cutover_tui.store.session import Session, resolve_settings
from cutover_tui.work import jobs
from cutover_tui.work.backfill import BackfillOptions, BackfillProgress

from .browser import Browser, chromium_missing

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=f"no browser to drive: {chromium_missing()}")

SECRET = "pw-" + "".join(random.Random().choices("ghjkmnpqrstuvwxyzGHJKMNPQRSTUVWXYZ", k=24))
STAGE_LINE = re.compile(r"A\s+0\s+B\s+G\s+C\s+D\s+E\s+E'\s+F")
SCREENSHOT = os.environ.get("CUTOVER_SERVE_SCREENSHOT")  # where to save the README's picture, when asked


@pytest.fixture
def password_url(legacy_db_url, pg_server_url):
    """The test database through a role that must give SECRET, Stage A and the console's schema
    applied by that role (the console uses only a schema of its own role)."""
    with password_role(pg_server_url, legacy_db_url, SECRET) as url:
        yield apply_v2(url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, server: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"cutover serve did not listen on {port} within {timeout} s")


def _command_lines() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # ended meanwhile
    return lines


def test_served_console_in_a_browser(password_url, env_file, tmp_path):
    runbook = deploying_runbook(tmp_path)
    port = _free_port()
    environment = {**os.environ, "DATABASE_URL": password_url, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(runbook), "--env-file", str(env_file),
         "--operator", "watcher", "serve", "--port", str(port)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        _wait_listening(port, server)
        browser = Browser()
        browser.open(f"http://127.0.0.1:{port}/")
        browser.wait_for(lambda s: STAGE_LINE.search(s) and "next steps" in s and "observer" in s, 20,
                         "dashboard with its stage line")
        assert not [line for line in _command_lines() if "--observer" in line and SECRET in line]
        assert [line for line in _command_lines() if "--observer" in line], "no console process per browser"

        # A backfill started outside the browser, held after its first batch so it is caught running.
        first_batch, pause = threading.Event(), threading.Event()

        def progress(p: BackfillProgress) -> None:
            if not first_batch.is_set():
                pause.set()
                first_batch.set()

        settings = resolve_settings(runbook_path=runbook, env_file=env_file, database_url=password_url,
                                    operator="ann")
        outcome: dict = {}

        def run() -> None:
            with Session(settings) as session, session.translated():
                outcome["report"] = jobs.backfill(session, BackfillOptions(batch_size=5, workers=1),
                                                  progress=progress, pause=pause)
        job = threading.Thread(target=run)
        job.start()
        try:
            assert first_batch.wait(30), "the backfill never finished a batch"
            seconds = browser.wait_for(lambda s: "backfill running by ann" in s, 2.0, "backfill progress")
            assert re.search(r"accounts \S* *\d+%", browser.screen()) or "rows" in browser.screen()
            assert "lock: ann" in browser.screen()  # the header: who holds the operator lock
        finally:
            pause.clear()
            job.join(60)
        assert "report" in outcome, "the backfill failed"
        browser.wait_for(lambda s: "backfill running" not in s, 5, "the backfill's end")
        print(f"progress in the browser {seconds:.2f} s after the first batch")

        browser.press("f")
        browser.wait_for(lambda s: "Served read-only" in s, 5, "the refusal")
        if SCREENSHOT:
            time.sleep(1)  # the toast's fade-in
            browser.driver.save_screenshot(SCREENSHOT)

        seen = [browser.driver.page_source, *browser.events]
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        out, err = server.communicate(timeout=20)
    seen += [out, err]
    for secret in (SECRET, quote(SECRET, safe=""), password_url):
        assert not [text for text in seen if secret in text]
    assert "Serving the console" in out and "***" in out
