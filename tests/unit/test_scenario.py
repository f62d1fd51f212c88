"""Test: the simulate scenario file — the issue's example, defaults, the spec it becomes, and named bad inputs."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from infertune import models
from infertune.sim import scenario

# The issue's example, with a synthetic workload (a trace is added per test).
EXAMPLE: dict[str, Any] = {
    "name": "chat-70b",
    "model": "llama-3.1-70b",
    "gpu": "h100-sxm-80gb",
    "gpusPerReplica": 1,
    "weights": "fp8",
    "engine": "vllm",
    "slo": {"ttft": "1500ms", "itl": "40ms"},
    "cost": {"gpuHourly": 2.50},
    "coldStart": "300s",
    "duration": "1h",
    "seed": 1,
    "scaling": {"minReplicas": 1, "maxReplicas": 16, "standby": {"min": 0, "max": 4}},
    "initial": {"maxBatchSize": 1024, "kvCacheDtype": "default", "replicas": 2},
    "workload": {
        "rateScale": 4,
        "synthetic": {
            "arrival": {"pattern": "poisson", "rate": 10},
            "input": {"mean": 1000, "dist": "lognormal", "cv": 1.0},
            "output": {"mean": 200, "dist": "lognormal", "cv": 1.0},
        },
    },
}
DELETE = object()
MIX_PART = {"weight": 1, "input": {"mean": 2000, "cv": 0.5}, "output": {"mean": 30, "cv": 0.5}}
MOONCAKE = pathlib.Path(__file__).resolve().parents[2] / "data" / "traces" / "mooncake-fast25-conversation.jsonl"
TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:15:{s:02d}.0000000,{100 + s},{10 + s}\n" for s in range(0, 40, 2))


def changed(**paths: Any) -> dict[str, Any]:
    """EXAMPLE with dotted-path changes; DELETE removes a key."""
    out = copy.deepcopy(EXAMPLE)
    for path, value in paths.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return out


def test_the_issue_example_parses_into_a_spec() -> None:
    s = scenario.parse(EXAMPLE)
    assert (s.cold_start, s.duration, s.interval, s.window) == (300.0, 3600.0, 15.0, 60.0)
    spec = scenario.to_spec(s)
    assert spec.model.architecture == "llama-3.1-70b" and spec.model.weights is models.Precision.FP8
    assert spec.accelerator.type == "h100-sxm-80gb" and spec.accelerator.hourly_cost == 2.5
    assert spec.tuning.initial_max_batch_size == 1024 and spec.scaling.standby.max == 4
    assert scenario.initial_knobs(s) == models.Knobs(max_batch_size=1024)


def test_defaults_are_the_engines() -> None:
    s = scenario.parse(changed(initial=DELETE, **{"tuning": {"minChangeInterval": "5m"}}))
    assert scenario.initial_knobs(s) == models.Knobs(max_batch_size=1024)  # vLLM's default on an H100
    assert scenario.to_spec(s).tuning.min_change_interval == 300.0
    l40s = scenario.parse(changed(initial=DELETE, gpu="l40s", model="llama-3.1-8b", weights="bf16"))
    assert scenario.initial_knobs(l40s).max_batch_size == 256


def test_inline_model_and_gpu_numbers() -> None:
    gpu = {"name": "my-gpu", "memoryGib": 80, "bandwidthGbps": 3000, "tflopsBf16": 900, "tflopsFp8": 1800}
    s = scenario.parse(changed(gpu=gpu))
    assert isinstance(s.gpu, models.GpuSpec) and scenario.to_spec(s).accelerator.custom == s.gpu


def test_synthetic_arrivals_are_seeded_and_rate_scaled() -> None:
    short = changed(duration="2m")
    a, b = scenario.arrivals(scenario.parse(short)), scenario.arrivals(scenario.parse(short))
    assert a == b
    assert 40 * 120 * 0.85 < len(a) < 40 * 120 * 1.15  # 10 req/s x rateScale 4
    other = scenario.arrivals(scenario.parse(changed(duration="2m", seed=2)))
    assert other != a


@pytest.mark.parametrize(("pattern", "extra", "early", "late"), [
    ("spike", {"peak": 30, "at": "90s", "length": "30s"}, 10, 30),
    ("ramp", {"peak": 40, "at": "30s", "length": "60s"}, 10, 40),
    ("onoff", {"on": "30s", "off": "30s"}, 10, 0),
])
def test_patterns_shape_the_rate(pattern: str, extra: dict[str, Any], early: float, late: float) -> None:
    arrival = {"pattern": pattern, "rate": 10, **extra}
    s = scenario.parse(changed(duration="2m", **{"workload.rateScale": 1, "workload.synthetic.arrival": arrival}))
    stream = scenario.arrivals(s)
    first = sum(1 for a in stream if a.time < 20) / 20
    last = sum(1 for a in stream if 95 <= a.time < 115) / 20
    assert abs(first - early) < 0.5 * early + 2
    assert abs(last - late) < 0.3 * late + 2


def test_trace_paths_are_relative_to_the_scenario_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text(TRACE)
    raw = changed(**{"workload": {"trace": "traces/t.csv", "rateScale": 2}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    s = scenario.load(path)
    assert s.workload.trace == str(tmp_path / "traces" / "t.csv")
    stream = scenario.arrivals(s)
    assert len(stream) == 40  # 20 rows superposed twice


def test_yaml_errors_name_the_file_and_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(scenario.ScenarioError, match=r"bad.yaml: line 3 not valid YAML"):
        scenario.load(path)
    with pytest.raises(scenario.ScenarioError, match="cannot read"):
        scenario.load(tmp_path / "missing.yaml")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("zero rate", changed(**{"workload.synthetic.arrival.rate": 0}),
     "workload.synthetic.arrival.rate: must be more than zero"),
    ("unknown top-level key", changed(replicas=3), "replicas: unknown key"),
    ("unknown nested key", changed(**{"slo.p95": "1s"}), "slo.p95: unknown key"),
    ("unknown model key", changed(model="llama-9b"), "model: unknown model 'llama-9b'; known: "),
    ("unknown GPU key", changed(gpu="tpu-v5"), "gpu: unknown GPU 'tpu-v5'; known: "),
    ("inline GPU without numbers", changed(gpu={"name": "g"}), "gpu.memoryGib: required key is missing"),
    ("weights not a precision", changed(weights="fp4"), "weights: must be one of"),
    ("unknown routing", changed(routing="round-robin"),
     "routing: must be one of 'least-outstanding' or 'random', got 'round-robin'"),
    ("trace and synthetic", changed(**{"workload.trace": "t.csv"}),
     "workload: set exactly one of trace and synthetic"),
    ("neither trace nor synthetic", changed(**{"workload.synthetic": DELETE}),
     "workload: set exactly one of trace and synthetic"),
    ("spike without its peak", changed(**{"workload.synthetic.arrival": {"pattern": "spike", "rate": 1}}),
     "workload.synthetic.arrival.peak: required for pattern spike"),
    ("key of another pattern", changed(**{"workload.synthetic.arrival.amplitude": 0.5}),
     "workload.synthetic.arrival.amplitude: not a key of pattern poisson"),
    ("unknown pattern", changed(**{"workload.synthetic.arrival.pattern": "burst"}),
     "workload.synthetic.arrival.pattern: must be one of"),
    ("duration without a unit", changed(**{"slo.itl": "40"}), "slo.itl: expected a duration with a unit"),
    ("zero cold start", changed(coldStart="0s"), "coldStart: must be longer than zero"),
    ("negative rate scale", changed(**{"workload.rateScale": -1}), "workload.rateScale: must be more than zero"),
    ("negative length cv", changed(**{"workload.synthetic.input.cv": -0.5}),
     "workload.synthetic.input.cv: must be at least 0"),
    ("length cap below the mean", changed(**{"workload.synthetic.output.max": 50}),
     "workload.synthetic.output.max: must be at least the mean"),
    ("replica bounds reversed", changed(**{"scaling.minReplicas": 5, "scaling.maxReplicas": 2}),
     "scaling: minReplicas (5) must not exceed maxReplicas (2)"),
    ("initial batch outside the bounds", changed(**{"tuning.maxBatchSize": {"min": 8, "max": 512}}),
     "initial.maxBatchSize: must lie within tuning.maxBatchSize 8..512"),
    ("initial replicas above the maximum", changed(**{"initial.replicas": 40}),
     "initial.replicas: must lie within scaling.minReplicas..maxReplicas (1..16)"),
    ("initial FP8 KV against the policy", changed(**{"initial.kvCacheDtype": "fp8", "tuning.kvCacheDtype": "default"}),
     "initial.kvCacheDtype: fp8 contradicts tuning.kvCacheDtype default"),
    ("FP8 weights without FP8 tensor cores", changed(gpu="a100-80gb"), "weights: fp8 weights need FP8 tensor cores"),
    ("a model that does not fit", changed(model="llama-3.1-405b", weights="bf16", gpu="l4", initial=DELETE),
     "gpu: llama-3.1-405b (bf16 weights) needs"),
    ("window shorter than the interval", changed(window="10s"), "window: must be at least the interval (15s)"),
    ("seed not a number", changed(seed="abc"), "seed: must be a whole number, got 'abc'"),
    ("name not a DNS label", changed(name="Chat_70B"), "name: String should match pattern"),
    ("mix beside input", changed(**{"workload.synthetic.mix": [MIX_PART]}),
     "workload.synthetic.input: set either input and output, or mix, not both"),
    ("empty mix", changed(**{"workload.synthetic": {"arrival": {"rate": 1}, "mix": []}}),
     "workload.synthetic.mix: List should have at least 1 item"),
    ("mix part without a weight", changed(**{"workload.synthetic": {"arrival": {"rate": 1}, "mix": [
        {k: v for k, v in MIX_PART.items() if k != "weight"}]}}), "workload.synthetic.mix[0].weight: required key"),
    ("zero mix weight", changed(**{"workload.synthetic": {"arrival": {"rate": 1}, "mix": [{**MIX_PART, "weight": 0}]}}),
     "workload.synthetic.mix[0].weight: must be more than zero"),
    ("mix part without its output", changed(**{"workload.synthetic": {"arrival": {"rate": 1}, "mix": [
        {"weight": 1, "input": {"mean": 10}}]}}), "workload.synthetic.mix[0].output: required key is missing"),
    ("trace format unknown", changed(**{"workload": {"trace": "t.jsonl", "traceFormat": "sharegpt"}}),
     "workload.traceFormat: must be one of"),
    ("trace format without a trace", changed(**{"workload.traceFormat": "azure"}),
     "workload.traceFormat: only with a trace"),
    ("trace start without a trace", changed(**{"workload.traceStart": "5m"}), "workload.traceStart: only with a trace"),
    ("negative trace start", changed(**{"workload": {"trace": "t.csv", "traceStart": "-5m"}}),
     "workload.traceStart: expected a duration with a unit, such as 1500ms, 1.5s, 5m or 1h30m, got '-5m'"),
    ("trace start without a unit", changed(**{"workload": {"trace": "t.csv", "traceStart": "5"}}),
     "workload.traceStart: expected a duration with a unit"),
    ("prefix retention without a trace", changed(**{"workload.prefixRetention": "60s"}),
     "workload.prefixRetention: only with a trace"),
    ("prefix retention on an azure trace", changed(**{"workload": {"trace": "t.csv", "prefixRetention": "60s"}}),
     "workload.prefixRetention: needs a mooncake trace (its hash_ids); this trace is azure"),
    ("zero prefix retention", changed(**{"workload": {"trace": "t.jsonl", "prefixRetention": "0s"}}),
     "workload.prefixRetention: must be longer than zero"),
    ("prefix retention and a hit rate", changed(prefixHitRate=0.3, **{
        "workload": {"trace": "t.jsonl", "prefixRetention": "60s"}}),
     "prefixHitRate: measured from the trace when workload.prefixRetention is set; set one of them"),
]


@pytest.mark.parametrize(("raw", "expected"), [(raw, msg) for _, raw, msg in BAD], ids=[n for n, _, _ in BAD])
def test_bad_scenarios_name_the_field(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.parse(raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_trace_file_is_named(tmp_path: pathlib.Path) -> None:
    raw = changed(**{"workload": {"trace": "nope.csv"}})
    with pytest.raises(scenario.ScenarioError, match=r"workload.trace: no such file 'nope.csv'"):
        scenario.parse(raw, base=tmp_path)


def test_a_bad_trace_row_is_named(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:00.0,abc,1\n")
    s = scenario.parse(changed(**{"workload": {"trace": "t.csv"}}), base=tmp_path)
    with pytest.raises(scenario.ScenarioError, match=r"workload.trace: t.csv line 2: ContextTokens 'abc'"):
        scenario.arrivals(s)


def test_peak_rate_is_the_busiest_minute() -> None:
    s = scenario.parse(changed(duration="5m", **{
        "workload.rateScale": 1,
        "workload.synthetic.arrival": {"pattern": "spike", "rate": 2, "peak": 20, "at": "2m", "length": "90s"}}))
    assert 17 < scenario.peak_rate(scenario.arrivals(s)) < 24


def test_a_mix_draws_each_part_by_weight() -> None:
    chat = {"weight": 3, "input": {"mean": 1000, "dist": "fixed"}, "output": {"mean": 200, "dist": "fixed"}}
    code = {"weight": 1, "input": {"mean": 2000, "dist": "fixed"}, "output": {"mean": 30, "dist": "fixed"}}
    s = scenario.parse(changed(duration="10m", **{"workload.rateScale": 1, "workload.synthetic": {
        "arrival": {"pattern": "poisson", "rate": 5}, "mix": [chat, code]}}))
    stream = scenario.arrivals(s)
    assert {(a.prompt_tokens, a.output_tokens) for a in stream} == {(1000, 200), (2000, 30)}
    assert sum(a.prompt_tokens == 1000 for a in stream) / len(stream) == pytest.approx(0.75, abs=0.05)


def _mooncake_scenario(tmp_path: pathlib.Path, **workload: Any) -> scenario.Scenario:
    raw = changed(model="llama-3.1-8b", gpu="l40s", weights="bf16", initial=DELETE, duration="10m",
                  workload={"trace": str(MOONCAKE), **workload})
    return scenario.parse(raw, base=tmp_path)


def test_a_mooncake_trace_replays_from_its_start_offset(tmp_path: pathlib.Path) -> None:
    s = _mooncake_scenario(tmp_path, traceStart="20m")
    assert s.workload.format() == "mooncake" and s.prefix_hit_rate == 0.0  # no retention: no reuse assumed
    stream = scenario.arrivals(s)
    trace = [a for a in scenario.workload.load_mooncake(MOONCAKE).arrivals if 1200 <= a.time < 1800]
    assert [a.prompt_tokens for a in stream] == [a.prompt_tokens for a in trace]
    assert stream[0].time == pytest.approx(trace[0].time - 1200) and stream[-1].time < 600


def test_the_hit_rate_is_measured_from_the_hash_ids(tmp_path: pathlib.Path) -> None:
    short = _mooncake_scenario(tmp_path, traceStart="20m", prefixRetention="30s")
    long = _mooncake_scenario(tmp_path, traceStart="20m", prefixRetention="10m")
    trace = scenario.workload.load_mooncake(MOONCAKE)
    expected = scenario.workload.prefix_hit_rate(trace, retention=600.0, start=1200.0, duration=600.0)
    assert long.prefix_hit_rate == pytest.approx(expected, abs=1e-4)
    assert 0 < short.prefix_hit_rate < long.prefix_hit_rate


def test_the_trace_format_can_be_named(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t.txt").write_text(MOONCAKE.read_text().split("\n", 5)[0] + "\n")
    s = scenario.parse(changed(**{"workload": {"trace": "t.txt", "traceFormat": "mooncake"}}), base=tmp_path)
    assert len(scenario.arrivals(s)) == 1
    as_azure = scenario.parse(changed(**{"workload": {"trace": "t.txt"}}), base=tmp_path)
    with pytest.raises(scenario.ScenarioError, match=r"workload.trace: t.txt line 1: missing column"):
        scenario.arrivals(as_azure)


def test_a_bad_mooncake_line_is_named(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
                                      '{"timestamp": 5, "input_length": 10}\n')
    with pytest.raises(scenario.ScenarioError, match=r"workload.trace: t.jsonl line 2: missing key\(s\) output_length"):
        scenario.parse(changed(**{"workload": {"trace": "t.jsonl", "prefixRetention": "1m"}}), base=tmp_path)
    s = scenario.parse(changed(**{"workload": {"trace": "t.jsonl"}}), base=tmp_path)
    with pytest.raises(scenario.ScenarioError, match=r"workload.trace: t.jsonl line 2"):
        scenario.arrivals(s)


def test_a_start_past_the_trace_end_is_named(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    s = scenario.parse(changed(**{"workload": {"trace": "t.csv", "traceStart": "1h"}}), base=tmp_path)
    with pytest.raises(scenario.ScenarioError, match=r"workload.traceStart: no request of the trace arrives"):
        scenario.arrivals(s)
