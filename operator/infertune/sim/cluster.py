"""Twin: a fake Kubernetes cluster in simulated time — Deployments, pods, readiness, labels, drain — over a Fleet."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import heapq
import math
from collections.abc import Iterable, Iterator, Sequence

from infertune import conditions, models, observation, perfmodel, prometheus, render, replica, timestamps
from infertune.runtimes import metrics, registry
from infertune.sim import engine as sim_engine
from infertune.sim import exposition, histogram, promql, workload
from infertune.sim import fleet as sim_fleet

# Simulated time 0 is this instant (2026-01-01T00:00:00Z): decide() reads wall-clock-looking timestamps.
EPOCH = 1_767_225_600.0
# Gauges (KV usage) are sampled this often, like a Prometheus scrape; counters and requests are exact.
SCRAPE_SECONDS = 5.0
# Requests and counter snapshots are kept this long behind the newest window any caller asks for.
KEEP_SECONDS = 180.0
RESOURCE = "sim"
NAMESPACE = "default"


def when(t: float) -> datetime.datetime:
    """The wall-clock instant of simulated second `t`."""
    return datetime.datetime.fromtimestamp(EPOCH + t, tz=datetime.UTC)


def _seconds(stamp: str | None, default: float) -> float:
    at = timestamps.seconds(stamp)
    return default if at is None else at - EPOCH


@dataclasses.dataclass(slots=True)
class _Snap:
    """A pod's engine counters at one instant (the raw material of Prometheus rates)."""

    t: float
    counters: dict[str, float]  # by exposition signal (COUNTER_STATS)
    histograms: dict[str, tuple[tuple[float, ...], float]]  # cumulative counts at each bound and +Inf, and sum
    bytes_per_gpu: float


@dataclasses.dataclass(slots=True, eq=False)
class Pod:
    """One pod of a revision; times are simulated seconds."""

    name: str
    revision: str
    knobs: models.Knobs
    created: float
    ready_at: float  # when it turns Ready (created + cold start); inf when it never does
    serving: bool = True  # the infertune.io/serving label: pods are created serving (fail open)
    unserved_since: float | None = None
    deletion_cost: int = 0
    deleted: float | None = None  # deletionTimestamp
    grace_end: float = math.inf
    gone: float | None = None  # stopped holding its GPUs
    failed: str = ""  # why its engine cannot start (it crash-loops)
    member: sim_fleet.Member | None = None
    inflight: dict[int, sim_engine.Request] = dataclasses.field(default_factory=dict)
    done: collections.deque[sim_engine.Request] = dataclasses.field(default_factory=collections.deque)
    snaps: collections.deque[_Snap] = dataclasses.field(default_factory=collections.deque)
    kv: collections.deque[tuple[float, float, float]] = dataclasses.field(default_factory=collections.deque)

    def ready(self, t: float) -> bool:
        return self.member is not None and t >= self.ready_at and self.gone is None

    @property
    def deleting(self) -> bool:
        return self.deleted is not None


@dataclasses.dataclass(slots=True, eq=False)
class Deployment:
    name: str
    revision: str
    knobs: models.Knobs
    replicas: int
    created: float


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """The cluster's state at one instant, for time series."""

    serving: int  # Ready pods with the serving label
    standby: int  # Ready, unlabelled, idle pods of the newest revision
    draining: int  # Ready, unlabelled pods that still hold requests or belong to an older revision
    starting: int  # not Ready yet
    terminating: int
    pods: int  # every pod that holds GPUs


class Cluster:
    """Deployments per revision, pods with cold starts, the Service (Ready pods labelled serving) and the
    ReplicaSet's scale-down ranking, driving one twin replica per Ready pod in simulated time.

    Call `advance(t)` to run the workload to `t`, `scrape(t)` to sample gauges, `observe(t)` for what the
    operator would read, and `apply(decision, t)` to act.
    """

    def __init__(
        self, spec: models.InferenceDeploymentSpec, *, cold_start: float, arrivals: Iterable[workload.Arrival] = (),
        prefix_hit_rate: float = 0.0, name: str = RESOURCE, grace: float | None = None,
        routing: models.Routing = models.Routing.LEAST_OUTSTANDING, seed: int = 0,
    ) -> None:
        self.spec = spec
        self.name = name
        self.cold_start = cold_start
        self.grace = float(render.grace_period_seconds(spec)) if grace is None else grace
        self.prefix_hit_rate = prefix_hit_rate
        self.fleet = sim_fleet.Fleet(start=0.0, routing=routing, seed=seed)
        self.now = 0.0
        self.deployments: dict[str, Deployment] = {}
        self.pods: dict[str, Pod] = {}  # every pod ever created, in creation order
        self.status = models.InferenceDeploymentStatus()
        self.rollouts = 0  # Deployments created, the first included
        self.knob_changes: list[tuple[float, models.Knobs]] = []
        self.events: list[tuple[float, observation.Event]] = []
        self.unrouted = 0  # arrived while nothing served
        self._arrivals: Iterator[workload.Arrival] = iter(arrivals)
        self._pending: workload.Arrival | None = next(self._arrivals, None)
        self._timers: list[tuple[float, int, str, str]] = []  # (time, seq, kind, pod)
        self._seq = 0
        self._serial = 0
        self._replicas: dict[str, perfmodel.Replica | str] = {}
        self._seen = 0  # fleet records already sorted into pods
        # What each pod exports: its engine's dialect (names, kinds, bucket bounds), read by the operator's parser.
        self.variant = registry.for_engine(spec.engine).variant

    # ------------------------------------------------------------------ objects

    def seed(self, knobs: models.Knobs, replicas: int) -> None:
        """The deployment as it runs when the scenario starts: `replicas` pods created one cold start ago,
        Ready and serving at 0, and a status that records their configuration as the serving one."""
        rev = render.revision(self.spec, knobs)
        self._create_deployment(rev, knobs, replicas, t=0.0, created=-self.cold_start)
        self.status = models.InferenceDeploymentStatus(
            replicas=models.ReplicaStatus(desired=replicas, serving=replicas, ready=replicas,
                                          display=f"{replicas}/{replicas}"),
            config=models.ConfigStatus(revision=rev, max_batch_size=knobs.max_batch_size,
                                       kv_cache_dtype=knobs.kv_cache_dtype,
                                       max_num_batched_tokens=knobs.max_num_batched_tokens,
                                       reason="the scenario's initial deployment",
                                       since=conditions.timestamp(when(0.0)), verified=True),
        )

    def _create_deployment(self, rev: str, knobs: models.Knobs, replicas: int, *, t: float,
                           created: float | None = None) -> None:
        dep = Deployment(f"{self.name}-{rev}", rev, knobs, replicas, t if created is None else created)
        self.deployments[rev] = dep
        self.rollouts += 1
        self.knob_changes.append((t, knobs))
        self._reconcile(dep, t, created=created)

    def _replica(self, knobs: models.Knobs) -> perfmodel.Replica | str:
        key = f"{knobs.max_batch_size}/{knobs.kv_cache_dtype.value}"
        if key not in self._replicas:
            try:
                r = replica.of(self.spec, knobs, prefix_cache_hit_rate=self.prefix_hit_rate)
                perfmodel.coefficients(r)
                self._replicas[key] = r
            except ValueError as e:  # the engine would refuse to start (FP8 KV without FP8, no room for KV)
                self._replicas[key] = str(e).splitlines()[0]
        return self._replicas[key]

    def _new_pod(self, dep: Deployment, *, t: float, created: float | None = None) -> Pod:
        self._serial += 1
        born = t if created is None else created
        pod = Pod(name=f"{dep.name}-{self._serial}", revision=dep.revision, knobs=dep.knobs, created=born,
                  ready_at=born + self.cold_start)
        replica = self._replica(dep.knobs)
        if isinstance(replica, str):
            pod.failed, pod.ready_at = replica, math.inf
        else:
            self._timer(max(pod.ready_at, t), "ready", pod.name)
        self.pods[pod.name] = pod
        return pod

    def _timer(self, t: float, kind: str, pod: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (t, self._seq, kind, pod))

    def live(self) -> list[Pod]:
        """Pods that exist and are not terminating."""
        return [p for p in self.pods.values() if p.gone is None and not p.deleting]

    def _reconcile(self, dep: Deployment, t: float, *, created: float | None = None) -> None:
        """The ReplicaSet: create pods up to `replicas`, or delete the surplus in Kubernetes' order."""
        mine = [p for p in self.live() if p.revision == dep.revision]
        for _ in range(dep.replicas - len(mine)):
            self._new_pod(dep, t=t, created=created)
        surplus = len(mine) - dep.replicas
        if surplus > 0:
            for pod in sorted(mine, key=lambda p: removal_rank(p, t))[:surplus]:
                self._delete(pod, t)

    def _delete(self, pod: Pod, t: float) -> None:
        """Graceful termination: out of the Service at once, in-flight requests finish within the grace period."""
        pod.deleted = t
        pod.grace_end = t + self.grace
        if pod.member is None:
            pod.gone = t  # still loading: nothing to drain
            return
        pod.member.serving = False
        if pod.member.name in self.fleet.members:
            self.fleet.remove_replica(pod.name, now=t, drain=True)
        self._timer(pod.grace_end, "grace", pod.name)
        self._check_gone(pod, t)

    def _check_gone(self, pod: Pod, t: float) -> None:
        """A terminating pod whose engine drained exits after the preStop sleep (by `t`, or later)."""
        m = pod.member
        if pod.gone is not None or pod.deleted is None or m is None or math.isnan(m.removed):
            return
        exit_at = min(max(m.removed, pod.deleted + render.PRESTOP_SECONDS), pod.grace_end)
        if exit_at <= t:
            pod.gone = exit_at

    # ------------------------------------------------------------------ time

    def advance(self, until: float) -> None:
        """Submit arrivals before `until`, turn pods Ready and end grace periods in time order, settle engines."""
        fleet = self.fleet
        while True:
            ta = self._pending.time if self._pending is not None else math.inf
            te = self._timers[0][0] if self._timers else math.inf
            if ta >= until and te > until:
                break
            if ta < te:
                arrival = self._pending
                assert arrival is not None
                self._pending = next(self._arrivals, None)
                self._submit(arrival)
                continue
            t, _, kind, name = heapq.heappop(self._timers)
            pod = self.pods[name]
            fleet.advance(t)
            if kind == "ready":
                self._ready(pod, t)
            elif kind == "grace":
                self._grace_over(pod, t)
        fleet.settle(until)
        self._collect()
        for pod in self.pods.values():
            if pod.deleted is not None and pod.gone is None:
                self._check_gone(pod, until)
        self.now = max(self.now, until)

    def _submit(self, arrival: workload.Arrival) -> None:
        req = self.fleet.submit(arrival)
        if req.replica:
            self.pods[req.replica].inflight[req.id] = req
        else:
            self.unrouted += 1

    def _collect(self) -> None:
        """Move requests that left their engine (in the order they left) to their pod's finished list."""
        records = self.fleet.records
        for r in records[self._seen:]:
            pod = self.pods.get(r.replica) if r.replica else None
            if pod is not None and pod.inflight.pop(r.id, None) is not None:
                pod.done.append(r)
        self._seen = len(records)

    def _ready(self, pod: Pod, t: float) -> None:
        if pod.gone is not None or pod.deleting:
            return
        replica = self._replica(pod.knobs)
        assert not isinstance(replica, str)
        self.fleet.add_replica(replica, now=t, name=pod.name)
        pod.member = self.fleet.members[pod.name]
        pod.member.serving = pod.serving
        stats = pod.member.engine.stats
        for read in self._reads(replica).values():
            if read.bounds:  # the engine's own histogram buckets, exact (the fine log bins round by 1%)
                getattr(stats, promql.HISTOGRAM_STATS[read.signal]).exact = histogram.Buckets(read.bounds)
        pod.snaps.append(self._counters(pod, t))

    def _grace_over(self, pod: Pod, t: float) -> None:
        self._check_gone(pod, t)  # drained earlier in this step: it left then, not now
        if pod.gone is not None:
            return
        if pod.name in self.fleet.members:
            self.fleet.remove_replica(pod.name, now=t, drain=False)  # aborted: counted as dropped
        pod.gone = t

    def pending(self) -> bool:
        """Whether arrivals remain to be submitted."""
        return self._pending is not None

    def in_flight(self) -> int:
        return sum(m.engine.outstanding for m in self.fleet.members.values())

    # ------------------------------------------------------------------ observation

    def _reads(self, replica: perfmodel.Replica) -> dict[promql.Key, promql.Read]:
        return promql.reads(self.variant, replica.model.max_context_tokens)

    def scrape(self, t: float) -> None:
        """Sample gauges and snapshot counters of every pod that has an engine (as Prometheus would)."""
        for pod in self.pods.values():
            m = pod.member
            if m is None or pod.gone is not None:
                continue
            eng = m.engine
            # TensorRT-LLM's paused requests (its preemption signal, a gauge): waiting again after a preemption.
            read = self._reads(eng.replica).get(("value", metrics.Signal.PREEMPTIONS))
            paused = (float(sum(1 for r in eng.waiting if r.preemptions > 0))
                      if read is not None and read.signal == exposition.PAUSED else 0.0)
            pod.kv.append((t, eng.kv_usage, paused))
            self._snap(pod, t)
            self._prune(pod, t)

    def _counters(self, pod: Pod, t: float) -> _Snap:
        assert pod.member is not None
        s = pod.member.engine.stats
        hists: dict[str, tuple[tuple[float, ...], float]] = {}
        for signal, attr in promql.HISTOGRAM_STATS.items():
            h: histogram.LogHistogram = getattr(s, attr)
            # Without the exporter's buckets (no query reads them) the count stands for the +Inf bucket.
            hists[signal] = h.exact.snapshot() if h.exact is not None else ((h.count,), h.sum)
        counters = {signal: float(getattr(s, attr)) for signal, attr in promql.COUNTER_STATS.items()}
        return _Snap(t, counters, hists, s.bytes_per_gpu)

    def _snap(self, pod: Pod, t: float) -> None:
        if pod.snaps and pod.snaps[-1].t >= t:
            return
        pod.snaps.append(self._counters(pod, t))

    @staticmethod
    def _prune(pod: Pod, t: float) -> None:
        horizon = t - KEEP_SECONDS
        while len(pod.snaps) > 1 and pod.snaps[1].t <= horizon:
            pod.snaps.popleft()
        while pod.kv and pod.kv[0][0] <= horizon:
            pod.kv.popleft()
        while pod.done and pod.done[0].finished <= horizon:
            pod.done.popleft()

    def window(self, pod: Pod, t: float, *, window: float) -> promql.PodWindow | None:
        """One pod's series over the trailing window, as Prometheus holds them (None before it has an engine)."""
        m = pod.member
        if m is None:
            return None
        since = max(t - window, pod.ready_at)
        span = t - since
        if span <= 0:
            return None
        self._snap(pod, t)
        base = next((s for s in reversed(pod.snaps) if s.t <= since), pod.snaps[0])
        now = pod.snaps[-1]
        rate_span = max(now.t - base.t, 1e-9)
        running = waiting = 0.0
        lives: list[tuple[float, float]] = []
        for r in self._requests(pod, since):
            start = r.arrival
            admitted = r.scheduled if not math.isnan(r.scheduled) else math.inf
            end = r.finished if not math.isnan(r.finished) else math.inf
            # Time-weighted gauges from each request's life: waiting [arrival, admitted), running [admitted, end).
            waiting += max(0.0, min(admitted, end, t) - max(start, since))
            running += max(0.0, min(end, t) - max(admitted, since))
            if min(end, t) > max(admitted, since):
                lives.append((max(admitted, since), min(end, t)))
        # Counters are rated as Prometheus' rate() does: the increase over the whole range, so a pod Ready for
        # 15 s of a 60 s window reports a quarter of its rate (its series begins inside the range). Gauges
        # (running, waiting, KV use, DRAM activity) are averages over the samples there are, as avg_over_time.
        counted = max(rate_span, window)
        rates = {k: (v - base.counters[k]) / counted for k, v in now.counters.items()}
        hists = {}
        for k, (counts, total) in now.histograms.items():
            before, before_total = base.histograms[k]
            hists[k] = (tuple((c - b) / counted for c, b in zip(counts, before, strict=True)),
                        (total - before_total) / counted)
        eng = m.engine
        samples = [(kv, paused) for s, kv, paused in pod.kv if since < s <= t]
        queries = now.counters[exposition.PREFIX_QUERIES] - base.counters[exposition.PREFIX_QUERIES]
        hits = now.counters[exposition.PREFIX_HITS] - base.counters[exposition.PREFIX_HITS]
        if queries <= 0:  # no prompt in the window: the engines' gauge keeps its lifetime ratio
            queries, hits = now.counters[exposition.PREFIX_QUERIES], now.counters[exposition.PREFIX_HITS]
        # DRAM-active share: 120 TB moved per GPU in 60 s on a 3.35 TB/s H100 = 120e12 / (60 x 3.35e12) = 0.60.
        peak = eng.replica.gpu.bandwidth_gbps * perfmodel.GB
        gauges = {
            exposition.RUNNING: running / span, exposition.WAITING: waiting / span,
            exposition.KV_USAGE: sum(kv for kv, _ in samples) / len(samples) if samples else eng.kv_usage,
            exposition.PAUSED: sum(p for _, p in samples) / len(samples) if samples else 0.0,
            exposition.PREFIX_HIT_RATE: min(1.0, hits / queries) if queries > 0 else 0.0,
            exposition.DRAM_ACTIVE: min(1.0, (now.bytes_per_gpu - base.bytes_per_gpu) / (rate_span * peak)),
        }
        latest = {exposition.RUNNING: float(eng.num_running), exposition.WAITING: float(eng.num_waiting)}
        return promql.PodWindow(namespace=NAMESPACE, pod=pod.name, rates=rates, histograms=hists, gauges=gauges,
                                now=latest, busy=_covered(lives) / span)

    @staticmethod
    def _requests(pod: Pod, since: float) -> list[sim_engine.Request]:
        """In flight now, and finished after `since` (in the order they left: stop at the first before it)."""
        recent: list[sim_engine.Request] = []
        for r in reversed(pod.done):
            if r.finished <= since:
                break
            recent.append(r)
        return [*pod.inflight.values(), *recent]

    def answers(self, t: float, *, window: float) -> dict[promql.Key, list[dict[str, object]]]:
        """What Prometheus answers to the operator's queries (prometheus.queries) about every pod with an engine."""
        windows: list[promql.PodWindow] = []
        plan: dict[promql.Key, promql.Read] = {}
        for p in self.pods.values():
            if p.gone is None and p.member is not None and (w := self.window(p, t, window=window)) is not None:
                windows.append(w)
                plan = self._reads(p.member.engine.replica)
        return promql.answers(windows, plan, at=EPOCH + t)

    def metrics_at(self, t: float, *, window: float) -> observation.Metrics:
        """The per-pod signals as the operator reads them: the query answers through its own parser
        (prometheus.parse, then prometheus.pod_metrics), bucket resolution and all."""
        raw = prometheus.parse(self.answers(t, window=window))
        slo = self.spec.slo
        pods: dict[str, observation.PodMetrics] = {}
        ignored: list[str] = []
        for (_, name), r in sorted(raw.items()):
            pods[name] = prometheus.pod_metrics(r, percentile=slo.percentile, ttft_slo=slo.ttft, itl_slo=slo.itl)
            ignored += [f"{name} {d}" for d in r.dropped]
        return observation.Metrics(pods=pods, grace=window + 15.0, window=window, ignored=tuple(ignored),
                                   mbu_source="dcgm" if pods else None)

    def pod_metrics(self, pod: Pod, t: float, *, window: float) -> observation.PodMetrics | None:
        """What the operator reads of one pod over the trailing window (None before its first scrape)."""
        return self.metrics_at(t, window=window).pods.get(pod.name)

    def facts(self, t: float) -> tuple[tuple[observation.RevisionFacts, ...], tuple[observation.PodFacts, ...]]:
        """The Deployments and pods as the API server lists them."""
        pods = []
        for p in self.pods.values():
            if p.gone is not None:
                continue
            ready = p.ready(t)
            loads = max(1.0, self.cold_start)
            pods.append(observation.PodFacts(
                name=p.name, revision=p.revision, ready=ready, serving=p.serving, created=EPOCH + p.created,
                ready_since=EPOCH + p.ready_at if ready else None, deleting=p.deleting,
                restarts=int((t - p.created) // loads) if p.failed else 0, failed=False,
                unserved_since=None if p.unserved_since is None else EPOCH + p.unserved_since,
                deletion_cost=p.deletion_cost,
            ))
        revisions = []
        for d in self.deployments.values():
            up = sum(1 for p in self.live() if p.revision == d.revision and p.ready(t))
            revisions.append(observation.RevisionFacts(name=d.name, revision=d.revision, knobs=d.knobs,
                                                       replicas=d.replicas, ready_replicas=up,
                                                       created=EPOCH + d.created))
        return tuple(revisions), tuple(pods)

    def observe(self, t: float, *, window: float, generation: int = 1) -> observation.Observation:
        """Everything decide() reads: the spec, the last status, Deployments, pods and per-pod metrics."""
        revisions, pods = self.facts(t)
        return observation.Observation(
            name=self.name, namespace=NAMESPACE, generation=generation, spec=self.spec, status=self.status,
            revisions=revisions, pods=pods, metrics=self.metrics_at(t, window=window),
        )

    # ------------------------------------------------------------------ actuation

    def apply(self, decision: observation.Decision, t: float) -> None:
        """Pod patches first (labels, annotations), then the revisions' Deployments; others are deleted."""
        self.advance(t)
        for patch in decision.pod_patches:
            pod = self.pods.get(patch.name)
            if pod is None or pod.gone is not None:
                continue  # the API server answers 404; the next cycle sees the truth
            if patch.serving is not None:
                pod.serving = patch.serving
                pod.unserved_since = None if patch.serving else _seconds(patch.unserved_since, t)
                if pod.member is not None and not pod.deleting:
                    pod.member.serving = patch.serving
            if patch.deletion_cost is not None:
                pod.deletion_cost = patch.deletion_cost
        keep = set()
        for plan in decision.revisions:
            keep.add(plan.revision)
            dep = self.deployments.get(plan.revision)
            if dep is None:
                self._create_deployment(plan.revision, plan.knobs, plan.replicas, t=t)
            elif dep.replicas != plan.replicas:
                dep.replicas = plan.replicas
                self._reconcile(dep, t)
        for rev in [r for r in self.deployments if r not in keep]:
            del self.deployments[rev]
            for pod in self.live():
                if pod.revision == rev:
                    self._delete(pod, t)
        self.status = decision.status
        self.events.extend((t, e) for e in decision.events)

    # ------------------------------------------------------------------ accounting

    def counts(self, t: float) -> Counts:
        serving = standby = draining = starting = terminating = pods = 0
        newest = next(reversed(self.deployments.values())).revision if self.deployments else None
        for p in self.pods.values():
            if p.gone is not None:
                continue
            pods += 1
            if p.deleting:
                terminating += 1
            elif not p.ready(t):
                starting += 1
            elif p.serving:
                serving += 1
            elif p.revision == newest and p.member is not None and p.member.engine.outstanding == 0:
                standby += 1
            else:
                draining += 1
        return Counts(serving, standby, draining, starting, terminating, pods)

    def serving_knobs(self, t: float) -> models.Knobs | None:
        """The knobs of the revision with the most serving pods (the newest on a tie)."""
        tally: collections.Counter[str] = collections.Counter()
        knobs: dict[str, models.Knobs] = {}
        for p in self.live():
            if p.ready(t) and p.serving:
                tally[p.revision] += 1
                knobs[p.revision] = p.knobs
        if not tally:
            dep = list(self.deployments.values())
            return dep[-1].knobs if dep else None
        best = max(tally.values())
        return [knobs[r] for r in knobs if tally[r] == best][-1]

    def gpu_seconds(self, until: float, since: float = 0.0) -> float:
        """Pod lifetime x GPUs within [since, until]: a loading, standby or draining pod holds its GPUs too."""
        # A pod created at 100 s and deleted at 130 s while loading held its GPU for 30 s.
        total = 0.0
        for p in self.pods.values():
            end = until if p.gone is None else min(p.gone, until)
            total += max(0.0, end - max(p.created, since, 0.0))
        return total * self.spec.accelerator.count

    def settled(self, until: float) -> float:
        """When the last rollout finished: the last pod of an older revision than the newest stopped holding
        its GPUs (0 when only the first revision ever ran; `until` while an old pod still runs)."""
        if not self.deployments:
            return 0.0
        newest = max(self.deployments.values(), key=lambda d: d.created).revision
        ends = [until if p.gone is None else min(p.gone, until) for p in self.pods.values() if p.revision != newest]
        return max(ends, default=0.0)


def removal_rank(pod: Pod, t: float) -> tuple[int, int, float, float]:
    """Kubernetes' order for ReplicaSet scale-down (controller.ActivePodsWithRanks): not-Ready first, then
    lower controller.kubernetes.io/pod-deletion-cost, then the most recently Ready, then the newest."""
    ready = pod.ready(t)
    return (1 if ready else 0, pod.deletion_cost, -(pod.ready_at if ready else 0.0), -pod.created)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), q in 0..1; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _covered(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the spans (their union): [0, 2), [1, 3) and [5, 6) cover 4 s."""
    total, end = 0.0, -math.inf
    for lo, hi in sorted(spans):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total
