"""Bench: writes the validation suite, bench/scenarios/validation/*.yaml, from a seeded grid; never edit its output.

The eleven scenarios in bench/scenarios/ are the `train` suite: policy changes are chosen on them. The validation
suite holds workload shapes, arrival patterns, models and GPUs they do not; it is reported apart and no constant
is ever tuned on it (docs/validation.md).

    python bench/gen_validation.py             write the scenarios from the committed capacities
    python bench/gen_validation.py --measure   first measure on the twin the capacities the grid lacks
    python bench/gen_validation.py --out DIR   write to DIR instead (the test compares DIR with the committed files)
    python bench/gen_validation.py --time      run infertune on every written scenario, print CPU and wall seconds

How a scenario is sized (the rule, the same for every cell of the grid):
1. Its SLO is a multiple of the replica's unloaded latency at engine defaults (perfmodel, no fitting): the ITL
   objective 2x (tight) or 4x (loose) one decode step of a lone request at the shape's mean context, the TTFT
   objective 4x or 8x a lone prefill of the shape's 95th-percentile prompt plus one step; rounded up to 5 ms
   (ITL) and 100 ms (TTFT). Loose, code shape, 8B BF16 on an L40S: a 25.5 ms step at 2,009 tokens of context
   -> ITL 105 ms; a 282 ms prefill of 3,896 tokens -> TTFT 8 x 307 ms = 2,500 ms.
2. The twin measures one replica's SLO capacity at engine defaults on that shape and SLO
   (`policies.Context.capacity`: Poisson arrivals on a pool of replicas, the largest rate per replica with 95%
   of requests within both objectives). Measuring runs the twin, so the numbers live in
   bench/validation-capacity.json, written by --measure and read by every other run (and by the test).
3. The load's busiest minute is R x that capacity, R drawn from the grid's replica levels (3 to 14): a
   synthetic pattern's peak rate is set to it, a trace is rate-scaled so its busiest minute of the replayed
   window matches it. The generator prints the replicas the realised busiest minute needs (Poisson noise and a
   trace's own bursts add one or two).

Long-context scenarios replay the Mooncake trace, whose `hash_ids` give the prefix reuse. The prefix cache of a
replica keeps a block until new prompts have filled its KV cache: at the load the replica is sized for, that is
its KV capacity in tokens over the prompt tokens it takes per second (Llama-3.1-8B BF16 on an L40S from minute 28:
205,120 tokens / (0.1375 req/s x 11,318 tokens) = 132 s). The scenario's `prefixRetention` is that time and the loader
measures the hit rate from the hash_ids with it; capacity is measured at hit rate 0 to find the retention, then
again at the measured hit rate. The twin applies one hit rate to every request on every replica: it assumes a
prefix-aware router (as llm-d's and Mooncake's are) that sends a conversation's turns to the replica holding its
blocks.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from infertune import catalog, models, perfmodel
from infertune.sim import policies, scenario, simulate

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "scenarios" / "validation"
CAPACITIES = ROOT / "bench" / "validation-capacity.json"
GRID_OUT = ROOT / "bench" / "scenarios" / "grid"
GRID_CAPACITIES = ROOT / "bench" / "grid-capacity.json"
AZURE = "azure-llm-2023-conversation.csv"
MOONCAKE = "mooncake-fast25-conversation.jsonl"

# The grid's seed: change it and the whole suite is drawn anew (then every result is a new measurement).
SEED = 16
# The train grid's seed: the same grid drawn again, so train holds the validation suite's kinds of cell (each shape
# with each pattern, both traces) on other pairings, cold starts, SLOs and loads. Any seed but SEED serves.
GRID_SEED = 17
DURATION = 30 * 60.0  # seconds of simulated time per scenario: the whole bench must run in 20 minutes on 2 cores
# SLO objectives as multiples of the unloaded latency (step 1 of the sizing rule), tight and loose: ITL 2x and 4x
# one lone decode step, TTFT 4x and 8x a lone prefill of the 95th-percentile prompt plus one step (a new request
# waits for the step in flight, and the TTFT objective is the one queueing spends first).
ITL_K = {True: 2.0, False: 4.0}
TTFT_K = {True: 4.0, False: 8.0}
REPLICA_LEVELS = (3, 5, 8, 11, 14)  # replicas the busiest minute needs (step 3)
COLD_STARTS = (60.0, 120.0, 300.0, 600.0)
# Loading weights takes time: a replica never starts faster than 60 s per 100 GB of weights (about 1.7 GB/s from
# a node's disk), so 405B FP8 (405 GB) starts in 300 s or more and never in 60.
COLD_START_PER_100GB = 60.0
PROBE_RATE = 2.0  # requests/s of the stream a synthetic shape is measured on (3,600 requests over 30 minutes)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A model on a GPU: what a replica runs on."""

    short: str
    model: str
    gpu: str
    gpus: int
    weights: str
    long_context: bool  # max_position_embeddings of 128k: the Mooncake trace's prompts (up to 126,195) fit


PAIRS = (
    Pair("8b-l40s", "llama-3.1-8b", "l40s", 1, "bf16", True),
    Pair("8b-fp8-l40s", "llama-3.1-8b", "l40s", 1, "fp8", True),
    Pair("32b-h100", "qwen3-32b", "h100-sxm-80gb", 1, "fp8", False),
    Pair("70b-h100x2", "llama-3.1-70b", "h100-sxm-80gb", 2, "fp8", True),
    Pair("72b-h200", "qwen2.5-72b", "h200-sxm-141gb", 1, "fp8", False),
    Pair("8x7b-a100x2", "mixtral-8x7b", "a100-80gb", 2, "bf16", False),
    Pair("405b-h200x8", "llama-3.1-405b", "h200-sxm-141gb", 8, "fp8", True),
)


def _lognormal(mean: int, cv: float, high: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mean": mean, "cv": cv}
    if high is not None:
        out["max"] = high
    return out


# Synthetic request shapes (issue 16): chat, code-like prefill-heavy, decode-heavy, and a mixture of the three.
SHAPES: dict[str, dict[str, Any]] = {
    "chat": {"input": _lognormal(1000, 1.0, 16000), "output": _lognormal(200, 1.0, 2000)},
    "code": {"input": _lognormal(2000, 0.5, 16000), "output": _lognormal(30, 0.5, 200)},
    "decode": {"input": _lognormal(200, 0.5, 2000), "output": _lognormal(1500, 0.5, 6000)},
}
SHAPES["mix"] = {"mix": [{"weight": w, **SHAPES[k]} for k, w in (("chat", 2), ("code", 1), ("decode", 1))]}
PATTERNS = ("poisson", "diurnal", "ramp", "spike", "onoff")
# Both real traces, each replayed from several offsets (whole minutes into the trace).
TRACE_CELLS = (("azure", 0.0), ("azure", 20 * 60.0), ("mooncake", 0.0), ("mooncake", 15 * 60.0),
               ("mooncake", 28 * 60.0))


@dataclasses.dataclass(frozen=True)
class Suite:
    """A grid drawn from one seed: where its scenarios and its measured capacities live, and what its files say."""

    name: str
    seed: int
    prefix: str  # the scenarios' names start with it and the cell's number: v01-..., g01-...
    out: pathlib.Path
    capacities: pathlib.Path
    role: str  # the header's sentence on how the bench uses the suite


VALIDATION = Suite("validation", SEED, "v", OUT, CAPACITIES,
                   "Validation suite: reported apart from train, never tuned on (docs/validation.md).")
GRID = Suite("grid", GRID_SEED, "g", GRID_OUT, GRID_CAPACITIES,
             "Train grid: part of train, drawn like the validation suite from another seed (docs/validation.md).")
SUITES = {s.name: s for s in (VALIDATION, GRID)}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One scenario of the grid before sizing."""

    index: int
    shape: str  # chat, code, decode, mix, azure (the trace's own shape) or mooncake
    arrival: str  # a pattern, or azure / mooncake (the trace's own timestamps)
    trace_start: float
    pair: Pair
    cold_start: float
    tight: bool
    replicas: int
    seed: int
    params: tuple[tuple[str, Any], ...]  # the pattern's drawn shape: ratios, offsets, lengths
    prefix: str = "v"  # the suite's: names are v01-..., g01-...


def _balanced(rng: random.Random, levels: Sequence[Any], n: int) -> list[Any]:
    """n draws that use every level about equally often (a Latin-hypercube column), in a seeded order."""
    out = [levels[i % len(levels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _pattern_params(rng: random.Random, pattern: str) -> tuple[tuple[str, Any], ...]:
    if pattern == "diurnal":
        return (("amplitude", rng.choice((0.4, 0.6, 0.8))), ("phase", rng.choice((0.0, 0.25, 0.5, 0.75))))
    if pattern == "ramp":
        return (("direction", rng.choice(("up", "down"))), ("ratio", rng.choice((3, 4))))
    if pattern == "spike":
        return (("ratio", rng.choice((2, 3, 4))), ("at", rng.choice((8, 12, 16)) * 60.0),
                ("length", rng.choice((4, 8)) * 60.0))
    if pattern == "onoff":
        return (("on", rng.choice((1, 3)) * 60.0), ("off", rng.choice((2, 5)) * 60.0),
                ("off_share", rng.choice((0.0, 0.25))))
    return ()


def _min_cold_start(pair: Pair) -> float:
    bytes_per_param = 1 if pair.weights == "fp8" else 2
    gb = catalog.model(pair.model).parameters * bytes_per_param / 1e9
    return COLD_START_PER_100GB * math.ceil(gb / 100.0)


def grid(suite: Suite = VALIDATION) -> list[Cell]:
    """Every cell of the suite's grid, drawn from its seed."""
    rng = random.Random(suite.seed)
    kinds = [(shape, pattern, 0.0) for shape in SHAPES for pattern in PATTERNS]
    kinds += [(trace, trace, start) for trace, start in TRACE_CELLS]
    n = len(kinds)
    long_pairs = [p for p in PAIRS if p.long_context]
    short = _balanced(rng, PAIRS, n)
    longs = iter(_balanced(rng, long_pairs, sum(1 for k in kinds if k[0] == "mooncake")))
    colds = _balanced(rng, COLD_STARTS, n)
    tights = _balanced(rng, (True, False), n)
    replicas = _balanced(rng, REPLICA_LEVELS, n)
    cells = []
    for i, (shape, arrival, start) in enumerate(kinds):
        pair = next(longs) if shape == "mooncake" else short[i]
        cold = max(colds[i], _min_cold_start(pair))
        cold = min(c for c in COLD_STARTS if c >= cold)
        cells.append(Cell(i + 1, shape, arrival, start, pair, cold, tights[i], replicas[i],
                          rng.randrange(1, 2**31), _pattern_params(rng, arrival), suite.prefix))
    return cells


def name(cell: Cell) -> str:
    where = f"{cell.arrival}{int(cell.trace_start // 60)}m" if cell.shape in ("azure", "mooncake") else \
        f"{cell.shape}-{cell.arrival}"
    return f"{cell.prefix}{cell.index:02d}-{where}-{cell.pair.short}"


# ---------------------------------------------------------------------------------------------- sizing


def _base(cell: Cell) -> dict[str, Any]:
    p = cell.pair
    return {"name": name(cell), "model": p.model, "gpu": p.gpu, "gpusPerReplica": p.gpus, "weights": p.weights}


def _probe(cell: Cell, slo: dict[str, str], hit: float | None = None, retention: float | None = None
           ) -> scenario.Scenario:
    """The scenario a capacity is measured on: the cell's replica, shape and SLO under a steady stream."""
    raw = {**_base(cell), "slo": slo, "duration": models.format_duration(DURATION), "seed": 1}
    if cell.shape in ("azure", "mooncake"):
        raw["workload"] = {"trace": str(ROOT / "data" / "traces" / (AZURE if cell.shape == "azure" else MOONCAKE)),
                           "traceStart": models.format_duration(cell.trace_start)}
        if retention is not None:
            raw["workload"]["prefixRetention"] = models.format_duration(retention)
        elif hit is not None:
            raw["prefixHitRate"] = hit
    else:
        raw["workload"] = {"synthetic": {"arrival": {"pattern": "poisson", "rate": PROBE_RATE}, **SHAPES[cell.shape]}}
    return scenario.parse(raw, base=ROOT / "bench" / "scenarios")


def _ceil_to(seconds: float, step: float) -> float:
    return math.ceil(seconds / step - 1e-9) * step


@functools.cache
def slo_for(cell: Cell) -> dict[str, str]:
    """Step 1: k x the unloaded latency of the cell's replica at engine defaults on its shape."""
    probe = _probe(cell, {"ttft": "1s", "itl": "1s"})
    ctx = policies.Context(probe, scenario.arrivals(probe))
    replica = ctx.replica(ctx.knobs)
    prompts = sorted(a.prompt_tokens for a in ctx.stream)
    p95 = prompts[min(len(prompts) - 1, int(0.95 * len(prompts)))]
    context = ctx.shape.isl + ctx.shape.osl / 2.0
    step = perfmodel.decode_step_time(replica, batch=1, context=context)
    itl = _ceil_to(ITL_K[cell.tight] * step, 0.005)
    ttft = _ceil_to(TTFT_K[cell.tight] * (perfmodel.prefill_time(replica, tokens=p95) + step), 0.1)
    return {"ttft": models.format_duration(ttft), "itl": models.format_duration(itl)}


def _key(cell: Cell, slo: dict[str, str], extra: str = "") -> str:
    p = cell.pair
    shape = f"{cell.shape}@{models.format_duration(cell.trace_start)}" if cell.shape in ("azure", "mooncake") \
        else cell.shape
    return f"{p.model}/{p.gpus}x{p.gpu}/{p.weights}/{shape}/ttft={slo['ttft']},itl={slo['itl']}{extra}"


def _capacity(probe: scenario.Scenario) -> float:
    ctx = policies.Context(probe, scenario.arrivals(probe))
    return round(ctx.capacity(ctx.knobs), 4)


def retention_for(cell: Cell, slo: dict[str, str], capacity_at_zero: float) -> float:
    """How long a block stays in one replica's prefix cache at the load the replica is sized for (whole seconds)."""
    probe = _probe(cell, slo, hit=0.0)
    ctx = policies.Context(probe, scenario.arrivals(probe))
    tokens = perfmodel.kv_capacity_tokens(ctx.replica(ctx.knobs))
    # 205,120 KV tokens / (0.1375 req/s x 11,318 prompt tokens) = 132 s (8B BF16 on an L40S, minute 28 on).
    return float(max(1, round(tokens / (capacity_at_zero * ctx.shape.isl))))


def measure(cells: Sequence[Cell], known: dict[str, Any], *, log: Any = sys.stderr) -> dict[str, Any]:
    """The capacities the grid needs that `known` lacks, measured on the twin; returns the whole table."""
    table = dict(known)
    for cell in cells:
        slo = slo_for(cell)
        if cell.shape == "mooncake":
            zero = _key(cell, slo, ",hit=0")
            if zero not in table:
                table[zero] = {"capacity_rps": _capacity(_probe(cell, slo, hit=0.0))}
                print(f"measured {zero}: {table[zero]['capacity_rps']} req/s", file=log, flush=True)
            retention = retention_for(cell, slo, table[zero]["capacity_rps"])
            key = _key(cell, slo, f",retention={models.format_duration(retention)}")
            probe = _probe(cell, slo, retention=retention)
        else:
            key = _key(cell, slo)
            probe = _probe(cell, slo)
        if key not in table:
            table[key] = {"capacity_rps": _capacity(probe)}
            print(f"measured {key}: {table[key]['capacity_rps']} req/s", file=log, flush=True)
    return dict(sorted(table.items()))


def needed_keys(cells: Sequence[Cell], table: dict[str, Any]) -> list[str]:
    """The capacity keys the grid reads (the mooncake ones' retention depends on the hit-0 capacity)."""
    keys = []
    for cell in cells:
        slo = slo_for(cell)
        if cell.shape == "mooncake":
            zero = _key(cell, slo, ",hit=0")
            keys.append(zero)
            if zero in table:
                retention = retention_for(cell, slo, table[zero]["capacity_rps"])
                keys.append(_key(cell, slo, f",retention={models.format_duration(retention)}"))
        else:
            keys.append(_key(cell, slo))
    return keys


# ---------------------------------------------------------------------------------------------- writing


def _sig(x: float) -> float:
    """Three significant digits: 7.123 -> 7.12, 0.013456 -> 0.0135."""
    return float(f"{x:.3g}")


def _arrival(cell: Cell, peak: float) -> dict[str, Any]:
    """The pattern with its busiest rate at `peak` requests/s."""
    p = dict(cell.params)
    if cell.arrival == "poisson":
        return {"pattern": "poisson", "rate": _sig(peak)}
    if cell.arrival == "diurnal":
        mean = peak / (1.0 + p["amplitude"])
        return {"pattern": "diurnal", "rate": _sig(mean), "amplitude": p["amplitude"],
                "period": models.format_duration(DURATION), "phase": models.format_duration(p["phase"] * DURATION)}
    if cell.arrival == "ramp":
        low = peak / p["ratio"]
        start, end = (low, peak) if p["direction"] == "up" else (peak, low)
        return {"pattern": "ramp", "rate": _sig(start), "peak": _sig(end), "at": "5m", "length": "20m"}
    if cell.arrival == "spike":
        return {"pattern": "spike", "rate": _sig(peak / p["ratio"]), "peak": _sig(peak),
                "at": models.format_duration(p["at"]), "length": models.format_duration(p["length"])}
    assert cell.arrival == "onoff"
    out = {"pattern": "onoff", "rate": _sig(peak), "on": models.format_duration(p["on"]),
           "off": models.format_duration(p["off"])}
    if p["off_share"]:
        out["offRate"] = _sig(peak * p["off_share"])
    return out


@dataclasses.dataclass(frozen=True)
class Written:
    """A generated scenario and the facts its header states."""

    cell: Cell
    raw: dict[str, Any]
    capacity: float  # requests/s per replica at engine defaults, measured on the twin
    hit: float  # the prefix-cache hit rate the scenario loads with


@dataclasses.dataclass(frozen=True)
class Realised:
    """What the scenario's arrival stream turned out to be (built on request: 1M requests take a while)."""

    peak: float  # the busiest minute, requests/s
    needed: int  # replicas that minute needs at the measured capacity
    requests: int


def realise(w: Written, out: pathlib.Path = OUT) -> Realised:
    stream = scenario.arrivals(scenario.parse(w.raw, base=out))
    peak = scenario.peak_rate(stream)
    return Realised(peak, math.ceil(peak / w.capacity - 1e-9), len(stream))


def build(cell: Cell, table: dict[str, Any], out: pathlib.Path = OUT) -> Written:
    """The cell sized by the rule, as a scenario mapping."""
    slo = slo_for(cell)
    raw: dict[str, Any] = {**_base(cell), "engine": "vllm", "slo": slo,
                           "coldStart": models.format_duration(cell.cold_start),
                           "duration": models.format_duration(DURATION), "seed": cell.seed}
    max_replicas = 2 * cell.replicas + 2  # room above the need for a policy that over-provisions
    raw["scaling"] = {"minReplicas": 1, "maxReplicas": max_replicas, "standby": {"min": 0, "max": 4}}
    if cell.shape in ("azure", "mooncake"):
        extra = ""
        trace = ROOT / "data" / "traces" / (AZURE if cell.shape == "azure" else MOONCAKE)
        w: dict[str, Any] = {"trace": os.path.relpath(trace, out),  # relative to the scenario's own file
                             "traceStart": models.format_duration(cell.trace_start)}
        if cell.shape == "mooncake":
            zero = table[_key(cell, slo, ",hit=0")]["capacity_rps"]
            retention = retention_for(cell, slo, zero)
            w["prefixRetention"] = models.format_duration(retention)
            extra = f",retention={models.format_duration(retention)}"
        capacity = table[_key(cell, slo, extra)]["capacity_rps"]
        unscaled = scenario.parse({**raw, "workload": w}, base=out)
        busiest = scenario.peak_rate(scenario.arrivals(unscaled))
        w["rateScale"] = _sig(cell.replicas * capacity / busiest)
        raw["workload"] = w
    else:
        capacity = table[_key(cell, slo)]["capacity_rps"]
        raw["workload"] = {"synthetic": {"arrival": _arrival(cell, cell.replicas * capacity), **SHAPES[cell.shape]}}
    return Written(cell, raw, capacity, scenario.parse(raw, base=out).prefix_hit_rate)


def _param(key: str, value: Any) -> str:
    if key in ("at", "length", "on", "off"):
        return f"{key} {models.format_duration(value)}"
    if key == "phase":
        return f"phase {value:g} of the period"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


def describe(w: Written) -> str:
    c = w.cell
    p = c.pair
    arrival = c.arrival + (f" ({', '.join(_param(k, v) for k, v in c.params)})" if c.params else "")
    if c.shape in ("azure", "mooncake"):
        arrival = f"the {c.arrival} trace from {models.format_duration(c.trace_start)}"
    hit = f", prefix-cache hit rate {w.hit:.1%} from the trace's hash_ids" if c.shape == "mooncake" else ""
    return (f"shape {c.shape}, arrivals {arrival}, {p.model} {p.weights} on {p.gpus} x {p.gpu}, cold start "
            f"{models.format_duration(c.cold_start)}, {'tight' if c.tight else 'loose'} SLO{hit}. Twin capacity at "
            f"engine defaults: {w.capacity:g} req/s per replica; sized for a busiest minute of {c.replicas} x that.")


def render(w: Written, suite: Suite = VALIDATION) -> str:
    import textwrap

    head = ["Generated by bench/gen_validation.py from its seeded grid: do not edit (a test regenerates it and",
            f"compares). {suite.role}",
            *textwrap.wrap(describe(w), 110)]
    body = yaml.safe_dump(w.raw, sort_keys=False, default_flow_style=None, width=110)
    return "".join(f"# {line}\n" for line in head) + body


def write(out: pathlib.Path, table: dict[str, Any], suite: Suite = VALIDATION) -> list[Written]:
    """Every scenario of the suite's grid into `out` (which holds nothing else afterwards)."""
    out.mkdir(parents=True, exist_ok=True)
    cells = grid(suite)
    missing = [k for k in needed_keys(cells, table) if k not in table]
    if missing:
        raise SystemExit(f"{suite.capacities.name} lacks {len(missing)} capacities (first: {missing[0]}); "
                         f"run bench/gen_validation.py --suite {suite.name} --measure")
    # The trace paths are relative to the suite's own folder, which `out` stands in for in the test.
    written = [build(c, table, suite.out) for c in cells]
    names = {f"{w.raw['name']}.yaml" for w in written}
    for stale in out.glob("*.yaml"):
        if stale.name not in names:
            stale.unlink()
    for w in written:
        (out / f"{w.raw['name']}.yaml").write_text(render(w, suite), encoding="utf-8")
    return written


def load_table(suite: Suite = VALIDATION) -> dict[str, Any]:
    return json.loads(suite.capacities.read_text(encoding="utf-8")) if suite.capacities.exists() else {}


def time_infertune(path: pathlib.Path) -> tuple[str, float, float, simulate.Result]:
    """One infertune run of a scenario (loading and the twin's sizing included): its name, wall and CPU seconds
    (CPU is the fairer number on a shared machine), and the result."""
    wall, cpu = time.perf_counter(), time.process_time()
    s = scenario.load(path)
    ctx = policies.Context(s, scenario.arrivals(s))
    result = simulate.run_policy(ctx, "infertune")
    return s.name, time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--suite", choices=sorted(SUITES), default=VALIDATION.name,
                        help="which seeded grid: validation (SEED) or the train grid (GRID_SEED)")
    parser.add_argument("--out", type=pathlib.Path, help="folder to write the scenarios to (default: the suite's)")
    parser.add_argument("--measure", action="store_true", help="measure missing capacities on the twin first")
    parser.add_argument("--time", action="store_true", help="run infertune on each scenario, print wall seconds")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    out = args.out or suite.out
    table = load_table(suite)
    if args.measure:
        table = measure(grid(suite), table)
        keep = set(needed_keys(grid(suite), table))
        table = {k: v for k, v in table.items() if k in keep}
        suite.capacities.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    written = write(out, table, suite)
    for w in written:
        r = realise(w, out)
        print(f"{w.raw['name']:<30} {describe(w)} Realised: {r.requests} requests, busiest minute {r.peak:.2f} req/s "
              f"needs {r.needed} replicas.", flush=True)
    if args.time:
        walls = cpus = 0.0
        for path in sorted(out.glob("*.yaml")):
            scenario_name, wall, cpu, r = time_infertune(path)
            walls, cpus = walls + wall, cpus + cpu
            print(f"{scenario_name:<30} {cpu:6.1f} s CPU, {wall:6.1f} s wall ({r.wall_seconds:.1f} s the run); "
                  f"{r.requests} requests, attainment {r.slo_attainment:.3f}, {r.gpu_hours:.2f} GPU-h, "
                  f"{r.restarts} restarts", flush=True)
        print(f"total {cpus:.0f} s CPU, {walls:.0f} s wall for {len(written)} scenarios")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
