"""Pure: Text Generation Inference launcher flags for the knobs (docs/source/reference/launcher.md); TGI is legacy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes

KNOB_FLAGS = {
    "max_batch_size": "--max-batch-size (and --max-concurrent-requests)",
    "kv_cache_dtype": "--kv-cache-dtype fp8_e4m3fn",
    "max_num_batched_tokens": "--max-batch-prefill-tokens",
    "prefix_caching": "env PREFIX_CACHING",
    "gpu_memory_utilization": "--cuda-memory-fraction",
    "tensor_parallel": "--num-shard",
    "served_model_name": "--served-model-name",
    "port": "--port",
    "max_model_len": "--max-total-tokens",
}

OWNED_FLAGS = {
    "--model-id": "model",
    "--max-batch-size": "max_batch_size",
    "--max-concurrent-requests": "max_batch_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--max-batch-prefill-tokens": "max_num_batched_tokens",
    "--cuda-memory-fraction": "gpu_memory_utilization",
    "--num-shard": "tensor_parallel",
    "--sharded": "tensor_parallel",
    "--served-model-name": "served_model_name",
    "--port": "port",
    "--p": "port",  # -p, the short form of --port
    "--hostname": "port",
    "--max-total-tokens": "max_model_len",
}
# Every launcher flag is also read from its environment variable (--num-shard <-> NUM_SHARD; clap's
# `long, env`), so owned flags' variables are owned through Runtime.env_from_flags. PREFIX_CACHING has no
# flag: the Python server reads it.
OWNED_ENV = {"PREFIX_CACHING": "prefix_caching"}

# TGI's default admission limit (--max-concurrent-requests 128).
DEFAULT_CONCURRENCY = 128


def launch(k: runtimes.EngineKnobs) -> runtimes.Launch:
    args = runtimes.flags([
        ("--model-id", k.model),
        ("--served-model-name", k.served_model_name),
        ("--port", k.port),
        ("--num-shard", k.tensor_parallel),
        ("--max-batch-size", k.max_batch_size),
        # Admission must not be tighter than the batch, or the batch size would never be reached.
        ("--max-concurrent-requests", max(k.max_batch_size, DEFAULT_CONCURRENCY)),
        ("--kv-cache-dtype", "fp8_e4m3fn") if k.kv_cache_dtype is models.KvDtype.FP8 else None,
        ("--max-batch-prefill-tokens", k.max_num_batched_tokens) if k.max_num_batched_tokens else None,
        ("--cuda-memory-fraction", k.gpu_memory_utilization) if k.gpu_memory_utilization else None,
        ("--max-total-tokens", k.max_model_len) if k.max_model_len else None,
    ])
    env: tuple[tuple[str, str], ...] = ()
    if k.prefix_caching is not None:
        env = (("PREFIX_CACHING", "1" if k.prefix_caching else "0"),)
    return runtimes.Launch(command=None, args=args, env=env)


def default_max_batch_size(gpu: models.GpuSpec) -> int:
    return DEFAULT_CONCURRENCY


def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    get = runtimes.flag_value
    runtimes.put(out, "model", get(args, "--model-id"), str)
    runtimes.put(out, "served_model_name", get(args, "--served-model-name"), str)
    runtimes.put(out, "port", get(args, "--port"), int)
    runtimes.put(out, "tensor_parallel", get(args, "--num-shard"), int)
    runtimes.put(out, "max_batch_size", get(args, "--max-batch-size"), int)
    # Without the flag TGI keeps the model's dtype.
    out["kv_cache_dtype"] = runtimes.is_fp8(get(args, "--kv-cache-dtype") or "auto")
    runtimes.put(out, "max_num_batched_tokens", get(args, "--max-batch-prefill-tokens"), int)
    runtimes.put(out, "gpu_memory_utilization", get(args, "--cuda-memory-fraction"), float)
    runtimes.put(out, "max_model_len", get(args, "--max-total-tokens"), int)
    runtimes.put(out, "prefix_caching", env.get("PREFIX_CACHING"), runtimes.truthy)
    return out


RUNTIME = runtimes.Runtime(
    kind=models.EngineKind.TGI,
    variant="tgi",
    health_path="/health",
    metrics_path="/metrics",
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env=OWNED_ENV,
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    env_from_flags=True,
    # The image's weight cache (HUGGINGFACE_HUB_CACHE=/data), root-owned in the image.
    writable_paths=("/data",),
)
