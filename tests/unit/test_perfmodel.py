"""Test: the replica physics — bytes, capacity, step times, roofline, monotonicity and bad input."""

from __future__ import annotations

import itertools
import math

import pydantic
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from infertune import catalog, models, perfmodel

FP8 = models.Precision.FP8
BF16 = models.Precision.BF16
KV_FP8 = models.KvDtype.FP8


def replica(gpu: str = "h100-sxm-80gb", model: str = "llama-3.1-70b", **kw: object) -> perfmodel.Replica:
    return perfmodel.Replica(gpu=catalog.gpu(gpu), model=catalog.model(model), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kw", "weights_per_gpu", "kv_per_token"),
    [
        # 70.6e9 x 2 B = 141.2 GB; 2 x 80 x 8 x 128 x 2 B = 327,680 B per token.
        ("70b bf16 tp1", {}, 141.2e9, 327_680),
        ("70b fp8 tp2", {"gpus": 2, "weights": FP8}, 35.3e9, 163_840),
        ("70b fp8 tp2 fp8 kv", {"gpus": 2, "weights": FP8, "kv_dtype": KV_FP8}, 35.3e9, 81_920),
        # 8 KV heads over 16 GPUs: each GPU still holds one head (replicated), 1/8 of the token's KV.
        ("70b bf16 tp16", {"gpus": 16}, 141.2e9 / 16, 327_680 / 8),
    ],
)
def test_bytes(name: str, kw: dict[str, object], weights_per_gpu: float, kv_per_token: float) -> None:
    r = replica(**kw)  # type: ignore[arg-type]
    assert perfmodel.weight_bytes_per_gpu(r) == pytest.approx(weights_per_gpu)
    assert perfmodel.kv_bytes_per_token_per_gpu(r) == pytest.approx(kv_per_token)


@pytest.mark.parametrize(
    ("name", "kw", "tokens"),
    [
        # (80 GiB x 0.9 - 35.3 GB - 3.85 GB) x 2 / 81,920 B = 465.8k tokens.
        ("70b fp8 tp2 fp8 kv", {"gpus": 2, "weights": FP8, "kv_dtype": KV_FP8}, 465_808),
        # 80 GiB x 0.9 - 70.6 GB - 3.5 GB = 3.21 GB / 327,680 B = 9.8k tokens: a handful of requests.
        ("70b fp8 on one h100", {"weights": FP8}, 9_792),
    ],
)
def test_kv_capacity(name: str, kw: dict[str, object], tokens: int) -> None:
    assert perfmodel.kv_capacity_tokens(replica(**kw)) == tokens  # type: ignore[arg-type]


def test_model_that_does_not_fit_says_by_how_much() -> None:
    r = replica("l4", "llama-3.1-405b")
    # 405e9 x 2 B = 754.4 GiB + 3.3 GiB overhead against 24 GiB x 0.9 = 21.6 GiB.
    with pytest.raises(perfmodel.ModelDoesNotFit, match=r"short by 736\.0 GiB") as err:
        perfmodel.kv_capacity_tokens(r)
    assert isinstance(err.value, ValueError)
    assert "llama-3.1-405b" in str(err.value) and "l4" in str(err.value)


@pytest.mark.parametrize(
    ("name", "lookup", "known"),
    [("gpu", lambda: catalog.gpu("h900"), "h100-sxm-80gb"), ("model", lambda: catalog.model("gpt-9"), "llama-3.1-8b")],
)
def test_unknown_catalog_keys_list_the_known_ones(name: str, lookup: object, known: str) -> None:
    with pytest.raises(catalog.UnknownKeyError, match=known):
        lookup()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "kw", "field"),
    [
        ("fp8 kv on a100", {"gpu": "a100-80gb", "kv_dtype": KV_FP8}, "kvDtype"),
        ("budget below seats", {"max_num_seqs": 512, "max_num_batched_tokens": 256}, "maxNumBatchedTokens"),
        ("zero gpus", {"gpus": 0}, "gpus"),
        ("hit rate above 1", {"prefix_cache_hit_rate": 1.5}, "prefix_cache_hit_rate"),
    ],
)
def test_bad_replica_names_the_field(name: str, kw: dict[str, object], field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        replica(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gpu", "seqs", "tokens"),
    [("h100-sxm-80gb", 1024, 8192), ("h200-sxm-141gb", 1024, 8192), ("a100-80gb", 256, 2048), ("l4", 256, 2048)],
)
def test_vllm_hardware_defaults(gpu: str, seqs: int, tokens: int) -> None:
    r = replica(gpu, "llama-3.1-8b")
    assert (r.seq_limit, r.token_budget) == (seqs, tokens)


def test_worked_numbers() -> None:
    r = replica(gpus=2, weights=FP8, kv_dtype=KV_FP8)
    # 5.0 ms fixed + 13.2 ms weights + 5,251 x 31 ns = 18.3 ms (NIM measured 18.6 ms).
    assert perfmodel.decode_step_time(r, batch=1, context=5250) == pytest.approx(0.0183, rel=0.01)
    # 5.0 + 266 GEMM + 36 all-reduce + 33 attention = 341 ms for a 5,000-token prompt.
    assert perfmodel.prefill_time(r, tokens=5000) == pytest.approx(0.341, rel=0.01)
    # Half the prompt from the prefix cache roughly halves the GEMM work.
    assert perfmodel.prefill_time(r, tokens=5000, cached=2496) < 0.6 * perfmodel.prefill_time(r, tokens=5000)


def test_moe_reads_more_experts_as_the_batch_grows() -> None:
    c = perfmodel.coefficients(replica(model="mixtral-8x7b", weights=FP8))
    reads = [c.weight_seconds(n) for n in (1, 2, 8, 64, 512)]
    assert reads == sorted(reads)
    assert reads[0] == pytest.approx(c.weight_s * 12.9 / 46.7)  # one token: the active parameters
    assert reads[-1] == pytest.approx(c.weight_s, rel=1e-6)  # a big batch touches every expert


def test_mbu_is_a_share() -> None:
    r = replica(gpus=2, weights=FP8)
    assert perfmodel.mbu(r, bytes_per_gpu=35.7e9, seconds=0.0186) == pytest.approx(0.573, rel=0.01)
    assert perfmodel.mbu(r, bytes_per_gpu=1e15, seconds=0.01) == 1.0
    assert perfmodel.mbu(r, bytes_per_gpu=1e9, seconds=0.0) == 0.0


_fits = [
    (g, m, n, w)
    for g in catalog.GPUS
    for m in catalog.MODELS
    for n in (1, 2, 4, 8)
    for w in (BF16, FP8)
]


@settings(max_examples=300, deadline=None)
@given(
    combo=st.sampled_from(_fits),
    batch=st.integers(1, 1024),
    context=st.integers(1, 32_768),
    prefill=st.integers(0, 16_384),
)
def test_never_faster_than_the_roofline(
    combo: tuple[str, str, int, models.Precision], batch: int, context: int, prefill: int
) -> None:
    gpu, model, gpus, weights = combo
    r = replica(gpu, model, gpus=gpus, weights=weights)
    try:
        c = perfmodel.coefficients(r)
    except perfmodel.ModelDoesNotFit:
        assume(False)
        return
    tokens = batch + prefill
    kv = float(batch * context + prefill)
    pairs = prefill * (prefill + 1) / 2.0
    t = c.step_seconds(tokens, kv, pairs)
    assert t >= perfmodel.roofline_step_time(r, tokens=tokens, kv_tokens=kv, attention_pairs=pairs)
    assert 0.0 <= perfmodel.mbu(r, bytes_per_gpu=c.bytes_moved(tokens, kv), seconds=t) <= 1.0


@settings(max_examples=60, deadline=None)
@given(combo=st.sampled_from(_fits))
def test_fp8_kv_never_lowers_capacity(combo: tuple[str, str, int, models.Precision]) -> None:
    gpu, model, gpus, weights = combo
    assume(catalog.gpu(gpu).supports_fp8)
    try:
        base = perfmodel.kv_capacity_tokens(replica(gpu, model, gpus=gpus, weights=weights))
    except perfmodel.ModelDoesNotFit:
        assume(False)
        return
    fp8 = perfmodel.kv_capacity_tokens(replica(gpu, model, gpus=gpus, weights=weights, kv_dtype=KV_FP8))
    assert fp8 >= base
    assert fp8 == pytest.approx(2 * base, abs=2 * 16)


@pytest.mark.parametrize(
    ("name", "kw", "isl", "osl"),
    [
        ("70b tp2 nim", {"gpus": 2, "weights": FP8, "kv_dtype": KV_FP8}, 5000, 500),
        ("8b chat", {}, 1000, 200),
        ("70b one gpu", {"weights": FP8}, 500, 500),
    ],
)
def test_operating_point_itl_rises_with_concurrency(name: str, kw: dict[str, object], isl: int, osl: int) -> None:
    model = "llama-3.1-8b" if name.startswith("8b") else "llama-3.1-70b"
    r = replica(model=model, **kw)  # type: ignore[arg-type]
    points = [perfmodel.operating_point(r, concurrency=n, isl=isl, osl=osl) for n in (1, 2, 4, 8, 16, 64, 256, 1024)]
    itl = [p.itl_s for p in points]
    ttft = [p.ttft_s for p in points]
    thr = [p.output_tokens_per_s for p in points]
    assert itl == sorted(itl)
    assert ttft == sorted(ttft)
    assert all(b >= a * 0.999 for a, b in itertools.pairwise(thr))
    assert all(0 < p.mbu <= 1 and 0 < p.kv_usage <= 1 for p in points)


def test_operating_point_explains_the_nim_knee() -> None:
    r = replica(model="llama-3.3-70b", gpus=2, weights=FP8, kv_dtype=KV_FP8)
    below = perfmodel.operating_point(r, concurrency=50, isl=5000, osl=500)
    above = perfmodel.operating_point(r, concurrency=150, isl=5000, osl=500)
    assert below.limited_by == "concurrency"
    # ~466k tokens of FP8 KV / 5,250 tokens per sequence: about 88 sequences fit.
    assert above.limited_by == "kv_cache" and 80 <= above.batch <= 90
    assert above.ttft_s > 20 * below.ttft_s


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("zero concurrency", {"concurrency": 0, "isl": 100, "osl": 100}, "concurrency"),
        ("zero osl", {"concurrency": 1, "isl": 100, "osl": 0}, "osl"),
        ("longer than the kv cache", {"concurrency": 1, "isl": 20_000, "osl": 100}, "exceeds the KV cache"),
    ],
)
def test_operating_point_bad_input(name: str, kw: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        perfmodel.operating_point(replica(weights=FP8), **kw)


def test_operating_point_is_fast() -> None:
    import time

    r = replica(gpus=2, weights=FP8)
    perfmodel.operating_point(r, concurrency=1, isl=1000, osl=100)
    start = time.perf_counter()
    for n in range(1, 1001):
        perfmodel.operating_point(r, concurrency=n, isl=1000, osl=100)
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} us per call"
    assert not math.isnan(per_call)


def test_prefill_wait_grows_with_the_spread_of_the_prefills() -> None:
    # Pollaczek-Khinchine: the M/D/1 wait times (1 + cv2). 1 s of prefill at a load of 0.5: 0.5 s of wait alike,
    # 1.5 s when the prefills' cv2 is 2.
    assert perfmodel.prefill_ttft(1.0, 0.5) == pytest.approx(1.5)
    assert perfmodel.prefill_ttft(1.0, 0.5, 2.0) == pytest.approx(2.5)
    assert perfmodel.prefill_ttft(1.0, 0.5, -1.0) == pytest.approx(1.5)  # no negative variance
    assert perfmodel.prefill_ttft(1.0, 0.0, 9.0) == pytest.approx(1.0)  # nobody to wait behind


def test_prefill_spread_of_alike_prompts_is_none() -> None:
    r = replica(weights=FP8)
    assert perfmodel.prefill_spread(r, [(2000.0, 3.0)]) == perfmodel.PrefillSpread(mean_ratio=1.0, cv2=0.0)
    assert perfmodel.prefill_spread(r, []) == perfmodel.NO_SPREAD
    assert perfmodel.prefill_spread(r, [(0.0, 1.0), (100.0, 0.0)]) == perfmodel.NO_SPREAD


def test_prefill_spread_of_long_prompts_is_wider_than_their_tokens() -> None:
    # Half the prompts 1,000 tokens, half 31,000: tokens cv2 (15,000 / 16,000)^2 = 0.88. Attention grows with the
    # square of a prompt, so the long ones' prefills weigh more than their share of tokens.
    r = replica("h200-sxm-141gb", "qwen2.5-72b", weights=FP8)
    s = perfmodel.prefill_spread(r, [(1000.0, 1.0), (31000.0, 1.0)])
    assert s.cv2 > (15_000 / 16_000) ** 2
    assert s.mean_ratio > 1.0
    # Short prompts (chat on 70B): the GEMMs dominate, and the prefill's spread is the tokens'.
    chat = perfmodel.prefill_spread(replica(weights=FP8), [(500.0, 1.0), (1500.0, 1.0)])
    assert chat.mean_ratio == pytest.approx(1.0, abs=0.02) and chat.cv2 == pytest.approx(0.25, rel=0.1)


def test_operating_point_waits_longer_behind_varied_prompts() -> None:
    r = replica(weights=FP8)
    alike = perfmodel.operating_point(r, concurrency=3, isl=2000, osl=200)
    varied = perfmodel.operating_point(r, concurrency=3, isl=2000, osl=200,
                                       spread=perfmodel.PrefillSpread(mean_ratio=1.0, cv2=1.0))
    assert varied.prefill_cv2 == 1.0 and alike.prefill_cv2 == 0.0
    assert varied.prefill_s == alike.prefill_s and varied.requests_per_s == alike.requests_per_s
    assert varied.ttft_s > alike.ttft_s
    longer = perfmodel.operating_point(r, concurrency=3, isl=2000, osl=200,
                                       spread=perfmodel.PrefillSpread(mean_ratio=1.5))
    assert longer.prefill_s == pytest.approx(1.5 * alike.prefill_s)
    assert longer.requests_per_s < alike.requests_per_s
