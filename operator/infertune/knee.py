"""Pure: the latency-throughput frontier of one replica and its knee under the SLO, from the physics prior."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from infertune import bisection, models, observation, perfmodel, queueing, replica
from infertune.runtimes import registry

_Key = TypeVar("_Key")


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """The request shape the knee is computed for (measured, or the prior's guess)."""

    isl: int
    osl: int
    prefix_hit_rate: float = 0.0
    # How the prompts' prefills vary around the prefill of an isl-token prompt (shape_spread); none known: every
    # prompt isl tokens long.
    spread: perfmodel.PrefillSpread = perfmodel.NO_SPREAD
    # Tokens a running request holds in the KV cache on average, as measured (KV usage over the running count);
    # none measured: isl + osl / 2 (perfmodel.operating_point).
    context: float | None = None

    @property
    def held(self) -> float:
        """Tokens a running request holds in the KV cache: measured, else isl + osl / 2."""
        return self.isl + self.osl / 2.0 if self.context is None else self.context


# Before any traffic: a chat-like request (the Azure conversation trace: 1,155 in / 211 out on average).
PRIOR_WORKLOAD = Workload(isl=1000, osl=200)
# Predictions of TTFT must clear its objective by this share: a 2 s objective is planned at 1.9 s; and the ITL of
# the knee under a cap far above it (`held`: an engine whose batch is left to grow), where beside calibration noise
# the margin covers the spread of the running count around that knee, which the planned p95 does not model.
MARGIN = 0.05
# A knee searched for a cap (the batch cannot pass it) keeps from the ITL objective only the calibration's own error
# (itl_margin): the one-sided 95% normal quantile of the relative standard error of itl_scale, with the error the
# search's signature adds (itl_scale rounded to its grid). Before any measurement the error is the prior's against
# hardware: its mean ITL against NIM 1.8.0's on 70B FP8 over 2 x H100 (docs/twin.md, "Calibration", concurrency
# 1-250) is off by +2.2, +1.8, -0.5, -1.0, -2.5, -2.5, -2.7 and -2.8%, a root mean square of 2.15%: with the
# grid's 0.71%, a 25 ms objective is planned at 25 x (1 - 1.65 x 2.26%) = 24.07 ms. Measured cycles then replace it
# (calibrate): cycles whose ratios scatter by 3% leave 3% x sqrt(0.2 / 1.8) = 1.0%, planned at 24.49 ms.
# The one-sided 95% quantile of the normal distribution.
Z95 = 1.65
# At a full batch the per-request ITL tail is the prefill's: how many of a request's steps carried a prefill
# chunk (perfmodel.per_request_itl, a binomial over the prefill share of steps). It replaced a tail of
# 1 + 0.05 x sqrt((isl / osl) / 5) fitted on two chat-like scenarios, which put the knee of a prefill-heavy
# load (2,000 in, 30 out) far too low: there the chunks, not the batch, set the tail.


# The context lengths of running requests vary: the Azure conversation trace's input + half its output has a
# coefficient of variation of 0.87 (19,366 requests). A full batch must fit the KV cache at its one-sided 95%.
CONTEXT_CV = 0.87
KV_FIT_Z = Z95
# vLLM captures CUDA graphs for batch sizes in steps of 8, so 37 runs at the cost of 40; rounding big knees
# down to a multiple of 8 costs at most a tenth of the batch (from 80 up). Small ones are kept exact: rounding
# 23 down to 16 threw away 30% of the throughput.
GRANULE = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """One replica at one configuration with `concurrency` requests in flight (the batch full at the knee)."""

    knobs: models.Knobs
    batch: float  # sequences actually running (KV capacity may hold fewer than max batch size)
    limited_by: str
    itl_p: float  # seconds, per-request mean ITL at the SLO percentile
    ttft_p: float  # seconds, at the SLO percentile, with the closed loop's queue of `concurrency` clients
    # A request's own prefill at the SLO percentile, without waiting behind other prefills or for a slot, and
    # the prefill's utilization at full throughput: the replica count sizes the queue for slots itself and reads
    # the wait behind other prefills at the load it sizes for (queueing.WaitBudget).
    prefill_p: float
    prefill_load: float
    prefill_cv2: float  # the prefill service's squared coefficient of variation (perfmodel.prefill_ttft)
    output_tokens_per_s: float
    requests_per_s: float
    kv_usage: float
    mbu: float
    kv_share: float  # share of each decode step's HBM bytes that is KV cache
    feasible: bool
    itl_limit: float  # seconds: the ITL it had to stay under, the objective less the margin kept


def predict(
    spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload, cal: models.Calibration, *,
    concurrency: int | None = None, margin: float | None = None,
) -> Prediction:
    """Calibrated physics: the prior's means scaled by what was measured, times the measured tail ratios."""
    r = replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate)
    op = perfmodel.operating_point(r, concurrency=concurrency or knobs.max_batch_size, isl=workload.isl,
                                   osl=workload.osl, spread=workload.spread, context=workload.context)
    full = concurrency is None or concurrency >= knobs.max_batch_size
    # A full batch: the calibrated mean step (itl_scale) at the tail the prefill chunks make (physics). Part
    # full: the measured tail ratio, which also holds how full the batch happened to be while a request ran.
    tail = perfmodel.per_request_itl(op, osl=workload.osl, quantile=spec.slo.percentile / 100)
    itl_p = tail * cal.itl_scale if full else op.itl_s * cal.itl_scale * cal.itl_tail
    ttft_p = op.ttft_s * cal.ttft_scale * cal.ttft_tail
    prefill_p = op.prefill_s * cal.ttft_scale * cal.ttft_tail
    # KV share of a decode step's bytes: batch x context x KV bytes against that plus the weights.
    c = perfmodel.coefficients(r)
    kv_bytes = op.batch * workload.held * c.kv_bytes_per_token
    # The ITL margin: the calibration's measured error (itl_margin) unless the caller keeps another (`held`).
    itl_limit = spec.slo.itl * (1 - (itl_margin(cal) if margin is None else margin))
    feasible = itl_p <= itl_limit and ttft_p <= spec.slo.ttft * (1 - MARGIN) and (
        not full or kv_fits(c, knobs.max_batch_size, workload))
    # The throughput at the measured step, not the physics one: a request holds its slot for its prefill chunks
    # and decode steps, all of which the measured mean ITL times (itl_scale: measured over physics at the pods'
    # own occupancy). 8B on an A100 at 168 running, 400 in / 1,100 out, measured steps 10% slower than the
    # physics: 4.62 req/s by the physics step, 4.20 by the measured one, so 30 req/s needs 8 replicas, not 7
    # (7 ran at TTFTs of seconds in the twin).
    slower = cal.itl_scale
    return Prediction(
        knobs=knobs, batch=op.batch, limited_by=op.limited_by, itl_p=itl_p, ttft_p=ttft_p, prefill_p=prefill_p,
        prefill_load=op.prefill_load, prefill_cv2=op.prefill_cv2,
        output_tokens_per_s=op.output_tokens_per_s / slower, requests_per_s=op.requests_per_s / slower,
        kv_usage=op.kv_usage,
        mbu=op.mbu, kv_share=kv_bytes / (kv_bytes + c.weight_bytes), feasible=feasible, itl_limit=itl_limit,
    )


def itl_margin(cal: models.Calibration) -> float:
    """The share of the ITL objective a knee searched for a cap keeps free: Z95 standard errors of the calibrated
    scale as the search reads it. The signature rounds itl_scale to a grid of CAL_STEP, a uniform error of half a
    step either way (standard deviation 1.23% / sqrt(3) = 0.71%), independent of the calibration's own. Before any
    measurement sqrt(2.15^2 + 0.71^2) = 2.26%, a 3.7% margin; at 1% after steady cycles, 1.23%, a 2.0% margin."""
    return Z95 * math.hypot(cal.itl_error, GRID_ERROR)


def kv_fits(c: perfmodel.Coefficients, batch: int, workload: Workload) -> bool:
    """Whether a full batch of requests of this shape fits the KV cache 95% of the time, not just on average.

    The contexts of `batch` running requests sum to batch x mean with a relative spread of cv / sqrt(batch).
    70B FP8 on one H100 with the FP8 KV cache holds 17 chat requests of 1,100 tokens on average; 12 need
    12 x 1,100 x (1 + 1.65 x 0.87 / sqrt(12)) = 18,700 tokens, which fits; 16 would need 24,000 and queue for
    blocks whenever a few long prompts meet (TTFT in seconds). One request always gets its chance.
    """
    if batch <= 1:
        return True
    per_seq = workload.held + c.block_size / 2.0
    need = batch * per_seq * (1.0 + KV_FIT_Z * CONTEXT_CV / math.sqrt(batch))
    return need <= c.kv_blocks * c.block_size


def kv_full(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload, usage: float) -> bool:
    """Whether a KV cache this full has no room left for one more running request: its free tokens are fewer than
    a running request holds (measured, else isl + osl / 2), plus the half block it leaves unfilled.

    Past that, the engine admits a request only as another finishes, and a decode that grows preempts one
    (vLLM's scheduler; the twin's). 70B FP8 on 2 x H100 at the default KV cache holds 232,896 tokens; at 1,100
    tokens a request it is full from 99.5% in use. The fixed 90% this replaced fired at the batch kv_fits plans
    for: 190 running fill that cache to 90.4% on average, with room for 20 more."""
    return is_full(usage, kv_full_from(spec, knobs, workload))


def kv_full_from(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload) -> float:
    """The KV usage past which a cache has no room for one more running request (kv_full), asked once for many
    pods: 1 - (1,100 + 8) / 232,896 = 99.5% for chat on 70B FP8 over 2 x H100; infinite for a cache of no tokens."""
    c = perfmodel.coefficients(replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate))
    tokens = c.kv_blocks * c.block_size
    return 1.0 - (workload.held + c.block_size / 2.0) / tokens if tokens > 0 else math.inf


def is_full(usage: float, full_from: float) -> bool:
    """Whether a KV usage reading is past `full_from` (kv_full_from); a reading that is not a number is not."""
    return math.isfinite(usage) and usage > full_from


def batch_that_fits(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload) -> int:
    """The most requests a replica at these knobs runs at once 95% of the time (kv_fits), at most its max
    batch size: 70B FP8 on one H100 with the default KV cache and maxBatchSize 1,024 holds 8 chat requests of
    1,100 tokens on average, and 5 whenever a few long prompts meet."""
    c = perfmodel.coefficients(replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate))
    # kv_fits is monotone in the batch.
    return bisection.largest(1, max(1, knobs.max_batch_size), lambda b: kv_fits(c, b, workload))


# The search is a pure function of frozen inputs, and at rest they do not move from one cycle to the next: an
# idle resource asks the same two questions every interval. Its 2 x 12 predictions were three quarters of a
# steady reconcile's own work (1.2 of 1.5 ms); a hit costs the hash of the spec. 4,096 answers cover both KV
# dtypes of 2,000 resources, and an entry is a few hundred bytes beside a spec that is alive anyway.
SEARCH_CACHE = 4096

# The caches' keys are built anew every call (a spec copy without its template, the calibration and the request
# shape on their grids), so each entry held its own copy of what other entries hold equal ones of: with both
# caches full (4,096 searches of two KV dtypes and 4,096 knees under a cap over 1,000 resources of one spec, 100
# calibration cells), 28.3 MiB; interned, 11.9 MiB (tracemalloc, 2026-12-06, docs/scale.md). Interned, equal
# keys share the one object seen first (a spec is shared by every entry of its resource, a calibration cell by
# every budget and dtype searched on it). Bounded like the caches whose keys it holds, and as cheap as one more hash.
_INTERNED = 3 * SEARCH_CACHE


@functools.lru_cache(maxsize=_INTERNED)
def _interned(key: Any) -> Any:
    return key


def _shared(key: _Key) -> _Key:
    """The one object interned for keys equal to `key` (a cache key built anew is dropped after the call)."""
    return cast("_Key", _interned(key))


def _planning_spec(spec: models.InferenceDeploymentSpec) -> models.InferenceDeploymentSpec:
    """The spec as the caches key it: without the pod template (its labels and annotations are unhashable dicts
    and play no part in the frontier), interned."""
    return _shared(spec.model_copy(update={"template": None}))


def search(
    spec: models.InferenceDeploymentSpec, workload: Workload, cal: models.Calibration, *,
    kv: models.KvDtype, ceiling: int | None = None,
) -> Prediction:
    """The largest max batch size within bounds (and below `ceiling`) whose prediction meets the SLO.

    Latency only grows with the batch, so feasibility is monotone and a bisection over 1..1024 needs ten
    evaluations. When even the smallest bound misses the SLO, that bound is returned, marked infeasible.
    """
    # The pod template's labels and annotations (dicts: unhashable) play no part in the frontier. With traffic
    # the calibration moves every cycle (an EWMA of noisy minutes), so the search is asked on a signature of
    # its inputs: the four ratios on a 2.5% grid and the request shape on a 5% one (planning error at most half
    # a step, well inside the 5% margin the predictions keep from the SLO). A cycle with traffic cost 6.5 ms
    # of which the search over six budgets was three quarters; on the signature, 2.2 on average (docs/scale.md).
    return _search(_planning_spec(spec), _shared(_signature(workload)),
                   _shared(_signed(cal)), kv=kv, ceiling=ceiling)


# A batch cap this far above its knee is "clearly above" it: worth a restart to the knee (decide._propose;
# calibration noise moves a knee by less).
CLEARLY_ABOVE = 1.5


def held(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
         cal: models.Calibration) -> Prediction:
    """The knee under these knobs' own cap, token budget and KV dtype: how many requests a replica running them
    holds within the SLO before the batch grows past it (infeasible when none does).

    A cap far above the knee does not queue what comes beyond the knee: every running request slows instead.
    Sized to keep its occupancy at or under the knee, such a replica serves what one capped at that knee does
    (the same Erlang sizing); that is what it is worth before a restart to the knee. Cached like `search`."""
    return _held(_planning_spec(spec), _shared(_signature(workload)),
                 _shared(_signed(cal, error=False)), knobs)


@functools.lru_cache(maxsize=SEARCH_CACHE)
def _held(spec: models.InferenceDeploymentSpec, workload: Workload, cal: models.Calibration,
          knobs: models.Knobs) -> Prediction:
    # Requests running, not a cap to set: the tuning bounds (what the operator may set the engine to) do not bound
    # it. Pinned at 256 (tuning.maxBatchSize 256..256), Mixtral-8x7B on 2 x A100 has its knee at 3 running; a
    # search from the bounds' 256 found none and sized 4.4 GPU-h at the full batch, 17% of requests in the SLO.
    # The fixed MARGIN, not the calibration's error: the batch is left to grow past this knee, and the margin
    # also covers how far its running count spreads (the measured error alone took a twin fleet pinned at 256 from
    # 97.8% to 91.1% of requests within the SLO: docs/concepts.md, "The frontier and the knee").
    return _search_batch(spec, workload, cal, kv=knobs.kv_cache_dtype, ceiling=knobs.max_batch_size,
                         budget=knobs.max_num_batched_tokens,
                         bounds=models.BatchBounds(min=1, max=knobs.max_batch_size), margin=MARGIN)


def serving_point(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
                  cal: models.Calibration) -> Prediction:
    """The operating point replicas running `knobs` are sized at: the full batch where it meets the SLO, else the
    knee under the cap (`held`). 70B FP8 on 2 x H100, chat, at the engine's 1,024: a full batch (210 running, all
    the KV cache holds) predicts 97 ms ITL against 40 ms at 10.8 req/s; sized on that, a fleet's batches fill past
    the knee and every request runs late. The knee under the cap, 51 running at 7.1 req/s, sizes it as a cap
    there would be: by the prior's numbers, 20 req/s on 4 replicas, not 2. Where no batch under the cap meets the
    SLO, no count of replicas holds it either, and the full batch is what the engine runs.

    No margin above the knee: a cap that just misses at its full batch has its knee just under it, so the sized
    capacity moves smoothly with the cap and the calibration. A threshold (sized at the knee only for a cap 1.5x
    above it, as the restart rule's margin) made a cap of 100 over a knee of 66-67 flip between 66 slots and a
    full batch of 100 as the calibration moved, and the replica count with it. For the same reason the full batch
    is judged with the margin `held` keeps (MARGIN), not a cap's measured one: judged with 2%, a cap of 55 sized at
    55 slots and one of 56, missing, at its knee of 51 under 5%."""
    full = predict(spec, knobs, workload, cal, margin=MARGIN)
    if full.feasible:
        return full
    under = held(spec, knobs, workload, cal)
    return under if under.feasible else full


# Grids of the search's signature: log steps of 2.5% (calibration ratios) and 5% (prompt and output tokens).
CAL_STEP = math.log(1.025)
SHAPE_STEP = math.log(1.05)
# The standard deviation of rounding a ratio to the calibration's grid: half a step, uniform (1.23% / sqrt(3)).
GRID_ERROR = (math.exp(CAL_STEP / 2) - 1) / math.sqrt(3)
# The ITL error is on a coarser grid of its own: at 3% scatter it moves by a median 3.5% a cycle (up to 31%), so
# on the 2.5% grid it changed cell in 83% of cycles, and every search with it; on a 20% grid in 23%. 20% of a 1%
# error moves the margin by 0.3% of the objective. Rounded up: the margin errs wide.
ERROR_STEP = math.log(1.2)


def _grid(x: float, step: float) -> float:
    return math.exp(round(math.log(x) / step) * step) if x > 0 else x


def _grid_up(x: float, step: float) -> float:
    return min(ITL_ERROR_LIMIT, math.exp(math.ceil(math.log(x) / step) * step)) if x > 0 else x


def _signed(cal: models.Calibration, *, error: bool = True) -> models.Calibration:
    """The calibration's ratios on the grid, without the counters predict() does not read (nor the ITL error where
    the margin kept is fixed: `held`)."""
    return models.Calibration(itl_scale=_grid(cal.itl_scale, CAL_STEP), itl_tail=_grid(cal.itl_tail, CAL_STEP),
                              ttft_scale=_grid(cal.ttft_scale, CAL_STEP), ttft_tail=_grid(cal.ttft_tail, CAL_STEP),
                              itl_error=_grid_up(cal.itl_error, ERROR_STEP) if error else DEFAULT_ITL_ERROR)


def _signature(workload: Workload) -> Workload:
    """The request shape on the grid (the prefix-cache hit rate in steps of 0.05; the prefill's mean ratio and
    1 + cv2, the factor of its wait, in the calibration's steps)."""
    spread = perfmodel.PrefillSpread(mean_ratio=_grid(workload.spread.mean_ratio, CAL_STEP),
                                     cv2=max(0.0, _grid(1.0 + workload.spread.cv2, CAL_STEP) - 1.0))
    return Workload(isl=max(1, round(_grid(workload.isl, SHAPE_STEP))),
                    osl=max(2, round(_grid(workload.osl, SHAPE_STEP))),
                    prefix_hit_rate=round(workload.prefix_hit_rate * 20) / 20, spread=spread,
                    context=None if workload.context is None else _grid(workload.context, SHAPE_STEP))


def shape_spread(spec: models.InferenceDeploymentSpec, knobs: models.Knobs,
                 lengths: Sequence[tuple[float, float]]) -> perfmodel.PrefillSpread:
    """The prefill spread of measured prompt lengths ((tokens, rate) points) on this spec's replica."""
    return perfmodel.prefill_spread(replica.of(spec, knobs), lengths)


# The token budgets weighed: the engine's default and its halvings, down to a 32nd of it (8,192 -> 256 on an
# H100, 2,048 -> 64 on an L40S). A grid, not a fit: which one wins is the model's call for this shape. Smaller
# budgets cut a prompt into more, shorter chunks, so fewer of a request's steps are slowed by much (the ITL
# tail falls) while each prompt waits more steps (TTFT rises) and the batch may become prefill-bound.
BUDGET_HALVINGS = 5


def budgets(spec: models.InferenceDeploymentSpec) -> tuple[int | None, ...]:
    """The budgets the tuner may choose: None (the engine's default) first, then halvings of it.

    Only the default when the spec sets engine.maxNumBatchedTokens (the user's choice stands) or turns chunked
    prefill off (a prompt must then fit one step, so the budget is not a latency knob)."""
    e = spec.engine
    chunked = registry.for_engine(e).chunked_prefill_default if e.chunked_prefill is None else e.chunked_prefill
    if e.max_num_batched_tokens is not None or not chunked:
        return (None,)
    default = replica.default_budget(spec)
    return (None, *(default >> k for k in range(1, BUDGET_HALVINGS + 1)))


def wait_budget(spec: models.InferenceDeploymentSpec, at: Prediction) -> queueing.WaitBudget:
    """What the TTFT objective leaves for queueing for a slot, by the load the replicas run at.

    The prefill's p95 without the closed loop's queue: with it, the queue was counted twice, once in the TTFT
    of a full batch of clients and again by the Erlang sizing. 70B FP8 on 2 x H100, 2,000/30 tokens at budget
    256 and maxBatchSize 8: 1.51 s p95 with 8 clients queueing for 6.4 running slots, 0.35 s without, so 0.39 s
    of a 2 s objective was left for queueing instead of 1.55 s (4 replicas sized where 2 held 98.6%). And the
    wait behind other prefills at the load sized for, not at full throughput: 1.5 s x 0.95 less a 0.3 s p95
    prefill at a load of 0.6 leaves 1.13 s at no load and 1.04 s at 60% of the throughput."""
    return queueing.WaitBudget(objective=spec.slo.ttft * (1 - MARGIN), prefill=at.prefill_p, load=at.prefill_load,
                               cv2=at.prefill_cv2)


def queue_miss(spec: models.InferenceDeploymentSpec) -> float:
    """Half the misses the SLO percentile allows go to queueing (2.5% for p95), half to latency tails."""
    return (1 - spec.slo.percentile / 100) / 2


def slo_rate(spec: models.InferenceDeploymentSpec, p: Prediction) -> float:
    """Requests/s one replica at this prediction serves within the SLO on Poisson arrivals (queueing.slo_rate).

    Candidates are compared with the queue of a full batch of clients left in their TTFT (ttft_p, not prefill_p):
    where the prefill or the KV cache admits fewer than the batch, that wait is how the candidate serializes its
    admissions, which the M/M/c queue of batch slots does not see. 8B on an L40S, chat (1,000/200): a 256-token
    budget runs 41 at 6.2 req/s but admits one prompt per 4 steps; scored without that wait it was chosen over
    the default budget's 50 and took 4.3 GPU-h against 3.5 (bench/scenarios/llama-8b-l40s.yaml)."""
    budget = max(queueing.MIN_WAIT, spec.slo.ttft * (1 - MARGIN) - p.ttft_p)
    return queueing.slo_rate(capacity=p.requests_per_s, slots=p.batch, wait_budget=budget, miss=queue_miss(spec))


def _miss(spec: models.InferenceDeploymentSpec, p: Prediction) -> float:
    """How far a prediction is from the SLO: the larger of its ITL and TTFT over their objectives."""
    return max(p.itl_p / spec.slo.itl, p.ttft_p / spec.slo.ttft)


@functools.lru_cache(maxsize=SEARCH_CACHE)
def _search(
    spec: models.InferenceDeploymentSpec, workload: Workload, cal: models.Calibration, *,
    kv: models.KvDtype, ceiling: int | None,
) -> Prediction:
    # For each budget the largest batch that meets the SLO; among those the most requests per replica within
    # the SLO on Poisson arrivals (per GPU: every candidate runs on the same GPUs; slo_rate: a prefill that
    # leaves no TTFT for queueing serves far below its throughput), the default budget on a tie. When none
    # meets it, the one closest to it, so that what Tuned reports is the best the hardware reaches.
    scored = [(p, slo_rate(spec, p) if p.feasible else 0.0) for p in
              (_search_batch(spec, workload, cal, kv=kv, ceiling=ceiling, budget=b) for b in budgets(spec))]
    best, score = scored[0]
    for p, rate in scored[1:]:
        if p.feasible != best.feasible:
            better = p.feasible
        else:
            better = rate > score if p.feasible else _miss(spec, p) < _miss(spec, best)
        if better:
            best, score = p, rate
    return best


def _search_batch(
    spec: models.InferenceDeploymentSpec, workload: Workload, cal: models.Calibration, *,
    kv: models.KvDtype, ceiling: int | None, budget: int | None, bounds: models.BatchBounds | None = None,
    margin: float | None = None,
) -> Prediction:
    bounds = bounds or spec.tuning.max_batch_size
    high = bounds.max if ceiling is None else min(bounds.max, ceiling)
    if budget is not None:
        high = min(high, budget)  # the engines refuse a budget below the batch
    low = bounds.min

    @functools.cache
    def at(b: int) -> Prediction:
        return predict(spec, models.Knobs(max_batch_size=b, kv_cache_dtype=kv, max_num_batched_tokens=budget),
                       workload, cal, margin=margin)

    if high < low:
        return at(low) if budget is None or budget >= low else dataclasses.replace(at(low), feasible=False)
    found = bisection.largest(low, high, lambda b: at(b).feasible)
    if found in (low, high):
        return at(found)  # the smallest bound (feasible or not: then marked so), or every batch meets the SLO
    chosen = found - found % GRANULE if found >= 10 * GRANULE else found
    return at(max(low, chosen))


def calibrate(
    cal: models.Calibration, spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
    points: list[observation.PodMetrics],
) -> models.Calibration:
    """Fold this cycle's measurements of the running configuration into the calibration (one EWMA step).

    The pods' ratios (measured over the physics at each pod's own occupancy) are averaged first, weighted by
    request rate, then moved into the calibration with alpha 0.2: a pod at 30 running requests with 24 ms mean
    ITL, where the prior says 20 ms, moves itl_scale from 1.0 to 0.8 x 1.0 + 0.2 x 1.2 = 1.04. One step per
    cycle, not per pod: with ten pods a per-pod step would keep only the last cycle (1 - 0.8^10 = 89% of it)
    and the knee would follow every noisy minute. TTFT is calibrated only without a queue (waiting < 0.5),
    so queueing from too few replicas is not mistaken for slow prefill; ITL also with a queue the TTFT objective
    allows (no more waiting than the pod starts within it), not behind a burst's.
    """
    sums: dict[str, list[float]] = {}

    def add(key: str, value: float, weight: float) -> None:
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += value * weight
        acc[1] += weight

    used = 0
    fullest = cal.max_occupancy
    full_from = kv_full_from(spec, knobs, workload)
    for m in points:
        if not m.requests_per_s or m.running is None or m.running < 0.5:
            continue
        # Only steady operation teaches the model: with preemptions or a full KV cache the batch churns
        # (recomputed prefills, evictions), and behind a burst's queue (more waiting than the pod starts within
        # the TTFT objective, by Little's law: 0.5 req/s x 31.4 s = 15.7) every step carries a queued prompt's
        # chunk; in neither is the step time the physics of that batch. A queue the objective allows is steady
        # operation for the ITL: long prompts keep one on an 8B L40S serving Mooncake's trace in most windows,
        # and learning only from the rest left the calibration at 71 samples in 18 minutes while the pods ran
        # their per-request ITL at 65-100 ms against the 59 ms it kept predicting (docs/validation.md, g23).
        waiting = m.waiting or 0.0
        burst = waiting > m.requests_per_s * spec.slo.ttft
        full = m.kv_usage is not None and is_full(m.kv_usage, full_from)
        if burst or (m.preemptions_per_s or 0) > 0 or full:
            continue
        # The uncalibrated physics' means at the pod's own occupancy (no tails): the ITL weighted by the tokens
        # made at the two whole counts around it, the TTFT at the rounded count (one of the two).
        low, high, share = _bracket(spec, knobs, workload, m.running)
        base = high if high is not None and round(m.running) > low.concurrency else low
        # Tokens are made only while a request runs, so the ITL is read at the count while busy (the running
        # average over the busy share), not at the window's average with its idle time in it; arrivals meet the
        # time average (Poisson arrivals see time averages), so the TTFT keeps it. Mixtral 8x7B on 2 x A100 (grid
        # g20), a pod at 1.31 running and busy 80% of the window runs 1.64 while busy: read at 1.31, its tokens
        # (10.5 ms at one running) looked 3-7% slower than the physics, which kept the knee at 3 where 4 holds
        # the SLO; read at the busy count the scale is 0.99-1.00 with a tenth of the error.
        busy_run = _busy_count(m, knobs)
        if busy_run != m.running:
            low, high, share = _bracket(spec, knobs, workload, busy_run)
        itl = _token_mean(low, high, share, busy_run)
        w = m.requests_per_s
        if m.itl_mean and itl > 0:
            add("itl_scale", m.itl_mean / itl, w)
            # The SLO's ITL is a per-request mean: its tail comes from the per-request histogram. Per-token
            # ITL spikes on every prefill chunk (p95 = 2.5x the mean on a chat load), per-request ITL does not.
            per_request = m.tpot_p or m.itl_p
            if per_request:
                add("itl_tail", max(1.0, per_request / m.itl_mean), w)
        # TTFT only without a queue: waiting is the replica count's, not slow prefill.
        if m.ttft_mean and base.ttft_s > 0 and waiting < 0.5:
            add("ttft_scale", m.ttft_mean / base.ttft_s, w)
            if m.ttft_p:
                add("ttft_tail", max(1.0, m.ttft_p / m.ttft_mean), w)
        used += 1
        fullest = max(fullest, m.running)
    if not used:
        return cal
    update: dict[str, float | int | None] = {
        k: min(SCALE_LIMITS[1], max(SCALE_LIMITS[0], _ewma(getattr(cal, k), total / weight, ALPHA)))
        for k, (total, weight) in sums.items() if weight > 0}
    if "itl_scale" in sums and sums["itl_scale"][1] > 0:
        update.update(_itl_error(cal, sums["itl_scale"][0] / sums["itl_scale"][1]))
    return cal.model_copy(update={**update, "samples": cal.samples + used, "max_occupancy": fullest})


def _itl_error(cal: models.Calibration, ratio: float) -> dict[str, float | int | None]:
    """The ITL calibration's noise and error after this cycle's measured / predicted ratio moved it.

    The noise is the EWMA of each cycle's squared log deviation from the scale it found (the first cycle's sets
    it); the scale's error then follows the EWMA's own variance recursion, (1 - a)^2 x error^2 + a^2 x noise, from
    the prior's error: it tends to noise x a / (2 - a), a third of the noise's deviation at a = 0.2. Cycles 3%
    apart, the first five: 2.15% (prior) -> 1.83 -> 1.58 -> 1.40 -> 1.27 -> 1.18%, then 1.0% for good. A model off
    by 10% whose first cycle says so: noise (log 1.1)^2, error sqrt(0.8^2 x 2.15^2 + 0.2^2 x 9.5^2) = 2.6%.
    """
    if not math.isfinite(ratio) or ratio <= 0:
        return {}
    # Held to the limits the scale itself is (a 10x reading moves the scale no further than 3x either).
    ratio = min(SCALE_LIMITS[1], max(SCALE_LIMITS[0], ratio))
    deviation = math.log(ratio / cal.itl_scale) ** 2
    noise = deviation if cal.itl_noise is None else _ewma(cal.itl_noise, deviation, ALPHA)
    error = math.sqrt((1 - ALPHA) ** 2 * cal.itl_error ** 2 + ALPHA ** 2 * noise)
    return {"itl_noise": min(noise, NOISE_LIMIT), "itl_error": min(error, ITL_ERROR_LIMIT)}


def running_context(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
                    points: list[observation.PodMetrics], *, old: float | None) -> float | None:
    """The tokens a running request holds in the KV cache, measured: the pods' KV usage times their caches' tokens
    over the requests they run, less the half block each leaves unfilled, folded into `old` with the
    calibration's EWMA step (the first measurement sets it). `old` where no pod measures it.

    The model's isl + osl / 2 holds only when every output is as long as the mean: the long outputs run longest.
    8B BF16 on an L40S (12,820 blocks of 16 tokens), 200 in / 1,500 out at cv 0.5: a pod at 165 running with 91%
    of its cache in use holds 0.91 x 205,120 / 165 - 8 = 1,123 tokens a request, where the model said 950 (and
    1,137 by 200 + 1,500 x (1 + 0.5^2) / 2). At 150 running the KV reads are half of each step's bytes, so the
    step at 1,137 tokens is 10% slower than at 950 (57.5 against 52.2 ms), and the knee under a 55 ms objective
    is 120 running, not 144 (grid g13: sized at 144-152, its pods ran their ITL past the objective).
    Pods preempting are not read (a preempting pod's cache reads full whatever it runs), nor a fleet running
    under one request in all."""
    c = perfmodel.coefficients(replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate))
    read = [m for m in points if m.kv_usage is not None and m.running is not None and m.running > 0
            and math.isfinite(m.kv_usage) and math.isfinite(m.running) and not (m.preemptions_per_s or 0) > 0]
    running = sum(m.running or 0.0 for m in read)
    # All the cache in use over all the requests running (a ratio of sums): per pod, a pod that happens to run one
    # long prompt would speak for the fleet.
    if running < 1 or c.kv_blocks <= 0:
        return old
    now = sum(m.kv_usage or 0.0 for m in read) * c.kv_blocks * c.block_size / running - c.block_size / 2.0
    if now <= 0:
        return old
    return now if old is None else ewma(old, now)


def token_mean_itl(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
                   running: float) -> float:
    """The physics' mean ITL over the tokens of a pod whose running count averaged `running` over the window.

    The engine's mean ITL is per token, and a pod makes more tokens per second the more it runs (n / step(n)), so
    its mean is the step at each occupancy weighted by the tokens made there, not the step at the rounded mean.
    A router that sends each request to the pod with the fewest in flight keeps a pod's count between the two
    whole numbers around its mean. Mixtral-8x7B on 2 x A100 steps 10.7 ms with 1 running and 16.6 ms with 2; a
    pod averaging 1.38 running makes 0.62 x 1 / 10.7 + 0.38 x 2 / 16.6 = 0.104 tokens per ms, and each token
    waits one step: 1.38 / 0.104 = 13.3 ms a token (the time-weighted step is 12.9). Rounded
    to 1 running, the 14.5 ms its pods measured in the twin read as hardware 36% slower than the physics: on g20
    the learned scale ran 1.03-1.23, cutting a replica's planned capacity by as much, and moved the knee from 3 to 2
    at times (docs/concepts.md, "The frontier and the knee"). With a random split a pod's count spreads wider
    (Poisson) and its tokens lean further up: what is left is learned as a scale, as before.
    """
    return _token_mean(*_bracket(spec, knobs, workload, running), running)


def _bracket(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload, running: float
             ) -> tuple[perfmodel.OperatingPoint, perfmodel.OperatingPoint | None, float]:
    """The physics at the whole count under `running` (at least 1), at the one above where the mean lies between
    (else None), and the share of the time at the one above: 1.38 running is 1 for 62% of it and 2 for 38%."""
    low = max(1, math.floor(running))
    share = running - low if running > low else 0.0
    return _means(spec, knobs, workload, low), (_means(spec, knobs, workload, low + 1) if share > 0 else None), share


def _busy_count(m: observation.PodMetrics, knobs: models.Knobs) -> float:
    """The requests running while the engine has any (m.running over m.busy), within 1 and the batch cap; the
    window's average where the busy share is not measured. 1.31 running, busy 0.8: 1.64."""
    if m.running is None or not m.busy or m.busy < 0:
        return m.running or 0.0
    return min(max(m.running / min(m.busy, 1.0), 1.0), float(knobs.max_batch_size))


def _token_mean(low: perfmodel.OperatingPoint, high: perfmodel.OperatingPoint | None, share: float,
                running: float) -> float:
    """token_mean_itl from the bracketing points (_bracket)."""
    if high is None or low.itl_s <= 0 or high.itl_s <= 0:
        return low.itl_s
    return running / ((1 - share) * low.concurrency / low.itl_s + share * high.concurrency / high.itl_s)


def _means(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload,
           running: int) -> perfmodel.OperatingPoint:
    r = replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate)
    return perfmodel.operating_point(r, concurrency=running, isl=workload.isl, osl=workload.osl,
                                     spread=workload.spread, context=workload.context)


ALPHA = 0.2
MEANS = models.Calibration(itl_tail=1.0, ttft_tail=1.0)
# A measured scale outside 0.3x..3x the physics means the model does not describe this server at all.
SCALE_LIMITS = (0.3, 3.0)
# The bounds of the status fields the ITL error and noise are written to (models.Calibration).
ITL_ERROR_LIMIT = models.Calibration.model_fields["itl_error"].metadata[-1].le
NOISE_LIMIT = models.Calibration.model_fields["itl_noise"].metadata[-1].le
DEFAULT_ITL_ERROR = models.Calibration.model_fields["itl_error"].default


def _ewma(old: float, new: float, alpha: float) -> float:
    return (1 - alpha) * old + alpha * new


def ewma(old: float, new: float) -> float:
    """One step of the calibration's EWMA (alpha ALPHA): 0.8 x old + 0.2 x new."""
    return _ewma(old, new, ALPHA)


def confidence(cal: models.Calibration, knee_batch: float) -> float:
    """0.25 on physics alone; up to 1 with eight calibrated cycles that saw the batch near the knee."""
    if cal.samples == 0:
        return 0.25
    coverage = min(1.0, cal.max_occupancy / max(knee_batch, 1.0))
    return round(min(1.0, cal.samples / 8) * (0.4 + 0.6 * coverage), 3)


def estimate_mbu(
    spec: models.InferenceDeploymentSpec, knobs: models.Knobs, workload: Workload, *, running: float,
    itl_mean: float,
) -> float | None:
    """MBU without DCGM: bytes one decode step moves (weights + the batch's KV) over the measured step time.

    70B FP8 on one H100, 8 running at 1,100 tokens: 70.6 GB + 8 x 1,100 x 160 KiB = 72.0 GB per step; at a
    32 ms step that is 2.25 TB/s of 3.35 TB/s peak: MBU 0.67.
    """
    if running <= 0 or itl_mean <= 0:
        return None
    c = perfmodel.coefficients(replica.of(spec, knobs, prefix_cache_hit_rate=workload.prefix_hit_rate))
    batch = max(1, round(running))
    moved = c.bytes_moved(batch, batch * workload.held)
    return min(1.0, moved / (itl_mean * c.peak_bytes_per_s))
