"""Test: the repository is self-contained: no tracked file points outside the clone or at a machine's own paths."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Patterns are written so that this file does not match them itself (`\.` for a literal dot).
FORBIDDEN = {
    # The workshop the project grew in sits beside the clone; a user's clone has nothing there.
    r"\.\./shared\b": "a path into the sibling workshop directory",
    r"\bshared/(reference|calibration|traces)\b": "the workshop's reference notes or data",
    r"\bDESIGN\.md\b|\bDESIGN §": "the workshop's design page (docs/design.md is the repository's)",
    r"\breference §[A-F]": "a section of the workshop's reference notes (name the primary source instead)",
    # Absolute paths of one machine: a user's clone lives anywhere.
    r"(?<![\w.~])/(work|root|Users)/|(?<![\w.~])/home/\w": "an absolute path on one machine",
    # House rule: package registries are reached through their clients, never named.
    r"pypi\.org|pythonhosted\.org|proxy\.golang\.org|deb\.debian\.org": "a package-registry host",
}
# A relative path that climbs out of its directory: `../x`, `../../x` (not `docs/.../x`, an elided path).
CLIMB = re.compile(r"(?<![\w./])((?:\.\./)+)([\w.*-][\w.*/-]*)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
SKIP_DIRS = {".git", ".venv", ".e2e", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build"}


def tracked_files(root: pathlib.Path) -> list[pathlib.Path]:
    """The files git tracks or would track (new, not ignored); a tree without git (an sdist) is walked instead."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
        return [root / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info")]
            files += [pathlib.Path(d) / n for n in names]
        return files


def text_files(root: pathlib.Path) -> dict[str, str]:
    out = {}
    for path in tracked_files(root):
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        try:
            out[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images
            continue
    return out


def problems(root: pathlib.Path) -> list[str]:
    """Every line of a tracked text file that points outside the clone, as `path:line: what`."""
    found = []
    for rel, text in text_files(root).items():
        here = (root / rel).parent
        for n, line in enumerate(text.splitlines(), 1):
            for pattern, what in FORBIDDEN.items():
                if re.search(pattern, line):
                    found.append(f"{rel}:{n}: {what}: {line.strip()[:120]}")
            for m in CLIMB.finditer(line):
                target = (here / (m.group(1) + m.group(2))).resolve()
                if not target.is_relative_to(root):
                    found.append(f"{rel}:{n}: {m.group(0)!r} leaves the repository")
            if rel.endswith(".md"):
                for m in MD_LINK.finditer(line):
                    link = m.group(1).split("#", 1)[0]
                    if not link or re.match(r"[a-z][a-z0-9+.-]*:", link):  # an anchor, or a URL
                        continue
                    target = (here / link).resolve()
                    if not target.is_relative_to(root):
                        found.append(f"{rel}:{n}: link {link!r} leaves the repository")
                    elif not target.exists():
                        found.append(f"{rel}:{n}: link {link!r} points at nothing")
    return found


def test_no_tracked_file_points_outside_the_clone() -> None:
    assert problems(ROOT) == []


def test_the_scan_reads_every_kind_of_tracked_text() -> None:
    # The check is only as good as its file list: it must see the docs, the code, the tests and the data.
    files = text_files(ROOT)
    for expected in ("README.md", "docs/design.md", "operator/infertune/catalog.py",
                     "tests/unit/test_self_contained.py", "data/README.md", "e2e/build-binaries.sh"):
        assert expected in files, expected


# The bad lines are assembled from pieces so that this file does not contain what it forbids.
PIECES = {"up": "..", "design": "DESIGN", "ref": "reference", "work": "/work", "home": "/home", "pypi": "pypi" + ".org"}


@pytest.mark.parametrize(("line", "what"), [
    ("See `{up}/shared/{design}.md` §2.", "workshop"),
    ("Source: {up}/shared/{ref}/runtimes-metrics-gpus.md", "workshop"),
    ("the flags ({ref} §A.2)", "reference notes"),
    ("{design} §5 says so", "design page"),
    ("TRACE = '{work}/main/data/x.csv'", "absolute path"),
    ("open('{home}/alice/infertune/x')", "absolute path"),
    ("pip install --index-url https://{pypi}/simple x", "registry"),
    ("trace: {up}/{up}/{up}/elsewhere/t.csv", "leaves the repository"),
    ("[design]({up}/{up}/notes.md)", "leaves the repository"),
    ("[twin](docs/no-such-page.md)", "points at nothing"),
])
def test_each_kind_of_outside_reference_is_found(tmp_path: pathlib.Path, line: str, what: str) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "twin.md").write_text("ok\n")
    (tmp_path / "README.md").write_text(f"fine line\n{line.format(**PIECES)}\n")
    found = problems(tmp_path)
    assert len(found) >= 1 and all(f.startswith("README.md:2: ") for f in found), found
    assert what in " ".join(found), found


@pytest.mark.parametrize("line", [
    "Figures from [data/](docs/twin.md) and `data/calibration/nim.csv`",
    "trace: data/traces/t.csv   # relative to the scenario file",
    "`docs/.../planner-design.md` in ai-dynamo/dynamo",
    "the kubelet socket /var/lib/kubelet/pod-resources/kubelet.sock; cache in ~/.cache/infertune",
    "KV cache of shared prompt prefixes, [anchor](#section), [site](https://example.org/a)",
])
def test_paths_inside_the_clone_and_system_paths_pass(tmp_path: pathlib.Path, line: str) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "twin.md").write_text("ok\n")
    (tmp_path / "README.md").write_text(line + "\n")
    assert problems(tmp_path) == []
