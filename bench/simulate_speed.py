"""Bench: CPU seconds of one policy's run on the twin's cluster (pods, Prometheus answers, the operator's parser)."""

from __future__ import annotations

import argparse
import pathlib
import time

from infertune.sim import policies, scenario, simulate

SCENARIOS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "scenarios"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", type=pathlib.Path,
                        default=[SCENARIOS / "chat-70b-h100.yaml", SCENARIOS / "trace-300s.yaml"])
    parser.add_argument("--policy", default="infertune,hpa", help="comma-separated policies (default: infertune,hpa)")
    args = parser.parse_args()
    for path in args.scenarios:
        s = scenario.load(str(path))
        ctx = policies.Context(s, scenario.arrivals(s))
        for name in args.policy.split(","):
            simulate.run_policy(ctx, name)  # sizes the policy's start (cached in the context) outside the timing
            # CPU time rather than wall time: on a shared machine the wall clock measures the neighbours.
            start = time.process_time()
            r = simulate.run_policy(ctx, name)
            cpu = time.process_time() - start
            print(f"{s.name:<20} {name:<10} {cpu:6.2f} CPU s for {s.duration:.0f} simulated s -> "
                  f"{s.duration / cpu:.0f}x real time (attainment {r.slo_attainment:.3f}, {r.gpu_hours:.2f} GPU-h)")


if __name__ == "__main__":
    main()
