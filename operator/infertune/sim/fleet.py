"""Twin: N engine replicas behind a router (least outstanding or random), in simulated time, with interval stats."""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Iterable, Iterator

from infertune import models, perfmodel
from infertune.sim import engine as sim_engine
from infertune.sim import histogram, workload

DROPPED = "dropped"  # arrived while no replica was serving


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalStats:
    """One interval of a fleet run; latencies in seconds (NaN when nothing was observed)."""

    start: float
    end: float
    replicas: int  # serving at the end
    arrivals: int
    finished: int
    dropped: int  # aborted with their pod, or arrived with no replica serving
    ttft_mean: float
    ttft_p95: float  # over first tokens in the interval
    itl_mean: float
    itl_p95: float  # over every output token in the interval
    output_tokens_per_s: float
    requests_per_s: float
    kv_usage: float  # mean over serving replicas at the end
    mbu: float  # mean over replicas that ran during the interval
    running: int
    waiting: int
    preemptions: int


@dataclasses.dataclass(slots=True)
class _Snapshot:
    generation_tokens: int
    bytes_per_gpu: float
    preemptions: int
    ttft: histogram.LogHistogram
    itl: histogram.LogHistogram


@dataclasses.dataclass(slots=True, eq=False)
class Member:
    """One replica of the fleet."""

    name: str
    engine: sim_engine.SimEngine
    added: float
    serving: bool = True
    draining: bool = False
    removed: float = math.nan
    version: int = 0
    since: _Snapshot | None = None


def _snapshot(e: sim_engine.SimEngine) -> _Snapshot:
    s = e.stats
    return _Snapshot(s.generation_tokens, s.bytes_per_gpu, s.preemptions, s.ttft.copy(), s.itl.copy())


class Fleet:
    """Replicas behind a router. Add and remove replicas at any simulated time; a removed replica either
    drains (takes no new requests and leaves once its in-flight requests finish) or is aborted (its
    requests end as aborted and count as dropped)."""

    def __init__(self, *, start: float = 0.0, routing: models.Routing = models.Routing.LEAST_OUTSTANDING,
                 seed: int = 0) -> None:
        self.now = start
        self.routing = routing
        self._rng = random.Random(seed)
        self.members: dict[str, Member] = {}
        self.records: list[sim_engine.Request] = []  # every request that left the fleet
        self._heap: list[tuple[float, int, str]] = []
        self._next_id = 0
        self._rr = 0
        self._retired: list[Member] = []  # removed since the last interval
        self._interval_start = start
        self._arrivals = 0
        self._finished = 0
        self._dropped = 0
        self._feed: Iterator[workload.Arrival] | None = None
        self._pending: workload.Arrival | None = None

    # ------------------------------------------------------------------ membership

    def add_replica(self, replica: perfmodel.Replica, *, now: float, name: str | None = None) -> str:
        """A serving replica from `now` on (cold starts and readiness are the caller's business)."""
        self.advance(now)
        name = name or f"replica-{len(self.members) + len(self._retired)}"
        if name in self.members:
            raise ValueError(f"replica {name!r} already exists")
        eng = sim_engine.SimEngine(replica, name=name, start=now)
        member = Member(name, eng, now)
        member.since = _snapshot(eng)
        self.members[name] = member
        return name

    def remove_replica(self, name: str, *, now: float, drain: bool = True) -> list[sim_engine.Request]:
        """Stop routing to a replica. drain=True lets its requests finish first; drain=False aborts them
        (returned, and counted as dropped)."""
        self.advance(now)
        member = self.members.get(name)
        if member is None:
            raise KeyError(f"unknown replica {name!r}; known: {', '.join(sorted(self.members)) or 'none'}")
        member.serving = False
        if drain:
            member.draining = True
            self._collect(member)
            self._maybe_retire(member, now)
            return []
        aborted = member.engine.abort_all(now)
        self._collect(member)
        self._retire(member, now)
        return aborted

    def serving(self) -> list[Member]:
        return [m for m in self.members.values() if m.serving]

    # ------------------------------------------------------------------ requests

    def submit(self, arrival: workload.Arrival, now: float | None = None) -> sim_engine.Request:
        """Route one request at `now` (default: its arrival time) to the serving replica with the fewest
        outstanding requests (ties rotate), or under `routing="random"` to one drawn at random."""
        t = arrival.time if now is None else now
        self.advance(t)
        self._next_id += 1
        req = sim_engine.Request(
            id=self._next_id, arrival=t, prompt_tokens=arrival.prompt_tokens, output_tokens=arrival.output_tokens
        )
        self._arrivals += 1
        candidates = [m for m in self.members.values() if m.serving]
        if not candidates:
            req.status = DROPPED
            req.state = sim_engine.DONE
            req.finished = t
            self._dropped += 1
            self.records.append(req)
            return req
        n = len(candidates)
        # The Service's traffic as a least-outstanding gateway sends it, or as a plain Kubernetes Service's
        # kube-proxy does in its default iptables mode: a ready endpoint at random per connection (here one
        # connection per request).
        if self.routing == models.Routing.RANDOM:
            best = candidates[self._rng.randrange(n)]
        else:
            start = self._rr % n
            self._rr += 1
            best = candidates[start]
            best_load = best.engine.outstanding
            for k in range(1, n):
                m = candidates[(start + k) % n]
                load = m.engine.outstanding
                if load < best_load:
                    best, best_load = m, load
        best.engine.submit(req, t)
        self._collect(best)
        self._schedule(best)
        return req

    def feed(self, arrivals: Iterable[workload.Arrival]) -> None:
        """Arrivals (in time order) that `run_until` submits as simulated time reaches them."""
        self._feed = iter(arrivals)
        self._pending = next(self._feed, None)

    def run_until(self, until: float) -> None:
        """Submit the fed arrivals up to `until`, and advance every replica to it."""
        while self._pending is not None and self._pending.time < until:
            self.submit(self._pending)
            assert self._feed is not None
            self._pending = next(self._feed, None)
        self.advance(until)

    # ------------------------------------------------------------------ time

    def advance(self, until: float) -> None:
        """Process every replica event up to `until` (replicas stop at their own events, not at `until`)."""
        heap = self._heap
        for m in self.members.values():
            if m.version == 0:
                self._schedule(m)
        while heap and heap[0][0] <= until:
            _, version, name = heapq.heappop(heap)
            found = self.members.get(name)
            if found is None or found.version != version:
                continue
            m = found
            t = m.engine.next_event_time()
            m.engine.advance(t)
            self._collect(m)
            if m.draining:
                self._maybe_retire(m, t)
                if name not in self.members:
                    continue
            self._schedule(m)
        self.now = max(self.now, until)

    def settle(self, now: float) -> None:
        """Advance to `now` and bring every replica's committed state to it (steps that started before
        `now` are done), so that counters and gauges read as of `now`."""
        self.advance(now)
        for m in list(self.members.values()):
            m.engine.advance(now)
            self._collect(m)
            if m.draining:
                self._maybe_retire(m, now)
                if m.name not in self.members:
                    continue
            self._schedule(m)

    def _schedule(self, m: Member) -> None:
        m.version += 1
        t = m.engine.next_event_time()
        if not math.isinf(t):
            heapq.heappush(self._heap, (t, m.version, m.name))

    def _collect(self, m: Member) -> None:
        for r in m.engine.pop_finished():
            self.records.append(r)
            if r.status == sim_engine.FINISHED:
                self._finished += 1
            elif r.status == sim_engine.ABORTED:
                self._dropped += 1

    def _maybe_retire(self, m: Member, now: float) -> None:
        if m.engine.outstanding == 0:
            self._retire(m, now)

    def _retire(self, m: Member, now: float) -> None:
        m.removed = now
        m.serving = False
        m.version += 1
        del self.members[m.name]
        self._retired.append(m)

    # ------------------------------------------------------------------ statistics

    def interval(self, now: float) -> IntervalStats:
        """Statistics since the previous call (or the start); settles every replica at `now` first."""
        self.settle(now)
        start, self._interval_start = self._interval_start, now
        span = now - start
        ttft = histogram.LogHistogram()
        itl = histogram.LogHistogram()
        tokens = 0
        preemptions = 0
        mbus: list[float] = []
        for m in [*self.members.values(), *self._retired]:
            e = m.engine
            s = e.stats
            since = m.since
            assert since is not None
            tokens += s.generation_tokens - since.generation_tokens
            preemptions += s.preemptions - since.preemptions
            ttft.merge(s.ttft.minus(since.ttft))
            itl.merge(s.itl.minus(since.itl))
            lived = min(now, m.removed if not math.isnan(m.removed) else now) - max(start, m.added)
            if lived > 0:
                peak = e.replica.gpu.bandwidth_gbps * perfmodel.GB
                mbus.append(min(1.0, (s.bytes_per_gpu - since.bytes_per_gpu) / (lived * peak)))
            m.since = _snapshot(e)
        self._retired.clear()
        serving = [m for m in self.members.values() if m.serving]
        stats = IntervalStats(
            start=start,
            end=now,
            replicas=len(serving),
            arrivals=self._arrivals,
            finished=self._finished,
            dropped=self._dropped,
            ttft_mean=ttft.mean(),
            ttft_p95=ttft.quantile(0.95),
            itl_mean=itl.mean(),
            itl_p95=itl.quantile(0.95),
            output_tokens_per_s=tokens / span if span > 0 else math.nan,
            requests_per_s=self._finished / span if span > 0 else math.nan,
            kv_usage=sum(m.engine.kv_usage for m in serving) / len(serving) if serving else math.nan,
            mbu=sum(mbus) / len(mbus) if mbus else math.nan,
            running=sum(m.engine.num_running for m in self.members.values()),
            waiting=sum(m.engine.num_waiting for m in self.members.values()),
            preemptions=preemptions,
        )
        self._arrivals = self._finished = self._dropped = 0
        return stats


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    records: list[sim_engine.Request]
    intervals: list[IntervalStats]


def simulate(
    replica: perfmodel.Replica,
    arrivals: Iterable[workload.Arrival],
    *,
    replicas: int,
    duration: float,
    interval: float = 15.0,
) -> RunResult:
    """A fixed fleet of `replicas` identical replicas serving `arrivals` for `duration` simulated seconds."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if not duration > 0:
        raise ValueError(f"duration must be positive seconds, got {duration}")
    if not interval > 0:
        raise ValueError(f"interval must be positive seconds, got {interval}")
    fleet = Fleet()
    for _ in range(replicas):
        fleet.add_replica(replica, now=0.0)
    fleet.feed(arrivals)
    intervals: list[IntervalStats] = []
    t = 0.0
    while t < duration:
        t = min(t + interval, duration)
        fleet.run_until(t)
        intervals.append(fleet.interval(t))
    return RunResult(fleet.records, intervals)
