"""The deploy env file: dotenv reading rules, byte-exact flag writes, atomic replacement."""

from __future__ import annotations

import errno
import json
import os
import pwd
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover_tui.errors import EnvFileError, Refused
from cutover_tui.files.atomic import TEMP_INFIX
from cutover_tui.files.envfile import (
    ALIAS,
    DEFAULTS,
    DUAL_WRITE,
    FLAG_NAMES,
    GROUP_COMMENT,
    READS,
    WRITES,
    EnvFile,
    EnvFileChanged,
    env_diff,
    parse_flag,
    plan_flag_change,
    read_env_file,
    write_flags,
)

WRITER_CHILD = Path(__file__).with_name("envfile_writer_child.py")

# Hypothesis examples per property (10,300 in all); the disk one is slower per example.
READ_EXAMPLES = 4_000
PLAN_EXAMPLES = 4_000
NOOP_EXAMPLES = 2_000
DISK_EXAMPLES = 300
KILLS = 40

ALL_CHANGES = {READS: True, WRITES: True, DUAL_WRITE: False, ALIAS: False}


def env_of(text: str, name: str = "deploy.env") -> EnvFile:
    return EnvFile.from_bytes(Path(name), text.encode("utf-8"), 0o644)


def planned(text: str, changes: dict[str, bool]) -> str:
    return plan_flag_change(env_of(text), changes).decode("utf-8")


# --- parse_flag: the API's rule -------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE", " True ", "\tON\n", "Yes"])
def test_parse_flag_truthy_words(raw):
    assert parse_flag(raw, False) is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "maybe", "enabled", "2", "y", "t"])
def test_parse_flag_everything_else_is_false(raw):
    assert parse_flag(raw, True) is False


@pytest.mark.parametrize("raw", [None, "", "   ", "\t"])
@pytest.mark.parametrize("default", [True, False])
def test_parse_flag_empty_or_missing_takes_the_default(raw, default):
    assert parse_flag(raw, default) is default


def test_defaults_follow_the_design():
    assert FLAG_NAMES == (READS, WRITES, DUAL_WRITE, ALIAS)
    assert dict(DEFAULTS) == {READS: False, WRITES: False, DUAL_WRITE: False, ALIAS: True}


# --- reading: dotenv's rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("ACCOUNT_SCHEMA_V2_READS=true", "true"),
        ("export ACCOUNT_SCHEMA_V2_READS=on", "on"),
        ("ACCOUNT_SCHEMA_V2_READS  =  \tyes  ", "yes"),
        ("ACCOUNT_SCHEMA_V2_READS=true # on since stage C", "true"),
        ("ACCOUNT_SCHEMA_V2_READS=true#dotenv cuts here too", "true"),
        ("ACCOUNT_SCHEMA_V2_READS='{\"a\": \"#1\", \"b\": [1, 2]}'", '{"a": "#1", "b": [1, 2]}'),
        ("ACCOUNT_SCHEMA_V2_READS='a\\nb'", "a\\nb"),
        ('ACCOUNT_SCHEMA_V2_READS="a\\nb"', "a\nb"),
        ('ACCOUNT_SCHEMA_V2_READS="x # not a comment" # a comment', "x # not a comment"),
        ("ACCOUNT_SCHEMA_V2_READS=`yes`", "yes"),
        ('ACCOUNT_SCHEMA_V2_READS=" TRUE "', " TRUE "),
        ("ACCOUNT_SCHEMA_V2_READS=\r\nX=1\r\n", ""),
        ("ACCOUNT_SCHEMA_V2_READS= # nothing yet", ""),
        ("\n\n  # comment\n\n\tACCOUNT_SCHEMA_V2_READS=1\n", "1"),
        ("X=1\r\nACCOUNT_SCHEMA_V2_READS=true\r\nY=2\r\n", "true"),
        ("X=1\nACCOUNT_SCHEMA_V2_READS=yes", "yes"),
        ("ACCOUNT_SCHEMA_V2_READS=ünïcødé ✓ 漢字", "ünïcødé ✓ 漢字"),
        ("\ufeffACCOUNT_SCHEMA_V2_READS=1\n", "1"),  # dotenv's \s takes a byte-order mark
        ("ACCOUNT_SCHEMA_V2_READS: yes", "yes"),  # dotenv also takes "KEY: value"
        ("# ACCOUNT_SCHEMA_V2_READS=true", None),
        ("account_schema_v2_reads=true", None),
        ("ACCOUNT_SCHEMA_V2_READS_OLD=true\nOLD_ACCOUNT_SCHEMA_V2_READS=true", None),
        ("set ACCOUNT_SCHEMA_V2_READS=true", None),
    ],
)
def test_reading_follows_dotenv(text, raw):
    assert env_of(text).flags[READS].raw == raw


def test_lines_inside_a_multiline_quoted_value_are_not_keys():
    text = (
        'JWT_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\n'
        "ACCOUNT_SCHEMA_V2_READS=true\n"
        f"{GROUP_COMMENT}\n"
        '-----END PRIVATE KEY-----"\n'
        "CONFIG='{\n"
        '  "ACCOUNT_SCHEMA_V2_DUAL_WRITE": "yes"\n'
        "}'\n"
        "ACCOUNT_SCHEMA_V2_WRITES=yes\n"
    )
    flags = env_of(text).flags
    assert flags[READS].raw is None
    assert flags[DUAL_WRITE].raw is None
    assert (flags[WRITES].raw, flags[WRITES].line) == ("yes", 8)


def test_the_last_occurrence_wins_and_gives_the_line():
    text = "ACCOUNT_SCHEMA_V2_READS=true\r\nX=\"a\r\nb\"\r\nACCOUNT_SCHEMA_V2_READS=false\r\n"
    flag = env_of(text).flags[READS]
    assert (flag.raw, flag.value, flag.line) == ("false", False, 4)


def test_odd_values_read_false_and_are_flagged():
    flags = env_of(
        "ACCOUNT_SCHEMA_V2_READS=maybe\n"
        "ACCOUNT_SCHEMA_V2_WRITES=' TRUE '\n"
        "ACCOUNT_SCHEMA_V2_DUAL_WRITE=off\n"
        "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=\n"
    ).flags
    assert (flags[READS].value, flags[READS].odd) == (False, True)
    assert (flags[WRITES].value, flags[WRITES].odd) == (True, False)
    assert (flags[DUAL_WRITE].value, flags[DUAL_WRITE].odd) == (False, False)
    assert (flags[ALIAS].raw, flags[ALIAS].value, flags[ALIAS].odd) == ("", True, False)


def test_absent_flags_take_their_defaults():
    env = env_of("DATABASE_URL=postgres://localhost/app\n")
    assert env.declared == dict(DEFAULTS)
    assert all(f.raw is None and f.line is None and not f.odd for f in env.flags.values())


def test_alias_can_be_switched_off():
    assert env_of("ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=0").declared[ALIAS] is False


# --- planning a write: byte-exact ---------------------------------------------------------


def test_a_write_keeps_export_spacing_quotes_comments_and_line_endings():
    text = (
        "# ===== Accounts =====\n"
        'export ACCOUNT_SCHEMA_V2_READS = "false"  # flip at stage C\r\n'
        "ACCOUNT_SCHEMA_V2_WRITES='no'\n"
        "ACCOUNT_SCHEMA_V2_DUAL_WRITE=`off`\n"
        "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=   true   # keep\n"
        "TAIL=1"
    )
    assert planned(text, ALL_CHANGES) == (
        "# ===== Accounts =====\n"
        'export ACCOUNT_SCHEMA_V2_READS = "true"  # flip at stage C\r\n'
        "ACCOUNT_SCHEMA_V2_WRITES='true'\n"
        "ACCOUNT_SCHEMA_V2_DUAL_WRITE=`off`\n"  # already false: untouched
        "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=   false   # keep\n"
        "TAIL=1"
    )


def test_a_crlf_file_stays_crlf():
    text = "A=1\r\nACCOUNT_SCHEMA_V2_READS=false\r\nB=2\r\n"
    assert planned(text, {READS: True}) == "A=1\r\nACCOUNT_SCHEMA_V2_READS=true\r\nB=2\r\n"


def test_a_missing_final_newline_stays_missing():
    text = "A=1\nACCOUNT_SCHEMA_V2_READS=false"
    assert planned(text, {READS: True}) == "A=1\nACCOUNT_SCHEMA_V2_READS=true"


def test_an_empty_value_gets_one():
    text = "ACCOUNT_SCHEMA_V2_READS=\nACCOUNT_SCHEMA_V2_WRITES= # later\nX=1"
    assert planned(text, {READS: True, WRITES: True}) == (
        "ACCOUNT_SCHEMA_V2_READS=true\nACCOUNT_SCHEMA_V2_WRITES=true # later\nX=1"
    )


def test_every_occurrence_of_a_duplicate_is_rewritten():
    text = "ACCOUNT_SCHEMA_V2_READS=true\nX=1\nexport ACCOUNT_SCHEMA_V2_READS='maybe'\n"
    assert planned(text, {READS: True}) == (
        "ACCOUNT_SCHEMA_V2_READS=true\nX=1\nexport ACCOUNT_SCHEMA_V2_READS='true'\n"
    )


def test_a_multiline_flag_value_becomes_one_line():
    text = 'ACCOUNT_SCHEMA_V2_READS="tr\nue" # odd\nX=1\n'
    assert planned(text, {READS: True}) == 'ACCOUNT_SCHEMA_V2_READS="true" # odd\nX=1\n'


def test_an_absent_flag_joins_the_group():
    text = (
        "DATABASE_URL=postgres://db/app\n"
        "\n"
        f"{GROUP_COMMENT}\n"
        "# READS goes first\n"
        "ACCOUNT_SCHEMA_V2_WRITES=false\n"
        "\n"
        "OTHER=1\n"
    )
    assert planned(text, {ALIAS: False, READS: True}) == (
        "DATABASE_URL=postgres://db/app\n"
        "\n"
        f"{GROUP_COMMENT}\n"
        "# READS goes first\n"
        "ACCOUNT_SCHEMA_V2_WRITES=false\n"
        "ACCOUNT_SCHEMA_V2_READS=true\n"
        "ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=false\n"
        "\n"
        "OTHER=1\n"
    )


def test_the_group_does_not_end_inside_a_quoted_value():
    text = f'{GROUP_COMMENT}\nNOTE="first\n\nlast"\n\nOTHER=1\n'
    assert planned(text, {READS: True}) == (
        f'{GROUP_COMMENT}\nNOTE="first\n\nlast"\nACCOUNT_SCHEMA_V2_READS=true\n\nOTHER=1\n'
    )


def test_the_group_comment_inside_a_quoted_value_is_not_the_group():
    text = f'PEM="a\n{GROUP_COMMENT}\nb"\nX=1\n'
    assert planned(text, {READS: True}) == f"{text}ACCOUNT_SCHEMA_V2_READS=true\n"


def test_without_a_group_an_absent_flag_goes_at_the_end_with_the_files_line_ending():
    text = "A=1\r\nB=2\r\nC=3"
    assert planned(text, {READS: True, DUAL_WRITE: True}) == (
        "A=1\r\nB=2\r\nC=3\r\nACCOUNT_SCHEMA_V2_READS=true\r\nACCOUNT_SCHEMA_V2_DUAL_WRITE=true"
    )


def test_an_empty_file_gets_its_first_line():
    assert planned("", {READS: True}) == "ACCOUNT_SCHEMA_V2_READS=true\n"


def test_setting_the_declared_value_changes_nothing():
    text = "ACCOUNT_SCHEMA_V2_READS=maybe\nACCOUNT_SCHEMA_V2_WRITES=YES\n"
    env = env_of(text)
    assert plan_flag_change(env, {READS: False, WRITES: True}) == text.encode()
    assert env_diff(env, {READS: False, WRITES: True}) == ""


def test_an_absent_flag_is_written_even_at_its_default():
    assert planned("A=1\n", {ALIAS: True}) == "A=1\nACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=true\n"


def test_an_unknown_flag_is_bad_input():
    with pytest.raises(EnvFileError, match="ACCOUNT_SCHEMA_V3_READS is not a flag"):
        plan_flag_change(env_of(""), {"ACCOUNT_SCHEMA_V3_READS": True})


def test_an_edit_dotenv_would_misread_is_refused():
    # dotenv reads "FOO:" plus a line break as FOO set to the whole next line.
    with pytest.raises(EnvFileError, match="cannot be changed safely"):
        plan_flag_change(env_of("X=1\nFOO:"), {READS: True})


def test_env_diff_shows_the_change_and_no_neighbouring_secret():
    env = env_of("SECRET=hunter2\r\nACCOUNT_SCHEMA_V2_READS=false\r\nB=2\r\n")
    assert env_diff(env, {READS: True}).splitlines() == [
        "--- deploy.env (now)",
        "+++ deploy.env (after)",
        "@@ -2 +2 @@",
        "-ACCOUNT_SCHEMA_V2_READS=false",
        "+ACCOUNT_SCHEMA_V2_READS=true",
    ]


# --- generated env files ------------------------------------------------------------------

QUOTES = "'\"`"
# Fixed pools keep generation cheap (one draw per piece) so 10,000 files fit in seconds.
TEXTS = (
    "",
    "abc",
    "postgres://app:s3cr=t@db:5432/app?sslmode=require",
    "https://api.example.com/v1",
    "value with spaces",
    "  padded  ",
    "héllo wörld",
    "漢字テスト",
    "Ωжš 🙂",
    "a=b=c",
    "x:y",
    "{}[]()<>",
    "semi;colon,comma",
    "$HOME/path",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "-----BEGIN PRIVATE KEY-----",
)
HASH_TEXTS = (*TEXTS, "x#y", "# not a comment", "a #b")
MIDDLE_LINES = (*TEXTS, GROUP_COMMENT, f"{READS}=true", f"export {ALIAS}=0", "# inside")
COMMENTS = (
    "",
    "# Section",
    "# it's \"quoted\" and `ticked`",
    "# ACCOUNT_SCHEMA_V2_READS=true",
    "#" * 40,
    "# ===== API =====",
    "# ünïcødé 🙂",
    GROUP_COMMENT,
    " ",
    "\t",
)
INLINE_COMMENTS = ("", " # note", "   # ünï 🙂", "\t# x=1", "# tight")
HEADS = ("", "export ", "  ", "export  ")
EQUALS = ("=", " = ", "=\t", " =", "= ", "\t=  ")
OTHER_KEYS = (
    "DATABASE_URL",
    "API_BASE",
    "JWT_PRIVATE_KEY",
    "FEATURE.X-Y",
    "ACCOUNT_SCHEMA_V2_READS_OLD",
    "account_schema_v2_reads",
    "ACCOUNT_SCHEMA_V2",
)
FLAG_WORDS = ("true", "false", "1", "0", "yes", "no", "on", "off", "TRUE", "False", " On ")
ODD_WORDS = ("maybe", "enabled", "tru e", "ünï")
EMPTY_WORDS = ("", "  ")

texts = st.sampled_from(TEXTS)
quotes = st.sampled_from(QUOTES)
json_values = st.dictionaries(texts, texts, max_size=3)
escaped_parts = st.lists(st.sampled_from(HASH_TEXTS), max_size=4)
middle_lines = st.lists(st.sampled_from(MIDDLE_LINES), max_size=3)
# Drawn as one choice each: every draw costs, and 10,000 files must stay quick.
shapes = st.sampled_from(list(product(HEADS, EQUALS, INLINE_COMMENTS)))
flag_values = st.sampled_from(
    list(product(FLAG_WORDS + ODD_WORDS + EMPTY_WORDS, ["plain", "quoted", "multiline"]))
)
other_values = st.sampled_from(["plain", "quoted", "json", "escapes", "multiline"])


@st.composite
def assignment(draw, keys: tuple[str, ...]) -> list[str]:
    """`[export ]KEY = value [# comment]`, the value plain, quoted, JSON or multi-line."""
    key = draw(st.sampled_from(keys))
    export, equal, comment = draw(shapes)
    head = export + key + equal
    if key in FLAG_NAMES:
        word, kind = draw(flag_values)
    else:
        kind = draw(other_values)
        word = draw(texts) if kind in ("plain", "quoted") else ""
    if kind == "json":
        lines = [f"{head}'{json.dumps(draw(json_values), ensure_ascii=False)}'"]
    elif kind == "escapes":
        lines = [head + '"' + "\\n".join(draw(escaped_parts)) + '"']
    elif kind == "multiline":
        quote = draw(quotes)
        lines = [head + quote + draw(texts), *draw(middle_lines), draw(texts) + quote]
    elif kind == "quoted":
        quote = draw(quotes)
        lines = [head + quote + word + quote]
    else:
        lines = [head + word]
    lines[-1] += comment
    return lines


line_lists = st.lists(
    st.one_of(
        st.sampled_from(COMMENTS).map(lambda line: [line]),
        assignment(OTHER_KEYS),
        assignment(FLAG_NAMES),
    ),
    max_size=16,
)


@st.composite
def env_texts(draw) -> str:
    """Env files of banners, comments, blank lines and assignments; CRLF, LF or both."""
    lines = [line for item in draw(line_lists) for line in item]
    # Bit i set: line i ends in CRLF. All LF, all CRLF, or a mix.
    crlf = draw(st.sampled_from([0, -1]) | st.integers(0, 2 ** len(lines) - 1))
    ends = ["\r\n" if crlf >> i & 1 else "\n" for i in range(len(lines))]
    text = "".join(line + end for line, end in zip(lines, ends))
    if lines and draw(st.booleans()):
        text = text[: -len(ends[-1])]  # no final newline
    return text


changes_st = st.dictionaries(st.sampled_from(FLAG_NAMES), st.booleans())


def reference_read(text: str) -> tuple[dict[str, tuple[str, int]], set[int]]:
    """A plain line-by-line reading, enough for what `env_texts` makes.

    Gives each key's (value, 1-based line) and the indices of lines holding flags.
    """
    lines = re.split(r"\r\n|\n", text)
    found: dict[str, tuple[str, int]] = {}
    flag_lines: set[int] = set()
    i = 0
    while i < len(lines):
        first = i
        match = re.fullmatch(r"[ \t]*(?:export[ \t]+)?([\w.-]+)[ \t]*=[ \t]*(.*)", lines[i])
        i += 1
        if not match:
            continue
        key, rest = match.groups()
        if rest and rest[0] in QUOTES:
            quote, body = rest[0], rest[1:]
            while quote not in body:
                body += "\n" + lines[i]
                i += 1
            value = body[: body.index(quote)]
            if quote == '"':
                value = value.replace("\\n", "\n")
        else:
            value = rest.split("#", 1)[0].strip()
        found[key] = (value, first + 1)
        if key in FLAG_NAMES:
            flag_lines.update(range(first, i))
    return found, flag_lines


def reference_flag(raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def non_flag_lines(data: bytes) -> list[bytes]:
    _, flag_lines = reference_read(data.decode("utf-8"))
    return [line for i, line in enumerate(data.splitlines(keepends=True)) if i not in flag_lines]


def assert_reads(env: EnvFile, expected: dict[str, bool]) -> None:
    """`env` says `expected`, and so does the independent reading of its text."""
    found, _ = reference_read(env.text)
    assert env.declared == expected
    assert {
        name: reference_flag(found.get(name, (None,))[0], DEFAULTS[name]) for name in FLAG_NAMES
    } == expected


BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@settings(BASE, max_examples=READ_EXAMPLES)
@given(env_texts())
def test_reading_matches_a_plain_reading(text):
    found, _ = reference_read(text)
    for name, flag in env_of(text).flags.items():
        raw, line = found.get(name, (None, None))
        word = (raw or "").strip().lower()
        assert (flag.raw, flag.line) == (raw, line)
        assert flag.value == reference_flag(raw, DEFAULTS[name])
        assert flag.odd == (word not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"))


@settings(BASE, max_examples=PLAN_EXAMPLES)
@given(env_texts(), changes_st)
def test_a_planned_write_changes_only_flag_lines(text, changes):
    env = env_of(text)
    old = text.encode()
    new = plan_flag_change(env, changes)

    assert_reads(env_of(new.decode()), {**env.declared, **changes})
    old_rest, new_rest = non_flag_lines(old), non_flag_lines(new)
    if old and not old.endswith(b"\n") and old_rest:
        # A flag appended after an unterminated last line gives that line an ending.
        assert new_rest[-1] in (old_rest[-1], old_rest[-1] + b"\n", old_rest[-1] + b"\r\n")
        old_rest, new_rest = old_rest[:-1], new_rest[:-1]
    assert new_rest == old_rest
    assert not old or new.endswith(b"\n") == old.endswith(b"\n")


@settings(BASE, max_examples=NOOP_EXAMPLES)
@given(env_texts(), st.sets(st.sampled_from(FLAG_NAMES)))
def test_writing_the_declared_values_back_is_a_noop(text, names):
    env = env_of(text)
    same = {name: env.flags[name].value for name in names if env.flags[name].raw is not None}
    assert plan_flag_change(env, same) == text.encode()
    assert env_diff(env, same) == ""


@pytest.fixture(scope="module")
def disk_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("disk")


@settings(BASE, max_examples=DISK_EXAMPLES)
@given(env_texts(), changes_st, st.sampled_from([0o600, 0o640, 0o644, 0o664, 0o400, 0o755]))
def test_write_flags_on_disk(disk_folder, text, changes, mode):
    path = disk_folder / "deploy.env"
    path.unlink(missing_ok=True)  # the last example may have left it read-only
    path.write_bytes(text.encode())
    path.chmod(mode)
    env = read_env_file(path)

    after = write_flags(env, changes)

    assert path.read_bytes() == plan_flag_change(env, changes)
    assert stat.S_IMODE(path.stat().st_mode) == mode == after.mode
    assert_reads(after, {**env.declared, **changes})
    assert list(disk_folder.iterdir()) == [path]


# --- writing to disk ------------------------------------------------------------------------


def test_write_flags_returns_the_file_as_reread(tmp_path):
    path = tmp_path / "deploy.env"
    path.write_bytes(b"A=1\nACCOUNT_SCHEMA_V2_READS=false\n")
    after = write_flags(read_env_file(path), {READS: True})
    assert after.written == "replaced" and after.model_copy(update={"written": None}) == read_env_file(path)
    assert after.flags[READS].raw == "true"


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "ternent.env"
    target.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    target.chmod(0o640)
    link = tmp_path / "links" / ".env"
    link.symlink_to(Path("..") / "real" / "ternent.env")

    after = write_flags(read_env_file(link), {READS: True})

    assert link.is_symlink() and os.readlink(link) == str(Path("..") / "real" / "ternent.env")
    assert target.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=true\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (after.path, after.declared[READS]) == (link, True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".env", "links", "real", "ternent.env"]


def test_a_file_changed_on_disk_is_not_overwritten(tmp_path):
    path = tmp_path / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    env = read_env_file(path)
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\nOTHER_WRITER=1\n")

    with pytest.raises(EnvFileChanged, match="changed on disk since it was read") as caught:
        write_flags(env, {READS: True})

    assert isinstance(caught.value, Refused)
    assert path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=false\nOTHER_WRITER=1\n"
    assert list(tmp_path.iterdir()) == [path]


def test_a_noop_write_still_notices_a_changed_file(tmp_path):
    path = tmp_path / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=true\n")
    env = read_env_file(path)
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    with pytest.raises(EnvFileChanged):
        write_flags(env, {READS: True})


def test_a_noop_write_does_not_touch_the_file(tmp_path):
    path = tmp_path / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=yes\n")
    before = path.stat()
    write_flags(read_env_file(path), {READS: True})
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=yes\n"


# --- operator errors ------------------------------------------------------------------------


def test_a_missing_file(tmp_path):
    with pytest.raises(EnvFileError, match=r"deploy\.env does not exist; check the path"):
        read_env_file(tmp_path / "deploy.env")


def test_a_broken_link(tmp_path):
    (tmp_path / ".env").symlink_to(tmp_path / "gone.env")
    with pytest.raises(EnvFileError, match=r"links to .*gone\.env, which does not exist"):
        read_env_file(tmp_path / ".env")


def test_a_folder(tmp_path):
    with pytest.raises(EnvFileError, match="is a folder, not a deploy env file"):
        read_env_file(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "deploy.env")
    with pytest.raises(EnvFileError, match="is not a regular file"):
        read_env_file(tmp_path / "deploy.env")


def test_invalid_utf8(tmp_path):
    path = tmp_path / "deploy.env"
    path.write_bytes(b"A=caf\xe9\n")
    with pytest.raises(EnvFileError, match=r"is not valid UTF-8 \(bad byte at offset 5\)"):
        read_env_file(path)


@pytest.fixture
def shared_folder():
    """A folder other users can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="cutover-envfile-"))
    folder.chmod(0o755)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder)


def run_child(code: str, path: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python, the env file path in `PATH`; EnvFileError exits 2.

    `unprivileged` runs it as `nobody` when we are root, since root ignores permission
    bits; a non-root user already meets them.
    """
    drop = {}
    if unprivileged and os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        drop = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from cutover_tui.files.envfile import READS, read_env_file, write_flags\n"
        "from cutover_tui.errors import EnvFileError\nPATH = Path(sys.argv[1])\n"
        f"try:\n    {code}\nexcept EnvFileError as exc:\n    print(exc)\n    sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        return subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            **drop,
        )
    except PermissionError:  # a container without CAP_SETUID: no honest way to test
        pytest.skip("cannot switch to user nobody here, and root reads and writes anything")


def test_an_unreadable_file(shared_folder):
    path = shared_folder / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=true\n")
    path.chmod(0o000)
    done = run_child("read_env_file(PATH)", path, unprivileged=True)
    assert (done.returncode, done.stderr) == (2, "")
    assert "cannot be read by this user (permission denied)" in done.stdout


def test_a_read_only_folder_leaves_the_file_as_it_was(shared_folder):
    path = shared_folder / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    shared_folder.chmod(0o555)
    done = run_child("write_flags(read_env_file(PATH), {READS: True})", path, unprivileged=True)
    assert (done.returncode, done.stderr) == (2, "")
    assert "Permission denied); the file was left as it was" in done.stdout
    assert path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=false\n"
    assert list(shared_folder.iterdir()) == [path]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_a_write_keeps_the_files_owner_and_group(tmp_path):
    """The API's own user must still read the file at its next start, not find root's."""
    path = tmp_path / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    os.chown(path, 4242, 4343)
    path.chmod(0o640)
    before = path.stat().st_ino
    after = write_flags(read_env_file(path), {READS: True})
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, 4343, 0o640)
    assert after.written == "replaced" and info.st_ino != before and after.declared[READS]


def test_a_file_someone_else_owns_is_written_in_place_when_a_new_one_could_not_be_theirs(shared_folder):
    path = shared_folder / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    path.chmod(0o666)  # writable by the console's user, owned by another (root, when we are root)
    shared_folder.chmod(0o777)
    done = run_child("print(write_flags(read_env_file(PATH), {READS: True}).written)", path,
                     unprivileged=True)
    assert (done.returncode, done.stderr) == (0, "")
    if os.geteuid() == 0:  # nobody may not hand a new file to root: the bytes are rewritten instead
        assert done.stdout.startswith("in place, because this user may not give a new file its owner 0:0")
    assert path.stat().st_uid == os.geteuid() and path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=true\n"
    assert list(shared_folder.iterdir()) == [path]


def test_a_file_with_other_hard_links_is_written_in_place(tmp_path):
    """A rename would leave the other name with the old flags."""
    path, other = tmp_path / "deploy.env", tmp_path / "the-apis-copy.env"
    path.write_bytes(b"# keep\nACCOUNT_SCHEMA_V2_READS=false\n")
    os.link(path, other)
    after = write_flags(read_env_file(path), {READS: True})
    assert after.written == "in place, because it has 2 hard links"
    assert other.read_bytes() == path.read_bytes() == b"# keep\nACCOUNT_SCHEMA_V2_READS=true\n"
    assert path.stat().st_ino == other.stat().st_ino and sorted(tmp_path.iterdir()) == sorted([path, other])


def test_a_bind_mounted_file_is_written_in_place(tmp_path, monkeypatch):
    """A single file bind-mounted into a container cannot be renamed over (EBUSY), as a
    Compose `volumes:` entry makes it; the kernel's answer is stood in for here."""
    path = tmp_path / "deploy.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    inode = path.stat().st_ino

    def busy(src, dst):
        raise OSError(errno.EBUSY, "Device or resource busy")
    monkeypatch.setattr(os, "replace", busy)
    after = write_flags(read_env_file(path), {READS: True})
    assert after.written == "in place, because it is a mount point (a bind-mounted file)"
    assert path.stat().st_ino == inode and path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=true\n"
    assert list(tmp_path.iterdir()) == [path]  # the temp file was removed


def test_an_in_place_write_still_refuses_a_file_changed_since_it_was_read(tmp_path):
    path, other = tmp_path / "deploy.env", tmp_path / "link.env"
    path.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\n")
    os.link(path, other)
    env = read_env_file(path)
    other.write_bytes(b"ACCOUNT_SCHEMA_V2_READS=false\nX=1\n")
    with pytest.raises(EnvFileChanged):
        write_flags(env, {READS: True})
    assert path.read_bytes() == b"ACCOUNT_SCHEMA_V2_READS=false\nX=1\n"


def test_running_out_of_room_mid_write_leaves_the_file_as_it_was(tmp_path):
    # A file-size limit makes the kernel refuse the temp file's bytes, as a full disk does.
    path = tmp_path / "deploy.env"
    path.write_bytes(b"# " + b"x" * 200 + b"\nACCOUNT_SCHEMA_V2_READS=false\n")
    done = run_child(
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64)); "
        "write_flags(read_env_file(PATH), {READS: True})",
        path,
    )
    assert (done.returncode, done.stderr) == (2, "")
    assert "(File too large); the file was left as it was" in done.stdout
    assert path.read_bytes().endswith(b"\nACCOUNT_SCHEMA_V2_READS=false\n")
    assert list(tmp_path.iterdir()) == [path]


# --- a writer killed at any moment ----------------------------------------------------------


def test_a_killed_writer_leaves_the_old_or_the_new_file(tmp_path):
    """SIGKILL a writer KILLS times at random moments: the file is always whole.

    Each kill may leave one temp file, named so it cannot pass for the env file.
    """
    path = tmp_path / "deploy.env"
    pem = "\r\n".join(["-----BEGIN PRIVATE KEY-----", *["MIIEvQIBADANBgkqhkiG9w0B" * 3] * 40])
    path.write_bytes(
        f'# ===== API =====\r\nJWT_PRIVATE_KEY="{pem}"\r\n\r\n{GROUP_COMMENT}\r\n'
        "ACCOUNT_SCHEMA_V2_READS=false  # stage C\r\nACCOUNT_SCHEMA_V2_WRITES=false".encode()
    )  # a few KB, like real files with keys, so a torn write would have room to show
    env = read_env_file(path)
    whole = {env.text.encode(): False, plan_flag_change(env, {READS: True}): True}
    leftover = re.compile(rf"\.deploy\.env{re.escape(TEMP_INFIX)}\w+")
    child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(7)
    seen = set()
    for kill in range(1, KILLS + 1):
        child = subprocess.Popen(
            [sys.executable, str(WRITER_CHILD), str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env,
        )
        try:
            assert child.stdout.readline() == "writing\n"
            time.sleep(rng.uniform(0.001, 0.02))
            assert child.poll() is None, "the writer stopped before it was killed"
        finally:
            child.kill()
            child.wait()
            child.stdout.close()

        content = path.read_bytes()
        assert content in whole
        assert read_env_file(path).declared[READS] is whole[content]
        seen.add(content)
        strays = [p.name for p in tmp_path.iterdir() if p != path]
        assert len(strays) <= kill
        assert all(leftover.fullmatch(name) for name in strays)
    assert len(seen) == 2

