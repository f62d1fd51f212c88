"""Test: the per-step token budget as a tuned knob: candidates, the model against the twin, render and revisions."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

import pytest

import specs
from infertune import catalog, decide, knee, models, observation, perfmodel, render, replica, validation
from infertune.sim import sweep

ISL, OSL = 2048, 28  # issue 17's prefill-heavy shape: code completion, long prompts, short answers


def spec_of(**changes: Any) -> models.InferenceDeploymentSpec:
    base = {"model.architecture": "llama-3.1-8b", "model.weights": "fp8", "accelerator.type": "l40s",
            "slo.ttft": "1s", "slo.itl": "30ms", "tuning.maxBatchSize": {"min": 1, "max": 256}}
    spec, problems = validation.parse(specs.spec(**{**base, **changes}))
    assert spec is not None, problems
    return spec


def l40s(budget: int, batch: int = 8) -> perfmodel.Replica:
    return perfmodel.Replica(gpu=catalog.gpu("l40s"), model=catalog.model("llama-3.1-8b"),
                             weights=models.Precision.FP8, max_num_seqs=batch, max_num_batched_tokens=budget)


def test_the_candidates_are_the_default_and_its_halvings_unless_the_spec_sets_one() -> None:
    # 2,048 tokens a step is vLLM's default on a GPU under 70 GiB; None stands for it (no flag rendered).
    assert knee.budgets(spec_of()) == (None, 1024, 512, 256, 128, 64)
    assert knee.budgets(spec_of(**{"accelerator.type": "h100-sxm-80gb"}))[1:3] == (4096, 2048)
    assert knee.budgets(spec_of(**{"engine.maxNumBatchedTokens": 4096})) == (None,)
    assert knee.budgets(spec_of(**{"engine.chunkedPrefill": False, "engine.maxNumBatchedTokens": 8192})) == (None,)


@pytest.mark.parametrize("budget", [512, 256])
def test_the_model_agrees_with_the_twin_where_prefill_bounds_the_batch(budget: int) -> None:
    # Every step full of prefill and still not enough: the budget, not the batch, sets throughput and ITL.
    r = l40s(budget)
    op = perfmodel.operating_point(r, concurrency=8, isl=ISL, osl=OSL)
    twin = sweep.closed_loop(r, concurrency=8, isl=ISL, osl=OSL)
    assert op.limited_by == "prefill"
    assert op.requests_per_s == pytest.approx(twin.requests_per_s, rel=0.10)
    assert op.itl_s * 1e3 == pytest.approx(twin.itl_ms_mean, rel=0.10)


def test_the_model_ranks_budgets_as_the_twin_does() -> None:
    # The twin's closed loop at concurrency 8: 512 serves the most (10.6 req/s), 256 too little prefill (7.8),
    # 2,048 slow mixed steps (8.2). The model need not match every number, but must rank the best first.
    budgets = (2048, 1024, 512, 256)
    model = {b: perfmodel.operating_point(l40s(b), concurrency=8, isl=ISL, osl=OSL).requests_per_s for b in budgets}
    twin = {b: sweep.closed_loop(l40s(b), concurrency=8, isl=ISL, osl=OSL).requests_per_s for b in budgets}
    assert max(model, key=model.__getitem__) == max(twin, key=twin.__getitem__) == 512


def test_on_a_prefill_heavy_load_the_knee_serves_more_within_the_slo_than_the_defaults() -> None:
    # Issue 17: the batch was driven down to 1 on this shape. The planner's choice must meet both objectives on
    # the twin and serve at least what the best batch at the default budget serves within them.
    spec = spec_of()
    workload = knee.Workload(isl=ISL, osl=OSL)
    best = knee.search(spec, workload, models.Calibration(), kv=models.KvDtype.DEFAULT)
    assert best.feasible and best.knobs.max_num_batched_tokens is not None
    assert best.knobs.max_batch_size > 1

    def within(r: perfmodel.Replica, n: int) -> float:
        p = sweep.closed_loop(r, concurrency=n, isl=ISL, osl=OSL)
        return p.requests_per_s if p.itl_ms_p95 <= 30.0 and p.ttft_ms_p95 <= 1000.0 else 0.0

    # A replica's best within both objectives over the client counts a load can bring (the closed loop at n
    # clients; a max batch above what prefill feeds is never reached), against the best batch at the default
    # budget: `infertune sweep` on this shape shows 8 fitting, and the planner's batch is never below it.
    clients = (1, 2, 4, 6, 8, 12, 16)
    chosen = replica.of(spec, best.knobs)
    mine = max(within(chosen, n) for n in clients if n <= best.knobs.max_batch_size)
    default = max(within(replica.of(spec, models.Knobs(max_batch_size=n)), n) for n in clients)
    assert mine > 0 and mine >= default
    assert best.knobs.max_batch_size >= 8


def test_a_tuned_budget_reaches_the_engine_flag_and_the_labels() -> None:
    spec = spec_of()
    owner = render.Owner(name="llm", namespace="ns", uid="u1")
    knobs = models.Knobs(max_batch_size=8, max_num_batched_tokens=512)
    dep = render.deployment(owner, spec, knobs, replicas=1)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-batched-tokens") + 1] == "512"
    labels = dep["metadata"]["labels"]
    assert render.knobs_from_labels(labels) == knobs
    # Unset, no flag and no label: the engine runs its default.
    plain = render.deployment(owner, spec, models.Knobs(max_batch_size=8), replicas=1)
    assert "--max-num-batched-tokens" not in plain["spec"]["template"]["spec"]["containers"][0]["args"]
    assert render.knobs_from_labels(plain["metadata"]["labels"]) == models.Knobs(max_batch_size=8)
    # A bad label is unreadable knobs, not a crash.
    assert render.knobs_from_labels({**labels, render.LABEL_BUDGET: "many"}) is None
    assert render.knobs_from_labels({**labels, render.LABEL_BUDGET: "0"}) is None


def test_revisions_without_a_budget_keep_the_names_they_had_before_the_knob_existed() -> None:
    spec = spec_of()
    knobs = models.Knobs(max_batch_size=8, kv_cache_dtype=models.KvDtype.FP8)
    # The hash as it was computed before the budget was a knob: the knobs' two fields only.
    shaping = {
        "model": spec.model.model_dump(mode="json", by_alias=True),
        "engine": spec.engine.model_dump(mode="json", by_alias=True),
        "accelerator": spec.accelerator.model_dump(mode="json", by_alias=True, exclude={"hourly_cost"}),
        "template": spec.template.model_dump(mode="json", by_alias=True),
        "knobs": {"maxBatchSize": 8, "kvCacheDtype": "fp8"},
    }
    old = hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert render.revision(spec, knobs) == old
    assert render.revision(spec, knobs.model_copy(update={"max_num_batched_tokens": 512})) != old


def test_a_budget_the_spec_now_pins_is_no_longer_allowed() -> None:
    tuned = models.Knobs(max_batch_size=8, max_num_batched_tokens=512)
    assert decide.allowed(spec_of(), tuned)
    assert not decide.allowed(spec_of(**{"engine.maxNumBatchedTokens": 4096}), tuned)
    assert decide.allowed(spec_of(**{"engine.maxNumBatchedTokens": 4096}), models.Knobs(max_batch_size=8))


@pytest.mark.parametrize("bad", [0, -1, 10_000_001, "512", 1.5])
def test_a_bad_budget_knob_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        models.Knobs.model_validate({"max_batch_size": 8, "max_num_batched_tokens": bad}, strict=True)


def test_an_unreachable_slo_names_the_objective_and_the_best_the_planner_reaches() -> None:
    # 8B on an L40S cannot decode a token in 5 ms at any batch or budget: the ITL objective is infeasible.
    spec = spec_of(**{"slo.itl": "5ms", "scaling.coldStart": "60s"})
    status = models.InferenceDeploymentStatus()
    obs = observation.Observation(name="llm", namespace="ns", generation=1, spec=spec, status=status,
                                  revisions=(), pods=(), metrics=None)
    d = decide.decide(obs, now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    tuned = next(c for c in d.status.conditions if c.type == "Tuned")
    assert (tuned.status, tuned.reason) == ("False", "SLOUnreachable")
    assert "ITL (predicted" in tuned.message and "against 5 ms" in tuned.message
    assert "TTFT (predicted" not in tuned.message  # the TTFT objective (1 s) is met; only ITL is not


def test_the_search_is_asked_on_a_signature_of_its_inputs() -> None:
    # With traffic the calibration moves a little every cycle: the search answers from memory within its grid.
    spec = spec_of()
    workload = knee.Workload(isl=ISL, osl=OSL)
    first = knee.search(spec, workload, models.Calibration(itl_scale=1.100), kv=models.KvDtype.DEFAULT)
    hits = knee._search.cache_info().hits
    again = knee.search(spec, knee.Workload(isl=ISL + 20, osl=OSL), models.Calibration(itl_scale=1.104, samples=9),
                        kv=models.KvDtype.DEFAULT)
    assert knee._search.cache_info().hits == hits + 1 and again == first
    # A move beyond the grid is searched afresh.
    knee.search(spec, workload, models.Calibration(itl_scale=1.2), kv=models.KvDtype.DEFAULT)
    assert knee._search.cache_info().hits == hits + 1
    # The grid's error is at most half a step: 2.5% steps put any ratio within 1.25% of itself.
    for x in (0.31, 0.97, 1.0, 1.013, 1.5, 2.99):
        assert abs(knee._signed(models.Calibration(itl_scale=x)).itl_scale / x - 1) <= 0.0125


def test_the_wait_budget_leaves_out_the_closed_loop_queue_the_replica_count_sizes() -> None:
    # Prefill-bound at a small budget: a full batch of 64 clients runs far fewer and the rest wait, so the TTFT of
    # a full batch holds a queue. The replica count sizes the queue with Erlang C; counting it in the prefill too
    # left less of the objective for queueing than the prefill itself leaves.
    spec = spec_of(**{"slo.ttft": "2s"})
    knobs = models.Knobs(max_batch_size=64, kv_cache_dtype=models.KvDtype.DEFAULT, max_num_batched_tokens=256)
    p = knee.predict(spec, knobs, knee.Workload(isl=ISL, osl=OSL), models.Calibration())
    assert p.limited_by == "prefill" and p.batch < 64
    assert p.prefill_p < p.ttft_p  # the queue of 64 - batch clients is in ttft_p only
    budget = knee.wait_budget(spec, p)
    assert budget.load == 0.0  # prefill-bound: its wait is that queue, which the replica count sizes
    assert budget.at(1.0) == pytest.approx(2.0 * (1 - knee.MARGIN) - p.prefill_p)
    assert budget.at(1.0) > 2.0 * (1 - knee.MARGIN) - p.ttft_p
    # Where every client runs, the budget at full throughput is what a full batch's TTFT leaves; below it the wait
    # behind other prefills is shorter and leaves more, and at no load only the request's own prefill counts.
    light = knee.predict(spec, knobs.model_copy(update={"max_batch_size": 2}), knee.Workload(isl=ISL, osl=OSL),
                         models.Calibration())
    assert light.prefill_load > 0
    budget = knee.wait_budget(spec, light)
    assert budget.at(1.0) == pytest.approx(2.0 * (1 - knee.MARGIN) - light.ttft_p)
    assert budget.at(0.0) == pytest.approx(2.0 * (1 - knee.MARGIN) - light.prefill_p)
    assert budget.at(0.0) > budget.at(0.5) > budget.at(1.0)


def test_equal_cache_keys_share_one_object_so_a_full_cache_holds_one_spec_per_resource() -> None:
    # Each call builds its keys anew (a spec copy without its template, the calibration on its grid); a cache of
    # 4,096 searches held 4,096 spec copies where one per resource is equal to all of its others.
    spec, twin = spec_of(), spec_of()
    assert spec == twin and spec is not twin
    cal = models.Calibration(itl_scale=1.31, itl_tail=1.07)
    knee.search(spec, knee.Workload(isl=ISL, osl=OSL), cal, kv=models.KvDtype.DEFAULT)
    knee.search(twin, knee.Workload(isl=3 * ISL, osl=OSL), cal.model_copy(update={"samples": 40}),
                kv=models.KvDtype.DEFAULT)
    first = knee._shared(spec.model_copy(update={"template": None}))
    assert knee._shared(twin.model_copy(update={"template": None})) is first
    assert knee._shared(knee._signed(cal.model_copy(update={"samples": 7}))) is knee._shared(knee._signed(cal))
    # Unequal keys stay apart: interning never answers for another spec.
    other = spec_of(**{"slo.itl": "35ms"})
    assert knee._shared(other.model_copy(update={"template": None})) is not first
