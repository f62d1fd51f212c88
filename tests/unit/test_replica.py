"""Test: spec + knobs -> the performance model's replica (replica.of), the one view the knee, planner and twin share."""

from __future__ import annotations

from typing import Any

import pytest

import specs
from infertune import models, replica, validation

KNOBS = models.Knobs(max_batch_size=64, kv_cache_dtype=models.KvDtype.DEFAULT)


def spec_of(**changes: Any) -> models.InferenceDeploymentSpec:
    spec, problems = validation.parse(specs.spec(**{"accelerator.type": "h100-sxm-80gb", **changes}))
    assert spec is not None, problems
    return spec


@pytest.mark.parametrize(("gpu", "budget"), [("h100-sxm-80gb", 8192), ("a100-80gb", 2048), ("l40s", 2048)])
def test_the_token_budget_is_vllms_default_for_the_gpu(gpu: str, budget: int) -> None:
    assert replica.of(spec_of(**{"accelerator.type": gpu}), KNOBS).max_num_batched_tokens == budget


def test_a_budget_below_the_batch_runs_at_the_batch() -> None:
    # Validation refuses the pair for vLLM; the twin still has to run whatever a pod was started with.
    spec = spec_of()
    spec = spec.model_copy(update={"engine": spec.engine.model_copy(update={"max_num_batched_tokens": 32})})
    r = replica.of(spec, KNOBS)
    assert (r.max_num_seqs, r.max_num_batched_tokens) == (64, 64)


def test_the_knobs_and_the_spec_reach_the_replica() -> None:
    fp8 = models.Knobs(max_batch_size=24, kv_cache_dtype=models.KvDtype.FP8)
    r = replica.of(spec_of(**{"accelerator.count": 2, "engine.gpuMemoryUtilization": 0.8}), fp8)
    assert (r.gpus, r.max_num_seqs, r.kv_dtype, r.gpu_memory_utilization) == (2, 24, models.KvDtype.FP8, 0.8)


def test_prefix_caching_off_means_no_hits() -> None:
    assert replica.of(spec_of(), KNOBS, prefix_cache_hit_rate=0.4).prefix_cache_hit_rate == 0.4
    off = replica.of(spec_of(**{"engine.prefixCaching": False}), KNOBS, prefix_cache_hit_rate=0.4)
    assert (off.prefix_caching, off.prefix_cache_hit_rate) == (False, 0.0)


def test_chunked_prefill_follows_the_engine_unless_the_spec_says() -> None:
    assert replica.of(spec_of(), KNOBS).chunked_prefill is True  # vLLM V1 chunks prefills by default
    assert replica.of(spec_of(**{"engine.kind": "trtllm"}), KNOBS).chunked_prefill is False
    assert replica.of(spec_of(**{"engine.chunkedPrefill": False}), KNOBS).chunked_prefill is False
