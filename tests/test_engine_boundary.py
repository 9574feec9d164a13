"""The engine never imports the UI: each engine module loads in a fresh interpreter without textual."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

ENGINE_MODULES = sorted(
    "cutover_tui." + ".".join(p.relative_to(ROOT / "cutover_tui").with_suffix("").parts)
    for p in (ROOT / "cutover_tui").rglob("*.py")
    if "tui" not in p.relative_to(ROOT / "cutover_tui").parts[:1] and p.name != "__init__.py"
)


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_module_imports_without_textual_or_rich(module):
    code = f"import sys, {module}; bad = [m for m in ('textual', 'rich') if m in sys.modules]; print(bad)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_there_are_engine_modules():
    assert "cutover_tui.matrix" in ENGINE_MODULES and "cutover_tui.envfile" in ENGINE_MODULES
