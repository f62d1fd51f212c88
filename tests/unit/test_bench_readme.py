"""Test: the README's benchmark table is what bench/decision_quality.py writes from docs/bench.json."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("decision_quality", ROOT / "bench" / "decision_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("decision_quality", module)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_matches_the_last_benchmark_run() -> None:
    bench = _bench()
    runs = json.loads((ROOT / "docs" / "bench.json").read_text())
    text = (ROOT / "README.md").read_text()
    block = text.split(bench.BEGIN, 1)[1].split(bench.END, 1)[0]
    assert block.strip() == bench.readme_table(runs).strip(), \
        "README is stale: rerun bench/decision_quality.py (it rewrites the table)"


def test_the_summary_counts_what_the_rows_say(tmp_path: pathlib.Path) -> None:
    bench = _bench()
    row = {"slo_attainment": 0.96, "gpu_hours": 2.0, "dropped_requests": 0, "final_max_batch_size": 32}
    runs = [{"scenario": "a", "results": [
        {**row, "policy": "infertune", "dropped_requests": 3}, {**row, "policy": "oracle", "gpu_hours": 1.0},
        {**row, "policy": "static", "gpu_hours": 4.0}, {**row, "policy": "hpa", "slo_attainment": 0.9}]}]
    summary = bench.readme_table(runs).splitlines()[-1]
    assert "at or above 0.95 on 1 of 1" in summary and "higher than every peer's on 1 of 1" in summary
    assert "3 requests dropped in all" in summary and "2.00-2.00x the oracle's" in summary
    assert "met on 0 of 1" in summary and "no more than static's on 1 of 1" in summary
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.BEGIN}\nold\n{bench.END}\ntail\n")
    assert bench.update_readme(runs, readme)
    assert "old" not in readme.read_text() and readme.read_text().endswith("tail\n")
    (tmp_path / "plain.md").write_text("no markers\n")
    assert not bench.update_readme(runs, tmp_path / "plain.md")


def test_the_tuning_targets_say_met_or_missed_and_the_steady_state_beside_them() -> None:
    bench = _bench()
    row = {"slo_attainment": 0.96, "gpu_hours": 2.0, "dropped_requests": 0, "final_max_batch_size": 13,
           "final_kv_cache_dtype": "fp8", "restarts": 1}
    run = {"scenario": "chat-70b-h100", "settled": {"at_s": 750.0, "infertune": 246.0, "oracle": 223.0},
           "results": [{**row, "policy": "infertune", "goodput_tokens_per_gpu_s": 189.0},
                       {**row, "policy": "oracle", "goodput_tokens_per_gpu_s": 223.0}]}
    lines = bench.check(run)
    assert "- **missed**: goodput per GPU 189 vs the oracle's 223 tok/s (85%; target ≥ 90%)" in lines
    assert lines[-1] == ("- after the last rollout (its old revision gone at 12.5 min), over the same minutes: "
                         "goodput per GPU 246 vs the oracle's 223 tok/s (110%)")
    run["results"][0]["goodput_tokens_per_gpu_s"] = 201.0
    assert "- met: goodput per GPU 201 vs the oracle's 223 tok/s (90%; target ≥ 90%)" in bench.check(run)
    del run["settled"]
    assert not any("after the last rollout" in line for line in bench.check(run))
