"""Test: the validation suite (bench/scenarios/validation/) is exactly what bench/gen_validation.py writes, and
every scenario in it loads and builds its arrivals."""

from __future__ import annotations

import importlib
import math
import pathlib
import sys
from types import ModuleType

import pytest

from infertune.sim import scenario

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "scenarios" / "validation"
FILES = sorted(SUITE.glob("*.yaml"))


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """bench/gen_validation.py as a module (bench/ is scripts, not a package)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    return importlib.import_module("gen_validation")


@pytest.fixture(scope="module")
def regenerated(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[object]]:
    out = tmp_path_factory.mktemp("validation")
    written = gen.write(out, gen.load_table())  # from the committed capacities: no simulation here
    return out, written


def test_no_file_is_edited_by_hand(regenerated: tuple[pathlib.Path, list[object]]) -> None:
    out, _ = regenerated
    fresh = {p.name: p.read_bytes() for p in out.glob("*.yaml")}
    committed = {p.name: p.read_bytes() for p in FILES}
    assert sorted(fresh) == sorted(committed), "rerun bench/gen_validation.py: the suite's files differ"
    edited = [name for name in fresh if fresh[name] != committed[name]]
    assert not edited, f"{edited} differ from the generator's output: rerun bench/gen_validation.py, never edit them"


def test_the_capacity_table_holds_exactly_what_the_grid_reads(gen: ModuleType) -> None:
    table = gen.load_table()
    assert sorted(table) == sorted(set(gen.needed_keys(gen.grid(), table)))
    assert all(v["capacity_rps"] > 0 for v in table.values())


def test_the_grid_covers_every_axis(gen: ModuleType, regenerated: tuple[pathlib.Path, list[object]]) -> None:
    _, written = regenerated
    cells = [w.cell for w in written]  # type: ignore[attr-defined]
    assert len(cells) >= 24
    assert {c.shape for c in cells} >= {"chat", "code", "decode", "mix", "azure", "mooncake"}
    assert {c.arrival for c in cells} >= {"poisson", "diurnal", "ramp", "spike", "onoff", "azure", "mooncake"}
    pairs = {(c.pair.model, c.pair.gpu, c.pair.gpus) for c in cells}
    assert ("llama-3.1-8b", "l40s", 1) in pairs and ("llama-3.1-405b", "h200-sxm-141gb", 8) in pairs
    assert min(c.cold_start for c in cells) == 60 and max(c.cold_start for c in cells) == 600
    assert {c.tight for c in cells} == {True, False}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_validation_scenario_loads_and_builds_its_arrivals(
        path: pathlib.Path, regenerated: tuple[pathlib.Path, list[object]]) -> None:
    s = scenario.load(path)
    assert s.name == path.stem
    stream = scenario.arrivals(s)
    assert stream and all(0 <= a.time < s.duration for a in stream)
    if s.workload.trace is not None and s.workload.format() == "mooncake":
        assert 0 < s.prefix_hit_rate < 1  # measured from the trace's hash_ids
    # Sized from the twin: the busiest minute needs a few to about fifteen replicas, within maxReplicas.
    capacity = next(w.capacity for w in regenerated[1] if w.raw["name"] == s.name)  # type: ignore[attr-defined]
    needed = math.ceil(scenario.peak_rate(stream) / capacity)
    assert 2 <= needed <= 16 and needed <= s.scaling.max_replicas, needed


def test_the_suite_is_not_empty() -> None:
    assert len(FILES) >= 24
