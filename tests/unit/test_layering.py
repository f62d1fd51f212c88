"""Test: the layering docs/design.md describes: a Pure module imports only pure modules, and nothing that reads
a clock, the network, files or the environment."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "operator" / "infertune"
# Modules that do I/O, read the clock or draw random numbers; a pure module gets its inputs (and `now`) as arguments.
IMPURE = {
    "os", "subprocess", "socket", "time", "logging", "urllib", "http", "asyncio", "threading",
    "pathlib", "shutil", "tempfile", "random", "kopf", "kubernetes", "prometheus_api_client", "prometheus_client",
    "requests", "tenacity", "aiohttp",
}


def _role(path: pathlib.Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.split(":", 1)[0]


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PURE = sorted(m for m, p in MODULES.items() if _role(p) == "Pure")


def imports(path: pathlib.Path) -> set[str]:
    """Every module the file imports, by full dotted name (`from infertune import knee` -> infertune.knee)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


def violations(module: str) -> list[str]:
    out = []
    for name in sorted(imports(MODULES[module])):
        if name in MODULES and name != "infertune" and _role(MODULES[name]) != "Pure":
            out.append(f"{name} ({_role(MODULES[name])})")
        elif name.split(".")[0] in IMPURE or name in IMPURE:
            out.append(name)
    return out


def test_the_core_is_the_modules_the_design_names() -> None:
    for core in ("infertune.decide", "infertune.perfmodel", "infertune.knee", "infertune.scaling",
                 "infertune.rollout", "infertune.render", "infertune.models", "infertune.runtimes.vllm"):
        assert core in PURE, core


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_only_pure_modules(module: str) -> None:
    assert violations(module) == []


def test_an_adapter_or_a_clock_in_the_core_is_caught(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Pure: broken on purpose."""\nimport time\nfrom infertune import kube, models\n')
    monkeypatch.setitem(MODULES, "infertune.bad", bad)
    assert violations("infertune.bad") == ["infertune.kube (Adapter)", "time"]
