"""Twin: the `infertune simulate` scenario file — a frozen model, its loader, its spec and its arrival stream."""

from __future__ import annotations

import functools
import pathlib
from typing import Annotated, Any, Literal

import pydantic
import yaml

from infertune import catalog, decide, models, perfmodel, replica, validation
from infertune.runtimes import registry
from infertune.sim import workload

# The image is each engine's sample (Engine.sample_image): the twin never pulls it, but the revision hash covers it.


# A validator error that belongs to a field inside the model it checks: "<<peak>>required for pattern spike"
# is reported at ...arrival.peak (pydantic puts model-validator errors on the model itself).
_MARK = "<<"
_END = ">>"


def _image(kind: models.EngineKind) -> str:
    """The sample image of the kind's first registered engine (NIM's generations share one)."""
    return next(e.sample_image for e in registry.engines() if e.kind == kind)


class ScenarioError(ValueError):
    """A bad scenario; the message names the file and the field path, e.g. `workload.synthetic.arrival.rate`."""


def _at(field: str, message: str) -> ValueError:
    return ValueError(f"{_MARK}{field}{_END}{message}")


def _non_negative_duration(value: object) -> float:
    if value in (0, "0"):
        return 0.0
    seconds = models.parse_duration(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


# `0s` allowed: offsets such as a spike's start or a diurnal phase.
Offset = Annotated[
    float,
    pydantic.BeforeValidator(_non_negative_duration),
    pydantic.PlainSerializer(models.format_duration, return_type=str),
]


def _ref_kind(value: Any) -> str:
    return "key" if isinstance(value, str) else "numbers"


# A catalog key or the numbers inline; the tags never show in error paths (see `_path`).
ModelRef = Annotated[
    Annotated[str, pydantic.Tag("key")] | Annotated[models.ModelShape, pydantic.Tag("numbers")],
    pydantic.Discriminator(_ref_kind),
]
GpuRef = Annotated[
    Annotated[str, pydantic.Tag("key")] | Annotated[models.GpuSpec, pydantic.Tag("numbers")],
    pydantic.Discriminator(_ref_kind),
]
_TAGS = {"key", "numbers"}


class Cost(models.Base):
    gpu_hourly: float = pydantic.Field(ge=0, le=10_000, description="Price of one GPU-hour.")


class Tuning(models.Base):
    """The spec's tuning, less initialMaxBatchSize (the scenario's `initial` carries it)."""

    mode: models.TuningMode = models.TuningMode.AUTO
    max_batch_size: models.BatchBounds = pydantic.Field(default_factory=models.BatchBounds)
    kv_cache_dtype: models.KvCachePolicy = models.KvCachePolicy.AUTO
    min_change_interval: models.Duration = pydantic.Field(default="10m", validate_default=True)


class Initial(models.Base):
    """The deployment as it runs when the scenario starts; absent values are the engine's defaults."""

    max_batch_size: int | None = pydantic.Field(default=None, ge=1, le=65536)
    kv_cache_dtype: models.KvDtype | None = None
    replicas: int | None = pydantic.Field(default=None, ge=1, le=1000)


class Length(models.Base):
    mean: float = pydantic.Field(ge=1, le=10_000_000, description="Mean tokens.")
    dist: Literal["lognormal", "fixed"] = "lognormal"
    cv: float = pydantic.Field(default=1.0, ge=0, le=10, description="Coefficient of variation (lognormal).")
    max: int | None = pydantic.Field(default=None, ge=1, le=10_000_000, description="Clip longer draws to this.")

    @pydantic.model_validator(mode="after")
    def _max_above_mean(self) -> Length:
        if self.max is not None and self.max < self.mean:
            raise _at("max", f"must be at least the mean ({self.mean:g}), got {self.max}")
        return self

    def sampler(self) -> workload.Length:
        if self.dist == "fixed":
            tokens = round(self.mean)
            return workload.Fixed(tokens if self.max is None else min(tokens, self.max))
        return workload.LogNormal(self.mean, self.cv, high=self.max)


Pattern = Literal["poisson", "diurnal", "ramp", "spike", "onoff"]
# Which optional keys each pattern takes (required ones are checked separately).
_PATTERN_KEYS: dict[str, set[str]] = {
    "poisson": set(),
    "diurnal": {"amplitude", "period", "phase"},
    "ramp": {"peak", "at", "length"},
    "spike": {"peak", "at", "length"},
    "onoff": {"on", "off", "off_rate"},
}
_REQUIRED: dict[str, tuple[str, ...]] = {"ramp": ("peak",), "spike": ("peak", "at", "length"), "onoff": ("on", "off")}


class Arrival(models.Base):
    """The request rate over time; `rate` is the steady, mean, starting, base or burst rate by pattern."""

    pattern: Pattern = "poisson"
    rate: float = pydantic.Field(gt=0, le=1_000_000, description="Requests per second.")
    peak: float | None = pydantic.Field(default=None, gt=0, le=1_000_000, description="ramp: end rate; spike: rate.")
    amplitude: float | None = pydantic.Field(default=None, ge=0, le=1, description="diurnal: 0..1 (default 0.5).")
    period: models.Duration | None = pydantic.Field(default=None, description="diurnal: default the duration.")
    phase: Offset | None = pydantic.Field(default=None, description="diurnal: shift of the sine (default 0s).")
    at: Offset | None = pydantic.Field(default=None, description="ramp/spike: when it starts.")
    length: models.Duration | None = pydantic.Field(default=None, description="ramp/spike: how long it lasts.")
    on: models.Duration | None = pydantic.Field(default=None, description="onoff: burst length.")
    off: Offset | None = pydantic.Field(default=None, description="onoff: pause length.")
    off_rate: float | None = pydantic.Field(default=None, ge=0, le=1_000_000, description="onoff: rate in pauses.")

    @pydantic.model_validator(mode="after")
    def _keys_fit_the_pattern(self) -> Arrival:
        allowed = _PATTERN_KEYS[self.pattern]
        for field in ("peak", "amplitude", "period", "phase", "at", "length", "on", "off", "off_rate"):
            if getattr(self, field) is not None and field not in allowed:
                takes = ", ".join(sorted(_camel(k) for k in allowed)) or "none"
                raise _at(_camel(field), f"not a key of pattern {self.pattern} (it takes: {takes})")
        for field in _REQUIRED.get(self.pattern, ()):
            if getattr(self, field) is None:
                raise _at(_camel(field), f"required for pattern {self.pattern}")
        return self

    def profile(self, *, duration: float, scale: float) -> workload.RateProfile:
        """The rate profile with every rate multiplied by `scale` (the workload's rateScale)."""
        rate = self.rate * scale
        if self.pattern == "poisson":
            return workload.constant(rate)
        if self.pattern == "diurnal":
            amplitude = 0.5 if self.amplitude is None else self.amplitude
            return workload.diurnal(rate, amplitude=amplitude, period=self.period or duration, phase=self.phase or 0.0)
        if self.pattern == "spike":
            assert self.peak is not None and self.at is not None and self.length is not None
            return workload.spike(rate, self.peak * scale, at=self.at, length=self.length)
        if self.pattern == "onoff":
            assert self.on is not None and self.off is not None
            return workload.on_off(rate, on=self.on, off=self.off, off_rate=(self.off_rate or 0.0) * scale)
        assert self.peak is not None
        start, end = self.at or 0.0, self.peak * scale
        span = self.length or max(duration - start, 1.0)
        # Flat at `rate` until `at`, linear to `peak` over `length`, then flat.
        return workload.RateProfile(lambda t: rate + (end - rate) * min(max((t - start) / span, 0.0), 1.0),
                                    max(rate, end), f"ramp({rate:g}->{end:g}/s)")


class Part(models.Base):
    """One request shape of a mix."""

    weight: float = pydantic.Field(gt=0, le=1_000_000, description="Relative share of the requests.")
    input: Length
    output: Length


class Synthetic(models.Base):
    arrival: Arrival
    input: Length = pydantic.Field(default_factory=lambda: Length(mean=1000, cv=1.0))
    output: Length = pydantic.Field(default_factory=lambda: Length(mean=200, cv=1.0))
    mix: list[Part] | None = pydantic.Field(
        default=None, min_length=1, max_length=16,
        description="Several request shapes, each request drawing one by weight (instead of input and output).",
    )

    @pydantic.model_validator(mode="after")
    def _lengths_or_mix(self) -> Synthetic:
        if self.mix is not None:
            for field in ("input", "output"):
                if field in self.model_fields_set:
                    raise _at(field, "set either input and output, or mix, not both")
        return self

    def lengths(self) -> dict[str, Any]:
        """The keyword arguments of `workload.synthetic` that draw each request's token counts."""
        if self.mix is None:
            return {"isl": self.input.sampler(), "osl": self.output.sampler()}
        return {"mix": workload.Mix(tuple((p.weight, p.input.sampler(), p.output.sampler()) for p in self.mix))}


TraceFormat = Literal["azure", "mooncake"]


class Workload(models.Base):
    trace: str | None = pydantic.Field(
        default=None, min_length=1, max_length=4096,
        description="A trace file, relative to the scenario file's folder: an Azure-format CSV, or Mooncake JSON "
        "lines (.jsonl).",
    )
    trace_format: TraceFormat | None = pydantic.Field(
        default=None, description="azure or mooncake; by default mooncake for a .jsonl file, else azure."
    )
    trace_start: Offset | None = pydantic.Field(
        default=None, description="Replay the trace from this offset into it (default 0s)."
    )
    prefix_retention: models.Duration | None = pydantic.Field(
        default=None,
        description="mooncake: how long the prefix cache keeps a block after its last use; the scenario's "
        "prefixHitRate is then measured from the trace's hash_ids.",
    )
    rate_scale: float = pydantic.Field(default=1.0, gt=0, le=10_000, description="Multiply the request rate.")
    rate_scale_method: Literal["superpose", "compress"] = "superpose"
    synthetic: Synthetic | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> Workload:
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("set exactly one of trace and synthetic")
        if self.trace is None:
            for field in ("trace_format", "trace_start", "prefix_retention"):
                if getattr(self, field) is not None:
                    raise _at(_camel(field), "only with a trace")
        elif self.prefix_retention is not None and self.format() != "mooncake":
            raise _at("prefixRetention", "needs a mooncake trace (its hash_ids); this trace is azure")
        return self

    def format(self) -> TraceFormat:
        """The trace's format: as set, else by the file's suffix."""
        if self.trace_format is not None:
            return self.trace_format
        return "mooncake" if (self.trace or "").endswith(".jsonl") else "azure"


class Peers(models.Base):
    """Overrides for the peers' user-chosen targets (their algorithms keep the published defaults)."""

    concurrency_target: float | None = pydantic.Field(
        default=None, gt=0, le=100_000,
        description="Requests per pod for hpa (running) and kpa (in flight); default: the load-tested SLO concurrency.",
    )


class Scenario(models.Base):
    name: str = pydantic.Field(min_length=1, max_length=validation.MAX_NAME_LENGTH,
                               pattern=validation.NAME_PATTERN.pattern)
    model: ModelRef
    gpu: GpuRef
    gpus_per_replica: int = pydantic.Field(default=1, ge=1, le=64)
    weights: models.Precision = models.Precision.BF16
    engine: models.EngineKind = models.EngineKind.VLLM
    # The spec's engine.maxNumBatchedTokens: the per-step token budget pinned, so the operator tunes the batch and
    # the KV dtype only (absent: the engine's default, and the budget is a tuned knob).
    max_num_batched_tokens: int | None = pydantic.Field(default=None, ge=16, le=10_000_000)
    slo: models.SloSpec
    cost: Cost | None = None
    cold_start: models.Duration = pydantic.Field(default="300s", validate_default=True)
    duration: models.Duration
    seed: int = pydantic.Field(default=1, ge=0, le=2**31)
    interval: models.Duration = pydantic.Field(default="15s", validate_default=True)
    window: models.Duration = pydantic.Field(default="60s", validate_default=True)
    prefix_hit_rate: float = pydantic.Field(default=0.0, ge=0, le=1)
    # How the twin's router sends requests to the pods (what the operator is told is scaling.routing).
    routing: models.Routing = models.Routing.LEAST_OUTSTANDING
    scaling: models.ScalingSpec = pydantic.Field(default_factory=models.ScalingSpec)
    tuning: Tuning = pydantic.Field(default_factory=Tuning)
    initial: Initial = pydantic.Field(default_factory=Initial)
    workload: Workload
    peers: Peers = pydantic.Field(default_factory=Peers)

    @pydantic.field_validator("model")
    @classmethod
    def _known_model(cls, value: str | models.ModelShape) -> str | models.ModelShape:
        if isinstance(value, str) and value not in catalog.MODELS:
            _unknown(value, catalog.MODELS, "model")
        return value

    @pydantic.field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | models.GpuSpec) -> str | models.GpuSpec:
        if isinstance(value, str) and value not in catalog.GPUS:
            _unknown(value, catalog.GPUS, "GPU")
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Scenario:
        b = self.tuning.max_batch_size
        first = self.initial.max_batch_size
        if first is not None and not b.min <= first <= b.max:
            raise _at("initial.maxBatchSize", f"must lie within tuning.maxBatchSize {b.min}..{b.max}, got {first}")
        n = self.initial.replicas
        s = self.scaling
        if n is not None and not s.min_replicas <= n <= s.max_replicas:
            raise _at("initial.replicas",
                      f"must lie within scaling.minReplicas..maxReplicas ({s.min_replicas}..{s.max_replicas}), got {n}")
        kv = self.initial.kv_cache_dtype
        policy = self.tuning.kv_cache_dtype
        if kv is not None and (policy.value != kv.value and policy is not models.KvCachePolicy.AUTO):
            raise _at("initial.kvCacheDtype", f"{kv.value} contradicts tuning.kvCacheDtype {policy.value}")
        if self.window < self.interval:
            raise _at("window", f"must be at least the interval ({models.format_duration(self.interval)})")
        if self.workload.prefix_retention is not None and "prefix_hit_rate" in self.model_fields_set:
            raise _at("prefixHitRate", "measured from the trace when workload.prefixRetention is set; set one of them")
        spec = to_spec(self)
        for problem in validation.check(spec):
            raise _at(_SPEC_PATHS.get(problem.path, problem.path), problem.message)
        knobs = initial_knobs(self, spec)
        try:
            perfmodel.coefficients(replica.of(spec, knobs))
        except perfmodel.ModelDoesNotFit as e:
            raise _at("gpu", str(e)) from None
        except pydantic.ValidationError as e:
            raise _at("initial.kvCacheDtype", e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self


# Where a spec problem lives in the scenario file.
_SPEC_PATHS = {
    "spec.accelerator": "gpu",
    "spec.accelerator.type": "gpu",
    "spec.model.architecture": "model",
    "spec.model.weights": "weights",
    "spec.tuning.kvCacheDtype": "tuning.kvCacheDtype",
}


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(p.title() for p in rest)


def _unknown(key: str, known: dict[str, Any], what: str) -> None:
    raise ValueError(f"unknown {what} {key!r}; known: {', '.join(sorted(known))}")


# ---------------------------------------------------------------------------------------------- derived


def to_spec(s: Scenario) -> models.InferenceDeploymentSpec:
    """The InferenceDeployment spec that decide() sees for this scenario."""
    if isinstance(s.model, str):
        model = models.ModelSpec(name=s.model, architecture=s.model, weights=s.weights)
    else:
        model = models.ModelSpec(name=s.model.name, custom=s.model, weights=s.weights)
    hourly = s.cost.gpu_hourly if s.cost is not None else None
    if isinstance(s.gpu, str):
        accelerator = models.AcceleratorSpec(type=s.gpu, count=s.gpus_per_replica, hourly_cost=hourly)
    else:
        accelerator = models.AcceleratorSpec(custom=s.gpu, count=s.gpus_per_replica, hourly_cost=hourly)
    t = s.tuning
    tuning = models.TuningSpec(mode=t.mode, max_batch_size=t.max_batch_size, kv_cache_dtype=t.kv_cache_dtype,
                               min_change_interval=models.format_duration(t.min_change_interval),
                               initial_max_batch_size=s.initial.max_batch_size)
    return models.InferenceDeploymentSpec(
        model=model, accelerator=accelerator,
        engine=models.EngineSpec(kind=s.engine, image=_image(s.engine),
                                 max_num_batched_tokens=s.max_num_batched_tokens),
        slo=s.slo, tuning=tuning, scaling=s.scaling,
    )


def initial_knobs(s: Scenario, spec: models.InferenceDeploymentSpec | None = None) -> models.Knobs:
    """The knobs the deployment runs when the scenario starts: `initial`, else the engine's defaults."""
    knobs, _ = decide.initial_knobs(spec or to_spec(s))
    if s.initial.kv_cache_dtype is not None:
        knobs = knobs.model_copy(update={"kv_cache_dtype": s.initial.kv_cache_dtype})
    return knobs


def arrivals(s: Scenario) -> list[workload.Arrival]:
    """The arrival stream, seeded by the scenario's seed, cut to its duration."""
    w = s.workload
    if w.synthetic is not None:
        syn = w.synthetic
        profile = syn.arrival.profile(duration=s.duration, scale=w.rate_scale)
        return workload.synthetic(profile, duration=s.duration, seed=s.seed, **syn.lengths())
    assert w.trace is not None
    try:
        trace = list(_mooncake(w.trace).arrivals) if w.format() == "mooncake" else workload.load_trace(w.trace)
        if w.rate_scale != 1.0:
            trace = workload.scale_rate(trace, w.rate_scale, method=w.rate_scale_method, seed=s.seed)
    except workload.WorkloadError as e:
        raise ScenarioError(f"workload.trace: {e}") from None
    start = w.trace_start or 0.0
    out = workload.window(trace, start=start, duration=s.duration)
    if not out:
        raise ScenarioError(f"workload.traceStart: no request of the trace arrives within "
                            f"{models.format_duration(start)} + {models.format_duration(s.duration)}")
    return out


def _mooncake(path: str) -> workload.BlockTrace:
    p = pathlib.Path(path)
    try:
        stamp = p.stat().st_mtime_ns
    except OSError as e:
        raise workload.WorkloadError(f"{p.name}: cannot read the trace: {e.strerror or e}") from None
    return _mooncake_cached(str(p), stamp)


# parse() measures the hit rate and arrivals() replays the same file: read it once (3 MB of JSON lines, 0.3 s).
@functools.lru_cache(maxsize=4)
def _mooncake_cached(path: str, stamp: int) -> workload.BlockTrace:
    return workload.load_mooncake(path)


def measured_prefix_hit_rate(s: Scenario) -> float:
    """The prefix-cache hit rate of the scenario's stretch of its mooncake trace at workload.prefixRetention."""
    w = s.workload
    assert w.trace is not None and w.prefix_retention is not None
    trace = _mooncake(w.trace)
    return workload.prefix_hit_rate(trace, retention=w.prefix_retention, start=w.trace_start or 0.0,
                                    duration=s.duration)


# ---------------------------------------------------------------------------------------------- loading


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part in _TAGS:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: Any) -> tuple[str, str]:
    """A pydantic error as (extra path, message) in the house's words."""
    kind, ctx, text = error["type"], error.get("ctx") or {}, error["msg"].removeprefix("Value error, ")
    if text.startswith(_MARK) and _END in text:
        field, text = text[len(_MARK):].split(_END, 1)
        return field, text
    got = error.get("input")
    shown = f", got {got!r}" if isinstance(got, str | int | float) and not isinstance(got, bool) else ""
    if kind == "extra_forbidden":
        return "", "unknown key"
    if kind == "missing":
        return "", "required key is missing"
    if kind == "greater_than":
        bound = ctx.get("gt")
        return "", f"must be more than {'zero' if bound == 0 else bound}{shown}"
    if kind == "greater_than_equal":
        return "", f"must be at least {ctx.get('ge')}{shown}"
    if kind in ("less_than_equal", "less_than"):
        return "", f"must be at most {ctx.get('le', ctx.get('lt'))}{shown}"
    if kind in ("enum", "literal_error"):
        return "", f"must be one of {ctx.get('expected', '?')}{shown}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "", f"must be a whole number{shown}"
    if kind in ("float_parsing", "float_type"):
        return "", f"must be a number{shown}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "", "must be a mapping"
    return "", text


def problems(error: pydantic.ValidationError) -> list[str]:
    """Every error of a validation as `field.path: message`."""
    out = []
    for e in error.errors(include_url=False):
        extra, text = _message(e)
        path = ".".join(p for p in (_path(tuple(e["loc"])), extra) if p)
        out.append(f"{path or 'scenario'}: {text}")
    return out


def parse(raw: Any, *, base: pathlib.Path | None = None) -> Scenario:
    """A scenario from a mapping; a relative trace is resolved against `base` and must exist."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario: must be a mapping, got {type(raw).__name__}")
    try:
        s = Scenario.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ScenarioError("; ".join(problems(error))) from None
    trace = s.workload.trace
    if trace is not None:
        path = pathlib.Path(trace)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise ScenarioError(f"workload.trace: no such file {trace!r} (relative to {base or '.'})")
        s = s.model_copy(update={"workload": s.workload.model_copy(update={"trace": str(path)})})
        if s.workload.prefix_retention is not None:
            try:
                hit = measured_prefix_hit_rate(s)
            except workload.WorkloadError as e:
                raise ScenarioError(f"workload.trace: {e}") from None
            # Four digits: the twin rounds cached tokens to whole 16-token blocks anyway.
            s = s.model_copy(update={"prefix_hit_rate": round(hit, 4)})
    return s


def load(path: str | pathlib.Path) -> Scenario:
    """Read and validate a scenario file; errors name the file and the field (or the YAML line)."""
    p = pathlib.Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: not a text file (invalid UTF-8)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{p}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    try:
        return parse(raw, base=p.resolve().parent)
    except ScenarioError as e:
        raise ScenarioError(f"{p}: {e}") from None


def peak_rate(stream: list[workload.Arrival], *, window: float = 60.0) -> float:
    """The highest request rate over any `window` seconds (a sliding count), requests/s."""
    if not stream:
        return 0.0
    best, lo = 0, 0
    for hi, a in enumerate(stream):
        while stream[lo].time <= a.time - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window
