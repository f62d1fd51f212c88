"""Twin: the closed loop in simulated time — each policy on a fresh fake cluster, the same arrivals, results, plot."""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from infertune import models
from infertune.sim import cluster as sim_cluster
from infertune.sim import engine as sim_engine
from infertune.sim import fleet as sim_fleet
from infertune.sim import policies as sim_policies
from infertune.sim import scenario as sim_scenario

# After the last arrival the fleet runs on (no new decisions) until what is in flight finishes, at most this long.
TAIL_SECONDS = 1800.0
# The keys `--json` prints for every policy, in this order.
KEYS = ("policy", "slo_attainment", "ttft_p95_ms", "itl_p95_ms", "gpu_hours", "cost_per_million_output_tokens",
        "output_tokens", "restarts", "dropped_requests", "final_max_batch_size", "final_kv_cache_dtype",
        "final_max_num_batched_tokens", "max_replicas")

Progress = Callable[[str, float, float], None]  # (policy, simulated seconds done, of total)


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One interval of a run: the cluster at its end, and latencies of the requests that finished in it."""

    t: float
    serving: int
    standby: int
    starting: int
    pods: int
    max_batch_size: int | None
    kv_cache_dtype: str | None
    ttft_p95_ms: float | None
    itl_p95_ms: float | None
    arrival_rate: float


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """What one policy achieved on one scenario."""

    policy: str
    slo_attainment: float  # every request that arrived counts: dropped and unfinished ones are misses
    ttft_p95_ms: float | None  # over finished requests
    itl_p95_ms: float | None  # per-request mean ITL, over finished requests with two or more tokens
    gpu_hours: float
    cost_per_million_output_tokens: float | None
    output_tokens: int
    restarts: int  # revisions rolled out after the first (each restarts engines)
    dropped_requests: int  # arrived with nothing serving, or cut off when a grace period ended
    final_max_batch_size: int | None
    final_kv_cache_dtype: str | None
    max_replicas: int  # the most Ready serving pods at any moment
    requests: int
    rejected_requests: int  # longer than a replica's KV cache
    unfinished_requests: int
    goodput_tokens_per_gpu_s: float  # output tokens of requests within the SLO per GPU-second
    knob_changes: tuple[tuple[float, int, str], ...]  # (time, max batch size, KV dtype) of every rollout
    settled_at: float  # when the last rollout's old revision had left (0 when there was none)
    good_tokens: tuple[tuple[float, int], ...]  # (arrival time, output tokens) of every request within the SLO
    gpu_seconds_by_minute: tuple[float, ...]  # GPU-seconds held in each simulated minute
    events: tuple[tuple[float, str, str], ...]  # (time, reason, message) of the policy's events
    series: tuple[Point, ...]
    wall_seconds: float
    gave_up: bool = False  # stopped early: more requests had missed the SLO than `give_up_below` allows
    final_max_num_batched_tokens: int | None = None  # the token budget the run ended with (None: the engine's)

    def attainment_between(self, start: float, end: float, arrived: int) -> float:
        """Share of the `arrived` requests with arrival in [start, end) that met the SLO."""
        if arrived <= 0:
            return 1.0
        return sum(1 for t, _ in self.good_tokens if start <= t < end) / arrived

    def summary(self) -> dict[str, Any]:
        """The `--json` object."""
        return {k: getattr(self, k) for k in KEYS}


def _due(t: float, at: float) -> bool:
    return abs(t - at) < 1e-6


def _p95(values: list[float]) -> float | None:
    q = sim_cluster.quantile(values, 0.95)
    return None if q is None else round(q * 1000, 1)


def run_policy(ctx: sim_policies.Context, name: str, *, progress: Progress | None = None,
               knobs: models.Knobs | None = None, setting: float | None = None, replicas: int | None = None,
               give_up_below: float | None = None, label: str | None = None) -> Result:
    """One policy on a fresh cluster over the scenario's arrival stream (`knobs`, `setting`, `replicas`: see
    `policies.build`). With `give_up_below`, the run stops as soon as more requests have missed the SLO than
    that attainment allows (the result says `gave_up`; its numbers then cover only the time run)."""
    wall = time.perf_counter()
    s = ctx.scenario
    policy, start = sim_policies.build(name, ctx, knobs=knobs, setting=setting, replicas=replicas)
    allowed = None if give_up_below is None else (1.0 - give_up_below) * len(ctx.stream)
    missed = checked = 0
    gave_up = False
    cl = sim_cluster.Cluster(start.spec, cold_start=s.cold_start, arrivals=ctx.stream,
                             prefix_hit_rate=s.prefix_hit_rate, name=s.name, routing=s.routing, seed=s.seed)
    cl.seed(start.knobs, start.replicas)
    end = s.duration
    scrape, tick, interval = sim_cluster.SCRAPE_SECONDS, policy.tick, s.interval
    k_scrape = k_tick = k_record = 0
    series: list[Point] = []
    seen = 0
    most = start.replicas
    while True:
        next_scrape, next_tick, next_record = k_scrape * scrape, (k_tick + 1) * tick, (k_record + 1) * interval
        t = min(next_scrape, next_tick, next_record)
        if t > end + 1e-9:
            break
        cl.advance(t)
        if _due(t, next_scrape):
            cl.scrape(t)
            k_scrape += 1
        if _due(t, next_tick):
            obs = cl.observe(t, window=policy.window)
            cl.apply(policy.decide(obs, now=sim_cluster.when(t)), t)
            k_tick += 1
        most = max(most, cl.counts(t).serving)
        if _due(t, next_record):
            seen = _record(cl, series, t=t, interval=interval, seen=seen, arrived=ctx.arrived(t - interval, t))
            k_record += 1
            if progress is not None:
                progress(name, t, end)
            if allowed is not None:
                records = cl.fleet.records
                missed += sum(1 for r in records[checked:] if not sim_policies.within_slo(r, start.spec.slo))
                checked = len(records)
                if missed > allowed:
                    gave_up, end = True, t
                    break
    cl.advance(end)
    gpu_seconds = cl.gpu_seconds(end)
    gpu_seconds_by_minute = tuple(cl.gpu_seconds(min(end, m + 60.0), since=m) for m in range(0, math.ceil(end), 60))
    t = end
    # What is in flight finishes, unless the run gave up (it could only add misses).
    while not gave_up and (cl.in_flight() > 0 or cl.pending()) and t < end + TAIL_SECONDS:
        t += interval
        cl.advance(t)
    result = _result(ctx, label or name, cl=cl, series=series, gpu_seconds=gpu_seconds, most=most,
                     wall=time.perf_counter() - wall, by_minute=gpu_seconds_by_minute)
    return dataclasses.replace(result, gave_up=gave_up) if gave_up else result


def _record(cl: sim_cluster.Cluster, series: list[Point], *, t: float, interval: float, seen: int, arrived: int
            ) -> int:
    records = cl.fleet.records
    fresh = records[seen:]
    ttft = [r.ttft for r in fresh if r.status == sim_engine.FINISHED]
    itl = [r.itl for r in fresh if r.status == sim_engine.FINISHED and r.generated > 1]
    c = cl.counts(t)
    knobs = cl.serving_knobs(t)
    series.append(Point(
        t=t, serving=c.serving, standby=c.standby, starting=c.starting, pods=c.pods,
        max_batch_size=knobs.max_batch_size if knobs else None,
        kv_cache_dtype=knobs.kv_cache_dtype.value if knobs else None,
        ttft_p95_ms=_p95(ttft), itl_p95_ms=_p95(itl), arrival_rate=arrived / interval,
    ))
    return len(records)


def _result(ctx: sim_policies.Context, name: str, *, cl: sim_cluster.Cluster, series: list[Point],
            gpu_seconds: float, most: int, wall: float, by_minute: tuple[float, ...] = ()) -> Result:
    spec = cl.spec
    records = cl.fleet.records
    finished = [r for r in records if r.status == sim_engine.FINISHED]
    good = [r for r in finished if sim_policies.within_slo(r, spec.slo)]
    total = len(ctx.stream)
    tokens = sum(r.generated for r in finished)
    gpu_hours = gpu_seconds / 3600.0
    price = spec.accelerator.hourly_cost
    # 10 GPU-hours x $2.50 over 40 M output tokens = $0.63 per million.
    per_million = (gpu_hours * price / (tokens / 1e6)) if price is not None and tokens > 0 else None
    knobs = cl.serving_knobs(ctx.scenario.duration)
    return Result(
        policy=name,
        slo_attainment=round(len(good) / total, 4) if total else 1.0,
        ttft_p95_ms=_p95([r.ttft for r in finished]),
        itl_p95_ms=_p95([r.itl for r in finished if r.generated > 1]),
        gpu_hours=round(gpu_hours, 3),
        cost_per_million_output_tokens=None if per_million is None else round(per_million, 4),
        output_tokens=tokens,
        restarts=max(0, cl.rollouts - 1),
        dropped_requests=sum(1 for r in records if r.status in (sim_fleet.DROPPED, sim_engine.ABORTED)),
        final_max_batch_size=knobs.max_batch_size if knobs else None,
        final_kv_cache_dtype=knobs.kv_cache_dtype.value if knobs else None,
        final_max_num_batched_tokens=knobs.max_num_batched_tokens if knobs else None,
        max_replicas=most,
        requests=total,
        rejected_requests=sum(1 for r in records if r.status == sim_engine.REJECTED),
        unfinished_requests=total - len(records),
        goodput_tokens_per_gpu_s=round(sum(r.generated for r in good) / gpu_seconds, 2) if gpu_seconds > 0 else 0.0,
        knob_changes=tuple((t, k.max_batch_size, k.kv_cache_dtype.value) for t, k in cl.knob_changes),
        settled_at=round(cl.settled(ctx.scenario.duration), 1),
        good_tokens=tuple(sorted((r.arrival, r.generated) for r in good)),
        gpu_seconds_by_minute=by_minute,
        events=tuple((t, e.reason, e.message) for t, e in cl.events),
        series=tuple(series),
        wall_seconds=round(wall, 2),
    )


def goodput_since(result: Result, start: float) -> float:
    """Output tokens within the SLO per GPU-second, counting only requests that arrived from the first whole
    minute at or after `start` and the GPU-seconds of those minutes: a policy's steady state, without what a
    rollout before `start` cost (0 when no whole minute is left)."""
    first = math.ceil(start / 60.0 - 1e-9)
    gpu = sum(result.gpu_seconds_by_minute[first:])
    tokens = sum(n for t, n in result.good_tokens if t >= first * 60.0)
    return tokens / gpu if gpu > 0 else 0.0


# ---------------------------------------------------------------------------------------------- yardsticks

# The attainment a fixed fleet must hold to count (the benchmark's bar, the p95 objective's share).
GOAL = 0.95


def first_true(lo: int, hi: int, ok: Callable[[int], bool], *, guess: int) -> int | None:
    """The smallest i in [lo, hi] with ok(i), for ok false below some point and true from there on: probe at
    `guess`, step outward doubling the step until the answer is bracketed, then bisect. None when ok(hi) is false.
    Each i is probed at most once (a guess one off costs 2 probes; 1 to 64 from a guess of 1 costs 8)."""
    seen: dict[int, bool] = {}

    def test(i: int) -> bool:
        if i not in seen:
            seen[i] = ok(i)
        return seen[i]

    good: int | None
    g = min(hi, max(lo, guess))
    if test(g):
        good, bad, step = g, lo - 1, 1
        while good > lo:
            probe = max(lo, good - step)
            if not test(probe):
                bad = probe
                break
            good, step = probe, step * 2
    else:
        bad, good, step = g, None, 1
        while bad < hi:
            probe = min(hi, bad + step)
            if test(probe):
                good = probe
                break
            bad, step = probe, step * 2
        if good is None:
            return None
    while good - bad > 1:
        mid = (good + bad) // 2
        if test(mid):
            good = mid
        else:
            bad = mid
    return good


FleetRun = Callable[[models.Knobs, int], Result]


@dataclasses.dataclass(frozen=True, slots=True)
class Fleet:
    """A yardstick: the fixed fleet a search found, its run, and whether the count above it held too."""

    replicas: int
    result: Result
    holds: bool  # reached the goal (else: the largest count allowed, the best a fixed fleet gets)
    monotone: bool  # the count above also held (the search assumes more replicas never hurt)


def fixed_fleet(ctx: sim_policies.Context, name: str, *, run: FleetRun | None = None,
                tuned: models.Knobs | None = None) -> Fleet:
    """`static-right` (the cheapest fixed count at the engine's default knobs holding GOAL over the run),
    `static-right-tuned` (the same at `tuned`, the knobs infertune ends with) or `static-peak` (the smallest
    count at default knobs holding GOAL through the busiest minute), found in hindsight by `first_true`, the
    neighbours of the answer checked."""
    if name == "static-right-tuned" and tuned is None:
        raise ValueError("static-right-tuned needs infertune's final knobs")
    knobs = tuned if name == "static-right-tuned" and tuned is not None else ctx.knobs

    def default_run(k: models.Knobs, n: int) -> Result:
        return run_policy(ctx, "static", knobs=k, replicas=n, label=name)

    go = run or default_run
    top = ctx.spec.scaling.max_replicas
    if name == "static-peak":
        b = ctx.busiest_minute
        arrived = ctx.arrivals_between(b, b + 60.0)

        def ok(n: int) -> bool:
            return go(knobs, n).attainment_between(b, b + 60.0, arrived) >= GOAL

        guess = ctx.replicas_for(ctx.rate(b), knobs)
    elif name in ("static-right", "static-right-tuned"):

        def ok(n: int) -> bool:
            return go(knobs, n).slo_attainment >= GOAL

        guess = ctx.replicas_for(len(ctx.stream) / max(ctx.scenario.duration, 1.0), knobs)
    else:
        raise ValueError(f"unknown yardstick {name!r}; known: {', '.join(sim_policies.YARDSTICKS)}")
    n = first_true(1, top, ok, guess=guess)
    if n is None:
        return Fleet(top, dataclasses.replace(go(knobs, top), policy=name), False, True)
    monotone = n == top or ok(n + 1)
    return Fleet(n, dataclasses.replace(go(knobs, n), policy=name), True, monotone)


def final_knobs(result: Result) -> models.Knobs | None:
    """The knobs a run ended with."""
    if result.final_max_batch_size is None or result.final_kv_cache_dtype is None:
        return None
    return models.Knobs(max_batch_size=result.final_max_batch_size,
                        kv_cache_dtype=models.KvDtype(result.final_kv_cache_dtype),
                        max_num_batched_tokens=result.final_max_num_batched_tokens)


def run(scenario: sim_scenario.Scenario, names: Sequence[str] = sim_policies.DEFAULT, *,
        progress: Progress | None = None) -> list[Result]:
    """Every named policy on the same arrival stream (the scenario's seed), one after the other; the yardsticks
    by their searches (static-right-tuned runs infertune first for its final knobs)."""
    unknown = [n for n in names if n not in sim_policies.NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; known: {', '.join(sim_policies.NAMES)}")
    ctx = sim_policies.Context(scenario, sim_scenario.arrivals(scenario))
    done: dict[str, Result] = {}
    fleets: dict[tuple[models.Knobs, int], Result] = {}  # the searches share their runs

    def fleet(knobs: models.Knobs, n: int) -> Result:
        if (knobs, n) not in fleets:
            fleets[knobs, n] = run_policy(ctx, "static", knobs=knobs, replicas=n, progress=progress)
        return fleets[knobs, n]

    for n in names:
        if n in sim_policies.YARDSTICKS:
            tuned = None
            if n == "static-right-tuned":
                if "infertune" not in done:
                    done["infertune"] = run_policy(ctx, "infertune", progress=progress)
                tuned = final_knobs(done["infertune"]) or ctx.knobs
            done[n] = fixed_fleet(ctx, n, tuned=tuned, run=fleet).result
        elif n not in done:
            done[n] = run_policy(ctx, n, progress=progress)
    return [done[n] for n in names]


# ---------------------------------------------------------------------------------------------- output


def table(results: Sequence[Result]) -> str:
    """A fixed-width text table of the headline numbers."""
    head = (f"{'policy':<20} {'attain':>7} {'TTFT p95':>9} {'ITL p95':>8} {'GPU-h':>7} {'$/1M':>7} "
            f"{'restarts':>8} {'dropped':>7} {'batch':>6} {'KV':>7} {'budget':>7} {'max repl':>8}")
    lines = [head, "-" * len(head)]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in results:
        lines.append(
            f"{r.policy:<20} {r.slo_attainment:>7.3f} {num(r.ttft_p95_ms, '.0f'):>9} {num(r.itl_p95_ms, '.1f'):>8} "
            f"{r.gpu_hours:>7.2f} {num(r.cost_per_million_output_tokens, '.2f'):>7} {r.restarts:>8} "
            f"{r.dropped_requests:>7} {num(r.final_max_batch_size, 'd'):>6} {r.final_kv_cache_dtype or '-':>7} "
            f"{num(r.final_max_num_batched_tokens, 'd'):>7} {r.max_replicas:>8}")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str | Path, *, slo: models.SloSpec, title: str | None = None) -> Path:
    """Replicas, p95 TTFT, p95 ITL and max batch size over time, one line per policy, with the SLO lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, axes = pyplot.subplots(4, 1, figsize=(9, 9), sharex=True)
    replicas, ttft, itl, batch = axes
    for r in results:
        minutes = [p.t / 60 for p in r.series]
        (line,) = replicas.plot(minutes, [p.serving for p in r.series], label=r.policy, lw=1.2)
        if any(p.standby for p in r.series):
            replicas.plot(minutes, [p.standby for p in r.series], ls=":", color=line.get_color(), lw=1)
        ttft.plot(minutes, [math.nan if p.ttft_p95_ms is None else p.ttft_p95_ms for p in r.series], lw=1,
                  color=line.get_color())
        itl.plot(minutes, [math.nan if p.itl_p95_ms is None else p.itl_p95_ms for p in r.series], lw=1,
                 color=line.get_color())
        batch.step(minutes, [math.nan if p.max_batch_size is None else p.max_batch_size for p in r.series],
                   where="post", lw=1.2, color=line.get_color())
    replicas.set_ylabel("serving (dotted: standby)")
    replicas.legend(fontsize=7, ncol=4, loc="upper left")
    ttft.axhline(slo.ttft * 1000, color="red", ls="--", lw=1, label="SLO")
    ttft.set_yscale("log")
    ttft.set_ylabel("TTFT p95 (ms)")
    itl.axhline(slo.itl * 1000, color="red", ls="--", lw=1)
    itl.set_ylabel("ITL p95 (ms)")
    batch.set_yscale("log", base=2)
    batch.set_ylabel("max batch size")
    batch.set_xlabel("minutes")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72, format="png")
    pyplot.close(fig)
    # A 64-colour palette keeps a plot near 40 kB (RGBA: 120 kB), small enough to commit next to the docs.
    from PIL import Image

    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=64).save(out, format="png", optimize=True)
    return out
