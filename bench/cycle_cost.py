"""Bench: the operator's own work in one steady reconcile (parse, decide, render, compare), no cluster or kopf."""

from __future__ import annotations

import argparse
import datetime
import pathlib
import time
from typing import Any

import yaml

from infertune import decide, kube, models, observation, render, validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "manifests" / "samples" / "vllm-llama-3.1-8b-l40s.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2000, help="timed reconciles (at least 1)")
    args = parser.parse_args()
    if args.cycles < 1:
        parser.error(f"--cycles must be at least 1, got {args.cycles}")
    spec_raw = yaml.safe_load(SAMPLE.read_text())["spec"]
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

    def cycle(i: int) -> None:
        status = kube.parse_status(status_raw)
        parsed, _ = validation.parse(dict(spec_raw))
        assert parsed is not None
        pods = tuple(p for p in map(kube.pod_facts, [pod]) if p is not None)
        obs = observation.Observation(
            name="bench", namespace="ns", generation=1, spec=parsed, status=status,
            revisions=tuple(r for r in map(kube.revision_facts, deployments) if r is not None), pods=pods,
            metrics=observation.Metrics(pods={}, grace=0))
        decision = decide.decide(obs, now=t0 + datetime.timedelta(seconds=15 * i))
        rendered = render.revisions(owner, parsed, decision)
        kube.would_write(owner.uid, decision, rendered, deployments)
        decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)

    cycle(0)
    start = time.perf_counter()
    for i in range(args.cycles):
        cycle(i + 1)
    per = (time.perf_counter() - start) / args.cycles
    print(f"{per * 1000:.2f} ms per steady reconcile ({args.cycles} cycles): at 1,000 resources "
          f"{per * 1000:.1f} s of CPU per pass over all of them")


if __name__ == "__main__":
    main()
