"""Test: the fake cluster — cold start, the Service, the ReplicaSet's ranking, graceful termination, revisions."""

from __future__ import annotations

import math

import pytest

from infertune import models, observation, render
from infertune.sim import cluster, engine, fleet, scenario, workload

SCENARIO = scenario.parse({
    "name": "t", "model": "llama-3.1-8b", "gpu": "h100-sxm-80gb", "weights": "bf16",
    "slo": {"ttft": "1s", "itl": "30ms"}, "coldStart": "60s", "duration": "10m",
    "scaling": {"minReplicas": 1, "maxReplicas": 8},
    "workload": {"synthetic": {"arrival": {"rate": 1}}},
})
SPEC = scenario.to_spec(SCENARIO)
KNOBS = models.Knobs(max_batch_size=64)
OTHER = models.Knobs(max_batch_size=32)
REV = render.revision(SPEC, KNOBS)


def make(*, replicas: int = 2, arrivals: list[workload.Arrival] | None = None, grace: float | None = None,
         cold: float = 60.0) -> cluster.Cluster:
    cl = cluster.Cluster(SPEC, cold_start=cold, arrivals=arrivals or [], grace=grace)
    cl.seed(KNOBS, replicas)
    cl.advance(0.0)
    return cl


def scale(cl: cluster.Cluster, t: float, *plans: tuple[models.Knobs, int],
          patches: tuple[observation.PodPatch, ...] = ()) -> None:
    revisions = tuple(observation.RevisionPlan(revision=render.revision(SPEC, k), knobs=k, replicas=n)
                      for k, n in plans)
    cl.apply(observation.Decision(revisions=revisions, pod_patches=patches, status=cl.status), t)


def steady(rate: float, *, start: float = 0.0, end: float, prompt: int = 200, output: int = 50
           ) -> list[workload.Arrival]:
    n = int((end - start) * rate)
    return [workload.Arrival(start + i / rate, prompt, output) for i in range(n)]


def unlabel(pod: str) -> observation.PodPatch:
    return observation.PodPatch(name=pod, serving=False, unserved_since="2026-01-01T00:00:00Z")


def names(cl: cluster.Cluster) -> list[str]:
    return list(cl.pods)


def routed(cl: cluster.Cluster, pod: str) -> int:
    p = cl.pods[pod]
    return len(p.inflight) + len(p.done)


def test_seeded_pods_were_created_one_cold_start_ago_and_serve() -> None:
    cl = make()
    revisions, pods = cl.facts(0.0)
    assert [r.revision for r in revisions] == [REV] and revisions[0].ready_replicas == 2
    assert all(p.ready and p.serving and p.created == cluster.EPOCH - 60 and p.ready_since == cluster.EPOCH
               for p in pods)
    assert cl.status.config is not None and cl.status.config.revision == REV


def test_a_new_pod_is_ready_one_cold_start_after_creation() -> None:
    cl = make(replicas=1)
    scale(cl, 10.0, (KNOBS, 2))
    new = names(cl)[-1]
    cl.advance(69.9)
    assert not cl.pods[new].ready(69.9)
    assert cl.counts(69.9).starting == 1
    cl.advance(70.0)
    _, pods = cl.facts(70.0)
    fact = next(p for p in pods if p.name == new)
    assert fact.ready and fact.serving and fact.ready_since == cluster.EPOCH + 70.0


def test_only_ready_pods_with_the_serving_label_get_requests() -> None:
    cl = make(replicas=2, arrivals=steady(4, start=1, end=30))
    a, b = names(cl)
    scale(cl, 0.5, (KNOBS, 3), patches=(unlabel(a),))
    starting = names(cl)[-1]
    cl.advance(30.0)
    assert routed(cl, a) == 0 and routed(cl, starting) == 0
    assert routed(cl, b) == len(steady(4, start=1, end=30))
    assert cl.pods[a].unserved_since == 0.0


def test_requests_are_dropped_while_nothing_serves() -> None:
    cl = make(replicas=1, arrivals=steady(2, start=1, end=11))
    (a,) = names(cl)
    scale(cl, 0.5, (KNOBS, 1), patches=(unlabel(a),))
    cl.advance(11.0)
    dropped = [r for r in cl.fleet.records if r.status == fleet.DROPPED]
    assert len(dropped) == 20 and cl.unrouted == 20


def _seed_three(cl: cluster.Cluster) -> list[str]:
    """Pod 1 and 2 Ready from 0; pod 3 created at 10, Ready at 70."""
    scale(cl, 10.0, (KNOBS, 3))
    cl.advance(80.0)
    return names(cl)


@pytest.mark.parametrize(("case", "costs", "at", "gone"), [
    ("the starting pod goes before Ready ones", {}, 30.0, 2),
    ("the starting pod goes even with a higher cost", {2: 100, 0: -5}, 30.0, 2),
    ("lower deletion cost goes first", {0: -1000}, 80.0, 0),
    ("among equal costs the most recently Ready goes", {}, 80.0, 2),
    ("cost beats recency", {1: -1}, 80.0, 1),
])
def test_replicaset_scale_down_ranking(case: str, costs: dict[int, int], at: float, gone: int) -> None:
    cl = make(replicas=2)
    scale(cl, 10.0, (KNOBS, 3))
    cl.advance(at)
    pods = names(cl)
    patches = tuple(observation.PodPatch(name=pods[i], deletion_cost=c) for i, c in costs.items())
    scale(cl, at, (KNOBS, 2), patches=patches)
    deleted = [i for i, name in enumerate(pods) if cl.pods[name].deleting]
    assert deleted == [gone], case


def test_removal_rank_orders_like_kubernetes() -> None:
    cl = make(replicas=2)
    scale(cl, 10.0, (KNOBS, 3))
    scale(cl, 20.0, (KNOBS, 4))
    cl.advance(80.0)
    p = [cl.pods[n] for n in names(cl)]
    p[1].deletion_cost = -10
    scale(cl, 90.0, (KNOBS, 5))  # a fifth pod, still starting at 90
    fifth = cl.pods[names(cl)[-1]]
    order = sorted([*p, fifth], key=lambda x: cluster.removal_rank(x, 90.0))
    # Not Ready first, then the lowest cost, then the most recently Ready (p[3] is newer than p[2]).
    assert order == [fifth, p[1], p[3], p[2], p[0]]


def test_deleted_pods_finish_in_flight_requests_within_the_grace_period() -> None:
    long = [workload.Arrival(1.0 + 0.1 * i, 200, 1500) for i in range(4)]
    cl = make(replicas=2, arrivals=long + steady(2, start=5, end=15))
    a, b = names(cl)
    cl.advance(2.0)
    busy = a if cl.pods[a].inflight else b
    other = b if busy == a else a
    before = routed(cl, busy)
    scale(cl, 2.0, (KNOBS, 1), patches=(observation.PodPatch(name=other, deletion_cost=100),))
    assert cl.pods[busy].deleting  # cost 100 keeps the other one
    cl.advance(200.0)
    assert routed(cl, busy) == before  # no new requests after deletion
    mine = list(cl.pods[busy].done)
    assert mine and all(r.status == engine.FINISHED for r in mine)
    gone = cl.pods[busy].gone
    assert gone is not None and gone >= 2.0 + render.PRESTOP_SECONDS
    assert gone < 2.0 + cl.grace
    assert not [r for r in cl.fleet.records if r.status in (engine.ABORTED, fleet.DROPPED)]


def test_what_is_still_in_flight_when_the_grace_period_ends_is_dropped() -> None:
    long = [workload.Arrival(1.0, 200, 20_000)]  # far longer than the 5 s grace period
    cl = make(replicas=1, arrivals=long, grace=5.0)
    (a,) = names(cl)
    cl.advance(2.0)
    scale(cl, 2.0, (KNOBS, 0))
    cl.advance(8.0)
    assert cl.pods[a].gone == 7.0
    aborted = [r for r in cl.fleet.records if r.status == engine.ABORTED]
    assert len(aborted) == 1 and math.isclose(aborted[0].finished, 7.0)


def test_a_new_revision_surges_and_the_old_one_goes_gracefully() -> None:
    cl = make(replicas=2, arrivals=steady(2, start=0, end=200))
    scale(cl, 15.0, (OTHER, 2), (KNOBS, 2))
    assert cl.rollouts == 2 and [k for _, k in cl.knob_changes] == [KNOBS, OTHER]
    cl.advance(75.0)
    assert cl.counts(75.0).serving == 4  # new pods are created serving (fail open) next to the old ones
    scale(cl, 90.0, (OTHER, 2))  # the old revision leaves the plan: its Deployment and pods go
    old = [p for p in cl.pods.values() if p.revision == REV]
    assert all(p.deleting for p in old)
    cl.advance(200.0)
    assert all(p.gone is not None for p in old)
    assert cl.serving_knobs(200.0) == OTHER
    assert not [r for r in cl.fleet.records if r.status in (engine.ABORTED, fleet.DROPPED)]
    # Rolling back to the first knobs is one more rollout (each restarts engines).
    scale(cl, 210.0, (KNOBS, 2), (OTHER, 2))
    assert cl.rollouts == 3


def test_pod_metrics_are_what_prometheus_would_report() -> None:
    cl = make(replicas=1, arrivals=steady(2, start=0, end=120, prompt=300, output=40))
    (a,) = names(cl)
    for t in range(5, 125, 5):
        cl.advance(float(t))
        cl.scrape(float(t))
    obs = cl.observe(120.0, window=60.0)
    m = obs.metrics.pods[a] if obs.metrics else None
    assert m is not None
    assert m.requests_per_s is not None and abs(m.requests_per_s - 2.0) < 0.1
    assert m.mean_input_tokens is not None and abs(m.mean_input_tokens - 300) < 15
    assert m.mean_output_tokens is not None and abs(m.mean_output_tokens - 40) < 3
    assert m.running is not None and 0.1 < m.running < 5 and m.waiting is not None and m.waiting < 0.5
    assert m.ttft_p is not None and m.ttft_mean is not None and m.ttft_p >= m.ttft_mean > 0
    assert m.itl_p is not None and m.tpot_p is not None and m.itl_mean is not None and 0 < m.itl_mean < 0.03
    assert m.slo_attainment == 1.0 and m.kv_usage is not None and 0 <= m.kv_usage < 0.1
    assert m.mbu is not None and 0 < m.mbu <= 1 and m.preemptions_per_s == 0
    member = cl.pods[a].member
    assert member is not None and m.in_flight == member.engine.outstanding
    cl.spec = SPEC.model_copy(update={"slo": models.SloSpec(ttft="1ms", itl="30ms")})
    strict = cl.pod_metrics(cl.pods[a], 120.0, window=60.0)
    assert strict is not None and strict.slo_attainment == 0.0


def test_a_young_pod_rates_its_counters_over_the_whole_window_as_prometheus_does() -> None:
    # One pod serves 2 req/s from 0; a second one (60 s cold start from 10 s) is Ready at 70 and takes half
    # from then. At 85, Prometheus' rate() over [60s] divides the young pod's 15 s of requests by 60 s: the two
    # pods sum to the 2 req/s that arrived, where rating the young one over its own 15 s read 2.5.
    cl = make(replicas=1, arrivals=steady(2, start=0, end=200, prompt=200, output=5))
    scale(cl, 10.0, (KNOBS, 2))
    for t in range(5, 90, 5):
        cl.advance(float(t))
        cl.scrape(float(t))
    old, young = names(cl)
    obs = cl.observe(85.0, window=60.0)
    assert obs.metrics is not None
    a, b = obs.metrics.pods[old], obs.metrics.pods[young]
    assert a.requests_per_s is not None and b.requests_per_s is not None
    assert 0.2 < b.requests_per_s < 0.3  # about 15 requests over 60 s
    assert a.requests_per_s + b.requests_per_s == pytest.approx(2.0, abs=0.1)
    assert b.output_tokens_per_s is not None and b.output_tokens_per_s == pytest.approx(5 * b.requests_per_s, rel=0.2)
    # Gauges are averages over the samples there are: the young pod's running count is not diluted.
    assert b.running is not None and a.running is not None and b.running == pytest.approx(a.running, rel=0.5)


def test_gpu_time_counts_loading_and_draining_pods() -> None:
    cl = make(replicas=1)
    scale(cl, 100.0, (KNOBS, 2))
    scale(cl, 130.0, (KNOBS, 1))  # the starting pod goes at once
    # 1 pod x 200 s + the second pod's 30 s of loading, 1 GPU each.
    assert cl.gpu_seconds(200.0) == pytest.approx(230.0)
    # From 110 s: the first pod's 90 s and 20 s more of the loading one.
    assert cl.gpu_seconds(200.0, since=110.0) == pytest.approx(110.0)
    assert cl.gpu_seconds(200.0, since=300.0) == 0.0


def test_a_rollout_settles_when_the_last_old_pod_has_gone() -> None:
    cl = make(replicas=2, arrivals=steady(2, start=0, end=200))
    assert cl.settled(50.0) == 0.0  # only the first revision ever ran
    scale(cl, 15.0, (OTHER, 2), (KNOBS, 2))
    cl.advance(75.0)
    assert cl.settled(75.0) == 75.0  # the old pods still run
    scale(cl, 90.0, (OTHER, 2))
    cl.advance(200.0)
    old = [p.gone for p in cl.pods.values() if p.revision == REV]
    assert all(g is not None for g in old)
    assert cl.settled(200.0) == max(g for g in old if g is not None) >= 90.0
