"""Bench: the twin's SLO capacity per GPU at infertune's final knobs against the engine's defaults, per scenario.

Issue 17 asks that on no scenario the knobs infertune ends with serve fewer requests per GPU within the SLO than
the engine's defaults. This runs infertune on each scenario, reads the knobs it ended with, and measures both with
the twin's own yardstick (`sim.policies.Context.capacity`: the highest per-replica Poisson rate at which a pool of
replicas keeps the SLO percentile of the scenario's requests within both objectives). A scenario whose knobs never
changed reports a ratio of 1. It measures; it is no test.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import suites

from infertune.sim import commands, policies, scenario, simulate


def one(path: str) -> dict[str, Any]:
    """infertune's run on one scenario, then the twin's SLO capacity at its first and its final knobs."""
    start = time.monotonic()
    s = scenario.load(path)
    ctx = policies.Context(s, scenario.arrivals(s))
    run = simulate.run_policy(ctx, "infertune")
    final = simulate.final_knobs(run) or ctx.knobs
    initial = ctx.capacity(ctx.knobs)
    tuned = initial if final == ctx.knobs else ctx.capacity(final)
    return {"scenario": s.name, "initial": commands.knobs_text(ctx.knobs), "final": commands.knobs_text(final),
            "initial_rps": round(initial, 4), "final_rps": round(tuned, 4),
            "ratio": round(tuned / initial, 3) if initial > 0 else (1.0 if tuned <= 0 else math.inf),
            "attainment": run.slo_attainment, "gpu_hours": run.gpu_hours, "restarts": run.restarts,
            "wall_s": round(time.monotonic() - start, 1)}


def main() -> None:
    results = suites.ROOT / "bench" / "results" / "final_knobs_capacity.json"
    args, rows = suites.run(__doc__.splitlines()[0], results, one)
    for r in rows:
        flag = "  FEWER" if r["ratio"] < 1 else ""
        print(f"{r['scenario']:<36} {r['initial']:>14} {r['initial_rps']:>8.3f} -> {r['final']:>16} "
              f"{r['final_rps']:>8.3f} req/s per replica  x{r['ratio']:.3f}{flag}")
    fewer = [r for r in rows if r["ratio"] < 1]
    print(f"{len(fewer)} of {len(rows)} end at knobs that serve fewer requests per GPU within the SLO than the "
          "engine's defaults")
    args.json.write_text(json.dumps({"command": f"bench/final_knobs_capacity.py --suite {args.suite}",
                                     "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
