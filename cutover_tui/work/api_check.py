"""verify-reads: ask the account API what it serves and compare it with the database.

The API is called with the operator's session cookie; every answer naming an account
must carry `accountId` and `workspaceId`, equal; the users and books lists must equal,
field by field, the rows of the store the deploy env file says the API reads (v2 when
`ACCOUNT_SCHEMA_V2_READS` is true, else legacy), under §6's rules (not deleted, oldest
first); and the workspace alias must be honoured or refused as the alias flag says.

The result is a verify-shaped report body `{ok, generatedAt, api, checks}` with one
`reads` check per call. The cookie never appears in the report, in a message or in a log.
"""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from psycopg.rows import dict_row

from ..errors import BadInput, CutoverError
from ..files.envfile import ALIAS, READS, read_env_file
from ..store.db import connect

if TYPE_CHECKING:  # httpx pulls in rich when installed; the engine imports it only when it calls out
    import httpx

COOKIE_NAME = "better-auth.session_token"
# What the API's own read check defaults to (§6); the CLI may take them as option defaults.
DEFAULT_API = "http://localhost:3000"
API_ENV = "ACCOUNT_VERIFY_API_BASE"
COOKIE_ENV = "ACCOUNT_VERIFY_COOKIE"
MAX_MISMATCHES = 20

USER_FIELDS = {"id": "id", "displayName": "display_name", "avatarPublicId": "avatar_public_id",
               "userKey": "user_key", "profileId": "profile_id", "identityPublicKey": "identity_public_key",
               "identityKeyFingerprint": "identity_key_fingerprint", "status": "status",
               "createdAt": "created_at", "updatedAt": "updated_at"}
BOOK_FIELDS = {"id": "id", "managedUserId": "ident_id", "collectionId": "collection_id",
               "managedUserDisplayName": "ident_name", "name": "name", "status": "status",
               "currentVersion": "current_version", "createdAt": "created_at", "updatedAt": "updated_at"}

_USERS_SQL = {
    "v1": "SELECT id, display_name, avatar_public_id, user_key, profile_id, identity_public_key, "
          "identity_key_fingerprint, status, created_at, updated_at FROM platform_managed_users "
          "WHERE workspace_id = %s AND status IS DISTINCT FROM 'deleted' ORDER BY created_at, id",
    "v2": "SELECT id, display_name, avatar_public_id, user_key, profile_id, identity_public_key, "
          "identity_key_fingerprint, status, created_at, updated_at FROM identities "
          "WHERE account_id = %s AND status IS DISTINCT FROM 'deleted' ORDER BY created_at, id",
}
_BOOKS_SQL = {
    "v1": "SELECT b.id, b.managed_user_id AS ident_id, b.collection_id, i.display_name AS ident_name, b.name, "
          "b.status, b.current_version, b.created_at, b.updated_at FROM platform_books b "
          "LEFT JOIN platform_managed_users i ON i.id = b.managed_user_id "
          "WHERE b.workspace_id = %s AND b.status IS DISTINCT FROM 'deleted' ORDER BY b.created_at, b.id",
    "v2": "SELECT b.id, b.identity_id AS ident_id, b.collection_id, i.display_name AS ident_name, b.name, "
          "b.status, b.current_version, b.created_at, b.updated_at FROM pixbooks b "
          "LEFT JOIN identities i ON i.id = b.identity_id "
          "WHERE b.account_id = %s AND b.status IS DISTINCT FROM 'deleted' ORDER BY b.created_at, b.id",
}


class ReadsApiError(CutoverError):
    """The account API could not be asked, or answered in a way nothing can be compared with."""

    title = "Account API"


class ApiTimeout(ReadsApiError):
    title = "Account API timed out"


class ApiUnreachable(ReadsApiError):
    title = "Account API unreachable"


class ApiTlsError(ReadsApiError):
    title = "Account API TLS failure"


class ApiUnauthorized(ReadsApiError):
    title = "Account API refused the cookie"


class ApiForbidden(ReadsApiError):
    title = "Account API forbids the account"


class ApiNotFound(ReadsApiError):
    title = "Account API route not found"


class ApiServerError(ReadsApiError):
    title = "Account API server error"


class ApiBadResponse(ReadsApiError):
    title = "Account API answered oddly"


class ApiNotJson(ApiBadResponse):
    title = "Account API answered non-JSON"


class ApiMissingFields(ApiBadResponse):
    title = "Account API answer lacks fields"


def redact_api(url: str) -> str:
    """The base URL without user info or query, for reports."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, query="", fragment=""))


def check_api_url(url: str) -> str:
    """`url` if it is an http(s) address with a host; BadInput otherwise."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise BadInput(f"The API address {redact_api_safely(url)!r} is not an http(s) URL with a host; give one "
                       "like http://127.0.0.1:8080 (--api, the environment or runbook.toml's api.base).")
    return url


def redact_api_safely(url: str) -> str:
    try:
        return redact_api(url)
    except ValueError:
        return "(an address that cannot be parsed)"


def _credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without user info, and that user info as basic-auth credentials: httpx logs
    every request URL, so a password must not travel in it."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    return redact_api(url), (unquote(parts.username), unquote(parts.password or ""))


def _scrub(text: str, cookie: str) -> str:
    return text.replace(cookie, "***") if cookie else text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


class _Caller:
    def __init__(self, client: httpx.Client, api: str, cookie: str, timeout: float) -> None:
        self.client, self.api, self.cookie, self.timeout = client, api.rstrip("/"), cookie, timeout
        self.where = redact_api(self.api)

    def get(self, path: str, params: dict[str, str]) -> tuple[int, Any, float]:
        """(status, JSON body, latency ms) for any status; raises on transport faults and non-JSON."""
        import httpx

        url = self.api + path
        started = time.perf_counter()
        try:
            response = self.client.get(url, params=params)
        except httpx.TimeoutException:
            raise ApiTimeout(f"The account API at {self.where} did not answer {path} within {self.timeout:g} s; "
                             "check it is up and not overloaded, then run the check again.") from None
        except httpx.HTTPError as exc:
            chain = _chain(exc)
            if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in str(exc) or "CERTIFICATE" in str(exc):
                raise ApiTlsError(f"The TLS handshake with the account API at {self.where} failed "
                                  f"({_scrub(str(exc), self.cookie)[:200]}); check the --api scheme (http or "
                                  "https) and that its certificate is trusted.") from None
            if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(exc).lower():
                raise ApiUnreachable(f"The connection to the account API at {self.where} was refused; check "
                                     "--api (host and port) and that the API is running.") from None
            raise ApiUnreachable(f"Cannot reach the account API at {self.where} "
                                 f"({type(exc).__name__}: {_scrub(str(exc), self.cookie)[:200]}); check --api "
                                 "and the network.") from None
        latency = round((time.perf_counter() - started) * 1000, 1)
        try:
            body = response.json()
        except ValueError:
            if response.status_code >= 400:
                self._status_error(response.status_code, path, None)
            kind = response.headers.get("content-type", "no content type")
            raise ApiNotJson(f"The account API answered {path} with {response.status_code} and a body that is "
                             f"not JSON ({kind}); check --api points at the account API, not a proxy or web "
                             "page.") from None
        return response.status_code, body, latency

    def _status_error(self, status: int, path: str, body: Any) -> None:
        said = ""
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            said = f" (it said: {_scrub(body['error'], self.cookie)[:200]})"
        if status == 401:
            raise ApiUnauthorized(f"The account API answered {path} with 401{said}: the session cookie is missing, "
                                  "expired or wrong; sign in again and pass a fresh --cookie.")
        if status == 403:
            raise ApiForbidden(f"The account API answered {path} with 403{said}: the cookie's user is not an "
                               "active member of the account; use a cookie of one of its members.")
        if status == 404:
            raise ApiNotFound(f"The account API answered {path} with 404{said}: the route or record does not "
                              "exist; check --api is the account API base URL (and the profile, if given).")
        if status >= 500:
            raise ApiServerError(f"The account API answered {path} with {status}{said}: it failed on its side; "
                                 "check its logs and database, then run verify-reads again.")
        raise ApiBadResponse(f"The account API answered {path} with {status}{said}; check the request "
                             "parameters and the API version.")

    def expect(self, path: str, params: dict[str, str], fields: tuple[str, ...]) -> tuple[dict[str, Any], float]:
        status, body, latency = self.get(path, params)
        if status != 200:
            self._status_error(status, path, body)
        if not isinstance(body, dict):
            raise ApiMissingFields(f"The account API answered {path} with JSON that is not an object; check "
                                   "--api points at the account API.")
        missing = [f for f in fields if f not in body]
        if missing:
            raise ApiMissingFields(f"The account API's answer to {path} lacks {', '.join(missing)}; check the API "
                                   "version matches the runbook (§6 response shapes).")
        return body, latency


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, datetime):
        if not isinstance(actual, str):
            return False
        try:
            parsed = datetime.fromisoformat(actual)
        except ValueError:
            return False
        return parsed.tzinfo is not None and parsed == expected
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return expected == actual


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def compare_rows(expected: list[dict[str, Any]], actual: Any, fields: dict[str, str]) -> dict[str, Any]:
    """Figures for one list: counts, and the first differences (by position, field by field)."""
    mismatches: list[dict[str, Any]] = []
    if not isinstance(actual, list):
        return {"expectedCount": len(expected), "actualCount": None,
                "mismatches": [{"error": "the list is missing or not a list"}]}
    for index in range(max(len(expected), len(actual))):
        want = expected[index] if index < len(expected) else None
        got = actual[index] if index < len(actual) else None
        if want is None or not isinstance(got, dict):
            mismatches.append({"index": index, "expectedId": want and want["id"],
                               "actualId": got.get("id") if isinstance(got, dict) else got,
                               "field": None, "expected": None, "actual": None})
        else:
            for api_key, column in fields.items():
                if api_key not in got or not _same(want[column], got[api_key]):
                    mismatches.append({"index": index, "expectedId": want["id"], "actualId": got.get("id"),
                                       "field": api_key, "expected": _json(want[column]),
                                       "actual": got.get(api_key, "<missing>")})
        if len(mismatches) >= MAX_MISMATCHES:
            break
    return {"expectedCount": len(expected), "actualCount": len(actual), "mismatches": mismatches[:MAX_MISMATCHES]}


def _account_ids_ok(body: dict[str, Any]) -> bool:
    return isinstance(body.get("accountId"), str) and body.get("accountId") == body.get("workspaceId")


def run_verify_reads(database_url: str, env_file: Path, *, api: str, cookie: str, profile_id: str | None = None,
                     identity_public_key: str | None = None, collection_id: str = "primary",
                     timeout: float = 10.0, account_id: str | None = None) -> dict[str, Any]:
    """The verify-reads report body; raises a `ReadsApiError` when the API cannot be asked at all."""
    import httpx

    declared = read_env_file(env_file).declared
    store = "v2" if declared[READS] else "v1"
    alias_on = declared[ALIAS]
    checks: list[dict[str, Any]] = []
    headers = {"cookie": f"{COOKIE_NAME}={cookie}", "accept": "application/json"}
    try:
        base, auth = _credentials(check_api_url(api))
        with httpx.Client(headers=headers, timeout=timeout, follow_redirects=False, auth=auth) as client:
            caller = _Caller(client, base, cookie, timeout)
            checks.extend(_run(caller, database_url, store, alias_on, profile_id, identity_public_key,
                               collection_id, account_id))
    except CutoverError as exc:  # belt and braces: no message may carry the cookie
        exc.message = _scrub(exc.message, cookie)
        exc.args = (exc.message,)
        raise
    return {"ok": all(c["ok"] for c in checks), "generatedAt": datetime.now(UTC).isoformat(),
            "api": redact_api(api), "readStore": store, "aliasAccepted": alias_on, "checks": checks}


def _run(caller: _Caller, database_url: str, store: str, alias_on: bool, profile_id: str | None,
         identity_public_key: str | None, collection_id: str, account_id: str | None) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    params = {"accountId": account_id} if account_id else {}
    session, latency = caller.expect("/v1/account/session", params, ("user", "workspace"))
    workspace = session.get("workspace")
    if not isinstance(workspace, dict) or "accountId" not in workspace or "workspaceId" not in workspace:
        raise ApiMissingFields("The account API's answer to /v1/account/session lacks workspace.accountId or "
                               "workspace.workspaceId; check the API version matches the runbook (§6).")
    account = account_id or workspace["accountId"]
    checks.append({"type": "reads", "name": "session", "ok": _account_ids_ok(workspace)
                   and workspace["accountId"] == account, "accountId": workspace.get("accountId"),
                   "workspaceId": workspace.get("workspaceId"), "latencyMs": latency})
    params = {"accountId": account}

    with connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        users = cursor.execute(_USERS_SQL[store], (account,)).fetchall()
        books = cursor.execute(_BOOKS_SQL[store], (account,)).fetchall()

    for name, path, key, rows, fields in (("users", "/v1/account/users", "users", users, USER_FIELDS),
                                          ("identities", "/v1/account/identities", "identities", users, USER_FIELDS),
                                          ("books", "/v1/account/books", "books", books, BOOK_FIELDS)):
        checks.append(_list_check(caller, name, path, key, params, rows, fields, store))

    if profile_id:
        owner = next((u for u in users if u["profile_id"] == profile_id
                      and (not identity_public_key or u["identity_public_key"] == identity_public_key)), None)
        book = next((b for b in books if owner is not None and b["ident_id"] == owner["id"]
                     and ((b["collection_id"] or "").strip() or "primary") == collection_id), None)
        checks.append(_pixbook_check(caller, account, profile_id, identity_public_key, collection_id,
                                     owner, book, store))
    checks.append(_alias_check(caller, account, alias_on))
    return checks


def _failing(name: str, exc: ReadsApiError, **extra: Any) -> dict[str, Any]:
    return {"type": "reads", "name": name, "ok": False, "error": exc.message, **extra}


def _list_check(caller: _Caller, name: str, path: str, key: str, params: dict[str, str],
                rows: list[dict[str, Any]], fields: dict[str, str], store: str) -> dict[str, Any]:
    try:
        body, latency = caller.expect(path, params, ("accountId", "workspaceId", key))
    except (ApiForbidden, ApiNotFound, ApiServerError, ApiBadResponse) as exc:
        return _failing(name, exc, store=store)
    figures = compare_rows(rows, body[key], fields)
    ids_ok = _account_ids_ok(body) and body["accountId"] == params["accountId"]
    ok = ids_ok and not figures["mismatches"]
    check = {"type": "reads", "name": name, "ok": ok, "store": store, **figures, "accountIdsMatch": ids_ok,
             "latencyMs": latency}
    if not ok:
        check["error"] = (f"{path} differs from the {store} rows of account {params['accountId']} "
                          f"({len(figures['mismatches'])} difference(s) shown); "
                          "find why the API's store and the database disagree before moving on."
                          if ids_ok else f"{path} does not carry accountId and workspaceId equal to the account "
                          "asked for; the API is not serving §6 shapes.")
    return check


def _pixbook_check(caller: _Caller, account: str, profile_id: str, identity_public_key: str | None,
                   collection_id: str, owner: dict[str, Any] | None, book_row: dict[str, Any] | None,
                   store: str) -> dict[str, Any]:
    params = {"accountId": account, "profileId": profile_id, "collectionId": collection_id}
    if identity_public_key:
        params["identityPublicKey"] = identity_public_key
    try:
        body, latency = caller.expect("/v1/account/pixbook", params,
                                      ("accountId", "workspaceId", "managedUser", "book", "snapshot"))
    except (ApiForbidden, ApiNotFound, ApiServerError, ApiBadResponse) as exc:
        if isinstance(exc, ApiNotFound) and book_row is None:  # the database has none either: that agrees
            return {"type": "reads", "name": "pixbook", "ok": True, "store": store, "profileId": profile_id,
                    "collectionId": collection_id, "bookId": None, "status": 404}
        return _failing("pixbook", exc, store=store)
    user, book = body["managedUser"], body["book"]
    ids_ok = _account_ids_ok(body) and body["accountId"] == account
    mismatches = (compare_rows([owner] if owner else [], [user], USER_FIELDS)["mismatches"]
                  + compare_rows([book_row] if book_row else [], [book], BOOK_FIELDS)["mismatches"])
    ok = ids_ok and not mismatches
    check = {"type": "reads", "name": "pixbook", "ok": ok, "store": store, "profileId": profile_id,
             "collectionId": collection_id, "bookId": book.get("id") if isinstance(book, dict) else None,
             "mismatches": mismatches[:MAX_MISMATCHES], "latencyMs": latency}
    if not ok:
        check["error"] = ("/v1/account/pixbook does not carry accountId and workspaceId equal to the account asked "
                          "for; the API is not serving §6 shapes." if not ids_ok else
                          f"/v1/account/pixbook differs from the {store} rows for profile {profile_id}; find why "
                          "the API's store and the database disagree before moving on.")
    return check


def _alias_check(caller: _Caller, account: str, alias_on: bool) -> dict[str, Any]:
    status, body, latency = caller.get("/v1/account/users", {"workspaceId": account})
    if alias_on:
        ok = status == 200 and isinstance(body, dict) and _account_ids_ok(body) and body["accountId"] == account
        error = (f"With the workspace alias on, a request naming the account only by workspaceId got {status}; "
                 "the API does not honour ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=true.")
    else:
        ok = status == 400
        error = (f"With the workspace alias off, a request naming the account only by workspaceId got {status} "
                 "instead of 400; the API still accepts the alias, so restart it with the env file's flags.")
    check = {"type": "reads", "name": "workspace_alias", "ok": ok, "aliasAccepted": alias_on, "status": status,
             "latencyMs": latency}
    if not ok:
        check["error"] = error
    return check
