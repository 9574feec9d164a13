"""The four Accounts v2 flags in the deploy env file: read them as the API does, write them.

Reading mirrors the Node `dotenv` parser (v16+) the API runs, regex for regex, so the
console never disagrees with the API about a flag. Writing replaces only the value text
of flag assignments (or adds one line), so every other byte of the file survives.

Writes are atomic: a temp file in the target's folder, fsynced, then `os.replace`. A
writer killed mid-way leaves the env file whole and at most one temp file per kill,
named `.<env file name>.cutover-tmp-<random>` beside it.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .errors import EnvFileError, Refused

READS = "ACCOUNT_SCHEMA_V2_READS"
WRITES = "ACCOUNT_SCHEMA_V2_WRITES"
DUAL_WRITE = "ACCOUNT_SCHEMA_V2_DUAL_WRITE"
ALIAS = "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS"
FLAG_NAMES = (READS, WRITES, DUAL_WRITE, ALIAS)
DEFAULTS: Mapping[str, bool] = MappingProxyType(
    {READS: False, WRITES: False, DUAL_WRITE: False, ALIAS: True}
)
GROUP_COMMENT = "# Accounts v2 migration flags"
TEMP_INFIX = ".cutover-tmp-"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_KNOWN_WORDS = _TRUE_WORDS | {"0", "false", "no", "off"}
_QUOTES = "'\"`"

# JavaScript's \s and String.trim() are not Python's: they include U+FEFF but not
# \x1c-\x1f or \x85. Line terminators (for JS `^`, `$` and `.`) include U+2028/9.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
    map(chr, range(0x2000, 0x200B))
)
_JS_EOL = "\n\r\u2028\u2029"
_S = f"[{_JS_SPACE}]"
_LINE_START = f"(?<![^{_JS_EOL}])"
_LINE_END = rf"(?=[{_JS_EOL}]|\Z)"

# dotenv's LINE regex, spelled for Python. The value group always participates (possibly
# empty) so a missing value still has a position to write at.
_ASSIGNMENT = re.compile(
    _LINE_START
    + rf"{_S}*(?:export{_S}+)?"
    + r"(?P<key>[A-Za-z0-9_.-]+)"
    + rf"(?:{_S}*={_S}*?|:{_S}+?)"
    + rf"(?P<value>(?:{_S}*'(?:\\'|[^'])*'"
    + rf"|{_S}*\"(?:\\\"|[^\"])*\""
    + rf"|{_S}*`(?:\\`|[^`])*`"
    + r"|[^#\r\n]+)?)"
    + rf"{_S}*(?:#[^{_JS_EOL}]*)?"
    + _LINE_END
)
_SURROUNDING_QUOTES = re.compile(_LINE_START + r"(['\"`])([\s\S]*)\1" + _LINE_END)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class EnvFileChanged(Refused):
    """Someone else wrote the env file after we read it; we wrote nothing."""

    title = "Deploy env file changed"


def parse_flag(raw: str | None, default: bool) -> bool:
    """The API's rule: 1/true/yes/on (trimmed, any case) is true, empty is the default."""
    word = (raw or "").strip(_JS_SPACE).lower()
    if not word:
        return default
    return word in _TRUE_WORDS


class FlagValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    raw: str | None  # None: the file does not mention the flag
    value: bool
    line: int | None  # 1-based line of the occurrence that wins
    odd: bool  # a value the API reads as false although it is not a known word


class EnvFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    flags: dict[str, FlagValue]
    sha256: str
    mode: int
    text: str = Field(repr=False)

    @classmethod
    def from_bytes(cls, path: Path, data: bytes, mode: int) -> EnvFile:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvFileError(
                f"The deploy env file {path} is not valid UTF-8 (bad byte at offset "
                f"{exc.start}); save it as UTF-8 and try again."
            ) from exc
        assignments = _Scan(text).assignments
        winners = {a.key: a for a in assignments if a.key in FLAG_NAMES}  # last one wins
        flags = {name: _flag_value(name, winners.get(name)) for name in FLAG_NAMES}
        return cls(
            path=path,
            flags=flags,
            sha256=hashlib.sha256(data).hexdigest(),
            mode=mode,
            text=text,
        )

    @property
    def declared(self) -> dict[str, bool]:
        """Each flag as the API reads this file."""
        return {name: flag.value for name, flag in self.flags.items()}


def _flag_value(name: str, assignment: _Assignment | None) -> FlagValue:
    if assignment is None:
        return FlagValue(name=name, raw=None, value=DEFAULTS[name], line=None, odd=False)
    word = assignment.value.strip(_JS_SPACE).lower()
    return FlagValue(
        name=name,
        raw=assignment.value,
        value=parse_flag(assignment.value, DEFAULTS[name]),
        line=assignment.first_line + 1,
        odd=bool(word) and word not in _KNOWN_WORDS,
    )


class _Assignment(NamedTuple):
    key: str
    value: str  # as dotenv hands it to the API
    first_line: int  # 0-based physical line of the key
    last_line: int  # physical line where the value ends
    edit_start: int  # offsets in the original text of what a new value replaces
    edit_end: int


class _Scan:
    """Physical lines of a text and dotenv's assignments in it.

    dotenv matches on text with every CRLF or lone CR turned into LF; offsets found
    there are mapped back to the original text through the physical lines, which both
    share.
    """

    def __init__(self, text: str) -> None:
        self.lines = _LINE.findall(text)
        self.starts = _running_starts(len(line) for line in self.lines)
        normal_starts = _running_starts(len(line.rstrip("\r\n")) + 1 for line in self.lines)
        normal = re.sub(r"\r\n?", "\n", text)

        def locate(offset: int) -> tuple[int, int]:
            """(line, offset in the original text) of an offset in `normal`."""
            line = bisect.bisect_right(normal_starts, offset) - 1
            return line, self.starts[line] + offset - normal_starts[line]

        self.assignments = [_assignment(match, locate) for match in _ASSIGNMENT.finditer(normal)]

    def ending(self, index: int) -> str:
        line = self.lines[index]
        return line[len(line.rstrip("\r\n")) :]


def _running_starts(lengths) -> list[int]:
    starts = [0]
    for length in lengths:
        starts.append(starts[-1] + length)
    return starts[:-1] or [0]


def _assignment(match: re.Match[str], locate) -> _Assignment:
    raw = match["value"]
    value = raw.strip(_JS_SPACE)
    start = match.start("value") + len(raw) - len(raw.lstrip(_JS_SPACE))
    end = start + len(value)
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
        start, end = start + 1, end - 1  # keep the quotes, replace what is inside
    last_char = max(end, match.end("value")) - 1 if value else match.start("value") - 1
    first_line, _ = locate(match.start("key"))
    last_line, _ = locate(last_char)
    quote = value[:1]
    value = _SURROUNDING_QUOTES.sub(r"\2", value)
    if quote == '"':
        value = value.replace("\\n", "\n").replace("\\r", "\r")
    return _Assignment(
        key=match["key"],
        value=value,
        first_line=first_line,
        last_line=last_line,
        edit_start=locate(start)[1],
        edit_end=locate(end)[1],
    )
