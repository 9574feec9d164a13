"""Remedies for the anomalies the backfill reports, and accepting a loss.

Each error class of the backfill's rules (`rules.mapping`) has the rule behind it in one
sentence, its rows counted live by the backfill's own source query, and the remedies an
experienced operator would reach for, as fixed SQL on legacy. A remedy runs in one
transaction under the operator lock; every row it touches is first kept whole in
`cutover.remedy_rows` (to_jsonb of the row), so `undo` puts legacy back exactly. Or the
operator accepts the loss of the rows with a reason, which the backfill gate then counts
as settled. Everything is journaled.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from ..errors import BadInput, Refused
from ..files.atomic import atomic_write
from ..rules.mapping import BY_NAME, TABLES, source_query
from ..store import journal
from ..store.db import scalar
from ..store.session import Session

LEGACY_TABLES = frozenset(t.legacy for t in TABLES)


@dataclass(frozen=True)
class Change:
    """One table's part of a remedy: which of its rows (given the class's ids) and what happens."""

    table: str  # a legacy table
    change: str  # 'deleted' or 'updated'
    rows: str  # SELECT id ... with %(ids)s, the class's affected ids
    apply: str  # with %(rows)s, the ids `rows` found


def _delete(table: str, rows: str) -> Change:
    return Change(table, "deleted", rows, f"DELETE FROM {table} WHERE id = ANY(%(rows)s)")


_THE_IDS = "SELECT id FROM {table} WHERE id = ANY(%(ids)s)"
_SNAPSHOTS_OF_BOOKS = "SELECT id FROM platform_book_snapshots WHERE book_id = ANY(%(ids)s)"
_BOOKS_OF_IDENTITIES = "SELECT id FROM platform_books WHERE managed_user_id = ANY(%(ids)s)"
_SNAPSHOTS_OF_IDENTITIES = ("SELECT s.id FROM platform_book_snapshots s JOIN platform_books b ON b.id = s.book_id "
                            "WHERE b.managed_user_id = ANY(%(ids)s)")


# Legacy's own unique index (one active book per workspace, identity and collection) would refuse
# moving an active book onto one already there: such a book moves as deleted (it still lands).
_TAKEN = ("b.status <> 'deleted' AND EXISTS (SELECT 1 FROM platform_books o WHERE o.workspace_id = mu.workspace_id "
          "AND o.managed_user_id = b.managed_user_id AND o.collection_id = b.collection_id AND o.status <> 'deleted')")


@dataclass(frozen=True)
class Choice:
    name: str
    summary: str
    changes: tuple[Change, ...]


def _book_deleted(summary: str) -> Choice:
    return Choice("delete", summary, (_delete("platform_book_snapshots", _SNAPSHOTS_OF_BOOKS),
                                      _delete("platform_books", _THE_IDS.format(table="platform_books"))))


@dataclass(frozen=True)
class AnomalyClass:
    table: str  # the v2 table whose backfill reports it
    issue: str  # the issue text, as the backfill's report names it
    rule: str  # the rule behind it, in one sentence
    choices: tuple[Choice, ...]
    kind: str = "error"  # a warning's rows land (as the rule says), so nothing is lost or to remedy

    @property
    def key(self) -> str:
        return f"{self.table}:{re.sub(r'[^a-z0-9]+', '-', self.issue.lower()).strip('-')}"

    def choice(self, name: str) -> Choice:
        found = next((c for c in self.choices if c.name == name), None)
        if found is None:
            if self.kind == "warning":
                raise BadInput(f"{self.key} is a warning: its rows land as the rule says, so there is nothing to "
                               "remedy.")
            names = ", ".join(c.name for c in self.choices) or "none: accept the loss instead"
            raise BadInput(f"{self.key} has no remedy {name!r}; choose one of: {names}.")
        return found


CLASSES: tuple[AnomalyClass, ...] = (
    AnomalyClass("account_members", "workspace missing",
                 "A membership lands only when its workspace exists, since v2's account_members.account_id "
                 "must name an account.",
                 (Choice("delete", "Delete the orphaned memberships from legacy (their workspace is gone).",
                         (_delete("platform_workspace_members",
                                  _THE_IDS.format(table="platform_workspace_members")),)),)),
    AnomalyClass("account_members", "user missing",
                 "A membership lands only when its user exists in auth_users.",
                 (Choice("delete", "Delete the memberships of users that no longer exist.",
                         (_delete("platform_workspace_members",
                                  _THE_IDS.format(table="platform_workspace_members")),)),)),
    AnomalyClass("identities", "account missing",
                 "An identity (managed user) lands only when its workspace exists.",
                 (Choice("delete", "Delete the orphaned identities with their books and the books' snapshots "
                                   "(none of them could land).",
                         (_delete("platform_book_snapshots", _SNAPSHOTS_OF_IDENTITIES),
                          _delete("platform_books", _BOOKS_OF_IDENTITIES),
                          _delete("platform_managed_users", _THE_IDS.format(table="platform_managed_users")))),)),
    AnomalyClass("pixbooks", "identity missing",
                 "A book lands only when its identity exists.",
                 (_book_deleted("Delete the books whose identity is gone, with their snapshots."),)),
    AnomalyClass("pixbooks", "identity did not land (its account is missing)",
                 "A book lands only when its identity lands, and that needs the identity's workspace.",
                 (_book_deleted("Delete the books of identities that cannot land, with their snapshots."),)),
    AnomalyClass("pixbooks", "identity belongs to another account",
                 "A book lands only in the account of its identity: v2 ties a pixbook to its identity's account.",
                 (Choice("move", "Move each book to its identity's workspace (its snapshots follow it); one whose "
                                 "identity already has an active book in that collection there moves as deleted.",
                         (Change("platform_books", "updated", _THE_IDS.format(table="platform_books"),
                                 f"UPDATE platform_books b SET workspace_id = mu.workspace_id, status = CASE WHEN "
                                 f"{_TAKEN} THEN 'deleted' ELSE b.status END, updated_at = CASE WHEN {_TAKEN} THEN "
                                 "now() ELSE b.updated_at END FROM platform_managed_users mu "
                                 "WHERE mu.id = b.managed_user_id AND b.id = ANY(%(rows)s)"),)),
                  _book_deleted("Delete the books, with their snapshots."))),
    AnomalyClass("pixbooks", "another active book of this identity has the same collection",
                 "After the blank-to-'primary' rule one identity may have one active book per collection: the "
                 "oldest lands, the later ones break v2's unique index.",
                 (Choice("keep-oldest", "Keep the oldest book of each pair active and mark the later ones deleted "
                                        "(they land as deleted).",
                         (Change("platform_books", "updated", _THE_IDS.format(table="platform_books"),
                                 "UPDATE platform_books SET status = 'deleted', updated_at = now() "
                                 "WHERE id = ANY(%(rows)s)"),)),)),
    AnomalyClass("pixbook_snapshots", "its book did not land",
                 "A snapshot lands only with its book; remedying the book's class brings most of them along.",
                 (Choice("delete", "Delete the snapshots of books that will not land.",
                         (_delete("platform_book_snapshots", _THE_IDS.format(table="platform_book_snapshots")),)),)),
    AnomalyClass("audit_events", "account missing",
                 "An audit event lands only when its workspace exists.",
                 (Choice("delete", "Delete the audit events of workspaces that are gone.",
                         (_delete("platform_audit_events", _THE_IDS.format(table="platform_audit_events")),)),)),
    AnomalyClass("audit_events", "actor user missing",
                 "An audit event's actor must exist in auth_users (v2 keeps the event and clears a lost actor "
                 "only when the user is deleted later).",
                 (Choice("clear-actor", "Clear the actor of the events whose user is gone; the events stay.",
                         (Change("platform_audit_events", "updated",
                                 _THE_IDS.format(table="platform_audit_events"),
                                 "UPDATE platform_audit_events SET actor_user_id = NULL WHERE id = ANY(%(rows)s)"),
                          )),)),
    AnomalyClass("identities", "duplicate active fingerprint: landed as deleted",
                 "Within one account one active identity per key fingerprint: the oldest stays, the later ones "
                 "land with status 'deleted' (nothing is lost; their books follow them).", (), kind="warning"),
)
BY_KEY = {c.key: c for c in CLASSES}


def anomaly_class(key: str) -> AnomalyClass:
    found = BY_KEY.get(key.strip())
    if found is None:
        raise BadInput(f"Unknown anomaly class {key!r}; `cutover remedy list` names them (e.g. {CLASSES[5].key}).")
    return found


# --- which rows, now -------------------------------------------------------------------------

def _landed_books() -> sql.Composable:
    """The books that will land by the legacy rules (v2 may still be empty), as recon finds them."""
    return sql.SQL("(SELECT b.id FROM ({}) b WHERE b.issue_kind IS DISTINCT FROM 'error')").format(
        source_query(BY_NAME["pixbooks"], sql.SQL("true")))


def affected_ids(conn: psycopg.Connection, cls: AnomalyClass) -> Iterator[str]:
    """Every legacy row of the class now, by the backfill's own source query, streamed."""
    source = source_query(BY_NAME[cls.table], sql.SQL("true"), _landed_books())
    query = sql.SQL("SELECT s.id::text FROM ({}) s WHERE s.issue = %s ORDER BY s.id").format(source)
    with conn.cursor(name=f"remedy_ids_{id(cls)}") as cursor:  # server-side: a class may be large
        cursor.execute(query, (cls.issue,))
        for (row_id,) in cursor:
            yield row_id


def affected_ids_of(session: Session, cls: AnomalyClass) -> Iterator[str]:
    """`affected_ids` in a transaction of its own (a server-side cursor needs one)."""
    with session.conn.transaction():
        yield from affected_ids(session.conn, cls)


def export(ids: list[str], cls: AnomalyClass, path: Path) -> None:
    """Every id of the class, as CSV (table, issue, id) or a JSON list, by the file's suffix."""
    if path.suffix.lower() == ".json":
        text = json.dumps({"class": cls.key, "table": cls.table, "issue": cls.issue, "ids": ids}, indent=2)
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(("table", "issue", "id"))
        writer.writerows((cls.table, cls.issue, row_id) for row_id in ids)
        text = out.getvalue()
    try:
        atomic_write(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise BadInput(f"Cannot write {path} ({exc.strerror or exc}); choose another path.") from None


def read_ids(path: Path) -> list[str]:
    """Ids from a file: a JSON list (or `export`'s JSON), or one per line (`export`'s CSV too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"Cannot read the ids file {path} ({type(exc).__name__}); check the path.") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError:
            raise BadInput(f"{path} is not valid JSON; give a JSON list of ids or one id per line.") from None
        ids = data.get("ids") if isinstance(data, dict) else data
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadInput(f"{path} holds no list of id strings; give a JSON list of ids or one id per line.")
        return ids
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if rows and rows[0] == ["table", "issue", "id"]:
        return [row[2] for row in rows[1:]]
    return [row[0].strip() for row in rows]


def id_page(session: Session, key: str, offset: int, limit: int) -> list[str]:
    """One page of the class's ids now, for the console to page through."""
    return list(islice(affected_ids_of(session, anomaly_class(key)), offset, offset + limit))


class ClassState(BaseModel):
    key: str
    kind: str  # error or warning
    table: str
    issue: str
    rule: str
    count: int  # rows of the class now
    accepted: int  # of them, accepted as lost
    choices: dict[str, str]  # name -> summary


def states(session: Session) -> list[ClassState]:
    """Every error class with its rows now; the ones with none too, so the list is the same shape."""
    conn, found = session.conn, []
    with conn.transaction():
        for cls in CLASSES:
            ids = list(affected_ids(conn, cls))
            accepted = scalar(conn, "SELECT count(*) FROM cutover.accepted_losses WHERE table_name = %s "
                                    "AND issue = %s AND row_id = ANY(%s)", (cls.table, cls.issue, ids)) if ids else 0
            found.append(ClassState(key=cls.key, kind=cls.kind, table=cls.table, issue=cls.issue, rule=cls.rule,
                                    count=len(ids),
                                    accepted=accepted, choices={c.name: c.summary for c in cls.choices}))
    return found


class RemedyPlan(BaseModel):
    key: str
    choice: str
    summary: str
    ids: list[str]  # the class's rows now
    counts: dict[str, int]  # legacy table -> rows the remedy will change
    sql: list[str]


def plan(session: Session, key: str, choice_name: str) -> RemedyPlan:
    """What the remedy would change now, without changing it."""
    cls = anomaly_class(key)
    choice = cls.choice(choice_name)
    conn = session.conn
    with conn.transaction():
        ids = list(affected_ids(conn, cls))
        counts = {c.table: scalar(conn, f"SELECT count(*) FROM ({c.rows}) r", {"ids": ids}) for c in choice.changes}
    return RemedyPlan(key=cls.key, choice=choice.name, summary=choice.summary, ids=ids, counts=counts,
                      sql=[c.apply for c in choice.changes])


def _allowed(session: Session) -> None:
    facts = session.facts()
    if facts.archived:
        raise Refused("The legacy tables are archived (Stage F is done); there is nothing to remedy.")
    if facts.flags.writes or (facts.recorded_flags is not None and facts.recorded_flags.writes):
        raise Refused("v2 is, or was last written as, the write primary: legacy is no longer the source to fix; "
                      "accept the loss instead.")


def apply(session: Session, shown: RemedyPlan) -> journal.JournalEntry:
    """The remedy the operator saw, in one transaction; refused if its rows changed since."""
    cls, conn = anomaly_class(shown.key), session.conn
    choice = cls.choice(shown.choice)
    with session.operator_lock():
        _allowed(session)
        with conn.transaction():
            ids = list(affected_ids(conn, cls))
            if ids != shown.ids:
                raise Refused(f"The rows of {cls.key} changed since they were shown ({len(shown.ids)} then, "
                              f"{len(ids)} now); look again and retry.")
            if not ids:
                raise Refused(f"{cls.key} has no rows now; nothing to remedy.")
            remedy_id = scalar(conn, "INSERT INTO cutover.remedies (operator, class, choice) VALUES (%s, %s, %s) "
                                     "RETURNING id", (session.settings.operator, cls.key, choice.name))
            counts: dict[str, int] = {}
            for change in choice.changes:
                rows = [r for (r,) in conn.execute(f"SELECT id FROM ({change.rows}) r ORDER BY id", {"ids": ids})]
                if not rows:
                    continue
                conn.execute(sql.SQL(
                    "INSERT INTO cutover.remedy_rows (remedy_id, seq, table_name, row_id, change, before) "
                    "SELECT %(remedy)s, coalesce((SELECT max(seq) FROM cutover.remedy_rows WHERE remedy_id = "
                    "%(remedy)s), 0) + row_number() OVER (ORDER BY t.id), %(table)s, t.id::text, %(change)s, "
                    "to_jsonb(t) FROM {} t WHERE t.id = ANY(%(rows)s)").format(sql.Identifier(change.table)),
                    {"remedy": remedy_id, "table": change.table, "change": change.change, "rows": rows})
                counts[change.table] = conn.execute(change.apply, {"rows": rows}).rowcount
            conn.execute("UPDATE cutover.remedies SET counts = %s WHERE id = %s",
                         (Jsonb(counts), remedy_id))
            return session.record("remedy", detail={"remedy": remedy_id, "class": cls.key, "choice": choice.name,
                                                    "rows": counts})


def undo(session: Session, remedy_id: int) -> journal.JournalEntry:
    """Put every row remedy `remedy_id` touched back as it was, in one transaction."""
    conn = session.conn
    with session.operator_lock():
        _allowed(session)
        with conn.transaction():
            found = conn.execute("SELECT class, undone_at FROM cutover.remedies WHERE id = %s FOR UPDATE",
                                 (remedy_id,)).fetchone()
            if found is None:
                raise BadInput(f"There is no remedy {remedy_id}; `cutover journal` lists them.")
            if found[1] is not None:
                raise Refused(f"Remedy {remedy_id} was already undone at {found[1]:%Y-%m-%d %H:%M:%S %Z}.")
            rows = conn.execute("SELECT table_name, row_id, change, before FROM cutover.remedy_rows "
                                "WHERE remedy_id = %s ORDER BY seq DESC", (remedy_id,)).fetchall()
            for table, row_id, change, before in rows:
                if table not in LEGACY_TABLES:  # only ever written by apply(); a forged row is refused
                    raise Refused(f"Remedy {remedy_id} names table {table!r}, not a legacy table; nothing undone.")
                _restore(conn, table, row_id, change, before)
            conn.execute("UPDATE cutover.remedies SET undone_at = now(), undone_by = %s WHERE id = %s",
                         (session.settings.operator, remedy_id))
            return session.record("remedy-undone", detail={"remedy": remedy_id, "class": found[0], "rows": len(rows)})


def _restore(conn: psycopg.Connection, table: str, row_id: str, change: str, before: dict) -> None:
    record = sql.SQL("jsonb_populate_record(NULL::{}, %(before)s)").format(sql.Identifier(table))
    params = {"before": Jsonb(before), "id": row_id}
    if change == "deleted":
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(sql.Identifier(table), record), params)
        return
    columns = [sql.Identifier(name) for name in before]
    conn.execute(sql.SQL("UPDATE {} t SET ({}) = (SELECT {} FROM {} r) WHERE t.id::text = %(id)s").format(
        sql.Identifier(table), sql.SQL(", ").join(columns),
        sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in columns), record), params)


def accept_loss(session: Session, key: str, reason: str, ids: list[str] | None = None) -> journal.JournalEntry:
    """Accept the loss of the class's rows (all of them now, or `ids`, each of which must be one)."""
    cls, conn = anomaly_class(key), session.conn
    if cls.kind == "warning":
        raise BadInput(f"{cls.key} is a warning: its rows land as the rule says, so nothing is lost to accept.")
    if not reason.strip() or not reason.isprintable():
        raise BadInput("--reason must say, on one line, why these rows may be lost; nothing was recorded.")
    with session.operator_lock(), conn.transaction():
        current = list(affected_ids(conn, cls))
        chosen = current if ids is None else ids
        unknown = sorted(set(chosen) - set(current))
        if unknown:
            raise BadInput(f"{unknown[0]} is not a row of {cls.key} now ({len(unknown)} such); nothing was "
                           "recorded.")
        if not chosen:
            raise Refused(f"{cls.key} has no rows now; nothing to accept.")
        conn.execute("INSERT INTO cutover.accepted_losses (operator, table_name, issue, row_id, reason) "
                     "SELECT %s, %s, %s, unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                     (session.settings.operator, cls.table, cls.issue, chosen, reason.strip()))
        return session.record("accept-loss", detail={"class": cls.key, "rows": len(chosen),
                                                     "reason": reason.strip()})
