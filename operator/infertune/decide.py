"""Pure: decide(observation, now) -> revisions, pod patches, status and events: the knee, FP8 KV, replicas."""

from __future__ import annotations

import dataclasses
import datetime
import math

from infertune import (
    catalog,
    conditions,
    knee,
    lifecycle,
    models,
    observation,
    perfmodel,
    plausibility,
    queueing,
    render,
    resolution,
    rollout,
    runtimes,
    scaling,
    timestamps,
)
from infertune.runtimes import metrics as dialects
from infertune.runtimes import registry

MAX_DECISIONS = 20
# A change must promise this much more goodput per replica to be worth a restart.
GAIN_THRESHOLD = 0.10
# Confidence needed to act on a predicted gain; an SLO violation may be fixed on the prior alone.
MIN_CONFIDENCE = 0.5
URGENT_CONFIDENCE = 0.25
# A batch size within 10% of the current one is the same operating point (and not worth a restart).
SAME_BATCH = 0.10
# A change made for goodput must save replicas worth its restart within this long (see _propose).
PAYBACK_SECONDS = 900.0
# Measured per-request ITL above SLO x 1.1 while the prediction promised it fits is a regression.
REGRESSION_TOLERANCE = 0.10
# FP8 KV pays when KV bytes are at least this share of a decode step (or the knee is KV-limited).
KV_HEAVY = 0.30
# Prefix-cache hits falling below half of what they were mean FP8 KV disabled prefix caching.
PREFIX_COLLAPSE = 0.5
# A new revision whose pods restart this often, or are not Ready after this many cold starts, failed.
CRASH_RESTARTS = 3
STARTUP_BUDGET_COLD_STARTS = 3.0
DEFAULT_COLD_START = 120.0
# Prometheus scrapes every 15 s (manifests/monitoring): the shortest span a young pod's reading can cover.
SCRAPE_SECONDS = 15.0
# Garbage in the picture (a NaN queue, a running count beyond the batch) holds a scale-down, since the dropped
# value could have been the load, but not forever: one NaN series held 40 replicas for a whole run. After
# 10 minutes, the time after which InferTuneMetricsMissing pages for a missing picture, a Warning event
# (GarbageMetrics) and the alert of the same name say so, and decisions go on from the clean part of it.
GARBAGE_HOLD_SECONDS = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Metrics:
    ok: bool
    reason: str
    message: str
    pods: dict[str, observation.PodMetrics]


def _knobs(c: models.ConfigStatus | None) -> models.Knobs | None:
    return None if c is None else c.knobs()


def _budget(knobs: models.Knobs) -> str:
    return "default" if knobs.max_num_batched_tokens is None else str(knobs.max_num_batched_tokens)


def _change(old: models.Knobs, new: models.Knobs) -> str:
    """'maxBatchSize 64 -> 8, KV default -> fp8', and the token budget's move when either side sets one."""
    text = (f"maxBatchSize {old.max_batch_size} -> {new.max_batch_size}, "
            f"KV {old.kv_cache_dtype.value} -> {new.kv_cache_dtype.value}")
    if old.max_num_batched_tokens is not None or new.max_num_batched_tokens is not None:
        text += f", maxNumBatchedTokens {_budget(old)} -> {_budget(new)}"
    return text


def _misses(spec: models.InferenceDeploymentSpec, p: knee.Prediction) -> str:
    """Which objective a prediction misses, with the numbers: 'ITL (predicted 52.0 ms p95 against 40 ms)'."""
    parts = []
    if p.itl_p > p.itl_limit:
        parts.append(f"ITL (predicted {p.itl_p * 1000:.1f} ms p95 against {spec.slo.itl * 1000:.0f} ms)")
    if p.ttft_p > spec.slo.ttft * (1 - knee.MARGIN):
        parts.append(f"TTFT (predicted {p.ttft_p * 1000:.0f} ms p95 against {spec.slo.ttft * 1000:.0f} ms)")
    return " and ".join(parts) or "the KV cache (a full batch of this shape does not fit it)"


def _same(a: models.Knobs, b: models.Knobs) -> bool:
    """The same operating point: the same KV dtype and budget, and a batch within SAME_BATCH of it."""
    return (a.kv_cache_dtype is b.kv_cache_dtype and a.max_num_batched_tokens == b.max_num_batched_tokens
            and abs(a.max_batch_size - b.max_batch_size) <= SAME_BATCH * b.max_batch_size)


def initial_knobs(spec: models.InferenceDeploymentSpec) -> tuple[models.Knobs, str]:
    """The first revision's knobs and why: the spec's initial size, else the engine default within bounds."""
    bounds = spec.tuning.max_batch_size
    if spec.tuning.initial_max_batch_size is not None:
        batch = spec.tuning.initial_max_batch_size
        why = f"maxBatchSize {batch} from tuning.initialMaxBatchSize"
    else:
        runtime = registry.for_engine(spec.engine)
        default = runtime.default_max_batch_size(catalog.resolve_gpu(spec.accelerator))
        batch = min(max(default, bounds.min), bounds.max)
        why = f"maxBatchSize {batch}: the {runtime.variant} default ({default})"
        if batch != default:
            why += f" clamped to tuning.maxBatchSize {bounds.min}..{bounds.max}"
    kv = models.KvDtype.FP8 if spec.tuning.kv_cache_dtype is models.KvCachePolicy.FP8 else models.KvDtype.DEFAULT
    return models.Knobs(max_batch_size=batch, kv_cache_dtype=kv), f"{why}; KV cache {kv.value}"


def allowed(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> bool:
    """Whether knobs chosen earlier still satisfy the spec (bounds and KV policy may have changed)."""
    bounds = spec.tuning.max_batch_size
    if not bounds.min <= knobs.max_batch_size <= bounds.max:
        return False
    if knobs.max_num_batched_tokens is not None and knobs.max_num_batched_tokens not in knee.budgets(spec):
        return False  # the spec now sets engine.maxNumBatchedTokens (or turned chunked prefill off)
    policy = spec.tuning.kv_cache_dtype
    if policy is models.KvCachePolicy.FP8:
        return knobs.kv_cache_dtype is models.KvDtype.FP8
    if policy is models.KvCachePolicy.DEFAULT:
        return knobs.kv_cache_dtype is models.KvDtype.DEFAULT
    return True


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _metrics_health(obs: observation.Observation, now: float) -> _Metrics:
    """Usable metrics, or why not: a missing, failing or partial picture freezes decisions."""
    m = obs.metrics
    if m is None:
        return _Metrics(False, "NoPrometheus", "no Prometheus URL is configured; knobs and replicas stay as they are",
                        {})
    if not m.available:
        return _Metrics(False, m.reason, m.message or "Prometheus did not answer", {})
    serving = [p for p in obs.pods if p.ready and p.serving and not p.deleting]
    missing = [p.name for p in serving
               if p.name not in m.pods and now - (p.ready_since or p.created) > m.grace]
    if missing:
        return _Metrics(False, "PartialMetrics",
                        f"no series for serving pod(s) {', '.join(sorted(missing)[:5])}; decisions frozen", m.pods)
    return _Metrics(True, "MetricsFound", _reporting(len(m.pods), m.ignored), m.pods)


def _reporting(pods: int, ignored: tuple[str, ...] | list[str], outvoted: tuple[str, ...] = ()) -> str:
    """Garbage dropped (NaN, negative, absurd, beyond a pod's limits) and claims outvoted, named, so whoever is
    paged sees why a pod's KV usage or load is missing from the picture."""
    text = f"{pods} pod(s) reporting"
    if ignored:
        text += f"; ignored: {'; '.join(ignored[:5])}"
    if outvoted:
        text += f"; outvoted: {'; '.join(outvoted[:3])}"
    return text


def _workload(serving: list[observation.PodMetrics]) -> knee.Workload | None:
    """Request shape measured across serving pods, weighted by their request rates."""
    total = sum(p.requests_per_s or 0.0 for p in serving if p.mean_input_tokens and p.mean_output_tokens)
    if total <= 0:
        return None
    isl = sum((p.requests_per_s or 0) * (p.mean_input_tokens or 0) for p in serving) / total
    osl = sum((p.requests_per_s or 0) * (p.mean_output_tokens or 0) for p in serving) / total
    hits = [p.prefix_hit_rate for p in serving if p.prefix_hit_rate is not None]
    return knee.Workload(isl=max(1, round(isl)), osl=max(2, round(osl)),
                         prefix_hit_rate=min(0.95, sum(hits) / len(hits)) if hits else 0.0)


def _spread(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, serving: list[observation.PodMetrics],
            remembered: models.KneeStatus | None) -> perfmodel.PrefillSpread:
    """The prefill spread of the prompts the serving pods saw in the window (their length histograms pooled),
    folded into the remembered one with the calibration's EWMA step: a window holds few long prompts (a pod of
    the Mooncake shape sees about three a minute) and one 100,000-token prompt moves a window's cv2 by a lot.
    Windows without a prompt leave the remembered spread; nothing ever measured: none."""
    old = (perfmodel.PrefillSpread(mean_ratio=remembered.prefill_mean_ratio, cv2=remembered.prefill_cv2)
           if remembered is not None and remembered.prefill_mean_ratio is not None
           and remembered.prefill_cv2 is not None else None)
    points = [point for p in serving for point in p.prompt_lengths]
    if not points:
        return old or perfmodel.NO_SPREAD
    now = knee.shape_spread(spec, knobs, points)
    if old is None:
        return now
    return perfmodel.PrefillSpread(mean_ratio=knee.ewma(old.mean_ratio, now.mean_ratio),
                                   cv2=knee.ewma(old.cv2, now.cv2))


def _attainment(served: list[observation.PodMetrics], *, unrated: float) -> float | None:
    """The share of requests within the SLO across pods, weighted by request rate (`unrated`: the weight of a pod
    without one), at the most its histogram buckets allow (a bucket straddling an objective is no miss)."""
    return _weighted([(m.slo_attainment_high if m.slo_attainment_high is not None else m.slo_attainment,
                       m.requests_per_s or unrated) for m in served])


def _weighted(values: list[tuple[float | None, float]]) -> float | None:
    pairs = [(v, w) for v, w in values if v is not None and math.isfinite(v)]
    if not pairs:
        return None
    weight = sum(w for _, w in pairs)
    if weight <= 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / weight


# ---------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Out:
    """What one decide() call accumulates before it becomes a Decision."""

    events: list[observation.Event] = dataclasses.field(default_factory=list)
    records: list[models.DecisionRecord] = dataclasses.field(default_factory=list)

    def record(self, now: datetime.datetime, kind: str, action: str, reason: str, *, applied: bool,
               event: str | None = None, warning: bool = False) -> None:
        self.records.append(models.DecisionRecord(
            time=conditions.timestamp(now), kind=kind, action=action[:256], reason=reason[:1024], applied=applied))
        if event:
            self.events.append(observation.Event(type="Warning" if warning else "Normal", reason=event,
                                                 message=f"{action}: {reason}"[:1024]))


def decide(obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
    """One reconcile as a pipeline: observe -> plan the knobs -> tune (the knob lifecycle) -> size replicas ->
    roll out -> report. Each step reads what the steps before it found; `out` collects records and events."""
    out = _Out()
    seen = _observe(obs, now)
    plan = _plan_knobs(seen)
    tuning = _tune(seen, plan, out)
    sizing = _size(seen, tuning, out)
    rolled = _roll_out(seen, tuning, sizing, out)
    status = _report(seen, plan, tuning, sizing=sizing, rolled=rolled, out=out)
    return observation.Decision(revisions=rolled.plan.revisions, pod_patches=rolled.plan.patches, status=status,
                                events=tuple(out.events))


@dataclasses.dataclass(frozen=True, slots=True)
class _Seen:
    """What this cycle observes: the knobs that run, the screened metrics, the request shape, the calibration."""

    obs: observation.Observation
    now: datetime.datetime
    runtime: runtimes.Engine
    initial: models.Knobs
    initial_why: str
    current: models.Knobs
    forced: str | None
    health: _Metrics
    live: list[observation.PodFacts]
    serving_pods: list[observation.PodFacts]
    pm: dict[str, observation.PodMetrics]
    garbage: list[str]
    measured_pods: list[observation.PodFacts]
    served: list[observation.PodMetrics]
    measured_workload: bool
    workload: knee.Workload
    cal: models.Calibration
    cold: float
    spread: perfmodel.PrefillSpread  # the prompts' prefill spread as measured (reported, not planned with)
    running: models.Knobs  # the knobs the serving configuration's pods run
    points: list[observation.PodMetrics]  # those pods' metrics (every serving pod's before any configuration)

    @property
    def spec(self) -> models.InferenceDeploymentSpec:
        return self.obs.spec

    @property
    def prev(self) -> models.InferenceDeploymentStatus:
        return self.obs.status

    @property
    def t(self) -> float:
        return self.now.timestamp()

    @property
    def window(self) -> float:
        return self.obs.metrics.window if self.obs.metrics is not None else 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """The knee the model finds for this shape: the knobs it would run, why that KV dtype, how sure it is."""

    best: knee.Prediction
    kv_why: str
    conf: float
    basis: str
    preempting: bool
    kv_full: bool  # a serving pod's free KV cache is under one running request's tokens (knee.kv_full)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tuning:
    """The knob lifecycle's step: the knobs targeted, the revision they make, what was rejected or kept."""

    target: models.Knobs
    target_rev: str
    changed: bool
    tuned_now: bool
    new_cfg: models.ConfigStatus
    rejected: list[models.Rejection]
    previous_config: models.ConfigStatus | None
    # Why the knobs should leave the ones that ran this cycle for the knee, whatever waits on it (None when
    # nothing would move them): what tells a change to come from the knee's wobble in the Tuned condition.
    motive: _Motive | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Sizing:
    """Serving and standby replicas, the demand behind them, and how many old pods a rollout must keep."""

    serving: int
    standby: int
    demand: models.DemandStatus | None
    carry: int | None
    health: _Metrics
    why: str
    held: float = math.inf  # the running requests the target's knobs hold within the SLO (_held_slots)


@dataclasses.dataclass(frozen=True, slots=True)
class _Rolled:
    plan: rollout.Plan
    config: models.ConfigStatus | None
    target: models.ConfigStatus | None
    new_cfg: models.ConfigStatus


def _observe(obs: observation.Observation, now: datetime.datetime) -> _Seen:
    """The knobs that run now, the metrics held to what the pods can do, the request shape, the calibration."""
    spec, prev = obs.spec, obs.status
    t = now.timestamp()
    runtime = registry.for_engine(spec.engine)

    # --- what runs now -------------------------------------------------------------------------
    initial, initial_why = initial_knobs(spec)
    config = prev.config
    current = _knobs(prev.target) or _knobs(config) or initial
    forced = None
    if not allowed(spec, current):
        forced = f"the spec no longer allows maxBatchSize {current.max_batch_size}/KV {current.kv_cache_dtype.value}"
        current = initial

    # --- metrics -------------------------------------------------------------------------------
    health = _metrics_health(obs, t)
    live = [p for p in obs.pods if not p.deleting]
    serving_pods = [p for p in live if p.ready and p.serving]
    # Each pod's claims held to what its knobs and GPUs can do, and queue claims to what most pods agree on.
    screened = plausibility.screen(spec, obs.pods, obs.revisions, health.pods,
                                   window=obs.metrics.window if obs.metrics is not None else 60.0)
    pm = screened.pods
    garbage = [*(obs.metrics.ignored if obs.metrics is not None else ()), *screened.garbage]
    if health.ok:
        health = dataclasses.replace(health, pods=pm, message=_reporting(len(pm), garbage, screened.outvoted))
    # A pod younger than the metrics window reports rates over a partly empty window (a 5 s old pod shows a
    # tenth of its real rate over 60 s): its numbers would mislead the calibration and the demand estimate.
    grace = obs.metrics.grace if obs.metrics is not None else 0.0
    measured_pods = [p for p in serving_pods if p.name in pm and t - (p.ready_since or p.created) >= grace]
    served = [pm[p.name] for p in measured_pods]
    # While no pod has served a whole window (right after a scale-up), the last measured request shape stands:
    # falling back to the prior's 1,000/200 made a 600/60 load look a third as cheap to serve for a cycle
    # (14.6 -> 4.3 req/s per replica) and the replicas jumped 1 -> 3. Young pods' own token means are biased
    # (their short requests finish first), so they are not asked.
    remembered = prev.knee
    # The prompts' spread is measured and reported (status.knee.prefillCv2), not yet planned with: in the knee as
    # it stands (the TTFT objective met with the batch full at full throughput) the M/G/1 wait it brings shrank
    # the knee of chat and long-prompt loads and lost an on/off validation scenario (docs/concepts.md, "The
    # spread of the prompts"), so the workload planned for keeps every prompt at the mean's length.
    spread = _spread(spec, current, served, remembered)
    measured = _workload(served)
    measured_workload = measured is not None
    hits = (prev.observed.prefix_cache_hit_rate if prev.observed is not None else None) or 0.0
    workload = measured or (
        knee.Workload(isl=remembered.input_tokens, osl=remembered.output_tokens, prefix_hit_rate=min(0.95, hits))
        if remembered is not None and remembered.input_tokens and remembered.output_tokens else knee.PRIOR_WORKLOAD)

    # --- calibrate on the pods of the configuration that serves -----------------------------------
    # The latencies measured in the window are compared with the model at the window's own request shape.
    cal = prev.knee.calibration if prev.knee is not None else models.Calibration()
    # The pods of the configuration that serves and the knobs they run (during a rollout `current` is the target's).
    running = _knobs(config) or current
    points = [pm[p.name] for p in serving_pods
              if (config is None or p.revision == config.revision) and p.name in pm]
    context = remembered.context_tokens if remembered is not None else None
    if health.ok and config is not None:
        context = knee.running_context(spec, running, workload, points, old=context)
        if workload is not knee.PRIOR_WORKLOAD:
            workload = dataclasses.replace(workload, context=context)
        if measured_workload:
            cal = knee.calibrate(cal, spec, running, workload, points)
    cold = _cold_start(spec, obs)
    last = timestamps.seconds(prev.demand.updated) if prev.demand is not None else None
    if measured is not None:
        workload = _smoothed(remembered, measured, dt=0.0 if last is None else t - last, horizon=cold)
    workload = dataclasses.replace(workload, context=context) if workload is not knee.PRIOR_WORKLOAD else workload
    return _Seen(obs=obs, now=now, runtime=runtime, initial=initial, initial_why=initial_why, current=current,
                 forced=forced, health=health, live=live, serving_pods=serving_pods, pm=pm, garbage=garbage,
                 measured_pods=measured_pods, served=served, measured_workload=measured_workload, workload=workload,
                 cal=cal, cold=cold, spread=spread, running=running, points=points)


def _smoothed(remembered: models.KneeStatus | None, window: knee.Workload, *, dt: float,
              horizon: float) -> knee.Workload:
    """The request shape the knobs and replicas are planned for: the windows' shapes averaged over a cold start.

    Knobs and replicas both take a cold start to change, so the shape worth planning for is the one over that
    horizon, not one window's: a pod of the Mooncake shape serves a few prompts a minute, and the mean prompt of
    the fleet's 60 s window moved between 7,600 and 20,000 tokens from one minute to the next, each move a new
    knee. An EWMA over the cold start: every 15 s at a 300 s cold start, 1 - e^(-15/300) = 4.9% of the way to
    the window's shape (a lasting 2x shift shows 63% of itself after one cold start, when new pods could first
    serve it); at a 60 s cold start, 22%. The prefix-cache hit rate is the window's."""
    if remembered is None or not remembered.input_tokens or not remembered.output_tokens or dt <= 0:
        return window
    a = scaling.alpha(dt, max(horizon, scaling.RATE_TAU))

    def toward(old: int, new: int) -> int:
        # At least a token each cycle, so the average reaches a lasting shape rather than stalling where 4.9%
        # of what is left rounds to nothing (10 tokens short of it).
        step = a * (new - old)
        return old + (math.ceil(step) if step > 0 else math.floor(step))

    return dataclasses.replace(window, isl=max(1, toward(remembered.input_tokens, window.isl)),
                               osl=max(2, toward(remembered.output_tokens, window.osl)))


def _plan_knobs(s: _Seen) -> _Plan:
    """The knee for this shape at each KV dtype (each with its best token budget), and which dtype to run."""
    spec, prev, workload, cal, served, current = s.spec, s.prev, s.workload, s.cal, s.served, s.current
    runtime, dialect = s.runtime, s.runtime.dialect
    gpu = catalog.resolve_gpu(spec.accelerator)
    def ceiling(kv: models.KvDtype) -> int | None:
        caps = [r.max_batch_size for r in prev.rejected if r.kv_cache_dtype is kv]
        # A rejected size is an upper bound: propose at most 90% of the smallest one rejected.
        return max(1, math.floor(min(caps) * 0.9)) if caps else None

    knee_default = knee.search(spec, workload, cal, kv=models.KvDtype.DEFAULT,
                               ceiling=ceiling(models.KvDtype.DEFAULT))
    fp8_ok = gpu.supports_fp8 and runtime.fp8_kv and not any(
        r.kv_cache_dtype is models.KvDtype.FP8 for r in prev.rejected)
    knee_fp8 = knee.search(spec, workload, cal, kv=models.KvDtype.FP8, ceiling=ceiling(models.KvDtype.FP8)) \
        if fp8_ok and spec.tuning.kv_cache_dtype is not models.KvCachePolicy.DEFAULT else None
    preempting = any((m.preemptions_per_s or 0) > 0 for m in served)
    # A full cache is read pod by pod, as preemptions are (an average of one full pod and one at 95% is not full),
    # at the knobs those pods run: during a rollout `current` is the target's, whose cache may be twice the size.
    full_from = knee.kv_full_from(spec, s.running, workload)
    full = any(m.kv_usage is not None and knee.is_full(m.kv_usage, full_from) for m in s.points)
    # KV-limited: FP8's doubled capacity lets the knee grow (the default knee stops where the KV cache fills
    # and requests queue for blocks), or the running pods already fill their cache or preempt.
    kv_limited = (knee_fp8 is not None and knee_fp8.knobs.max_batch_size > knee_default.knobs.max_batch_size * 1.1) \
        or full or preempting
    kv_heavy = knee_default.kv_share >= KV_HEAVY
    # FP8 must promise 10% more goodput when it alone would restart the engines (default KV already at the
    # default knee); when the engines restart anyway (far from the knee) or already run FP8, it only has to be
    # no worse. Otherwise a knee near the bar flips 50/default <-> 62/fp8 from one minute to the next, and the
    # first change to 50/default was followed by a second restart for FP8 ten minutes later.
    restart_anyway = current.kv_cache_dtype is models.KvDtype.FP8 or abs(
        knee_default.knobs.max_batch_size - current.max_batch_size) > SAME_BATCH * current.max_batch_size
    fp8_bar = 1.0 if restart_anyway else 1 + GAIN_THRESHOLD
    if spec.tuning.kv_cache_dtype is models.KvCachePolicy.FP8 and knee_fp8 is not None:
        best, kv_why = knee_fp8, "tuning.kvCacheDtype fp8"
    elif (knee_fp8 is not None and (kv_limited or kv_heavy)
          and knee_fp8.output_tokens_per_s >= knee_default.output_tokens_per_s * fp8_bar
          and knee_fp8.feasible and not dialect.lacks(dialects.Signal.KV_USAGE)):
        best = knee_fp8
        kv_why = (f"FP8 KV: {'KV-limited' if kv_limited else f'KV is {knee_default.kv_share:.0%} of each step'}, "
                  f"{knee_fp8.output_tokens_per_s:.0f} vs {knee_default.output_tokens_per_s:.0f} tok/s")
    else:
        best, kv_why = knee_default, "default KV"
        if knee_fp8 is not None and dialect.lacks(dialects.Signal.KV_USAGE):
            kv_why += f" ({dialect.name} exports no KV usage, so no FP8 decision)"
    conf = knee.confidence(cal, best.batch)
    basis = "measured" if cal.samples > 0 else "prior"
    return _Plan(best=best, kv_why=kv_why, conf=conf, basis=basis, preempting=preempting, kv_full=full)


def _tune(s: _Seen, k: _Plan, out: _Out) -> _Tuning:
    """The knob lifecycle: verify a tuned change or roll it back, propose a new one, or keep what runs."""
    # A saturated engine admits a prefill chunk into every step and every request's ITL grows (58 -> 120 ms at
    # a 3x burst on the twin) whatever the max batch size: what is measured while requests queue judges the
    # replica count, not the knobs. Verification waits, and no knob change is urged by it.
    overloaded = _overloaded(s.served, _held_slots(s, s.current))
    c = _check(s, out, overloaded=overloaded)
    target, why, tuned_now = c.target, c.why, False
    motive = None
    if c.rollback is not None and not _same(c.target, s.current):
        # The knobs go back this cycle: that is the change to come, whatever the knee; the next cycle weighs the
        # knee against the knobs restored.
        motive = _Motive(event=lifecycle.Event.MISS, why=c.why, confidence=0.0, violating=False)
    elif s.health.ok and s.spec.tuning.mode is not models.TuningMode.OFF:
        motive = _motive(s.spec, s.prev, current=s.current, best=k.best, workload=s.workload, cal=s.cal,
                         served=s.served, kv_pressure=k.kv_full or k.preempting,
                         overloaded=overloaded, cold=s.cold, window=s.window)
        # Knobs the spec no longer allows go back to the initial ones first (s.current is those already).
        proposal = None if c.rollback is not None or s.forced else _propose(
            s.spec, s.prev, motive, current=s.current, best=k.best, kv_why=k.kv_why, conf=k.conf,
            metrics_ok=s.health.ok, t=s.t)
        if proposal is not None and _offer(s, proposal, out):
            (target, why), tuned_now = proposal, True
    tuning = _configure(s, k, out, target=target, why=why, tuned_now=tuned_now, check=c)
    return dataclasses.replace(tuning, motive=motive)


@dataclasses.dataclass(frozen=True, slots=True)
class _Check:
    """What verifying the running change and the rollout's health decided: the knobs to run, or a rollback."""

    target: models.Knobs
    why: str
    rollback: str | None
    rejected: list[models.Rejection]
    previous_config: models.ConfigStatus | None
    verified_now: bool


def _check(s: _Seen, out: _Out, *, overloaded: bool) -> _Check:
    """Verify a tuned change on what its pods measured, watch a rollout's health, and roll back when either
    says so (or say why it is kept when there is nothing to go back to)."""
    spec, prev, now, t, config = s.spec, s.prev, s.now, s.t, s.prev.config
    rolling = prev.target is not None
    shown = prev.target or config
    target, why = s.current, shown.reason if shown is not None else s.initial_why
    if s.forced:
        target, why = s.initial, f"{s.forced}; {s.initial_why}"
    verify_rollback = None
    if config is not None and not config.verified and not rolling and s.health.ok and config.tuned and not overloaded:
        verify_rollback = _verify(spec, config, obs=s.obs, pm=s.pm, t=t)
    health_rollback = _health_check(spec, prev, obs=s.obs, t=t) if rolling else None
    rollback = health_rollback or verify_rollback
    rejected = list(prev.rejected)
    previous_config = prev.previous
    if rollback is not None and prev.previous is not None:
        bad = prev.target if health_rollback else config
        assert bad is not None
        rejected.append(models.Rejection(max_batch_size=bad.max_batch_size, kv_cache_dtype=bad.kv_cache_dtype,
                                         max_num_batched_tokens=bad.max_num_batched_tokens,
                                         reason=rollback, time=conditions.timestamp(now)))
        target = _knobs(prev.previous) or s.initial
        why = f"rolled back from maxBatchSize {bad.max_batch_size}/KV {bad.kv_cache_dtype.value}: {rollback}"
        out.record(now, "rollback", _change(_knobs(bad) or s.initial, target), rollback, applied=True,
                   event="Rollback", warning=True)
        previous_config = None
    elif rollback is not None:
        verify_rollback = None  # nothing to go back to; keep it and say so
        out.record(now, "verify", "kept: no earlier configuration to return to", rollback, applied=False)
    verified_now = (config is not None and not config.verified and not rolling and verify_rollback is None
                    and rollback is None and lifecycle.verifiable(config, t) and config.tuned and not overloaded)
    return _Check(target=target, why=why, rollback=rollback, rejected=rejected, previous_config=previous_config,
                  verified_now=verified_now)


def _offer(s: _Seen, proposal: tuple[models.Knobs, str], out: _Out) -> bool:
    """A proposal is applied in tuning.mode auto (True), said once per distinct one in recommend."""
    new_knobs, reason = proposal
    action = _change(s.current, new_knobs)
    mode, prev = s.spec.tuning.mode, s.prev
    if mode is models.TuningMode.AUTO:
        out.record(s.now, "knobs", action, reason, applied=True, event="TuningChanged")
        return True
    if mode is models.TuningMode.RECOMMEND:
        # Say it once per distinct recommendation, not every cycle the calibration moves a little.
        said = prev.knee is not None and _same(models.Knobs(
            max_batch_size=prev.knee.max_batch_size, kv_cache_dtype=prev.knee.kv_cache_dtype,
            max_num_batched_tokens=prev.knee.max_num_batched_tokens), new_knobs)
        if not said or not any(r.kind == "knobs" and not r.applied for r in prev.decisions):
            out.record(s.now, "knobs", action, f"recommendation only (tuning.mode recommend): {reason}",
                       applied=False, event="TuningRecommended")
    return False


def _configure(s: _Seen, k: _Plan, out: _Out, *, target: models.Knobs, why: str, tuned_now: bool, check: _Check
               ) -> _Tuning:
    """The configuration the target knobs make: a new one (and its revision) when they changed, else the one
    known, marked verified when its check passed."""
    prev, now, workload, served, config = s.prev, s.now, s.workload, s.served, s.prev.config
    previous_config = check.previous_config
    target_rev = render.revision(s.spec, target)
    known = prev.target or config
    changed = known is None or known.revision != target_rev
    new_cfg: models.ConfigStatus
    if changed:
        planned = tuned_now and workload is not knee.PRIOR_WORKLOAD
        new_cfg = models.ConfigStatus(
            revision=target_rev, max_batch_size=target.max_batch_size, kv_cache_dtype=target.kv_cache_dtype,
            max_num_batched_tokens=target.max_num_batched_tokens,
            input_tokens=workload.isl if planned else None, output_tokens=workload.osl if planned else None,
            reason=why, since=conditions.timestamp(now), tuned=tuned_now,
            predicted_itl_p95_ms=round(k.best.itl_p * 1000, 2) if tuned_now else None,
            baseline_prefix_hit_rate=_weighted([(m.prefix_hit_rate, m.requests_per_s or 1.0) for m in served]),
            baseline_itl_p95_ms=None if (b := _weighted([(m.tpot_p or m.itl_p, m.requests_per_s or 1.0)
                                                          for m in served])) is None else round(b * 1000, 2),
            verified=check.rollback is not None or not tuned_now,
        )
        if tuned_now and config is not None:
            previous_config = config
        if not tuned_now and check.rollback is None:
            out.record(now, "revision", f"roll out revision {target_rev} (maxBatchSize {target.max_batch_size}, "
                       f"KV {target.kv_cache_dtype.value})", why, applied=True, event="RevisionCreated")
    else:
        assert known is not None
        new_cfg = known
    if check.verified_now and config is not None and not changed:
        # Kept: the shape it is judged against from now on is the one measured on its own pods (the first
        # minute's finished requests are the short ones: 1,315 prompt tokens measured for a 2,000-token load).
        measured = {"input_tokens": workload.isl, "output_tokens": workload.osl} if s.measured_workload else {}
        new_cfg = new_cfg.model_copy(update={"verified": True, **measured}) \
            if new_cfg.revision == config.revision else new_cfg
        out.record(now, "verify", f"kept maxBatchSize {config.max_batch_size}/KV {config.kv_cache_dtype.value}",
                   _verify_note(s.spec, config, obs=s.obs, pm=s.pm), applied=True)
    return _Tuning(target=target, target_rev=target_rev, changed=changed, tuned_now=tuned_now, new_cfg=new_cfg,
                   rejected=check.rejected, previous_config=previous_config)


def _size(s: _Seen, tuning: _Tuning, out: _Out) -> _Sizing:
    """Serving replicas for the demand at the target's capacity, standby for the forecast's error."""
    spec, prev, now = s.spec, s.prev, s.now
    prev_desired = prev.replicas.desired or spec.scaling.min_replicas
    if s.health.ok:
        sizing = _sized(s, tuning, out, prev_desired)
    else:
        # Frozen: never scale down on a missing signal; hold what was decided (bounds still apply), and the
        # scale-down delay starts over once the metrics are back. The rollout waits for the whole target revision.
        demand = None if prev.demand is None else prev.demand.model_copy(update={"below_since": None})
        sizing = _Sizing(
            serving=min(spec.scaling.max_replicas, max(spec.scaling.min_replicas, prev_desired)),
            standby=min(spec.scaling.standby.max, max(spec.scaling.standby.min, prev.replicas.desired_standby)),
            demand=demand, carry=None, health=s.health, why=f"frozen: {s.health.message}",
            held=_held_slots(s, tuning.target))
    if sizing.serving != prev_desired and prev.replicas.desired:
        kind = "ScaledUp" if sizing.serving > prev_desired else "ScaledDown"
        out.record(now, "replicas", f"serving replicas {prev_desired} -> {sizing.serving}", sizing.why, applied=True,
                   event=kind)
    if sizing.standby != prev.replicas.desired_standby and prev.replicas.desired:
        out.record(now, "standby", f"standby replicas {prev.replicas.desired_standby} -> {sizing.standby}",
                   sizing.why, applied=True)
    return sizing


def _demand(s: _Seen, target: models.Knobs, at_target: knee.Prediction, measured: float, *, overloaded: bool,
            pods: int) -> tuple[models.DemandStatus, float | None]:
    """The smoothed demand with this cycle's measured rate (and backlog) folded in, and the attainment read."""
    prev, workload = s.prev, s.workload
    # The SLO attainment the scale-down guard reads, from windows without a queue: misses while requests wait
    # are the replica count's own and scale it up already; after a burst they would hold a fleet sized for it
    # for a quarter of an hour (a 3x spike read 50% and took 15 minutes to recover).
    attained = None if overloaded else _attainment(s.served, unrated=0.0)
    # What the smoothed demand believes grows no faster than the fleet may (scaling.step_limit): one cycle's
    # claim of 1e12 req/s moved it to 2e11 for many minutes (40 replicas and 10 standby kept for 40 minutes);
    # bounded at the capacity of the pods one step allows, a claim that persists doubles it every cycle.
    # The capacity is the smaller of now's and at the request shape measured before this cycle: claims of tiny
    # requests (1 token in, 2 out) would otherwise raise the bound along with the demand.
    remembered = prev.knee
    shape = workload if remembered is None or not remembered.input_tokens or not remembered.output_tokens \
        else knee.Workload(isl=remembered.input_tokens, osl=remembered.output_tokens,
                           prefix_hit_rate=workload.prefix_hit_rate, spread=workload.spread)
    capacity = at_target.requests_per_s
    before = capacity if shape == workload else _point(s, target, shape).requests_per_s
    believable = min(capacity, before) * scaling.step_limit(pods)
    demand = scaling.update_demand(prev.demand, min(measured, believable), now=s.now, attainment=attained,
                                   lead=s.cold)
    if not overloaded and not any((m.requests_per_s or 0.0) > 0 for m in s.served):
        demand = demand.model_copy(update={"attainment": None})  # quiet: earlier misses say nothing of what comes
    return demand, attained


def _queue(s: _Seen, at_target: knee.Prediction, rate: float, backlog: float, budget: queueing.Budget
           ) -> scaling.Queue:
    """Three readings of the queue beside the window's rate (scaling.goal says what each asks for)."""
    prev, t = s.prev, s.t
    # The fast path (Knative's panic mode, but from the queue itself): requests queued right now beyond
    # the batch slots mean the window's rate lags a burst.
    queued = sum(max(0.0, (m.in_flight or 0.0) - at_target.batch) for m in s.pm.values())
    # A few queued at a full batch is Poisson noise the Erlang sizing already allows for; a burst queues more
    # than the serving pods clear within the wait budget (Little's law: a queue of Q ahead of pods serving X
    # req/s makes the next arrival wait Q / X). 2 pods of 4 req/s with 0.5 s to queue: 4 queued is a burst;
    # half a batch per pod (280 of 560 slots) let a 3x spike queue for a whole cycle unseen.
    if queued <= at_target.requests_per_s * max(1, len(s.serving_pods)) * queueing.budget_at(budget, 1.0):
        queued = 0.0
    # Its growth since the last cycle is arrivals the replicas could not take (scaling.queue_growth).
    last = prev.demand
    since = timestamps.seconds(last.updated) if last is not None else None
    in_flight = _in_flight(s.pm)
    growth = scaling.queue_growth(queued, in_flight, last=last, dt=t - since if since is not None else 0.0)
    standby_ready = sum(1 for x in s.live if x.ready and not x.serving)
    return scaling.Queue(rate=rate, backlog=backlog, queued=queued, growth=growth, standby_ready=standby_ready,
                         promotable=len(s.serving_pods) + standby_ready, in_flight=in_flight)


def _in_flight(pm: dict[str, observation.PodMetrics]) -> float | None:
    """Requests in flight on every pod that reports them (None where none does)."""
    values = [m.in_flight for m in pm.values() if m.in_flight is not None]
    return sum(values) if values else None


def _sized(s: _Seen, tuning: _Tuning, out: _Out, prev_desired: int) -> _Sizing:
    """Sizing on a whole picture of the metrics: demand, goal, the measured room, the carry, the standby pool."""
    spec, prev, obs, now, t, pm = s.spec, s.prev, s.obs, s.now, s.t, s.pm
    at_target = _point(s, tuning.target, s.workload)
    capacity = at_target.requests_per_s
    # Demand is what every pod served in the window, old revision and young pods included: during a rollout
    # the serving set changes hands, but the requests keep coming.
    rate = demand_rate(obs, pm, t, cold=s.cold)
    # Queued requests are a backlog, not a rate: new capacity drains them over the cold-start lead time
    # (2,000 waiting over 300 s adds 6.7 req/s, not the 33 req/s of draining them in a minute).
    backlog = sum((m.waiting or 0.0) for m in pm.values()) / max(s.cold, 60.0)
    bound = _knee_bound(s, tuning.target, at_target)
    slots = bound.batch if bound is not None else _held(at_target, tuning.target)
    overloaded = _overloaded(s.served, slots)
    demand, attained = _demand(s, tuning.target, at_target, rate + backlog, overloaded=overloaded,
                               pods=prev_desired + prev.replicas.desired_standby)
    # A new revision is sized for the demand at its own knobs at once: its pods are new, so there is
    # nothing to scale down slowly (the old revision serves until these are Ready).
    fresh = tuning.changed and tuning.tuned_now
    # Queueing may use what prefill leaves of the TTFT objective: 1.5 s - 0.3 s p95 prefill = 1.2 s.
    budget = knee.wait_budget(spec, at_target)
    # ... and may make late what the measured misses leave of the allowance (scaling.queue_budget): the
    # replicas spend the misses the SLO allows rather than keep half of them in reserve.
    miss = scaling.queue_budget(
        1 - spec.slo.percentile / 100, prior=knee.queue_miss(spec), attainment=demand.attainment,
        predicted_late=queueing.late(rate + backlog, replicas=len(s.serving_pods), capacity=capacity,
                                     slots=at_target.batch, wait_budget=budget, pooled=_pooled(spec)))
    q = _queue(s, bound or at_target, rate, backlog, budget)
    window = obs.metrics.window if obs.metrics is not None else 60.0
    goal = scaling.goal(spec.scaling, demand, q, capacity=capacity, slots=at_target.batch, wait_budget=budget,
                        miss=miss, current=0 if fresh else prev_desired, lead=s.cold, now=now, window=window,
                        pooled=_pooled(spec))
    if bound is not None and not fresh and goal.serving < prev_desired:
        kept = scaling.goal(spec.scaling, demand, q, capacity=bound.requests_per_s, slots=bound.batch,
                            wait_budget=knee.wait_budget(spec, bound), miss=miss, current=prev_desired,
                            lead=s.cold, now=now, window=window, pooled=_pooled(spec))
        if kept.serving > goal.serving:
            serving = min(kept.serving, prev_desired)
            goal = dataclasses.replace(kept, serving=serving, reason=(
                f"{kept.reason}; not below {serving}: at the full batch of maxBatchSize "
                f"{tuning.target.max_batch_size} ({at_target.batch:.0f} running) the SLO would be missed"))
    busy = sum(m.running or 0.0 for m in s.served) / max(goal.serving, 1) >= 0.5 * at_target.batch
    held = scaling.hold_for_room(spec, demand, goal, prev_desired=prev_desired,
                                 measured=attained is not None and not fresh, busy=busy, now=now, last=prev.demand)
    if held.began:  # said once, when the hold begins
        out.record(now, "replicas", f"serving replicas {held.serving} kept (scale-down to {goal.serving} held)",
                   held.why, applied=True, event="ScaleDownHeld")
    serving_n, standby_n, scale_why, demand = held.serving, held.standby, held.why, held.demand
    # The early handover reads the rate from every serving pod, so only from a whole, clean picture: a
    # target pod Ready 20 s ago has no series yet, and counting only the old pod beside it (25 of 150 req/s)
    # would take that pod out of the Service with the target a pod short; garbage reads as no traffic.
    carry: int | None = None  # a queue or an unclean picture: the rollout waits for the whole target revision
    whole = all(x.name in pm and pm[x.name].requests_per_s is not None for x in s.serving_pods)
    if q.queued <= 0 and whole and obs.metrics is not None and not s.garbage:
        # One pod more than the demand needs (measured now, or smoothed, whichever is higher: one quiet
        # window is not a trend): the old revision hands over to a target that carries it with room, not at
        # its edge (where a knee that holds at part load is first seen full); and never fewer than
        # minReplicas, the floor the user set for serving capacity.
        carry = max(spec.scaling.min_replicas, 1 + queueing.replicas_for(
            max(rate + backlog, demand.rate), capacity=capacity, slots=at_target.batch, wait_budget=budget,
            miss=miss, limit=spec.scaling.max_replicas, pooled=_pooled(spec)))
    standby_n, wanted = scaling.settle_standby(
        standby_n, prev_standby=prev.replicas.desired_standby,
        wanted=prev.demand.standby_wanted if prev.demand is not None else None, now=now, floor=held.floor)
    demand = demand.model_copy(update={"below_since": held.below_since, "asks": goal.asks,
                                       "queued": q.queued, "in_flight": q.in_flight,
                                       "standby_wanted": wanted})
    health = s.health
    if s.garbage:
        demand, serving_n, scale_why, health = _garbage_hold(s, demand, out, serving=serving_n, why=scale_why,
                                                                prev_desired=prev_desired)
    elif demand.garbage_since is not None:
        # Garbage that comes and goes (a NaN every other cycle) is one spell, not a new one each time: it ends
        # once a pending scale-down has had a whole scaleDownDelay of clean metrics, or none is pending.
        pending = timestamps.seconds(demand.below_since)
        if pending is None or t - pending >= scaling.scale_down_delay(spec.scaling, cold=s.cold):
            demand = demand.model_copy(update={"garbage_since": None})
    # At most one scale-up step per cycle (scaling.step_limit): a lie told once costs a step, not the fleet.
    serving_n, standby_n, limited = scaling.limit_step(
        spec.scaling, serving=serving_n, standby=standby_n, before=prev_desired + prev.replicas.desired_standby)
    if limited:
        scale_why = f"{scale_why}; {limited}"
    return _Sizing(serving=serving_n, standby=standby_n, demand=demand, carry=carry, health=health, why=scale_why,
                   held=slots)


def _pooled(spec: models.InferenceDeploymentSpec) -> bool:
    """Whether the replicas share one queue (a router that sends each request to the least busy pod), as
    opposed to each queueing on its own for a random share of the requests (scaling.routing)."""
    return spec.scaling.routing is models.Routing.LEAST_OUTSTANDING


def _knee_bound(s: _Seen, target: models.Knobs, at_target: knee.Prediction) -> knee.Prediction | None:
    """The knee under the initial knobs' cap, where they run under tuning.mode auto before the first change and
    their full batch misses the SLO; else none.

    Until the first change they are sized at their full batch (`_point`: pods started now come up with the new
    revision's knobs, so sizing at the knee would start pods at knobs about to go). But that full batch is not
    what they hold within the SLO, so it bounds two things, as the knee does under off and recommend: running
    requests beyond the knee's slots are overload (they slow every running request, as a queue would wait), and
    no scale-down goes below the count the knee holds. Llama-3.1-8B BF16 on an L40S at 24 req/s of 200-in,
    1,500-out requests at the engine's 256: the full batch (253 running, all the KV cache holds) predicted 3.02
    req/s a replica, and 17 replicas were cut to 9 on it; those ran at 100-117 ms ITL against 55 ms for the
    ten minutes (a 600 s cold start) new pods take, and the run held 55% of its requests in the SLO. At the knee
    under the cap (152 running, 2.5 req/s) it holds 100% with 7.4 GPU-h (a fixed 15 replicas: 7.5). Not on the
    prior's shape (nothing measured yet: its knee is a guess a cycle or two from being replaced; sizing on it
    started 15 pods for a 72B decode load that the first measured shape sent back to 8)."""
    if not _initial_measured(s, target):
        return None
    # The full batch judged as knee.serving_point judges it (the margin `held` keeps), so the bound does not come
    # and go with the calibration's measured error.
    if knee.predict(s.spec, target, s.workload, s.cal, margin=knee.MARGIN).feasible:
        return None
    under = knee.held(s.spec, target, s.workload, s.cal)  # at_target is the full batch: only the knee is asked
    return under if under.feasible and under.batch < at_target.batch else None


def _garbage_hold(s: _Seen, demand: models.DemandStatus, out: _Out, *, serving: int, why: str, prev_desired: int
                  ) -> tuple[models.DemandStatus, int, str, _Metrics]:
    """A picture with garbage in it (a NaN queue, a negative running count) may add capacity but never take it
    away: the dropped value could have been the load. The scale-down delay starts over, so the first clean cycle
    after garbage that comes and goes does not remove replicas at once: demand must look low for a whole
    scaleDownDelay of clean metrics. For GARBAGE_HOLD_SECONDS at most."""
    t, garbage, health = s.t, s.garbage, s.health
    began = timestamps.seconds(demand.garbage_since)
    if began is None:
        began = t
        demand = demand.model_copy(update={"garbage_since": conditions.timestamp(s.now)})
    if t - began < GARBAGE_HOLD_SECONDS:
        demand = demand.model_copy(update={"below_since": None})
        if serving < prev_desired:
            serving, why = prev_desired, f"scale-down held: garbage metrics ({garbage[0]})"
        return demand, serving, why, health
    message = (f"garbage in the metrics for {t - began:.0f} s no longer holds a scale-down "
               f"(at most {GARBAGE_HOLD_SECONDS:.0f} s): {'; '.join(garbage[:3])}")
    health = dataclasses.replace(health, reason="GarbageMetrics", message=message[:1024])
    last = s.prev.demand
    since = timestamps.seconds(last.updated) if last is not None else None
    if since is None or since - began < GARBAGE_HOLD_SECONDS:  # said once, when the hold ends
        out.events.append(observation.Event(type="Warning", reason="GarbageMetrics", message=message[:1024]))
    return demand, serving, why, health


def _roll_out(s: _Seen, tuning: _Tuning, sizing: _Sizing, out: _Out) -> _Rolled:
    """The revisions and pods for the target knobs at the sized replicas (rollout.plan), and what now serves."""
    spec, obs, now, pm, workload, serving_pods = s.spec, s.obs, s.now, s.pm, s.workload, s.serving_pods
    config, changed, target, target_rev = s.prev.config, tuning.changed, tuning.target, tuning.target_rev
    new_cfg, serving_n, standby_n, carry = tuning.new_cfg, sizing.serving, sizing.standby, sizing.carry
    if changed and serving_pods and serving_n > 0:
        # Both revisions are sized for the same demand: 13 pods at 1,024 serve what 7 at 13/fp8 will (1.86
        # each). Never below one: the old pods were sized for the demand before this cycle, and when a burst
        # asks for 4 new pods where 1 old served, that old pod is not worth 4.
        new_cfg = new_cfg.model_copy(update={"handover": round(max(1.0, len(serving_pods) / serving_n), 3)})
    in_flight = {name: m.in_flight for name, m in pm.items()}
    # What each old revision's pods run at once (the KV cache may hold far fewer than its maxBatchSize).
    slots = {r.revision: knee.batch_that_fits(spec, r.knobs, workload) for r in obs.revisions
             if r.knobs is not None and r.revision != target_rev}
    p = rollout.plan(target=target_rev, knobs=target, serving=serving_n, standby=standby_n,
                     revisions=obs.revisions, pods=obs.pods, in_flight=in_flight,
                     drain_timeout=spec.scaling.drain_timeout, now=now, handover=new_cfg.handover, slots=slots,
                     carry=carry)
    if p.promoted:
        out.events.append(observation.Event(type="Normal", reason="StandbyPromoted",
                                            message=f"{p.promoted} standby pod(s) now serve"))
    said = _cut_message(s, p) if p.cut else None
    if said is not None:
        out.events.append(observation.Event(type="Warning", reason="RequestsCut", message=said))
    config_out: models.ConfigStatus | None
    if p.rollout_done:
        config_out, target_out = new_cfg, None
        if config is None or config.revision != new_cfg.revision:
            config_out = new_cfg.model_copy(update={"serving_since": conditions.timestamp(now)})
            out.events.append(observation.Event(type="Normal", reason="RevisionServing",
                                                message=f"revision {new_cfg.revision} serves: {new_cfg.reason}"))
    else:
        config_out, target_out = config, new_cfg
    return _Rolled(plan=p, config=config_out, target=target_out, new_cfg=new_cfg)


def _cut_message(s: _Seen, p: rollout.Plan) -> str | None:
    """Why requests are about to be cut, for whoever is paged, or None where they will likely finish.

    Pods deleted when scaling.drainTimeout ends still get their termination grace period (preStop + drainTimeout
    + 15 s, 150 s by default) before the engine is killed. A request on them takes about their mean TTFT plus
    the mean output at their mean ITL; within the grace period what is in flight finishes (on the bench's
    decode-heavy grid scenarios pods left at the timeout with requests in flight and nothing was lost), beyond it
    some of it is cut (405B on 8 x H200 after a knob change in overload: 3,539 in flight on 3 pods, 1,418 tokens
    at 162 ms a token and the wait before them, 539 s; 963 were cut, before old pods with a queue kept serving at
    the switch). Without latencies from those pods nothing says they finish: warned."""
    drain, grace = s.spec.scaling.drain_timeout, render.grace_period_seconds(s.spec)
    gone = [s.pm[name] for name, _ in p.cut if name in s.pm]
    itl = _weighted([(m.itl_mean, m.requests_per_s or 1.0) for m in gone])
    ttft = _weighted([(m.ttft_mean, m.requests_per_s or 1.0) for m in gone]) or 0.0
    took = ""
    if itl is not None and s.workload is not knee.PRIOR_WORKLOAD:
        seconds = ttft + s.workload.osl * itl
        if seconds <= grace:
            return None
        took = (f"; a request on them took about {seconds:.0f} s ({s.workload.osl} output tokens at "
                f"{itl * 1000:.0f} ms a token): raise scaling.drainTimeout above that")
    return (f"{sum(n for _, n in p.cut):.0f} request(s) were still in flight on {len(p.cut)} pod(s) when "
            f"scaling.drainTimeout ({_minutes(drain)}) ended: the pods are deleted, and what they do not finish "
            f"within their termination grace period ({grace} s) is lost{took}")[:1024]


def _report(s: _Seen, k: _Plan, tuning: _Tuning, *, sizing: _Sizing, rolled: _Rolled, out: _Out
            ) -> models.InferenceDeploymentStatus:
    """The status: what is observed, replicas, cost, the knee, and every condition (each written here only)."""
    spec, prev, obs, now, served, live = s.spec, s.prev, s.obs, s.now, s.served, s.live
    workload, cal = s.workload, s.cal
    dialect, current, measured_pods, cold = s.runtime.dialect, s.current, s.measured_pods, s.cold
    best, conf, basis, health, p = k.best, k.conf, k.basis, sizing.health, rolled.plan
    serving_n, standby_n, demand, rejected = sizing.serving, sizing.standby, sizing.demand, tuning.rejected
    mode, target, new_cfg = spec.tuning.mode, tuning.target, rolled.new_cfg
    config_out, target_out, previous_config = rolled.config, rolled.target, tuning.previous_config
    observed = _observed(spec, obs, served=served, workload=workload, knobs=current, ok=health.ok,
                         dialect=dialect, cal=cal, revisions=tuple(sorted({p.revision for p in measured_pods})))
    ready = [x for x in live if x.ready]
    replicas = models.ReplicaStatus(
        desired=serving_n, desired_standby=standby_n, serving=p.serving, standby=p.standby, ready=len(ready),
        display=f"{p.serving}/{serving_n}",
    )
    cost = _cost(spec, live, standby=p.standby, output_tokens_per_s=observed.output_tokens_per_second)
    knee_status = models.KneeStatus(
        max_batch_size=best.knobs.max_batch_size, kv_cache_dtype=best.knobs.kv_cache_dtype,
        max_num_batched_tokens=best.knobs.max_num_batched_tokens,
        goodput=round(best.output_tokens_per_s, 1), itl_p95_ms=round(best.itl_p * 1000, 2),
        ttft_p95_ms=round(best.ttft_p * 1000, 1), limited_by="slo" if best.feasible else "slo-unreachable",
        basis=basis, confidence=conf, calibration=cal,
        input_tokens=workload.isl if workload is not knee.PRIOR_WORKLOAD else None,
        output_tokens=workload.osl if workload is not knee.PRIOR_WORKLOAD else None,
        prefill_mean_ratio=round(s.spread.mean_ratio, 4) if s.spread != perfmodel.NO_SPREAD else None,
        prefill_cv2=round(s.spread.cv2, 4) if s.spread != perfmodel.NO_SPREAD else None,
        context_tokens=None if workload.context is None else round(workload.context, 1),
    )
    conds = _conditions(spec, prev, obs=obs, health=health, p=p, observed=observed, target=target, best=best,
                        mode=mode, cfg=new_cfg, now=now, dialect=dialect, rejected=rejected, conf=conf,
                        motive=tuning.motive, held=sizing.held)
    status = prev.model_copy(update={
        "observed_generation": obs.generation,
        "replicas": replicas,
        "config": config_out,
        "target": target_out,
        "previous": previous_config,
        "knee": knee_status,
        "observed": observed,
        "cost": cost,
        "demand": demand,
        "cold_start_seconds": round(cold, 1),
        "rejected": tuple(rejected[-32:]),
        "decisions": tuple([*prev.decisions, *out.records][-MAX_DECISIONS:]),
        "conditions": conds,
    })
    return status


def _spec_knobs(s: _Seen, knobs: models.Knobs) -> bool:
    """Whether `knobs` are the spec's own (the engine's default or initialMaxBatchSize) under tuning.mode off or
    recommend, or a cap at the floor of tuning.maxBatchSize: knobs the operator will not change or could not
    choose lower, so not a knee it chose."""
    return (s.spec.tuning.mode is not models.TuningMode.AUTO and _same(knobs, s.initial)) \
        or knobs.max_batch_size <= s.spec.tuning.max_batch_size.min


def _initial_measured(s: _Seen, knobs: models.Knobs) -> bool:
    """Whether `knobs` are the initial ones under tuning.mode auto, on a measured request shape: sized at their
    full batch until the first change, but bounded by the knee under their cap for scale-downs and overload
    (_knee_bound, _held_slots)."""
    return (s.spec.tuning.mode is models.TuningMode.AUTO and _same(knobs, s.initial)
            and s.workload is not knee.PRIOR_WORKLOAD)


def _point(s: _Seen, knobs: models.Knobs, workload: knee.Workload) -> knee.Prediction:
    """The operating point replicas running `knobs` are sized at (docs/concepts.md, "Knobs the operator does not
    choose"): the spec's own knobs under off or recommend at the knee under a cap whose full batch misses the SLO
    (knee.serving_point); any others at their cap. Under auto the spec's knobs run only until the first change,
    and pods started for them come up with the new revision's. Knobs the operator chose were a knee when chosen:
    a calibration that later puts the knee lower is the model drifting unless a measured miss says so."""
    if _spec_knobs(s, knobs):
        return knee.serving_point(s.spec, knobs, workload, s.cal)
    return knee.predict(s.spec, knobs, workload, s.cal)


def _held_slots(s: _Seen, knobs: models.Knobs) -> float:
    """The running requests `knobs` hold within the SLO where they are the spec's own and their full batch misses
    it (the knee under the cap), else no bound below the cap itself (no prediction asked)."""
    return _held(knee.serving_point(s.spec, knobs, s.workload, s.cal), knobs) if _spec_knobs(s, knobs) \
        or _initial_measured(s, knobs) else math.inf


def _held(at: knee.Prediction, knobs: models.Knobs) -> float:
    """The running requests held within the SLO at a sizing point of `knobs` (_point): the knee's batch where it
    lies under their cap, else no bound below the cap."""
    return at.batch if at.knobs.max_batch_size < knobs.max_batch_size else math.inf


def _overloaded(served: list[observation.PodMetrics], slots: float) -> bool:
    """Requests queue on the serving pods (more than half a request each on average), or run beyond the `slots`
    their knobs hold within the SLO (knee.serving_point): under a cap far above the knee, what comes beyond it
    is not queued but slows every running request, and it is the replica count's to fix as a queue is."""
    beyond = sum((m.waiting or 0.0) + max(0.0, (m.running or 0.0) - slots) for m in served)
    return beyond > 0.5 * max(1, len(served))


@dataclasses.dataclass(frozen=True, slots=True)
class _Motive:
    """A reason to move the knobs to the knee: the lifecycle event it is, why, and the confidence it needs."""

    event: lifecycle.Event
    why: str
    confidence: float
    violating: bool  # a measured ITL miss the knobs cause (a tuned knee that misses steps down 30% at a time)
    deferred: str | None = None  # what holds it whatever the lifecycle and the confidence allow


def _motive(
    spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, *, current: models.Knobs,
    best: knee.Prediction, workload: knee.Workload, cal: models.Calibration, served: list[observation.PodMetrics],
    kv_pressure: bool = False, overloaded: bool = False, cold: float | None = None, window: float = 60.0,
) -> _Motive | None:
    """Why the knobs should leave `current` for the knee, whatever waits on it (the lifecycle state, the
    confidence, minChangeInterval, the SLO missed now); None when nothing would move them: at the knee already,
    nothing in bounds meets the SLO, the model undoing its last change, or a gain too small to repay a
    restart."""
    if _same(best.knobs, current) or not best.feasible:
        return None
    config = prev.config
    now_pred = knee.predict(spec, current, workload, cal)
    measured = _weighted([(m.tpot_p or m.itl_p, m.requests_per_s or 1.0) for m in served])
    # Urgency comes from measurements only (the prior alone never restarts a server that has no traffic yet),
    # and from a clear miss: within 10% of the objective is noise a smaller batch would not fix.
    # ... but not while requests queue (see `overloaded` in decide): replicas fix that, and restarting engines
    # in the middle of a burst would only make it worse.
    # ... nor while replicas decided for the load are still loading: a full batch misses until they serve (a
    # ramp measured 44 ms at 55 with the 4th replica on its way, and 55 -> 52 restarted 4 pods for nothing).
    # (Tuned knobs only: the engine's defaults leave at once, as far above the knee as they usually are.)
    scaling_up = prev.replicas.serving < prev.replicas.desired and config is not None and config.tuned
    violating = _itl_missed(spec, served, measured) and not overloaded and not scaling_up
    if _undo(prev, current, best, violating=violating, kv_pressure=kv_pressure):
        return None  # the model undoing its last change
    # Clearly above (1.5x): near the knee, noise in the calibration must not restart engines back and forth.
    # And not when the running configuration has been measured with its batch nearly full inside the SLO:
    # that is the knee proven, whatever the model says.
    fullest = max((m.running or 0.0 for m in served), default=0.0)
    proven = measured is not None and measured <= spec.slo.itl and fullest >= 0.8 * current.max_batch_size
    above = current.max_batch_size > best.knobs.max_batch_size * knee.CLEARLY_ABOVE and not proven and not scaling_up
    # The window's request count: a shape read from a handful of requests (the first of a burst) is noise.
    counted = sum(m.requests_per_s or 0.0 for m in served) * window
    shifted = config is not None and config.tuned and _shifted(config, workload, counted)
    event = lifecycle.Event.MISS if violating or kv_pressure else (
        lifecycle.Event.SHIFT if shifted else lifecycle.Event.PROPOSE)
    if violating:
        why = (f"maxBatchSize {current.max_batch_size} misses the ITL SLO "
               f"({(measured or now_pred.itl_p) * 1000:.1f} ms > {spec.slo.itl * 1000:.0f} ms)")
        need = URGENT_CONFIDENCE
    elif (kv_pressure and best.knobs.kv_cache_dtype is models.KvDtype.FP8
          and current.kv_cache_dtype is models.KvDtype.DEFAULT):
        # A full KV cache (or preemptions) is measured, not predicted: FP8 KV doubles what fits.
        why, need = "the KV cache is full or preempting: FP8 KV doubles its capacity", URGENT_CONFIDENCE
    elif above:
        # Above the knee the SLO holds only while load is light: a burst fills the batch past the knee and
        # every request slows. At the knee, excess load queues instead, and replicas are sized for it.
        why = (f"maxBatchSize {current.max_batch_size} is above the knee: a full batch would miss "
               f"{_misses(spec, now_pred)}")
        need = MIN_CONFIDENCE
    else:
        # Only a miss measured now (the fleet may serve what the model thinks it cannot); the most the histogram
        # buckets allow, as everywhere a miss defers or urges a change.
        attained = _attainment(served, unrated=1.0)
        short = _short(spec, prev.demand, cold, now=knee.serving_point(spec, current, workload, cal), best=best) \
            if attained is not None and attained < spec.slo.percentile / 100 else None
        goodput = _goodput_reason(spec, prev, now_pred=now_pred, best=best, attained=attained, violating=violating,
                                  cold=cold, short=short)
        if goodput is None:
            return None
        # A fleet that cannot serve its demand at these knobs is a measured miss that only the knobs can fix:
        # it moves them in any lifecycle state that a miss does, on the physics alone if need be (its windows
        # all queue, and the calibration learns from none of them).
        if short:
            return _Motive(event=lifecycle.Event.MISS, why=goodput[0], confidence=URGENT_CONFIDENCE,
                           violating=violating, deferred=goodput[1])
        return _Motive(event=event, why=goodput[0], confidence=MIN_CONFIDENCE, violating=violating,
                       deferred=goodput[1])
    return _Motive(event=event, why=why, confidence=need, violating=violating)


def _propose(spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, motive: _Motive | None,
             *, current: models.Knobs, best: knee.Prediction, kv_why: str, conf: float, metrics_ok: bool, t: float
             ) -> tuple[models.Knobs, str] | None:
    """A knob change worth a restart now, with its reason; None to keep the current knobs."""
    where = _movable(spec, prev, metrics_ok=metrics_ok, t=t)
    if where is None or motive is None or motive.deferred or conf < motive.confidence:
        return None
    if not lifecycle.allows(where, motive.event):
        # Verifying: a tuned change is measured on its own pods before the model moves on from it (only a miss
        # moves it). Verified: one change per workload shift; the knobs move for a measured miss, a full KV
        # cache, or a request shape that has moved since they were planned, not for the calibration's drift (on
        # a bursty prefill-heavy load the model's next "better" knee flipped 8 -> 18 -> 9 in 12 minutes, each a
        # surge of new pods at a 300 s cold start).
        return None
    config = prev.config
    return _stepped(current, best, motive.why, tuned=motive.violating and config is not None and config.tuned,
                    kv_why=kv_why, conf=conf)


def _movable(spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, *,
             metrics_ok: bool, t: float) -> lifecycle.State | None:
    """The lifecycle state when the knobs may move at all this cycle, else None: frozen, rolling out, or within
    minChangeInterval of the last tuned change."""
    where = lifecycle.state(prev, frozen=spec.tuning.mode is models.TuningMode.OFF or not metrics_ok, t=t)
    if not lifecycle.MOVES[where]:
        return None  # frozen, or a rollout in progress
    config = prev.config
    since = timestamps.seconds(config.since) if config is not None and config.tuned else None
    if since is not None and t - since < spec.tuning.min_change_interval:
        return None
    return where


def _undo(prev: models.InferenceDeploymentStatus, current: models.Knobs, best: knee.Prediction, *,
          violating: bool, kv_pressure: bool) -> bool:
    """Whether the best knobs only undo the last tuned change without a measured reason to.

    The model undoing its own last change (9 -> 13 on a predicted gain, then 13 -> 8 on a predicted miss) is
    the calibration moving, not the server: only a measured violation (or a full KV cache) goes back there.
    The verification after each change rolls back a measured regression anyway."""
    back, config = prev.previous, prev.config
    if back is None or config is None or not config.tuned or violating or kv_pressure:
        return False
    new, old = best.knobs.max_batch_size, back.max_batch_size
    return new <= old * (1 + SAME_BATCH) if current.max_batch_size > old else new >= old * (1 - SAME_BATCH)


def _short(spec: models.InferenceDeploymentSpec, demand: models.DemandStatus | None, cold: float | None, *,
           now: knee.Prediction, best: knee.Prediction) -> str | None:
    """Why maxReplicas at the knobs' serving point (`now`) cannot serve the demand forecast (more of it queued past
    the TTFT budget than the sizing's share, knee.queue_miss: 2.5% at p95) while the knee's would serve more of
    it; None when replicas can still absorb it (or the knee would not help).

    Queueing past the TTFT budget at maxReplicas is not a burst that replicas on their way will absorb: it lasts
    as long as the load does, and the capacity per replica is the only lever left. Qwen2.5-72B FP8 on one H200,
    decode (200 in / 1,500 out), started at maxBatchSize 13: 30 replicas (maxReplicas) serve 13 x 30 requests at
    once against 37 req/s of 60 s each (2,200 Erlangs): every request queued, TTFT grew to 19 minutes, and the
    change to the knee (+850% goodput per replica) waited for the burst to pass for the whole 30 minutes."""
    if demand is None:
        return None
    rate = scaling.forecast(demand, lead=cold or 0.0)
    n = spec.scaling.max_replicas

    def late(p: knee.Prediction) -> float:
        return queueing.late(rate, replicas=n, capacity=p.requests_per_s, slots=p.batch,
                             wait_budget=knee.wait_budget(spec, p), pooled=_pooled(spec))

    late_now, late_best = late(now), late(best)
    if late_now <= knee.queue_miss(spec) or late_best >= late_now:
        return None
    return (f"at maxReplicas {n} these knobs leave {late_now:.0%} of the forecast {rate:.2f} req/s queued past "
            f"the TTFT budget, the knee {late_best:.0%}")


def _goodput_reason(spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, *,
                    now_pred: knee.Prediction, best: knee.Prediction, attained: float | None, violating: bool,
                    cold: float | None, short: str | None = None) -> tuple[str, str | None] | None:
    """A change for goodput per replica, when it is large enough and repays its restart, with what defers it
    (the SLO missed now: `attained`, the share of requests within it measured, _attainment); else None. When
    maxReplicas cannot serve the demand at the current knobs (`short`, see _short), the change neither waits for
    the miss to pass nor has to save replicas: it is made at once."""
    # Goodput per replica: throughput at a full batch, counted only while no violation is measured. A prediction
    # alone never zeroes it: that made any knee a "+inf%" gain (57 -> 50 on one recalibrated minute); being
    # predicted above the knee is the 1.5x rule's call.
    goodput_now = 0.0 if violating else now_pred.output_tokens_per_s
    gain = math.inf if goodput_now <= 0 else best.output_tokens_per_s / goodput_now - 1.0
    if gain < GAIN_THRESHOLD:
        return None
    # Not while the SLO is being missed: a burst is being absorbed, its forecast is a guess, and a restart
    # for goodput then surges pods into the middle of it (a 3x spike's first minute measured 64% within).
    # (The most the histogram buckets allow: a bucket straddling the objective is no evidence of a miss.)
    why = f"predicted goodput +{gain:.0%} per replica"
    if attained is not None and attained < spec.slo.percentile / 100:
        if short is not None:
            return f"{why}: {short}", None
        return why, (f"{attained:.0%} of requests within the SLO now: no restart for goodput while a burst is "
                     "absorbed")
    if cold is None:
        return why, None
    # More goodput per replica pays only in replicas it saves, and a restart costs a cold start of every
    # new replica: the saving must repay that within PAYBACK_SECONDS. Chasing the knee up as a trace's
    # requests shortened restarted the engines twice more in 20 minutes for no replica saved; a change
    # in the middle of a 3x spike surged 5 pods x 300 s to save 1 pod for the 6 minutes left of it.
    # 3 replicas instead of 4 at a 300 s cold start: 1 x 900 s, no more than 3 x 300 s, not worth it;
    # at a 60 s cold start it is.
    # Every pod of the new revision pays that cold start, its standby pool too: standby pods run the old knobs
    # and cannot be promoted into the new revision, so a pool of the same size starts beside its serving pods
    # (rollout.plan asks for serving + standby target pods at once). A falling 8B decode ramp at a 600 s cold
    # start, 4 standby held: 4 serving instead of 7 repays 4 x 600 s within 15 minutes (3 x 900 = 2,700 s), but
    # 8 pods started (4 x 600 s more), beside the old revision's 14 (grid g13: 8.74 GPU-h with the change, 7.25
    # without, 100% of requests within the SLO both).
    need_now, rate = _replicas_at(spec, prev.demand, cold, now_pred)
    need_best, _ = _replicas_at(spec, prev.demand, cold, best)
    restarted = need_best + prev.replicas.desired_standby
    if (need_now - need_best) * PAYBACK_SECONDS <= restarted * cold:
        return None
    return f"{why}, serving the forecast {rate:.2f} req/s with {need_best} replicas instead of {need_now}", None


def _stepped(current: models.Knobs, best: knee.Prediction, why: str, *, tuned: bool, kv_why: str, conf: float
             ) -> tuple[models.Knobs, str]:
    """The knobs to move to and the reason, with the knee's prediction; a tuned knee that misses (`tuned`) steps
    down by at most 30% at a time: one overloaded window skews the calibration, and the verification after the
    change tells whether to go further."""
    knobs = best.knobs
    if tuned and knobs.max_batch_size < current.max_batch_size * 0.7 and \
            knobs.max_num_batched_tokens == current.max_num_batched_tokens:
        knobs = current.model_copy(update={"max_batch_size": max(1, math.floor(current.max_batch_size * 0.7))})
        why += f"; stepping down 30% toward the knee at {best.knobs.max_batch_size}"
    budget = "" if best.knobs.max_num_batched_tokens is None else \
        f", maxNumBatchedTokens {best.knobs.max_num_batched_tokens}"
    return knobs, (f"{why}; knee at maxBatchSize {best.knobs.max_batch_size}{budget} ({kv_why}): predicted ITL p95 "
                        f"{best.itl_p * 1000:.1f} ms, TTFT p95 {best.ttft_p * 1000:.0f} ms, "
                        f"{best.output_tokens_per_s:.0f} tok/s per replica (confidence {conf:.2f})")


def demand_rate(obs: observation.Observation, pm: dict[str, observation.PodMetrics], t: float, *,
                 cold: float) -> float:
    """Requests/s over the metrics window, from every pod that reports (old revision and young pods alike).

    Prometheus' rate() divides a counter's increase by the whole range, so a pod Ready 15 s ago reports its
    15 s of requests over 60 s, and the sum over pods is every request the window saw, over the window: a
    handover from 6 old pods to 4 new ones reads 15 req/s throughout, not the 21 that rating each young pod
    over its own 15 s gave. That sum misses what pods no longer there served (their series are not read), and
    while every serving pod is younger than the window (a deployment that just started, or a rollout whose old
    pods have gone) it covers fewer seconds than the window. Those pods started empty, so what they took is
    what was counted plus what is still in flight and was not, over the seconds since the first was Ready: 6 pods
    Ready 15 s ago, 40 requests finished (0.67 req/s over 60 s) and 110 in flight, took (40 + 110) / 15 s = 10
    req/s; the sum alone reads 0.67. The higher of the two stands (old pods still draining are in the sum).
    Where the rate counts requests at their first token (PodMetrics.counted_at_start), the running ones are in
    it already and only the waiting ones are added: counting them twice read a handover on Qwen2.5-72B (5 new
    pods, 2 req/s, 13 s a request) as 3.9 req/s, and the fleet grew from 5 to 8 for a scale-down delay.
    """
    window = obs.metrics.window if obs.metrics is not None else 60.0
    total = sum((m.requests_per_s or 0.0) for m in pm.values())
    # A pod's series begin when its engine first comes up, which is its Ready time only for a pod that became
    # Ready one cold start after it was created: one that was Ready long before and flapped (a failed probe)
    # kept counting, and reading its whole window over the seconds since would multiply the demand.
    # A Ready time ahead of this clock (skew between the kubelet and the operator) is no start either.
    serving = [p for p in obs.pods if p.name in pm and p.ready and p.serving and not p.deleting]
    starts = [p.ready_since if p.ready_since is not None and p.ready_since <= t
              and p.ready_since - p.created <= 1.5 * cold else -math.inf for p in serving]
    if not starts or t - min(starts) >= window:
        return total
    took = sum((pm[p.name].requests_per_s or 0.0) * window + _uncounted(pm[p.name]) for p in serving)
    # Not over less than a scrape interval: 30 requests taken in the first second are not 30 req/s.
    return max(total, took / max(t - min(starts), SCRAPE_SECONDS))


def _uncounted(m: observation.PodMetrics) -> float:
    """Requests in a pod that its request rate has not counted yet: the waiting ones where it counts starts,
    else every one in flight."""
    return (m.waiting or 0.0) if m.counted_at_start else (m.in_flight or 0.0)


def _replicas_at(spec: models.InferenceDeploymentSpec, demand: models.DemandStatus | None, lead: float,
                 at: knee.Prediction) -> tuple[int, float]:
    """Serving replicas the demand forecast needs at a predicted operating point (the sizing decide() uses)."""
    rate = scaling.forecast(demand, lead=lead) if demand is not None else 0.0
    n = queueing.replicas_for(rate, capacity=at.requests_per_s, slots=at.batch, wait_budget=knee.wait_budget(spec, at),
                             miss=knee.queue_miss(spec), limit=spec.scaling.max_replicas, pooled=_pooled(spec))
    return n, rate


# A workload shift: the mean prompt or output length moved by a factor of 2 since the knobs were planned, the
# narrowest step of the engines' own 1-2-5 token histograms (vLLM's request_prompt_tokens buckets), so the
# finest move the operator can tell from the buckets it reads.
SHIFT = 2.0


# The fewest requests whose mean length is read as a shape: the textbook n >= 30 for a sample mean to be near
# normal; with a coefficient of variation of 1 (chat's outputs) its standard error is then 18%, so a factor of
# 2 is over five of them, not noise. The first seconds of a burst had 72 output tokens where the load had 30.
SHAPE_SAMPLE = 30


def _shifted(config: models.ConfigStatus, workload: knee.Workload, counted: float) -> bool:
    """Whether the request shape left the one these knobs were planned for (unknown: not shifted)."""
    if config.input_tokens is None or config.output_tokens is None or workload is knee.PRIOR_WORKLOAD \
            or counted < SHAPE_SAMPLE:
        return False
    return any(max(a / b, b / a) >= SHIFT for a, b in ((workload.isl, config.input_tokens),
                                                       (workload.osl, config.output_tokens)))


def _verify(spec: models.InferenceDeploymentSpec, config: models.ConfigStatus, *, obs: observation.Observation,
            pm: dict[str, observation.PodMetrics], t: float) -> str | None:
    """After a tuned change has served a while: a regression (or FP8 collapsing the prefix cache) as a reason."""
    if not lifecycle.verifiable(config, t):
        return None
    mine = [pm[p.name] for p in obs.pods if p.revision == config.revision and p.serving and p.ready
            and p.name in pm and (pm[p.name].requests_per_s or 0) > 0]
    if not mine:
        return None
    measured = _weighted([(m.tpot_p or m.itl_p, m.requests_per_s or 1.0) for m in mine])
    # A miss is the change's fault only if the knobs before it measured better: after 88 missed at 40 ms and
    # 33 misses at 40 ms too, going back to 88 fixes nothing (the two took turns every 5 minutes); the miss
    # itself asks _propose for a smaller batch instead.
    before = config.baseline_itl_p95_ms
    worse = before is None or measured is None or measured * 1000 > before * (1 + REGRESSION_TOLERANCE)
    if _itl_missed(spec, mine, measured) and worse:
        assert measured is not None
        predicted = f" (predicted {config.predicted_itl_p95_ms:.1f} ms)" if config.predicted_itl_p95_ms else ""
        return (f"measured ITL p{spec.slo.percentile} {measured * 1000:.1f} ms > SLO "
                f"{spec.slo.itl * 1000:.0f} ms{predicted}")
    hit = _weighted([(m.prefix_hit_rate, m.requests_per_s or 1.0) for m in mine])
    base = config.baseline_prefix_hit_rate
    if config.kv_cache_dtype is models.KvDtype.FP8 and base is not None and base >= 0.05 and hit is not None \
            and hit < base * PREFIX_COLLAPSE:
        return f"prefix-cache hit rate fell from {base:.0%} to {hit:.0%} with the FP8 KV cache"
    return None


def _itl_missed(spec: models.InferenceDeploymentSpec, pods: list[observation.PodMetrics],
                measured: float | None) -> bool:
    """Whether the measured per-request ITL percentile is evidence of a miss: beyond the objective by more than
    REGRESSION_TOLERANCE (40 ms: 44 ms), and, read from histogram buckets, with even the least value its bucket
    allows at or above the objective. vLLM's buckets at 25 and 50 ms hold a p95 that interpolates to 48.8 ms when
    every request took 25-50 ms: as well 26 ms as 49, no evidence against 40 ms; the next bucket up (from 50 ms)
    would be.

    And from pods that served most of the requests, each on its own figure, not only from the fleet's mean: one
    pod of four reporting 0.5 s (a liar, or one sick GPU that restarting every engine would not cure) put the mean
    at 130 ms and got the honest knee rolled back and rejected for good. Weighted by requests, as the SLO counts
    them: pods started a minute ago serve few requests fast and must not outvote the loaded ones (counting pods
    instead, the trace-300s bench, on the twin before it read metrics through
    prometheus.parse, ran 2 more restarts and 13% more GPU-hours). Each pod's rate is itself bounded
    by its hardware and its token counters (plausibility.screen).
    """
    limit = spec.slo.itl * (1 + REGRESSION_TOLERANCE)
    if measured is None or measured <= limit:
        return False
    floor = _weighted([(m.itl_floor, m.requests_per_s or 1.0) for m in pods])
    if floor is not None and floor < spec.slo.itl:
        return False
    voters = [(v, m.requests_per_s or 0.0) for m in pods if (v := m.tpot_p or m.itl_p) is not None]
    total = sum(w for _, w in voters)
    if total <= 0:  # no request finished anywhere: one vote per pod
        voters, total = [(v, 1.0) for v, _ in voters], float(len(voters))
    return 2 * sum(w for v, w in voters if v > limit) > total


def _verify_note(spec: models.InferenceDeploymentSpec, config: models.ConfigStatus, *, obs: observation.Observation,
                 pm: dict[str, observation.PodMetrics]) -> str:
    mine = [pm[p.name] for p in obs.pods if p.revision == config.revision and p.name in pm]
    measured = _weighted([(m.tpot_p or m.itl_p, m.requests_per_s or 1.0) for m in mine])
    text = "measured ITL " + (f"{measured * 1000:.1f} ms" if measured else "n/a")
    if config.predicted_itl_p95_ms:
        text += f" vs predicted {config.predicted_itl_p95_ms:.1f} ms"
    return f"{text} (SLO {spec.slo.itl * 1000:.0f} ms)"


def _health_check(spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, *,
                  obs: observation.Observation, t: float) -> str | None:
    """A rollout whose pods crash-loop or never become Ready is abandoned (the twin refuses FP8 on A100...)."""
    target = prev.target
    if target is None or not target.tuned:
        return None
    mine = [p for p in obs.pods if p.revision == target.revision and not p.deleting]
    crashing = [p for p in mine if p.restarts >= CRASH_RESTARTS or p.failed]
    if crashing:
        p = crashing[0]
        return (f"pod {p.name} of the new revision failed" if p.failed
                else f"pod {p.name} of the new revision restarted {p.restarts} times")
    since = timestamps.seconds(target.since)
    budget = STARTUP_BUDGET_COLD_STARTS * _cold_start(spec, obs)
    if since is not None and t - since > max(budget, 600.0) and not any(p.ready for p in mine):
        return f"no pod of the new revision became Ready within {t - since:.0f} s"
    return None


def _cold_start(spec: models.InferenceDeploymentSpec, obs: observation.Observation) -> float:
    """scaling.coldStart, else the p90 of recent creation-to-Ready times, else a two-minute guess."""
    if spec.scaling.cold_start is not None:
        return spec.scaling.cold_start
    times = sorted(p.ready_since - p.created for p in obs.pods if p.ready_since and p.ready_since >= p.created)
    if not times:
        return (obs.status.cold_start_seconds or DEFAULT_COLD_START)
    index = min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)
    measured = times[index]
    previous = obs.status.cold_start_seconds
    # Keep the larger of the last report and now while few pods are measured: a lucky fast start shouldn't
    # shrink the lead time the standby pool covers.
    return max(measured, previous) if previous and len(times) < 3 else measured


def _observed(spec: models.InferenceDeploymentSpec, obs: observation.Observation, *, cal: models.Calibration,
              served: list[observation.PodMetrics], workload: knee.Workload, knobs: models.Knobs, ok: bool,
              dialect: dialects.Dialect, revisions: tuple[str, ...]) -> models.ObservedStatus:
    if not ok or not served:
        return obs.status.observed or models.ObservedStatus()
    weights = [(m.requests_per_s or 0.0) for m in served]

    def avg(values: list[float | None]) -> float | None:
        return _weighted(list(zip(values, weights, strict=True)))

    def total(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    estimated: list[str] = []
    mbu = avg([m.mbu for m in served])
    source: str | None = "dcgm"
    if mbu is None:
        per_pod = [knee.estimate_mbu(spec, knobs, workload, running=m.running or 0.0, itl_mean=m.itl_mean or 0.0)
                   for m in served]
        mbu = avg(per_pod)
        source = "estimated" if mbu is not None else None
        if mbu is not None:
            estimated.append("mbu")
    ttft = avg([m.ttft_p for m in served])
    if ttft is None and dialect.lacks(dialects.Signal.TTFT):
        # TGI exports no TTFT: the calibrated model at the batch the pods actually run (not a full one).
        estimated.append("ttft")
        running = avg([m.running for m in served]) or 1.0
        ttft = knee.predict(spec, knobs, workload, cal, concurrency=max(1, round(running))).ttft_p
    out = models.ObservedStatus(
        ttft_p95_ms=None if ttft is None else round(ttft * 1000, 1),
        # Per request (its mean time per output token) first: what the ITL objective is judged on, and what
        # decisions quote. The per-token p95 counts every step a prefill chunk stalls: 151 ms on the demo's
        # defaults beside 74 ms per request, which made a tuned point that met the SLO look like a miss.
        itl_p95_ms=None if (itl := avg([m.tpot_p or m.itl_p for m in served])) is None else round(itl * 1000, 2),
        output_tokens_per_second=None if (o := total([m.output_tokens_per_s for m in served])) is None else round(o, 1),
        request_rate=None if (r := total([m.requests_per_s for m in served])) is None else round(r, 3),
        mbu=None if mbu is None else round(mbu, 3),
        mbu_source="dcgm" if source == "dcgm" and mbu is not None else ("estimated" if mbu is not None else None),
        kv_cache_usage=None if (k := avg([m.kv_usage for m in served])) is None else round(min(1.0, k), 3),
        prefix_cache_hit_rate=None if (h := avg([m.prefix_hit_rate for m in served])) is None else round(h, 3),
        queue_length=total([m.waiting for m in served]),
        slo_attainment=None if (a := avg([m.slo_attainment for m in served])) is None else round(a, 4),
        slo_attainment_low=None if (lo := avg([m.slo_attainment_low for m in served])) is None else round(lo, 4),
        slo_attainment_high=None if (hi := avg([m.slo_attainment_high for m in served])) is None else round(hi, 4),
        estimated=tuple(estimated),
        revisions=revisions,
    )
    return out


def _cost(spec: models.InferenceDeploymentSpec, live: list[observation.PodFacts], *, standby: int,
          output_tokens_per_s: float | None) -> models.CostStatus | None:
    price = spec.accelerator.hourly_cost
    if price is None:
        return None
    # Every pod that exists holds its GPUs, Ready or not: 3 pods x 2 GPUs x $2.50 = $15/h.
    hourly = len(live) * spec.accelerator.count * price
    per_million = None
    if output_tokens_per_s and output_tokens_per_s > 0:
        # $15/h over 3,000 tok/s x 3,600 s = 10.8 M tokens/h -> $1.39 per million.
        per_million = round(hourly / (output_tokens_per_s * 3600) * 1e6, 4)
    share = round(standby / len(live), 3) if live else None
    return models.CostStatus(cost_per_million_output_tokens=per_million, standby_share=share, hourly=round(hourly, 2))


_Said = tuple[bool | None, str, str]  # a condition's status, reason and message


def _conditions(
    spec: models.InferenceDeploymentSpec, prev: models.InferenceDeploymentStatus, *, obs: observation.Observation,
    health: _Metrics, p: rollout.Plan, observed: models.ObservedStatus, target: models.Knobs,
    best: knee.Prediction, mode: models.TuningMode, cfg: models.ConfigStatus, now: datetime.datetime,
    dialect: dialects.Dialect, rejected: list[models.Rejection], conf: float, motive: _Motive | None = None,
    held: float = math.inf,
) -> tuple[models.Condition, ...]:
    """Every condition, each from its one writer below, in the order they are shown."""
    C = models.ConditionType
    said: list[tuple[models.ConditionType, _Said]] = [
        (C.SPEC_VALID, (True, "Valid", "the spec passed validation")),
        (C.READY, _ready(spec, obs, p)),
        (C.PROGRESSING, _progressing(obs, p, cfg)),
        (C.METRICS_AVAILABLE, (health.ok, health.reason, health.message)),
        (C.SLO_MET, _slo_met(spec, health, observed)),
        (C.OBJECTIVES_RESOLVABLE, _resolvable(spec, obs)),
        (C.TUNED, _tuned(spec, health=health, target=target, best=best, mode=mode, cfg=cfg, now=now,
                         dialect=dialect, conf=conf, motive=motive, rolling=not p.rollout_done, held=held)),
        (C.DEGRADED, _degraded(rejected, now)),
    ]
    conds = prev.conditions
    for type_, (status, reason, message) in said:
        conds = conditions.upsert(conds, type=type_, status=status, reason=reason, message=message,
                                  generation=obs.generation, now=now)
    return conds


def _ready(spec: models.InferenceDeploymentSpec, obs: observation.Observation, p: rollout.Plan) -> _Said:
    if p.serving >= max(1, spec.scaling.min_replicas):
        return True, "Serving", f"{p.serving} replica(s) serving, {p.standby} on standby"
    starting = sum(1 for x in obs.pods if not x.ready and not x.deleting)
    return False, "ReplicasNotReady", f"{p.serving} replica(s) serving; {starting} pod(s) starting (model loading)"


def _progressing(obs: observation.Observation, p: rollout.Plan, cfg: models.ConfigStatus) -> _Said:
    if not p.rollout_done:
        return True, "RollingOut", (f"revision {cfg.revision} (maxBatchSize {cfg.max_batch_size}, KV "
                                    f"{cfg.kv_cache_dtype.value}) surges; the old revision serves until it is Ready")
    if p.draining or p.promoted:
        return True, "Scaling", f"{p.draining} pod(s) draining, {p.promoted} promoted"
    if not any(r.revision == cfg.revision for r in obs.revisions):
        return True, "PodsStarting", f"creating revision {cfg.revision}"
    starting = max(sum(1 for x in obs.pods if not x.ready and not x.deleting and x.revision == cfg.revision),
                   sum(r.replicas - r.ready_replicas for r in obs.revisions if r.revision == cfg.revision))
    if starting:
        return True, "PodsStarting", f"{starting} pod(s) starting (model loading)"
    return False, "Stable", f"revision {cfg.revision}"


def _slo_met(spec: models.InferenceDeploymentSpec, health: _Metrics, observed: models.ObservedStatus) -> _Said:
    attained = observed.slo_attainment
    low, high = observed.slo_attainment_low, observed.slo_attainment_high
    objectives = f"TTFT {spec.slo.ttft * 1000:.0f} ms and ITL {spec.slo.itl * 1000:.0f} ms"
    goal = spec.slo.percentile / 100.0
    if not health.ok or attained is None:
        return None, "NoMeasurement", "no recent requests measured against the SLO"
    if low is not None and high is not None and low < goal <= high:
        # Interpolating inside a bucket is a guess: vLLM's per-request ITL buckets jump from 25 to 50 ms, and
        # requests between them read as 60% within a 40 ms objective whatever they really were. Whoever is paged
        # must not be woken by a guess; the message says what the buckets allow.
        return None, "Unresolved", (f"{low:.0%} to {high:.0%} of requests within {objectives} (objective "
                                    f"{goal:.0%}; {attained:.1%} interpolated): the engine's histogram buckets "
                                    "around the objectives cannot tell which")
    met = attained >= goal if low is None or high is None else low >= goal
    return met, "WithinSLO" if met else "SLOMissed", (f"{attained:.1%} of requests within {objectives} "
                                                      f"(objective {goal:.0%})")


def _resolvable(spec: models.InferenceDeploymentSpec, obs: observation.Observation) -> _Said:
    # Said before any traffic (from the engine's published buckets) so the user can move an objective to an edge
    # before SLOMet ever reads Unresolved; once pods are scraped, from the edges they really export.
    inside = resolution.check(spec, obs.metrics.edges if obs.metrics is not None else None)
    if inside:
        return False, "InsideBucket", "; ".join(str(i) for i in inside)
    return True, "AtBucketEdges", "each objective read from a histogram sits on one of its bucket edges: attainment " \
        "is counted"


def _tuned(spec: models.InferenceDeploymentSpec, *, health: _Metrics, target: models.Knobs, best: knee.Prediction,
           mode: models.TuningMode, cfg: models.ConfigStatus, now: datetime.datetime, dialect: dialects.Dialect,
           conf: float, motive: _Motive | None = None, rolling: bool = False, held: float = math.inf) -> _Said:
    at_knee = _same(best.knobs, target)
    # Why a fleet at the spec's own cap runs more replicas than its throughput suggests (_held_slots).
    sized = "" if math.isinf(held) else (
        f"; replicas are sized to keep each batch at the knee under maxBatchSize {target.max_batch_size}, "
        f"{held:.0f} running (its full batch would miss the SLO)")
    blind = ""
    if spec.tuning.kv_cache_dtype is models.KvCachePolicy.AUTO and dialect.lacks(dialects.Signal.KV_USAGE):
        blind = f"; no FP8 KV decision: {dialect.name} exports no KV usage"
    if mode is models.TuningMode.OFF:
        return False, "TuningOff", f"tuning.mode off: the knobs stay as the spec sets them{sized}"
    if not best.feasible:
        return False, "SLOUnreachable", (
            f"no max batch size within bounds (nor token budget) meets the SLO on this hardware and request "
            f"shape: the best the planner reaches, maxBatchSize {best.knobs.max_batch_size}, "
            f"maxNumBatchedTokens {_budget(best.knobs)}, misses {_misses(spec, best)}; the knobs that "
            "serve the most within it are kept")
    if not health.ok:
        return None, "Frozen", f"knobs frozen: {health.message}"
    # Converging only while a change is pending: a reason to move (_motive) that the lifecycle lets through once
    # its waits end. Tuned knobs move again only for a miss or a shift, so the model's knee wobbling around
    # them is no change to come: in `make demo` it read 66-68 around a tuned 60 (10% apart at 66) and the
    # condition flipped True/False 13 times in 20 minutes, each a transition a person on call sees.
    settled = lifecycle.State.VERIFIED if cfg.tuned else lifecycle.State.UNTUNED
    pending = not at_knee and motive is not None and lifecycle.allows(settled, motive.event)
    knee_at = f"maxBatchSize {best.knobs.max_batch_size} (KV {best.knobs.kv_cache_dtype.value})"
    if mode is models.TuningMode.RECOMMEND and pending:
        return False, "Recommendation", (f"recommend maxBatchSize {best.knobs.max_batch_size}, KV "
                                         f"{best.knobs.kv_cache_dtype.value}{sized}")
    if pending:
        assert motive is not None
        return False, "Converging", (f"knee at {knee_at}: {motive.why}; "
                                     f"{_tuning_wait(spec, cfg, now=now, conf=conf, motive=motive, rolling=rolling)}"
                                     f"{blind}")
    return _kept(target, best, at_knee=at_knee, cfg=cfg, knee_at=knee_at, blind=blind)


def _kept(target: models.Knobs, best: knee.Prediction, *, at_knee: bool, cfg: models.ConfigStatus, knee_at: str,
          blind: str) -> _Said:
    """Tuned, AtKnee: the knobs that run are the knee, or no change to it is to come, and why."""
    knobs = f"maxBatchSize {target.max_batch_size}, KV {target.kv_cache_dtype.value}"
    if at_knee:
        why = "at the knee"
    elif cfg.tuned:
        why = (f"tuned at {cfg.since} and kept; the model's knee reads {knee_at} now, a drift tuned knobs do not "
               "follow: they move again for a measured ITL miss, a full KV cache, or a knee worth a restart once "
               "the request shape has shifted")
    else:
        why = (f"kept: the knee at {knee_at} is no change worth a restart (it needs a predicted gain of "
               f"{GAIN_THRESHOLD:.0%} per replica that repays the restart within {_minutes(PAYBACK_SECONDS)})")
    return True, "AtKnee", f"{knobs} {why}{blind}"


def _degraded(rejected: list[models.Rejection], now: datetime.datetime) -> _Said:
    t = now.timestamp()
    degraded = [r for r in rejected if t - (timestamps.seconds(r.time) or 0.0) < lifecycle.REJECTION_MEMORY]
    if degraded:
        last = degraded[-1]
        return True, "RolledBack", (f"maxBatchSize {last.max_batch_size}/KV {last.kv_cache_dtype.value} rejected: "
                                    f"{last.reason}")
    return False, "AsExpected", "no configuration rolled back in the last hour"


def _tuning_wait(spec: models.InferenceDeploymentSpec, cfg: models.ConfigStatus, *, now: datetime.datetime,
                 conf: float, motive: _Motive, rolling: bool) -> str:
    """What a pending change waits for, with the time it ends where there is one (the rules are _propose's)."""
    t = now.timestamp()
    since = timestamps.seconds(cfg.since)
    if rolling:
        return f"revision {cfg.revision} finishes rolling out first"
    if motive.deferred:
        return motive.deferred
    if cfg.tuned and since is not None and t - since < spec.tuning.min_change_interval:
        # Tuned at 14:00:00 with minChangeInterval 30m: the next change may come at 14:30:00, 25 min from 14:05.
        until = since + spec.tuning.min_change_interval
        at = conditions.timestamp(datetime.datetime.fromtimestamp(until, datetime.UTC))
        return (f"tuning.minChangeInterval {models.format_duration(spec.tuning.min_change_interval)} since the last "
                f"change: the next may come at {at} (in {_minutes(until - t)})")
    if cfg.tuned and not lifecycle.verifiable(cfg, t) and motive.event is not lifecycle.Event.MISS:
        start = timestamps.seconds(cfg.serving_since or cfg.since) or t
        return (f"revision {cfg.revision} is measured for {_minutes(lifecycle.VERIFY_SECONDS)} once it serves "
                f"before the model moves on (another {_minutes(start + lifecycle.VERIFY_SECONDS - t)})")
    if conf < motive.confidence:
        return f"a change needs the model's confidence at {motive.confidence} (now {conf:.2f})"
    return "the change comes at the next reconcile"


def _minutes(seconds: float) -> str:
    """90 -> '1.5 min', 1500 -> '25 min'."""
    return f"{max(0.0, seconds) / 60:.2g} min"


def invalid_status(
    status: models.InferenceDeploymentStatus, *, message: str, generation: int, now: datetime.datetime
) -> models.InferenceDeploymentStatus:
    """SpecValid=False with the problems; everything else is left as it was (nothing is changed)."""
    conds = conditions.upsert(
        status.conditions, type=models.ConditionType.SPEC_VALID, status=False, reason="InvalidSpec",
        message=message, generation=generation, now=now,
    )
    return status.model_copy(update={"conditions": conds})
