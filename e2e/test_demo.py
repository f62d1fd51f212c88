"""Test: `make demo` tells its story (SLOMet False at the engine's defaults, True after tuning, within 5 minutes)
and a Ctrl-C through a pipe (`... 2>&1 | tee`) leaves no process of it running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e import cluster as e2e_cluster
from e2e import demo

REPO = Path(__file__).resolve().parents[1]
# The bar: SLOMet True on the tuned revision within 5 minutes of the load starting.
SLO_DEADLINE = 300.0


def _group(pgid: int) -> list[int]:
    """Live pids of a process group (zombies excluded)."""
    done = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid, stat in (line.split()[:2] for line in done.stdout.splitlines() if line.strip())
            if not stat.startswith("Z")]


def _recorded() -> dict[str, int]:
    """What the demo and its cluster recorded: operator, twin, Prometheus, control-plane components."""
    return {name: pid for name, pid in e2e_cluster.recorded_pids().items() if e2e_cluster._alive(pid)}


def _wait_for_line(path: Path, pattern: str, timeout: float, proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = re.search(pattern, text, flags=re.MULTILINE)
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the demo ended (exit {proc.returncode}) before {pattern!r}:\n{text[-4000:]}")
        time.sleep(1)
    pytest.fail(f"no {pattern!r} within {timeout:.0f} s:\n{path.read_text(errors='replace')[-4000:]}")


@pytest.mark.timeout(720)
def test_the_demo_meets_the_slo_after_tuning_and_a_piped_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    was_up = e2e_cluster.is_up()
    piped = tmp_path / "tee.log"
    own = demo.WORKDIR / "demo.log"
    own.unlink(missing_ok=True)
    # As a user runs it: through a pipe, in a process group of its own that Ctrl-C is sent to (a terminal sends
    # SIGINT to the whole foreground group: bash, the demo and tee alike). --timeout bounds a demo that never
    # gets there.
    command = f"{sys.executable} -m e2e.demo --timeout {SLO_DEADLINE:.0f} 2>&1 | tee {piped}"
    proc = subprocess.Popen(["bash", "-c", command], cwd=REPO, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        met = _wait_for_line(piped, r"^== SLOMet True on the tuned revision (\d+) s after the load started$",
                             SLO_DEADLINE + 240, proc)
        text = piped.read_text()
        # At the defaults the load misses the SLO, measured (not Unknown): the sample's objectives sit on edges.
        before = re.search(r"^ {3}before +(\d+) / default .*SLOMet False$", text, flags=re.MULTILINE)
        assert before, text[-4000:]
        assert "ObjectivesResolvable True (AtBucketEdges)" in text
        assert text.index("SLOMet False (SLOMissed)") < text.index("decision  knobs: maxBatchSize")
        after = re.search(r"^ {3}after +(\d+) / (\w+) .*SLOMet True$", text, flags=re.MULTILINE)
        assert after and int(after.group(1)) < int(before.group(1)), text[-4000:]
        assert re.search(r"^before/after: .* \(SLOMet False -> True\); replicas \d+ -> \d+, GPUs \d+ -> \d+, "
                         r"\$[\d.]+ -> \$[\d.]+ per 1M output tokens$", text, flags=re.MULTILINE), text[-4000:]
        seconds = int(met.group(1))
        assert seconds <= SLO_DEADLINE
        print(f"demo: SLOMet True on the tuned revision {seconds} s after the load started")

        recorded = _recorded()
        assert {"demo-operator", "demo-twin", "prometheus (demo)"} <= set(recorded), recorded
        group = _group(proc.pid)
        assert len(group) >= 3  # bash, the demo, tee
    finally:
        with_ctrl_c = proc.poll() is None
        if with_ctrl_c:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert with_ctrl_c
    # tee died with the Ctrl-C; the demo's own log has the rest.
    e2e_cluster.wait_for(lambda: not _group(proc.pid), 30, message="every process of the group gone")
    leftover = {name: pid for name, pid in recorded.items() if e2e_cluster._alive(pid)}
    assert not leftover, f"still running after Ctrl-C: {leftover}"
    assert not list(e2e_cluster.DEMO_PIDS.glob("*.pid"))
    assert not (demo.WORKDIR / "prometheus" / "prometheus.pid").exists()
    if not was_up:
        assert not e2e_cluster.is_up()
        assert not any(name for name in e2e_cluster.recorded_pids() if not name.startswith(("prometheus", "demo-")))
    log = own.read_text()
    assert "== SIGINT" in log and "== shutting down" in log and "== stopped at" in log, log[-3000:]


def _cmdline_once_started(pid: int, marker: str, timeout: float = 10.0) -> str:
    """The process's command line once it names `marker` (or what it reads after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if marker in seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def test_cluster_down_stops_what_a_killed_demo_left_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A state directory of its own (no cluster in it): what a demo killed by SIGKILL leaves is its Prometheus under
    # .e2e/demo/prometheus/ and the pid files of the operator and twin whose processes outlived it.
    state = tmp_path / "state"
    monkeypatch.setattr(e2e_cluster, "STATE", state)
    monkeypatch.setattr(e2e_cluster, "KWOK_WORKDIR", state / "kwok")
    monkeypatch.setattr(e2e_cluster, "KUBECONFIG", state / "kubeconfig")
    monkeypatch.setattr(e2e_cluster, "DEMO_PIDS", state / "demo" / "pids")
    prom_dir = state / "demo" / "prometheus"
    prom_dir.mkdir(parents=True)
    e2e_cluster.DEMO_PIDS.mkdir(parents=True)
    sleeper = "import sys, time; time.sleep(120)"
    # Command lines that name the state directory (and for Prometheus its config), as the real ones do: a pid
    # whose command line does not is never signalled.
    config = f"--config.file={prom_dir / 'prometheus.yml'}"
    prom = subprocess.Popen([sys.executable, "-c", sleeper, "prometheus", config])
    twin = subprocess.Popen([sys.executable, "-c", sleeper, "--targets-dir", str(prom_dir / "targets")])
    stranger = subprocess.Popen([sys.executable, "-c", sleeper])
    try:
        (prom_dir / "prometheus.pid").write_text(f"{prom.pid}\n")
        (e2e_cluster.DEMO_PIDS / "twin.pid").write_text(str(twin.pid))
        (e2e_cluster.DEMO_PIDS / "operator.pid").write_text(str(stranger.pid))  # a recycled pid: not ours
        # One full e2e run (of many) stopped Prometheus here but not the twin, and the pytest process's view of
        # the twin was lost with it: say what down() will see of each before it looks. A child read right after
        # Popen may not have exec'd yet (its command line reads empty: one CI run failed so), and a real pid file
        # is written by a process long running: wait for the command line first.
        for p in (prom, twin):
            seen = _cmdline_once_started(p.pid, str(state))
            assert e2e_cluster._alive(p.pid) and e2e_cluster._our_process(p.pid), (p.pid, seen, str(state))
        stopped = e2e_cluster.down()
        assert prom.wait(timeout=15) is not None and twin.wait(timeout=15) is not None
        assert stranger.poll() is None
        assert stopped == [f"demo twin (pid {twin.pid})", f"prometheus (demo) (pid {prom.pid})"]
        assert f"stopped 2 process(es): demo twin (pid {twin.pid}), prometheus (demo)" in capsys.readouterr().err
        assert not list(e2e_cluster.DEMO_PIDS.glob("*.pid")) and not (prom_dir / "prometheus.pid").exists()
        assert e2e_cluster.down() == []
        assert "nothing was running" in capsys.readouterr().err
    finally:
        for p in (prom, twin, stranger):
            p.kill()
            p.wait()
