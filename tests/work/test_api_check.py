"""verify-reads against the stand-in API in every legal flag state, and against tiny real servers that misbehave."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import http_server, undeclared

from cutover_tui.demo.api import COOKIE_NAME, serve_api
from cutover_tui.errors import CutoverError
from cutover_tui.files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file, write_flags
from cutover_tui.reports.models import VerifyReport
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
        return client.cookies[COOKIE_NAME]


def assert_no_cookie(cookie: str, *texts: str) -> None:
    for text in texts:
        assert cookie not in text


# -- the stand-in, every legal flag state ---------------------------------------------------------

@pytest.mark.parametrize("state", list(LEGAL))
def test_passes_against_the_stand_in_in_each_legal_state(state, backfilled_url, env_file, caplog):
    r, w, d = LEGAL[state]
    set_flags(env_file, r, w, d)
    caplog.set_level(logging.DEBUG)
    with serve_api(backfilled_url, env_file) as base:
        cookie = demo_cookie(base)
        users = httpx.get(f"{base}/v1/account/users", params={"accountId": "ws_1"},
                          cookies={COOKIE_NAME: cookie}).json()["users"]
        caplog.clear()  # the demo's own Set-Cookie answer above is logged by httpcore; the run must log none
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=cookie,
                                        profile_id=users[0]["profileId"],
                                        identity_public_key=users[0]["identityPublicKey"],
                                        collection_id="primary")
    names = {c["name"]: c for c in report["checks"]}
    assert set(names) >= {"session", "users", "identities", "books", "workspace_alias"}
    failing = [c for c in report["checks"] if not c["ok"]]
    assert not failing, failing
    assert report["ok"] is True and names["pixbook"]["bookId"]
    assert report["readStore"] == ("v2" if r else "v1")
    assert all(c["type"] == "reads" and isinstance(c.get("latencyMs", 0), float | int) for c in report["checks"])
    assert names["users"]["expectedCount"] == names["users"]["actualCount"] > 0
    assert undeclared(VerifyReport.model_validate(report)) == []
    assert_no_cookie(cookie, json.dumps(report), caplog.text)


def test_alias_off_is_checked_as_refused(backfilled_url, env_file):
    set_flags(env_file, alias=False)
    with serve_api(backfilled_url, env_file) as base:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=base, cookie=demo_cookie(base),
                                        profile_id="no-such-profile")
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    pixbook = next(c for c in report["checks"] if c["name"] == "pixbook")
    assert pixbook["ok"] and pixbook["status"] == 404  # none in the database either: they agree
    assert report["ok"] and alias["ok"] and alias["status"] == 400 and alias["aliasAccepted"] is False


def test_alias_flag_disagreeing_with_the_api_fails_the_check(backfilled_url, env_file, tmp_path):
    # The API runs with the alias on; the file the operator checks against says off.
    with serve_api(backfilled_url, env_file) as base:
        other = tmp_path / "other.env"
        other.write_bytes(env_file.read_bytes())
        set_flags(other, alias=False)
        report = api_check.run_verify_reads(backfilled_url, other, api=base, cookie=demo_cookie(base))
    alias = next(c for c in report["checks"] if c["name"] == "workspace_alias")
    assert not report["ok"] and not alias["ok"] and "400" in alias["error"]


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
    with serve_api(backfilled_url, env_file) as base:
        cookie = demo_cookie(base)
        got = {p: httpx.get(f"{base}{p}", params={"accountId": "ws_1"}, cookies={COOKIE_NAME: cookie}).json()
               for p in ("/v1/account/session", "/v1/account/users", "/v1/account/identities",
                         "/v1/account/books")}
    first = got["/v1/account/users"]["users"][0]
    with serve_api(backfilled_url, env_file) as base:
        got["/v1/account/pixbook"] = httpx.get(
            f"{base}/v1/account/pixbook", params={"accountId": "ws_1", "profileId": first["profileId"]},
            cookies={COOKIE_NAME: demo_cookie(base)}).json()
    got["/v1/account/pixbook"]["book"]["currentVersion"] += 1
    got["/v1/account/users"]["users"][0]["displayName"] = "Somebody Else"
    got["/v1/account/books"]["books"].pop()
    got["/v1/account/identities"]["workspaceId"] = "ws_other"
    routes = {p: js(b) for p, b in got.items()}
    with canned_server(routes) as fake:
        report = api_check.run_verify_reads(backfilled_url, env_file, api=fake, cookie=COOKIE,
                                        profile_id=first["profileId"])
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False and checks["session"]["ok"]
    pixbook = checks["pixbook"]
    assert not pixbook["ok"] and [m["field"] for m in pixbook["mismatches"]] == ["currentVersion"]
    users = checks["users"]
    assert not users["ok"] and users["mismatches"][0]["field"] == "displayName"
    assert users["mismatches"][0]["actual"] == "Somebody Else" and "differs" in users["error"]
    books = checks["books"]
    assert not books["ok"] and books["expectedCount"] == books["actualCount"] + 1
    assert not checks["identities"]["ok"] and not checks["identities"]["accountIdsMatch"]
    assert undeclared(VerifyReport.model_validate(report)) == []
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
    VerifyReport.model_validate(report)


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

    with serve_api(backfilled_url, env_file) as base:
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
