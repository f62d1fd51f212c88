"""Pure: GPU and model facts, each with its source, and lookups that name the known keys on a miss."""

from __future__ import annotations

from infertune import models

# Memory is in GiB: the "80GB" parts expose 80 GiB (nvidia-smi shows 81,559 MiB on an H100 SXM) and the
# H200's system YAML in NVIDIA AIConfigurator gives mem_capacity 151397597184 B = 141 GiB.
# TFLOPS are dense (no 2:4 sparsity): NVIDIA's spec tables give the sparse figure, dense being one half of it.
# Each entry names its source: the NVIDIA datasheet (directly or as tabulated by the page named),
# NVIDIA AIConfigurator's system files (ai-dynamo/aiconfigurator src/aiconfigurator/systems/*.yaml) or the
# hardware list of TensorRT-LLM's performance overview (docs/source/performance/perf-overview.md).
GPUS: dict[str, models.GpuSpec] = {
    g.name: g
    for g in (
        # NVIDIA A100 datasheet via glennklockwood.com/garden/processors/A100: 2,039 GB/s, 312 TFLOPS BF16,
        # no FP8 tensor cores.
        models.GpuSpec(
            name="a100-80gb", memory_gib=80, bandwidth_gbps=2039, tflops_bf16=312, tflops_fp8=None,
            product_label="NVIDIA-A100-SXM4-80GB",
        ),
        # NVIDIA H100 spec sheet (HPCtech table; glennklockwood H100): 3,350 GB/s, 989 BF16, 1,979 FP8.
        models.GpuSpec(
            name="h100-sxm-80gb", memory_gib=80, bandwidth_gbps=3350, tflops_bf16=989, tflops_fp8=1979,
            product_label="NVIDIA-H100-80GB-HBM3",
        ),
        # Same HPCtech table, PCIe part (114 SMs, 300-350 W): 2,000 GB/s, 756 BF16, 1,513 FP8.
        models.GpuSpec(
            name="h100-pcie-80gb", memory_gib=80, bandwidth_gbps=2000, tflops_bf16=756, tflops_fp8=1513,
            product_label="NVIDIA-H100-PCIe",
        ),
        # AIConfigurator h200 system YAML: 4,800 GB/s, 989 BF16, 1,978 FP8, 141 GiB.
        models.GpuSpec(
            name="h200-sxm-141gb", memory_gib=141, bandwidth_gbps=4800, tflops_bf16=989, tflops_fp8=1978,
            product_label="NVIDIA-H200",
        ),
        # TRT-LLM perf overview ("B200 180GB (DGX B200)") and glennklockwood B200 (HGX, 1000 W):
        # 180 GB usable of 192 physical, 8 TB/s, 2,250 BF16, 4,500 FP8.
        models.GpuSpec(
            name="b200-180gb", memory_gib=180, bandwidth_gbps=8000, tflops_bf16=2250, tflops_fp8=4500,
            product_label="NVIDIA-B200",
        ),
        # AIConfigurator systems/l40s.yaml: 48 GB GDDR6, 864 GB/s, 362 BF16, 733 FP8.
        models.GpuSpec(
            name="l40s", memory_gib=48, bandwidth_gbps=864, tflops_bf16=362, tflops_fp8=733,
            product_label="NVIDIA-L40S",
        ),
        # NVIDIA L4 datasheet (summary): 24 GB GDDR6, 300 GB/s, ~121 BF16, ~242 FP8 (treat as +-4%).
        models.GpuSpec(
            name="l4", memory_gib=24, bandwidth_gbps=300, tflops_bf16=121, tflops_fp8=242,
            product_label="NVIDIA-L4",
        ),
    )
}

# Architecture numbers from each model's config.json as published with its weights on the Hugging Face Hub
# (num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
# vocab_size, max_position_embeddings): meta-llama/Llama-3.1-8B-Instruct, Llama-3.1-70B-Instruct,
# Llama-3.3-70B-Instruct, Llama-3.1-405B-Instruct; Qwen/Qwen2.5-72B-Instruct, Qwen/Qwen3-32B;
# mistralai/Mixtral-8x7B-Instruct-v0.1. Parameter counts are nominal (the model's name) unless the entry says
# they were counted from the shape or quoted from a paper or model card.
# head_dim is copied as written, never derived: Qwen3-32B has hidden/heads = 80 but head_dim 128.
# max_context_tokens is max_position_embeddings from the same config.json.
_LLAMA_31_70B = dict(
    layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, head_dim=128, intermediate_size=28672,
    parameters=70.6e9, vocab_size=128256, max_context_tokens=131072,
)
MODELS: dict[str, models.ModelShape] = {
    m.name: m
    for m in (
        # Llama-3.1-8B config.json: 32 layers, 4096 hidden, 32/8 heads, FFN 14336; ~8B parameters (nominal).
        models.ModelShape(
            name="llama-3.1-8b", layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, head_dim=128,
            intermediate_size=14336, parameters=8.0e9, vocab_size=128256, max_context_tokens=131072,
        ),
        # Llama-3.1-70B config.json: 80 layers, 8192 hidden, 64/8 heads, FFN 28672 (reference: ~70B).
        # 70.6B counted from the shape: per layer attention 2 x 8192^2 + 2 x 8192 x 1024 = 151M and
        # MLP 3 x 8192 x 28672 = 705M, x 80 layers = 68.4B, plus 2 x 128256 x 8192 = 2.1B embeddings.
        models.ModelShape(name="llama-3.1-70b", **_LLAMA_31_70B),
        # Llama-3.3-70B shares Llama-3.1-70B's architecture (same config numbers).
        models.ModelShape(name="llama-3.3-70b", **_LLAMA_31_70B),
        # Llama-3.1-405B config.json: 126 layers, 16384 hidden, 128/8 heads, FFN 53248; ~405B (nominal).
        models.ModelShape(
            name="llama-3.1-405b", layers=126, hidden_size=16384, attention_heads=128, kv_heads=8, head_dim=128,
            intermediate_size=53248, parameters=405e9, vocab_size=128256, max_context_tokens=131072,
        ),
        # Qwen2.5-72B config.json: 80 layers, 8192 hidden, 64/8 heads, FFN 29568; 72.7B parameters.
        models.ModelShape(
            name="qwen2.5-72b", layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, head_dim=128,
            intermediate_size=29568, parameters=72.7e9, vocab_size=152064, max_context_tokens=32768,
        ),
        # Qwen3-32B config.json (quoted verbatim): 64 layers, 5120 hidden, 64/8 heads, head_dim 128,
        # FFN 25600, vocab 151936; ~32B (nominal).
        models.ModelShape(
            name="qwen3-32b", layers=64, hidden_size=5120, attention_heads=64, kv_heads=8, head_dim=128,
            intermediate_size=25600, parameters=32e9, vocab_size=151936, max_context_tokens=40960,
        ),
        # Mixtral-8x7B (arXiv 2401.04088: "47B ... 13B active"; 46.7B / 12.9B): 32 layers, 4096 hidden,
        # 32/8 heads, FFN 14336 per expert, 8 experts, top-2.
        models.ModelShape(
            name="mixtral-8x7b", layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, head_dim=128,
            intermediate_size=14336, parameters=46.7e9, active_parameters=12.9e9, vocab_size=32000,
            max_context_tokens=32768,
        ),
    )
}


class UnknownKeyError(KeyError):
    """A catalog key that does not exist; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def gpu(key: str) -> models.GpuSpec:
    """The GPU with this catalog key."""
    try:
        return GPUS[key]
    except KeyError:
        raise UnknownKeyError(f"unknown GPU {key!r}; known: {', '.join(sorted(GPUS))}") from None


def model(key: str) -> models.ModelShape:
    """The model architecture with this catalog key."""
    try:
        return MODELS[key]
    except KeyError:
        raise UnknownKeyError(f"unknown model {key!r}; known: {', '.join(sorted(MODELS))}") from None


def resolve_gpu(accelerator: models.AcceleratorSpec) -> models.GpuSpec:
    """The spec's GPU, from the catalog or inline."""
    if accelerator.custom is not None:
        return accelerator.custom
    assert accelerator.type is not None  # guaranteed by AcceleratorSpec's validator
    return gpu(accelerator.type)


def resolve_model(model_spec: models.ModelSpec) -> models.ModelShape:
    """The spec's architecture, from the catalog or inline."""
    if model_spec.custom is not None:
        return model_spec.custom
    assert model_spec.architecture is not None  # guaranteed by ModelSpec's validator
    return model(model_spec.architecture)
