"""Pure: demand smoothing and forecast, serving replicas at the knee's capacity, and the standby pool size."""

from __future__ import annotations

import dataclasses
import datetime
import math

from infertune import conditions, models

# Smoothing horizons. The rate reacts within a minute (a 60 s EWMA follows a 2x step to 86% in 2 minutes),
# the trend over two, and the forecast error is remembered for five, so a burst keeps its standby a while.
RATE_TAU = 60.0
TREND_TAU = 120.0
ERROR_TAU = 300.0
# Serving replicas are planned at this share of the knee's throughput: the batch slots absorb Poisson
# bursts without queueing most of the time, so TTFT stays near its no-queue value.
UTILIZATION = 0.8
# One-sided 95%: 1.65 standard deviations of the forecast error over the lead time.
STANDBY_Z = 1.65


def _seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


def update_demand(previous: models.DemandStatus | None, rate: float, *, now: datetime.datetime) -> models.DemandStatus:
    """Fold one measured request rate into the smoothed rate, its trend and the forecast error.

    Every 15 s: alpha = 1 - e^(-15/60) = 0.22 for the rate. The error compares the measurement with what the
    previous state forecast for now (rate + trend x dt), so a steady ramp has a small error and a spike a big one.
    """
    stamp = conditions.timestamp(now)
    t = now.timestamp()
    last = _seconds(previous.updated) if previous is not None else None
    if previous is None or last is None:
        return models.DemandStatus(rate=rate, trend=0.0, error=0.0, updated=stamp)
    dt = t - last
    if dt <= 0:
        return previous
    expected = max(0.0, previous.rate + previous.trend * dt)
    smoothed = previous.rate + _alpha(dt, RATE_TAU) * (rate - previous.rate)
    slope = (smoothed - previous.rate) / dt
    trend = previous.trend + _alpha(dt, TREND_TAU) * (slope - previous.trend)
    error = previous.error + _alpha(dt, ERROR_TAU) * (abs(rate - expected) - previous.error)
    return models.DemandStatus(rate=max(0.0, smoothed), trend=trend, error=max(0.0, error), updated=stamp,
                               below_since=previous.below_since)


def forecast(demand: models.DemandStatus, *, lead: float) -> float:
    """Requests/s expected `lead` seconds ahead; a falling trend does not lower it (replicas come down slowly)."""
    return max(demand.rate, demand.rate + demand.trend * lead)


@dataclasses.dataclass(frozen=True, slots=True)
class Targets:
    serving: int
    standby: int
    below_since: str | None
    reason: str


def targets(
    spec: models.ScalingSpec, demand: models.DemandStatus, *, capacity: float, current: int, lead: float,
    now: datetime.datetime, measured: float | None = None,
) -> Targets:
    """Serving replicas for the forecast over the cold-start lead time, and standby for its error.

    20 req/s forecast, knee capacity 3 req/s per replica at 80%: ceil(20 / 2.4) = 9 serving. A forecast
    error of 1.5 req/s over the lead: ceil(1.65 x 1.5 / 2.4) = 2 standby.
    """
    usable = max(capacity * UTILIZATION, 1e-9)
    # Up at once: the latest measurement counts before smoothing catches up (Knative's panic mode does the
    # same with a 6 s window); down only on the smoothed forecast, after scaleDownDelay.
    expected = max(forecast(demand, lead=lead), measured or 0.0)
    need = min(spec.max_replicas, max(spec.min_replicas, math.ceil(expected / usable - 1e-9)))
    # The error of a rate forecast grows with the horizon like a random walk: per minute, times sqrt(minutes).
    spread = demand.error * math.sqrt(max(lead, 60.0) / 60.0)
    # maxReplicas bounds serving replicas; the standby pool has its own bounds on top.
    standby = min(spec.standby.max, max(spec.standby.min, math.ceil(STANDBY_Z * spread / usable - 1e-9)))
    why = f"forecast {expected:.2f} req/s over {lead:.0f} s / ({capacity:.2f} req/s per replica x {UTILIZATION:g})"
    if need >= current:
        return Targets(need, standby, None, f"{why} -> {need}")
    since = _seconds(demand.below_since)
    if since is None:
        return Targets(current, standby, conditions.timestamp(now),
                       f"{why} -> {need}; waiting scaleDownDelay before removing replicas")
    if now.timestamp() - since >= spec.scale_down_delay:
        return Targets(need, standby, None, f"{why} -> {need} after {spec.scale_down_delay:.0f} s below")
    return Targets(current, standby, demand.below_since,
                   f"{why} -> {need}; below since {demand.below_since}, waiting scaleDownDelay")
