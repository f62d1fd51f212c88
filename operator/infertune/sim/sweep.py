"""Twin: closed-loop concurrency sweeps (like genai-perf), max throughput (like trtllm-bench) and a frontier plot."""

from __future__ import annotations

import collections
import dataclasses
import math
import random
from collections.abc import Sequence
from pathlib import Path

from infertune import perfmodel
from infertune.sim import engine as sim_engine


@dataclasses.dataclass(frozen=True, slots=True)
class SweepPoint:
    """One closed-loop measurement; latencies in ms are per-request means (genai-perf's definitions)."""

    concurrency: int
    ttft_ms_mean: float
    ttft_ms_p95: float
    itl_ms_mean: float
    itl_ms_p95: float
    output_tokens_per_s: float
    requests_per_s: float
    mbu: float
    kv_usage: float  # share of KV blocks in use at the end of the window
    preemptions: int  # during the measurement window
    requests: int  # requests measured

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in 0..100."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def closed_loop(
    replica: perfmodel.Replica,
    *,
    concurrency: int,
    isl: int,
    osl: int,
    requests: int | None = None,
    warmup: int | None = None,
    duration: float | None = None,
    isl_cv: float = 0.0,
    stagger: bool = True,
    seed: int = 0,
) -> SweepPoint:
    """`concurrency` clients each send a request as soon as their previous one finishes.

    The first `warmup` completions (default: one per client) are not measured; then `requests` completions
    (default 2 x concurrency, at least 32), or all completions within `duration` simulated seconds, are.
    Throughput and MBU are taken from the engine's counters over the measured window.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if isl < 1 or osl < 1:
        raise ValueError(f"isl and osl must be at least 1, got isl={isl}, osl={osl}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if requests is None:
        requests = max(2 * concurrency, 32) if duration is None else 1 << 62
    warmup = concurrency if warmup is None else warmup
    rng = random.Random(seed)
    eng = sim_engine.SimEngine(replica, name="sweep")
    next_id = 0

    def new_request(now: float) -> sim_engine.Request:
        nonlocal next_id
        prompt = isl
        if isl_cv > 0:
            sigma = math.sqrt(math.log(1.0 + isl_cv * isl_cv))
            prompt = max(1, round(rng.lognormvariate(math.log(isl) - sigma * sigma / 2.0, sigma)))
        next_id += 1
        return sim_engine.Request(id=next_id, arrival=now, prompt_tokens=prompt, output_tokens=osl)

    # Clients start at random moments within one request cycle (from the analytic model), the spread that
    # jitter gives a real benchmark; started in lock-step, deterministic clients would stay bunched forever
    # and queue behind each other's prefills, and evenly spaced ones would never collide.
    starts: collections.deque[float] = collections.deque([0.0] * concurrency)
    if stagger and concurrency > 1:
        op = perfmodel.operating_point(replica, concurrency=concurrency, isl=isl, osl=osl)
        cycle = concurrency / op.requests_per_s
        starts = collections.deque(sorted(rng.uniform(0.0, cycle) for _ in range(concurrency)))
    done = 0
    measured: list[sim_engine.Request] = []
    t0 = 0.0
    tokens0 = 0
    bytes0 = 0.0
    preempt0 = 0
    end = math.inf
    while len(measured) < requests:
        t = eng.next_event_time()
        if starts and starts[0] <= t:
            ta = starts.popleft()
            eng.submit(new_request(ta), ta)
        elif math.isinf(t):
            break
        elif t > end:
            eng.advance(end)
            break
        else:
            eng.advance(t)
        for r in eng.pop_finished():
            if r.status == sim_engine.REJECTED:
                raise ValueError(f"the engine rejected a request: {r.reason}")
            done += 1
            if done == warmup:
                t0, tokens0, bytes0 = eng.now, eng.stats.generation_tokens, eng.stats.bytes_per_gpu
                preempt0 = eng.stats.preemptions
                if duration is not None:
                    end = t0 + duration
            elif done > warmup:
                measured.append(r)
            eng.submit(new_request(r.finished), r.finished)
    window = eng.now - t0
    ttft = [r.ttft * 1e3 for r in measured]
    itl = [r.itl * 1e3 for r in measured if r.generated > 1]
    tokens = eng.stats.generation_tokens - tokens0
    peak = replica.gpu.bandwidth_gbps * perfmodel.GB
    return SweepPoint(
        concurrency=concurrency,
        ttft_ms_mean=sum(ttft) / len(ttft) if ttft else math.nan,
        ttft_ms_p95=_percentile(ttft, 95),
        itl_ms_mean=sum(itl) / len(itl) if itl else math.nan,
        itl_ms_p95=_percentile(itl, 95),
        output_tokens_per_s=tokens / window if window > 0 else math.nan,
        requests_per_s=len(measured) / window if window > 0 else math.nan,
        mbu=min(1.0, (eng.stats.bytes_per_gpu - bytes0) / (window * peak)) if window > 0 else math.nan,
        kv_usage=eng.kv_usage,
        preemptions=eng.stats.preemptions - preempt0,
        requests=len(measured),
    )


def sweep(
    replica: perfmodel.Replica,
    *,
    isl: int,
    osl: int,
    concurrencies: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
    requests: int | None = None,
    duration: float | None = None,
    seed: int = 0,
) -> list[SweepPoint]:
    """A closed-loop point per concurrency, like `genai-perf profile --concurrency N` at fixed isl/osl."""
    if not concurrencies:
        raise ValueError("concurrencies must not be empty")
    return [
        closed_loop(replica, concurrency=n, isl=isl, osl=osl, requests=requests, duration=duration, seed=seed + i)
        for i, n in enumerate(concurrencies)
    ]


def max_throughput(replica: perfmodel.Replica, *, isl: int, osl: int, seed: int = 0) -> float:
    """Output tokens/s at an infinite request rate (like trtllm-bench): the batch is always as full as
    max_num_seqs and the KV cache allow, with a queue behind it."""
    cap = perfmodel.operating_point(replica, concurrency=replica.seq_limit, isl=isl, osl=osl).batch
    concurrency = min(int(cap * 1.25) + 2, 4 * replica.seq_limit)
    point = closed_loop(
        replica, concurrency=concurrency, isl=isl, osl=osl, warmup=concurrency,
        requests=max(concurrency, 64), seed=seed,
    )
    return point.output_tokens_per_s


def plot_frontier(
    points: Sequence[SweepPoint],
    path: str | Path,
    *,
    slo_ttft_ms: float | None = None,
    slo_itl_ms: float | None = None,
    title: str | None = None,
) -> Path:
    """Two panels: throughput against mean/p95 ITL (the frontier), and TTFT against concurrency."""
    if not points:
        raise ValueError("no sweep points to plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    thr = [p.output_tokens_per_s for p in points]
    left.plot([p.itl_ms_mean for p in points], thr, "o-", label="ITL mean")
    left.plot([p.itl_ms_p95 for p in points], thr, "s--", alpha=0.6, label="ITL p95")
    for p in points:
        left.annotate(str(p.concurrency), (p.itl_ms_mean, p.output_tokens_per_s), fontsize=7,
                      textcoords="offset points", xytext=(3, 3))
    if slo_itl_ms is not None:
        left.axvline(slo_itl_ms, color="red", linestyle=":", label=f"ITL SLO {slo_itl_ms:g} ms")
    left.set_xlabel("inter-token latency (ms)")
    left.set_ylabel("output tokens/s")
    left.set_title("latency-throughput frontier")
    left.legend(fontsize=8)
    conc = [p.concurrency for p in points]
    right.plot(conc, [p.ttft_ms_mean for p in points], "o-", label="TTFT mean")
    right.plot(conc, [p.ttft_ms_p95 for p in points], "s--", alpha=0.6, label="TTFT p95")
    if slo_ttft_ms is not None:
        right.axhline(slo_ttft_ms, color="red", linestyle=":", label=f"TTFT SLO {slo_ttft_ms:g} ms")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("concurrency")
    right.set_ylabel("time to first token (ms)")
    right.set_title("queueing")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    pyplot.close(fig)
    return out
