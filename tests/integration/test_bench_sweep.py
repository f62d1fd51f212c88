"""Test: the bench's peer sweep (runs that give up once they cannot hold the goal) picks the setting an exhaustive
sweep of full runs picks, the cheapest holding the goal, with that setting's full-run numbers."""

from __future__ import annotations

import pathlib

import pytest

import bench_module
from infertune.sim import policies, scenario, simulate

# Ten minutes of 8 requests/s on Llama-3.1-8B / L40S: a few replicas, so the small targets hold and the large
# ones (fewer replicas) miss the goal, and the sweep has a boundary to find.
SCENARIO = scenario.parse({
    "name": "sweep", "model": "llama-3.1-8b", "gpu": "l40s", "weights": "bf16",
    "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "60s", "duration": "10m", "seed": 2,
    "scaling": {"minReplicas": 1, "maxReplicas": 12},
    "workload": {"synthetic": {"arrival": {"rate": 8}}},
})


@pytest.fixture(scope="module")
def ctx() -> policies.Context:
    return policies.Context(SCENARIO, scenario.arrivals(SCENARIO))


@pytest.mark.parametrize("peer", ["hpa", "dynamo"])
def test_the_pruned_sweep_picks_what_the_full_sweep_picks(ctx: policies.Context, peer: str,
                                                           tmp_path: pathlib.Path) -> None:
    bench = bench_module.decision_quality()
    file = tmp_path / "sweep.yaml"
    file.write_text("the runner keys its cache by this file's bytes")
    runner = bench.Runner(ctx, file, None, ("test", "test"))
    info, picked = bench.sweep(runner, peer, ctx.knobs)
    grid = info["grid"]
    full = {v: simulate.run_policy(ctx, peer, setting=v) for v in grid}
    holding = [v for v in grid if full[v].slo_attainment >= bench.GOAL]
    assert holding and len(holding) < len(grid), "the scenario must have a boundary for the sweep to find"
    # The full sweep's answer under the bench's rule: the cheapest value holding the goal (on a tie, the larger).
    cheapest = min(holding, key=lambda v: (full[v].gpu_hours, -v))
    assert info["holds"] and info["value"] == cheapest
    # Each failing value stopped early: the probes cost less simulated time than the full runs.
    assert any(attainment is None for _, attainment in info["probes"]), "no probe gave up"
    # The reported numbers are the chosen setting's full run, not a truncated one.
    assert not picked.gave_up
    assert picked.summary() == full[info["value"]].summary()
    for value, attainment in info["probes"]:
        if attainment is None:  # gave up: the full run misses the goal too
            assert full[value].slo_attainment < bench.GOAL
        else:
            assert attainment == full[value].slo_attainment
