"""Pure: TensorRT-LLM `trtllm-serve` flags and YAML options for the knobs (commands/serve.py, llmapi/llm_args.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from infertune import models, runtimes

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


RUNTIME = runtimes.Runtime(
    kind=models.EngineKind.TRTLLM,
    variant="trtllm",
    health_path="/health",
    # /metrics on trtllm-serve is JSON iteration stats; Prometheus text lives here.
    metrics_path="/prometheus/metrics",
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env={},
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    chunked_prefill_default=False,
)
