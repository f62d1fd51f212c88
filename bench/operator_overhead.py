"""Bench: operator overhead at 1, 100 and 1,000 InferenceDeployments on the local cluster (kwok pods are cheap).

Measures, per size: reconcile throughput with the operator saturated (interval 1 s), the cycle time that implies
(N / reconciles per second: how long one pass over every resource takes), reconcile latency p50/p99, the
operator's resident memory, and PromQL queries per second (which must not grow with N: one batch per cycle).
The twin plays every pod and Prometheus scrapes it, so each reconcile reads real metrics.

    .venv/bin/python bench/operator_overhead.py [--sizes 1,100,1000] [--loaded RATE] [--out FILE]

With --loaded, each size is measured twice: idle, then with the twin sending a Poisson load of RATE requests/s
to every resource's Service (its POST /load), so each reconcile calibrates on moving latencies and plans anew.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import parser as prom_parser

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from e2e import cluster as e2e_cluster  # noqa: E402
from e2e import conftest  # noqa: E402
from e2e import prometheus as e2e_prometheus  # noqa: E402

NS = "bench-overhead"
# Two fake L4 nodes with room for every pod of the largest size.
BENCH_NODES = (e2e_cluster.NodePool("NVIDIA-L4", 2, gpus=1000),)
# What each bench node offers: pods, and CPU and memory for as many engine pods (render.resources asks 3 CPUs and
# 15Gi for an 8B model; 4 and 16Gi leave room).
NODE_PODS, POD_CPUS, POD_MEMORY_GI = 1100, 4, 16


def resource(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "infertune.io/v1alpha1", "kind": "InferenceDeployment",
        "metadata": {"name": f"llm-{i:04d}", "namespace": NS},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"},
            "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"},
            "accelerator": {"type": "l4", "hourlyCost": 0.8},
            "slo": {"ttft": "2s", "itl": "80ms"},
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "drainTimeout": "1s"},
            "template": {"annotations": {e2e_cluster.READY_DELAY_ANNOTATION: "1s"}},
        },
    }


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels or s.name.startswith("infertune_reconcile_duration_seconds_bucket"):
                key = s.name + ("" if not s.labels else "{le=" + s.labels.get("le", "") + "}")
                out[key] = s.value
    return out


def quantile(q: float, before: dict[str, float], after: dict[str, float]) -> float:
    name = "infertune_reconcile_duration_seconds_bucket{le="
    buckets = sorted((float(k[len(name):-1]), after[k] - before.get(k, 0.0)) for k in after if k.startswith(name))
    total = buckets[-1][1] if buckets else 0.0
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (its /proc stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_all(twin_url: str, n: int, rate: float) -> None:
    """Every resource's Service gets a Poisson load of `rate` requests/s from the twin (0: none)."""
    body = json.dumps({"rate": rate}).encode()
    for i in range(n):
        req = urllib.request.Request(f"{twin_url}/load/{NS}/llm-{i:04d}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


def window(metrics_url: str, pid: int, seconds: float) -> dict[str, Any]:
    """Reconciles, their latency, PromQL queries, CPU and memory of the operator over `seconds`."""
    before, t0, cpu0 = scrape(metrics_url), time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    after, t1, cpu1 = scrape(metrics_url), time.monotonic(), cpu_seconds(pid)
    span = t1 - t0
    count = "infertune_reconcile_duration_seconds_count"
    reconciles = after[count] - before[count]
    queries = after.get("infertune_promql_queries_total", 0) - before.get("infertune_promql_queries_total", 0)
    if reconciles <= 0:
        raise RuntimeError(f"the operator reconciled nothing in {span:.0f} s; see its log")
    return {"span": span, "reconciles": reconciles, "queries": queries, "cpu": cpu1 - cpu0, "before": before,
            "after": after}


def row(n: int, w: dict[str, Any], pid: int, **extra: Any) -> dict[str, Any]:
    span, reconciles = w["span"], w["reconciles"]
    rate = reconciles / span
    return {
        "resources": n, **extra,
        "reconciles_per_s": round(rate, 1),
        "cycle_s": round(n / rate, 2) if rate else None,
        "reconcile_p50_s": quantile(0.5, w["before"], w["after"]),
        "reconcile_p99_s": quantile(0.99, w["before"], w["after"]),
        "promql_queries_per_s": round(w["queries"] / span, 2),
        # The operator's own CPU per reconcile (Prometheus, the API server and the twin share the 2 cores):
        # 1,000 / (reconciles per CPU-second) is the pass a dedicated core would give.
        "operator_cpu_share": round(w["cpu"] / span, 2),
        "cpu_ms_per_reconcile": round(1000 * w["cpu"] / reconciles, 2),
        "operator_rss_mib": round(rss_mib(pid), 1),
    }


def loaded(k8s: e2e_cluster.Kube, n: int, *, metrics_url: str, twin_url: str, pid: int, seconds: float,
           rate: float) -> list[dict[str, Any]]:
    """The same fleet with traffic: every resource's pod serves `rate` req/s while the window is measured.

    Traffic makes every resource plan tuned knobs, and each rolls them out (a new revision's Deployment and pod
    beside the old) once its calibration is confident, so the rollouts are spread over minutes. The window is
    measured 120 s in ("rollouts"), and again at the first moment every resource is Ready with no rollout pending
    ("steady": the first wave done, not every resource tuned); how long that took is reported beside them."""
    load_all(twin_url, n, rate)
    started = time.monotonic()
    try:
        # Two metric windows (60 s each) of traffic first, so every reconcile sees latencies move.
        time.sleep(120)
        storm = window(metrics_url, pid, seconds)
        k8s.wait_for(lambda: settled(k8s, n), 1800, interval=5.0, message=f"{n} loaded resources steady")
        rollouts_s = time.monotonic() - started
        time.sleep(10)
        w = window(metrics_url, pid, seconds)
    finally:
        load_all(twin_url, n, 0.0)

    def served() -> int:
        return sum(1 for o in k8s.list("inferencedeployment", namespace=NS)
                   if ((o.get("status") or {}).get("observed") or {}).get("requestRate"))

    return [row(n, storm, pid, loaded_rps_per_resource=rate, phase="rollouts"),
            row(n, w, pid, loaded_rps_per_resource=rate, phase="steady", resources_with_traffic=served(),
                rollouts_settled_s=round(rollouts_s, 1))]


def settled(k8s: e2e_cluster.Kube, n: int) -> bool:
    """Steady state: every resource Ready with its rollouts done (no target revision pending)."""
    items = k8s.list("inferencedeployment", namespace=NS)
    return len(items) >= n and all(
        not (o.get("status") or {}).get("target")
        and any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (o.get("status") or {}).get("conditions", []))
        for o in items)


def measure(k8s: e2e_cluster.Kube, n: int, metrics_url: str, pid: int, seconds: float) -> dict[str, Any]:
    have = len(k8s.list("inferencedeployment", namespace=NS))
    if n > have:
        docs = [resource(i) for i in range(have, n)]
        for chunk in range(0, len(docs), 200):
            k8s.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[chunk:chunk + 200]), timeout=300)
    started = time.monotonic()
    k8s.wait_for(lambda: sum(1 for o in k8s.list("inferencedeployment", namespace=NS)
                             if (o.get("status") or {}).get("config")) >= n, 900, interval=5.0,
                 message=f"{n} resources reconciled once")
    first_pass = time.monotonic() - started

    k8s.wait_for(lambda: settled(k8s, n), 900, interval=5.0, message=f"{n} resources Ready and steady")
    settle = time.monotonic() - started
    time.sleep(10)
    w = window(metrics_url, pid, seconds)
    return row(n, w, pid, first_pass_s=round(first_pass, 1), all_ready_s=round(settle, 1))


def bench_nodes(k8s: e2e_cluster.Kube) -> list[dict[str, Any]]:
    """The bench's own fake L4 nodes, created afresh, with room for every pod of the largest size."""
    nodes = e2e_cluster.node_manifests(BENCH_NODES)
    for i, node in enumerate(nodes):
        # Own names and pod ranges, so they sit beside the e2e cluster's nodes of the same product.
        name = f"bench-l4-{i}"
        node["metadata"]["name"] = name
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        node["spec"]["podCIDR"] = f"10.{200 + i}.0.0/20"
        # Room for every pod of the largest size: the default 110 pods per node would leave most of 1,000
        # resources with unschedulable pods, and the bench would measure rollouts that never finish.
        # CPU and memory too: the default 224 CPUs stopped scheduling at 74 engine pods a node.
        for key in ("capacity", "allocatable"):
            node["status"][key].update({"pods": str(NODE_PODS), "cpu": str(NODE_PODS * POD_CPUS),
                                        "memory": f"{NODE_PODS * POD_MEMORY_GI}Gi"})
    # Nodes left by an interrupted run may carry other capacities; these are the bench's own, so start afresh.
    k8s.kubectl("delete", "node", *(n["metadata"]["name"] for n in nodes), "--ignore-not-found", check=False)
    e2e_cluster.apply_yaml(nodes)
    return nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="1,100,1000")
    p.add_argument("--seconds", type=float, default=60.0, help="measuring window per size")
    p.add_argument("--loaded", type=float, default=0.0, metavar="RATE",
                   help="also measure each size with RATE requests/s of traffic on every resource")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "operator_overhead.json")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.loaded < 0:
        p.error(f"--loaded: a rate in requests/s, at least 0, got {args.loaded}")

    info = e2e_cluster.up()
    k8s = info.kube
    nodes = bench_nodes(k8s)
    conftest.install_operator_manifests(k8s)
    # An interrupted run may have left its namespace (or be deleting it): its resources would look reconciled
    # already. Start from an empty one.
    k8s.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
    k8s.wait_for(lambda: k8s.get("namespace", NS) is None, 900, interval=2.0,
                 message=f"namespace {NS} of a previous run deleted")
    k8s.kubectl("create", "namespace", NS)
    work = e2e_cluster.STATE / "bench-overhead"
    work.mkdir(parents=True, exist_ok=True)
    port = e2e_prometheus.free_port()
    # Scraping a thousand pods every second would measure Prometheus, not the operator.
    prom = e2e_prometheus.start(workdir=work / "prometheus", operator_target=f"127.0.0.1:{port}",
                                scrape_interval="10s", evaluation_interval="10s")
    twin_port = e2e_prometheus.free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    twin = subprocess.Popen([sys.executable, "-m", "infertune.sim.live", "--kubeconfig", str(info.kubeconfig),
                             "--port", str(twin_port), "--targets-dir", str(prom.targets_dir),
                             "--tick", "1", "--sync", "2"],
                            stdout=(work / "twin.log").open("wb"), stderr=subprocess.STDOUT, env=env)
    kubeconfig = k8s.service_account_kubeconfig(conftest.OPERATOR_NAMESPACE, conftest.OPERATOR_SA,
                                                work / "operator.kubeconfig")
    operator = conftest.start_operator(kubeconfig, work / "operator.log", prometheus_url=prom.url,
                                       metrics_port=str(port), extra=("--namespace", NS),
                                       # As deployed (INFO): DEBUG logs every timer call, 285 MB at 1,000.
                                       verbose=False)
    results = []
    try:
        for n in sizes:
            idle = measure(k8s, n, f"http://127.0.0.1:{port}/metrics", operator.pid, args.seconds)
            print(json.dumps(idle), flush=True)
            results.append(idle)
            if args.loaded > 0:
                busy = loaded(k8s, n, metrics_url=f"http://127.0.0.1:{port}/metrics",
                              twin_url=f"http://127.0.0.1:{twin_port}", pid=operator.pid, seconds=args.seconds,
                              rate=args.loaded)
                for r in busy:
                    print(json.dumps(r), flush=True)
                results += busy
    finally:
        operator.terminate()
        twin.terminate()
        prom.stop()
        k8s.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        # The extra L4 nodes would otherwise stay beside the e2e cluster's own and skew its node counts.
        k8s.kubectl("delete", "node", *(n["metadata"]["name"] for n in nodes), "--wait=false", check=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
