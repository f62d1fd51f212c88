"""Test: the peers' rules on synthetic signals (HPA, KPA, Dynamo, WVA), the oracle's foresight and static sizing."""

from __future__ import annotations

import datetime

import pytest

from infertune import bisection, models, observation, render
from infertune.sim import cluster, policies, scenario, simulate, workload

SCENARIO = scenario.parse({
    "name": "t", "model": "llama-3.1-8b", "gpu": "h100-sxm-80gb", "weights": "bf16",
    "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "300s", "duration": "20m",
    "scaling": {"minReplicas": 1, "maxReplicas": 20, "standby": {"min": 0, "max": 2}},
    "workload": {"synthetic": {"arrival": {"rate": 1}}},
})
SPEC = scenario.to_spec(SCENARIO)
KNOBS = models.Knobs(max_batch_size=64)
T0 = cluster.EPOCH


def at(seconds: float) -> datetime.datetime:
    return cluster.when(seconds)


def obs(pods: list[tuple[str, bool, bool]], metrics: dict[str, observation.PodMetrics], *,
        knobs: models.Knobs = KNOBS) -> observation.Observation:
    """An observation of pods (name, ready, serving) of one revision with these per-pod signals."""
    rev = render.revision(SPEC, knobs)
    facts = tuple(observation.PodFacts(name=n, revision=rev, ready=r, serving=s, created=T0 - 300,
                                       ready_since=T0 if r else None) for n, r, s in pods)
    revision = observation.RevisionFacts(name=f"t-{rev}", revision=rev, knobs=knobs, replicas=len(pods),
                                         ready_replicas=sum(1 for _, r, _ in pods if r), created=T0 - 300)
    return observation.Observation(name="t", namespace="default", generation=1, spec=SPEC,
                                   status=models.InferenceDeploymentStatus(), revisions=(revision,), pods=facts,
                                   metrics=observation.Metrics(pods=metrics))


# ---------------------------------------------------------------------------------------------- HPA


@pytest.mark.parametrize(("total", "expected"), [
    (40.0, 4),  # exactly on target
    (43.9, 4),  # ratio 1.1: inside the 0.1 tolerance
    (44.4, 5),  # ratio 1.11: ceil(4.44)
    (36.4, 4),  # ratio 0.91: inside, and scale-down is stabilised anyway
])
def test_hpa_tolerance(total: float, expected: int) -> None:
    hpa = policies.Hpa(KNOBS, target=10.0, current=4)
    assert hpa.step(total, T0 + 15, SPEC) == expected


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    began = policies.collections.deque([(T0, 6)])
    hpa = policies.Hpa(KNOBS, target=10.0, current=6, history=began)
    seen = {t: hpa.step(20.0, T0 + t, SPEC) for t in range(15, 331, 15)}
    assert all(n == 6 for t, n in seen.items() if t <= 300)
    assert seen[315] == 2


def test_hpa_scale_up_is_limited_to_double_or_four_pods_per_period() -> None:
    hpa = policies.Hpa(KNOBS, target=10.0, current=2)
    assert hpa.step(1000.0, T0 + 15, SPEC) == 6  # max(2 x 2, 2 + 4)
    assert hpa.step(1000.0, T0 + 30, SPEC) == 12
    assert hpa.step(1000.0, T0 + 45, SPEC) == 20  # maxReplicas


def test_hpa_reads_running_and_waiting_requests_of_ready_pods() -> None:
    hpa = policies.Hpa(KNOBS, target=10.0, current=4)
    o = obs([("a", True, True), ("b", True, True), ("c", False, True)],
            {"a": observation.PodMetrics(running=25, waiting=15), "b": observation.PodMetrics(running=25),
             "c": observation.PodMetrics(running=50, waiting=50)})
    d = hpa.decide(o, now=at(15))
    assert hpa.current == 7 and d.revisions[0].replicas == 7  # (25 + 15 + 25) / 10; the unready pod not counted


def test_hpa_scales_up_when_a_capped_batch_holds_running_at_the_cap() -> None:
    # Max batch 8, target 8 per pod: running alone reads 8 per pod (ratio 1, never a reason to scale); the queue
    # behind the cap is what says the pods are overloaded.
    hpa = policies.Hpa(KNOBS, target=8.0, current=2)
    o = obs([("a", True, True), ("b", True, True)],
            {"a": observation.PodMetrics(running=8, waiting=12), "b": observation.PodMetrics(running=8, waiting=12)})
    hpa.decide(o, now=at(15))
    assert hpa.current == 5  # ceil(40 / 8)


def test_hpa_peer_scales_up_on_the_twin_with_a_capped_batch() -> None:
    capped = scenario.parse({
        "name": "capped", "model": "llama-3.1-8b", "gpu": "l40s", "weights": "bf16",
        "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "60s", "duration": "8m", "seed": 3,
        "initial": {"maxBatchSize": 4, "replicas": 1},
        "scaling": {"minReplicas": 1, "maxReplicas": 8},
        "workload": {"synthetic": {"arrival": {"rate": 4}, "input": {"mean": 500, "cv": 0.5},
                                   "output": {"mean": 100, "cv": 0.5}}},
    })
    ctx = policies.Context(capped, scenario.arrivals(capped))
    ctx._load_test[ctx.knobs] = 4  # the load-tested concurrency cannot exceed the batch of 4
    result = simulate.run_policy(ctx, "hpa")
    assert ctx.knobs.max_batch_size == 4 and result.max_replicas >= 3


# ---------------------------------------------------------------------------------------------- KPA


def test_kpa_stable_mode_sizes_to_the_target_at_seventy_percent() -> None:
    kpa = policies.Kpa(KNOBS, target=10.0, current=2)
    for t in range(2, 62, 2):
        n = kpa.step(14.0, 2, T0 + t, SPEC)
    assert n == 2 and kpa.panic_since is None  # 14 / (10 x 0.7) = 2
    for t in range(62, 200, 2):
        n = kpa.step(20.0, 2, T0 + t, SPEC)
    assert n == 3 and kpa.panic_since is None  # ceil(20 / 7) = 3 pods, 1.5x the ready ones: no panic


def test_kpa_panics_at_twice_the_ready_capacity_and_holds() -> None:
    kpa = policies.Kpa(KNOBS, target=10.0, current=2)
    for t in range(2, 62, 2):
        kpa.step(14.0, 2, T0 + t, SPEC)
    n = kpa.step(140.0, 2, T0 + 62, SPEC)
    # Panic window: (14 + 14 + 140) / 3 = 56 -> 8 pods >= 2 x 2 ready: panic, scale to 8 at once.
    assert kpa.panic_since == T0 + 62 and n == 8
    # The burst ends: in panic mode nothing scales down until a stable window passes without panic.
    held = [kpa.step(7.0, 8, T0 + t, SPEC) for t in range(64, 122, 2)]
    assert min(held) >= 8
    later = [kpa.step(7.0, 8, T0 + t, SPEC) for t in range(122, 300, 2)]
    assert kpa.panic_since is None and later[-1] == 4  # max-scale-down-rate 2: at most halve per tick


def test_kpa_below_the_panic_threshold_stays_stable() -> None:
    kpa = policies.Kpa(KNOBS, target=10.0, current=4)
    for t in range(2, 62, 2):
        kpa.step(28.0, 4, T0 + t, SPEC)
    kpa.step(40.0, 4, T0 + 62, SPEC)  # panic window (28+28+40)/3 = 32 -> 5 pods < 2 x 4
    assert kpa.panic_since is None


# ---------------------------------------------------------------------------------------------- Dynamo


def dynamo(current: int = 2) -> policies.Dynamo:
    d = policies.Dynamo(KNOBS, kv_blocks=1000, current=current)
    for x in range(100, 600, 100):
        d.itl.add(x, 20 + 0.05 * x)  # ITL 40 ms at 400 blocks
    for x in range(1000, 6000, 1000):
        d.ttft.add(x, 0.2 * x)  # TTFT 1,500 ms at 7,500 tokens: 6,500 queued beyond a 1,000-token prompt
    return d


def worker(kv: float, waiting: float = 0.0) -> observation.PodMetrics:
    return observation.PodMetrics(kv_usage=kv, waiting=waiting, mean_input_tokens=1000)


@pytest.mark.parametrize(("case", "workers", "starting", "expected"), [
    ("every worker past the ITL load: +1", [worker(0.45), worker(0.5)], False, 3),
    ("every worker past the TTFT load: +1", [worker(0.1, waiting=7), worker(0.1, waiting=8)], False, 3),
    ("one worker below: no change", [worker(0.45), worker(0.3)], False, 2),
    ("all below both boundaries x (N-1)/N x 0.8: -1", [worker(0.1), worker(0.15)], False, 1),
    ("decode low but prefill high: no scale-down", [worker(0.1, waiting=4), worker(0.1, waiting=4)], False, 2),
    ("a worker still starting: wait", [worker(0.9), worker(0.9)], True, 2),
])
def test_dynamo_moves_one_replica_at_a_time(case: str, workers: list[observation.PodMetrics], starting: bool,
                                            expected: int) -> None:
    assert dynamo().step(workers, starting, SPEC) == expected, case


def test_dynamo_regression_inverts_at_the_sla_and_falls_back_on_a_flat_slope() -> None:
    r = policies._Regression(minimum=3)
    for x, y in [(1, 10), (2, 20)]:
        r.add(x, y)
    assert r.x_at(30) is None  # fewer than the minimum observations
    r.add(3, 30)
    assert r.x_at(45) == pytest.approx(4.5)
    flat = policies._Regression(minimum=3)
    for x, y in [(1, 50), (2, 10), (3, 40)]:
        flat.add(x, y)
    assert flat.x_at(45) == 2  # the smallest load seen below the SLA


# ---------------------------------------------------------------------------------------------- WVA


@pytest.mark.parametrize(("case", "replicas", "expected"), [
    ("spare capacity: hold", [(0.5, 0), (0.5, 0)], 2),
    ("average spare KV below 0.1: +1", [(0.75, 0), (0.75, 0)], 3),
    ("everyone saturated at KV >= 0.8: +1", [(0.85, 0), (0.8, 1)], 3),
    ("queue of 5 saturates", [(0.1, 5), (0.1, 6)], 3),
    ("average spare queue below 3: +1", [(0.2, 3), (0.2, 2)], 3),
    ("load fits on one fewer: -1", [(0.2, 0), (0.2, 0), (0.2, 0)], 2),
    ("one calm replica cannot shrink", [(0.85, 0), (0.1, 0)], 2),
])
def test_wva_saturation_rules(case: str, replicas: list[tuple[float, float]], expected: int) -> None:
    assert policies.Wva(KNOBS, current=len(replicas)).analyze(replicas) == expected, case


def test_wva_holds_while_a_replica_is_pending() -> None:
    wva = policies.Wva(KNOBS, current=3)
    hot = observation.PodMetrics(kv_usage=0.95, waiting=9)
    o = obs([("a", True, True), ("b", True, True), ("c", False, True)], {"a": hot, "b": hot})
    wva.decide(o, now=at(5))
    assert wva.current == 3  # saturated, but c is still loading: neither a cascade nor taking c back
    o = obs([("a", True, True), ("b", True, True), ("c", True, True)], {"a": hot, "b": hot, "c": hot})
    wva.decide(o, now=at(65))
    assert wva.current == 4


def test_wva_uses_one_minute_peaks_acts_every_minute_and_holds_scale_down() -> None:
    began = policies.collections.deque([(T0, 3)])
    wva = policies.Wva(KNOBS, current=3, history=began)
    pods = [("a", True, True), ("b", True, True), ("c", True, True)]
    calm = {n: observation.PodMetrics(kv_usage=0.1, waiting=0) for n, _, _ in pods}
    busy = {**calm, "a": observation.PodMetrics(kv_usage=0.95, waiting=0)}
    wva.decide(obs(pods, busy), now=at(5))  # one busy sample at 5 s: a is saturated, b and c could take less
    assert wva.current == 3  # -1 is recommended, but the HPA's memory holds the starting 3 for 120 s
    for t in range(10, 120, 5):
        wva.decide(obs(pods, calm), now=at(t))
    assert wva.current == 3  # the next analysis (65 s) recommends 2 again; still held
    for t in range(120, 200, 5):
        wva.decide(obs(pods, calm), now=at(t))
    assert wva.current == 2


# ---------------------------------------------------------------------------------------------- oracle, static, build


def step_stream(low: float, high: float, *, switch: float, end: float) -> list[workload.Arrival]:
    out, t = [], 0.0
    while t < end:
        rate = low if t < switch else high
        out.append(workload.Arrival(t, 200, 50))
        t += 1.0 / rate
    return out


def stubbed(stream: list[workload.Arrival], capacity: float = 2.2) -> policies.Context:
    ctx = policies.Context(SCENARIO, stream)
    ctx._capacity[KNOBS] = capacity
    ctx._capacity[ctx.knobs] = capacity
    return ctx


def test_the_oracle_starts_replicas_one_cold_start_ahead() -> None:
    ctx = stubbed(step_stream(2.0, 10.0, switch=600, end=1200))
    oracle = policies.Oracle(ctx, KNOBS, tick=15.0, window=60.0)
    assert oracle.wanted(0.0) == 1  # 2 req/s at 2.2 req/s per replica
    assert oracle.wanted(200.0) == 1  # 600 s is beyond 200 + 300 + 15 + the one-minute rate
    assert oracle.wanted(290.0) == 5  # the step at 600 s is within the lead: 10 / 2.2
    assert oracle.wanted(1100.0) == 5


def test_static_sizes_for_the_peak_once_and_never_moves() -> None:
    ctx = stubbed(step_stream(2.0, 10.0, switch=600, end=1200))
    static, start = policies.build("static", ctx)
    assert start.replicas == 5 and start.knobs == ctx.knobs
    o = obs([(f"p{i}", True, True) for i in range(5)], {}, knobs=start.knobs)
    d = static.decide(o, now=at(15))
    assert [p.replicas for p in d.revisions] == [5] and not d.pod_patches


def test_build_gives_each_policy_its_start_and_rejects_unknown_names() -> None:
    ctx = stubbed(step_stream(2.0, 10.0, switch=600, end=1200))
    ctx._load_test[ctx.knobs] = 12
    for name in ("infertune", "hpa", "kpa", "wva"):
        policy, start = policies.build(name, ctx)
        assert start.replicas == 1 and start.knobs == ctx.knobs and policy.name == name
    _, start = policies.build("infertune-nostandby", ctx)
    assert start.spec.scaling.standby == models.StandbySpec(min=0, max=0)
    hpa, _ = policies.build("hpa", ctx)
    assert isinstance(hpa, policies.Hpa) and hpa.target == 12.0  # the load-tested concurrency
    with pytest.raises(ValueError, match="unknown policy 'k8s'"):
        policies.build("k8s", ctx)


def test_peers_act_through_the_rollout_planner_without_standby() -> None:
    o = obs([("a", True, True), ("b", True, True), ("c", True, True)],
            {n: observation.PodMetrics(in_flight=0) for n in "abc"})
    d = policies.act(o, knobs=KNOBS, serving=2, now=at(15))
    assert [(p.name, p.serving) for p in d.pod_patches if p.serving is not None] == [("c", False)]
    assert d.status.replicas.desired == 2 and d.status.replicas.desired_standby == 0


# ---------------------------------------------------------------------------------------------- llm-d


TRUE_STATE = (12.0, 0.04, 0.0002)  # alpha ms, beta and gamma ms per token


def test_the_queueing_model_latencies_and_capacity_meet_the_targets_at_the_edge() -> None:
    load = policies.QueueLoad(rate=5.0, isl=1000, osl=200)
    ttft, itl = policies.queue_latency(TRUE_STATE, load) or (0.0, 0.0)
    rho = 5.0 / 1000 * (0.04 * 1200 + 0.0002 * 201 * 1100)
    t_iter = 12.0 / (1 - rho)
    assert ttft == pytest.approx(t_iter + 0.0402 * 1000) and itl == pytest.approx(t_iter + 0.04 + 0.0002 * 1100.5)
    assert policies.queue_latency(TRUE_STATE, policies.QueueLoad(rate=1000.0 / (0.04 * 1200 + 0.0002 * 201 * 1100),
                                                                 isl=1000, osl=200)) is None  # rho = 1
    cap = policies.queue_capacity(TRUE_STATE, load, ttft_ms=2000, itl_ms=40, max_batch=1024)
    at_cap = policies.queue_latency(TRUE_STATE, policies.QueueLoad(cap, 1000, 200))
    above = policies.queue_latency(TRUE_STATE, policies.QueueLoad(cap * 1.01, 1000, 200))
    assert at_cap is not None and at_cap[1] <= 40 and (above is None or above[1] > 40)  # ITL binds here
    assert policies.queue_capacity(TRUE_STATE, load, ttft_ms=2000, itl_ms=5, max_batch=1024) == 0.0  # idle misses
    tight = policies.queue_capacity(TRUE_STATE, load, ttft_ms=2000, itl_ms=40, max_batch=2)
    assert 0 < tight < cap  # the batch cap binds first


def test_the_tuner_learns_the_parameters_from_observations_and_rejects_an_outlier() -> None:
    ekf = policies.Ekf((15.0, 0.05, 0.00025))  # 25 % off
    loads = [policies.QueueLoad(r, 1000, 200) for r in (2.0, 4.0, 6.0, 8.0)] * 40
    for load in loads:
        z = policies.queue_latency(TRUE_STATE, load)
        assert z is not None
        ekf.update(z, load, expected=(1500.0, 40.0))
    for load in loads[:4]:
        predicted, truth = policies.queue_latency(ekf.x, load), policies.queue_latency(TRUE_STATE, load)
        assert predicted is not None and truth is not None
        assert predicted[1] == pytest.approx(truth[1], rel=0.05)
    before = list(ekf.x)
    assert not ekf.update((50_000.0, 4_000.0), loads[0], expected=(1500.0, 40.0))  # NIS far above 7.378
    assert ekf.x == before


def test_the_tuner_bootstraps_from_light_load_else_the_defaults() -> None:
    assert policies.Ekf.bootstrap(70.0, 20.0, 1000, 200) == pytest.approx((18.0, 0.0502283, 0.0017717), rel=1e-4)
    assert policies.Ekf.bootstrap(10.0, 20.0, 1000, 200) == policies.EKF_DEFAULT_STATE  # TTFT below alpha


def llmd(current: int = 4) -> policies.Llmd:
    return policies.Llmd(KNOBS, kv_tokens=100_000, token_budget=8192, current=current)


@pytest.mark.parametrize(("case", "votes", "change"), [
    # Any analyzer short of capacity scales up, by the largest need: 900 / 0.85 - 800 = 259 over 200 -> +2.
    ("one needs", [policies.Vote(200, 900, 800, 800), policies.Vote(1, 1, 4, 4)], 2),
    # Spare on both: 800 - 300 / 0.7 = 371 over 200 -> 1; 4 - 1 / 0.7 = 2.6 over 1 -> 2: the smaller, -1.
    ("all spare", [policies.Vote(200, 300, 800, 800), policies.Vote(1, 1, 4, 4)], -1),
    # One analyzer without spare vetoes the scale-down.
    ("one vetoes", [policies.Vote(200, 300, 800, 800), policies.Vote(1, 3, 4, 4)], 0),
    ("no capacity, no vote", [policies.Vote(0, 300, 0, 0)], 0),
])
def test_llmd_scales_up_when_any_analyzer_asks_and_down_only_when_all_agree(
        case: str, votes: list[policies.Vote], change: int) -> None:
    assert llmd().combine(votes) == change, case


def test_llmd_saturation_capacity_is_the_kv_bound_or_what_a_full_queue_showed() -> None:
    m = llmd()
    per, demand = m.saturation([observation.PodMetrics(kv_usage=0.5, waiting=2, mean_input_tokens=1000,
                                                       mean_output_tokens=200)]) or (0.0, 0.0)
    # k1 = 100,000 x 0.8; k2 from the engine's arguments: min(8,192 x 200 / 1,200, 64) x 1,100 = 70,400.
    assert per == pytest.approx(70_400) and demand == pytest.approx(50_000 + 2_000)
    per, _ = m.saturation([observation.PodMetrics(kv_usage=0.3, waiting=6, mean_input_tokens=1000,
                                                  mean_output_tokens=200)]) or (0.0, 0.0)
    assert per == pytest.approx(30_000) and list(m.k2) == [30_000]  # the queue reached 5: observed k2
    per, _ = m.saturation([observation.PodMetrics(kv_usage=0.1, waiting=0, mean_input_tokens=1000,
                                                  mean_output_tokens=200)]) or (0.0, 0.0)
    assert per == pytest.approx(30_000)  # the rolling average of what was observed


def test_llmd_holds_scale_down_for_the_hpa_stabilisation_window() -> None:
    m = llmd(current=4)
    m.history.append((T0, 4))
    idle = {n: observation.PodMetrics(kv_usage=0.01, waiting=0, mean_input_tokens=1000, mean_output_tokens=200)
            for n in "abcd"}
    o = obs([(n, True, True) for n in "abcd"], idle)
    m.decide(o, now=at(30))
    assert m.current == 4  # the saturation analyzer would remove replicas; the HPA holds them 120 s
    m.decide(o, now=at(150))
    assert m.current < 4


# ---------------------------------------------------------------------------------------------- Dynamo SLA


def test_the_kalman_load_predictor_is_constant_until_five_points_then_follows_a_trend() -> None:
    k = policies.KalmanPredictor()
    for y in (100.0, 110.0, 120.0):
        k.add(y)
    assert k.predict() == 120.0
    for y in (130.0, 140.0, 150.0, 160.0, 170.0):
        k.add(y)
    assert 170.0 < k.predict() < 190.0  # the trend carries it past the last value


PROFILE = (policies.ProfilePoint(100, 10, 100, 1000), policies.ProfilePoint(200, 30, 1000, 8000),
           policies.ProfilePoint(900, 50, 1500, 12000))


def test_the_profile_gives_the_best_throughput_within_a_latency_target() -> None:
    def itl(p: policies.ProfilePoint) -> float:
        return p.itl_ms

    def out(p: policies.ProfilePoint) -> float:
        return p.output_tokens_per_s

    assert policies._best_throughput(PROFILE, latency=itl, rate=out, target=40) == pytest.approx(1250)
    assert policies._best_throughput(PROFILE, latency=itl, rate=out, target=5) == 100  # none meets it
    assert policies._latency_at(PROFILE, latency=itl, rate=out, load=550) == pytest.approx(20)


def test_the_sla_planner_floor_comes_from_predicted_load_over_profiled_throughput() -> None:
    load = policies.Dynamo(KNOBS, kv_blocks=1000, current=1)
    sla = policies.DynamoSla(KNOBS, load, PROFILE, floor=1)
    # 5 req/s of 1,000/200 tokens for 180 s on one replica: 1,000 output tok/s, ITL 30 ms as profiled (no
    # correction): decode needs 900 requests x 200 / 180 s = 1,000 tok/s at ITL <= 40 ms (1,250 per replica): 1;
    # prefill 5,000 tok/s at TTFT <= 1,500 ms (12,000 per replica): 1.
    pod = observation.PodMetrics(requests_per_s=5.0, ttft_mean=0.2, itl_mean=0.03, mean_input_tokens=1000,
                                 mean_output_tokens=200)
    for _ in range(36):
        sla.observe([pod])
    assert sla.plan(SPEC, 1) == 1
    # Three times the load: 3,000 tok/s on one replica, where the profile (clamped at its last point) expects
    # ITL 50 ms but 30 ms is measured: correction 0.6 loosens the ITL target to 40 / 0.6 = 67 ms, where a replica
    # gives 1,500 tok/s: ceil(3,000 / 1,500) = 2.
    for _ in range(36):
        sla.observe([pod.model_copy(update={"requests_per_s": 15.0})])
    assert sla.plan(SPEC, 1) == 2
    # The same load measured at the profiled ITL (50 ms): no correction, 1,250 per replica at 40 ms: 3.
    for _ in range(36):
        sla.observe([pod.model_copy(update={"requests_per_s": 15.0, "itl_mean": 0.05})])
    assert sla.plan(SPEC, 1) == 3


def test_the_sla_planner_keeps_the_load_loop_above_its_floor() -> None:
    load = policies.Dynamo(KNOBS, kv_blocks=1000, current=1)
    sla = policies.DynamoSla(KNOBS, load, PROFILE, floor=3)
    o = obs([("a", True, True)], {"a": observation.PodMetrics(kv_usage=0.1)})
    d = sla.decide(o, now=at(5))
    assert sla.load.current == 3 and d.status.replicas.desired == 3


# ---------------------------------------------------------------------------------------------- fair treatment


def test_peers_get_infertunes_floor_plus_its_standby_floor_and_no_standby() -> None:
    spec = SPEC.model_copy(update={"scaling": SPEC.scaling.model_copy(update={
        "min_replicas": 2, "standby": models.StandbySpec(min=2, max=4)})})
    peer = policies.peer_spec(spec)
    assert peer.scaling.min_replicas == 4 and peer.scaling.standby == models.StandbySpec(min=0, max=0)
    assert policies.peer_spec(SPEC).scaling.min_replicas == 1


def test_every_peer_has_a_grid_of_six_rising_values_around_its_default() -> None:
    ctx = stubbed(step_stream(2.0, 10.0, switch=600, end=1200))
    ctx._load_test[ctx.knobs] = 12
    for name in policies.PEERS:
        t = policies.tunable(name, ctx, ctx.knobs)
        assert len(t.grid) >= 6 and list(t.grid) == sorted(set(t.grid)), name
        assert t.grid[0] <= t.default <= t.grid[-1], name
    assert policies.tunable("hpa", ctx, ctx.knobs).default == 12.0
    with pytest.raises(ValueError, match="no tunable"):
        policies.tunable("static", ctx, ctx.knobs)


@pytest.mark.parametrize(("low", "high", "answer"), [(1, 256, 40), (1, 256, 0), (1, 256, 256), (5, 6, 5),
                                                     (1, 2, 1), (2, 100, 99)])
def test_largest_finds_the_last_passing_value_bisecting_between_the_ends(low: int, high: int, answer: int) -> None:
    probed: list[int] = []

    def ok(n: int) -> bool:
        probed.append(n)
        return n <= answer

    assert bisection.largest(low, high, ok) == max(low, min(answer, high))
    assert probed[:2] == [low, high][:len(probed[:2])]  # the ends first
    assert len(probed) == len(set(probed))
    assert len(probed) <= 2 + (high - low).bit_length()


def test_largest_probes_the_midpoints_of_its_known_ends() -> None:
    # A closed-loop check near its threshold need not be monotone: the probes, and so the answer, follow the
    # midpoints (good + bad) // 2 of the last known-good and known-bad values.
    passing = {1, 128, 136}
    probed: list[int] = []

    def ok(n: int) -> bool:
        probed.append(n)
        return n in passing

    assert bisection.largest(1, 256, ok) == 136
    assert probed == [1, 256, 128, 192, 160, 144, 136, 140, 138, 137]
