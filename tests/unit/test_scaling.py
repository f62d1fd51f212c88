"""Test: serving replicas and the standby pool from the demand forecast (pure)."""

from __future__ import annotations

import datetime
import math

import pytest

from infertune import models, queueing, scaling

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
    assert t.serving == 3 == queueing.replicas_for(16.0, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, limit=16)
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


def test_the_standby_floor_counts_serving_pods_held_beyond_the_need_once_the_need_has_settled() -> None:
    # After a 3x spike: 4 serve, 8 req/s needs 2 (7.9 req/s a replica), and the user's floor is 2 standby.
    spec = SPEC.model_copy(update={"standby": models.StandbySpec.model_validate({"min": 2, "max": 4})})
    demand = models.DemandStatus(rate=8.0, trend=0.0, error=0.0, updated="2026-01-01T00:00:00Z")

    def at(below: datetime.timedelta | None) -> scaling.Targets:
        d = demand if below is None else demand.model_copy(
            update={"below_since": (NOW - below).strftime("%Y-%m-%dT%H:%M:%SZ")})
        return scaling.targets(spec, d, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=4,
                               lead=300.0, now=NOW, window=60.0)

    # The first cycles below: a need that dips for a cycle deletes no standby pod (it would cold-start again).
    assert (at(None).serving, at(None).standby) == (4, 2)
    assert (at(datetime.timedelta(seconds=30)).serving, at(datetime.timedelta(seconds=30)).standby) == (4, 2)
    # A minute on, the 2 serving beyond the need are the warm pods the floor asks for: no pod stands beside them.
    settled = at(datetime.timedelta(seconds=90))
    assert (settled.serving, settled.standby) == (4, 0)
    assert "2 serving replica(s) beyond the need stand in for the standby floor of 2" in settled.reason
    # Once the delay is over the serving pods come down to the need and the pool is the floor again (the
    # rollout demotes the surplus serving pods into it).
    after = at(datetime.timedelta(seconds=400))
    assert (after.serving, after.standby) == (2, 2)
    # One pod beyond the need covers one of the two.
    one = scaling.targets(spec, demand.model_copy(update={"below_since": "2025-12-31T23:58:00Z"}), capacity=7.9,
                          slots=57, wait_budget=1.1, miss=0.025, current=3, lead=300.0, now=NOW, window=60.0)
    assert (one.serving, one.standby) == (3, 1)


def test_the_pool_grows_at_once_only_to_the_floor_that_held_serving_pods_leave() -> None:
    # Floor 2. After a burst 3 pods serve where 1 is needed and the pool is empty (2 held pods stand in for it);
    # now one steps down (2 serving, 1 beyond the need) while the forecast band asks for 2 standby. What is left
    # of the floor, 1, holds at once (the pod leaving is demoted into it); the band's second pod waits its minute,
    # as any growth does. The spec's whole floor at once started a pod beside the one still held.
    spec = SPEC.model_copy(update={"standby": models.StandbySpec.model_validate({"min": 2, "max": 4})})
    pool, wanted = scaling.settle_standby(2, prev_standby=0, wanted=None, now=NOW, floor=1)
    assert (pool, wanted) == (1, "2026-01-01T00:00:00Z")
    later = NOW + datetime.timedelta(seconds=scaling.STANDBY_SETTLE)
    assert scaling.settle_standby(2, prev_standby=1, wanted=wanted, now=later, floor=1) == (2, None)
    # Without a held pod standing in, the spec's floor holds from the first cycle.
    assert scaling.settle_standby(2, prev_standby=0, wanted=None, now=NOW, floor=spec.standby.min)[0] == 2
    # And the targets say what is left of the floor once the need has settled below the serving pods.
    demand = models.DemandStatus(rate=8.0, trend=0.0, error=0.0, updated="2026-01-01T00:00:00Z",
                                 below_since="2025-12-31T23:58:00Z")
    t = scaling.targets(spec, demand, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=3, lead=300.0,
                        now=NOW, window=60.0)
    assert (t.serving, t.standby, t.floor) == (3, 1, 1)


def test_the_forecast_makes_up_for_the_smoothing_lag_on_a_ramp() -> None:
    # A ramp of 0.6 req/s per minute, folded every 15 s for half an hour: the smoothed rate trails the real one
    # by about the smoothing time (0.5 req/s here), so the forecast one cold start (300 s) ahead adds the trend
    # over that too and lands within 0.15 req/s of the rate then, where trend x lead alone fell 0.5 short.
    demand: models.DemandStatus | None = None
    for k in range(121):
        t = 15.0 * k
        demand = scaling.update_demand(demand, 4.0 + 0.01 * t, now=NOW + datetime.timedelta(seconds=t), lead=300.0)
    assert demand is not None
    assert scaling.forecast(demand, lead=300.0) == pytest.approx(4.0 + 0.01 * (1800 + 300), abs=0.15)
    # A falling trend never lowers it.
    assert scaling.forecast(demand.model_copy(update={"trend": -0.01}), lead=300.0) == demand.rate


@pytest.mark.parametrize(("lead", "low", "high"), [(60.0, 0.25, 0.35), (120.0, 0.38, 0.48), (600.0, 0.55, 0.65)])
def test_the_trend_remembers_one_cold_start(lead: float, low: float, high: float) -> None:
    # Flat at 10 req/s for 20 minutes, then a rise of 6 req/s a minute (0.1 per second). One cold start into the
    # rise, when pods started at its onset are Ready, the share of the slope the trend shows: 0.31 at a 60 s cold
    # start and 0.43 at 120 s, where a fixed 300 s memory read 0.08 and 0.21 (the smoothed rate's own slope
    # builds over its 60 s as well); at 600 s, 0.60 against 0.84: a longer lead reads a steadier slope.
    flat = [10.0] * 80
    rise = [10.0 + 0.1 * 15.0 * (k + 1) for k in range(int(lead // 15))]
    demand = _feed(flat + rise, lead=lead)
    assert low <= demand.trend / 0.1 <= high, demand.trend
    assert scaling.trend_tau(lead) == lead
    assert scaling.trend_tau(15.0) == scaling.RATE_TAU  # never faster than the rate's own smoothing


def test_a_burst_of_a_minute_moves_a_long_cold_starts_trend_less() -> None:
    # 10 req/s, one minute at 20, then 10 again: the slope the burst reads is noise a pod Ready 10 minutes later
    # never meets. The trend's largest excursion: 0.040 req/s per second at a 120 s cold start, 0.019 at 300 s
    # (the memory every cold start had before), 0.010 at 600 s.
    rates = [10.0] * 40 + [20.0] * 4 + [10.0] * 20
    def peak(lead: float) -> float:
        best, demand = 0.0, None
        for i, r in enumerate(rates):
            demand = scaling.update_demand(demand, r, now=NOW + datetime.timedelta(seconds=15 * i), lead=lead)
            best = max(best, demand.trend)
        return best
    assert peak(600.0) < 0.6 * peak(300.0) < 0.6 * peak(120.0)


def test_the_measured_attainment_is_smoothed_over_minutes_and_kept_while_nothing_is_measured() -> None:
    d = scaling.update_demand(None, 10.0, now=NOW, attainment=0.99)
    assert d.attainment == 0.99
    # 60 s later a window at 0.90: alpha = 1 - e^(-60/300) = 0.18, so 0.99 - 0.18 x 0.09 = 0.974.
    d = scaling.update_demand(d, 10.0, now=NOW + datetime.timedelta(seconds=60), attainment=0.90)
    assert d.attainment == pytest.approx(0.99 - (1 - math.exp(-0.2)) * 0.09)
    # No request finished in the window: nothing measured, the last value stands.
    kept = scaling.update_demand(d, 0.0, now=NOW + datetime.timedelta(seconds=75), attainment=None)
    assert kept.attainment == d.attainment


def _feed(rates: list[float], *, lead: float, step: float = 15.0) -> models.DemandStatus:
    demand = None
    for i, r in enumerate(rates):
        demand = scaling.update_demand(demand, r, now=NOW + datetime.timedelta(seconds=i * step), lead=lead)
    assert demand is not None
    return demand


def test_the_peak_is_kept_for_one_cold_start_then_follows_the_rate() -> None:
    # On/off: 3 minutes at 10 req/s, then 3 minutes of nothing, with a 300 s cold start: the quiet minutes
    # keep the peak of the burst (the next burst comes within a cold start).
    on, off = [10.0] * 12, [0.0] * 12
    d = _feed(on + off, lead=300.0)
    assert d.rate < 1.0 and d.peak > 8.0
    # With a 60 s cold start the peak is forgotten a minute after the burst.
    d = _feed(on + off, lead=60.0)
    assert d.peak == pytest.approx(d.rate) and d.peak < 1.0
    # A rising rate is its own peak.
    d = _feed([1.0, 2.0, 3.0, 4.0], lead=300.0)
    assert d.peak == d.rate


def test_standby_covers_a_return_to_the_recent_peak_not_a_random_walk_beyond_it() -> None:
    # On/off at 10 req/s over 4 serving replicas of 5.8 req/s (5 slots, 0.33 s to queue in), 300 s cold start:
    # a minute's error of 3 req/s extrapolated as a random walk over 5 minutes asks for 10 + 1.65 x 8.4 =
    # 24 req/s, 2 standby pods started every burst and deleted unready when it ended. A return to the peak of
    # 10.7 needs none beyond the 4 that serve.
    spec = models.ScalingSpec.model_validate({"minReplicas": 1, "maxReplicas": 24, "standby": {"min": 0, "max": 4}})
    kw = {"capacity": 5.8, "slots": 5, "wait_budget": 0.33, "miss": 0.025, "current": 4, "lead": 300.0,
          "now": NOW, "window": 60.0}
    walk = models.DemandStatus(rate=10.0, error=3.0, updated="2026-01-01T00:00:00Z")
    assert scaling.targets(spec, walk, **kw).standby == 2  # no peak measured yet: the random walk
    seen = walk.model_copy(update={"peak": 10.7, "peak_at": "2026-01-01T00:00:00Z"})
    assert scaling.targets(spec, seen, **kw).standby == 0
    # A steady rate with a small error is not capped below its own forecast: the peak is at least the rate.
    calm = models.DemandStatus(rate=16.0, error=3.0, updated="2026-01-01T00:00:00Z", peak=25.0,
                               peak_at="2026-01-01T00:00:00Z")
    t = scaling.targets(SPEC, calm, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=0, lead=60.0,
                        now=NOW, window=60.0)
    assert (t.serving, t.standby) == (3, 1)  # as without a peak (test above): 22 req/s is under the peak


def test_the_lead_error_compares_the_forecast_made_one_cold_start_ago_with_the_demand_now() -> None:
    # Steady at 10 req/s with a 120 s cold start: every forecast made a lead ago met 10, so the lead error is 0.
    steady = _feed([10.0] * 40, lead=120.0)
    assert steady.lead_error == pytest.approx(0.0, abs=1e-9)
    # One forecast per eighth of the lead (15 s) over at most a lead and a stretch: bounded however long it runs.
    assert 8 <= len(steady.forecasts) <= 2 * models.ASK_SPANS + 2
    # A fall from 40 to 10 req/s over 5 minutes: the forecast does not follow a falling trend down, so what was
    # forecast a lead ago is above the demand now by about the fall over a lead, and the error grows to it.
    fall = _feed([40.0 - 30.0 * min(1.0, i / 20) for i in range(40)], lead=120.0)
    assert fall.lead_error is not None and fall.lead_error > 5.0
    # Nothing is compared before a lead has passed (the first reading only starts the smoothing: no forecast).
    young = _feed([10.0, 20.0, 30.0], lead=120.0)
    assert young.lead_error is None and len(young.forecasts) == 2


def test_a_corrupt_or_foreign_forecast_history_is_not_trusted() -> None:
    # A stored status whose forecast says 1,000 req/s but is stamped ahead of this clock (skew, or written by
    # hand) is dropped: nothing is compared with it, and it does not hold back this cycle's forecast (kept behind
    # it, the next would have waited an hour for the clock to pass it); a negative lead error does not parse, so
    # such a status is read as blank (kube.parse_status).
    future = models.Forecast(at="2026-01-01T01:00:00Z", rate=1000.0)
    d = models.DemandStatus(rate=10.0, updated="2025-12-31T23:59:45Z", forecasts=(future,))
    after = scaling.update_demand(d, 10.0, now=NOW, lead=120.0)
    assert after.lead_error is None
    assert [f.at for f in after.forecasts] == ["2026-01-01T00:00:00Z"] and after.forecasts[0].rate < 11.0
    with pytest.raises(ValueError, match=r"lead_error|leadError"):
        models.DemandStatus.model_validate({"leadError": -1.0})


def test_the_lead_error_holds_standby_at_a_trough_below_every_level_the_descent_visited() -> None:
    # The trough of a steep diurnal (g07: 8B FP8 on an L40S, 11.5 req/s per replica at its knee, 5-minute cold
    # start): 19 req/s after a descent, peak within a cold start 22 req/s, a one-step error of 0.5 req/s. Capped
    # at that peak, the band holds no standby, and the rise to 72 req/s queued for minutes behind pods still
    # loading (0.708 of requests in the SLO). With a forecast made a cold start before that erred by 12 req/s on
    # average (g07 measured 18-21): 19 + 1.65 x 12 / 0.8 = 44 req/s, standby for what 3 serving do not hold.
    kw = {"capacity": 11.5, "slots": 17, "wait_budget": 0.9, "miss": 0.05, "current": 3, "lead": 300.0,
          "now": NOW, "window": 60.0}
    trough = models.DemandStatus(rate=19.0, trend=-0.01, error=0.5, updated="2026-01-01T00:00:00Z", peak=22.0,
                                 peak_at="2026-01-01T00:00:00Z")
    assert scaling.targets(SPEC, trough, **kw).standby == 0
    held = scaling.targets(SPEC, trough.model_copy(update={"lead_error": 12.0}), **kw)
    assert held.serving == 3 and held.standby == queueing.replicas_for(
        19.0 + 1.65 * 12.0 / 0.8, capacity=11.5, slots=17, wait_budget=0.9, miss=0.05, limit=20) - 3 >= 2


def test_queueing_gets_what_the_measured_misses_leave_of_the_allowance() -> None:
    # Nothing measured: the prior, half of a p95 allowance.
    assert scaling.queue_budget(0.05, prior=0.025, attainment=None, predicted_late=0.0) == 0.025
    # 97% measured, 0.5% of it queueing as the model predicts: the tails took 2.5%, queueing gets the rest.
    assert scaling.queue_budget(0.05, prior=0.025, attainment=0.97, predicted_late=0.005) == pytest.approx(0.025)
    # 99.5% measured with no queueing predicted: the tails took 0.5%, queueing may take 4.5%; none missed: all 5%.
    assert scaling.queue_budget(0.05, prior=0.025, attainment=0.995, predicted_late=0.0) == pytest.approx(0.045)
    assert scaling.queue_budget(0.05, prior=0.025, attainment=1.0, predicted_late=0.0) == pytest.approx(0.05)
    # Tails beyond the allowance leave queueing a tenth of it, never nothing.
    assert scaling.queue_budget(0.05, prior=0.025, attainment=0.80, predicted_late=0.0) == pytest.approx(0.005)
    # The budget is what replicas_for sizes with: a larger one never asks for more replicas.
    kw = {"capacity": 7.9, "slots": 57, "wait_budget": 1.1, "limit": 16}
    assert queueing.replicas_for(20.0, miss=0.05, **kw) <= queueing.replicas_for(20.0, miss=0.025, **kw)


def test_late_is_the_queue_replicas_for_sizes_with() -> None:
    kw = {"capacity": 7.9, "slots": 57, "wait_budget": 1.1}
    n = queueing.replicas_for(20.0, miss=0.025, limit=16, **kw)
    assert queueing.late(20.0, replicas=n, **kw) <= 0.025 < queueing.late(20.0, replicas=n - 1, **kw)
    assert queueing.late(0.0, replicas=1, **kw) == 0.0
    assert queueing.late(1000.0, replicas=1, **kw) == 1.0  # more load than slots
    assert queueing.late(1.0, replicas=0, **kw) == 1.0


def test_replicas_that_each_queue_for_a_random_share_need_more_of_them_than_a_pooled_fleet() -> None:
    # A plain Service splits the arrivals at random: each replica is its own M/M/c queue at rate / replicas.
    # 20 req/s on replicas of 8 slots at 1.15 req/s (7 s a request), 1.2 s to queue: pooled, 20 replicas wait
    # beyond the budget for 0.15% of requests; apart, each runs 7 Erlangs on 8 slots and half of them wait.
    kw = {"capacity": 1.15, "slots": 8, "wait_budget": 1.2}
    pooled = queueing.late(20.0, replicas=20, **kw)
    apart = queueing.late(20.0, replicas=20, pooled=False, **kw)
    hold = 8 / 1.15
    expected = queueing.erlang_c(8, hold) * math.exp(-(8 - hold) * 1.2 / hold)
    assert pooled < 0.002 and apart == pytest.approx(expected) and apart > 0.5
    # One replica is the same queue either way.
    assert queueing.late(1.0, replicas=1, pooled=False, **kw) == queueing.late(1.0, replicas=1, **kw)
    n = queueing.replicas_for(20.0, miss=0.025, limit=64, **kw)
    m = queueing.replicas_for(20.0, miss=0.025, limit=64, pooled=False, **kw)
    assert m > n
    assert queueing.late(20.0, replicas=m, pooled=False, **kw) <= 0.025 < queueing.late(
        20.0, replicas=m - 1, pooled=False, **kw)


def test_the_scale_down_room_is_the_objective_plus_the_counting_noise() -> None:
    # 8 req/s over 300 s: 2,400 requests, sd sqrt(0.95 x 0.05 / 2400) = 0.44%.
    assert scaling.room(0.95, rate=8.0) == pytest.approx(0.95 + math.sqrt(0.95 * 0.05 / 2400))
    # 0.5 req/s: 150 requests, 1.8%.
    assert scaling.room(0.95, rate=0.5) == pytest.approx(0.95 + math.sqrt(0.95 * 0.05 / 150))
    assert scaling.room(0.95, rate=0.0) <= 1.0


def test_the_wait_for_prefill_is_read_at_the_load_each_replica_count_runs_at() -> None:
    # 405B FP8 on 8 x H200 at a 256-token budget: a 0.29 s p95 prefill that takes 98% of the GPU's time at full
    # throughput, 5.5 req/s and 42 slots per replica, 1.9 s of TTFT objective.
    budget = queueing.WaitBudget(objective=1.9, prefill=0.29, load=0.98)
    assert budget.at(1.0) == queueing.MIN_WAIT  # at full throughput the M/D/1 wait takes it all (9.5 x 0.29 s)
    assert budget.at(0.6) == pytest.approx(1.9 - 0.29 * (1 + 0.588 / (2 * 0.412)), rel=1e-3)
    kw = {"capacity": 5.5, "slots": 42.0, "miss": 0.025, "limit": 32}
    n = queueing.replicas_for(40.0, wait_budget=budget, **kw)
    # Sized at full throughput's budget it took more; no count that leaves no wait for prefill does better.
    assert queueing.replicas_for(40.0, wait_budget=budget.at(1.0), **kw) > n
    assert n >= queueing.replicas_for(40.0, wait_budget=budget.at(0.0), **kw)
    # The count it picks holds at its own load and the one below does not.
    at_own = budget.at(40.0 / (n * 5.5))  # 8 replicas at 91%: 0.43 s of the 1.9 s
    assert queueing.late(40.0, replicas=n, capacity=5.5, slots=42.0, wait_budget=at_own) <= 0.025
    assert queueing.late(40.0, replicas=n - 1, capacity=5.5, slots=42.0, wait_budget=budget) > 0.025
    # One replica's SLO rate reads the budget at its own rate too: between the two fixed budgets'.
    one = queueing.slo_rate(capacity=5.5, slots=42.0, wait_budget=budget, miss=0.025)
    assert queueing.slo_rate(capacity=5.5, slots=42.0, wait_budget=budget.at(1.0), miss=0.025) < one
    assert one <= queueing.slo_rate(capacity=5.5, slots=42.0, wait_budget=budget.at(0.0), miss=0.025)


def test_a_rise_into_new_territory_keeps_its_band_where_a_return_to_a_visited_level_does_not() -> None:
    # A diurnal's rising edge: the rate is its own peak and climbs 0.6 req/s a minute, so the forecast over a
    # 300 s cold start (16 + 0.01 x 360 = 19.6 req/s) lies above every level visited. Capped at the peak (as a
    # return to a visited level is), the band was cut to the forecast itself and no standby was ever held there.
    kw = {"capacity": 7.9, "slots": 57, "wait_budget": 1.1, "miss": 0.025, "current": 3, "lead": 300.0,
          "now": NOW, "window": 60.0}
    rising = models.DemandStatus(rate=16.0, trend=0.01, error=1.5, updated="2026-01-01T00:00:00Z", peak=16.0,
                                 peak_at="2026-01-01T00:00:00Z")
    t = scaling.targets(SPEC, rising, **kw)
    assert t.serving == 3 and t.standby >= 1
    # The same band under a peak visited a minute ago (on/off load coming back to its on-level): none.
    back = rising.model_copy(update={"trend": 0.0, "peak": 20.0})
    assert scaling.targets(SPEC, back, **kw).standby == 0


def _sized(rate: float, *, current: int, at: datetime.datetime, demand: models.DemandStatus) -> scaling.Targets:
    """One cycle of the serving count for `rate` (70B FP8 on two H100s, as above), the demand's history kept."""
    d = demand.model_copy(update={"rate": rate, "trend": 0.0, "error": 0.0})
    return scaling.targets(SPEC, d, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=current,
                           lead=60.0, now=at, window=60.0)


def test_a_scale_down_goes_to_the_most_asked_for_within_the_delay_not_to_the_last_ask() -> None:
    # 10 replicas serve; the asks then read 8 once, then 3, 7, 2 over and over at 15 s steps (a few long prompts
    # a minute make the demand that noisy). Before, the fleet dropped to whatever the cycle after the 300 s delay
    # asked for (2, 3 or 7); the HPA's stabilization window takes the highest ask within it: 8 while the 8 is in
    # the window, then 7, never 2 or 3.
    assert SPEC.scale_down_delay is None and scaling.scale_down_delay(SPEC, cold=60.0) == 300
    demand = models.DemandStatus(updated="2026-01-01T00:00:00Z")
    rates = {8: 60.0, 3: 20.0, 7: 52.0, 2: 12.0}
    assert {r: _targets(x, 0.0).serving for r, x in rates.items()} == {8: 8, 3: 3, 7: 7, 2: 2}
    current, t, seen = 10, NOW, []
    for ask in [8] + [3, 7, 2] * 14:
        out = _sized(rates[ask], current=current, at=t, demand=demand)
        demand = demand.model_copy(update={"below_since": out.below_since, "asks": out.asks})
        current = out.serving
        seen.append(current)
        t += datetime.timedelta(seconds=15)
    # Held for the whole delay (20 cycles of 15 s), then 8 until its stretch leaves the window, then 7.
    assert seen[:20] == [10] * 20, seen
    assert seen[20] == 8 and min(seen) == 7 == seen[-1], seen
    assert len(demand.asks) <= 2 * models.ASK_SPANS + 2


def test_the_asks_keep_the_most_per_stretch_and_forget_what_left_the_window() -> None:
    # A 300 s window in 8 stretches of 38 s (whole seconds, as the stamps are), counted from the epoch: the one
    # holding 00:00:10 ends at 00:00:44.
    t0 = datetime.datetime(2026, 1, 1, 0, 0, 10, tzinfo=datetime.UTC)
    assert math.ceil(t0.timestamp() / 38) * 38 - t0.timestamp() == 34
    asks = scaling.remember_ask((), 6, now=t0, window=300)
    assert [(a.at, a.replicas) for a in asks] == [("2026-01-01T00:00:44Z", 6)]
    # 9 within the same stretch raises it; 4 later keeps the 9 ahead of itself (it can still be the highest).
    asks = scaling.remember_ask(asks, 9, now=t0 + datetime.timedelta(seconds=15), window=300)
    asks = scaling.remember_ask(asks, 4, now=t0 + datetime.timedelta(seconds=45), window=300)
    assert [a.replicas for a in asks] == [9, 4]
    # A newer ask as high as an older one makes the older one useless.
    asks = scaling.remember_ask(asks, 9, now=t0 + datetime.timedelta(seconds=90), window=300)
    assert [a.replicas for a in asks] == [9]
    # Past the window, only the new ask is left.
    asks = scaling.remember_ask(asks, 2, now=t0 + datetime.timedelta(seconds=500), window=300)
    assert [a.replicas for a in asks] == [2]
    # A stamp from the future (a clock that jumped back) is dropped, not kept forever as the highest.
    future = (models.Ask(at="2027-01-01T00:00:00Z", replicas=40),)
    assert [a.replicas for a in scaling.remember_ask(future, 3, now=t0, window=300)] == [3]


def test_a_status_from_before_the_asks_were_kept_scales_down_as_it_did() -> None:
    # No asks recorded (a status written before this field, or a restart): after the delay the fleet goes to the
    # ask of this cycle, as before, and starts recording.
    demand = models.DemandStatus(updated="2026-01-01T00:00:00Z", below_since="2025-12-31T23:00:00Z")
    out = _sized(20.0, current=10, at=NOW, demand=demand)
    assert out.serving == 3 and [a.replicas for a in out.asks] == [3]


def test_the_queue_grows_by_arrivals_only_as_far_as_the_requests_in_flight_do() -> None:
    last = models.DemandStatus(rate=20.0, updated="2026-01-01T00:00:00Z", queued=100.0, in_flight=1700.0)
    # A burst: 150 more queued and 150 more in flight in 15 s is 10 req/s the window has not caught up with.
    assert scaling.queue_growth(250.0, 1850.0, last=last, dt=15.0) == pytest.approx(10.0)
    # The knee fell (the measured outputs lengthened): 312 more "queued" over the lower slots, but no more requests
    # in flight than 15 s ago, so none arrived beyond what the replicas took.
    assert scaling.queue_growth(412.0, 1700.0, last=last, dt=15.0) == 0.0
    # A queue that shrinks grows by nothing; without a reading of requests in flight, the queue alone says it.
    assert scaling.queue_growth(50.0, 1900.0, last=last, dt=15.0) == 0.0
    assert scaling.queue_growth(250.0, None, last=last, dt=15.0) == pytest.approx(10.0)
    old = last.model_copy(update={"in_flight": None})
    assert scaling.queue_growth(412.0, 1700.0, last=old, dt=15.0) == pytest.approx(312.0 / 15.0)
    # The first cycle (nothing before it) and a cycle over no time.
    assert scaling.queue_growth(250.0, 1850.0, last=None, dt=0.0) == 0.0
    assert scaling.queue_growth(250.0, 1850.0, last=last, dt=0.0) == 0.0


def test_auto_scale_down_delay_is_the_longer_of_the_hpa_window_and_the_cold_start() -> None:
    # auto: a replica is kept as long as getting it back would take (the ski-rental break-even), and never less
    # than the HPA's 300 s window; a delay the user wrote is theirs, shorter than the cold start or not.
    assert scaling.scale_down_delay(SPEC, cold=60.0) == 300
    assert scaling.scale_down_delay(SPEC, cold=600.0) == 600
    own = models.ScalingSpec.model_validate({"maxReplicas": 16, "scaleDownDelay": "2m"})
    assert scaling.scale_down_delay(own, cold=600.0) == 120


def test_a_replica_is_not_released_before_it_has_been_unneeded_for_a_cold_start() -> None:
    # 405B on 8 x H200 at a 600 s cold start (the grid's g14): 6 replicas serve a load 3 would carry. At the
    # HPA's 300 s they went at 315 s, and a 3x spike at 480 s met 3 replicas while the pods started for it loaded
    # until after it. Held for the cold start, the 6 are there; the scale-down comes once 600 s have passed.
    demand = models.DemandStatus(rate=16.0, trend=0.0, error=0.0, updated="2026-01-01T00:00:00Z")

    def at(below: float, spec: models.ScalingSpec = SPEC) -> scaling.Targets:
        d = demand.model_copy(update={"below_since": (NOW - datetime.timedelta(seconds=below)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")})
        return scaling.targets(spec, d, capacity=7.9, slots=57, wait_budget=1.1, miss=0.025, current=6,
                               lead=600.0, now=NOW, window=60.0)

    assert at(400.0).serving == 6 and "waiting scaleDownDelay" in at(400.0).reason
    assert at(610.0).serving == 3
    # The user's own delay still rules: 5m written is 5m kept.
    five = models.ScalingSpec.model_validate({"maxReplicas": 16, "standby": {"min": 0, "max": 4},
                                              "scaleDownDelay": "5m"})
    assert at(400.0, five).serving == 3
