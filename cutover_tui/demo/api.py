"""A stand-in for the account API (SYSTEM.md §5-§6), served over the demo database.

It honours the switch layer the way the real API does: the deploy env file is read on
every request, reads go to the read store, writes go to the primary store and are then
mirrored (same ids, same timestamps) to the mirror store, whose failures are counted and
logged but never fail the request. Sessions are demo cookies issued by
`POST /v1/demo/session`, kept in memory.

`make_api` builds the ASGI app; `serve_api` runs it with uvicorn on a free 127.0.0.1 port
in a background thread and yields its base URL.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ..files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file

log = logging.getLogger(__name__)

COOKIE_NAME = "better-auth.session_token"

# Identifiers come only from these two fixed maps.
_STORES: dict[str, dict[str, str]] = {
    "v1": {"accounts": "platform_workspaces", "members": "platform_workspace_members",
           "idents": "platform_managed_users", "books": "platform_books",
           "snaps": "platform_book_snapshots", "acct": "workspace_id", "ident_fk": "managed_user_id",
           "book_fk": "book_id"},
    "v2": {"accounts": "accounts", "members": "account_members", "idents": "identities",
           "books": "pixbooks", "snaps": "pixbook_snapshots", "acct": "account_id",
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


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _user(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "displayName": row["display_name"], "avatarPublicId": row["avatar_public_id"],
            "userKey": row["user_key"], "profileId": row["profile_id"],
            "identityPublicKey": row["identity_public_key"],
            "identityKeyFingerprint": row["identity_key_fingerprint"], "status": row["status"],
            "createdAt": _iso(row["created_at"]), "updatedAt": _iso(row["updated_at"])}


def _book(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "managedUserId": row["ident_id"], "collectionId": row["collection_id"],
            "managedUserDisplayName": row["ident_name"], "name": row["name"], "status": row["status"],
            "currentVersion": row["current_version"], "createdAt": _iso(row["created_at"]),
            "updatedAt": _iso(row["updated_at"])}


def _snapshot(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "version": row["version"], "cipherObjectKey": row["cipher_object_key"],
            "cipherSha256": row["cipher_sha256"], "wrappedDek": row["wrapped_dek"],
            "ledgerHead": row["ledger_head"], "createdAt": _iso(row["created_at"])}


_IDENT_COLS = ("id, display_name, avatar_public_id, user_key, profile_id, identity_public_key, "
               "identity_key_fingerprint, status, created_at, updated_at")
_BOOK_SELECT = ("SELECT b.id, b.{ident_fk} AS ident_id, b.collection_id, i.display_name AS ident_name, b.name, "
                "b.status, b.current_version, b.created_at, b.updated_at "
                "FROM {books} b LEFT JOIN {idents} i ON i.id = b.{ident_fk} ")


class _Api:
    def __init__(self, database_url: str, env_file: Path) -> None:
        self.database_url, self.env_file = database_url, Path(env_file)
        self.sessions: dict[str, str] = {}
        self.stats = {"requests": 0, "errors": 0, "mirrorFailures": 0}
        self.lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------
    def connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.database_url, row_factory=dict_row, connect_timeout=5,
                                   application_name="demo-account-api")
        except psycopg.OperationalError:
            raise ApiError(503, "The account database is unavailable.") from None

    def switch(self) -> Switch:
        return switch_for(read_env_file(self.env_file).declared)

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] += 1

    def user_id(self, request: Request) -> str:
        token = request.cookies.get(COOKIE_NAME)
        user = self.sessions.get(token) if token else None
        if user is None:
            raise ApiError(401, "Not signed in: a valid session cookie is required.")
        return user

    def account_id(self, request: Request, sw: Switch, body: dict[str, Any] | None = None) -> str:
        body = body or {}
        primary = [v for v in (request.headers.get("x-account-id"), request.query_params.get("accountId"),
                               body.get("accountId")) if v]
        alias = [v for v in (request.headers.get("x-workspace-id"), request.query_params.get("workspaceId"),
                             body.get("workspaceId")) if v]
        if alias and not sw.alias and not primary:
            raise ApiError(400, "workspaceId is no longer accepted; name the account with accountId.")
        if not all(isinstance(v, str) for v in primary + alias):
            raise ApiError(400, "accountId must be a string.")
        given = set(primary) | (set(alias) if sw.alias else set())
        if not given:
            raise ApiError(400, "accountId is required.")
        if len(given) > 1:
            raise ApiError(400, "The request names two different accounts.")
        return given.pop()

    def member(self, conn: psycopg.Connection, store: str, account_id: str, user_id: str) -> dict[str, Any]:
        row = conn.execute(_q(store, "SELECT m.role, a.id, a.name, a.created_at, a.updated_at FROM {members} m "
                                     "JOIN {accounts} a ON a.id = m.{acct} "
                                     "WHERE m.{acct} = %s AND m.user_id = %s AND m.status = 'active'"),
                           (account_id, user_id)).fetchone()
        if row is None:
            raise ApiError(403, "You are not an active member of this account.")
        return row

    def context(self, request: Request, body: dict[str, Any] | None = None
                ) -> tuple[Switch, str, str, psycopg.Connection]:
        user = self.user_id(request)
        sw = self.switch()
        account = self.account_id(request, sw, body)
        conn = self.connect()
        try:
            self.member(conn, sw.read, account, user)
        except BaseException:
            conn.close()
            raise
        return sw, user, account, conn

    # -- reads ----------------------------------------------------------------------
    def session(self, request: Request) -> dict[str, Any]:
        user_id = self.user_id(request)
        sw = self.switch()
        with self.connect() as conn:
            user = conn.execute("SELECT id, email, name FROM auth_users WHERE id = %s", (user_id,)).fetchone()
            if user is None:
                raise ApiError(401, "The session's user no longer exists; sign in again.")
            try:
                account = self.account_id(request, sw)
            except ApiError as exc:
                if exc.status != 400 or exc.message != "accountId is required.":
                    raise
                first = conn.execute(_q(sw.read, "SELECT m.{acct} AS id FROM {members} m WHERE m.user_id = %s "
                                                 "AND m.status = 'active' ORDER BY m.created_at, m.id LIMIT 1"),
                                     (user_id,)).fetchone()
                if first is None:
                    raise ApiError(404, "This user belongs to no account.") from None
                account = first["id"]
            ws = self.member(conn, sw.read, account, user_id)
        return {"ok": True, "user": dict(user),
                "workspace": {"accountId": ws["id"], "workspaceId": ws["id"], "name": ws["name"],
                              "role": ws["role"], "capabilities": _CAPABILITIES.get(ws["role"], ["books:read"]),
                              "createdAt": _iso(ws["created_at"]), "updatedAt": _iso(ws["updated_at"])}}

    def users(self, request: Request, key: str = "users") -> dict[str, Any]:
        sw, _, account, conn = self.context(request)
        with conn:
            rows = conn.execute(_q(sw.read, f"SELECT {_IDENT_COLS} FROM {{idents}} WHERE {{acct}} = %s "
                                            "AND status IS DISTINCT FROM 'deleted' ORDER BY created_at, id"),
                                (account,)).fetchall()
        return {"ok": True, "accountId": account, "workspaceId": account, key: [_user(r) for r in rows]}

    def identities(self, request: Request) -> dict[str, Any]:
        return self.users(request, "identities")

    def books(self, request: Request) -> dict[str, Any]:
        sw, _, account, conn = self.context(request)
        with conn:
            rows = conn.execute(_q(sw.read, _BOOK_SELECT + "WHERE b.{acct} = %s AND b.status IS DISTINCT FROM "
                                                           "'deleted' ORDER BY b.created_at, b.id"),
                                (account,)).fetchall()
        return {"ok": True, "accountId": account, "workspaceId": account, "books": [_book(r) for r in rows]}

    def pixbook(self, request: Request) -> dict[str, Any]:
        sw, _, account, conn = self.context(request)
        params = request.query_params
        profile, key = params.get("profileId"), params.get("identityPublicKey")
        collection = params.get("collectionId") or "primary"
        if not profile:
            raise ApiError(400, "profileId is required.")
        with conn:
            ident = conn.execute(_q(sw.read, f"SELECT {_IDENT_COLS} FROM {{idents}} WHERE {{acct}} = %s "
                                             "AND profile_id = %s AND (%s::text IS NULL OR identity_public_key = %s) "
                                             "AND status IS DISTINCT FROM 'deleted' ORDER BY created_at, id LIMIT 1"),
                                 (account, profile, key, key)).fetchone()
            if ident is None:
                raise ApiError(404, "No identity with that profile in this account.")
            book = conn.execute(_q(sw.read, _BOOK_SELECT + "WHERE b.{acct} = %s AND b.{ident_fk} = %s "
                                   "AND coalesce(nullif(btrim(b.collection_id), ''), 'primary') = %s "
                                   "AND b.status IS DISTINCT FROM 'deleted' ORDER BY b.created_at, b.id LIMIT 1"),
                                (account, ident["id"], collection)).fetchone()
            if book is None:
                raise ApiError(404, "No book in that collection for this identity.")
            snap = conn.execute(_q(sw.read, "SELECT id, version, cipher_object_key, cipher_sha256, wrapped_dek, "
                                            "ledger_head, created_at FROM {snaps} WHERE {book_fk} = %s "
                                            "ORDER BY version DESC LIMIT 1"), (book["id"],)).fetchone()
        return {"ok": True, "accountId": account, "workspaceId": account, "managedUser": _user(ident),
                "book": _book(book), "snapshot": _snapshot(snap)}

    # -- writes ---------------------------------------------------------------------
    def write(self, sw: Switch, op: Callable[[psycopg.Connection, str, bool], Any]) -> Any:
        """Run `op` on the primary store, then on the mirror (if any), where a failure only counts."""
        with self.connect() as conn:
            try:
                result = op(conn, sw.primary, True)
            except pg_errors.UniqueViolation:
                raise ApiError(409, "That conflicts with an existing row (duplicate key).") from None
            except pg_errors.ForeignKeyViolation:
                raise ApiError(404, "A row this write refers to does not exist.") from None
        if sw.mirror is not None:
            try:
                with self.connect() as conn:
                    op(conn, sw.mirror, False)
            except Exception as exc:
                self.count("mirrorFailures")
                reason = (str(exc).strip().splitlines() or [""])[0][:200]
                log.warning("mirror write to %s failed (%s: %s); the primary write stands", sw.mirror,
                            type(exc).__name__, reason)
        return result

    @staticmethod
    def _must(cur: psycopg.Cursor, primary: bool, what: str) -> None:
        if cur.rowcount == 0:
            if primary:
                raise ApiError(404, f"No such {what} in this account.")
            raise LookupError(f"{what} missing in the mirror store")

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

    def _creating(self, request: Request, body: dict[str, Any], *required: str) -> tuple[Switch, str, datetime]:
        """A create's preamble: the caller is a member of the account, and the fields it needs are text."""
        sw, _, account, conn = self.context(request, body)
        conn.close()
        if not all(isinstance(body.get(name), str) for name in required):
            raise ApiError(400, f"{' and '.join(required)} are required.")
        return sw, account, datetime.now(UTC)

    def create_identity(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        sw, account, now = self._creating(request, body, "displayName", "userKey")
        row = {"id": f"mu_{uuid.uuid4().hex[:16]}", "account": account, "display_name": body["displayName"],
               "avatar_public_id": body.get("avatarPublicId"), "user_key": body["userKey"],
               "profile_id": body.get("profileId"), "identity_public_key": body.get("identityPublicKey"),
               "identity_key_fingerprint": body.get("identityKeyFingerprint"), "status": "active",
               "created_at": now, "updated_at": now}

        def op(conn: psycopg.Connection, store: str, primary: bool) -> None:
            conn.execute(_q(store, "INSERT INTO {idents} (id, {acct}, display_name, avatar_public_id, user_key, "
                                   "profile_id, identity_public_key, identity_key_fingerprint, status, created_at, "
                                   "updated_at) VALUES (%(id)s, %(account)s, %(display_name)s, %(avatar_public_id)s, "
                                   "%(user_key)s, %(profile_id)s, %(identity_public_key)s, "
                                   "%(identity_key_fingerprint)s, %(status)s, %(created_at)s, %(updated_at)s)"), row)

        self.write(sw, op)
        return {"ok": True, "accountId": account, "workspaceId": account,
                "user": _user(row)}

    def update_identity(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        changes = {col: body[key] for key, col in _IDENTITY_FIELDS.items() if key in body}
        return self._update(request, body, "idents", changes, _IDENTITY_FIELDS, "identity")

    def create_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        sw, account, now = self._creating(request, body, "name", "managedUserId")
        row = {"id": f"book_{uuid.uuid4().hex[:16]}", "account": account, "ident": body["managedUserId"],
               "name": body["name"], "collection_id": body.get("collectionId") or "primary", "now": now}

        def op(conn: psycopg.Connection, store: str, primary: bool) -> None:
            found = conn.execute(_q(store, "SELECT 1 FROM {idents} WHERE id = %s AND {acct} = %s "
                                           "AND status IS DISTINCT FROM 'deleted'"),
                                 (row["ident"], account)).fetchone()
            if found is None:
                if primary:
                    raise ApiError(404, "No such identity in this account.")
                raise LookupError("identity missing in the mirror store")
            conn.execute(_q(store, "INSERT INTO {books} (id, {acct}, {ident_fk}, name, collection_id, status, "
                                   "current_version, created_at, updated_at) VALUES (%(id)s, %(account)s, %(ident)s, "
                                   "%(name)s, %(collection_id)s, 'active', 0, %(now)s, %(now)s)"), row)

        self.write(sw, op)
        return {"ok": True, "accountId": account, "workspaceId": account,
                "book": {"id": row["id"], "managedUserId": row["ident"], "collectionId": row["collection_id"],
                         "name": row["name"], "status": "active", "currentVersion": 0,
                         "createdAt": now.isoformat(), "updatedAt": now.isoformat()}}

    def _update(self, request: Request, body: dict[str, Any], table: str, changes: dict[str, Any],
                allowed: dict[str, str], what: str) -> dict[str, Any]:
        """Change columns of one row of the account, in the primary store and its mirror."""
        sw, _, account, conn = self.context(request, body)
        conn.close()
        row_id = request.path_params["id"]
        if not changes:
            raise ApiError(400, f"Nothing to change; give one of {', '.join(allowed)}.")
        now = datetime.now(UTC)
        sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in changes)

        def op(conn: psycopg.Connection, store: str, primary: bool) -> None:
            query = sql.SQL(
                "UPDATE {t} SET {sets}, updated_at = %(now)s WHERE id = %(id)s AND {a} = %(account)s").format(
                t=sql.Identifier(_STORES[store][table]), sets=sets, a=sql.Identifier(_STORES[store]["acct"]))
            self._must(conn.execute(query, {**changes, "now": now, "id": row_id, "account": account}), primary, what)

        self.write(sw, op)
        return {"ok": True, "accountId": account, "workspaceId": account, "id": row_id}

    def update_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        changes = {c: body[k] for k, c in _BOOK_FIELDS.items() if k in body}
        return self._update(request, body, "books", changes, _BOOK_FIELDS, "book")

    def remove_book(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return self._update(request, body, "books", {"status": "deleted"}, _BOOK_FIELDS, "book")

    def save_snapshot(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        sw, _, account, conn = self.context(request, body)
        conn.close()
        book_id = request.path_params["id"]
        needed = ("cipherObjectKey", "cipherSha256", "wrappedDek")
        if not all(isinstance(body.get(k), str) for k in needed):
            raise ApiError(400, f"{', '.join(needed)} are required.")
        now = datetime.now(UTC)
        row = {"id": f"snap_{uuid.uuid4().hex[:16]}", "book": book_id, "key": body["cipherObjectKey"],
               "sha": body["cipherSha256"], "dek": body["wrappedDek"], "head": body.get("ledgerHead"),
               "payload": Jsonb(body["payload"]) if "payload" in body else None, "now": now, "account": account}

        def op(conn: psycopg.Connection, store: str, primary: bool) -> None:
            if primary:
                current = conn.execute(_q(store, "SELECT current_version FROM {books} WHERE id = %s AND {acct} = %s "
                                                 "AND status IS DISTINCT FROM 'deleted' FOR UPDATE"),
                                       (book_id, account)).fetchone()
                if current is None:
                    raise ApiError(404, "No such book in this account.")
                row["version"] = current["current_version"] + 1
            self._must(conn.execute(_q(store, "UPDATE {books} SET current_version = %(version)s, updated_at = %(now)s "
                                              "WHERE id = %(book)s AND {acct} = %(account)s"), row), primary, "book")
            conn.execute(_q(store, "INSERT INTO {snaps} (id, {book_fk}, version, cipher_object_key, cipher_sha256, "
                                   "wrapped_dek, ledger_head, payload_json, created_at) VALUES (%(id)s, %(book)s, "
                                   "%(version)s, %(key)s, %(sha)s, %(dek)s, %(head)s, %(payload)s, %(now)s)"), row)

        self.write(sw, op)
        return {"ok": True, "accountId": account, "workspaceId": account,
                "snapshot": {"id": row["id"], "version": row["version"], "createdAt": now.isoformat()}}

    def rename_account(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        sw, _, account, conn = self.context(request, body)
        conn.close()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required.")
        now = datetime.now(UTC)

        def op(conn: psycopg.Connection, store: str, primary: bool) -> None:
            self._must(conn.execute(_q(store, "UPDATE {accounts} SET name = %s, updated_at = %s WHERE id = %s"),
                                    (name, now, account)), primary, "account")

        self.write(sw, op)
        return {"ok": True, "accountId": account, "workspaceId": account, "name": name}

    # -- demo -----------------------------------------------------------------------
    def new_session(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        user_id = body.get("userId")
        if not isinstance(user_id, str):
            raise ApiError(400, "userId is required.")
        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM auth_users WHERE id = %s", (user_id,)).fetchone() is None:
                raise ApiError(404, "No such user.")
        token = "s" + secrets.token_urlsafe(32)  # never starting with "-", which a command line takes for an option
        self.sessions[token] = user_id
        return {"ok": True, "userId": user_id}, token


def make_api(database_url: str, env_file: Path) -> ASGIApp:
    """The stand-in account API as an ASGI app."""
    from starlette.concurrency import run_in_threadpool

    api = _Api(database_url, env_file)

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
        response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="lax")
        return response

    async def stats(request: Request) -> JSONResponse:
        with api.lock:
            return JSONResponse(dict(api.stats))

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "No such route."}, status_code=404)

    async def bad_method(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "Method not allowed."}, status_code=405)

    routes = [
        Route("/v1/demo/session", demo_session, methods=["POST"]),
        Route("/v1/demo/stats", stats, methods=["GET"]),
        Route("/v1/account/session", handler(api.session), methods=["GET"]),
        Route("/v1/account/users", handler(api.users), methods=["GET"]),
        Route("/v1/account/identities", handler(api.identities), methods=["GET"]),
        Route("/v1/account/identities", handler(api.create_identity, with_body=True, status=201),
              methods=["POST"]),
        Route("/v1/account/identities/{id}", handler(api.update_identity, with_body=True), methods=["PATCH"]),
        Route("/v1/account/books", handler(api.books), methods=["GET"]),
        Route("/v1/account/books", handler(api.create_book, with_body=True, status=201), methods=["POST"]),
        Route("/v1/account/books/{id}", handler(api.update_book, with_body=True), methods=["PATCH"]),
        Route("/v1/account/books/{id}", handler(api.remove_book, with_body=True), methods=["DELETE"]),
        Route("/v1/account/books/{id}/snapshots", handler(api.save_snapshot, with_body=True, status=201),
              methods=["POST"]),
        Route("/v1/account/workspace", handler(api.rename_account, with_body=True), methods=["PATCH"]),
        Route("/v1/account/pixbook", handler(api.pixbook), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})


@contextmanager
def serve_api(database_url: str, env_file: Path) -> Iterator[str]:
    """Run the stand-in on a free 127.0.0.1 port in a background thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_api(database_url, env_file), log_level="warning", access_log=False,
                            lifespan="off", ws="none", http="h11", log_config=None)
    server = uvicorn.Server(config)
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
