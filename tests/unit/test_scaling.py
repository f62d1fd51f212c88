"""Test: serving replicas and the standby pool from the demand forecast (pure)."""

from __future__ import annotations

import datetime
import math

import pytest

from infertune import models, scaling

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SPEC = models.ScalingSpec.model_validate({"minReplicas": 1, "maxReplicas": 16, "standby": {"min": 0, "max": 4}})


def _targets(rate: float, error: float) -> scaling.Targets:
    demand = models.DemandStatus(rate=rate, trend=0.0, error=error, updated="2026-01-01T00:00:00Z")
    # 70B FP8 on two H100s at its knee: 7.9 req/s per replica with 57 batch slots, 1.1 s of TTFT to queue in.
    return scaling.targets(SPEC, demand, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=0,
                           lead=60.0, now=NOW, window=60.0)


def test_a_small_forecast_error_within_the_serving_slack_keeps_no_pod_warm() -> None:
    # 16 req/s with a 0.8 req/s error (1.65 sigma beyond the counting noise: 1.4 req/s): three replicas serve
    # 16 and 17.4 alike (up to 20); rounding 0.18 of a replica up to a whole idle pod would cost a third more
    # GPUs all day.
    t = _targets(16.0, 0.8)
    assert t.serving == 3 == scaling.replicas_for(16.0, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, limit=16)
    assert t.standby == 0


def test_standby_covers_what_the_upper_forecast_needs_beyond_the_serving_replicas() -> None:
    # A 3 req/s error (sigma 3.75, most of it real change beyond the counting noise) over a one-minute lead:
    # the upper forecast 16 + 1.65 x 3.7 = 22 req/s needs a fourth replica, kept warm on standby.
    t = _targets(16.0, 3.0)
    assert (t.serving, t.standby) == (3, 1)
    # ... within its bounds.
    assert _targets(16.0, 60.0).standby == 4


def test_standby_min_holds_even_without_error() -> None:
    spec = SPEC.model_copy(update={"standby": models.StandbySpec.model_validate({"min": 2, "max": 4})})
    demand = models.DemandStatus(rate=16.0, updated="2026-01-01T00:00:00Z")
    t = scaling.targets(spec, demand, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=0, lead=60.0,
                        now=NOW)
    assert t.standby == 2


def test_replicas_held_through_the_scale_down_delay_count_toward_the_pool() -> None:
    # The upper forecast needs 4 replicas (see above) and 4 still serve while the scale-down to 3 waits out its
    # delay: nothing is kept on standby beside them, and once the 4th goes, the pool takes it over.
    demand = models.DemandStatus(rate=16.0, trend=0.0, error=3.0, updated="2026-01-01T00:00:00Z")
    held = scaling.targets(SPEC, demand, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=4,
                           lead=60.0, now=NOW, window=60.0)
    assert (held.serving, held.standby) == (4, 0) and held.below_since is not None
    after = scaling.targets(SPEC, demand.model_copy(update={"below_since": "2025-12-31T23:00:00Z"}), capacity=7.9,
                            slots=57, wait_budget=1.1, miss=0.025, current=4, lead=60.0, now=NOW, window=60.0)
    assert (after.serving, after.standby) == (3, 1)


def test_the_forecast_makes_up_for_the_smoothing_lag_on_a_ramp() -> None:
    # A ramp of 0.6 req/s per minute, folded every 15 s for half an hour: the smoothed rate trails the real one
    # by about the smoothing time (0.5 req/s here), so the forecast one cold start (300 s) ahead adds the trend
    # over that too and lands within 0.15 req/s of the rate then, where trend x lead alone fell 0.5 short.
    demand: models.DemandStatus | None = None
    for k in range(121):
        t = 15.0 * k
        demand = scaling.update_demand(demand, 4.0 + 0.01 * t, now=NOW + datetime.timedelta(seconds=t))
    assert demand is not None
    assert scaling.forecast(demand, lead=300.0) == pytest.approx(4.0 + 0.01 * (1800 + 300), abs=0.15)
    # A falling trend never lowers it.
    assert scaling.forecast(demand.model_copy(update={"trend": -0.01}), lead=300.0) == demand.rate


def test_the_measured_attainment_is_smoothed_over_minutes_and_kept_while_nothing_is_measured() -> None:
    d = scaling.update_demand(None, 10.0, now=NOW, attainment=0.99)
    assert d.attainment == 0.99
    # 60 s later a window at 0.90: alpha = 1 - e^(-60/300) = 0.18, so 0.99 - 0.18 x 0.09 = 0.974.
    d = scaling.update_demand(d, 10.0, now=NOW + datetime.timedelta(seconds=60), attainment=0.90)
    assert d.attainment == pytest.approx(0.99 - (1 - math.exp(-0.2)) * 0.09)
    # No request finished in the window: nothing measured, the last value stands.
    kept = scaling.update_demand(d, 0.0, now=NOW + datetime.timedelta(seconds=75), attainment=None)
    assert kept.attainment == d.attainment
