"""Test: `infertune sweep` and `infertune simulate` — output keys, exit codes and one-line errors naming the flag."""

from __future__ import annotations

import io
import json
import pathlib
from collections.abc import Sequence

import pytest
import yaml

from infertune import cli, exits
from infertune.sim import commands, policies

SCENARIO = {
    "name": "tiny", "model": "llama-3.1-70b", "gpu": "h100-sxm-80gb", "weights": "fp8",
    "slo": {"ttft": "2s", "itl": "50ms"}, "cost": {"gpuHourly": 2.5}, "coldStart": "60s", "duration": "3m",
    "scaling": {"minReplicas": 1, "maxReplicas": 4},
    "workload": {"synthetic": {"arrival": {"rate": 1}, "input": {"mean": 300, "cv": 0.5},
                               "output": {"mean": 60, "cv": 0.5}}},
}


def run(argv: Sequence[str]) -> int:
    return cli.main(list(argv))


@pytest.fixture(autouse=True)
def quick_sizing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policies, "CAPACITY_REQUESTS", 300)
    monkeypatch.setattr(policies, "CAPACITY_SECONDS", (30.0, 90.0))
    monkeypatch.setattr(policies, "CAPACITY_STEPS", 2)


def write(tmp_path: pathlib.Path, body: object) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


SWEEP = ["sweep", "--model", "llama-3.1-8b", "--gpu", "l40s", "--isl", "500", "--osl", "50"]


def test_sweep_json_has_the_issue_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*SWEEP, "--concurrency", "1,4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert list(rows[0]) == list(commands.SWEEP_KEYS) == [
        "concurrency", "ttft_ms_mean", "ttft_ms_p95", "itl_ms_mean", "itl_ms_p95", "output_tokens_per_s",
        "requests_per_s", "mbu"]
    assert rows[1]["output_tokens_per_s"] > rows[0]["output_tokens_per_s"]


def test_sweep_table_and_plot(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "f.png"
    assert run([*SWEEP, "--concurrency", "2", "--plot", str(png), "--itl-slo", "40ms", "--ttft-slo", "1s"]) == 0
    assert "concurrency" in capsys.readouterr().out and png.read_bytes()[:4] == b"\x89PNG"


def test_sweep_max_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*SWEEP, "--max-throughput", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["output_tokens_per_s"] and out["output_tokens_per_s"] > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "llama-9b"], "--model: unknown model 'llama-9b'; known: llama-3.1-405b, llama-3.1-70b"),
    (["--gpu", "tpu"], "--gpu: unknown GPU 'tpu'; known: a100-80gb"),
    (["--isl", "0"], "--isl: must be at least 1, got 0"),
    (["--osl", "-5"], "--osl: must be at least 1, got -5"),
    (["--gpus", "two"], "--gpus: expected a whole number, got 'two'"),
    (["--concurrency", "1,0"], "--concurrency: expected positive whole numbers"),
    (["--max-batch-size", "0"], "--max-batch-size: must be at least 1"),
    (["--model", "llama-3.1-405b", "--gpu", "l4"], "short by 736.0 GiB"),
    (["--gpu", "a100-80gb", "--kv-dtype", "fp8"], "--kv-dtype: an FP8 KV cache needs FP8 support"),
    (["--gpu", "a100-80gb", "--weights", "fp8"], "--weights: fp8 weights need FP8 tensor cores"),
    (["--isl", "300000"], "--isl/--osl: 300000 + 50 tokens exceed the KV cache"),
    (["--itl-slo", "fast"], "--itl-slo: expected a duration with a unit"),
])
def test_sweep_bad_input_exits_2_with_one_line(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base = dict(zip(SWEEP[1::2], SWEEP[2::2], strict=True))
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    assert run(["sweep", *[x for kv in base.items() for x in kv]]) == exits.EXIT_INVALID
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("infertune sweep: ") and message in err


def test_simulate_json(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "run.png"
    assert run(["simulate", write(tmp_path, SCENARIO), "--policy", "static,hpa", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["policy"] for o in out] == ["static", "hpa"]
    assert all(list(o) == list(commands.sim_simulate.KEYS) for o in out)
    assert png.exists()


def test_simulate_table(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["simulate", write(tmp_path, SCENARIO), "--policy", "static"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny: ") and "static" in out and "attain" in out


@pytest.mark.parametrize(("case", "body", "extra", "message"), [
    ("a bad value", {**SCENARIO, "coldStart": "0s"}, [], "s.yaml: coldStart: must be longer than zero"),
    ("an unknown key", {**SCENARIO, "replica": 2}, [], "s.yaml: replica: unknown key"),
    ("a pinned budget below the engine's floor", {**SCENARIO, "maxNumBatchedTokens": 8}, [],
     "s.yaml: maxNumBatchedTokens: must be at least 16, got 8"),
    ("not a mapping", [1, 2], [], "s.yaml: scenario: must be a mapping, got list"),
    ("an unknown policy", SCENARIO, ["--policy", "static,keda"], "--policy: unknown policy 'keda'; known: infertune"),
    ("an unknown tuning mode", SCENARIO, ["--tuning-mode", "manual"],
     "--tuning-mode: unknown mode 'manual'; known: auto, recommend, off"),
    ("knobs without a KV dtype", SCENARIO, ["--knobs", "66"],
     "--knobs: expected BATCH/KV or BATCH/KV/BUDGET (e.g. 66/default/512), got '66'"),
    ("an unknown KV dtype", SCENARIO, ["--knobs", "66/int4"], "--knobs: unknown KV dtype 'int4'; known: default, fp8"),
    ("a batch that is no number", SCENARIO, ["--knobs", "lots/fp8"], "--knobs: expected a whole number, got 'lots'"),
    ("a budget of zero", SCENARIO, ["--knobs", "66/fp8/0"], "--knobs: must be at least 1, got 0"),
    ("a budget below the engine's floor", SCENARIO, ["--knobs", "66/fp8/8"],
     "--knobs: budget: Input should be greater than or equal to 16"),
    ("a batch above the largest", SCENARIO, ["--knobs", "70000/fp8"],
     "--knobs: batch: Input should be less than or equal to 65536 ('70000/fp8')"),
])
def test_simulate_bad_input_exits_2_with_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], *,
                                                  case: str, body: object, extra: list[str], message: str) -> None:
    assert run(["simulate", write(tmp_path, body), *extra]) == exits.EXIT_INVALID, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("infertune simulate: ") and message in err


def test_simulate_tuning_mode_overrides_the_scenarios(tmp_path: pathlib.Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # 3 req/s of chat on 70B FP8 at the engine's 1,024: under auto the knobs move to the knee within minutes;
    # under off they stay, and the replicas alone serve.
    body = {**SCENARIO, "duration": "15m", "workload": {"synthetic": {
        "arrival": {"rate": 3}, "input": {"mean": 1000, "cv": 0.5}, "output": {"mean": 200, "cv": 0.5}}}}
    path = write(tmp_path, body)
    finals = {}
    for mode in ("auto", "off"):
        assert run(["simulate", path, "--policy", "infertune", "--json", "--tuning-mode", mode]) == 0
        (out,) = json.loads(capsys.readouterr().out)
        finals[mode] = (out["final_max_batch_size"], out["restarts"])
    assert finals["off"] == (1024, 0)
    assert finals["auto"][0] < 1024 and finals["auto"][1] >= 1


def test_simulate_knobs_pin_every_policy_from_the_start(tmp_path: pathlib.Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # The same load at the engine's 1,024 moves to the knee under auto (above); pinned at 48/fp8/512 nothing is
    # left to tune: no restart, and infertune and the static fleet both run the pinned knobs.
    body = {**SCENARIO, "duration": "15m", "workload": {"synthetic": {
        "arrival": {"rate": 3}, "input": {"mean": 1000, "cv": 0.5}, "output": {"mean": 200, "cv": 0.5}}}}
    path = write(tmp_path, body)
    assert run(["simulate", path, "--policy", "infertune,static", "--json", "--knobs", "48/fp8/512"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(o["final_max_batch_size"], o["final_kv_cache_dtype"], o["restarts"]) for o in out] == [
        (48, "fp8", 0), (48, "fp8", 0)]
    # Without a budget the engine's default for that batch is pinned too: still nothing to tune.
    assert run(["simulate", path, "--policy", "infertune", "--json", "--knobs", "48/default"]) == 0
    (one,) = json.loads(capsys.readouterr().out)
    assert (one["final_max_batch_size"], one["final_kv_cache_dtype"], one["restarts"]) == (48, "default", 0)


def test_knobs_pin_a_trace_scenario_whose_prefix_hit_rate_is_measured() -> None:
    # The Mooncake scenario measures its prefix hit rate from the trace (workload.prefixRetention); pinning its
    # knobs must not re-check that against the rate the load filled in (it did: "set one of them").
    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "mooncake-qwen-72b-h200.yaml"
    scenario = commands.sim_scenario.load(str(path))
    pinned = commands._pinned(scenario, commands._knobs("--knobs", "2/default/512"))
    spec = commands.sim_scenario.to_spec(pinned)
    assert (spec.tuning.max_batch_size.min, spec.tuning.max_batch_size.max) == (2, 2)
    assert spec.tuning.kv_cache_dtype.value == "default" and spec.engine.max_num_batched_tokens == 512
    assert pinned.prefix_hit_rate == scenario.prefix_hit_rate and pinned.workload == scenario.workload


def test_simulate_missing_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["simulate", str(tmp_path / "nope.yaml")]) == exits.EXIT_INVALID
    assert "nope.yaml: cannot read" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    bar = commands.Bar(quiet)
    bar("hpa", 30, 60)
    bar.close()
    assert quiet.getvalue() == ""
    tty = _Tty()
    bar = commands.Bar(tty, width=10)
    bar("hpa", 30, 60)
    assert "[#####.....]  50%" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r")


@pytest.mark.parametrize(("text", "budget"), [("66/default/512", 512), ("14/fp8", None)])
def test_knobs_are_written_as_the_knobs_flag_reads_them(text: str, budget: int | None) -> None:
    # The bench and `simulate --knobs` share one spelling: what one writes, the other reads back unchanged.
    knobs = commands._knobs("--knobs", text)
    assert knobs.max_num_batched_tokens == budget
    assert commands.knobs_text(knobs) == text
