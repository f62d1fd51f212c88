"""Test: the twin's engine (scheduling, KV, preemption, timing, aborts) and the fleet around it."""

from __future__ import annotations

import math

import pytest

from infertune import catalog, models, perfmodel
from infertune.sim import engine, fleet, workload

FP8 = models.Precision.FP8


def replica(model: str = "llama-3.1-8b", gpu: str = "h100-sxm-80gb", **kw: object) -> perfmodel.Replica:
    return perfmodel.Replica(gpu=catalog.gpu(gpu), model=catalog.model(model), **kw)  # type: ignore[arg-type]


def req(i: int, t: float, prompt: int, output: int) -> engine.Request:
    return engine.Request(id=i, arrival=t, prompt_tokens=prompt, output_tokens=output)


def drain(e: engine.SimEngine, until: float = math.inf) -> list[engine.Request]:
    out: list[engine.Request] = []
    while (t := e.next_event_time()) < math.inf and t <= until:
        e.advance(t)
        out += e.pop_finished()
    return out


def poisson_load(rate: float, seconds: float, seed: int = 3) -> list[workload.Arrival]:
    return workload.poisson(
        rate, duration=seconds, isl=workload.LogNormal(800, 0.8, high=4000),
        osl=workload.LogNormal(200, 1.0, high=1500), seed=seed,
    )


def run_engine(
    r: perfmodel.Replica, arrivals: list[workload.Arrival], *, step: float | None = None
) -> list[engine.Request]:
    """Submit the arrivals; advance event to event, or in fixed `step` slices."""
    e = engine.SimEngine(r)
    out: list[engine.Request] = []
    for i, a in enumerate(arrivals):
        if step is not None:
            t = e.now
            while t + step < a.time:
                t += step
                e.advance(t)
        e.submit(req(i, a.time, a.prompt_tokens, a.output_tokens), a.time)
        out += e.pop_finished()
    out += drain(e)
    return sorted(out, key=lambda r: r.id)


def test_single_request_timeline_matches_the_physics() -> None:
    r = replica()
    e = engine.SimEngine(r)
    e.submit(req(1, 0.0, 1000, 10), 0.0)
    [done] = drain(e)
    c = perfmodel.coefficients(r)
    ttft = c.step_seconds(1000, 1000, 1000 * 1001 / 2)
    assert done.status == engine.FINISHED and done.generated == 10
    assert done.ttft == pytest.approx(ttft)
    # Nine decode steps with 1,001 ... 1,009 tokens of KV.
    decode = sum(c.step_seconds(1, 1001 + j) for j in range(9))
    assert done.finished == pytest.approx(ttft + decode)
    assert done.itl == pytest.approx(decode / 9)
    assert e.stats.generation_tokens == 10 and e.stats.prompt_tokens == 1000
    assert e.stats.itl.count == 9 and e.stats.itl.sum == pytest.approx(decode)
    assert e.outstanding == 0 and e.kv_blocks_used == 0


def test_advancing_in_slices_changes_nothing() -> None:
    """Macro-steps split at arbitrary times must give the same timeline as event-to-event runs."""
    r = replica("llama-3.1-70b", weights=FP8, max_num_seqs=16)
    load = poisson_load(1.5, 40.0)
    a = run_engine(r, load)
    b = run_engine(r, load, step=0.0371)
    assert [x.status for x in a] == [y.status for y in b]
    for x, y in zip(a, b, strict=True):
        assert x.first_token == pytest.approx(y.first_token, abs=1e-9)
        assert x.finished == pytest.approx(y.finished, abs=1e-9)


def test_batch_and_kv_limits_hold_and_everything_finishes() -> None:
    r = replica("llama-3.1-70b", weights=FP8, max_num_seqs=8)
    e = engine.SimEngine(r)
    load = poisson_load(3.0, 30.0)
    finished: list[engine.Request] = []
    for i, a in enumerate(load):
        e.submit(req(i, a.time, a.prompt_tokens, a.output_tokens), a.time)
        assert e.num_running <= 8
        assert e.kv_blocks_used <= e.c.kv_blocks
        finished += e.pop_finished()
    while (t := e.next_event_time()) < math.inf:
        e.advance(t)
        assert e.num_running <= 8 and e.kv_blocks_used <= e.c.kv_blocks
        finished += e.pop_finished()
    assert len(finished) == len(load)
    assert all(x.status == engine.FINISHED and x.generated == x.output_tokens for x in finished)
    assert e.stats.generation_tokens == sum(x.output_tokens for x in finished)


def test_kv_exhaustion_preempts_the_newest_and_recomputes() -> None:
    # 70B FP8 on one H100 holds ~9.8k tokens: four 2,000-token prompts growing by 1,000 tokens cannot all fit.
    r = replica("llama-3.1-70b", weights=FP8, prefix_caching=False)
    e = engine.SimEngine(r)
    for i in range(4):
        e.submit(req(i, 0.0, 2000, 1000), 0.0)
    done = drain(e)
    assert e.stats.preemptions > 0
    assert all(x.status == engine.FINISHED and x.generated == 1000 for x in done)
    victims = [x for x in done if x.preemptions]
    assert victims and max(x.id for x in victims) == 3  # the newest goes first
    # Recompute costs prompt tokens again; without prefix caching nothing is reused.
    assert e.stats.prefix_hits == 0
    assert e.stats.prefix_queries > 4 * 2000


def test_prefix_cache_keeps_a_preempted_requests_prefix() -> None:
    base = replica("llama-3.1-70b", weights=FP8, prefix_caching=False)
    cached = replica("llama-3.1-70b", weights=FP8, prefix_caching=True)
    results = {}
    for name, r in (("off", base), ("on", cached)):
        e = engine.SimEngine(r)
        for i in range(4):
            e.submit(req(i, 0.0, 2000, 1000), 0.0)
        results[name] = (max(x.finished for x in drain(e)), e.stats.prefix_hits)
    assert results["on"][1] > 0
    assert results["on"][0] < results["off"][0]


def test_prefix_hit_rate_cuts_prefill() -> None:
    slow = engine.SimEngine(replica())
    fast = engine.SimEngine(replica(prefix_cache_hit_rate=0.5))
    for e in (slow, fast):
        e.submit(req(1, 0.0, 4000, 2), 0.0)
    [a], [b] = drain(slow), drain(fast)
    assert b.ttft < 0.7 * a.ttft
    assert fast.stats.prefix_hits == 2000 and fast.stats.prefix_queries == 4000


def test_chunked_prefill_splits_long_prompts_and_keeps_decoding() -> None:
    r = replica(max_num_batched_tokens=512, max_num_seqs=64)
    e = engine.SimEngine(r)
    e.submit(req(1, 0.0, 100, 400), 0.0)
    e.advance(0.5)  # the first request is decoding
    e.submit(req(2, 0.5, 3000, 5), 0.5)
    done = {x.id: x for x in drain(e)}
    # 3,000 tokens at most 511 per step (one seat goes to the decoding request): 6 steps.
    assert done[2].ttft > 5 * perfmodel.coefficients(r).fixed_s
    assert done[1].status == done[2].status == engine.FINISHED


@pytest.mark.parametrize(
    ("name", "kw", "prompt", "output", "reason"),
    [
        ("longer than the kv cache", {"model": "llama-3.1-70b", "weights": FP8}, 9000, 2000, "KV cache"),
        ("no chunking and over budget", {"chunked_prefill": False, "max_num_batched_tokens": 1024}, 2000, 10,
         "maxNumBatchedTokens"),
        ("zero output", {}, 10, 0, "at least one token"),
    ],
)
def test_impossible_requests_are_rejected(
    name: str, kw: dict[str, object], prompt: int, output: int, reason: str
) -> None:
    e = engine.SimEngine(replica(**kw))  # type: ignore[arg-type]
    e.submit(req(1, 0.0, prompt, output), 0.0)
    [r] = e.pop_finished()
    assert r.status == engine.REJECTED and reason in r.reason
    assert e.next_event_time() == math.inf and e.stats.rejected == 1


def test_abort_all_returns_everything_in_flight() -> None:
    e = engine.SimEngine(replica(max_num_seqs=2))
    for i in range(5):
        e.submit(req(i, 0.0, 500, 1000), 0.0)
    e.advance(1.0)
    aborted = e.abort_all(1.0)
    assert len(aborted) == 5 and all(r.status == engine.ABORTED and r.finished == 1.0 for r in aborted)
    assert sum(r.generated > 0 for r in aborted) == 2  # the two that were decoding
    assert e.outstanding == 0 and e.kv_blocks_used == 0 and e.stats.aborted == 5
    assert e.next_event_time() == math.inf
    assert e.pop_finished() == aborted  # also handed to whoever collects finished requests
    e.submit(req(9, 2.0, 100, 3), 2.0)  # the engine is usable again
    [r] = drain(e)
    assert r.status == engine.FINISHED and r.arrival == 2.0


def test_cancel_one_request() -> None:
    e = engine.SimEngine(replica())
    a, b = req(1, 0.0, 500, 500), req(2, 0.0, 500, 500)
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    e.advance(0.2)
    assert e.cancel(a, 0.2) and not e.cancel(a, 0.3)
    done = drain(e)
    assert [x.status for x in sorted(done, key=lambda x: x.id)] == [engine.CANCELLED, engine.FINISHED]


def test_same_input_same_output() -> None:
    r = replica("llama-3.1-70b", weights=FP8)
    a = [(x.first_token, x.finished, x.preemptions) for x in run_engine(r, poisson_load(2.0, 30.0, seed=7))]
    b = [(x.first_token, x.finished, x.preemptions) for x in run_engine(r, poisson_load(2.0, 30.0, seed=7))]
    assert a == b


# ---------------------------------------------------------------------------------------------- fleet


def test_fleet_spreads_load_and_reports_intervals() -> None:
    r = replica()
    result = fleet.simulate(r, poisson_load(20.0, 60.0), replicas=4, duration=60.0, interval=15.0)
    assert len(result.intervals) == 4
    served = {x.replica for x in result.records}
    assert served == {f"replica-{i}" for i in range(4)}
    last = result.intervals[-1]
    assert last.replicas == 4 and 0 < last.mbu <= 1 and 0 <= last.kv_usage <= 1
    assert last.ttft_p95 >= last.ttft_mean > 0 and last.itl_p95 > 0 and last.output_tokens_per_s > 0
    assert sum(i.arrivals for i in result.intervals) == len(poisson_load(20.0, 60.0))


def test_draining_replica_finishes_its_requests() -> None:
    f = fleet.Fleet()
    f.add_replica(replica(), now=0.0, name="a")
    f.add_replica(replica(), now=0.0, name="b")
    for i in range(10):
        f.submit(workload.Arrival(i * 0.01, 500, 300))
    assert f.remove_replica("a", now=0.2, drain=True) == []
    f.submit(workload.Arrival(0.3, 500, 10))
    f.run_until(60.0)
    by = {x.id: x for x in f.records}
    assert all(x.status == engine.FINISHED for x in by.values())
    assert by[11].replica == "b"  # nothing new goes to a draining replica
    assert "a" not in f.members
    stats = f.interval(60.0)
    assert stats.dropped == 0 and stats.replicas == 1


def test_aborted_replica_drops_its_requests() -> None:
    f = fleet.Fleet()
    f.add_replica(replica(), now=0.0, name="a")
    for _i in range(4):
        f.submit(workload.Arrival(0.0, 500, 2000))
    aborted = f.remove_replica("a", now=1.0, drain=False)
    assert len(aborted) == 4
    lost = f.submit(workload.Arrival(2.0, 100, 10))
    assert lost.status == fleet.DROPPED
    stats = f.interval(3.0)
    assert stats.dropped == 5 and stats.replicas == 0
    with pytest.raises(KeyError, match="unknown replica"):
        f.remove_replica("a", now=3.0)


def test_replicas_added_later_take_traffic() -> None:
    f = fleet.Fleet()
    f.add_replica(replica(), now=0.0)
    f.feed(poisson_load(10.0, 20.0))
    f.run_until(10.0)
    f.add_replica(replica(), now=10.0, name="late")
    f.run_until(20.0)
    late = [x for x in f.records if x.replica == "late"]
    assert late and min(x.arrival for x in late) >= 10.0


def test_random_routing_ignores_how_busy_a_replica_is_where_least_outstanding_does_not() -> None:
    # Replica a holds 10 long requests when b joins, and 20 more arrive at once. The least-outstanding router
    # sends b the first 10 to even them out, then alternates: a gets 5 of the 20. A plain Service's random pick
    # does not look: a, the busy one, still gets about half of them.
    def to_busy(routing: str) -> int:
        f = fleet.Fleet(routing=models.Routing(routing), seed=3)
        f.add_replica(replica(), now=0.0, name="a")
        for _ in range(10):
            f.submit(workload.Arrival(0.0, 500, 2000))
        f.add_replica(replica(), now=0.0, name="b")
        more = [f.submit(workload.Arrival(0.0, 500, 2000)) for _ in range(20)]
        return sum(1 for r in more if r.replica == "a")

    assert to_busy("least-outstanding") == 5
    assert to_busy("random") >= 7


def test_the_kept_block_rounding_equals_each_decoding_sequences_blocks_summed() -> None:
    # _dec_blocks keeps the rounding to whole blocks per change of the decoding batch instead of summing over the
    # sequences on every call; under a load that admits, finishes and preempts all the time it must still equal
    # the sum of ceil(KV tokens / block) over the decoding sequences, at the steps around the current one.
    e = engine.SimEngine(replica("llama-3.1-70b", gpus=2))
    bs = e.c.block_size
    checked = 0
    for i, a in enumerate(poisson_load(40.0, 30.0)):
        e.submit(req(i, a.time, a.prompt_tokens, a.output_tokens), a.time)
        decoding = [r for r in e.running.values() if r.state == engine.DECODE]
        for n in range(e.step_no - 1, e.step_no + bs + 1):
            assert e._dec_blocks(n) == sum(-(-(r.off + n) // bs) for r in decoding)
        checked += bool(decoding)
    drain(e)
    assert checked > 100
    assert e.stats.preemptions > 0, "the load must preempt, or the removal path goes unchecked"


def test_prompt_lengths_are_observed_when_a_request_ends_and_when_it_starts() -> None:
    # vLLM observes a request's prompt length as it finishes (record_finished_request), TGI's router as it
    # arrives: halfway through two long answers, both have started and neither has ended.
    e = engine.SimEngine(replica())
    e.submit(req(1, 0.0, 300, 2000), 0.0)
    e.submit(req(2, 0.0, 500, 2000), 0.0)
    e.advance(1.0)
    assert e.stats.prompt_len_started.count == 2 and e.stats.prompt_len_started.sum == 800
    assert e.stats.prompt_len.count == 0 and e.stats.generation_len.count == 0
    assert e.stats.prompt_tokens == 800  # the counter moves at prefill, with the requests that started
    drain(e)
    assert e.stats.prompt_len.count == 2 and e.stats.prompt_len.sum == 800
    assert e.stats.generation_len.sum == 4000
