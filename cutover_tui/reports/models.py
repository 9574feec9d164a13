"""The §4 report shapes: recon, backfill and verify (the API read check is a verify).

The models read reports from either producer (the API's scripts or this console) and
keep every field they do not know, so a report loaded and written back says exactly
what it said.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

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
    _source_keys: tuple[str, ...] = PrivateAttr(default=())

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
            if getattr(self, name) is None and name not in self.model_fields_set:
                data.pop(field.alias if info.by_alias and field.alias else name, None)
        if info.by_alias:
            # The source's key order, so a file written back is the same file, not a reshuffle.
            data = {**{key: data[key] for key in self._source_keys if key in data}, **data}
        return data


def js_iso(value: datetime) -> str:
    """A timestamp as JavaScript's `toISOString()` writes it: UTC, milliseconds, `Z`."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Report(_Open):
    KIND: ClassVar[Literal["recon", "backfill", "verify"]]

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


class ReconReport(_Report):
    KIND: ClassVar[Literal["recon"]] = "recon"

    auth_user_id_type: str = Field(alias="authUserIdType")
    discovered_better_auth_tables: list[str] = Field(alias="discoveredBetterAuthTables")
    target_tables: list[str] = Field(alias="targetTables")
    schemas: dict[str, list[ReconColumn]]
    constraints: dict[str, list[ReconConstraint]]
    mapping: dict[str, str]


class BackfillStage(_Open):
    stage: str
    old_count: StrictInt = Field(alias="oldCount")
    before_count: StrictInt = Field(alias="beforeCount")
    after_count: StrictInt = Field(alias="afterCount")
    affected_rows: StrictInt = Field(alias="affectedRows")


class BackfillIssue(_Open):
    """An error or warning group: what went wrong in a stage, with example rows."""

    stage: str
    rows: list[Any]

    @property
    def row_count(self) -> int:
        # Upstream caps example rows at 100; a `count`/`rowCount` beside them is the true figure.
        extra = self.model_extra or {}
        for name in ("count", "rowCount"):
            value = extra.get(name)
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


def _unique(keys: list[str], what: str) -> None:
    # Diffs and summaries go item by item; two items with one identity would be ambiguous.
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"two {what} are both named {key!r}")
        seen.add(key)


class BackfillReport(_Report):
    KIND: ClassVar[Literal["backfill"]] = "backfill"

    stages: list[BackfillStage]
    errors: list[BackfillError]
    warnings: list[BackfillWarning]

    @model_validator(mode="before")
    @classmethod
    def _derive_ok(cls, data: Any) -> Any:
        # §4 defines ok as `errors.length == 0`; a file without `ok` gets exactly that.
        if isinstance(data, dict) and "ok" not in data and isinstance(data.get("errors"), list):
            return {**data, "ok": not data["errors"]}
        return data

    @model_validator(mode="after")
    def _stages_unique(self) -> BackfillReport:
        _unique([stage.stage for stage in self.stages], "stages")
        return self

    @property
    def clean(self) -> bool:
        return not self.errors


class VerifyCheck(_Open):
    """One check; `type` is count, integrity, sample or reconcile upstream, the console adds more."""

    type: str
    ok: StrictBool
    table: str | None = None
    old_table: str | None = Field(default=None, alias="oldTable")
    old_count: StrictInt | None = Field(default=None, alias="oldCount")
    new_count: StrictInt | None = Field(default=None, alias="newCount")
    name: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> VerifyCheck:
        if not (self.name or self.table):
            raise ValueError("a check needs a name or a table")
        return self

    @property
    def key(self) -> str:
        # Upstream's own label (`PASS name`), so both tools name a check the same way.
        return self.name or f"{self.type}:{self.table}"


class VerifyReport(_Report):
    KIND: ClassVar[Literal["verify"]] = "verify"

    checks: list[VerifyCheck]

    @model_validator(mode="after")
    def _checks_unique(self) -> VerifyReport:
        _unique([check.key for check in self.checks], "checks")
        return self

    @property
    def clean(self) -> bool:
        return all(check.ok for check in self.checks)


Report = ReconReport | BackfillReport | VerifyReport
MODELS: dict[str, type[_Report]] = {
    "recon": ReconReport, "backfill": BackfillReport, "verify": VerifyReport,
    "verify-reads": VerifyReport,
}


def report_kind(report: Report) -> Literal["recon", "backfill", "verify"]:
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


def _detect(data: dict[str, Any]) -> type[_Report] | None:
    if "checks" in data:
        return VerifyReport
    if "stages" in data:
        return BackfillReport
    if "schemas" in data or "mapping" in data:
        return ReconReport
    return None


def parse_report(data: Any, source: str, model: type[_Report] | None = None) -> Report:
    """`data` (decoded JSON) as its report model, or one BadInput sentence naming `source`."""
    if not isinstance(data, dict):
        raise BadInput(f"{source} is JSON but not an object, so it is not a report.")
    model = model or _detect(data)
    if model is None:
        raise BadInput(f"{source} is not a recon, backfill or verify report: it has none of "
                       "`checks`, `stages`, `schemas` or `mapping`.")
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise BadInput(f"{source} is not a valid {model.KIND} report: {_first_problem(exc)}.") from None


