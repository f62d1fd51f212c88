"""Test: engine metrics are untrusted input: each attack of issue 18 through parse -> pod_metrics -> decide."""

from __future__ import annotations

import math
import pathlib
import subprocess
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from test_decide import World, current, load, spec_of
from test_monitoring import promtool  # noqa: F401 - the fixture (promtool, installed with Prometheus if missing)

from infertune import decide, models, observation, plausibility, prometheus, scaling
from infertune.runtimes import metrics, registry

S = metrics.Signal
Results = dict[tuple[str, metrics.Signal], list[dict[str, Any]]]
Attack = Callable[[Results, str], None]
ROOT = pathlib.Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"

# vLLM's bucket edges (vllm/v1/metrics/loggers.py): TTFT, and per-request time per output token.
TTFT_EDGES = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_EDGES = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


def _series(pod: str, value: float, **labels: str) -> dict[str, Any]:
    return {"metric": {"namespace": "ns", "pod": pod, **labels}, "value": [0, repr(value)]}


def _histogram(pod: str, rate: float, value: float, edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """Every observation at `value`: what a pod whose requests all took that long sends."""
    out = [_series(pod, rate if value <= le else 0.0, le=repr(le)) for le in edges]
    return [*out, _series(pod, rate, le="+Inf")]


def exposition(pods: dict[str, dict[str, Any]]) -> Results:
    """The query results for pods showing these PodMetrics-style signals (test_decide.load's dict)."""
    results: Results = {}

    def add(part: str, signal: metrics.Signal, *series: dict[str, Any]) -> None:
        results.setdefault((part, signal), []).extend(series)

    for pod, m in pods.items():
        rps = m["requests_per_s"]
        add("buckets", S.TTFT, *_histogram(pod, rps, m["ttft_p"], TTFT_EDGES))
        add("buckets", S.TPOT, *_histogram(pod, rps, m["tpot_p"], TPOT_EDGES))
        add("buckets", S.E2E, *_histogram(pod, rps, 1.0, TTFT_EDGES))
        add("value", S.RUNNING, _series(pod, m["running"]))
        add("value", S.WAITING, _series(pod, m["waiting"]))
        add("value", S.KV_USAGE, _series(pod, m["kv_usage"]))
        add("value", S.PROMPT_TOKENS, _series(pod, rps * m["mean_input_tokens"]))
        add("value", S.GENERATION_TOKENS, _series(pod, rps * m["mean_output_tokens"]))
        add("now", S.RUNNING, _series(pod, m["in_flight"]))
        add("now", S.WAITING, _series(pod, 0.0))
    return results


def observe(w: World, results: Results) -> None:
    """What handlers.Operator._metrics hands decide(): the owned pods' metrics out of the parsed snapshot."""
    parsed = prometheus.parse(results)
    spec = w.spec
    out: dict[str, observation.PodMetrics] = {}
    ignored: list[str] = []
    for name in w.pods:
        raw = parsed.get(("ns", name))
        if raw is None:
            continue
        out[name] = prometheus.pod_metrics(raw, percentile=spec.slo.percentile, ttft_slo=spec.slo.ttft,
                                           itl_slo=spec.slo.itl)
        ignored += [f"{name} {d}" for d in raw.dropped]
    w.load = out
    w.metrics = observation.Metrics(pods={}, grace=0, ignored=tuple(ignored))


def cycle(w: World, t: float, per_pod: Callable[[str], dict[str, Any]], attack: Attack | None = None,
          victim: str | None = None) -> observation.Decision:
    results = exposition({name: per_pod(name) for name in w.pods})
    if attack is not None:
        attack(results, victim or sorted(w.pods)[0])
    observe(w, results)
    return w.step(t)


def _replace(results: Results, key: tuple[str, metrics.Signal], pod: str, value: float) -> None:
    results[key] = [s for s in results.get(key, []) if s["metric"]["pod"] != pod] + [_series(pod, value)]


def rate_1e12(results: Results, pod: str) -> None:
    for signal in (S.TTFT, S.TPOT, S.E2E):
        for s in results["buckets", signal]:
            if s["metric"]["pod"] == pod and s["value"][1] != "0.0":
                s["value"][1] = "1e12"


def rate_within_the_parser_s_bounds(results: Results, pod: str) -> None:
    # 10,000 req/s: below the parser's ceiling and the hardware's (8B on an H100), far above the load.
    for signal in (S.TTFT, S.TPOT, S.E2E):
        for s in results["buckets", signal]:
            if s["metric"]["pod"] == pod and s["value"][1] != "0.0":
                s["value"][1] = "10000.0"


def waiting_1e7(results: Results, pod: str) -> None:
    _replace(results, ("value", S.WAITING), pod, 1e7)  # the parser's cap is inclusive


def now_1e15(results: Results, pod: str) -> None:
    _replace(results, ("now", S.RUNNING), pod, 1e15)
    _replace(results, ("now", S.WAITING), pod, 1e15)


def nan_kv(results: Results, pod: str) -> None:
    _replace(results, ("value", S.KV_USAGE), pod, math.nan)


def lying_spec() -> models.InferenceDeploymentSpec:
    return spec_of(**{"scaling.maxReplicas": 40, "scaling.standby": {"min": 0, "max": 10}})


def honest(w: World, spec: models.InferenceDeploymentSpec) -> Callable[[str], dict[str, Any]]:
    """2 req/s in all, 8 running: one replica carries it."""
    return lambda _: load(spec, current(w), running=8, rps=2.0 / max(1, len(w.pods)))


def settled(spec: models.InferenceDeploymentSpec, cycles: int = 20) -> tuple[World, float]:
    """A world at the honest load for `cycles` cycles; the next cycle's time."""
    w = World(spec)
    w.step(0)
    t = 15.0
    for _ in range(cycles):
        cycle(w, t, honest(w, spec))
        t += 15
    return w, t


def pods_of(d: observation.Decision) -> int:
    return d.status.replicas.desired + d.status.replicas.desired_standby


@pytest.mark.parametrize("attack", [rate_1e12, rate_within_the_parser_s_bounds, waiting_1e7, now_1e15],
                         ids=lambda a: a.__name__)
def test_one_lying_pod_moves_the_fleet_one_step_at_most_and_it_comes_back(attack: Attack) -> None:
    spec = lying_spec()
    w, t = settled(spec, 40)  # honest: one replica
    assert (w.status.replicas.desired, w.status.replicas.desired_standby) == (1, 0)
    before = 1
    # One cycle of the lie (a 15 s spike), then clean series.
    spiked = cycle(w, t, honest(w, spec), attack)
    t += 15
    assert pods_of(spiked) <= scaling.step_limit(before) == 5, spiked.status.replicas
    totals = [pods_of(spiked)]
    for _ in range(60):  # 15 minutes of honest load
        d = cycle(w, t, honest(w, spec))
        assert pods_of(d) <= scaling.step_limit(totals[-1])
        totals.append(pods_of(d))
        t += 15
    # Back where the honest load puts it, and it never got near 40 + 10.
    assert (w.status.replicas.desired, w.status.replicas.desired_standby) == (1, 0), totals
    assert max(totals) <= 5, totals


def test_a_queue_most_pods_report_earns_one_step_per_cycle_and_one_liar_is_outvoted() -> None:
    # The step limit is the HPA's: 100% or 4 pods per cycle, whichever is more. A queue on every pod (real, or
    # a majority lying) grows the fleet 1 -> 5 -> 10 -> 20 -> 40, never in one jump; once peers exist, one pod
    # lying about its queue is a minority and is outvoted (named in MetricsAvailable's message).
    spec = lying_spec()
    w, t = settled(spec)

    def everyone(results: Results, _: str) -> None:
        for pod in w.pods:
            waiting_1e7(results, pod)

    totals = [pods_of(w.decisions[-1])]
    for _ in range(6):
        d = cycle(w, t, honest(w, spec), everyone)
        t += 15
        assert pods_of(d) <= scaling.step_limit(totals[-1]), totals
        totals.append(pods_of(d))
    assert totals[:5] == [1, 5, 10, 20, 40], totals
    assert any("scale-up limited" in r.reason for r in w.status.decisions)

    w2, t = settled(spec)
    liar = sorted(w2.pods)[0]
    totals = [pods_of(w2.decisions[-1])]
    for _ in range(20):  # five minutes of one pod's lie
        d = cycle(w2, t, honest(w2, spec), waiting_1e7, victim=liar)
        t += 15
        assert pods_of(d) <= scaling.step_limit(totals[-1]), totals
        totals.append(pods_of(d))
    # Alone, the liar earns one step (1 -> 5); outvoted by its peers, the fleet comes down after scaleDownDelay to
    # the most honestly asked for within it (2); the liar and one peer are no majority, so it earns one step from
    # there (2 -> 6), never the 40 + 10 it asks for.
    assert max(totals) <= scaling.step_limit(2), totals
    cond = next(c for c in w2.status.conditions if c.type == "MetricsAvailable")
    assert f"outvoted: {liar} queue: 1e+07 waiting" in cond.message


@pytest.mark.parametrize("every", [1, 2], ids=["always", "every-other-cycle"])
def test_one_nan_series_after_a_spike_holds_replicas_for_a_bounded_time(every: int) -> None:
    spec = lying_spec()  # scaleDownDelay 2 minutes
    w, t = settled(spec)
    cycle(w, t, honest(w, spec), waiting_1e7)  # the spike
    t += 15
    high = w.status.replicas.desired
    assert high > 1
    garbage_from = t
    events: list[observation.Event] = []
    desired: dict[float, int] = {}
    while t < garbage_from + 1800:  # then one NaN series for half an hour
        lying = round((t - garbage_from) / 15) % every == 0  # a NaN that comes and goes is one spell
        d = cycle(w, t, honest(w, spec), nan_kv if lying else None, victim="p1")
        events += d.events
        desired[t - garbage_from] = w.status.replicas.desired
        t += 15
    # Held within the bound (the NaN could be hiding the load) ...
    assert all(n == high for s, n in desired.items() if s < decide.GARBAGE_HOLD_SECONDS), desired
    # ... and no longer: back to one replica a scale-down delay after it, while the NaN goes on.
    back = decide.GARBAGE_HOLD_SECONDS + spec.scaling.scale_down_delay + 60
    assert all(n == 1 for s, n in desired.items() if s >= back), desired
    said = [e for e in events if e.reason == "GarbageMetrics"]
    assert len(said) == 1 and said[0].type == "Warning" and "kv_usage: not a finite number" in said[0].message
    if every == 1:
        cond = next(c for c in w.status.conditions if c.type == "MetricsAvailable")
        assert (cond.status, cond.reason) == ("True", "GarbageMetrics")


def test_fake_itl_from_one_pod_of_four_rejects_no_configuration() -> None:
    spec = spec_of(**{"scaling.minReplicas": 4, "scaling.maxReplicas": 16})
    w = World(spec)
    w.step(0)
    t = 15

    def steady(_: str) -> dict[str, Any]:
        return load(spec, current(w), running=40, rps=4.0)

    while not any(r.kind == "knobs" for r in w.status.decisions) and t < 3600:
        cycle(w, t, steady)
        t += 15
    tuned = current(w)
    assert tuned.max_batch_size < 1024  # the honest knee, below the engine default
    for _ in range(10):  # the rollout completes; the tuned pods serve
        cycle(w, t, steady)
        t += 15
    liar = sorted(p.name for p in w.serving())[0]

    def fake_itl(results: Results, pod: str) -> None:
        for signal in (S.TPOT,):
            results["buckets", signal] = [s for s in results["buckets", signal] if s["metric"]["pod"] != pod]
            results["buckets", signal] += _histogram(pod, 1.0, 0.45, TPOT_EDGES)  # p95 of 0.5 s

    for _ in range(60):  # 15 minutes: past the 5-minute verification
        cycle(w, t, steady, fake_itl, victim=liar)
        t += 15
    assert w.status.rejected == ()
    assert not any(r.kind == "rollback" for r in w.status.decisions)
    assert current(w) == tuned
    # ... and the replicas stay where the honest load puts them (before: batch 192 -> 43 -> 30, 4 -> 8 replicas).
    assert {d.status.replicas.desired for d in w.decisions[-60:]} == {4}


def test_a_negative_le_bucket_is_garbage_and_never_reports_the_slo_met() -> None:
    spec = spec_of()
    w = World(spec)
    w.step(0)

    def slow(_: str) -> dict[str, Any]:  # every request 5 s to its first token: the 1.5 s objective missed
        return {**load(spec, current(w), running=8, rps=2.0), "ttft_p": 5.0}

    def minus_le(results: Results, pod: str) -> None:
        results["buckets", S.TTFT].append(_series(pod, 2.0, le="-1e308"))

    cycle(w, 15, slow, minus_le)
    m = w.load["p1"]
    assert m.ttft_p is None or (math.isfinite(m.ttft_p) and m.ttft_p >= 0)
    assert m.slo_attainment is None
    slo = next(c for c in w.status.conditions if c.type == "SLOMet")
    assert slo.status != "True"
    assert w.metrics is not None and any("le='-1e308'" in i for i in w.metrics.ignored), w.metrics


def test_200k_buckets_from_one_pod_are_capped_in_the_parser() -> None:
    series = [_series("a", 1.0, le=repr(0.001 * i)) for i in range(1, 200_001)]
    series += _histogram("b", 1.0, 0.3, TTFT_EDGES)
    tracemalloc.start()
    pods = prometheus.parse({("buckets", S.TTFT): series})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    flooded, fine = pods["ns", "a"], pods["ns", "b"]
    assert S.TTFT not in flooded.buckets and S.TTFT in flooded.rejected
    assert any(f"more than {prometheus.MAX_BUCKETS} buckets" in d for d in flooded.dropped)
    assert len(flooded.dropped) == 1  # named once, not 200,000 times
    assert len(fine.buckets[S.TTFT]) == len(TTFT_EDGES) + 1 and not fine.dropped
    # What parse keeps of one pod is bounded by the cap, whatever the pod sends: far below the 200k series.
    assert peak < 5 * 2**20, peak


def test_every_engine_query_carries_the_engine_job_and_dcgm_the_dcgm_job() -> None:
    plan = prometheus.queries((*registry.dialects(), metrics.DCGM), 60)
    for (part, signal), promql in plan.items():
        selectors = promql.count("{__name__=")
        job = prometheus.DCGM_JOB if signal is S.DRAM_ACTIVE else prometheus.ENGINE_JOB
        assert promql.count(f'job="{job}"') == selectors, (part, signal, promql)


def test_a_tenant_s_forged_series_for_another_tenant_s_pod_is_not_read(tmp_path: pathlib.Path,
                                                                        promtool: pathlib.Path) -> None:  # noqa: F811
    # A real PromQL engine (promtool's) evaluates the operator's own queries over the victim's honest series
    # and a forgery from a job that honours labels (a DCGM exporter a tenant runs in its own namespace).
    running = prometheus.scalar_query(S.RUNNING, registry.dialects(), 60)
    dram = prometheus.scalar_query(S.DRAM_ACTIVE, (metrics.DCGM,), 60)
    assert running is not None and dram is not None
    victim = 'namespace="victim", pod="llm-abc-1"'
    test = {
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": f'vllm:num_requests_running{{{victim}, job="{prometheus.ENGINE_JOB}"}}',
                 "values": "3x10"},
                {"series": f'vllm:num_requests_running{{{victim}, job="tenant-dcgm"}}', "values": "100000x10"},
                {"series": f'DCGM_FI_PROF_DRAM_ACTIVE{{{victim}, job="{prometheus.DCGM_JOB}"}}',
                 "values": "0.5x10"},
                {"series": f'DCGM_FI_PROF_DRAM_ACTIVE{{{victim}, job="tenant-dcgm"}}', "values": "0.01x10"},
            ],
            "promql_expr_test": [
                {"expr": running, "eval_time": "2m", "exp_samples": [{"labels": f"{{{victim}}}", "value": 3}]},
                {"expr": dram, "eval_time": "2m", "exp_samples": [{"labels": f"{{{victim}}}", "value": 0.5}]},
            ],
        }],
    }
    path = tmp_path / "forgery.test.yaml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([str(promtool), "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_shipped_scrape_jobs_limit_samples_and_labels_and_dcgm_to_the_gpu_operator_namespace() -> None:
    config = yaml.safe_load((MONITORING / "scrape-config.yaml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    engines, dcgm = jobs[prometheus.ENGINE_JOB], jobs[prometheus.DCGM_JOB]
    for job in (engines, dcgm):
        assert job["sample_limit"] > 0 and job["label_limit"] > 0, job["job_name"]
    assert not engines.get("honor_labels", False)  # target labels namespace/pod win over the pod's own
    assert [sd["namespaces"]["names"] for sd in dcgm["kubernetes_sd_configs"]] == [["gpu-operator"]]
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())["spec"]
    assert monitor["sampleLimit"] == engines["sample_limit"] and monitor["labelLimit"] == engines["label_limit"]
    assert any(r.get("replacement") == prometheus.ENGINE_JOB and r.get("targetLabel") == "job"
               for r in monitor["podMetricsEndpoints"][0]["relabelings"])


def _revision_of(n: int) -> tuple[models.InferenceDeploymentSpec, models.Knobs, observation.RevisionFacts,
                                   list[observation.PodFacts]]:
    """One revision at maxBatchSize 64 with n Ready, serving pods p0, p1, ..."""
    spec, knobs = spec_of(), models.Knobs(max_batch_size=64)
    revision = observation.RevisionFacts(name="llm-r", revision="r", knobs=knobs, replicas=n, ready_replicas=n,
                                         created=0)
    return spec, knobs, revision, [observation.PodFacts(name=f"p{i}", revision="r", ready=True, serving=True,
                                                        created=0) for i in range(n)]


def test_claims_beyond_a_pod_s_batch_are_garbage_and_a_minority_s_queue_is_outvoted() -> None:
    spec, knobs, revision, pods = _revision_of(4)
    fine = observation.PodMetrics(running=30, waiting=0, in_flight=30, requests_per_s=3)
    cap = plausibility.limits(spec, knobs)
    assert cap.batch == 64 and 1_000 < cap.requests_per_s < 1e6
    claims = {"p0": fine.model_copy(update={"running": 500.0, "requests_per_s": cap.requests_per_s * 2}),
              "p1": fine.model_copy(update={"waiting": 1e7, "in_flight": 1e7}), "p2": fine, "p3": fine}
    s = plausibility.screen(spec, pods, (revision,), claims)
    assert s.pods["p0"].running is None and s.pods["p0"].requests_per_s is None
    assert [g.split(" ")[:2] for g in s.garbage] == [["p0", "running:"], ["p0", "requests:"]]
    assert s.pods["p1"].waiting == 0 and s.pods["p1"].in_flight == 64 and s.outvoted[0].startswith("p1 queue")
    # Three of four queueing is a queue: nothing is outvoted.
    queue = fine.model_copy(update={"waiting": 20.0, "in_flight": 84.0})
    s = plausibility.screen(spec, pods, (revision,), {"p0": queue, "p1": queue, "p2": queue, "p3": fine})
    assert not s.outvoted and s.pods["p0"].waiting == 20.0


def test_a_full_batch_averaged_with_float_rounding_is_load_not_garbage() -> None:
    """avg_over_time of a pod running its whole batch of 64 the whole window can read 64.00000000000003: that pod
    is the busiest there is, and dropping its count as garbage hid it (and held scale-downs as garbage does)."""
    spec, _, revision, pods = _revision_of(4)
    full = observation.PodMetrics(running=64.00000000000003, waiting=12, in_flight=76, requests_per_s=3)
    s = plausibility.screen(spec, pods, (revision,), {p.name: full for p in pods})
    assert not s.garbage and s.pods["p0"].running == full.running
    # One whole request beyond the batch still is garbage.
    s = plausibility.screen(spec, pods, (revision,), {p.name: full.model_copy(update={"running": 65.0})
                                                      for p in pods})
    assert len(s.garbage) == 4 and s.pods["p0"].running is None


def test_a_forged_prompt_length_histogram_is_bounded_by_the_pod_s_limits() -> None:
    spec, knobs, revision, pods = _revision_of(3)
    cap = plausibility.limits(spec, knobs)
    assert cap.context == 131072  # Llama-3.1-70B's context, no maxModelLen set
    fine = observation.PodMetrics(requests_per_s=3, prompt_lengths=((800.0, 1.5), (1500.0, 1.5)))
    claims = {
        # More prompts a second than the pod completes at its fastest: garbage, named, the histogram dropped.
        "p0": fine.model_copy(update={"prompt_lengths": ((800.0, cap.requests_per_s * 2),)}),
        # Prompts of 100 million tokens: read as the longest the engine takes, not as endless prefills.
        "p1": fine.model_copy(update={"prompt_lengths": ((1e8, 1.0), (800.0, 2.0))}),
        "p2": fine,
    }
    s = plausibility.screen(spec, pods, (revision,), claims)
    assert s.pods["p0"].prompt_lengths == () and s.garbage[0].startswith("p0 prompt lengths:")
    assert s.pods["p1"].prompt_lengths == ((131072.0, 1.0), (800.0, 2.0))
    assert s.pods["p2"] == fine and len(s.garbage) == 1
    # Through decide: the spread the forged pod can claim is that of the longest prompts the model takes.
    w = World(spec)
    w.step(0)
    w.set_load(**load(spec, current(w), running=20, rps=4.0), prompt_lengths=((1e12, 4.0), (1000.0, 4.0)))
    d = w.step(15)
    assert d.status.knee is not None and d.status.knee.prefill_cv2 is not None
    assert math.isfinite(d.status.knee.prefill_cv2) and d.status.knee.prefill_cv2 < 100
