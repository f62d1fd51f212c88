"""Bench: `make demo` — a real control plane, Prometheus, the operator and a sample, with its status live."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from e2e import cluster as e2e_cluster
from e2e import conftest
from e2e import prometheus as e2e_prometheus

REPO = Path(__file__).resolve().parents[1]
DEMO_NAMESPACE = "demo"


def sample(path: Path, ready_delay: str) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(path.read_text()))
    body["metadata"]["namespace"] = DEMO_NAMESPACE
    template = body["spec"].setdefault("template", {})
    # kwok plays the GPU node: the pod turns Ready after this long, like a model loading.
    template.setdefault("annotations", {})[e2e_cluster.READY_DELAY_ANNOTATION] = ready_delay
    return body


def _load(port: int, name: str, rate: float) -> None:
    """Ask the twin for Poisson traffic on the sample's Service."""
    body = json.dumps({"rate": rate, "input": {"mean": 1000, "cv": 0.5}, "output": {"mean": 200, "cv": 0.5}})
    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/load/{DEMO_NAMESPACE}/{name}",
                                             data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--sample", type=Path, default=REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml")
    parser.add_argument("--ready-delay", default="20s", help="emulated model load time per pod (default 20s)")
    parser.add_argument("--interval", default="2", help="operator reconcile interval in seconds")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second the twin sends (default 4)")
    parser.add_argument("--exit-when-ready", action="store_true", help="stop once the resource is Ready")
    parser.add_argument("--exit-when-tuned", action="store_true",
                        help="stop once the operator has measured the sample and reports its knee")
    args = parser.parse_args(argv)

    print("== control plane (built from the Go module proxy on first use, cached afterwards)")
    was_up = e2e_cluster.is_up()
    info = e2e_cluster.up()
    k8s = info.kube
    workdir = e2e_cluster.STATE / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    port = e2e_prometheus.free_port()
    print("== Prometheus")
    prom = e2e_prometheus.start(workdir=workdir / "prometheus", operator_target=f"127.0.0.1:{port}")
    print(f"   {prom.url}")
    twin_port = e2e_prometheus.free_port()
    print(f"== the digital twin playing the model servers (127.0.0.1:{twin_port}, log: {workdir / 'twin.log'})")
    twin = subprocess.Popen(
        [sys.executable, "-m", "infertune.sim.live", "--kubeconfig", str(info.kubeconfig), "--port", str(twin_port),
         "--targets-dir", str(prom.targets_dir)],
        stdout=(workdir / "twin.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )
    print("== CRD and RBAC from manifests/")
    conftest.install_operator_manifests(k8s)
    kubeconfig = k8s.service_account_kubeconfig(conftest.OPERATOR_NAMESPACE, conftest.OPERATOR_SA,
                                                workdir / "operator.kubeconfig")
    log = workdir / "operator.log"
    print(f"== the operator, as ServiceAccount {conftest.OPERATOR_NAMESPACE}/{conftest.OPERATOR_SA} (log: {log})")
    with log.open("wb") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "infertune.cli", "run", "--kubeconfig", str(kubeconfig),
             "--interval", args.interval, "--prometheus-url", prom.url, "--metrics-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        k8s.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
        body = sample(args.sample, args.ready_delay)
        name = body["metadata"]["name"]
        print(f"== {args.sample.relative_to(REPO)} as {DEMO_NAMESPACE}/{name} (model load: {args.ready_delay})")
        k8s.apply(body)
        _load(twin_port, name, args.rate)
        print(f"   {args.rate:g} requests/s of chat traffic (1,000 tokens in, 200 out) on its Service")
        print(f"   watch it yourself: KUBECONFIG={info.kubeconfig} kubectl get infd -n {DEMO_NAMESPACE} -w")
        last = ""
        while not stopping:
            if operator.poll() is not None:
                print(f"the operator exited with {operator.returncode}; see {log}", file=sys.stderr)
                return 1
            table = k8s.kubectl("get", "infd", "-n", DEMO_NAMESPACE, "-o", "wide", check=False).strip()
            # Print when something but the AGE column changed.
            shape = "\n".join(line.rsplit(None, 1)[0] for line in table.splitlines() if line.strip())
            if shape != last:
                print(time.strftime("%H:%M:%S"), table, sep="\n")
                last = shape
            obj = k8s.get("inferencedeployment", name, namespace=DEMO_NAMESPACE) or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (obj.get("status") or {}).get("conditions", []))
            if ready and args.exit_when_ready:
                print("== Ready")
                break
            knee = (obj.get("status") or {}).get("knee") or {}
            if args.exit_when_tuned and knee.get("basis") == "measured" and (obj["status"].get("observed") or {}).get(
                    "requestRate"):
                print(f"== measured: knee at maxBatchSize {knee['maxBatchSize']} "
                      f"(confidence {knee['confidence']}), {obj['status']['observed']}")
                break
            time.sleep(1)
    finally:
        print("== shutting down")
        operator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            operator.wait(timeout=15)
        if operator.poll() is None:
            operator.kill()
        twin.terminate()
        prom.stop()
        if was_up:
            k8s.kubectl("delete", "namespace", DEMO_NAMESPACE, "--wait=false", check=False)
        else:
            e2e_cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
