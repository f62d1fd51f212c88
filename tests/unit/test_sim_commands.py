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
    ("not a mapping", [1, 2], [], "s.yaml: scenario: must be a mapping, got list"),
    ("an unknown policy", SCENARIO, ["--policy", "static,keda"], "--policy: unknown policy 'keda'; known: infertune"),
    ("an unknown tuning mode", SCENARIO, ["--tuning-mode", "manual"],
     "--tuning-mode: unknown mode 'manual'; known: auto, recommend, off"),
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
