"""The §4 report shapes: recon, backfill and verify (the API read check is a verify, and
reads upstream's read check output too).

The models read reports from either producer (the API's scripts or this console) and
keep every field they do not know, so a report loaded and written back says exactly
what it said.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from ..errors import BadInput

ReportKind = Literal["recon", "backfill", "verify", "verify-reads"]


# --- The §4 shapes -------------------------------------------------------------------


class _Open(BaseModel):
    """A §4 object: known fields typed, unknown ones kept and written back as they came."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    # Fields with a default that a source without them must not gain when written back.
    _ABSENT_STAYS_ABSENT: ClassVar[frozenset[str]] = frozenset()
    _source_keys: tuple[str, ...] = PrivateAttr(default=())
    # Fields the reader filled in (an upstream read check's time, from its file): never written back.
    _inferred: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_key_order(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._source_keys = tuple(data)
        return model

    @model_serializer(mode="wrap")
    def _as_read(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        for name, field in type(self).model_fields.items():
            # An optional field the source did not have must not come back as `null`.
            absent = name not in self.model_fields_set and (
                getattr(self, name) is None or name in self._ABSENT_STAYS_ABSENT)
            if absent or name in self._inferred:
                data.pop(field.alias if info.by_alias and field.alias else name, None)
        if info.by_alias:
            # The source's key order, so a file written back is the same file, not a reshuffle.
            data = {**{key: data[key] for key in self._source_keys if key in data}, **data}
        return data


def js_iso(value: datetime) -> str:
    """A timestamp as JavaScript's `toISOString()` writes it: UTC, milliseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unique(keys: list[str], what: str) -> None:
    # Diffs and summaries go item by item; two items with one identity would be ambiguous.
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"two {what} are both named {key!r}")
        seen.add(key)


class _Report(_Open):
    KIND: ClassVar[ReportKind]

    ok: StrictBool
    generated_at: AwareDatetime = Field(alias="generatedAt")
    _stamp: tuple[str, datetime] | None = PrivateAttr(default=None)

    @field_validator("generated_at", mode="before")
    @classmethod
    def _stamp_is_text(cls, value: Any) -> Any:
        # Pydantic would take a number for epoch seconds; reports always hold ISO text.
        if not isinstance(value, (str, datetime)):
            raise ValueError("should be an ISO 8601 timestamp such as 2026-02-23T10:11:12.345Z")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _keep_stamp_text(cls, data: Any, handler: Any) -> Any:
        report = handler(data)
        if isinstance(data, dict):
            text = data.get("generatedAt", data.get("generated_at"))
            if isinstance(text, str):
                report._stamp = (text, report.generated_at)
        return report

    @field_serializer("generated_at", when_used="json")
    def _write_stamp(self, value: datetime) -> str:
        # The text as read while the value is unchanged, so a file round-trips byte for byte.
        if self._stamp is not None and self._stamp[1] == value:
            return self._stamp[0]
        return js_iso(value)

    def item_keys(self) -> tuple[str, list[str]]:
        """What its items (stages, checks) are called, and each one's name; a recon has none."""
        return "items", []

    @model_validator(mode="after")
    def _items_unique(self) -> Self:
        # Diffs and summaries go item by item; two items with one identity would be ambiguous.
        what, keys = self.item_keys()
        _unique(keys, what)
        return self

    @property
    def clean(self) -> bool:
        """What the body itself says, whatever `ok` claims."""
        return True

    @property
    def passed(self) -> bool:
        # Gates read this, so a hand-edited `ok: true` over errors or failed checks does not pass.
        return self.ok and self.clean


class ReconColumn(_Open):
    column_name: str
    data_type: str
    is_nullable: str
    column_default: str | None


class ReconConstraint(_Open):
    constraint_name: str
    constraint_type: str
    columns: str | None  # null for constraints without key columns (CHECK, NOT NULL)


def _all_of(value: Any, kind: type) -> bool:
    return isinstance(value, dict) and all(isinstance(item, kind) for item in value.values())


class ReconTable(_Open):
    """A legacy table's true size (the console's recon)."""

    rows: StrictInt
    total_bytes: StrictInt = Field(alias="totalBytes")
    v2_rows: StrictInt | None = Field(default=None, alias="v2Rows")


class ReconAnomaly(_Open):
    """An error or warning class the backfill will report for a table, with its true count."""

    kind: str
    count: StrictInt
    rows: list[Any] = []


class ReconEstimate(_Open):
    """How long the backfill should take, and how that was found (seconds None: not estimated)."""

    seconds: float | None
    method: str
    rows_per_second: float | None = Field(default=None, alias="rowsPerSecond")
    serial_seconds: float | None = Field(default=None, alias="serialSeconds")
    catch_up_seconds: float | None = Field(default=None, alias="catchUpSeconds")
    sample_rows: StrictInt | None = Field(default=None, alias="sampleRows")
    workers: StrictInt | None = None
    tables: dict[str, dict[str, Any]] | None = None


class ReconReport(_Report):
    KIND: ClassVar[Literal["recon"]] = "recon"

    auth_user_id_type: str = Field(alias="authUserIdType")
    discovered_better_auth_tables: list[str] = Field(alias="discoveredBetterAuthTables")
    target_tables: list[str] = Field(alias="targetTables")
    schemas: dict[str, list[ReconColumn]]
    constraints: dict[str, list[ReconConstraint]]
    mapping: dict[str, str]
    # The console's own fields (absent from the API's recon). Typed as the console writes them;
    # a hand-made file's odd value is kept as it came (and written back so), never refused.
    database: str | Any | None = Field(default=None, union_mode="left_to_right")
    server_version: str | Any | None = Field(default=None, alias="serverVersion", union_mode="left_to_right")
    missing_tables: list[str] | Any | None = Field(default=None, alias="missingTables", union_mode="left_to_right")
    v2_tables: dict[str, bool] | Any | None = Field(default=None, alias="v2Tables", union_mode="left_to_right")
    indexes: dict[str, list[dict[str, Any]]] | Any | None = Field(default=None, union_mode="left_to_right")
    tables: dict[str, ReconTable] | Any | None = Field(default=None, union_mode="left_to_right")
    anomalies: dict[str, dict[str, ReconAnomaly]] | Any | None = Field(default=None, union_mode="left_to_right")
    problems: list[dict[str, Any]] | Any | None = Field(default=None, union_mode="left_to_right")
    estimate: ReconEstimate | Any | None = Field(default=None, union_mode="left_to_right")
    duration_seconds: float | Any | None = Field(default=None, alias="durationSeconds", union_mode="left_to_right")
    read_only: StrictBool | Any | None = Field(default=None, alias="readOnly", union_mode="left_to_right")
    predicted_errors: StrictInt | Any | None = Field(default=None, alias="predictedErrors", union_mode="left_to_right")

    # The console's fields where they are as it writes them; empty where a file's are odd.
    @property
    def sizes(self) -> dict[str, ReconTable]:
        return cast("dict[str, ReconTable]", self.tables) if _all_of(self.tables, ReconTable) else {}

    @property
    def found(self) -> dict[str, dict[str, ReconAnomaly]]:
        anomalies = self.anomalies
        ok = isinstance(anomalies, dict) and all(_all_of(issues, ReconAnomaly) for issues in anomalies.values())
        return cast("dict[str, dict[str, ReconAnomaly]]", anomalies) if ok else {}

    @property
    def estimated(self) -> ReconEstimate | None:
        return self.estimate if isinstance(self.estimate, ReconEstimate) else None

    @property
    def missing(self) -> list[str]:
        missing = self.missing_tables
        return missing if isinstance(missing, list) and all(isinstance(m, str) for m in missing) else []


class BackfillStage(_Open):
    stage: str
    old_count: StrictInt = Field(alias="oldCount")
    before_count: StrictInt = Field(alias="beforeCount")
    after_count: StrictInt = Field(alias="afterCount")
    affected_rows: StrictInt = Field(alias="affectedRows")
    # The console's own fields (absent from the API's backfill).
    old_table: str | None = Field(default=None, alias="oldTable")
    inserted: StrictInt | None = None
    updated: StrictInt | None = None
    unchanged: StrictInt | None = None
    error_rows: StrictInt | None = Field(default=None, alias="errorRows")
    warning_rows: StrictInt | None = Field(default=None, alias="warningRows")
    deleted_in_legacy: StrictInt | None = Field(default=None, alias="deletedInLegacy")
    retried_transactions: StrictInt | None = Field(default=None, alias="retriedTransactions")
    duration_seconds: float | None = Field(default=None, alias="durationSeconds")
    rows_per_second: float | None = Field(default=None, alias="rowsPerSecond")


class BackfillIssue(_Open):
    """An error or warning group: what went wrong in a stage, with example rows."""

    stage: str
    rows: list[Any]
    count: StrictInt | None = None  # the console's true count; `rows` holds at most 100 examples

    @property
    def row_count(self) -> int:
        # Upstream caps example rows at 100; a `count`/`rowCount` beside them is the true figure.
        if self.count is not None:
            return self.count
        value = (self.model_extra or {}).get("rowCount")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return len(self.rows)


class BackfillError(BackfillIssue):
    error: str

    @property
    def message(self) -> str:
        return self.error


class BackfillWarning(BackfillIssue):
    warning: str

    @property
    def message(self) -> str:
        return self.warning


class BackfillReport(_Report):
    KIND: ClassVar[Literal["backfill"]] = "backfill"

    stages: list[BackfillStage]
    errors: list[BackfillError]
    warnings: list[BackfillWarning]
    # The console's own fields (absent from the API's backfill).
    run_id: StrictInt | None = Field(default=None, alias="runId")
    resumed: StrictBool | None = None
    cancelled: StrictBool | None = None
    passes: StrictInt | None = None
    duration_seconds: float | None = Field(default=None, alias="durationSeconds")
    longest_transaction_seconds: float | None = Field(default=None, alias="longestTransactionSeconds")
    # 'table: issue' -> rows an operator accepted as lost (still left out, and reported above)
    accepted_losses: dict[str, StrictInt] | None = Field(default=None, alias="acceptedLosses")

    @model_validator(mode="before")
    @classmethod
    def _derive_ok(cls, data: Any) -> Any:
        # §4 defines ok as `errors.length == 0`; a file without `ok` gets exactly that.
        if isinstance(data, dict) and "ok" not in data and isinstance(data.get("errors"), list):
            return {**data, "ok": not data["errors"]}
        return data

    def item_keys(self) -> tuple[str, list[str]]:
        return "stages", [stage.stage for stage in self.stages]

    @property
    def clean(self) -> bool:
        return not self.errors


# The details each of the console's check types writes beside the common fields, flat as
# upstream's checks are; `VerifyCheck.detail` reads only these, so a misspelt name fails loudly.
# What a stage's rule sets aside (counted and shown, never failed): work.verify.SET_ASIDE, with the rule's name.
SET_ASIDE_DETAILS = frozenset({"rule", "timestampsSinceBackfill", "legacyAuditSinceBackfill", "v2AuditSinceBackfill",
                               "newInV2", "changedInV2", "removedInV2"})
CHECK_DETAILS: dict[str, frozenset[str]] = {
    "count": frozenset({"leftOutByBackfill", "leftOutByIssue", "landedWithWarning", "missingRows", "extraRows",
                        "backfillRun", "reportedByBackfill", "unreportedMissing", "acceptedAsLost",
                        "acceptedByIssue"}) | SET_ASIDE_DETAILS,
    "content": frozenset({"compared", "different", "expectedLeftOut", "differentByColumn", "ranges",
                          "rangesRechecked", "rangesSettled", "seconds", "longestRangeSeconds", "missingInV2",
                          "extraInV2", "rowsInFlight", "rowsUnchanged"}) | SET_ASIDE_DETAILS,
    "reconcile": frozenset({"expected", "actual", "legacyDeleted", "forcedByFingerprintRule"}),
    "integrity": frozenset({"count", "rowCount", "rows", "warning", "alsoOnIdentitiesDeletedInLegacy", "accounts",
                            "seconds"}),
    "sample": frozenset({"sampleSize", "sampled", "accountsWithMismatch", "expectedIdentities", "expectedPixbooks",
                         "count", "accounts", "rows", "identities", "identitiesWithMismatch", "seconds",
                         "firstLookCount", "changedInV2"}),
    "repair": frozenset({"requested", "repaired", "inserted", "updated", "leftOutByRules", "failed", "failedRows",
                         "foundMissing", "foundDifferent", "extraLeftAlone", "stillDifferent", "rechecked",
                         "keptNewerInV2"}),
    "run": frozenset({"message"}),
    "reads": frozenset({"store", "accountIdsMatch", "aliasAccepted", "status", "profileId", "collectionId",
                        "accountId", "workspaceId", "bookId", "actualCount", "mismatches", "mismatchCount",
                        "cookieNames", "userCount", "bookCount", "pixbookResolved"}),
}


class VerifyCheck(_Open):
    """One check; `type` is count, integrity, sample or reconcile upstream, the console adds more."""

    type: str
    ok: StrictBool
    table: str | None = None
    old_table: str | None = Field(default=None, alias="oldTable")
    old_count: StrictInt | None = Field(default=None, alias="oldCount")
    new_count: StrictInt | None = Field(default=None, alias="newCount")
    name: str | None = None
    # The console's own fields, common to its checks; each check type's details stay open
    # (CHECK_DETAILS names them, so the console's own reports are held to them).
    examples: list[Any] | dict[str, Any] | None = None
    error: str | None = None
    latency_ms: float | None = Field(default=None, alias="latencyMs")
    expected_count: StrictInt | None = Field(default=None, alias="expectedCount")

    @model_validator(mode="after")
    def _identified(self) -> VerifyCheck:
        if not (self.name or self.table):
            raise ValueError("a check needs a name or a table")
        return self

    def detail(self, name: str) -> Any:
        """One of this check type's details (None when absent); a name the type does not write is a bug."""
        if name not in CHECK_DETAILS.get(self.type, frozenset()):
            raise KeyError(f"a {self.type} check has no detail {name!r}")
        return (self.model_extra or {}).get(name)

    @property
    def key(self) -> str:
        # Upstream's own label (`PASS name`), so both tools name a check the same way.
        return self.name or f"{self.type}:{self.table}"


class VerifyReport(_Report):
    KIND: ClassVar[Literal["verify", "verify-reads"]] = "verify"

    checks: list[VerifyCheck]
    # The console's own fields (absent from the API's verify).
    cancelled: StrictBool | None = None
    duration_seconds: float | None = Field(default=None, alias="durationSeconds")
    options: dict[str, Any] | None = None
    # When the verify began whose findings this one trusted where nothing changed since, and
    # what the next verify may trust of this one (work.verify._Trust).
    unchanged_since: str | None = Field(default=None, alias="unchangedSince")
    reference: dict[str, Any] | None = None

    def item_keys(self) -> tuple[str, list[str]]:
        return "checks", [check.key for check in self.checks]

    @property
    def clean(self) -> bool:
        return all(check.ok for check in self.checks)


# Upstream's read check prints exactly these (SYSTEM.md §6), and the console's keeps them.
UPSTREAM_READS_FIELDS = ("ok", "accountId", "userCount", "bookCount", "pixbookResolved")
READS_SUMMARY = "read_check"


class ReadsReport(VerifyReport):
    """The API read check: the console's (its `reads` checks beside upstream's figures) or
    upstream's own output, exactly `{ok, accountId, userCount, bookCount, pixbookResolved}`,
    which has no checks and no time (a file's modification time stands in, never written back)."""

    KIND: ClassVar[Literal["verify", "verify-reads"]] = "verify-reads"
    _ABSENT_STAYS_ABSENT: ClassVar[frozenset[str]] = frozenset({"checks"})

    checks: list[VerifyCheck] = []
    account_id: str | None = Field(default=None, alias="accountId")
    user_count: StrictInt | None = Field(default=None, alias="userCount")
    book_count: StrictInt | None = Field(default=None, alias="bookCount")
    pixbook_resolved: StrictBool | None = Field(default=None, alias="pixbookResolved")
    # The console's own fields (absent from upstream's output).
    api: str | None = None
    read_store: str | None = Field(default=None, alias="readStore")
    flags_from: str | None = Field(default=None, alias="flagsFrom")
    alias_accepted: StrictBool | None = Field(default=None, alias="aliasAccepted")
    skipped: dict[str, str] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _time_from_file(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        written = (info.context or {}).get("written_at")
        if isinstance(data, dict) and not {"generatedAt", "generated_at"} & data.keys() and written is not None:
            report = handler({**data, "generatedAt": written})
            report._inferred = frozenset({"generated_at"})
            return report
        return handler(data)

    def summary_check(self) -> VerifyCheck:
        """Upstream's figures as one check, so either producer's reports compare on them."""
        return VerifyCheck.model_validate({
            "type": "reads", "name": READS_SUMMARY, "ok": self.ok, "accountId": self.account_id,
            "userCount": self.user_count, "bookCount": self.book_count, "pixbookResolved": self.pixbook_resolved})


Report = ReconReport | BackfillReport | VerifyReport
MODELS: dict[str, type[_Report]] = {
    "recon": ReconReport, "backfill": BackfillReport, "verify": VerifyReport,
    "verify-reads": ReadsReport,
}


def report_kind(report: Report) -> ReportKind:
    return report.KIND


def dump_report(report: Report) -> str:
    """The report as upstream writes it: JSON by field alias, indented 2, a final newline."""
    body = report.model_dump(mode="json", by_alias=True)
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


# --- Reading -------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = _where(first["loc"])
    if first["type"] == "missing":
        text = f"field {where} is missing"
    else:
        text = first["msg"].removeprefix("Value error, ")
        if isinstance(first["input"], (str, int, float, bool)):
            text += f" (got {json.dumps(first['input'])[:40]})"
        text = f"field {where}: {text}" if where else text
    return text + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")


def _reads(data: dict[str, Any]) -> bool:
    """A read check's report: the console's (reads checks, its read store) or upstream's output."""
    checks = data.get("checks")
    if isinstance(checks, list):
        return "readStore" in data or any(isinstance(c, dict) and c.get("type") == "reads" for c in checks)
    return "checks" not in data and bool({"userCount", "bookCount", "pixbookResolved"} & data.keys())


def _detect(data: dict[str, Any]) -> type[_Report] | None:
    if _reads(data):
        return ReadsReport
    if "checks" in data:
        return VerifyReport
    if "stages" in data:
        return BackfillReport
    if "schemas" in data or "mapping" in data:
        return ReconReport
    return None


def parse_report(data: Any, source: str, model: type[_Report] | None = None, *,
                 written_at: datetime | None = None) -> Report:
    """`data` (decoded JSON) as its report model, or one BadInput sentence naming `source`;
    `written_at` (a file's time) dates an upstream read check, which carries no time itself."""
    if not isinstance(data, dict):
        raise BadInput(f"{source} is JSON but not an object, so it is not a report.")
    model = model or _detect(data)
    if model is None:
        raise BadInput(f"{source} is not a recon, backfill or verify report: it has none of "
                       "`checks`, `stages`, `schemas` or `mapping` (nor a read check's `userCount`).")
    try:
        return model.model_validate(data, context={"written_at": written_at})  # type: ignore[return-value]
    except ValidationError as exc:
        raise BadInput(f"{source} is not a valid {model.KIND} report: {_first_problem(exc)}.") from None


