"""The figures fixture of the fault and abuse harness (see support.py for the rest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .support import Figures


@pytest.fixture(scope="session")
def figures():
    collected = Figures()
    yield collected
    target = os.environ.get("CUTOVER_FIGURES")
    if target:
        Path(target).write_text(json.dumps(collected.rows, indent=2, default=str) + "\n", encoding="utf-8")
