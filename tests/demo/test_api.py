"""The stand-in account API against a real server on a backfilled database."""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import psycopg
import pytest

from cutover_tui.demo.api import COOKIE_NAME, serve_api, switch_for
from cutover_tui.files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file, write_flags

ACCOUNT = "ws_1"
USER = "user_1"


def set_flags(env_file, **flags):
    names = {"reads": READS, "writes": WRITES, "dual_write": DUAL_WRITE, "alias": ALIAS}
    write_flags(read_env_file(env_file), {names[k]: v for k, v in flags.items()})




@pytest.fixture
def api(backfilled_url, env_file):
    with serve_api(backfilled_url, env_file) as base:
        yield base


@contextmanager
def client_for(base, user=USER):
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/v1/demo/session", json={"userId": user})
        assert response.status_code == 200
        assert client.cookies.get(COOKIE_NAME)
        yield client


@pytest.fixture
def client(api):
    with client_for(api) as c:
        yield c


def one(url, query, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


def test_switch_layer_follows_section_5():
    def sw(r, w, d):
        return switch_for({READS: r, WRITES: w, DUAL_WRITE: d, ALIAS: True})
    assert (sw(False, False, False).read, sw(False, False, False).primary, sw(False, False, False).mirror) == ("v1", "v1", None)
    assert (sw(True, False, False).primary, sw(True, False, False).mirror) == ("v1", "v2")
    assert sw(True, False, True).mirror == "v2"
    assert (sw(True, True, True).primary, sw(True, True, True).mirror) == ("v2", "v1")
    assert sw(True, True, False).mirror is None
    assert sw(False, True, False).mirror == "v1"


def test_reads_have_the_section_6_shapes(client, backfilled_url):
    session = client.get("/v1/account/session").json()
    assert session["ok"] is True and set(session["user"]) == {"id", "email", "name"}
    assert set(session["workspace"]) == {"accountId", "workspaceId", "name", "role", "capabilities",
                                         "createdAt", "updatedAt"}
    assert session["workspace"]["accountId"] == session["workspace"]["workspaceId"] == ACCOUNT

    users = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()
    assert users["accountId"] == users["workspaceId"] == ACCOUNT and users["users"]
    assert set(users["users"][0]) == {"id", "displayName", "avatarPublicId", "userKey", "profileId",
                                      "identityPublicKey", "identityKeyFingerprint", "status", "createdAt",
                                      "updatedAt"}
    assert all(u["status"] != "deleted" for u in users["users"])
    assert [(u["createdAt"], u["id"]) for u in users["users"]] == sorted((u["createdAt"], u["id"]) for u in users["users"])
    identities = client.get("/v1/account/identities", headers={"x-account-id": ACCOUNT}).json()
    assert identities["identities"] == users["users"]

    books = client.get("/v1/account/books", params={"accountId": ACCOUNT}).json()
    assert books["accountId"] == books["workspaceId"] == ACCOUNT and books["books"]
    assert set(books["books"][0]) == {"id", "managedUserId", "collectionId", "managedUserDisplayName", "name",
                                      "status", "currentVersion", "createdAt", "updatedAt"}
    count = one(backfilled_url, "SELECT count(*) FROM platform_books WHERE workspace_id = %s AND status <> 'deleted'",
                (ACCOUNT,))[0]
    assert len(books["books"]) == count

    book = books["books"][0]
    profile = next(u["profileId"] for u in users["users"] if u["id"] == book["managedUserId"])
    pix = client.get("/v1/account/pixbook", params={"accountId": ACCOUNT, "profileId": profile,
                                                    "collectionId": book["collectionId"] or "primary"})
    assert pix.status_code == 200, pix.text
    body = pix.json()
    assert set(body) == {"ok", "accountId", "workspaceId", "managedUser", "book", "snapshot"}
    assert body["accountId"] == body["workspaceId"] == ACCOUNT
    assert body["book"]["managedUserId"] == body["managedUser"]["id"]
    missing = client.get("/v1/account/pixbook", params={"accountId": ACCOUNT, "profileId": "nobody"})
    assert missing.status_code == 404 and missing.json()["ok"] is False


def test_auth_401_and_403(api, backfilled_url):
    anonymous = httpx.get(f"{api}/v1/account/users", params={"accountId": ACCOUNT})
    assert anonymous.status_code == 401 and anonymous.json() == {"ok": False, "error": anonymous.json()["error"]}
    forged = httpx.get(f"{api}/v1/account/users", params={"accountId": ACCOUNT}, cookies={COOKIE_NAME: "forged"})
    assert forged.status_code == 401
    other = one(backfilled_url, "SELECT id FROM platform_workspaces w WHERE NOT EXISTS (SELECT 1 FROM "
                "platform_workspace_members m WHERE m.workspace_id = w.id AND m.user_id = %s) ORDER BY id LIMIT 1",
                (USER,))[0]
    with client_for(api) as client:
        denied = client.get("/v1/account/books", params={"accountId": other})
        assert denied.status_code == 403 and denied.json()["ok"] is False
        assert client.get("/v1/account/books").status_code == 400
    assert httpx.post(f"{api}/v1/demo/session", json={"userId": "nobody"}).status_code == 404


def test_alias_on_and_off(client, env_file):
    on = client.get("/v1/account/users", params={"workspaceId": ACCOUNT})
    assert on.status_code == 200 and on.json()["accountId"] == ACCOUNT
    assert client.get("/v1/account/books", headers={"x-workspace-id": ACCOUNT}).status_code == 200
    set_flags(env_file, alias=False)
    off = client.get("/v1/account/users", params={"workspaceId": ACCOUNT})
    assert off.status_code == 400 and off.json()["ok"] is False
    assert client.get("/v1/account/users", headers={"x-workspace-id": ACCOUNT}).status_code == 400
    assert client.get("/v1/account/users", params={"accountId": ACCOUNT}).status_code == 200


def test_flags_switch_the_read_store_at_request_time(client, env_file, backfilled_url):
    first = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("UPDATE identities SET display_name = 'Only In V2' WHERE id = %s", (first["id"],))
    assert client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]["displayName"] == \
        first["displayName"]
    set_flags(env_file, reads=True)
    assert client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]["displayName"] == \
        "Only In V2"
    set_flags(env_file, reads=False)
    assert client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]["displayName"] == \
        first["displayName"]


def test_dual_write_lands_in_both_stores_with_the_same_id(client, env_file, backfilled_url, api):
    set_flags(env_file, reads=True, dual_write=True)
    created = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "New Person",
                                                          "userKey": "key_new"})
    assert created.status_code == 201, created.text
    ident = created.json()["user"]["id"]
    assert one(backfilled_url, "SELECT display_name FROM platform_managed_users WHERE id = %s AND workspace_id = %s",
               (ident, ACCOUNT)) == ("New Person",)
    assert one(backfilled_url, "SELECT display_name FROM identities WHERE id = %s AND account_id = %s",
               (ident, ACCOUNT)) == ("New Person",)

    book = client.post("/v1/account/books", json={"accountId": ACCOUNT, "managedUserId": ident, "name": "Album"})
    assert book.status_code == 201, book.text
    book_id = book.json()["book"]["id"]
    snap = client.post(f"/v1/account/books/{book_id}/snapshots",
                       json={"accountId": ACCOUNT, "cipherObjectKey": "k", "cipherSha256": "s", "wrappedDek": "d"})
    assert snap.status_code == 201 and snap.json()["snapshot"]["version"] == 1
    assert client.patch(f"/v1/account/books/{book_id}", json={"accountId": ACCOUNT, "name": "Renamed"}).status_code == 200
    assert client.patch(f"/v1/account/identities/{ident}",
                        json={"accountId": ACCOUNT, "displayName": "Renamed Person"}).status_code == 200
    assert client.patch("/v1/account/workspace", json={"accountId": ACCOUNT, "name": "New Name"}).status_code == 200
    for legacy, v2 in (("SELECT name, current_version, updated_at FROM platform_books WHERE id = %s",
                        "SELECT name, current_version, updated_at FROM pixbooks WHERE id = %s"),
                       ("SELECT version FROM platform_book_snapshots WHERE book_id = %s",
                        "SELECT version FROM pixbook_snapshots WHERE pixbook_id = %s")):
        assert one(backfilled_url, legacy, (book_id,)) == one(backfilled_url, v2, (book_id,)) is not None
    assert one(backfilled_url, "SELECT name FROM platform_books WHERE id = %s", (book_id,)) == ("Renamed",)
    assert one(backfilled_url, "SELECT display_name FROM identities WHERE id = %s", (ident,)) == ("Renamed Person",)
    assert one(backfilled_url, "SELECT name FROM platform_workspaces WHERE id = %s", (ACCOUNT,)) == \
        one(backfilled_url, "SELECT name FROM accounts WHERE id = %s", (ACCOUNT,)) == ("New Name",)

    removed = client.delete(f"/v1/account/books/{book_id}", params={"accountId": ACCOUNT})
    assert removed.status_code == 200
    assert one(backfilled_url, "SELECT status FROM platform_books WHERE id = %s", (book_id,)) == \
        one(backfilled_url, "SELECT status FROM pixbooks WHERE id = %s", (book_id,)) == ("deleted",)
    listed = client.get("/v1/account/books", params={"accountId": ACCOUNT}).json()["books"]
    assert book_id not in [b["id"] for b in listed]
    assert httpx.get(f"{api}/v1/demo/stats").json()["mirrorFailures"] == 0


def test_writes_with_writes_flag_go_to_v2_first(client, env_file, backfilled_url):
    set_flags(env_file, reads=True, writes=True)  # TTF: v2 only, no mirror
    created = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "V2 Only",
                                                          "userKey": "key_v2"})
    ident = created.json()["user"]["id"]
    assert one(backfilled_url, "SELECT 1 FROM identities WHERE id = %s", (ident,)) == (1,)
    assert one(backfilled_url, "SELECT 1 FROM platform_managed_users WHERE id = %s", (ident,)) is None
    dup = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "Again",
                                                      "userKey": "key_v2"})
    assert dup.status_code == 409 and dup.json()["ok"] is False


def test_a_mirror_failure_is_counted_and_the_request_succeeds(client, env_file, backfilled_url, api, caplog):
    set_flags(env_file, reads=True, dual_write=True)
    ident = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]["id"]
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse_mirror() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'mirror is down'; END $$")
        conn.execute("CREATE TRIGGER refuse_mirror BEFORE INSERT ON pixbooks FOR EACH ROW "
                     "EXECUTE FUNCTION refuse_mirror()")
    response = client.post("/v1/account/books", json={"accountId": ACCOUNT, "managedUserId": ident,
                                                      "name": "Mirror Down", "collectionId": "mirror-test"})
    assert response.status_code == 201, response.text
    book_id = response.json()["book"]["id"]
    assert one(backfilled_url, "SELECT name FROM platform_books WHERE id = %s", (book_id,)) == ("Mirror Down",)
    assert one(backfilled_url, "SELECT 1 FROM pixbooks WHERE id = %s", (book_id,)) is None
    stats = httpx.get(f"{api}/v1/demo/stats").json()
    assert stats["mirrorFailures"] == 1 and stats["requests"] >= 3
    assert "mirror write to v2 failed" in caplog.text and "mirror is down" in caplog.text
