"""Test: the peers' rules on synthetic signals (HPA, KPA, Dynamo, WVA), the oracle's foresight and static sizing."""

from __future__ import annotations

import datetime

import pytest

from infertune import models, observation, render
from infertune.sim import cluster, policies, scenario, workload

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


def test_hpa_reads_running_requests_of_ready_pods() -> None:
    hpa = policies.Hpa(KNOBS, target=10.0, current=2)
    o = obs([("a", True, True), ("b", True, True), ("c", False, True)],
            {"a": observation.PodMetrics(running=25, waiting=100), "b": observation.PodMetrics(running=25)})
    d = hpa.decide(o, now=at(15))
    assert hpa.current == 5 and d.revisions[0].replicas == 5  # waiting requests are not in its metric


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
