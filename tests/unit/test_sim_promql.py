"""Test: the twin feeds decide() through the operator's own parser — each engine's names, kinds and real buckets."""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import math

import pytest

from infertune import decide, models, observation, prometheus
from infertune.runtimes import metrics, registry
from infertune.sim import cluster, exposition, histogram, policies, promql, scenario, simulate, workload

# ------------------------------------------------------------------------------------------ exact buckets


def brute(bounds: tuple[float, ...], values: list[float]) -> list[float]:
    """Per-bucket counts by the definition of `le`: the first bound at or above the value, else +Inf."""
    out = [0.0] * (len(bounds) + 1)
    for v in values:
        out[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return out


def test_a_value_on_a_bound_counts_in_that_bucket_and_one_just_above_in_the_next() -> None:
    b = histogram.Buckets((0.025, 0.05))
    for v in (0.025, 0.0251, 0.05, 0.0501, 0.01):
        b.observe(v)
    assert b.counts == [2.0, 2.0, 1.0]
    assert b.snapshot() == ((2.0, 4.0, 5.0), pytest.approx(0.025 + 0.0251 + 0.05 + 0.0501 + 0.01))


@pytest.mark.parametrize(("first", "step", "n"), [
    (0.024, 0.00001, 200),  # crosses 25 ms after 101 steps
    (0.001, 0.003, 40),  # crosses several bounds
    (0.03, 0.0, 50),  # constant: one bucket
    (0.2, -0.004, 60),  # falling
    (0.06, 0.0001, 1),
])
def test_a_series_lands_in_the_buckets_its_values_would(first: float, step: float, n: int) -> None:
    bounds = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15)
    b = histogram.Buckets(bounds)
    b.observe_series(first, step, n, weight=3.0)
    assert b.counts == [3.0 * c for c in brute(bounds, [first + step * j for j in range(n)])]
    assert b.count == 3.0 * n


def test_the_fine_histogram_feeds_its_exact_buckets_too() -> None:
    h = histogram.LogHistogram()
    h.exact = histogram.Buckets((0.05,))
    h.observe(0.0502)  # the fine bins round this into le="0.05"; Prometheus does not
    h.observe_series(0.049, 0.001, 3)
    assert h.exact.counts == [2.0, 2.0]
    assert h.cumulative((0.05,)) == [3.0]  # the 1% log bins' answer, one off


# ------------------------------------------------------------------------------------------ what each pod answers


def test_each_query_reads_the_metric_the_engine_exports_under_it() -> None:
    vllm = promql.reads("vllm", 8192)
    assert vllm["buckets", metrics.Signal.ITL].signal == exposition.ITL  # per token
    assert vllm["buckets", metrics.Signal.TPOT].signal == exposition.TPOT  # per request
    assert vllm["buckets", metrics.Signal.TPOT].bounds == exposition.VLLM.metrics[exposition.TPOT].buckets
    assert vllm["value", metrics.Signal.DRAM_ACTIVE].signal == exposition.DRAM_ACTIVE  # DCGM's
    # TensorRT-LLM's one time-per-output-token histogram is per request and answers both queries.
    trt = promql.reads("trtllm", 8192)
    assert trt["buckets", metrics.Signal.ITL].signal == trt["buckets", metrics.Signal.TPOT].signal == exposition.TPOT
    assert trt["value", metrics.Signal.PREEMPTIONS] == promql.Read(exposition.PAUSED, metrics.Kind.GAUGE)
    sglang = promql.reads("sglang", 8192)
    assert ("buckets", metrics.Signal.TPOT) not in sglang
    assert sglang["buckets", metrics.Signal.ITL].bounds == exposition.SGLANG.metrics[exposition.ITL].buckets
    tgi = promql.reads("tgi", 8192)
    assert ("buckets", metrics.Signal.TTFT) not in tgi
    assert tgi["value", metrics.Signal.PROMPT_TOKENS] == promql.Read(exposition.PROMPT_LEN_STARTED,
                                                                      metrics.Kind.HISTOGRAM_SUM)
    # The request shape: each engine's per-request length histograms, sum and count alike. TGI observes a prompt
    # as it arrives; vLLM and SGLang as the request ends.
    assert tgi["count", metrics.Signal.PROMPT_LENGTH].signal == exposition.PROMPT_LEN_STARTED
    for engine in (vllm, sglang):
        assert engine["sum", metrics.Signal.PROMPT_LENGTH].signal == exposition.PROMPT_LEN
        assert engine["count", metrics.Signal.GENERATION_LENGTH].signal == exposition.GENERATION_LEN
    assert ("count", metrics.Signal.PROMPT_LENGTH) not in trt  # none: the counters stand in


def test_an_idle_histogram_answers_only_its_inf_bucket() -> None:
    plan = {k: v for k, v in promql.reads("vllm", 8192).items() if k == ("buckets", metrics.Signal.TTFT)}
    bounds = plan["buckets", metrics.Signal.TTFT].bounds
    idle = promql.PodWindow(namespace="ns", pod="p", rates={}, gauges={}, now={},
                            histograms={exposition.TTFT: ((0.0,) * (len(bounds) + 1), 0.0)})
    busy = promql.PodWindow(namespace="ns", pod="q", rates={}, gauges={}, now={},
                            histograms={exposition.TTFT: (tuple(range(len(bounds) + 1)), 3.0)})
    vector = promql.answers([idle, busy], plan, at=0.0)["buckets", metrics.Signal.TTFT]
    assert [s["metric"]["le"] for s in vector if s["metric"]["pod"] == "p"] == ["+Inf"]
    assert len([s for s in vector if s["metric"]["pod"] == "q"]) == len(bounds) + 1


# ------------------------------------------------------------------------------------------ a cluster's pods

SCENARIO = scenario.parse({
    "name": "t", "model": "llama-3.1-8b", "gpu": "h100-sxm-80gb", "weights": "bf16",
    "slo": {"ttft": "100ms", "itl": "12ms"}, "coldStart": "60s", "duration": "10m",
    "scaling": {"minReplicas": 1, "maxReplicas": 8},
    "workload": {"synthetic": {"arrival": {"rate": 1}}},
})
KNOBS = models.Knobs(max_batch_size=64)


def loaded(spec: models.InferenceDeploymentSpec, *, until: float = 120.0, rate: float = 6.0, start: float = 0.0,
           end: float = 120.0) -> cluster.Cluster:
    """One pod under a steady Poisson load from `start` to `end`, scraped every 5 s until `until`."""
    arrivals = [dataclasses.replace(a, time=a.time + start)
                for a in workload.poisson(rate, duration=end - start, isl=workload.LogNormal(800, 0.5),
                                          osl=workload.LogNormal(120, 0.5), seed=3)]
    cl = cluster.Cluster(spec, cold_start=60.0, arrivals=arrivals)
    cl.seed(KNOBS, 1)
    for t in range(0, int(until) + 5, 5):
        cl.advance(float(t))
        cl.scrape(float(t))
    return cl


def binned(bounds: tuple[float, ...], values: list[float], seconds: float) -> tuple[tuple[float, float], ...]:
    """Cumulative bucket rates of these values: what rate(x_bucket[window]) gives."""
    per = [0.0] * (len(bounds) + 1)
    for v in values:
        per[bisect.bisect_left(bounds, v)] += 1
    cum, out = 0.0, []
    for le, c in zip((*bounds, math.inf), per, strict=True):
        cum += c
        out.append((le, cum / seconds))
    return tuple(out)


def test_the_buckets_the_parser_gets_are_the_requests_binned_at_vllms_bounds() -> None:
    # Requests from 61 to 100 s, all finished by 120: every one of them is in the window (60, 120] whole (an engine
    # step that straddles a scrape counts at the scrape where it started).
    spec = scenario.to_spec(SCENARIO)
    cl = loaded(spec, start=61.0, end=100.0)
    (pod,) = cl.pods.values()
    raw = prometheus.parse(cl.answers(120.0, window=60.0))[cluster.NAMESPACE, pod.name]
    done = [r for r in cl.fleet.records if r.replica == pod.name]
    assert not pod.inflight and all(r.first_token > 60.0 and r.finished <= 120.0 for r in done)
    ttfts = [r.ttft for r in done]
    tpots = [r.itl for r in done if r.generated > 1]
    assert len(ttfts) > 150 and len(tpots) > 150
    ttft_bounds = exposition.VLLM.metrics[exposition.TTFT].buckets
    tpot_bounds = exposition.VLLM.metrics[exposition.TPOT].buckets
    assert isinstance(ttft_bounds, tuple) and isinstance(tpot_bounds, tuple)
    want_ttft, want_tpot = binned(ttft_bounds, ttfts, 60.0), binned(tpot_bounds, tpots, 60.0)
    got_ttft, got_tpot = raw.buckets[metrics.Signal.TTFT], raw.buckets[metrics.Signal.TPOT]
    assert [le for le, _ in got_ttft] == [le for le, _ in want_ttft]
    assert [c for _, c in got_ttft] == pytest.approx([c for _, c in want_ttft])
    assert [c for _, c in got_tpot] == pytest.approx([c for _, c in want_tpot])
    # What decide() reads of the pod is what the operator's parser makes of exactly those buckets.
    by_hand = prometheus.RawPod(buckets={**raw.buckets, metrics.Signal.TTFT: want_ttft, metrics.Signal.TPOT: want_tpot},
                                sums=raw.sums, values=raw.values, now=raw.now)
    expected = prometheus.pod_metrics(by_hand, percentile=spec.slo.percentile, ttft_slo=spec.slo.ttft,
                                      itl_slo=spec.slo.itl)
    seen = cl.observe(120.0, window=60.0).metrics
    assert seen is not None
    m = seen.pods[pod.name]
    for field in ("ttft_p", "tpot_p", "itl_floor", "slo_attainment", "slo_attainment_low", "slo_attainment_high",
                  "requests_per_s"):
        assert getattr(m, field) == pytest.approx(getattr(expected, field)), field
    assert m.itl_floor is not None and m.slo_attainment_low is not None and m.slo_attainment_high is not None


def scenario_with(engine: models.EngineKind, nim: models.NimSpec | None = None) -> models.InferenceDeploymentSpec:
    spec = scenario.to_spec(SCENARIO)
    return spec.model_copy(update={"engine": spec.engine.model_copy(update={"kind": engine, "nim": nim})})


ENGINES = {
    "vllm": (models.EngineKind.VLLM, None),
    "sglang": (models.EngineKind.SGLANG, None),
    "trtllm": (models.EngineKind.TRTLLM, None),
    "nim-1": (models.EngineKind.NIM, models.NimSpec(generation=1)),
    "nim-2-vllm": (models.EngineKind.NIM, models.NimSpec(generation=2, backend="vllm")),
    "tgi": (models.EngineKind.TGI, None),
}


@pytest.mark.parametrize("variant", list(ENGINES))
def test_every_engine_dialect_goes_through_the_parser(variant: str) -> None:
    kind, nim = ENGINES[variant]
    cl = loaded(scenario_with(kind, nim))
    assert cl.variant == variant
    (pod,) = cl.pods.values()
    answers = cl.answers(120.0, window=60.0)
    # Only what this engine exports is answered (SGLang has no per-request TPOT histogram, TGI no TTFT).
    plan = promql.reads(variant, 8192)
    assert {k for k, v in answers.items() if v} == set(plan)
    m = cl.observe(120.0, window=60.0).metrics
    assert m is not None
    got = m.pods[pod.name]
    truth = sum(1 for r in cl.fleet.records if r.replica == pod.name and 60.0 < r.finished <= 120.0) / 60.0
    assert got.requests_per_s == pytest.approx(truth, rel=0.01)
    assert got.itl_floor is not None and got.slo_attainment_low is not None and got.slo_attainment_high is not None
    op = registry.by_variant(variant).dialect
    assert (got.ttft_p is None) == op.lacks(metrics.Signal.TTFT)
    assert (got.tpot_p is None) == op.lacks(metrics.Signal.TPOT)
    assert (got.kv_usage is None) == op.lacks(metrics.Signal.KV_USAGE)
    assert got.mean_input_tokens is not None and 500 < got.mean_input_tokens < 1200
    assert got.in_flight is not None and got.running is not None and got.mbu is not None


# ------------------------------------------------------------------------------------------ in a simulate run

# Llama-3.1-70B FP8 on one H100 decodes at 30-50 ms per token under this load: every request's mean ITL lies between
# vLLM's 25 and 50 ms bucket edges, around the 40 ms objective (the chat-70b-h100 bench scenario's).
INSIDE = scenario.parse({
    "name": "inside", "model": "llama-3.1-70b", "gpu": "h100-sxm-80gb", "weights": "fp8",
    "slo": {"ttft": "1500ms", "itl": "40ms"}, "coldStart": "60s", "duration": "4m", "seed": 1,
    "scaling": {"minReplicas": 1, "maxReplicas": 4},
    "workload": {"synthetic": {"arrival": {"rate": 3}, "input": {"mean": 1000}, "output": {"mean": 200}}},
})


@dataclasses.dataclass(frozen=True)
class Recorded:
    """infertune on a scenario: its result, every observation decide() saw with its decision, and every PodMetrics
    the operator's parser produced."""

    result: simulate.Result
    seen: list[tuple[observation.Observation, observation.Decision]]
    parsed: list[observation.PodMetrics]


@pytest.fixture(scope="module")
def inside() -> Recorded:
    seen: list[tuple[observation.Observation, observation.Decision]] = []
    parsed: list[observation.PodMetrics] = []
    real_decide, real_pod_metrics = decide.decide, prometheus.pod_metrics

    def spy_decide(obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        d = real_decide(obs, now=now)
        seen.append((obs, d))
        return d

    def spy_pod_metrics(raw: prometheus.RawPod, **kwargs: float) -> observation.PodMetrics:
        out = real_pod_metrics(raw, **kwargs)
        parsed.append(out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decide, "decide", spy_decide)
        patch.setattr(prometheus, "pod_metrics", spy_pod_metrics)
        result = simulate.run_policy(policies.Context(INSIDE, scenario.arrivals(INSIDE)), "infertune")
    return Recorded(result, seen, parsed)


def test_what_decide_sees_in_a_simulate_run_came_through_the_parser(inside: Recorded) -> None:
    seen, parsed = inside.seen, inside.parsed
    assert seen
    pods = [m for obs, _ in seen if obs.metrics is not None for m in obs.metrics.pods.values()]
    assert pods and all(any(m is p for p in parsed) for m in pods)
    assert any(m.itl_floor is not None and m.slo_attainment_low is not None for m in pods)


def test_an_objective_inside_a_bucket_reads_as_a_range(inside: Recorded) -> None:
    result, seen = inside.result, inside.seen
    # The truth, from the requests (the scorer's view): per-request ITL between the two edges.
    assert result.itl_p95_ms is not None and 25 < result.itl_p95_ms < 50
    obs, _ = seen[-1]
    assert obs.metrics is not None
    for m in obs.metrics.pods.values():
        assert m.itl_floor == 0.025  # the p95 lies somewhere above the 25 ms edge
        assert m.slo_attainment_low is not None and m.slo_attainment_high is not None
        assert m.slo_attainment is not None
        assert m.slo_attainment_low < m.slo_attainment_high
        assert m.slo_attainment_low <= m.slo_attainment <= m.slo_attainment_high
    ranged = [d.status.observed for _, d in seen if d.status.observed is not None
              and d.status.observed.slo_attainment_low is not None]
    assert ranged and all(o.slo_attainment_low is not None and o.slo_attainment_high is not None
                          and o.slo_attainment_low < o.slo_attainment_high for o in ranged)
    reasons = {c.reason for _, d in seen for c in d.status.conditions if c.type == models.ConditionType.SLO_MET}
    assert "Unresolved" in reasons


def test_the_busy_share_is_the_time_some_request_ran_and_reaches_the_parser() -> None:
    # Requests from 61 to 80 s at 1 req/s on one pod, read over (60, 120]: the pod ran something only while one of
    # them was admitted and unfinished, which the window's average running count (idle time included) does not say.
    spec = scenario.to_spec(SCENARIO)
    cl = loaded(spec, start=61.0, end=80.0, rate=1.0)
    (pod,) = cl.pods.values()
    done = [r for r in cl.fleet.records if r.replica == pod.name]
    assert done and all(r.finished <= 120.0 for r in done)
    lives = sorted((r.scheduled, r.finished) for r in pod.done if r.finished > 60.0)
    ran, end = 0.0, 60.0
    for lo, hi in lives:
        ran += max(0.0, hi - max(lo, end))
        end = max(end, hi)
    m = cl.observe(120.0, window=60.0).metrics
    assert m is not None
    got = m.pods[pod.name]
    assert got.busy == pytest.approx(ran / 60.0, rel=1e-9) and 0.0 < got.busy < 0.5
    # Busy, the pod ran at least one: the average over the busy share is at least 1.
    assert got.running is not None and got.running / got.busy >= 1.0
    assert cluster._covered([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == 4.0
