"""Pure: demand smoothing and forecast, serving replicas at the knee's capacity, and the standby pool size."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence

from infertune import conditions, models, queueing, timestamps

# Smoothing horizons. The rate reacts within a minute (a 60 s EWMA follows a 2x step to 86% in 2 minutes), the
# trend over the cold start (trend_tau), and the forecast error is remembered for five minutes, so a burst keeps
# its standby a while.
# The measured SLO attainment is smoothed over five minutes too: a minute of 480 chat requests reads 95% +-1%
# from counting alone, and a scale-down waits for room under the objective (decide).
RATE_TAU = 60.0
ERROR_TAU = 300.0
ATTAINMENT_TAU = 300.0
# Offline sizing (`infertune knee`), where only a throughput is known: plan at 80% of it. The operator itself
# sizes with the queueing model below, which knows the batch slots and the TTFT budget.
UTILIZATION = 0.8
# One-sided 95%: 1.65 standard deviations of the forecast error over the lead time.
STANDBY_Z = 1.65
# The smoothed error is a mean absolute deviation; a normal's standard deviation is 1.25 times that.
MEAN_ABS_TO_SIGMA = 0.8


# A standby pod is started for a forecast that has asked for it this long (settle_standby).
STANDBY_SETTLE = 60.0
# Pods started for a growing queue clear what will be queued when they are Ready within this long (goal).
DRAIN_SECONDS = 60.0


# The scale-up step per cycle: Kubernetes HPA's default scale-up policy (autoscaling/v2 behavior.scaleUp) adds
# at most 100% of the current replicas or 4 pods per 15 s, whichever is more
# (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#default-behavior); the operator's cycle is
# 15 s by default (--interval). From 1 pod: 5; from 10: 20; a need that persists doubles the fleet every cycle.
STEP_FACTOR = 2
STEP_PODS = 4
# The HPA's default scale-down stabilization window (behavior.scaleDown.stabilizationWindowSeconds, same page):
# the least scaleDownDelay (auto) waits, however short the cold start.
HPA_STABILIZATION = 300.0


def step_limit(pods: int) -> int:
    """Pods (serving and standby) one cycle may grow to from `pods`: 1 -> 5, 3 -> 7, 10 -> 20."""
    return max(pods * STEP_FACTOR, pods + STEP_PODS)


def limit_step(spec: models.ScalingSpec, *, serving: int, standby: int, before: int) -> tuple[int, int, str | None]:
    """Serving and standby within one step of the `before` pods, serving first; the spec's floors always hold.

    One lying pod asked for 40 serving and 10 standby from 1: this cycle gets 5 serving; a claim told once is
    gone by the next, and the demand it leaves behind is bounded the same way (decide).
    """
    most = max(step_limit(before), spec.min_replicas + spec.standby.min)
    if serving + standby <= most:
        return serving, standby, None
    s = max(spec.min_replicas, min(serving, most))
    sb = max(spec.standby.min, min(standby, most - s))
    return s, sb, (f"scale-up limited to {most} pods this cycle ({serving} serving and {standby} standby asked; "
                   f"at most 100% or {STEP_PODS} pods more per cycle, as the HPA's default)")


def alpha(dt: float, tau: float) -> float:
    """One EWMA step over dt seconds at time constant tau: 1 - e^(-dt/tau) (15 s at 60 s: 0.22)."""
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


def trend_tau(lead: float) -> float:
    """The trend's memory: the lead (the cold start), and no shorter than the rate's own smoothing.

    The forecast extrapolates the slope over the coming cold start, and the slope over the last one is the
    estimate of it that is neither older than what pods started now will meet nor shorter than the 60 s the
    rate is smoothed over (a slope read faster than that is the window's noise). Every 15 s the trend moves
    1 - e^(-15/120) = 11.8% of the way at a 120 s cold start, 4.9% at 300 s. One cold start into a rise of
    6 req/s a minute, when pods started at its onset are Ready, it shows 43% of the slope at 120 s where a fixed
    300 s memory showed 21% (the smoothed rate's own slope builds over its 60 s as well; g02, a 32B chat diurnal,
    took 0.914 of requests within its SLO, 0.968 with this). At a 600 s cold start a burst of a minute moves it
    about half as much as a 300 s memory would (0.53x), and a pod started for it would be Ready long after. The
    memory has no upper bound: a cold start of 20 minutes keeps 20 minutes' slope, the horizon it extrapolates.
    """
    return max(lead, RATE_TAU)


def update_demand(previous: models.DemandStatus | None, rate: float, *, now: datetime.datetime,
                  attainment: float | None = None, lead: float = 60.0) -> models.DemandStatus:
    """Fold one measured request rate into the smoothed rate, its trend and the forecast error.

    Every 15 s: alpha = 1 - e^(-15/60) = 0.22 for the rate. The error compares the measurement with what the
    previous state forecast for now (rate + trend x dt), so a steady ramp has a small error and a spike a big one.
    """
    stamp = conditions.timestamp(now)
    t = now.timestamp()
    last = timestamps.seconds(previous.updated) if previous is not None else None
    if previous is None or last is None:
        return models.DemandStatus(rate=rate, trend=0.0, error=0.0, updated=stamp, attainment=attainment, peak=rate,
                                   peak_at=stamp)
    dt = t - last
    if dt <= 0:
        return previous
    held = previous.attainment
    if attainment is not None:
        held = attainment if held is None else held + alpha(dt, ATTAINMENT_TAU) * (attainment - held)
    expected = max(0.0, previous.rate + previous.trend * dt)
    smoothed = previous.rate + alpha(dt, RATE_TAU) * (rate - previous.rate)
    slope = (smoothed - previous.rate) / dt
    trend = previous.trend + alpha(dt, trend_tau(lead)) * (slope - previous.trend)
    error = previous.error + alpha(dt, ERROR_TAU) * (abs(rate - expected) - previous.error)
    # The peak is a running maximum that a cold start forgets: on/off load at 10 req/s for 3 minutes, then none
    # for 3, keeps its peak at 10 through the quiet minutes (a 300 s cold start), and a one-off burst is
    # forgotten one cold start after it ended.
    peak_at = timestamps.seconds(previous.peak_at)
    smoothed = max(0.0, smoothed)
    peak, peak_stamp = smoothed, stamp
    if peak_at is not None and smoothed < previous.peak and t - peak_at < lead:
        peak, peak_stamp = previous.peak, previous.peak_at or stamp
    out = models.DemandStatus(rate=smoothed, trend=trend, error=max(0.0, error), updated=stamp,
                              below_since=previous.below_since, asks=previous.asks,
                              attainment=held, held_since=previous.held_since,
                              garbage_since=previous.garbage_since, peak=peak, peak_at=peak_stamp)
    forecasts, lead_error = lead_errors(previous, out, now=t, stamp=stamp, dt=dt, lead=lead)
    return out.model_copy(update={"forecasts": forecasts, "lead_error": lead_error})


def lead_errors(previous: models.DemandStatus, now_demand: models.DemandStatus, *, now: float, stamp: str,
                dt: float, lead: float) -> tuple[tuple[models.Forecast, ...], float | None]:
    """The forecasts kept (this cycle's added, one per eighth of the lead) and the smoothed error of the one
    made a lead ago against the demand now: what the replicas started then actually met.

    The one-step error above is small on any smooth change, rise or fall, because the trend follows it a step
    behind; what a pod started now meets is the forecast's error one cold start on, and the trend's lag makes
    that error grow with the lead, not with its square root. A code load falling from 46 to 19 req/s over 10
    minutes (a 30-minute diurnal, 5-minute cold start) was forecast at the rate it left (a falling trend does not
    lower the forecast) and met less: a lead error of 18-21 req/s at the trough (measured on the twin, g07).
    Errors count both ways, since a demand that fell that fast over a cold start can rise as fast over the next:
    the standby band at the trough (19 + 1.65 x 18 / 0.8 = 56 req/s, 3 pods beyond the 3 serving at 11.5 req/s)
    is what the rise to 72 req/s met at once.
    """
    # (when, forecast), oldest first; a stamp that does not parse, or from after now, is no forecast of ours (a
    # clock ahead of this one, or a hand-edited status) and is dropped.
    made_at = [(at, f) for f in previous.forecasts if (at := timestamps.seconds(f.at)) is not None and at <= now]
    due = [(at, f) for at, f in made_at if at <= now - lead]
    lead_error = previous.lead_error
    if due:
        miss = abs(now_demand.rate - due[-1][1].rate)
        lead_error = miss if lead_error is None else lead_error + alpha(dt, ERROR_TAU) * (miss - lead_error)
    # Kept: the latest forecast whose lead has passed (compared each cycle until a newer one's has) and those
    # still waiting for theirs.
    start = due[-1][0] if due else -math.inf
    kept = [(at, f) for at, f in made_at if at >= start]
    if not kept or now - kept[-1][0] >= lead / models.ASK_SPANS:
        kept.append((now, models.Forecast(at=stamp, rate=forecast(now_demand, lead=lead))))
    return tuple(f for _, f in kept[-(2 * models.ASK_SPANS + 2):]), lead_error


def forecast(demand: models.DemandStatus, *, lead: float) -> float:
    """Requests/s expected `lead` seconds ahead; a falling trend does not lower it (replicas come down slowly).

    The smoothed rate trails a rising one by about its smoothing time (an EWMA of a ramp lags by its tau), so
    the trend is carried over that lag as well: 0.6 req/s more per minute, 300 s ahead, is 3.6 req/s above
    the smoothed rate, not 3.0.
    """
    return max(demand.rate, demand.rate + demand.trend * (lead + RATE_TAU))


@dataclasses.dataclass(frozen=True, slots=True)
class Targets:
    serving: int
    standby: int
    below_since: str | None
    reason: str
    floor: int  # the standby floor left once held serving pods stand in for it (the spec's where none do)
    asks: tuple[models.Ask, ...] = ()  # the scale-down window's asks, this cycle's included (remember_ask)


def queue_budget(allowance: float, *, prior: float, attainment: float | None, predicted_late: float) -> float:
    """The share of requests the replica count may let queue past the TTFT budget: the SLO's allowance less the
    misses measured beyond what queueing explains (latency tails, which more replicas do not remove).

    Before anything is measured, `prior` (half the allowance, knee.queue_miss). Measured: 97% within the SLO
    while the queue model says 0.5% queued too long leaves 3% - 0.5% = 2.5% to the tails, so queueing may take
    5% - 2.5% = 2.5% of a p95 allowance; 99.5% measured leaves it all 5%. Tails that take the whole allowance
    leave queueing a tenth of it, not nothing: replicas_for at a budget of 0 would ask for every replica allowed,
    and more replicas cannot cure a tail anyway."""
    if attainment is None:
        return prior
    tails = max(0.0, (1.0 - attainment) - predicted_late)
    return max(allowance / 10, allowance - tails)


def room(objective: float, *, rate: float, seconds: float = ATTAINMENT_TAU) -> float:
    """The measured attainment under which a scale-down waits: the objective plus one standard deviation of
    counting the requests the smoothed attainment covers (binomial). 95% at 8 req/s over 300 s (2,400
    requests): 95.4%; at 0.5 req/s (150 requests): 96.8%. Above it, fewer replicas may be tried."""
    n = max(1.0, rate * seconds)
    return min(1.0, objective + math.sqrt(objective * (1 - objective) / n))


def targets(
    spec: models.ScalingSpec, demand: models.DemandStatus, *, capacity: float, slots: float,
    wait_budget: queueing.Budget, miss: float, current: int, lead: float, now: datetime.datetime,
    measured: float | None = None,
    window: float = 60.0, pooled: bool = True,
) -> Targets:
    """Serving replicas for the forecast over the cold-start lead time, and standby for its error.

    Replicas come from the queueing model above (the TTFT budget left after prefill decides how much
    queueing is tolerable); standby from the forecast error: the replicas the forecast plus 1.65 times its
    spread over the lead would need, less the serving ones.
    """
    # Up at once: the latest measurement counts before smoothing catches up (Knative's panic mode does the
    # same with a 6 s window); down only on the smoothed forecast, after scaleDownDelay.
    expected = max(forecast(demand, lead=lead), measured or 0.0)
    sized = queueing.replicas_for(expected, capacity=capacity, slots=slots, wait_budget=wait_budget, miss=miss,
                                  limit=spec.max_replicas, pooled=pooled)
    need = min(spec.max_replicas, max(spec.min_replicas, sized))
    # Part of the forecast error is only the Poisson noise of counting requests over the metrics window
    # (8 req/s over 60 s: sqrt(480) / 60 = 0.37 req/s); the Erlang sizing above absorbs that already. What
    # is left is real change, and it grows with the horizon like a random walk: per minute, times sqrt(minutes).
    noise = math.sqrt(max(expected, 0.0) / max(window, 1.0))
    surprise = math.sqrt(max(0.0, (demand.error / MEAN_ABS_TO_SIGMA) ** 2 - noise**2))
    spread = surprise * math.sqrt(max(lead, 60.0) / 60.0)
    # Standby covers what the one-sided 95% forecast would need beyond the serving replicas. The serving
    # replicas already carry the slack of rounding up and of the queueing target, so a small error costs no
    # pod: 16 req/s at 7.9 req/s and 57 slots per replica needs 3 replicas, and 3 serve up to 20 req/s, so
    # a spread of 0.86 req/s (16 + 1.65 x 0.86 = 17.4) needs no standby, where rounding 1.4 / 7.9 = 0.18
    # replicas up kept a whole idle pod warm all day.
    # maxReplicas bounds serving replicas; the standby pool has its own bounds on top.
    # The error of a minute grows like a random walk only while the demand wanders: between levels it has
    # visited within a cold start (on/off load at 0 and 10 req/s, a minute's error of 3 req/s), it returns to
    # the level it left, not beyond it. On/off at 10 req/s over 4 serving replicas: 10 + 1.65 x 9 = 25 req/s
    # started 2 to 3 standby pods every burst, deleted unready when it ended; the peak, 10.7, needs none.
    surprise_rate = expected + STANDBY_Z * spread
    # Above every level visited within a cold start (a rise into new territory) the demand wanders, and the
    # band holds: capped at the forecast itself there, a diurnal's rising edge never held a standby pod.
    rising = demand.peak_at is None or expected > demand.peak
    upper_rate = surprise_rate if rising else min(surprise_rate, demand.peak)
    # ... and whatever the levels visited, the forecast is as wrong one cold start on as it was measured to be
    # (lead_errors): a steep diurnal's trough holds standby for the rise, where the band above, capped at the
    # levels of the descent, held none and the rise queued for minutes behind pods still loading.
    if demand.lead_error is not None:
        upper_rate = max(upper_rate, expected + STANDBY_Z * demand.lead_error / MEAN_ABS_TO_SIGMA)
    upper = queueing.replicas_for(upper_rate, capacity=capacity, slots=slots, wait_budget=wait_budget,
                                  miss=miss, limit=spec.max_replicas + spec.standby.max, pooled=pooled)
    def floor(serving: int, *, settled: bool) -> int:
        # The floor left once the serving pods beyond the need stand in for it (pool, below).
        surplus = max(0, serving - need) if settled else 0
        return max(0, spec.standby.min - surplus)

    def pool(serving: int, *, settled: bool = False) -> int:
        # Beyond the replicas that serve, held ones included: while a scale-down waits out its delay, 3 pods
        # serve where 2 would do, and the third already covers an upper forecast that needs 3 (a standby pod
        # started for it then sat loading for 3 minutes and was deleted when the scale-down came).
        # The floor counts them too, once the need has stayed below them for STANDBY_SETTLE (a need that dips
        # for one cycle would delete a standby pod and cold-start it again the next): a pod held serving beyond
        # the need is a warm pod a burst can use at once, as a standby one is. After a 3x spike, 4 pods served
        # where 2 were needed and the 2 standby pods refilled during the spike stood beside them for the whole
        # delay: 2 pods x 2 GPUs x 345 s = 0.38 GPU-h per spike. When the delay ends, the surplus serving pods
        # are demoted into the pool (rollout), so no cold start refills it.
        return min(spec.standby.max, max(floor(serving, settled=settled), upper - max(serving, spec.min_replicas)))

    # The budget as the replicas sized will run: 16 req/s over 3 replicas of 7.9 req/s is 68% of their throughput.
    budget = queueing.budget_at(wait_budget, expected / (max(need, 1) * capacity) if capacity > 0 else 1.0)
    why = (f"forecast {expected:.2f} req/s over {lead:.0f} s at {capacity:.2f} req/s and {slots:.0f} slots "
           f"per replica (queueing beyond {budget:.2f} s for under {miss:.1%})")
    delay = scale_down_delay(spec, cold=lead)
    asks = remember_ask(demand.asks, need, now=now, window=delay)
    if need >= current:
        return Targets(need, pool(need), None, f"{why} -> {need}", floor=spec.standby.min, asks=asks)
    since = timestamps.seconds(demand.below_since)
    if since is None:
        return Targets(current, pool(current), conditions.timestamp(now),
                       f"{why} -> {need}; waiting scaleDownDelay before removing replicas", floor=spec.standby.min,
                       asks=asks)
    settled = now.timestamp() - since >= STANDBY_SETTLE

    def held(serving: int, reason: str) -> Targets:
        sb = pool(serving, settled=settled)
        if sb < spec.standby.min:  # said, so a standby count under the floor is not read as a fault
            reason += (f"; {serving - need} serving replica(s) beyond the need stand in for the standby floor "
                       f"of {spec.standby.min}")
        return Targets(serving, sb, demand.below_since, reason, floor=floor(serving, settled=settled), asks=asks)

    if now.timestamp() - since < delay:
        return held(current, f"{why} -> {need}; below since {demand.below_since}, waiting scaleDownDelay")
    # After the delay, down to the most asked for within it, not to this cycle's ask: the Kubernetes HPA's
    # scale-down stabilization window (behavior.scaleDown.stabilizationWindowSeconds, 300 s by default) takes
    # the highest recommendation in it for the same reason: asks of 8, then 3, 7, 2 over and over (a need read
    # from a few long prompts a minute) come down to 8 and then 7, where the last ask would have been 2, 3 or 7
    # by chance, and a fleet of 2 is short until it grows back a cold start later. A steady fall is followed a
    # window behind.
    most = min(current, max(a.replicas for a in asks))
    if most >= current:
        return held(current, f"{why} -> {need}; {most} asked for within scaleDownDelay")
    return held(most, f"{why} -> {need}; {most}, the most asked for within {delay:.0f} s")


def scale_down_delay(spec: models.ScalingSpec, *, cold: float) -> float:
    """How long the need must stay below the serving replicas before they come down: the user's scaleDownDelay,
    or (auto) the longer of the HPA's default stabilization window and the cold start.

    A replica released and needed again within a cold start costs its GPUs for a whole cold start while it loads
    again, and the demand waits meanwhile; kept idle instead, it costs them for as long as it waits. Keeping it for
    as long as getting it back would cost is the break-even rule of the ski-rental problem (Karlin, Manasse,
    Rudolph and Sleator, 1988): for each spell a replica stands unneeded, at most twice the GPU time of the better
    of keeping and releasing it known in hindsight (misses aside), and a need that comes back within a cold start
    finds it still there. 405B on 8 x H200 at a 600 s cold start, 6 replicas serving 8 req/s where 3 would do:
    released at 300 s, a 3x spike at 480 s met 3 replicas and the 9 started for it were Ready after it had passed
    (attainment 0.49 at 46.5 GPU-h); kept for 600 s, the 6 served the spike (1.00 at 47.6 GPU-h; the GPU-hours
    are a knob change's rollout in the spike, see docs/concepts.md). The HPA's 300 s stays the least: it smooths
    asks that are noise (see `targets`).
    """
    if spec.scale_down_delay is not None:
        return spec.scale_down_delay
    return max(HPA_STABILIZATION, cold)


def remember_ask(asks: Sequence[models.Ask], need: int, *, now: datetime.datetime,
                 window: float) -> tuple[models.Ask, ...]:
    """The scale-down window's asks with this one added: the most per stretch of window / ASK_SPANS, stretches
    that ended before the window dropped, and an older stretch dropped once a newer one asks as much (it can no
    longer be the highest). At a 300 s window the stretches are 38 s (whole seconds, as the stamps are, counted
    from the epoch): an ask of 6 at 00:00:10 is kept as (00:00:44, 6), the end of its stretch; 9 at 00:00:25
    raises it to 9; 4 at 00:00:55 is kept after it; by 00:05:45 the 9 has left the window."""
    span = max(1, round(window / models.ASK_SPANS))
    t = now.timestamp()
    end = math.ceil(t / span) * span
    kept: list[models.Ask] = []
    for a in asks:
        at = timestamps.seconds(a.at)
        if at is None or at < t - window or at > end:
            continue  # out of the window (or a stamp from the future, which no clock of ours wrote)
        kept.append(a)
    if kept and timestamps.seconds(kept[-1].at) == end:
        need = max(need, kept.pop().replicas)
    while kept and kept[-1].replicas <= need:
        kept.pop()
    stamp = timestamps.text(datetime.datetime.fromtimestamp(end, tz=datetime.UTC))
    return (*kept, models.Ask(at=stamp, replicas=need))[-(2 * models.ASK_SPANS + 2):]


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    """This cycle's demand beside the queue: the window's rate, the backlog, what is queued beyond the batch
    slots and how fast that grew, and the pods that could take it now."""

    rate: float
    backlog: float
    queued: float
    growth: float
    standby_ready: int
    promotable: int  # serving pods and Ready standby pods
    in_flight: float | None = None  # requests in flight on every pod that reports them (queue_growth's next `last`)


def queue_growth(queued: float, in_flight: float | None, *, last: models.DemandStatus | None, dt: float) -> float:
    """Requests/s the queue beyond the batch slots grew by since the last cycle: arrivals the replicas could not
    take, the part of a burst the window's average has not caught up with yet (150 more queued than 15 s ago is
    10 req/s more demand). Only as far as the requests in flight grew too: the slots are the knee's, and a knee
    that falls as the measured shape lengthens queues requests that never arrived (13 uncapped pods running 160
    each, their knee 152 -> 136: 312 queued at once, read as 21 req/s, took an 8B decode ramp from 13 replicas to
    30 at 22 req/s). Nothing before a first cycle, or over no time."""
    if dt <= 0:
        return 0.0
    grew = queued - (last.queued if last is not None else 0.0)
    if last is not None and last.in_flight is not None and in_flight is not None:
        grew = min(grew, in_flight - last.in_flight)
    return max(0.0, grew) / dt


def goal(spec: models.ScalingSpec, demand: models.DemandStatus, q: Queue, *, capacity: float, slots: float,
         wait_budget: queueing.Budget, miss: float, current: int, lead: float, now: datetime.datetime,
         window: float, pooled: bool = True) -> Targets:
    """Serving and standby for the demand, read three ways when requests queue beyond the batch slots.

    The queue's growth since the last cycle is arrivals the replicas could not take, added to the rate. The
    queue itself is work waiting now, to be served within the TTFT budget: only standby pods can do that, so
    they are promoted for it at once (150 queued against a 1.1 s budget ask for 136 req/s), and no cold pod
    starts for it: 2 serving and 3 standby facing 150 queued promote to 5 instead of starting 14 that would be
    Ready after the burst is served. With no standby left and the queue still growing, pods started now meet
    the queue as it will be one cold start later, behind which every arrival waits (FIFO); they are sized to
    clear that within DRAIN_SECONDS: 100 queued growing 8/s over a 300 s cold start is 2,500 then, 42 req/s
    more; 90 growing 0.3/s is 180 then, 3 req/s more.
    """
    def sized(measured: float) -> Targets:
        return targets(spec, demand, capacity=capacity, slots=slots, wait_budget=wait_budget, miss=miss,
                       current=current, lead=lead, now=now, measured=measured, window=window, pooled=pooled)

    best = sized(q.rate + q.backlog + q.growth)
    if q.queued <= 0:
        return best
    if q.standby_ready:
        # The queue drains at full load, where the wait for prefill is longest and leaves the least budget.
        fast = sized(q.rate + q.backlog + q.queued / max(queueing.budget_at(wait_budget, 1.0), 1.0))
        if fast.serving > best.serving:
            # (The floor the held pods leave was counted at fast's serving count: the spec's floor stands.)
            best = dataclasses.replace(fast, serving=max(best.serving, min(fast.serving, q.promotable)),
                                       floor=spec.standby.min)
    elif q.growth > 0:
        ahead = sized(q.rate + q.growth + (q.queued + q.growth * lead) / DRAIN_SECONDS)
        if ahead.serving > best.serving:
            best = ahead
    return best


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    serving: int
    standby: int
    why: str
    demand: models.DemandStatus
    below_since: str | None
    began: bool  # the hold began this cycle (said once)
    floor: int  # the standby floor left once held serving pods stand in for it (Targets.floor)


def hold_for_room(spec: models.InferenceDeploymentSpec, demand: models.DemandStatus, goal: Targets, *,
                  prev_desired: int, measured: bool, busy: bool, now: datetime.datetime,
                  last: models.DemandStatus | None) -> Held:
    """A scale-down waits for room under the SLO, measured, not only predicted.

    While the smoothed share of requests within both objectives is under `room` (the percentile plus the
    counting noise), the replicas stay. The model sized a 70B chat load of 8 req/s at 6 replicas (Erlang
    queueing is short there), but 6 ran at 94.8%: the ITL tail of nearly full batches, which no queueing model
    sees. So the hold is for busy batches only (`busy`: the replicas left would run at least half their batch,
    58 running over 6 replicas of 13: 74%). Misses that more replicas do not fix (prompts too long for the TTFT
    objective at any load) hold nothing at 2 req/s over 8 replicas, and a quiet window forgets the misses before
    it. Replicas held serving cover the upper forecast as standby would: the pool shrinks by as many.
    """
    hold = min(prev_desired, spec.scaling.max_replicas)
    bar = room(spec.slo.percentile / 100, rate=demand.rate)
    if not (goal.serving < hold and measured and demand.attainment is not None and demand.attainment < bar
            and busy):
        if demand.held_since is not None:
            demand = demand.model_copy(update={"held_since": None})
        return Held(goal.serving, goal.standby, goal.reason, demand, goal.below_since, began=False, floor=goal.floor)
    why = (f"{goal.reason}; scale-down held: {demand.attainment:.1%} of requests met the SLO over the last "
           f"minutes, under {bar:.1%}")
    began = demand.held_since is None
    if began:
        demand = demand.model_copy(update={"held_since": conditions.timestamp(now)})
    # The floor is the goal's (what its own surplus pods leave of it, Targets.floor): pods held for room carry
    # load the SLO needs now, so they are no insurance against a burst and stand in for none of it.
    standby = max(goal.floor, goal.standby - (hold - goal.serving))
    # The delay stays served: the replicas go as soon as there is room, not a whole delay later.
    below = (last.below_since if last is not None else None) or conditions.timestamp(now)
    return Held(hold, standby, why, demand, below, began=began, floor=goal.floor)


def settle_standby(standby: int, *, prev_standby: int, wanted: str | None, now: datetime.datetime,
                   floor: int) -> tuple[int, str | None]:
    """The pool grows only for a need that lasts STANDBY_SETTLE, and shrinks at once: (pool, wanted since).

    Sized afresh each cycle, a forecast near a boundary (5 req/s against 7.6 per replica, upper 6.6) asked for
    1, 0, 1, 0 standby, and the pod was deleted while loading and started again, holding a GPU for minutes
    without ever becoming Ready. A burst does not wait for this: the queue promotes what is Ready and starts
    serving pods at once.

    The floor holds at once: the spec's, or what is left of it where held serving pods stand in for it
    (`floor`, Targets.floor). After a burst, 3 serving of which 1 is needed stepped down to 2 while the forecast
    band asked for 2 standby: the spec's floor of 2 at once demoted the one pod leaving and started another,
    where the pod still held covers one of the two."""
    if standby <= prev_standby:
        return standby, None
    base = min(standby, floor)
    since = timestamps.seconds(wanted)
    if since is None:
        return max(prev_standby, base), conditions.timestamp(now)
    if now.timestamp() - since < STANDBY_SETTLE:
        return max(prev_standby, base), wanted
    return standby, None
