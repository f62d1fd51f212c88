"""Pure: every check of an InferenceDeployment beyond its schema, as a list of problems naming the field."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
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


def not_json(value: Any, path: str = "spec") -> list[Problem]:
    """Values a JSON object cannot hold (YAML dates, binary, sets, non-string keys, NaN): the API server's
    types are JSON's, so the offline checks refuse what `kubectl apply` could not send."""
    if isinstance(value, dict):
        out = []
        for key, sub in value.items():
            if not isinstance(key, str):
                out.append(Problem(path, f"key {key!r} is not a string"))
            else:
                out += not_json(sub, f"{path}.{key}")
        return out
    if isinstance(value, list):
        return [p for i, sub in enumerate(value) for p in not_json(sub, f"{path}[{i}]")]
    if value is None or isinstance(value, (str, bool, int)):
        return []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [Problem(path, f"{value} is not a number JSON can hold")]
    return [Problem(path, f"a {type(value).__name__} is not a JSON value (quote it to make it a string)")]


def parse(raw: Any) -> tuple[models.InferenceDeploymentSpec | None, list[Problem]]:
    """The spec and every problem it has: schema problems, and the semantic checks of each part that holds."""
    if not isinstance(raw, dict):
        return None, [Problem("spec", f"must be a mapping, got {type(raw).__name__}")]
    problems = not_json(raw)
    if problems:
        return None, problems
    try:
        spec = models.parse_spec(raw)
    except pydantic.ValidationError as error:
        problems = schema_problems(error)
        named = {p.path for p in problems}
        return None, problems + [p for p in _partial(raw) if p.path not in named]
    problems = check(spec)
    return (spec if not problems else None), problems


def _part(model: type[pydantic.BaseModel], raw: Any) -> Any:
    """One part of the spec validated alone (strictly, as models.parse_spec does), or None."""
    try:
        return model.model_validate_json(json.dumps(raw), strict=True)
    except (pydantic.ValidationError, TypeError, ValueError):
        return None


def _partial(raw: dict[str, Any]) -> list[Problem]:
    """For a spec that fails its schema, the semantic checks of the parts that pass it, so that one run of
    `validate` names an unknown GPU beside a bad ttft."""
    problems: list[Problem] = []
    gpu: models.GpuSpec | None = None
    accelerator = _part(models.AcceleratorSpec, raw.get("accelerator"))
    if accelerator is not None:
        gpu, found = _gpu(accelerator)
        problems += found
    model = _part(models.ModelSpec, raw.get("model"))
    if model is not None:
        problems += _shape(model)[1]
    given = raw.get("engine")
    engine_raw: dict[str, Any] = given if isinstance(given, dict) else {}
    # Only the engine's kind (and NIM settings) choose the rules, so a bad port does not hide an owned flag.
    which = _part(models.EngineSpec, {"kind": engine_raw.get("kind"), "image": "x",
                                      **({"nim": engine_raw["nim"]} if "nim" in engine_raw else {})})
    if which is not None:
        runtime = registry.for_engine(which)
        args = engine_raw.get("args")
        if isinstance(args, list):
            problems += _owned_args([a if isinstance(a, str) else "" for a in args], runtime)
        env = engine_raw.get("env")
        if isinstance(env, list):
            names = [v.get("name") if isinstance(v, dict) else None for v in env]
            problems += _owned_env([n if isinstance(n, str) else "" for n in names], runtime)
    template = _part(models.PodTemplateOverrides, raw.get("template", {}))
    if template is not None:
        problems += _owned_template(template, gpu)
    return problems


def _gpu(accelerator: models.AcceleratorSpec) -> tuple[models.GpuSpec | None, list[Problem]]:
    try:
        return catalog.resolve_gpu(accelerator), []
    except catalog.UnknownKeyError as e:
        return None, [Problem("spec.accelerator.type", str(e))]


def _shape(model: models.ModelSpec) -> tuple[models.ModelShape | None, list[Problem]]:
    try:
        return catalog.resolve_model(model), []
    except catalog.UnknownKeyError as e:
        return None, [Problem("spec.model.architecture", str(e))]


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
    gpu, problems = _gpu(spec.accelerator)
    shape, found = _shape(spec.model)
    problems += found

    runtime = registry.for_engine(spec.engine)
    problems += _owned_args(spec.engine.args, runtime)
    problems += _owned_env([v.name for v in spec.engine.env], runtime)
    problems += _owned_template(spec.template, gpu)

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
    problems += [Problem(path, message) for path, message in runtime.checks(spec)]
    if gpu is not None and shape is not None:
        problems += _fits(spec, gpu, shape)
    return problems


def objective_warnings(spec: models.InferenceDeploymentSpec) -> list[Problem]:
    """Warnings, not errors (the spec is valid): objectives that lie inside one of the engine's default histogram
    buckets, naming the edges either side. `validate` prints them; the operator reports the same as the
    ObjectivesResolvable condition, from the edges its pods really export."""
    return [Problem(f"spec.{inside.field}", str(inside)) for inside in resolution.check(spec)]


def _owned_message(written: str, owned: str, knob: str) -> str:
    same = written == owned or runtimes.normalise_flag(written) == owned
    read_as = written if same else f"{written} is read by the engine as {owned}, which"
    if knob in runtimes.OWNED_REASONS:
        return f"{read_as} {runtimes.OWNED_REASONS[knob]}"
    field = runtimes.KNOB_FIELDS.get(knob, "the operator")
    return f"{read_as} sets {knob}, which the operator owns; set it through {field} instead"


def _owned_args(args: Sequence[str], runtime: runtimes.Engine) -> list[Problem]:
    """User arguments checked as the engine parses them (the operator's own flags are written after them)."""
    problems = []
    for i, arg in enumerate(args):
        if arg == "--":
            # argparse, click and clap read every argument after `--` as positional: the operator's knob
            # flags that follow would stop being flags.
            problems.append(Problem(f"spec.engine.args[{i}]", f"{arg!r} would end the engine's options, and the "
                                    "operator's flags after it would be read as positional arguments"))
            continue
        hit = runtimes.owned_by_arg(runtime, arg)
        if hit is not None:
            problems.append(Problem(f"spec.engine.args[{i}]", _owned_message(arg.split("=", 1)[0], *hit)))
    return problems


def _owned_env(names: Sequence[str], runtime: runtimes.Engine) -> list[Problem]:
    problems = []
    for i, name in enumerate(names):
        hit = runtimes.owned_by_env(runtime, name)
        if hit is None:
            continue
        owned, knob = hit
        what = name if owned == name else f"{name} (the engine's variable for {owned})"
        problems.append(Problem(f"spec.engine.env[{i}].name", _owned_message(what, what, knob)))
    return problems


def _owned_template(template: models.PodTemplateOverrides, gpu: models.GpuSpec | None) -> list[Problem]:
    problems = []
    for key in template.labels:
        if key.startswith(OWNED_LABEL_PREFIXES):
            problems.append(Problem(
                "spec.template.labels",
                f"{key!r} is owned by the operator (keys under {', '.join(OWNED_LABEL_PREFIXES)})",
            ))
    for key in template.annotations:
        if key.startswith(OWNED_ANNOTATION_PREFIXES):
            problems.append(Problem("spec.template.annotations", f"{key!r} is owned by the operator"))
    if gpu is not None and gpu.product_label and GPU_PRODUCT_LABEL in template.node_selector:
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
