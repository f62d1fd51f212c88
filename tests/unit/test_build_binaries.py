"""Test: e2e/build-binaries.sh's progress lines, quiet log and failure report, against a stand-in `go` tool."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "e2e" / "build-binaries.sh"
COMPONENTS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok", "kwokctl"]

# A stand-in for the go tool: answers what the script asks, prints module-download chatter on stderr like the
# real one, "builds" a binary as a small script, and fails the step named in $FAKE_GO_FAIL.
FAKE_GO = r"""#!/usr/bin/env bash
set -eu
binary() { printf '#!/bin/sh\necho "%s version v0"\n' "$(basename "$1")" > "$1"; chmod +x "$1"; }
chatter() { for i in 1 2 3; do echo "go: downloading example.com/m$i v1.0.$i" >&2; done; }
case "$1 ${2:-}" in
  "env GOVERSION") echo "${FAKE_GO_VERSION:-go1.26.0}" ;;
  "mod download")
    mod="$FAKE_GO_DIR/kubernetes.mod"
    { echo "replace ("
      for i in $(seq 1 30); do echo "	k8s.io/s$i => ./staging/src/k8s.io/s$i"; done
      echo ")"; } > "$mod"
    chatter
    [ "${FAKE_GO_FAIL:-}" != download ] || { echo '{"Error": "proxy says no"}'; exit 1; }
    echo "{\"GoMod\": \"$mod\"}" ;;
  "get "*|"mod init") chatter ;;
  "build "*)
    out=""; while [ $# -gt 0 ]; do [ "$1" != -o ] || out=$2; shift; done
    name=$(basename "$out" .tmp)
    [ "${FAKE_GO_FAIL:-}" != "$name" ] || { echo "$name.go:1: undefined: nonsense" >&2; exit 2; }
    binary "$out" ;;
  "install "*)
    chatter
    for a in "$@"; do case $a in *@*) p=${a%@*}; binary "$GOBIN/${p##*/}" ;; esac; done ;;
  *) echo "fake go: unexpected $*" >&2; exit 3 ;;
esac
"""


def run(tmp: pathlib.Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "go").write_text(FAKE_GO)
    (fake / "go").chmod(0o755)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GOMODCACHE", "GOCACHE", "K8S_", "ETCD_"))}
    full.update(PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", INFERTUNE_CACHE=str(tmp / "cache"),
                FAKE_GO_DIR=str(fake), **env)
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60, check=False)


def progress(stderr: str) -> list[tuple[int, int, str, int, int]]:
    """(index, total, component, seconds so far, seconds left) of each progress line."""
    found = re.findall(r"^\[build-binaries\] \[(\d+)/(\d+)\] ([\w-]+): (\d+)m(\d\d)s so far, about (\d+)m(\d\d)s left$",
                       stderr, flags=re.M)
    return [(int(i), int(n), c, int(m) * 60 + int(s), int(lm) * 60 + int(ls)) for i, n, c, m, s, lm, ls in found]


def test_a_cold_build_prints_one_line_per_component_and_keeps_the_chatter_in_the_log(tmp_path: pathlib.Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = progress(done.stderr)
    assert [(i, n, c) for i, n, c, _, _ in lines] == [(i + 1, 7, c) for i, c in enumerate(COMPONENTS)]
    # Before anything has finished the estimate is the measured figures' sum; it only shrinks afterwards
    # (the stand-in builds in no time, so the scaled rest falls to about nothing).
    assert lines[0][4] > 60 and lines[-1][4] < lines[0][4]
    assert "go: downloading" not in done.stderr
    log = (tmp_path / "cache" / "build.log").read_text()
    assert "go: downloading example.com/m1" in log
    assert re.search(r"^\[build-binaries\] cache .*cache: \S+ \(binaries \S+, Go modules \S+, Go build cache \S+\)$",
                     done.stderr, flags=re.M), done.stderr
    bin_dir = pathlib.Path(done.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(COMPONENTS)


def test_a_second_run_prints_only_the_bin_directory(tmp_path: pathlib.Path) -> None:
    first = run(tmp_path)
    again = run(tmp_path, FAKE_GO_FAIL="download")  # would fail if it asked go for anything
    assert again.returncode == 0 and again.stderr == "" and again.stdout == first.stdout.splitlines()[-1] + "\n"


def test_only_what_is_missing_is_built_and_counted(tmp_path: pathlib.Path) -> None:
    first = run(tmp_path)
    bin_dir = pathlib.Path(first.stdout.strip().splitlines()[-1])
    (bin_dir / "kwokctl").unlink()
    (bin_dir / "etcd").unlink()
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [(i, n, c) for i, n, c, _, _ in progress(done.stderr)] == [(1, 2, "etcd"), (2, 2, "kwokctl")]


@pytest.mark.parametrize(("fail", "shown"), [
    ("download", "proxy says no"),
    ("kube-scheduler", "kube-scheduler.go:1: undefined: nonsense"),
    ("etcd", "etcd.go:1: undefined: nonsense"),
])
def test_a_failed_step_shows_the_log_tail_and_path(tmp_path: pathlib.Path, fail: str, shown: str) -> None:
    done = run(tmp_path, FAKE_GO_FAIL=fail)
    assert done.returncode == 1
    assert shown in done.stderr
    assert f"the whole output is in {tmp_path / 'cache' / 'build.log'}" in done.stderr
    assert done.stdout == ""  # no bin directory for e2e/cluster.py to trust


def test_an_old_go_is_refused_by_name(tmp_path: pathlib.Path) -> None:
    done = run(tmp_path, FAKE_GO_VERSION="go1.25.4")
    assert done.returncode == 1 and "Go go1.25.4 is too old: Go >= 1.26 is needed" in done.stderr
