"""Pure: the Engine value (everything the operator and the twin know about one model server) and its helpers."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping, Sequence

from infertune import models
from infertune.runtimes import metrics, twin


@dataclasses.dataclass(frozen=True, slots=True)
class EngineKnobs:
    """Everything the operator renders into an engine's command line or environment."""

    model: str
    served_model_name: str
    port: int
    tensor_parallel: int
    max_batch_size: int
    kv_cache_dtype: models.KvDtype
    chunked_prefill: bool | None = None
    max_num_batched_tokens: int | None = None
    prefix_caching: bool | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Launch:
    """How to start the engine container: command (None keeps the image's entrypoint), args, env, files."""

    command: tuple[str, ...] | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    # File name -> content, mounted read-only at CONFIG_DIR (TensorRT-LLM's YAML options).
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)


CONFIG_DIR = "/etc/infertune"

# The knobs, in the order the docs table lists them.
KNOBS = (
    "max_batch_size", "kv_cache_dtype", "chunked_prefill", "max_num_batched_tokens", "prefix_caching",
    "gpu_memory_utilization", "tensor_parallel", "served_model_name", "port", "max_model_len",
)

# Which spec field sets each knob, for error messages that tell the user where to go instead.
KNOB_FIELDS = {
    "max_batch_size": "tuning.maxBatchSize",
    "kv_cache_dtype": "tuning.kvCacheDtype",
    "chunked_prefill": "engine.chunkedPrefill",
    "max_num_batched_tokens": "engine.maxNumBatchedTokens",
    "prefix_caching": "engine.prefixCaching",
    "gpu_memory_utilization": "engine.gpuMemoryUtilization",
    "tensor_parallel": "accelerator.count",
    "served_model_name": "model.name",
    "port": "engine.port",
    "max_model_len": "model.maxModelLen",
    "model": "model.name",
}
# Owned flags that set no single knob, and why the user may not pass them.
OWNED_REASONS = {
    "config_file": "reads options from a file, where any knob the operator owns could be set; pass the options "
                   "you need as arguments instead",
    "metrics": "changes the metrics the engine exports, which the operator reads to decide",
}


Check = Callable[[models.InferenceDeploymentSpec], Sequence[tuple[str, str]]]  # -> (field path, problem)


def _always(engine: models.EngineSpec) -> bool:
    return True


def _no_checks(spec: models.InferenceDeploymentSpec) -> Sequence[tuple[str, str]]:
    return ()


@dataclasses.dataclass(frozen=True, slots=True)
class Engine:
    """One engine variant: how to launch it and read it back, the knobs it has, what it exports, and its checks.

    Every place that depends on the engine reads it from here: render (launch, paths, writable paths),
    validation (owned flags and variables, FP8 KV, checks), the tuner (defaults, knob flags), the operator's
    metric queries (dialect), the twin (exposition), the docs tables and the CRD's kind enum (registry.ALL).
    """

    # The value of spec.engine.kind it serves (a models.EngineKind member for the shipped engines).
    kind: str
    variant: str  # "vllm", "nim-1", "nim-2-vllm"...: what the docs table calls it; unique
    health_path: str
    # The metric names the operator queries and the path they are served at (declared once, here).
    dialect: metrics.Dialect
    # The twin's copy of the engine's exporter: labels, types, buckets.
    exposition: twin.Exposition
    launch: Callable[[EngineKnobs], Launch]
    # knob -> how it is set ("--max-num-seqs", "env NIM_MAX_NUM_SEQS"); absent = the engine lacks it.
    knob_flags: Mapping[str, str]
    # Flags and variables that set an owned knob: a user's engine.args/env may not contain them.
    # flag -> knob it sets (flags are normalised with normalise_flag), aliases included.
    owned_flags: Mapping[str, str]
    owned_env: Mapping[str, str]
    default_max_batch_size: Callable[[models.GpuSpec], int]
    fp8_kv: bool  # the engine can run an FP8 KV cache when the GPU supports it
    # The inverse of launch: the knobs set by a container's argv (command + args), environment and mounted
    # files (the twin reads pods with it; a round-trip test keeps it honest). Knobs not set are absent.
    read: Callable[[Sequence[str], Mapping[str, str], Mapping[str, str]], dict[str, object]]
    # An image the samples, the twin's scenarios and the docs may use to run it.
    sample_image: str
    # Whether this variant serves an engine spec of its kind (NIM picks by generation and backend).
    selects: Callable[[models.EngineSpec], bool] = _always
    # The engine's own semantic checks of a spec, beyond the owned flags (vLLM's token budget >= batch).
    checks: Check = _no_checks
    # Whether prompts are chunked when the spec does not say (TensorRT-LLM's LLM API defaults to off).
    chunked_prefill_default: bool = True
    # The engine parses its arguments with Python's argparse and its default allow_abbrev=True, so any
    # unambiguous prefix of a long flag sets that flag (`--max-num-seq 4096` is `--max-num-seqs` for vLLM
    # and SGLang). click (trtllm-serve) and clap (TGI's launcher) accept only whole flag names.
    prefix_matching: bool = False
    # Every flag of the launcher is also read from an environment variable named after it (TGI's clap
    # `#[clap(long, env)]`: --num-shard <-> NUM_SHARD), so the variables of owned flags are owned too.
    env_from_flags: bool = False
    # Directories the engine writes at start-up besides $HOME (TGI's weight cache /data, NIM's
    # /opt/nim/.cache): each gets an emptyDir so the engine runs as a non-root user on a root-owned image.
    writable_paths: tuple[str, ...] = ()
    # A variable whose value is more arguments, shell-quoted (NIM 2.x's NIM_PASSTHROUGH_ARGS for its backend).
    args_env: str | None = None

    def __post_init__(self) -> None:
        # The dialect is the engine's own, under its variant's name (the docs tables and the twin key on it).
        if self.dialect.name != self.variant:
            raise ValueError(f"engine {self.variant}: dialect is named {self.dialect.name!r}, not the variant")
        unknown = sorted(set(self.knob_flags) - set(KNOBS))
        if unknown:
            raise ValueError(f"engine {self.variant}: knob_flags names unknown knobs {unknown}; known: {KNOBS}")

    def arguments(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """Every argument the server sees: the container's argv, then those in `args_env`."""
        extra = shlex.split(env.get(self.args_env, "")) if self.args_env else []
        return [*argv, *extra]

    @property
    def metrics_path(self) -> str:
        return self.dialect.path

    def lacks(self, knob: str) -> bool:
        return knob not in self.knob_flags

    def default_buckets(self, signal: metrics.Signal) -> tuple[float, ...] | None:
        """The published default `le` edges of the histogram this engine exports a signal in (its exposition's,
        under the dialect's newest name); None when it lacks the signal or the edges depend on the model."""
        source = self.dialect.sources.get(signal)
        if source is None:
            return None
        for spec in self.exposition.metrics.values():
            if spec.kind is twin.Kind.HISTOGRAM and spec.name == source.names[0] and isinstance(spec.buckets, tuple):
                return spec.buckets
        return None

    def knob_flag(self, knob: str) -> str | None:
        """How this engine sets a knob ("--max-num-batched-tokens", "env NIM_MAX_NUM_SEQS"); None: it lacks it."""
        return self.knob_flags.get(knob)


def normalise_flag(arg: str) -> str | None:
    """The flag an argument sets, in one spelling: '--max_num_seqs=8' -> '--max-num-seqs'; values -> None."""
    if not arg.startswith("-"):
        return None
    name = arg.split("=", 1)[0]
    # argparse front ends of vLLM and SGLang accept both spellings; TRT-LLM uses underscores.
    return "--" + name.lstrip("-").replace("_", "-").lower()


def flag_env_name(flag_name: str) -> str:
    """The environment variable a clap `env` flag reads: '--num-shard' -> 'NUM_SHARD'."""
    return flag_name.lstrip("-").replace("-", "_").upper()


def owned_by_arg(runtime: Engine, arg: str) -> tuple[str, str] | None:
    """(the owned flag, its knob) when a user argument would set an owned knob as the engine parses it.

    Checked: both spellings of a flag (`--max_num_seqs`, `--max-num-seqs`), both value forms (`--x=v`, `--x v`),
    and for argparse engines every abbreviation (`--max-num-seq` reaches `--max-num-seqs`; an ambiguous
    prefix such as `--max-num` makes argparse refuse to start, so refusing it here loses nothing).
    """
    name = normalise_flag(arg)
    if name is None:
        return None
    if name in runtime.owned_flags:
        return name, runtime.owned_flags[name]
    if runtime.prefix_matching and len(name) > 3:
        for owned in sorted(runtime.owned_flags):
            if owned.startswith(name):
                return owned, runtime.owned_flags[owned]
    return None


def owned_by_env(runtime: Engine, name: str) -> tuple[str, str] | None:
    """(what it stands for, its knob) when a user variable would set an owned knob."""
    if name in runtime.owned_env:
        return name, runtime.owned_env[name]
    if runtime.env_from_flags:
        for owned, knob in runtime.owned_flags.items():
            if len(owned) > 3 and flag_env_name(owned) == name:
                return owned, knob
    return None


def escape_expansion(arg: str) -> str:
    """The argument as the kubelet must receive it for the engine to see it as written.

    The kubelet expands `$(VAR)` in a container's args from its environment, so `$(X)` with X set to
    `--max-num-seqs=4096` would reach the engine as an owned flag the check never saw. `$$` is the kubelet's
    escape for a literal `$`; doubling every `$` makes expansion the identity: '$(X)' -> '$$(X)' -> '$(X)'.
    """
    return arg.replace("$", "$$")


def flag(name: str, value: object) -> tuple[str, str]:
    return (name, str(value))


def flags(pairs: list[tuple[str, object] | None]) -> tuple[str, ...]:
    """Flatten (flag, value) pairs, skipping None entries; a value of None makes a bare flag."""
    out: list[str] = []
    for pair in pairs:
        if pair is None:
            continue
        name, value = pair
        out.append(name)
        if value is not None:
            out.append(str(value))
    return tuple(out)


def flag_value(args: Sequence[str], *names: str) -> str | None:
    """The value of the last occurrence of any spelling of a flag ('--x v' or '--x=v'); None when absent."""
    wanted = {normalise_flag(n) for n in names}
    value: str | None = None
    for i, arg in enumerate(args):
        if normalise_flag(arg) not in wanted:
            continue
        if "=" in arg:
            value = arg.split("=", 1)[1]
        elif i + 1 < len(args):
            value = args[i + 1]
    return value


def has_flag(args: Sequence[str], *names: str) -> bool:
    wanted = {normalise_flag(n) for n in names}
    return any(normalise_flag(a) in wanted for a in args)


def put(out: dict[str, object], knob: str, value: str | None, convert: Callable[[str], object]) -> None:
    """Set a knob from its text, leaving it unset when absent; a bad value raises ValueError naming the knob."""
    if value is None:
        return
    try:
        out[knob] = convert(value)
    except ValueError:
        raise ValueError(f"{knob}: cannot read {value!r}") from None


def is_fp8(value: str) -> models.KvDtype:
    return models.KvDtype.FP8 if value.lower().startswith("fp8") else models.KvDtype.DEFAULT


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
