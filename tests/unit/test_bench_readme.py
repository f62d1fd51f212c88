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
