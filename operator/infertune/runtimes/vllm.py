"""Pure: vLLM's flags for the knobs (vllm/engine/arg_utils.py, vllm/config/) and its defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes

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


RUNTIME = runtimes.Runtime(
    kind=models.EngineKind.VLLM,
    variant="vllm",
    health_path="/health",
    metrics_path="/metrics",
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env={},
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    prefix_matching=True,
)
