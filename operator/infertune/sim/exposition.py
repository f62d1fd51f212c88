"""Twin: Prometheus text exposition of a simulated pod, one dialect table per engine plus DCGM."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

from prometheus_client import core, exposition, registry

from infertune import resolution, runtimes
from infertune.runtimes import metrics as op
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
PAUSED = "requests_paused"  # waiting again after a preemption (TensorRT-LLM's paused requests)
MAX_RUNNING = "max_running_requests"  # the max batch size the engine runs with
KV_USAGE = "kv_cache_usage"  # 0-1
KV_TOKENS_USED = "kv_cache_tokens_used"
KV_TOKENS = "kv_cache_tokens"  # capacity
KV_BLOCKS_USED = "kv_cache_blocks_used"
KV_BLOCKS = "kv_cache_blocks"  # capacity
PREFIX_QUERIES = "prefix_cache_queries"  # tokens
PREFIX_HITS = "prefix_cache_hits"  # tokens
PREFIX_HIT_RATE = "prefix_cache_hit_rate"  # 0-1, since the previous scrape
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


Labels = tuple[tuple[str, str], ...]  # (label, PodIdentity field) or (label, "=constant")
Buckets = Union[tuple[float, ...], Callable[[int], tuple[float, ...]], None]  # noqa: UP007 - a runtime alias


@dataclasses.dataclass(frozen=True, slots=True)
class MetricSpec:
    """How one signal appears in a dialect. Counters are named without `_total` (the wire adds it)."""

    name: str
    kind: Kind
    help: str
    scale: float = 1.0  # wire value = internal value x scale (0-1 -> percent: 100)
    # Histograms: fixed bounds, or bounds from the model's max length (token counts); None: 1-2-5 up to it.
    buckets: Buckets = None
    label: str | None = None  # the label of a signal with a dimension, e.g. finished_reason
    labels: Labels | None = None  # this metric's own label set where the engine uses several (SGLang)


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


def _name(d: op.Dialect, signal: op.Signal) -> str:
    """The operator's newest name for a signal in its dialect, as a twin spec declares it.

    Names come from runtimes/metrics.py so that what the twin exports and what the operator queries cannot
    drift apart; counters drop `_total` because prometheus_client adds it on the wire. (Units agree too: a test
    checks each spec's scale against the operator's.)
    """
    source = d.sources[signal]
    name = source.names[0]
    if (source.kind or op.KINDS[signal]) is op.Kind.COUNTER:
        name = name.removesuffix("_total")
    return name


# vLLM V1 (vllm/v1/metrics/loggers.py): labels model_name and engine (the engine index). The
# published buckets live in resolution.py, which checks the SLO's objectives against the same edges.
_VLLM_TTFT_BUCKETS = resolution.VLLM_TTFT
_VLLM_TPOT_BUCKETS = resolution.VLLM_TPOT
_VLLM_LATENCY_BUCKETS = resolution.VLLM_LATENCY


def _vllm(d: op.Dialect) -> Dialect:
    """vLLM V1's exposition under the names of `d` (vLLM itself, or NIM 2.x on a vLLM image)."""
    s, h, g, c = op.Signal, Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER
    latency = _VLLM_LATENCY_BUCKETS
    return Dialect(
        name=d.name,
        path=d.path,
        labels=(("model_name", "model_name"), ("engine", "engine")),
        metrics={
            TTFT: MetricSpec(_name(d, s.TTFT), h, "Time to first token, seconds.", buckets=_VLLM_TTFT_BUCKETS),
            ITL: MetricSpec(_name(d, s.ITL), h, "Inter-token latency, seconds.", buckets=_VLLM_TPOT_BUCKETS),
            TPOT: MetricSpec(_name(d, s.TPOT), h, "Per-request mean time per output token, seconds.",
                             buckets=_VLLM_TPOT_BUCKETS),
            E2E: MetricSpec(_name(d, s.E2E), h, "End-to-end request latency, seconds.", buckets=latency),
            QUEUE: MetricSpec(_name(d, s.QUEUE), h, "Time waiting before admission, seconds.", buckets=latency),
            PREFILL: MetricSpec("vllm:request_prefill_time_seconds", h, "Prefill phase time, seconds.",
                                buckets=latency),
            DECODE: MetricSpec("vllm:request_decode_time_seconds", h, "Decode phase time, seconds.", buckets=latency),
            INFERENCE: MetricSpec("vllm:request_inference_time_seconds", h, "Running phase time, seconds.",
                                  buckets=latency),
            PROMPT_LEN: MetricSpec("vllm:request_prompt_tokens", h, "Prompt tokens per request."),
            GENERATION_LEN: MetricSpec("vllm:request_generation_tokens", h, "Output tokens per request."),
            RUNNING: MetricSpec(_name(d, s.RUNNING), g, "Requests in the running batch."),
            WAITING: MetricSpec(_name(d, s.WAITING), g, "Requests waiting for admission."),
            KV_USAGE: MetricSpec(_name(d, s.KV_USAGE), g, "KV cache usage, 1 means 100 percent."),
            PREFIX_QUERIES: MetricSpec(_name(d, s.PREFIX_QUERIES), c, "Prefix cache queries, in tokens."),
            PREFIX_HITS: MetricSpec(_name(d, s.PREFIX_HITS), c, "Prefix cache hits, in tokens."),
            PROMPT_TOKENS: MetricSpec(_name(d, s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            GENERATION_TOKENS: MetricSpec(_name(d, s.GENERATION_TOKENS), c, "Generation tokens processed."),
            PREEMPTIONS: MetricSpec(_name(d, s.PREEMPTIONS), c, "Preemptions by the scheduler."),
            REQUEST_SUCCESS: MetricSpec("vllm:request_success", c, "Finished requests by reason.",
                                        label="finished_reason"),
        },
    )


# SGLang (python/sglang/srt/metrics/collector.py, TokenizerMetricsCollector and SchedulerMetricsCollector):
# request histograms carry model_name and engine_type; scheduler gauges add the ranks, and only rank 0 of a
# tensor-parallel group logs them. Exported only with --enable-metrics.
_SGLANG_TTFT_BUCKETS = resolution.SGLANG_TTFT
_SGLANG_ITL_BUCKETS = resolution.SGLANG_ITL
_SGLANG_E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0, 600.0,
    1200.0, 1800.0, 2400.0,
)
_SGLANG_QUEUE_BUCKETS = (
    0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
    200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0, 2000.0,
    2500.0, 3000.0,
)
_SGLANG_SCHEDULER: Labels = (
    ("model_name", "model_name"), ("engine_type", "=unified"), ("tp_rank", "=0"), ("pp_rank", "=0"),
    ("moe_ep_rank", "=0"),
)


def _sglang(d: op.Dialect) -> Dialect:
    """SGLang's exposition under the names of `d` (SGLang itself, or NIM 2.x on an SGLang image)."""
    s, h, g, c, sched = op.Signal, Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER, _SGLANG_SCHEDULER
    return Dialect(
        name=d.name,
        path=d.path,
        labels=(("model_name", "model_name"), ("engine_type", "=unified")),
        metrics={
            TTFT: MetricSpec(_name(d, s.TTFT), h, "Time to first token, seconds.", buckets=_SGLANG_TTFT_BUCKETS),
            ITL: MetricSpec(_name(d, s.ITL), h, "Inter-token latency, seconds.", buckets=_SGLANG_ITL_BUCKETS),
            E2E: MetricSpec(_name(d, s.E2E), h, "End-to-end request latency, seconds.", buckets=_SGLANG_E2E_BUCKETS),
            QUEUE: MetricSpec(_name(d, s.QUEUE), h, "Queueing time, seconds.", buckets=_SGLANG_QUEUE_BUCKETS,
                              labels=sched),
            PROMPT_TOKENS: MetricSpec(_name(d, s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            GENERATION_TOKENS: MetricSpec(_name(d, s.GENERATION_TOKENS), c, "Generation tokens processed."),
            PREFIX_HITS: MetricSpec("sglang:cached_tokens", c, "Prompt tokens served from the cache."),
            RUNNING: MetricSpec(_name(d, s.RUNNING), g, "Running requests.", labels=sched),
            WAITING: MetricSpec(_name(d, s.WAITING), g, "Requests in the waiting queue.", labels=sched),
            KV_USAGE: MetricSpec(_name(d, s.KV_USAGE), g, "Share of the KV token pool in use, 0-1.", labels=sched),
            KV_TOKENS_USED: MetricSpec("sglang:num_used_tokens", g, "KV pool tokens in use.", labels=sched),
            KV_TOKENS: MetricSpec("sglang:max_total_num_tokens", g, "KV pool size, tokens.", labels=sched),
            PREFIX_HIT_RATE: MetricSpec(_name(d, s.PREFIX_HIT_RATE), g, "Prefix cache hit rate, 0-1.", labels=sched),
            PREEMPTIONS: MetricSpec(_name(d, s.PREEMPTIONS), c, "Requests retracted to free KV cache.", labels=sched),
        },
        enable_flag="--enable-metrics",
    )


# TensorRT-LLM trtllm-serve (tensorrt_llm/metrics/collector.py) at /prometheus/metrics: labels model_name and
# engine_type; TTFT, TPOT, e2e and queue buckets are vLLM's; TPOT is one observation per request.
_TRTLLM_PREFILL_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)


def _trtllm(d: op.Dialect) -> Dialect:
    s, h, g, c = op.Signal, Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER
    latency = _VLLM_LATENCY_BUCKETS
    return Dialect(
        name=d.name,
        path=d.path,
        labels=(("model_name", "model_name"), ("engine_type", "=trtllm")),
        metrics={
            TTFT: MetricSpec(_name(d, s.TTFT), h, "Time to first token, seconds.", buckets=_VLLM_TTFT_BUCKETS),
            # One histogram carries both ITL and TPOT in the operator's table: it is per request.
            TPOT: MetricSpec(_name(d, s.TPOT), h, "Time per output token, seconds.", buckets=_VLLM_TPOT_BUCKETS),
            E2E: MetricSpec(_name(d, s.E2E), h, "End-to-end request latency, seconds.", buckets=latency),
            QUEUE: MetricSpec(_name(d, s.QUEUE), h, "Time in the WAITING phase, seconds.", buckets=latency),
            PREFILL: MetricSpec("trtllm_request_prefill_time_seconds", h, "Prefill phase, seconds.",
                                buckets=_TRTLLM_PREFILL_BUCKETS),
            DECODE: MetricSpec("trtllm_request_decode_time_seconds", h, "Decode phase, seconds.", buckets=latency),
            INFERENCE: MetricSpec("trtllm_request_inference_time_seconds", h, "Inference duration, seconds.",
                                  buckets=latency),
            PROMPT_TOKENS: MetricSpec(_name(d, s.PROMPT_TOKENS), c, "Prompt tokens processed."),
            GENERATION_TOKENS: MetricSpec(_name(d, s.GENERATION_TOKENS), c, "Generation tokens produced."),
            RUNNING: MetricSpec(_name(d, s.RUNNING), g, "Active requests."),
            WAITING: MetricSpec(_name(d, s.WAITING), g, "Queued requests."),
            PAUSED: MetricSpec(_name(d, s.PREEMPTIONS), g, "Requests paused to free KV cache."),
            KV_USAGE: MetricSpec(_name(d, s.KV_USAGE), g, "KV cache utilization, 0-1."),
            KV_BLOCKS_USED: MetricSpec("trtllm_kv_cache_used_blocks", g, "KV cache blocks in use."),
            KV_BLOCKS: MetricSpec("trtllm_kv_cache_max_blocks", g, "KV cache blocks in the pool."),
            PREFIX_HIT_RATE: MetricSpec(_name(d, s.PREFIX_HIT_RATE), g, "KV cache hit rate, 0-1."),
            REQUEST_SUCCESS: MetricSpec("trtllm_request_success", c, "Finished requests by reason.",
                                        label="finished_reason"),
        },
    )


# NIM 1.x (docs.nvidia.com/nim/large-language-models/latest/observability): unprefixed names at /v1/metrics,
# per model; its histograms are vLLM V0's (time per output token observed per token there).
def _nim_1(d: op.Dialect) -> Dialect:
    s, h, g, c = op.Signal, Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER
    return Dialect(
        name=d.name,
        path=d.path,
        labels=(("model_name", "model_name"),),
        metrics={
            TTFT: MetricSpec(_name(d, s.TTFT), h, "Time to first token, seconds.", buckets=_VLLM_TTFT_BUCKETS),
            ITL: MetricSpec(_name(d, s.ITL), h, "Time per output token, seconds.", buckets=_VLLM_TPOT_BUCKETS),
            E2E: MetricSpec(_name(d, s.E2E), h, "End-to-end request latency, seconds.",
                            buckets=_VLLM_LATENCY_BUCKETS),
            PROMPT_LEN: MetricSpec("request_prompt_tokens", h, "Prompt tokens per request."),
            GENERATION_LEN: MetricSpec("request_generation_tokens", h, "Output tokens per request."),
            RUNNING: MetricSpec(_name(d, s.RUNNING), g, "Requests running on the GPU."),
            WAITING: MetricSpec(_name(d, s.WAITING), g, "Requests waiting to be processed."),
            MAX_RUNNING: MetricSpec("num_request_max", g, "Requests the model may run at once."),
            KV_USAGE: MetricSpec(_name(d, s.KV_USAGE), g, "GPU KV-cache usage, 1 means 100 percent."),
            PROMPT_TOKENS: MetricSpec(_name(d, s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            GENERATION_TOKENS: MetricSpec(_name(d, s.GENERATION_TOKENS), c, "Generation tokens processed."),
        },
    )


# TGI (docs/source/reference/metrics.md; router/src/server.rs for buckets): no labels; durations in 35
# geometric buckets from 0.15 ms (x1.5 each: 0.0001 x 1.5^35 = 146 s at the top); token lengths in 100
# linear buckets up to the model's length. No TTFT, no KV usage, no prefix cache, no preemption series.
_TGI_DURATION_BUCKETS = resolution.TGI_DURATION


def _linear_100(limit: int) -> tuple[float, ...]:
    """TGI's token-length buckets: limit/100 x 1..100 (8,192 tokens -> 81.92, 163.84, ... 8,192)."""
    return tuple(limit / 100.0 * (k + 1) for k in range(100))


def _tgi(d: op.Dialect) -> Dialect:
    s, h, g = op.Signal, Kind.HISTOGRAM, Kind.GAUGE
    duration = _TGI_DURATION_BUCKETS
    return Dialect(
        name=d.name,
        path=d.path,
        labels=(),
        metrics={
            # TGI observes each request's inference time / generated tokens; the twin's per-request TPOT leaves
            # out the prefill (one step of ~50 ms against 200 x 20 ms of decode: 1% lower).
            TPOT: MetricSpec(_name(d, s.TPOT), h, "Mean time per token per request, seconds.", buckets=duration),
            E2E: MetricSpec(_name(d, s.E2E), h, "Total time spent on the request, seconds.", buckets=duration),
            QUEUE: MetricSpec(_name(d, s.QUEUE), h, "Time spent in the queue, seconds.", buckets=duration),
            INFERENCE: MetricSpec("tgi_request_inference_duration", h, "Request inference, seconds.",
                                  buckets=duration),
            # The operator reads token rates from these histograms' _sum: counted when a request ends.
            PROMPT_LEN: MetricSpec(_name(d, s.PROMPT_TOKENS), h, "Input tokens per request.", buckets=_linear_100),
            GENERATION_LEN: MetricSpec(_name(d, s.GENERATION_TOKENS), h, "Generated tokens per request.",
                                       buckets=_linear_100),
            RUNNING: MetricSpec(_name(d, s.RUNNING), g, "Current batch size."),
            WAITING: MetricSpec(_name(d, s.WAITING), g, "Current queue size."),
        },
    )


VLLM = _vllm(op.VLLM)
SGLANG = _sglang(op.SGLANG)
TRTLLM = _trtllm(op.TRTLLM)
NIM_1 = _nim_1(op.NIM_1)
NIM_2_VLLM = _vllm(op.NIM_2_VLLM)
NIM_2_SGLANG = _sglang(op.NIM_2_SGLANG)
TGI = _tgi(op.TGI)

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
        DRAM_ACTIVE: MetricSpec(_name(op.DCGM, op.Signal.DRAM_ACTIVE), Kind.GAUGE,
                                "Ratio of cycles the device memory interface is active (0-1)."),
        GPU_UTIL: MetricSpec("DCGM_FI_DEV_GPU_UTIL", Kind.GAUGE, "GPU utilization (in %).", scale=100.0),
    },
    per_gpu=True,
)

# Engine dialects by runtime variant (runtimes.Runtime.variant), as the operator's BY_VARIANT.
ENGINE_DIALECTS: tuple[Dialect, ...] = (VLLM, SGLANG, TRTLLM, NIM_1, NIM_2_VLLM, NIM_2_SGLANG, TGI)
DIALECTS: dict[str, Dialect] = {d.name: d for d in (*ENGINE_DIALECTS, DCGM)}


def dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise KeyError(f"unknown metrics dialect {name!r}; known: {', '.join(sorted(DIALECTS))}") from None


def pod_dialects(variant: str, argv: Sequence[str], *, env: Mapping[str, str]) -> tuple[Dialect, ...]:
    """What a pod of this engine variant exports at its metrics path, given its command line.

    SGLang without --enable-metrics (in argv, or NIM 2.x's NIM_PASSTHROUGH_ARGS) exports no engine series;
    DCGM's GPU series come from the node's exporter either way.
    """
    d = dialect(variant)
    if d.enable_flag is not None:
        args = [*argv, *shlex.split(env.get("NIM_PASSTHROUGH_ARGS", ""))]
        if not runtimes.has_flag(args, d.enable_flag):
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
        PROMPT_LEN: s.prompt_len.copy(), GENERATION_LEN: s.generation_len.copy(),
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
