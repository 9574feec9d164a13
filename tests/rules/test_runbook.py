"""`runbook.toml`: the shipped file loads, bad files are refused readably, edits keep comments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import ROOT

from cutover_tui.errors import RunbookError
from cutover_tui.rules.runbook import STAGE_ORDER, load_runbook, save_setting

SHIPPED = ROOT / "runbook.toml"


@pytest.fixture
def runbook_file(tmp_path: Path) -> Path:
    """A copy of the shipped runbook, alone in its own folder."""
    path = tmp_path / "deploy" / "runbook.toml"
    path.parent.mkdir()
    shutil.copyfile(SHIPPED, path)
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def refusal(path: Path) -> str:
    with pytest.raises(RunbookError) as caught:
        load_runbook(path)
    return str(caught.value)


def test_shipped_runbook_loads_with_paths_beside_it():
    runbook = load_runbook(SHIPPED)
    assert tuple(stage.id for stage in runbook.stages) == STAGE_ORDER
    assert runbook.source == SHIPPED
    assert runbook.paths.sql_dir == SHIPPED.parent / "sql" and runbook.paths.sql_dir.is_dir()


def test_relative_paths_are_taken_from_the_file_not_the_working_folder(runbook_file, tmp_path, monkeypatch):
    edit(runbook_file, 'report_dir = "reports"', 'report_dir = "/srv/cutover/reports"')
    monkeypatch.chdir(tmp_path)
    paths = load_runbook(Path("deploy/runbook.toml")).paths
    folder = runbook_file.parent.resolve()
    assert paths.env_file == folder / ".ops/ternent-api/.env"
    assert paths.sql_dir == folder / "sql"
    assert paths.report_dir == Path("/srv/cutover/reports")


@pytest.mark.parametrize(("edits", "key", "allowed"), [
    pytest.param({'passing_verifies_before_archive = 3': 'passing_verifies_before_archive = "three"'},
                 "gates.passing_verifies_before_archive", ["should be a valid integer"], id="wrong type"),
    pytest.param({'id = "G"': 'id = "X"'},
                 "stages.3.id", ["""should be 'A', '0', 'B', 'G', 'C', 'D', 'E', "E'" or 'F' (got 'X')"""],
                 id="bad stage name"),
    pytest.param({"confidence_period_hours = 24.0": "confidence_period_hours = -1.0"},
                 "gates.confidence_period_hours", ["greater than 0 (got -1.0)"],
                 id="negative confidence period"),
    pytest.param({'base = "http://localhost:3000"': 'base = "localhost:3000"'},
                 "api.base", ["must start with http:// or https://"], id="bad API base"),
    pytest.param({"[gates]\n": '[gates]\ncolour = "red"\n'},
                 "gates.colour", ["confidence_period_hours", "passing_verifies_before_archive"],
                 id="unknown key"),
    pytest.param({'id = "C"\ntitle = "Reads on v2"': 'id = "D"\ntitle = "Reads on v2"',
                  'id = "D"\ntitle = "Dual-write"': 'id = "C"\ntitle = "Dual-write"'},
                 "stages", ["A, 0, B, G, C, D, E, E', F"],
                 id="stages out of order"),
])
def test_invalid_file_is_refused_naming_file_key_and_what_is_allowed(runbook_file, edits, key, allowed):
    for old, new in edits.items():
        edit(runbook_file, old, new)
    message = refusal(runbook_file)
    assert message.startswith(f"{runbook_file}: key `{key}`: ")
    assert all(fragment in message for fragment in allowed)
    assert message.endswith("; fix the file and start again.") and len(message) < 400


def test_toml_syntax_error_names_the_file_and_the_line(runbook_file):
    line = runbook_file.read_text(encoding="utf-8").splitlines().index("[api]") + 1
    edit(runbook_file, "[api]", "[api")
    message = refusal(runbook_file)
    assert message.startswith(f"{runbook_file}: not valid TOML (")
    assert f"at line {line} " in message


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "runbook.toml"
    assert refusal(missing) == f"Runbook file {missing} does not exist; pass --runbook PATH or create it."


@pytest.mark.parametrize(("key", "value", "line_before", "line_after"), [
    ("gates.confidence_period_hours", 48.5,
     "confidence_period_hours = 24.0", "confidence_period_hours = 48.5"),
    ("gates.passing_verifies_before_archive", 5,
     "passing_verifies_before_archive = 3", "passing_verifies_before_archive = 5"),
    ("api.base", "https://ops.example", 'base = "http://localhost:3000"', 'base = "https://ops.example"'),
])
def test_save_setting_changes_one_value_and_keeps_every_comment(
        runbook_file, key, value, line_before, line_after):
    before = runbook_file.read_text(encoding="utf-8")
    saved = save_setting(runbook_file, key, value)
    assert runbook_file.read_text(encoding="utf-8") == before.replace(line_before, line_after)
    section, name = key.split(".")
    assert getattr(getattr(saved, section), name) == value
    assert load_runbook(runbook_file) == saved


@pytest.mark.parametrize(("key", "value", "complaint"), [
    ("gates.passing_verifies_before_archive", 0, "greater than or equal to 1 (got 0)"),
    ("gates.passing_verifies_before_archive", "three", "should be a valid integer"),
    ("api.base", "ftp://ops.example", "must start with http:// or https://"),
    ("gates.colour", 1, "unknown key `gates.colour`"),
    ("colours.gates", 1, "there is no table `colours` for key `colours.gates`"),
])
def test_save_setting_refuses_a_bad_key_or_value_and_leaves_the_file_alone(
        runbook_file, key, value, complaint):
    before = runbook_file.read_bytes()
    with pytest.raises(RunbookError) as caught:
        save_setting(runbook_file, key, value)
    assert str(caught.value).startswith(f"{runbook_file}: ")
    assert complaint in str(caught.value)
    assert runbook_file.read_bytes() == before
    assert list(runbook_file.parent.iterdir()) == [runbook_file]  # no temporary file left behind


def test_shipped_legal_flags_are_the_six_runbook_rows():
    rows = ["".join("FT"[bit] for bit in (flags.reads, flags.writes, flags.dual_write))
            for flags in load_runbook(SHIPPED).legal_flags()]
    assert sorted(rows) == sorted(["FFF", "FFT", "TFF", "TFT", "TTT", "TTF"])
