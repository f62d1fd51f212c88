"""Test: the closed-loop runner — determinism, result accounting, the JSON keys, standby, progress and the plot."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from infertune.sim import policies, scenario, simulate

RAW: dict[str, Any] = {
    "name": "tiny", "model": "llama-3.1-70b", "gpu": "h100-sxm-80gb", "weights": "fp8",
    "slo": {"ttft": "2s", "itl": "50ms"}, "cost": {"gpuHourly": 2.5}, "coldStart": "60s", "duration": "4m",
    "scaling": {"minReplicas": 1, "maxReplicas": 6, "standby": {"min": 1, "max": 1}},
    "workload": {"synthetic": {
        "arrival": {"pattern": "spike", "rate": 1, "peak": 3, "at": "2m", "length": "1m"},
        "input": {"mean": 300, "cv": 0.5}, "output": {"mean": 60, "cv": 0.5}}},
}


@pytest.fixture(autouse=True)
def quick_sizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short capacity runs: the numbers get coarser, the mechanics stay."""
    monkeypatch.setattr(policies, "CAPACITY_REQUESTS", 300)
    monkeypatch.setattr(policies, "CAPACITY_SECONDS", (30.0, 90.0))
    monkeypatch.setattr(policies, "CAPACITY_STEPS", 2)


@pytest.fixture(scope="module")
def tiny() -> scenario.Scenario:
    return scenario.parse(RAW)


def test_same_seed_same_results(tiny: scenario.Scenario) -> None:
    first = simulate.run(tiny, ["infertune", "hpa", "kpa"])
    again = simulate.run(tiny, ["infertune", "hpa", "kpa"])
    assert [r.summary() for r in first] == [r.summary() for r in again]
    assert [r.series for r in first] == [r.series for r in again]
    other = simulate.run(tiny.model_copy(update={"seed": 7}), ["hpa"])
    assert other[0].requests != first[1].requests


def test_the_json_object_has_the_issue_keys(tiny: scenario.Scenario) -> None:
    (r,) = simulate.run(tiny, ["static"])
    assert list(r.summary()) == list(simulate.KEYS) == [
        "policy", "slo_attainment", "ttft_p95_ms", "itl_p95_ms", "gpu_hours", "cost_per_million_output_tokens",
        "output_tokens", "restarts", "dropped_requests", "final_max_batch_size", "final_kv_cache_dtype",
        "final_max_num_batched_tokens", "max_replicas"]


def test_static_accounting_adds_up(tiny: scenario.Scenario) -> None:
    ctx = policies.Context(tiny, scenario.arrivals(tiny))
    r = simulate.run_policy(ctx, "static")
    n = r.max_replicas
    assert r.gpu_hours == pytest.approx(n * 240 / 3600, abs=1e-3)  # n pods x 4 minutes x 1 GPU, none added
    assert r.cost_per_million_output_tokens == pytest.approx(r.gpu_hours * 2.5 / (r.output_tokens / 1e6), rel=1e-2)
    assert r.requests == len(ctx.stream) and r.unfinished_requests == 0 and r.dropped_requests == 0
    assert r.restarts == 0 and r.final_max_batch_size == 1024 and r.final_kv_cache_dtype == "default"
    assert 0.9 <= r.slo_attainment <= 1.0
    assert len(r.series) == 16 and r.series[-1].t == 240.0
    # Per minute: n pods x 60 s; the steady-state goodput over every minute is the whole run's.
    assert r.gpu_seconds_by_minute == pytest.approx((n * 60.0,) * 4)
    assert r.settled_at == 0.0
    assert simulate.goodput_since(r, 0.0) == pytest.approx(r.goodput_tokens_per_gpu_s, rel=1e-3)
    # From 150 s: requests that arrived from 180 s on, over the last minute's GPU-seconds.
    late = sum(n_tok for t, n_tok in r.good_tokens if t >= 180.0)
    assert 0 < late < sum(n_tok for _, n_tok in r.good_tokens)
    assert simulate.goodput_since(r, 150.0) == pytest.approx(late / (n * 60.0))
    assert simulate.goodput_since(r, 240.0) == 0.0  # no whole minute left


def test_the_standby_pool_holds_gpus_and_nostandby_does_not(tiny: scenario.Scenario) -> None:
    ctx = policies.Context(tiny, scenario.arrivals(tiny))
    with_pool = simulate.run_policy(ctx, "infertune")
    without = simulate.run_policy(ctx, "infertune-nostandby")
    assert max(p.standby for p in with_pool.series) >= 1
    assert all(p.standby == 0 for p in without.series)
    assert with_pool.gpu_hours > without.gpu_hours


def test_nothing_serving_means_every_request_misses(tiny: scenario.Scenario) -> None:
    """An arrival stream that starts before any pod can serve: dropped requests count against attainment."""
    ctx = policies.Context(tiny, scenario.arrivals(tiny))
    r = simulate.run_policy(ctx, "static")
    dropped = simulate._result(ctx, "static", cl=_drop_everything(ctx), series=[], gpu_seconds=1.0, most=0, wall=0.0)
    assert dropped.slo_attainment == 0.0 and dropped.dropped_requests == len(ctx.stream)
    assert r.slo_attainment > 0


def _drop_everything(ctx: policies.Context) -> Any:
    from infertune.sim import cluster

    cl = cluster.Cluster(ctx.spec, cold_start=60.0, arrivals=ctx.stream)
    cl.advance(ctx.scenario.duration)  # no pod was ever created
    return cl


def test_progress_reports_simulated_time(tiny: scenario.Scenario) -> None:
    seen: list[tuple[str, float, float]] = []
    simulate.run(tiny, ["hpa"], progress=lambda name, done, total: seen.append((name, done, total)))
    assert seen[0] == ("hpa", 15.0, 240.0) and seen[-1] == ("hpa", 240.0, 240.0)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)


def test_unknown_policies_are_refused(tiny: scenario.Scenario) -> None:
    with pytest.raises(ValueError, match="unknown policy 'keda'; known: infertune"):
        simulate.run(tiny, ["keda"])


def test_the_plot_is_written(tiny: scenario.Scenario, tmp_path: pathlib.Path) -> None:
    results = simulate.run(tiny, ["static", "hpa"])
    out = simulate.plot(results, tmp_path / "run.png", slo=tiny.slo, title="tiny")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "static" in simulate.table(results) and "attain" in simulate.table(results)
