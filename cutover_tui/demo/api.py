"""A stand-in for the account API (SYSTEM.md §5-§6), served over the demo database.

It behaves like the real API in what operators meet, the inconvenient parts included:
- The four flags are read once, from the process environment it is given at start (the real
  API loads no dotenv file, so a changed env file changes nothing until the API is started
  again: see `deployment`).
- Reads go to the read store; a write goes to the primary store and is then mirrored with the
  same ids to the mirror store, where each store runs its own SQL: its own `now()` in
  created_at/updated_at and its own audit row with a fresh id. A mirror failure (`mirror-error`)
  or a mirror result other than the primary's (`result-mismatch`) is logged as the real API
  logs it, `[account-schema-dual-write] {json}`, counted, and never fails the request.
- JSON as node-pg and `Date.toISOString()` give it: BIGINTs as strings, timestamps in UTC with
  milliseconds and `Z`, an empty profile id as null, collection ids trimmed, lists ordered by
  created_at alone.
- The session cookie is BetterAuth's, named as the API's base URL implies (`__Secure-` under
  https). Sessions are issued by `POST /v1/demo/session` and kept, as BetterAuth keeps them, in
  the database (`auth_sessions`, by the token's SHA-256), so they outlive a restart.

`make_api` builds the ASGI app; `serve_api` runs it with uvicorn on a free 127.0.0.1 port
in a background thread and yields its base URL (for tests; the demo runs it as a process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ..files.envfile import ALIAS, DEFAULTS, DUAL_WRITE, FLAG_NAMES, READS, WRITES, parse_flag

if TYPE_CHECKING:  # the demo extra; imported where used
    import uvicorn

log = logging.getLogger(__name__)

COOKIE_NAME = "better-auth.session_token"
SECURE_COOKIE_NAME = f"__Secure-{COOKIE_NAME}"  # BetterAuth's name when its base URL is https
BASE_URL_VARIABLES = ("AUTH_BASE_URL", "BETTER_AUTH_URL")  # the API's base URL, first one set wins
DUAL_WRITE_LOG = "[account-schema-dual-write]"
SESSION_DAYS = 7  # BetterAuth's default session lifetime
POOL_SIZE = 10  # connections at most, as node-pg's Pool defaults to

# Identifiers come only from these two fixed maps.
_STORES: dict[str, dict[str, str]] = {
    "v1": {"accounts": "platform_workspaces", "members": "platform_workspace_members",
           "idents": "platform_managed_users", "books": "platform_books",
           "snaps": "platform_book_snapshots", "audit": "platform_audit_events", "acct": "workspace_id",
           "ident_fk": "managed_user_id", "book_fk": "book_id"},
    "v2": {"accounts": "accounts", "members": "account_members", "idents": "identities",
           "books": "pixbooks", "snaps": "pixbook_snapshots", "audit": "audit_events", "acct": "account_id",
           "ident_fk": "identity_id", "book_fk": "pixbook_id"},
}

_CAPABILITIES = {
    "owner": ["account:manage", "books:read", "books:write", "members:manage"],
    "admin": ["books:read", "books:write", "members:manage"],
}
_IDENTITY_FIELDS = {"displayName": "display_name", "avatarPublicId": "avatar_public_id", "userKey": "user_key",
                    "profileId": "profile_id", "identityPublicKey": "identity_public_key",
                    "identityKeyFingerprint": "identity_key_fingerprint", "status": "status"}
_BOOK_FIELDS = {"name": "name", "collectionId": "collection_id", "status": "status"}
_MEMBER_FIELDS = {"role": "role", "status": "status"}
_TIMESTAMPS = ("created_at", "updated_at")  # each store's own: never part of a result the mirror must match


def _q(store: str, template: str) -> sql.Composed:
    names = _STORES[store]
    return sql.SQL(template).format(**{k: sql.Identifier(v) for k, v in names.items()})


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Switch:
    read: str
    primary: str
    mirror: str | None
    alias: bool


def switch_for(declared: dict[str, bool]) -> Switch:
    """§5: read = v2 if READS; primary = v2 if WRITES; mirror = other if DUAL_WRITE, else read if != primary."""
    read = "v2" if declared[READS] else "v1"
    primary = "v2" if declared[WRITES] else "v1"
    other = "v1" if primary == "v2" else "v2"
    mirror = other if declared[DUAL_WRITE] else (read if read != primary else None)
    return Switch(read=read, primary=primary, mirror=mirror, alias=declared[ALIAS])


def flags_of(environ: Mapping[str, str]) -> dict[str, bool]:
    """The four flags as the API reads its process environment (SYSTEM.md §5)."""
    return {name: parse_flag(environ.get(name), DEFAULTS[name]) for name in FLAG_NAMES}


def cookie_name_for(environ: Mapping[str, str]) -> str:
    """The session cookie's name as BetterAuth derives it from the API's base URL."""
    base = next((environ[v].strip() for v in BASE_URL_VARIABLES if (environ.get(v) or "").strip()), "")
    return SECURE_COOKIE_NAME if base.lower().startswith("https://") else COOKIE_NAME


def session_cookie(cookies: Mapping[str, str]) -> tuple[str, str]:
    """(name, value) of the session cookie the API set, under whichever name it chose; KeyError if none."""
    for name in (SECURE_COOKIE_NAME, COOKIE_NAME):
        value = cookies.get(name)
        if value:
            return name, value
    raise KeyError(COOKIE_NAME)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(value: Any) -> Any:
    """A timestamp as `Date.toISOString()` sends it: UTC, milliseconds (node-pg's Date drops the rest), Z."""
    if not isinstance(value, datetime):
        return value
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bigint(value: Any) -> Any:
    return None if value is None else str(value)  # node-pg leaves int8 as a string


def _user(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "displayName": row["display_name"], "avatarPublicId": row["avatar_public_id"],
            "userKey": row["user_key"], "profileId": row["profile_id"] or None,
            "identityPublicKey": row["identity_public_key"],
            "identityKeyFingerprint": row["identity_key_fingerprint"], "status": row["status"],
            "createdAt": _iso(row["created_at"]), "updatedAt": _iso(row["updated_at"])}


def _managed_user(row: dict[str, Any]) -> dict[str, Any]:
    """/pixbook's owner: without timestamps and display name, as the real API resolves it."""
    shown = _user(row)
    return {k: v for k, v in shown.items() if k not in ("displayName", "createdAt", "updatedAt")}


def _book(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "managedUserId": row["ident_id"], "collectionId": (row["collection_id"] or "").strip(),
            "managedUserDisplayName": row["ident_name"], "name": row["name"], "status": row["status"],
            "currentVersion": _bigint(row["current_version"]), "createdAt": _iso(row["created_at"]),
            "updatedAt": _iso(row["updated_at"])}


def _snapshot(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "version": _bigint(row["version"]), "cipherObjectKey": row["cipher_object_key"],
            "cipherSha256": row["cipher_sha256"], "wrappedDek": row["wrapped_dek"],
            "ledgerHead": row["ledger_head"], "createdAt": _iso(row["created_at"])}


def _member(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "userId": row["user_id"], "role": row["role"], "status": row["status"],
            "createdAt": _iso(row["created_at"]), "updatedAt": _iso(row["updated_at"])}


def _comparable(result: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if result is None else {k: v for k, v in result.items() if k not in _TIMESTAMPS}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


_IDENT_COLS = ("id, display_name, avatar_public_id, user_key, profile_id, identity_public_key, "
               "identity_key_fingerprint, status, created_at, updated_at")
_MEMBER_COLS = "id, user_id, role, status, created_at, updated_at"
_BOOK_SELECT = ("SELECT b.id, b.{ident_fk} AS ident_id, b.collection_id, i.display_name AS ident_name, b.name, "
                "b.status, b.current_version, b.created_at, b.updated_at "
                "FROM {books} b LEFT JOIN {idents} i ON i.id = b.{ident_fk} ")

# A store's write: its own SQL on one connection; the row (or figures) it wrote, None when it found nothing.
StoreOp = Callable[[psycopg.Connection, str], dict[str, Any] | None]


@dataclass(frozen=True)
class _Write:
    """One write as the switch layer runs it: the real API's operation name (its log says it), the
    audit event each store records, who did it and in which account (None once it is gone)."""

    operation: str
    event: str
    user: str
    account: str | None
    missing: str  # the 404's sentence when the primary finds nothing
    payload: dict[str, Any] = field(default_factory=dict)


class _Api:
    def __init__(self, database_url: str, environ: Mapping[str, str]) -> None:
        # Fixed for the life of the process, as in the real API.
        self.sw = switch_for(flags_of(environ))
        self.cookie_name = cookie_name_for(environ)
        self.stats = {"requests": 0, "errors": 0, "mirrorFailures": 0, "resultMismatches": 0}
        self.lock = threading.Lock()
        # Never prepared: a migration or the archive may change a table under an idle connection.
        self.pool = ConnectionPool(database_url, min_size=1, max_size=POOL_SIZE, open=False, name="demo-account-api",
                                   check=ConnectionPool.check_connection, max_idle=60,
                                   kwargs={"row_factory": dict_row, "connect_timeout": 5, "prepare_threshold": None,
                                           "application_name": "demo-account-api"})

    # -- plumbing -------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for one transaction (committed on leaving, rolled back on an error),
        as the real API's pg pool hands them out."""
        try:
            with self.pool.connection(timeout=5) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError):
            raise ApiError(503, "The account database is unavailable.") from None

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] += 1

    def token(self, request: Request) -> str:
        token = request.cookies.get(self.cookie_name)  # only the name the configuration implies, as BetterAuth
        if not token:
            raise ApiError(401, "Not signed in: a valid session cookie is required.")
        return token

    @staticmethod
    def user_id(conn: psycopg.Connection, token: str) -> str:
        row = conn.execute("SELECT user_id FROM auth_sessions WHERE token_hash = %s AND expires_at > now()",
                           (_token_hash(token),)).fetchone()
        if row is None:
            raise ApiError(401, "Not signed in: a valid session cookie is required.")
        return row["user_id"]

    def account_id(self, conn: psycopg.Connection, request: Request, user: str,
                   body: dict[str, Any] | None = None) -> str:
        """The account the request names; with none (or only an alias the flag turns off, which the
        real API ignores rather than refuses) the user's primary workspace."""
        body = body or {}
        named = [request.headers.get("x-account-id"), request.query_params.get("accountId"), body.get("accountId")]
        if self.sw.alias:
            named += [request.headers.get("x-workspace-id"), request.query_params.get("workspaceId"),
                      body.get("workspaceId")]
        given = [v for v in named if v]
        if not all(isinstance(v, str) for v in given):
            raise ApiError(400, "accountId must be a string.")
        if len(set(given)) > 1:
            raise ApiError(400, "The request names two different accounts.")
        if given:
            return given[0]
        first = conn.execute(_q(self.sw.read, "SELECT {acct} AS id FROM {members} WHERE user_id = %s "
                                              "AND status = 'active' ORDER BY created_at LIMIT 1"),
                             (user,)).fetchone()
        if first is None:
            raise ApiError(404, "This user belongs to no account.")
        return first["id"]

    def member(self, conn: psycopg.Connection, account_id: str, user_id: str) -> dict[str, Any]:
        row = conn.execute(_q(self.sw.read, "SELECT m.role, a.id, a.name, a.created_at, a.updated_at "
                                            "FROM {members} m JOIN {accounts} a ON a.id = m.{acct} "
                                            "WHERE m.{acct} = %s AND m.user_id = %s AND m.status = 'active'"),
                           (account_id, user_id)).fetchone()
        if row is None:
            raise ApiError(403, "You are not an active member of this account.")
        return row

    @contextmanager
    def context(self, request: Request, body: dict[str, Any] | None = None
                ) -> Iterator[tuple[str, str, dict[str, Any], psycopg.Connection]]:
        """The signed-in user, the account, the user's membership in it, and the connection that read them."""
        token = self.token(request)
        with self.connect() as conn:
            user = self.user_id(conn, token)
            account = self.account_id(conn, request, user, body)
            yield user, account, self.member(conn, account, user), conn

    def checked(self, request: Request, body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """A write's preamble: the user, the account and the membership; no connection kept."""
        with self.context(request, body) as (user, account, membership, _):
            return user, account, membership

    # -- reads ----------------------------------------------------------------------
    def session(self, request: Request) -> dict[str, Any]:
        with self.context(request) as (user_id, account, ws, conn):
            user = conn.execute("SELECT id, email, name FROM auth_users WHERE id = %s", (user_id,)).fetchone()
        if user is None:
            raise ApiError(401, "The session's user no longer exists; sign in again.")
        return {"ok": True, "user": dict(user),
                "workspace": {"accountId": account, "workspaceId": account, "name": ws["name"],
                              "role": ws["role"], "capabilities": _CAPABILITIES.get(ws["role"], ["books:read"]),
                              "createdAt": _iso(ws["created_at"]), "updatedAt": _iso(ws["updated_at"])}}

    def users(self, request: Request, key: str = "users") -> dict[str, Any]:
        # Ordered by created_at alone, as the real API: ties come in any order.
        with self.context(request) as (_, account, _, conn):
            rows = conn.execute(_q(self.sw.read, f"SELECT {_IDENT_COLS} FROM {{idents}} WHERE {{acct}} = %s "
                                                 "AND status IS DISTINCT FROM 'deleted' ORDER BY created_at"),
                                (account,)).fetchall()
        return {"ok": True, "accountId": account, "workspaceId": account, key: [_user(r) for r in rows]}

    def identities(self, request: Request) -> dict[str, Any]:
        return self.users(request, "identities")

    def books(self, request: Request) -> dict[str, Any]:
        with self.context(request) as (_, account, _, conn):
            rows = conn.execute(_q(self.sw.read, _BOOK_SELECT + "WHERE b.{acct} = %s AND b.status IS DISTINCT "
                                                                "FROM 'deleted' ORDER BY b.created_at"),
                                (account,)).fetchall()
        return {"ok": True, "accountId": account, "workspaceId": account, "books": [_book(r) for r in rows]}

    def pixbook(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        profile, key = (params.get("profileId") or "").strip(), (params.get("identityPublicKey") or "").strip()
        collection = (params.get("collectionId") or "").strip() or "primary"
        with self.context(request) as (_, account, _, conn):
            if not (profile and key):
                raise ApiError(400, "profileId and identityPublicKey are required for pixbook profile resolution.")
            ident = conn.execute(_q(self.sw.read, f"SELECT {_IDENT_COLS} FROM {{idents}} WHERE {{acct}} = %s "
                                                  "AND profile_id = %s AND identity_public_key = %s "
                                                  "AND status IS DISTINCT FROM 'deleted' ORDER BY created_at LIMIT 1"),
                                 (account, profile, key)).fetchone()
            if ident is None:
                raise ApiError(404, "No account pixbook exists for this identity; save it to the account first.")
            book = conn.execute(_q(self.sw.read, _BOOK_SELECT + "WHERE b.{acct} = %s AND b.{ident_fk} = %s "
                                   "AND coalesce(nullif(btrim(b.collection_id), ''), 'primary') = %s "
                                   "AND b.status IS DISTINCT FROM 'deleted' ORDER BY b.created_at LIMIT 1"),
                                (account, ident["id"], collection)).fetchone()
            if book is None:
                raise ApiError(404, "No book in that collection for this identity.")
            snap = conn.execute(_q(self.sw.read, "SELECT id, version, cipher_object_key, cipher_sha256, wrapped_dek, "
                                                 "ledger_head, created_at FROM {snaps} WHERE {book_fk} = %s "
                                                 "ORDER BY version DESC LIMIT 1"), (book["id"],)).fetchone()
        return {"ok": True, "accountId": account, "workspaceId": account, "managedUser": _managed_user(ident),
                "book": _book(book), "snapshot": _snapshot(snap)}

    # -- the switch layer's writes --------------------------------------------------
    def write(self, w: _Write, op: StoreOp) -> dict[str, Any]:
        """Run `op` on the primary store, then on the mirror (if any): a mirror that fails, or
        whose result differs from the primary's, is logged and counted, never raised."""
        with self.connect() as conn:
            try:
                result = self._in_store(conn, self.sw.primary, w, op)
            except pg_errors.UniqueViolation:
                raise ApiError(409, "That conflicts with an existing row (duplicate key).") from None
            except pg_errors.ForeignKeyViolation:
                raise ApiError(404, "A row this write refers to does not exist.") from None
        if result is None:
            raise ApiError(404, w.missing)
        if self.sw.mirror is not None:
            try:
                with self.connect() as conn:
                    mirrored = self._in_store(conn, self.sw.mirror, w, op)
            except Exception as exc:
                self.count("mirrorFailures")
                self._dual_write_issue(w.operation, "mirror-error", {"error": _first_line(exc)})
            else:
                if _comparable(mirrored) != _comparable(result):
                    self.count("resultMismatches")
                    self._dual_write_issue(w.operation, "result-mismatch",
                                           {"primary": _comparable(result), "mirror": _comparable(mirrored)})
        return result

    @staticmethod
    def _in_store(conn: psycopg.Connection, store: str, w: _Write, op: StoreOp) -> dict[str, Any] | None:
        """`op` and, when it wrote something, this store's own audit row, in one transaction."""
        result = op(conn, store)
        if result is not None:
            conn.execute(_q(store, "INSERT INTO {audit} (id, {acct}, actor_user_id, event_type, payload, created_at) "
                                   "VALUES (%s, %s, %s, %s, %s, now())"),
                         (_new_id("evt"), w.account, w.user, w.event, Jsonb({**w.payload, **_comparable(result)})))
        return result

    @staticmethod
    def _dual_write_issue(operation: str, kind: str, payload: dict[str, Any]) -> None:
        line = {"operation": operation, "kind": kind, "payload": payload, "timestamp": _iso(datetime.now(UTC))}
        log.error("%s %s", DUAL_WRITE_LOG, json.dumps(line, default=str))

    async def body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise ApiError(400, "The body must be a JSON object.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The body must be a JSON object.")
        return data

    @staticmethod
    def _require(body: dict[str, Any], *names: str) -> None:
        if not all(isinstance(body.get(name), str) for name in names):
            raise ApiError(400, f"{' and '.join(names)} are required.")

    def _update(self, request: Request, body: dict[str, Any], table: str, changes: dict[str, Any],
                allowed: dict[str, str], what: str, operation: str) -> dict[str, Any]:
        """Change columns of one row of the account, in the primary store and its mirror."""
        user, account, _ = self.checked(request, body)
        row_id = request.path_params["id"]
        if not changes:
            raise ApiError(400, f"Nothing to change; give one of {', '.join(allowed)}.")
        sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in changes)

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            query = sql.SQL("UPDATE {t} SET {sets}, updated_at = now() WHERE id = %(id)s AND {a} = %(account)s "
                            "RETURNING id").format(t=sql.Identifier(_STORES[store][table]), sets=sets,
                                                   a=sql.Identifier(_STORES[store]["acct"]))
            return conn.execute(query, {**changes, "id": row_id, "account": account}).fetchone()

        self.write(_Write(operation, f"{what}.updated", user, account, f"No such {what} in this account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, "id": row_id}

    # -- identities -----------------------------------------------------------------
    def create_identity(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        self._require(body, "displayName", "userKey")
        row = {"id": _new_id("mu"), "account": account, "display_name": body["displayName"],
               "avatar_public_id": body.get("avatarPublicId"), "user_key": body["userKey"],
               "profile_id": body.get("profileId"), "identity_public_key": body.get("identityPublicKey"),
               "identity_key_fingerprint": body.get("identityKeyFingerprint")}

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            return conn.execute(_q(store, "INSERT INTO {idents} (id, {acct}, display_name, avatar_public_id, user_key, "
                                          "profile_id, identity_public_key, identity_key_fingerprint, status, "
                                          "created_at, updated_at) VALUES (%(id)s, %(account)s, %(display_name)s, "
                                          "%(avatar_public_id)s, %(user_key)s, %(profile_id)s, "
                                          "%(identity_public_key)s, %(identity_key_fingerprint)s, 'active', now(), "
                                          f"now()) RETURNING {_IDENT_COLS}"), row).fetchone()

        created = self.write(_Write("createManagedUser", "identity.created", user, account,
                                    "No such account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, "user": _user(created)}

    def update_identity(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        changes = {col: body[key] for key, col in _IDENTITY_FIELDS.items() if key in body}
        return self._update(request, body, "idents", changes, _IDENTITY_FIELDS, "identity", "updateManagedUser")

    def remove_identity(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """The identity and its books marked deleted, as the real API's removeManagedUserIdentity."""
        user, account, _ = self.checked(request, body)
        ident = request.path_params["id"]

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            found = conn.execute(_q(store, "UPDATE {idents} SET status = 'deleted', updated_at = now() "
                                           "WHERE id = %s AND {acct} = %s AND status IS DISTINCT FROM 'deleted' "
                                           "RETURNING id"), (ident, account)).fetchone()
            if found is None:
                return None
            books = conn.execute(_q(store, "UPDATE {books} SET status = 'deleted', updated_at = now() "
                                           "WHERE {ident_fk} = %s AND {acct} = %s AND status IS DISTINCT FROM "
                                           "'deleted' RETURNING id"), (ident, account)).fetchall()
            return {"id": ident, "removedBookIds": sorted(b["id"] for b in books)}

        removed = self.write(_Write("removeManagedUserIdentity", "identity.removed", user, account,
                                    "No such identity in this account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, **removed}

    # -- books and snapshots --------------------------------------------------------
    def create_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        self._require(body, "name", "managedUserId")
        collection = body.get("collectionId")
        row = {"id": _new_id("book"), "account": account, "ident": body["managedUserId"], "name": body["name"],
               "collection_id": (collection.strip() if isinstance(collection, str) else "") or "primary"}

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            return conn.execute(_q(store, "INSERT INTO {books} (id, {acct}, {ident_fk}, name, collection_id, status, "
                                          "current_version, created_at, updated_at) SELECT %(id)s, %(account)s, "
                                          "i.id, %(name)s, %(collection_id)s, 'active', 0, now(), now() "
                                          "FROM {idents} i WHERE i.id = %(ident)s AND i.{acct} = %(account)s "
                                          "AND i.status IS DISTINCT FROM 'deleted' RETURNING id, {ident_fk} AS "
                                          "ident_id, collection_id, name, status, current_version, created_at, "
                                          "updated_at"), row).fetchone()

        created = self.write(_Write("createBook", "book.created", user, account,
                                    "No such identity in this account."), op)
        book = _book({**created, "ident_name": None})
        del book["managedUserDisplayName"]
        return {"ok": True, "accountId": account, "workspaceId": account, "book": book}

    def update_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        changes = {c: body[k] for k, c in _BOOK_FIELDS.items() if k in body}
        return self._update(request, body, "books", changes, _BOOK_FIELDS, "book", "updateBook")

    def remove_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return self._update(request, body, "books", {"status": "deleted"}, _BOOK_FIELDS, "book", "removeBook")

    def save_snapshot(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        book_id = request.path_params["id"]
        self._require(body, "cipherObjectKey", "cipherSha256", "wrappedDek")
        row = {"id": _new_id("snap"), "book": book_id, "key": body["cipherObjectKey"], "sha": body["cipherSha256"],
               "dek": body["wrappedDek"], "head": body.get("ledgerHead"),
               "payload": Jsonb(body["payload"]) if "payload" in body else None, "account": account}

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            # Each store counts its own versions: a mirror that missed one answers another (a result-mismatch).
            book = conn.execute(_q(store, "UPDATE {books} SET current_version = current_version + 1, "
                                          "updated_at = now() WHERE id = %(book)s AND {acct} = %(account)s "
                                          "AND status IS DISTINCT FROM 'deleted' RETURNING current_version"),
                                row).fetchone()
            if book is None:
                return None
            return conn.execute(_q(store, "INSERT INTO {snaps} (id, {book_fk}, version, cipher_object_key, "
                                          "cipher_sha256, wrapped_dek, ledger_head, payload_json, created_at) "
                                          "VALUES (%(id)s, %(book)s, %(version)s, %(key)s, %(sha)s, %(dek)s, "
                                          "%(head)s, %(payload)s, now()) RETURNING id, version, created_at"),
                                {**row, "version": book["current_version"]}).fetchone()

        saved = self.write(_Write("saveBookSnapshot", "book.snapshot_saved", user, account,
                                  "No such book in this account.", {"bookId": book_id}), op)
        return {"ok": True, "accountId": account, "workspaceId": account,
                "snapshot": {"id": saved["id"], "version": _bigint(saved["version"]),
                             "createdAt": _iso(saved["created_at"])}}

    # -- accounts and members -------------------------------------------------------
    def rename_account(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required.")

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            return conn.execute(_q(store, "UPDATE {accounts} SET name = %s, updated_at = now() WHERE id = %s "
                                          "RETURNING id, name"), (name, account)).fetchone()

        self.write(_Write("renameWorkspace", "account.renamed", user, account, "No such account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, "name": name}

    def create_account(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """A new account owned by the signed-in user (the real API makes one at first sign-in)."""
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required.")
        token = self.token(request)
        with self.connect() as conn:
            user = self.user_id(conn, token)
        row = {"id": _new_id("ws"), "member": _new_id("wm"), "name": name, "user": user}

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            account = conn.execute(_q(store, "INSERT INTO {accounts} (id, name, created_at, updated_at) "
                                             "VALUES (%(id)s, %(name)s, now(), now()) RETURNING id, name, created_at, "
                                             "updated_at"), row).fetchone()
            conn.execute(_q(store, "INSERT INTO {members} (id, {acct}, user_id, role, status, created_at, updated_at) "
                                   "VALUES (%(member)s, %(id)s, %(user)s, 'owner', 'active', now(), now())"), row)
            return {**account, "memberId": row["member"]}

        created = self.write(_Write("ensureWorkspaceForUser", "account.created", user, row["id"],
                                    "No such user."), op)
        return {"ok": True, "accountId": created["id"], "workspaceId": created["id"], "name": created["name"],
                "memberId": created["memberId"], "createdAt": _iso(created["created_at"]),
                "updatedAt": _iso(created["updated_at"])}

    def remove_account(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, membership = self.checked(request, body)
        if membership["role"] != "owner":
            raise ApiError(403, "Only an owner can delete the account.")

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            members = conn.execute(_q(store, "DELETE FROM {members} WHERE {acct} = %s RETURNING id"),
                                   (account,)).fetchall()
            gone = conn.execute(_q(store, "DELETE FROM {accounts} WHERE id = %s RETURNING id"), (account,)).fetchone()
            return None if gone is None else {"id": account, "memberIds": sorted(m["id"] for m in members)}

        # The audit row names the account in its payload: the row it would point at is gone.
        removed = self.write(_Write("removeWorkspace", "account.removed", user, None, "No such account.",
                                    {"accountId": account}), op)
        return {"ok": True, "accountId": account, "workspaceId": account, **removed}

    def add_member(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        self._require(body, "userId")
        role = body.get("role", "member")
        if not isinstance(role, str) or not role.strip():
            raise ApiError(400, "role must be text.")
        row = {"id": _new_id("wm"), "account": account, "user": body["userId"], "role": role}

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            return conn.execute(_q(store, "INSERT INTO {members} (id, {acct}, user_id, role, status, created_at, "
                                          "updated_at) VALUES (%(id)s, %(account)s, %(user)s, %(role)s, 'active', "
                                          f"now(), now()) RETURNING {_MEMBER_COLS}"), row).fetchone()

        added = self.write(_Write("addWorkspaceMember", "member.added", user, account, "No such account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, "member": _member(added)}

    def update_member(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        changes = {c: body[k] for k, c in _MEMBER_FIELDS.items() if k in body}
        return self._update(request, body, "members", changes, _MEMBER_FIELDS, "member", "updateWorkspaceMember")

    def remove_member(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        user, account, _ = self.checked(request, body)
        member = request.path_params["id"]

        def op(conn: psycopg.Connection, store: str) -> dict[str, Any] | None:
            return conn.execute(_q(store, "DELETE FROM {members} WHERE id = %s AND {acct} = %s RETURNING id"),
                                (member, account)).fetchone()

        self.write(_Write("removeWorkspaceMember", "member.removed", user, account,
                          "No such member in this account."), op)
        return {"ok": True, "accountId": account, "workspaceId": account, "id": member}

    # -- demo -----------------------------------------------------------------------
    def new_session(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        user_id = body.get("userId")
        if not isinstance(user_id, str):
            raise ApiError(400, "userId is required.")
        token = "s" + secrets.token_urlsafe(32)  # never starting with "-", which a command line takes for an option
        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM auth_users WHERE id = %s", (user_id,)).fetchone() is None:
                raise ApiError(404, "No such user.")
            conn.execute("INSERT INTO auth_sessions (id, user_id, token_hash, expires_at) "
                         "VALUES (%s, %s, %s, now() + make_interval(days => %s))",
                         (f"sess_{uuid.uuid4().hex}", user_id, _token_hash(token), SESSION_DAYS))
        return {"ok": True, "userId": user_id}, token

    def new_user(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """A sign-up: an auth user (shared by both schemas, so written once), to be added as a member."""
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "name must be text.")
        user_id = _new_id("user_demo")
        with self.connect() as conn:
            row = conn.execute("INSERT INTO auth_users (id, email, name) VALUES (%s, %s, %s) RETURNING id, email, name",
                               (user_id, f"{user_id}@demo.example.test", name)).fetchone()
        return {"ok": True, "user": dict(row)}


def make_api(database_url: str, environ: Mapping[str, str]) -> ASGIApp:
    """The stand-in account API as an ASGI app, its flags read from `environ` once, here."""
    from starlette.concurrency import run_in_threadpool

    api = _Api(database_url, environ)

    def handler(fn: Callable[..., dict[str, Any]], *, with_body: bool = False, status: int = 200):
        async def endpoint(request: Request) -> JSONResponse:
            api.count("requests")
            try:
                args = (request, await api.body(request)) if with_body else (request,)
                return JSONResponse(await run_in_threadpool(fn, *args), status_code=status)
            except ApiError as exc:
                api.count("errors")
                return JSONResponse({"ok": False, "error": exc.message}, status_code=exc.status)
            except psycopg.Error as exc:
                api.count("errors")
                log.warning("database error: %s", type(exc).__name__)
                return JSONResponse({"ok": False, "error": "The account database is unavailable."}, status_code=503)
        return endpoint

    async def demo_session(request: Request) -> JSONResponse:
        api.count("requests")
        try:
            body, token = await run_in_threadpool(api.new_session, await api.body(request))
        except ApiError as exc:
            api.count("errors")
            return JSONResponse({"ok": False, "error": exc.message}, status_code=exc.status)
        response = JSONResponse(body)
        # Not `secure`, even under the __Secure- name: the stand-in serves plain http on loopback,
        # where a client's cookie jar would never send a secure cookie back.
        response.set_cookie(api.cookie_name, token, httponly=True, samesite="lax")
        return response

    async def stats(request: Request) -> JSONResponse:
        with api.lock:  # the pid tells a restart's new process from the old one on the shared port
            return JSONResponse({**api.stats, "pid": os.getpid()})

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "No such route."}, status_code=404)

    async def bad_method(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "Method not allowed."}, status_code=405)

    routes = [
        Route("/v1/demo/session", demo_session, methods=["POST"]),
        Route("/v1/demo/stats", stats, methods=["GET"]),
        Route("/v1/demo/users", handler(api.new_user, with_body=True, status=201), methods=["POST"]),
        Route("/v1/account/session", handler(api.session), methods=["GET"]),
        Route("/v1/account/users", handler(api.users), methods=["GET"]),
        Route("/v1/account/identities", handler(api.identities), methods=["GET"]),
        Route("/v1/account/identities", handler(api.create_identity, with_body=True, status=201),
              methods=["POST"]),
        Route("/v1/account/identities/{id}", handler(api.update_identity, with_body=True), methods=["PATCH"]),
        Route("/v1/account/identities/{id}", handler(api.remove_identity, with_body=True), methods=["DELETE"]),
        Route("/v1/account/books", handler(api.books), methods=["GET"]),
        Route("/v1/account/books", handler(api.create_book, with_body=True, status=201), methods=["POST"]),
        Route("/v1/account/books/{id}", handler(api.update_book, with_body=True), methods=["PATCH"]),
        Route("/v1/account/books/{id}", handler(api.remove_book, with_body=True), methods=["DELETE"]),
        Route("/v1/account/books/{id}/snapshots", handler(api.save_snapshot, with_body=True, status=201),
              methods=["POST"]),
        Route("/v1/account/workspace", handler(api.rename_account, with_body=True), methods=["PATCH"]),
        Route("/v1/account/workspace", handler(api.remove_account, with_body=True), methods=["DELETE"]),
        Route("/v1/account/workspaces", handler(api.create_account, with_body=True, status=201), methods=["POST"]),
        Route("/v1/account/members", handler(api.add_member, with_body=True, status=201), methods=["POST"]),
        Route("/v1/account/members/{id}", handler(api.update_member, with_body=True), methods=["PATCH"]),
        Route("/v1/account/members/{id}", handler(api.remove_member, with_body=True), methods=["DELETE"]),
        Route("/v1/account/pixbook", handler(api.pixbook), methods=["GET"]),
    ]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(api.pool.open)
        try:
            yield
        finally:  # no connection outlives the server (a test's database is dropped after it)
            await run_in_threadpool(api.pool.close)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method}, lifespan=lifespan)


def make_server(database_url: str, environ: Mapping[str, str]) -> uvicorn.Server:
    """The stand-in under uvicorn, quiet but for warnings."""
    import uvicorn

    config = uvicorn.Config(make_api(database_url, environ), log_level="warning", access_log=False,
                            lifespan="on", ws="none", http="h11", log_config=None)
    return uvicorn.Server(config)


@contextmanager
def serve_api(database_url: str, environ: Mapping[str, str]) -> Iterator[str]:
    """Run the stand-in on a free 127.0.0.1 port in a background thread, its flags fixed from
    `environ` at start; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(database_url, environ)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-account-api",
                              daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("The demo account API did not start.")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
