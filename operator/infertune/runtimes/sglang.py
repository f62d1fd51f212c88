"""Pure: SGLang's flags for the knobs (docs/advanced_features/server_arguments.md) and its defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes

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


RUNTIME = runtimes.Runtime(
    kind=models.EngineKind.SGLANG,
    variant="sglang",
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
