"""Pure: the Text Generation Inference engine (legacy): launcher flags (docs/source/reference/launcher.md), metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infertune import models, runtimes
from infertune.runtimes import metrics, twin

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


# TGI (docs/source/reference/metrics.md): no TTFT, no KV usage, no prefix cache; token counts only as
# the _sum of per-request length histograms.
S = metrics.Signal
DIALECT = metrics.Dialect("tgi", "/metrics", {
    S.ITL: metrics.source("tgi_request_mean_time_per_token_duration"),
    S.TPOT: metrics.source("tgi_request_mean_time_per_token_duration"),  # a per-request mean
    S.E2E: metrics.source("tgi_request_duration"),
    S.QUEUE: metrics.source("tgi_request_queue_duration"),
    S.RUNNING: metrics.source("tgi_batch_current_size"),
    S.WAITING: metrics.source("tgi_queue_size"),
    S.PROMPT_TOKENS: metrics.source("tgi_request_input_length", kind=metrics.Kind.HISTOGRAM_SUM),
    S.GENERATION_TOKENS: metrics.source("tgi_request_generated_tokens", kind=metrics.Kind.HISTOGRAM_SUM),
    S.PROMPT_LENGTH: metrics.source("tgi_request_input_length"),
    S.GENERATION_LENGTH: metrics.source("tgi_request_generated_tokens"),
})


def geometric(start: float, factor: float, n: int) -> tuple[float, ...]:
    """start x factor, x factor again, ... n times, multiplied step by step as TGI does (same float bits)."""
    out, value = [], start
    for _ in range(n):
        value *= factor
        out.append(value)
    return tuple(out)


# router/src/server.rs: durations in 35 geometric buckets from 0.15 ms (x1.5 each: 0.0001 x 1.5^35 = 146 s).
DURATION_BUCKETS = geometric(0.0001, 1.5, 35)


def linear_100(limit: int) -> tuple[float, ...]:
    """TGI's token-length buckets: limit/100 x 1..100 (8,192 tokens -> 81.92, 163.84, ... 8,192)."""
    return tuple(limit / 100.0 * (k + 1) for k in range(100))


def _exposition(d: metrics.Dialect) -> twin.Exposition:
    """No labels; durations in the geometric buckets, token lengths in 100 linear buckets up to the model's
    length. No TTFT, no KV usage, no prefix cache, no preemption series."""
    s, h, g, M = metrics.Signal, twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.MetricSpec
    duration = DURATION_BUCKETS

    def n(signal: metrics.Signal) -> str:
        return twin.name(d, signal)

    return twin.Exposition(
        labels=(),
        metrics={
            # TGI observes each request's inference time / generated tokens; the twin's per-request TPOT leaves
            # out the prefill (one step of ~50 ms against 200 x 20 ms of decode: 1% lower).
            twin.TPOT: M(n(s.TPOT), h, "Mean time per token per request, seconds.", buckets=duration),
            twin.E2E: M(n(s.E2E), h, "Total time spent on the request, seconds.", buckets=duration),
            twin.QUEUE: M(n(s.QUEUE), h, "Time spent in the queue, seconds.", buckets=duration),
            twin.INFERENCE: M("tgi_request_inference_duration", h, "Request inference, seconds.", buckets=duration),
            # The operator reads token rates from these histograms' _sum: counted when a request ends.
            # The router validates (and observes) a prompt as it arrives; the twin observes it at the first token.
            twin.PROMPT_LEN_STARTED: M(n(s.PROMPT_TOKENS), h, "Input tokens per request.", buckets=linear_100),
            twin.GENERATION_LEN: M(n(s.GENERATION_TOKENS), h, "Generated tokens per request.", buckets=linear_100),
            twin.RUNNING: M(n(s.RUNNING), g, "Current batch size."),
            twin.WAITING: M(n(s.WAITING), g, "Current queue size."),
        },
    )


ENGINE = runtimes.Engine(
    kind=models.EngineKind.TGI,
    variant="tgi",
    health_path="/health",
    dialect=DIALECT,
    exposition=_exposition(DIALECT),
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env=OWNED_ENV,
    default_max_batch_size=default_max_batch_size,
    fp8_kv=True,
    read=read,
    sample_image="ghcr.io/huggingface/text-generation-inference:3.3.4",
    env_from_flags=True,
    # The image's weight cache (HUGGINGFACE_HUB_CACHE=/data), root-owned in the image.
    writable_paths=("/data",),
)
