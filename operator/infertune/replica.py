"""Pure: spec + knobs -> the performance model's replica, the one view of a replica the knee, the planner and the
twin all start from."""

from __future__ import annotations

from infertune import catalog, models, perfmodel
from infertune.runtimes import registry


def of(
    spec: models.InferenceDeploymentSpec, knobs: models.Knobs, *, prefix_cache_hit_rate: float = 0.0
) -> perfmodel.Replica:
    """The performance model's view of one replica of this spec running these knobs."""
    runtime = registry.for_engine(spec.engine)
    e = spec.engine
    chunked = runtime.chunked_prefill_default if e.chunked_prefill is None else e.chunked_prefill
    budget = knobs.max_num_batched_tokens or e.max_num_batched_tokens
    if budget is not None and budget < knobs.max_batch_size:
        # The engine refuses such a pair (validation stops it for vLLM); the twin runs the batch-sized budget.
        budget = knobs.max_batch_size
    return perfmodel.Replica(
        gpu=catalog.resolve_gpu(spec.accelerator),
        model=catalog.resolve_model(spec.model),
        gpus=spec.accelerator.count,
        weights=spec.model.weights,
        kv_dtype=knobs.kv_cache_dtype,
        gpu_memory_utilization=e.gpu_memory_utilization or 0.9,
        max_num_seqs=knobs.max_batch_size,
        max_num_batched_tokens=budget if budget is not None else max(knobs.max_batch_size, default_budget(spec)),
        chunked_prefill=chunked,
        prefix_caching=e.prefix_caching is not False,
        prefix_cache_hit_rate=prefix_cache_hit_rate if e.prefix_caching is not False else 0.0,
    )


def default_budget(spec: models.InferenceDeploymentSpec) -> int:
    # vLLM's OpenAI-server defaults: 8192 tokens per step on >= 70 GiB GPUs that are not A100, else 2048.
    gpu = catalog.resolve_gpu(spec.accelerator)
    return 8192 if gpu.memory_gib >= 70 and not gpu.name.startswith("a100") else 2048
