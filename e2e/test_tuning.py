"""Test: the tuning brain on the real cluster with the live twin — from vLLM's default 1024 to the knee."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from e2e import cluster as e2e_cluster
from e2e.conftest import OperatorProcess, TwinProcess

REPO = Path(__file__).resolve().parents[1]


def resource(name: str, namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text()))
    body["metadata"] = {"name": name, "namespace": namespace}
    spec = body["spec"]
    spec["accelerator"]["type"] = "h100-sxm-80gb"  # vLLM's default there is max-num-seqs 1024
    spec["tuning"] = {"mode": "auto", "maxBatchSize": {"min": 1, "max": 1024}, "kvCacheDtype": "default",
                      "minChangeInterval": "1m"}
    spec["template"] = {"annotations": {e2e_cluster.READY_DELAY_ANNOTATION: "2s"}}
    spec["scaling"] = {"minReplicas": 1, "maxReplicas": 1, "standby": {"min": 0, "max": 0}, "drainTimeout": "30s",
                       "coldStart": "5s"}
    return body


def test_from_the_default_to_the_knee_through_a_rollout(k8s: e2e_cluster.Kube, namespace: str,
                                                        operator: OperatorProcess, twin: TwinProcess) -> None:
    k8s.apply(resource("tune", namespace))
    k8s.wait_for(lambda: (o := k8s.get("inferencedeployment", "tune", namespace=namespace))
                 and o.get("status", {}).get("replicas", {}).get("serving") == 1, 60, message="serving")
    first = k8s.get("inferencedeployment", "tune", namespace=namespace)["status"]["config"]  # type: ignore[index]
    assert first["maxBatchSize"] == 1024
    twin.set_load(namespace, "tune", rate=12.0, input={"mean": 1000, "cv": 0.5}, output={"mean": 200, "cv": 0.5})

    def tuned() -> dict[str, Any] | None:
        o = k8s.get("inferencedeployment", "tune", namespace=namespace) or {}
        s = o.get("status", {})
        cfg = s.get("config") or {}
        return s if cfg.get("maxBatchSize", 1024) < 1024 and not s.get("target") else None

    status = k8s.wait_for(tuned, 300, message="a rollout to the knee")
    chosen = status["config"]["maxBatchSize"]
    knee = status["knee"]
    assert knee["basis"] == "measured"
    assert abs(chosen - knee["maxBatchSize"]) <= 0.2 * knee["maxBatchSize"]
    deployments = k8s.list("deployment", namespace=namespace, selector="infertune.io/deployment=tune")
    assert [d["metadata"]["labels"]["infertune.io/max-batch-size"] for d in deployments] == [str(chosen)]
    args = deployments[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == str(chosen)
    events = [e for e in k8s.list("event", namespace=namespace) if e.get("reason") == "TuningChanged"]
    assert events and f"-> {chosen}" in events[0]["message"]
    table = k8s.kubectl("get", "infd", "tune", "-n", namespace)
    assert str(chosen) in table.splitlines()[1].split()
    stats = twin.stats()[f"{namespace}/tune"]
    twin.set_load(namespace, "tune", rate=0.0)
    assert stats["finished"] > 100 and stats["dropped"] == 0, stats
