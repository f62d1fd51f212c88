"""Pure: how an engine's exporter writes its metrics (names, types, labels, buckets), for the twin to imitate.

Each engine module declares its exposition here beside its launch rules, so the twin (sim/exposition.py) serves
what the engine serves and the names the operator queries (Engine.dialect) come from the same module.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Union

from infertune.runtimes import metrics

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
PROMPT_LEN = "request_prompt_tokens"  # observed as the request ends (vLLM, NIM, SGLang)
PROMPT_LEN_STARTED = "request_prompt_tokens_started"  # observed as it starts (TGI validates it on arrival)
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
class Exposition:
    """An engine exporter's labels and metrics; its name and path are the engine's (Engine.variant, dialect.path).

    `labels` maps each label name to the PodIdentity field that gives its value (or a constant written "=value").
    `enable_flag`: the engine exports nothing unless its command line carries this flag.
    """

    labels: Labels
    metrics: Mapping[str, MetricSpec]
    enable_flag: str | None = None


def name(d: metrics.Dialect, signal: metrics.Signal) -> str:
    """The operator's newest name for a signal in its dialect, as an exposition declares it.

    Names come from the operator's dialect so that what the twin exports and what the operator queries cannot
    drift apart; counters drop `_total` because prometheus_client adds it on the wire.
    """
    source = d.sources[signal]
    out = source.names[0]
    if (source.kind or metrics.KINDS[signal]) is metrics.Kind.COUNTER:
        out = out.removesuffix("_total")
    return out
