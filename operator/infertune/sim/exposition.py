"""Twin: Prometheus text exposition of a simulated pod, in its engine's dialect (Engine.exposition) plus DCGM."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Union

from prometheus_client import core, exposition, registry

from infertune import runtimes
from infertune.runtimes import metrics as op
from infertune.runtimes import registry as engines
from infertune.runtimes import twin
from infertune.sim import engine as sim_engine
from infertune.sim import histogram

# ---------------------------------------------------------------------------------------------- signals
# Internal signal names, the metric spec and each engine's exposition are pure data in runtimes/twin.py and the
# engine modules; they are named here too for the twin's readers.

TTFT, ITL, TPOT, E2E, QUEUE = twin.TTFT, twin.ITL, twin.TPOT, twin.E2E, twin.QUEUE
PREFILL, DECODE, INFERENCE = twin.PREFILL, twin.DECODE, twin.INFERENCE
PROMPT_LEN, PROMPT_LEN_STARTED, GENERATION_LEN = twin.PROMPT_LEN, twin.PROMPT_LEN_STARTED, twin.GENERATION_LEN
RUNNING, WAITING, PAUSED, MAX_RUNNING = twin.RUNNING, twin.WAITING, twin.PAUSED, twin.MAX_RUNNING
KV_USAGE, KV_TOKENS_USED, KV_TOKENS = twin.KV_USAGE, twin.KV_TOKENS_USED, twin.KV_TOKENS
KV_BLOCKS_USED, KV_BLOCKS = twin.KV_BLOCKS_USED, twin.KV_BLOCKS
PREFIX_QUERIES, PREFIX_HITS, PREFIX_HIT_RATE = twin.PREFIX_QUERIES, twin.PREFIX_HITS, twin.PREFIX_HIT_RATE
PROMPT_TOKENS, GENERATION_TOKENS, PREEMPTIONS = twin.PROMPT_TOKENS, twin.GENERATION_TOKENS, twin.PREEMPTIONS
REQUEST_SUCCESS, DRAM_ACTIVE, GPU_UTIL = twin.REQUEST_SUCCESS, twin.DRAM_ACTIVE, twin.GPU_UTIL

Kind = twin.Kind
MetricSpec = twin.MetricSpec
Labels = twin.Labels


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    """An exporter's metric names, types, labels, buckets and path. Signals it lacks are simply absent.

    `labels` maps each label name to the PodIdentity field that gives its value (or a constant written
    "=value"); per_gpu dialects emit one series per GPU (with the identity's gpu fields filled per index).
    `enable_flag`: the engine exports nothing unless its command line carries this flag.
    """

    name: str
    path: str
    labels: Labels
    metrics: Mapping[str, MetricSpec]
    per_gpu: bool = False
    enable_flag: str | None = None


def of(engine: runtimes.Engine) -> Dialect:
    """What a pod of this engine serves: its exposition, under its variant's name at its dialect's path."""
    e = engine.exposition
    return Dialect(name=engine.variant, path=engine.metrics_path, labels=e.labels, metrics=e.metrics,
                   enable_flag=e.enable_flag)


# NVIDIA dcgm-exporter in Kubernetes mode (etc/default-counters.csv, --kubernetes): per-GPU labels plus the pod
# that holds the GPU.
DCGM = Dialect(
    name=op.DCGM.name,
    path=op.DCGM.path,
    labels=(
        ("gpu", "gpu"), ("UUID", "uuid"), ("device", "device"), ("modelName", "gpu_model"), ("Hostname", "node"),
        ("container", "container"), ("namespace", "namespace"), ("pod", "pod"),
    ),
    metrics={
        DRAM_ACTIVE: MetricSpec(twin.name(op.DCGM, op.Signal.DRAM_ACTIVE), Kind.GAUGE,
                                "Ratio of cycles the device memory interface is active (0-1)."),
        GPU_UTIL: MetricSpec("DCGM_FI_DEV_GPU_UTIL", Kind.GAUGE, "GPU utilization (in %).", scale=100.0),
    },
    per_gpu=True,
)


def dialect(name: str) -> Dialect:
    """The twin's dialect of an engine variant (any registered engine), or DCGM's."""
    if name == DCGM.name:
        return DCGM
    try:
        return of(engines.by_variant(name))
    except KeyError:
        known = sorted([*(e.variant for e in engines.engines()), DCGM.name])
        raise KeyError(f"unknown metrics dialect {name!r}; known: {', '.join(known)}") from None


# The shipped engines' dialects, by name, for the twin's readers and tests.
VLLM, SGLANG, TRTLLM, TGI = dialect("vllm"), dialect("sglang"), dialect("trtllm"), dialect("tgi")
NIM_1, NIM_2_VLLM, NIM_2_SGLANG = dialect("nim-1"), dialect("nim-2-vllm"), dialect("nim-2-sglang")


def pod_dialects(variant: str, argv: Sequence[str], *, env: Mapping[str, str]) -> tuple[Dialect, ...]:
    """What a pod of this engine variant exports at its metrics path, given its command line.

    An engine with an enable flag (SGLang's --enable-metrics) exports no engine series without it, in argv or in
    the arguments its environment passes on (NIM 2.x's NIM_PASSTHROUGH_ARGS); DCGM's GPU series come from the
    node's exporter either way.
    """
    engine = engines.by_variant(variant)
    d = of(engine)
    if d.enable_flag is not None and not runtimes.has_flag(engine.arguments(argv, env), d.enable_flag):
        return (DCGM,)
    return (d, DCGM)


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
    rate-like gauges (DRAM active, GPU busy, prefix hit rate) are computed from against the previous sample."""

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
    block = eng.c.block_size
    values: dict[str, Value] = {
        TTFT: s.ttft.copy(), ITL: s.itl.copy(), TPOT: s.tpot.copy(), E2E: s.e2e.copy(), QUEUE: s.queue.copy(),
        PREFILL: s.prefill.copy(), DECODE: s.decode.copy(), INFERENCE: s.inference.copy(),
        PROMPT_LEN: s.prompt_len.copy(), PROMPT_LEN_STARTED: s.prompt_len_started.copy(),
        GENERATION_LEN: s.generation_len.copy(),
        RUNNING: float(eng.num_running), WAITING: float(eng.num_waiting),
        PAUSED: float(sum(1 for r in eng.waiting if r.preemptions > 0)),
        MAX_RUNNING: float(eng.replica.seq_limit), KV_USAGE: eng.kv_usage,
        KV_BLOCKS_USED: float(eng.kv_blocks_used), KV_BLOCKS: float(eng.c.kv_blocks),
        KV_TOKENS_USED: float(eng.kv_blocks_used * block), KV_TOKENS: float(eng.c.kv_blocks * block),
        PREFIX_QUERIES: float(s.prefix_queries), PREFIX_HITS: float(s.prefix_hits),
        PROMPT_TOKENS: float(s.prompt_tokens), GENERATION_TOKENS: float(s.generation_tokens),
        PREEMPTIONS: float(s.preemptions),
        REQUEST_SUCCESS: {"stop": float(s.finished), "length": 0.0, "abort": float(s.aborted + s.cancelled)},
    }
    return Sample(
        time=now, values=values, bytes_per_gpu=s.bytes_per_gpu, busy_s=s.busy_s,
        peak_bytes_per_s=eng.c.peak_bytes_per_s, max_model_len=eng.replica.model.max_context_tokens,
    )


def _float(values: Mapping[str, Value], key: str) -> float:
    value = values.get(key, 0.0)
    return value if isinstance(value, float) else 0.0


def _rates(current: Sample, previous: Sample | None) -> dict[str, float]:
    """DRAM active = bytes moved / (elapsed x peak bandwidth); GPU busy = busy time / elapsed; prefix hit
    rate = hits / queries since the previous scrape (what the engines' per-iteration gauges show)."""
    if previous is None or current.time <= previous.time:
        base_t, base_bytes, base_busy = 0.0, 0.0, 0.0
        base_q, base_h = 0.0, 0.0
    else:
        base_t, base_bytes, base_busy = previous.time, previous.bytes_per_gpu, previous.busy_s
        base_q, base_h = _float(previous.values, PREFIX_QUERIES), _float(previous.values, PREFIX_HITS)
    queries = _float(current.values, PREFIX_QUERIES) - base_q
    hits = _float(current.values, PREFIX_HITS) - base_h
    if queries <= 0:  # no prompt since: the gauge keeps the lifetime ratio rather than drop to zero
        queries, hits = _float(current.values, PREFIX_QUERIES), _float(current.values, PREFIX_HITS)
    hit_rate = min(1.0, max(0.0, hits / queries)) if queries > 0 else 0.0
    dt = current.time - base_t
    if dt <= 0:
        return {DRAM_ACTIVE: 0.0, GPU_UTIL: 0.0, PREFIX_HIT_RATE: hit_rate}
    return {
        DRAM_ACTIVE: min(1.0, max(0.0, (current.bytes_per_gpu - base_bytes) / (dt * current.peak_bytes_per_s))),
        GPU_UTIL: min(1.0, max(0.0, (current.busy_s - base_busy) / dt)),
        PREFIX_HIT_RATE: hit_rate,
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


def bounds(spec: MetricSpec, max_model_len: int) -> tuple[float, ...]:
    """A histogram's finite `le` bounds for a model of this length."""
    if spec.buckets is None:
        return buckets_125(max_model_len)
    if callable(spec.buckets):
        return spec.buckets(max_model_len)
    return spec.buckets


# ---------------------------------------------------------------------------------------------- render


class _Collector(registry.Collector):
    def __init__(self, metrics: Sequence[core.Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[core.Metric]:
        return self._metrics


def _label_value(fields: Mapping[str, str], source: str) -> str:
    return source[1:] if source.startswith("=") else fields[source]


def families(
    d: Dialect, current: Sample, identity: PodIdentity, *, previous: Sample | None = None
) -> list[core.Metric]:
    """prometheus_client metric families for one dialect."""
    values: dict[str, Value] = dict(current.values)
    values.update(_rates(current, previous))
    gpus = range(identity.gpus) if d.per_gpu else (None,)
    label_sets = [identity.fields(g) for g in gpus]
    out: list[core.Metric] = []
    for signal, spec in d.metrics.items():
        value = values.get(signal)
        if value is None:
            continue
        own = spec.labels if spec.labels is not None else d.labels
        names = [label for label, _ in own]
        extra = [spec.label] if spec.label else []
        if spec.kind is Kind.HISTOGRAM:
            if not isinstance(value, histogram.LogHistogram):
                raise TypeError(f"signal {signal} is not a histogram")
            hist = core.HistogramMetricFamily(spec.name, spec.help, labels=names)
            les = bounds(spec, current.max_model_len)
            counts = value.cumulative(les)
            buckets = [(_le(b), c) for b, c in zip(les, counts, strict=True)]
            buckets.append(("+Inf", value.count))
            for fields in label_sets:
                hist.add_metric([_label_value(fields, src) for _, src in own], buckets,
                                sum_value=value.sum * spec.scale)
            out.append(hist)
            continue
        family: core.CounterMetricFamily | core.GaugeMetricFamily
        if spec.kind is Kind.COUNTER:
            family = core.CounterMetricFamily(spec.name, spec.help, labels=names + extra)
        else:
            family = core.GaugeMetricFamily(spec.name, spec.help, labels=names + extra)
        for fields in label_sets:
            labels = [_label_value(fields, src) for _, src in own]
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
