"""The stand-in account API against a real server on a backfilled database."""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from cutover_tui.demo.api import (
    COOKIE_NAME,
    DUAL_WRITE_LOG,
    SECURE_COOKIE_NAME,
    cookie_name_for,
    serve_api,
    session_cookie,
    switch_for,
)
from cutover_tui.demo.deployment import environment_of
from cutover_tui.files.envfile import ALIAS, DUAL_WRITE, READS, WRITES, read_env_file, write_flags

ACCOUNT = "ws_1"
USER = "user_1"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # Date.toISOString()


def set_flags(env_file, **flags):
    names = {"reads": READS, "writes": WRITES, "dual_write": DUAL_WRITE, "alias": ALIAS}
    write_flags(read_env_file(env_file), {names[k]: v for k, v in flags.items()})




@pytest.fixture
def start(backfilled_url, env_file):
    """start(**flags): write the flags to the env file, then start an API from it: like the real
    one, it reads them from its environment once, when it starts."""
    with ExitStack() as stack:
        def started(**flags) -> str:
            if flags:
                set_flags(env_file, **flags)
            return stack.enter_context(serve_api(backfilled_url, environment_of(env_file)))
        yield started


@pytest.fixture
def api(start):
    return start()


@contextmanager
def client_for(base, user=USER):
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/v1/demo/session", json={"userId": user})
        assert response.status_code == 200
        # The demo env file's AUTH_BASE_URL is https: BetterAuth's secure name, and only that one.
        assert session_cookie(client.cookies)[0] == SECURE_COOKIE_NAME and COOKIE_NAME not in client.cookies
        yield client


@pytest.fixture
def client(api):
    with client_for(api) as c:
        yield c


def one(url, query, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


def dual_write_lines(caplog) -> list[dict]:
    """The switch layer's log lines, as the real API prints them: the tag, then one JSON object."""
    return [json.loads(r.getMessage().removeprefix(DUAL_WRITE_LOG + " ")) for r in caplog.records
            if r.getMessage().startswith(DUAL_WRITE_LOG + " ")]


def primary_workspace(url, user=USER) -> str:
    return one(url, "SELECT workspace_id FROM platform_workspace_members WHERE user_id = %s AND status = 'active' "
               "ORDER BY created_at LIMIT 1", (user,))[0]


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
    assert [u["createdAt"] for u in users["users"]] == sorted(u["createdAt"] for u in users["users"])
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
    owner = next(u for u in users["users"] if u["id"] == book["managedUserId"])
    pix = client.get("/v1/account/pixbook", params={"accountId": ACCOUNT, "profileId": owner["profileId"],
                                                    "identityPublicKey": owner["identityPublicKey"],
                                                    "collectionId": book["collectionId"] or "primary"})
    assert pix.status_code == 200, pix.text
    body = pix.json()
    assert set(body) == {"ok", "accountId", "workspaceId", "managedUser", "book", "snapshot"}
    assert body["accountId"] == body["workspaceId"] == ACCOUNT
    assert body["book"]["managedUserId"] == body["managedUser"]["id"] == owner["id"]
    # The real API resolves the owner without its timestamps and display name.
    assert set(body["managedUser"]) == {"id", "avatarPublicId", "userKey", "profileId", "identityPublicKey",
                                        "identityKeyFingerprint", "status"}
    missing = client.get("/v1/account/pixbook", params={"accountId": ACCOUNT, "profileId": "nobody",
                                                        "identityPublicKey": "none"})
    assert missing.status_code == 404 and missing.json()["ok"] is False


def test_auth_401_and_403(api, backfilled_url):
    anonymous = httpx.get(f"{api}/v1/account/users", params={"accountId": ACCOUNT})
    assert anonymous.status_code == 401 and anonymous.json() == {"ok": False, "error": anonymous.json()["error"]}
    forged = httpx.get(f"{api}/v1/account/users", params={"accountId": ACCOUNT},
                       cookies={SECURE_COOKIE_NAME: "forged"})
    assert forged.status_code == 401
    other = one(backfilled_url, "SELECT id FROM platform_workspaces w WHERE NOT EXISTS (SELECT 1 FROM "
                "platform_workspace_members m WHERE m.workspace_id = w.id AND m.user_id = %s) ORDER BY id LIMIT 1",
                (USER,))[0]
    with client_for(api) as client:
        denied = client.get("/v1/account/books", params={"accountId": other})
        assert denied.status_code == 403 and denied.json()["ok"] is False
        unnamed = client.get("/v1/account/books")  # no account named: the user's primary workspace
        assert unnamed.status_code == 200 and unnamed.json()["accountId"] == primary_workspace(backfilled_url)
    assert httpx.post(f"{api}/v1/demo/session", json={"userId": "nobody"}).status_code == 404


def test_a_session_lives_in_the_database_until_it_expires(client, api, backfilled_url):
    token_hash = hashlib.sha256(session_cookie(client.cookies)[1].encode()).hexdigest()
    row = one(backfilled_url, "SELECT user_id, expires_at > now() + interval '6 days' FROM auth_sessions "
              "WHERE token_hash = %s", (token_hash,))
    assert row == (USER, True)  # BetterAuth's way: the token's hash, never the token
    assert client.get("/v1/account/session").status_code == 200
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("UPDATE auth_sessions SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
                     (token_hash,))
    assert client.get("/v1/account/session").status_code == 401


def test_alias_on_and_off(client, start, backfilled_url):
    other = one(backfilled_url, "SELECT id FROM platform_workspaces w WHERE NOT EXISTS (SELECT 1 FROM "
                "platform_workspace_members m WHERE m.workspace_id = w.id AND m.user_id = %s) ORDER BY id LIMIT 1",
                (USER,))[0]
    primary = primary_workspace(backfilled_url)
    on = client.get("/v1/account/users", params={"workspaceId": ACCOUNT})
    assert on.status_code == 200 and on.json()["accountId"] == ACCOUNT
    assert client.get("/v1/account/books", headers={"x-workspace-id": ACCOUNT}).status_code == 200
    assert client.get("/v1/account/books", params={"workspaceId": other}).status_code == 403
    with client_for(start(alias=False)) as restarted:
        # Off, the alias is ignored, not refused: the request falls back to the primary workspace.
        for answer in (restarted.get("/v1/account/users", params={"workspaceId": other}),
                       restarted.get("/v1/account/books", headers={"x-workspace-id": other})):
            assert answer.status_code == 200, answer.text
            assert answer.json()["accountId"] == answer.json()["workspaceId"] == primary != other
        named = restarted.get("/v1/account/users", params={"accountId": ACCOUNT, "workspaceId": other})
        assert named.status_code == 200 and named.json()["accountId"] == ACCOUNT
    # The API started before the change still has the alias on: the file is not its environment.
    assert client.get("/v1/account/books", params={"workspaceId": other}).status_code == 403


def test_the_flags_it_started_with_choose_the_read_store(client, start, backfilled_url):
    def first_name(base: str) -> str:  # the same session cookie everywhere: sessions live in the database
        response = httpx.get(f"{base}/v1/account/users", params={"accountId": ACCOUNT}, cookies=client.cookies)
        return response.json()["users"][0]["displayName"]

    first = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("UPDATE identities SET display_name = 'Only In V2' WHERE id = %s", (first["id"],))
    old = str(client.base_url)
    assert first_name(old) == first["displayName"]
    with_reads = start(reads=True)
    assert first_name(with_reads) == "Only In V2"
    assert first_name(old) == first["displayName"]  # the file changed, the running API did not
    assert first_name(start(reads=False)) == first["displayName"]
    assert first_name(with_reads) == "Only In V2"


@pytest.fixture
def dual_write(start):
    """An API started in D (reads v2, writes v1 mirrored to v2) and a signed-in client."""
    base = start(reads=True, dual_write=True)
    with client_for(base) as client:
        yield base, client


def test_dual_write_lands_in_both_stores_with_the_same_id(dual_write, backfilled_url):
    api, client = dual_write
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
    assert snap.status_code == 201 and snap.json()["snapshot"]["version"] == "1"
    assert client.patch(f"/v1/account/books/{book_id}", json={"accountId": ACCOUNT, "name": "Renamed"}).status_code == 200
    assert client.patch(f"/v1/account/identities/{ident}",
                        json={"accountId": ACCOUNT, "displayName": "Renamed Person"}).status_code == 200
    assert client.patch("/v1/account/workspace", json={"accountId": ACCOUNT, "name": "New Name"}).status_code == 200
    for legacy, v2 in (("SELECT name, current_version FROM platform_books WHERE id = %s",
                        "SELECT name, current_version FROM pixbooks WHERE id = %s"),
                       ("SELECT id, version, cipher_object_key FROM platform_book_snapshots WHERE book_id = %s",
                        "SELECT id, version, cipher_object_key FROM pixbook_snapshots WHERE pixbook_id = %s")):
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
    stats = httpx.get(f"{api}/v1/demo/stats").json()
    assert stats["mirrorFailures"] == stats["resultMismatches"] == 0


def test_writes_with_writes_flag_go_to_v2_first(start, backfilled_url):
    with client_for(start(reads=True, writes=True)) as client:  # TTF: v2 only, no mirror
        created = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "V2 Only",
                                                              "userKey": "key_v2"})
        ident = created.json()["user"]["id"]
        assert one(backfilled_url, "SELECT 1 FROM identities WHERE id = %s", (ident,)) == (1,)
        assert one(backfilled_url, "SELECT 1 FROM platform_managed_users WHERE id = %s", (ident,)) is None
        dup = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "Again",
                                                          "userKey": "key_v2"})
        assert dup.status_code == 409 and dup.json()["ok"] is False


def test_a_mirror_failure_is_counted_and_the_request_succeeds(dual_write, backfilled_url, caplog):
    api, client = dual_write
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
    assert stats["mirrorFailures"] == 1 and stats["resultMismatches"] == 0 and stats["requests"] >= 3
    (line,) = dual_write_lines(caplog)
    assert line["operation"] == "createBook" and line["kind"] == "mirror-error"
    assert "mirror is down" in line["payload"]["error"] and ISO_MS.match(line["timestamp"])


# -- like the real API: each store its own, JSON as node-pg sends it, BetterAuth's cookie -----------

AUDIT = {"v1": "SELECT id, event_type, actor_user_id, payload FROM platform_audit_events WHERE id = ANY(%s)",
         "v2": "SELECT id, event_type, actor_user_id, payload FROM audit_events WHERE id = ANY(%s)"}


def audit_ids(url) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        return {"v1": {r[0] for r in conn.execute("SELECT id FROM platform_audit_events")},
                "v2": {r[0] for r in conn.execute("SELECT id FROM audit_events")}}


def test_a_mirrored_create_has_each_stores_own_timestamps_and_audit_row(dual_write, backfilled_url):
    _, client = dual_write
    before = audit_ids(backfilled_url)
    created = client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "Twice Written",
                                                          "userKey": "key_twice", "profileId": "p-twice"})
    assert created.status_code == 201, created.text
    ident = created.json()["user"]["id"]
    columns = "id, account, display_name, user_key, profile_id, status"
    legacy = one(backfilled_url, f"SELECT {columns.replace('account', 'workspace_id')}, created_at, updated_at "
                 "FROM platform_managed_users WHERE id = %s", (ident,))
    v2 = one(backfilled_url, f"SELECT {columns.replace('account', 'account_id')}, created_at, updated_at "
             "FROM identities WHERE id = %s", (ident,))
    assert legacy[:6] == v2[:6] == (ident, ACCOUNT, "Twice Written", "key_twice", "p-twice", "active")
    # Each store ran its own SQL in its own transaction: its own now(), the mirror's a little later.
    assert legacy[6] < v2[6] and legacy[7] < v2[7] and v2[6] - legacy[6] < (datetime.now(UTC) - legacy[6])
    assert created.json()["user"]["createdAt"] == legacy[6].astimezone(UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")  # the answer is the primary's row

    after = audit_ids(backfilled_url)
    new = {store: after[store] - before[store] for store in after}
    assert len(new["v1"]) == len(new["v2"]) == 1 and not new["v1"] & new["v2"]  # one each, fresh ids
    rows = {store: one(backfilled_url, AUDIT[store], (list(new[store]),)) for store in new}
    assert rows["v1"][1:3] == rows["v2"][1:3] == ("identity.created", USER)
    assert rows["v1"][3]["id"] == rows["v2"][3]["id"] == ident
    assert one(backfilled_url, "SELECT workspace_id FROM platform_audit_events WHERE id = %s",
               (rows["v1"][0],)) == one(backfilled_url, "SELECT account_id FROM audit_events WHERE id = %s",
                                        (rows["v2"][0],)) == (ACCOUNT,)


def test_every_write_lands_in_both_stores_with_an_audit_row_in_each(dual_write, backfilled_url):
    api, client = dual_write
    before = audit_ids(backfilled_url)
    user = client.post("/v1/demo/users", json={"name": "New Member"})
    assert user.status_code == 201, user.text
    writes = 0

    def ok(response, status=200):
        nonlocal writes
        assert response.status_code == status, response.text
        writes += 1
        return response.json()

    member = ok(client.post("/v1/account/members", json={"accountId": ACCOUNT, "userId": user.json()["user"]["id"],
                                                         "role": "member"}), 201)["member"]
    ok(client.patch(f"/v1/account/members/{member['id']}", json={"accountId": ACCOUNT, "role": "admin"}))
    assert one(backfilled_url, "SELECT role FROM platform_workspace_members WHERE id = %s", (member["id"],)) == \
        one(backfilled_url, "SELECT role FROM account_members WHERE id = %s", (member["id"],)) == ("admin",)
    ok(client.request("DELETE", f"/v1/account/members/{member['id']}", params={"accountId": ACCOUNT}))
    assert one(backfilled_url, "SELECT 1 FROM platform_workspace_members WHERE id = %s", (member["id"],)) is None
    assert one(backfilled_url, "SELECT 1 FROM account_members WHERE id = %s", (member["id"],)) is None

    ident = ok(client.post("/v1/account/identities", json={"accountId": ACCOUNT, "displayName": "Short Lived",
                                                           "userKey": "key_short"}), 201)["user"]["id"]
    book = ok(client.post("/v1/account/books", json={"accountId": ACCOUNT, "managedUserId": ident,
                                                     "name": "Short Book"}), 201)["book"]["id"]
    removed = ok(client.request("DELETE", f"/v1/account/identities/{ident}", params={"accountId": ACCOUNT}))
    assert removed["id"] == ident and removed["removedBookIds"] == [book]
    for table, key in (("platform_managed_users", ident), ("identities", ident), ("platform_books", book),
                       ("pixbooks", book)):
        assert one(backfilled_url, f"SELECT status FROM {table} WHERE id = %s", (key,)) == ("deleted",), table

    scratch = ok(client.post("/v1/account/workspaces", json={"name": "Scratch"}), 201)
    account = scratch["accountId"]
    assert one(backfilled_url, "SELECT name FROM platform_workspaces WHERE id = %s", (account,)) == \
        one(backfilled_url, "SELECT name FROM accounts WHERE id = %s", (account,)) == ("Scratch",)
    assert one(backfilled_url, "SELECT user_id, role FROM account_members WHERE id = %s",
               (scratch["memberId"],)) == (USER, "owner")
    gone = ok(client.request("DELETE", "/v1/account/workspace", json={"accountId": account}))
    assert gone["memberIds"] == [scratch["memberId"]]
    assert one(backfilled_url, "SELECT 1 FROM platform_workspaces WHERE id = %s", (account,)) is None
    assert one(backfilled_url, "SELECT 1 FROM accounts WHERE id = %s", (account,)) is None

    after = audit_ids(backfilled_url)
    new = {store: after[store] - before[store] for store in after}
    assert len(new["v1"]) == len(new["v2"]) == writes and not new["v1"] & new["v2"]
    stats = httpx.get(f"{api}/v1/demo/stats").json()
    assert stats["mirrorFailures"] == stats["resultMismatches"] == 0


def test_a_mirror_that_finds_nothing_is_a_result_mismatch(dual_write, backfilled_url, caplog):
    api, client = dual_write
    book = client.get("/v1/account/books", params={"accountId": ACCOUNT}).json()["books"][0]["id"]
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pixbooks WHERE id = %s", (book,))
    renamed = client.patch(f"/v1/account/books/{book}", json={"accountId": ACCOUNT, "name": "Only In Legacy"})
    assert renamed.status_code == 200, renamed.text
    assert one(backfilled_url, "SELECT name FROM platform_books WHERE id = %s", (book,)) == ("Only In Legacy",)
    stats = httpx.get(f"{api}/v1/demo/stats").json()
    assert stats["resultMismatches"] == 1 and stats["mirrorFailures"] == 0
    (line,) = dual_write_lines(caplog)
    assert line["operation"] == "updateBook" and line["kind"] == "result-mismatch"
    assert line["payload"] == {"primary": {"id": book}, "mirror": None}
    # Nothing was written in v2, so v2 has no audit row of it either.
    assert one(backfilled_url, "SELECT count(*) FROM audit_events WHERE payload->>'id' = %s", (book,)) == (0,)


def test_json_types_are_node_pgs(client, backfilled_url):
    ident = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"][0]
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("UPDATE platform_managed_users SET profile_id = '' WHERE id = %s", (ident["id"],))
        book = conn.execute("INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id, "
                            "current_version) VALUES ('book_json', %s, %s, 'Json', '  trips ', 3) RETURNING id",
                            (ACCOUNT, ident["id"])).fetchone()[0]
    users = client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"]
    shown = next(u for u in users if u["id"] == ident["id"])
    assert shown["profileId"] is None  # '' is sent as null
    assert all(ISO_MS.match(u["createdAt"]) and ISO_MS.match(u["updatedAt"]) for u in users)
    books = {b["id"]: b for b in client.get("/v1/account/books", params={"accountId": ACCOUNT}).json()["books"]}
    assert books[book]["currentVersion"] == "3" and books[book]["collectionId"] == "trips"
    assert all(isinstance(b["currentVersion"], str) for b in books.values())
    stored = one(backfilled_url, "SELECT created_at FROM platform_books WHERE id = %s", (book,))[0]
    assert books[book]["createdAt"] == stored.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{stored.microsecond // 1000:03d}Z"  # milliseconds, truncated as a JS Date keeps them

    session = client.get("/v1/account/session").json()["workspace"]
    assert ISO_MS.match(session["createdAt"]) and ISO_MS.match(session["updatedAt"])
    snap = client.post(f"/v1/account/books/{book}/snapshots",
                       json={"accountId": ACCOUNT, "cipherObjectKey": "k", "cipherSha256": "s", "wrappedDek": "d"})
    assert snap.status_code == 201 and snap.json()["snapshot"]["version"] == "4"
    assert ISO_MS.match(snap.json()["snapshot"]["createdAt"])


def test_pixbook_needs_both_profile_and_key(client):
    owner = next(u for u in client.get("/v1/account/users", params={"accountId": ACCOUNT}).json()["users"]
                 if u["profileId"] and u["identityPublicKey"])
    for params in ({"profileId": owner["profileId"]}, {"identityPublicKey": owner["identityPublicKey"]}, {}):
        answer = client.get("/v1/account/pixbook", params={"accountId": ACCOUNT, **params})
        assert answer.status_code == 400 and answer.json()["ok"] is False
        assert "profileId and identityPublicKey are required" in answer.json()["error"]


def test_the_cookie_name_follows_the_base_url(start, env_file, backfilled_url):
    assert cookie_name_for({"AUTH_BASE_URL": "https://api.example.test"}) == SECURE_COOKIE_NAME
    assert cookie_name_for({"BETTER_AUTH_URL": " HTTPS://api.example.test "}) == SECURE_COOKIE_NAME
    assert cookie_name_for({"AUTH_BASE_URL": "http://localhost:3000",
                            "BETTER_AUTH_URL": "https://x.test"}) == COOKIE_NAME
    assert cookie_name_for({}) == COOKIE_NAME

    secure = start()  # the demo env file: AUTH_BASE_URL=https://api.example.test
    with client_for(secure) as client:
        token = session_cookie(client.cookies)[1]
    assert httpx.get(f"{secure}/v1/account/session", cookies={SECURE_COOKIE_NAME: token}).status_code == 200
    assert httpx.get(f"{secure}/v1/account/session", cookies={COOKIE_NAME: token}).status_code == 401

    env_file.write_text(env_file.read_text().replace("AUTH_BASE_URL=https://", "AUTH_BASE_URL=http://"))
    plain = start()
    with httpx.Client(base_url=plain) as client:
        client.post("/v1/demo/session", json={"userId": USER}).raise_for_status()
        assert session_cookie(client.cookies)[0] == COOKIE_NAME and SECURE_COOKIE_NAME not in client.cookies
        assert client.get("/v1/account/session").status_code == 200
    # Sessions live in the database: the same token, under the name this API expects.
    assert httpx.get(f"{plain}/v1/account/session", cookies={COOKIE_NAME: token}).status_code == 200
    assert httpx.get(f"{plain}/v1/account/session", cookies={SECURE_COOKIE_NAME: token}).status_code == 401
