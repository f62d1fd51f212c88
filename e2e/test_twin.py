"""Test: the live twin on the real cluster — Prometheus scrapes one series set per Ready pod, traffic flows."""

from __future__ import annotations

import asyncio
import copy
import math
import time
from pathlib import Path
from typing import Any

import yaml

from e2e import cluster as e2e_cluster
from e2e import prometheus as e2e_prometheus
from e2e.conftest import OperatorProcess, TwinProcess
from infertune import prometheus as prom_adapter
from infertune.runtimes import metrics

REPO = Path(__file__).resolve().parents[1]


def sample(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    body = copy.deepcopy(yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text()))
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["template"] = {"annotations": {e2e_cluster.READY_DELAY_ANNOTATION: "1s"}}
    body["spec"]["scaling"].update({"minReplicas": replicas, "maxReplicas": replicas, "drainTimeout": "1s",
                                    "standby": {"min": 0, "max": 0}})
    return body


def test_prometheus_scrapes_each_twin_pod(k8s: e2e_cluster.Kube, namespace: str, operator: OperatorProcess,
                                          twin: TwinProcess, prometheus: e2e_prometheus.Prometheus) -> None:
    k8s.apply(sample("twin", namespace, replicas=2))
    pods = k8s.wait_for(lambda: (ps := k8s.list("pod", namespace=namespace, selector="infertune.io/deployment=twin"))
                        and len(ps) == 2 and all(e2e_cluster.is_ready(p) for p in ps) and ps, 60,
                        message="two Ready pods")
    names = sorted(p["metadata"]["name"] for p in pods)
    # Traffic goes through the Service: wait until its EndpointSlice lists both pods as ready.
    k8s.wait_for(lambda: sorted(e["targetRef"]["name"] for s in k8s.list(
        "endpointslice", namespace=namespace, selector="kubernetes.io/service-name=twin")
        for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")) == names, 30,
        message="both pods in the Service's endpoints")
    time.sleep(1.0)  # the twin reads endpoints every 0.5 s
    twin.set_load(namespace, "twin", rate=4.0, input={"mean": 500, "cv": 0.3}, output={"mean": 50, "cv": 0.3})

    query = f'vllm:num_requests_running{{namespace="{namespace}"}}'
    series = e2e_prometheus.wait_for_series(prometheus, query, timeout=60)
    k8s.wait_for(lambda: sorted(s["metric"]["pod"] for s in prometheus.query(query)) == names, 30,
                 message="one series per pod")
    for s in series:
        assert s["metric"]["namespace"] == namespace
    tokens = f'sum by (pod) (rate(vllm:generation_tokens_total{{namespace="{namespace}"}}[10s]))'
    flowing = k8s.wait_for(lambda: (r := prometheus.query(tokens)) and len(r) == 2
                           and all(float(x["value"][1]) > 0 for x in r) and r, 60,
                           message="tokens generated on both pods")
    assert len(flowing) == 2
    dram = prometheus.query(f'DCGM_FI_PROF_DRAM_ACTIVE{{namespace="{namespace}"}}')
    assert {s["metric"]["pod"] for s in dram} == set(names)

    # Tokens flow as soon as the first requests decode; the first completions follow (50 tokens each), later
    # on a loaded machine.
    stats = k8s.wait_for(lambda: (st := twin.stats()[f"{namespace}/twin"])["finished"] > 0 and st, 60,
                         message="requests finished")
    twin.set_load(namespace, "twin", rate=0.0)
    assert stats["dropped"] == 0 and stats["unrouted"] == 0, stats


def test_the_batched_snapshot_sends_every_bucket_of_a_busy_pod_and_one_of_an_idle_pod(
        k8s: e2e_cluster.Kube, namespace: str, operator: OperatorProcess, twin: TwinProcess,
        prometheus: e2e_prometheus.Prometheus) -> None:
    """The snapshot's histogram queries on the real Prometheus: a pod with traffic keeps all its buckets (its
    quantiles need them); an idle pod answers with its +Inf bucket alone, at rate 0 (idle, not missing)."""
    k8s.apply(sample("busy", namespace, replicas=1))
    k8s.apply(sample("idle", namespace, replicas=1))

    def ready(name: str) -> str | None:
        ps = k8s.list("pod", namespace=namespace, selector=f"infertune.io/deployment={name}")
        return ps[0]["metadata"]["name"] if len(ps) == 1 and e2e_cluster.is_ready(ps[0]) else None

    busy = k8s.wait_for(lambda: ready("busy"), 60, message="the busy pod Ready")
    idle = k8s.wait_for(lambda: ready("idle"), 60, message="the idle pod Ready")
    k8s.wait_for(lambda: sorted(e["targetRef"]["name"] for s in k8s.list(
        "endpointslice", namespace=namespace, selector="kubernetes.io/service-name=busy")
        for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")) == [busy], 30,
        message="the busy pod in its Service's endpoints")
    time.sleep(1.0)
    twin.set_load(namespace, "busy", rate=4.0, input={"mean": 300, "cv": 0.3}, output={"mean": 20, "cv": 0.3})
    source = prom_adapter.Source(query=prom_adapter.connect(prometheus.url), window=30.0)

    def snap() -> prom_adapter.Snapshot | None:
        s = asyncio.run(source.snapshot(max_age=0.0))
        b = s.pods.get((namespace, busy))
        i = s.pods.get((namespace, idle))
        ok = (s.ok and b is not None and i is not None and metrics.Signal.TTFT in b.buckets
              and b.buckets[metrics.Signal.TTFT][-1][1] > 0 and metrics.Signal.TTFT in i.buckets)
        return s if ok else None

    s = k8s.wait_for(snap, 90, interval=2.0, message="the busy pod's TTFT observed and the idle pod's +Inf bucket")
    twin.set_load(namespace, "busy", rate=0.0)
    b, i = s.pods[(namespace, busy)], s.pods[(namespace, idle)]
    assert len(b.buckets[metrics.Signal.TTFT]) > 5, b.buckets
    for signal in (metrics.Signal.TTFT, metrics.Signal.ITL, metrics.Signal.E2E):
        assert i.buckets[signal] == ((math.inf, 0.0),), (signal, i.buckets[signal])
    quiet = prom_adapter.pod_metrics(i, percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert quiet.requests_per_s == 0.0 and quiet.ttft_p is None
    loud = prom_adapter.pod_metrics(b, percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert loud.requests_per_s and loud.requests_per_s > 0 and loud.ttft_p is not None
    # The busy share (a subquery over the running gauge): some of the window for the pod with traffic, none of
    # it for the idle one (0, not missing).
    assert loud.busy is not None and 0.0 < loud.busy <= 1.0, loud.busy
    assert quiet.busy == 0.0
