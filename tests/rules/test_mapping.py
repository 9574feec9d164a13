"""The row hash that backfill, verify and repair share: equal only for equal rows, on every
supported server (no function a Postgres 15-17 lacks)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from helpers import ROOT
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from cutover_tui.demo.embedded import create_database
from cutover_tui.rules.mapping import PIXBOOKS, compared_by_value, row_hash, source_query
from cutover_tui.work.migrate import apply_legacy_baseline

COLUMNS = (("t", "text"), ("n", "bigint"), ("i", "integer"), ("ts", "timestamp with time zone"),
           ("jb", "jsonb"), ("js", "json"))


@pytest.fixture(scope="module")
def conn(pg_server_url):
    url = create_database(pg_server_url, f"hash_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET TimeZone = 'America/New_York'")  # the hash must not depend on it
        connection.execute("CREATE TABLE rows (id int PRIMARY KEY, t text, n bigint, i integer, "
                           "ts timestamptz, jb jsonb, js json)")
        yield connection


def _json_text(value: dict, reverse: bool) -> str:
    return json.dumps(dict(sorted(value.items(), reverse=reverse)))


texts = st.one_of(st.none(), st.sampled_from(["", "\x01null\x01", "null", "NULL", " ", "a"]),
                  st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6))
bigints = st.one_of(st.none(), st.sampled_from([0, -9223372036854775807, -(2**63), 2**63 - 1]),
                    st.integers(-(2**63), 2**63 - 1))
integers = st.one_of(st.none(), st.just(0), st.integers(-(2**31), 2**31 - 1))
stamps = st.one_of(st.none(), st.sampled_from(["-infinity", "infinity", "1970-01-01 00:00:00+00",
                                               "2024-11-03 01:30:00-04", "2024-11-03 01:30:00-05"]),
                   st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)).map(str))
documents = st.dictionaries(st.sampled_from("abc"), st.one_of(st.none(), st.integers(-3, 3), st.text("xy", max_size=2)),
                            max_size=3)
json_texts = st.one_of(st.none(), st.just("null"), st.tuples(documents, st.booleans()).map(lambda d: _json_text(*d)))
ROW = st.tuples(texts, bigints, integers, stamps, json_texts, json_texts)


@st.composite
def pairs(draw):
    """A row, and a second one that keeps some of its columns and draws the rest anew."""
    first = draw(ROW)
    fresh = draw(ROW)
    keep = draw(st.lists(st.booleans(), min_size=len(first), max_size=len(first)))
    return first, tuple(a if k else b for a, b, k in zip(first, fresh, keep))


def hashes_and_equality(conn, first, second) -> tuple[bool, bool]:
    """Whether the two rows hash alike, and whether they are equal column by column (by
    value, a NULL equal only to a NULL; json, which has no equality, by its text)."""
    conn.execute("TRUNCATE rows")
    insert = "INSERT INTO rows VALUES (%s" + ", %s" * len(COLUMNS) + ")"
    conn.cursor().executemany(insert, [(1, *first), (2, *second)])
    one, two = (h for (h,) in conn.execute(
        sql.SQL("SELECT {} FROM rows r ORDER BY id").format(row_hash("r", COLUMNS))).fetchall())
    same = sql.SQL(" AND ").join(
        sql.SQL("a.{0} IS NOT DISTINCT FROM b.{0}" if compared_by_value(kind) else
                "a.{0}::text IS NOT DISTINCT FROM b.{0}::text").format(sql.Identifier(name))
        for name, kind in COLUMNS)
    equal = conn.execute(sql.SQL("SELECT {} FROM rows a, rows b WHERE a.id = 1 AND b.id = 2").format(same)).fetchone()[0]
    return one == two, equal


NULLS = (None,) * 6


@settings(max_examples=400, deadline=None)
@given(pairs())
@example((NULLS, ("", None, None, None, None, None)))  # NULL vs ''
@example((NULLS, ("\x01null\x01", None, None, None, None, None)))  # NULL vs the old sentinel
@example((NULLS, (None, -9223372036854775807, None, None, None, None)))
@example((NULLS, (None, 0, 0, None, None, None)))  # NULL vs the stand-ins
@example((NULLS, (None, None, None, "-infinity", None, None)))
@example((NULLS, (None, None, None, "1970-01-01 00:00:00+00", None, None)))
@example((NULLS, (None, None, None, None, "null", "null")))  # SQL NULL vs JSON null
@example(((None, None, None, "-infinity", None, None), (None, None, None, "infinity", None, None)))
# one New York wall-clock time, two instants (the session's TimeZone must not matter)
@example(((None, None, None, "2024-11-03 01:30:00-04", None, None), (None, None, None, "2024-11-03 01:30:00-05", None, None)))
@example(((None, None, None, None, '{"a": 1, "b": 2}', None), (None, None, None, None, '{"b": 2, "a": 1}', None)))
@example(((None, None, None, None, None, '{"a": 1, "b": 2}'), (None, None, None, None, None, '{"b": 2, "a": 1}')))
# jsonb's own hash drops a number's sign; its text keeps a number's scale (a difference to us)
@example(((None, None, None, None, '{"a": 3}', None), (None, None, None, None, '{"a": -3}', None)))
@example(((None, None, None, None, '[1.0, -2]', None), (None, None, None, None, '[1, -2.00]', None)))
@example((("a", 1, 1, None, None, None), ("a", None, 1, None, None, None)))
def test_equal_hashes_only_for_equal_rows(conn, pair):
    first, second = pair
    alike, equal = hashes_and_equality(conn, *pair)
    assert alike == equal, (first, second)


def test_jsonb_key_order_is_the_same_value_and_json_key_order_is_not(conn):
    a, b = '{"a": 1, "b": [2, {"c": null}]}', '{"b": [2, {"c": null}], "a": 1}'
    assert hashes_and_equality(conn, (None,) * 4 + (a, None), (None,) * 4 + (b, None)) == (True, True)
    assert hashes_and_equality(conn, (None,) * 5 + (a,), (None,) * 5 + (b,)) == (False, False)


def test_a_range_whose_rows_swap_a_value_has_another_digest(conn):
    """The per-range digest xors the rows' hashes: the chain must not let two rows trade values."""
    digest = sql.SQL("SELECT bit_xor({}) FROM rows r").format(row_hash("r", (("id", "integer"), ("t", "text"))))
    conn.execute("TRUNCATE rows")
    conn.execute("INSERT INTO rows (id, t) VALUES (1, 'x'), (2, 'y')")
    before = conn.execute(digest).fetchone()[0]
    conn.execute("UPDATE rows SET t = CASE id WHEN 1 THEN 'y' ELSE 'x' END")
    assert conn.execute(digest).fetchone()[0] != before



# --- the collection rule, against a model of §3's SQL -------------------------------------------

@pytest.fixture(scope="module")
def legacy(pg_server_url):
    """A legacy schema with one workspace and one managed user, whose books each example sets."""
    url = create_database(pg_server_url, f"rules_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(url, autocommit=True) as connection:
        apply_legacy_baseline(connection, ROOT / "sql")
        connection.execute("INSERT INTO platform_workspaces (id, name) VALUES ('ws', 'W')")
        connection.execute("INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key) "
                           "VALUES ('mu', 'ws', 'M', 'k')")
        yield connection


def _lands_as(collection: str) -> str:
    """§3: COALESCE(NULLIF(BTRIM(collection_id), ''), 'primary'); BTRIM strips spaces only."""
    return collection.strip(" ") or "primary"


collection_ids = st.text(st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u3000", "x", "y", "'"]), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(collection_ids, min_size=1, max_size=5, unique=True))
@example(["   ", "\t", " x ", "x", "", "\n"])
def test_a_book_lands_in_its_btrimmed_collection_and_the_oldest_of_a_collection_wins(legacy, collections):
    """Each active book of one identity lands in its collection after the rule; of the books
    the rule puts in one collection, only the oldest lands, the rest are duplicates."""
    legacy.execute("DELETE FROM platform_books")
    for n, collection in enumerate(collections):
        legacy.execute("INSERT INTO platform_books (id, workspace_id, managed_user_id, name, collection_id, created_at) "
                       "VALUES (%s, 'ws', 'mu', 'B', %s, '2020-01-01'::timestamptz + %s * interval '1 day')",
                       (f"b{n}", collection, n))
    rows = legacy.execute(sql.SQL("SELECT id, collection_id, issue FROM ({}) s ORDER BY id").format(
        source_query(PIXBOOKS, sql.SQL("true")))).fetchall()
    seen: set[str] = set()
    expected = []
    for n, collection in enumerate(collections):
        lands = _lands_as(collection)
        duplicate = lands in seen
        seen.add(lands)
        issue = "another active book of this identity has the same collection" if duplicate else None
        expected.append((f"b{n}", lands, issue))
    assert rows == expected, collections
    # The list a verify's first look reads names exactly the same books (mapping.Twins).
    assert sorted(legacy.execute(PIXBOOKS.twins.ids()).fetchone()[0]) == [b for b, _, issue in expected if issue]
