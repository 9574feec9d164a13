"""Rows an operator accepted as lost (`cutover accept-loss`): what the dashboard, `status` and
every later backfill report say of them."""

from __future__ import annotations

import psycopg
from pydantic import BaseModel


class AcceptedLoss(BaseModel):
    operator: str
    reason: str
    rows: int


def _none_yet(conn: psycopg.Connection) -> bool:
    """No loss was ever accepted here (the console's schema predates the table)."""
    return conn.execute("SELECT to_regclass('cutover.accepted_losses')").fetchone() == (None,)


def accepted(conn: psycopg.Connection) -> list[AcceptedLoss]:
    """Each operator's and reason's accepted rows, oldest first."""
    if _none_yet(conn):
        return []
    return [AcceptedLoss(operator=operator, reason=reason, rows=rows) for operator, reason, rows in conn.execute(
        "SELECT operator, reason, count(*) FROM cutover.accepted_losses GROUP BY 1, 2 ORDER BY min(at), 1, 2")]


def by_class(conn: psycopg.Connection) -> dict[str, int]:
    """'table: issue' -> rows accepted as lost, as a backfill report carries them."""
    if _none_yet(conn):
        return {}
    return dict(conn.execute("SELECT table_name || ': ' || issue, count(*) FROM cutover.accepted_losses "
                             "GROUP BY 1 ORDER BY 1").fetchall())
