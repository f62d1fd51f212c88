"""Twin: scaling policies for `infertune simulate` — infertune's decide(), static, an oracle, and the peers' algorithms.

Every policy answers `decide(obs, now=...) -> Decision` on the same fake cluster. The peers see only what they
would really read (their metric from the per-pod signals, pod readiness), keep their own small state, run the
engine's default knobs (or the knobs they are given) with infertune's floor plus its standby floor as
minReplicas and no standby pool, and act through `rollout.plan` like the operator does. Each peer's rules, its
tunable and the source of every constant are in docs/peers.md.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime
import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from infertune import bisection, catalog, decide, models, observation, perfmodel, render, replica, rollout
from infertune.runtimes import registry
from infertune.sim import cluster as sim_cluster
from infertune.sim import engine as sim_engine
from infertune.sim import fleet as sim_fleet
from infertune.sim import scenario as sim_scenario
from infertune.sim import sweep, workload

PEERS = ("hpa", "kpa", "dynamo", "wva", "llmd", "dynamo-sla")
# The yardsticks are searches over fixed fleets (sim/simulate.py runs them); "static" is one fixed fleet.
YARDSTICKS = ("static-right", "static-right-tuned", "static-peak")
NAMES = ("infertune", "infertune-nostandby", "static", *YARDSTICKS, "oracle", *PEERS)
DEFAULT = ("infertune", *YARDSTICKS, "oracle", *PEERS)


class Policy(Protocol):
    """Decides the cluster's revisions and pod labels every `tick` seconds from metrics over `window` seconds."""

    name: str
    tick: float
    window: float

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """What a policy runs on: the spec the cluster carries, and the deployment when the scenario starts."""

    spec: models.InferenceDeploymentSpec
    knobs: models.Knobs
    replicas: int


# ---------------------------------------------------------------------------------------------- sizing on the twin

# Capacity runs: Poisson arrivals on a pool of replicas behind the router, about 3,000 scored requests (at
# least 3, at most 10 minutes), the first minute not scored. A pool, not one replica: least-outstanding
# routing evens out bursts, as it does for the real fleet.
CAPACITY_REQUESTS = 3000
CAPACITY_SECONDS = (180.0, 600.0)
CAPACITY_POOL = 4
CAPACITY_WARMUP = 60.0
CAPACITY_DRAIN = 180.0
# The Poisson capacity lies below the closed-loop throughput X at the load-tested concurrency (queueing needs
# headroom): bisect over [0.3 X, 1.2 X] in 6 steps, a resolution of 0.9 X / 64 = 1.4% of X.
CAPACITY_BRACKET = (0.3, 1.2)
CAPACITY_STEPS = 6
# Closed-loop (load-test) points measure this many requests per client, at least SWEEP_MIN and at most SWEEP_MAX:
# a p95 from the sweep's default 32 requests is the second-largest value, and the knee it gave moved by a fifth
# from one batch size to the next (Llama 8B on L40S: 39 from 32 requests, 31 to 33 from 240 to 1,200; Qwen 72B
# with long prompts passed at 10 and failed at 9).
SWEEP_PER_CLIENT = 30
SWEEP_MIN = 240
SWEEP_MAX = 4000
# Demand is the arrival rate over this sliding window (a one-minute rate, as dashboards show it).
RATE_WINDOW = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """The scenario's request shape: means for closed-loop load tests, and pairs to resample for open-loop ones."""

    isl: int
    osl: int
    isl_cv: float
    pairs: tuple[tuple[int, int], ...]


def shape_of(stream: Sequence[workload.Arrival], *, seed: int = 0) -> Shape:
    """Means, the prompt's coefficient of variation and up to 4,096 (prompt, output) pairs of a stream."""
    if not stream:
        return Shape(1000, 200, 0.0, ((1000, 200),))
    n = len(stream)
    isl = sum(a.prompt_tokens for a in stream) / n
    osl = sum(a.output_tokens for a in stream) / n
    var = sum((a.prompt_tokens - isl) ** 2 for a in stream) / n
    rng = random.Random(seed)
    picks = stream if n <= 4096 else rng.sample(list(stream), 4096)
    return Shape(max(1, round(isl)), max(2, round(osl)), math.sqrt(var) / isl if isl > 0 else 0.0,
                 tuple((a.prompt_tokens, a.output_tokens) for a in picks))


class Context:
    """One scenario's spec, arrival stream and the sizing every policy derives from the twin (cached)."""

    def __init__(self, scenario: sim_scenario.Scenario, stream: Sequence[workload.Arrival]) -> None:
        self.scenario = scenario
        self.spec = sim_scenario.to_spec(scenario)
        self.knobs = sim_scenario.initial_knobs(scenario, self.spec)
        self.stream = stream
        self.shape = shape_of(stream, seed=scenario.seed)
        # Arrivals per second of simulated time, for one-minute rates by prefix sums.
        seconds = max(1, math.ceil(scenario.duration)) + 1
        counts = [0] * seconds
        for a in stream:
            counts[min(seconds - 1, int(a.time))] += 1
        self._prefix = [0]
        for c in counts:
            self._prefix.append(self._prefix[-1] + c)
        self._times = [a.time for a in stream]
        self._capacity: dict[models.Knobs, float] = {}
        self._load_test: dict[models.Knobs, int] = {}
        self._closed: dict[tuple[models.Knobs, int], sweep.SweepPoint] = {}

    # --- demand (perfect foresight; only the oracle and the starting size use it) -----------------

    def rate(self, t: float) -> float:
        """Arrivals in [t, t + 60 s) per second."""
        n = len(self._prefix) - 1
        lo = min(n, max(0, int(t)))
        hi = min(n, max(0, int(t + RATE_WINDOW)))
        return (self._prefix[hi] - self._prefix[lo]) / RATE_WINDOW

    def arrived(self, start: float, end: float) -> int:
        """Arrivals in (start, end]."""
        return bisect.bisect_right(self._times, end) - bisect.bisect_right(self._times, start)

    def peak(self, start: float, end: float) -> float:
        """The highest one-minute rate starting within [start, end]."""
        best = 0.0
        t = max(0.0, start)
        while t <= end:
            best = max(best, self.rate(t))
            t += 5.0
        return best

    @functools.cached_property
    def busiest_minute(self) -> float:
        """The start (whole seconds) of the one-minute window with the most arrivals: what a user sizing a
        fixed fleet for its peak load tests against."""
        last = max(0, len(self._prefix) - 1 - int(RATE_WINDOW))
        return float(max(range(last + 1), key=lambda t: (self.rate(float(t)), -t)))

    def arrivals_between(self, start: float, end: float) -> int:
        """Arrivals in [start, end)."""
        return bisect.bisect_left(self._times, end) - bisect.bisect_left(self._times, start)

    def replicas_for(self, demand: float, knobs: models.Knobs) -> int:
        """Serving replicas for `demand` requests/s at these knobs' capacity, within the scaling bounds."""
        s = self.spec.scaling
        # 24 req/s at 5.9 req/s per replica: ceil(4.07) = 5 replicas.
        need = math.ceil(demand / max(self.capacity(knobs), 1e-9) - 1e-9)
        return min(s.max_replicas, max(s.min_replicas, need))

    def start_replicas(self, knobs: models.Knobs) -> int:
        """`initial.replicas`, else enough for the demand of the first cold start (the deployment was sized
        for the load when the scenario starts)."""
        if self.scenario.initial.replicas is not None:
            return self.scenario.initial.replicas
        return self.replicas_for(self.peak(0.0, self.scenario.cold_start), knobs)

    # --- the twin as a load tester -----------------------------------------------------------------

    def replica(self, knobs: models.Knobs) -> perfmodel.Replica:
        return replica.of(self.spec, knobs, prefix_cache_hit_rate=self.scenario.prefix_hit_rate)

    def closed(self, knobs: models.Knobs, concurrency: int) -> sweep.SweepPoint:
        """A closed-loop run (genai-perf style) of one replica at `concurrency`, with the scenario's lengths."""
        key = (knobs, concurrency)
        if key not in self._closed:
            replica = self.replica(knobs)
            shape = self.shape
            requests = min(SWEEP_MAX, max(SWEEP_MIN, SWEEP_PER_CLIENT * concurrency))
            try:
                p = sweep.closed_loop(replica, concurrency=concurrency, isl=shape.isl, osl=shape.osl,
                                      isl_cv=shape.isl_cv, seed=self.scenario.seed, requests=requests)
            except ValueError:  # a drawn prompt longer than the KV cache: mean-length prompts instead
                p = sweep.closed_loop(replica, concurrency=concurrency, isl=shape.isl, osl=shape.osl,
                                      seed=self.scenario.seed, requests=requests)
            self._closed[key] = p
        return self._closed[key]

    def meets_slo_closed(self, knobs: models.Knobs, concurrency: int) -> bool:
        """A closed-loop run at `concurrency` whose p95 TTFT and p95 per-request ITL meet the SLO."""
        p = self.closed(knobs, concurrency)
        slo = self.spec.slo
        return p.ttft_ms_p95 <= slo.ttft * 1000 and p.itl_ms_p95 <= slo.itl * 1000

    def load_test(self, knobs: models.Knobs) -> int:
        """The largest closed-loop concurrency that meets the SLO at these knobs (a genai-perf sweep by
        bisection); 1 when even one client misses it."""
        if knobs not in self._load_test:
            top = max(1, min(knobs.max_batch_size, 4 * self._kv_limit(knobs)))
            self._load_test[knobs] = bisection.largest(1, top, lambda c: self.meets_slo_closed(knobs, c))
        return self._load_test[knobs]

    def _kv_limit(self, knobs: models.Knobs) -> int:
        c = perfmodel.coefficients(self.replica(knobs))
        per = self.shape.isl + self.shape.osl / 2 + c.block_size / 2
        return max(1, int(c.kv_blocks * c.block_size / per))

    def attainment_at(self, knobs: models.Knobs, rate: float) -> float:
        """Share of requests within both objectives for a pool of replicas under Poisson `rate` requests/s
        per replica."""
        rng = random.Random(self.scenario.seed)
        rate *= CAPACITY_POOL
        low, high = CAPACITY_SECONDS
        end = CAPACITY_WARMUP + min(high, max(low, CAPACITY_REQUESTS / rate))
        pairs = self.shape.pairs
        arrivals = []
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            prompt, output = pairs[rng.randrange(len(pairs))]
            arrivals.append(workload.Arrival(t, prompt, output))
        scored = [a for a in arrivals if a.time >= CAPACITY_WARMUP]
        if not scored:
            return 1.0
        # Arrivals stop at `end`; the pool runs on so the last requests are judged on their latency, not cut off.
        drain = end + CAPACITY_DRAIN
        result = sim_fleet.simulate(self.replica(knobs), arrivals, replicas=CAPACITY_POOL, duration=drain,
                                    interval=drain)
        slo = self.spec.slo
        ok = sum(1 for r in result.records if r.arrival >= CAPACITY_WARMUP and within_slo(r, slo))
        return ok / len(scored)

    def capacity(self, knobs: models.Knobs) -> float:
        """Requests/s per replica that a pool serves under Poisson arrivals of the scenario's requests with the
        SLO's share of them within both objectives (bisection on the twin; 0 when the SLO is out of reach)."""
        if knobs not in self._capacity:
            c = self.load_test(knobs)
            x = self.closed(knobs, c).requests_per_s if self.meets_slo_closed(knobs, c) else 0.0
            goal = self.spec.slo.percentile / 100.0
            lo, hi = x * CAPACITY_BRACKET[0], x * CAPACITY_BRACKET[1]
            if x <= 0 or self.attainment_at(knobs, hi) >= goal:
                self._capacity[knobs] = hi
                return hi
            if self.attainment_at(knobs, lo) < goal:
                lo, hi = 0.0, lo
            for _ in range(CAPACITY_STEPS):
                mid = (lo + hi) / 2
                if self.attainment_at(knobs, mid) >= goal:
                    lo = mid
                else:
                    hi = mid
            self._capacity[knobs] = lo
        return self._capacity[knobs]

    def _fits_at_batch(self, kv: models.KvDtype, batch: int) -> bool:
        return self.meets_slo_closed(models.Knobs(max_batch_size=batch, kv_cache_dtype=kv), batch)

    @functools.cached_property
    def oracle_knobs(self) -> models.Knobs:
        """The best fixed knobs: per KV dtype the policy allows, the largest max batch size whose closed-loop
        run at that concurrency meets the SLO (p95 TTFT and per-request ITL); then the dtype with the higher
        closed-loop throughput there."""
        spec = self.spec
        bounds = spec.tuning.max_batch_size
        policy = spec.tuning.kv_cache_dtype
        fp8 = catalog.resolve_gpu(spec.accelerator).supports_fp8 and registry.for_engine(spec.engine).fp8_kv
        dtypes = [models.KvDtype.DEFAULT, models.KvDtype.FP8] if fp8 else [models.KvDtype.DEFAULT]
        if policy is models.KvCachePolicy.DEFAULT:
            dtypes = [models.KvDtype.DEFAULT]
        elif policy is models.KvCachePolicy.FP8:
            dtypes = [models.KvDtype.FP8]
        best: tuple[float, models.Knobs] | None = None
        for kv in dtypes:
            # Past a few times what the KV cache holds, a closed loop only queues: no need to try 1,024.
            top = max(bounds.min, min(bounds.max, 4 * self._kv_limit(models.Knobs(max_batch_size=bounds.max,
                                                                                   kv_cache_dtype=kv))))
            batch = bisection.largest(bounds.min, top, functools.partial(self._fits_at_batch, kv))
            knobs = models.Knobs(max_batch_size=batch, kv_cache_dtype=kv)
            rps = self.closed(knobs, batch).requests_per_s if self.meets_slo_closed(knobs, batch) else 0.0
            if best is None or rps > best[0] * 1.0001:
                best = (rps, knobs)
        assert best is not None
        return best[1]


def within_slo(r: sim_engine.Request, slo: models.SloSpec) -> bool:
    """Finished, first token within the TTFT objective, and mean ITL within the ITL objective."""
    if r.status != sim_engine.FINISHED:
        return False
    return r.ttft <= slo.ttft and (r.generated < 2 or r.itl <= slo.itl)


# ---------------------------------------------------------------------------------------------- acting


def act(obs: observation.Observation, *, knobs: models.Knobs, serving: int, now: datetime.datetime,
        standby: int = 0) -> observation.Decision:
    """Drive the cluster to `serving` Ready pods of these knobs through the operator's own rollout planner."""
    spec = obs.spec
    in_flight = {name: m.in_flight for name, m in obs.metrics.pods.items()} if obs.metrics else {}
    p = rollout.plan(target=render.revision(spec, knobs), knobs=knobs, serving=serving, standby=standby,
                     revisions=obs.revisions, pods=obs.pods, in_flight=in_flight,
                     drain_timeout=spec.scaling.drain_timeout, now=now)
    ready = sum(1 for x in obs.pods if x.ready and not x.deleting)
    status = obs.status.model_copy(update={"replicas": models.ReplicaStatus(
        desired=serving, desired_standby=standby, serving=p.serving, standby=p.standby, ready=ready,
        display=f"{p.serving}/{serving}")})
    return observation.Decision(revisions=p.revisions, pod_patches=p.patches, status=status)


def _serving(obs: observation.Observation) -> list[observation.PodFacts]:
    return [p for p in obs.pods if p.ready and p.serving and not p.deleting]


def _bounded(spec: models.InferenceDeploymentSpec, n: int) -> int:
    return min(spec.scaling.max_replicas, max(spec.scaling.min_replicas, n))


def _stabilized(history: collections.deque[tuple[float, int]], t: float, target: int, current: int,
                window: float) -> int:
    """An HPA's scale-down stabilisation over recommendations `history` (updated here): a lower target waits for
    the highest recommendation of the last `window` seconds; a higher one applies at once."""
    history.append((t, target))
    while history and history[0][0] < t - window:
        history.popleft()
    return min(current, max(r for _, r in history)) if target < current else target


def _metrics(obs: observation.Observation, pods: Sequence[observation.PodFacts]) -> list[observation.PodMetrics]:
    have = obs.metrics.pods if obs.metrics else {}
    return [have[p.name] for p in pods if p.name in have]


# ------------------------------------------------------------------------------------- infertune, static, oracle


@dataclasses.dataclass
class Infertune:
    """The operator's decide(), exactly as the kopf shell calls it."""

    tick: float
    window: float
    name: str = "infertune"

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        return decide.decide(obs, now=now)


@dataclasses.dataclass
class Static:
    """Fixed knobs, fixed serving replicas, no standby."""

    knobs: models.Knobs
    replicas: int
    tick: float
    window: float
    name: str = "static"

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        return act(obs, knobs=self.knobs, serving=self.replicas, now=now)


@dataclasses.dataclass
class Oracle:
    """The best fixed knobs and perfect foresight: at t it runs the replicas the next cold start plus one
    interval will need (the highest one-minute arrival rate then, at the knobs' Poisson capacity)."""

    context: Context
    knobs: models.Knobs
    tick: float
    window: float
    name: str = "oracle"

    def wanted(self, t: float) -> int:
        lead = self.context.scenario.cold_start + self.tick
        return self.context.replicas_for(self.context.peak(t, t + lead), self.knobs)

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        t = now.timestamp() - sim_cluster.EPOCH
        return act(obs, knobs=self.knobs, serving=self.wanted(t), now=now)


# ---------------------------------------------------------------------------------------------- peers


@dataclasses.dataclass
class Hpa:
    """Kubernetes HPA fed by KEDA's Prometheus scaler on sum(vllm:num_requests_running + num_requests_waiting),
    AverageValue target: requests in the engine, queued ones included, as vLLM deployments scale HPA (running
    alone saturates at the max batch size, so a capped batch never looks busier than the cap).

    Every 15 s (--horizontal-pod-autoscaler-sync-period): ratio = total / (target x current); inside the 0.1
    tolerance nothing changes, else desired = ceil(total / target). Scale-down takes the highest recommendation
    of the last 300 s (stabilizationWindowSeconds); scale-up is limited to max(+100%, +4 pods) per 15 s and
    scale-down to -100% per 15 s (the default behavior policies).
    """

    knobs: models.Knobs
    target: float
    current: int
    tick: float = 15.0
    window: float = 15.0
    tolerance: float = 0.1
    stabilization: float = 300.0
    name: str = "hpa"
    history: collections.deque[tuple[float, int]] = dataclasses.field(default_factory=collections.deque)

    def recommend(self, total: float) -> int:
        # 44 running on 4 pods at target 10: ratio 1.1, inside the tolerance; 48: ceil(48 / 10) = 5 pods.
        ratio = total / (self.target * max(self.current, 1))
        if abs(ratio - 1.0) <= self.tolerance:
            return self.current
        return math.ceil(total / self.target - 1e-9)

    def step(self, total: float, t: float, spec: models.InferenceDeploymentSpec) -> int:
        rec = _bounded(spec, self.recommend(total))
        self.history.append((t, rec))
        while self.history and self.history[0][0] < t - self.stabilization:
            self.history.popleft()
        desired = rec
        if rec < self.current:
            desired = min(self.current, max(r for _, r in self.history))
        up_limit = max(2 * self.current, self.current + 4)
        self.current = _bounded(spec, min(desired, up_limit))
        return self.current

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        total = sum((m.running or 0.0) + (m.waiting or 0.0) for m in _metrics(obs, [p for p in obs.pods if p.ready]))
        n = self.step(total, now.timestamp(), obs.spec)
        return act(obs, knobs=self.knobs, serving=n, now=now)


@dataclasses.dataclass
class Kpa:
    """Knative's KPA on concurrency (requests in flight per pod, queued ones included).

    Every 2 s tick: stable = mean total concurrency over 60 s, panic = over 6 s; desired = ceil(stable /
    (target x 0.7)), clamped to [ready / 2, ready x 1000] (max-scale-down-rate 2, max-scale-up-rate 1000).
    Panic starts when ceil(panic / (target x 0.7)) / ready >= 2.0 (panic-threshold-percentage 200); while
    panicking it scales to the larger of the two and never down, and it ends after a stable window calm.
    """

    knobs: models.Knobs
    target: float  # container-concurrency-target
    current: int
    utilization: float = 0.7
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    tick: float = 2.0
    window: float = 2.0
    name: str = "kpa"
    samples: collections.deque[tuple[float, float]] = dataclasses.field(default_factory=collections.deque)
    panic_since: float | None = None
    max_panic_pods: int = 0

    def step(self, concurrency: float, ready: int, t: float, spec: models.InferenceDeploymentSpec) -> int:
        self.samples.append((t, concurrency))
        while self.samples and self.samples[0][0] <= t - self.stable_window:
            self.samples.popleft()
        stable = sum(c for _, c in self.samples) / len(self.samples)
        recent = [c for s, c in self.samples if s > t - self.panic_window]
        panic = sum(recent) / len(recent)
        ready = max(ready, 1)
        # 14 in flight / (10 x 0.7) = 2 pods; a panic window averaging 56 wants 8, 4x the 2 ready: panic.
        per_pod = self.target * self.utilization
        dspc = math.ceil(stable / per_pod - 1e-9)
        dppc = math.ceil(panic / per_pod - 1e-9)
        up, down = math.ceil(self.max_scale_up_rate * ready), math.floor(ready / self.max_scale_down_rate)
        stable_pods = min(max(dspc, down), up)
        panic_pods = min(max(dppc, down), up)
        over = dppc / ready >= self.panic_threshold
        if over:
            self.panic_since = t
        elif self.panic_since is not None and t - self.panic_since >= self.stable_window:
            self.panic_since, self.max_panic_pods = None, 0
        desired = stable_pods
        if self.panic_since is not None:
            desired = max(desired, panic_pods)
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            else:
                desired = self.max_panic_pods
        self.current = _bounded(spec, desired)
        return self.current

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        total = sum((m.running or 0.0) + (m.waiting or 0.0) for m in _metrics(obs, obs.pods))
        n = self.step(total, len(_serving(obs)), now.timestamp(), obs.spec)
        return act(obs, knobs=self.knobs, serving=n, now=now)


class _Regression:
    """Dynamo's sliding-window least squares y = a + b x, inverted at the SLA (load_based_regression.py)."""

    def __init__(self, window: int = 50, minimum: int = 5) -> None:
        self.points: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self.minimum = minimum

    def add(self, x: float, y: float) -> None:
        self.points.append((x, y))

    def x_at(self, y_target: float) -> float | None:
        """The largest load x whose predicted latency meets y_target; the fallback when the slope is not positive."""
        pts = self.points
        if len(pts) < self.minimum:
            return None
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else 0.0
        if slope <= 0:
            below = [x for x, y in pts if y < y_target]
            return max(0.0, min(below) if below else min(x for x, _ in pts))
        return max(0.0, (y_target - (my - slope * mx)) / slope)


@dataclasses.dataclass
class Dynamo:
    """NVIDIA Dynamo Planner, load-based scaling in aggregated mode (agg_planner.py).

    Every 5 s: per worker, learn TTFT against (active prefill tokens + ISL) and ITL against active KV blocks by
    sliding-window regression (50 points, 5 before acting), invert both at the SLA, and compare the workers'
    load: scale up by one if ALL workers exceed either target, down by one if ALL are below both targets x
    (N-1)/N x 0.8 (loadbased-scaling-down-sensitivity 80). One change at a time: nothing while a worker starts.
    """

    knobs: models.Knobs
    kv_blocks: int
    current: int
    tick: float = 5.0
    window: float = 5.0
    sensitivity: float = 0.8
    sla_factor: float = 1.0  # the planner's --ttft/--itl as a share of the SLO (the user's tunable)
    name: str = "dynamo"
    ttft: _Regression = dataclasses.field(default_factory=_Regression)
    itl: _Regression = dataclasses.field(default_factory=_Regression)

    def loads(self, m: observation.PodMetrics) -> tuple[float, float, float]:
        """(active prefill tokens, ISL, active decode blocks) of one worker, from what its engine exports."""
        isl = m.mean_input_tokens or 0.0
        return (m.waiting or 0.0) * isl, isl, (m.kv_usage or 0.0) * self.kv_blocks

    def step(self, workers: list[observation.PodMetrics], starting: bool, spec: models.InferenceDeploymentSpec
             ) -> int:
        for m in workers:
            prefill, isl, blocks = self.loads(m)
            if m.ttft_mean and isl > 0:
                self.ttft.add(prefill + isl, m.ttft_mean * 1000)
            if m.itl_mean and blocks > 0:
                self.itl.add(blocks, m.itl_mean * 1000)
        n = len(workers)
        if starting or n == 0 or n != self.current:
            return self.current  # a change is still in progress (the planner's blocking set_component_replicas)
        loads = [self.loads(m) for m in workers]
        # Two workers: one must carry both loads after a scale-down, so each must be below 1/2 x 0.8 = 0.4 of target.
        factor = (n - 1) / n * self.sensitivity
        p_up = p_down = d_up = d_down = False
        x_ttft = self.ttft.x_at(spec.slo.ttft * 1000 * self.sla_factor)
        if x_ttft is not None:
            avg_isl = sum(isl for _, isl, _ in loads) / n
            target = x_ttft - avg_isl
            if target > 0:
                p_up = all(p > target for p, _, _ in loads)
                p_down = n > 1 and all(p < target * factor for p, _, _ in loads)
        x_itl = self.itl.x_at(spec.slo.itl * 1000 * self.sla_factor)
        if x_itl is not None and x_itl > 0:
            d_up = all(b > x_itl for _, _, b in loads)
            d_down = n > 1 and all(b < x_itl * factor for _, _, b in loads)
        if p_up or d_up:
            self.current = _bounded(spec, n + 1)
        elif p_down and d_down:
            self.current = _bounded(spec, n - 1)
        return self.current

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        serving = _serving(obs)
        starting = any(not p.ready and not p.deleting for p in obs.pods)
        n = self.step(_metrics(obs, serving), starting, obs.spec)
        return act(obs, knobs=self.knobs, serving=n, now=now)


@dataclasses.dataclass
class Wva:
    """llm-d Workload Variant Autoscaler, saturation analyzer (docs/saturation-analyzer.md), actuated by an HPA.

    A replica is saturated at KV usage >= 0.8 or >= 5 waiting requests (1-minute peaks). Every 60 s: scale up by
    one when the non-saturated replicas' average spare KV < 0.1 or spare queue < 3 (or none is non-saturated);
    scale down by one when spreading their load over one fewer keeps both spares above the triggers (at least 2
    non-saturated); while a replica is pending the desired count stands. The HPA it feeds keeps scale-down
    recommendations for 120 s (the stabilization window its README asks for).
    """

    knobs: models.Knobs
    current: int
    kv_threshold: float = 0.8
    queue_threshold: float = 5.0
    kv_spare: float = 0.1
    queue_spare: float = 3.0
    every: float = 60.0
    stabilization: float = 120.0
    tick: float = 5.0
    window: float = 5.0
    name: str = "wva"
    peaks: dict[str, collections.deque[tuple[float, float, float]]] = dataclasses.field(default_factory=dict)
    last: float | None = None
    history: collections.deque[tuple[float, int]] = dataclasses.field(default_factory=collections.deque)

    def analyze(self, replicas: list[tuple[float, float]]) -> int:
        """The capacity target from (KV peak, queue peak) per ready replica: ready + 1, ready - 1 or ready."""
        ready = len(replicas)
        calm = [(kv, q) for kv, q in replicas if kv < self.kv_threshold and q < self.queue_threshold]
        if not calm:
            return ready + 1
        n = len(calm)
        spare_kv = sum(self.kv_threshold - kv for kv, _ in calm) / n
        spare_q = sum(self.queue_threshold - q for _, q in calm) / n
        if spare_kv < self.kv_spare or spare_q < self.queue_spare:
            return ready + 1
        if n >= 2:
            # Three replicas at KV 0.2 spread over two: 0.3 each, spare 0.5 >= 0.1 (and the queue's): -1.
            kv_after = sum(kv for kv, _ in calm) / (n - 1)
            q_after = sum(q for _, q in calm) / (n - 1)
            if self.kv_threshold - kv_after >= self.kv_spare and self.queue_threshold - q_after >= self.queue_spare:
                return ready - 1
        return ready

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        t = now.timestamp()
        have = obs.metrics.pods if obs.metrics else {}
        for name, m in have.items():
            q = self.peaks.setdefault(name, collections.deque())
            q.append((t, m.kv_usage or 0.0, m.waiting or 0.0))
            while q and q[0][0] <= t - 60.0:
                q.popleft()
        for name in [n for n in self.peaks if n not in have]:
            del self.peaks[name]
        if self.last is None or t - self.last >= self.every:
            self.last = t
            serving = _serving(obs)
            replicas = [(max(k for _, k, _ in self.peaks[p.name]), max(w for _, _, w in self.peaks[p.name]))
                        for p in serving if p.name in self.peaks]
            pending = any(not p.ready and not p.deleting for p in obs.pods)
            # While a replica is pending the desired count stands (no cascade of scale-ups, and the pod that
            # is loading is not taken back).
            target = self.current if pending or not replicas else _bounded(obs.spec, self.analyze(replicas))
            self.current = _stabilized(self.history, t, target, self.current, self.stabilization)
        return act(obs, knobs=self.knobs, serving=self.current, now=now)


# ------------------------------------------------------------------------ llm-d: saturation V2 + queueing model

# The queueing-model analyzer's tuner (llm-d workload-variant-autoscaler, queueingmodel/tuner/defaults.go).
EKF_PERCENT_CHANGE = 0.05  # DefaultPercentChange: state noise sd = 5 % of each parameter per cycle
EKF_ERROR_LEVEL = 0.05  # DefaultErrorLevel: a measured latency is within +-5 % of its mean ...
EKF_T_PERCENTILE = 1.96  # ... at 95 % confidence (DefaultTPercentile): sd = 0.05 / 1.96 = 2.6 % of the value
EKF_MAX_NIS = 7.378  # DefaultMaxNIS: chi-squared (2 dof) at 95 %; a larger innovation is rejected
EKF_STATE_BOUNDS = (0.01, 100.0)  # DefaultMinStateFactor, DefaultMaxStateFactor (times the initial state)
EKF_STEP = 0.01  # DefaultStepSize: relative step of the numerical Jacobian
EKF_DEFAULT_STATE = (5.0, 0.05, 0.00005)  # DefaultAlpha (ms), DefaultBeta, DefaultGamma (ms per token)
EKF_BASE_FACTOR = 0.9  # BaseFactor: alpha ~ 0.9 x the ITL at light load (bootstrap)
EKF_TRANSIENT = 120.0  # TransientDelaySeconds: no tuning within 2 minutes of a scale-up


@dataclasses.dataclass(frozen=True, slots=True)
class QueueLoad:
    """Per-replica arrival rate (requests/s) and mean prompt and output lengths (tokens)."""

    rate: float
    isl: float
    osl: float


def queue_latency(x: Sequence[float], load: QueueLoad) -> tuple[float, float] | None:
    """Mean TTFT and ITL (ms) of the queueing model (slo-queuemodel.md §9): T_iter = alpha / (1 - rho),
    rho = lambda (beta (i + o) + gamma (o + 1)(i + o / 2)); TTFT = T_iter + (beta + gamma) i, ITL = T_iter + beta
    + gamma (i + (o + 1) / 2). None when rho >= 1 (unstable).

    alpha 10 ms, beta 0.05, gamma 0.0001 ms/token, 1,000/200 tokens at 5 req/s: rho = 0.005 x (60 + 22.1) = 0.41,
    T_iter = 17 ms, TTFT = 17 + 50.1 = 67 ms, ITL = 17 + 0.05 + 0.11 = 17.1 ms."""
    alpha, beta, gamma = x
    i, o = load.isl, load.osl
    rho = load.rate / 1000.0 * (beta * (i + o) + gamma * (o + 1) * (i + o / 2))
    if rho >= 1.0:
        return None
    t_iter = alpha / (1.0 - rho)
    return t_iter + (beta + gamma) * i, t_iter + beta + gamma * (i + (o + 1) / 2)


def queue_capacity(x: Sequence[float], load: QueueLoad, *, ttft_ms: float, itl_ms: float, max_batch: int) -> float:
    """The largest per-replica arrival rate (requests/s) whose predicted TTFT and ITL meet the targets and whose
    mean concurrency (Little: lambda (o + 1) T_iter) fits the max batch, by bisection (QueueAnalyzer.Size); 0
    when even an idle replica misses them."""
    alpha, beta, gamma = x
    i, o = load.isl, load.osl
    per_request = beta * (i + o) + gamma * (o + 1) * (i + o / 2)
    if per_request <= 0:
        return 0.0

    def ok(rate: float) -> bool:
        lat = queue_latency(x, QueueLoad(rate, i, o))
        if lat is None:
            return False
        concurrency = rate / 1000.0 * (o + 1) * alpha / (1.0 - rate / 1000.0 * per_request)
        return lat[0] <= ttft_ms and lat[1] <= itl_ms and concurrency <= max_batch

    lo, hi = 0.0, 1000.0 / per_request  # rho = 1 at hi
    if not ok(lo):
        return 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _solve2(s: list[list[float]]) -> list[list[float]] | None:
    det = s[0][0] * s[1][1] - s[0][1] * s[1][0]
    if abs(det) < 1e-300:
        return None
    return [[s[1][1] / det, -s[0][1] / det], [-s[1][0] / det, s[0][0] / det]]


class Ekf:
    """The queueing-model analyzer's tuner: an extended Kalman filter over (alpha, beta, gamma), observing mean
    (TTFT, ITL) in ms through `queue_latency` (tuner.go). Identity transition with state noise (5 % of each
    parameter)^2, observation noise (2.6 % of each expected value)^2, a numerical Jacobian, updates whose
    normalised innovation squared reaches 7.378 rejected, the state clipped to [0.01 x, 100 x] the initial one."""

    def __init__(self, x0: Sequence[float]) -> None:
        self.x = [float(v) for v in x0]
        self.p = [[(EKF_PERCENT_CHANGE * self.x[i]) ** 2 if i == j else 0.0 for j in range(3)] for i in range(3)]
        self.low = [v * EKF_STATE_BOUNDS[0] for v in self.x]
        self.high = [v * EKF_STATE_BOUNDS[1] for v in self.x]

    @staticmethod
    def bootstrap(ttft_ms: float, itl_ms: float, isl: float, osl: float) -> tuple[float, float, float]:
        """The initial state from light-load observations (§9.5), else the published defaults.

        ITL 20 ms, TTFT 70 ms, 1,000/200 tokens: alpha 18, beta + gamma = 0.052, gamma = (2 - 0.052) / 1,099.5
        = 0.00177, beta = 0.0502."""
        alpha = EKF_BASE_FACTOR * itl_ms
        both = (ttft_ms - alpha) / isl if isl > 0 else -1.0
        span = isl + (osl + 1) / 2 - 1
        gamma = ((itl_ms - alpha) - both) / span if span > 0 else -1.0
        beta = both - gamma
        if min(alpha, beta, gamma) <= 0:
            return EKF_DEFAULT_STATE
        return alpha, beta, gamma

    def update(self, z: tuple[float, float], load: QueueLoad, *, expected: tuple[float, float]) -> bool:
        """One predict-update cycle on observed mean (TTFT, ITL) `z`, the observation noise sized on the `expected`
        values (the SLO targets, as the analyzer configures its tuner); False (state unchanged) when the model is
        unstable here or the NIS gate rejects the observation."""
        x = self.x
        p = [[self.p[i][j] + ((EKF_PERCENT_CHANGE * x[i]) ** 2 if i == j else 0.0) for j in range(3)]
             for i in range(3)]
        h = queue_latency(x, load)
        if h is None:
            return False
        jac = [[0.0] * 3 for _ in range(2)]
        for j in range(3):
            step = EKF_STEP * x[j]
            moved = list(x)
            moved[j] += step
            h2 = queue_latency(moved, load)
            if h2 is None:
                return False
            for i in range(2):
                jac[i][j] = (h2[i] - h[i]) / step
        noise = [((EKF_ERROR_LEVEL / EKF_T_PERCENTILE) * expected[i]) ** 2 for i in range(2)]
        ph = [[sum(p[i][k] * jac[j][k] for k in range(3)) for j in range(2)] for i in range(3)]  # P H^T, 3x2
        s = [[sum(jac[i][k] * ph[k][j] for k in range(3)) + (noise[i] if i == j else 0.0) for j in range(2)]
             for i in range(2)]
        inv = _solve2(s)
        if inv is None:
            return False
        y = [z[0] - h[0], z[1] - h[1]]
        nis = sum(y[i] * inv[i][j] * y[j] for i in range(2) for j in range(2))
        if nis >= EKF_MAX_NIS:
            return False
        gain = [[sum(ph[i][k] * inv[k][j] for k in range(2)) for j in range(2)] for i in range(3)]
        self.x = [min(self.high[i], max(self.low[i], x[i] + gain[i][0] * y[0] + gain[i][1] * y[1]))
                  for i in range(3)]
        kh = [[sum(gain[i][k] * jac[k][j] for k in range(2)) for j in range(3)] for i in range(3)]
        self.p = [[p[i][j] - sum(kh[i][k] * p[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class Vote:
    """One analyzer's result: capacity per replica, demand, and the supply with and without pending replicas."""

    per_replica: float
    demand: float
    supply: float
    anticipated: float


@dataclasses.dataclass
class Llmd:
    """llm-d's autoscaler with the saturation (V2, token-based) and queueing-model analyzers voting together.

    Every 30 s: each analyzer gives a per-replica capacity and a demand; the engine's post-step turns them into
    required capacity RC = max(0, demand / 0.85 - anticipated supply) and spare capacity SC = max(0, supply -
    demand / 0.70). Scale up when ANY analyzer has RC > 0, by the largest ceil(RC / capacity per replica); scale
    down only when ALL have SC > 0, by the smallest floor(SC / capacity per replica). An HPA actuates it with a
    120 s scale-down stabilisation window. Rules and sources: docs/peers.md.
    """

    knobs: models.Knobs
    kv_tokens: int
    token_budget: int
    current: int
    scale_up: float = 0.85  # scaleUpThreshold (the user's tunable)
    kv_threshold: float = 0.8  # kvCacheThreshold
    queue_threshold: float = 5.0  # queueLengthThreshold
    tick: float = 30.0
    window: float = 30.0
    stabilization: float = 120.0
    name: str = "llmd"
    k2: collections.deque[float] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=10))
    ekf: Ekf | None = None
    history: collections.deque[tuple[float, int]] = dataclasses.field(default_factory=collections.deque)

    @property
    def scale_down(self) -> float:
        # scaleDownBoundary 0.70 beside scaleUpThreshold 0.85: swept together, the boundary keeps that ratio.
        return self.scale_up * 0.70 / 0.85

    def saturation(self, pods: list[observation.PodMetrics]) -> tuple[float, float] | None:
        """(per-replica token capacity, token demand): demand = tokens in use + queued x mean prompt; capacity
        = min(k1 = KV tokens x 0.8, k2 = the tokens in use when the queue reached 5, else their rolling average
        of 10, else min(B O / (I + O), S) x (I + O / 2) from the engine's arguments), the median over replicas."""
        if not pods or self.kv_tokens <= 0:
            return None
        effective, demand = [], 0.0
        k1 = self.kv_tokens * self.kv_threshold
        for m in pods:
            used = (m.kv_usage or 0.0) * self.kv_tokens
            isl, osl = m.mean_input_tokens or 0.0, m.mean_output_tokens or 0.0
            demand += used + (m.waiting or 0.0) * isl
            if (m.waiting or 0.0) >= self.queue_threshold and used > 0:
                self.k2.append(used)
                k2 = used
            elif self.k2:
                k2 = sum(self.k2) / len(self.k2)
            elif osl > 0:
                # 8,192-token budget, 256 seqs, 1,000/200 tokens: min(1,365, 256) x 1,100 = 281,600 tokens.
                k2 = min(self.token_budget * osl / (isl + osl), self.knobs.max_batch_size) * (isl + osl / 2)
            else:
                k2 = k1
            effective.append(min(k1, k2))
        return statistics_median(effective), demand

    def queueing(self, pods: list[observation.PodMetrics], spec: models.InferenceDeploymentSpec, *,
                 tune: bool) -> tuple[float, float] | None:
        """(per-replica request rate at the SLO targets, total arrival rate) from the learned parameters."""
        busy = [m for m in pods if (m.requests_per_s or 0.0) > 0 and m.ttft_mean and m.itl_mean
                and m.mean_input_tokens and m.mean_output_tokens]
        if not busy:
            return None
        total = sum(m.requests_per_s or 0.0 for m in busy)

        def avg(field: str) -> float:
            return sum((m.requests_per_s or 0.0) * float(getattr(m, field) or 0.0) for m in busy) / total

        load = QueueLoad(total / len(busy), avg("mean_input_tokens"), avg("mean_output_tokens"))
        z = (avg("ttft_mean") * 1000, avg("itl_mean") * 1000)
        if self.ekf is None:
            self.ekf = Ekf(Ekf.bootstrap(z[0], z[1], load.isl, load.osl))
        elif tune:
            self.ekf.update(z, load, expected=(spec.slo.ttft * 1000, spec.slo.itl * 1000))
        per = queue_capacity(self.ekf.x, load, ttft_ms=spec.slo.ttft * 1000, itl_ms=spec.slo.itl * 1000,
                             max_batch=self.knobs.max_batch_size)
        return per, total

    def combine(self, votes: list[Vote]) -> int:
        """The change in replicas: + the largest need when any analyzer needs capacity, - the smallest spare
        when all have spare, else 0."""
        live = [v for v in votes if v.per_replica > 0]
        if not live:
            return 0
        # Demand 900 over anticipated supply 800 at 0.85: RC = 1,059 - 800 = 259, per replica 200: +2.
        need = [max(0.0, v.demand / self.scale_up - v.anticipated) for v in live]
        if any(rc > 0 for rc in need):
            return max(math.ceil(rc / v.per_replica - 1e-9) for rc, v in zip(need, live, strict=True))
        spare = [max(0.0, v.supply - v.demand / self.scale_down) for v in live]
        if all(sc > 0 for sc in spare):
            return -min(math.floor(sc / v.per_replica + 1e-9) for sc, v in zip(spare, live, strict=True))
        return 0

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        t = now.timestamp()
        serving = _serving(obs)
        pods = _metrics(obs, serving)
        pending = sum(1 for p in obs.pods if not p.ready and not p.deleting)
        recent = any(p.ready_since is not None and t - p.ready_since < EKF_TRANSIENT for p in serving)
        votes = []
        for result in (self.saturation(pods), self.queueing(pods, obs.spec, tune=not recent)):
            if result is not None:
                per, demand = result
                votes.append(Vote(per, demand, len(serving) * per, (len(serving) + pending) * per))
        target = _bounded(obs.spec, self.current + self.combine(votes)) if votes else self.current
        self.current = _stabilized(self.history, t, target, self.current, self.stabilization)
        return act(obs, knobs=self.knobs, serving=self.current, now=now)


def statistics_median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


# ----------------------------------------------------------------------- Dynamo SLA planner (throughput + load)

# Dynamo planner defaults (components/src/dynamo/planner/defaults.py).
SLA_INTERVAL = 180.0  # adjustment_interval
KALMAN_Q = (1.0, 0.1)  # kalman_q_level, kalman_q_trend
KALMAN_R = 10.0  # kalman_r
KALMAN_MIN_POINTS = 5  # kalman_min_points: the constant predictor until then
PROFILE_POINTS = 6  # the profiler's decode interpolation granularity


class KalmanPredictor:
    """Dynamo's "kalman" load predictor: a local linear trend (level, trend) filter; next = level + trend. Before
    `KALMAN_MIN_POINTS` observations it predicts the last value (the constant predictor)."""

    def __init__(self) -> None:
        self.level = 0.0
        self.trend = 0.0
        self.p = [[1e6, 0.0], [0.0, 1e6]]
        self.seen: list[float] = []

    def add(self, y: float) -> None:
        if not self.seen:
            self.level = y
        else:
            # Predict with F = [[1, 1], [0, 1]], then update on the level.
            level, trend = self.level + self.trend, self.trend
            p = self.p
            pp = [[p[0][0] + p[0][1] + p[1][0] + p[1][1] + KALMAN_Q[0], p[0][1] + p[1][1]],
                  [p[1][0] + p[1][1], p[1][1] + KALMAN_Q[1]]]
            s = pp[0][0] + KALMAN_R
            k0, k1 = pp[0][0] / s, pp[1][0] / s
            r = y - level
            self.level, self.trend = level + k0 * r, trend + k1 * r
            self.p = [[(1 - k0) * pp[0][0], (1 - k0) * pp[0][1]], [pp[1][0] - k1 * pp[0][0], pp[1][1] - k1 * pp[0][1]]]
        self.seen.append(y)

    def predict(self) -> float:
        if not self.seen:
            return 0.0
        if len(self.seen) < KALMAN_MIN_POINTS:
            return self.seen[-1]
        return max(0.0, self.level + self.trend)


@dataclasses.dataclass(frozen=True, slots=True)
class ProfilePoint:
    """One point of the pre-deployment profile of a replica: mean latencies (ms) and throughputs at a load."""

    ttft_ms: float
    itl_ms: float
    output_tokens_per_s: float
    input_tokens_per_s: float


def _best_throughput(points: Sequence[ProfilePoint], *, latency: Callable[[ProfilePoint], float],
                     rate: Callable[[ProfilePoint], float], target: float) -> float:
    """The highest throughput whose latency meets `target`, linear between profiled points (the interpolator's
    find_best_throughput_per_gpu); the lightest point's throughput when none meets it."""
    ordered = sorted(points, key=rate)
    best = rate(ordered[0]) if ordered else 0.0
    for a, b in itertools.pairwise(ordered):
        if latency(a) <= target < latency(b):
            share = (target - latency(a)) / (latency(b) - latency(a))
            best = max(best, rate(a) + share * (rate(b) - rate(a)))
    best = max([best] + [rate(p) for p in ordered if latency(p) <= target])
    return best


def _latency_at(points: Sequence[ProfilePoint], *, latency: Callable[[ProfilePoint], float],
                rate: Callable[[ProfilePoint], float], load: float) -> float | None:
    """The profiled latency at a throughput, linear between points, clamped at the ends (expected_ttft/_itl)."""
    ordered = sorted(points, key=rate)
    if not ordered:
        return None
    if load <= rate(ordered[0]):
        return latency(ordered[0])
    for a, b in itertools.pairwise(ordered):
        if rate(a) <= load <= rate(b) and rate(b) > rate(a):
            return latency(a) + (load - rate(a)) / (rate(b) - rate(a)) * (latency(b) - latency(a))
    return latency(ordered[-1])


@dataclasses.dataclass
class DynamoSla:
    """NVIDIA Dynamo SLA planner with both loops: the throughput loop every 180 s (Kalman load predictor, the
    replica's profile at the SLA, correction factors) sets a floor; the load loop (the `dynamo` peer, +-1 every
    5 s) adjusts above it."""

    knobs: models.Knobs
    load: Dynamo
    profile: tuple[ProfilePoint, ...]
    sla_factor: float = 1.0
    tick: float = 5.0
    window: float = 5.0
    interval: float = SLA_INTERVAL
    name: str = "dynamo-sla"
    floor: int = 1
    started: float | None = None
    requests: KalmanPredictor = dataclasses.field(default_factory=KalmanPredictor)
    isl: KalmanPredictor = dataclasses.field(default_factory=KalmanPredictor)
    osl: KalmanPredictor = dataclasses.field(default_factory=KalmanPredictor)
    # Sums over the current interval: requests, rate-weighted TTFT, ITL, ISL, OSL, and the rate's weight.
    sums: list[float] = dataclasses.field(default_factory=lambda: [0.0] * 6)

    def observe(self, pods: list[observation.PodMetrics]) -> None:
        for m in pods:
            r = m.requests_per_s or 0.0
            if r <= 0:
                continue
            s = self.sums
            s[0] += r * self.tick
            s[1] += r * (m.ttft_mean or 0.0) * 1000
            s[2] += r * (m.itl_mean or 0.0) * 1000
            s[3] += r * (m.mean_input_tokens or 0.0)
            s[4] += r * (m.mean_output_tokens or 0.0)
            s[5] += r

    def plan(self, spec: models.InferenceDeploymentSpec, replicas: int) -> int:
        """The throughput loop's replica count for the next interval (planner_core; prefill and decode formulas,
        the larger of the two since one aggregated engine does both)."""
        s = self.sums
        if s[5] <= 0:
            return self.floor
        ttft, itl, isl, osl = s[1] / s[5], s[2] / s[5], s[3] / s[5], s[4] / s[5]
        per = max(replicas, 1)
        out_rate = s[0] * osl / self.interval / per
        in_rate = s[0] * isl / self.interval / per
        expected_itl = _latency_at(self.profile, latency=lambda p: p.itl_ms,
                                   rate=lambda p: p.output_tokens_per_s, load=out_rate)
        expected_ttft = _latency_at(self.profile, latency=lambda p: p.ttft_ms,
                                    rate=lambda p: p.input_tokens_per_s, load=in_rate)
        decode_correction = itl / expected_itl if expected_itl else 1.0
        prefill_correction = ttft / expected_ttft if expected_ttft else 1.0
        self.requests.add(s[0])
        self.isl.add(isl)
        self.osl.add(osl)
        self.sums = [0.0] * 6
        n, i, o = self.requests.predict(), self.isl.predict(), self.osl.predict()
        # Decode: corrected ITL target, e.g. 40 ms / 1.25 = 32 ms -> 1,800 tok/s per replica; 540 requests x 200
        # tokens / 180 s = 600 tok/s -> 1 replica.
        target_itl = spec.slo.itl * 1000 * self.sla_factor / max(decode_correction, 1e-9)
        decode_tps = _best_throughput(self.profile, latency=lambda p: p.itl_ms,
                                      rate=lambda p: p.output_tokens_per_s, target=target_itl)
        prefill_tps = _best_throughput(self.profile, latency=lambda p: p.ttft_ms,
                                       rate=lambda p: p.input_tokens_per_s,
                                       target=spec.slo.ttft * 1000 * self.sla_factor)
        decode = math.ceil(n * o / self.interval / decode_tps - 1e-9) if decode_tps > 0 else replicas
        prefill_load = n * i / self.interval * min(1.0, prefill_correction)
        prefill = math.ceil(prefill_load / prefill_tps - 1e-9) if prefill_tps > 0 else replicas
        return _bounded(spec, max(decode, prefill))

    def decide(self, obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
        t = now.timestamp()
        serving = _serving(obs)
        pods = _metrics(obs, serving)
        self.observe(pods)
        if self.started is None:
            self.started = t
        elif t - self.started >= self.interval - 1e-6:
            self.started = t
            self.floor = self.plan(obs.spec, len(serving))
            self.load.current = max(self.load.current, self.floor)
        starting = any(not p.ready and not p.deleting for p in obs.pods)
        self.load.step(pods, starting, obs.spec)
        self.load.current = _bounded(obs.spec, max(self.load.current, self.floor))
        return act(obs, knobs=self.knobs, serving=self.load.current, now=now)


# ---------------------------------------------------------------------------------------------- building


@dataclasses.dataclass(frozen=True, slots=True)
class Tunable:
    """A peer's user-chosen number: what it is, the grid a user would sweep (ascending; a larger value always
    means fewer replicas), and the value the peer runs at unless told otherwise."""

    label: str
    grid: tuple[float, ...]
    default: float

    def describe(self, value: float) -> str:
        return f"{self.label} {value:.3g}"


# Multiples of the load-tested concurrency for the HPA and KPA targets; shares of the SLO for the planners'
# targets; saturation levels for WVA's thresholds; utilisation thresholds for llm-d's post-step.
TARGET_MULTIPLES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SLA_SHARES = (0.4, 0.55, 0.7, 0.85, 1.0, 1.25)
KV_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
UTILISATIONS = (0.5, 0.6, 0.7, 0.85, 0.95, 1.0)


def tunable(name: str, ctx: Context, knobs: models.Knobs) -> Tunable:
    """The swept setting of a peer at these knobs."""
    if name in ("hpa", "kpa"):
        c = ctx.scenario.peers.concurrency_target or float(ctx.load_test(knobs))
        what = "target (running + waiting per pod)" if name == "hpa" else "container-concurrency-target"
        return Tunable(what, tuple(round(c * m, 3) for m in TARGET_MULTIPLES), c)
    if name in ("dynamo", "dynamo-sla"):
        return Tunable("SLA targets x", SLA_SHARES, 1.0)
    if name == "wva":
        return Tunable("kvCacheThreshold", KV_THRESHOLDS, 0.8)
    if name == "llmd":
        return Tunable("scaleUpThreshold", UTILISATIONS, 0.85)
    raise ValueError(f"{name!r} has no tunable; peers: {', '.join(PEERS)}")


def peer_spec(spec: models.InferenceDeploymentSpec) -> models.InferenceDeploymentSpec:
    """The scaling bounds a peer runs with: infertune's floor plus its standby floor as minReplicas (a peer has
    no standby pool, so the headroom the scenario grants infertune becomes serving replicas)."""
    s = spec.scaling
    floor = min(s.max_replicas, s.min_replicas + s.standby.min)
    return spec.model_copy(update={"scaling": s.model_copy(update={
        "min_replicas": floor, "standby": models.StandbySpec(min=0, max=0)})})


def profile(ctx: Context, knobs: models.Knobs) -> tuple[ProfilePoint, ...]:
    """Dynamo's pre-deployment profile of one replica, measured on the twin: closed-loop runs at 6 concurrencies
    from 1 to the load-tested one x 2 (mean latencies and throughputs at the scenario's request shape)."""
    top = max(2, 2 * ctx.load_test(knobs))
    levels = sorted({max(1, round(top ** (k / (PROFILE_POINTS - 1)))) for k in range(PROFILE_POINTS)})
    points = []
    for c in levels:
        p = ctx.closed(knobs, c)
        points.append(ProfilePoint(p.ttft_ms_mean, p.itl_ms_mean, p.output_tokens_per_s,
                                   p.requests_per_s * ctx.shape.isl))
    return tuple(points)


def build(name: str, ctx: Context, *, knobs: models.Knobs | None = None, setting: float | None = None,
          replicas: int | None = None) -> tuple[Policy, Start]:
    """A fresh policy (with its own state) and what the cluster starts with, by policy name. `knobs` runs a
    static fleet or a peer at other knobs than the engine's defaults, `setting` a peer at another value of its
    tunable, `replicas` a static fleet at that count."""
    s = ctx.scenario
    spec = ctx.spec
    knobs = knobs or ctx.knobs
    tick, window = s.interval, s.window
    if name in ("infertune", "infertune-nostandby"):
        if name == "infertune-nostandby":
            spec = spec.model_copy(update={"scaling": spec.scaling.model_copy(
                update={"standby": models.StandbySpec(min=0, max=0)})})
        return Infertune(tick, window, name=name), Start(spec, ctx.knobs, ctx.start_replicas(ctx.knobs))
    if name == "static":
        n = replicas or s.initial.replicas or ctx.replicas_for(ctx.peak(0.0, s.duration), knobs)
        return Static(knobs, n, tick, window), Start(peer_spec(spec), knobs, n)
    if name == "oracle":
        best = ctx.oracle_knobs
        oracle = Oracle(ctx, best, tick, window)
        return oracle, Start(spec, best, oracle.wanted(0.0))
    if name not in PEERS:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(NAMES)}")
    spec = peer_spec(spec)
    start = max(spec.scaling.min_replicas, ctx.start_replicas(knobs))
    value = tunable(name, ctx, knobs).default if setting is None else setting
    # The autoscalers ran before the scenario started: their scale-down memory holds the starting size.
    began = collections.deque([(sim_cluster.EPOCH, start)])
    first = Start(spec, knobs, start)
    if name == "hpa":
        return Hpa(knobs, value, start, history=began), first
    if name == "kpa":
        return Kpa(knobs, value, start), first
    coeff = perfmodel.coefficients(ctx.replica(knobs))
    if name in ("dynamo", "dynamo-sla"):
        load = Dynamo(knobs, coeff.kv_blocks, start, sla_factor=value)
        if name == "dynamo":
            return load, first
        return DynamoSla(knobs, load, profile(ctx, knobs), sla_factor=value, floor=start), first
    if name == "wva":
        # The queue thresholds keep their ratio to the KV one (5 and 3 at 0.8), so one number sets the level.
        level = value / 0.8
        return Wva(knobs, start, kv_threshold=value, queue_threshold=5.0 * level, queue_spare=3.0 * level,
                   history=began), first
    return Llmd(knobs, coeff.kv_blocks * coeff.block_size, coeff.token_budget, start, scale_up=value,
                history=began), first
