"""Pure: the TensorRT-LLM engine: `trtllm-serve` flags and YAML options (commands/serve.py, llmapi/llm_args.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from infertune import models, runtimes
from infertune.runtimes import metrics, twin, vllm

OPTIONS_FILE = "trtllm-options.yaml"

KNOB_FLAGS = {
    "max_batch_size": "--max_batch_size",
    "kv_cache_dtype": f"YAML kv_cache_config.dtype fp8|auto (--extra_llm_api_options {OPTIONS_FILE})",
    "chunked_prefill": "--enable_chunked_prefill",
    "max_num_batched_tokens": "--max_num_tokens",
    "prefix_caching": "YAML kv_cache_config.enable_block_reuse",
    "gpu_memory_utilization": "--kv_cache_free_gpu_memory_fraction",
    "tensor_parallel": "--tp_size",
    "served_model_name": "positional model argument",
    "port": "--port",
    "max_model_len": "--max_seq_len",
}

OWNED_FLAGS = {
    "--max-batch-size": "max_batch_size",
    "--enable-chunked-prefill": "chunked_prefill",
    "--max-num-tokens": "max_num_batched_tokens",
    "--kv-cache-free-gpu-memory-fraction": "gpu_memory_utilization",
    "--free-gpu-memory-fraction": "gpu_memory_utilization",
    # trtllm-serve declares --tensor_parallel_size and --tp_size as one click option.
    "--tensor-parallel-size": "tensor_parallel",
    "--tp-size": "tensor_parallel",
    "--port": "port",
    "--host": "port",
    "--max-seq-len": "max_model_len",
    "--extra-llm-api-options": "kv_cache_dtype",
    "--config": "kv_cache_dtype",
    "--kv-cache-dtype": "kv_cache_dtype",
}


def options_yaml(k: runtimes.EngineKnobs) -> str:
    """The LLM-API options that have no flag: KV dtype (PyTorch backend) and block reuse."""
    kv: dict[str, object] = {"dtype": "fp8" if k.kv_cache_dtype is models.KvDtype.FP8 else "auto"}
    if k.prefix_caching is not None:
        kv["enable_block_reuse"] = k.prefix_caching
    return yaml.safe_dump({"kv_cache_config": kv}, sort_keys=True)


def launch(k: runtimes.EngineKnobs) -> runtimes.Launch:
    args = runtimes.flags([
        ("--host", "0.0.0.0"),
        ("--port", k.port),
        ("--max_batch_size", k.max_batch_size),
        ("--tp_size", k.tensor_parallel),
        ("--max_num_tokens", k.max_num_batched_tokens) if k.max_num_batched_tokens else None,
        # A bare switch (default off in the LLM API); absent means off.
        ("--enable_chunked_prefill", None) if k.chunked_prefill else None,
        ("--kv_cache_free_gpu_memory_fraction", k.gpu_memory_utilization) if k.gpu_memory_utilization else None,
        ("--max_seq_len", k.max_model_len) if k.max_model_len else None,
        ("--extra_llm_api_options", f"{runtimes.CONFIG_DIR}/{OPTIONS_FILE}"),
    ])
    return runtimes.Launch(
        command=("trtllm-serve", k.model), args=args, files={OPTIONS_FILE: options_yaml(k)}
    )


def default_max_batch_size(gpu: models.GpuSpec) -> int:
    # LLM-API default max_batch_size (tensorrt_llm/llmapi/llm_args.py).
    return 2048


def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    """Knobs from `trtllm-serve MODEL --flags...` and its YAML options."""
    out: dict[str, object] = {}
    get = runtimes.flag_value
    if len(args) > 1 and args[0] == "trtllm-serve" and not args[1].startswith("-"):
        out["model"] = out["served_model_name"] = args[1]
    runtimes.put(out, "port", get(args, "--port"), int)
    runtimes.put(out, "max_batch_size", get(args, "--max_batch_size"), int)
    runtimes.put(out, "tensor_parallel", get(args, "--tp_size"), int)
    runtimes.put(out, "max_num_batched_tokens", get(args, "--max_num_tokens"), int)
    runtimes.put(out, "gpu_memory_utilization",
                 get(args, "--kv_cache_free_gpu_memory_fraction", "--free_gpu_memory_fraction"), float)
    runtimes.put(out, "max_model_len", get(args, "--max_seq_len"), int)
    if runtimes.has_flag(args, "--enable_chunked_prefill"):
        out["chunked_prefill"] = True
    options = yaml.safe_load(files.get(OPTIONS_FILE, "") or "{}") or {}
    kv = options.get("kv_cache_config") or {}
    if "dtype" in kv:
        out["kv_cache_dtype"] = runtimes.is_fp8(str(kv["dtype"]))
    if "enable_block_reuse" in kv:
        out["prefix_caching"] = bool(kv["enable_block_reuse"])
    return out


# trtllm-serve (tensorrt_llm/metrics/collector.py), at /prometheus/metrics (/metrics is JSON iteration stats).
# The KV, token and cache series are recent (2026 main); 1.1-era servers export only the five latency ones.
S = metrics.Signal
DIALECT = metrics.Dialect("trtllm", "/prometheus/metrics", {
    S.TTFT: metrics.source("trtllm_time_to_first_token_seconds"),
    S.ITL: metrics.source("trtllm_time_per_output_token_seconds"),
    S.TPOT: metrics.source("trtllm_time_per_output_token_seconds"),  # one observation per request
    S.E2E: metrics.source("trtllm_e2e_request_latency_seconds"),
    S.QUEUE: metrics.source("trtllm_request_queue_time_seconds"),
    S.RUNNING: metrics.source("trtllm_num_requests_running"),
    S.WAITING: metrics.source("trtllm_num_requests_waiting"),
    S.KV_USAGE: metrics.source("trtllm_kv_cache_utilization"),
    # Paused requests (MAX_UTILIZATION scheduling) are the closest analog of preemptions; a gauge.
    S.PREEMPTIONS: metrics.source("trtllm_num_paused_requests", kind=metrics.Kind.GAUGE),
    S.PROMPT_TOKENS: metrics.source("trtllm_prompt_tokens_total"),
    S.GENERATION_TOKENS: metrics.source("trtllm_generation_tokens_total"),
    S.PREFIX_HIT_RATE: metrics.source("trtllm_kv_cache_hit_rate"),
})

PREFILL_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)


def _exposition(d: metrics.Dialect) -> twin.Exposition:
    """Labels model_name and engine_type; TTFT, TPOT, e2e and queue buckets are vLLM's (its collector copies
    them); TPOT is one observation per request."""
    s, h, g, c, M = metrics.Signal, twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.Kind.COUNTER, twin.MetricSpec
    latency = vllm.LATENCY_BUCKETS

    def n(signal: metrics.Signal) -> str:
        return twin.name(d, signal)

    return twin.Exposition(
        labels=(("model_name", "model_name"), ("engine_type", "=trtllm")),
        metrics={
            twin.TTFT: M(n(s.TTFT), h, "Time to first token, seconds.", buckets=vllm.TTFT_BUCKETS),
            # One histogram carries both ITL and TPOT in the operator's table: it is per request.
            twin.TPOT: M(n(s.TPOT), h, "Time per output token, seconds.", buckets=vllm.TPOT_BUCKETS),
            twin.E2E: M(n(s.E2E), h, "End-to-end request latency, seconds.", buckets=latency),
            twin.QUEUE: M(n(s.QUEUE), h, "Time in the WAITING phase, seconds.", buckets=latency),
            twin.PREFILL: M("trtllm_request_prefill_time_seconds", h, "Prefill phase, seconds.",
                            buckets=PREFILL_BUCKETS),
            twin.DECODE: M("trtllm_request_decode_time_seconds", h, "Decode phase, seconds.", buckets=latency),
            twin.INFERENCE: M("trtllm_request_inference_time_seconds", h, "Inference duration, seconds.",
                              buckets=latency),
            twin.PROMPT_TOKENS: M(n(s.PROMPT_TOKENS), c, "Prompt tokens processed."),
            twin.GENERATION_TOKENS: M(n(s.GENERATION_TOKENS), c, "Generation tokens produced."),
            twin.RUNNING: M(n(s.RUNNING), g, "Active requests."),
            twin.WAITING: M(n(s.WAITING), g, "Queued requests."),
            twin.PAUSED: M(n(s.PREEMPTIONS), g, "Requests paused to free KV cache."),
            twin.KV_USAGE: M(n(s.KV_USAGE), g, "KV cache utilization, 0-1."),
            twin.KV_BLOCKS_USED: M("trtllm_kv_cache_used_blocks", g, "KV cache blocks in use."),
            twin.KV_BLOCKS: M("trtllm_kv_cache_max_blocks", g, "KV cache blocks in the pool."),
            twin.PREFIX_HIT_RATE: M(n(s.PREFIX_HIT_RATE), g, "KV cache hit rate, 0-1."),
            twin.REQUEST_SUCCESS: M("trtllm_request_success", c, "Finished requests by reason.",
                                    label="finished_reason"),
        },
    )


ENGINE = runtimes.Engine(
    kind=models.EngineKind.TRTLLM,
    variant="trtllm",
    health_path="/health",
    dialect=DIALECT,
    exposition=_exposition(DIALECT),
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env={},
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    sample_image="nvcr.io/nvidia/tensorrt-llm/release:1.0.0",
    chunked_prefill_default=False,
)
