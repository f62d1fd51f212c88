"""Test: `infertune knee` and `infertune cost`: formats, the knee of the calibration data, replicas, cost, bad input."""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

import pytest

from infertune import cli, cost, exits, frontier_analysis, offline

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
CALIBRATION = ROOT / "data" / "calibration"
NIM = CALIBRATION / "nim-llama-3.3-70b-2xh100-fp8-tp2-isl5000-osl500.csv"
SEED_COST = CALIBRATION / "seed-cost-table.csv"
GENAI_PERF = FIXTURES / "genai-perf"
AIPERF = FIXTURES / "aiperf"
VLLM_SWEEP = FIXTURES / "vllm" / "openai-infqps-qwen3-32b-sweep.jsonl"
VLLM_C32 = FIXTURES / "vllm" / "openai-infqps-concurrency32-Qwen3-32B-20260302-114210.json"
VLLM_RATE = FIXTURES / "vllm" / "openai-4.0qps-Qwen3-32B-20260302-115003.json"
PLAIN = FIXTURES / "plain-sweep.csv"


def nim() -> pathlib.Path:
    return NIM


def knee_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert offline.main(["knee", *args, "--json"]) in (0, 1)
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def points(path: pathlib.Path) -> tuple[frontier_analysis.Point, ...]:
    return frontier_analysis.parse(path.read_text(), name=str(path)).points


# ---------------------------------------------------------------------------------------------- the knee

# The NIM sweep (means): 1: 407 ms/18.6 ms, 5: 547/21.8, 25: 689/38.8, 50: 835/59.7 (814 tok/s),
# 100: 7,996/92.9 (917 tok/s), 150: 34,794/92.9 (921 tok/s), then the plateau.
@pytest.mark.parametrize(("ttft", "itl", "knee"), [
    ("1s", "70ms", 50),  # the published knee: 100 queues (TTFT 8 s) and runs at 93 ms ITL
    ("1s", "60ms", 50),  # 59.73 ms fits
    ("1s", "50ms", 25),  # ITL binds between 25 and 50
    ("700ms", "40ms", 25),
    ("600ms", "40ms", 5),  # TTFT binds: 689 ms at 25
    ("10s", "100ms", 100),  # a batch-style SLO: saturation
    ("60s", "100ms", 100),  # 150 is feasible with 921 tok/s, but within 2% of 100's 917: the plateau
    ("1000s", "1s", 100),
])
def test_knee_reproduces_the_calibration_sweep(ttft: str, itl: str, knee: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert offline.main(["knee", str(nim()), "--ttft", ttft, "--itl", itl]) == 0
    out = capsys.readouterr().out
    assert f"recommended max batch size: {knee}\n" in out
    assert f"knee: concurrency {knee}:" in out
    assert "8 run(s), csv" in out


def test_knee_says_the_calibration_file_has_means_only(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms")
    assert result["basis"] == {"ttft": "mean", "itl": "mean", "wanted": "p95", "ttftAvailable": ["mean"],
                               "itlAvailable": ["mean"]}
    assert offline.main(["knee", str(nim()), "--ttft", "1s", "--itl", "70ms"]) == 0
    assert "p95 is not in every run, so compared TTFT mean, ITL mean" in capsys.readouterr().out


def test_knee_boundary_is_interpolated_towards_the_next_run(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms")
    # TTFT 835 ms at 50 and 7,996 ms at 100: 50 + 50 x (1,000 - 834.51) / (7,996.25 - 834.51) = 51.2
    assert result["boundary"] == {"concurrency": 51.2, "metric": "TTFT"}
    assert result["maxBatchSize"] == 50 and result["atEdge"] is False


def test_no_run_meets_the_slo(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline.main(["knee", str(nim()), "--ttft", "300ms", "--itl", "70ms"]) == exits.EXIT_NO_KNEE
    out = capsys.readouterr().out
    assert "no knee: no measured concurrency meets the SLO; even concurrency 1 has TTFT 406.8 ms > 300.0 ms" in out


def test_the_knee_is_the_best_throughput_not_the_largest_concurrency() -> None:
    def p(c: float, tput: float) -> frontier_analysis.Point:
        return frontier_analysis.Point(concurrency=c, ttft={"mean": 0.2}, itl={"mean": 0.02}, output_tokens_per_s=tput)

    # Thrashing: 64 fits the SLO but delivers less than 32 (preemptions).
    result = frontier_analysis.find_knee([p(8, 500), p(32, 1500), p(64, 1200)], frontier_analysis.Slo(1.0, 0.05))
    assert result.max_batch_size == 32 and result.boundary is None and not result.at_edge


# ---------------------------------------------------------------------------------------------- formats


def test_genai_perf_directory_of_profile_exports(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(GENAI_PERF), "--ttft", "1500ms", "--itl", "70ms")
    assert result["format"] == "genai-perf"
    assert [r["concurrency"] for r in result["rows"]] == [1, 25, 50, 100]
    assert result["basis"]["ttft"] == "p95" and result["basis"]["itl"] == "p95"
    assert result["maxBatchSize"] == 50


def test_p95_and_means_can_disagree(capsys: pytest.CaptureFixture[str]) -> None:
    # At concurrency 50 the mean ITL is 59.7 ms but its p95 65.8 ms: a 60 ms p95 objective stops at 25.
    assert knee_json(capsys, str(GENAI_PERF), "--ttft", "1500ms", "--itl", "60ms")["maxBatchSize"] == 25
    means = knee_json(capsys, str(GENAI_PERF), "--ttft", "1500ms", "--itl", "60ms", "--percentile", "97")
    assert means["basis"]["itl"] == "mean" and means["maxBatchSize"] == 50


def test_genai_perf_concurrency_from_the_artifact_directory(tmp_path: pathlib.Path) -> None:
    src = GENAI_PERF / "meta_llama-3.3-70b-instruct-openai-chat-concurrency50" / "profile_export_genai_perf.json"
    doc = json.loads(src.read_text())
    del doc["input_config"]["concurrency"]
    target = tmp_path / "llama-openai-chat-concurrency50" / "profile_export_genai_perf.json"
    target.parent.mkdir()
    target.write_text(json.dumps(doc))
    (point,) = points(target)
    assert point.concurrency == 50 and not point.concurrency_estimated
    assert point.ttft["p95"] == pytest.approx(1.31072) and point.itl["mean"] == pytest.approx(0.05973)
    assert point.requests_per_s == pytest.approx(1.6287)


def test_aiperf_exports(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(AIPERF), "--ttft", "1s", "--itl", "40ms", "--target-rps", "50")
    assert result["format"] == "aiperf"
    assert result["maxBatchSize"] == 64 and result["atEdge"] is True
    # 50 req/s / (9.466 req/s x 0.8) = 6.6 -> 7
    assert result["replicas"] == {"replicas": 7, "target": 50.0, "unit": "req/s", "capacityPerReplica": 9.466,
                                  "utilization": 0.8}
    assert offline.main(["knee", str(AIPERF), "--ttft", "1s", "--itl", "40ms"]) == 0
    assert "the knee may lie above 64; extend the sweep" in capsys.readouterr().out


def test_vllm_appended_results_with_their_p99(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(VLLM_SWEEP), "--ttft", "1s", "--itl", "30ms", "--percentile", "99")
    assert result["format"] == "vllm-bench-serve"
    assert result["basis"]["itl"] == "p99"
    rows = result["rows"]
    assert [r["concurrency"] for r in rows] == [1, 16, 64, 256]
    # TPOT, not the per-chunk ITL: p99 TPOT at 64 is 33.15 ms (its per-chunk p99 ITL is 88.4 ms)
    assert rows[2]["itlMs"] == 33.15
    assert result["maxBatchSize"] == 16
    # The default vllm bench serve percentile is 99 only: a p95 objective falls back to the means.
    means = knee_json(capsys, str(VLLM_SWEEP), "--ttft", "1s", "--itl", "30ms")
    assert means["basis"]["ttft"] == "mean" and means["maxBatchSize"] == 64


def test_vllm_request_rate_run_uses_littles_law(capsys: pytest.CaptureFixture[str]) -> None:
    (point,) = points(VLLM_RATE)
    # 3.962 req/s x (95.2 ms + 255 x 18.03 ms) = 18.59 requests in flight
    assert point.concurrency == pytest.approx(3.962 * (0.0952 + 255 * 0.01803))
    assert point.concurrency_estimated
    assert offline.main(["knee", str(VLLM_RATE), str(VLLM_C32), "--ttft", "500ms", "--itl", "25ms"]) == 0
    out = capsys.readouterr().out
    assert "~18.6" in out and "Little's law" in out and "recommended max batch size: 32" in out


def test_plain_csv_with_tail_columns() -> None:
    pts = points(PLAIN)
    assert [p.concurrency for p in pts] == [1, 8, 16, 32, 64, 128]
    assert set(pts[0].ttft) == {"mean", "p95"} and pts[0].requests_per_s == pytest.approx(0.416)
    slo = frontier_analysis.Slo(ttft=1.0, itl=0.035, percentile=95)
    assert frontier_analysis.find_knee(pts, slo).max_batch_size == 32  # p95 ITL 36.0 ms at 64
    means = frontier_analysis.find_knee(pts, frontier_analysis.Slo(ttft=1.0, itl=0.035, percentile=90))
    assert means.basis.itl == "mean" and means.max_batch_size == 64


@pytest.mark.parametrize(("header", "row", "ttft", "itl"), [
    ("concurrency,ttft_ms,itl_ms,output_tokens_per_s", "4,500,20,100", {"mean": 0.5}, {"mean": 0.02}),
    ("Concurrency,TTFT (ms),ITL (ms),Output tokens/s", "4,500,20,100", {"mean": 0.5}, {"mean": 0.02}),
    ("concurrency,ttft_s,ttft_p95_s,tpot_ms,itl_ms,output_throughput", "4,0.5,0.9,20,30,100",
     {"mean": 0.5, "p95": 0.9}, {"mean": 0.02}),  # TPOT wins over per-chunk ITL
    ("max_concurrency,mean_ttft_ms,p99_ttft_ms,mean_tpot_ms,p99_tpot_ms,output_throughput", "4,500,800,20,25,100",
     {"mean": 0.5, "p99": 0.8}, {"mean": 0.02, "p99": 0.025}),
    ("concurrency,ttft_ms_median,itl_us,tokens_per_second", "4,400,20000,100", {"p50": 0.4}, {"mean": 0.02}),
])
def test_csv_column_spellings(tmp_path: pathlib.Path, header: str, row: str, ttft: dict[str, float],
                              itl: dict[str, float]) -> None:
    path = tmp_path / "s.csv"
    path.write_text(f"{header}\n{row}\n")
    (point,) = points(path)
    assert point.concurrency == 4 and point.output_tokens_per_s == 100
    assert point.ttft == pytest.approx(ttft) and point.itl == pytest.approx(itl)


# ---------------------------------------------------------------------------------------------- replicas


def test_replicas_for_a_token_target(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms", "--target-tokens", "20000")
    # 20,000 tok/s / (814.37 tok/s x 0.8) = 30.7 -> 31
    assert result["replicas"]["replicas"] == 31
    full = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms", "--target-tokens", "20000",
                     "--target-utilization", "1")
    assert full["replicas"]["replicas"] == 25


def test_replicas_for_a_request_target_needs_a_request_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline.main(["knee", str(nim()), "--ttft", "1s", "--itl", "70ms", "--target-rps", "10"]) == 2
    assert "--target-rps: the runs carry no request rate; pass --osl" in capsys.readouterr().err
    # 814.37 tok/s / 500 tokens = 1.629 req/s; 10 / (1.629 x 0.8) = 7.7 -> 8
    result = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms", "--target-rps", "10", "--osl", "500")
    assert result["replicas"]["replicas"] == 8


@pytest.mark.parametrize(("target", "capacity", "utilization", "replicas"), [
    (8.0, 10.0, 0.8, 1),  # exactly full: not rounded up to 2
    (8.01, 10.0, 0.8, 2),
    (0.5, 10.0, 0.8, 1),
    (120.0, 1.63, 0.8, 93),
])
def test_replicas_round_up(target: float, capacity: float, utilization: float, replicas: int) -> None:
    plan = frontier_analysis.replicas_at_utilization(target, capacity, unit="req/s", utilization=utilization)
    assert plan.replicas == replicas
    assert plan.worked().endswith(f"-> {replicas} replica{'s' if replicas != 1 else ''}")


# ---------------------------------------------------------------------------------------------- cost


def seed_rows() -> list[dict[str, str]]:
    with SEED_COST.open() as f:
        return list(csv.DictReader(f))


def test_cost_reproduces_the_seed_table_at_one_gpu_hour_per_row() -> None:
    """The seed table prices one GPU-hour per row, even for its two-GPU FP16 rows; infertune pays for every GPU of
    a replica. With gpus=1 it reproduces every row; with the row's GPUs the two-GPU rows cost twice as much."""
    for row in seed_rows():
        price, tps = float(row["gpu_hourly_usd"]), float(row["output_tokens_per_s"])
        table = float(row["usd_per_million_output_tokens"])
        assert cost.per_million_output_tokens(price, tps).per_million == pytest.approx(table, abs=0.005), row
        gpus = int(row["gpus_per_replica"])
        per_replica = cost.per_million_output_tokens(price, tps, gpus=gpus).per_million
        assert per_replica == pytest.approx(table * gpus, abs=0.005 * gpus), row


def test_cost_command_prints_formula_and_worked_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline.main(["cost", "--gpu-hourly", "2.50", "--gpus", "2", "--tokens-per-second", "900",
                         "--utilization", "0.6"]) == 0
    out = capsys.readouterr().out.splitlines()
    # $5.00/h / (900 x 3,600 x 0.6 = 1.944 M tokens/h) = $2.57 per million
    assert out[0] == "$2.57 per 1M output tokens"
    assert out[1].startswith("formula: $ per 1M output tokens = GPU-hour price x GPUs / (output tok/s")
    assert out[2] == ("worked:  $2.50/h x 2 GPUs = $5.00/h; 900 tok/s x 3,600 s x 0.60 = 1.944 M tok/h; "
                      "$5.00 / 1.944 M = $2.572 per 1M")


def test_cost_json_and_percent_utilisation(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline.main(["cost", "--gpu-hourly", "$3.50", "--tokens-per-second", "3200", "--utilization", "60%",
                         "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["utilization"] == 0.6 and result["gpus"] == 1
    assert result["costPerMillionOutputTokens"] == pytest.approx(3.5 / (3200 * 3600 * 0.6) * 1e6, abs=1e-4)


def test_knee_prints_the_cost_at_the_knee(capsys: pytest.CaptureFixture[str]) -> None:
    result = knee_json(capsys, str(nim()), "--ttft", "1s", "--itl", "70ms", "--gpu-hourly", "2.5", "--gpus", "2")
    # $5.00/h / (814.37 x 3,600) x 1e6 = $1.71
    assert result["costPerMillionOutputTokens"] == pytest.approx(1.7055, abs=1e-3)


@pytest.mark.parametrize(("args", "flag"), [
    (["--gpu-hourly", "0", "--tokens-per-second", "900"], "--gpu-hourly"),
    (["--gpu-hourly", "-2.5", "--tokens-per-second", "900"], "--gpu-hourly"),
    (["--gpu-hourly", "cheap", "--tokens-per-second", "900"], "--gpu-hourly"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "0"], "--tokens-per-second"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "nan"], "--tokens-per-second"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "900", "--utilization", "0"], "--utilization"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "900", "--utilization", "1.5"], "--utilization"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "900", "--utilization", "150%"], "--utilization"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "900", "--gpus", "0"], "--gpus"),
    (["--gpu-hourly", "2.5", "--tokens-per-second", "900", "--gpus", "1.5"], "--gpus"),
    (["--tokens-per-second", "900"], "--gpu-hourly"),
])
def test_cost_rejects_bad_flags_naming_them(args: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        offline.main(["cost", *args])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


def test_cost_formula_rejects_bad_values() -> None:
    for kwargs, field in (({"gpu_hourly": 0.0, "tokens_per_second": 1.0}, "gpu_hourly"),
                          ({"gpu_hourly": 1.0, "tokens_per_second": -1.0}, "tokens_per_second"),
                          ({"gpu_hourly": 1.0, "tokens_per_second": 1.0, "gpus": 0}, "gpus"),
                          ({"gpu_hourly": 1.0, "tokens_per_second": 1.0, "utilization": 1.01}, "utilization")):
        with pytest.raises(ValueError, match=field):
            cost.per_million_output_tokens(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "flag"), [
    (["--ttft", "1", "--itl", "40ms"], "--ttft"),  # no unit
    (["--ttft", "1s", "--itl", "40 parsecs"], "--itl"),
    (["--ttft", "0ms", "--itl", "40ms"], "--ttft"),
    (["--ttft", "1s", "--itl", "40ms", "--percentile", "100"], "--percentile"),
    (["--ttft", "1s", "--itl", "40ms", "--target-rps", "-3"], "--target-rps"),
    (["--ttft", "1s", "--itl", "40ms", "--target-rps", "3", "--target-tokens", "9"], "--target-tokens"),
    (["--ttft", "1s", "--itl", "40ms", "--target-utilization", "0"], "--target-utilization"),
    (["--itl", "40ms"], "--ttft"),
])
def test_knee_rejects_bad_flags_naming_them(args: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        offline.main(["knee", str(PLAIN), *args])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.csv", "", "empty file"),
    ("broken.json", '{"mean_ttft_ms": 3', "line 1: not valid JSON"),
    ("other.json", '{"hello": "world"}', "not a genai-perf/AIPerf profile export (time_to_first_token) nor a vllm"),
    ("list.json", "[1, 2]", "item 1: expected a JSON object, got int"),
    ("noconc.json", json.dumps({"mean_ttft_ms": 10, "mean_tpot_ms": 5, "output_throughput": 9,
                                "max_concurrency": None}), "max_concurrency is null (a request-rate run)"),
    ("unit.json", json.dumps({"time_to_first_token": {"unit": "fortnights", "avg": 1},
                              "inter_token_latency": {"unit": "ms", "avg": 1},
                              "output_token_throughput": {"avg": 1}, "input_config": {"concurrency": 1}}),
     "time_to_first_token.unit: unknown time unit 'fortnights'"),
    ("nothroughput.json", json.dumps({"time_to_first_token": {"unit": "ms", "avg": 1},
                                      "inter_token_latency": {"unit": "ms", "avg": 1},
                                      "input_config": {"concurrency": 1}}), "output_token_throughput.avg: missing"),
    ("columns.csv", "concurrency,latency\n1,2\n", "line 1: no column for ttft_ms, itl_ms, output_tokens_per_s"),
    ("nounit.csv", "concurrency,ttft,itl_ms,output_tokens_per_s\n1,2,3,4\n", "column 'ttft' has no time unit"),
    ("badunit.csv", "concurrency,ttft_min,itl_ms,output_tokens_per_s\n1,2,3,4\n", "unknown time unit 'min'"),
    ("cell.csv", "concurrency,ttft_ms,itl_ms,output_tokens_per_s\n1,2,3,4\n5,fast,3,4\n",
     "line 3: column 'ttft_ms': expected a number, got 'fast'"),
    ("short.csv", "concurrency,ttft_ms,itl_ms,output_tokens_per_s\n1,2,3\n", "line 2: 3 fields, the header has 4"),
    ("export.csv", "Metric,avg,min,max,p99\nTime to First Token (ms),1,1,1,1\n",
     "a genai-perf/AIPerf CSV export holds one run without its concurrency"),
    ("jsonl.json", '{"mean_ttft_ms": 1, "mean_tpot_ms": 1, "output_throughput": 1, "max_concurrency": 1}\n{oops}\n',
     "line 2: not valid JSON"),
])
def test_knee_rejects_unreadable_files_naming_them(tmp_path: pathlib.Path, name: str, content: str, message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert offline.main(["knee", str(path), "--ttft", "1s", "--itl", "40ms"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"infertune knee: {path}: ") and message in err, err


def test_knee_rejects_missing_binary_and_empty_directory(tmp_path: pathlib.Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert offline.main(["knee", str(missing), "--ttft", "1s", "--itl", "40ms"]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    binary = tmp_path / "blob.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert offline.main(["knee", str(binary), "--ttft", "1s", "--itl", "40ms"]) == 2
    assert f"{binary}: not a text file" in capsys.readouterr().err
    empty = tmp_path / "artifacts"
    empty.mkdir()
    assert offline.main(["knee", str(empty), "--ttft", "1s", "--itl", "40ms"]) == 2
    assert f"{empty}: a directory without profile_export_genai_perf.json" in capsys.readouterr().err


def test_mixed_statistics_fall_back_per_latency() -> None:
    # One run has a TTFT p95, the other not: TTFT falls back to the mean, ITL keeps its p95.
    a = frontier_analysis.Point(concurrency=1, ttft={"mean": 0.1, "p95": 0.2}, itl={"mean": 0.01, "p95": 0.02},
                                output_tokens_per_s=10)
    b = frontier_analysis.Point(concurrency=2, ttft={"mean": 0.1}, itl={"mean": 0.01, "p95": 0.02},
                                output_tokens_per_s=20)
    basis = frontier_analysis.choose_basis([a, b], 95)
    assert (basis.ttft, basis.itl, basis.exact) == ("mean", "p95", False)


# ---------------------------------------------------------------------------------------------- plot, wiring


def test_plot_writes_a_png(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "frontier.png"
    assert offline.main(["knee", str(nim()), "--ttft", "1s", "--itl", "70ms", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out
    assert offline.main(["knee", str(nim()), "--ttft", "1s", "--itl", "70ms", "--plot",
                         str(tmp_path / "no" / "dir.png")]) == 2
    assert "--plot" in capsys.readouterr().err


def test_infertune_cli_offers_knee_and_cost() -> None:
    """cli.parser() must call offline.register(sub) so that `infertune knee` and `infertune cost` exist."""
    choices = next(a for a in cli.parser()._actions if a.dest == "command").choices
    assert choices is not None and {"knee", "cost"} <= set(choices)
