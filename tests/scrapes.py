"""Test: a simulated engine under load, scraped in a dialect, and what Prometheus would answer the operator's queries
about those scrapes (shared by test_dialects.py and test_sixth_engine.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import parser

from infertune import catalog, models, perfmodel
from infertune.runtimes import metrics
from infertune.sim import engine, exposition, workload

NAMESPACE, POD = "prod", "llm-0"
IDENTITY = exposition.PodIdentity(
    model_name="meta-llama/Llama-3.3-70B-Instruct", pod=POD, namespace=NAMESPACE, gpus=2,
    gpu_model=exposition.gpu_model_name("NVIDIA-H100-80GB-HBM3"),
)




@dataclasses.dataclass(frozen=True)
class Run:
    """Samples of one engine under load, every `step` seconds over the operator's window."""

    samples: tuple[exposition.Sample, ...]
    replica: perfmodel.Replica

    @property
    def window(self) -> float:
        return self.samples[-1].time - self.samples[0].time


def simulate(*, rate: float, isl: float, osl: float, hit_rate: float, warmup: float, window: float, step: float,
             seed: int, max_num_seqs: int | None = None) -> Run:
    # Llama-3.3-70B FP8 on 2 x H100 with FP8 KV, the calibration setup (docs/twin.md).
    replica = perfmodel.Replica(gpu=catalog.gpu("h100-sxm-80gb"), model=catalog.model("llama-3.3-70b"), gpus=2,
                                weights=models.Precision.FP8, kv_dtype=models.KvDtype.FP8,
                                prefix_cache_hit_rate=hit_rate, max_num_seqs=max_num_seqs)
    eng = engine.SimEngine(replica)
    arrivals = workload.poisson(rate, duration=warmup + window + step, isl=workload.LogNormal(isl, 0.5),
                                osl=workload.LogNormal(osl, 0.5), seed=seed)
    samples: list[exposition.Sample] = []
    pending = iter(enumerate(arrivals))
    nxt = next(pending, None)
    for k in range(round(window / step) + 1):
        t = warmup + k * step
        while nxt is not None and nxt[1].time <= t:
            i, a = nxt
            eng.submit(engine.Request(i, a.time, a.prompt_tokens, a.output_tokens), a.time)
            nxt = next(pending, None)
        samples.append(exposition.sample(eng, now=t))
    return Run(tuple(samples), replica)


def scrape(run: Run, d: exposition.Dialect) -> list[dict[str, parser.Metric]]:
    """The text each sample renders in this dialect, parsed back as a scraper would."""
    out = []
    previous = None
    for s in run.samples:
        text = exposition.render(s, IDENTITY, dialects=[d], previous=previous)
        out.append({f.name: f for f in parser.text_string_to_metric_families(text)})
        previous = s
    return out


# Flattened samples of one scrape: (sample name, labels) -> value.
Flat = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def flat(families: Mapping[str, parser.Metric]) -> Flat:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}


def _vector(values: Mapping[tuple[str, ...], float], label: str | None = None) -> list[dict[str, Any]]:
    out = []
    for key, v in values.items():
        metric = {"namespace": NAMESPACE, "pod": POD}
        if label is not None:
            metric[label] = key[0]
        out.append({"metric": metric, "value": [0, repr(v)]})
    return out


# The adapter sums requests over a pod's series and averages ratios (prometheus._AGGREGATE).
_SUMMED = {metrics.Signal.RUNNING, metrics.Signal.WAITING}


def promql(scrapes: Sequence[Flat], key: tuple[str, metrics.Signal], *, dt: float,
           dialects: Sequence[metrics.Dialect]) -> list[dict[str, Any]]:
    """What Prometheus would answer to the adapter's query (part, signal) over these scrapes: rate() as the
    change over the window, avg_over_time() as the mean of the scrapes, `or` as the first name present."""
    part, signal = key
    first, last = scrapes[0], scrapes[-1]
    for d in dialects:
        source = d.sources.get(signal)
        if source is None:
            continue
        kind = source.kind or metrics.KINDS[signal]
        for name in source.names:
            if part in ("buckets", "sum", "count") and kind is metrics.Kind.HISTOGRAM:
                suffix = {"buckets": "_bucket", "sum": "_sum", "count": "_count"}[part]
                by: dict[tuple[str, ...], float] = {}
                for (n, labels), v in last.items():
                    if n == name + suffix:
                        le = dict(labels).get("le", "")
                        key = (le,) if part == "buckets" else ()
                        by[key] = by.get(key, 0.0) + (v - first.get((n, labels), 0.0)) / dt
                if by:
                    return _vector(by, "le" if part == "buckets" else None)
            elif part == "value" and kind in (metrics.Kind.COUNTER, metrics.Kind.HISTOGRAM_SUM):
                n = name + "_sum" if kind is metrics.Kind.HISTOGRAM_SUM else name
                deltas = [v - first.get((k, labels), 0.0) for (k, labels), v in last.items() if k == n]
                if deltas:
                    return _vector({(): sum(deltas) / dt})
            elif part in ("value", "now") and kind is metrics.Kind.GAUGE:
                series = sorted({labels for s in scrapes for (k, labels) in s if k == name})
                if not series:
                    continue
                if part == "now":
                    per = [last.get((name, labels), 0.0) for labels in series]
                    return _vector({(): sum(per)})
                per = [sum(s.get((name, labels), 0.0) for s in scrapes) / len(scrapes) for labels in series]
                total = sum(per) if signal in _SUMMED else sum(per) / len(per)
                return _vector({(): total})
    return []
