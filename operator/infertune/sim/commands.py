"""CLI: the twin's commands (`infertune sweep`, `infertune simulate`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, TextIO

import pydantic

from infertune import catalog, exits, models, perfmodel, replica
from infertune.sim import policies as sim_policies
from infertune.sim import scenario as sim_scenario
from infertune.sim import simulate as sim_simulate
from infertune.sim import sweep as sim_sweep

SWEEP_KEYS = ("concurrency", "ttft_ms_mean", "ttft_ms_p95", "itl_ms_mean", "itl_ms_p95", "output_tokens_per_s",
              "requests_per_s", "mbu")


def register(sub: Any) -> None:
    """Add this module's subcommands to the `infertune` parser."""
    s = sub.add_parser("sweep", help="closed-loop concurrency sweep of one replica on the twin (like genai-perf)")
    s.add_argument("--model", required=True, help="catalog key of the model, e.g. llama-3.1-70b")
    s.add_argument("--gpu", required=True, help="catalog key of the GPU, e.g. h100-sxm-80gb")
    s.add_argument("--gpus", default="1", help="GPUs per replica (tensor parallel), default 1")
    s.add_argument("--weights", choices=[p.value for p in models.Precision], default="bf16")
    s.add_argument("--kv-dtype", choices=[k.value for k in models.KvDtype], default="default")
    s.add_argument("--max-batch-size", help="the engine's max batch size (default: vLLM's for the GPU)")
    s.add_argument("--isl", required=True, help="input tokens per request")
    s.add_argument("--osl", required=True, help="output tokens per request")
    s.add_argument("--concurrency", default="1,5,25,50", help="comma-separated client counts (default 1,5,25,50)")
    s.add_argument("--max-throughput", action="store_true",
                   help="instead: output tokens/s at an infinite request rate (like trtllm-bench)")
    s.add_argument("--ttft-slo", help="TTFT objective for the plot, e.g. 1500ms")
    s.add_argument("--itl-slo", help="ITL objective for the plot, e.g. 40ms")
    s.add_argument("--plot", metavar="FILE.png", help="draw the frontier (throughput against ITL and TTFT)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=cmd_sweep)

    m = sub.add_parser("simulate", help="run policies side by side on a scenario in simulated time")
    m.add_argument("scenario", metavar="SCENARIO.yaml")
    m.add_argument("--policy", default=",".join(sim_policies.DEFAULT),
                   help=f"comma-separated, from {', '.join(sim_policies.NAMES)} (default: "
                   f"{', '.join(sim_policies.DEFAULT)})")
    m.add_argument("--json", action="store_true", help="print a JSON list with one object per policy")
    m.add_argument("--tuning-mode", metavar="MODE",
                   help="run infertune's policies under this tuning.mode (auto, recommend or off) instead of the "
                   "scenario's: what replicas alone do for the engine's own knobs")
    m.add_argument("--knobs", metavar="BATCH/KV[/BUDGET]",
                   help="pin every policy to these knobs from the start (max batch size, KV dtype default or fp8, "
                   "per-step token budget), as a spec that pins them would: what the replicas alone do at them")
    m.add_argument("--plot", metavar="FILE.png", help="draw replicas, latency and batch size over time")
    m.set_defaults(fn=cmd_simulate)


# ---------------------------------------------------------------------------------------------- sweep


def _count(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise exits.UsageError(f"{flag}: expected a whole number, got {text!r}") from None
    if value < 1:
        raise exits.UsageError(f"{flag}: must be at least 1, got {value}")
    return value


def _duration(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = models.parse_duration(text)
    except ValueError as e:
        raise exits.UsageError(f"{flag}: {e}") from None
    if seconds <= 0:
        raise exits.UsageError(f"{flag}: must be longer than zero, got {text!r}")
    return seconds


def sweep_replica(args: argparse.Namespace) -> perfmodel.Replica:
    """The replica the sweep flags describe; UsageError naming the flag on bad input."""
    try:
        gpu = catalog.gpu(args.gpu)
    except catalog.UnknownKeyError as e:
        raise exits.UsageError(f"--gpu: {e}") from None
    try:
        shape = catalog.model(args.model)
    except catalog.UnknownKeyError as e:
        raise exits.UsageError(f"--model: {e}") from None
    gpus = _count("--gpus", args.gpus)
    batch = None if args.max_batch_size is None else _count("--max-batch-size", args.max_batch_size)
    if args.kv_dtype == "fp8" and not gpu.supports_fp8:
        raise exits.UsageError(f"--kv-dtype: an FP8 KV cache needs FP8 support, which {gpu.name} lacks")
    base = perfmodel.Replica(gpu=gpu, model=shape, gpus=gpus, weights=models.Precision(args.weights),
                             kv_dtype=models.KvDtype(args.kv_dtype))
    # vLLM refuses a token budget below the batch: raise the budget with the batch, as the operator does.
    try:
        replica = base if batch is None else perfmodel.Replica.model_validate({
            **base.model_dump(), "max_num_seqs": batch, "max_num_batched_tokens": max(batch, base.token_budget)})
    except pydantic.ValidationError as e:
        raise exits.UsageError(f"--max-batch-size: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if replica.weights is models.Precision.FP8 and not gpu.supports_fp8:
        raise exits.UsageError(f"--weights: fp8 weights need FP8 tensor cores, which {gpu.name} lacks")
    try:
        perfmodel.coefficients(replica)
    except perfmodel.ModelDoesNotFit as e:
        raise exits.UsageError(f"--gpu: {e}") from None
    return replica


def cmd_sweep(args: argparse.Namespace) -> int:
    replica = sweep_replica(args)
    isl, osl = _count("--isl", args.isl), _count("--osl", args.osl)
    ttft_slo, itl_slo = _duration("--ttft-slo", args.ttft_slo), _duration("--itl-slo", args.itl_slo)
    capacity = perfmodel.kv_capacity_tokens(replica)
    if isl + osl > capacity:
        raise exits.UsageError(f"--isl/--osl: {isl} + {osl} tokens exceed the KV cache of one replica "
                             f"({capacity} tokens); use more --gpus, --kv-dtype fp8 or shorter requests")
    if args.max_throughput:
        tps = sim_sweep.max_throughput(replica, isl=isl, osl=osl)
        print(json.dumps({"output_tokens_per_s": round(tps, 1)}) if args.json
              else f"max throughput: {tps:.0f} output tokens/s")
        return exits.EXIT_OK
    try:
        levels = [_count("--concurrency", c.strip()) for c in args.concurrency.split(",") if c.strip()]
    except exits.UsageError:
        raise exits.UsageError(f"--concurrency: expected positive whole numbers separated by commas, "
                             f"got {args.concurrency!r}") from None
    if not levels:
        raise exits.UsageError("--concurrency: no levels given")
    points = sim_sweep.sweep(replica, isl=isl, osl=osl, concurrencies=levels)
    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in p.as_dict().items() if k in SWEEP_KEYS}
            for p in points]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'concurrency':>11} {'TTFT mean':>10} {'TTFT p95':>9} {'ITL mean':>9} {'ITL p95':>8} "
              f"{'tok/s':>8} {'req/s':>7} {'MBU':>5}")
        for p in points:
            print(f"{p.concurrency:>11} {p.ttft_ms_mean:>10.0f} {p.ttft_ms_p95:>9.0f} {p.itl_ms_mean:>9.1f} "
                  f"{p.itl_ms_p95:>8.1f} {p.output_tokens_per_s:>8.0f} {p.requests_per_s:>7.2f} {p.mbu:>5.2f}")
    if args.plot:
        sim_sweep.plot_frontier(points, args.plot, slo_ttft_ms=None if ttft_slo is None else ttft_slo * 1000,
                                slo_itl_ms=None if itl_slo is None else itl_slo * 1000,
                                title=f"{replica.model.name} {replica.weights.value} on {replica.gpus} x "
                                f"{replica.gpu.name}, {isl}/{osl} tokens")
    return exits.EXIT_OK


# ---------------------------------------------------------------------------------------------- simulate


class Bar:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, stream: TextIO, *, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.on = stream.isatty()
        self.last = ""

    def __call__(self, policy: str, done: float, total: float) -> None:
        if not self.on:
            return
        share = min(1.0, done / total) if total > 0 else 1.0
        filled = math.floor(share * self.width)
        line = f"\r{policy:<20} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%}"
        if line != self.last:
            self.stream.write(line)
            self.stream.flush()
            self.last = line

    def close(self) -> None:
        if self.on and self.last:
            self.stream.write("\r" + " " * len(self.last) + "\r")
            self.stream.flush()


def knobs_text(k: models.Knobs) -> str:
    """Knobs as `--knobs` reads them (_knobs): 66/default/512, or 14/fp8 where the budget is the engine's."""
    budget = "" if k.max_num_batched_tokens is None else f"/{k.max_num_batched_tokens}"
    return f"{k.max_batch_size}/{k.kv_cache_dtype.value}{budget}"


def _knobs(flag: str, text: str) -> models.Knobs:
    """BATCH/KV[/BUDGET], as the bench writes knobs (knobs_text): 66/default/512, 14/fp8."""
    parts = text.split("/")
    kvs = [k.value for k in models.KvDtype]
    if len(parts) not in (2, 3):
        raise exits.UsageError(f"{flag}: expected BATCH/KV or BATCH/KV/BUDGET (e.g. 66/default/512), got {text!r}")
    if parts[1] not in kvs:
        raise exits.UsageError(f"{flag}: unknown KV dtype {parts[1]!r}; known: {', '.join(kvs)}")
    batch = _count(flag, parts[0])
    budget = _count(flag, parts[2]) if len(parts) == 3 else None
    try:
        return models.Knobs(max_batch_size=batch, kv_cache_dtype=models.KvDtype(parts[1]),
                            max_num_batched_tokens=budget)
    except pydantic.ValidationError as e:
        raise exits.UsageError(f"{flag}: {_part(e)} ({text!r})") from None


def _part(e: pydantic.ValidationError) -> str:
    """The first error, named as the flag's parts are (BATCH, BUDGET)."""
    err = e.errors()[0]
    last = str(err["loc"][-1]) if err["loc"] else ""
    where = {"max_batch_size": "batch", "max_num_batched_tokens": "budget"}.get(last, "knobs")
    return f"{where}: {err['msg']}"


def _pinned(scenario: sim_scenario.Scenario, knobs: models.Knobs) -> sim_scenario.Scenario:
    """The scenario with its knobs pinned from the start: maxBatchSize bounds at the one value, the KV dtype
    policy at the one dtype, the engine's token budget set (absent: the engine's default for that batch, pinned
    too, so no budget is left to choose). Nothing is left to tune, so no policy restarts the engine."""
    batch = knobs.max_batch_size
    budget = knobs.max_num_batched_tokens or max(batch, replica.default_budget(sim_scenario.to_spec(scenario)))
    kv = models.KvCachePolicy.FP8 if knobs.kv_cache_dtype is models.KvDtype.FP8 else models.KvCachePolicy.DEFAULT
    tuning = scenario.tuning.model_copy(update={
        "max_batch_size": models.BatchBounds(min=batch, max=batch), "kv_cache_dtype": kv})
    initial = scenario.initial.model_copy(update={"max_batch_size": batch, "kv_cache_dtype": knobs.kv_cache_dtype})
    pinned = scenario.model_copy(update={"tuning": tuning, "initial": initial, "max_num_batched_tokens": budget})
    try:
        sim_scenario.to_spec(pinned)  # the spec validates what was pinned (a budget under the engine's 16)
    except pydantic.ValidationError as e:
        raise exits.UsageError(f"--knobs: {_part(e)}") from None
    return pinned


def cmd_simulate(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    unknown = [n for n in names if n not in sim_policies.NAMES]
    if unknown or not names:
        raise exits.UsageError(f"--policy: unknown policy {unknown[0] if unknown else args.policy!r}; "
                             f"known: {', '.join(sim_policies.NAMES)}")
    modes = [m.value for m in models.TuningMode]
    if args.tuning_mode is not None and args.tuning_mode not in modes:
        raise exits.UsageError(f"--tuning-mode: unknown mode {args.tuning_mode!r}; known: {', '.join(modes)}")
    try:
        scenario = sim_scenario.load(args.scenario)
    except sim_scenario.ScenarioError as e:
        raise exits.UsageError(str(e)) from None
    if args.tuning_mode is not None:
        tuning = scenario.tuning.model_copy(update={"mode": models.TuningMode(args.tuning_mode)})
        scenario = scenario.model_copy(update={"tuning": tuning})
    if args.knobs is not None:
        scenario = _pinned(scenario, _knobs("--knobs", args.knobs))
    bar = Bar(sys.stderr)
    try:
        results = sim_simulate.run(scenario, names, progress=bar)
    except sim_scenario.ScenarioError as e:
        raise exits.UsageError(f"{args.scenario}: {e}") from None
    finally:
        bar.close()
    if args.json:
        print(json.dumps([r.summary() for r in results], indent=2))
    else:
        print(f"{scenario.name}: {results[0].requests} requests over "
              f"{models.format_duration(scenario.duration)} simulated")
        print(sim_simulate.table(results))
    if args.plot:
        sim_simulate.plot(results, args.plot, slo=scenario.slo, title=scenario.name)
    return exits.EXIT_OK
