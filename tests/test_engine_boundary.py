"""The engine never imports the faces or the demo: each engine module loads in a fresh interpreter
without textual, rich, starlette or the demo package (import-linter checks the same statically)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT

ENGINE_MODULES = sorted(
    "cutover_tui." + ".".join(p.relative_to(ROOT / "cutover_tui").with_suffix("").parts)
    for p in (ROOT / "cutover_tui").rglob("*.py")
    if p.relative_to(ROOT / "cutover_tui").parts[0] not in ("tui", "demo", "cli.py") and p.name != "__init__.py"
)


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_module_imports_without_the_ui_or_the_demo(module):
    code = (f"import sys, {module}; bad = [m for m in ('textual', 'rich', 'starlette', 'cutover_tui.demo') "
            "if m in sys.modules]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_there_are_engine_modules():
    assert "cutover_tui.rules.matrix" in ENGINE_MODULES and "cutover_tui.files.envfile" in ENGINE_MODULES
