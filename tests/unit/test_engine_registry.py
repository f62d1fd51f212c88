"""Test: the Engine values and their registry: one per variant, the CRD's kind enum held to the list, bad input."""

from __future__ import annotations

import dataclasses

import pytest

import specs
from infertune import crd, models, resolution, validation
from infertune.runtimes import metrics, registry, vllm


def test_every_kind_of_the_crd_enum_has_an_engine_and_every_engine_a_kind() -> None:
    kind = crd.openapi_schema()["properties"]["spec"]["properties"]["engine"]["properties"]["kind"]
    kinds = list(dict.fromkeys(e.kind for e in registry.ALL))
    assert kind["enum"] == [str(k) for k in models.EngineKind] == kinds


def test_variants_are_unique_and_name_their_dialects() -> None:
    variants = [e.variant for e in registry.ALL]
    assert len(set(variants)) == len(variants)
    assert all(e.dialect.name == e.variant and e.metrics_path == e.dialect.path for e in registry.ALL)


@pytest.mark.parametrize(("nim", "variant"), [
    (None, "nim-2-vllm"), ({"generation": 1}, "nim-1"), ({"generation": 2, "backend": "sglang"}, "nim-2-sglang"),
])
def test_nim_picks_its_variant_by_generation_and_backend(nim: dict[str, object] | None, variant: str) -> None:
    engine = models.EngineSpec.model_validate({"kind": "nim", "image": "x", **({"nim": nim} if nim else {})})
    assert registry.for_engine(engine).variant == variant


def test_every_engine_names_its_token_budget_flag() -> None:
    # The token budget is a knob every shipped engine has; its flag is read from the Engine value.
    flags = {e.variant: e.knob_flag("max_num_batched_tokens") for e in registry.ALL}
    assert flags["vllm"] == "--max-num-batched-tokens"
    assert flags["sglang"] == "--chunked-prefill-size"
    assert flags["trtllm"] == "--max_num_tokens"
    assert flags["tgi"] == "--max-batch-prefill-tokens"
    assert flags["nim-1"] == "env NIM_MAX_NUM_BATCHED_TOKENS"
    assert all(flags.values()), flags


def test_an_unknown_kind_or_variant_is_named() -> None:
    engine = models.EngineSpec.model_construct(kind="llamacpp", image="x")
    with pytest.raises(KeyError, match=r"no engine serves spec\.engine\.kind 'llamacpp'"):
        registry.for_engine(engine)
    with pytest.raises(KeyError, match="unknown engine variant 'llamacpp'; known: vllm, sglang"):
        registry.by_variant("llamacpp")


def test_an_engine_whose_dialect_is_not_its_own_is_refused() -> None:
    with pytest.raises(ValueError, match="engine vllm-copy: dialect is named 'vllm', not the variant"):
        dataclasses.replace(vllm.ENGINE, variant="vllm-copy")


def test_an_engine_with_an_unknown_knob_is_refused() -> None:
    with pytest.raises(ValueError, match=r"engine vllm: knob_flags names unknown knobs \['max_seqs'\]"):
        dataclasses.replace(vllm.ENGINE, knob_flags={**vllm.KNOB_FLAGS, "max_seqs": "--max-seqs"})


def test_the_engine_dialect_views_follow_the_registry() -> None:
    assert [d.name for d in registry.dialects()] == ["vllm", "sglang", "trtllm", "nim-1", "tgi"]
    assert [e.variant for e in registry.engines()] == [e.variant for e in registry.ALL]


@pytest.mark.parametrize("kind", ["vllm", "nim"])
def test_vllms_token_budget_check_runs_for_both_vllm_variants(kind: str) -> None:
    raw = specs.spec(**{"engine.kind": kind, "engine.maxNumBatchedTokens": 256,
                        "tuning.maxBatchSize": {"min": 8, "max": 512}})
    spec, problems = validation.parse(raw)
    assert spec is None
    assert [p.path for p in problems] == ["spec.engine.maxNumBatchedTokens"]
    assert "at least the largest batch (512); got 256" in problems[0].message


S = metrics.Signal


@pytest.mark.parametrize(("variant", "signal", "edges"), [
    ("vllm", S.TTFT, resolution.VLLM_TTFT), ("vllm", S.ITL, resolution.VLLM_TPOT),
    ("vllm", S.TPOT, resolution.VLLM_TPOT), ("nim-2-vllm", S.TPOT, resolution.VLLM_TPOT),
    ("sglang", S.TTFT, resolution.SGLANG_TTFT), ("sglang", S.ITL, resolution.SGLANG_ITL), ("sglang", S.TPOT, None),
    ("nim-2-sglang", S.ITL, resolution.SGLANG_ITL),
    ("trtllm", S.TTFT, resolution.VLLM_TTFT), ("trtllm", S.TPOT, resolution.VLLM_TPOT),
    ("nim-1", S.TTFT, resolution.VLLM_TTFT), ("nim-1", S.ITL, resolution.VLLM_TPOT), ("nim-1", S.TPOT, None),
    ("tgi", S.TTFT, None), ("tgi", S.TPOT, resolution.TGI_DURATION),
    # Token counts are histograms whose edges follow the model's length: no published default.
    ("tgi", S.PROMPT_TOKENS, None),
])
def test_each_engines_published_buckets_come_from_its_exposition(
        variant: str, signal: metrics.Signal, edges: tuple[float, ...] | None) -> None:
    assert registry.by_variant(variant).default_buckets(signal) == edges
