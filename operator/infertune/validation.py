"""Pure: every check of an InferenceDeployment beyond its schema, as a list of problems naming the field."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pydantic

from infertune import catalog, models, resolution, runtimes
from infertune.runtimes import registry

# The Service is named after the resource and revisions append "-<10 hex>"; 42 keeps pod names short
# enough for the 63-character hostname limit and the name a valid DNS-1035 label.
MAX_NAME_LENGTH = 42
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
OWNED_LABEL_PREFIXES = ("infertune.io/", "app.kubernetes.io/")
OWNED_ANNOTATION_PREFIXES = ("infertune.io/",)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
VLLM_VARIANTS = ("vllm", "nim-2-vllm")


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_problems(error: pydantic.ValidationError) -> list[Problem]:
    """pydantic's errors as problems whose path is the camelCase field path under spec."""
    problems = []
    for e in error.errors(include_url=False):
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        elif e["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(_loc(tuple(e["loc"])), message))
    return problems


def parse(raw: Any) -> tuple[models.InferenceDeploymentSpec | None, list[Problem]]:
    """The spec and its problems: schema problems first; semantic ones only when the schema holds."""
    if not isinstance(raw, dict):
        return None, [Problem("spec", f"must be a mapping, got {type(raw).__name__}")]
    try:
        spec = models.parse_spec(raw)
    except pydantic.ValidationError as error:
        return None, schema_problems(error)
    problems = check(spec)
    return (spec if not problems else None), problems


def check_name(name: str) -> list[Problem]:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        return [Problem(
            "metadata.name",
            f"must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
            f"(lower-case letters, digits and '-', starting with a letter), got {name[:80]!r}",
        )]
    return []


def check(spec: models.InferenceDeploymentSpec) -> list[Problem]:
    """Semantic problems: unknown catalog keys, owned knobs in args/env/labels, hardware mismatches."""
    problems: list[Problem] = []
    gpu: models.GpuSpec | None = None
    shape: models.ModelShape | None = None
    try:
        gpu = catalog.resolve_gpu(spec.accelerator)
    except catalog.UnknownKeyError as e:
        problems.append(Problem("spec.accelerator.type", str(e)))
    try:
        shape = catalog.resolve_model(spec.model)
    except catalog.UnknownKeyError as e:
        problems.append(Problem("spec.model.architecture", str(e)))

    runtime = registry.for_engine(spec.engine)
    problems += _owned_args(spec, runtime)
    problems += _owned_env(spec, runtime)
    problems += _owned_template(spec, gpu)

    if gpu is not None:
        if spec.model.weights is models.Precision.FP8 and not gpu.supports_fp8:
            problems.append(Problem("spec.model.weights", f"fp8 weights need FP8 tensor cores, which {gpu.name} lacks"))
        if spec.tuning.kv_cache_dtype is models.KvCachePolicy.FP8 and not gpu.supports_fp8:
            problems.append(Problem("spec.tuning.kvCacheDtype",
                                    f"an FP8 KV cache needs an FP8-capable GPU; {gpu.name} is not"))
    if spec.tuning.kv_cache_dtype is models.KvCachePolicy.FP8 and not runtime.fp8_kv:
        problems.append(Problem(
            "spec.tuning.kvCacheDtype",
            f"{runtime.variant} sets the KV cache dtype through its model profile, not a knob the operator owns; "
            "use kvCacheDtype auto or default",
        ))
    longest = spec.model.max_model_len
    if shape is not None and longest is not None and longest > shape.max_context_tokens:
        problems.append(Problem(
            "spec.model.maxModelLen",
            f"{spec.model.max_model_len} exceeds {shape.name}'s context of {shape.max_context_tokens} tokens",
        ))
    budget = spec.engine.max_num_batched_tokens
    if budget is not None and runtime.variant in VLLM_VARIANTS and budget < spec.tuning.max_batch_size.max:
        # vLLM refuses to start when max_num_batched_tokens < max_num_seqs.
        problems.append(Problem(
            "spec.engine.maxNumBatchedTokens",
            f"vLLM needs a token budget of at least the largest batch ({spec.tuning.max_batch_size.max}); got {budget}",
        ))
    if gpu is not None and shape is not None:
        problems += _fits(spec, gpu, shape)
    return problems


def objective_warnings(spec: models.InferenceDeploymentSpec) -> list[Problem]:
    """Warnings, not errors (the spec is valid): objectives that lie inside one of the engine's default histogram
    buckets, naming the edges either side. `validate` prints them; the operator reports the same as the
    ObjectivesResolvable condition, from the edges its pods really export."""
    return [Problem(f"spec.{inside.field}", str(inside)) for inside in resolution.check(spec)]


def _owned_args(spec: models.InferenceDeploymentSpec, runtime: runtimes.Runtime) -> list[Problem]:
    problems = []
    for i, arg in enumerate(spec.engine.args):
        name = runtimes.normalise_flag(arg)
        if name is None or name not in runtime.owned_flags:
            continue
        knob = runtime.owned_flags[name]
        field = runtimes.KNOB_FIELDS.get(knob, "the operator")
        problems.append(Problem(
            f"spec.engine.args[{i}]",
            f"{arg.split('=', 1)[0]} sets {knob}, which the operator owns; set it through {field} instead",
        ))
    return problems


def _owned_env(spec: models.InferenceDeploymentSpec, runtime: runtimes.Runtime) -> list[Problem]:
    problems = []
    for i, var in enumerate(spec.engine.env):
        if var.name in runtime.owned_env:
            knob = runtime.owned_env[var.name]
            field = runtimes.KNOB_FIELDS.get(knob, "the operator")
            problems.append(Problem(
                f"spec.engine.env[{i}].name",
                f"{var.name} sets {knob}, which the operator owns; set it through {field} instead",
            ))
    return problems


def _owned_template(spec: models.InferenceDeploymentSpec, gpu: models.GpuSpec | None) -> list[Problem]:
    problems = []
    for key in spec.template.labels:
        if key.startswith(OWNED_LABEL_PREFIXES):
            problems.append(Problem(
                "spec.template.labels",
                f"{key!r} is owned by the operator (keys under {', '.join(OWNED_LABEL_PREFIXES)})",
            ))
    for key in spec.template.annotations:
        if key.startswith(OWNED_ANNOTATION_PREFIXES):
            problems.append(Problem("spec.template.annotations", f"{key!r} is owned by the operator"))
    if gpu is not None and gpu.product_label and GPU_PRODUCT_LABEL in spec.template.node_selector:
        problems.append(Problem(
            "spec.template.nodeSelector",
            f"{GPU_PRODUCT_LABEL} is set from the accelerator ({gpu.product_label}); "
            "choose the GPU with accelerator.type",
        ))
    return problems


# Memory the engine cannot use for weights or KV: activations, CUDA graphs, the CUDA context
# (NVIDIA AIConfigurator's other_mem: 3.5 GB per GPU).
OVERHEAD_GIB = 3.5
DEFAULT_MEMORY_FRACTION = 0.9
GIB = 1024**3


def weight_bytes(shape: models.ModelShape, weights: models.Precision) -> float:
    """All parameters at the checkpoint's precision: 70.6e9 x 1 B (fp8) = 70.6 GB for Llama-3.1-70B."""
    return shape.parameters * (1.0 if weights is models.Precision.FP8 else 2.0)


def _fits(spec: models.InferenceDeploymentSpec, gpu: models.GpuSpec, shape: models.ModelShape) -> list[Problem]:
    # Per GPU: 80 GiB x 0.9 - 3.5 GiB = 68.5 GiB usable; Llama-3.1-70B fp8 needs 70.6 GB = 65.8 GiB on one GPU,
    # leaving 2.7 GiB of KV (about 17k tokens at 160 KiB/token) - it fits, barely.
    fraction = spec.engine.gpu_memory_utilization or DEFAULT_MEMORY_FRACTION
    usable = gpu.memory_gib * fraction - OVERHEAD_GIB
    need = weight_bytes(shape, spec.model.weights) / spec.accelerator.count / GIB
    if need <= usable:
        return []
    return [Problem(
        "spec.accelerator",
        f"{shape.name} ({spec.model.weights.value} weights) needs {need:.1f} GiB per GPU on {spec.accelerator.count} "
        f"x {gpu.name}, but only {usable:.1f} GiB is usable; short by {need - usable:.1f} GiB. "
        "Use more GPUs per replica (accelerator.count), fp8 weights, or a larger GPU",
    )]
