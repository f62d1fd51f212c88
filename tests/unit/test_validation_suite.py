"""Test: the validation suite (bench/scenarios/validation/) and the train grid (bench/scenarios/grid/) are exactly
what bench/gen_validation.py writes from their seeds, and every scenario in them loads and builds its arrivals."""

from __future__ import annotations

import importlib
import math
import pathlib
import sys
from types import ModuleType

import pytest

from infertune.sim import scenario

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUITES = ("validation", "grid")
FILES = sorted((ROOT / "bench" / "scenarios" / suite / p.name, suite) for suite in SUITES
               for p in (ROOT / "bench" / "scenarios" / suite).glob("*.yaml"))


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """bench/gen_validation.py as a module (bench/ is scripts, not a package)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    return importlib.import_module("gen_validation")


@pytest.fixture(scope="module")
def regenerated(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, tuple[pathlib.Path, list[object]]]:
    out = {}
    for name in SUITES:
        suite = gen.SUITES[name]
        folder = tmp_path_factory.mktemp(name)
        out[name] = folder, gen.write(folder, gen.load_table(suite), suite)  # the committed capacities: no twin
    return out


@pytest.mark.parametrize("suite", SUITES)
def test_no_file_is_edited_by_hand(suite: str, regenerated: dict[str, tuple[pathlib.Path, list[object]]]) -> None:
    out, _ = regenerated[suite]
    fresh = {p.name: p.read_bytes() for p in out.glob("*.yaml")}
    committed = {p.name: p.read_bytes() for p, s in FILES if s == suite}
    assert sorted(fresh) == sorted(committed), f"rerun bench/gen_validation.py --suite {suite}: the files differ"
    edited = [name for name in fresh if fresh[name] != committed[name]]
    assert not edited, f"{edited} differ from the generator's output: rerun it, never edit them"


@pytest.mark.parametrize("suite", SUITES)
def test_the_capacity_table_holds_exactly_what_the_grid_reads(gen: ModuleType, suite: str) -> None:
    s = gen.SUITES[suite]
    table = gen.load_table(s)
    assert sorted(table) == sorted(set(gen.needed_keys(gen.grid(s), table)))
    assert all(v["capacity_rps"] > 0 for v in table.values())


def test_the_train_grid_draws_the_validation_kinds_on_other_pairings(gen: ModuleType) -> None:
    # The same kinds of cell (each shape with each pattern, both traces from the same offsets), drawn anew: the
    # train grid is no copy of validation, and no scenario name is shared.
    val, grid = gen.grid(gen.VALIDATION), gen.grid(gen.GRID)
    assert [(c.shape, c.arrival, c.trace_start) for c in val] == [(c.shape, c.arrival, c.trace_start) for c in grid]
    assert sum(1 for a, b in zip(val, grid, strict=True) if (a.pair, a.cold_start, a.tight, a.replicas)
               == (b.pair, b.cold_start, b.tight, b.replicas)) <= 2
    assert not {gen.name(c) for c in val} & {gen.name(c) for c in grid}
    assert all(gen.name(c).startswith("g") for c in grid)


@pytest.mark.parametrize("suite", SUITES)
def test_the_grid_covers_every_axis(gen: ModuleType, suite: str,
                                    regenerated: dict[str, tuple[pathlib.Path, list[object]]]) -> None:
    _, written = regenerated[suite]
    cells = [w.cell for w in written]  # type: ignore[attr-defined]
    assert len(cells) >= 24
    assert {c.shape for c in cells} >= {"chat", "code", "decode", "mix", "azure", "mooncake"}
    assert {c.arrival for c in cells} >= {"poisson", "diurnal", "ramp", "spike", "onoff", "azure", "mooncake"}
    pairs = {(c.pair.model, c.pair.gpu, c.pair.gpus) for c in cells}
    assert ("llama-3.1-8b", "l40s", 1) in pairs and ("llama-3.1-405b", "h200-sxm-141gb", 8) in pairs
    assert min(c.cold_start for c in cells) == 60 and max(c.cold_start for c in cells) == 600
    assert {c.tight for c in cells} == {True, False}


@pytest.mark.parametrize(("path", "suite"), FILES, ids=[p.stem for p, _ in FILES])
def test_every_generated_scenario_loads_and_builds_its_arrivals(
        path: pathlib.Path, suite: str, regenerated: dict[str, tuple[pathlib.Path, list[object]]]) -> None:
    s = scenario.load(path)
    assert s.name == path.stem
    stream = scenario.arrivals(s)
    assert stream and all(0 <= a.time < s.duration for a in stream)
    if s.workload.trace is not None and s.workload.format() == "mooncake":
        assert 0 < s.prefix_hit_rate < 1  # measured from the trace's hash_ids
    # Sized from the twin: the busiest minute needs a few to about fifteen replicas, within maxReplicas.
    capacity = next(w.capacity for w in regenerated[suite][1]  # type: ignore[attr-defined]
                    if w.raw["name"] == s.name)
    needed = math.ceil(scenario.peak_rate(stream) / capacity)
    assert 2 <= needed <= 16 and needed <= s.scaling.max_replicas, needed


@pytest.mark.parametrize("suite", SUITES)
def test_the_suite_is_not_empty(suite: str) -> None:
    assert sum(1 for _, s in FILES if s == suite) >= 24
