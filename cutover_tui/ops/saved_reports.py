"""Saved reports as the console's report screens ask for them: each a function of the session,
so no screen picks a connection-level call."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ..reports import store as report_store
from ..reports.diff import ReportDiff, Side, compared
from ..reports.models import Report
from ..reports.store import StoredReport
from ..store.session import Session


def recent(session: Session, limit: int) -> list[StoredReport]:
    """The newest `limit` reports of every kind, newest first."""
    return report_store.recent_all(session.conn, limit)


def load(session: Session, stored: StoredReport) -> Report:
    return report_store.load_stored(session.conn, stored.id)


def load_file(_session: Session, path: str) -> Report:
    return report_store.load_report(Path(path).expanduser())


def saved(session: Session, stored: StoredReport) -> Side:
    return Side(load(session, stored), stored.kind, f"saved {stored.id}")


def compare(session: Session, first: StoredReport, second: StoredReport) -> tuple[ReportDiff, Side, Side]:
    """Two saved reports, the older as before."""
    return compared(saved(session, first), saved(session, second))


def against_saved(session: Session, this: Side, stored: StoredReport | None) -> tuple[ReportDiff, Side, Side]:
    """A saved report against the one of its kind saved before it; a file against the latest saved."""
    if stored is not None:
        other = report_store.previous(session.conn, stored.id)
        if other is None:
            raise BadInput(f"No {this.kind} report was saved before this one, so there is nothing to "
                           "compare it with.")
    else:
        other = report_store.latest(session.conn, this.kind)  # type: ignore[arg-type]
        if other is None:
            raise BadInput(f"No {this.kind} report is saved in this database yet, so there is nothing to "
                           "compare this file with.")
    return compared(saved(session, other), this)


def against_previous(session: Session, stored: StoredReport) -> tuple[ReportDiff, Side, Side]:
    """A saved report against the one of its kind saved before it."""
    return against_saved(session, saved(session, stored), stored)
