"""verify-reads against the stand-in API in every legal flag state, against a server answering as §6 says
the real API does, and against tiny real servers that misbehave."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from helpers import http_server, undeclared

from cutover_tui.demo.api import serve_api
from cutover_tui.demo.deployment import environment_of
from cutover_tui.errors import BadInput, CutoverError
from cutover_tui.files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file, write_flags
from cutover_tui.reports.models import ReadsReport
from cutover_tui.reports.present import outcome_lines
from cutover_tui.work import api_check

COOKIE = "s3cret-cookie-value-do-not-leak"
LEGAL = {"FFF": (False, False, False), "TFF": (True, False, False), "TFT": (True, False, True),
         "TTT": (True, True, True), "TTF": (True, True, False)}


def set_flags(env_file, reads_=None, writes=None, dual=None, alias=None):
    wanted = {READS: reads_, WRITES: writes, DUAL_WRITE: dual, ALIAS: alias}
    write_flags(read_env_file(env_file), {k: v for k, v in wanted.items() if v is not None})




def demo_cookie(base: str, user: str = "user_1") -> str:
    with httpx.Client(base_url=base) as client:
        client.post("/v1/demo/session", json={"userId": user}).raise_for_status()
        # The stand-in names it as its configured base URL implies (`__Secure-` for https), or, before that, plainly.
        return next(client.cookies[n] for n in (api_check.SECURE_COOKIE_NAME, api_check.COOKIE_NAME)
                    if n in client.cookies)


def as_cookies(token: str) -> dict[str, str]:
    """The token under both of BetterAuth's names, for the tests' own calls."""
    return {api_check.COOKIE_NAME: token, api_check.SECURE_COOKIE_NAME: token}


def assert_no_cookie(cookie: str, *texts: str) -> None:
    for text in texts:
        assert cookie not in text


# -- the stand-in, every legal flag state ---------------------------------------------------------

@pytest.mark.parametrize("state", list(LEGAL))
def test_passes_against_the_stand_in_in_each_legal_state(state, backfilled_url, env_file, caplog):
    r, w, d = LEGAL[state]
    set_flags(env_file, r, w, d)
    caplog.set_level(logging.DEBUG)
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        cookie = demo_cookie(base)
        users = httpx.get(f"{base}/v1/account/users", params={"accountId": "ws_1"},
                          cookies=as_cookies(cookie)).json()["users"]
        owner = next(u for u in users if u["profileId"] and u["identityPublicKey"])
        caplog.clear()  # the demo's own Set-Cookie answer above is logged by httpcore; the run must log none
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie,
                                        profile_id=owner["profileId"],
                                        identity_public_key=owner["identityPublicKey"],
                                        collection_id="primary")
    names = {c["name"]: c for c in report["checks"]}
    assert set(names) >= {"session", "users", "identities", "books", "workspace_alias"}
    failing = [c for c in report["checks"] if not c["ok"]]
    assert not failing, [c.get("mismatches") for c in failing]
    assert report["ok"] is True and names["pixbook"]["bookId"]
    assert report["readStore"] == ("v2" if r else "v1")
    assert all(c["type"] == "reads" and isinstance(c.get("latencyMs", 0), float | int) for c in report["checks"])
    assert names["users"]["expectedCount"] == names["users"]["actualCount"] > 0
    # Upstream's own output, beside the comparison.
    assert report["accountId"] == "ws_1" and report["userCount"] == len(users) and report["bookCount"] >= 0
    assert report["pixbookResolved"] is True and report["skipped"] == {} and report["flagsFrom"] == "env file"
    assert undeclared(ReadsReport.model_validate(report)) == []
    assert_no_cookie(cookie, json.dumps(report), caplog.text)


def test_alias_off_is_checked_as_ignored(backfilled_url, env_file):
    set_flags(env_file, alias=False)
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=demo_cookie(base),
                                        profile_id="no-such-profile", identity_public_key="no-such-key")
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    pixbook = next(c for c in report["checks"] if c["name"] == "pixbook")
    assert pixbook["ok"] and pixbook["status"] == 404  # none in the database either: they agree
    assert report["ok"] and alias["ok"] and alias["aliasAccepted"] is False and report["pixbookResolved"] is False
    # The real API falls back to the primary workspace; an older stand-in refused with 400.
    assert (alias["status"], alias["accountId"]) in ((200, "ws_1"), (400, None))


def test_the_pixbook_is_probed_only_with_a_profile_and_a_key(backfilled_url, env_file):
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=demo_cookie(base),
                                        profile_id="some-profile")
    assert report["ok"] and "pixbook" not in {c["name"] for c in report["checks"]}
    assert "identity public key" in report["skipped"]["pixbook"] and report["pixbookResolved"] is False
    assert "SKIP pixbook" in "\n".join(outcome_lines(ReadsReport.model_validate(report)))


def test_the_running_apis_flags_choose_the_store_over_the_env_file(backfilled_url, env_file, tmp_path):
    # The env file declares v2 reads, but the API still runs (was never redeployed) with legacy reads.
    running = environment_of(env_file)
    set_flags(env_file, True)
    with psycopg.connect(backfilled_url, autocommit=True) as conn:  # v2 and legacy now tell apart
        conn.execute("UPDATE pixbooks SET name = name || ' (v2)' WHERE account_id = 'ws_1'")
    with serve_api(backfilled_url, running) as base:
        cookie = demo_cookie(base)
        declared = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
        deployed = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie, running_env=running)
    assert (declared["readStore"], declared["ok"]) == ("v2", False)
    assert (deployed["readStore"], deployed["flagsFrom"], deployed["ok"]) == ("v1", "running API", True)


def test_alias_flag_disagreeing_with_the_api_fails_the_check(backfilled_url, env_file, tmp_path):
    # The API runs with the alias on; the file the operator checks against says off.
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        other = tmp_path / "other.env"
        other.write_bytes(env_file.read_bytes())
        set_flags(other, alias=False)
        report = api_check.run_verify_reads(backfilled_url, other, api=base, cookie=demo_cookie(base))
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    assert not report["ok"] and not alias["ok"] and "still accepts the alias" in alias["error"]


# -- tiny real servers ----------------------------------------------------------------------------

class Canned(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def do_GET(self):
        path = urlsplit(self.path).path
        status, body, ctype, delay = self.routes.get(path, self.routes.get("*", (404, b"{}", "application/json", 0)))
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def canned_server(routes: dict):
    return http_server(type("Handler", (Canned,), {"routes": routes}))


def js(obj, status=200, delay=0.0):
    return (status, json.dumps(obj).encode(), "application/json", delay)


SESSION = {"ok": True, "user": {"id": "user_1", "email": "a@b", "name": "A"},
           "workspace": {"accountId": "ws_1", "workspaceId": "ws_1", "name": "W", "role": "owner",
                         "capabilities": [], "createdAt": "2025-01-01T00:00:00+00:00",
                         "updatedAt": "2025-01-01T00:00:00+00:00"}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail_with(routes, env_file, *, url_of=lambda base: base, timeout=5.0):
    with canned_server(routes) as base, pytest.raises(CutoverError) as info:
        api_check.run_verify_reads("postgresql://nobody@127.0.0.1:1/none", env_file, api=url_of(base),
                               cookie=COOKIE, timeout=timeout)
    assert_no_cookie(COOKIE, str(info.value), info.value.message, repr(info.value.args))
    return info.value


def test_each_error_kind_has_its_own_clear_message(env_file):
    seen = {}
    seen["timeout"] = fail_with({"*": js(SESSION, delay=1.0)}, env_file, timeout=0.2)
    assert isinstance(seen["timeout"], api_check.ApiTimeout) and "did not answer" in seen["timeout"].message

    with pytest.raises(api_check.ApiUnreachable) as refused:
        api_check.run_verify_reads("postgresql://x@127.0.0.1:1/x", env_file, api=f"http://127.0.0.1:{closed_port()}",
                               cookie=COOKIE, timeout=2)
    seen["refused"] = refused.value
    assert "refused" in refused.value.message

    seen["tls"] = fail_with({"*": js(SESSION)}, env_file, url_of=lambda b: b.replace("http://", "https://"))
    assert isinstance(seen["tls"], api_check.ApiTlsError) and "TLS" in seen["tls"].message

    for status, cls, word in ((401, api_check.ApiUnauthorized, "cookie"), (403, api_check.ApiForbidden, "member"),
                              (404, api_check.ApiNotFound, "--api"), (500, api_check.ApiServerError, "logs"),
                              (503, api_check.ApiServerError, "logs")):
        error = fail_with({"*": js({"ok": False, "error": "no"}, status=status)}, env_file)
        assert isinstance(error, cls) and str(status) in error.message and word in error.message
        seen[status] = error

    seen["html"] = fail_with({"*": (200, b"<html>hello</html>", "text/html", 0)}, env_file)
    assert isinstance(seen["html"], api_check.ApiNotJson) and "not JSON" in seen["html"].message
    seen["html500"] = fail_with({"*": (502, b"<html>bad gateway</html>", "text/html", 0)}, env_file)
    assert isinstance(seen["html500"], api_check.ApiServerError)

    seen["fields"] = fail_with({"*": js({"ok": True})}, env_file)
    assert isinstance(seen["fields"], api_check.ApiMissingFields) and "user, workspace" in seen["fields"].message
    seen["ws_fields"] = fail_with({"*": js({**SESSION, "workspace": {"name": "W"}})}, env_file)
    assert isinstance(seen["ws_fields"], api_check.ApiMissingFields)

    messages = [e.message for k, e in seen.items() if k not in (503, "html500")]
    assert len(set(messages)) == len(messages)
    for message in messages:  # one sentence each, ending with what to do
        assert message.endswith(".") and message.count(". ") == 0, message


def test_a_wrong_list_fails_with_the_field_named(backfilled_url, env_file):
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        cookie = demo_cookie(base)
        got = {p: httpx.get(f"{base}{p}", params={"accountId": "ws_1"}, cookies=as_cookies(cookie)).json()
               for p in ("/v1/account/session", "/v1/account/users", "/v1/account/identities",
                         "/v1/account/books")}
    first = next(u for u in got["/v1/account/users"]["users"] if u["profileId"] and u["identityPublicKey"])
    with serve_api(backfilled_url, environment_of(env_file)) as base:
        got["/v1/account/pixbook"] = httpx.get(
            f"{base}/v1/account/pixbook", params={"accountId": "ws_1", "profileId": first["profileId"],
                                                  "identityPublicKey": first["identityPublicKey"]},
            cookies=as_cookies(demo_cookie(base))).json()
    book = got["/v1/account/pixbook"]["book"]
    book["currentVersion"] = str(int(book["currentVersion"]) + 1)
    got["/v1/account/users"]["users"][0]["displayName"] = "Somebody Else"
    got["/v1/account/books"]["books"].pop()
    got["/v1/account/identities"]["workspaceId"] = "ws_other"
    routes = {p: js(b) for p, b in got.items()}
    with canned_server(routes) as fake:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=fake, cookie=COOKIE,
                                        profile_id=first["profileId"],
                                        identity_public_key=first["identityPublicKey"])
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False and checks["session"]["ok"]
    pixbook = checks["pixbook"]
    assert not pixbook["ok"] and [m["field"] for m in pixbook["mismatches"]] == ["currentVersion"]
    users = checks["users"]
    assert [(m["actualId"], m["field"]) for m in users["mismatches"]] == [
        (got["/v1/account/users"]["users"][0]["id"], "displayName")]
    assert users["mismatches"][0]["actual"] == "Somebody Else" and "differs" in users["error"]
    books = checks["books"]
    assert not books["ok"] and books["expectedCount"] == books["actualCount"] + 1
    assert not checks["identities"]["ok"] and not checks["identities"]["accountIdsMatch"]
    assert undeclared(ReadsReport.model_validate(report)) == []
    assert_no_cookie(COOKIE, json.dumps(report))


def test_a_later_call_failing_becomes_a_failing_check(legacy_db_url, env_file):
    routes = {"/v1/account/session": js(SESSION), "/v1/account/users": js({"ok": False, "error": "boom"}, 500),
              "/v1/account/identities": (200, b"nope", "text/plain", 0),
              "/v1/account/books": js({"ok": True, "accountId": "ws_1", "workspaceId": "ws_1"})}
    with canned_server(routes) as fake:
        report = api_check.run_verify_reads(legacy_db_url, env_file, api=fake, cookie=COOKIE)
    checks = {c["name"]: c for c in report["checks"]}
    assert "500" in checks["users"]["error"] and "not JSON" in checks["identities"]["error"]
    assert "lacks books" in checks["books"]["error"]
    assert not report["ok"] and not any(checks[n]["ok"] for n in ("users", "identities", "books"))
    ReadsReport.model_validate(report)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_a_self_signed_certificate_is_a_tls_failure(env_file, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (Canned,), {"routes": {"*": js(SESSION)}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(api_check.ApiTlsError) as info:
            api_check.run_verify_reads("postgresql://x@127.0.0.1:1/x", env_file,
                                   api=f"https://127.0.0.1:{server.server_address[1]}", cookie=COOKIE, timeout=3)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "CERTIFICATE" in info.value.message and "trusted" in info.value.message
    assert_no_cookie(COOKIE, info.value.message)


def test_cli_verify_reads_reports_journals_and_never_shows_the_cookie(backfilled_url, env_file, capsys, tmp_path):
    from helpers import ROOT as REPO

    from cutover_tui.cli import main

    with serve_api(backfilled_url, environment_of(env_file)) as base:
        cookie = demo_cookie(base)
        args = ["--runbook", str(REPO / "runbook.toml"), "--database-url", backfilled_url,
                "--env-file", str(env_file), "verify-reads", "--api", base, "--cookie", cookie,
                "--report", str(tmp_path / "api_check.json")]
        code = main(args)
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        assert "PASS users" in out and "PASS books" in out
        code = main(["--runbook", str(REPO / "runbook.toml"), "--database-url", backfilled_url,
                     "--env-file", str(env_file), "journal", "--json"])
        journal = capsys.readouterr().out
    assert '"verify-reads"' in journal
    assert_no_cookie(cookie, out, journal, (tmp_path / "api_check.json").read_text())
    code = main([*args[:-4], "--cookie", "", "--report", str(tmp_path / "r2.json")])
    assert code == 2 and "No session cookie" in capsys.readouterr().err


# -- a server answering as SYSTEM.md §6 says the real API does -------------------------------------

TOKEN = "real-api-session-token-0123456789"
# Per store: identities, books, members, snapshots, and the columns naming the account, identity and book.
STORES = {"v1": ("platform_managed_users", "platform_books", "platform_workspace_members", "platform_book_snapshots",
                 "workspace_id", "managed_user_id", "book_id"),
          "v2": ("identities", "pixbooks", "account_members", "pixbook_snapshots", "account_id", "identity_id",
                 "pixbook_id")}


def js_time(value):
    """As node-pg and Date.toISOString() send it: UTC, microseconds truncated to milliseconds, Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RealApi(BaseHTTPRequestHandler):
    """The account API's reads as §6 describes them, from the test database: BIGINTs as strings,
    millisecond timestamps, an empty profile id as null, trimmed collection ids, lists ordered by
    created_at only (ties here come newest id first), /pixbook needing a profile and a key, the
    https cookie name, and a workspaceId ignored (primary workspace) while the alias flag is off."""

    database_url: ClassVar[str] = ""
    store: ClassVar[str] = "v1"
    alias: ClassVar[bool] = True
    order: ClassVar[str] = "created_at, id DESC"
    renamed: ClassVar[dict] = {}

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        cookies = dict(p.strip().split("=", 1) for p in self.headers.get("cookie", "").split(";") if "=" in p)
        if cookies.get(api_check.SECURE_COOKIE_NAME) != TOKEN:
            return self.answer(401, {"ok": False, "error": "Unauthorized"})
        with psycopg.connect(self.database_url) as conn:
            status, body = self.route(conn, parts.path, query)
        self.answer(status, body)

    def route(self, conn, path, query):
        idents, books, members, snaps, acct, ident_fk, book_fk = STORES[self.store]
        mine = [r[0] for r in conn.execute(f"SELECT {acct} FROM {members} WHERE user_id = 'user_1' "
                                           "AND status = 'active' ORDER BY created_at, id")]
        account = query.get("accountId") or (query.get("workspaceId") if self.alias else None) or mine[0]
        if account not in mine:
            return 403, {"ok": False, "error": "Forbidden"}
        named = {"ok": True, "accountId": account, "workspaceId": account}
        if path == "/v1/account/session":
            return 200, {"ok": True, "user": {"id": "user_1", "email": "u@x", "name": "U"},
                         "workspace": {**named, "name": "W", "role": "owner", "capabilities": [],
                                       "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}}
        user_cols = ("id, display_name, avatar_public_id, user_key, profile_id, identity_public_key, "
                     "identity_key_fingerprint, status, created_at, updated_at")
        if path in ("/v1/account/users", "/v1/account/identities"):
            rows = conn.execute(f"SELECT {user_cols} FROM {idents} WHERE {acct} = %s AND status <> 'deleted' "
                                f"ORDER BY {self.order}", (account,)).fetchall()
            return 200, {**named, path.rsplit("/", 1)[1]: [self.user(r) for r in rows]}
        book_sql = (f"SELECT b.id, b.{ident_fk}, b.collection_id, i.display_name, b.name, b.status, b.current_version, "
                    f"b.created_at, b.updated_at FROM {books} b JOIN {idents} i ON i.id = b.{ident_fk} "
                    f"WHERE b.{acct} = %s AND b.status <> 'deleted' ")
        if path == "/v1/account/books":
            rows = conn.execute(book_sql + f"ORDER BY b.{self.order.replace(', ', ', b.')}", (account,)).fetchall()
            return 200, {**named, "books": [self.book(r) for r in rows]}
        if path == "/v1/account/pixbook":
            if not query.get("profileId") or not query.get("identityPublicKey"):
                return 400, {"ok": False, "error": "profileId and identityPublicKey are required"}
            ident = conn.execute(f"SELECT {user_cols} FROM {idents} WHERE {acct} = %s AND profile_id = %s "
                                 "AND identity_public_key = %s AND status <> 'deleted' ORDER BY created_at LIMIT 1",
                                 (account, query["profileId"], query["identityPublicKey"])).fetchone()
            book = ident and conn.execute(book_sql + f"AND b.{ident_fk} = %s AND coalesce(nullif(btrim(b.collection_id), "
                                          "''), 'primary') = %s ORDER BY b.created_at LIMIT 1",
                                          (account, ident[0], query.get("collectionId", "primary"))).fetchone()
            if book is None:
                return 404, {"ok": False, "error": "Not found"}
            snap = conn.execute(f"SELECT id, version, cipher_object_key, cipher_sha256, wrapped_dek, ledger_head, "
                                f"created_at FROM {snaps} WHERE {book_fk} = %s ORDER BY version DESC LIMIT 1",
                                (book[0],)).fetchone()
            user = {k: v for k, v in self.user(ident).items() if k not in ("createdAt", "updatedAt", "displayName")}
            shelf = {k: v for k, v in self.book(book).items() if k != "managedUserDisplayName"}
            return 200, {**named, "managedUser": user, "book": shelf, "snapshot": snap and {
                "id": snap[0], "version": str(snap[1]), "cipherObjectKey": snap[2], "cipherSha256": snap[3],
                "wrappedDek": snap[4], "ledgerHead": snap[5], "createdAt": js_time(snap[6])}}
        return 404, {"ok": False, "error": "Not found"}

    @staticmethod
    def user(r):
        return {"id": r[0], "displayName": r[1], "avatarPublicId": r[2], "userKey": r[3], "profileId": r[4] or None,
                "identityPublicKey": r[5], "identityKeyFingerprint": r[6], "status": r[7],
                "createdAt": js_time(r[8]), "updatedAt": js_time(r[9])}

    def book(self, r):
        return {"id": r[0], "managedUserId": r[1], "collectionId": r[2].strip(), "managedUserDisplayName": r[3],
                "name": self.renamed.get(r[0], r[4]), "status": r[5], "currentVersion": str(r[6]),
                "createdAt": js_time(r[7]), "updatedAt": js_time(r[8])}

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def real_api(url, store="v1", alias=True, **extra):
    return http_server(type("Handler", (RealApi,), {"database_url": url, "store": store, "alias": alias, **extra}))


def plant_real_world_values(url: str, store: str) -> tuple[str, str]:
    """Two more identities of ws_1 in `store`, created in one microsecond a millisecond cannot hold
    (a tie), one with an empty profile id; two books of theirs, tied too, one with a collection id
    with spaces, both at version 3. Returns the (profile, key) of an identity with a primary book."""
    idents, books, _, _, acct, ident_fk, _ = STORES[store]
    tie = "2024-02-02 16:21:00.123999+00"
    with psycopg.connect(url, autocommit=True) as conn:
        owner = conn.execute(f"SELECT i.profile_id, i.identity_public_key FROM {idents} i JOIN {books} b "
                             f"ON b.{ident_fk} = i.id WHERE i.{acct} = 'ws_1' AND i.status <> 'deleted' AND "
                             "b.status <> 'deleted' AND b.collection_id = 'primary' AND i.profile_id <> '' AND "
                             "i.identity_public_key IS NOT NULL ORDER BY i.id LIMIT 1").fetchone()
        for ident, profile in (("mu_tie_a", ""), ("mu_tie_b", "profile_tie_b")):
            conn.execute(f"INSERT INTO {idents} (id, {acct}, display_name, user_key, profile_id, created_at, "
                         "updated_at) VALUES (%s, 'ws_1', %s, %s, %s, %s, %s)", (ident, ident, ident, profile, tie, tie))
        for book, collection in (("book_tie_a", " spaced "), ("book_tie_b", "primary")):
            conn.execute(f"INSERT INTO {books} (id, {acct}, {ident_fk}, name, collection_id, current_version, "
                         "created_at, updated_at) VALUES (%s, 'ws_1', 'mu_tie_b', %s, %s, 3, %s, %s)",
                         (book, book, collection, tie, tie))
    return owner[0], owner[1]


@pytest.mark.parametrize("store", ["v1", "v2"])
def test_passes_against_the_real_apis_json(store, backfilled_url, env_file, caplog):
    set_flags(env_file, store == "v2")
    profile, key = plant_real_world_values(backfilled_url, store)
    caplog.set_level(logging.DEBUG)
    whole = f"theme=dark; {api_check.SECURE_COOKIE_NAME}={TOKEN}"  # a whole Cookie header, pasted from a browser
    with real_api(backfilled_url, store) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=whole, profile_id=profile,
                                            identity_public_key=key)
        served = httpx.get(f"{base}/v1/account/users", params={"accountId": "ws_1"}, headers={"cookie": whole}).json()
    # The server does answer as §6 says: a tie newest id first, null for an empty profile id, milliseconds.
    tied = [u for u in served["users"] if u["id"].startswith("mu_tie_")]
    assert [(u["id"], u["profileId"], u["createdAt"]) for u in tied] == [
        ("mu_tie_b", "profile_tie_b", "2024-02-02T16:21:00.123Z"), ("mu_tie_a", None, "2024-02-02T16:21:00.123Z")]
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert checks["session"]["cookieNames"] == ["theme", api_check.SECURE_COOKIE_NAME]
    assert checks["pixbook"]["bookId"] and report["pixbookResolved"] is True
    assert checks["workspace_alias"]["status"] in (200, 403)
    assert report["userCount"] == checks["users"]["expectedCount"] >= 4 and report["bookCount"] >= 3
    assert undeclared(ReadsReport.model_validate(report)) == []
    assert_no_cookie(TOKEN, json.dumps(report), caplog.text)


def test_with_the_alias_off_the_real_fallback_passes_and_a_mismatch_fails(backfilled_url, env_file):
    set_flags(env_file, alias=False)
    cookie = f"{api_check.SECURE_COOKIE_NAME}={TOKEN}"
    with real_api(backfilled_url, alias=False) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    assert report["ok"] and alias["status"] == 200 and alias["accountId"] == report["accountId"]
    # The API honours the alias while the flags say off; and the reverse.
    with real_api(backfilled_url, alias=True) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
    assert not next(c for c in report["checks"] if c["name"] == "workspace_alias")["ok"]
    set_flags(env_file, alias=True)
    with real_api(backfilled_url, alias=False) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    assert not alias["ok"] and "does not honour" in alias["error"]


def test_a_planted_difference_still_fails_against_the_real_apis_json(backfilled_url, env_file):
    plant_real_world_values(backfilled_url, "v1")
    with psycopg.connect(backfilled_url) as conn:
        book = conn.execute("SELECT id FROM platform_books WHERE workspace_id = 'ws_1' AND status <> 'deleted' "
                            "ORDER BY id DESC LIMIT 1").fetchone()[0]
    cookie = f"{api_check.SECURE_COOKIE_NAME}={TOKEN}"
    with real_api(backfilled_url, renamed={book: "Renamed by the API"}) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
    books = next(c for c in report["checks"] if c["name"] == "books")
    assert not report["ok"] and [(m["actualId"], m["field"], m["actual"]) for m in books["mismatches"]] == [
        (book, "name", "Renamed by the API")]
    # Lists out of created_at order fail too: only rows with equal created_at may come in any order.
    with real_api(backfilled_url, order="created_at DESC, id") as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie)
    users = next(c for c in report["checks"] if c["name"] == "users")
    assert not users["ok"] and {m["field"] for m in users["mismatches"]} == {"order"}


def test_the_cookie_as_a_header_or_a_bare_token():
    secure, plain = api_check.SECURE_COOKIE_NAME, api_check.COOKIE_NAME
    assert api_check.cookie_header("tok.sig", "https://api.example") == (f"{secure}=tok.sig", [secure])
    # Over http the API may still be configured for https (behind a TLS proxy): both names go.
    assert api_check.cookie_header(" tok.sig ", "http://127.0.0.1:3000") == (
        f"{plain}=tok.sig; {secure}=tok.sig", [plain, secure])
    # Base64 padding is no name=value pair.
    assert api_check.cookie_header("tok.c2ln==", "http://x")[0] == f"{plain}=tok.c2ln==; {secure}=tok.c2ln=="
    assert api_check.cookie_header(f"{plain}=abc", "https://x") == (f"{plain}=abc", [plain])
    assert api_check.cookie_header(f"Cookie: a=1; {secure}=abc", "http://x") == (f"a=1; {secure}=abc", ["a", secure])
    with pytest.raises(BadInput) as info:
        api_check.cookie_header("abc\r\nX-Evil: 1", "http://x")
    assert "abc" not in info.value.message


def test_values_compare_as_the_real_api_sends_them():
    from datetime import datetime

    at = datetime(2024, 2, 2, 16, 21, 0, 123999, tzinfo=UTC)
    same = api_check._same
    assert same("createdAt", at, "2024-02-02T16:21:00.123Z") and same("createdAt", at, "2024-02-02T16:21:00.124Z")
    assert same("createdAt", at, at.isoformat()) and not same("createdAt", at, "2024-02-02T16:21:00.122Z")
    assert not same("createdAt", at, "2024-02-02T16:21:00.123")  # no zone: not the API's
    assert same("currentVersion", 3, "3") and same("currentVersion", 3, 3) and not same("currentVersion", 3, "3.0")
    assert same("profileId", "", None) and same("profileId", None, None) and not same("profileId", "p", None)
    assert same("collectionId", " x ", "x") and same("collectionId", " x ", " x ") and not same("collectionId", "x", "y")
