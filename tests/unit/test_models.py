"""Test: the resource's schema and semantic validation, valid samples and a table of invalid specs."""

from __future__ import annotations

import glob
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

import specs
from infertune import kube, models, validation

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "manifests/samples/*.yaml"))))
def test_samples_are_valid(path: str) -> None:
    doc = yaml.safe_load(pathlib.Path(path).read_text())
    spec, problems = validation.parse(doc["spec"])
    assert problems == []
    assert spec is not None


def test_base_spec_defaults() -> None:
    spec, problems = validation.parse(specs.spec())
    assert problems == [] and spec is not None
    assert spec.slo.ttft == 1.5 and spec.slo.itl == 0.04 and spec.slo.percentile == 95
    assert spec.tuning.mode is models.TuningMode.AUTO
    assert spec.tuning.min_change_interval == 600
    assert spec.scaling.cold_start is None  # auto: measured
    assert spec.scaling.scale_down_delay is None  # auto: the longer of 5m and the cold start
    assert spec.engine.port == 8000


@pytest.mark.parametrize(("text", "seconds"), [
    ("1500ms", 1.5), ("1.5s", 1.5), ("5m", 300), ("1h30m", 5400), ("40ms", 0.04), ("2h", 7200),
])
def test_durations(text: str, seconds: float) -> None:
    assert models.parse_duration(text) == pytest.approx(seconds)
    assert models.parse_duration(models.format_duration(seconds)) == pytest.approx(seconds)


D = specs.DELETE
# (name, changes to the valid base spec, the field path the first problem must name, text in its message)
INVALID = [
    ("missing model", {"model": D}, "spec.model", "required"),
    ("missing engine image", {"engine.image": D}, "spec.engine.image", "required"),
    ("unknown engine kind", {"engine.kind": "llamacpp"}, "spec.engine.kind", "vllm"),
    ("negative port", {"engine.port": -1}, "spec.engine.port", "greater than or equal to 1"),
    ("port too large", {"engine.port": 70000}, "spec.engine.port", "less than or equal to 65535"),
    ("both architecture and custom", {"model.custom": {"name": "x", "layers": 1, "hiddenSize": 1,
     "attentionHeads": 1, "kvHeads": 1, "headDim": 1, "intermediateSize": 1, "parameters": 1e9, "vocabSize": 1,
     "maxContextTokens": 1}}, "spec.model", "exactly one of architecture"),
    ("neither architecture nor custom", {"model.architecture": D}, "spec.model", "exactly one of architecture"),
    ("unknown architecture", {"model.architecture": "gpt-5"}, "spec.model.architecture",
     "unknown model 'gpt-5'; known: llama-3.1-405b"),
    ("unknown gpu", {"accelerator.type": "tpu-v5"}, "spec.accelerator.type", "known: a100-80gb"),
    ("no gpu at all", {"accelerator.type": D}, "spec.accelerator", "exactly one of type"),
    ("zero gpus", {"accelerator.count": 0}, "spec.accelerator.count", "greater than or equal to 1"),
    ("negative cost", {"accelerator.hourlyCost": -2}, "spec.accelerator.hourlyCost", "greater than or equal to 0"),
    ("ttft without unit", {"slo.ttft": "1500"}, "spec.slo.ttft", "duration with a unit"),
    ("ttft as number", {"slo.ttft": 1.5}, "spec.slo.ttft", "duration with a unit"),
    ("zero itl", {"slo.itl": "0ms"}, "spec.slo.itl", "longer than zero"),
    ("negative itl", {"slo.itl": "-40ms"}, "spec.slo.itl", "duration with a unit"),
    ("percentile too high", {"slo.percentile": 100}, "spec.slo.percentile", "less than or equal to 99"),
    ("batch min above max", {"tuning.maxBatchSize": {"min": 64, "max": 8}}, "spec.tuning.maxBatchSize",
     "min (64) must not exceed max (8)"),
    ("batch bound zero", {"tuning.maxBatchSize": {"min": 0, "max": 8}}, "spec.tuning.maxBatchSize.min",
     "greater than or equal to 1"),
    ("initial outside bounds", {"tuning.initialMaxBatchSize": 1024}, "spec.tuning", "must lie within"),
    ("unknown tuning mode", {"tuning.mode": "yolo"}, "spec.tuning.mode", "auto"),
    ("unknown kv policy", {"tuning.kvCacheDtype": "int4"}, "spec.tuning.kvCacheDtype", "fp8"),
    ("bad change interval", {"tuning.minChangeInterval": "soon"}, "spec.tuning.minChangeInterval", "duration"),
    ("min replicas above max", {"scaling.minReplicas": 5}, "spec.scaling", "minReplicas (5) must not exceed"),
    ("standby above max replicas", {"scaling.standby": {"min": 0, "max": 9}}, "spec.scaling",
     "standby.max (9) must not exceed maxReplicas (4)"),
    ("standby min above max", {"scaling.standby": {"min": 2, "max": 1}}, "spec.scaling.standby",
     "min (2) must not exceed max (1)"),
    ("zero min replicas", {"scaling.minReplicas": 0}, "spec.scaling.minReplicas", "greater than or equal to 1"),
    ("bad cold start", {"scaling.coldStart": "later"}, "spec.scaling.coldStart", "duration"),
    ("unknown field", {"slo.ttfb": "1s"}, "spec.slo.ttfb", "unknown field"),
    ("owned flag in args", {"engine.args": ["--enforce-eager", "--max-num-seqs=64"]}, "spec.engine.args[1]",
     "--max-num-seqs sets max_batch_size, which the operator owns; set it through tuning.maxBatchSize"),
    ("owned flag with underscores", {"engine.args": ["--kv_cache_dtype", "fp8"]}, "spec.engine.args[0]",
     "tuning.kvCacheDtype"),
    ("owned env for nim 1", {"engine.kind": "nim", "engine.nim": {"generation": 1},
     "engine.env": [{"name": "NIM_MAX_NUM_SEQS", "value": "8"}]}, "spec.engine.env[0].name", "NIM_MAX_NUM_SEQS"),
    ("nim settings on vllm", {"engine.nim": {"generation": 2}}, "spec.engine", "only valid with kind nim"),
    ("env with value and valueFrom", {"engine.env": [{"name": "A", "value": "1",
     "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "spec.engine.env[0]", "at most one of value"),
    ("bad env name", {"engine.env": [{"name": "A B", "value": "1"}]}, "spec.engine.env[0].name", "pattern"),
    ("owned template label", {"template.labels": {"infertune.io/serving": "false"}}, "spec.template.labels",
     "owned by the operator"),
    ("bad template label", {"template.labels": {"team": "a b"}}, "spec.template.labels", "not a valid label value"),
    ("gpu product in node selector", {"template.nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
     "spec.template.nodeSelector", "choose the GPU with accelerator.type"),
    ("fp8 weights on a100", {"accelerator.type": "a100-80gb", "model.weights": "fp8"}, "spec.model.weights",
     "a100-80gb lacks"),
    ("fp8 kv on a100", {"accelerator.type": "a100-80gb", "tuning.kvCacheDtype": "fp8"}, "spec.tuning.kvCacheDtype",
     "FP8-capable GPU"),
    ("fp8 kv on nim 1", {"engine.kind": "nim", "engine.nim": {"generation": 1}, "tuning.kvCacheDtype": "fp8"},
     "spec.tuning.kvCacheDtype", "model profile"),
    ("model does not fit", {"model.architecture": "llama-3.1-70b"}, "spec.accelerator", "short by"),
    ("context too long", {"model.maxModelLen": 10_000_000}, "spec.model.maxModelLen", "exceeds llama-3.1-8b"),
    ("vllm budget below batch", {"engine.maxNumBatchedTokens": 256}, "spec.engine.maxNumBatchedTokens",
     "at least the largest batch (512)"),
    ("memory fraction too high", {"engine.gpuMemoryUtilization": 1.5}, "spec.engine.gpuMemoryUtilization",
     "less than or equal to 0.99"),
    ("hostile image", {"engine.image": "vllm; rm -rf /"}, "spec.engine.image", "pattern"),
    ("custom gpu with zero bandwidth", {"accelerator.type": D, "accelerator.custom": {"name": "x", "memoryGib": 80,
     "bandwidthGbps": 0, "tflopsBf16": 100}}, "spec.accelerator.custom.bandwidthGbps", "greater than 0"),
    # Issue 18: owned flags as the engines parse them (argparse prefixes, aliases, env equivalents).
    ("argparse prefix of an owned flag", {"engine.args": ["--max-num-seq=4096"]}, "spec.engine.args[0]",
     "--max-num-seq is read by the engine as --max-num-seqs, which sets max_batch_size"),
    ("argparse prefix, value apart", {"engine.args": ["--max-num-seq", "4096"]}, "spec.engine.args[0]",
     "read by the engine as --max-num-seqs"),
    ("sglang prefix of an owned flag", {"engine.kind": "sglang", "engine.args": ["--max-running=9"]},
     "spec.engine.args[0]", "read by the engine as --max-running-requests"),
    ("sglang tensor-parallel alias", {"engine.kind": "sglang", "engine.args": ["--tensor-parallel-size", "2"]},
     "spec.engine.args[0]", "sets tensor_parallel, which the operator owns; set it through accelerator.count"),
    ("sglang --tp", {"engine.kind": "sglang", "engine.args": ["--tp=2"]}, "spec.engine.args[0]", "tensor_parallel"),
    ("trtllm tensor-parallel alias", {"engine.kind": "trtllm", "engine.args": ["--tensor_parallel_size=2"]},
     "spec.engine.args[0]", "--tensor_parallel_size sets tensor_parallel"),
    ("vllm config file", {"engine.args": ["--config", "/etc/x.yaml"]}, "spec.engine.args[0]",
     "reads options from a file"),
    ("end of options", {"engine.args": ["--", "x"]}, "spec.engine.args[0]", "would end the engine's options"),
    ("tgi SHARDED", {"engine.kind": "tgi", "engine.env": [{"name": "SHARDED", "value": "true"}]},
     "spec.engine.env[0].name", "SHARDED (the engine's variable for --sharded) sets tensor_parallel"),
    ("tgi SERVED_MODEL_NAME", {"engine.kind": "tgi", "engine.env": [{"name": "SERVED_MODEL_NAME", "value": "x"}]},
     "spec.engine.env[0].name", "sets served_model_name"),
    ("tgi MAX_BATCH_SIZE", {"engine.kind": "tgi", "engine.env": [{"name": "MAX_BATCH_SIZE", "value": "9"}]},
     "spec.engine.env[0].name", "sets max_batch_size"),
    ("tgi short port flag", {"engine.kind": "tgi", "engine.args": ["-p", "80"]}, "spec.engine.args[0]",
     "-p sets port"),
    ("nim 2 mapped variable", {"engine.kind": "nim", "engine.env": [{"name": "NIM_TENSOR_PARALLEL_SIZE",
     "value": "2"}]}, "spec.engine.env[0].name", "sets tensor_parallel"),
    ("nim 2 prefix in args", {"engine.kind": "nim", "engine.args": ["--max-num-seq=8"]}, "spec.engine.args[0]",
     "read by the engine as --max-num-seqs"),
    # Issue 18: input that passes the types and can never run.
    ("drain timeout beyond int64", {"scaling.drainTimeout": "9999999999999999h"}, "spec.scaling.drainTimeout",
     "at most 5 digits"),
    ("drain timeout over a day", {"scaling.drainTimeout": "25h"}, "spec.scaling.drainTimeout", "at most 24h"),
    ("slo over an hour", {"slo.ttft": "2h"}, "spec.slo.ttft", "at most 1h"),
    ("change interval over 30 days", {"tuning.minChangeInterval": "721h"}, "spec.tuning.minChangeInterval",
     "at most 720h"),
    ("cold start over a day", {"scaling.coldStart": "99999h"}, "spec.scaling.coldStart", "at most 24h"),
    ("scale-down delay over a day", {"scaling.scaleDownDelay": "90000m"}, "spec.scaling.scaleDownDelay",
     "at most 24h"),
    ("scale-down delay neither auto nor a duration", {"scaling.scaleDownDelay": "autoo"},
     "spec.scaling.scaleDownDelay", "expected auto or a duration with a unit"),
    ("scale-down delay zero", {"scaling.scaleDownDelay": "0s"}, "spec.scaling.scaleDownDelay",
     "must be longer than zero"),
    ("routing not known", {"scaling.routing": "round-robin"}, "spec.scaling.routing", "least-outstanding"),
    ("image without a tag after the colon", {"engine.image": "vllm/vllm-openai:"}, "spec.engine.image", "pattern"),
    ("image with upper-case path", {"engine.image": "Vllm/vllm-openai:v1"}, "spec.engine.image", "pattern"),
    ("image with a short digest", {"engine.image": "vllm@sha256:abc"}, "spec.engine.image", "pattern"),
    ("image with an empty path component", {"engine.image": "a//b"}, "spec.engine.image", "pattern"),
    ("annotations over 256 KiB", {"template.annotations": {f"k{i}": "x" * 16_000 for i in range(17)}},
     "spec.template.annotations", "at most 261,120"),
    ("unbounded tolerationSeconds", {"template.tolerations": [{"key": "k", "operator": "Exists",
     "effect": "NoExecute", "tolerationSeconds": 10**12}]}, "spec.template.tolerations[0].tolerationSeconds",
     "less than or equal to 31536000"),
    ("replicas x gpus beyond any cluster", {"scaling.maxReplicas": 1000, "accelerator.count": 64}, "spec",
     "GPUs; at most 40,000"),
    ("port as a boolean", {"engine.port": True}, "spec.engine.port", "valid integer"),
    ("port as a string", {"engine.port": "3"}, "spec.engine.port", "valid integer"),
    ("root without consent", {"template.securityContext": {"runAsUser": 0}}, "spec.template.securityContext",
     "set runAsNonRoot false"),
    ("negative uid", {"template.securityContext": {"runAsUser": -1}}, "spec.template.securityContext.runAsUser",
     "greater than or equal to 0"),
    ("lower-case capability", {"template.securityContext": {"addCapabilities": ["ipc_lock"]}},
     "spec.template.securityContext.addCapabilities[0]", "pattern"),
    ("unknown seccomp profile", {"template.securityContext": {"seccompProfile": "Localhost"}},
     "spec.template.securityContext.seccompProfile", "RuntimeDefault"),
    ("a YAML date where a duration goes", {"slo.ttft": __import__("datetime").date(2024, 1, 1)}, "spec.slo.ttft",
     "not a JSON value"),
]


@pytest.mark.parametrize(("name", "changes", "path", "text"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs(name: str, changes: dict[str, object], path: str, text: str) -> None:
    spec, problems = validation.parse(specs.spec(**changes))
    assert spec is None
    assert problems, "expected a problem"
    paths = [p.path for p in problems]
    assert path in paths, f"{name}: expected a problem at {path}, got {[str(p) for p in problems]}"
    message = next(p.message for p in problems if p.path == path)
    assert text in message, f"{name}: {message!r} lacks {text!r}"


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 25


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    # Schema problems and the catalog's together: a bad ttft and maxReplicas 0 do not hide an unknown GPU.
    _, problems = validation.parse(specs.spec(**{
        "slo.ttft": "fast", "scaling.maxReplicas": 0, "accelerator.type": "tpu-v5", "engine.port": True,
        "engine.args": ["--max-num-seq=9"], "engine.env": [{"name": "X", "value": "1"}, {"name": "NIM_PORT"}],
        "engine.kind": "nim", "template.labels": {"infertune.io/x": "y"}}))
    paths = {p.path for p in problems}
    wanted = {"spec.slo.ttft", "spec.scaling.maxReplicas", "spec.accelerator.type", "spec.engine.port",
              "spec.engine.args[0]", "spec.engine.env[1].name", "spec.template.labels"}
    assert wanted <= paths, [str(p) for p in problems]


def test_a_user_may_pass_flags_that_only_start_like_owned_ones() -> None:
    # --model-impl starts with --model but is not a prefix of it; TRT-LLM (click) and TGI (clap) take no prefixes.
    spec, problems = validation.parse(specs.spec(**{"engine.args": ["--model-impl", "vllm", "--enforce-eager"]}))
    assert problems == [] and spec is not None
    spec, problems = validation.parse(specs.spec(**{"engine.kind": "trtllm", "engine.args": ["--max_batch", "4"]}))
    assert problems == [] and spec is not None
    spec, problems = validation.parse(specs.spec(**{"engine.kind": "tgi", "engine.env": [
        {"name": "HF_TOKEN", "value": "x"}, {"name": "MAX_INPUT_TOKENS", "value": "9"}]}))
    assert problems == [] and spec is not None


@pytest.mark.parametrize("limit", ["1h", "720h", "24h"])
def test_duration_bounds_are_inclusive(limit: str) -> None:
    field = {"1h": "slo.ttft", "720h": "tuning.minChangeInterval", "24h": "scaling.drainTimeout"}[limit]
    spec, problems = validation.parse(specs.spec(**{field: limit}))
    assert problems == [] and spec is not None


def test_problem_messages_name_the_model_shortfall_in_gib() -> None:
    _, problems = validation.parse(specs.spec(**{"model.architecture": "llama-3.1-405b", "accelerator.type": "l4"}))
    (problem,) = [p for p in problems if p.path == "spec.accelerator"]
    assert "needs 754.4 GiB per GPU" in problem.message
    assert "short by" in problem.message


@pytest.mark.parametrize(("name", "ok"), [("llm", True), ("a" * 42, True), ("a" * 43, False), ("Upper", False),
                                          ("9start", False), ("has_underscore", False), ("end-", False)])
def test_resource_names(name: str, ok: bool) -> None:
    assert (validation.check_name(name) == []) is ok


def test_inline_model_and_gpu() -> None:
    shape = {"name": "my-model", "layers": 32, "hiddenSize": 4096, "attentionHeads": 32, "kvHeads": 8,
             "headDim": 128, "intermediateSize": 14336, "parameters": 8e9, "vocabSize": 128256,
             "maxContextTokens": 8192}
    gpu = {"name": "my-gpu", "memoryGib": 48, "bandwidthGbps": 864, "tflopsBf16": 362, "tflopsFp8": 733}
    spec, problems = validation.parse(specs.spec(**{
        "model.architecture": D, "model.custom": shape, "accelerator.type": D, "accelerator.custom": gpu,
    }))
    assert problems == [] and spec is not None
    assert spec.model.custom is not None and spec.model.custom.kv_bytes_per_token(2) == 131072


def test_specs_are_frozen() -> None:
    spec, _ = validation.parse(specs.spec())
    assert spec is not None
    with pytest.raises(ValueError):
        spec.slo.percentile = 50  # type: ignore[misc]


@pytest.mark.parametrize("bad", [
    {"target": {"revision": "r", "maxBatchSize": 13, "kvCacheDtype": "fp8", "handover": -1}},
    {"config": {"revision": "r", "maxBatchSize": 13, "kvCacheDtype": "fp8", "baselineItlP95Ms": "fast"}},
    {"observed": {"sloAttainmentLow": 1.5}},
    {"observed": {"sloAttainmentHigh": -0.1}},
    {"demand": {"rate": 8.0, "attainment": 1.5}},
    {"demand": {"rate": 8.0, "attainment": "high"}},
    {"demand": {"rate": 8.0, "heldSince": 5}},
    {"demand": {"rate": 8.0, "garbageSince": 5}},
    # Strings that are no timestamp: every cycle would otherwise fail where the core reads them.
    {"demand": {"rate": 8.0, "peak": 10.7, "peakAt": "yesterday"}},
    {"demand": {"rate": 8.0, "updated": "2026-13-45T00:00:00Z"}},
    {"demand": {"rate": 8.0, "belowSince": ""}},
    {"config": {"revision": "r", "maxBatchSize": 13, "kvCacheDtype": "fp8", "since": "now"}},
    {"demand": {"rate": 8.0, "asks": [{"at": "soon", "replicas": 3}]}},
    {"demand": {"rate": 8.0, "asks": [{"at": "2026-01-01T00:00:38Z", "replicas": -1}]}},
    {"demand": {"rate": 8.0, "asks": [{"at": "2026-01-01T00:00:38Z"}]}},
    {"demand": {"rate": 8.0, "asks": [{"at": "2026-01-01T00:00:38Z", "replicas": 3}] * 19}},
    # The ITL calibration's error and noise (the margin a cap's knee keeps): negative, past the bounds, not numbers.
    *({"knee": {"maxBatchSize": 8, "goodput": 100.0, "basis": "measured", "confidence": 0.5,
                "calibration": {field: value}}}
      for field, value in [("itlError", -0.01), ("itlError", 11), ("itlError", "wide"), ("itlNoise", -1),
                           ("itlNoise", 101), ("itlNoise", "loud")]),
])
def test_a_corrupt_new_status_field_starts_from_a_blank_status_instead_of_wedging(bad: dict[str, Any]) -> None:
    # The fields this operator version added, hand-edited to nonsense: the status is read as blank (the next
    # decision rebuilds it from the cluster), nothing raises.
    assert kube.parse_status({"observedGeneration": 3, **bad}) == models.InferenceDeploymentStatus()
    good = {"observedGeneration": 3, "target": {"revision": "r", "maxBatchSize": 13, "kvCacheDtype": "fp8",
                                                "handover": 1.86, "servingSince": "2026-01-01T00:00:00Z"}}
    parsed = kube.parse_status(good)
    assert parsed.target is not None and parsed.target.handover == 1.86 and parsed.observed_generation == 3


@pytest.mark.parametrize(("field", "value"), [("prefill_cv2", -0.5), ("prefill_cv2", 1e9),
                                              ("prefill_mean_ratio", -1.0), ("prefill_mean_ratio", "wide")])
def test_a_bad_prefill_spread_in_status_names_its_field(field: str, value: object) -> None:
    good = {"max_batch_size": 8, "goodput": 100.0, "basis": "measured", "confidence": 0.5}
    assert models.KneeStatus.model_validate({**good, field: 2.0}).model_dump()[field] == 2.0
    with pytest.raises(pydantic.ValidationError) as e:
        models.KneeStatus.model_validate({**good, field: value})
    assert field in str(e.value)


@pytest.mark.parametrize(("ask", "field"), [({"at": "soon", "replicas": 3}, "at"),
                                            ({"at": "2026-01-01T00:00:38Z", "replicas": -1}, "replicas"),
                                            ({"at": "2026-01-01T00:00:38Z", "replicas": "many"}, "replicas")])
def test_a_bad_scale_down_ask_names_its_field(ask: dict[str, Any], field: str) -> None:
    good = {"at": "2026-01-01T00:00:38Z", "replicas": 3}
    assert models.Ask.model_validate(good).replicas == 3
    with pytest.raises(pydantic.ValidationError) as e:
        models.DemandStatus.model_validate({"rate": 8.0, "asks": [good, ask]})
    assert f"asks.1.{field}" in str(e.value)


def test_a_status_written_by_a_newer_version_keeps_what_this_one_knows_at_every_depth() -> None:
    # An operator rolled back one version reads fields it never wrote, nested as well as at the top: it keeps the
    # rest (its knee, its calibration, its scale-down window) rather than start from a blank status.
    raw = {"observedGeneration": 3, "fromTheFuture": 1,
           "knee": {"maxBatchSize": 8, "goodput": 100.0, "basis": "measured", "confidence": 0.5, "newField": 2,
                    "calibration": {"itlScale": 1.2, "samples": 40, "someNewError": 0.5}},
           "demand": {"rate": 8.0, "asks": [{"at": "2026-01-01T00:00:38Z", "replicas": 3, "why": "new"}]}}
    status = kube.parse_status(raw)
    assert status.observed_generation == 3
    assert status.knee is not None and status.knee.max_batch_size == 8
    assert status.knee.calibration.itl_scale == 1.2 and status.knee.calibration.samples == 40
    assert status.demand is not None and status.demand.asks == (models.Ask(at="2026-01-01T00:00:38Z", replicas=3),)
    # A known field with a bad value still reads as a blank status, as before.
    assert kube.parse_status({**raw, "knee": {**raw["knee"], "maxBatchSize": -1}}) == models.InferenceDeploymentStatus()
