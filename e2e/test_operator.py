"""Test: the operator on the real control plane, phase by phase: CRD, validation, convergence, rollout, RBAC."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as e2e_cluster
from e2e import prometheus as e2e_prometheus
from e2e.conftest import OperatorProcess
from infertune import kube, models, render, validation

REPO = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text())
READY_DELAY = 3.0


def resource(name: str, namespace: str, **spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"] = {"name": name, "namespace": namespace}
    spec = body["spec"]
    # Model load emulated by kwok: Running at once, Ready after the delay. A short drain keeps
    # terminating pods (which kwok holds for the whole grace period) from slowing the suite.
    spec["template"] = {"annotations": {e2e_cluster.READY_DELAY_ANNOTATION: f"{READY_DELAY:g}s"}}
    spec["scaling"]["drainTimeout"] = "1s"
    for path, value in spec_changes.items():
        node = spec
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return body


@pytest.fixture(scope="module")
def ns(k8s: e2e_cluster.Kube) -> Iterator[str]:
    # Unique per run: the last run's namespace may still be terminating, with its objects in it.
    name = f"e2e-operator-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    yield name
    k8s.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def infd(k8s: e2e_cluster.Kube, name: str, ns: str) -> dict[str, Any]:
    obj = k8s.get("inferencedeployment", name, namespace=ns)
    assert obj is not None
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def owned(k8s: e2e_cluster.Kube, kind: str, ns: str, name: str) -> list[dict[str, Any]]:
    return k8s.list(kind, namespace=ns, selector=f"infertune.io/deployment={name}")


def test_api_server_accepts_the_generated_crd(k8s: e2e_cluster.Kube, operator: OperatorProcess) -> None:
    crd = k8s.get("customresourcedefinition", "inferencedeployments.infertune.io")
    assert crd is not None
    established = next(c for c in crd["status"]["conditions"] if c["type"] == "Established")
    assert established["status"] == "True"
    assert crd["spec"]["names"]["shortNames"] == ["infd"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"engine.port": 0}, "spec.engine.port: Invalid value: 0"),
    ({"tuning.maxBatchSize": {"min": 64, "max": 8}}, "maxBatchSize.min must not exceed maxBatchSize.max"),
    ({"scaling.standby": {"min": 0, "max": 9}}, "standby.max must not exceed maxReplicas"),
    ({"slo.ttft": "fast"}, "spec.slo.ttft: Invalid value"),
    ({"model.custom": {"name": "x", "layers": 1, "hiddenSize": 1, "attentionHeads": 1, "kvHeads": 1, "headDim": 1,
                       "intermediateSize": 1, "parameters": 1e9, "vocabSize": 1, "maxContextTokens": 1}},
     "set exactly one of model.architecture"),
])
def test_api_server_rejects_invalid_resources(k8s: e2e_cluster.Kube, ns: str, operator: OperatorProcess,
                                              changes: dict[str, Any], message: str) -> None:
    out = k8s.kubectl("apply", "-f", "-", input=yaml.safe_dump(resource("rejected", ns, **changes)), check=False)
    assert message in out, out
    assert k8s.get("inferencedeployment", "rejected", namespace=ns) is None


def test_a_sample_converges_on_fake_gpu_nodes(k8s: e2e_cluster.Kube, ns: str, operator: OperatorProcess) -> None:
    k8s.apply(resource("chat", ns))
    start = time.monotonic()
    deployment = k8s.wait_for(lambda: next(iter(owned(k8s, "deployment", ns, "chat")), None), 30,
                              message="the revision's Deployment")
    owner = deployment["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "InferenceDeployment" and owner["name"] == "chat" and owner["controller"] is True
    service = k8s.wait_for(lambda: k8s.get("service", "chat", namespace=ns), 30, message="the Service")
    assert service["spec"]["selector"] == {"infertune.io/deployment": "chat", "infertune.io/serving": "true"}

    pod = k8s.wait_for(lambda: next(iter(owned(k8s, "pod", ns, "chat")), None), 30, message="a pod")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    scheduled = k8s.wait_for(lambda: (k8s.get("pod", pod["metadata"]["name"], namespace=ns) or {})
                             .get("spec", {}).get("nodeName"), 30, message="scheduling")
    assert scheduled.startswith("nvidia-l40s")  # the GPU product label steered it
    k8s.wait_for(lambda: e2e_cluster.is_ready(k8s.get("pod", pod["metadata"]["name"], namespace=ns)), 30,
                 message="the pod Ready after its model-load delay")
    assert time.monotonic() - start >= READY_DELAY

    obj = k8s.wait_for(lambda: (o := infd(k8s, "chat", ns)) and (c := condition(o, "Ready"))
                       and c["status"] == "True" and o, 30, message="Ready=True")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert obj["status"]["replicas"]["display"] == "1/1"
    assert obj["status"]["config"]["maxBatchSize"] == 256
    assert condition(obj, "SpecValid")["status"] == "True"  # type: ignore[index]
    # What the operator renders must count as applied once the real API server has stored it (it drops empty
    # lists, adds defaults): otherwise every steady cycle re-reads and patches the Deployment.
    spec, problems = validation.parse(obj["spec"])
    assert spec is not None, problems
    knobs = models.Knobs(max_batch_size=obj["status"]["config"]["maxBatchSize"],
                         kv_cache_dtype=obj["status"]["config"]["kvCacheDtype"])
    owner_ref = render.Owner(name="chat", namespace=ns, uid=obj["metadata"]["uid"])
    rendered = next(m for m in render.manifests(owner_ref, spec, knobs, replicas=1) if m["kind"] == "Deployment")
    stored = k8s.get("deployment", rendered["metadata"]["name"], namespace=ns)
    assert stored is not None and kube.is_subset(rendered, stored)

    table = k8s.kubectl("get", "infd", "chat", "-n", ns)
    header = table.splitlines()[0].split()
    for column in ("SERVING", "STANDBY", "BATCH", "KV", "TTFT-P95", "ITL-P95", "MBU", "$/1M", "SLO", "AGE"):
        assert column in header, table
    row = table.splitlines()[1].split()
    assert row[:5] == ["chat", "1/1", "0", "256", "default"], table


def test_prometheus_scrapes_the_operators_own_metrics(k8s: e2e_cluster.Kube, ns: str, operator: OperatorProcess,
                                                      prometheus: e2e_prometheus.Prometheus) -> None:
    query = f'infertune_max_batch_size{{namespace="{ns}", name="chat"}}'
    series = e2e_prometheus.wait_for_series(prometheus, query, timeout=60)
    assert float(series[0]["value"][1]) == 256
    # The previous test saw Ready=True; the scrape that shows it may still be up to an interval away.
    serving = e2e_prometheus.wait_for_series(
        prometheus, f'infertune_replicas{{namespace="{ns}", name="chat", state="serving"}} == 1', timeout=30)
    assert [float(s["value"][1]) for s in serving] == [1.0]
    assert prometheus.query("infertune_reconcile_duration_seconds_count")


def test_operator_validation_stops_what_the_schema_cannot(k8s: e2e_cluster.Kube, ns: str,
                                                          operator: OperatorProcess) -> None:
    # A catalog key the schema cannot know: the API server accepts it, the operator refuses it.
    k8s.apply(resource("unknown-model", ns, **{"model.architecture": "gpt-5"}))
    obj = k8s.wait_for(lambda: (o := infd(k8s, "unknown-model", ns)) and condition(o, "SpecValid") and o, 30,
                       message="SpecValid")
    cond = condition(obj, "SpecValid")
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "spec.model.architecture: unknown model 'gpt-5'" in cond["message"]
    events = k8s.list("event", namespace=ns, selector=None)
    assert any(e.get("reason") == "InvalidSpec" and e["involvedObject"]["name"] == "unknown-model" for e in events)
    time.sleep(2)
    assert owned(k8s, "deployment", ns, "unknown-model") == []
    assert k8s.get("service", "unknown-model", namespace=ns) is None


def test_a_spec_change_rolls_out_a_new_revision(k8s: e2e_cluster.Kube, ns: str, operator: OperatorProcess) -> None:
    before = infd(k8s, "chat", ns)
    old_revision = before["status"]["config"]["revision"]
    k8s.kubectl("patch", "infd", "chat", "-n", ns, "--type=merge", "-p",
                '{"spec": {"engine": {"image": "vllm/vllm-openai:v0.12.0"}}}')
    obj = k8s.wait_for(
        lambda: (o := infd(k8s, "chat", ns))["status"].get("config", {}).get("revision") != old_revision and o,
        60, message="the new revision serving")
    assert obj["status"]["observedGeneration"] == 2
    new_revision = obj["status"]["config"]["revision"]
    k8s.wait_for(lambda: [d["metadata"]["name"] for d in owned(k8s, "deployment", ns, "chat")]
                 == [f"chat-{new_revision}"], 30, message="the old revision removed")
    events = k8s.list("event", namespace=ns, selector=None)
    assert any(e.get("reason") == "RevisionCreated" and new_revision in e.get("message", "") for e in events)


def test_the_service_account_has_least_privilege(k8s: e2e_cluster.Kube, ns: str, operator: OperatorProcess) -> None:
    sa = e2e_cluster.Kube(operator.kubeconfig)
    assert sa.kubectl("auth", "can-i", "get", "secrets", "-A", check=False).strip() == "no"
    denied = sa.kubectl("get", "secrets", "-n", ns, check=False)
    assert "forbidden" in denied.lower()
    # A Deployment the operator does not own: RBAC alone would allow patching it; the admission policy does not.
    k8s.kubectl("create", "deployment", "not-ours", "--image=registry.invalid/app:1", "-n", ns)
    patched = sa.kubectl("patch", "deployment", "not-ours", "-n", ns, "--type=merge", "-p",
                         '{"spec": {"replicas": 0}}', check=False)
    assert "may only create, change or delete objects labelled app.kubernetes.io/managed-by=infertune" in patched
    deleted = sa.kubectl("delete", "deployment", "not-ours", "-n", ns, check=False)
    assert "may only" in deleted
    assert k8s.get("deployment", "not-ours", namespace=ns) is not None
    labelled = sa.kubectl("label", "deployment", "not-ours", "app.kubernetes.io/managed-by=infertune", "-n", ns,
                          check=False)
    assert "may only" in labelled  # it cannot adopt objects by labelling them either


def test_deleting_the_resource_removes_everything_it_owned(k8s: e2e_cluster.Kube, ns: str,
                                                           operator: OperatorProcess) -> None:
    k8s.kubectl("delete", "infd", "chat", "-n", ns, "--wait=true", "--timeout=60s")
    k8s.wait_for(lambda: owned(k8s, "deployment", ns, "chat") == []
                 and k8s.get("service", "chat", namespace=ns) is None, 60,
                 message="Deployments and Service garbage-collected")
    k8s.wait_for(lambda: owned(k8s, "pod", ns, "chat") == [], 90, message="pods gone after their grace period")
