"""Test: the e2e harness itself: the control plane, fake GPU nodes, pod timing, Prometheus, ServiceAccount auth."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as e2e_cluster
from e2e import conftest as e2e_conftest
from e2e import prometheus as e2e_prometheus
from infertune import timestamps

H100 = "NVIDIA-H100-80GB-HBM3"


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == kind)


def _gpu_pod(name: str, *, annotations: dict[str, str] | None = None, gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeSelector": {e2e_cluster.PRODUCT_LABEL: H100},
            "containers": [{
                "name": "server",
                "image": "vllm/vllm-openai:v0.0.0-fake",
                "resources": {"limits": {e2e_cluster.GPU_RESOURCE: str(gpus)}},
            }],
        },
    }


def _ready_pod(k8s: e2e_cluster.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    pod = k8s.get("pod", name, namespace=namespace)
    return pod if e2e_cluster.is_ready(pod) else None


def test_api_server_answers_with_the_built_version(k8s: e2e_cluster.Kube) -> None:
    version = k8s.json("version")
    assert version["serverVersion"]["gitVersion"] == "v1.36.1"
    assert version["clientVersion"]["gitVersion"] == "v1.36.1"
    assert k8s.kubectl("get", "--raw=/readyz").strip() == "ok"


def test_fake_gpu_nodes_carry_capacity_and_product_label(
    cluster: e2e_cluster.Cluster, k8s: e2e_cluster.Kube
) -> None:
    nodes = k8s.list("nodes")
    for pool in cluster.nodes:
        mine = [n for n in nodes if n["metadata"]["labels"].get(e2e_cluster.PRODUCT_LABEL) == pool.product]
        assert len(mine) == pool.count, pool
        for node in mine:
            assert node["status"]["capacity"][e2e_cluster.GPU_RESOURCE] == str(pool.gpus)
            assert node["status"]["allocatable"][e2e_cluster.GPU_RESOURCE] == str(pool.gpus)
            assert e2e_cluster.is_ready(node), node["metadata"]["name"]
    assert any(p.product == H100 and p.count >= 1 for p in cluster.nodes)


def test_pod_is_running_but_not_ready_until_its_ready_delay(k8s: e2e_cluster.Kube, namespace: str) -> None:
    delay = 3.0
    applied = time.monotonic()
    k8s.apply(_gpu_pod("slow-load", annotations={e2e_cluster.READY_DELAY_ANNOTATION: f"{delay:g}s"}, gpus=2),
              namespace=namespace)

    def running() -> dict[str, Any] | None:
        pod = k8s.get("pod", "slow-load", namespace=namespace)
        return pod if pod and pod["status"].get("phase") == "Running" else None

    pod = k8s.wait_for(running, 15, message="pod Running")
    assert not e2e_cluster.is_ready(pod), "Ready at once despite a 3 s ready delay"
    assert pod["spec"]["nodeName"].startswith(H100.lower())
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]

    # Still NotReady well inside the delay...
    time.sleep(max(0.0, applied + delay - 1.0 - time.monotonic()))
    assert not e2e_cluster.is_ready(k8s.get("pod", "slow-load", namespace=namespace))
    # ...and Ready once it has passed.
    pod = k8s.wait_for(lambda: _ready_pod(k8s, namespace, "slow-load"), 15, interval=0.1, message="pod Ready")
    assert time.monotonic() - applied >= delay
    ready_at = timestamps.parse(_condition(pod, "Ready")["lastTransitionTime"])
    started_at = timestamps.parse(pod["status"]["startTime"])
    # Both stamps are whole seconds and the delay is counted from after startTime was written, so the gap
    # is at least the delay: 3 s.
    assert (ready_at - started_at).total_seconds() >= delay


def test_deleted_pod_stays_terminating_for_its_grace_period(k8s: e2e_cluster.Kube, namespace: str) -> None:
    k8s.apply(_gpu_pod("draining"), namespace=namespace)
    k8s.wait_for(lambda: _ready_pod(k8s, namespace, "draining"), 15, message="pod Ready")
    grace = 4
    deleted = time.monotonic()
    k8s.delete("pod", "draining", namespace=namespace, grace_period=grace)

    pod = k8s.get("pod", "draining", namespace=namespace)
    assert pod is not None and pod["metadata"].get("deletionTimestamp"), "pod gone at once: no drain window"
    time.sleep(grace - 2)
    assert k8s.get("pod", "draining", namespace=namespace) is not None, "pod gone before its grace period"
    k8s.wait_for(lambda: k8s.get("pod", "draining", namespace=namespace) is None, grace + 10, interval=0.1,
                 message="pod removed")
    elapsed = time.monotonic() - deleted
    # deletionTimestamp = now + grace, stored in whole seconds, so removal comes 3-4 s after the delete
    # (plus the controller's reaction time, generous for a loaded CI machine), never at once.
    assert grace - 1 <= elapsed <= grace + 5, elapsed


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    body = b"# TYPE infertune_e2e_probe gauge\ninfertune_e2e_probe 42\n"

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep scrapes out of the test output


@pytest.fixture
def metrics_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_scrapes_a_file_sd_target_keeping_namespace_and_pod(
    prometheus: e2e_prometheus.Prometheus, metrics_server: str
) -> None:
    target = prometheus.write_target("probe", metrics_server, {"namespace": "team-a", "pod": "llama-0"})
    try:
        series = e2e_prometheus.wait_for_series(
            prometheus, f'infertune_e2e_probe{{job="{e2e_prometheus.MODEL_SERVER_JOB}"}}', timeout=30
        )
    finally:
        target.unlink()
    assert len(series) == 1
    labels = series[0]["metric"]
    assert labels["namespace"] == "team-a"
    assert labels["pod"] == "llama-0"
    assert labels["instance"] == metrics_server
    assert float(series[0]["value"][1]) == 42.0
    jobs = {t["labels"]["job"] for t in prometheus.targets()}
    assert e2e_prometheus.OPERATOR_JOB in jobs
    assert e2e_prometheus.promtool() is not None


def test_service_account_kubeconfig_authenticates_and_rbac_limits_it(
    k8s: e2e_cluster.Kube, namespace: str, tmp_path: Path
) -> None:
    k8s.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "probe"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "probe"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": namespace}]},
    ], namespace=namespace)
    path = k8s.service_account_kubeconfig(namespace, "probe", tmp_path / "probe.kubeconfig")
    sa = e2e_cluster.Kube(path)

    review = sa.json("auth", "whoami")
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:probe"
    # A bearer token from the TokenRequest API, not the admin's client certificate.
    assert list(yaml.safe_load(path.read_text())["users"][0]["user"]) == ["token"]
    # Granted: list pods in its namespace (the RBAC cache may take a moment to see the new binding).
    sa.wait_for(lambda: sa.kubectl("auth", "can-i", "list", "pods", "-n", namespace, check=False).strip() == "yes",
                10, message="RBAC to allow listing pods")
    sa.kubectl("get", "pods", "-n", namespace)
    # Refused: anything its Role does not grant.
    for args in (("get", "nodes"), ("get", "secrets", "-n", namespace), ("get", "pods", "-n", "default")):
        with pytest.raises(e2e_cluster.ClusterError, match=r"(?i)forbidden"):
            sa.kubectl(*args)


def test_a_failed_tests_report_carries_the_tails_of_its_logs(tmp_path: Path, cluster: e2e_cluster.Cluster) -> None:
    log = tmp_path / "operator.log"
    log.write_text("".join(f"line {i} " + "x" * 1000 + "\n" for i in range(500)))
    handle = type("Handle", (), {"log": log})()
    found = e2e_conftest.failure_logs({"env": handle, "cluster": cluster, "k8s": object()})
    assert found[0] == ("env", log, e2e_conftest.LOG_TAIL_LINES)
    # The control plane's own logs follow: the API server's is where a restart or a refusal shows.
    assert "kube-apiserver" in [name for name, _, _ in found[1:]]
    tail = e2e_conftest.log_tail(log, 3).splitlines()
    assert [t.split()[:2] for t in tail] == [["line", "497"], ["line", "498"], ["line", "499"]]
    assert all(len(t) == e2e_conftest.LOG_LINE_CHARS for t in tail)
    assert "unreadable" in e2e_conftest.log_tail(tmp_path / "missing.log")
