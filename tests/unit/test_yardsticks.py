"""Test: the yardsticks' searches (first_true, fixed_fleet) and a run that gives up once it cannot hold the goal."""

from __future__ import annotations

import itertools

import pytest

from infertune import models
from infertune.sim import policies, scenario, simulate, workload

SCENARIO = scenario.parse({
    "name": "y", "model": "llama-3.1-8b", "gpu": "l40s", "weights": "bf16",
    "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "60s", "duration": "10m", "seed": 2,
    "scaling": {"minReplicas": 1, "maxReplicas": 12},
    "workload": {"synthetic": {"arrival": {"rate": 1}}},
})


@pytest.mark.parametrize(("answer", "guess"), list(itertools.product([1, 2, 5, 12, 13], [1, 3, 7, 12])))
def test_first_true_finds_the_boundary_from_any_guess_probing_each_point_once(answer: int, guess: int) -> None:
    probed: list[int] = []

    def ok(i: int) -> bool:
        probed.append(i)
        return i >= answer

    found = simulate.first_true(1, 12, ok, guess=guess)
    assert found == (answer if answer <= 12 else None)
    assert len(probed) == len(set(probed))
    if found is not None and found > 1:
        assert found - 1 in probed  # the neighbour below was seen to fail
    if abs(answer - guess) <= 1 and answer <= 12:
        assert len(probed) <= 3


def fake_result(attainment: float, *, good: tuple[tuple[float, int], ...] = (), replicas: int = 1) -> simulate.Result:
    return simulate.Result(
        policy="static", slo_attainment=attainment, ttft_p95_ms=None, itl_p95_ms=None, gpu_hours=float(replicas),
        cost_per_million_output_tokens=None, output_tokens=0, restarts=0, dropped_requests=0,
        final_max_batch_size=None, final_kv_cache_dtype=None, max_replicas=replicas, requests=0,
        rejected_requests=0, unfinished_requests=0, goodput_tokens_per_gpu_s=0.0, knob_changes=(), settled_at=0.0,
        good_tokens=good, gpu_seconds_by_minute=(), events=(), series=(), wall_seconds=0.0)


def context() -> policies.Context:
    # 1 req/s, then 6 req/s in minute 5: the busiest minute starts at 300 s.
    stream = [workload.Arrival(float(t), 200, 50) for t in range(0, 300)]
    stream += [workload.Arrival(300 + t / 6, 200, 50) for t in range(360)]
    stream += [workload.Arrival(float(t), 200, 50) for t in range(360, 600)]
    ctx = policies.Context(SCENARIO, sorted(stream, key=lambda a: a.time))
    ctx._capacity[ctx.knobs] = 1.0
    return ctx


def test_static_right_is_the_cheapest_count_holding_the_goal_and_static_peak_holds_the_busiest_minute() -> None:
    ctx = context()
    assert ctx.busiest_minute == 300.0 and ctx.arrivals_between(300, 360) == 360
    calls: list[tuple[models.Knobs, int]] = []

    def run(knobs: models.Knobs, n: int) -> simulate.Result:
        calls.append((knobs, n))
        # Over the run 3 replicas hold 0.95; the busiest minute needs 6 (attainment n / 6 there).
        inside = tuple((300.0 + i / 6, 50) for i in range(min(360, 60 * n)))
        return fake_result(min(1.0, 0.9 + 0.02 * n), good=inside, replicas=n)

    right = simulate.fixed_fleet(ctx, "static-right", run=run)
    assert (right.replicas, right.holds, right.monotone) == (3, True, True)
    assert right.result.policy == "static-right" and right.result.max_replicas == 3
    assert {n for _, n in calls} >= {2, 3, 4}  # both neighbours checked
    peak = simulate.fixed_fleet(ctx, "static-peak", run=run)
    assert peak.replicas == 6 and peak.holds
    tuned = models.Knobs(max_batch_size=16)
    calls.clear()
    simulate.fixed_fleet(ctx, "static-right-tuned", run=run, tuned=tuned)
    assert {k for k, _ in calls} == {tuned}
    with pytest.raises(ValueError, match="final knobs"):
        simulate.fixed_fleet(ctx, "static-right-tuned", run=run)


def test_a_fleet_that_never_holds_reports_the_largest_count() -> None:
    ctx = context()
    fleet = simulate.fixed_fleet(ctx, "static-right", run=lambda k, n: fake_result(0.5, replicas=n))
    assert fleet.replicas == 12 and not fleet.holds


def test_a_run_gives_up_once_more_requests_missed_than_the_goal_allows() -> None:
    ctx = policies.Context(SCENARIO.model_copy(update={"duration": 300.0}), [
        workload.Arrival(t / 20, 2000, 300) for t in range(20 * 300)])  # 20 req/s on one replica: hopeless
    full = simulate.run_policy(ctx, "static", replicas=1)
    quick = simulate.run_policy(ctx, "static", replicas=1, give_up_below=0.95)
    assert quick.gave_up and not full.gave_up and full.slo_attainment < 0.95
    assert len(quick.series) < len(full.series)
    assert not simulate.run_policy(ctx, "static", replicas=1, give_up_below=0.0).gave_up  # a goal of 0: never


def test_simulate_runs_the_yardsticks_by_name_after_infertune_for_its_final_knobs() -> None:
    small = SCENARIO.model_copy(update={"duration": 180.0, "scaling": SCENARIO.scaling.model_copy(
        update={"max_replicas": 3})})
    results = simulate.run(small, ["static-right-tuned", "static-peak", "infertune"])
    assert [r.policy for r in results] == ["static-right-tuned", "static-peak", "infertune"]
    tuned, peak, me = results
    assert (tuned.final_max_batch_size, tuned.final_kv_cache_dtype) == (me.final_max_batch_size,
                                                                        me.final_kv_cache_dtype)
    assert tuned.slo_attainment >= simulate.GOAL and peak.slo_attainment >= simulate.GOAL
    with pytest.raises(ValueError, match="unknown policy 'static-wrong'"):
        simulate.run(small, ["static-wrong"])
