"""Small helpers the database tests share: recording reports and moving the clock back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer

import psycopg

from cutover_tui import reports
from cutover_tui.db import ensure_console_schema


def record_report(url: str, kind: reports.ReportKind, *, ok: bool, stage: str | None = None,
                  at: datetime | None = None) -> reports.StoredReport:
    """A report in the §4 shape, stored as the console stores its own."""
    at = at or datetime.now(timezone.utc)
    body = {"ok": ok, "generatedAt": at.isoformat()}
    if kind == "backfill":  # a run over every table (a failing one: errors in pixbooks)
        from cutover_tui.mapping import TABLES

        stages = [{"stage": t.v2, "oldCount": 1, "beforeCount": 0, "afterCount": 1, "affectedRows": 1} for t in TABLES]
        body |= {"stages": stages, "errors": [] if ok else [{"stage": "pixbooks", "error": "x", "rows": []}],
                 "warnings": []}
    else:
        body |= {"checks": [{"type": "count", "ok": ok, "table": "accounts", "oldTable": "platform_workspaces",
                             "oldCount": 1, "newCount": 1 if ok else 0}]}
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_console_schema(conn)
        return reports.store(conn, kind, body, generated_at=at, stage=stage, path=None)


def age_journal(url: str, hours: float) -> None:
    """Pretend every journal entry happened `hours` earlier (for the confidence period)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE cutover.journal SET at = at - %s", (timedelta(hours=hours),))
        conn.execute("UPDATE cutover.reports SET generated_at = generated_at - %s", (timedelta(hours=hours),))


def fingerprint(url: str) -> dict[str, str]:
    """Every v2 row's content, one digest per table: equal digests, equal tables row for row."""
    from cutover_tui.mapping import TABLES

    with psycopg.connect(url) as conn:
        return {t.v2: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x.id), '')) FROM {t.v2} x")
                .fetchone()[0] for t in TABLES}


@contextmanager
def http_server(handler: type) -> Iterator[str]:
    """A real local HTTP server answering with `handler` (a BaseHTTPRequestHandler); its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # a client that hangs up is part of the test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
