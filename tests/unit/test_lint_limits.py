"""Test: ruff's size limits (pylint's returns, branches and statements) hold for the whole repository, and their
list of per-file exceptions in pyproject.toml only shrinks."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIMITS = ("PLR0911", "PLR0912", "PLR0915")
QUOTE = '"' * 3  # a module docstring's opening
# The exceptions when the limits were switched on. Remove an entry here when its file is brought under them
# (the test below says when); never add one: split the function instead.
AT_MOST = {
    "operator/infertune/handlers.py": {"PLR0915"},
    "operator/infertune/sim/sweep.py": {"PLR0912", "PLR0915"},
    "operator/infertune/sim/policies.py": {"PLR0911"},
    "operator/infertune/sim/scenario.py": {"PLR0911"},
    "e2e/demo.py": {"PLR0912", "PLR0915"},
}


def config() -> dict[str, object]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint: dict[str, object] = project["tool"]["ruff"]["lint"]
    return lint


def exceptions() -> dict[str, set[str]]:
    ignores = config().get("per-file-ignores") or {}
    assert isinstance(ignores, dict)
    return {path: set(codes) & set(LIMITS) for path, codes in ignores.items() if set(codes) & set(LIMITS)}


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, check=False)


def test_the_limits_are_on() -> None:
    assert not set(LIMITS) & set(config()["ignore"]), "the size limits must not be ignored for the whole project"
    assert "PL" in config()["select"]


def test_the_exceptions_only_shrink() -> None:
    grown = {path: codes - AT_MOST.get(path, set()) for path, codes in exceptions().items()}
    assert {p: c for p, c in grown.items() if c} == {}, "split the function instead of adding an exception"


def test_every_exception_is_still_needed() -> None:
    # Lint the excepted files with the exceptions cleared: each code listed must still be broken there.
    out = ruff("--select", ",".join(LIMITS), "--config", "lint.per-file-ignores = {}", "--output-format", "json",
               *exceptions())
    found: dict[str, set[str]] = {}
    for hit in json.loads(out.stdout):
        found.setdefault(str(pathlib.Path(hit["filename"]).relative_to(ROOT)), set()).add(hit["code"])
    stale = {path: codes - found.get(path, set()) for path, codes in exceptions().items()}
    assert {p: c for p, c in stale.items() if c} == {}, "under the limit now: remove it from the list (and AT_MOST)"


def test_the_core_has_no_exception() -> None:
    # Issue 17: the pure core (decide, its planner and sizing steps, rollout, ...) passes the limits itself.
    pure = {str(f.relative_to(ROOT)) for f in (ROOT / "operator" / "infertune").rglob("*.py")
            if f.read_text(encoding="utf-8").startswith(QUOTE + "Pure")}
    assert "operator/infertune/decide.py" in pure and "operator/infertune/rollout.py" in pure
    assert not pure & set(exceptions())


def _too_big(kind: str) -> str:
    if kind == "PLR0911":  # 7 returns
        body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(6)) + "    return -1\n"
    elif kind == "PLR0912":  # 13 branches
        body = "".join(f"    if x == {i}:\n        x += {i}\n" for i in range(13)) + "    return x\n"
    else:  # 61 statements
        body = "".join(f"    x += {i}\n" for i in range(60)) + "    return x\n"
    return f'"""Pure: planted."""\n\n\ndef f(x: int) -> int:\n{body}'


@pytest.mark.parametrize("code", LIMITS)
def test_a_new_module_over_a_limit_fails_the_lint(code: str) -> None:
    # As if the file were added to the package: same configuration, its would-be path.
    out = ruff("--stdin-filename", "operator/infertune/planted.py", "-", stdin=_too_big(code))
    assert out.returncode == 1
    assert code in out.stdout
