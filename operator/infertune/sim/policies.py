"""Twin: scaling policies for `infertune simulate` — infertune's decide(), static, an oracle, and the peers' algorithms.

Every policy answers `decide(obs, now=...) -> Decision` on the same fake cluster. The peers see only what they
would really read (their metric from the per-pod signals, pod readiness), keep their own small state, run the
engine's default knobs with no standby pool, and act through `rollout.plan` like the operator does. Each peer's
rules and the source of every constant are in docs/peers.md.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime
import functools
import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from infertune import catalog, decide, knee, models, observation, perfmodel, render, rollout
from infertune.runtimes import registry
from infertune.sim import cluster as sim_cluster
from infertune.sim import engine as sim_engine
from infertune.sim import fleet as sim_fleet
from infertune.sim import scenario as sim_scenario
from infertune.sim import sweep, workload

NAMES = ("infertune", "infertune-nostandby", "static", "oracle", "hpa", "kpa", "dynamo", "wva")
DEFAULT = ("infertune", "static", "oracle", "hpa", "kpa", "dynamo", "wva")


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
        return knee.replica(self.spec, knobs, prefix_cache_hit_rate=self.scenario.prefix_hit_rate)

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
            self._load_test[knobs] = _largest(1, top, lambda c: self.meets_slo_closed(knobs, c))
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
            batch = _largest(bounds.min, top, functools.partial(self._fits_at_batch, kv))
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


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), assuming ok is monotone (true, then false); low if none."""
    if not ok(low):
        return low
    if ok(high):
        return high
    lo, hi = low, high
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


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
    """Kubernetes HPA fed by KEDA's Prometheus scaler on sum(vllm:num_requests_running), AverageValue target.

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
        total = sum(m.running or 0.0 for m in _metrics(obs, [p for p in obs.pods if p.ready]))
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
        x_ttft = self.ttft.x_at(spec.slo.ttft * 1000)
        if x_ttft is not None:
            avg_isl = sum(isl for _, isl, _ in loads) / n
            target = x_ttft - avg_isl
            if target > 0:
                p_up = all(p > target for p, _, _ in loads)
                p_down = n > 1 and all(p < target * factor for p, _, _ in loads)
        x_itl = self.itl.x_at(spec.slo.itl * 1000)
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
            self.history.append((t, target))
            while self.history and self.history[0][0] < t - self.stabilization:
                self.history.popleft()
            if target < self.current:
                target = min(self.current, max(r for _, r in self.history))
            self.current = target
        return act(obs, knobs=self.knobs, serving=self.current, now=now)


# ---------------------------------------------------------------------------------------------- building


def build(name: str, ctx: Context) -> tuple[Policy, Start]:
    """A fresh policy (with its own state) and what the cluster starts with, by policy name."""
    s = ctx.scenario
    spec, knobs = ctx.spec, ctx.knobs
    tick, window = s.interval, s.window
    if name in ("infertune", "infertune-nostandby"):
        if name == "infertune-nostandby":
            spec = spec.model_copy(update={"scaling": spec.scaling.model_copy(
                update={"standby": models.StandbySpec(min=0, max=0)})})
        return Infertune(tick, window, name=name), Start(spec, knobs, ctx.start_replicas(knobs))
    if name == "static":
        n = s.initial.replicas or ctx.replicas_for(ctx.peak(0.0, s.duration), knobs)
        return Static(knobs, n, tick, window), Start(spec, knobs, n)
    if name == "oracle":
        best = ctx.oracle_knobs
        oracle = Oracle(ctx, best, tick, window)
        return oracle, Start(spec, best, oracle.wanted(0.0))
    start = ctx.start_replicas(knobs)
    target = s.peers.concurrency_target or float(ctx.load_test(knobs))
    # The autoscalers ran before the scenario started: their scale-down memory holds the starting size.
    began = collections.deque([(sim_cluster.EPOCH, start)])
    if name == "hpa":
        return Hpa(knobs, target, start, history=began), Start(spec, knobs, start)
    if name == "kpa":
        return Kpa(knobs, target, start), Start(spec, knobs, start)
    if name == "dynamo":
        blocks = perfmodel.coefficients(ctx.replica(knobs)).kv_blocks
        return Dynamo(knobs, blocks, start), Start(spec, knobs, start)
    if name == "wva":
        return Wva(knobs, start, history=began), Start(spec, knobs, start)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(NAMES)}")
