"""Pure: Toy, a fake engine: one flag per knob it has, one metric per signal it exports, one check of its own."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from infertune import models, runtimes
from infertune.runtimes import metrics, twin


class Kind(enum.StrEnum):  # stands in for models.EngineKind, which a test cannot extend
    TOY = "toy"


# knob -> how the engine sets it (the docs table prints these; the tuner looks a knob's flag up here).
KNOB_FLAGS = {
    "max_batch_size": "--max-seqs",
    "kv_cache_dtype": "--kv-dtype fp8|auto",
    "max_num_batched_tokens": "--step-tokens",
    "tensor_parallel": "--gpus",
    "served_model_name": "--name",
    "port": "--port",
}
# Every spelling that sets an owned knob, aliases included: a user's engine.args may hold none of them.
OWNED_FLAGS = {
    "--model": "model",
    "--max-seqs": "max_batch_size",
    "--kv-dtype": "kv_cache_dtype",
    "--step-tokens": "max_num_batched_tokens",
    "--gpus": "tensor_parallel",
    "--name": "served_model_name",
    "--port": "port",
    "--host": "port",
}
# ... and every variable: a user's engine.env may hold none of them.
OWNED_ENV = {"TOY_MAX_SEQS": "max_batch_size"}
MAX_SEQS = 256  # Toy's slot table is fixed at 256 sequences


def launch(k: runtimes.EngineKnobs) -> runtimes.Launch:
    return runtimes.Launch(command=("toy-serve",), args=runtimes.flags([
        ("--model", k.model), ("--name", k.served_model_name), ("--port", k.port), ("--gpus", k.tensor_parallel),
        ("--max-seqs", k.max_batch_size),
        ("--kv-dtype", "fp8" if k.kv_cache_dtype is models.KvDtype.FP8 else "auto"),
        ("--step-tokens", k.max_num_batched_tokens) if k.max_num_batched_tokens else None,
    ]))


def read(args: Sequence[str], env: Mapping[str, str], files: Mapping[str, str]) -> dict[str, object]:
    """The inverse of launch: the knobs a pod's command line sets."""
    out: dict[str, object] = {}
    get = runtimes.flag_value
    runtimes.put(out, "model", get(args, "--model"), str)
    runtimes.put(out, "served_model_name", get(args, "--name"), str)
    runtimes.put(out, "port", get(args, "--port"), int)
    runtimes.put(out, "tensor_parallel", get(args, "--gpus"), int)
    runtimes.put(out, "max_batch_size", get(args, "--max-seqs"), int)
    runtimes.put(out, "kv_cache_dtype", get(args, "--kv-dtype"), runtimes.is_fp8)
    runtimes.put(out, "max_num_batched_tokens", get(args, "--step-tokens"), int)
    return out


def check(spec: models.InferenceDeploymentSpec) -> list[tuple[str, str]]:
    if spec.tuning.max_batch_size.max > MAX_SEQS:
        return [("spec.tuning.maxBatchSize.max", f"toy runs at most {MAX_SEQS} sequences")]
    return []


# The metric names the operator queries, and the path they are served at.
S = metrics.Signal
DIALECT = metrics.Dialect("toy", "/stats", {
    S.TTFT: metrics.source("toy_ttft_seconds"),
    S.ITL: metrics.source("toy_itl_seconds"),
    S.TPOT: metrics.source("toy_tpot_seconds"),
    S.E2E: metrics.source("toy_e2e_seconds"),
    S.RUNNING: metrics.source("toy_running"),
    S.WAITING: metrics.source("toy_waiting"),
    S.KV_USAGE: metrics.source("toy_kv_usage"),
    S.PROMPT_TOKENS: metrics.source("toy_prompt_tokens_total"),
    S.GENERATION_TOKENS: metrics.source("toy_generation_tokens_total"),
})
BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)


def _spec(signal: metrics.Signal, kind: twin.Kind, text: str) -> twin.MetricSpec:
    buckets = BUCKETS if kind is twin.Kind.HISTOGRAM else None
    return twin.MetricSpec(twin.name(DIALECT, signal), kind, text, buckets=buckets)


# What the twin serves for a Toy pod: the same names, with their types, labels and buckets.
H, G, C = twin.Kind.HISTOGRAM, twin.Kind.GAUGE, twin.Kind.COUNTER
EXPOSITION = twin.Exposition(labels=(("model", "model_name"),), metrics={
    twin.TTFT: _spec(S.TTFT, H, "Time to first token, seconds."),
    twin.ITL: _spec(S.ITL, H, "Time between output tokens, seconds."),
    twin.TPOT: _spec(S.TPOT, H, "Mean time per output token of each request, seconds."),
    twin.E2E: _spec(S.E2E, H, "Request latency, seconds."),
    twin.RUNNING: _spec(S.RUNNING, G, "Requests in the batch."),
    twin.WAITING: _spec(S.WAITING, G, "Requests queued."),
    twin.KV_USAGE: _spec(S.KV_USAGE, G, "KV cache in use, 0-1."),
    twin.PROMPT_TOKENS: _spec(S.PROMPT_TOKENS, C, "Prompt tokens processed."),
    twin.GENERATION_TOKENS: _spec(S.GENERATION_TOKENS, C, "Tokens generated."),
})

ENGINE = runtimes.Engine(
    kind=Kind.TOY,
    variant="toy",
    health_path="/ready",
    dialect=DIALECT,
    exposition=EXPOSITION,
    launch=launch,
    knob_flags=KNOB_FLAGS,
    owned_flags=OWNED_FLAGS,
    owned_env=OWNED_ENV,
    default_max_batch_size=lambda gpu: 64,
    fp8_kv=True,
    read=read,
    sample_image="toy/toy-serve:1.0",
    checks=check,
)
