"""Demo traffic: a steady, deterministic mix of reads and writes against the stand-in API.

`Traffic` sends requests from one background thread, one at a time (so the API never runs
two of our writes at once), paced at `rate` requests per second and spread over the
accounts whose session cookies it was given. Its writes cover every kind the API takes:
accounts created, renamed and removed; members added, changed and removed; identities, books
(and their snapshots) created, changed and removed. It is bounded in requests and in time, stops
on `stop()`, and counts errors instead of raising them. Every successful write is recorded
(`writes_log()`) so a check can say exactly which rows the traffic touched.

Engine code: no printing, no UI. Only loopback API addresses are accepted.
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import psycopg
from pydantic import BaseModel

from ..errors import CutoverError
from ..store.db import connect
from .api import session_cookie

if TYPE_CHECKING:  # httpx is imported where used: `import httpx` loads rich (its CLI), which the engine must not
    import httpx

DEFAULT_MAX_SECONDS = 600.0
SWITCH_MAX_SECONDS = 4 * 3600.0  # a rehearsal's length; the switch turns it off sooner
DEFAULT_MAX_REQUESTS = 100_000
WRITE_LOG_LIMIT = 100_000
REQUEST_TIMEOUT = 10.0

READS = ("users", "books", "session")
WRITES = ("create_identity", "update_identity", "remove_identity", "create_book", "update_book", "remove_book",
          "save_snapshot", "rename_account", "create_account", "remove_account", "add_member", "update_member",
          "remove_member")
# Relative weights: about half reads, half writes, most of them on identities, books and snapshots.
_WEIGHTS = {"users": 17, "books": 17, "session": 16, "create_identity": 6, "update_identity": 5,
            "remove_identity": 2, "create_book": 8, "update_book": 5, "remove_book": 3, "save_snapshot": 8,
            "rename_account": 2, "create_account": 2, "remove_account": 2, "add_member": 3, "update_member": 2,
            "remove_member": 2}


class TrafficStats(BaseModel):
    requests: int = 0
    errors: int = 0
    requests_per_second: float = 0.0
    mirror_failures: int | None = None  # from the API's /v1/demo/stats; None when it could not be read
    result_mismatches: int | None = None  # likewise: mirrors that answered other than the primary
    elapsed: float = 0.0
    writes: int = 0


class TrafficWrite(BaseModel):
    """One successful write: what, which row (v2 table name, id), which account, when (monotonic)."""

    op: str
    table: str
    id: str
    account_id: str
    at: float
    book_id: str | None = None  # for snapshots: the book whose current_version moved too
    also: list[str] = []  # other rows it changed: a removed identity's books, a removed account's members


def _check_rate(rate: float) -> None:
    if not 0 < rate <= 1000:
        raise ValueError("rate must be above 0 and at most 1000 requests per second.")


def require_loopback(base_url: str) -> str:
    """The base URL, if it points at this machine; ValueError otherwise."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"Not an http(s) URL: {base_url!r}.")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"Demo traffic goes only to a loopback address, not {host!r}.")
    return base_url.rstrip("/")


def demo_cookies(base_url: str, database_url: str, count: int = 3, *,
                 exclude: Collection[str] = ()) -> dict[str, str]:
    """Demo sessions for `count` seeded account owners (active members): account_id -> cookie, as a
    `Cookie` header carries it (`name=value`, under the name the API set). Accounts in `exclude`
    are skipped (for example one a read check looks at)."""
    base = require_loopback(base_url)
    if count < 1:
        raise ValueError("count must be at least 1.")
    queries = (("SELECT workspace_id, user_id FROM platform_workspace_members m JOIN auth_users u ON u.id = m.user_id "
                "WHERE m.role = 'owner' AND m.status = 'active' ORDER BY workspace_id, user_id"),
               ("SELECT account_id, user_id FROM account_members m JOIN auth_users u ON u.id = m.user_id "
                "WHERE m.role = 'owner' AND m.status = 'active' ORDER BY account_id, user_id"))
    rows: list[tuple[str, str]] = []
    with connect(database_url, autocommit=True) as conn:
        for query in queries:
            try:
                rows = conn.execute(query).fetchall()
                break
            except psycopg.errors.UndefinedTable:
                continue
    owners: dict[str, str] = {}
    for account, user in rows:
        if account not in owners and account not in exclude:
            owners[account] = user
        if len(owners) == count:
            break
    if len(owners) < count:
        raise ValueError(f"Only {len(owners)} account(s) have an active owner; asked for {count}.")
    import httpx

    cookies: dict[str, str] = {}
    try:
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as client:
            for account, user in owners.items():
                response = client.post("/v1/demo/session", json={"userId": user})
                response.raise_for_status()
                name, value = session_cookie(response.cookies)
                cookies[account] = f"{name}={value}"
    except (httpx.HTTPError, KeyError) as exc:
        raise CutoverError(f"The stand-in API at {base} gave no demo session ({type(exc).__name__}); "
                           "start `cutover demo` and pass the address it shows.") from None
    return cookies


class _Account:
    """One account's share of the traffic: its own thread, random stream and known rows, so
    no two of our requests ever write the same account's rows at once."""

    def __init__(self, index: int, account_id: str, cookie: str, seed: int) -> None:
        self.index, self.id, self.cookie = index, account_id, cookie
        self.rng = random.Random(f"{seed}:{index}")
        self.serial = 0
        self.identities: list[str] = []
        self.books: list[str] = []
        self.members: list[str] = []  # memberships this traffic added (never the owner's own)
        self.created: dict[str, list[str]] = {}  # accounts this traffic created -> their members
        self.idle = threading.Event()
        self.thread: threading.Thread | None = None

    def next(self) -> str:
        self.serial += 1
        return f"{self.index}-{self.serial}"


class Traffic:
    """A background thread of demo requests; see the module docstring."""

    def __init__(self, base_url: str, cookies: dict[str, str], rate: float, *, seed: int = 1,
                 max_seconds: float = DEFAULT_MAX_SECONDS, max_requests: int = DEFAULT_MAX_REQUESTS) -> None:
        self.base_url = require_loopback(base_url)
        if not cookies:
            raise ValueError("Traffic needs at least one account cookie.")
        _check_rate(rate)
        if not 0 < max_seconds <= 86_400 or not 0 < max_requests <= 10_000_000:
            raise ValueError("max_seconds and max_requests must be positive and bounded.")
        self.rate, self.seed = float(rate), seed
        self.max_seconds, self.max_requests = float(max_seconds), int(max_requests)
        self._accounts = [_Account(i, a, c, seed) for i, (a, c) in enumerate(sorted(cookies.items()))]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._started_threads = False
        self._requests = self._errors = self._writes = 0
        self._started: float | None = None
        self._ended: float | None = None
        self._log: list[TrafficWrite] = []
        self._last_error: str | None = None
        self._mirror_failures: int | None = None
        self._result_mismatches: int | None = None

    # -- control ----------------------------------------------------------------------
    def start(self) -> Self:
        if self._started_threads:
            raise RuntimeError("This traffic has already been started.")
        self._started_threads = True
        self._started = time.monotonic()
        for account in self._accounts:
            account.thread = threading.Thread(target=self._run, args=(account,), daemon=True,
                                              name=f"demo-traffic-{account.index}")
            account.thread.start()
        return self

    def stop(self) -> TrafficStats:
        self._stop.set()
        self._pause.clear()
        for account in self._accounts:
            if account.thread is not None:
                account.thread.join(timeout=REQUEST_TIMEOUT + 5)
        return self.stats()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(a.thread is not None and a.thread.is_alive() for a in self._accounts)

    @contextmanager
    def paused(self, timeout: float = REQUEST_TIMEOUT + 5) -> Iterator[None]:
        """Hold the traffic between two requests (none in flight) for the block's duration."""
        for account in self._accounts:
            account.idle.clear()
        self._pause.set()
        try:
            end = time.monotonic() + timeout
            for account in self._accounts:
                alive = account.thread is not None and account.thread.is_alive()
                if alive and not account.idle.wait(max(end - time.monotonic(), 0.0)):
                    raise TimeoutError("The traffic did not come to rest in time.")
            yield
        finally:
            self._pause.clear()

    # -- results ----------------------------------------------------------------------
    def stats(self) -> TrafficStats:
        mirror, mismatches = self._read_mirror_figures()
        running = self.running
        with self._lock:
            end = self._ended if self._ended is not None and not running else time.monotonic()
            elapsed = 0.0 if self._started is None else max(end - self._started, 0.0)
            return TrafficStats(requests=self._requests, errors=self._errors, writes=self._writes,
                                requests_per_second=round(self._requests / elapsed, 2) if elapsed > 0 else 0.0,
                                mirror_failures=mirror, result_mismatches=mismatches, elapsed=round(elapsed, 3))

    def writes_log(self, since: float | None = None, until: float | None = None) -> list[TrafficWrite]:
        """The successful writes (oldest first), optionally within [since, until) (time.monotonic())."""
        with self._lock:
            return [w for w in self._log if (since is None or w.at >= since) and (until is None or w.at < until)]

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def _read_mirror_figures(self) -> tuple[int | None, int | None]:
        """The API's own counts of mirror failures and result mismatches (the last ones read)."""
        import httpx

        try:
            response = httpx.get(f"{self.base_url}/v1/demo/stats", timeout=2.0)
            body = response.json() if response.status_code == 200 else {}
            failures, mismatches = body.get("mirrorFailures"), body.get("resultMismatches")
            if isinstance(failures, int):
                self._mirror_failures = failures
            if isinstance(mismatches, int):
                self._result_mismatches = mismatches
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return self._mirror_failures, self._result_mismatches

    # -- the thread -------------------------------------------------------------------
    def _run(self, account: _Account) -> None:
        try:
            import httpx

            with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT, follow_redirects=False) as client:
                interval = len(self._accounts) / self.rate
                time.sleep(interval * account.index / len(self._accounts))  # stagger the threads
                deadline = time.monotonic() + self.max_seconds
                next_at = time.monotonic()
                for _ in range(self.max_requests):
                    if self._stop.is_set() or time.monotonic() >= deadline:
                        break
                    with self._lock:
                        if self._requests >= self.max_requests:  # the bound is for all threads together
                            break
                    if self._pause.is_set():
                        while self._pause.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
                            account.idle.set()  # each turn: a new pause may have cleared it meanwhile
                            self._stop.wait(0.01)
                        next_at = time.monotonic()
                        continue
                    delay = next_at - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    if self._pause.is_set():
                        continue
                    next_at = max(next_at + interval, time.monotonic() - 1.0)  # never burst more than 1 s
                    self._one(client, account)
        except Exception as exc:
            with self._lock:
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
        finally:
            account.idle.set()
            with self._lock:
                self._ended = max(self._ended or 0.0, time.monotonic())

    def _one(self, client: httpx.Client, account: _Account) -> None:
        kinds = list(_WEIGHTS)
        kind = account.rng.choices(kinds, weights=[_WEIGHTS[k] for k in kinds])[0]
        if kind in WRITES and not account.identities:
            kind = "users"  # learn the account first
        elif kind in ("update_book", "remove_book", "save_snapshot") and not account.books:
            kind = "books" if account.rng.random() < 0.5 else "create_book"
        elif kind == "remove_identity" and len(account.identities) < 2:
            kind = "create_identity"  # keep one to hang books on
        elif kind in ("update_member", "remove_member") and not account.members:
            kind = "add_member"
        elif kind == "remove_account" and not account.created:
            kind = "create_account"
        try:
            ok, body = getattr(self, f"_{kind}")(client, account)
        except Exception as exc:
            ok, body = False, None
            with self._lock:
                self._last_error = f"{kind}: {type(exc).__name__}: {exc}"
        with self._lock:
            self._requests += 1
            if not ok:
                self._errors += 1
                if body is not None:
                    self._last_error = f"{kind}: {body}"

    def _call(self, client: httpx.Client, account: _Account, method: str, path: str,
              **kwargs: Any) -> tuple[bool, Any]:
        response = client.request(method, path, headers={"cookie": account.cookie}, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        ok = 200 <= response.status_code < 300 and isinstance(body, dict) and body.get("ok") is True
        return ok, body if ok else f"{method} {path} -> {response.status_code}"

    def _record(self, op: str, table: str, row_id: str, account: _Account, book_id: str | None = None,
                also: list[str] | None = None) -> None:
        with self._lock:
            self._writes += 1
            if len(self._log) < WRITE_LOG_LIMIT:
                self._log.append(TrafficWrite(op=op, table=table, id=row_id, account_id=account.id,
                                              at=time.monotonic(), book_id=book_id, also=also or []))

    # reads
    def _users(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        ok, body = self._call(client, account, "GET", "/v1/account/users", params={"accountId": account.id})
        if ok:
            account.identities = [u["id"] for u in body["users"]]
        return ok, body

    def _books(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        ok, body = self._call(client, account, "GET", "/v1/account/books", params={"accountId": account.id})
        if ok:
            account.books = [b["id"] for b in body["books"]]
        return ok, body

    def _session(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        return self._call(client, account, "GET", "/v1/account/session", params={"accountId": account.id})

    # writes
    def _write(self, client: httpx.Client, account: _Account, op: str, table: str, method: str, path: str,
               row: Callable[[Any], str], book_id: str | None = None, then: Callable[[str], None] | None = None,
               also: Callable[[Any], list[str]] | None = None, **request: Any) -> tuple[bool, Any]:
        """One write through the API; a successful one is recorded as `op` on `row(body)` of `table`
        (and `also(body)`, the other rows it changed), and `then(row)` keeps the account's own lists
        up to date."""
        ok, body = self._call(client, account, method, path, **request)
        if ok:
            self._record(op, table, row(body), account, book_id=book_id, also=also(body) if also else None)
            if then is not None:
                then(row(body))
        return ok, body

    def _create_identity(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        n = account.next()
        return self._write(client, account, "create_identity", "identities", "POST", "/v1/account/identities",
                           lambda answer: answer["user"]["id"], then=account.identities.append,
                           json={"accountId": account.id, "displayName": f"Traffic Person {self.seed}-{n}",
                                 "userKey": f"traffic-{self.seed}-{n}-{account.rng.randrange(10**9)}",
                                 "profileId": f"tp-{self.seed}-{n}"})

    def _update_identity(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        ident = account.rng.choice(account.identities)
        return self._write(client, account, "update_identity", "identities", "PATCH", f"/v1/account/identities/{ident}",
                           lambda _: ident,
                           json={"accountId": account.id, "displayName": f"Renamed {self.seed}-{account.next()}"})

    def _remove_identity(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        ident = account.rng.choice(account.identities)
        ok, body = self._write(client, account, "remove_identity", "identities", "DELETE",
                               f"/v1/account/identities/{ident}", lambda _: ident,
                               also=lambda answer: answer["removedBookIds"], params={"accountId": account.id})
        if ok:  # its books went with it
            account.identities.remove(ident)
            account.books = [b for b in account.books if b not in body["removedBookIds"]]
        return ok, body

    def _create_book(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        n = account.next()
        ident = account.rng.choice(account.identities)
        return self._write(client, account, "create_book", "pixbooks", "POST", "/v1/account/books",
                           lambda answer: answer["book"]["id"], then=account.books.append,
                           json={"accountId": account.id, "managedUserId": ident, "name": f"Album {self.seed}-{n}",
                                 "collectionId": f"traffic-{self.seed}-{n}"})

    def _update_book(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        book = account.rng.choice(account.books)
        return self._write(client, account, "update_book", "pixbooks", "PATCH", f"/v1/account/books/{book}",
                           lambda _: book,
                           json={"accountId": account.id, "name": f"Album renamed {self.seed}-{account.next()}"})

    def _remove_book(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        book = account.rng.choice(account.books)
        return self._write(client, account, "remove_book", "pixbooks", "DELETE", f"/v1/account/books/{book}",
                           lambda _: book, then=account.books.remove, params={"accountId": account.id})

    def _save_snapshot(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        book = account.rng.choice(account.books)
        n = account.next()
        return self._write(client, account, "save_snapshot", "pixbook_snapshots", "POST",
                           f"/v1/account/books/{book}/snapshots", lambda answer: answer["snapshot"]["id"],
                           book_id=book,
                           json={"accountId": account.id, "cipherObjectKey": f"obj/{self.seed}/{n}",
                                 "cipherSha256": f"{account.rng.getrandbits(256):064x}",
                                 "wrappedDek": f"dek-{n}", "ledgerHead": f"head-{n}",
                                 "payload": {"n": n, "seed": self.seed}})

    def _rename_account(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        return self._write(client, account, "rename_account", "accounts", "PATCH", "/v1/account/workspace",
                           lambda _: account.id,
                           json={"accountId": account.id, "name": f"Workspace {self.seed}-{account.next()}"})

    def _create_account(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        """A scratch account the signed-in owner also owns: the only kind the traffic removes."""
        ok, body = self._write(client, account, "create_account", "accounts", "POST", "/v1/account/workspaces",
                               lambda answer: answer["accountId"], also=lambda answer: [answer["memberId"]],
                               json={"name": f"Scratch {self.seed}-{account.next()}"})
        if ok:
            account.created[body["accountId"]] = [body["memberId"]]
        return ok, body

    def _remove_account(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        scratch = account.rng.choice(sorted(account.created))
        return self._write(client, account, "remove_account", "accounts", "DELETE", "/v1/account/workspace",
                           lambda _: scratch, then=account.created.pop, also=lambda answer: answer["memberIds"],
                           json={"accountId": scratch})

    def _add_member(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        """Sign a new user up (demo only: BetterAuth's sign-up), then add them to the account."""
        ok, body = self._call(client, account, "POST", "/v1/demo/users", json={"name": f"Member {account.next()}"})
        if not ok:
            return ok, body
        return self._write(client, account, "add_member", "account_members", "POST", "/v1/account/members",
                           lambda answer: answer["member"]["id"], then=account.members.append,
                           json={"accountId": account.id, "userId": body["user"]["id"],
                                 "role": account.rng.choice(("member", "admin"))})

    def _update_member(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        member = account.rng.choice(account.members)
        return self._write(client, account, "update_member", "account_members", "PATCH",
                           f"/v1/account/members/{member}", lambda _: member,
                           json={"accountId": account.id, "role": account.rng.choice(("member", "admin"))})

    def _remove_member(self, client: httpx.Client, account: _Account) -> tuple[bool, Any]:
        member = account.rng.choice(account.members)
        return self._write(client, account, "remove_member", "account_members", "DELETE",
                           f"/v1/account/members/{member}", lambda _: member, then=account.members.remove,
                           params={"accountId": account.id})


def run_traffic(base_url: str, database_url: str, rate: float, duration: float, *,
                on_stats: Callable[[TrafficStats], None] | None = None, accounts: int = 3,
                seed: int = 1) -> TrafficStats:
    """`cutover demo traffic --rate N --duration S`: send traffic for `duration` seconds,
    calling `on_stats` about once a second; returns the final figures."""
    if not 0 < duration <= 86_400:
        raise ValueError("duration must be above 0 and at most 86400 seconds.")
    _check_rate(rate)  # before asking the API for sessions
    cookies = demo_cookies(base_url, database_url, accounts)
    traffic = Traffic(base_url, cookies, rate, seed=seed, max_seconds=duration)
    with traffic:
        end = time.monotonic() + duration
        while traffic.running:
            left = end - time.monotonic()
            if left <= 0:
                break
            traffic._stop.wait(min(1.0, left))
            if on_stats is not None and time.monotonic() < end:
                on_stats(traffic.stats())
    final = traffic.stats()
    if on_stats is not None:
        on_stats(final)
    return final


class TrafficSwitch:
    """The demo console's on/off switch: each switch-on starts fresh traffic; thread-safe.
    Accounts in `exclude` get none, so a read check on one compares lists nobody is changing."""

    def __init__(self, base_url: str, database_url: str, rate: float = 20.0, accounts: int = 3, *,
                 exclude: Collection[str] = ()) -> None:
        self.base_url, self.database_url = require_loopback(base_url), database_url
        self.rate, self.accounts, self.exclude = rate, accounts, tuple(exclude)
        self._traffic: Traffic | None = None
        self._lock = threading.Lock()
        self._runs = 0

    @property
    def running(self) -> bool:
        traffic = self._traffic
        return traffic is not None and traffic.running

    def toggle(self) -> bool:
        """Starts or stops the traffic (blocking for a moment); true when now running."""
        with self._lock:
            if self.running:
                self._traffic.stop()
                return False
            cookies = demo_cookies(self.base_url, self.database_url, self.accounts, exclude=self.exclude)
            self._runs += 1  # a new random stream each time, so it does not replay the same writes
            self._traffic = Traffic(self.base_url, cookies, self.rate, seed=self._runs,
                                    max_seconds=SWITCH_MAX_SECONDS).start()
            return True

    def stats(self) -> TrafficStats | None:
        traffic = self._traffic
        return None if traffic is None else traffic.stats()

    def stop(self) -> None:
        with self._lock:
            if self._traffic is not None:
                self._traffic.stop()


__all__ = ["Traffic", "TrafficStats", "TrafficSwitch", "TrafficWrite", "demo_cookies", "require_loopback",
           "run_traffic"]
