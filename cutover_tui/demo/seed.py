"""Deterministic legacy data for the demo and the tests, generated set-wise in the server.

`workspaces` sets the scale; the other tables follow the production ratios per workspace:
1 auth user, 1.5 members, 2 managed users, 2 books, 10 snapshots, 3 audit events.
Every value comes from `md5` of a tag, the row number and `seed`, so the same
`(workspaces, seed, clean)` gives the same bytes on every run and every server.

Unless `clean`, the data also carries the damage the backfill must handle (§3 of the
design), each kind at a known count reported in `SeedSummary.anomalies`, plus noise
(deleted rows, NULL and unicode names, ~50 KB payloads) whose counts are reported too.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql
from pydantic import BaseModel

from ..errors import BadInput

SIZES = {"S": 10_000, "M": 100_000, "L": 1_000_000}

# Each seeded table, with a column that shows the last legacy migration touching it is in.
_TABLES = {
    "platform_workspaces": "name",
    "auth_users": "email",
    "platform_workspace_members": "role",
    "platform_managed_users": "identity_key_fingerprint",
    "platform_books": "collection_id",
    "platform_book_snapshots": "payload_json",
    "platform_audit_events": "event_type",
}

_CHUNK = 100_000  # rows per INSERT, so `progress` moves while the big tables fill

# Planted kinds that rewrite rows of chosen workspaces: one per this many workspaces.
# Each kind owns its own workspaces; the last one points books at the workspace after its
# own, which no kind touches (see the plan below), so no two kinds overlap.
_WORKSPACE_KINDS = {
    "duplicate_active_fingerprints": 200,
    "duplicate_fingerprint_already_deleted": 500,
    "blank_collection_ids": 200,
    "whitespace_collection_ids": 500,
    "blank_and_primary_same_identity": 500,
    "books_identity_other_workspace": 500,
}
_PLAN_STRIDE = len(_WORKSPACE_KINDS) + 1  # + the untouched workspace after each other-workspace book
_ORPHANS_PER = 1000
_LARGE_PAYLOAD_PER = 20_000
_MIN_PLANTED_SIZE = 20

_PEOPLE = ["Alice Martin", "Bob Smith", "Carol Jones", "David Brown", "Emma Wilson", "Frank Taylor",
           "Grace Lee", "Henry Clark", "Isla Walker", "Jack Evans", "Kate Wright", "Liam Hughes",
           "Mia Turner", "Noah Green", "Olivia Hall", "Paul Baker"]
_PEOPLE_FANCY = ["Zoë Ångström", "José Núñez", "Björn Østergård", "Łukasz Żółć", "François Lefèvre",
                 "山田 太郎", "李小龙", "김민준", "Αλέξανδρος Παπαδόπουλος", "Дмитрий Иванов", "محمد علي",
                 "Ayşe Yılmaz", "Ngô Bảo Châu", "🦊 Foxy", "Sam 🚀 Rivera", "Ólafur Þórsson"]
_WORKSPACE_NAMES = ["Acme Studio", "Northwind Family", "Globex Team", "Initech Club", "Hooli Labs",
                    "Blue Harbor Photos", "Oak Street School", "Riverside Scouts"]
_WORKSPACE_NAMES_FANCY = ["Café Müller", "Familie Groß", "Équipe Été", "東京フォトクラブ", "서울 가족",
                          "Ünicorn 🦄 Labs", "Família São João", "Школа №5"]
_BOOK_NAMES = ["Summer Holidays", "Family Album", "Baby Book", "Wedding", "Garden Diary", "School Year",
               "Road Trip", "Birthday Party"]
_BOOK_NAMES_FANCY = ["Été à Paris", "京都の旅", "Noël 🎄", "Cumpleaños de Inés", "Småland Sommar",
                     "Рождество", "🐶 Puppy Days", "Fête de la Musique"]
_EVENT_TYPES = ["book.saved", "book.created", "book.deleted", "member.invited", "identity.created",
                "session.started"]

# Helpers for one seeding transaction. Plain expressions over immutable/stable calls, so
# the planner inlines them. Intervals are whole seconds: day and month steps would depend
# on the session time zone.
_FUNCTIONS = """
CREATE FUNCTION pg_temp.seed_rnd(tag text, n bigint) RETURNS bigint LANGUAGE sql IMMUTABLE
  AS $$ SELECT ('x' || left(md5(tag || ':' || n::text || ':' || {seed}), 8))::bit(32)::bigint $$;

-- One row in `one_in`, and never in a clean seed.
CREATE FUNCTION pg_temp.seed_noise(tag text, n bigint, one_in int) RETURNS boolean LANGUAGE sql IMMUTABLE
  AS $$ SELECT {noisy} AND mod(pg_temp.seed_rnd(tag, n), one_in) = 0 $$;

-- A plain name; one in 12 a unicode one (not in a clean seed); one in 4000 very long.
CREATE FUNCTION pg_temp.seed_pick(tag text, n bigint, plain text[], fancy text[]) RETURNS text
  LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN pg_temp.seed_noise(tag || ':fancy', n, 12)
      THEN fancy[1 + mod(pg_temp.seed_rnd(tag, n), cardinality(fancy))::int]
    WHEN mod(pg_temp.seed_rnd(tag || ':long', n), 4000) = 0
      THEN rtrim(repeat(plain[1 + mod(pg_temp.seed_rnd(tag, n), cardinality(plain))::int] || ' ', 30))
    ELSE plain[1 + mod(pg_temp.seed_rnd(tag, n), cardinality(plain))::int] END $$;

CREATE FUNCTION pg_temp.seed_span(tag text, n bigint, days int) RETURNS interval LANGUAGE sql IMMUTABLE
  AS $$ SELECT interval '1 second' * mod(pg_temp.seed_rnd(tag, n), days * 86400) $$;

-- Workspaces start evenly over the first 120 days of 2025; a row of workspace `w` falls
-- between day `from_day` and `to_day` after its workspace (at most day 340: all in 2025).
CREATE FUNCTION pg_temp.seed_at(w bigint, tag text, n bigint, from_day int, to_day int)
  RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT timestamptz '2025-01-01 00:00:00+00'
         + interval '1 second' * ((w - 1) * 10368000 / {workspaces} + from_day * 86400)
         + pg_temp.seed_span(tag, n, to_day - from_day) $$
"""
_DROP_FUNCTIONS = """
DROP FUNCTION pg_temp.seed_at, pg_temp.seed_span, pg_temp.seed_pick, pg_temp.seed_noise, pg_temp.seed_rnd
"""

# Planted kind -> workspace numbers, spread evenly with a seed-dependent offset: kind k
# (1-based) only uses workspaces congruent to k modulo the stride.
_PLAN = """
CREATE TEMP TABLE seed_plan ON COMMIT DROP AS
SELECT k.kind, t,
       %(stride)s::int * mod((t - 1) * %(slots)s::int / k.n + pg_temp.seed_rnd(k.kind, 0), %(slots)s::int)
         + k.grp AS workspace_no
FROM unnest(%(kinds)s::text[], %(counts)s::int[]) WITH ORDINALITY AS k(kind, n, grp),
     generate_series(1, k.n) t
"""

# Base rows numbered g in [lo, hi]. Rows of planted workspaces are kept plain (active,
# keyed, 'primary') so the planted damage is exactly what the plan says.
_FILL = {
    "platform_workspaces": """
INSERT INTO platform_workspaces (id, name, created_at, updated_at)
SELECT 'ws_' || g, pg_temp.seed_pick('ws', g, %(workspace_names)s, %(workspace_names_fancy)s),
       at, at + pg_temp.seed_span('ws:up', g, 90)
FROM generate_series(%(lo)s::int, %(hi)s::int) g, LATERAL (SELECT pg_temp.seed_at(g, 'ws', g, 0, 1) AS at) a
""",
    "auth_users": """
INSERT INTO auth_users (id, email, name, created_at, updated_at)
SELECT 'user_' || g,
       CASE WHEN mod(pg_temp.seed_rnd('user:email', g), 250) <> 0 THEN 'user' || g || '@example.test' END,
       CASE WHEN NOT pg_temp.seed_noise('user:noname', g, 100)
            THEN pg_temp.seed_pick('user', g, %(people)s, %(people_fancy)s) END,
       at, at + pg_temp.seed_span('user:up', g, 90)
FROM generate_series(%(lo)s::int, %(hi)s::int) g, LATERAL (SELECT pg_temp.seed_at(g, 'user', g, 0, 1) AS at) a
""",
    # Member g <= n owns workspace g; the others join workspace 2(g - n) as some other user.
    "platform_workspace_members": """
INSERT INTO platform_workspace_members (id, workspace_id, user_id, role, status, created_at, updated_at)
SELECT 'mem_' || g, 'ws_' || w,
       'user_' || CASE WHEN owner THEN w
                       ELSE 1 + mod(w + mod(pg_temp.seed_rnd('mem:user', g), %(n)s::int - 1), %(n)s::int) END,
       CASE WHEN owner THEN 'owner' WHEN mod(pg_temp.seed_rnd('mem:role', g), 3) = 0 THEN 'admin' ELSE 'member' END,
       CASE WHEN NOT owner AND pg_temp.seed_noise('mem:deleted', g, 25) THEN 'deleted' ELSE 'active' END,
       at, at + pg_temp.seed_span('mem:up', g, 30)
FROM generate_series(%(lo)s::int, %(hi)s::int) g,
     LATERAL (SELECT g <= %(n)s::int AS owner) o,
     LATERAL (SELECT CASE WHEN owner THEN g ELSE 2 * (g - %(n)s::int) END AS w) a,
     LATERAL (SELECT pg_temp.seed_at(w, 'mem', g, 0, 60) AS at) b
""",
    # Two per workspace, the second created after the first; one in 20 predates identity keys.
    "platform_managed_users": """
INSERT INTO platform_managed_users (id, workspace_id, display_name, avatar_public_id, user_key, status,
    profile_id, identity_public_key, identity_key_fingerprint, created_at, updated_at)
SELECT 'mu_' || g, 'ws_' || w, pg_temp.seed_pick('mu', g, %(people)s, %(people_fancy)s),
       CASE WHEN mod(pg_temp.seed_rnd('mu:avatar', g), 4) <> 0
            THEN 'avatar_' || to_hex(pg_temp.seed_rnd('mu:avatar_id', g)) END,
       'key_' || g,
       CASE WHEN NOT planted AND pg_temp.seed_noise('mu:deleted', g, 30) THEN 'deleted' ELSE 'active' END,
       CASE WHEN keyed THEN 'profile_' || g END,
       CASE WHEN keyed THEN public_key END,
       CASE WHEN keyed THEN 'fp_' || md5(public_key) END,
       at, at + pg_temp.seed_span('mu:up', g, 30)
FROM generate_series(%(lo)s::int, %(hi)s::int) g,
     LATERAL (SELECT (g + 1) / 2 AS w, mod(g + 1, 2) AS second) a,
     LATERAL (SELECT w IN (SELECT workspace_no FROM seed_plan) AS planted,
                     'pk_' || md5(g || ':' || pg_temp.seed_rnd('mu:key', g)) AS public_key,
                     pg_temp.seed_at(w, 'mu', g, 30 * second, 30 + 30 * second) AS at) b,
     LATERAL (SELECT planted OR mod(pg_temp.seed_rnd('mu:keyless', g), 20) <> 0 AS keyed) c
""",
    # Book g belongs to managed user g; current_version 5 as it has snapshots 1..5.
    "platform_books": """
INSERT INTO platform_books (id, workspace_id, managed_user_id, name, status, current_version, collection_id,
    created_at, updated_at)
SELECT 'book_' || g, 'ws_' || w, 'mu_' || g, pg_temp.seed_pick('book', g, %(book_names)s, %(book_names_fancy)s),
       CASE WHEN NOT planted AND pg_temp.seed_noise('book:deleted', g, 25) THEN 'deleted' ELSE 'active' END,
       5,
       CASE WHEN planted THEN 'primary'
            ELSE (ARRAY['travel', 'family', 'primary', 'primary', 'primary', 'primary', 'primary', 'primary'])
                 [1 + mod(pg_temp.seed_rnd('book:collection', g), 8)::int] END,
       at, at + pg_temp.seed_span('book:up', g, 30)
FROM generate_series(%(lo)s::int, %(hi)s::int) g,
     LATERAL (SELECT (g + 1) / 2 AS w) a,
     LATERAL (SELECT w IN (SELECT workspace_no FROM seed_plan) AS planted,
                     pg_temp.seed_at(w, 'book', g, 60, 120) AS at) b
""",
    # Snapshot g is version v of book b; version 1 of some old books has no payload.
    "platform_book_snapshots": """
INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256, wrapped_dek,
    ledger_head, payload_json, created_at)
SELECT 'snap_' || g, 'book_' || b, v, 'objects/book_' || b || '/v' || v || '.bin',
       encode(sha256(convert_to('cipher:' || g || ':' || r, 'UTF8')), 'hex'),
       'dek_' || md5('dek:' || g || ':' || r),
       CASE WHEN v > 1 THEN 'head_' || md5('head:' || b || ':' || (v - 1)) END,
       CASE WHEN v > 1 OR mod(r, 20) <> 0 THEN jsonb_build_object(
           'book', 'book_' || b, 'version', v, 'pages', 1 + mod(r, 96),
           'theme', (ARRAY['classic', 'modern', 'kids', 'travel'])[1 + mod(r / 96, 4)::int],
           'cover', 'img_' || to_hex(r), 'fonts', jsonb_build_array('Inter', 'Merriweather'),
           'layout', 'grid-' || (2 + mod(r / 384, 3)), 'editor', 'user_' || w,
           'checksum', md5('payload:' || g || ':' || r)) END,
       pg_temp.seed_at(w, 'snap', g, 100 + 20 * v, 120 + 20 * v)
FROM generate_series(%(lo)s::int, %(hi)s::int) g,
     LATERAL (SELECT (g + 4) / 5 AS b, mod(g - 1, 5) + 1 AS v, pg_temp.seed_rnd('snap', g) AS r) a,
     LATERAL (SELECT (b + 1) / 2 AS w) c
""",
    # Some events come from the system (no actor), as the SET NULL FK allows.
    "platform_audit_events": """
INSERT INTO platform_audit_events (id, workspace_id, actor_user_id, event_type, payload, created_at)
SELECT 'evt_' || g, 'ws_' || w, CASE WHEN mod(r, 50) <> 0 THEN 'user_' || w END,
       (%(event_types)s::text[])[1 + mod(r / 50, 6)::int],
       jsonb_build_object('ip', '10.' || mod(r, 256) || '.' || mod(r / 256, 256) || '.' || mod(r / 65536, 256),
                          'agent', (ARRAY['web', 'ios', 'android'])[1 + mod(r / 300, 3)::int]),
       pg_temp.seed_at(w, 'evt', g, 0, 240)
FROM generate_series(%(lo)s::int, %(hi)s::int) g,
     LATERAL (SELECT (g + 2) / 3 AS w, pg_temp.seed_rnd('evt', g) AS r) a
""",
}

# Workspace w of a plan row owns managed users and books 2w-1 and 2w.
_PLANT = [
    # The second managed user takes the first one's key: same fingerprint, other profile.
    """
UPDATE platform_managed_users m
SET identity_public_key = f.identity_public_key, identity_key_fingerprint = f.identity_key_fingerprint,
    status = CASE p.kind WHEN 'duplicate_fingerprint_already_deleted' THEN 'deleted' ELSE m.status END
FROM seed_plan p, platform_managed_users f
WHERE p.kind IN ('duplicate_active_fingerprints', 'duplicate_fingerprint_already_deleted')
  AND m.id = 'mu_' || 2 * p.workspace_no AND f.id = 'mu_' || 2 * p.workspace_no - 1
""",
    """
UPDATE platform_books b SET collection_id = ''
FROM seed_plan p WHERE p.kind = 'blank_collection_ids' AND b.id = 'book_' || 2 * p.workspace_no - 1
""",
    """
UPDATE platform_books b SET collection_id = (ARRAY[' ', '  ', E'\\t'])[1 + mod(p.t, 3)]
FROM seed_plan p WHERE p.kind = 'whitespace_collection_ids' AND b.id = 'book_' || 2 * p.workspace_no - 1
""",
    # The second book moves to the first identity, next to its 'primary' book, stored as ''.
    """
UPDATE platform_books b SET managed_user_id = 'mu_' || 2 * p.workspace_no - 1, collection_id = ''
FROM seed_plan p WHERE p.kind = 'blank_and_primary_same_identity' AND b.id = 'book_' || 2 * p.workspace_no
""",
    # Pointed at the first identity of the next, untouched workspace.
    """
UPDATE platform_books b SET managed_user_id = 'mu_' || 2 * p.workspace_no + 1
FROM seed_plan p WHERE p.kind = 'books_identity_other_workspace' AND b.id = 'book_' || 2 * p.workspace_no - 1
""",
]

# Orphans as a damaged database holds them: kind -> (table, the FK they break, insert);
# that FK comes back NOT VALID, so it still guards new rows but not these.
# Rows t = 1..count get ids after the table's last; `w` is some existing workspace.
_ORPHANS = {
    "orphan_members_missing_workspace": (
        "platform_workspace_members", "platform_workspace_members_workspace_id_fkey", """
INSERT INTO platform_workspace_members (id, workspace_id, user_id, role, status, created_at, updated_at)
SELECT 'mem_' || (%(start)s::int + t), 'ws_gone_' || t, 'user_' || w, 'member', 'active', at, at
"""),
    "orphan_members_missing_user": ("platform_workspace_members", "platform_workspace_members_user_id_fkey", """
INSERT INTO platform_workspace_members (id, workspace_id, user_id, role, status, created_at, updated_at)
SELECT 'mem_' || (%(start)s::int + t), 'ws_' || w, 'user_gone_' || t, 'member', 'active', at, at
"""),
    "orphan_managed_users_missing_workspace": ("platform_managed_users", "platform_managed_users_workspace_id_fkey", """
INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key, status, created_at, updated_at)
SELECT 'mu_' || (%(start)s::int + t), 'ws_gone_' || t, 'Orphan ' || t, 'key_' || (%(start)s::int + t), 'active',
       at, at
"""),
    "orphan_books_missing_managed_user": ("platform_books", "platform_books_managed_user_id_fkey", """
INSERT INTO platform_books (id, workspace_id, managed_user_id, name, status, current_version, collection_id,
    created_at, updated_at)
SELECT 'book_' || (%(start)s::int + t), 'ws_' || w, 'mu_gone_' || t, 'Orphan ' || t, 'active', 1, 'primary',
       at, at
"""),
    "orphan_snapshots_missing_book": ("platform_book_snapshots", "platform_book_snapshots_book_id_fkey", """
INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256, wrapped_dek,
    created_at)
SELECT 'snap_' || (%(start)s::int + t), 'book_gone_' || t, 1, 'objects/book_gone_' || t || '/v1.bin',
       encode(sha256(convert_to('orphan:' || t, 'UTF8')), 'hex'), 'dek_' || md5('orphan:' || t), at
"""),
}
_ORPHAN_ROWS = """
FROM generate_series(1, %(count)s::int) t,
     LATERAL (SELECT 1 + mod(pg_temp.seed_rnd(%(kind)s, t), %(n)s::int) AS w) a,
     LATERAL (SELECT pg_temp.seed_at(w, %(kind)s, t, 0, 240) AS at) b
"""

# The last version of evenly spaced books grows a ~50 KB inline payload.
_LARGE_PAYLOADS = """
UPDATE platform_book_snapshots s
SET payload_json = s.payload_json || jsonb_build_object('pages_html',
      (SELECT string_agg(md5(s.id || ':' || i), '') FROM generate_series(1, 1600) i))
FROM generate_series(1, %(count)s::int) t
WHERE s.id = 'snap_' || 5 * (t * (2 * %(n)s::int / %(count)s::int))
"""

_DELETED_ROWS = """
SELECT (SELECT count(*) FROM platform_workspace_members WHERE status = 'deleted')
     + (SELECT count(*) FROM platform_managed_users WHERE status = 'deleted')
     + (SELECT count(*) FROM platform_books WHERE status = 'deleted')
"""
# A name with more bytes than characters is not plain ASCII (the database is UTF-8).
_NULL_AND_UNICODE_NAMES = """
SELECT (SELECT count(*) FROM auth_users WHERE name IS NULL OR octet_length(name) > char_length(name))
     + (SELECT count(*) FROM platform_workspaces WHERE octet_length(name) > char_length(name))
     + (SELECT count(*) FROM platform_managed_users WHERE octet_length(display_name) > char_length(display_name))
     + (SELECT count(*) FROM platform_books WHERE octet_length(name) > char_length(name))
"""


class SeedSummary(BaseModel):
    rows: dict[str, int]
    """True row count per seeded legacy table."""
    anomalies: dict[str, int]
    """Count per planted kind (all zero when clean); `blank_collection_ids` counts every
    book stored with '', including those of `blank_and_primary_same_identity`."""


def _planted(workspaces: int, per: int) -> int:
    return max(1, workspaces // per) if workspaces >= _MIN_PLANTED_SIZE else 0


def _base_rows(workspaces: int) -> dict[str, int]:
    n = workspaces
    return {"platform_workspaces": n, "auth_users": n, "platform_workspace_members": n + n // 2,
            "platform_managed_users": 2 * n, "platform_books": 2 * n, "platform_book_snapshots": 10 * n,
            "platform_audit_events": 3 * n}


def _check_empty_legacy_schema(conn: psycopg.Connection) -> None:
    present = {(t, c) for t, c in conn.execute(
        "SELECT table_name::text, column_name::text FROM information_schema.columns"
        " WHERE table_schema = current_schema()")}
    missing = [f"{t}.{c}" for t, c in _TABLES.items() if (t, c) not in present]
    if missing:
        raise BadInput(f"The database has no complete legacy schema (missing {', '.join(missing)}); "
                       "build it first by applying the legacy migrations 0001..0004.")
    holding = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} FROM {} HAVING count(*) > 0").format(sql.Literal(t), sql.Identifier(t)) for t in _TABLES)
    tables = [t for (t,) in conn.execute(holding)]
    if tables:
        raise BadInput(f"The database already holds legacy rows ({', '.join(tables)}); "
                       "seed an empty legacy schema, for example in a new database.")


def _foreign_keys(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """FK name -> (table, definition) for the FKs of the seeded tables."""
    return {name: (table, definition) for name, table, definition in conn.execute(
        "SELECT conname::text, conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid = ANY(%s::regclass[]) ORDER BY conname", (list(_TABLES),))}


def _create_helpers(conn: psycopg.Connection, workspaces: int, seed: int, clean: bool) -> None:
    for statement in _FUNCTIONS.split(";\n\n"):
        conn.execute(sql.SQL(statement).format(seed=sql.Literal(str(seed)), noisy=sql.Literal(not clean),
                                               workspaces=sql.Literal(workspaces)))


def _fill(conn: psycopg.Connection, workspaces: int, progress: Callable[[str, int, int], None] | None) -> None:
    params = {"n": workspaces, "people": _PEOPLE, "people_fancy": _PEOPLE_FANCY,
              "workspace_names": _WORKSPACE_NAMES, "workspace_names_fancy": _WORKSPACE_NAMES_FANCY,
              "book_names": _BOOK_NAMES, "book_names_fancy": _BOOK_NAMES_FANCY, "event_types": _EVENT_TYPES}
    for table, fill in _FILL.items():
        total = _base_rows(workspaces)[table]
        for lo in range(1, total + 1, _CHUNK):
            hi = min(lo + _CHUNK - 1, total)
            conn.execute(fill, params | {"lo": lo, "hi": hi})
            if progress:
                progress(table, hi, total)


def _insert_orphans(conn: psycopg.Connection, workspaces: int, orphans: dict[str, int]) -> None:
    next_id = _base_rows(workspaces)
    for kind, (table, _, insert) in _ORPHANS.items():
        if orphans[kind]:
            conn.execute(insert + _ORPHAN_ROWS,
                         {"n": workspaces, "kind": kind, "count": orphans[kind], "start": next_id[table]})
            next_id[table] += orphans[kind]


def _drop_foreign_keys(conn: psycopg.Connection, fks: dict[str, tuple[str, str]]) -> None:
    for name, (table, _) in fks.items():
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))


def _restore_foreign_keys(conn: psycopg.Connection, fks: dict[str, tuple[str, str]], broken: set[str]) -> None:
    """The same FKs again: validated, or NOT VALID (checking new rows only) where orphans were planted."""
    for name, (table, definition) in fks.items():
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
            sql.Identifier(table), sql.Identifier(name), sql.SQL(definition),
            sql.SQL(" NOT VALID" if name in broken else "")))


def seed_legacy(conn: psycopg.Connection, workspaces: int = 200, *, seed: int = 1, clean: bool = False,
                progress: Callable[[str, int, int], None] | None = None) -> SeedSummary:
    """Fill an empty legacy schema in one transaction; `progress(table, done, total)` follows the base rows."""
    if workspaces < 1:
        raise BadInput(f"Cannot seed {workspaces} workspaces; give at least 1.")
    planted = {kind: 0 if clean else _planted(workspaces, per) for kind, per in _WORKSPACE_KINDS.items()}
    orphans = {kind: 0 if clean else _planted(workspaces, _ORPHANS_PER) for kind in _ORPHANS}
    large_payloads = 0 if clean else max(1, workspaces // _LARGE_PAYLOAD_PER)
    with conn.transaction():
        _check_empty_legacy_schema(conn)
        # Checking FKs row by row is most of the cost: drop them, and re-add the very same
        # ones at the end, validated in one pass, or NOT VALID where orphans were planted.
        fks = _foreign_keys(conn)
        _drop_foreign_keys(conn, fks)
        _create_helpers(conn, workspaces, seed, clean)
        conn.execute(_PLAN, {"stride": _PLAN_STRIDE, "slots": workspaces // _PLAN_STRIDE,
                             "kinds": list(planted), "counts": list(planted.values())})
        _fill(conn, workspaces, progress)
        for statement in _PLANT:
            conn.execute(statement)
        if large_payloads:
            conn.execute(_LARGE_PAYLOADS, {"n": workspaces, "count": large_payloads})
        _insert_orphans(conn, workspaces, orphans)
        broken = {constraint for kind, (_, constraint, _) in _ORPHANS.items() if orphans[kind]}
        _restore_foreign_keys(conn, fks, broken)
        (deleted_rows,) = conn.execute(_DELETED_ROWS).fetchone()
        (odd_names,) = conn.execute(_NULL_AND_UNICODE_NAMES).fetchone()
        conn.execute(_DROP_FUNCTIONS)
        rows = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
                for t in _TABLES}
        for table in _TABLES:  # planner statistics, as a production database has them
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    anomalies = planted | orphans | {
        "blank_collection_ids": planted["blank_collection_ids"] + planted["blank_and_primary_same_identity"],
        "deleted_rows": deleted_rows, "null_and_unicode_names": odd_names, "large_payloads": large_payloads}
    return SeedSummary(rows=rows, anomalies=anomalies)
