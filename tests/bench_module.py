"""Test helper: bench/decision_quality.py (a script, not a package module) loaded as a module."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[1]


def decision_quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("decision_quality", ROOT / "bench" / "decision_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("decision_quality", module)
    spec.loader.exec_module(module)
    return module
