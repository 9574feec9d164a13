"""The three migration flags as one value, the unit the promotion matrix reasons in."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..files.envfile import DUAL_WRITE, READS, WRITES


class Flags(BaseModel):
    model_config = ConfigDict(frozen=True)

    reads: bool = False
    writes: bool = False
    dual_write: bool = False

    @classmethod
    def from_env(cls, declared: dict[str, bool]) -> Flags:
        return cls(reads=declared[READS], writes=declared[WRITES], dual_write=declared[DUAL_WRITE])

    def as_env(self) -> dict[str, bool]:
        return {READS: self.reads, WRITES: self.writes, DUAL_WRITE: self.dual_write}

    def short(self) -> str:
        """`READS=true WRITES=false DUAL_WRITE=false`, for sentences and the journal."""
        return " ".join(f"{k}={str(v).lower()}" for k, v in
                        (("READS", self.reads), ("WRITES", self.writes), ("DUAL_WRITE", self.dual_write)))

    def distance(self, other: Flags) -> int:
        return (self.reads != other.reads) + (self.writes != other.writes) + (
            self.dual_write != other.dual_write)
