"""Adapter: batched PromQL (one query per signal for every pod of every engine) -> per-pod raw signals."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import requests
import tenacity
from prometheus_api_client import exceptions as prom_exceptions
from prometheus_api_client import prometheus_connect
from urllib3.util import retry as urllib3_retry

from infertune import models, observation
from infertune.runtimes import metrics, registry

PodKey = tuple[str, str]  # (namespace, pod)


class PrometheusError(Exception):
    """Prometheus did not answer usefully (HTTP error, timeout, malformed result)."""


class Query(Protocol):
    """One instant PromQL query; returns the result vector (the API's data.result)."""

    def __call__(self, promql: str, *, timeout: float) -> list[dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RawPod:
    """What Prometheus holds for one pod over the window: bucket rates per histogram, one number per scalar."""

    buckets: Mapping[metrics.Signal, tuple[tuple[float, float], ...]]  # (upper bound, cumulative rate)
    sums: Mapping[metrics.Signal, float]  # rate of a histogram's _sum (for means)
    values: Mapping[metrics.Signal, float]  # gauges averaged, counters as rates
    dropped: tuple[str, ...] = ()  # garbage that was ignored, with the reason
    now: Mapping[metrics.Signal, float] = dataclasses.field(default_factory=dict)  # latest running/waiting
    rejected: frozenset[metrics.Signal] = frozenset()  # histograms dropped whole as garbage (see parse)
    counts: Mapping[metrics.Signal, float] = dataclasses.field(default_factory=dict)  # a length histogram's _count
    busy: Mapping[metrics.Signal, float] = dataclasses.field(default_factory=dict)  # share of the window a gauge > 0


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One cycle's view of every pod Prometheus knows, or why there is none."""

    pods: Mapping[PodKey, RawPod]
    taken_at: float
    ok: bool = True
    error: str = ""
    queries: int = 0
    failed_signals: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Query building (pure)
# ---------------------------------------------------------------------------------------------

# The prompt-length histogram is read whole, not only its mean: waits behind other prefills grow with the
# spread of the prompts (perfmodel.prefill_spread), which a mean cannot show. vLLM's has 14 buckets up to an
# 8,192-token context (1-2-5 steps), and a pod that saw no prompt in the window sends only its +Inf bucket.
HISTOGRAM_SIGNALS = (metrics.Signal.TTFT, metrics.Signal.ITL, metrics.Signal.TPOT, metrics.Signal.E2E,
                     metrics.Signal.PROMPT_LENGTH)
MEAN_SIGNALS = (metrics.Signal.TTFT, metrics.Signal.ITL)
SCALAR_SIGNALS = (
    metrics.Signal.RUNNING, metrics.Signal.WAITING, metrics.Signal.KV_USAGE, metrics.Signal.PREEMPTIONS,
    metrics.Signal.PROMPT_TOKENS, metrics.Signal.GENERATION_TOKENS, metrics.Signal.PREFIX_QUERIES,
    metrics.Signal.PREFIX_HITS, metrics.Signal.PREFIX_HIT_RATE, metrics.Signal.DRAM_ACTIVE,
)
# The request shape: each length histogram's _sum over its own _count (an engine may observe the prompt's length
# as the request arrives, TGI, or as it ends, vLLM: either way the two agree with each other).
LENGTH_SIGNALS = (metrics.Signal.PROMPT_LENGTH, metrics.Signal.GENERATION_LENGTH)
# Requests in flight right now (drain detection): the latest sample, not the window's average.
NOW_SIGNALS = (metrics.Signal.RUNNING, metrics.Signal.WAITING)
NOW_WINDOW = 30.0
# The share of the window the engine had a request running (busy_query): its tokens are made only then, so the
# count that sets their step is the one while busy, not the window's average with the idle time in it.
BUSY_SIGNALS = (metrics.Signal.RUNNING,)
# The busy share's subquery steps every 5 s: finer than the 15 s the monitoring manifests scrape at
# (manifests/monitoring), so each sample counts for the time it stood (three steps of a 15 s scrape).
BUSY_STEP = 5.0
# How per-series values of one pod combine: requests add up over engine indexes; ratios average.
_AGGREGATE = {metrics.Signal.RUNNING: "sum", metrics.Signal.WAITING: "sum"}
BY = "namespace, pod"
# Only the scrape job that reads the operator's own engine pods (manifests/monitoring: PodMonitor and
# scrape-config.yaml both name it) may speak for them: any other job that honours labels (a DCGM exporter in a
# tenant's namespace, an app's own exporter) could otherwise write `vllm:*` series with another tenant's
# `namespace` and `pod`. DCGM's signal comes from the DCGM job only, which scrapes the GPU Operator's namespace.
ENGINE_JOB = models.ENGINE_JOB
DCGM_JOB = models.DCGM_JOB


@dataclasses.dataclass(frozen=True, slots=True)
class Jobs:
    """The scrape jobs whose series the operator believes: engines' and DCGM's (None: any job, for tests only)."""

    engine: str | None = ENGINE_JOB
    dcgm: str | None = DCGM_JOB

    def of(self, dialect: metrics.Dialect) -> str | None:
        return self.dcgm if dialect is metrics.DCGM else self.engine


def _names(signal: metrics.Signal, dialects: Iterable[metrics.Dialect], jobs: Jobs = Jobs()
           ) -> list[tuple[str, metrics.Kind, str]]:
    """Every metric name that carries this signal, newest name of each dialect first, without repeats, with the
    job matcher its dialect's series must carry (`, job="..."`, or nothing)."""
    out: list[tuple[str, metrics.Kind, str]] = []
    for d in dialects:
        source = d.sources.get(signal)
        if source is None:
            continue
        kind = source.kind or metrics.KINDS[signal]
        job = jobs.of(d)
        matcher = f', job="{job}"' if job else ""
        for name in source.names:
            if (name, kind, matcher) not in out:
                out.append((name, kind, matcher))
    return out


def _window(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def histogram_query(signal: metrics.Signal, dialects: Sequence[metrics.Dialect], window: float,
                    jobs: Jobs = Jobs()) -> str | None:
    """Bucket rates by pod and `le` for every dialect at once; `or` keeps the first name a pod has.

    A pod that observed nothing in the window (idle, or a standby pod by design) sends only its +Inf bucket, at
    rate 0: every other bucket of it is 0 too and says nothing. vLLM's TTFT histogram has 21 buckets, so
    1,000 idle pods send 4 x 1,000 series instead of 4 x 21,000 (about 80 MB less to decode per snapshot).
    """
    w = _window(window)
    parts = []
    for n, k, job in _names(signal, dialects, jobs):
        if k is not metrics.Kind.HISTOGRAM:
            continue
        every = f"sum by ({BY}, le) (rate({{__name__=\"{n}_bucket\"{job}}}[{w}]))"
        total = f"sum by ({BY}, le) (rate({{__name__=\"{n}_bucket\", le=\"+Inf\"{job}}}[{w}]))"
        parts.append(f"({every} and on ({BY}) ({total} > 0)) or {total}")
    return " or ".join(parts) or None


def sum_query(signal: metrics.Signal, dialects: Sequence[metrics.Dialect], window: float,
              jobs: Jobs = Jobs(), *, suffix: str = "_sum") -> str | None:
    """Per-pod rate of each histogram's `_sum` (or, with suffix="_count", of its `_count`)."""
    w = _window(window)
    parts = [f"sum by ({BY}) (rate({{__name__=\"{n}{suffix}\"{job}}}[{w}]))"
             for n, k, job in _names(signal, dialects, jobs) if k is metrics.Kind.HISTOGRAM]
    return " or ".join(parts) or None


def scalar_query(signal: metrics.Signal, dialects: Sequence[metrics.Dialect], window: float,
                 jobs: Jobs = Jobs()) -> str | None:
    w = _window(window)
    parts = []
    for name, kind, job in _names(signal, dialects, jobs):
        sel = f'{{__name__="{name}"{job}}}'
        if kind is metrics.Kind.GAUGE:
            agg = _AGGREGATE.get(signal, "avg")
            parts.append(f"{agg} by ({BY}) (avg_over_time({sel}[{w}]))")
        elif kind is metrics.Kind.COUNTER:
            parts.append(f"sum by ({BY}) (rate({sel}[{w}]))")
        elif kind is metrics.Kind.HISTOGRAM_SUM:
            parts.append(f'sum by ({BY}) (rate({{__name__="{name}_sum"{job}}}[{w}]))')
    return " or ".join(parts) or None


def now_query(signal: metrics.Signal, dialects: Sequence[metrics.Dialect], jobs: Jobs = Jobs()) -> str | None:
    w = _window(NOW_WINDOW)
    parts = [f'sum by ({BY}) (last_over_time({{__name__="{n}"{job}}}[{w}]))'
             for n, k, job in _names(signal, dialects, jobs) if k is metrics.Kind.GAUGE]
    return " or ".join(parts) or None


def busy_query(signal: metrics.Signal, dialects: Sequence[metrics.Dialect], window: float,
               jobs: Jobs = Jobs()) -> str | None:
    """Per pod, the share of the window its gauge was above zero: the samples of `sum by pod (gauge) > bool 0`
    averaged over a subquery at BUSY_STEP. A pod running a request in 3 of its 4 samples of a minute: 0.75."""
    w, step = _window(window), _window(BUSY_STEP)
    parts = [f'avg_over_time((sum by ({BY}) ({{__name__="{n}"{job}}}) > bool 0)[{w}:{step}])'
             for n, k, job in _names(signal, dialects, jobs) if k is metrics.Kind.GAUGE]
    return " or ".join(parts) or None


def queries(dialects: Sequence[metrics.Dialect], window: float, *, jobs: Jobs = Jobs()
            ) -> dict[tuple[str, metrics.Signal], str]:
    """The cycle's queries, keyed by (part, signal); their number does not depend on how many pods exist."""
    built: list[tuple[str, metrics.Signal, str | None]] = [
        *(("buckets", s, histogram_query(s, dialects, window, jobs)) for s in HISTOGRAM_SIGNALS),
        *(("sum", s, sum_query(s, dialects, window, jobs)) for s in MEAN_SIGNALS),
        *(("value", s, scalar_query(s, dialects, window, jobs)) for s in SCALAR_SIGNALS),
    ]
    for s in LENGTH_SIGNALS:
        built += [("sum", s, sum_query(s, dialects, window, jobs)),
                  ("count", s, sum_query(s, dialects, window, jobs, suffix="_count"))]
    built += [("now", s, now_query(s, dialects, jobs)) for s in NOW_SIGNALS]
    built += [("busy", s, busy_query(s, dialects, window, jobs)) for s in BUSY_SIGNALS]
    return {(part, s): q for part, s, q in built if q is not None}


# ---------------------------------------------------------------------------------------------
# Result parsing (pure)
# ---------------------------------------------------------------------------------------------

# Beyond these a value is garbage, not load: 100,000 requests in one pod's batch, 10 M tokens/s. The policy's
# own bounds (a pod runs at most its max batch; serves at most its batch per hardware step) are tighter and live
# in the core (plausibility.py); these only keep absurd numbers out of everything downstream.
_LIMITS = {
    metrics.Signal.RUNNING: 1e5, metrics.Signal.WAITING: 1e7, metrics.Signal.KV_USAGE: 1.0,
    metrics.Signal.PREFIX_HIT_RATE: 1.0, metrics.Signal.DRAM_ACTIVE: 1.0, metrics.Signal.PROMPT_TOKENS: 1e7,
    metrics.Signal.GENERATION_TOKENS: 1e7, metrics.Signal.PREEMPTIONS: 1e5,
    metrics.Signal.PREFIX_QUERIES: 1e8, metrics.Signal.PREFIX_HITS: 1e8,
}
# A latency histogram observes at most once per generated token (ITL) and a request yields at least one token,
# so no bucket's rate can exceed the token ceiling above: 10 M observations/s.
OBSERVATIONS_LIMIT = _LIMITS[metrics.Signal.GENERATION_TOKENS]
# Buckets one pod may send per histogram. OpenTelemetry's default for its exponential histograms (MaxSize,
# the SDK specification's Base2 Exponential Bucket Histogram Aggregation) is 160; the engines' classic
# histograms have far fewer (vLLM's TTFT 22 + Inf). A pod sending 200,000 distinct `le` values would otherwise
# cost the operator ~550 MiB and 10 s of CPU per snapshot against its 512 MiB limit, for every tenant.
MAX_BUCKETS = 160
# The most series one pod can honestly answer in a snapshot: every histogram at the bucket cap, plus one series
# per mean, scalar and in-flight signal (the queries sum by pod, so no more than one each).
MAX_SERIES = (MAX_BUCKETS * len(HISTOGRAM_SIGNALS) + len(MEAN_SIGNALS) + len(SCALAR_SIGNALS) + len(NOW_SIGNALS)
              + len(BUSY_SIGNALS)
              + 2 * len(LENGTH_SIGNALS))


def _float(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _sample(series: dict[str, Any]) -> tuple[PodKey | None, float | None, dict[str, str]]:
    labels = series.get("metric") or {}
    if not isinstance(labels, dict):
        return None, None, {}
    ns, pod = labels.get("namespace"), labels.get("pod")
    value = series.get("value")
    raw = value[1] if isinstance(value, (list, tuple)) and len(value) == 2 else None
    return ((ns, pod) if isinstance(ns, str) and isinstance(pod, str) and ns and pod else None), _float(raw), labels


def _le(text: Any) -> float | None:
    """A bucket's upper bound: +Inf, or a finite number >= 0 (latencies are never negative); None otherwise."""
    if text in ("+Inf", "Inf"):
        return math.inf
    le = _float(text)
    return le if le is not None and le >= 0 else None


def _bucket_problem(signal: metrics.Signal, le: float | None, raw_le: Any, value: float | None,
                    raw: Any) -> str | None:
    """Why one histogram bucket sample cannot be kept (which drops its whole histogram), or None."""
    if le is None:
        return f"{signal.value}: bucket bound le={str(raw_le)[:32]!r} is not a number >= 0"
    if value is None:
        return f"{signal.value}: not a finite number ({str(raw)[:64]})"
    if value < 0:
        return f"{signal.value}: negative ({value:g})"
    if value > OBSERVATIONS_LIMIT:
        return f"{signal.value}: implausible ({value:g} > {OBSERVATIONS_LIMIT:g} observations/s)"
    return None


def _sum_limit(signal: metrics.Signal) -> float:
    """The most a histogram's _sum can grow per second. A length histogram's sum is tokens/s: the token ceiling. A
    latency histogram's is, by Little's law, the mean number of requests inside the span it times (a TTFT sum
    rising 3 s/s is 3 requests waiting for their first token on average), so at most every request running or
    waiting: 100,000 + 10 M."""
    if signal in LENGTH_SIGNALS:
        return _LIMITS[metrics.Signal.PROMPT_TOKENS]
    return _LIMITS[metrics.Signal.RUNNING] + _LIMITS[metrics.Signal.WAITING]


def _sample_problem(signal: metrics.Signal, part: str, value: float | None, raw: Any) -> str | None:
    """Why a gauge, rate or sum sample cannot be kept, or None."""
    if value is None:
        return f"{signal.value}: not a finite number ({str(raw)[:64]})"
    if value < 0:
        return f"{signal.value}: negative ({value:g})"
    # A busy share is a fraction of the window, whatever the gauge it is read from.
    limit = {"sum": _sum_limit(signal), "count": OBSERVATIONS_LIMIT, "busy": 1.0}.get(part, _LIMITS.get(signal))
    if limit is not None and value > limit * (1.0001 if limit == 1.0 else 1):
        return f"{signal.value}{' now' if part == 'now' else ''}: implausible ({value:g} > {limit:g})"
    return None


class Fold:
    """Query answers folded into per-pod signals one answer at a time (parse), so that a snapshot never holds
    every decoded answer at once: at 1,000 loaded pods the five histogram answers decode to 67 MiB of Python
    objects together (12 MB of JSON) and fold to 11 MiB; folded as each arrives, at most the answers in flight
    are held. Answers may arrive from several threads: each is folded under a lock."""

    def __init__(self, *, max_buckets: int = MAX_BUCKETS) -> None:
        self.max_buckets = max_buckets
        self._lock = threading.Lock()
        self._buckets: dict[PodKey, dict[metrics.Signal, list[tuple[float, float]]]] = {}
        self._bad: dict[PodKey, set[metrics.Signal]] = {}
        self._sums: dict[PodKey, dict[metrics.Signal, float]] = {}
        self._counts: dict[PodKey, dict[metrics.Signal, float]] = {}
        self._values: dict[PodKey, dict[metrics.Signal, float]] = {}
        self._latest: dict[PodKey, dict[metrics.Signal, float]] = {}
        self._busy: dict[PodKey, dict[metrics.Signal, float]] = {}
        self._dropped: dict[PodKey, list[str]] = {}
        self._folded: set[tuple[str, metrics.Signal]] = set()

    def add(self, part: str, signal: metrics.Signal, vector: list[dict[str, Any]]) -> None:
        """Fold one query's answer (its series) in; a second answer to the same query is ignored (an attempt
        that answered after its retry had: its buckets twice would be no histogram)."""
        with self._lock:
            if (part, signal) in self._folded:
                return
            self._folded.add((part, signal))
            # Where this answer's numbers go: the same map for every series of it.
            into = {"sum": self._sums, "count": self._counts, "now": self._latest, "busy": self._busy}.get(
                part, self._values)
            for series in vector:
                key, value, labels = _sample(series) if isinstance(series, dict) else (None, None, {})
                if key is None:
                    continue  # a series without pod identity cannot be attributed to anything
                if part == "buckets":
                    self._bucket(key, signal, value, labels, series)
                    continue
                reason = _sample_problem(signal, part, value, series.get("value"))
                if reason is not None:
                    self._dropped.setdefault(key, []).append(reason)
                    continue
                assert value is not None
                into.setdefault(key, {})[signal] = value

    def _bucket(self, key: PodKey, signal: metrics.Signal, value: float | None, labels: dict[str, str],
                series: dict[str, Any]) -> None:
        if signal in self._bad.get(key, ()):
            return  # already dropped whole: nothing more of it is kept
        kept = self._buckets.setdefault(key, {}).setdefault(signal, [])
        le = _le(labels.get("le"))
        reason = (f"{signal.value}: more than {self.max_buckets} buckets" if len(kept) >= self.max_buckets
                  else _bucket_problem(signal, le, labels.get("le"), value, series.get("value")))
        if reason is not None:
            self._dropped.setdefault(key, []).append(f"{reason}; histogram dropped")
            self._bad.setdefault(key, set()).add(signal)
            del self._buckets[key][signal]
            return
        assert le is not None and value is not None
        kept.append((le, value))

    def pods(self) -> dict[PodKey, RawPod]:
        """Every pod's signals as folded so far."""
        with self._lock:
            out: dict[PodKey, RawPod] = {}
            keys = set(self._buckets) | set(self._sums) | set(self._counts) | set(self._values) | set(
                self._latest) | set(self._dropped) | set(self._busy)
            for key in keys:
                hist = {s: tuple(sorted(b)) for s, b in self._buckets.get(key, {}).items() if b}
                out[key] = RawPod(buckets=hist, sums=self._sums.get(key, {}), values=self._values.get(key, {}),
                                  dropped=tuple(self._dropped.get(key, ())), now=self._latest.get(key, {}),
                                  rejected=frozenset(self._bad.get(key, ())), counts=self._counts.get(key, {}),
                                  busy=self._busy.get(key, {}))
            return out


def parse(results: Mapping[tuple[str, metrics.Signal], list[dict[str, Any]]], *,
          max_buckets: int = MAX_BUCKETS) -> dict[PodKey, RawPod]:
    """Per-pod signals from the query results; NaN, ±Inf, negative and absurd values are dropped with a reason.

    A histogram with any bad bucket (a negative or non-numeric `le`, an absurd rate, more than `max_buckets`
    buckets) is dropped whole for that pod: its other buckets no longer describe a distribution (a bucket at
    `le` -1e308 holding every request made the p95 -inf, "SLO met"). Past the cap nothing more of that pod's
    histogram is kept, so one pod's series cost at most MAX_SERIES entries here whatever it sends.
    """
    fold = Fold(max_buckets=max_buckets)
    for (part, signal), vector in results.items():
        fold.add(part, signal, vector)
    return fold.pods()


def _rank_bucket(q: float, buckets: Sequence[tuple[float, float]]
                 ) -> tuple[float, float, float, float, float] | None:
    """(rank, lower edge, upper edge, count below, count to the upper edge) of the bucket the q-quantile's rank
    falls in; None for no histogram or nothing observed. Past the last finite bucket the upper edge is +Inf."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            return rank, prev_le, le, prev_count, count
        prev_le, prev_count = le, max(prev_count, count)
    return rank, prev_le, math.inf, prev_count, prev_count


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative bucket rates: linear within the bucket, as Prometheus does.

    Buckets (0.1: 2, 0.5: 6, +Inf: 8) at q=0.5: rank 4 falls in (0.1, 0.5] -> 0.1 + 0.4 x (4-2)/(6-2) = 0.3.
    """
    found = _rank_bucket(q, buckets)
    if found is None:
        return None
    rank, low, high, below, upto = found
    if high == math.inf:
        return low  # the answer lies beyond the last finite bucket: report its bound
    if upto == below:
        return high
    return low + (high - low) * (rank - below) / (upto - below)


def quantile_floor(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The least the q-quantile can be: the lower edge of the bucket its rank falls in (quantile interpolates
    inside it). Every request between 25 and 50 ms: the p95 interpolates to 48.8 ms and may be anything above
    25 ms."""
    found = _rank_bucket(q, buckets)
    if found is None:
        return None
    _, low, high, below, upto = found
    return high if upto == below and high != math.inf else low


def fraction_below(threshold: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Share of observations <= threshold, interpolated inside its bucket (the inverse of quantile)."""
    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if threshold <= le:
            if le == math.inf:
                return prev_count / total
            share = prev_count + (count - prev_count) * (threshold - prev_le) / (le - prev_le)
            return min(1.0, max(0.0, share / total))
        prev_le, prev_count = le, count
    return 1.0


def fraction_bounds(threshold: float, buckets: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """What the buckets can tell of the share <= threshold: at least the count up to the edge below it, at most
    the count up to the edge above it.

    vLLM's per-request ITL buckets have edges at 25 and 50 ms; against a 40 ms objective, requests all between
    25 and 50 ms interpolate to 60% within it, while the buckets allow anything from 0% to 100%.
    """
    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    low = high = 0.0
    for le, count in buckets:
        if le <= threshold:
            low = count
        if le >= threshold:
            high = count
            break
    return min(1.0, max(0.0, low / total)), min(1.0, max(0.0, high / total))


# Two points stand for each bucket's share, at the nodes of the two-point Gauss-Legendre rule on its interval
# (centre -/+ width / (2 sqrt 3)): a spread uniform within the bucket then has its first three moments exact,
# where the midpoint alone loses the bucket's own variance. On the Azure chat trace in vLLM's buckets the prefill
# cv2 of 70B on an H100 reads 0.82 (midpoints 0.72, every prompt 0.94); on the Mooncake trace, Qwen2.5-72B on an
# H200, 3.9 (3.5, 4.7).
_GAUSS = 1.0 / (2.0 * math.sqrt(3.0))


def length_points(buckets: Sequence[tuple[float, float]] | None) -> tuple[tuple[float, float], ...]:
    """A length histogram's cumulative bucket rates as (tokens, rate) points (perfmodel.prefill_spread's input).

    Buckets (100: 2, 500: 6, +Inf: 6) give 4 requests/s between 100 and 500 tokens: (184.5, 2), (415.5, 2), and 2
    up to 100 tokens: (21.1, 1), (78.9, 1). Observations past the last finite bound sit at it (the least they can
    be: vLLM's buckets reach the model's context length, so there are none); a histogram whose counts fall is
    no distribution and gives nothing.
    """
    if not buckets or buckets[-1][0] != math.inf:
        return ()
    out: list[tuple[float, float]] = []
    low, below = 0.0, 0.0
    for le, count in buckets:
        share = count - below
        if share < 0:
            return ()
        if share > 0:
            if le == math.inf:
                out.append((low, share))
            else:
                centre, half = (low + le) / 2.0, (le - low) * _GAUSS
                out += [(centre - half, share / 2.0), (centre + half, share / 2.0)]
        low, below = (le if le != math.inf else low), count
    return tuple(out)


def rate_of(buckets: Sequence[tuple[float, float]] | None) -> float | None:
    """Observations per second: the +Inf bucket's rate."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    return buckets[-1][1]


def _per_request(raw: RawPod, length: metrics.Signal, tokens: float | None, counted: float | None) -> float | None:
    """Mean tokens per request: the per-request length histogram's _sum over its _count where the engine has one,
    else the token counter over the requests it counted.

    The prompt counter moves at prefill, so it is divided by the TTFT count (one per request, at its first token):
    a burst's first minute of 200-token prompts then reads about 200, not 7,300 tokens over the few requests that
    finished. The generation counter has no such partner; over the finished requests it reads right only at a
    steady load.
    """
    total, count = raw.sums.get(length), raw.counts.get(length)
    if total is not None and count:
        return total / count
    return tokens / counted if tokens is not None and counted else None


def pod_metrics(raw: RawPod, *, percentile: float, ttft_slo: float, itl_slo: float) -> observation.PodMetrics:
    """The signals decide() reads, at the SLO's percentile; attainment assumes TTFT and ITL independent."""
    ttft = raw.buckets.get(metrics.Signal.TTFT)
    itl = raw.buckets.get(metrics.Signal.ITL)
    e2e = raw.buckets.get(metrics.Signal.E2E)
    q = percentile / 100.0

    def mean(signal: metrics.Signal, buckets: Sequence[tuple[float, float]] | None) -> float | None:
        total, count = raw.sums.get(signal), rate_of(buckets)
        return total / count if total is not None and count else None

    # Requests are counted as they start (their first token), not as they end: a decode-heavy request (1,500
    # tokens at 25 ms) ends ~40 s after it began, so the rate of ends trailed a rising load by that much and the
    # fleet with it (5 replicas planned for 30 req/s while 33 arrived). Engines without TTFT count ends.
    finished = rate_of(e2e) if e2e else None
    at_start = bool(ttft)
    requests = rate_of(ttft) if at_start else finished
    ok_ttft = fraction_below(ttft_slo, ttft) if ttft else None
    tpot = raw.buckets.get(metrics.Signal.TPOT)
    # The ITL objective is a per-request mean (genai-perf's ITL); per-token ITL only where nothing better exists.
    per_request = tpot or itl
    ok_itl = fraction_below(itl_slo, per_request) if per_request else None
    attainment = ok_ttft * ok_itl if ok_ttft is not None and ok_itl is not None else (ok_ttft or ok_itl)
    # The same product at the bucket edges either side of each objective: how far the buckets let it move.
    edges = [b for b in (fraction_bounds(ttft_slo, ttft) if ttft else None,
                         fraction_bounds(itl_slo, per_request) if per_request else None) if b is not None]
    low = math.prod(lo for lo, _ in edges) if edges else None
    high = math.prod(hi for _, hi in edges) if edges else None
    if raw.rejected & {metrics.Signal.TTFT, metrics.Signal.TPOT, metrics.Signal.ITL}:
        # A latency histogram dropped as garbage leaves no measurement of the SLO, not the other half of one: the
        # ITL alone reading 100% would report the SLO met for a pod whose TTFT histogram was forged.
        attainment = low = high = None
    # From the histogram decide() reads the percentile from: per-request when it has observations, else per-token
    # (a window in which no request finished has TPOT series but no TPOT percentile).
    tpot_p = quantile(q, tpot) if tpot else None
    itl_floor = quantile_floor(q, tpot) if tpot_p is not None and tpot else (
        quantile_floor(q, itl) if itl else None)
    v = raw.values
    prompt, generated = v.get(metrics.Signal.PROMPT_TOKENS), v.get(metrics.Signal.GENERATION_TOKENS)
    hit_rate = v.get(metrics.Signal.PREFIX_HIT_RATE)
    queries_rate, hits_rate = v.get(metrics.Signal.PREFIX_QUERIES), v.get(metrics.Signal.PREFIX_HITS)
    if queries_rate and hits_rate is not None:
        hit_rate = min(1.0, hits_rate / queries_rate)
    return observation.PodMetrics(
        ttft_p=quantile(q, ttft) if ttft else None,
        itl_p=quantile(q, itl) if itl else None,
        tpot_p=tpot_p,
        itl_floor=itl_floor,
        ttft_mean=mean(metrics.Signal.TTFT, ttft),
        itl_mean=mean(metrics.Signal.ITL, itl),
        running=v.get(metrics.Signal.RUNNING),
        busy=raw.busy.get(metrics.Signal.RUNNING),
        waiting=v.get(metrics.Signal.WAITING),
        kv_usage=v.get(metrics.Signal.KV_USAGE),
        preemptions_per_s=v.get(metrics.Signal.PREEMPTIONS),
        prompt_tokens_per_s=prompt,
        output_tokens_per_s=generated,
        requests_per_s=requests,
        prefix_hit_rate=hit_rate,
        mbu=v.get(metrics.Signal.DRAM_ACTIVE),
        slo_attainment=attainment,
        slo_attainment_low=low,
        slo_attainment_high=high,
        mean_input_tokens=_per_request(raw, metrics.Signal.PROMPT_LENGTH, prompt, rate_of(ttft)),
        prompt_lengths=length_points(raw.buckets.get(metrics.Signal.PROMPT_LENGTH)),
        mean_output_tokens=_per_request(raw, metrics.Signal.GENERATION_LENGTH, generated, finished or requests),
        counted_at_start=at_start,
        in_flight=(raw.now[metrics.Signal.RUNNING] + raw.now.get(metrics.Signal.WAITING, 0.0)
                   if metrics.Signal.RUNNING in raw.now else None),
    )


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


def connect(url: str, *, token: str | None = None, ca_file: str | None = None, timeout: float = 5.0) -> Query:
    """A Query over prometheus-api-client; its own retries are off (tenacity bounds them here)."""
    headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
    client = prometheus_connect.PrometheusConnect(
        url=url, headers=headers, disable_ssl=False, retry=urllib3_retry.Retry(total=0), timeout=math.ceil(timeout),
    )
    if ca_file:
        client._session.verify = ca_file

    def query(promql: str, *, timeout: float) -> list[dict[str, Any]]:
        try:
            # The client's hints say int seconds; round up so a short budget never becomes 0 (no timeout).
            result = client.custom_query(promql, params={"timeout": f"{max(100, int(timeout * 1000))}ms"},
                                         timeout=max(1, math.ceil(timeout)))
        except prom_exceptions.PrometheusApiClientException as e:
            raise PrometheusError(str(e)[:300]) from None
        except ValueError as e:  # a body that is not JSON (requests' JSONDecodeError is also a ValueError)
            raise PrometheusError(f"malformed answer: {e}") from None
        except requests.RequestException as e:
            raise PrometheusError(_describe(e)) from None
        if not isinstance(result, list):
            raise PrometheusError(f"malformed answer: result is {type(result).__name__}")
        return result

    return query


def _describe(e: requests.RequestException) -> str:
    """A request failure without the URL (the query is kilobytes long and says nothing the signal name doesn't).

    ConnectionError(MaxRetryError(HTTPConnectionPool(host=..., port=...): Max retries exceeded with url:
    /api/v1/query?query=...(Caused by ReadTimeoutError(...: Read timed out. (read timeout=1))))) becomes
    "ConnectionError: ReadTimeoutError: Read timed out. (read timeout=1)".
    """
    reason = getattr(e.args[0], "reason", None) if e.args else None
    detail = str(reason if reason is not None else e)
    if reason is not None:
        detail = f"{type(reason).__name__}: {detail}"
    detail = re.sub(r"HTTPS?ConnectionPool\([^)]*\):\s*", "", detail)
    detail = re.sub(r"<urllib3[^>]*>:\s*", "", detail)
    detail = re.sub(r"\s*with url: \S+", "", detail)
    return f"{type(e).__name__}: {detail[:200]}"


@dataclasses.dataclass
class Source:
    """Reads a Snapshot once per cycle, however many resources ask for it (one query per signal)."""

    query: Query
    dialects: Sequence[metrics.Dialect] = dataclasses.field(
        default_factory=lambda: (*registry.dialects(), metrics.DCGM))
    window: float = 60.0
    budget: float = 10.0  # seconds one cycle may spend on Prometheus, retries included
    attempts: int = 2
    jobs: Jobs = Jobs()
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    queries_sent: int = 0
    errors: int = 0
    _cached: Snapshot | None = None
    _cached_at: float = -math.inf
    _refresh: asyncio.Task[Snapshot] | None = None

    async def snapshot(self, *, max_age: float) -> Snapshot:
        """The latest snapshot if younger than max_age, else a new one (concurrent callers share it).

        A snapshot past max_age but within one budget of it is still served while the next one is fetched:
        it holds rates over the whole window (60 s), and waiting for the queries would stall every resource's
        cycle behind them (at 1,000 pods on a busy machine, 1-2 s of every 5 s).
        """
        age = self.clock() - self._cached_at
        if self._cached is not None and age < max_age:
            return self._cached
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._renew())
        if self._cached is not None and age < max_age + self.budget:
            return self._cached
        # shield: one caller cancelled (its resource deleted) must not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    async def _renew(self) -> Snapshot:
        snap = await self._take()
        self._cached, self._cached_at = snap, self.clock()
        return snap

    async def _take(self) -> Snapshot:
        started = self.clock()
        deadline = started + self.budget
        plan = queries(self.dialects, self.window, jobs=self.jobs)
        fold = Fold()
        failed: dict[str, str] = {}

        def ask(key: tuple[str, metrics.Signal], promql: str, remaining: float) -> None:
            # Folded in the thread that fetched it: the decoded answer is gone before the next one is read, and
            # the event loop that runs every resource's cycle never spends the 0.2 s one big answer takes.
            fold.add(key[0], key[1], self.query(promql, timeout=remaining))

        async def run(key: tuple[str, metrics.Signal], promql: str) -> None:
            retrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.budget),
                wait=tenacity.wait_exponential(multiplier=0.2, max=1.0),
                retry=tenacity.retry_if_exception_type(PrometheusError),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        remaining = deadline - self.clock()
                        if remaining <= 0:
                            raise PrometheusError(f"no time left in the {self.budget:g} s budget")
                        self.queries_sent += 1
                        await asyncio.wait_for(asyncio.to_thread(ask, key, promql, remaining),
                                               timeout=remaining + 0.5)
            except (PrometheusError, TimeoutError) as e:
                self.errors += 1
                failed[f"{key[0]}:{key[1].value}"] = str(e) or type(e).__name__

        sent_before = self.queries_sent
        await asyncio.gather(*(run(k, q) for k, q in plan.items()))
        taken = self.wall()
        if failed:
            # Any missing signal makes the whole picture unreliable: decisions freeze rather than act on half.
            # The error shown is the first failed signal's in name order, not whichever failed first: the
            # condition's message then stays put while the failure lasts (a message that changed with the race
            # was a status write per resource per snapshot: 69 a second at 1,000 resources).
            signals = tuple(sorted(failed))
            return Snapshot(pods={}, taken_at=taken, ok=False, error=failed[signals[0]],
                            queries=self.queries_sent - sent_before, failed_signals=signals)
        return Snapshot(pods=await asyncio.to_thread(fold.pods), taken_at=taken,
                        queries=self.queries_sent - sent_before)
