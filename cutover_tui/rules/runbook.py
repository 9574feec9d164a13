"""`runbook.toml`: the runbook as data, validated at start, written back with comments kept.

Structure (stage ids, their order, their flag rows, the rollback paths) is the runbook's and
is checked here so that the promotion matrix can trust it: the file may tighten the gates,
never change what a stage or a rollback means. The gates, paths and addresses are the team's.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from tomlkit.exceptions import TOMLKitError

from ..errors import RunbookError
from ..files.atomic import atomic_write
from .flags import Flags

StageId = Literal["A", "0", "B", "G", "C", "D", "E", "E'", "F"]
STAGE_ORDER: tuple[StageId, ...] = ("A", "0", "B", "G", "C", "D", "E", "E'", "F")
PROMOTABLE: tuple[StageId, ...] = ("C", "D", "E", "E'")

# The runbook's own flag rows (reads, writes, dual-write) and rollback paths; a file that
# says otherwise would make the console write flags the runbook never declares.
RUNBOOK_ROWS: dict[StageId, tuple[bool, bool, bool] | None] = {
    "A": (False, False, False), "0": (False, False, False), "B": (False, False, False),
    "G": (False, False, False), "C": (True, False, False), "D": (True, False, True),
    "E": (True, True, True), "E'": (True, True, False), "F": None,
}
RUNBOOK_ROLLBACK: dict[str, dict[str, Any]] = {
    "before-write-cutover": {"from": ["C", "D"], "set": {"reads": False}, "dual_write_kept": "unchanged"},
    "after-write-cutover": {"from": ["E", "E'"], "set": {"writes": False}, "dual_write_kept": True},
}
MAX_CONFIDENCE_HOURS = 720.0  # 30 days
MAX_PASSING_VERIFIES = 100
MAX_DEPLOY_SECONDS = 86400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Strict):
    env_file: Path
    report_dir: Path
    sql_dir: Path


class Database(_Strict):
    url: str = ""


class Api(_Strict):
    base: str = "http://localhost:3000"

    @field_validator("base")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class Deploy(_Strict):
    """How a flag write reaches the running API (SYSTEM.md §5): shell commands run from the
    runbook file's folder with CUTOVER_ENV_FILE set."""

    apply: str = Field(min_length=1)
    read_back: str = Field(min_length=1)
    timeout_seconds: float = Field(600.0, gt=0, le=MAX_DEPLOY_SECONDS, allow_inf_nan=False)

    @field_validator("apply", "read_back")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a command, not blank")
        return value


class Gates(_Strict):
    confidence_period_hours: float = Field(gt=0, le=MAX_CONFIDENCE_HOURS, allow_inf_nan=False)
    passing_verifies_before_archive: int = Field(ge=1, le=MAX_PASSING_VERIFIES, strict=True)


class FlagRow(_Strict):
    reads: bool = Field(strict=True)
    writes: bool = Field(strict=True)
    dual_write: bool = Field(strict=True)

    def flags(self) -> Flags:
        return Flags(reads=self.reads, writes=self.writes, dual_write=self.dual_write)


class FlagSet(_Strict):
    reads: bool | None = Field(None, strict=True)
    writes: bool | None = Field(None, strict=True)
    dual_write: bool | None = Field(None, strict=True)


class Stage(_Strict):
    id: StageId
    title: str
    flags: FlagRow | None = None


class RollbackPath(_Strict):
    path: Literal["before-write-cutover", "after-write-cutover"]
    from_: list[StageId] = Field(alias="from", min_length=1)
    set: FlagSet
    dual_write_kept: Literal["unchanged"] | bool


class Runbook(_Strict):
    paths: Paths
    database: Database = Database()
    api: Api = Api()
    deploy: Deploy | None = None  # without it the operator confirms each deployment by hand
    # A rehearsal's runbook (`cutover demo --rehearsal`): its short gates are marked on every
    # screen and recorded with every journal row.
    rehearsal: bool = Field(False, strict=True)
    gates: Gates
    stages: list[Stage]
    rollback: list[RollbackPath]
    source: Path | None = None
    source_sha256: str | None = None  # of the file's text, recorded with every journal row

    @field_validator("stages")
    @classmethod
    def _stage_order(cls, stages: list[Stage]) -> list[Stage]:
        ids = tuple(stage.id for stage in stages)
        if ids != STAGE_ORDER:
            raise ValueError(f"stages must be, in this order: {', '.join(STAGE_ORDER)} (found {', '.join(ids)})")
        for index, stage in enumerate(stages):
            if (stage.flags is None) != (stage.id == "F"):
                raise ValueError(f"stage {stage.id}: every stage but F needs a flag row, and F has none")
            expected = RUNBOOK_ROWS[stage.id]
            found = None if stage.flags is None else (stage.flags.reads, stage.flags.writes, stage.flags.dual_write)
            if found is not None and expected is not None and found != expected:
                wrong = next(name for name, a, b in zip(("reads", "writes", "dual_write"), found, expected) if a != b)
                raise ValueError(f"`stages.{index}.flags.{wrong}` of stage {stage.id} must be "
                                 f"{str(dict(zip(('reads', 'writes', 'dual_write'), expected))[wrong]).lower()}, "
                                 "as the runbook declares; the file may tighten gates, never change a stage's flags")
        return stages

    @field_validator("rollback")
    @classmethod
    def _two_paths(cls, paths: list[RollbackPath]) -> list[RollbackPath]:
        if sorted(r.path for r in paths) != ["after-write-cutover", "before-write-cutover"]:
            raise ValueError("rollback must list the two paths before-write-cutover and after-write-cutover")
        for index, path in enumerate(paths):
            expected = RUNBOOK_ROLLBACK[path.path]
            found = {"from": list(path.from_), "set": path.set.model_dump(exclude_none=True),
                     "dual_write_kept": path.dual_write_kept}
            for key, value in expected.items():
                if found[key] != value or type(found[key]) is not type(value):
                    raise ValueError(f"`rollback.{index}.{key}` of {path.path} must be {value!r}, as the runbook "
                                     "declares; the file may tighten gates, never change a rollback path")
        return paths

    def in_force(self) -> dict[str, Any]:
        """What a journal row records of this file: its hash and the gates it set."""
        return {"file": str(self.source) if self.source else None, "sha256": self.source_sha256,
                "gates": self.gates.model_dump(), **({"rehearsal": True} if self.rehearsal else {})}

    def rehearsal_note(self) -> str | None:
        """What every screen says of a rehearsal's runbook."""
        if not self.rehearsal:
            return None
        return f"REHEARSAL: short gates (confidence period {self.gates.confidence_period_hours * 60:g} min)"

    @property
    def folder(self) -> Path:
        """Where the deploy commands run: the runbook file's folder."""
        return self.source.resolve().parent if self.source else Path.cwd()

    def stage(self, stage_id: StageId) -> Stage:
        return next(stage for stage in self.stages if stage.id == stage_id)

    def row(self, stage_id: StageId) -> Flags:
        flags = self.stage(stage_id).flags
        return flags.flags() if flags else self.row("E'")

    def rollback_path(self, stage_id: StageId) -> RollbackPath | None:
        return next((r for r in self.rollback if stage_id in r.from_), None)

    def legal_flags(self) -> list[Flags]:
        """Every stage row, and every row a rollback can produce (dual-write either way)."""
        legal = {self.row(s.id) for s in self.stages if s.flags}
        for path in self.rollback:
            for origin in path.from_:
                after = self.row(origin).model_copy(update=path.set.model_dump(exclude_none=True))
                legal |= {after.model_copy(update={"dual_write": d}) for d in (True, False)}
        return sorted(legal, key=lambda f: (f.writes, f.reads, f.dual_write))


def _location(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the table holding `loc` allows, found by walking the models along it."""
    model: type[BaseModel] = Runbook
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        inner = getattr(field, "annotation", None) if field else None
        inner = next((a for a in getattr(inner, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)),
                     inner)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return sorted((f.alias or name) for name, f in model.model_fields.items()
                  if name not in ("source", "source_sha256"))


def _describe(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"])
        return ": not a known key" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    scalar = isinstance(error.get("input"), (str, int, float, bool))
    return ": " + message + (f" (got {error['input']!r})" if scalar and error["type"] != "missing" else "")


def parse_runbook(text: str, source: Path) -> Runbook:
    try:
        data = tomlkit.parse(text).unwrap()
    except TOMLKitError as exc:
        raise RunbookError(f"{source}: not valid TOML ({exc}); fix the file and start again.") from None
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RunbookError(
            f"{source}: key `{_location(first)}`{_describe(first)}; fix the file and start again."
        ) from None
    base = source.resolve().parent
    paths = runbook.paths.model_copy(update={
        name: (base / value) for name, value in runbook.paths.model_dump().items()
    })
    return runbook.model_copy(update={"paths": paths, "source": source,
                                      "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})


DEFAULT_RUNBOOK = Path("runbook.toml")  # in the folder the console starts from


def packaged_runbook() -> Path:
    """The runbook template the package ships, beside the SQL files its sql_dir names;
    the demo falls back to it, so an installed console runs the demo from any folder."""
    return Path(str(resources.files("cutover_tui") / "data" / "runbook.toml"))


def load_runbook(path: Path) -> Runbook:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunbookError(f"Runbook file {path} does not exist; pass --runbook PATH or create it.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunbookError(f"Cannot read runbook file {path} ({exc.__class__.__name__}); check the path.") from None
    return parse_runbook(text, path)


def save_setting(path: Path, key: str, value: object) -> Runbook:
    """Set dotted `key` (e.g. `gates.confidence_period_hours`) keeping comments; validate first."""
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    *parents, leaf = key.split(".")
    table = document
    for part in parents:
        if part not in table:
            raise RunbookError(f"{path}: there is no table `{part}` for key `{key}`.")
        table = table[part]
    if leaf not in table:
        raise RunbookError(f"{path}: unknown key `{key}`.")
    table[leaf] = value
    text = tomlkit.dumps(document)
    runbook = parse_runbook(text, path)
    target = path.resolve()
    try:
        atomic_write(target, text.encode("utf-8"), mode=target.stat().st_mode & 0o7777)
    except OSError as exc:
        raise RunbookError(f"Cannot write {path} ({exc.strerror or exc}); the file was left as it was.") from None
    return runbook
