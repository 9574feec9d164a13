"""The §3 backfill rules as SQL: for each v2 table, the rows it should hold, from legacy.

One definition serves the backfill (what to write), the verify (what to expect) and
the recon (what will be reported), so the three can never disagree about a rule.
A source yields the v2 columns plus `issue_kind` ('error': left out; 'warning': lands
but is reported), `issue` and `issue_row` (the legacy row's keys), over the key
range (lo, hi] of the legacy table, aliased `l`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql


def _collection(alias: str) -> str:
    """A book's collection by §3's rule, exactly: BTRIM strips spaces only (a tab or a
    newline stays), from every id, and an id left empty becomes 'primary'."""
    return f"COALESCE(NULLIF(BTRIM({alias}.collection_id), ''), 'primary')"


def _quote(text: str) -> str:
    """A fixed rule text as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Issue:
    kind: str  # 'error' or 'warning'
    text: str
    condition: str


@dataclass(frozen=True)
class Parent:
    """A legacy row a rule needs only to exist: joined as `alias`, whose `id` is NULL when no
    row of `table` has the id in `column` of the row `l` (or of the row joined as `via`: its
    alias and legacy table). Declared apart from the other joins so that a verify can take
    the ids named but absent once (`absent_ids`) instead of looking each one up. `listed_as`:
    the name of that list when it is not %(absent_<table>)s, the caller's own."""

    alias: str
    table: str
    column: str
    via: tuple[str, str] | None = None
    listed_as: str | None = None

    def join(self, listed: bool) -> str:
        value = f"{self.via[0] if self.via else 'l'}.{self.column}"
        if not listed:
            return f"LEFT JOIN {self.table} {self.alias} ON {self.alias}.id = {value}"
        # NULL when the id is on the list or NULL: one row of expressions, which the planner
        # folds into the row (a join to a list ran a plan node per row).
        return (f"CROSS JOIN LATERAL (SELECT CASE WHEN {value} <> ALL(%({self.listed_as or 'absent_' + self.table})s) "
                f"THEN {value} END AS id) {self.alias}")


@dataclass(frozen=True)
class Twins:
    """Of the rows of `table` that are `active` and share `keys` (SQL over the alias `{a}`),
    the oldest (`created_at`, then `id`) is the one; each later one has an older twin
    (`dup.older`). Declared apart from the other joins so that a verify can take the rows
    with an older twin once (`ids`) instead of looking up each row's twins."""

    table: str
    keys: tuple[str, ...]
    active: str

    def _older(self) -> str:
        """Whether the row `l` has an older twin, looked up."""
        same = " AND ".join(f"{k.replace('{a}', 'o')} = {k.replace('{a}', 'l')}" for k in self.keys)
        return (f"{self.active.replace('{a}', 'l')} AND EXISTS (SELECT 1 FROM {self.table} o WHERE {same} "
                f"AND {self.active.replace('{a}', 'o')} AND (o.created_at, o.id) < (l.created_at, l.id))")

    def join(self, listed: bool) -> str:
        if listed:  # read from the list bound as %(twins_<table>)s
            return f"CROSS JOIN LATERAL (SELECT l.id = ANY(%(twins_{self.table})s) AS older) dup"
        return f"CROSS JOIN LATERAL (SELECT {self._older()} AS older OFFSET 0) dup"

    def ids(self) -> sql.Composed:
        """The ids of the rows with an older twin, as one array: the same test over the whole
        table at once, which the server makes one hashed semi-join."""
        return sql.Composed([sql.SQL(f"SELECT coalesce(array_agg(l.id), '{{}}') FROM {self.table} l "
                                     f"WHERE {self._older()}")])


@dataclass(frozen=True)
class TableMap:
    v2: str
    legacy: str
    columns: tuple[str, ...]
    select: str  # the v2 columns as expressions over `l` and the joins, in `columns` order
    joins: str  # joined before `parents`
    issues: tuple[Issue, ...]
    example: tuple[str, ...]  # legacy columns shown for a row with an issue
    depends_on: tuple[str, ...] = ()
    # How a re-run sets a column (SQL over {v2} and EXCLUDED; None leaves it); others take the source.
    # Upstream's rules, so that a re-run never moves a timestamp the API wrote (§3).
    on_rerun: tuple[tuple[str, str | None], ...] = ()
    parents: tuple[Parent, ...] = ()
    twins: Twins | None = None  # joined as `dup`, after `joins`

    def rerun_expression(self, column: str) -> str | None:
        return dict(self.on_rerun).get(column, f"EXCLUDED.{column}")

    def rerun_value(self, column: str, v2: str, source: str) -> str | None:
        """What a re-run sets `column` to, as SQL over the v2 row aliased `v2` and the source
        row aliased `source` (both fixed aliases of the caller's); None: it keeps v2's."""
        rule = self.rerun_expression(column)
        return None if rule is None else rule.replace("{v2}", v2).replace("EXCLUDED.", f"{source}.")

    def _case(self, then: Callable[[Issue], str], empty: str) -> str:
        whens = " ".join(f"WHEN {i.condition} THEN {then(i)}" for i in self.issues)
        return f"CASE {whens} END" if self.issues else empty

    def content_lists(self) -> tuple[str, ...]:
        """The lists (`listed`) whose ids the v2 columns of a row depend on, not only whether it
        lands: its twins when its columns read `dup` (an identity lands deleted behind an older
        twin). Whether a row lands is decided afresh at every look; what it holds comes from
        `l` and these alone."""
        read = set(re.findall(r"\b([a-z_]+)\.", self.select)) - {"l"}
        if read - {"dup"} or (read and not self.twins):
            raise ValueError(f"the columns of {self.v2} read {sorted(read)}: say how a verify tells them unchanged")
        return (f"twins_{self.twins.table}",) if read and self.twins else ()

    def unchanged(self) -> str:
        """Whether the v2 columns of the row `l` are as they were when a verify found it matching:
        no transaction wrote its legacy row since %(reference_xmin)s, the oldest one running when
        that verify began, and it has come onto or gone off no list of `content_lists` since
        (%(changed_<list>)s). Only where %(trusting)s, the bound flag of a range that verify
        compared at its first look."""
        tests = ["%(trusting)s", written_before("l", "reference_xmin")]
        tests += [f"l.id <> ALL(%(changed_{name})s)" for name in self.content_lists()]
        return " AND ".join(tests)

    def source_sql(self, listed: bool = False, unchanged: bool = False) -> str:
        """The source SELECT, columns named like the v2 table; `{range}` marks the key filter;
        `listed`: the parents read from lists of absent ids (`Parent.join`); `unchanged`: and
        a column of that name (`unchanged`)."""
        example = "jsonb_build_object(" + ", ".join(f"'{c}', l.{c}" for c in self.example) + ")"
        names = ", ".join((*self.columns, "issue_kind", "issue", "issue_row", *(["unchanged"] if unchanged else [])))
        return (
            f"SELECT * FROM (SELECT {self.select}, "
            f"{self._case(lambda i: _quote(i.kind), 'NULL::text')}, "
            f"{self._case(lambda i: _quote(i.text), 'NULL::text')}, "
            f"{self._case(lambda i: example, 'NULL::jsonb')} "
            f"{', ' + self.unchanged() if unchanged else ''} "
            f"FROM {self.legacy} l {self.joins} {self.twins.join(listed) if self.twins else ''} "
            f"{' '.join(p.join(listed) for p in self.parents)} "
            f"WHERE {{range}}) AS src({names})"
        )


# §3's re-run rules for the timestamps.
_KEEP_CREATED = ("created_at", None)
_LATER_UPDATED = ("updated_at", "GREATEST({v2}.updated_at, EXCLUDED.updated_at)")
_EARLIER_CREATED = ("created_at", "LEAST({v2}.created_at, EXCLUDED.created_at)")

ACCOUNTS = TableMap(
    v2="accounts", legacy="platform_workspaces",
    columns=("id", "name", "status", "created_at", "updated_at"),
    select="l.id, l.name, 'active'::text, l.created_at, l.updated_at",
    joins="", issues=(), example=("id", "name"),
    on_rerun=(("status", None), _KEEP_CREATED, _LATER_UPDATED),
)

ACCOUNT_MEMBERS = TableMap(
    v2="account_members", legacy="platform_workspace_members",
    columns=("id", "account_id", "user_id", "role", "status", "created_at", "updated_at"),
    select="l.id, l.workspace_id, l.user_id, l.role, l.status, l.created_at, l.updated_at",
    joins="",
    parents=(Parent("w", "platform_workspaces", "workspace_id"), Parent("u", "auth_users", "user_id")),
    issues=(Issue("error", "workspace missing", "w.id IS NULL"),
            Issue("error", "user missing", "u.id IS NULL")),
    example=("id", "workspace_id", "user_id"),
    depends_on=("accounts",),
    on_rerun=(_KEEP_CREATED, _LATER_UPDATED),
)

# Of the active rows sharing a fingerprint in a workspace, the oldest stays; later ones land deleted.
IDENTITIES = TableMap(
    v2="identities", legacy="platform_managed_users",
    columns=("id", "account_id", "display_name", "avatar_public_id", "user_key", "profile_id",
             "identity_public_key", "identity_key_fingerprint", "status", "created_at", "updated_at"),
    select="l.id, l.workspace_id, l.display_name, l.avatar_public_id, l.user_key, l.profile_id, "
           "l.identity_public_key, l.identity_key_fingerprint, "
           "CASE WHEN dup.older THEN 'deleted' ELSE l.status END, l.created_at, l.updated_at",
    joins="",
    twins=Twins("platform_managed_users", ("{a}.workspace_id", "{a}.identity_key_fingerprint"),
                "{a}.status <> 'deleted' AND {a}.identity_key_fingerprint IS NOT NULL"),
    parents=(Parent("w", "platform_workspaces", "workspace_id"),),
    issues=(Issue("error", "account missing", "w.id IS NULL"),
            Issue("warning", "duplicate active fingerprint: landed as deleted", "dup.older")),
    example=("id", "workspace_id", "identity_key_fingerprint", "status", "created_at"),
    depends_on=("accounts",),
    on_rerun=(_KEEP_CREATED, _LATER_UPDATED),
)

# A book lands when its managed user exists, landed, and is of the same workspace; of the
# active books of one identity that share a collection after the collection rule, the oldest lands.
PIXBOOKS = TableMap(
    v2="pixbooks", legacy="platform_books",
    columns=("id", "account_id", "identity_id", "collection_id", "name", "status", "current_version",
             "created_at", "updated_at"),
    select=f"l.id, l.workspace_id, l.managed_user_id, {_collection('l')}, l.name, l.status, "
           "l.current_version, l.created_at, l.updated_at",
    joins="LEFT JOIN platform_managed_users mu ON mu.id = l.managed_user_id",
    twins=Twins("platform_books", ("{a}.workspace_id", "{a}.managed_user_id", _collection("{a}")),
                "{a}.status <> 'deleted'"),
    parents=(Parent("w", "platform_workspaces", "workspace_id", via=("mu", "platform_managed_users")),),
    issues=(Issue("error", "identity missing", "mu.id IS NULL"),
            Issue("error", "identity did not land (its account is missing)", "w.id IS NULL"),
            Issue("error", "identity belongs to another account", "mu.workspace_id <> l.workspace_id"),
            Issue("error", "another active book of this identity has the same collection", "dup.older")),
    example=("id", "workspace_id", "managed_user_id", "collection_id", "status", "created_at"),
    depends_on=("identities",),
    on_rerun=(_KEEP_CREATED, _LATER_UPDATED),
)

# A snapshot follows its book: it lands when the book is among the landed ones.
PIXBOOK_SNAPSHOTS = TableMap(
    v2="pixbook_snapshots", legacy="platform_book_snapshots",
    columns=("id", "pixbook_id", "version", "cipher_object_key", "cipher_sha256", "wrapped_dek",
             "ledger_head", "payload_json", "created_at"),
    select="l.id, l.book_id, l.version, l.cipher_object_key, l.cipher_sha256, l.wrapped_dek, "
           "l.ledger_head, l.payload_json, l.created_at",
    joins="",
    # The books that landed: a relation the caller gives; in a verify's list, those that did not.
    parents=(Parent("p", "{landed_books}", "book_id", listed_as="not_landing"),),
    issues=(Issue("error", "its book did not land", "p.id IS NULL"),),
    example=("id", "book_id", "version"),
    depends_on=("pixbooks",),
    on_rerun=(_EARLIER_CREATED,),
)

AUDIT_EVENTS = TableMap(
    v2="audit_events", legacy="platform_audit_events",
    columns=("id", "account_id", "actor_user_id", "event_type", "payload", "created_at"),
    select="l.id, l.workspace_id, l.actor_user_id, l.event_type, l.payload, l.created_at",
    joins="",
    parents=(Parent("w", "platform_workspaces", "workspace_id"), Parent("u", "auth_users", "actor_user_id")),
    issues=(Issue("error", "account missing", "l.workspace_id IS NOT NULL AND w.id IS NULL"),
            Issue("error", "actor user missing", "l.actor_user_id IS NOT NULL AND u.id IS NULL")),
    example=("id", "workspace_id", "actor_user_id"),
    depends_on=("accounts",),
    on_rerun=(_EARLIER_CREATED,),
)

TABLES: tuple[TableMap, ...] = (ACCOUNTS, ACCOUNT_MEMBERS, IDENTITIES, AUDIT_EVENTS, PIXBOOKS, PIXBOOK_SNAPSHOTS)
BY_NAME = {t.v2: t for t in TABLES}


def written_before(alias: str, param: str) -> str:
    """Whether the row `alias` was last written by a transaction older than the xid8 bound as
    %(param)s (a snapshot's xmin: every such transaction had ended). xmin is 32-bit, so
    compared by age; the backfill's idle re-run and a trusting verify both tell rows apart so."""
    return f"age({alias}.xmin) > age((%({param})s::text::bigint %% 4294967296)::text::xid)"


def range_filter(alias: str, lo: str | None, hi: str | None) -> sql.Composable:
    """`alias.id` in (lo, hi], bound as %(lo)s and %(hi)s; an open end is left out so
    that the primary key index serves the range."""
    column = sql.SQL("{}.id").format(sql.Identifier(alias))
    parts = []
    if lo is not None:
        parts.append(sql.SQL("{} > %(lo)s").format(column))
    if hi is not None:
        parts.append(sql.SQL("{} <= %(hi)s").format(column))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def ids_filter(alias: str) -> sql.Composable:
    """`alias.id` among the bound list %(ids)s."""
    return sql.SQL("{}.id = ANY(%(ids)s)").format(sql.Identifier(alias))


_PIXBOOKS = sql.Identifier("pixbooks")  # the books that land, unless a caller built its own


def source_query(table: TableMap, where: sql.Composable, landed_books: sql.Composable = _PIXBOOKS, *,
                 listed: bool = False, unchanged: bool = False) -> sql.Composed:
    """The source rows of `table` whose legacy row (alias `l`) passes `where`;
    `landed_books` is the relation whose `id`s are the books that landed; `listed`: the
    parents read from the lists of absent ids bound as %(absent_<table>)s (`absent_ids`);
    `unchanged`: with the column `TableMap.unchanged`."""
    # Braces in the rules' SQL are literal; only the two placeholders are ours.
    template = (table.source_sql(listed, unchanged).replace("{", "{{").replace("}", "}}")
                .replace("{{landed_books}}", "{landed}").replace("{{range}}", "{where}"))
    return sql.SQL(template).format(where=where, landed=landed_books)


# The legacy tables some rule needs a row of to exist (each a `Parent` with a list of its own).
PARENT_TABLES = tuple(sorted({p.table for t in TABLES for p in t.parents if p.listed_as is None}))


def named_but_absent(parent: str, named: Iterable[tuple[str, str]]) -> sql.Composed:
    """The ids the (table, column)s `named` hold that no row of `parent` has, as one array."""
    return sql.SQL("SELECT coalesce(array_agg(DISTINCT id), '{{}}') FROM ({}) a(id)").format(
        sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT c.{col} FROM {child} c WHERE c.{col} IS NOT NULL "
                    "AND NOT EXISTS (SELECT 1 FROM {parent} x WHERE x.id = c.{col})").format(
                col=sql.Identifier(column), child=sql.Identifier(child), parent=sql.Identifier(parent))
            for child, column in dict.fromkeys(named)))


def absent_ids(parent: str) -> sql.Composed:
    """The ids legacy rows name as a `Parent` in `parent` that no row of it has, as one array."""
    return named_but_absent(parent, ((p.via[1] if p.via else t.legacy, p.column)
                                     for t in TABLES for p in t.parents if p.table == parent))


def own_columns(table: TableMap, where: sql.Composable) -> sql.Composed:
    """The v2 columns of `table`'s legacy rows passing `where` (alias `l`), from the legacy row
    alone: without the rules' joins and issues, which for the books decide only whether a row
    lands, never what it holds. Only for a table whose columns read nothing but `l`."""
    if set(re.findall(r"\b([a-z_]+)\.", table.select)) != {"l"}:
        raise ValueError(f"the columns of {table.v2} read more than its legacy row")
    return sql.SQL("SELECT * FROM (SELECT {} FROM {} l WHERE {}) AS own({})").format(
        sql.SQL(table.select), sql.Identifier(table.legacy), where,
        sql.SQL(", ").join(map(sql.Identifier, table.columns)))


def column_types(conn: psycopg.Connection, table: str) -> tuple[tuple[str, str], ...]:
    """(column, type) of a v2 table from the catalog, in table order."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,)).fetchall()
    return tuple((name, kind) for name, kind in rows)


# Hash functions of the types the v2 tables use, each consistent with its type's equality
# and present on every supported server (Postgres 15 on; timestamptz_hash_extended is 18's
# only, so a timestamptz is hashed as the UTC timestamp it stands for, which is one-to-one).
# A NULL is hashed as a stand-in value under another seed (see row_hash). jsonb is not among
# them: its own hash drops a number's sign ({"a": 3} and {"a": -3} collide), so it goes by its
# text, which jsonb makes canonical (keys sorted, one spelling of each document but for a
# number's scale: 1.0 and 1 differ there, and a re-run rewrites v2 with legacy's spelling).
_TYPED_HASHES = {
    "bigint": "hashint8extended(coalesce({col}, 0), {seed})",
    "integer": "hashint8extended(coalesce({col}, 0), {seed})",
    "smallint": "hashint8extended(coalesce({col}, 0), {seed})",
    "timestamp with time zone":
        "timestamp_hash_extended(coalesce({col} AT TIME ZONE 'UTC', 'epoch'), {seed})",
    "text": "hashtextextended(coalesce({col}, ''), {seed})",
}
_BY_TEXT = "hashtextextended(coalesce({col}::text, ''), {seed})"
_NULL_SEED = 0x4E554C4C  # "NULL"


def compared_by_value(kind: str) -> bool:
    """Whether columns of type `kind` are hashed and compared by value; any other type is
    hashed and compared by its text (json keeps its key order there, as it should)."""
    return kind in _TYPED_HASHES


def row_hash(alias: str, columns: tuple[tuple[str, str], ...]) -> sql.Composable:
    """A 64-bit hash of a row, chained column by column through typed hash functions
    (several times faster than hashing the row's text); equal only for rows that are
    equal column by column (a NULL equals only a NULL), but for 64-bit chance."""
    expr: sql.Composable = sql.SQL("0::bigint")
    for name, kind in columns:
        col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        # A NULL hashes as its stand-in under the seed xor _NULL_SEED: no value hashes like a
        # NULL by construction (a sentinel value would), only by 64-bit chance. The chain so
        # far appears once per column, so the expression grows linearly.
        seed = sql.SQL("({}) # CASE WHEN {} IS NULL THEN {}::bigint ELSE 0 END").format(
            expr, col, sql.Literal(_NULL_SEED))
        expr = sql.SQL(_TYPED_HASHES.get(kind, _BY_TEXT)).format(col=col, seed=seed)
    return expr
