"""A range reads its parent tables row by row through their indexes, never whole: the walks of
the backfill and of verify stay linear in the table's size (BENCHMARKS.md, ten times M). One
look is planned by the server: verify's later look at a snapshot range, which reads the books
that land afresh (once per book, not once per snapshot)."""

from __future__ import annotations

from itertools import pairwise

import psycopg
from psycopg import sql

from cutover_tui.rules.mapping import BY_NAME, PIXBOOKS, column_types, range_filter
from cutover_tui.work import ranges
from cutover_tui.work import verify as verify_module
from cutover_tui.work.backfill import Backfill, BackfillOptions
from cutover_tui.work.verify import VerifyOptions, run_verify


def plan(conn: psycopg.Connection, statement: sql.Composable, params: dict) -> str:
    return "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN ") + statement, params))


def test_a_range_probes_its_parents_instead_of_hashing_them(backfilled_url):
    """The books' rules read identities (at a first look, accounts only from a list of the absent
    ones): inside a range, by index, row by row."""
    with psycopg.connect(backfilled_url, autocommit=True) as conn:  # as the walks' connections
        st = verify_module._Statements(PIXBOOKS, column_types(conn, "pixbooks"), verify_module._Rule())
        params = {"lo": "book_1", "hi": "book_5", "since": None, "began": None, "left_out": [],
                  "not_landing": []} | {name: [] for name in verify_module._LISTS} | verify_module._Trust.NONE
        with conn.transaction():
            assert "Hash" in plan(conn, st.digest("book_1", "book_5"), params)  # as the planner would
        with conn.transaction():
            ranges.probe_by_index(conn)
            probed = plan(conn, st.digest("book_1", "book_5"), params)
        assert "Hash" not in probed and "Merge" not in probed and "Nested Loop" in probed
        # Only for the range's transaction: the next one plans as ever.
        assert conn.execute("SHOW enable_hashjoin").fetchone()[0] == "on"


def test_every_range_of_both_walks_is_probed(backfilled_url, monkeypatch):
    probed: list[bool] = []  # each call: inside a transaction (SET LOCAL lasts just that long)
    original = ranges.probe_by_index

    def probe(conn: psycopg.Connection) -> None:
        probed.append(conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)
        original(conn)

    monkeypatch.setattr(ranges, "probe_by_index", probe)
    report = run_verify(backfilled_url, VerifyOptions())
    ranges_walked = sum(c["ranges"] for c in report["checks"] if c["type"] == "content")
    assert len(probed) == ranges_walked and all(probed)
    probed.clear()
    Backfill(backfilled_url, "tester", BackfillOptions(full_compare=True)).run()
    assert probed and all(probed)


def test_a_later_look_at_snapshots_applies_the_book_rules_hashed(backfilled_url, monkeypatch):
    """A later look reads the books that land afresh. Through indexes that would apply the book
    rules once per snapshot, so that look alone plans as the server would (once per book); every
    other look is probed, and a later look finds what the first found."""
    looks: list[tuple[str, bool]] = []
    original = ranges.probe_by_index
    monkeypatch.setattr(ranges, "probe_by_index", lambda conn: (looks.append((name, fresh)), original(conn)))
    verify = verify_module._Verify(backfilled_url, VerifyOptions(), None, None, None)
    verify.rule = verify_module._Rule()
    conn = verify_module._connect(backfilled_url, read_only=True)
    try:
        # The lists a first look reads, as verify takes them before its walks.
        verify._lists = {name: conn.execute(query).fetchone()[0] for name, query in verify_module._LISTS.items()}
        figures = {}
        for name in ("pixbooks", "pixbook_snapshots"):
            st = verify_module._Statements(BY_NAME[name], column_types(conn, name), verify.rule)
            for fresh in (False, True):
                tally, rows = verify._look(conn, st, None, None, fresh=fresh)
                figures[name, fresh] = (tally.legacy, tally.expected, tally.v2_rows, rows)
                if st.lands_books and not fresh:
                    verify._unlanded = tally.unlanded  # as the walk of the books hands it on
    finally:
        conn.close()
    assert looks == [("pixbooks", False), ("pixbooks", True), ("pixbook_snapshots", False)]
    for name in ("pixbook_snapshots", "pixbooks"):
        assert figures[name, True] == figures[name, False] and figures[name, False][0] > 0


def test_a_cut_from_an_estimate_covers_every_key_once_in_parts_near_even(backfilled_url, monkeypatch):
    """Verify cuts a table by the planner's estimate of its rows (a table with no statistics is
    counted): the parts still hold every key once, about evenly, even when the estimate is far off."""
    st = verify_module._Statements(BY_NAME["pixbook_snapshots"], (), verify_module._Rule())
    with psycopg.connect(backfilled_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fresh_keys (id text PRIMARY KEY)")
        assert ranges.estimate(conn, "fresh_keys") is None
        conn.execute("VACUUM ANALYZE platform_book_snapshots")
        total = conn.execute("SELECT count(*) FROM platform_book_snapshots").fetchone()[0]
        assert abs(ranges.estimate(conn, "platform_book_snapshots") - total) <= total // 20
        monkeypatch.setattr(ranges, "SPLIT_ROWS", 10)
        for estimate, workers in ((total, 2), (total, 3), (total * 3, 2), (total * 3, 4)):
            bounds = ranges.cut(conn, st.key_at(None, None), estimate, workers)
            assert bounds[0][0] is None and bounds[-1][1] is None
            assert all(hi == lo for (_, hi), (lo, _) in pairwise(bounds))
            counts = [conn.execute(sql.SQL("SELECT count(*) FROM platform_book_snapshots l WHERE {}").format(
                range_filter("l", lo, hi)), {"lo": lo, "hi": hi}).fetchone()[0] for lo, hi in bounds]
            assert sum(counts) == total
            if estimate == total:
                assert len(bounds) == workers and max(counts) - min(counts) <= workers


def test_a_walks_connection_never_compiles_its_statements(backfilled_url):
    """A range's statement passes the server's JIT thresholds though it runs a fraction of a
    second: compiling it cost more than it saved (BENCHMARKS.md, PostgreSQL 15 with LLVM)."""
    conn = ranges.job_connection(backfilled_url, "test")
    try:
        assert conn.execute("SHOW jit").fetchone()[0] == "off"
        assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] == "0"
    finally:
        conn.close()
