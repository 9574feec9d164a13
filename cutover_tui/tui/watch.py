"""Changes made outside this console, seen within a second: another operator's journal row
(LISTEN on the channel every journal write notifies) and a hand edit of the env file (its
size, time and inode, looked at twice a second). The dashboard is gathered again on either,
so keys are never judged on facts a periodic refresh would show only seconds later."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from ..errors import CutoverError
from ..store.db import connect
from ..store.journal import JOURNAL_CHANNEL

LOOK_SECONDS = 0.5
RECONNECT_SECONDS = 5.0


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class ExternalChanges:
    """Calls `changed()` from its own thread; `stop()` ends it within LOOK_SECONDS."""

    def __init__(self, env_file: Path, database_url: str, changed: Callable[[], None]) -> None:
        self.env_file, self.database_url, self.changed = env_file, database_url, changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="external-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(LOOK_SECONDS * 4)

    def _run(self) -> None:
        seen = _signature(self.env_file)
        conn: psycopg.Connection | None = None
        retry_at = 0.0
        while not self._stop.is_set():
            if conn is None and time.monotonic() >= retry_at:
                conn = self._listen()
                retry_at = time.monotonic() + RECONNECT_SECONDS
            try:
                if conn is not None:
                    if any(True for _ in conn.notifies(timeout=LOOK_SECONDS)):
                        self.changed()
                else:
                    self._stop.wait(LOOK_SECONDS)
            except psycopg.Error:  # the database went away: keep watching the file, listen again later
                _close(conn)
                conn = None
            now = _signature(self.env_file)
            if now != seen:
                seen = now
                self.changed()
        _close(conn)

    def _listen(self) -> psycopg.Connection | None:
        try:
            conn = connect(self.database_url, autocommit=True)
        except (psycopg.Error, CutoverError):  # unreachable: the console says so itself; try again later
            return None
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(JOURNAL_CHANNEL)))
        except psycopg.Error:
            conn.close()
            return None
        return conn


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None and not conn.closed:
        conn.close()
