"""Bench: what capping the batch at the knee is worth alone: the twin's SLO capacity at the planner's knee against
the engine's open batch, at the engine's KV dtype and token budget, per scenario.

The operator restarts an engine whose cap is more than 1.5x the knee to the knee (decide._motive, "above").
This measures what that step is worth by itself, apart from the FP8 KV cache and the token budget that often come
with it: the knee is searched on the scenario's mean request shape at the prior calibration (what the operator
knows before its first measurement) with the engine's own KV dtype and budget, and both knobs are measured with
the twin's yardstick (`sim.policies.Context.capacity`: the highest per-replica Poisson rate a pool of 4 replicas
keeps within the SLO percentile). Scenarios whose cap is not clearly above the knee are listed and not measured.
It measures; it is no test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import suites

from infertune import knee, models
from infertune.sim import commands, policies, scenario


def one(path: str) -> dict[str, Any]:
    """The knee under the engine's defaults on one scenario, and the twin's capacity there and at the defaults."""
    start = time.monotonic()
    s = scenario.load(path)
    ctx = policies.Context(s, scenario.arrivals(s))
    spec, defaults = ctx.spec, ctx.knobs
    shape = knee.Workload(isl=max(1, round(ctx.shape.isl)), osl=max(2, round(ctx.shape.osl)))
    at = knee.held(spec, defaults, shape, models.Calibration())
    cap = models.Knobs(max_batch_size=max(1, int(at.knobs.max_batch_size)), kv_cache_dtype=defaults.kv_cache_dtype,
                       max_num_batched_tokens=defaults.max_num_batched_tokens)
    row: dict[str, Any] = {"scenario": s.name, "defaults": commands.knobs_text(defaults),
                           "knee": commands.knobs_text(cap), "knee_feasible": at.feasible,
                           "above": defaults.max_batch_size > cap.max_batch_size * knee.CLEARLY_ABOVE}
    if row["above"]:
        open_rps, capped_rps = ctx.capacity(defaults), ctx.capacity(cap)
        row.update(open_rps=round(open_rps, 4), knee_rps=round(capped_rps, 4),
                   ratio=round(capped_rps / open_rps, 3) if open_rps > 0 else None)
    row["wall_s"] = round(time.monotonic() - start, 1)
    return row


def main() -> None:
    results = suites.ROOT / "bench" / "results" / "knee_cap_capacity.json"
    args, rows = suites.run(__doc__.splitlines()[0], results, one)
    measured = [r for r in rows if r.get("ratio") is not None]
    for r in measured:
        print(f"{r['scenario']:<36} open {r['defaults']:>14} {r['open_rps']:>8.3f} | knee {r['knee']:>12} "
              f"{r['knee_rps']:>8.3f} req/s per replica  x{r['ratio']:.3f}")
    fewer = [r for r in measured if r["ratio"] < 0.97]
    more = [r for r in measured if r["ratio"] > 1.03]
    above = sum(1 for r in rows if r["above"])
    print(f"{above} of {len(rows)} scenarios start with a cap clearly above the knee; capped there, "
          f"{len(more)} serve more than 3% more within the SLO, {len(fewer)} more than 3% less, the rest within 3%")
    args.json.write_text(json.dumps({"command": f"bench/knee_cap_capacity.py --suite {args.suite}",
                                     "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
