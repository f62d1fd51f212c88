"""Pure: the vLLM engine: flags for the knobs (vllm/engine/arg_utils.py, vllm/config/), defaults, metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes
from infertune.runtimes import metrics, twin

KNOB_FLAGS = {
    "max_batch_size": "--max-num-seqs",
    "kv_cache_dtype": "--kv-cache-dtype fp8|auto",
    "chunked_prefill": "--enable-chunked-prefill / --no-enable-chunked-prefill",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "prefix_caching": "--enable-prefix-caching / --no-enable-prefix-caching",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "tensor_parallel": "--tensor-parallel-size",
    "served_model_name": "--served-model-name",
    "port": "--port",
    "max_model_len": "--max-model-len",
}

OWNED_FLAGS = {
    "--model": "model",
    "--max-num-seqs": "max_batch_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--enable-chunked-prefill": "chunked_prefill",
    "--no-enable-chunked-prefill": "chunked_prefill",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--enable-prefix-caching": "prefix_caching",
    "--no-enable-prefix-caching": "prefix_caching",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--tensor-parallel-size": "tensor_parallel",
    "--tp": "tensor_parallel",
    "--served-model-name": "served_model_name",
    "--port": "port",
    # Listening elsewhere (another address, a Unix socket) hides the engine from its probes and the Service.
    "--host": "port",
    "--uds": "port",
    "--max-model-len": "max_model_len",
    # Sizes the KV cache in bytes, overriding --gpu-memory-utilization.
    "--kv-cache-memory-bytes": "gpu_memory_utilization",
    # A YAML file of options (FlexibleArgumentParser's --config) can set every knob above.
    "--config": "config_file",
    # vLLM stops exporting the statistics the operator reads.
    "--disable-log-stats": "metrics",
}


def engine_flags(k: runtimes.EngineKnobs) -> tuple[str, ...]:
    """vLLM arguments for the knobs; shared with NIM 2.x on vLLM images (NIM_PASSTHROUGH_ARGS)."""

    def toggle(name: str, on: bool | None) -> tuple[str, object] | None:
        if on is None:
            return None
        return (f"--{name}" if on else f"--no-{name}", None)

    return runtimes.flags([
        ("--max-num-seqs", k.max_batch_size),
        # `fp8` is vLLM's alias of fp8_e4m3; `auto` keeps the model's dtype.
        ("--kv-cache-dtype", "fp8" if k.kv_cache_dtype is models.KvDtype.FP8 else "auto"),
        ("--tensor-parallel-size", k.tensor_parallel),
        toggle("enable-chunked-prefill", k.chunked_prefill),
        ("--max-num-batched-tokens", k.max_num_batched_tokens) if k.max_num_batched_tokens else None,
        toggle("enable-prefix-caching", k.prefix_caching),
        ("--gpu-memory-utilization", k.gpu_memory_utilization) if k.gpu_memory_utilization else None,
        ("--max-model-len", k.max_model_len) if k.max_model_len else None,
    ])


def launch(k: runtimes.EngineKnobs) -> runtimes.Launch:
    # The vllm/vllm-openai image's entrypoint is the OpenAI server; keep it and pass arguments.
    args = runtimes.flags([("--model", k.model), ("--served-model-name", k.served_model_name), ("--port", k.port)])
    return runtimes.Launch(command=None, args=args + engine_flags(k))


def default_max_batch_size(gpu: models.GpuSpec) -> int:
    # vLLM's EngineArgs: GPUs with >= 70 GiB that are not A100 default to max_num_seqs 1024 for the
    # OpenAI server, others to 256 (PR #17885: large budgets cost throughput on A100).
    if gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        return 1024
    return 256


def read_flags(args: Sequence[str]) -> dict[str, object]:
    """Knobs from vLLM arguments (also inside NIM 2.x's NIM_PASSTHROUGH_ARGS)."""
    out: dict[str, object] = {}
    get = runtimes.flag_value
    runtimes.put(out, "model", get(args, "--model"), str)
    runtimes.put(out, "served_model_name", get(args, "--served-model-name"), str)
    runtimes.put(out, "port", get(args, "--port"), int)
    runtimes.put(out, "max_batch_size", get(args, "--max-num-seqs"), int)
    runtimes.put(out, "kv_cache_dtype", get(args, "--kv-cache-dtype"), runtimes.is_fp8)
    runtimes.put(out, "tensor_parallel", get(args, "--tensor-parallel-size", "-tp"), int)
    runtimes.put(out, "max_num_batched_tokens", get(args, "--max-num-batched-tokens"), int)
    runtimes.put(out, "gpu_memory_utilization", get(args, "--gpu-memory-utilization"), float)
    runtimes.put(out, "max_model_len", get(args, "--max-model-len"), int)
    for knob, name in (("chunked_prefill", "enable-chunked-prefill"), ("prefix_caching", "enable-prefix-caching")):
        if runtimes.has_flag(args, f"--no-{name}"):
            out[knob] = False
        elif runtimes.has_flag(args, f"--{name}"):
            out[knob] = True
    return out


def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    return read_flags(args)


def check_budget(spec: models.InferenceDeploymentSpec) -> list[tuple[str, str]]:
    """vLLM refuses to start when max_num_batched_tokens < max_num_seqs (shared with NIM 2.x on vLLM)."""
    budget, largest = spec.engine.max_num_batched_tokens, spec.tuning.max_batch_size.max
    if budget is not None and budget < largest:
        return [("spec.engine.maxNumBatchedTokens",
                 f"vLLM needs a token budget of at least the largest batch ({largest}); got {budget}")]
    return []


# vLLM V1 (vllm/v1/metrics/loggers.py). Renames in 0.10-0.11 (PR #18354, #23919): the old names are read
# when the new ones are absent, so older images keep working.
S = metrics.Signal
DIALECT = metrics.Dialect("vllm", "/metrics", {
    S.TTFT: metrics.source("vllm:time_to_first_token_seconds"),
    S.ITL: metrics.source("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    # Per request since PR #24015 (2025-09): decode time / (generated tokens - 1).
    S.TPOT: metrics.source("vllm:request_time_per_output_token_seconds"),
    S.E2E: metrics.source("vllm:e2e_request_latency_seconds"),
    S.QUEUE: metrics.source("vllm:request_queue_time_seconds"),
    S.RUNNING: metrics.source("vllm:num_requests_running"),
    S.WAITING: metrics.source("vllm:num_requests_waiting"),
    S.KV_USAGE: metrics.source("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    S.PREEMPTIONS: metrics.source("vllm:num_preemptions_total"),
    S.PROMPT_TOKENS: metrics.source("vllm:prompt_tokens_total"),
    S.GENERATION_TOKENS: metrics.source("vllm:generation_tokens_total"),
    S.PROMPT_LENGTH: metrics.source("vllm:request_prompt_tokens"),
    S.GENERATION_LENGTH: metrics.source("vllm:request_generation_tokens"),
    S.PREFIX_QUERIES: metrics.source("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    S.PREFIX_HITS: metrics.source("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
})

# vLLM V1's published default buckets (seconds), vllm/v1/metrics/loggers.py: histogram_time_to_first_token.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
# histogram_inter_token_latency and histogram_request_time_per_output_token share these.
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
# e2e, queue, prefill, decode and inference time.
LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)


def _exposition(d: metrics.Dialect) -> twin.Exposition:
    """vLLM V1's exposition (labels model_name and engine, the engine index) under the names of `d`."""
    s, h, g, c, M = metrics.Signal, twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.Kind.COUNTER, twin.MetricSpec
    latency = LATENCY_BUCKETS

    def n(signal: metrics.Signal) -> str:
        return twin.name(d, signal)

    return twin.Exposition(
        labels=(("model_name", "model_name"), ("engine", "engine")),
        metrics={
            twin.TTFT: M(n(s.TTFT), h, "Time to first token, seconds.", buckets=TTFT_BUCKETS),
            twin.ITL: M(n(s.ITL), h, "Inter-token latency, seconds.", buckets=TPOT_BUCKETS),
            twin.TPOT: M(n(s.TPOT), h, "Per-request mean time per output token, seconds.", buckets=TPOT_BUCKETS),
            twin.E2E: M(n(s.E2E), h, "End-to-end request latency, seconds.", buckets=latency),
            twin.QUEUE: M(n(s.QUEUE), h, "Time waiting before admission, seconds.", buckets=latency),
            twin.PREFILL: M("vllm:request_prefill_time_seconds", h, "Prefill phase time, seconds.", buckets=latency),
            twin.DECODE: M("vllm:request_decode_time_seconds", h, "Decode phase time, seconds.", buckets=latency),
            twin.INFERENCE: M("vllm:request_inference_time_seconds", h, "Running phase time, seconds.",
                              buckets=latency),
            twin.PROMPT_LEN: M(n(s.PROMPT_LENGTH), h, "Prompt tokens per request."),
            twin.GENERATION_LEN: M(n(s.GENERATION_LENGTH), h, "Output tokens per request."),
            twin.RUNNING: M(n(s.RUNNING), g, "Requests in the running batch."),
            twin.WAITING: M(n(s.WAITING), g, "Requests waiting for admission."),
            twin.KV_USAGE: M(n(s.KV_USAGE), g, "KV cache usage, 1 means 100 percent."),
            twin.PREFIX_QUERIES: M(n(s.PREFIX_QUERIES), c, "Prefix cache queries, in tokens."),
            twin.PREFIX_HITS: M(n(s.PREFIX_HITS), c, "Prefix cache hits, in tokens."),
            twin.PROMPT_TOKENS: M(n(s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            twin.GENERATION_TOKENS: M(n(s.GENERATION_TOKENS), c, "Generation tokens processed."),
            twin.PREEMPTIONS: M(n(s.PREEMPTIONS), c, "Preemptions by the scheduler."),
            twin.REQUEST_SUCCESS: M("vllm:request_success", c, "Finished requests by reason.",
                                    label="finished_reason"),
        },
    )


# NIM 2.x on a vLLM image exports these same series (the names are the dialect's, shared).
EXPOSITION = _exposition(DIALECT)

ENGINE = runtimes.Engine(
    kind=models.EngineKind.VLLM,
    variant="vllm",
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
    sample_image="vllm/vllm-openai:v0.11.0",
    checks=check_budget,
    prefix_matching=True,
)
