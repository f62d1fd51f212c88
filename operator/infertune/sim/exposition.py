"""Twin: Prometheus text exposition of a simulated pod, one dialect table per engine (vLLM) plus DCGM."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Union

from prometheus_client import core, exposition, registry

from infertune.sim import engine as sim_engine
from infertune.sim import histogram

# ---------------------------------------------------------------------------------------------- signals
# Internal signal names: what the twin measures, independent of any engine's metric names.

TTFT = "ttft_seconds"
ITL = "inter_token_latency_seconds"  # one observation per output token after the first
TPOT = "request_time_per_output_token_seconds"  # one per request: decode time / (tokens - 1)
E2E = "e2e_seconds"
QUEUE = "queue_seconds"
PREFILL = "prefill_seconds"
DECODE = "decode_seconds"
INFERENCE = "inference_seconds"
PROMPT_LEN = "request_prompt_tokens"
GENERATION_LEN = "request_generation_tokens"
RUNNING = "requests_running"
WAITING = "requests_waiting"
KV_USAGE = "kv_cache_usage"  # 0-1
PREFIX_QUERIES = "prefix_cache_queries"  # tokens
PREFIX_HITS = "prefix_cache_hits"  # tokens
PROMPT_TOKENS = "prompt_tokens"
GENERATION_TOKENS = "generation_tokens"
PREEMPTIONS = "preemptions"
REQUEST_SUCCESS = "request_success"  # by finished reason
DRAM_ACTIVE = "dram_active"  # 0-1, per GPU
GPU_UTIL = "gpu_busy"  # 0-1, per GPU


class Kind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclasses.dataclass(frozen=True, slots=True)
class MetricSpec:
    """How one signal appears in a dialect. Counters are named without `_total` (the wire adds it)."""

    name: str
    kind: Kind
    help: str
    scale: float = 1.0  # wire value = internal value x scale (0-1 -> percent: 100)
    buckets: tuple[float, ...] | None = None  # histograms; None with token counts: 1-2-5 up to max_model_len
    label: str | None = None  # the label of a signal with a dimension, e.g. finished_reason


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    """An exporter's metric names, types, labels and buckets. Signals it lacks are simply absent.

    `labels` maps each label name to the PodIdentity field that gives its value; per_gpu dialects emit
    one series per GPU (with the identity's gpu fields filled per index).
    """

    name: str
    path: str
    labels: tuple[tuple[str, str], ...]
    metrics: Mapping[str, MetricSpec]
    per_gpu: bool = False


# vLLM V1 (vllm/v1/metrics/loggers.py, reference §B): labels model_name and engine (the engine index).
_VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
_VLLM_TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
_VLLM_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)

VLLM = Dialect(
    name="vllm",
    path="/metrics",
    labels=(("model_name", "model_name"), ("engine", "engine")),
    metrics={
        TTFT: MetricSpec("vllm:time_to_first_token_seconds", Kind.HISTOGRAM, "Time to first token, seconds.",
                         buckets=_VLLM_TTFT_BUCKETS),
        ITL: MetricSpec("vllm:inter_token_latency_seconds", Kind.HISTOGRAM, "Inter-token latency, seconds.",
                        buckets=_VLLM_TPOT_BUCKETS),
        TPOT: MetricSpec("vllm:request_time_per_output_token_seconds", Kind.HISTOGRAM,
                         "Per-request mean time per output token, seconds.", buckets=_VLLM_TPOT_BUCKETS),
        E2E: MetricSpec("vllm:e2e_request_latency_seconds", Kind.HISTOGRAM, "End-to-end request latency, seconds.",
                        buckets=_VLLM_LATENCY_BUCKETS),
        QUEUE: MetricSpec("vllm:request_queue_time_seconds", Kind.HISTOGRAM, "Time waiting before admission, seconds.",
                          buckets=_VLLM_LATENCY_BUCKETS),
        PREFILL: MetricSpec("vllm:request_prefill_time_seconds", Kind.HISTOGRAM, "Prefill phase time, seconds.",
                            buckets=_VLLM_LATENCY_BUCKETS),
        DECODE: MetricSpec("vllm:request_decode_time_seconds", Kind.HISTOGRAM, "Decode phase time, seconds.",
                           buckets=_VLLM_LATENCY_BUCKETS),
        INFERENCE: MetricSpec("vllm:request_inference_time_seconds", Kind.HISTOGRAM, "Running phase time, seconds.",
                              buckets=_VLLM_LATENCY_BUCKETS),
        PROMPT_LEN: MetricSpec("vllm:request_prompt_tokens", Kind.HISTOGRAM, "Prompt tokens per request."),
        GENERATION_LEN: MetricSpec("vllm:request_generation_tokens", Kind.HISTOGRAM, "Output tokens per request."),
        RUNNING: MetricSpec("vllm:num_requests_running", Kind.GAUGE, "Requests in the running batch."),
        WAITING: MetricSpec("vllm:num_requests_waiting", Kind.GAUGE, "Requests waiting for admission."),
        KV_USAGE: MetricSpec("vllm:kv_cache_usage_perc", Kind.GAUGE, "KV cache usage, 1 means 100 percent."),
        PREFIX_QUERIES: MetricSpec("vllm:prefix_cache_queries", Kind.COUNTER, "Prefix cache queries, in tokens."),
        PREFIX_HITS: MetricSpec("vllm:prefix_cache_hits", Kind.COUNTER, "Prefix cache hits, in tokens."),
        PROMPT_TOKENS: MetricSpec("vllm:prompt_tokens", Kind.COUNTER, "Prefill tokens processed."),
        GENERATION_TOKENS: MetricSpec("vllm:generation_tokens", Kind.COUNTER, "Generation tokens processed."),
        PREEMPTIONS: MetricSpec("vllm:num_preemptions", Kind.COUNTER, "Preemptions by the scheduler."),
        REQUEST_SUCCESS: MetricSpec("vllm:request_success", Kind.COUNTER, "Finished requests by reason.",
                                    label="finished_reason"),
    },
)

# NVIDIA dcgm-exporter in Kubernetes mode (reference §C): per-GPU labels plus the pod that holds the GPU.
DCGM = Dialect(
    name="dcgm",
    path="/metrics",
    labels=(
        ("gpu", "gpu"), ("UUID", "uuid"), ("device", "device"), ("modelName", "gpu_model"), ("Hostname", "node"),
        ("container", "container"), ("namespace", "namespace"), ("pod", "pod"),
    ),
    metrics={
        DRAM_ACTIVE: MetricSpec("DCGM_FI_PROF_DRAM_ACTIVE", Kind.GAUGE,
                                "Ratio of cycles the device memory interface is active (0-1)."),
        GPU_UTIL: MetricSpec("DCGM_FI_DEV_GPU_UTIL", Kind.GAUGE, "GPU utilization (in %).", scale=100.0),
    },
    per_gpu=True,
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (VLLM, DCGM)}


def dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise KeyError(f"unknown metrics dialect {name!r}; known: {', '.join(sorted(DIALECTS))}") from None


# ---------------------------------------------------------------------------------------------- samples

Value = Union[float, histogram.LogHistogram, Mapping[str, float]]  # noqa: UP007 - a runtime alias


@dataclasses.dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who the series belong to; DCGM's gpu fields are filled per GPU index."""

    model_name: str
    pod: str
    namespace: str = "default"
    container: str = "engine"
    node: str = "node-0"
    engine: str = "0"
    gpu_model: str = "NVIDIA H100 80GB HBM3"
    gpus: int = 1

    def fields(self, gpu: int | None = None) -> dict[str, str]:
        out = {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if gpu is not None:
            digest = hashlib.sha1(f"{self.namespace}/{self.pod}/{gpu}".encode()).hexdigest()
            out["gpu"] = str(gpu)
            out["device"] = f"nvidia{gpu}"
            out["uuid"] = f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """A pod's signals at `time`: cumulative counters and histograms, gauges, and the raw totals that
    rate-like gauges (DRAM active, GPU busy) are computed from against the previous sample."""

    time: float
    values: Mapping[str, Value]
    bytes_per_gpu: float
    busy_s: float
    peak_bytes_per_s: float
    max_model_len: int


def sample(eng: sim_engine.SimEngine, *, now: float) -> Sample:
    """Read an engine's signals; advance it to `now` first so that they are current."""
    eng.advance(now)
    s = eng.stats
    values: dict[str, Value] = {
        TTFT: s.ttft.copy(), ITL: s.itl.copy(), TPOT: s.tpot.copy(), E2E: s.e2e.copy(), QUEUE: s.queue.copy(),
        PREFILL: s.prefill.copy(), DECODE: s.decode.copy(), INFERENCE: s.inference.copy(),
        PROMPT_LEN: s.prompt_len.copy(), GENERATION_LEN: s.generation_len.copy(),
        RUNNING: float(eng.num_running), WAITING: float(eng.num_waiting), KV_USAGE: eng.kv_usage,
        PREFIX_QUERIES: float(s.prefix_queries), PREFIX_HITS: float(s.prefix_hits),
        PROMPT_TOKENS: float(s.prompt_tokens), GENERATION_TOKENS: float(s.generation_tokens),
        PREEMPTIONS: float(s.preemptions),
        REQUEST_SUCCESS: {"stop": float(s.finished), "length": 0.0, "abort": float(s.aborted + s.cancelled)},
    }
    return Sample(
        time=now, values=values, bytes_per_gpu=s.bytes_per_gpu, busy_s=s.busy_s,
        peak_bytes_per_s=eng.c.peak_bytes_per_s, max_model_len=eng.replica.model.max_context_tokens,
    )


def _rates(current: Sample, previous: Sample | None) -> dict[str, float]:
    """DRAM active = bytes moved / (elapsed x peak bandwidth); GPU busy = busy time / elapsed."""
    if previous is None or current.time <= previous.time:
        base_t, base_bytes, base_busy = 0.0, 0.0, 0.0
    else:
        base_t, base_bytes, base_busy = previous.time, previous.bytes_per_gpu, previous.busy_s
    dt = current.time - base_t
    if dt <= 0:
        return {DRAM_ACTIVE: 0.0, GPU_UTIL: 0.0}
    return {
        DRAM_ACTIVE: min(1.0, max(0.0, (current.bytes_per_gpu - base_bytes) / (dt * current.peak_bytes_per_s))),
        GPU_UTIL: min(1.0, max(0.0, (current.busy_s - base_busy) / dt)),
    }


def buckets_125(limit: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `limit` (vLLM's build_1_2_5_buckets)."""
    out: list[float] = []
    exponent = 0
    while True:
        for m in (1, 2, 5):
            value = m * 10**exponent
            if value > limit:
                return tuple(out)
            out.append(float(value))
        exponent += 1


# ---------------------------------------------------------------------------------------------- render


class _Collector(registry.Collector):
    def __init__(self, metrics: Sequence[core.Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[core.Metric]:
        return self._metrics


def families(
    d: Dialect, current: Sample, identity: PodIdentity, *, previous: Sample | None = None
) -> list[core.Metric]:
    """prometheus_client metric families for one dialect."""
    values: dict[str, Value] = dict(current.values)
    values.update(_rates(current, previous))
    gpus = range(identity.gpus) if d.per_gpu else (None,)
    label_sets = [identity.fields(g) for g in gpus]
    names = [label for label, _ in d.labels]
    out: list[core.Metric] = []
    for signal, spec in d.metrics.items():
        value = values.get(signal)
        if value is None:
            continue
        extra = [spec.label] if spec.label else []
        if spec.kind is Kind.HISTOGRAM:
            if not isinstance(value, histogram.LogHistogram):
                raise TypeError(f"signal {signal} is not a histogram")
            hist = core.HistogramMetricFamily(spec.name, spec.help, labels=names)
            bounds = spec.buckets or buckets_125(current.max_model_len)
            counts = value.cumulative(bounds)
            buckets = [(_le(b), c) for b, c in zip(bounds, counts, strict=True)]
            buckets.append(("+Inf", value.count))
            for fields in label_sets:
                hist.add_metric([fields[source] for _, source in d.labels], buckets, sum_value=value.sum * spec.scale)
            out.append(hist)
            continue
        family: core.CounterMetricFamily | core.GaugeMetricFamily
        if spec.kind is Kind.COUNTER:
            family = core.CounterMetricFamily(spec.name, spec.help, labels=names + extra)
        else:
            family = core.GaugeMetricFamily(spec.name, spec.help, labels=names + extra)
        for fields in label_sets:
            labels = [fields[source] for _, source in d.labels]
            if isinstance(value, Mapping):
                for key, v in value.items():
                    family.add_metric([*labels, key], v * spec.scale)
            elif isinstance(value, histogram.LogHistogram):
                raise TypeError(f"signal {signal} is a histogram, not a {spec.kind}")
            else:
                family.add_metric(labels, value * spec.scale)
        out.append(family)
    return out


def _le(bound: float) -> str:
    return repr(float(bound)) if math.isfinite(bound) else "+Inf"


def render(
    current: Sample,
    identity: PodIdentity,
    *,
    dialects: Sequence[Dialect] = (VLLM, DCGM),
    previous: Sample | None = None,
) -> str:
    """The text exposition (format 0.0.4) of a pod's signals in the given dialects."""
    metrics: list[core.Metric] = []
    for d in dialects:
        metrics.extend(families(d, current, identity, previous=previous))
    reg = registry.CollectorRegistry(auto_describe=False)
    reg.register(_Collector(metrics))
    return exposition.generate_latest(reg).decode()


class PodExporter:
    """Renders one simulated pod on every scrape, keeping the previous sample for rate-like gauges."""

    def __init__(self, eng: sim_engine.SimEngine, identity: PodIdentity, *, dialects: Sequence[Dialect] = (VLLM, DCGM)):
        self.engine = eng
        self.identity = identity
        self.dialects = tuple(dialects)
        self._previous: Sample | None = None

    def scrape(self, now: float) -> str:
        current = sample(self.engine, now=now)
        text = render(current, self.identity, dialects=self.dialects, previous=self._previous)
        self._previous = current
        return text


def gpu_model_name(product_label: str | None) -> str:
    """DCGM's modelName from the node label: NVIDIA-H100-80GB-HBM3 -> NVIDIA H100 80GB HBM3."""
    return (product_label or "NVIDIA GPU").replace("-", " ")
