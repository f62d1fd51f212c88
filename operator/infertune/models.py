"""Pure: the InferenceDeployment resource, its status, and the core's value types (single source of truth)."""

from __future__ import annotations

import enum
import json
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import alias_generators

from infertune import timestamps

GROUP = "infertune.io"
VERSION = "v1alpha1"
KIND = "InferenceDeployment"
PLURAL = "inferencedeployments"
SINGULAR = "inferencedeployment"
SHORT_NAMES = ("infd",)

# ---------------------------------------------------------------------------------------------
# Scalar types
# ---------------------------------------------------------------------------------------------

# A subset of Go's duration syntax (`1500ms`, `1.5s`, `5m`, `1h30m`), so that the CRD's CEL rules
# can parse the same strings with `duration(...)` and both validators agree.
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
# At most 5 digits before the point: with the 32-character limit the longest spelling is 4 x 99999h
# (45.6 years), inside the API server's int64 nanoseconds (292 years), so CEL's duration() can always parse
# it; `9999999999999999h` cannot be written at all. Each field then has its own upper bound (MAX_* below).
DURATION_PATTERN = r"^([0-9]{1,5}(\.[0-9]{1,9})?(ms|s|m|h))+$"
_DURATION_FULL = re.compile(DURATION_PATTERN)
AUTO_DURATION_PATTERN = r"^(auto|([0-9]{1,5}(\.[0-9]{1,9})?(ms|s|m|h))+)$"
DURATION_HINT = "a duration with a unit, such as 1500ms, 1.5s, 5m or 1h30m"


def parse_duration(value: object) -> float:
    """Seconds in a duration string: '1500ms' -> 1.5, '1m30s' -> 90.0."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    text = value.strip()
    if not _DURATION_FULL.fullmatch(text):
        if re.fullmatch(r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+", text):
            raise ValueError(f"at most 5 digits before the point in each part (99999h is 11 years), got {value!r}")
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 1.5 -> '1500ms', 90 -> '90s', 1800 -> '30m'."""
    millis = round(seconds * 1000)
    if millis % 3_600_000 == 0 and millis:
        return f"{millis // 3_600_000}h"
    if millis % 60_000 == 0 and millis:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return seconds


# Upper bounds of the spec's durations (the CRD's CEL rules say the same). None is a physical limit; each is
# far past any sensible setting and short enough that the derived numbers stay valid Kubernetes values.
MAX_SLO = 3600.0  # 1h: an objective beyond an hour is not a latency objective
MAX_CHANGE_INTERVAL = 30 * 86400.0  # 30 days
MAX_COLD_START = 86400.0  # 24h
# 24h: the grace period (15 s preStop + drain + 15 s) stays 86,430 s, a valid int64 number of seconds.
MAX_DRAIN = 86400.0
MAX_SCALE_DOWN_DELAY = 86400.0  # 24h


def _stamp(value: str) -> str:
    timestamps.parse(value)  # a ValueError naming the stamp
    return value


# A metav1.Time the operator wrote into its status. The API server checks the CRD's date-time format, but a status
# restored from a backup or written by hand into an older CRD can hold anything; one that is no timestamp makes the
# status unreadable (read as blank and rebuilt: kube.parse_status) rather than an error in every later cycle.
Stamp = Annotated[str, pydantic.AfterValidator(_stamp)]


def _at_most(limit: float) -> pydantic.AfterValidator:
    def check(seconds: float | None) -> float | None:
        if seconds is not None and seconds > limit:
            raise ValueError(f"must be at most {format_duration(limit)}, got {format_duration(seconds)}")
        return seconds

    return pydantic.AfterValidator(check)


Duration = Annotated[
    float,
    pydantic.BeforeValidator(_positive_duration),
    pydantic.PlainSerializer(format_duration, return_type=str),
    pydantic.WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]


def _auto_duration(value: object) -> float | None:
    if value in ("auto", None):
        return None
    try:
        return _positive_duration(value)
    except ValueError as e:
        raise ValueError(f"expected auto or {str(e).removeprefix('expected ')}") from None


# `auto` (None: the operator works it out: coldStart measures it, scaleDownDelay follows the cold start) or a
# fixed duration.
AutoDuration = Annotated[
    float | None,
    pydantic.BeforeValidator(_auto_duration),
    pydantic.PlainSerializer(lambda s: "auto" if s is None else format_duration(s), return_type=str),
    pydantic.WithJsonSchema({"type": "string", "pattern": AUTO_DURATION_PATTERN, "maxLength": 32}),
]

# Kubernetes name and label syntax (RFC 1123), used to keep hostile strings out of manifests.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CATALOG_KEY = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A qualified label/annotation key: optional DNS prefix, then a name of at most 63 characters.
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# An image reference as the container runtime parses it (the grammar of github.com/distribution/reference):
# [registry[:port]/]path[:tag][@digest], path components lower-case, a tag of at most 128 word characters,
# a digest `algorithm:hex` of at least 32 hex digits. `vllm:`, `Vllm/x`, `a//b` and `x@sha256:zz` fail here
# rather than in ErrImagePull on every node.
# The first component is a registry only when it has a dot or a port or is localhost (else it is a path).
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_IMAGE_HOST = rf"((localhost|{_HOST_LABEL}(\.{_HOST_LABEL})+)(:[0-9]{{1,5}})?|{_HOST_LABEL}:[0-9]{{1,5}})"
_IMAGE_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = (
    rf"^(({_IMAGE_HOST})/)?{_IMAGE_COMPONENT}(/{_IMAGE_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# The API server refuses an object whose annotations (keys and values, in bytes) exceed 256 KiB
# (apimachinery's TotalAnnotationSizeLimitB); the operator adds its own (under 1 KiB), so users get 255 KiB.
MAX_ANNOTATION_BYTES = 255 * 1024
MAX_ANNOTATION_VALUE = 16384
# The most GPUs one resource may ever ask for: the largest cluster Kubernetes supports has 5,000 nodes
# ("Considerations for large clusters"), 8 GPUs each in the largest common servers (HGX/DGX): 40,000.
MAX_GPUS = 40_000


class EngineKind(enum.StrEnum):
    """The model server that runs the model."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TRTLLM = "trtllm"
    NIM = "nim"
    TGI = "tgi"


class Precision(enum.StrEnum):
    """Numeric format of the model weights in the checkpoint."""

    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class KvCachePolicy(enum.StrEnum):
    """What the user allows for the KV cache's data type."""

    AUTO = "auto"  # the operator decides, FP8 when it pays and the hardware supports it
    FP8 = "fp8"  # always FP8
    DEFAULT = "default"  # always the model's own dtype (no FP8)


class KvDtype(enum.StrEnum):
    """The KV cache data type a revision actually runs with."""

    DEFAULT = "default"
    FP8 = "fp8"


class TuningMode(enum.StrEnum):
    AUTO = "auto"
    RECOMMEND = "recommend"
    OFF = "off"


class Base(pydantic.BaseModel):
    """Frozen, camelCase on the wire, unknown fields rejected."""

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        use_enum_values=False,
    )


# ---------------------------------------------------------------------------------------------
# Hardware and model facts (also the inline form of a spec's accelerator and model)
# ---------------------------------------------------------------------------------------------


class GpuSpec(Base):
    """Facts about one GPU that the performance model needs."""

    name: str = pydantic.Field(
        min_length=1, max_length=63, pattern=CATALOG_KEY,
        description="Short name of the GPU, for example h100-sxm-80gb.",
    )
    memory_gib: float = pydantic.Field(gt=0, le=4096, description="Device memory in GiB.")
    bandwidth_gbps: float = pydantic.Field(gt=0, le=100_000, description="Peak memory bandwidth in GB/s.")
    tflops_bf16: float = pydantic.Field(gt=0, le=100_000, description="Dense BF16/FP16 tensor TFLOPS.")
    tflops_fp8: float | None = pydantic.Field(
        default=None, gt=0, le=100_000,
        description="Dense FP8 tensor TFLOPS; absent when the GPU has no FP8 tensor cores (no FP8 KV cache).",
    )
    product_label: str | None = pydantic.Field(
        default=None, max_length=63, pattern=LABEL_VALUE,
        description="Value of the node label nvidia.com/gpu.product that identifies this GPU; "
        "pods are scheduled onto nodes with that label when it is set.",
    )

    @property
    def supports_fp8(self) -> bool:
        return self.tflops_fp8 is not None


class ModelShape(Base):
    """The architecture numbers of a transformer model (from its config.json)."""

    name: str = pydantic.Field(
        min_length=1, max_length=63, pattern=CATALOG_KEY, description="Short name of the architecture."
    )
    layers: int = pydantic.Field(ge=1, le=1024, description="Number of transformer layers (num_hidden_layers).")
    hidden_size: int = pydantic.Field(ge=1, le=1_000_000, description="Hidden size (hidden_size).")
    attention_heads: int = pydantic.Field(ge=1, le=4096, description="Query heads (num_attention_heads).")
    kv_heads: int = pydantic.Field(ge=1, le=4096, description="Key/value heads (num_key_value_heads).")
    head_dim: int = pydantic.Field(
        ge=1, le=4096,
        description="Per-head dimension (head_dim), as written in the config; it is not always "
        "hidden_size / attention_heads (Qwen3-32B: 5120 / 64 = 80, head_dim 128).",
    )
    intermediate_size: int = pydantic.Field(ge=1, le=10_000_000, description="FFN size (intermediate_size).")
    parameters: float = pydantic.Field(gt=0, le=1e14, description="Total parameter count, e.g. 7.06e10.")
    active_parameters: float | None = pydantic.Field(
        default=None, gt=0, le=1e14,
        description="Parameters used per token for mixture-of-experts models; absent for dense models.",
    )
    vocab_size: int = pydantic.Field(ge=1, le=10_000_000, description="Vocabulary size.")
    max_context_tokens: int = pydantic.Field(
        ge=1, le=100_000_000, description="Longest context the model accepts (max_position_embeddings)."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> ModelShape:
        if self.kv_heads > self.attention_heads:
            raise ValueError("kvHeads cannot exceed attentionHeads")
        if self.active_parameters is not None and self.active_parameters > self.parameters:
            raise ValueError("activeParameters cannot exceed parameters")
        return self

    def kv_bytes_per_token(self, bytes_per_element: float) -> float:
        """K and V for every layer: 2 × 80 layers × 8 heads × 128 dims × 2 B = 320 KiB (Llama-3.1-70B, BF16)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_element


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


class ModelSpec(Base):
    name: str = pydantic.Field(
        min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="The model to serve, as the engine expects it (a Hugging Face repository id such as "
        "meta-llama/Llama-3.1-70B-Instruct, or a local path); also the served model name.",
    )
    architecture: str | None = pydantic.Field(
        default=None, max_length=63, pattern=CATALOG_KEY,
        description="Catalog key of the model's architecture (see `infertune catalog`), e.g. llama-3.1-70b. "
        "Exactly one of architecture and custom is set.",
    )
    custom: ModelShape | None = pydantic.Field(
        default=None, description="The architecture given inline, for models that are not in the catalog."
    )
    weights: Precision = pydantic.Field(
        default=Precision.BF16,
        description="Precision of the checkpoint's weights (fp8 halves weight bytes and uses FP8 tensor cores).",
    )
    max_model_len: int | None = pydantic.Field(
        default=None, ge=16, le=10_000_000,
        description="Longest request (prompt + output tokens) the engine accepts; the model's own limit when absent.",
    )

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.architecture is None) == (self.custom is None):
            raise ValueError("set exactly one of architecture (a catalog key) and custom (the numbers)")
        return self


class KeyRef(Base):
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=DNS_LABEL, description="Object name.")
    key: str = pydantic.Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key.")
    optional: bool | None = pydantic.Field(default=None, description="Whether the key may be missing.")


class EnvVarSource(Base):
    secret_key_ref: KeyRef | None = pydantic.Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = pydantic.Field(default=None, description="A key of a ConfigMap.")

    @pydantic.model_validator(mode="after")
    def _one(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("set exactly one of secretKeyRef and configMapKeyRef")
        return self


class EnvVar(Base):
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=ENV_NAME, description="Variable name.")
    value: str | None = pydantic.Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = pydantic.Field(default=None, description="Value read from a Secret or ConfigMap.")

    @pydantic.model_validator(mode="after")
    def _not_both(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set at most one of value and valueFrom")
        return self


class NimSpec(Base):
    generation: Literal[1, 2] = pydantic.Field(
        default=2,
        description="NIM major version: 1 configures knobs with NIM_* variables; 2 runs a vLLM or SGLang image "
        "configured through NIM_PASSTHROUGH_ARGS.",
    )
    backend: Literal["vllm", "sglang"] = pydantic.Field(
        default="vllm", description="Engine inside a NIM 2.x image (ignored for generation 1)."
    )


class EngineSpec(Base):
    kind: EngineKind = pydantic.Field(description="The model server; docs/engines.md describes each.")
    image: str = pydantic.Field(
        min_length=1, max_length=512, pattern=IMAGE_REFERENCE,
        description="Container image of the model server: [registry[:port]/]repository[:tag][@digest].",
    )
    args: tuple[Annotated[str, pydantic.Field(max_length=4096)], ...] = pydantic.Field(
        default=(), max_length=128,
        description="Extra command-line arguments for the engine. Arguments that set a knob the operator owns "
        "(batch size, KV dtype, port, tensor parallel size...) are rejected; use the spec fields instead.",
    )
    env: tuple[EnvVar, ...] = pydantic.Field(
        default=(), max_length=128, description="Extra environment variables for the engine container."
    )
    port: int = pydantic.Field(default=8000, ge=1, le=65535, description="Port the engine serves HTTP on.")
    nim: NimSpec | None = pydantic.Field(default=None, description="NIM settings; only with kind nim.")
    chunked_prefill: bool | None = pydantic.Field(
        default=None, description="Split long prompts into chunks mixed with decode steps; engine default when absent."
    )
    max_num_batched_tokens: int | None = pydantic.Field(
        default=None, ge=16, le=10_000_000,
        description="Token budget per engine step (prefill chunk size); engine default when absent.",
    )
    prefix_caching: bool | None = pydantic.Field(
        default=None, description="Reuse the KV cache of shared prompt prefixes; engine default when absent."
    )
    gpu_memory_utilization: float | None = pydantic.Field(
        default=None, ge=0.1, le=0.99,
        description="Fraction of GPU memory the engine may use for weights, activations and KV cache.",
    )

    @pydantic.model_validator(mode="after")
    def _nim_only_with_nim(self) -> EngineSpec:
        if self.nim is not None and self.kind is not EngineKind.NIM:
            raise ValueError("nim settings are only valid with kind nim")
        return self


class AcceleratorSpec(Base):
    type: str | None = pydantic.Field(
        default=None, max_length=63, pattern=CATALOG_KEY,
        description="Catalog key of the GPU, e.g. h100-sxm-80gb. Exactly one of type and custom is set.",
    )
    custom: GpuSpec | None = pydantic.Field(default=None, description="The GPU given inline with its numbers.")
    count: int = pydantic.Field(
        default=1, ge=1, le=64,
        description="GPUs per replica; the engine runs tensor parallel across them.",
    )
    hourly_cost: float | None = pydantic.Field(
        default=None, ge=0, le=10_000,
        description="Price of one GPU-hour in your currency, used for cost per million output tokens.",
    )

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> AcceleratorSpec:
        if (self.type is None) == (self.custom is None):
            raise ValueError("set exactly one of type (a catalog key) and custom (the numbers)")
        return self


class SloSpec(Base):
    ttft: Annotated[Duration, _at_most(MAX_SLO)] = pydantic.Field(
        description="Time-to-first-token objective, e.g. 1500ms (at most 1h).")
    itl: Annotated[Duration, _at_most(MAX_SLO)] = pydantic.Field(
        description="Inter-token latency objective, e.g. 40ms (at most 1h).")
    percentile: int = pydantic.Field(
        default=95, ge=50, le=99, description="The percentile of requests that must meet both objectives."
    )


class BatchBounds(Base):
    min: int = pydantic.Field(default=1, ge=1, le=65536, description="Smallest max batch size the tuner may choose.")
    max: int = pydantic.Field(default=1024, ge=1, le=65536, description="Largest max batch size the tuner may choose.")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> BatchBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class TuningSpec(Base):
    mode: TuningMode = pydantic.Field(
        default=TuningMode.AUTO,
        description="auto: tune and apply; recommend: compute and report only; off: leave the knobs alone.",
    )
    max_batch_size: BatchBounds = pydantic.Field(
        default_factory=BatchBounds, description="Bounds for the knee search over the engine's max batch size."
    )
    initial_max_batch_size: int | None = pydantic.Field(
        default=None, ge=1, le=65536,
        description="Max batch size of the first revision; the engine's default (clamped to the bounds) when absent.",
    )
    kv_cache_dtype: KvCachePolicy = pydantic.Field(
        default=KvCachePolicy.AUTO,
        description="auto: FP8 KV cache when it pays and the GPU and engine support it; fp8: always; default: never.",
    )
    min_change_interval: Annotated[Duration, _at_most(MAX_CHANGE_INTERVAL)] = pydantic.Field(
        default="10m", validate_default=True,
        description="Knob changes restart the engine, so at most one per this interval (at most 720h).",
    )

    @pydantic.model_validator(mode="after")
    def _initial_in_bounds(self) -> TuningSpec:
        b = self.max_batch_size
        if self.initial_max_batch_size is not None and not b.min <= self.initial_max_batch_size <= b.max:
            raise ValueError(
                f"initialMaxBatchSize ({self.initial_max_batch_size}) must lie within "
                f"maxBatchSize.min..max ({b.min}..{b.max})"
            )
        return self


class StandbySpec(Base):
    min: int = pydantic.Field(default=0, ge=0, le=1000, description="Fewest pre-warmed standby replicas.")
    max: int = pydantic.Field(default=0, ge=0, le=1000, description="Most pre-warmed standby replicas.")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> StandbySpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Routing(enum.StrEnum):
    LEAST_OUTSTANDING = "least-outstanding"
    RANDOM = "random"


class ScalingSpec(Base):
    min_replicas: int = pydantic.Field(default=1, ge=1, le=1000, description="Fewest serving replicas.")
    max_replicas: int = pydantic.Field(default=1, ge=1, le=1000, description="Most serving replicas.")
    standby: StandbySpec = pydantic.Field(
        default_factory=StandbySpec,
        description="Pre-warmed replicas: Ready with the model loaded, not serving, promoted in seconds.",
    )
    cold_start: Annotated[AutoDuration, _at_most(MAX_COLD_START)] = pydantic.Field(
        default=None,
        description="Time from pod creation to Ready; auto measures it from recent pods (at most 24h).",
    )
    drain_timeout: Annotated[Duration, _at_most(MAX_DRAIN)] = pydantic.Field(
        default="2m", validate_default=True,
        description="Longest wait for in-flight requests when a pod stops serving; sizes the grace period "
        "(at most 24h).",
    )
    scale_down_delay: Annotated[AutoDuration, _at_most(MAX_SCALE_DOWN_DELAY)] = pydantic.Field(
        default=None,
        description="Demand must stay low this long before serving replicas are removed (at most 24h); auto: "
        "the longer of 5m and the cold start, so a replica is not released for less time than it takes to get "
        "it back.",
    )
    routing: Routing = pydantic.Field(
        default=Routing.LEAST_OUTSTANDING,
        description="How requests reach the pods, which the replica count is sized for: least-outstanding (a "
        "gateway that sends each request to the pod with the fewest in flight: one queue for the fleet) or "
        "random (the Service alone: kube-proxy picks a pod at random, and each pod queues on its own).",
    )

    @pydantic.model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        if self.standby.max > self.max_replicas:
            raise ValueError(f"standby.max ({self.standby.max}) must not exceed maxReplicas ({self.max_replicas})")
        return self


class Toleration(Base):
    key: str | None = pydantic.Field(default=None, max_length=316, pattern=LABEL_KEY, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = pydantic.Field(default=None, description="Exists or Equal.")
    value: str | None = pydantic.Field(default=None, max_length=63, pattern=LABEL_VALUE, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = pydantic.Field(
        default=None, description="Taint effect to tolerate."
    )
    # A year: beyond it the value only means "forever", which leaving the field out already says (the
    # API server keeps int64 seconds; the bound also keeps the number a valid one).
    toleration_seconds: int | None = pydantic.Field(
        default=None, ge=0, le=365 * 86400,
        description="For NoExecute: how long the pod stays bound once tainted, at most a year (absent: forever).")


class SecuritySpec(Base):
    """The engine container's security settings; by default the restricted Pod Security Standard's."""

    run_as_user: int | None = pydantic.Field(
        default=None, ge=0, le=2147483647,
        description="UID the engine runs as; 1000 when absent. The engines' images (vLLM, SGLang, TGI, "
        "TensorRT-LLM) run as root by default, which the restricted standard refuses; the operator gives the "
        "engine a writable HOME and cache directories so it runs as any UID.",
    )
    run_as_group: int | None = pydantic.Field(
        default=None, ge=0, le=2147483647, description="GID the engine runs as; 1000 when absent."
    )
    fs_group: int | None = pydantic.Field(
        default=None, ge=0, le=2147483647,
        description="Group that owns the pod's volumes (so the engine can write them); 1000 when absent.",
    )
    run_as_non_root: bool = pydantic.Field(
        default=True,
        description="Refuse to start as UID 0. Set false (with runAsUser 0) only for an image that cannot run "
        "otherwise; a namespace enforcing the restricted standard then refuses the pods.",
    )
    allow_privilege_escalation: bool = pydantic.Field(
        default=False, description="Let the engine gain privileges (setuid binaries); restricted refuses true."
    )
    add_capabilities: tuple[Annotated[str, pydantic.Field(max_length=32, pattern=r"^[A-Z][A-Z_]*$")], ...] = (
        pydantic.Field(
            default=(), max_length=16,
            description="Linux capabilities added after dropping all (for example IPC_LOCK); restricted admits "
            "only NET_BIND_SERVICE.",
        )
    )
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = pydantic.Field(
        default="RuntimeDefault", description="RuntimeDefault, or Unconfined (restricted refuses it)."
    )

    @pydantic.model_validator(mode="after")
    def _root_needs_consent(self) -> SecuritySpec:
        if self.run_as_user == 0 and self.run_as_non_root:
            raise ValueError("runAsUser 0 is root: set runAsNonRoot false as well to run as root")
        return self


class LocalObjectReference(Base):
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=DNS_LABEL, description="Object name.")


class PodTemplateOverrides(Base):
    labels: dict[str, Annotated[str, pydantic.Field(max_length=63)]] = pydantic.Field(
        default_factory=dict, max_length=64,
        description="Extra pod labels. Keys under infertune.io/ and app.kubernetes.io/ belong to the operator.",
    )
    # 16 KiB a value: with at most 64 of them the CEL rule on their total stays within the API server's cost budget.
    annotations: dict[str, Annotated[str, pydantic.Field(max_length=MAX_ANNOTATION_VALUE)]] = pydantic.Field(
        default_factory=dict, max_length=64,
        description="Extra pod annotations. Keys under infertune.io/ belong to the operator.",
    )
    node_selector: dict[str, Annotated[str, pydantic.Field(max_length=63)]] = pydantic.Field(
        default_factory=dict, max_length=32, description="Extra node selector terms."
    )
    tolerations: tuple[Toleration, ...] = pydantic.Field(default=(), max_length=32, description="Pod tolerations.")
    priority_class_name: str | None = pydantic.Field(
        default=None, max_length=253, pattern=DNS_LABEL, description="Pod priority class."
    )
    service_account_name: str | None = pydantic.Field(
        default=None, max_length=253, pattern=DNS_LABEL, description="ServiceAccount the engine pods run as."
    )
    image_pull_secrets: tuple[LocalObjectReference, ...] = pydantic.Field(
        default=(), max_length=16, description="Secrets for pulling the engine image."
    )
    cpu: str | None = pydantic.Field(
        default=None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request of the engine."
    )
    memory: str | None = pydantic.Field(
        default=None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Memory request and limit of the engine.",
    )
    security_context: SecuritySpec = pydantic.Field(
        default_factory=SecuritySpec,
        description="The engine's security settings. By default they meet the restricted Pod Security Standard "
        "(non-root UID 1000, no privilege escalation, all capabilities dropped, the runtime's seccomp profile).",
    )

    @pydantic.field_validator("labels", "annotations", "node_selector")
    @classmethod
    def _label_syntax(cls, value: dict[str, str], info: pydantic.ValidationInfo) -> dict[str, str]:
        key_re = re.compile(LABEL_KEY)
        value_re = re.compile(LABEL_VALUE)
        for key, val in value.items():
            if len(key) > 316 or not key_re.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid label or annotation key")
            limit = MAX_ANNOTATION_VALUE if info.field_name == "annotations" else 63
            if len(val) > limit or (info.field_name != "annotations" and not value_re.fullmatch(val)):
                raise ValueError(f"the value of {key!r} is not a valid label value")
        if info.field_name == "annotations":
            size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
            if size > MAX_ANNOTATION_BYTES:
                raise ValueError(f"annotations total {size:,} bytes; at most {MAX_ANNOTATION_BYTES:,} "
                                 "(the API server's 256 KiB less the operator's own)")
        return value


class InferenceDeploymentSpec(Base):
    model: ModelSpec = pydantic.Field(description="The model to serve.")
    engine: EngineSpec = pydantic.Field(description="The model server and its static settings.")
    accelerator: AcceleratorSpec = pydantic.Field(description="The GPUs of one replica and their price.")
    slo: SloSpec = pydantic.Field(description="Latency objectives the operating point must meet.")
    tuning: TuningSpec = pydantic.Field(default_factory=TuningSpec, description="How the engine's knobs are tuned.")
    scaling: ScalingSpec = pydantic.Field(default_factory=ScalingSpec, description="Replica and standby bounds.")
    template: PodTemplateOverrides = pydantic.Field(
        default_factory=PodTemplateOverrides,
        description="Pod-template overrides merged into every revision (scheduling, labels, pull secrets).",
    )

    @pydantic.model_validator(mode="after")
    def _gpus_bounded(self) -> InferenceDeploymentSpec:
        most = (self.scaling.max_replicas + self.scaling.standby.max) * self.accelerator.count
        if most > MAX_GPUS:
            raise ValueError(
                f"(scaling.maxReplicas + scaling.standby.max) x accelerator.count = {most:,} GPUs; at most "
                f"{MAX_GPUS:,} (5,000 nodes x 8 GPUs, the largest cluster Kubernetes supports)"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    SLO_MET = "SLOMet"
    METRICS_AVAILABLE = "MetricsAvailable"
    TUNED = "Tuned"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SPEC_VALID = "SpecValid"
    OBJECTIVES_RESOLVABLE = "ObjectivesResolvable"


class Condition(Base):
    """metav1.Condition."""

    type: str = pydantic.Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$", description="Condition type.")
    status: Literal["True", "False", "Unknown"] = pydantic.Field(description="True, False or Unknown.")
    reason: str = pydantic.Field(
        min_length=1, max_length=1024, pattern=CONDITION_REASON, description="CamelCase reason."
    )
    message: str = pydantic.Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: Stamp = pydantic.Field(
        json_schema_extra={"format": "date-time"}, description="When the status last changed."
    )
    observed_generation: int | None = pydantic.Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


class ReplicaStatus(Base):
    desired: int = pydantic.Field(default=0, ge=0, description="Serving replicas the operator wants.")
    desired_standby: int = pydantic.Field(default=0, ge=0, description="Standby replicas the operator wants.")
    serving: int = pydantic.Field(default=0, ge=0, description="Ready pods that take traffic.")
    standby: int = pydantic.Field(default=0, ge=0, description="Ready pods kept warm without traffic.")
    ready: int = pydantic.Field(default=0, ge=0, description="Ready pods of all revisions.")
    display: str = pydantic.Field(default="0/0", max_length=32, description="serving/desired, for kubectl.")


class ConfigStatus(Base):
    revision: str = pydantic.Field(max_length=63, description="Name suffix of the revision now serving.")
    max_batch_size: int = pydantic.Field(ge=1, description="The engine's max batch size in that revision.")
    kv_cache_dtype: KvDtype = pydantic.Field(description="The KV cache data type in that revision.")
    max_num_batched_tokens: int | None = pydantic.Field(
        default=None, ge=1, description="The per-step token budget the tuner set in that revision (absent: the "
        "spec's engine.maxNumBatchedTokens, else the engine's default).")
    reason: str = pydantic.Field(default="", max_length=1024, description="Why this configuration.")
    since: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When it was chosen."
    )
    serving_since: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="When its revision took over serving (verification and further tuning count from here).",
    )
    predicted_itl_p95_ms: float | None = pydantic.Field(
        default=None, ge=0, description="ITL the tuner predicted for it, ms (checked after the change)."
    )
    baseline_prefix_hit_rate: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="Prefix-cache hit rate before the change (an FP8 KV check)."
    )
    handover: float | None = pydantic.Field(
        default=None, gt=0, description="Serving pods of the older revisions per serving pod it was sized for when "
        "its rollout began (13 at batch 1,024 for 8 at 13: 1.6); they leave in proportion as its own pods serve."
    )
    baseline_itl_p95_ms: float | None = pydantic.Field(
        default=None, ge=0, description="Per-request ITL measured on the previous knobs when the change was made, ms."
    )
    input_tokens: int | None = pydantic.Field(
        default=None, ge=1, description="Mean prompt tokens of the load the tuner planned it for (a shift of 2x "
        "in either mean allows the next change).")
    output_tokens: int | None = pydantic.Field(
        default=None, ge=1, description="Mean output tokens of the load the tuner planned it for.")
    verified: bool = pydantic.Field(default=False, description="Measured after the change and kept.")
    tuned: bool = pydantic.Field(
        default=False, description="Chosen by the tuner (rate-limited), not the initial or a spec-forced one."
    )

    def knobs(self) -> Knobs:
        """The knobs this revision runs."""
        return Knobs(max_batch_size=self.max_batch_size, kv_cache_dtype=self.kv_cache_dtype,
                     max_num_batched_tokens=self.max_num_batched_tokens)


class Calibration(Base):
    """How measurements correct the physics prior (ratios; 1.0 means the prior was right)."""

    itl_scale: float = pydantic.Field(default=1.0, gt=0, description="Measured / predicted mean ITL.")
    ttft_scale: float = pydantic.Field(default=1.0, gt=0, description="Measured / predicted mean TTFT (no queue).")
    itl_tail: float = pydantic.Field(
        default=1.1, ge=1, description="ITL at the SLO percentile / its mean (per-request ITL varies little)."
    )
    ttft_tail: float = pydantic.Field(
        default=2.0, ge=1, description="TTFT at the SLO percentile / its mean (prompt lengths vary a lot)."
    )
    itl_error: float = pydantic.Field(
        default=0.0215, ge=0, le=10, description="Relative standard error of itlScale: the prior's ITL error "
        "against measured hardware before any measurement, then shrinking with consistent measurements. A knee "
        "searched for a cap keeps 1.65 of it (one-sided 95%) from the ITL objective.")
    itl_noise: float | None = pydantic.Field(
        default=None, ge=0, le=100, description="EWMA of the squared log deviation of each cycle's measured / "
        "predicted ITL from itlScale (absent until measured).")
    samples: int = pydantic.Field(default=0, ge=0, description="Pod-cycles measured.")
    max_occupancy: float = pydantic.Field(default=0, ge=0, description="Largest mean batch measured.")


class KneeStatus(Base):
    max_batch_size: int = pydantic.Field(ge=1, description="Max batch size at the knee of the frontier.")
    kv_cache_dtype: KvDtype = pydantic.Field(default=KvDtype.DEFAULT, description="KV cache dtype of that knee.")
    max_num_batched_tokens: int | None = pydantic.Field(
        default=None, ge=1, description="Per-step token budget of that knee (absent: the engine's setting).")
    goodput: float = pydantic.Field(ge=0, description="Predicted output tokens/s per replica within the SLO there.")
    itl_p95_ms: float | None = pydantic.Field(default=None, ge=0, description="Predicted ITL there, ms.")
    ttft_p95_ms: float | None = pydantic.Field(default=None, ge=0, description="Predicted TTFT there, ms.")
    limited_by: str = pydantic.Field(default="", max_length=64, description="slo, kv_cache, bounds...")
    basis: Literal["prior", "measured"] = pydantic.Field(description="Physics prior, or calibrated on live metrics.")
    confidence: float = pydantic.Field(ge=0, le=1, description="0 (a guess) to 1 (well measured).")
    calibration: Calibration = pydantic.Field(default_factory=Calibration, description="Corrections to the prior.")
    input_tokens: int | None = pydantic.Field(
        default=None, ge=1,
        description="Mean prompt tokens per request the knee was computed for (windows averaged over a cold start).")
    output_tokens: int | None = pydantic.Field(
        default=None, ge=1,
        description="Mean output tokens per request the knee was computed for (windows averaged over a cold start).")
    context_tokens: float | None = pydantic.Field(
        default=None, ge=0, le=1e8, description="Tokens a running request holds in the KV cache on average, from "
        "the pods' KV usage over their running requests (an EWMA over cycles); the knee plans with it.")
    prefill_mean_ratio: float | None = pydantic.Field(
        default=None, ge=0, le=1e6, description="Mean prefill of the measured prompt lengths over the prefill of "
        "their mean prompt (above 1 where long prompts' attention costs more than their share of tokens).")
    prefill_cv2: float | None = pydantic.Field(
        default=None, ge=0, le=1e6, description="Squared coefficient of variation of the prefill time over the "
        "measured prompt lengths: waits behind other prefills grow with 1 + this (M/G/1).")


class ObservedStatus(Base):
    ttft_p95_ms: float | None = pydantic.Field(
        default=None, ge=0, description="Observed TTFT at the SLO percentile, ms.")
    itl_p95_ms: float | None = pydantic.Field(
        default=None, ge=0, description="Observed ITL at the SLO percentile, ms: per request (each request's mean "
        "time per output token, what the ITL objective is judged on) where the engine exports it, else per token.")
    output_tokens_per_second: float | None = pydantic.Field(default=None, ge=0, description="All serving pods.")
    request_rate: float | None = pydantic.Field(default=None, ge=0, description="Requests per second.")
    mbu: float | None = pydantic.Field(default=None, ge=0, le=1, description="Memory-bandwidth utilisation, 0-1.")
    mbu_source: Literal["dcgm", "estimated"] | None = pydantic.Field(
        default=None, description="dcgm (measured) or estimated from token rates and the performance model."
    )
    kv_cache_usage: float | None = pydantic.Field(default=None, ge=0, le=1, description="KV cache in use, 0-1.")
    prefix_cache_hit_rate: float | None = pydantic.Field(default=None, ge=0, le=1, description="0-1.")
    queue_length: float | None = pydantic.Field(default=None, ge=0, description="Waiting requests, all pods.")
    slo_attainment: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="Fraction of recent requests within both objectives."
    )
    slo_attainment_low: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="The least the engine's histogram buckets allow it to be (the count up "
        "to the bucket edge below each objective)."
    )
    slo_attainment_high: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="The most they allow (up to the edge above each objective)."
    )
    estimated: tuple[str, ...] = pydantic.Field(
        default=(), description="Signals the engine does not export, estimated from the performance model."
    )
    revisions: tuple[str, ...] = pydantic.Field(
        default=(), description="The revisions whose serving pods these numbers were measured on, each pod over a "
        "whole metrics window; empty until one has. Another revision than status.config.revision: the numbers are "
        "the previous revision's, kept while the new pods fill their first window."
    )


# The scale-down window (scaling.scaleDownDelay) is remembered in this many stretches: a scale-down lags the asks by
# at most one stretch more than the window (38 s of 300), and the status holds a handful of entries, not one per cycle.
ASK_SPANS = 8


class Ask(Base):
    """The most serving replicas asked for over one stretch of the scale-down window."""

    at: Stamp = pydantic.Field(json_schema_extra={"format": "date-time"}, description="The stretch's end.")
    replicas: int = pydantic.Field(ge=0, description="Serving replicas asked for (the most within the stretch).")


class Forecast(Base):
    """A forecast of the demand one cold start ahead, kept until that time has come to compare it with."""

    at: Stamp = pydantic.Field(json_schema_extra={"format": "date-time"}, description="When it was made.")
    rate: float = pydantic.Field(ge=0, description="Requests per second it forecast one cold start ahead.")


class DemandStatus(Base):
    """Smoothed demand, so the forecast survives an operator restart."""

    rate: float = pydantic.Field(default=0, ge=0, description="Requests per second (smoothed).")
    trend: float = pydantic.Field(default=0, description="Change of the rate per second (smoothed).")
    error: float = pydantic.Field(default=0, ge=0, description="Typical forecast error, requests per second.")
    forecasts: tuple[Forecast, ...] = pydantic.Field(
        default=(), max_length=2 * ASK_SPANS + 2,
        description="Forecasts made over about the last cold start, one per eighth of a cold start, oldest "
        "first: each is compared with the demand once its cold start has passed.",
    )
    lead_error: float | None = pydantic.Field(
        default=None, ge=0,
        description="Typical error of the forecast made one cold start before, requests per second (smoothed); "
        "standby pods cover it.",
    )
    updated: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When last updated."
    )
    below_since: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="Since when fewer serving replicas would do (scale-down waits scaling.scaleDownDelay).",
    )
    asks: tuple[Ask, ...] = pydantic.Field(
        default=(), max_length=2 * ASK_SPANS + 2,
        description="The most serving replicas asked for in each stretch of the last scaleDownDelay, oldest first: "
        "a scale-down goes to the highest of them, not to the last cycle's ask (as the HPA's scale-down "
        "stabilization window takes the highest recommendation in it).",
    )
    standby_wanted: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="Since when the forecast has asked for more standby pods than the pool has (it grows a minute "
        "later).",
    )
    queued: float = pydantic.Field(
        default=0, ge=0, description="Requests queued beyond the batch slots at the last update (its growth is "
        "the part of a burst the rate window has not caught up with)."
    )
    in_flight: float | None = pydantic.Field(
        default=None, ge=0, description="Requests in flight on every pod at the last update (the queue grew by "
        "arrivals only as far as these did).")
    attainment: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="Share of requests within both objectives, smoothed over about "
        "five minutes from windows without a queue (a scale-down waits for it to leave room under the SLO "
        "percentile)."
    )
    held_since: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="Since when a scale-down has been held for lack of measured room under the SLO."
    )
    garbage_since: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="Since when garbage metrics (dropped or implausible values) have been in the picture; they hold "
        "a scale-down for at most 10 minutes from here."
    )
    peak: float = pydantic.Field(
        default=0, ge=0, description="The highest smoothed rate within the last cold start (the standby pool covers "
        "a return to it, not a random walk beyond it)."
    )
    peak_at: Stamp | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When the peak was measured."
    )


class CostStatus(Base):
    cost_per_million_output_tokens: float | None = pydantic.Field(
        default=None, ge=0, description="GPU cost of serving and standby pods over output tokens, per million."
    )
    standby_share: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="Share of cost spent on standby.")
    hourly: float | None = pydantic.Field(default=None, ge=0, description="Current GPU cost per hour.")


class Rejection(Base):
    """A configuration that was tried and rolled back; the tuner does not propose it (or larger) again."""

    max_batch_size: int = pydantic.Field(ge=1, description="The rejected max batch size.")
    kv_cache_dtype: KvDtype = pydantic.Field(description="Its KV cache dtype.")
    max_num_batched_tokens: int | None = pydantic.Field(default=None, ge=1, description="Its per-step token budget.")
    reason: str = pydantic.Field(max_length=1024, description="What the check measured.")
    time: Stamp = pydantic.Field(json_schema_extra={"format": "date-time"}, description="When.")


class DecisionRecord(Base):
    time: Stamp = pydantic.Field(json_schema_extra={"format": "date-time"}, description="When it was decided.")
    kind: str = pydantic.Field(max_length=64, description="batch-size, kv-dtype, replicas, standby, rollback...")
    action: str = pydantic.Field(max_length=256, description="What changed, e.g. maxBatchSize 1024 -> 96.")
    reason: str = pydantic.Field(max_length=1024, description="Why, with the numbers.")
    applied: bool = pydantic.Field(description="False in recommend mode or when frozen.")


class InferenceDeploymentStatus(Base):
    observed_generation: int | None = pydantic.Field(default=None, ge=0, description="Last generation acted on.")
    replicas: ReplicaStatus = pydantic.Field(default_factory=ReplicaStatus, description="Replica counts.")
    config: ConfigStatus | None = pydantic.Field(default=None, description="The configuration now serving.")
    target: ConfigStatus | None = pydantic.Field(
        default=None, description="The configuration being rolled out, while a rollout is in progress."
    )
    previous: ConfigStatus | None = pydantic.Field(
        default=None, description="The last configuration that served well: the rollback target."
    )
    demand: DemandStatus | None = pydantic.Field(default=None, description="Smoothed demand and its forecast error.")
    knee: KneeStatus | None = pydantic.Field(default=None, description="The knee of the latency-throughput frontier.")
    observed: ObservedStatus | None = pydantic.Field(default=None, description="Latest measurements.")
    cost: CostStatus | None = pydantic.Field(default=None, description="Cost figures.")
    cold_start_seconds: float | None = pydantic.Field(
        default=None, ge=0, description="p90 of recent pod creation-to-Ready times (or the spec's override)."
    )
    rejected: tuple[Rejection, ...] = pydantic.Field(
        default=(), max_length=32, description="Configurations tried and rejected, with the reason."
    )
    decisions: tuple[DecisionRecord, ...] = pydantic.Field(
        default=(), max_length=20, description="The most recent decisions, newest last."
    )
    conditions: tuple[Condition, ...] = pydantic.Field(default=(), max_length=16, description="Conditions.")


# ---------------------------------------------------------------------------------------------
# The core's value types
# ---------------------------------------------------------------------------------------------


class Knobs(Base):
    """The tunable engine configuration of one revision."""

    max_batch_size: int = pydantic.Field(ge=1, le=65536)
    kv_cache_dtype: KvDtype = KvDtype.DEFAULT
    # The per-step token budget (vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size, TensorRT-LLM
    # --max_num_tokens, TGI --max-batch-prefill-tokens): None runs the spec's engine.maxNumBatchedTokens, else
    # the engine's default. Tuned only when the spec leaves it unset.
    max_num_batched_tokens: int | None = pydantic.Field(default=None, ge=1, le=10_000_000)


def parse_spec(raw: Any) -> InferenceDeploymentSpec:
    """Validate a spec dict (from the API or a file) into the model; raises pydantic.ValidationError.

    Strictly, with JSON's types as the CRD's schema has them: `port: "3"` and `port: true` are refused, not
    coerced to 3 and 1 (pydantic's default lax mode would accept both).
    """
    return InferenceDeploymentSpec.model_validate_json(json.dumps(raw), strict=True)



# The scrape jobs whose series the operator believes (manifests/monitoring names them): engine metrics from
# any other job could be a tenant's forgery for another tenant's pods (docs/hardening.md).
ENGINE_JOB = "infertune-model-servers"
DCGM_JOB = "dcgm-exporter"
# What a job name may hold inside PromQL's job="...": nothing that could end the string or the selector. The
# Prometheus Operator names jobs "<kind>/<namespace>/<name>/<index>", hence the slash.
JOB_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,253}")


class OperatorConfig(Base):
    """How the operator process runs (from `infertune run` flags)."""

    prometheus_url: str | None = pydantic.Field(default=None, description="Prometheus base URL; None: no metrics.")
    prometheus_token_file: str | None = pydantic.Field(default=None, description="File with a bearer token.")
    prometheus_ca_file: str | None = pydantic.Field(default=None, description="CA bundle for Prometheus TLS.")
    metrics_window: float = pydantic.Field(default=60.0, ge=5, le=3600, description="Rate/quantile window, s.")
    engine_job: str = pydantic.Field(default=ENGINE_JOB, pattern=JOB_NAME.pattern,
                                     description="Scrape job whose engine series are read.")
    dcgm_job: str = pydantic.Field(default=DCGM_JOB, pattern=JOB_NAME.pattern,
                                   description="Scrape job whose DCGM series are read.")
    namespaces: tuple[str, ...] = pydantic.Field(default=(), description="Namespaces to watch; empty: all.")
    interval: float = pydantic.Field(default=15.0, ge=0.5, le=3600, description="Seconds between reconcile cycles.")
    dry_run: bool = pydantic.Field(default=False, description="Decide and log, but write nothing.")
    metrics_port: int | None = pydantic.Field(default=None, ge=0, le=65535, description="Port of /metrics.")
    standalone: bool = pydantic.Field(default=True, description="Run without kopf peering.")
    priority: int = pydantic.Field(default=0, description="kopf peering priority.")
    peering_name: str | None = pydantic.Field(default=None, description="kopf peering object name.")
    peering_lifetime: int = pydantic.Field(
        default=60, ge=5, le=3600, description="Seconds a silent peer keeps its claim (takeover time)."
    )
