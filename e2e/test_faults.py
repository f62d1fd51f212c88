"""Test: faults on the real control plane with Prometheus and the live twin — what must hold through each."""

from __future__ import annotations

import copy
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as e2e_cluster
from e2e import prometheus as e2e_prometheus
from e2e.conftest import OPERATOR_NAMESPACE, OPERATOR_SA, TwinProcess, install_operator_manifests, start_operator

REPO = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text())


@dataclass
class Env:
    """A namespace with its own operator and its own Prometheus, so faults stay inside this test."""

    k8s: e2e_cluster.Kube
    ns: str
    prom: e2e_prometheus.Prometheus
    prom_workdir: Path
    targets: Path
    kubeconfig: Path
    log: Path
    operator: subprocess.Popen[bytes]

    def start_operator(self) -> None:
        self.operator = start_operator(self.kubeconfig, self.log, prometheus_url=self.prom.url, metrics_port="0",
                                       extra=("--namespace", self.ns, "--metrics-window", "15"))

    def stop_operator(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.operator.poll() is None:
            self.operator.send_signal(sig)
            self.operator.wait(timeout=20)

    def get(self, name: str) -> dict[str, Any]:
        obj = self.k8s.get("inferencedeployment", name, namespace=self.ns)
        assert obj is not None
        return obj

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.get(name).get("status", {}).get("conditions", []) if c["type"] == type_), None)


@pytest.fixture
def env(k8s: e2e_cluster.Kube, twin: TwinProcess, prometheus: e2e_prometheus.Prometheus,
        tmp_path: Path) -> Iterator[Env]:
    install_operator_manifests(k8s)
    ns = f"fault-{uuid.uuid4().hex[:6]}"  # outside the session operator's e2e-* namespaces
    k8s.kubectl("create", "namespace", ns)
    workdir = tmp_path / "prometheus"
    prom = e2e_prometheus.start(workdir=workdir, targets_dir=prometheus.targets_dir)
    kubeconfig = k8s.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SA, tmp_path / "kubeconfig")
    e = Env(k8s=k8s, ns=ns, prom=prom, prom_workdir=workdir, targets=prometheus.targets_dir, kubeconfig=kubeconfig,
            log=tmp_path / "operator.log", operator=None)  # type: ignore[arg-type]
    e.start_operator()
    yield e
    e.stop_operator()
    e2e_prometheus.stop(workdir)
    k8s.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def resource(name: str, ns: str, *, ready_delay: str = "1s", **scaling: Any) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"] = {"name": name, "namespace": ns}
    body["spec"]["template"] = {"annotations": {e2e_cluster.READY_DELAY_ANNOTATION: ready_delay}}
    body["spec"]["scaling"].update({"drainTimeout": "2s", "scaleDownDelay": "30s", "coldStart": "5s",
                                    "standby": {"min": 0, "max": 0}, **scaling})
    return body


def test_prometheus_down_for_two_minutes_freezes_decisions(env: Env, twin: TwinProcess) -> None:
    env.k8s.apply(resource("prom", env.ns, minReplicas=1, maxReplicas=4))
    twin.set_load(env.ns, "prom", rate=6.0, input={"mean": 600, "cv": 0.3}, output={"mean": 60, "cv": 0.3})
    try:
        env.k8s.wait_for(lambda: (c := env.condition("prom", "MetricsAvailable")) and c["status"] == "True", 120,
                         message="metrics flowing")
    except TimeoutError:
        raise AssertionError(f"{env.condition('prom', 'MetricsAvailable')}; {twin.stats()}") from None
    time.sleep(5)
    before = env.get("prom")["status"]
    desired, knobs = before["replicas"]["desired"], before["config"]

    env.prom.stop()
    twin.set_load(env.ns, "prom", rate=0.0)  # with metrics this would scale down after 30 s
    down_since = time.monotonic()
    env.k8s.wait_for(lambda: (c := env.condition("prom", "MetricsAvailable")) and c["status"] == "False"
                     and c["reason"] == "PrometheusUnavailable", 60, message="MetricsAvailable=False")
    while time.monotonic() - down_since < 120:
        status = env.get("prom")["status"]
        assert status["replicas"]["desired"] >= desired, "scaled down on a missing signal"
        assert status["config"]["revision"] == knobs["revision"], "changed knobs on a missing signal"
        time.sleep(5)
    tuned = env.condition("prom", "Tuned")
    assert tuned is not None and tuned["reason"] == "Frozen"

    env.prom = e2e_prometheus.start(workdir=env.prom_workdir, targets_dir=env.targets, port=env.prom.port)
    env.k8s.wait_for(lambda: (c := env.condition("prom", "MetricsAvailable")) and c["status"] == "True", 120,
                     message="decisions resume after Prometheus returns")


def test_operator_killed_mid_rollout_resumes_without_duplicates_or_drops(env: Env, twin: TwinProcess) -> None:
    env.k8s.apply(resource("roll", env.ns, ready_delay="8s", minReplicas=2, maxReplicas=2))
    env.k8s.wait_for(lambda: (c := env.condition("roll", "Ready")) and c["status"] == "True", 120,
                     message="Ready")
    twin.set_load(env.ns, "roll", rate=3.0, input={"mean": 400, "cv": 0.3}, output={"mean": 80, "cv": 0.3})
    time.sleep(5)
    first = env.get("roll")["status"]["config"]["revision"]
    env.k8s.kubectl("patch", "infd", "roll", "-n", env.ns, "--type=merge", "-p",
                    '{"spec": {"engine": {"image": "vllm/vllm-openai:v0.12.0"}}}')
    env.k8s.wait_for(lambda: env.get("roll")["status"].get("target"), 30, message="the rollout started")
    env.stop_operator(signal.SIGKILL)  # mid-surge: the new pods are still loading
    time.sleep(3)
    env.start_operator()
    status = env.k8s.wait_for(lambda: (s := env.get("roll")["status"])["config"]["revision"] != first
                              and not s.get("target") and s, 120, message="the rollout completed")
    second = status["config"]["revision"]
    deployments = env.k8s.wait_for(
        lambda: (d := [x["metadata"]["name"] for x in env.k8s.list("deployment", namespace=env.ns)])
        == [f"roll-{second}"] and d, 60, message="the old revision gone")
    assert deployments == [f"roll-{second}"]
    created = [e for e in env.k8s.list("event", namespace=env.ns)
               if e.get("reason") == "RevisionCreated" and second in e.get("message", "")]
    assert len(created) == 1, "the restarted operator repeated the decision"
    time.sleep(3)
    stats = twin.stats()[f"{env.ns}/roll"]
    twin.set_load(env.ns, "roll", rate=0.0)
    assert stats["finished"] > 0
    assert stats["dropped"] == 0, stats


def test_a_deleted_gpu_node_is_replaced_by_pods_elsewhere(env: Env, k8s: e2e_cluster.Kube) -> None:
    # H100 nodes come four to a cluster, so the pods have somewhere to go.
    body = resource("node", env.ns, minReplicas=2, maxReplicas=2)
    body["spec"]["accelerator"]["type"] = "h100-sxm-80gb"
    env.k8s.apply(body)
    env.k8s.wait_for(lambda: (s := env.get("node").get("status")) and s["replicas"]["serving"] == 2, 120,
                     message="two serving")
    pods = k8s.list("pod", namespace=env.ns, selector="infertune.io/deployment=node")
    victim = pods[0]["spec"]["nodeName"]
    node = k8s.get("node", victim)
    assert node is not None
    k8s.kubectl("delete", "node", victim, "--wait=false")
    try:
        def recovered() -> bool:
            live = [p for p in k8s.list("pod", namespace=env.ns, selector="infertune.io/deployment=node")
                    if not p["metadata"].get("deletionTimestamp")]
            return (len(live) == 2 and all(e2e_cluster.is_ready(p) and p["spec"]["nodeName"] != victim for p in live)
                    and env.get("node")["status"]["replicas"]["serving"] == 2)
        k8s.wait_for(recovered, 180, message="pods rescheduled off the deleted node and serving again")
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            node["metadata"].pop(key, None)
        # The GPU capacity lives in the node's status, which a create keeps: without it the node would come
        # back with no nvidia.com/gpu and the other tests could not schedule there.
        status = node.get("status") or {}
        node["status"] = {k: status[k] for k in ("capacity", "allocatable") if k in status}
        k8s.apply(node)  # give the node back to the other tests (kwok re-adopts it)


def test_kube_apiserver_restarted_mid_rollout_the_operator_reconnects_without_duplicates(
        env: Env, twin: TwinProcess) -> None:
    env.k8s.apply(resource("api", env.ns, ready_delay="8s", minReplicas=2, maxReplicas=2))
    env.k8s.wait_for(lambda: (c := env.condition("api", "Ready")) and c["status"] == "True", 120, message="Ready")
    twin.set_load(env.ns, "api", rate=3.0, input={"mean": 400, "cv": 0.3}, output={"mean": 80, "cv": 0.3})
    time.sleep(5)
    first = env.get("api")["status"]["config"]["revision"]
    env.k8s.kubectl("patch", "infd", "api", "-n", env.ns, "--type=merge", "-p",
                    '{"spec": {"engine": {"image": "vllm/vllm-openai:v0.12.0"}}}')
    env.k8s.wait_for(lambda: env.get("api")["status"].get("target"), 30, message="the rollout started")
    # The API server goes away for 5 s in the middle of the surge: watches break, requests fail.
    e2e_cluster.restart_component("kube-apiserver", down_for=5.0)
    assert env.operator.poll() is None, "the operator exited when the API server went away"
    status = env.k8s.wait_for(lambda: (s := env.get("api")["status"])["config"]["revision"] != first
                              and not s.get("target") and s, 120, message="the rollout completed after the restart")
    second = status["config"]["revision"]
    env.k8s.wait_for(lambda: [x["metadata"]["name"] for x in env.k8s.list("deployment", namespace=env.ns)]
                     == [f"api-{second}"], 60, message="the old revision gone")
    created = [e for e in env.k8s.list("event", namespace=env.ns)
               if e.get("reason") == "RevisionCreated" and second in e.get("message", "")]
    # kopf posts each event as its own object; `count` guards against the API server folding repeats into one.
    assert sum(e.get("count") or 1 for e in created) == 1, "the decision was applied twice across the restart"
    # Still acting after the restart (its watches reconnected): a later spec change is picked up.
    env.k8s.kubectl("patch", "infd", "api", "-n", env.ns, "--type=merge", "-p", '{"spec": {"maxReplicas": 3}}')
    env.k8s.wait_for(lambda: env.get("api")["status"].get("observedGeneration") == env.get("api")["metadata"][
        "generation"], 60, message="the next change handled")
    time.sleep(3)
    stats = twin.stats()[f"{env.ns}/api"]
    twin.set_load(env.ns, "api", rate=0.0)
    assert stats["dropped"] == 0, stats
