"""Deterministic legacy data for the demo and the tests, generated set-wise in the server.

`workspaces` sets the scale; the other tables follow the production ratios
(1.5 members, 2 managed users, 2 books and 10 snapshots per workspace, 3 audit events).
"""

from __future__ import annotations

import psycopg

_SEED_SQL = """
INSERT INTO auth_users (id, email, name, created_at, updated_at)
SELECT 'user_' || g, 'user' || g || '@example.test', 'User ' || g,
       timestamptz '2025-01-01' + g * interval '1 minute', timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, %(n)s) g;

INSERT INTO platform_workspaces (id, name, created_at, updated_at)
SELECT 'ws_' || g, 'Workspace ' || g,
       timestamptz '2025-01-01' + g * interval '1 minute', timestamptz '2025-01-02' + g * interval '1 minute'
FROM generate_series(1, %(n)s) g;

INSERT INTO platform_workspace_members (id, workspace_id, user_id, role, status)
SELECT 'mem_' || g, 'ws_' || g, 'user_' || g, 'owner', 'active' FROM generate_series(1, %(n)s) g
UNION ALL
SELECT 'mem_x' || g, 'ws_' || g, 'user_' || (g %% %(n)s + 1), 'member', 'active'
FROM generate_series(1, %(n)s / 2) g;

INSERT INTO platform_managed_users (id, workspace_id, display_name, user_key, status,
    profile_id, identity_public_key, identity_key_fingerprint, created_at)
SELECT 'mu_' || g, 'ws_' || ((g - 1) / 2 + 1), 'Identity ' || g, 'key_' || g, 'active',
       'profile_' || g, 'pk_' || md5(g::text), 'fp_' || md5(g::text),
       timestamptz '2025-02-01' + g * interval '1 second'
FROM generate_series(1, 2 * %(n)s) g;

INSERT INTO platform_books (id, workspace_id, managed_user_id, name, status, current_version, collection_id)
SELECT 'book_' || g, 'ws_' || ((g - 1) / 2 + 1), 'mu_' || g, 'Book ' || g, 'active', 10, 'primary'
FROM generate_series(1, 2 * %(n)s) g;

INSERT INTO platform_book_snapshots (id, book_id, version, cipher_object_key, cipher_sha256,
    wrapped_dek, ledger_head, payload_json)
SELECT 'snap_' || b || '_' || v, 'book_' || b, v, 'objects/' || b || '/' || v, md5(b || ':' || v),
       'dek_' || md5(v || ':' || b), 'head_' || v,
       jsonb_build_object('book', b, 'version', v, 'pad', repeat('x', 120))
FROM generate_series(1, 2 * %(n)s) b, generate_series(1, 5) v;

INSERT INTO platform_audit_events (id, workspace_id, actor_user_id, event_type, payload)
SELECT 'evt_' || g, 'ws_' || ((g - 1) / 3 + 1), 'user_' || ((g - 1) / 3 + 1), 'book.saved',
       jsonb_build_object('n', g)
FROM generate_series(1, 3 * %(n)s) g;
"""


def seed_legacy(conn: psycopg.Connection, workspaces: int = 200) -> dict[str, int]:
    """Fill an empty legacy schema; returns the row count per table."""
    if workspaces < 1:
        raise ValueError("workspaces must be at least 1")
    with conn.transaction():
        # Bound parameters allow one statement per execute.
        for statement in filter(str.strip, _SEED_SQL.split(";\n")):
            conn.execute(statement, {"n": workspaces})
    tables = ("auth_users", "platform_workspaces", "platform_workspace_members",
              "platform_managed_users", "platform_books", "platform_book_snapshots",
              "platform_audit_events")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
