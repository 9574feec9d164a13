"""verify-reads: ask the account API what it serves and compare it with the database.

The API is called with the operator's session cookie; every answer naming an account
must carry `accountId` and `workspaceId`, equal; the users and books lists must equal,
field by field, the rows of the store the API reads (v2 when `ACCOUNT_SCHEMA_V2_READS` is
true, else legacy; the flags of the running API when the caller knows them, else the deploy
env file's), under §6's rules (not deleted, oldest first by created_at only); and the
workspace alias must name the account, or be ignored, as the alias flag says.

Values are compared as the real API sends them (SYSTEM.md §6, node-pg and JSON): BIGINTs as
strings or numbers, timestamps at millisecond precision, an empty profile id as null,
collection ids trimmed; rows with equal created_at may come in any order.

The result is a verify-shaped report body `{ok, generatedAt, api, checks}` with one `reads`
check per call, beside upstream's own output `{ok, accountId, userCount, bookCount,
pixbookResolved}`. The cookie never appears in the report, in a message or in a log.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from psycopg.rows import dict_row

from ..errors import BadInput, CutoverError
from ..files.envfile import ALIAS, DEFAULTS, FLAG_NAMES, READS, parse_flag, read_env_file
from ..store.db import connect

if TYPE_CHECKING:  # httpx pulls in rich when installed; the engine imports it only when it calls out
    import httpx

COOKIE_NAME = "better-auth.session_token"
# BetterAuth's name for the same cookie when the API is served over https (§6).
SECURE_COOKIE_NAME = f"__Secure-{COOKIE_NAME}"
# What the API's own read check defaults to (§6); the CLI may take them as option defaults.
DEFAULT_API = "http://localhost:3000"
API_ENV = "ACCOUNT_VERIFY_API_BASE"
COOKIE_ENV = "ACCOUNT_VERIFY_COOKIE"
MAX_MISMATCHES = 20
# A workspace id no user belongs to: the alias probe's target when the user has no other workspace.
NO_SUCH_WORKSPACE = "cutover-verify-reads-no-such-workspace"

USER_FIELDS = {"id": "id", "displayName": "display_name", "avatarPublicId": "avatar_public_id",
               "userKey": "user_key", "profileId": "profile_id", "identityPublicKey": "identity_public_key",
               "identityKeyFingerprint": "identity_key_fingerprint", "status": "status",
               "createdAt": "created_at", "updatedAt": "updated_at"}
BOOK_FIELDS = {"id": "id", "managedUserId": "ident_id", "collectionId": "collection_id",
               "managedUserDisplayName": "ident_name", "name": "name", "status": "status",
               "currentVersion": "current_version", "createdAt": "created_at", "updatedAt": "updated_at"}
SNAPSHOT_FIELDS = {"id": "id", "version": "version", "cipherObjectKey": "cipher_object_key",
                   "cipherSha256": "cipher_sha256", "wrappedDek": "wrapped_dek", "ledgerHead": "ledger_head",
                   "createdAt": "created_at"}
# /v1/account/pixbook's managedUser has no timestamps and no display name (§6), nor need its book
# carry the owner's name: compared when sent, not required.
PIXBOOK_USER_OPTIONAL = frozenset({"createdAt", "updatedAt", "displayName"})
PIXBOOK_BOOK_OPTIONAL = frozenset({"managedUserDisplayName"})

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
_SNAPSHOT_SQL = {
    "v1": "SELECT id, version, cipher_object_key, cipher_sha256, wrapped_dek, ledger_head, created_at "
          "FROM platform_book_snapshots WHERE book_id = %s ORDER BY version DESC LIMIT 1",
    "v2": "SELECT id, version, cipher_object_key, cipher_sha256, wrapped_dek, ledger_head, created_at "
          "FROM pixbook_snapshots WHERE pixbook_id = %s ORDER BY version DESC LIMIT 1",
}
_MEMBERSHIPS_SQL = {
    "v1": "SELECT workspace_id FROM platform_workspace_members WHERE user_id = %s AND status = 'active' "
          "ORDER BY created_at, id",
    "v2": "SELECT account_id FROM account_members WHERE user_id = %s AND status = 'active' ORDER BY created_at, id",
}
_COOKIE_PAIR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+=[^=]")
_INTEGER = re.compile(r"-?[0-9]+")


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


def cookie_header(cookie: str, api: str) -> tuple[str, list[str]]:
    """The `Cookie` header to send and the cookie names in it. A value with `name=value` pairs is a
    whole header, sent as given (as upstream's check sends it); a bare token goes under BetterAuth's
    name, `__Secure-` prefixed when the API is served over https. Over http it goes under both names:
    BetterAuth picks the name from its own configured base URL, which is https behind a TLS proxy
    too, and ignores the other."""
    text = cookie.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadInput("The session cookie holds a line break or control character; paste it as one line.")
    text = re.sub(r"(?i)^cookie:\s*", "", text)
    if ";" in text or _COOKIE_PAIR.match(text):
        return text, [part.split("=", 1)[0].strip() for part in text.split(";") if "=" in part]
    names = [SECURE_COOKIE_NAME] if urlsplit(api).scheme == "https" else [COOKIE_NAME, SECURE_COOKIE_NAME]
    return "; ".join(f"{name}={text}" for name in names), names


def _secrets(cookie: str) -> tuple[str, ...]:
    """The cookie as given and each value in it: none may appear in a message."""
    values = [part.split("=", 1)[-1].strip() for part in cookie.split(";")]
    found = {cookie, cookie.strip(), *(v for v in values if len(v) >= 4)}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


class _Caller:
    def __init__(self, client: httpx.Client, api: str, secrets: tuple[str, ...], timeout: float) -> None:
        self.client, self.api, self.secrets, self.timeout = client, api.rstrip("/"), secrets, timeout
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
                                  f"({_scrub(str(exc), self.secrets)[:200]}); check the --api scheme (http or "
                                  "https) and that its certificate is trusted.") from None
            if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(exc).lower():
                raise ApiUnreachable(f"The connection to the account API at {self.where} was refused; check "
                                     "--api (host and port) and that the API is running.") from None
            raise ApiUnreachable(f"Cannot reach the account API at {self.where} "
                                 f"({type(exc).__name__}: {_scrub(str(exc), self.secrets)[:200]}); check --api "
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
            said = f" (it said: {_scrub(body['error'], self.secrets)[:200]})"
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


def _millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _same_instant(expected: datetime, actual: Any) -> bool:
    """The API's `Date` keeps milliseconds: node-pg truncates the database's microseconds (a
    rounding driver is accepted too); an answer with microseconds is compared at milliseconds."""
    if not isinstance(actual, str):
        return False
    try:
        parsed = datetime.fromisoformat(actual)
    except ValueError:
        return False
    if parsed.tzinfo is None:
        return False
    return _millis(parsed) in (_millis(expected), _millis(expected + timedelta(microseconds=500)))


def _same(field: str, expected: Any, actual: Any) -> bool:
    """Whether the API's `actual` is the database's `expected` as the real API sends it (§6)."""
    if field == "profileId" and expected in (None, ""):
        return actual in (None, "")  # an empty profile id is sent as null
    if field == "collectionId" and isinstance(expected, str):
        return actual in (expected, expected.strip(" "), expected.strip())  # sent trimmed
    if isinstance(expected, datetime):
        return _same_instant(expected, actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int) and isinstance(actual, str):  # node-pg sends a BIGINT as a string
        return _INTEGER.fullmatch(actual) is not None and int(actual) == expected
    return expected == actual


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _mismatch(index: int | None, expected_id: Any, actual_id: Any, field: str | None = None,
              expected: Any = None, actual: Any = None) -> dict[str, Any]:
    return {"index": index, "expectedId": expected_id, "actualId": actual_id, "field": field,
            "expected": _json(expected), "actual": actual}


def compare_rows(expected: list[dict[str, Any]], actual: Any, fields: dict[str, str],
                 optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Figures for one list: counts, and the first differences. Rows pair by id, field by field;
    the list must run by created_at, and rows of equal created_at may come in any order (the API
    orders by created_at only), so the two lists are compared as multisets within each such group."""
    if not isinstance(actual, list):
        return {"expectedCount": len(expected), "actualCount": None, "mismatchCount": 1,
                "mismatches": [{"error": "the list is missing or not a list"}]}
    mismatches: list[dict[str, Any]] = []
    waiting: dict[Any, list[dict[str, Any]]] = {}
    for row in expected:
        waiting.setdefault(row["id"], []).append(row)
    paired: list[tuple[int, dict[str, Any]]] = []
    for index, got in enumerate(actual):
        got_id = got.get("id") if isinstance(got, dict) else got
        candidates = waiting.get(got_id) if isinstance(got, dict) and isinstance(got_id, str) else None
        if not candidates:
            mismatches.append(_mismatch(index, None, got_id))
            continue
        want = candidates.pop(0)
        paired.append((index, want))
        for api_key, column in fields.items():
            if api_key not in got:
                if api_key not in optional:
                    mismatches.append(_mismatch(index, want["id"], got_id, api_key, want[column], "<missing>"))
            elif not _same(api_key, want[column], got[api_key]):
                mismatches.append(_mismatch(index, want["id"], got_id, api_key, want[column], got[api_key]))
    mismatches += [_mismatch(None, row["id"], None) for rows in waiting.values() for row in rows]
    for (_, before), (index, row) in pairwise(paired):
        if "created_at" in row and row["created_at"] < before["created_at"]:
            mismatches.append(_mismatch(index, row["id"], row["id"], "order", "oldest first by createdAt",
                                        f"after {before['id']}, which is newer"))
    return {"expectedCount": len(expected), "actualCount": len(actual), "mismatchCount": len(mismatches),
            "mismatches": mismatches[:MAX_MISMATCHES]}


def _account_ids_ok(body: dict[str, Any]) -> bool:
    return isinstance(body.get("accountId"), str) and body.get("accountId") == body.get("workspaceId")


def _flags(env_file: Path, running_env: Mapping[str, str] | None) -> tuple[dict[str, bool], str]:
    """The flags the API reads with, and where they were learnt."""
    if running_env is not None:  # as the API reads its own environment (§5)
        return {name: parse_flag(running_env.get(name), DEFAULTS[name]) for name in FLAG_NAMES}, "running API"
    return read_env_file(env_file).declared, "env file"


def run_verify_reads(database_url: str, env_file: Path, *, api: str, cookie: str, profile_id: str | None = None,
                     identity_public_key: str | None = None, collection_id: str = "primary",
                     timeout: float = 10.0, account_id: str | None = None,
                     running_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The verify-reads report body; raises a `ReadsApiError` when the API cannot be asked at all.

    `running_env` is the running API's environment (a deploy's read back) when known: the API
    fixes its flags at start, so the env file's are its flags only once deployed."""
    import httpx

    flags, flags_from = _flags(env_file, running_env)
    store = "v2" if flags[READS] else "v1"
    alias_on = flags[ALIAS]
    secrets = _secrets(cookie)
    try:
        base, auth = _credentials(check_api_url(api))
        header, names = cookie_header(cookie, base)
        headers = {"cookie": header, "accept": "application/json"}
        with httpx.Client(headers=headers, timeout=timeout, follow_redirects=False, auth=auth) as client:
            caller = _Caller(client, base, secrets, timeout)
            checks, upstream, skipped = _run(caller, database_url, store, alias_on, profile_id,
                                             identity_public_key, collection_id, account_id, names)
    except CutoverError as exc:  # belt and braces: no message may carry the cookie
        exc.message = _scrub(exc.message, secrets)
        exc.args = (exc.message,)
        raise
    ok = all(c["ok"] for c in checks)
    return {"ok": ok, "generatedAt": datetime.now(UTC).isoformat(), **upstream, "api": redact_api(api),
            "readStore": store, "flagsFrom": flags_from, "aliasAccepted": alias_on, "skipped": skipped,
            "checks": checks}


def _workspace(body: dict[str, Any]) -> dict[str, Any]:
    workspace = body.get("workspace")
    if not isinstance(workspace, dict) or "accountId" not in workspace or "workspaceId" not in workspace:
        raise ApiMissingFields("The account API's answer to /v1/account/session lacks workspace.accountId or "
                               "workspace.workspaceId; check the API version matches the runbook (§6).")
    return workspace


def _run(caller: _Caller, database_url: str, store: str, alias_on: bool, profile_id: str | None,
         identity_public_key: str | None, collection_id: str, account_id: str | None, cookie_names: list[str]
         ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """The checks, upstream's figures `{accountId, userCount, bookCount, pixbookResolved}`, and what was skipped."""
    checks: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # Without an account named, the API answers for the user's primary workspace (the alias check's fallback).
    session, latency = caller.expect("/v1/account/session", {}, ("user", "workspace"))
    workspace = _workspace(session)
    primary = workspace["accountId"]
    account = account_id or primary
    if account != primary:
        session, latency = caller.expect("/v1/account/session", {"accountId": account}, ("user", "workspace"))
        workspace = _workspace(session)
    user = session.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    checks.append({"type": "reads", "name": "session", "ok": _account_ids_ok(workspace)
                   and workspace["accountId"] == account, "accountId": workspace.get("accountId"),
                   "workspaceId": workspace.get("workspaceId"), "cookieNames": cookie_names, "latencyMs": latency})
    params = {"accountId": account}

    with connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        conn.read_only = True
        users = cursor.execute(_USERS_SQL[store], (account,)).fetchall()
        books = cursor.execute(_BOOKS_SQL[store], (account,)).fetchall()
        memberships = [row["workspace_id" if store == "v1" else "account_id"] for row in cursor.execute(
            _MEMBERSHIPS_SQL[store], (user_id,)).fetchall()] if isinstance(user_id, str) else []

        counts: dict[str, int | None] = {}
        for name, path, key, rows, fields in (("users", "/v1/account/users", "users", users, USER_FIELDS),
                                              ("identities", "/v1/account/identities", "identities", users,
                                               USER_FIELDS),
                                              ("books", "/v1/account/books", "books", books, BOOK_FIELDS)):
            check = _list_check(caller, name, path, key, params, rows, fields, store)
            counts[name] = check.get("actualCount")
            checks.append(check)

        resolved = False
        if profile_id and identity_public_key:
            pixbook = _pixbook_check(caller, account, profile_id, identity_public_key, collection_id, users, books,
                                     store, lambda book_id: cursor.execute(_SNAPSHOT_SQL[store], (book_id,)).fetchone())
            resolved = pixbook["ok"] and pixbook.get("bookId") is not None
            checks.append(pixbook)
        else:
            skipped["pixbook"] = ("not probed: /v1/account/pixbook answers 400 unless both a profile id and an "
                                  "identity public key are given (--profile-id and --identity-public-key).")
    checks.append(_alias_check(caller, account, primary, memberships, alias_on))
    upstream = {"accountId": account, "userCount": counts["users"], "bookCount": counts["books"],
                "pixbookResolved": resolved}
    return checks, upstream, skipped


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
                          f"({figures['mismatchCount']} difference(s), the first {len(figures['mismatches'])} "
                          "shown); find why the API's store and the database disagree before moving on."
                          if ids_ok else f"{path} does not carry accountId and workspaceId equal to the account "
                          "asked for; the API is not serving §6 shapes.")
    return check


def _oldest(rows: list[dict[str, Any]], chosen: Any) -> dict[str, Any] | None:
    """The row the API's `ORDER BY created_at LIMIT 1` may pick: any of the oldest; the API's own
    choice (`chosen`, an id) when it is among them."""
    if not rows:
        return None
    oldest = [row for row in rows if row["created_at"] == rows[0]["created_at"]]
    return next((row for row in oldest if row["id"] == chosen), oldest[0])


def _pixbook_check(caller: _Caller, account: str, profile_id: str, identity_public_key: str,
                   collection_id: str, users: list[dict[str, Any]], books: list[dict[str, Any]], store: str,
                   snapshot_of: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    params = {"accountId": account, "profileId": profile_id, "identityPublicKey": identity_public_key,
              "collectionId": collection_id}
    owners = [u for u in users if u["profile_id"] == profile_id and u["identity_public_key"] == identity_public_key]
    try:
        body, latency = caller.expect("/v1/account/pixbook", params,
                                      ("accountId", "workspaceId", "managedUser", "book", "snapshot"))
    except (ApiForbidden, ApiNotFound, ApiServerError, ApiBadResponse) as exc:
        # The database has none either: that agrees.
        none_here = not any(b["ident_id"] in {o["id"] for o in owners}
                            and ((b["collection_id"] or "").strip(" ") or "primary") == collection_id for b in books)
        if isinstance(exc, ApiNotFound) and none_here:
            return {"type": "reads", "name": "pixbook", "ok": True, "store": store, "profileId": profile_id,
                    "collectionId": collection_id, "bookId": None, "status": 404}
        return _failing("pixbook", exc, store=store)
    user, book, snapshot = body["managedUser"], body["book"], body["snapshot"]
    owner = _oldest(owners, user.get("id") if isinstance(user, dict) else None)
    # The book rule of §3: blank is 'primary', and BTRIM strips spaces only.
    shelf = [b for b in books if owner is not None and b["ident_id"] == owner["id"]
             and ((b["collection_id"] or "").strip(" ") or "primary") == collection_id]
    book_row = _oldest(shelf, book.get("id") if isinstance(book, dict) else None)
    snapshot_row = snapshot_of(book_row["id"]) if book_row is not None else None
    ids_ok = _account_ids_ok(body) and body["accountId"] == account
    mismatches = (compare_rows([owner] if owner else [], [user], USER_FIELDS, PIXBOOK_USER_OPTIONAL)["mismatches"]
                  + compare_rows([book_row] if book_row else [], [book], BOOK_FIELDS,
                                 PIXBOOK_BOOK_OPTIONAL)["mismatches"]
                  + compare_rows([snapshot_row] if snapshot_row else [], [snapshot] if snapshot is not None else [],
                                 SNAPSHOT_FIELDS)["mismatches"])
    ok = ids_ok and not mismatches
    check = {"type": "reads", "name": "pixbook", "ok": ok, "store": store, "profileId": profile_id,
             "collectionId": collection_id, "bookId": book.get("id") if isinstance(book, dict) else None,
             "mismatchCount": len(mismatches), "mismatches": mismatches[:MAX_MISMATCHES], "latencyMs": latency}
    if not ok:
        check["error"] = ("/v1/account/pixbook does not carry accountId and workspaceId equal to the account asked "
                          "for; the API is not serving §6 shapes." if not ids_ok else
                          f"/v1/account/pixbook differs from the {store} rows for profile {profile_id}; find why "
                          "the API's store and the database disagree before moving on.")
    return check


def _alias_check(caller: _Caller, account: str, primary: str, memberships: list[str],
                 alias_on: bool) -> dict[str, Any]:
    """Name a workspace other than the user's primary one by `workspaceId` alone. With the alias on
    the API answers for that workspace (or refuses one the user is no member of); with it off it
    ignores the alias and answers for the primary workspace (§6), or, as older APIs did, answers 400."""
    others = [ws for ws in dict.fromkeys([account, *memberships]) if ws != primary]
    probe = others[0] if others else NO_SUCH_WORKSPACE
    member = bool(others)
    status, body, latency = caller.get("/v1/account/users", {"workspaceId": probe})
    answered = body.get("accountId") if status == 200 and isinstance(body, dict) else None
    ids_ok = status == 200 and isinstance(body, dict) and _account_ids_ok(body)
    if alias_on:
        ok = (ids_ok and answered == probe) if member else status in (403, 404)
        error = (f"With the workspace alias on, a request naming workspace {probe} only by workspaceId got "
                 f"{status}" + (f" for {answered}" if answered else "") + "; the API does not honour "
                 "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=true, so deploy the declared flags and run the check again.")
    else:
        ok = (ids_ok and answered == primary) or status == 400
        error = (f"With the workspace alias off, a request naming workspace {probe} only by workspaceId got "
                 f"{status}" + (f" for {answered}" if answered else "") + f" instead of the primary workspace "
                 f"{primary}; the API still accepts the alias, so deploy the declared flags and run the check again.")
    check = {"type": "reads", "name": "workspace_alias", "ok": ok, "aliasAccepted": alias_on, "status": status,
             "workspaceId": probe, "accountId": answered, "latencyMs": latency}
    if not ok:
        check["error"] = error
    return check
