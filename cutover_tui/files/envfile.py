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
import difflib
import errno
import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Mapping
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ..errors import EnvFileError, Refused
from .atomic import atomic_write

READS = "ACCOUNT_SCHEMA_V2_READS"
WRITES = "ACCOUNT_SCHEMA_V2_WRITES"
DUAL_WRITE = "ACCOUNT_SCHEMA_V2_DUAL_WRITE"
ALIAS = "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS"
FLAG_NAMES = (READS, WRITES, DUAL_WRITE, ALIAS)
DEFAULTS: Mapping[str, bool] = MappingProxyType(
    {READS: False, WRITES: False, DUAL_WRITE: False, ALIAS: True}
)
GROUP_COMMENT = "# Accounts v2 migration flags"

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
    word = _normal_word(raw)
    if not word:
        return default
    return word in _TRUE_WORDS


def _normal_word(raw: str | None) -> str:
    return (raw or "").strip(_JS_SPACE).lower()


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
    text: str = Field(repr=False, exclude=True)  # secrets: kept out of reprs and dumps
    # How the console's last write put these bytes in place ("replaced", or "in place, because
    # ..."); None for a file as read.
    written: str | None = None

    @classmethod
    def from_bytes(cls, path: Path, data: bytes, mode: int) -> EnvFile:
        """The flags in `data`, the content of the file at `path`."""
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

    @property
    def variables(self) -> dict[str, str]:
        """Every assignment's value as dotenv hands it over (the last one of a key wins)."""
        return {a.key: a.value for a in _Scan(self.text).assignments}


def _flag_value(name: str, assignment: _Assignment | None) -> FlagValue:
    if assignment is None:
        return FlagValue(name=name, raw=None, value=DEFAULTS[name], line=None, odd=False)
    word = _normal_word(assignment.value)
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

    dotenv matches on the text with every CRLF or lone CR turned into LF; offsets found
    there map back to the original text through the physical lines, which both share.
    """

    def __init__(self, text: str) -> None:
        self.lines: list[str] = _LINE.findall(text)
        self.starts = list(accumulate((len(line) for line in self.lines), initial=0))
        self._normal_starts = list(
            accumulate((len(line.rstrip("\r\n")) + 1 for line in self.lines), initial=0)
        )
        normal = re.sub(r"\r\n?", "\n", text)
        self.assignments = [self._assignment(match) for match in _ASSIGNMENT.finditer(normal)]

    def ending(self, index: int) -> str:
        line = self.lines[index]
        return line[len(line.rstrip("\r\n")) :]

    def _locate(self, offset: int) -> tuple[int, int]:
        """(line index, offset in the original text) of an offset in the LF-only text."""
        line = bisect.bisect_right(self._normal_starts, offset) - 1
        return line, self.starts[line] + offset - self._normal_starts[line]

    def _assignment(self, match: re.Match[str]) -> _Assignment:
        raw = match["value"]
        value = raw.strip(_JS_SPACE)
        if value:
            start = match.start("value") + len(raw) - len(raw.lstrip(_JS_SPACE))
            last_line, _ = self._locate(start + len(value) - 1)
        else:  # written right after the "=" (or ": "), which is where it ends
            start = match.start("value")
            last_line, _ = self._locate(start - 1)
        end = start + len(value)
        if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
            start, end = start + 1, end - 1  # keep the quotes, replace what is inside
        quote = value[:1]
        value = _SURROUNDING_QUOTES.sub(r"\2", value)
        if quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        return _Assignment(
            key=match["key"],
            value=value,
            first_line=self._locate(match.start("key"))[0],
            last_line=last_line,
            edit_start=self._locate(start)[1],
            edit_end=self._locate(end)[1],
        )


def _flag_text(value: bool) -> str:
    return "true" if value else "false"


def plan_flag_change(env: EnvFile, changes: Mapping[str, bool]) -> bytes:
    """The file's bytes with `changes` applied; the same bytes when nothing changes.

    Every occurrence of a changed flag is rewritten so no stale line remains; a flag
    already declared with the wanted value is left exactly as it is.
    """
    unknown = sorted(set(changes) - set(FLAG_NAMES))
    if unknown:
        raise EnvFileError(
            f"{', '.join(unknown)} is not a flag the console manages; "
            f"use one of {', '.join(FLAG_NAMES)}."
        )
    wanted = {
        name: value
        for name, value in changes.items()
        if env.flags[name].raw is None or env.flags[name].value != value
    }
    scan = _Scan(env.text)
    edits = [
        (a.edit_start, a.edit_end, _flag_text(wanted[a.key]))
        for a in scan.assignments
        if a.key in wanted
    ]
    missing = [
        f"{name}={_flag_text(wanted[name])}"
        for name in FLAG_NAMES
        if name in wanted and env.flags[name].raw is None
    ]
    if missing:
        edits.append(_addition(scan, missing))  # last: it follows a value edit at the same offset
    text = _apply(env.text, edits)
    _check_reads_as_intended(env, scan, text, wanted)
    return text.encode("utf-8")


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    pieces, cursor = [], 0
    for start, end, new in sorted(edits, key=lambda edit: edit[0]):  # stable sort
        pieces += [text[cursor:start], new]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _check_reads_as_intended(
    env: EnvFile, old: _Scan, new_text: str, wanted: dict[str, bool]
) -> None:
    """Refuse an edit that dotenv would read otherwise than intended.

    A new line can be swallowed by the line before it: dotenv reads `KEY:` followed by
    a line break as KEY set to the whole next line.
    """
    before = {a.key: a.value for a in old.assignments}
    after = {a.key: a.value for a in _Scan(new_text).assignments}
    flags = {name: parse_flag(after.get(name), DEFAULTS[name]) for name in FLAG_NAMES}
    others_kept = {k: v for k, v in before.items() if k not in FLAG_NAMES} == {
        k: v for k, v in after.items() if k not in FLAG_NAMES
    }
    if flags != {**env.declared, **wanted} or not others_kept:
        raise EnvFileError(
            f"The deploy env file {env.path} cannot be changed safely: dotenv would read "
            "the edited file differently than intended (for example, a line ending in a "
            "bare ':' takes the next line as its value); make this change by hand."
        )


def _addition(scan: _Scan, new_lines: list[str]) -> tuple[int, int, str]:
    """Insert lines for absent flags after the flag group, or at the end of the file."""
    eol = _dominant_ending(scan)
    after = _group_end(scan)
    if after is None:
        after = len(scan.lines) - 1
    offset = scan.starts[after + 1]
    if after < 0 or scan.ending(after):
        return offset, offset, "".join(line + eol for line in new_lines)
    # The anchor is a last line without a line ending: keep the final newline missing.
    return offset, offset, "".join(eol + line for line in new_lines)


def _group_end(scan: _Scan) -> int | None:
    """Index of the last line of the group under GROUP_COMMENT, None without one.

    A value spanning several lines counts as one item, so the group never ends (and
    the comment is never found) inside a quoted value.
    """
    item_end: dict[int, int] = {}
    for a in scan.assignments:
        item_end[a.first_line] = max(item_end.get(a.first_line, a.last_line), a.last_line)
    inside_values = {i for first, last in item_end.items() for i in range(first + 1, last + 1)}
    comment = next(
        (
            i
            for i, line in enumerate(scan.lines)
            if line.strip() == GROUP_COMMENT and i not in inside_values
        ),
        None,
    )
    if comment is None:
        return None
    last = comment
    while last + 1 < len(scan.lines) and scan.lines[last + 1].strip():
        last = item_end.get(last + 1, last + 1)
    return last


def _dominant_ending(scan: _Scan) -> str:
    counts = Counter(scan.ending(i) for i in range(len(scan.lines)))
    return max(("\n", "\r\n", "\r"), key=counts.__getitem__)  # a tie (or none) gives LF


def env_diff(env: EnvFile, changes: Mapping[str, bool]) -> str:
    """A unified diff of the file now against after `changes`; empty when nothing changes."""
    after = plan_flag_change(env, changes).decode("utf-8")
    return "\n".join(
        difflib.unified_diff(
            [line.rstrip("\r\n") for line in _LINE.findall(env.text)],
            [line.rstrip("\r\n") for line in _LINE.findall(after)],
            f"{env.path} (now)",
            f"{env.path} (after)",
            n=0,  # no context: neighbouring lines of a deploy env file hold secrets
            lineterm="",
        )
    )


def read_env_file(path: str | os.PathLike[str]) -> EnvFile:
    """Read the env file at `path` (a symlink is followed; `EnvFile.path` keeps the link)."""
    path = Path(path)
    data, info = _read_bytes(path)
    mode = stat.S_IMODE(info.st_mode)
    return EnvFile.from_bytes(path, data, mode)


def _read_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and what it is (mode, owner, links), or an EnvFileError saying what to do."""
    try:
        # O_NONBLOCK: a FIFO must fail the regular-file check below, not hang the console.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise EnvFileError(
                f"The deploy env file {path} links to {os.readlink(path)}, which does not "
                "exist; fix the link or give the real path."
            ) from exc
        raise EnvFileError(
            f"The deploy env file {path} does not exist; check the path given to the console."
        ) from exc
    except PermissionError as exc:
        raise EnvFileError(
            f"The deploy env file {path} cannot be read by this user (permission denied); "
            "run the console as a user that can read it, or fix its permissions."
        ) from exc
    except OSError as exc:
        raise EnvFileError(
            f"The deploy env file {path} cannot be opened ({exc.strerror}); "
            "check the path and try again."
        ) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise EnvFileError(
                f"{path} is a folder, not a deploy env file; give the path of the env file in it."
            )
        if not stat.S_ISREG(info.st_mode):
            raise EnvFileError(
                f"{path} is not a regular file; give the path of the deploy env file itself."
            )
        with open(fd, "rb", closefd=False) as file:
            data = file.read()
    except OSError as exc:
        raise EnvFileError(
            f"The deploy env file {path} could not be read ({exc.strerror}); try again."
        ) from exc
    finally:
        os.close(fd)
    return data, info


def write_flags(env: EnvFile, changes: Mapping[str, bool]) -> EnvFile:
    """Apply `changes` atomically and return the file as re-read.

    Refuses, writing nothing, when the file is no longer the one `env` was read from.
    """
    content = plan_flag_change(env, changes)
    target = Path(os.path.realpath(env.path))  # write through a symlink: the link stays
    info = _ensure_unchanged(env, target)
    if content == env.text.encode("utf-8"):
        return read_env_file(env.path)
    how = _replace(env, target, content, info)
    return read_env_file(env.path).model_copy(update={"written": how})


def _ensure_unchanged(env: EnvFile, target: Path) -> os.stat_result:
    """What the target is, after checking it still holds the bytes `env` was read from."""
    data, info = _read_bytes(target)
    _refuse_if_changed(env, data)
    return info


def _refuse_if_changed(env: EnvFile, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != env.sha256:
        raise EnvFileChanged(
            f"The deploy env file {env.path} changed on disk since it was read; "
            "nothing was written; re-read it and try again."
        )


def _replace(env: EnvFile, target: Path, content: bytes, info: os.stat_result) -> str:
    """Put `content` in place and say how. A new file renamed over the old one keeps the old
    one's mode, owner and group; where a new file cannot stand in for it (other hard links would
    keep the old flags, a single-file bind mount cannot be renamed over, this user may not give
    a new file the owner) the file is rewritten in place, its inode kept."""
    if info.st_nlink > 1:
        return _in_place(env, target, content, f"it has {info.st_nlink} hard links")
    try:
        def check_again() -> None:  # as late as possible, to catch another writer
            _ensure_unchanged(env, target)
        atomic_write(target, content, mode=stat.S_IMODE(info.st_mode), owner=(info.st_uid, info.st_gid),
                     before_replace=check_again)
        return "replaced"
    except PermissionError as exc:
        if (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid()):
            raise _unwritable(env, target, exc) from exc
        return _in_place(env, target, content, f"this user may not give a new file its owner {info.st_uid}:"
                         f"{info.st_gid}")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return _in_place(env, target, content, "it is a mount point (a bind-mounted file)")
        raise _unwritable(env, target, exc) from exc


def _in_place(env: EnvFile, target: Path, content: bytes, why: str) -> str:
    """Rewrite the file's own bytes (its inode, owner and links stay), after the same check
    that nobody else wrote it since it was read."""
    try:
        with open(target, "r+b") as file:
            _refuse_if_changed(env, file.read())
            file.seek(0)
            file.write(content)
            file.truncate()
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise _unwritable(env, target, exc) from exc
    return f"in place, because {why}"


def _unwritable(env: EnvFile, target: Path, exc: OSError) -> EnvFileError:
    return EnvFileError(
        f"Could not write the deploy env file {env.path} ({exc.strerror or exc}); the file was left as it was. "
        f"Check that {target.parent} is writable and has free space, then try again.")

