"""Application writes to legacy at 200+ operations a second for the whole backfill.

Writer threads (own connections, autocommit, one statement per operation, as the API writes)
start before the backfill and stop after it returns. They update seeded rows of every legacy
table the rules read (workspaces, members, managed users, books, snapshots), insert rows under
seeded parents (snapshots, audit events, managed users) and, every 2 s, sign a new workspace
up with its owner, a managed user, a book and snapshots. New keys sort next to a random
seeded key (`ws_123_live7` right after `ws_123`), so many land behind the backfill's position
in each table. Every row stays valid under the §3 rules (new fingerprints and keys are unique,
a new book is its identity's only one). The backfill runs as the CLI in a child process, so
the writers' own Python never slows it.

What "after the catch-up pass" can honestly mean here: the writers never pause, so a write
landing behind the final pass's position is by construction not in v2 when the backfill
returns; no backfill could catch it without the writes stopping. So the test checks two
things. (1) When the backfill returns, everything differing from legacy (verify's content
check) and every row it reports as an error was written after its final pass began: its
catch-up passes brought over everything older. (2) The writers then stop (as at a cutover's
write freeze) and one more `cutover backfill` brings the rest; after it every content check
passes. The figures say how many rows each catch-up pass and that extra run brought over.

The second test pins down what signups cost a pass (see its docstring): a row whose parent is not
in v2 yet waits for the next pass instead of splitting its range.

Fast (CI): 4,000 workspaces. Full (`CUTOVER_RELIABILITY=full`): the M data set.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import psycopg
from helpers import ROOT
from psycopg.types.json import Jsonb

from cutover_tui.rules.mapping import BY_NAME
from cutover_tui.work.backfill import Backfill, BackfillOptions, BackfillProgress
from cutover_tui.work.verify import VerifyOptions, run_verify

from .support import V2_TABLES, WORKSPACES, scale, seeded

LIVE_WORKSPACES = scale(4000, WORKSPACES)
WRITERS = 2
RATE_PER_WRITER = 150  # operations a second each, paced; 300 together, the bar is 200
MIN_RATE = 200
SIGNUP_EVERY = 4.0  # seconds, per writer: a signup every 2 s in all
TIMEOUT = scale(300, 1500)


class Writer(threading.Thread):
    """One application connection writing legacy rows at a steady pace until stopped.

    The mix: about 60% updates of seeded rows of every legacy table the rules read, 40% new
    rows under seeded parents (a book saved as a new snapshot, an audit event, a managed user
    joining a workspace), and every `signup_every` seconds a signup: a new workspace with its
    owner, a managed user, a book, two snapshots and an audit event, one statement each."""

    def __init__(self, url: str, number: int, workspaces: int, stop: threading.Event, signup_every: float):
        super().__init__(name=f"writer-{number}")
        self.url, self.number, self.n, self.stop = url, number, workspaces, stop
        self.signup_every = signup_every
        self.done: list[float] = []  # when each operation committed
        self.signups = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:
            self.errors.append(exc)

    def _signup(self, rng: random.Random, serial: int):
        """The statements of one new workspace with everything under it, in FK order."""
        k = rng.randint(1, self.n)
        tag = f"{k}_live{self.number}x{serial}"
        ws, mu, book = f"ws_{tag}", f"mu_{tag}", f"book_{tag}"
        yield ("INSERT INTO platform_workspaces (id, name) VALUES (%s, %s)", (ws, f"Live {tag}"))
        yield ("INSERT INTO platform_workspace_members (id, workspace_id, user_id, role) VALUES (%s, %s, %s, 'owner')",
               (f"mem_{tag}", ws, f"user_{k}"))
        yield self._managed_user(mu, ws, tag)
        yield ("INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id, current_version) "
               "VALUES (%s, %s, %s, %s, 'primary', 2)", (book, ws, mu, f"Book {tag}"))
        for version in (1, 2):
            yield self._snapshot(book, version, f"{tag}v{version}")
        yield self._event(ws, f"user_{k}", f"evt_{tag}")

    @staticmethod
    def _managed_user(mu: str, ws: str, tag: str):
        # Its own key and fingerprint: it lands active, and changes no other identity's rule.
        return ("INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key, profile_id, "
                "identity_public_key, identity_key_fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (mu, ws, f"Kid {tag}", f"key_{tag}", f"profile_{tag}", f"pk_{tag}", f"fp_{tag}"))

    @staticmethod
    def _snapshot(book: str, version: int, tag: str):
        return ("INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256, "
                "wrapped_dek, payload_json) VALUES (%s, %s, %s, %s, md5(%s), md5(%s), %s)",
                (f"snap_{tag}", book, version, f"objects/{book}/v{version}.bin", tag, tag + "dek",
                 Jsonb({"book": book, "version": version, "pages": 3})))

    @staticmethod
    def _event(ws: str, user: str, key: str):
        return ("INSERT INTO platform_audit_events (id, workspace_id, actor_user_id, event_type) "
                "VALUES (%s, %s, %s, 'book.saved')", (key, ws, user))

    def _operation(self, rng: random.Random, serial: int):
        """One update of a seeded row, or one new row under a seeded parent; new keys sort
        next to a random seeded one, so they land all over each table's key space."""
        n, stamp = self.n, f"{self.number}x{serial}"
        ws, mu, book = rng.randint(1, n), rng.randint(1, 2 * n), rng.randint(1, 2 * n)
        kind = rng.randrange(10)
        if kind == 0:
            return ("UPDATE platform_workspaces SET name = %s, updated_at = now() WHERE id = %s",
                    (f"Renamed {stamp}", f"ws_{ws}"))
        if kind == 1:
            return ("UPDATE platform_workspace_members SET role = CASE role WHEN 'admin' THEN 'member' "
                    "WHEN 'member' THEN 'admin' ELSE role END, updated_at = now() WHERE id = %s",
                    (f"mem_{rng.randint(1, n + n // 2)}",))
        if kind == 2:
            return ("UPDATE platform_managed_users SET display_name = %s, updated_at = now() WHERE id = %s",
                    (f"Kid {stamp}", f"mu_{mu}"))
        if kind in (3, 4):
            return ("UPDATE platform_books SET name = %s, current_version = current_version + 1, "
                    "updated_at = now() WHERE id = %s", (f"Book {stamp}", f"book_{book}"))
        if kind == 5:
            return ("UPDATE platform_book_snapshots SET ledger_head = %s, payload_json = "
                    "jsonb_set(coalesce(payload_json, '{}'), '{edited}', to_jsonb(%s::text)) WHERE id = %s",
                    (f"head_{stamp}", stamp, f"snap_{rng.randint(1, 10 * n)}"))
        if kind in (6, 7):  # a book saved: a new version, numbered apart from the seeded 1..5
            return self._snapshot(f"book_{book}", 1000 + self.number * 10**6 + serial, f"{book * 5}_{stamp}")
        if kind == 8:
            return self._event(f"ws_{ws}", f"user_{ws}", f"evt_{ws * 3}_{stamp}")
        return self._managed_user(f"mu_{mu}_{stamp}", f"ws_{ws}", f"{mu}_{stamp}")

    def _write(self) -> None:
        rng = random.Random(self.number)
        signup, serial, pace = iter(()), 0, 1 / RATE_PER_WRITER
        with psycopg.connect(self.url, autocommit=True, application_name="app writer") as conn:
            due = next_signup = time.monotonic()
            while not self.stop.is_set():
                serial += 1
                statement = next(signup, None)
                if statement is None and time.monotonic() >= next_signup:
                    next_signup += self.signup_every
                    self.signups += 1
                    signup = self._signup(rng, serial)
                    statement = next(signup)
                conn.execute(*(statement or self._operation(rng, serial)))
                self.done.append(time.monotonic())
                # A steady pace; a backlog of more than a second is dropped, not burst.
                due = max(due + pace, time.monotonic() - 1)
                self.stop.wait(max(due - time.monotonic(), 0))


def _late_ids(conn: psycopg.Connection, legacy: str, since) -> set[str]:
    """Legacy rows written by a transaction at or after xid8 `since` (the engine's own test)."""
    return {r[0] for r in conn.execute(
        f"SELECT id FROM {legacy} WHERE age(xmin) <= age((%s::text::bigint %% 4294967296)::text::xid)",
        (since,))}


def _backfill(url: str, work) -> tuple[dict, int, float, float]:
    env = work / "deploy.env"
    env.write_text("ACCOUNT_SCHEMA_V2_READS=false\n", encoding="utf-8")
    command = [sys.executable, "-m", "cutover_tui.cli", "--runbook", str(ROOT / "runbook.toml"),
               "--database-url", url, "--env-file", str(env), "--operator", "live-writes",
               "backfill", "--report", str(work / "backfill.json"), "--json"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    ended = time.monotonic()
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    return json.loads(done.stdout), done.returncode, started, ended


def test_live_writes_are_caught_by_the_catch_up_passes(pg_server_url, tmp_path, figures):
    url = seeded(pg_server_url, workspaces=LIVE_WORKSPACES)
    stop = threading.Event()
    writers = [Writer(url, number, LIVE_WORKSPACES, stop, SIGNUP_EVERY) for number in range(1, WRITERS + 1)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)  # the writers are at pace before the backfill starts
    try:
        report, code, started, ended = _backfill(url, tmp_path)
    finally:
        time.sleep(0.2)
        stop.set()
        for writer in writers:
            writer.join()
    assert not [w.errors for w in writers if w.errors]
    during = sum(started <= t <= ended for w in writers for t in w.done)
    rate = during / (ended - started)
    assert min(t for w in writers for t in w.done) < started and max(t for w in writers for t in w.done) > ended
    assert rate >= MIN_RATE, f"the writers managed only {rate:.0f} operations a second"
    # Legacy never went quiet, so the backfill kept passing over it.
    assert report["passes"] >= 2 and not report["cancelled"]

    with psycopg.connect(url) as conn:
        run = report["runId"]
        legacy_xmin = conn.execute("SELECT legacy_xmin FROM cutover.backfill_runs WHERE id = %s", (run,)).fetchone()[0]
        by_pass = dict(conn.execute(
            "SELECT pass, sum((counters->>'inserted')::bigint + (counters->>'updated')::bigint) "
            "FROM cutover.backfill_parts WHERE run_id = %s GROUP BY pass ORDER BY pass", (run,)).fetchall())
        late = {t: _late_ids(conn, BY_NAME[t].legacy, legacy_xmin) for t in V2_TABLES}
    # The catch-up passes brought rows over that the first pass could not have seen.
    caught_up = sum(v for p, v in by_pass.items() if p > 1)
    assert caught_up > 0

    # (1) What is still different was written after the final pass began, nothing older.
    behind = {c["table"]: c for c in run_verify(url, VerifyOptions())["checks"]
              if c["type"] == "content" and not c["ok"]}
    for table, check in behind.items():
        assert check["extraInV2"] == 0
        assert check["missingInV2"] + check["different"] <= len(late[table]), (table, check)
        examples = set(check["examples"]["missing"]) | {e["id"] for e in check["examples"]["different"]}
        assert examples <= late[table], (table, examples - late[table])

    # Errors only for rows whose parent arrived after the final pass had walked the parent's
    # table (a foreign key of v2 refuses them; a snapshot follows its book), all written late.
    left_out = set()
    for error in report["errors"]:
        assert (error["error"].startswith("its parent row is not in v2 (") and "_fkey)" in error["error"]) \
            or error["error"] == "its book did not land", error
        left_out |= {(error["stage"], row["id"]) for row in error["rows"]}
    assert all(key in late[table] for table, key in left_out), left_out
    assert (code == 0) == (not report["errors"])
    code_first = code

    # (2) Writes stopped: one more run catches up, and then every content check passes.
    again, code, *_ = _backfill(url, tmp_path)
    assert code == 0 and again["ok"] and not again["errors"]
    brought = sum(s["affectedRows"] for s in again["stages"])
    assert brought <= sum(len(ids) for ids in late.values())
    content = [c for c in run_verify(url, VerifyOptions())["checks"] if c["type"] == "content"]
    assert {c["table"] for c in content} == set(V2_TABLES)
    failing = {c["table"]: (c["missingInV2"], c["extraInV2"], c["different"]) for c in content if not c["ok"]}
    lost = sum(c["missingInV2"] + c["different"] for c in content)
    assert not failing and lost == 0

    figures.record(
        "live writes: writers on legacy during the whole backfill, then the content check",
        workspaces=LIVE_WORKSPACES, runs=2, writers=WRITERS, operations_during_backfill=during,
        signups=sum(w.signups for w in writers),
        operations_per_second=round(rate, 1), operations_total=sum(len(w.done) for w in writers),
        backfill_s=round(ended - started, 1), passes=report["passes"],
        rows_written_per_pass={str(p): int(v) for p, v in by_pass.items()},
        rows_brought_by_catch_up_passes=int(caught_up),
        rows_written_after_final_pass_began=sum(len(ids) for ids in late.values()),
        rows_still_different_when_backfill_returned={t: c["missingInV2"] + c["different"] for t, c in behind.items()},
        rows_reported_as_errors_when_backfill_returned=sum(e["count"] for e in report["errors"]),
        first_backfill_exit_code=code_first, extra_run_after_writes_stopped=True, rows_brought_by_extra_run=brought,
        content_checks_failing_after=len(failing), rows_lost=lost)


LATE_PARENTS = 20


def _rolled_back(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_a_row_whose_parent_arrived_after_its_table_was_walked_costs_no_split_cascade(pg_server_url, figures):
    """A signup during a pass: its workspace is inserted after the pass walked accounts, its
    member before the pass reaches account_members. The member's range used to fail on the
    foreign key to accounts, and the backfill halved that range, redoing it, until the member
    stood alone: about log2(range) failed transactions per such row, each redoing up to the
    whole range (with the writers of the test above signing up about 17 workspaces a second,
    an M backfill had not finished its first pass after 4 minutes, 35 s when quiet). Now the
    write leaves such a row out, and the catch-up pass brings it with its parent.

    Deterministic here: the rows go in from the progress callback the moment accounts is
    walked (the members walk waits for it), once with new workspaces (the parent arrives
    late) and once with seeded ones (the parent is already in v2: the baseline). The late
    rows cost no failed transaction at all, and every one of them lands."""
    url = seeded(pg_server_url, workspaces=LIVE_WORKSPACES)
    Backfill(url, "late-parents", BackfillOptions()).run()
    with psycopg.connect(url) as conn:
        members = conn.execute("SELECT count(*) FROM platform_workspace_members").fetchone()[0]

    def run(late: bool) -> dict:
        inserted = threading.Event()

        def progress(p: BackfillProgress) -> None:
            if p.table == "accounts" and p.done >= p.total and not inserted.is_set():
                inserted.set()
                with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
                    user = f"user_late{int(late)}"  # a member of no workspace yet
                    conn.execute("INSERT INTO auth_users (id) VALUES (%s)", (user,))
                    for i in range(LATE_PARENTS):
                        k = 1 + i * (members - 1) // LATE_PARENTS  # spread over the members' keys
                        ws = f"ws_late{int(late)}_{i}" if late else f"ws_{1 + i}"
                        if late:
                            conn.execute("INSERT INTO platform_workspaces (id, name) VALUES (%s, 'Late')", (ws,))
                        conn.execute("INSERT INTO platform_workspace_members (id, workspace_id, user_id, role) "
                                     "VALUES (%s, %s, %s, 'member')", (f"mem_{k}_late{int(late)}", ws, user))

        before, started = _rolled_back(url), time.monotonic()
        report = Backfill(url, "late-parents", BackfillOptions(full_compare=True), progress=progress).run()
        seconds = time.monotonic() - started
        time.sleep(1)  # the workers' statistics reach pg_stat_database when their sessions end
        assert inserted.is_set() and report["ok"], report["errors"]
        # In the end every member landed: the catch-up pass brought the late ones.
        landed = next(s for s in report["stages"] if s["stage"] == "account_members")["inserted"]
        assert landed == LATE_PARENTS
        with psycopg.connect(url) as conn:
            waited = conn.execute(
                "SELECT coalesce(sum((e.value ->> 'count')::int), 0) FROM cutover.backfill_parts p, "
                "jsonb_each(p.issues) e WHERE p.run_id = %s AND p.pass = 1 AND p.table_name = 'account_members' "
                "AND e.value ->> 'issue' LIKE 'its parent row is not in v2 (account_members_account_id_fkey)%%'",
                (report["runId"],)).fetchone()[0]
        return {"failed_transactions": _rolled_back(url) - before, "seconds": round(seconds, 2),
                "passes": report["passes"], "waited_for_the_next_pass": waited, "lost": LATE_PARENTS - landed}

    baseline, late = run(late=False), run(late=True)
    lost = baseline.pop("lost") + late.pop("lost")
    extra = late["failed_transactions"] - baseline["failed_transactions"]
    figures.record("live writes: rows whose parent arrived after its table was walked",
                   workspaces=LIVE_WORKSPACES, runs=2, rows=LATE_PARENTS, parent_already_in_v2=baseline,
                   parent_arrived_late=late, failed_transactions_per_row=round(extra / LATE_PARENTS, 1),
                   rows_lost=lost)
    # The members went in before the members walk: with their parents late, the first pass left every
    # one of them out (none failed its range), the catch-up pass brought them; nothing split.
    assert late["waited_for_the_next_pass"] == LATE_PARENTS and late["passes"] >= 2, late
    assert baseline["waited_for_the_next_pass"] == 0, baseline
    assert extra <= 0, f"{extra} failed transactions for {LATE_PARENTS} rows: {baseline} vs {late}"
