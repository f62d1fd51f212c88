"""Pure: the SGLang engine: flags for the knobs (docs/advanced_features/server_arguments.md), defaults, metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes
from infertune.runtimes import metrics, twin

KNOB_FLAGS = {
    "max_batch_size": "--max-running-requests",
    "kv_cache_dtype": "--kv-cache-dtype fp8_e4m3|auto",
    "chunked_prefill": "--chunked-prefill-size (-1 disables)",
    "max_num_batched_tokens": "--chunked-prefill-size",
    "prefix_caching": "--disable-radix-cache (when off)",
    "gpu_memory_utilization": "--mem-fraction-static",
    "tensor_parallel": "--tp-size",
    "served_model_name": "--served-model-name",
    "port": "--port",
    "max_model_len": "--context-length",
}

OWNED_FLAGS = {
    "--model-path": "model",
    "--model": "model",
    "--max-running-requests": "max_batch_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--chunked-prefill-size": "max_num_batched_tokens",
    "--disable-radix-cache": "prefix_caching",
    "--mem-fraction-static": "gpu_memory_utilization",
    # SGLang declares --tensor-parallel-size and --tp-size as one argument; --tp is a prefix of the latter.
    "--tensor-parallel-size": "tensor_parallel",
    "--tp-size": "tensor_parallel",
    "--tp": "tensor_parallel",
    "--served-model-name": "served_model_name",
    "--port": "port",
    "--host": "port",
    "--context-length": "max_model_len",
    "--enable-metrics": "metrics",
    "--config": "config_file",
}

# SGLang's default chunk when chunking is wanted but no budget is given (its own default is
# hardware-dependent; 8192 matches vLLM's budget on large GPUs so both engines see the same steps).
DEFAULT_CHUNK = 8192


def engine_flags(k: runtimes.EngineKnobs) -> tuple[str, ...]:
    """SGLang arguments for the knobs; shared with NIM 2.x on SGLang images."""
    chunk: tuple[str, object] | None = None
    if k.chunked_prefill is False:
        chunk = ("--chunked-prefill-size", -1)
    elif k.max_num_batched_tokens:
        chunk = ("--chunked-prefill-size", k.max_num_batched_tokens)
    elif k.chunked_prefill:
        chunk = ("--chunked-prefill-size", DEFAULT_CHUNK)
    return runtimes.flags([
        ("--max-running-requests", k.max_batch_size),
        ("--kv-cache-dtype", "fp8_e4m3" if k.kv_cache_dtype is models.KvDtype.FP8 else "auto"),
        ("--tp-size", k.tensor_parallel),
        chunk,
        ("--disable-radix-cache", None) if k.prefix_caching is False else None,
        ("--mem-fraction-static", k.gpu_memory_utilization) if k.gpu_memory_utilization else None,
        ("--context-length", k.max_model_len) if k.max_model_len else None,
        # Without it SGLang exports no metrics at all, and the operator would be blind.
        ("--enable-metrics", None),
        # The per-request length histograms the request shape is read from (server_args.collect_tokens_histogram).
        ("--collect-tokens-histogram", None),
    ])


def launch(k: runtimes.EngineKnobs) -> runtimes.Launch:
    base = runtimes.flags([
        ("--model-path", k.model), ("--served-model-name", k.served_model_name),
        ("--host", "0.0.0.0"), ("--port", k.port),
    ])
    # lmsysorg/sglang images have no server entrypoint, so the command is explicit.
    return runtimes.Launch(command=("python3", "-m", "sglang.launch_server"), args=base + engine_flags(k))


def default_max_batch_size(gpu: models.GpuSpec) -> int:
    # SGLang sizes max_running_requests from its KV pool when unset; the operator needs a number for
    # the first revision, so it starts where vLLM would on the same GPU and lets the tuner move it.
    return 1024 if gpu.memory_gib >= 70 else 256


def read_flags(args: Sequence[str]) -> dict[str, object]:
    """Knobs from SGLang arguments (also inside NIM 2.x's NIM_PASSTHROUGH_ARGS)."""
    out: dict[str, object] = {}
    get = runtimes.flag_value
    runtimes.put(out, "model", get(args, "--model-path", "--model"), str)
    runtimes.put(out, "served_model_name", get(args, "--served-model-name"), str)
    runtimes.put(out, "port", get(args, "--port"), int)
    runtimes.put(out, "max_batch_size", get(args, "--max-running-requests"), int)
    runtimes.put(out, "kv_cache_dtype", get(args, "--kv-cache-dtype"), runtimes.is_fp8)
    runtimes.put(out, "tensor_parallel", get(args, "--tp-size", "--tp"), int)
    runtimes.put(out, "gpu_memory_utilization", get(args, "--mem-fraction-static"), float)
    runtimes.put(out, "max_model_len", get(args, "--context-length"), int)
    chunk = get(args, "--chunked-prefill-size")
    if chunk is not None:
        size = int(chunk)
        out["chunked_prefill"] = size > 0
        if size > 0:
            out["max_num_batched_tokens"] = size
    if runtimes.has_flag(args, "--disable-radix-cache"):
        out["prefix_caching"] = False
    return out


def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    return read_flags(args)


# SGLang (python/sglang/srt/metrics/collector.py); exported only with --enable-metrics.
S = metrics.Signal
DIALECT = metrics.Dialect("sglang", "/metrics", {
    S.TTFT: metrics.source("sglang:time_to_first_token_seconds"),
    S.ITL: metrics.source("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    S.E2E: metrics.source("sglang:e2e_request_latency_seconds"),
    S.QUEUE: metrics.source("sglang:queue_time_seconds"),
    S.RUNNING: metrics.source("sglang:num_running_reqs"),
    S.WAITING: metrics.source("sglang:num_queue_reqs"),
    S.KV_USAGE: metrics.source("sglang:token_usage"),
    S.PREEMPTIONS: metrics.source("sglang:num_retracted_requests_total"),
    S.PROMPT_TOKENS: metrics.source("sglang:prompt_tokens_total"),
    S.GENERATION_TOKENS: metrics.source("sglang:generation_tokens_total"),
    S.PREFIX_HIT_RATE: metrics.source("sglang:cache_hit_rate"),
    # Exported only with --collect-tokens-histogram, which the operator passes; observed as a request ends.
    S.PROMPT_LENGTH: metrics.source("sglang:prompt_tokens_histogram"),
    S.GENERATION_LENGTH: metrics.source("sglang:generation_tokens_histogram"),
})

# SGLang's published default buckets (seconds), python/sglang/srt/metrics/collector.py
# (TokenizerMetricsCollector).
TTFT_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0,
)
ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8,
    1.0, 2.0, 4.0, 6.0, 8.0,
)
E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0, 600.0,
    1200.0, 1800.0, 2400.0,
)
QUEUE_BUCKETS = (
    0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
    200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0, 2000.0,
    2500.0, 3000.0,
)
# Token lengths (TokenizerMetricsCollector's defaults when --prompt-tokens-buckets/--generation-tokens-buckets are
# not given): 100-1,000 in coarse steps, then to 40,000.
PROMPT_BUCKETS = (
    100.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0, 8000.0, 9000.0,
    10000.0, 12000.0, 15000.0, 20000.0, 22000.0, 25000.0, 30000.0, 35000.0, 40000.0,
)
GENERATION_BUCKETS = PROMPT_BUCKETS
# Request histograms carry model_name and engine_type (TokenizerMetricsCollector); scheduler gauges
# (SchedulerMetricsCollector) add the ranks, and only rank 0 of a tensor-parallel group logs them.
SCHEDULER_LABELS: twin.Labels = (
    ("model_name", "model_name"), ("engine_type", "=unified"), ("tp_rank", "=0"), ("pp_rank", "=0"),
    ("moe_ep_rank", "=0"),
)


def _exposition(d: metrics.Dialect) -> twin.Exposition:
    """SGLang's exposition under the names of `d`; exported only with --enable-metrics."""
    s, h, g, c, M = metrics.Signal, twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.Kind.COUNTER, twin.MetricSpec
    sched = SCHEDULER_LABELS

    def n(signal: metrics.Signal) -> str:
        return twin.name(d, signal)

    return twin.Exposition(
        labels=(("model_name", "model_name"), ("engine_type", "=unified")),
        metrics={
            twin.TTFT: M(n(s.TTFT), h, "Time to first token, seconds.", buckets=TTFT_BUCKETS),
            twin.ITL: M(n(s.ITL), h, "Inter-token latency, seconds.", buckets=ITL_BUCKETS),
            twin.E2E: M(n(s.E2E), h, "End-to-end request latency, seconds.", buckets=E2E_BUCKETS),
            twin.QUEUE: M(n(s.QUEUE), h, "Queueing time, seconds.", buckets=QUEUE_BUCKETS, labels=sched),
            twin.PROMPT_TOKENS: M(n(s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            twin.GENERATION_TOKENS: M(n(s.GENERATION_TOKENS), c, "Generation tokens processed."),
            twin.PROMPT_LEN: M(n(s.PROMPT_LENGTH), h, "Histogram of prompt token length.", buckets=PROMPT_BUCKETS),
            twin.GENERATION_LEN: M(n(s.GENERATION_LENGTH), h, "Histogram of generation token length.",
                                   buckets=GENERATION_BUCKETS),
            twin.PREFIX_HITS: M("sglang:cached_tokens", c, "Prompt tokens served from the cache."),
            twin.RUNNING: M(n(s.RUNNING), g, "Running requests.", labels=sched),
            twin.WAITING: M(n(s.WAITING), g, "Requests in the waiting queue.", labels=sched),
            twin.KV_USAGE: M(n(s.KV_USAGE), g, "Share of the KV token pool in use, 0-1.", labels=sched),
            twin.KV_TOKENS_USED: M("sglang:num_used_tokens", g, "KV pool tokens in use.", labels=sched),
            twin.KV_TOKENS: M("sglang:max_total_num_tokens", g, "KV pool size, tokens.", labels=sched),
            twin.PREFIX_HIT_RATE: M(n(s.PREFIX_HIT_RATE), g, "Prefix cache hit rate, 0-1.", labels=sched),
            twin.PREEMPTIONS: M(n(s.PREEMPTIONS), c, "Requests retracted to free KV cache.", labels=sched),
        },
        enable_flag="--enable-metrics",
    )


# NIM 2.x on an SGLang image exports these same series.
EXPOSITION = _exposition(DIALECT)

ENGINE = runtimes.Engine(
    kind=models.EngineKind.SGLANG,
    variant="sglang",
    health_path="/health",
    dialect=DIALECT,
    exposition=EXPOSITION,
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env={},
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    sample_image="lmsysorg/sglang:v0.5.2",
    prefix_matching=True,
)
