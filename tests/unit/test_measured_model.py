"""What the pods measure that the model plans with: the tokens a running request holds in the KV cache, a KV cache
with no room for another request, and the ITL calibration's own error (the margin a cap's knee keeps)."""

from __future__ import annotations

import itertools
import math

import pytest
from test_decide import World, current, load, spec_of

from infertune import knee, models, observation, perfmodel, replica

DECODE = {"model.architecture": "llama-3.1-8b", "model.weights": "bf16", "accelerator.type": "l40s",
          "slo.ttft": "300ms", "slo.itl": "55ms"}


def test_the_tokens_a_running_request_holds_are_read_from_kv_usage() -> None:
    spec = spec_of(**DECODE)
    knobs = models.Knobs(max_batch_size=256)
    w = knee.Workload(isl=200, osl=1500)
    c = perfmodel.coefficients(replica.of(spec, knobs))
    tokens = c.kv_blocks * c.block_size
    pod = observation.PodMetrics(running=165.0, kv_usage=0.91, requests_per_s=2.0)
    held = knee.running_context(spec, knobs, w, [pod], old=None)
    assert held == pytest.approx(0.91 * tokens / 165 - c.block_size / 2)
    assert held is not None and held > w.isl + w.osl / 2  # the long outputs run longest
    # Folded in with the calibration's step; a preempting pod (its cache reads full) and an idle one say nothing.
    assert knee.running_context(spec, knobs, w, [pod], old=950.0) == pytest.approx(knee.ewma(950.0, held))
    preempting = observation.PodMetrics(running=165.0, kv_usage=1.0, requests_per_s=2.0, preemptions_per_s=0.3)
    idle = observation.PodMetrics(running=0.4, kv_usage=0.01, requests_per_s=0.1)
    no_kv = observation.PodMetrics(running=100.0, requests_per_s=2.0)
    assert knee.running_context(spec, knobs, w, [preempting, idle, no_kv], old=1000.0) == 1000.0
    assert knee.running_context(spec, knobs, w, [], old=None) is None


def test_a_longer_held_context_slows_the_step_and_lowers_the_knee() -> None:
    spec = spec_of(**DECODE)
    one = replica.of(spec, models.Knobs(max_batch_size=256))
    model = perfmodel.operating_point(one, concurrency=150, isl=200, osl=1500)
    measured = perfmodel.operating_point(one, concurrency=150, isl=200, osl=1500, context=1137.0)
    assert measured.itl_s > model.itl_s * 1.03
    assert measured.kv_usage > model.kv_usage
    # Same as the model where the measurement agrees with it.
    same = perfmodel.operating_point(one, concurrency=150, isl=200, osl=1500, context=950.0)
    assert same.itl_s == pytest.approx(model.itl_s)
    cal = models.Calibration()
    plain = knee.search(spec, knee.Workload(isl=200, osl=1500), cal, kv=models.KvDtype.DEFAULT)
    held = knee.search(spec, knee.Workload(isl=200, osl=1500, context=1137.0), cal, kv=models.KvDtype.DEFAULT)
    assert held.knobs.max_batch_size < plain.knobs.max_batch_size


def test_a_kv_usage_that_is_not_a_number_is_not_read() -> None:
    spec = spec_of(**DECODE)
    knobs = models.Knobs(max_batch_size=256)
    w = knee.Workload(isl=200, osl=1500)
    bad = [observation.PodMetrics(running=100.0, kv_usage=math.nan, requests_per_s=2.0),
           observation.PodMetrics(running=100.0, kv_usage=math.inf, requests_per_s=2.0),
           observation.PodMetrics(running=math.nan, kv_usage=0.5, requests_per_s=2.0)]
    assert knee.running_context(spec, knobs, w, bad, old=1000.0) == 1000.0
    assert knee.running_context(spec, knobs, w, bad, old=None) is None


def test_a_kv_cache_is_full_when_it_has_no_room_for_one_more_running_request() -> None:
    """70B FP8 on 2 x H100 holds 232,896 tokens of default KV cache: 1,100-token chat requests fill it from 99.5%
    in use. The batch kv_fits plans for (190 running) fills it to 90.4% on average, which the 90% this replaced
    called full."""
    spec = spec_of(**{"model.architecture": "llama-3.1-70b", "model.weights": "fp8", "accelerator.count": 2})
    knobs = models.Knobs(max_batch_size=1024)
    chat = knee.Workload(isl=1000, osl=200)
    c = perfmodel.coefficients(replica.of(spec, knobs))
    tokens = c.kv_blocks * c.block_size
    assert tokens == 232_896
    fits = knee.batch_that_fits(spec, knobs, chat)
    planned = fits * (chat.held + c.block_size / 2) / tokens
    assert fits == 190 and planned == pytest.approx(0.904, abs=0.001)
    assert not knee.kv_full(spec, knobs, chat, planned)
    edge = 1 - (chat.held + c.block_size / 2) / tokens
    assert edge == pytest.approx(0.995, abs=0.001)
    assert knee.kv_full(spec, knobs, chat, edge + 1e-4) and not knee.kv_full(spec, knobs, chat, edge - 1e-4)
    # Longer requests (measured) leave less to spare: full from 1 - 8,008 / 232,896 = 96.6%.
    long = knee.Workload(isl=1000, osl=200, context=8000.0)
    assert knee.kv_full(spec, knobs, long, 0.97) and not knee.kv_full(spec, knobs, long, 0.96)
    # A reading that is not a number says nothing.
    assert not knee.kv_full(spec, knobs, chat, math.nan)


def test_a_pod_at_the_planned_kv_fill_teaches_the_calibration_and_a_full_one_does_not() -> None:
    spec = spec_of(**DECODE)
    knobs = models.Knobs(max_batch_size=256)
    w = knee.Workload(isl=200, osl=1500)
    planned = observation.PodMetrics(**load(spec, knobs, running=150, rps=2.0, scale=1.5, kv_usage=0.92))
    full = observation.PodMetrics(**load(spec, knobs, running=150, rps=2.0, scale=1.5, kv_usage=0.999))
    assert knee.calibrate(models.Calibration(), spec, knobs, w, [planned]).samples == 1
    assert knee.calibrate(models.Calibration(), spec, knobs, w, [full]) == models.Calibration()


@pytest.mark.parametrize(("usage", "urged"), [(0.999, True), (0.95, False)])
def test_a_pod_with_no_room_for_another_request_urges_fp8_and_one_with_room_does_not(usage: float, urged: bool) -> None:
    """70B FP8 on 2 x H100 at the engine's cap, 190 chat requests running and no preemptions: at 99.9% in use a pod
    has 233 tokens free for requests of about 1,220 (full: FP8 KV doubles what fits, urgently); at 95%, 11,600."""
    spec = spec_of(**{"model.architecture": "llama-3.1-70b", "model.weights": "fp8", "accelerator.count": 2})
    w = World(spec)
    w.step(0)
    for t in range(15, 600, 15):
        w.set_load(**load(spec, current(w), running=190, rps=8.0 / len(w.pods), kv_usage=usage))
        w.step(t)
    reasons = [r.reason for r in w.status.decisions if r.kind == "knobs"]
    assert any("the KV cache is full or preempting" in r for r in reasons) is urged, reasons


def test_the_itl_margin_starts_at_the_priors_error_and_shrinks_as_cycles_agree() -> None:
    """The prior is off NIM 1.8.0 by 2.15% root mean square: 3.7% of the objective is kept before any measurement.
    Cycles scattered by 3% bring the calibration's error to about 1%, a margin of 2.0%."""
    # With the search's grid rounding (a uniform half step of 2.5%: 0.72% standard deviation) beside it: 3.7%.
    assert knee.itl_margin(models.Calibration()) == pytest.approx(1.65 * math.hypot(0.0215, 0.0123 / math.sqrt(3)),
                                                                  rel=0.01)
    spec = spec_of()
    knobs = models.Knobs(max_batch_size=64)
    cal = models.Calibration()
    errors = []
    for k in range(40):
        pod = observation.PodMetrics(**load(spec, knobs, running=30, rps=3.0, scale=1.03 if k % 2 else 0.97))
        cal = knee.calibrate(cal, spec, knobs, knee.PRIOR_WORKLOAD, [pod])
        errors.append(cal.itl_error)
    assert errors[0] < 0.0216 and all(b <= a * 1.05 for a, b in itertools.pairwise(errors))
    # sqrt(a / (2 - a)) = 1/3 of the cycles' 3% scatter (a = 0.2).
    assert errors[-1] == pytest.approx(0.01, abs=0.002)
    # A model 10% off whose first cycle says so: the error grows (2.6%), so the margin widens at once.
    far = knee.calibrate(models.Calibration(), spec, knobs, knee.PRIOR_WORKLOAD,
                         [observation.PodMetrics(**load(spec, knobs, running=30, rps=3.0, scale=1.1))])
    assert far.itl_error == pytest.approx(math.sqrt(0.8 ** 2 * 0.0215 ** 2 + 0.2 ** 2 * math.log(1.1) ** 2), rel=0.05)
    # A reading that is not a number leaves the error alone; a 10x one counts as the 3x the scale is held to.
    nan = observation.PodMetrics(**load(spec, knobs, running=30, rps=3.0, itl_mean=math.nan))
    assert knee.calibrate(models.Calibration(), spec, knobs, knee.PRIOR_WORKLOAD, [nan]).itl_error == 0.0215
    wild = knee.calibrate(models.Calibration(), spec, knobs, knee.PRIOR_WORKLOAD,
                          [observation.PodMetrics(**load(spec, knobs, running=30, rps=3.0, scale=10.0))])
    assert wild.itl_error == pytest.approx(math.sqrt(0.8 ** 2 * 0.0215 ** 2 + 0.2 ** 2 * math.log(3.0) ** 2), rel=0.05)


def test_a_knee_for_a_cap_keeps_the_calibrations_error_and_one_under_an_open_cap_keeps_five_percent() -> None:
    """Mixtral-8x7B on 2 x A100, 1,050 in / 480 out, 25 ms ITL: a batch of 4 is predicted at about 24.3 ms. A cap
    searched with 2.0% kept (24.49 ms, a steady calibration's) may be 4; the knee under the engine's open cap of 256
    keeps 5% (23.75 ms), for the running count spreads past it, and stays at 3."""
    spec = spec_of(**{"model.architecture": "mixtral-8x7b", "model.weights": "bf16", "accelerator.type": "a100-80gb",
                      "accelerator.count": 2, "slo.itl": "25ms", "slo.ttft": "900ms"})
    w = knee.Workload(isl=1050, osl=480)
    steady = models.Calibration(itl_error=0.01)
    four = knee.predict(spec, models.Knobs(max_batch_size=4), w, steady)
    assert 0.0237 < four.itl_p < 0.0245 and four.itl_limit == pytest.approx(0.025 * (1 - knee.itl_margin(steady)))
    assert knee.search(spec, w, steady, kv=models.KvDtype.DEFAULT).knobs.max_batch_size >= 4
    held = knee.held(spec, models.Knobs(max_batch_size=256), w, steady)
    assert held.knobs.max_batch_size == 3 and held.itl_limit == pytest.approx(0.025 * 0.95)


def test_the_itl_is_read_at_the_count_while_busy_not_at_the_windows_average() -> None:
    """A pod at 1.31 running on average that had a request running for 80% of the window ran 1.64 while busy
    (grid g20: Mixtral on 2 x A100 at a knee of 3). Its tokens step at the physics of 1.64 running; read at 1.31,
    the same tokens look slower than the physics and the scale rose 3-7%, which kept the knee one below what holds
    the SLO. With the busy share the scale stays at 1.0; without it (an engine or Prometheus that does not say),
    the window's average is read as before."""
    spec = spec_of()
    knobs = models.Knobs(max_batch_size=3)
    w = knee.PRIOR_WORKLOAD
    low, high, share = knee._bracket(spec, knobs, w, 1.64)
    itl = knee._token_mean(low, high, share, 1.64)  # the physics of the tokens made at 1.64 running
    pod = {"running": 1.31, "requests_per_s": 0.25, "itl_mean": itl, "waiting": 0.0}
    busy = knee.calibrate(models.Calibration(), spec, knobs, w, [observation.PodMetrics(**pod, busy=1.31 / 1.64)])
    assert busy.itl_scale == pytest.approx(1.0, abs=1e-6)
    # Without it the idle share reads as slower hardware: one EWMA step (0.2) toward measured / physics at 1.31.
    averaged = knee.calibrate(models.Calibration(), spec, knobs, w, [observation.PodMetrics(**pod)])
    at_average = knee._token_mean(*knee._bracket(spec, knobs, w, 1.31), 1.31)
    assert itl > at_average
    assert averaged.itl_scale == pytest.approx(0.8 + 0.2 * itl / at_average, rel=1e-9)
    # Within 1 and the cap: a busy share sampled low cannot put more requests in the batch than it admits.
    assert knee._busy_count(observation.PodMetrics(running=2.5, busy=0.1), knobs) == 3.0
    assert knee._busy_count(observation.PodMetrics(running=0.9, busy=1.0), knobs) == 1.0
    assert knee._busy_count(observation.PodMetrics(running=1.2, busy=None), knobs) == 1.2
