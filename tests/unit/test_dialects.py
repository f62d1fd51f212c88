"""Test: each engine's metric dialect in the twin — names, types and paths shared with the operator's table,
captured fixtures, and the operator's observations agreeing across dialects for one simulated load."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib

import pytest
from prometheus_client import parser

import scrapes
from infertune import models, observation, prometheus, runtimes
from infertune.runtimes import metrics, registry
from infertune.sim import exposition, histogram

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
# INFERTUNE_UPDATE_FIXTURES=1 rewrites the captures (after a deliberate change to a dialect).
UPDATE = os.environ.get("INFERTUNE_UPDATE_FIXTURES") == "1"

VARIANTS = [r.variant for r in registry.ALL]
NAMESPACE, POD, IDENTITY = scrapes.NAMESPACE, scrapes.POD, scrapes.IDENTITY


def wire(spec: exposition.MetricSpec) -> str:
    """A twin spec's name as scraped, the form the operator's table uses (counters get `_total`)."""
    return spec.name + "_total" if spec.kind is exposition.Kind.COUNTER else spec.name


def twin_kind(kind: metrics.Kind) -> exposition.Kind:
    return {
        metrics.Kind.HISTOGRAM: exposition.Kind.HISTOGRAM, metrics.Kind.HISTOGRAM_SUM: exposition.Kind.HISTOGRAM,
        metrics.Kind.GAUGE: exposition.Kind.GAUGE, metrics.Kind.COUNTER: exposition.Kind.COUNTER,
    }[kind]


def feeding(d: exposition.Dialect, op: metrics.Dialect, *, signal: metrics.Signal) -> str | None:
    """The twin's internal signal behind the operator's signal in this dialect (None: the engine lacks it)."""
    source = op.sources.get(signal)
    if source is None:
        return None
    return next((internal for internal, spec in d.metrics.items() if wire(spec) == source.names[0]), None)


# ------------------------------------------------------------------------------------------ names, types, paths


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_exports_every_signal_the_operator_reads_under_the_same_name_and_type(variant: str) -> None:
    twin, op = exposition.dialect(variant), registry.by_variant(variant).dialect
    for signal, source in op.sources.items():
        internal = feeding(twin, op, signal=signal)
        assert internal is not None, f"{variant}: no twin series named {source.names[0]} ({signal.value})"
        spec = twin.metrics[internal]
        assert spec.kind is twin_kind(source.kind or metrics.KINDS[signal]), f"{variant}: {spec.name}"
        assert spec.scale == pytest.approx(1.0 / source.scale)


@pytest.mark.parametrize("variant", VARIANTS)
def test_signals_an_engine_lacks_appear_under_no_dialects_name(variant: str) -> None:
    twin, op = exposition.dialect(variant), registry.by_variant(variant).dialect
    names = {wire(spec) for spec in twin.metrics.values()}
    for signal in metrics.Signal:
        if signal in op.sources:
            continue
        others = {n for d in (*(e.dialect for e in registry.ALL), metrics.DCGM) for n in getattr(
            d.sources.get(signal), "names", ())}
        assert not names & others, f"{variant} lacks {signal.value} but exports {names & others}"


@pytest.mark.parametrize(("variant", "lacks"), [
    ("tgi", {metrics.Signal.TTFT, metrics.Signal.KV_USAGE, metrics.Signal.PREFIX_HIT_RATE,
             metrics.Signal.PREFIX_QUERIES, metrics.Signal.PREEMPTIONS}),
    ("nim-1", {metrics.Signal.TPOT, metrics.Signal.QUEUE, metrics.Signal.PREEMPTIONS,
               metrics.Signal.PREFIX_HIT_RATE, metrics.Signal.PREFIX_QUERIES}),
    ("sglang", {metrics.Signal.TPOT, metrics.Signal.PREFIX_QUERIES}),
    ("trtllm", {metrics.Signal.PREFIX_QUERIES}),
])
def test_what_each_engine_lacks(variant: str, lacks: set[metrics.Signal]) -> None:
    op = registry.by_variant(variant).dialect
    assert {s for s in lacks if op.lacks(s)} == lacks


def test_nim_2_exports_its_backend_dialect_at_v1_metrics() -> None:
    for nim, backend in ((exposition.NIM_2_VLLM, exposition.VLLM), (exposition.NIM_2_SGLANG, exposition.SGLANG)):
        assert nim.path == "/v1/metrics" and backend.path == "/metrics"
        assert {k: wire(v) for k, v in nim.metrics.items()} == {k: wire(v) for k, v in backend.metrics.items()}


@pytest.mark.parametrize(("variant", "argv", "env", "engine_series"), [
    ("sglang", ["python3", "-m", "sglang.launch_server", "--enable-metrics"], {}, True),
    ("sglang", ["python3", "-m", "sglang.launch_server"], {}, False),
    ("nim-2-sglang", [], {"NIM_PASSTHROUGH_ARGS": "--max-running-requests 8 --enable-metrics"}, True),
    ("nim-2-sglang", [], {"NIM_PASSTHROUGH_ARGS": "--max-running-requests 8"}, False),
    ("vllm", [], {}, True),
    ("tgi", [], {}, True),
])
def test_sglang_exports_only_with_enable_metrics(variant: str, argv: list[str], env: dict[str, str],
                                                 engine_series: bool) -> None:
    dialects = exposition.pod_dialects(variant, argv, env=env)
    assert dialects[-1] is exposition.DCGM
    assert (exposition.dialect(variant) in dialects) is engine_series


def test_the_renderer_turns_sglang_metrics_on() -> None:
    knobs = runtimes.EngineKnobs(
        model="m", served_model_name="m", port=8000, tensor_parallel=1, max_batch_size=8,
        kv_cache_dtype=models.KvDtype.DEFAULT)
    for variant in ("sglang", "nim-2-sglang"):
        runtime = registry.by_variant(variant)
        launch = runtime.launch(knobs)
        argv = [*(launch.command or ()), *launch.args]
        assert exposition.dialect(variant) in exposition.pod_dialects(variant, argv, env=dict(launch.env))


# ------------------------------------------------------------------------------------------ one simulated load


@functools.cache
def steady() -> scrapes.Run:
    """3 req/s of 1,000 in / 200 out with a 30% prefix hit rate: a busy but unsaturated server."""
    return scrapes.simulate(rate=3.0, isl=1000, osl=200, hit_rate=0.3, warmup=30, window=60, step=2, seed=11)


@functools.cache
def starved() -> scrapes.Run:
    """Long prompts at a rate the KV cache cannot hold: preemptions (retractions, pauses) happen."""
    return scrapes.simulate(rate=2.0, isl=6000, osl=600, hit_rate=0.0, warmup=60, window=60, step=2, seed=5)


@dataclasses.dataclass(frozen=True)
class Seen:
    """The operator's view of the pod through one dialect, and the truth behind it."""

    pod: observation.PodMetrics
    dialect: exposition.Dialect
    op: metrics.Dialect


SLO_PERCENTILE = 95.0


def truth_histogram(run: scrapes.Run, internal: str) -> histogram.LogHistogram:
    last, first = run.samples[-1].values[internal], run.samples[0].values[internal]
    assert isinstance(last, histogram.LogHistogram) and isinstance(first, histogram.LogHistogram)
    return last.minus(first)


@functools.cache
def slos(which: str) -> tuple[float, float]:
    """SLOs at the true p80 of TTFT and of per-request ITL, so that attainment is neither 0 nor 1."""
    run = runs()[which]
    return truth_histogram(run, exposition.TTFT).quantile(0.8), truth_histogram(run, exposition.TPOT).quantile(0.8)


def runs() -> dict[str, scrapes.Run]:
    return {"steady": steady(), "starved": starved()}


@functools.cache
def seen(which: str, variant: str) -> Seen:
    run = runs()[which]
    twin, op = exposition.dialect(variant), registry.by_variant(variant).dialect
    pairs = zip(scrapes.scrape(run, twin), scrapes.scrape(run, exposition.DCGM), strict=True)
    scraped = [scrapes.flat(a) | scrapes.flat(b) for a, b in pairs]
    plan = prometheus.queries([op, metrics.DCGM], window=run.window)
    results = {key: scrapes.promql(scraped, key, dt=run.window, dialects=[op, metrics.DCGM]) for key in plan}
    raw = prometheus.parse(results)[NAMESPACE, POD]
    assert not raw.dropped
    ttft_slo, itl_slo = slos(which)
    pod = prometheus.pod_metrics(raw, percentile=SLO_PERCENTILE, ttft_slo=ttft_slo, itl_slo=itl_slo)
    return Seen(pod, twin, op)


def bucket(spec: exposition.MetricSpec, value: float, *, run: scrapes.Run) -> tuple[float, float]:
    """The (lower, upper] bucket of this spec's layout that holds `value` (upper inf past the last bound)."""
    les = exposition.bounds(spec, run.samples[-1].max_model_len)
    lower = 0.0
    for b in les:
        if value <= b:
            return lower, b
        lower = b
    return lower, math.inf


# The twin's fine histogram re-buckets a value within 1% below a bound one bucket high (histogram.RATIO).
FINE = histogram.RATIO


def within_bucket(estimate: float, truth: float, *, spec: exposition.MetricSpec, run: scrapes.Run) -> bool:
    lower, upper = bucket(spec, truth / FINE, run=run)[0], bucket(spec, truth * FINE, run=run)[1]
    # Past the last finite bound Prometheus reports that bound (prometheus.quantile does the same).
    return lower / FINE <= estimate <= (upper * FINE if math.isfinite(upper) else lower * FINE)


QUANTILES = [("ttft_p", metrics.Signal.TTFT), ("itl_p", metrics.Signal.ITL), ("tpot_p", metrics.Signal.TPOT)]


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("field", "signal"), QUANTILES)
def test_quantiles_agree_within_each_dialects_histogram_buckets(which: str, variant: str, field: str,
                                                                signal: metrics.Signal) -> None:
    """p95 from any dialect lies in the bucket of that dialect's layout which holds the true p95, so two
    dialects differ by at most the widths of their two buckets there."""
    run, s, ref = runs()[which], seen(which, variant), seen(which, "vllm")
    internal = feeding(s.dialect, s.op, signal=signal)
    estimate = getattr(s.pod, field)
    if internal is None:
        assert estimate is None, f"{variant} lacks {signal.value} yet the operator reads {estimate}"
        return
    truth = truth_histogram(run, internal).quantile(SLO_PERCENTILE / 100)
    spec = s.dialect.metrics[internal]
    assert estimate is not None and within_bucket(estimate, truth, spec=spec, run=run), (
        estimate, truth, bucket(spec, truth, run=run))
    ref_internal = feeding(ref.dialect, ref.op, signal=signal)
    if ref_internal == internal:
        lo, hi = bucket(spec, truth, run=run)
        rlo, rhi = bucket(ref.dialect.metrics[internal], truth, run=run)
        assert abs(estimate - getattr(ref.pod, field)) <= ((hi - lo) + (rhi - rlo)) * FINE


MEANS = [("ttft_mean", metrics.Signal.TTFT), ("itl_mean", metrics.Signal.ITL)]


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("field", "signal"), MEANS)
def test_means_are_exact_in_every_dialect(which: str, variant: str, field: str, signal: metrics.Signal) -> None:
    run, s = runs()[which], seen(which, variant)
    internal = feeding(s.dialect, s.op, signal=signal)
    if internal is None:
        assert getattr(s.pod, field) is None
        return
    assert getattr(s.pod, field) == pytest.approx(truth_histogram(run, internal).mean(), rel=1e-9)


# Same numbers in every dialect that has the signal: counters and gauges carry no bucket error.
EXACT = ["requests_per_s", "running", "waiting", "kv_usage", "prompt_tokens_per_s", "mbu", "in_flight"]


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_counters_and_gauges_agree_exactly(which: str, variant: str) -> None:
    s, ref = seen(which, variant), seen(which, "vllm")
    for field in EXACT:
        mine, theirs = getattr(s.pod, field), getattr(ref.pod, field)
        if field == "kv_usage" and s.op.lacks(metrics.Signal.KV_USAGE):
            assert mine is None
            continue
        if field == "requests_per_s" and s.op.lacks(metrics.Signal.TTFT):
            # Counted as requests end (TGI has no TTFT), not as they start: the window's two edges differ by
            # the requests in flight there.
            assert mine == pytest.approx(theirs, rel=TOKENS_TOLERANCE), field
            continue
        assert theirs is not None and mine == pytest.approx(theirs, rel=1e-9), field
    assert s.pod.requests_per_s and s.pod.requests_per_s > 0.5


# TGI counts generated tokens when a request ends (the _sum of a per-request histogram), the others per
# token: over a 60 s window they differ by the tokens in flight at its two ends.
TOKENS_TOLERANCE = 0.05


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_tokens_agree(which: str, variant: str) -> None:
    s, ref = seen(which, variant), seen(which, "vllm")
    assert s.pod.output_tokens_per_s is not None and ref.pod.output_tokens_per_s is not None
    per_token = s.op.sources[metrics.Signal.GENERATION_TOKENS].kind is None
    tolerance = 1e-9 if per_token else TOKENS_TOLERANCE
    assert s.pod.output_tokens_per_s == pytest.approx(ref.pod.output_tokens_per_s, rel=tolerance)


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_request_shape_agrees(which: str, variant: str) -> None:
    """Where both dialects observe a prompt's length as the request ends (vLLM, NIM, SGLang), the mean is the same
    number; TGI observes it as the request starts and TensorRT-LLM has only the counters (over the first tokens):
    the window's two edges differ by the requests in flight there."""
    s, ref = seen(which, variant), seen(which, "vllm")
    assert s.pod.mean_input_tokens is not None and ref.pod.mean_input_tokens is not None
    at_end = twin_observes_at_end(s.dialect)
    tolerance = 1e-9 if at_end else TOKENS_TOLERANCE
    assert s.pod.mean_input_tokens == pytest.approx(ref.pod.mean_input_tokens, rel=tolerance)
    assert s.pod.mean_output_tokens is not None and ref.pod.mean_output_tokens is not None
    assert s.pod.mean_output_tokens == pytest.approx(ref.pod.mean_output_tokens, rel=1e-9 if at_end else
                                                     TOKENS_TOLERANCE)


def twin_observes_at_end(twin: exposition.Dialect) -> bool:
    return exposition.PROMPT_LEN in twin.metrics and exposition.GENERATION_LEN in twin.metrics


# SGLang and TensorRT-LLM report the hit rate as a gauge (per interval, averaged over the window); vLLM
# as two token counters (a ratio of rates): the same load, two averages.
HIT_RATE_TOLERANCE = 0.02


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefix_hit_rate_agrees_where_exported(variant: str) -> None:
    s, ref = seen("steady", variant), seen("steady", "vllm")
    if s.op.lacks(metrics.Signal.PREFIX_HIT_RATE) and s.op.lacks(metrics.Signal.PREFIX_HITS):
        assert s.pod.prefix_hit_rate is None
        return
    assert ref.pod.prefix_hit_rate == pytest.approx(0.3, abs=0.02)
    assert s.pod.prefix_hit_rate == pytest.approx(ref.pod.prefix_hit_rate, abs=HIT_RATE_TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_preemptions_seen_where_exported(variant: str) -> None:
    s, calm = seen("starved", variant), seen("steady", variant)
    if s.op.lacks(metrics.Signal.PREEMPTIONS):
        assert s.pod.preemptions_per_s is None
        return
    assert calm.pod.preemptions_per_s == 0
    assert s.pod.preemptions_per_s is not None and s.pod.preemptions_per_s > 0


def fraction_bounds(run: scrapes.Run, threshold: float, *, spec: exposition.MetricSpec,
                    internal: str) -> tuple[float, float]:
    """The true share of observations at or below the edges of the bucket that holds `threshold`."""
    h = truth_histogram(run, internal)
    lower, upper = bucket(spec, threshold, run=run)
    les = [b for b in (lower / FINE, upper * FINE) if math.isfinite(b)]
    shares = [c / h.count for c in h.cumulative(sorted(les))]
    return shares[0], shares[-1] if math.isfinite(upper) else 1.0


@pytest.mark.parametrize("which", ["steady", "starved"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_slo_attainment_within_bucket_error(which: str, variant: str) -> None:
    """Attainment = share within TTFT x share within ITL; each share is interpolated inside the bucket that
    holds the objective, so it lies between the true shares at that bucket's edges."""
    run, s = runs()[which], seen(which, variant)
    ttft_slo, itl_slo = slos(which)
    low, high = 1.0, 1.0
    for signal, threshold in ((metrics.Signal.TTFT, ttft_slo), (metrics.Signal.TPOT, itl_slo)):
        internal = feeding(s.dialect, s.op, signal=signal) or (
            feeding(s.dialect, s.op, signal=metrics.Signal.ITL) if signal is metrics.Signal.TPOT else None)
        if internal is None:
            continue
        lo, hi = fraction_bounds(run, threshold, spec=s.dialect.metrics[internal], internal=internal)
        low, high = low * lo, high * hi
    assert s.pod.slo_attainment is not None
    assert low - 1e-9 <= s.pod.slo_attainment <= high + 1e-9


# ------------------------------------------------------------------------------------------ fixtures


def capture(variant: str) -> str:
    """A scrape of the steady load's last sample in one dialect, with a header saying where it came from."""
    run = steady()
    d = exposition.dialect(variant)
    text = exposition.render(run.samples[-1], IDENTITY, dialects=[d], previous=run.samples[-2])
    header = (f"# Captured from the twin in the {variant} dialect (served at {d.path}); Llama-3.3-70B FP8 on 2 x H100\n"
              "# at 3 req/s. Regenerate: INFERTUNE_UPDATE_FIXTURES=1 .venv/bin/pytest tests/unit/test_dialects.py\n")
    return header + text


def shape(text: str) -> set[tuple[str, str, tuple[str, ...]]]:
    """(sample name, family type, label names) of every series: the structure, not the numbers."""
    return {(s.name, f.type, tuple(sorted(s.labels))) for f in parser.text_string_to_metric_families(text)
            for s in f.samples}


@pytest.mark.parametrize("variant", [*VARIANTS, "dcgm"])
def test_fixture_has_the_twins_current_shape(variant: str) -> None:
    path = FIXTURES / f"{variant}.txt"
    fresh = capture(variant)
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing: run INFERTUNE_UPDATE_FIXTURES=1 .venv/bin/pytest {__file__}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fresh)
    assert shape(path.read_text()) == shape(fresh), f"{path} is stale: regenerate it (see its header)"


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixture_carries_every_signal_the_operator_reads(variant: str) -> None:
    families = {f.name: f for f in parser.text_string_to_metric_families((FIXTURES / f"{variant}.txt").read_text())}
    samples = {s.name: s for f in families.values() for s in f.samples}
    op = registry.by_variant(variant).dialect
    for signal, source in op.sources.items():
        kind = source.kind or metrics.KINDS[signal]
        name = source.names[0]
        if kind is metrics.Kind.HISTOGRAM or kind is metrics.Kind.HISTOGRAM_SUM:
            family = families[name]
            assert family.type == "histogram", name
            buckets = [s for s in family.samples if s.name == name + "_bucket"]
            counts = [s.value for s in buckets]
            assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf", name
            assert samples[name + "_count"].value == counts[-1] > 0, name
        else:
            assert name in samples, name
            assert families[name.removesuffix("_total")].type == kind.value, name
            value = samples[name].value
            assert value >= 0 and (signal not in (metrics.Signal.KV_USAGE, metrics.Signal.PREFIX_HIT_RATE)
                                   or value <= 1), name
