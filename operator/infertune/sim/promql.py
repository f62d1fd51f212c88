"""Twin: what Prometheus answers to the operator's queries (prometheus.queries) about simulated pods.

Each pod exports its engine's dialect (sim/exposition.py: names, kinds, real bucket bounds); the answer to a query
(part, signal) is the series of the first metric name the pod exports for that signal, as PromQL's `or` keeps it:
bucket rates by `le`, `_sum` rates, counter rates, gauge averages, the latest gauges. The operator's own parser
(prometheus.parse, prometheus.pod_metrics) then reads them as it reads a real Prometheus.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from infertune import prometheus
from infertune.runtimes import metrics, registry
from infertune.sim import exposition

Key = tuple[str, metrics.Signal]  # (part, signal), as prometheus.queries keys its queries
# The engine's statistics (sim/engine.EngineStats) behind each twin histogram the operator can read.
HISTOGRAM_STATS: Mapping[str, str] = {
    exposition.TTFT: "ttft", exposition.ITL: "itl", exposition.TPOT: "tpot", exposition.E2E: "e2e",
    exposition.PROMPT_LEN: "prompt_len", exposition.PROMPT_LEN_STARTED: "prompt_len_started",
    exposition.GENERATION_LEN: "generation_len",
}
# ... and behind each counter.
COUNTER_STATS: Mapping[str, str] = {
    exposition.PROMPT_TOKENS: "prompt_tokens", exposition.GENERATION_TOKENS: "generation_tokens",
    exposition.PREEMPTIONS: "preemptions", exposition.PREFIX_QUERIES: "prefix_queries",
    exposition.PREFIX_HITS: "prefix_hits",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Read:
    """Where one query's answer comes from in a pod's exposition: the twin signal and the kind the operator reads."""

    signal: str  # exposition signal (sim/exposition.py), e.g. exposition.TPOT
    kind: metrics.Kind
    bounds: tuple[float, ...] = ()  # the exporter's finite `le` bounds, for bucket queries


def _exported(twin: exposition.Dialect, name: str, kind: metrics.Kind) -> tuple[str, exposition.MetricSpec] | None:
    """The twin signal exported under this operator metric name with a matching type, if any."""
    for signal, spec in twin.metrics.items():
        if kind is metrics.Kind.COUNTER:
            hit = spec.kind is exposition.Kind.COUNTER and spec.name == name.removesuffix("_total")
        elif kind is metrics.Kind.GAUGE:
            hit = spec.kind is exposition.Kind.GAUGE and spec.name == name
        else:  # histograms, and histograms read through their _sum
            hit = spec.kind is exposition.Kind.HISTOGRAM and spec.name == name
        if hit:
            return signal, spec
    return None


@functools.cache
def reads(variant: str, max_model_len: int) -> dict[Key, Read]:
    """Every query the operator sends (for this engine and DCGM) that a pod of this variant answers, and from what.

    vLLM's ("buckets", ITL) reads vllm:inter_token_latency_seconds (per token); TensorRT-LLM's reads
    trtllm_time_per_output_token_seconds, which is per request; SGLang answers no ("buckets", TPOT) query.
    """
    op = registry.by_variant(variant).dialect
    twins = ((op, exposition.dialect(variant)), (metrics.DCGM, exposition.DCGM))
    out: dict[Key, Read] = {}
    for part, signal in prometheus.queries([op, metrics.DCGM], window=60.0):
        for op_dialect, twin in twins:
            source = op_dialect.sources.get(signal)
            if source is None:
                continue
            kind = source.kind or metrics.KINDS[signal]
            if part in ("buckets", "sum", "count") and kind is not metrics.Kind.HISTOGRAM:
                continue
            if part in ("now", "busy") and kind is not metrics.Kind.GAUGE:
                continue
            found = next((f for n in source.names if (f := _exported(twin, n, kind)) is not None), None)
            if found is not None:
                twin_signal, spec = found
                bounds = exposition.bounds(spec, max_model_len) if part == "buckets" else ()
                out[part, signal] = Read(twin_signal, kind, bounds)
                break
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class PodWindow:
    """One pod over the window: counter rates, histogram rates, gauge averages and the latest gauges, by twin
    signal. A histogram is its cumulative bucket rates (one per finite bound, then +Inf) and its _sum rate."""

    namespace: str
    pod: str
    rates: Mapping[str, float]
    histograms: Mapping[str, tuple[tuple[float, ...], float]]
    gauges: Mapping[str, float]
    now: Mapping[str, float]
    # The share of the window with a request running, as the busy subquery reads the running gauge (exact here:
    # the twin knows every request's life, where Prometheus sees the gauge at its scrapes).
    busy: float | None = None


@functools.cache
def _les(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label values Prometheus returns: the client's float text, then +Inf."""
    return (*(repr(float(b)) for b in bounds), "+Inf")


def answers(pods: Iterable[PodWindow], plan: Mapping[Key, Read], *, at: float) -> dict[Key, list[dict[str, Any]]]:
    """The result vectors of every query in `plan` over these pods (all of one variant), as the HTTP API returns
    them: {"metric": {labels}, "value": [time, "text"]}.

    A histogram with no observation in the window answers only its +Inf bucket, at 0 (prometheus.histogram_query
    asks for the other buckets only where +Inf moved).
    """
    out: dict[Key, list[dict[str, Any]]] = {key: [] for key in plan}
    for w in pods:
        ident = {"namespace": w.namespace, "pod": w.pod}
        for key, read in plan.items():
            part, vector = key[0], out[key]
            if part == "buckets":
                hist = w.histograms.get(read.signal)
                if hist is None:
                    continue
                counts = hist[0]
                les = _les(read.bounds)
                if counts[-1] > 0:
                    vector.extend({"metric": {**ident, "le": le}, "value": [at, repr(c)]}
                                  for le, c in zip(les, counts, strict=True))
                else:
                    vector.append({"metric": {**ident, "le": "+Inf"}, "value": [at, "0.0"]})
                continue
            value = _value(w, part, read)
            if value is not None:
                vector.append({"metric": dict(ident), "value": [at, repr(float(value))]})
    return out


def _value(w: PodWindow, part: str, read: Read) -> float | None:
    """One pod's number for a non-bucket query: a histogram's _sum or _count rate, the latest gauge, the busy
    share, a counter's rate or a gauge's average."""
    if part == "sum" or read.kind is metrics.Kind.HISTOGRAM_SUM:
        hist = w.histograms.get(read.signal)
        return None if hist is None else hist[1]
    if part == "count":
        hist = w.histograms.get(read.signal)
        return None if hist is None else hist[0][-1]
    if part == "now":
        return w.now.get(read.signal)
    if part == "busy":
        return w.busy
    if read.kind is metrics.Kind.COUNTER:
        return w.rates.get(read.signal)
    return w.gauges.get(read.signal)
