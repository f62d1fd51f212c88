"""Test: the layering docs/design.md §Layers describes, read from the code's imports (an AST walk, nothing runs):
the pure core imports no adapter, shell, twin, kopf, Kubernetes client, HTTP library, clock or file; the twin
imports neither the kopf shell nor the command line; nothing imports back up the layers; no import circle."""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib
import re
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "infertune"
DESIGN = ROOT / "docs" / "design.md"

# What each layer may import from the package, by the role its module docstring starts with. The command line
# sits on top (it starts the operator and the twin); nothing below imports it.
MAY_IMPORT = {
    "Pure": {"Pure"},
    "Adapter": {"Pure", "Adapter"},
    "Shell": {"Pure", "Adapter", "Shell"},
    "Twin": {"Pure", "Adapter", "Twin"},
    "CLI": {"Pure", "Adapter", "Shell", "Twin", "CLI"},
}
# What the core may not import from outside the package either: the outside systems' clients, and whatever does
# I/O, reads the clock or draws random numbers (a pure module gets its inputs, and `now`, as arguments).
NOT_IN_THE_CORE = {
    "kopf", "kubernetes", "prometheus_api_client", "prometheus_client", "requests", "aiohttp", "tenacity",
    "os", "subprocess", "socket", "time", "logging", "urllib", "http", "asyncio", "threading", "pathlib", "shutil",
    "tempfile", "random", "importlib",
}
# kopf is the shell's framework: the twin and the adapters run without it.
ONLY_IN_THE_SHELL = {"kopf"}
# The twin's package, its command module included, runs without the kopf shell and below the command line.
NOT_IN_THE_TWIN_PACKAGE = {"infertune.handlers", "infertune.main", "infertune.cli"}
# The rows of the layer table in docs/design.md, by their first cell.
DESIGN_ROWS = {"pure core": "Pure", "adapters": "Adapter", "shell": "Shell", "twin": "Twin", "command line": "CLI"}


@dataclasses.dataclass(frozen=True)
class Module:
    role: str  # the docstring's first word before ':' ("Pure", "Adapter", "Shell", "Twin", "CLI")
    imports: frozenset[str]  # full dotted names, relative imports resolved


def _name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(name: str, path: pathlib.Path, tree: ast.Module, known: set[str]) -> frozenset[str]:
    """Every module the file imports anywhere (top level, in a function, under TYPE_CHECKING), by full name:
    `from infertune import knee` -> infertune.knee, `from .sim import cluster` -> infertune.sim.cluster."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            modules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            found |= modules
            if len(modules) < len(node.names):
                # A name that is not a module comes from the package itself (its __init__); `from pkg import
                # module` needs only the module (the package object exists before its __init__ has finished).
                found.add(base)
    return frozenset(found)


@functools.cache
def _parse(text: str) -> ast.Module:
    return ast.parse(text)  # the planted copies repeat the package's text: each distinct file is parsed once


def read(root: pathlib.Path) -> dict[str, Module]:
    """The package under `root` (a folder named infertune): each module's role and imports."""
    paths = {_name(root, p): p for p in sorted(root.rglob("*.py"))}
    out = {}
    for name, path in paths.items():
        tree = _parse(path.read_text(encoding="utf-8"))
        role = (ast.get_docstring(tree) or "").split(":", 1)[0]
        out[name] = Module(role, _imports(name, path, tree, set(paths)))
    return out


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def problems(modules: dict[str, Module]) -> list[str]:
    """Each import that runs against the layers, and each import circle, as one line naming both ends."""
    out = []
    for name, m in sorted(modules.items()):
        if name == "infertune":
            continue  # the package's own __init__: a docstring and nothing else
        if m.role not in MAY_IMPORT:
            out.append(f"{name}: docstring starts with {m.role!r}, not one of {sorted(MAY_IMPORT)}")
            continue
        for target in sorted(m.imports):
            if target in modules and target not in ("infertune", name):
                role = modules[target].role
                if role not in MAY_IMPORT[m.role]:
                    out.append(f"{name} ({m.role}) imports {target} ({role})")
            elif m.role == "Pure" and _top(target) in NOT_IN_THE_CORE:
                out.append(f"{name} (Pure) imports {target}")
            elif m.role not in ("Shell", "CLI") and _top(target) in ONLY_IN_THE_SHELL:
                out.append(f"{name} ({m.role}) imports {target}")
            if name.startswith("infertune.sim") and target in NOT_IN_THE_TWIN_PACKAGE:
                out.append(f"{name} (in sim/) imports {target}")
    out += [f"import circle: {' -> '.join(c)}" for c in circles(modules)]
    return out


def circles(modules: dict[str, Module]) -> list[list[str]]:
    """Import circles between the package's modules, each as a path back to where it starts: at least one for
    every group of modules that import each other, none where there is no circle."""
    edges = {n: sorted(t for t in m.imports if t in modules and t not in ("infertune", n)) for n, m in modules.items()}
    found: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt in path:
                loop = path[path.index(nxt):]
                first = loop.index(min(loop))
                closed = [*loop[first:], *loop[:first], loop[first]]
                if closed not in found:
                    found.append(closed)
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(edges):
        if start not in done:
            walk(start, [start])
    return found


MODULES = read(PACKAGE)


def test_the_package_keeps_its_layers() -> None:
    assert problems(MODULES) == []


def test_the_core_is_the_modules_the_design_names() -> None:
    pure = {n for n, m in MODULES.items() if m.role == "Pure"}
    assert {"infertune.decide", "infertune.perfmodel", "infertune.knee", "infertune.scaling", "infertune.rollout",
            "infertune.render", "infertune.models", "infertune.replica", "infertune.runtimes.vllm"} <= pure


def _design_layers() -> dict[str, str]:
    """Module -> layer, from the table in docs/design.md §Layers (`sim/` is the package, `sim/commands` a module)."""
    section = DESIGN.read_text(encoding="utf-8").split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in DESIGN_ROWS:
            for entry in re.findall(r"`([\w/]+)`", cells[1]):
                layers["infertune." + entry.strip("/").replace("/", ".") + ("." if entry.endswith("/") else "")] = (
                    DESIGN_ROWS[cells[0]])
    return layers


def test_each_module_s_docstring_names_the_layer_the_design_puts_it_in() -> None:
    layers = _design_layers()
    wrong = {}
    for name, m in MODULES.items():
        if name == "infertune":
            continue
        # The most specific entry: `sim/commands` over `sim/`.
        keys = [k for k in layers if name == k or (k.endswith(".") and (name + ".").startswith(k))]
        layer = layers[max(keys, key=len)] if keys else "missing from the table"
        if layer != m.role:
            wrong[name] = (m.role, layer)
    assert wrong == {}, "module: (its docstring's role, the design's layer)"


# ---------------------------------------------------------------------------------------------- it can fail


@pytest.fixture
def copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """The package copied into tmp_path: imports are planted there, never in the real package."""
    root = tmp_path / "infertune"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert problems(read(root)) == []
    return root


def plant(root: pathlib.Path, module: str, line: str, *, at_top: bool = True) -> None:
    path = root / module
    text = path.read_text(encoding="utf-8")
    doc_end = text.index('"""', 3) + 3
    if at_top:
        path.write_text(f"{text[:doc_end]}\n{line}\n{text[doc_end:]}", encoding="utf-8")
    else:  # inside a function: a late import is an import all the same
        path.write_text(f"{text}\n\ndef _late() -> None:\n    {line}\n", encoding="utf-8")


@pytest.mark.parametrize(("module", "line", "expected"), [
    ("knee.py", "import kopf", "infertune.knee (Pure) imports kopf"),
    ("decide.py", "from kubernetes import client", "infertune.decide (Pure) imports kubernetes"),
    ("scaling.py", "import prometheus_api_client", "infertune.scaling (Pure) imports prometheus_api_client"),
    ("render.py", "import requests", "infertune.render (Pure) imports requests"),
    ("perfmodel.py", "import time", "infertune.perfmodel (Pure) imports time"),
    ("models.py", "from infertune.sim import cluster",
     "infertune.models (Pure) imports infertune.sim.cluster (Twin)"),
    ("replica.py", "import infertune.sim", "infertune.replica (Pure) imports infertune.sim (Twin)"),
    ("rollout.py", "from infertune import handlers", "infertune.rollout (Pure) imports infertune.handlers (Shell)"),
    ("runtimes/vllm.py", "from .. import kube", "infertune.runtimes.vllm (Pure) imports infertune.kube (Adapter)"),
    ("conditions.py", "from infertune import prometheus",
     "infertune.conditions (Pure) imports infertune.prometheus (Adapter)"),
    ("sim/cluster.py", "from infertune import handlers",
     "infertune.sim.cluster (Twin) imports infertune.handlers (Shell)"),
    ("sim/live.py", "from infertune import cli", "infertune.sim.live (Twin) imports infertune.cli (CLI)"),
    ("sim/fleet.py", "import kopf", "infertune.sim.fleet (Twin) imports kopf"),
    ("sim/commands.py", "from infertune import handlers",
     "infertune.sim.commands (in sim/) imports infertune.handlers"),
    ("kube.py", "from infertune import handlers", "infertune.kube (Adapter) imports infertune.handlers (Shell)"),
])
def test_a_planted_import_up_the_layers_is_caught(copy: pathlib.Path, module: str, line: str, expected: str) -> None:
    plant(copy, module, line, at_top=module != "sim/live.py")
    assert expected in problems(read(copy))


def test_a_planted_import_circle_is_caught(copy: pathlib.Path) -> None:
    # The circle this test was written after: cli imported sim/commands, which imported cli for its exit codes.
    plant(copy, "sim/commands.py", "from infertune import cli")
    assert "import circle: infertune.cli -> infertune.sim.commands -> infertune.cli" in problems(read(copy))


def test_a_module_without_its_layer_is_caught(copy: pathlib.Path) -> None:
    (copy / "stray.py").write_text('"""Helpers."""\n', encoding="utf-8")
    assert "infertune.stray: docstring starts with 'Helpers.', not one of " \
           "['Adapter', 'CLI', 'Pure', 'Shell', 'Twin']" in problems(read(copy))
