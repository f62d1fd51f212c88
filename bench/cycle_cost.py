"""Bench: the operator's own work in one steady reconcile (parse, decide, render, compare), no cluster or kopf;
with --loaded, a pod that serves traffic (the calibration and the knee search run every cycle)."""

from __future__ import annotations

import argparse
import datetime
import pathlib
import random
import time
from typing import Any

import yaml

from infertune import decide, knee, kube, models, observation, render, validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "manifests" / "samples" / "vllm-llama-3.1-8b-l40s.yaml"


def _check_read(status_raw: dict[str, Any], cycles: int) -> None:
    """The traffic must have been read (not screened out as garbage): the calibration counts its cycles."""
    cal = kube.parse_status(status_raw).knee
    if cal is None or cal.calibration.samples < cycles:
        raise SystemExit(f"the loaded pod's metrics were not used (calibrated samples: "
                         f"{cal.calibration.samples if cal else 0})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2000, help="timed reconciles (at least 1)")
    parser.add_argument("--loaded", action="store_true",
                        help="the pod serves about 3 req/s with its latencies scattered by 10%% from the physics: "
                             "each cycle calibrates and plans (tuning.mode recommend keeps the revision)")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error(f"--cycles must be at least 1, got {args.cycles}")
    spec_raw = yaml.safe_load(SAMPLE.read_text())["spec"]
    if args.loaded:
        spec_raw = {**spec_raw, "tuning": {**spec_raw.get("tuning", {}), "mode": "recommend"}}
    spec, problems = validation.parse(dict(spec_raw))
    assert spec is not None, problems
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    owner = render.Owner(name="bench", namespace="ns", uid="u1")
    first = decide.decide(observation.Observation(
        name="bench", namespace="ns", generation=1, spec=spec, status=models.InferenceDeploymentStatus(),
        revisions=(), pods=(), metrics=observation.Metrics(pods={}, grace=0)), now=t0)
    # The stored Deployment as the watch cache holds it: the rendered one, owned, with one Ready replica.
    deployments: list[dict[str, Any]] = [m for _, ms in render.revisions(owner, spec, first) for m in ms
                                         if m["kind"] == "Deployment"]
    for d in deployments:
        d["metadata"]["ownerReferences"] = [{"apiVersion": f"{models.GROUP}/{models.VERSION}", "controller": True,
                                             "kind": "InferenceDeployment", "name": "bench", "uid": "u1"}]
        d["status"] = {"replicas": 1, "readyReplicas": 1}
    labels = deployments[0]["spec"]["template"]["metadata"]["labels"]
    pod = {"metadata": {"name": "p1", "namespace": "ns", "labels": {**labels, render.LABEL_SERVING: "true"},
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                                                          "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
           "spec": {"nodeName": "n1"}}
    status_raw = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    rnd = random.Random(1)
    knobs = render.knobs_from_labels(labels)
    assert knobs is not None

    def traffic() -> observation.Metrics:
        """What one pod at 30 running reports: the physics' means scattered by 10%, a chat-like shape."""
        p = knee.predict(spec, knobs, knee.PRIOR_WORKLOAD, knee.MEANS, concurrency=min(30, knobs.max_batch_size))
        itl, ttft, rps = p.itl_p * rnd.uniform(0.9, 1.1), p.ttft_p * rnd.uniform(0.9, 1.1), rnd.uniform(2.5, 3.5)
        m = observation.PodMetrics(
            running=min(30.0, knobs.max_batch_size), waiting=0.0, in_flight=min(30.0, knobs.max_batch_size),
            requests_per_s=rps, itl_mean=itl, itl_p=itl * 1.2, tpot_p=itl * 1.05, ttft_mean=ttft, ttft_p=ttft * 1.8,
            mean_input_tokens=rnd.uniform(950, 1050), mean_output_tokens=rnd.uniform(190, 210),
            output_tokens_per_s=rps * 200, slo_attainment=0.99, kv_usage=0.3, prefix_hit_rate=0.0)
        return observation.Metrics(pods={"p1": m}, grace=0)

    def cycle(i: int) -> None:
        nonlocal status_raw
        status = kube.parse_status(status_raw)
        parsed, _ = validation.parse(dict(spec_raw))
        assert parsed is not None
        pods = tuple(p for p in map(kube.pod_facts, [pod]) if p is not None)
        obs = observation.Observation(
            name="bench", namespace="ns", generation=1, spec=parsed, status=status,
            revisions=tuple(r for r in map(kube.revision_facts, deployments) if r is not None), pods=pods,
            metrics=traffic() if args.loaded else observation.Metrics(pods={}, grace=0))
        decision = decide.decide(obs, now=t0 + datetime.timedelta(seconds=15 * i))
        rendered = render.revisions(owner, parsed, decision)
        kube.would_write(owner.uid, decision, rendered, deployments)
        written = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if args.loaded:
            status_raw = written  # the calibration carries over, as it does through the resource's status

    cycle(0)
    start = time.perf_counter()
    for i in range(args.cycles):
        cycle(i + 1)
    per = (time.perf_counter() - start) / args.cycles
    if args.loaded:
        _check_read(status_raw, args.cycles)
    kind = "loaded" if args.loaded else "steady"
    print(f"{per * 1000:.2f} ms per {kind} reconcile ({args.cycles} cycles): at 1,000 resources "
          f"{per * 1000:.1f} s of CPU per pass over all of them")


if __name__ == "__main__":
    main()
