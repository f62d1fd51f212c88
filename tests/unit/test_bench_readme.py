"""Test: the generated benchmark docs (README block, docs/bench.md) are what bench/decision_quality.py writes from
docs/bench.json, and the scorecard's summary lines, sweeps and suites read the runs right."""

from __future__ import annotations

import json
import pathlib
import shutil
from types import ModuleType
from typing import Any

import pytest

import bench_module
from infertune import models
from infertune.sim import policies, scenario, simulate

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    return bench_module.decision_quality()


def test_the_readme_block_and_bench_md_match_the_last_benchmark_run() -> None:
    bench = _bench()
    data = json.loads((ROOT / "docs" / "bench.json").read_text())
    text = (ROOT / "README.md").read_text()
    block = text.split(bench.BEGIN, 1)[1].split(bench.END, 1)[0]
    assert block.strip() == bench.readme_table(data).strip(), \
        "README is stale: rerun bench/decision_quality.py (it rewrites the block)"
    assert (ROOT / "docs" / "bench.md").read_text() == bench.markdown(data), \
        "docs/bench.md is stale: rerun bench/decision_quality.py"


def row(attainment: float, gpu: float, **extra: Any) -> dict[str, Any]:
    return {"slo_attainment": attainment, "gpu_hours": gpu, "restarts": 0, "dropped_requests": 0,
            "final_max_batch_size": 32, "final_kv_cache_dtype": "default", "max_replicas": 4,
            "cost_per_million_output_tokens": None, "ttft_p95_ms": None, "itl_p95_ms": None,
            "goodput_tokens_per_gpu_s": 100.0, **extra}


def run(name: str, me: float, right: float, peer: float, *, suite: str = "train", attain: float = 0.97,
        peer_holds: bool = True) -> dict[str, Any]:
    fleet = {"replicas": 4, "knobs": "256/default"}
    best = {"policy": "hpa", "setting": "target 8", "holds": peer_holds, "row": row(0.96 if peer_holds else 0.9, peer)}
    return {"scenario": name, "suite": suite, "rows": {
        "infertune": row(attain, me), "oracle": row(0.96, 1.0),
        "static-right": row(0.96, right, **fleet), "static-right-tuned": row(0.96, right * 2, **fleet),
        "static-peak": row(0.94, 1.0, **fleet)},
        "best_peer": {"default": best, "tuned": best}}


def test_the_summary_gives_min_attainment_ratios_over_holding_yardsticks_and_where_infertune_loses() -> None:
    bench = _bench()
    runs = [run("a", 2.0, 4.0, 1.0, attain=0.99), run("b", 3.0, 3.0, 6.0, attain=0.93, peer_holds=False)]
    lines = bench.summary(runs)
    assert lines[0].startswith("- infertune: minimum attainment 0.930 (b); at or above 0.95 on 1 of 2")
    # static-right: a 2/4 = 0.5, b 3/3 = 1.0 -> worst 1.00x (b), geometric mean sqrt(0.5) = 0.71x.
    assert "- infertune GPU-h / static-right: worst 1.00x (b), geometric mean 0.71x over the 2 scenarios where it " \
           "holds 0.95." in lines
    assert "- infertune GPU-h / static-peak: it holds 0.95 on no scenario." in lines  # 0.94 never counts
    # The best peer holds only on a: 2 / 1.
    assert "- infertune GPU-h / best peer (default knobs): worst 2.00x (a), geometric mean 2.00x over the 1 " \
           "scenarios where it holds 0.95." in lines
    assert lines[-1] == ("- Where infertune loses (2 of 2): a (best peer (default knobs) holds 0.95 with 50% fewer "
                         "GPU-hours), b (misses 0.95 (0.930)).")
    assert bench.summary([]) == ["Not measured in this run (no scenarios of this suite were run)."]
    good = bench.summary([run("c", 1.0, 2.0, 3.0)])
    assert good[-1].startswith("- Where infertune loses: nowhere in this suite")


def test_the_readme_block_has_one_scorecard_per_suite_and_a_missing_suite_reads_empty(tmp_path: pathlib.Path
                                                                                     ) -> None:
    bench = _bench()
    data = {"runs": [run("a", 2.0, 4.0, 1.0), run("v", 2.0, 4.0, 1.0, suite="validation")]}
    block = bench.readme_table(data)
    assert "**train** (1 scenarios)" in block and "**validation** (1 scenarios)" in block
    assert "| a | 0.970 · 2.00 h · 0 r · 0 d | 0.960 · 4.00 h · 0 r · 0 d (4 × 256/default)" in block
    only = bench.readme_table({"runs": [run("a", 2.0, 4.0, 1.0)]})
    assert "**validation** (0 scenarios)\n\nNot measured in this run" in only
    assert "Incomplete" not in only
    assert "**Incomplete**: 1 of 3 scenarios" in bench.readme_table({"runs": [run("a", 2.0, 4.0, 1.0)], "scenarios": 3})
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.BEGIN}\nold\n{bench.END}\ntail\n")
    assert bench.update_readme(data, readme)
    assert "\nold\n" not in readme.read_text() and readme.read_text().endswith("tail\n")
    (tmp_path / "plain.md").write_text("no markers\n")
    assert not bench.update_readme(data, tmp_path / "plain.md")


def test_scenario_files_take_both_suites_and_an_absent_folder_gives_none(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: pathlib.Path) -> None:
    bench = _bench()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "x.yaml").write_text("name: x\n")
    monkeypatch.setattr(bench, "SUITES", {"train": tmp_path / "train", "validation": tmp_path / "missing"})
    assert bench.scenario_files(["train", "validation"]) == [("train", str(tmp_path / "train" / "x.yaml"))]


class FakeRunner:
    """Attainment falls with the setting: values up to `edge` hold 0.95."""

    def __init__(self, ctx: policies.Context, edge: float, cost: dict[float, float] | None = None) -> None:
        self.ctx = ctx
        self.edge = edge
        self.cost = cost or {}
        self.calls: list[tuple[float | None, bool]] = []

    def run(self, policy: str, *, knobs: models.Knobs | None = None, setting: float | None = None,
            replicas: int | None = None, give_up: bool = False) -> simulate.Result:
        assert setting is not None
        self.calls.append((setting, give_up))
        ok = setting <= self.edge
        return simulate.Result(
            policy=policy, slo_attainment=0.97 if ok else 0.9, ttft_p95_ms=None, itl_p95_ms=None,
            gpu_hours=self.cost.get(setting, 10.0 / setting), cost_per_million_output_tokens=None, output_tokens=0,
            restarts=0,
            dropped_requests=0, final_max_batch_size=None, final_kv_cache_dtype=None, max_replicas=1, requests=0,
            rejected_requests=0, unfinished_requests=0, goodput_tokens_per_gpu_s=0.0, knob_changes=(),
            settled_at=0.0, good_tokens=(), gpu_seconds_by_minute=(), events=(), series=(), wall_seconds=0.0,
            gave_up=give_up and not ok)


def test_a_sweep_keeps_the_cheapest_setting_that_holds_and_reports_the_most_generous_when_none_does() -> None:
    bench = _bench()
    s = scenario.parse({"name": "s", "model": "llama-3.1-8b", "gpu": "l40s", "slo": {"ttft": "1s", "itl": "40ms"},
                        "duration": "10m", "workload": {"synthetic": {"arrival": {"rate": 1}}}})
    ctx = policies.Context(s, scenario.arrivals(s))
    runner = FakeRunner(ctx, edge=0.85)  # WVA's kvCacheThreshold grid 0.5 ... 0.95; GPU-h 10 / setting
    info, result = bench.sweep(runner, "wva", ctx.knobs)
    assert info["holds"] and info["value"] == 0.8 and result.slo_attainment == 0.97
    assert info["setting"] == "kvCacheThreshold 0.8"
    assert runner.calls[0] == (0.5, False)  # the most generous value runs first, to the end
    assert [c for c in runner.calls[1:] if not c[1]] == []  # every other value may give up
    assert sorted(c[0] for c in runner.calls) == info["grid"]  # the whole grid: cost need not fall with it
    # Not monotone: a larger value that holds but costs more is not the answer.
    costly = FakeRunner(ctx, edge=0.85, cost={0.8: 30.0})
    info, _ = bench.sweep(costly, "wva", ctx.knobs)
    assert info["value"] == 0.7
    runner = FakeRunner(ctx, edge=0.1)
    info, result = bench.sweep(runner, "wva", ctx.knobs)
    assert not info["holds"] and info["value"] == 0.5


def test_the_targets_say_met_or_missed_against_the_best_tuned_peer() -> None:
    bench = _bench()
    r = run("llama-8b-l40s", 2.0, 4.0, 1.0)
    r["settled"] = {"at_s": 750.0, "infertune": 246.0, "oracle": 223.0}
    lines = bench.check(r)
    assert "- **missed**: -100% fewer GPU-hours than hpa (target 8, default knobs: 1.00), the cheapest peer " \
           "setting at ≥ 0.95 (target: no more)" in lines
    assert any(line.startswith("- after the last rollout (its old revision gone at 12.5 min)") for line in lines)
    r2 = run("x", 2.0, 4.0, 1.0, peer_holds=False)
    assert "- met: no peer setting reaches 0.95 at tuned knobs; the best, hpa (target 8), reaches 0.900 with " \
           "1.00 GPU-h (target: higher attainment)" in bench.check(r2)


def test_a_change_to_the_decision_core_keeps_the_yardsticks_cache_and_a_twin_change_does_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    bench = _bench()
    ours = bench.decision_modules()
    # The decision core is what only decide reaches; the twin, the peers' parts and the model are shared.
    assert {"infertune.decide", "infertune.knee", "infertune.scaling"} <= ours
    assert not ours & {"infertune.perfmodel", "infertune.sim.cluster", "infertune.rollout", "infertune.observation"}
    copy = tmp_path / "repo"
    (copy / "operator").mkdir(parents=True)
    shutil.copytree(ROOT / "operator" / "infertune", copy / "operator" / "infertune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "data").mkdir()
    monkeypatch.setattr(bench, "ROOT", copy)
    before = (bench.code_version(ours=True), bench.code_version(ours=False))
    knee = copy / "operator" / "infertune" / "knee.py"
    knee.write_text(knee.read_text() + "\n# a change\n")
    after = (bench.code_version(ours=True), bench.code_version(ours=False))
    assert after[0] != before[0] and after[1] == before[1]
    model = copy / "operator" / "infertune" / "perfmodel.py"
    model.write_text(model.read_text() + "\n# a change\n")
    assert bench.code_version(ours=False) != after[1] and bench.code_version(ours=True) != after[0]
    # A module the simulator does not reach (the CLI) is not in the yardsticks' version.
    twin, whole = bench.code_version(ours=False), bench.code_version(ours=True)
    cli = copy / "operator" / "infertune" / "cli.py"
    cli.write_text(cli.read_text() + "\n# a change\n")
    assert bench.code_version(ours=False) == twin and bench.code_version(ours=True) != whole
    # A peer that starts to import a decision module moves it to the shared side.
    peers = copy / "operator" / "infertune" / "sim" / "policies.py"
    peers.write_text(peers.read_text() + "\nfrom infertune import knee as _knee  # noqa: E402\n")
    assert "infertune.knee" not in bench.decision_modules()
