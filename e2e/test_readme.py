"""Test: the README's cluster commands, as written, against the e2e cluster (the demo's cluster is the same one)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import readme_commands as rc
from e2e import cluster as e2e_cluster
from e2e import conftest

WATCH_SECONDS = 8.0


def _script(command: rc.Command) -> str:
    return "\n".join(["set -euo pipefail", *command.setup, command.raw])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "KUBECONFIG")}


def test_the_readme_shows_each_command_run_here() -> None:
    assert sorted(c.text for c in rc.commands() if c.text in rc.RUN_IN_E2E) == sorted(rc.RUN_IN_E2E)


def test_watching_the_demo_with_kubectl_works_as_written(k8s: e2e_cluster.Kube, tmp_path: Path) -> None:
    conftest.install_operator_manifests(k8s)  # the CRD, as the demo installs it
    for command in (c for c in rc.commands() if c.text in rc.RUN_IN_E2E):
        out = tmp_path / "out.txt"
        with out.open("w") as sink:
            # Its own process group: a watch (`-w`) runs until stopped, and stopping bash alone would leave kubectl.
            proc = subprocess.Popen(["bash", "-c", _script(command)], cwd=rc.ROOT, env=_env(), stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=WATCH_SECONDS if " -w" in command.text else 60)
            except subprocess.TimeoutExpired:
                assert " -w" in command.text, f"{command.text} did not finish"
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
                code = 0  # still watching after WATCH_SECONDS: what a watch does
        text = out.read_text()
        assert code == 0, f"{command.text}:\n{text}"
        assert "error" not in text.lower() and "not found" not in text.lower(), f"{command.text}:\n{text}"


def test_the_quickstart_manifests_are_accepted_by_the_api_server(k8s: e2e_cluster.Kube) -> None:
    # What ELSEWHERE promises for the quickstart: the same files, checked by the real API server without being
    # applied (applying them would start a second operator Deployment in the session's cluster).
    conftest.install_operator_manifests(k8s)
    assert "deployment.apps/infertune" in k8s.kubectl("apply", "-k", str(rc.ROOT / "manifests"), "--dry-run=server")
    sample = rc.ROOT / "manifests" / "samples" / "vllm-llama-3.1-8b-l40s.yaml"
    assert "created (server dry run)" in k8s.kubectl("apply", "-f", str(sample), "-n", "default", "--dry-run=server")
    built = k8s.kubectl("kustomize", str(rc.ROOT / "manifests" / "monitoring"))
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule"):
        assert f"kind: {kind}" in built
