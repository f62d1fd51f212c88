"""Pure: the NVIDIA NIM for LLMs engines: 1.x NIM_* variables, 2.x vLLM/SGLang flags in NIM_PASSTHROUGH_ARGS."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence

from infertune import models, runtimes
from infertune.runtimes import metrics, sglang, twin, vllm

HEALTH = "/v1/health/ready"
# NIM 2.x hands the backend the arguments in this variable, shell-quoted.
PASSTHROUGH = "NIM_PASSTHROUGH_ARGS"

# NIM 1.x: documented NIM_ENABLE_KV_CACHE_REUSE and NIM_MAX_MODEL_LEN; the batch and memory variables
# are seen only in third-party deployment files, so they are marked as such in docs.
NIM1_ENV = {
    "max_batch_size": "NIM_MAX_NUM_SEQS",
    "chunked_prefill": "NIM_ENABLE_CHUNKED_PREFILL",
    "max_num_batched_tokens": "NIM_MAX_NUM_BATCHED_TOKENS",
    "prefix_caching": "NIM_ENABLE_KV_CACHE_REUSE",
    "gpu_memory_utilization": "NIM_GPU_MEM_FRACTION",
    "served_model_name": "NIM_SERVED_MODEL_NAME",
    "port": "NIM_SERVER_PORT",
    "max_model_len": "NIM_MAX_MODEL_LEN",
}
# NIM 1.x picks precision, KV dtype and tensor parallelism through a model profile (NIM_MODEL_PROFILE),
# which the operator does not own: those knobs are absent here and the tuner leaves them alone.

NIM2_ENV = {"served_model_name": "NIM_SERVED_MODEL_NAME", "port": "NIM_SERVER_PORT"}


def _mapped_env(flags: Mapping[str, str], knobs: Collection[str] | None = None) -> dict[str, str]:
    """NIM_<FLAG> for each owned backend flag: NIM maps NIM_* variables onto the backend's arguments
    (NIM 2.x configuration priority 3: NIM_TENSOR_PARALLEL_SIZE <-> --tensor-parallel-size); a variable that
    names an owned flag is owned, whether or not this NIM version reads it."""
    # The model is the user's to choose in NIM (NIM_MODEL_PATH); the operator never sets it.
    return {f"NIM_{runtimes.flag_env_name(flag)}": knob for flag, knob in flags.items()
            if len(flag) > 4 and knob != "model" and (knobs is None or knob in knobs)}


NIM1_OWNED_ENV = {**_mapped_env(vllm.OWNED_FLAGS, NIM1_ENV), **{v: k for k, v in NIM1_ENV.items()}}
# CLI arguments outrank NIM_PASSTHROUGH_ARGS, which outranks NIM_* variables (NIM 2.x configuration priority):
# the user's args and variables may set none of the backend's owned flags.
NIM2_OWNED_ENV = {
    **_mapped_env(vllm.OWNED_FLAGS), **_mapped_env(sglang.OWNED_FLAGS), **NIM1_OWNED_ENV,
    PASSTHROUGH: "max_batch_size", **{v: k for k, v in NIM2_ENV.items()},
}
# Where NIM downloads and unpacks the model (NIM_CACHE_PATH's default); root-owned in the image.
CACHE_PATH = "/opt/nim/.cache"


def _bool(on: bool) -> str:
    return "1" if on else "0"


def launch_1(k: runtimes.EngineKnobs) -> runtimes.Launch:
    env: list[tuple[str, str]] = [
        ("NIM_SERVED_MODEL_NAME", k.served_model_name),
        ("NIM_SERVER_PORT", str(k.port)),
        ("NIM_MAX_NUM_SEQS", str(k.max_batch_size)),
    ]
    if k.chunked_prefill is not None:
        env.append(("NIM_ENABLE_CHUNKED_PREFILL", _bool(k.chunked_prefill)))
    if k.max_num_batched_tokens:
        env.append(("NIM_MAX_NUM_BATCHED_TOKENS", str(k.max_num_batched_tokens)))
    if k.prefix_caching is not None:
        env.append(("NIM_ENABLE_KV_CACHE_REUSE", _bool(k.prefix_caching)))
    if k.gpu_memory_utilization:
        env.append(("NIM_GPU_MEM_FRACTION", str(k.gpu_memory_utilization)))
    if k.max_model_len:
        env.append(("NIM_MAX_MODEL_LEN", str(k.max_model_len)))
    return runtimes.Launch(command=None, args=(), env=tuple(env))


def _launch_2(backend_flags: tuple[str, ...], k: runtimes.EngineKnobs) -> runtimes.Launch:
    env = (
        ("NIM_SERVED_MODEL_NAME", k.served_model_name),
        ("NIM_SERVER_PORT", str(k.port)),
        # The passthrough string is split by a shell-like parser; quote each token so hostile values stay one token.
        (PASSTHROUGH, shlex.join(backend_flags)),
    )
    return runtimes.Launch(command=None, args=(), env=env)


def launch_2_vllm(k: runtimes.EngineKnobs) -> runtimes.Launch:
    return _launch_2(vllm.engine_flags(k), k)


def launch_2_sglang(k: runtimes.EngineKnobs) -> runtimes.Launch:
    # --enable-metrics stays in: SGLang exports nothing without it.
    return _launch_2(sglang.engine_flags(k), k)


def read_1(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    runtimes.put(out, "served_model_name", env.get("NIM_SERVED_MODEL_NAME"), str)
    runtimes.put(out, "port", env.get("NIM_SERVER_PORT"), int)
    runtimes.put(out, "max_batch_size", env.get("NIM_MAX_NUM_SEQS"), int)
    runtimes.put(out, "chunked_prefill", env.get("NIM_ENABLE_CHUNKED_PREFILL"), runtimes.truthy)
    runtimes.put(out, "max_num_batched_tokens", env.get("NIM_MAX_NUM_BATCHED_TOKENS"), int)
    runtimes.put(out, "prefix_caching", env.get("NIM_ENABLE_KV_CACHE_REUSE"), runtimes.truthy)
    runtimes.put(out, "gpu_memory_utilization", env.get("NIM_GPU_MEM_FRACTION"), float)
    runtimes.put(out, "max_model_len", env.get("NIM_MAX_MODEL_LEN"), int)
    return out


Reader = Callable[[Sequence[str], Mapping[str, str], Mapping[str, str]], dict[str, object]]


def _read_2(flags: Callable[[Sequence[str]], dict[str, object]]) -> Reader:
    def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
        # CLI arguments after nim-serve outrank NIM_PASSTHROUGH_ARGS (NIM 2.x configuration priority).
        out = flags(shlex.split(env.get(PASSTHROUGH, "")))
        out.update(flags(list(args)))
        runtimes.put(out, "served_model_name", env.get("NIM_SERVED_MODEL_NAME"), str)
        runtimes.put(out, "port", env.get("NIM_SERVER_PORT"), int)
        return out

    return read


def _passthrough(flags: dict[str, str]) -> dict[str, str]:
    return {knob: f"NIM_PASSTHROUGH_ARGS {flag}" for knob, flag in flags.items() if knob not in NIM2_ENV}


# NIM 1.x (docs.nvidia.com/nim/large-language-models/latest/observability): unprefixed names at /v1/metrics.
S = metrics.Signal
DIALECT_1 = metrics.Dialect("nim-1", "/v1/metrics", {
    S.TTFT: metrics.source("time_to_first_token_seconds"),
    S.ITL: metrics.source("time_per_output_token_seconds"),
    S.E2E: metrics.source("e2e_request_latency_seconds"),
    S.RUNNING: metrics.source("num_requests_running"),
    S.WAITING: metrics.source("num_requests_waiting"),
    S.KV_USAGE: metrics.source("gpu_cache_usage_perc"),
    S.PROMPT_TOKENS: metrics.source("prompt_tokens_total"),
    S.GENERATION_TOKENS: metrics.source("generation_tokens_total"),
    S.PROMPT_LENGTH: metrics.source("request_prompt_tokens"),
    S.GENERATION_LENGTH: metrics.source("request_generation_tokens"),
})
# NIM 2.x runs vLLM or SGLang images and exports their metrics, at /v1/metrics.
DIALECT_2_VLLM = dataclasses.replace(vllm.DIALECT, name="nim-2-vllm", path="/v1/metrics")
DIALECT_2_SGLANG = dataclasses.replace(sglang.DIALECT, name="nim-2-sglang", path="/v1/metrics")


def _exposition_1(d: metrics.Dialect) -> twin.Exposition:
    """Per model; NIM 1.x's histograms are vLLM V0's (time per output token observed per token there)."""
    s, h, g, c, M = metrics.Signal, twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.Kind.COUNTER, twin.MetricSpec

    def n(signal: metrics.Signal) -> str:
        return twin.name(d, signal)

    return twin.Exposition(
        labels=(("model_name", "model_name"),),
        metrics={
            twin.TTFT: M(n(s.TTFT), h, "Time to first token, seconds.", buckets=vllm.TTFT_BUCKETS),
            twin.ITL: M(n(s.ITL), h, "Time per output token, seconds.", buckets=vllm.TPOT_BUCKETS),
            twin.E2E: M(n(s.E2E), h, "End-to-end request latency, seconds.", buckets=vllm.LATENCY_BUCKETS),
            twin.PROMPT_LEN: M(n(s.PROMPT_LENGTH), h, "Prompt tokens per request."),
            twin.GENERATION_LEN: M(n(s.GENERATION_LENGTH), h, "Output tokens per request."),
            twin.RUNNING: M(n(s.RUNNING), g, "Requests running on the GPU."),
            twin.WAITING: M(n(s.WAITING), g, "Requests waiting to be processed."),
            twin.MAX_RUNNING: M("num_request_max", g, "Requests the model may run at once."),
            twin.KV_USAGE: M(n(s.KV_USAGE), g, "GPU KV-cache usage, 1 means 100 percent."),
            twin.PROMPT_TOKENS: M(n(s.PROMPT_TOKENS), c, "Prefill tokens processed."),
            twin.GENERATION_TOKENS: M(n(s.GENERATION_TOKENS), c, "Generation tokens processed."),
        },
    )


# NIM's images are per model; this one serves Llama 3.1 8B (NIM 1.x).
SAMPLE_IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8.0"


def _generation(n: int, backend: str | None = None) -> Callable[[models.EngineSpec], bool]:
    def selects(engine: models.EngineSpec) -> bool:
        settings = engine.nim or models.NimSpec()
        return settings.generation == n and (backend is None or settings.backend == backend)

    return selects


ENGINE_1 = runtimes.Engine(
    kind=models.EngineKind.NIM,
    variant="nim-1",
    health_path=HEALTH,
    dialect=DIALECT_1,
    exposition=_exposition_1(DIALECT_1),
    launch=launch_1,
    knob_flags={knob: f"env {var}" for knob, var in NIM1_ENV.items()},
    owned_flags={},
    owned_env=NIM1_OWNED_ENV,
    default_max_batch_size=vllm.default_max_batch_size,
    fp8_kv=False,
    read=read_1,
    sample_image=SAMPLE_IMAGE,
    selects=_generation(1),
    writable_paths=(CACHE_PATH,),
)

ENGINE_2_VLLM = runtimes.Engine(
    kind=models.EngineKind.NIM,
    variant="nim-2-vllm",
    health_path=HEALTH,
    dialect=DIALECT_2_VLLM,
    exposition=vllm.EXPOSITION,
    launch=launch_2_vllm,
    knob_flags={**_passthrough(vllm.KNOB_FLAGS), **{k: f"env {v}" for k, v in NIM2_ENV.items()}},
    owned_flags=vllm.OWNED_FLAGS,
    owned_env=NIM2_OWNED_ENV,
    default_max_batch_size=vllm.default_max_batch_size,
    fp8_kv=True,
    read=_read_2(vllm.read_flags),
    sample_image=SAMPLE_IMAGE,
    selects=_generation(2, "vllm"),
    args_env=PASSTHROUGH,
    checks=vllm.check_budget,
    prefix_matching=True,
    writable_paths=(CACHE_PATH,),
)

ENGINE_2_SGLANG = runtimes.Engine(
    kind=models.EngineKind.NIM,
    variant="nim-2-sglang",
    health_path=HEALTH,
    dialect=DIALECT_2_SGLANG,
    exposition=sglang.EXPOSITION,
    launch=launch_2_sglang,
    knob_flags={**_passthrough(sglang.KNOB_FLAGS), **{k: f"env {v}" for k, v in NIM2_ENV.items()}},
    owned_flags=sglang.OWNED_FLAGS,
    owned_env=NIM2_OWNED_ENV,
    default_max_batch_size=sglang.default_max_batch_size,
    fp8_kv=True,
    read=_read_2(sglang.read_flags),
    sample_image=SAMPLE_IMAGE,
    selects=_generation(2, "sglang"),
    args_env=PASSTHROUGH,
    prefix_matching=True,
    writable_paths=(CACHE_PATH,),
)
