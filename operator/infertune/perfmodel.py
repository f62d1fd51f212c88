"""Pure: the physics of one replica — step time, KV capacity, MBU and a steady-state operating point."""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Sequence
from typing import Literal

import pydantic

from infertune import models

GB = 1e9
GIB = float(2**30)

# Per-direction GPU-to-GPU bandwidth in GB/s that tensor parallel all-reduces run over (NVIDIA datasheets:
# NVLink 3 600 GB/s and NVLink 4 900 GB/s both directions together, NVLink 5 1.8 TB/s; PCIe Gen4 x16
# 64 GB/s and Gen5 x16 128 GB/s both directions). The catalog has no such field yet; unknown GPUs get PCIe Gen4.
INTERCONNECT_GBPS: dict[str, float] = {
    "a100-80gb": 300.0,
    "h100-sxm-80gb": 450.0,
    "h100-pcie-80gb": 64.0,
    "h200-sxm-141gb": 450.0,
    "b200-180gb": 900.0,
    "l40s": 32.0,
    "l4": 32.0,
}
PCIE_GEN4_GBPS = 32.0


class ModelDoesNotFit(ValueError):
    """The weights (plus the engine's fixed overhead) do not fit in the memory the engine may use."""


class Efficiency(models.Base):
    """Empirical constants between the datasheet and what an engine achieves; each default names its source."""

    bandwidth: float = pydantic.Field(
        default=0.8, gt=0, le=1,
        description="Share of peak HBM bandwidth reached by decode (AIConfigurator mem_bw_empirical_scaling_factor).",
    )
    prefill_flops: float = pydantic.Field(
        default=0.67, gt=0, le=1,
        description="Share of dense tensor FLOPS (FP8 when the weights are FP8) reached by prefill GEMMs "
        "(a design prior; reproduces the NIM 2xH100 sweep's ITL within 2%, docs/twin.md).",
    )
    attention_flops: float = pydantic.Field(
        default=0.5, gt=0, le=1,
        description="Share of dense BF16 FLOPS reached by prefill attention (FlashAttention-2 reports 50-73% "
        "of A100 peak, FlashAttention-3 75% of H100 BF16 peak).",
    )
    interconnect: float = pydantic.Field(
        default=0.8, gt=0, le=1, description="Share of the GPU-to-GPU link bandwidth that all-reduces reach."
    )
    framework_overhead_s: float = pydantic.Field(
        default=1.0e-3, ge=0, le=1,
        description="Scheduler, sampling and launch time per engine step, independent of the model.",
    )
    kernel_latency_s: float = pydantic.Field(
        default=3e-6, ge=0, le=1e-3,
        description="Fixed latency of each memory-bound kernel (AIConfigurator mem_empirical_constant_latency).",
    )
    kernels_per_layer: int = pydantic.Field(
        default=10, ge=0, le=1000,
        description="Kernels per transformer layer and step: QKV, rope, attention, output, two norms, "
        "gate-up, activation, down and a residual add.",
    )
    allreduce_latency_s: float = pydantic.Field(
        default=10e-6, ge=0, le=1e-2, description="Fixed latency of one tensor-parallel all-reduce."
    )
    other_memory_gb: float = pydantic.Field(
        default=3.5, ge=0, le=1000,
        description="Activations, CUDA graphs and allocator slack per GPU, GB (AIConfigurator other_mem).",
    )
    nccl_memory_gb: float = pydantic.Field(
        default=0.35, ge=0, le=100,
        description="NCCL buffers per GPU with tensor parallel 2 or more, GB (AIConfigurator: 342-392 MB).",
    )
    block_size: int = pydantic.Field(
        default=16, ge=1, le=1024, description="Tokens per KV cache block (vLLM default 16)."
    )


class Replica(models.Base):
    """One engine instance: the hardware, the model and the engine's knobs."""

    gpu: models.GpuSpec
    model: models.ModelShape
    gpus: int = pydantic.Field(default=1, ge=1, le=64, description="Tensor-parallel GPUs per replica.")
    weights: models.Precision = models.Precision.BF16
    kv_dtype: models.KvDtype = models.KvDtype.DEFAULT
    gpu_memory_utilization: float = pydantic.Field(default=0.9, gt=0, le=1)
    max_num_seqs: int | None = pydantic.Field(
        default=None, ge=1, le=65536, description="Batch limit; vLLM's hardware default when absent."
    )
    max_num_batched_tokens: int | None = pydantic.Field(
        default=None, ge=1, le=10_000_000, description="Tokens per step; vLLM's hardware default when absent."
    )
    chunked_prefill: bool = True
    prefix_caching: bool = pydantic.Field(
        default=True,
        description="Keep freed KV blocks findable by their content (vLLM default on): a preempted request "
        "recomputes only what was evicted meanwhile, and prefixCacheHitRate applies.",
    )
    prefix_cache_hit_rate: float = pydantic.Field(
        default=0.0, ge=0, le=1, description="Share of prompt tokens served from the prefix cache."
    )
    interconnect_gbps: float | None = pydantic.Field(
        default=None, gt=0, le=100_000, description="GPU-to-GPU bandwidth per direction; a table by GPU when absent."
    )
    efficiency: Efficiency = pydantic.Field(default_factory=Efficiency)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Replica:
        if self.kv_dtype is models.KvDtype.FP8 and not self.gpu.supports_fp8:
            raise ValueError(f"kvDtype: fp8 KV cache needs FP8 support, and {self.gpu.name} has none")
        if self.token_budget < self.seq_limit:
            raise ValueError(
                f"maxNumBatchedTokens ({self.token_budget}) must be at least maxNumSeqs ({self.seq_limit})"
            )
        return self

    @property
    def _large_gpu(self) -> bool:
        # vLLM EngineArgs: GPUs with 70 GiB or more that are not A100 get the large defaults (vllm/engine/arg_utils.py).
        return self.gpu.memory_gib >= 70 and not self.gpu.name.startswith("a100")

    @property
    def seq_limit(self) -> int:
        """max_num_seqs, or vLLM's default: 1024 on >=70 GiB non-A100 GPUs, else 256."""
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        return 1024 if self._large_gpu else 256

    @property
    def token_budget(self) -> int:
        """max_num_batched_tokens, or vLLM's OpenAI-server default: 8192 on >=70 GiB non-A100 GPUs, else 2048."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return 8192 if self._large_gpu else 2048


@dataclasses.dataclass(frozen=True, slots=True)
class Coefficients:
    """A replica's physics reduced to a few numbers, for hot loops (the twin calls step_seconds per step)."""

    fixed_s: float  # per step: framework + kernel latencies + all-reduce latencies
    weight_s: float  # reading every weight once per step (dense), at achievable bandwidth
    active_fraction: float  # share of weights one token touches (1.0 dense; active/total for MoE)
    gemm_s_per_token: float  # linear-layer compute per token at achievable FLOPS
    comm_s_per_token: float  # all-reduce transfer per token (0 on one GPU)
    kv_s_per_token: float  # reading or writing one token's KV cache on one GPU
    attn_s_per_pair: float  # prefill attention per (query, key) pair
    weight_bytes: float  # per GPU
    kv_bytes_per_token: float  # per GPU
    peak_bytes_per_s: float  # per GPU
    peak_flops: float  # per GPU, the linear layers' format
    kv_blocks: int
    block_size: int
    seq_limit: int
    token_budget: int
    chunked_prefill: bool
    prefix_caching: bool
    hit_rate: float

    def weight_seconds(self, tokens: int) -> float:
        """Weight-read time for a step of `tokens` tokens; MoE reads only the experts the batch touches.

        Each token touches a share a = active/total of the weights, so `tokens` tokens touch 1 - (1 - a)^tokens
        of them. Mixtral-8x7B, a = 12.9/46.7 = 0.28: 1 token reads 28%, 8 tokens 92%, 32 tokens ~100%.
        """
        if self.active_fraction >= 1.0:
            return self.weight_s
        return self.weight_s * (1.0 - (1.0 - self.active_fraction) ** max(tokens, 1))

    def weight_bytes_read(self, tokens: int) -> float:
        if self.active_fraction >= 1.0:
            return self.weight_bytes
        return self.weight_bytes * (1.0 - (1.0 - self.active_fraction) ** max(tokens, 1))

    def step_seconds(self, tokens: int, kv_tokens: float, attention_pairs: float = 0.0) -> float:
        """One engine step that runs `tokens` tokens through the model and touches `kv_tokens` of KV cache.

        Linear layers are one fused batch: max(weight read, compute). KV reads, prefill attention and
        all-reduces are separate kernels and add. Llama-3.3-70B FP8 on 2xH100 at batch 1, 5,250 tokens of
        FP8 KV: 4.0 ms fixed + 13.2 ms weights + 0.16 ms KV = 17.4 ms (NIM measured 18.6 ms).
        """
        linear = max(self.weight_seconds(tokens), self.gemm_s_per_token * tokens)
        return (
            self.fixed_s + linear + self.comm_s_per_token * tokens + self.kv_s_per_token * kv_tokens
            + self.attn_s_per_pair * attention_pairs
        )

    def bytes_moved(self, tokens: int, kv_tokens: float) -> float:
        """HBM bytes per GPU in one step: the weights it reads plus the KV cache it touches."""
        return self.weight_bytes_read(tokens) + self.kv_bytes_per_token * kv_tokens


def weight_bytes(replica: Replica) -> float:
    """All weight bytes: 70.6e9 parameters x 1 B (FP8) = 70.6 GB; x 2 B (BF16/FP16) = 141.2 GB."""
    per_param = 1.0 if replica.weights is models.Precision.FP8 else 2.0
    return replica.model.parameters * per_param


def weight_bytes_per_gpu(replica: Replica) -> float:
    """Tensor parallel splits every matrix: 70.6 GB FP8 / 2 GPUs = 35.3 GB per GPU."""
    return weight_bytes(replica) / replica.gpus


def kv_bytes_per_token_per_gpu(replica: Replica) -> float:
    """KV bytes one token keeps on each GPU; KV heads are split across GPUs, replicated past their count.

    Llama-3.1-70B, BF16 KV: 2 x 80 layers x 8 heads x 128 x 2 B = 327,680 B per token; TP2 holds 4 heads
    per GPU: 163,840 B; FP8 KV halves both.
    """
    shape = replica.model
    per_element = 1.0 if replica.kv_dtype is models.KvDtype.FP8 else 2.0
    heads_per_gpu = math.ceil(shape.kv_heads / replica.gpus)
    return shape.kv_bytes_per_token(per_element) * heads_per_gpu / shape.kv_heads


def overhead_bytes_per_gpu(replica: Replica) -> float:
    """Memory the engine keeps besides weights and KV: 3.5 GB, plus 0.35 GB NCCL with 2+ GPUs."""
    eff = replica.efficiency
    nccl = eff.nccl_memory_gb if replica.gpus >= 2 else 0.0
    return (eff.other_memory_gb + nccl) * GB


def kv_memory_per_gpu(replica: Replica) -> float:
    """Bytes per GPU left for the KV cache; raises ModelDoesNotFit with the shortfall when negative.

    H100 80 GiB x 0.9 = 77.3 GB; minus 35.3 GB FP8 weights (70B, TP2) and 3.85 GB overhead = 38.2 GB.
    """
    usable = replica.gpu.memory_gib * GIB * replica.gpu_memory_utilization
    need = weight_bytes_per_gpu(replica) + overhead_bytes_per_gpu(replica)
    free = usable - need
    if free <= 0:
        raise ModelDoesNotFit(
            f"{replica.model.name} with {replica.weights.value} weights does not fit on {replica.gpus} x "
            f"{replica.gpu.name}: it needs {need / GIB:.1f} GiB per GPU (weights and engine overhead) of the "
            f"{usable / GIB:.1f} GiB the engine may use (gpuMemoryUtilization {replica.gpu_memory_utilization}), "
            f"short by {-free / GIB:.1f} GiB; use more GPUs, FP8 weights or a larger GPU"
        )
    return free


def kv_capacity_tokens(replica: Replica) -> int:
    """Tokens the KV cache holds, whole blocks only: 38.2 GB / 81,920 B (FP8 KV, TP2) = 466k tokens."""
    block = replica.efficiency.block_size
    tokens = kv_memory_per_gpu(replica) / kv_bytes_per_token_per_gpu(replica)
    return int(tokens // block) * block


def interconnect_gbps(replica: Replica) -> float:
    if replica.interconnect_gbps is not None:
        return replica.interconnect_gbps
    return INTERCONNECT_GBPS.get(replica.gpu.name, PCIE_GEN4_GBPS)


def peak_flops_per_gpu(replica: Replica) -> float:
    """Dense tensor FLOPS the linear layers run at: FP8 with FP8 weights on FP8 hardware, else BF16.

    FP8 weights on a GPU without FP8 tensor cores (A100) run weight-only (W8A16): half the bytes, BF16 math.
    """
    gpu = replica.gpu
    if replica.weights is models.Precision.FP8 and gpu.tflops_fp8 is not None:
        return gpu.tflops_fp8 * 1e12
    return gpu.tflops_bf16 * 1e12


@functools.lru_cache(maxsize=256)
def coefficients(replica: Replica) -> Coefficients:
    """The replica's physics as numbers; raises ModelDoesNotFit when the weights do not fit."""
    eff = replica.efficiency
    shape = replica.model
    gpus = replica.gpus
    bandwidth = replica.gpu.bandwidth_gbps * GB  # per GPU, peak
    achievable_bw = bandwidth * eff.bandwidth  # 3.35 TB/s x 0.8 = 2.68 TB/s
    flops = peak_flops_per_gpu(replica)
    active = shape.active_parameters or shape.parameters
    # Two all-reduces per layer (after attention and after the MLP) when the model is split.
    allreduces = 2 * shape.layers if gpus > 1 else 0
    # Fixed: 1 ms framework + 80 layers x 10 kernels x 3 us = 3.4 ms, + 160 all-reduces x 10 us = 5.0 ms (TP2).
    fixed = (
        eff.framework_overhead_s + shape.layers * eff.kernels_per_layer * eff.kernel_latency_s
        + allreduces * eff.allreduce_latency_s
    )
    # Ring all-reduce moves 2(G-1)/G of the activations (hidden x 2 B per token) over the link:
    # 160 x 8192 x 2 B x 1.0 / (450 GB/s x 0.8) = 7.3 us per token on 2xH100 NVLink.
    link = interconnect_gbps(replica) * GB * eff.interconnect
    comm = allreduces * shape.hidden_size * 2.0 * (2.0 * (gpus - 1) / gpus) / link if gpus > 1 else 0.0
    w_bytes = weight_bytes_per_gpu(replica)
    kv_bytes = kv_bytes_per_token_per_gpu(replica)
    # Attention FLOPs per (query, key) pair and layer: QK^T and PV, 2 x 2 x heads x head_dim;
    # Llama-70B: 4 x 64 x 128 x 80 layers = 2.6 MFLOP per pair; a 5,000-token prompt has 12.5M pairs
    # = 3.3e13 FLOP / (2 x 989 TFLOPS x 0.5) = 33 ms on 2xH100.
    attn_flops = 4.0 * shape.attention_heads * shape.head_dim * shape.layers
    block = eff.block_size
    capacity = kv_capacity_tokens(replica)
    return Coefficients(
        fixed_s=fixed,
        # 35.3 GB / 2.68 TB/s = 13.2 ms per step (70B FP8, TP2, H100).
        weight_s=w_bytes / achievable_bw,
        active_fraction=min(1.0, active / shape.parameters),
        # 2 FLOP per active parameter per token: 2 x 70.6e9 / (2 x 1979e12 x 0.67) = 53 us per prompt token.
        gemm_s_per_token=2.0 * active / (gpus * flops * eff.prefill_flops),
        comm_s_per_token=comm,
        # 81,920 B / 2.68 TB/s = 31 ns per token of context per step (FP8 KV, TP2).
        kv_s_per_token=kv_bytes / achievable_bw,
        attn_s_per_pair=attn_flops / (gpus * replica.gpu.tflops_bf16 * 1e12 * eff.attention_flops),
        weight_bytes=w_bytes,
        kv_bytes_per_token=kv_bytes,
        peak_bytes_per_s=bandwidth,
        peak_flops=flops,
        kv_blocks=capacity // block,
        block_size=block,
        seq_limit=replica.seq_limit,
        token_budget=replica.token_budget,
        chunked_prefill=replica.chunked_prefill,
        prefix_caching=replica.prefix_caching,
        hit_rate=replica.prefix_cache_hit_rate if replica.prefix_caching else 0.0,
    )


def decode_step_time(replica: Replica, *, batch: int, context: float) -> float:
    """Seconds of one pure decode step: `batch` sequences of `context` tokens each.

    70B FP8 TP2 H100, batch 1 at 5,250 tokens (FP8 KV): 5.0 + 13.2 + 0.16 = 18.4 ms.
    """
    c = coefficients(replica)
    return c.step_seconds(batch, batch * (context + 1.0))


def prefill_time(replica: Replica, *, tokens: int, cached: int = 0) -> float:
    """Seconds of one step that prefills a `tokens`-token prompt alone, `cached` of them from the prefix cache.

    5,000 tokens of 70B FP8 on 2xH100: 5.0 fixed + 266 GEMM + 36 all-reduce + 33 attention = 341 ms.
    """
    c = coefficients(replica)
    new = max(tokens - cached, 1)
    pairs = (tokens * (tokens + 1) - cached * (cached + 1)) / 2.0
    return c.step_seconds(new, float(tokens), pairs)


def roofline_step_time(replica: Replica, *, tokens: int, kv_tokens: float, attention_pairs: float = 0.0) -> float:
    """The hardware floor for a step: bytes at 100% of peak bandwidth, FLOPs at 100% of peak FLOPS.

    No engine is faster: 35.3 GB per GPU at 3.35 TB/s is 10.5 ms for 70B FP8 on 2xH100.
    """
    c = coefficients(replica)
    shape = replica.model
    active = shape.active_parameters or shape.parameters
    mem = c.bytes_moved(tokens, kv_tokens) / c.peak_bytes_per_s
    flops = 2.0 * active * tokens / replica.gpus + (
        4.0 * shape.attention_heads * shape.head_dim * shape.layers * attention_pairs / replica.gpus
    )
    # Attention may run in FP8 on FP8 hardware, so the floor uses the fastest format the GPU has.
    fastest = max(c.peak_flops, (replica.gpu.tflops_fp8 or 0.0) * 1e12, replica.gpu.tflops_bf16 * 1e12)
    return max(mem, flops / fastest)


def mbu(replica: Replica, *, bytes_per_gpu: float, seconds: float) -> float:
    """Memory-bandwidth utilisation: 35.7 GB per GPU in 18.6 ms on a 3.35 TB/s H100 = 0.57."""
    if seconds <= 0:
        return 0.0
    return min(1.0, bytes_per_gpu / (seconds * replica.gpu.bandwidth_gbps * GB))


Limit = Literal["concurrency", "max_num_seqs", "kv_cache", "prefill"]


@dataclasses.dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Steady state of a closed loop of `concurrency` clients (genai-perf style); times in seconds."""

    concurrency: int
    batch: float  # sequences running on average
    limited_by: Limit
    itl_s: float  # mean time between output tokens of one request
    ttft_s: float  # mean time to first token, queueing included
    queue_s: float  # mean wait before admission
    step_s: float  # mean engine step
    output_tokens_per_s: float
    requests_per_s: float
    mbu: float
    kv_usage: float  # share of KV blocks in use, 0-1
    decode_step_s: float = 0.0  # a step that decodes the batch alone
    mixed_step_s: float = 0.0  # a step that also carries a prefill chunk
    prefill_share: float = 0.0  # share of steps that carry a prefill chunk
    prefill_s: float = 0.0  # a request's own prefill steps, without waiting behind other prefills
    # Share of the GPU's time in steps with a prefill chunk at this point's throughput: the M/G/1 utilization
    # of the prefill (prefill_ttft); 0 when the prefill bounds the replica (its wait is then the closed loop's).
    prefill_load: float = 0.0
    prefill_cv2: float = 0.0  # squared coefficient of variation of one prefill's service time (prefill_ttft)


def operating_point(replica: Replica, *, concurrency: int, isl: int, osl: int,
                    spread: PrefillSpread | None = None, context: float | None = None) -> OperatingPoint:
    """Closed-form steady state for `concurrency` clients sending isl-in/osl-out requests back to back.

    `spread` is how the prompt lengths vary around isl, as this replica's prefill sees them (prefill_spread):
    the mean prefill is `mean_ratio` times the prefill of the mean prompt, and waits behind other prefills grow
    with its variance. Without it every prompt is isl tokens long.

    `context` is the tokens a running request holds in the KV cache on average, where measured; without it,
    isl + osl / 2, which is right only when every output is osl long: the long outputs run longest, so with
    outputs of coefficient of variation cv a running request has made osl x (1 + cv^2) / 2 tokens on average
    (200 in, 1,500 out at cv 0.5: 1,137 tokens held, not 950).

    The batch is min(concurrency, max_num_seqs, what the KV cache holds). Every step decodes the batch;
    a share r of steps also carries a prefill chunk, so the mean step is (1 - r) x decode + r x mixed
    (prefill shares the GPU with decode). 70B FP8 TP2 H100, FP8 KV, 5000/500 at concurrency 50: decode step
    5.0 + 13.2 + 50 x 5,250 x 31 ns = 26 ms; one 5,000-token prefill (341 ms) every 10 steps; mean 59 ms.
    """
    c = coefficients(replica)
    cached = prefix_hit_tokens(c, isl) if isl >= 1 else 0
    new = isl - cached
    _check(replica, c, concurrency=concurrency, isl=isl, osl=osl, new=new)
    mean_ctx = isl + osl / 2.0 if context is None else context
    # A sequence holds whole blocks: on average half a block more than its tokens.
    per_seq_blocks = mean_ctx / c.block_size + 0.5
    kv_batch = c.kv_blocks / per_seq_blocks
    batch = float(min(concurrency, c.seq_limit))
    limit: Limit = "concurrency" if concurrency <= c.seq_limit else "max_num_seqs"
    if kv_batch < batch:
        batch, limit = max(1.0, math.floor(kv_batch)), "kv_cache"
    decode_steps = osl - 1
    pairs = (isl * (isl + 1) - cached * (cached + 1)) / 2.0

    def steady(b: float) -> tuple[float, float, float, float, float, float]:
        """Mean step, decode-step and prefill-step time, steps per prefill, share of steps with prefill, bytes."""
        room = max(c.token_budget - int(b), 1)
        chunk = min(new, room)
        chunks = math.ceil(new / chunk)
        # Prefill tokens needed per step to replace finished requests: 50 x 5,000 / 500 = 500 per step.
        per_step = b * new / (decode_steps + chunks)
        share = min(1.0, per_step / chunk)
        in_step = per_step / share if share > 0 else 0.0
        kv_dec = b * (mean_ctx + 1.0)
        # Chunks re-read the prompt's earlier KV: on average (isl + chunk) / 2 per chunk-step.
        kv_pf = in_step / new * (isl + chunk) / 2.0 * chunks if new else 0.0
        t_dec = c.step_seconds(round(b), kv_dec)
        tokens_mixed = round(b + in_step)
        t_mix = c.step_seconds(tokens_mixed, kv_dec + kv_pf, pairs * in_step / max(new, 1))
        mean = (1.0 - share) * t_dec + share * t_mix
        moved = (1.0 - share) * c.bytes_moved(round(b), kv_dec) + share * c.bytes_moved(tokens_mixed, kv_dec + kv_pf)
        return mean, t_dec, t_mix, chunks, share, moved

    step, t_dec, t_mix, chunks, share, moved = steady(batch)
    # Prefill tokens the batch needs per step against what the budget leaves beside its decodes.
    prefill_bound = bool(new) and batch * new / (decode_steps + chunks) > max(c.token_budget - int(batch), 1)
    if prefill_bound:
        # Every step is filled to the budget with prefill and still the finished requests are not all
        # replaced: the prefill is the bottleneck. It admits room / new requests a step, each holding its slot
        # for chunks + decode_steps steps, so that many run (the rest of the clients wait for prefill): 8B on
        # an L40S, 2,048-token prompts for 28 out, budget 512: 504 / 2,048 x (5 + 27) = 7.9 running, 0.246
        # admitted per 23.9 ms step = 10.3 req/s (the twin's closed loop at concurrency 8-16: 10.6-10.8). A
        # smaller batch leaves more of the budget to prefill, so the fixed point is found in a few rounds.
        batch = _prefill_bound_batch(c, batch, new=new, decode_steps=decode_steps)
        step, t_dec, t_mix, chunks, share, moved = steady(batch)
        if limit != "kv_cache":
            limit = "prefill"
    elif share >= 1.0 and limit != "kv_cache":
        limit = "prefill"
    # A request's own prefill: `chunks` mixed steps, plus waiting behind other prefills (M/D/1 queue on the
    # prefill share of the steps): rho / (2 (1 - rho)) x its service time. Prefill-bound, the wait is the
    # closed loop's queue below (clients beyond the running batch), not inside the batch.
    ratio, cv2 = (spread.mean_ratio, spread.cv2) if spread is not None else (1.0, 0.0)
    service = chunks * t_mix * ratio
    rho = 0.0 if prefill_bound else min(1.0, share * t_mix * ratio / step)
    ttft_service = prefill_ttft(service, rho, cv2)
    # A request holds a batch slot from its first chunk to its last token; while it waits behind other
    # prefills it sits in the engine's waiting queue (vLLM admits from there only what the step's budget
    # holds), so the throughput is the batch over that residence, without the wait. 405B FP8 on 8 x H200,
    # 1,000/200 tokens, batch 42, budget 256: 42 / (191 ms + 199 x 37.6 ms) = 5.48 req/s, the twin's closed
    # loop 5.47; with the wait (2.0 s at rho 0.95) in the residence it was 4.43.
    residence = service + decode_steps * step
    requests_per_s = batch / residence
    queue = max(0.0, concurrency / requests_per_s - residence - (ttft_service - service))
    return OperatingPoint(
        concurrency=concurrency,
        batch=batch,
        limited_by=limit,
        itl_s=step,
        ttft_s=queue + ttft_service,
        queue_s=queue,
        step_s=step,
        output_tokens_per_s=requests_per_s * osl,
        requests_per_s=requests_per_s,
        mbu=min(1.0, moved / (step * c.peak_bytes_per_s)),
        kv_usage=min(1.0, batch * per_seq_blocks / c.kv_blocks),
        decode_step_s=t_dec,
        mixed_step_s=t_mix,
        prefill_share=share,
        prefill_s=service,
        prefill_load=rho,
        prefill_cv2=cv2,
    )


# The M/D/1 wait grows without bound as the prefill's utilization nears 1; beyond 0.95 (a wait of 9.5 x the
# prefill) the replica is prefill-bound in all but name, and the closed loop's queue, not this wait, holds it.
PREFILL_LOAD_CAP = 0.95


def prefill_ttft(service: float, load: float, cv2: float = 0.0) -> float:
    """A request's own prefill plus its M/G/1 wait behind other prefills (Pollaczek-Khinchine):
    service x (1 + (1 + cv2) x rho / (2 (1 - rho))), `service` the mean prefill and cv2 its squared coefficient of
    variation (0: every prompt alike, the M/D/1 queue).

    The prefill occupies `load` of the GPU's time (capped at PREFILL_LOAD_CAP); 191 ms of own chunks at a
    load of 0.6: 191 x (1 + 0.6 / 0.8) = 334 ms, at 0.9: 1,050 ms. Against the twin on Poisson arrivals (405B FP8
    on 8 x H200, 1,000/200 tokens, budget 256) at 0.6 and 0.8 of the throughput: 326 and 532 ms predicted, 281
    and 451 ms simulated. Long-context prompts vary far more: the Mooncake conversation trace on Qwen2.5-72B FP8
    (one H200) has a mean prefill of 2.37 s and cv2 4.7 (prefill_spread), so at 0.05 req/s (rho 0.12) a request
    waits 2.37 x 5.7 x 0.12 / 1.76 = 0.91 s behind others, where the M/D/1 queue at the mean prompt (1.71 s) said
    0.08 s. The twin, one replica on prompts from that trace, waits about 2 s there (docs/concepts.md).
    """
    rho = min(max(load, 0.0), PREFILL_LOAD_CAP)
    return service * (1.0 + (1.0 + max(cv2, 0.0)) * rho / (2.0 * (1.0 - rho)))


@dataclasses.dataclass(frozen=True, slots=True)
class PrefillSpread:
    """How a prompt-length distribution's prefills compare with the prefill of its mean prompt on one replica."""

    mean_ratio: float = 1.0  # E[prefill(x)] / prefill(E[x]): above 1 where attention's quadratic cost matters
    cv2: float = 0.0  # Var[prefill(x)] / E[prefill(x)]^2


NO_SPREAD = PrefillSpread()  # every prompt of the mean's length


def prefill_spread(replica: Replica, lengths: Sequence[tuple[float, float]]) -> PrefillSpread:
    """The prefill service-time moments over a prompt-length distribution, as (tokens, share) points.

    A prompt's prefill is one step of its tokens (prefill_time: the weights' GEMMs grow with the tokens, the
    attention with their square), so the spread of the service is wider than the tokens' where prompts are long.
    The Mooncake conversation trace (12,031 prompts) on Qwen2.5-72B FP8, one H200: tokens cv2 1.72, prefill cv2
    4.7, and the mean prefill 2.37 s against 1.71 s for the mean prompt (ratio 1.39); the Azure chat trace
    (19,366 prompts) on 70B FP8, one H100: 0.92, 0.94 and 1.03. Points without weight or tokens are ignored;
    none left: no spread.
    """
    # Pods of one engine share its bucket bounds, so ten pods send the same lengths ten times: one prefill each.
    merged: dict[float, float] = {}
    for x, w in lengths:
        if x >= 1 and w > 0:
            merged[x] = merged.get(x, 0.0) + w
    total = sum(merged.values())
    if total <= 0:
        return NO_SPREAD
    mean_x = sum(x * w for x, w in merged.items()) / total
    times = [(prefill_time(replica, tokens=round(x)), w) for x, w in merged.items()]
    m1 = sum(t * w for t, w in times) / total
    m2 = sum(t * t * w for t, w in times) / total
    at_mean = prefill_time(replica, tokens=max(1, round(mean_x)))
    if m1 <= 0 or at_mean <= 0:
        return NO_SPREAD
    return PrefillSpread(mean_ratio=m1 / at_mean, cv2=max(0.0, m2 / (m1 * m1) - 1.0))


def _check(replica: Replica, c: Coefficients, *, concurrency: int, isl: int, osl: int, new: int) -> None:
    """The operating point's inputs, or a ValueError naming what is wrong."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if isl < 1 or osl < 1:
        raise ValueError(f"isl and osl must be at least 1, got isl={isl}, osl={osl}")
    capacity = c.kv_blocks * c.block_size
    if isl + osl > capacity:
        raise ValueError(
            f"isl + osl ({isl + osl} tokens) exceeds the KV cache of {capacity} tokens of "
            f"{replica.model.name} on {replica.gpus} x {replica.gpu.name}"
        )
    if not c.chunked_prefill and new > c.token_budget:
        raise ValueError(
            f"isl ({isl}) exceeds maxNumBatchedTokens ({c.token_budget}) without chunked prefill"
        )


def _prefill_bound_batch(c: Coefficients, batch: float, *, new: int, decode_steps: int) -> float:
    """The batch a prefill-bound replica sustains: admissions of room / new a step, each held chunks +
    decode_steps steps (see operating_point); a smaller batch leaves more room, so a few rounds settle it."""
    for _ in range(4):
        room = max(c.token_budget - int(batch), 1)
        batch = min(batch, max(1.0, room / new * (decode_steps + math.ceil(new / min(new, room)))))
    return batch


def per_request_itl(op: OperatingPoint, *, osl: int, quantile: float) -> float:
    """The per-request mean ITL that `quantile` of requests stay within, at this operating point.

    A request's ITL is the mean of its osl - 1 steps; each carries a prefill chunk with probability s (the
    prefill share), so it saw K ~ Binomial(osl - 1, s) mixed steps and its ITL is t_dec + K / n x (t_mix -
    t_dec). The quantile of K / n (normal approximation) is s + z sqrt(s (1 - s) / n). 8B on an L40S,
    2,048-token prompts for 28 out, batch 8: s = 0.28, n = 27, z = 1.645: K / n at p95 = 0.42, so 16.7 + 0.42 x
    (78.6 - 16.7) = 42.6 ms against a 33.8 ms mean; chat (1,000 / 200) on 70B: s = 0.04, n = 199: 1.06x the
    mean. Long outputs average the chunks out; short ones do not, which is why the tail is the prefill's.
    """
    n = max(1, osl - 1)
    s = op.prefill_share
    if s <= 0.0 or s >= 1.0 or op.mixed_step_s <= op.decode_step_s:
        return op.itl_s
    z = statistics.NormalDist().inv_cdf(min(max(quantile, 0.5), 0.9999))
    k = min(1.0, s + z * math.sqrt(s * (1.0 - s) / n))
    return max(op.itl_s, op.decode_step_s + k * (op.mixed_step_s - op.decode_step_s))


def prefix_hit_tokens(c: Coefficients, prompt: int) -> int:
    """Prompt tokens served from the prefix cache: whole blocks only, and the last token is always computed.

    A 1,000-token prompt at a 0.5 hit rate: 500 // 16 x 16 = 496 tokens from the cache, 504 computed.
    """
    if c.hit_rate <= 0:
        return 0
    cached = int(prompt * c.hit_rate // c.block_size) * c.block_size
    return min(cached, prompt - 1)


