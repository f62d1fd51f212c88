"""Pure: each engine's Prometheus metric names per signal (each engine's source named below), newest name first."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Signal(enum.StrEnum):
    """What the operator reads, independent of any engine's names."""

    TTFT = "ttft"  # histogram, seconds
    ITL = "itl"  # histogram, seconds between output tokens (one observation per token)
    TPOT = "tpot"  # histogram, one observation per request: its mean time per output token (the SLO's ITL)
    E2E = "e2e"  # histogram, seconds; its _count rate is the request rate
    QUEUE = "queue"  # histogram, seconds
    RUNNING = "running"  # gauge, requests in the batch
    WAITING = "waiting"  # gauge, requests queued
    KV_USAGE = "kv_usage"  # gauge, 0-1
    PREEMPTIONS = "preemptions"  # counter (or a gauge of paused requests)
    PROMPT_TOKENS = "prompt_tokens"  # counter, tokens
    GENERATION_TOKENS = "generation_tokens"  # counter, tokens
    PREFIX_QUERIES = "prefix_queries"  # counter, tokens looked up in the prefix cache
    PREFIX_HITS = "prefix_hits"  # counter, tokens found
    PREFIX_HIT_RATE = "prefix_hit_rate"  # gauge, 0-1 (engines without the counters)
    DRAM_ACTIVE = "dram_active"  # DCGM gauge, 0-1


class Kind(enum.StrEnum):
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    COUNTER = "counter"
    # A histogram read only through its _sum (token-length histograms of TGI): a counter of the sum.
    HISTOGRAM_SUM = "histogram_sum"


KINDS: Mapping[Signal, Kind] = {
    Signal.TTFT: Kind.HISTOGRAM, Signal.ITL: Kind.HISTOGRAM, Signal.TPOT: Kind.HISTOGRAM,
    Signal.E2E: Kind.HISTOGRAM, Signal.QUEUE: Kind.HISTOGRAM,
    Signal.RUNNING: Kind.GAUGE, Signal.WAITING: Kind.GAUGE, Signal.KV_USAGE: Kind.GAUGE,
    Signal.PREEMPTIONS: Kind.COUNTER, Signal.PROMPT_TOKENS: Kind.COUNTER, Signal.GENERATION_TOKENS: Kind.COUNTER,
    Signal.PREFIX_QUERIES: Kind.COUNTER, Signal.PREFIX_HITS: Kind.COUNTER, Signal.PREFIX_HIT_RATE: Kind.GAUGE,
    Signal.DRAM_ACTIVE: Kind.GAUGE,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """Where a signal comes from in one dialect: metric names in order of preference, and its kind there."""

    names: tuple[str, ...]
    kind: Kind | None = None  # None: the signal's usual kind
    scale: float = 1.0  # multiply to get the signal's unit (percent -> 0-1: 0.01)


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    path: str
    sources: Mapping[Signal, Source]

    def lacks(self, signal: Signal) -> bool:
        return signal not in self.sources


def _s(*names: str, kind: Kind | None = None, scale: float = 1.0) -> Source:
    return Source(names=names, kind=kind, scale=scale)


# vLLM V1 (vllm/v1/metrics/loggers.py). Renames in 0.10-0.11 (PR #18354, #23919): the old names are read
# when the new ones are absent, so older images keep working.
VLLM = Dialect("vllm", "/metrics", {
    Signal.TTFT: _s("vllm:time_to_first_token_seconds"),
    Signal.ITL: _s("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    # Per request since PR #24015 (2025-09): decode time / (generated tokens - 1).
    Signal.TPOT: _s("vllm:request_time_per_output_token_seconds"),
    Signal.E2E: _s("vllm:e2e_request_latency_seconds"),
    Signal.QUEUE: _s("vllm:request_queue_time_seconds"),
    Signal.RUNNING: _s("vllm:num_requests_running"),
    Signal.WAITING: _s("vllm:num_requests_waiting"),
    Signal.KV_USAGE: _s("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    Signal.PREEMPTIONS: _s("vllm:num_preemptions_total"),
    Signal.PROMPT_TOKENS: _s("vllm:prompt_tokens_total"),
    Signal.GENERATION_TOKENS: _s("vllm:generation_tokens_total"),
    Signal.PREFIX_QUERIES: _s("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    Signal.PREFIX_HITS: _s("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
})

# SGLang (python/sglang/srt/metrics/collector.py); exported only with --enable-metrics.
SGLANG = Dialect("sglang", "/metrics", {
    Signal.TTFT: _s("sglang:time_to_first_token_seconds"),
    Signal.ITL: _s("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    Signal.E2E: _s("sglang:e2e_request_latency_seconds"),
    Signal.QUEUE: _s("sglang:queue_time_seconds"),
    Signal.RUNNING: _s("sglang:num_running_reqs"),
    Signal.WAITING: _s("sglang:num_queue_reqs"),
    Signal.KV_USAGE: _s("sglang:token_usage"),
    Signal.PREEMPTIONS: _s("sglang:num_retracted_requests_total"),
    Signal.PROMPT_TOKENS: _s("sglang:prompt_tokens_total"),
    Signal.GENERATION_TOKENS: _s("sglang:generation_tokens_total"),
    Signal.PREFIX_HIT_RATE: _s("sglang:cache_hit_rate"),
})

# TensorRT-LLM trtllm-serve (tensorrt_llm/metrics/collector.py), at /prometheus/metrics. The KV,
# token and cache series are recent (2026 main); 1.1-era servers export only the five latency ones.
TRTLLM = Dialect("trtllm", "/prometheus/metrics", {
    Signal.TTFT: _s("trtllm_time_to_first_token_seconds"),
    Signal.ITL: _s("trtllm_time_per_output_token_seconds"),
    Signal.TPOT: _s("trtllm_time_per_output_token_seconds"),  # one observation per request
    Signal.E2E: _s("trtllm_e2e_request_latency_seconds"),
    Signal.QUEUE: _s("trtllm_request_queue_time_seconds"),
    Signal.RUNNING: _s("trtllm_num_requests_running"),
    Signal.WAITING: _s("trtllm_num_requests_waiting"),
    Signal.KV_USAGE: _s("trtllm_kv_cache_utilization"),
    # Paused requests (MAX_UTILIZATION scheduling) are the closest analog of preemptions; a gauge.
    Signal.PREEMPTIONS: _s("trtllm_num_paused_requests", kind=Kind.GAUGE),
    Signal.PROMPT_TOKENS: _s("trtllm_prompt_tokens_total"),
    Signal.GENERATION_TOKENS: _s("trtllm_generation_tokens_total"),
    Signal.PREFIX_HIT_RATE: _s("trtllm_kv_cache_hit_rate"),
})

# NIM 1.x (docs.nvidia.com/nim/large-language-models/latest/observability): unprefixed names at /v1/metrics.
NIM_1 = Dialect("nim-1", "/v1/metrics", {
    Signal.TTFT: _s("time_to_first_token_seconds"),
    Signal.ITL: _s("time_per_output_token_seconds"),
    Signal.E2E: _s("e2e_request_latency_seconds"),
    Signal.RUNNING: _s("num_requests_running"),
    Signal.WAITING: _s("num_requests_waiting"),
    Signal.KV_USAGE: _s("gpu_cache_usage_perc"),
    Signal.PROMPT_TOKENS: _s("prompt_tokens_total"),
    Signal.GENERATION_TOKENS: _s("generation_tokens_total"),
})

# TGI (docs/source/reference/metrics.md): no TTFT, no KV usage, no prefix cache; token counts only as
# the _sum of per-request length histograms.
TGI = Dialect("tgi", "/metrics", {
    Signal.ITL: _s("tgi_request_mean_time_per_token_duration"),
    Signal.TPOT: _s("tgi_request_mean_time_per_token_duration"),  # a per-request mean
    Signal.E2E: _s("tgi_request_duration"),
    Signal.QUEUE: _s("tgi_request_queue_duration"),
    Signal.RUNNING: _s("tgi_batch_current_size"),
    Signal.WAITING: _s("tgi_queue_size"),
    Signal.PROMPT_TOKENS: _s("tgi_request_input_length", kind=Kind.HISTOGRAM_SUM),
    Signal.GENERATION_TOKENS: _s("tgi_request_generated_tokens", kind=Kind.HISTOGRAM_SUM),
})

# DCGM exporter in Kubernetes mode labels GPU series with the pod and namespace they serve.
DCGM = Dialect("dcgm", "/metrics", {Signal.DRAM_ACTIVE: _s("DCGM_FI_PROF_DRAM_ACTIVE")})

# NIM 2.x runs vLLM or SGLang images and exports their metrics (at /v1/metrics).
NIM_2_VLLM = dataclasses.replace(VLLM, name="nim-2-vllm", path="/v1/metrics")
NIM_2_SGLANG = dataclasses.replace(SGLANG, name="nim-2-sglang", path="/v1/metrics")

ENGINE_DIALECTS: tuple[Dialect, ...] = (VLLM, SGLANG, TRTLLM, NIM_1, TGI)

BY_VARIANT: Mapping[str, Dialect] = {
    "vllm": VLLM, "sglang": SGLANG, "trtllm": TRTLLM, "nim-1": NIM_1, "nim-2-vllm": NIM_2_VLLM,
    "nim-2-sglang": NIM_2_SGLANG, "tgi": TGI,
}
