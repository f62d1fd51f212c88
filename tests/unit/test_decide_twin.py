"""Test: decisions that only the closed loop on the twin shows going wrong (decide against the simulated engines)."""

from __future__ import annotations

from typing import Any

import pytest

from infertune.sim import policies, scenario, simulate

# Decode-heavy requests (200 in, 1,500 out on average, a minute or more each) on Llama-3.1-8B BF16 on one L40S at
# the engine's default maxBatchSize of 256, under tuning.mode auto with a 600 s cold start. The scale-down delay is
# the HPA's 300 s, not auto's 600 s (the cold start), so the 12 minutes show a scale-down before the cold start ends.
DECODE_HEAVY: dict[str, Any] = {
    "name": "decode-heavy-start", "model": "llama-3.1-8b", "gpu": "l40s", "weights": "bf16", "engine": "vllm",
    "slo": {"ttft": "300ms", "itl": "55ms"}, "coldStart": "10m", "duration": "12m", "seed": 7,
    "scaling": {"minReplicas": 1, "maxReplicas": 30, "standby": {"min": 0, "max": 4}, "scaleDownDelay": "5m"},
    "workload": {"synthetic": {"arrival": {"pattern": "poisson", "rate": 24},
                               "input": {"mean": 200, "cv": 0.5, "max": 2000},
                               "output": {"mean": 1500, "cv": 0.5, "max": 6000}}},
}


def test_the_initial_knobs_full_batch_that_misses_the_slo_sizes_no_scale_down() -> None:
    # The full batch of 256 (252 running, all the KV cache holds) predicts an ITL past 55 ms. Sized on it (2.99
    # req/s a replica), 16 replicas were cut to 9 five minutes in; the KV cache filled, the operator restarted on
    # FP8 KV, the 9 ran at 100-110 ms for the 600 s new pods take, and the run held 45% of its requests in the SLO.
    # Bounded by the knee under the cap, the scale-down stops where the knee holds, running requests beyond those
    # slots count as overload (the pods going are promoted back), and the run holds its SLO. (At the tokens its pods
    # measure a request to hold, 1,100-1,160 where the model said 950, the knee under the cap is 120 running and the
    # scale-down stops at 14; the default KV cache is then the limit, and the one restart is for FP8 KV, which
    # doubles it: 7 replicas where 12 served, 100% of requests within the SLO.)
    s = scenario.parse(DECODE_HEAVY)
    r = simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune")
    assert r.slo_attainment >= 0.95, r.slo_attainment
    changes = [message for _, reason, message in r.events if reason == "TuningChanged"]
    assert r.restarts <= 1 and all("KV default -> fp8" in m and "KV-limited" in m for m in changes), changes
    assert any(reason == "ScaledDown" and "the SLO would be missed" in message for _, reason, message in r.events)



def test_a_fleet_at_max_replicas_that_cannot_serve_its_load_moves_its_knobs_at_once() -> None:
    # Started at maxBatchSize 8 (tuning.initialMaxBatchSize, or a knee planned for a shape the load has left), 6
    # replicas (maxReplicas) hold 48 requests at once against 8 req/s of a minute each: every request queues and
    # the ITL stays far inside its objective. The change to the knee (+1,669% goodput per replica) waited for
    # "the burst" to pass, and with nothing measured near the knee its confidence stayed at the physics' 0.25:
    # no change in 10 minutes, 1% of requests within the SLO. Replicas cannot absorb it, so it is a miss the
    # knobs alone fix, made on the first measured cycle.
    s = scenario.parse({
        **DECODE_HEAVY, "name": "decode-heavy-small-start", "coldStart": "2m", "duration": "10m",
        "scaling": {"minReplicas": 1, "maxReplicas": 6, "standby": {"min": 0, "max": 0}},
        "initial": {"maxBatchSize": 8, "replicas": 6},
        "workload": {"synthetic": {**DECODE_HEAVY["workload"]["synthetic"],
                                   "arrival": {"pattern": "poisson", "rate": 8}}}})
    r = simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune")
    changes = [(t, message) for t, reason, message in r.events if reason == "TuningChanged"]
    assert len(changes) == 1 and changes[0][0] <= 120, changes
    assert "at maxReplicas 6 these knobs leave 100%" in changes[0][1]
    assert r.final_max_batch_size > 8 * 10
    assert r.slo_attainment > 0.5, r.slo_attainment  # 0.67: the 2 minutes the new pods load still queue


def test_a_batch_pinned_by_the_tuning_bounds_is_sized_at_its_knee_not_its_full_batch() -> None:
    # tuning.maxBatchSize 256..256 leaves the tuner nothing to choose, so the engine's 256 is not a knee it chose.
    # Sized at its full batch (the knee search started at the bounds' 256 and found none under it), the fleet was
    # cut and held 45% of its requests in the SLO; at the knee under the cap (searched from 1, as requests
    # running rather than a cap to set) it is sized as under tuning.mode off, which pins nothing. The KV dtype is
    # pinned too: left free, auto moves to FP8 at the pinned 256 (a full batch predicted at 54.1 ms against 55 ms,
    # inside the calibration's measured error), a knob it may choose, and then it is no longer the run under off.
    pinned = {**DECODE_HEAVY, "tuning": {"maxBatchSize": {"min": 256, "max": 256}, "kvCacheDtype": "default"}}
    runs = []
    for mode in ("auto", "off"):
        s = scenario.parse({**pinned, "name": f"decode-heavy-pinned-{mode}",
                            "tuning": {**pinned["tuning"], "mode": mode}})
        runs.append(simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune"))
    auto, off = runs
    assert auto.slo_attainment >= 0.95, auto.slo_attainment
    assert auto.restarts == 0
    assert (auto.slo_attainment, auto.gpu_hours) == (off.slo_attainment, off.gpu_hours)
    # With the KV dtype left to it, the one change auto may make is FP8 at the pinned cap, and it holds the SLO.
    s = scenario.parse({**DECODE_HEAVY, "name": "decode-heavy-pinned-batch",
                        "tuning": {"maxBatchSize": {"min": 256, "max": 256}}})
    free = simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune")
    assert free.slo_attainment >= 0.95, free.slo_attainment
    changes = [message for _, reason, message in free.events if reason == "TuningChanged"]
    assert free.restarts <= 1 and all("maxBatchSize 256 -> 256, KV default -> fp8" in m for m in changes), changes


# 70B FP8 on one H100, chat at 8 req/s, behind a plain Service: kube-proxy picks a pod at random for each request.
CHAT_BEHIND_A_SERVICE: dict[str, Any] = {
    "name": "chat-random", "model": "llama-3.1-70b", "gpu": "h100-sxm-80gb", "weights": "fp8", "engine": "vllm",
    "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "300s", "duration": "30m", "seed": 1, "routing": "random",
    "workload": {"synthetic": {"arrival": {"pattern": "poisson", "rate": 8},
                               "input": {"mean": 1000, "cv": 1.0}, "output": {"mean": 200, "cv": 1.0}}},
}


def test_told_that_the_service_routes_at_random_the_replicas_hold_the_slo_there() -> None:
    # Sized as one pooled queue (scaling.routing least-outstanding, the default), the replicas' own queues run
    # over: 90.7% of requests in the SLO. Told (random), each replica's queue is sized on its own: 96.2%, with
    # more GPU-hours (7.4 against 5.7).
    runs = {}
    for told in ("least-outstanding", "random"):
        s = scenario.parse({**CHAT_BEHIND_A_SERVICE, "scaling": {
            "minReplicas": 1, "maxReplicas": 24, "standby": {"min": 0, "max": 4}, "routing": told}})
        runs[told] = simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune")
    assert runs["random"].slo_attainment >= 0.95 > runs["least-outstanding"].slo_attainment + 0.03, runs
    assert runs["random"].gpu_hours > runs["least-outstanding"].gpu_hours


# Code (2,000 in, 30 out) on Llama-3.1-8B FP8 on one L40S, a compressed day: 45 req/s +-60% over 30 minutes,
# beginning at the top of the fall, with a 5-minute cold start.
STEEP_DIURNAL: dict[str, Any] = {
    "name": "steep-diurnal", "model": "llama-3.1-8b", "gpu": "l40s", "weights": "fp8", "engine": "vllm",
    "slo": {"ttft": "1400ms", "itl": "60ms"}, "coldStart": "5m", "duration": "30m", "seed": 3,
    "scaling": {"minReplicas": 1, "maxReplicas": 18, "standby": {"min": 0, "max": 4}},
    "workload": {"synthetic": {
        "arrival": {"pattern": "diurnal", "rate": 45, "amplitude": 0.6, "period": "30m", "phase": "15m"},
        "input": {"mean": 2000, "cv": 0.5, "max": 16000}, "output": {"mean": 30, "cv": 0.5, "max": 200}}},
}


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_a_steep_diurnal_holds_standby_at_its_trough_for_the_rise(seed: int) -> None:
    # The fall from 46 to 19 req/s is followed a cycle behind, so its one-step error is small and the standby band
    # (capped at the levels the fall visited) held nothing at the trough; the rise to 72 req/s within 12 minutes
    # then queued behind pods still loading. The forecast made a cold start before the trough erred by the fall
    # over a cold start; standby for that error is promoted as the rise comes. Seeds 3-10 of this shape, measured
    # without that standby (e0f0125): 70.1-72.1% in the SLO at 5.28-5.56 GPU-h; with it: 84.7-99.4% at
    # 4.12-4.45. Which seeds reach 95% turns on one pod: where the standby need sits on a boundary, a 2% move in
    # a replica's planned capacity (knee 16 -> 17) deletes a pod still loading (seed 3: 99.2% before the
    # calibration read the steps its tokens ran at, 84.7% after; docs/concepts.md, "Standby").
    s = scenario.parse({**STEEP_DIURNAL, "seed": seed})
    r = simulate.run_policy(policies.Context(s, scenario.arrivals(s)), "infertune")
    assert r.slo_attainment >= 0.8, r.slo_attainment
    assert r.gpu_hours < 5.0, r.gpu_hours
    assert r.restarts <= 1
    assert any(reason == "StandbyPromoted" for _, reason, _ in r.events)
    # From the trough (450 s in, 18 req/s) into the rise, standby pods load or stand beside the serving ones, one or
    # more on average (a cycle may show none as a pod that loaded takes a serving one's place); without the
    # lead-time standby none did (seeds 3-6 at e0f0125: no standby or starting pod from 400 to 700 s).
    trough = [p for p in r.series if 450 <= p.t <= 690]
    assert trough and sum(p.standby + p.starting for p in trough) >= len(trough), trough

