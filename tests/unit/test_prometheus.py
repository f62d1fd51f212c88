"""Test: the Prometheus adapter — queries per signal, parsing edge cases, quantiles, failures and budgets."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infertune import prometheus
from infertune.runtimes import metrics, registry

S = metrics.Signal


def vec(*series: tuple[dict[str, str], Any]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [1700000000.0, str(value)]} for labels, value in series]


POD_A = {"namespace": "ns", "pod": "a"}
POD_B = {"namespace": "ns", "pod": "b"}


def test_one_query_per_signal_whatever_the_number_of_pods() -> None:
    plan = prometheus.queries((*registry.dialects(), metrics.DCGM), 60)
    # 5 histograms (the prompt length's whole) + 2 sums + 10 scalars + 2 in-flight + 2 length histograms' sums
    # and counts + the busy share, for every engine and any number of resources.
    assert len(plan) == 24
    assert plan["busy", S.RUNNING].startswith("avg_over_time((sum by (namespace, pod) (")
    assert '"vllm:num_requests_running", job="infertune-model-servers"}) > bool 0)[60s:5s])' in plan[
        "busy", S.RUNNING]
    assert 'vllm:request_prompt_tokens_count", job=' in plan["count", S.PROMPT_LENGTH]
    assert "tgi_request_generated_tokens_sum" in plan["sum", S.GENERATION_LENGTH]
    assert "last_over_time" in plan["now", S.RUNNING]
    ttft = plan["buckets", S.TTFT]
    for name in ("vllm:time_to_first_token_seconds_bucket", "sglang:time_to_first_token_seconds_bucket",
                 "trtllm_time_to_first_token_seconds_bucket", '"time_to_first_token_seconds_bucket"'):
        assert name in ttft
    itl = plan["buckets", S.ITL]
    # The renamed vLLM metric is preferred; the deprecated one is the fallback.
    assert itl.index("vllm:inter_token_latency_seconds_bucket") < itl.index("vllm:time_per_output_token_seconds_bucket")
    assert "sum by (namespace, pod, le) (rate(" in ttft and "[60s]" in ttft
    assert "sum by (namespace, pod) (avg_over_time" in plan["value", S.RUNNING]
    assert "avg by (namespace, pod) (avg_over_time" in plan["value", S.KV_USAGE]
    assert "tgi_request_input_length_sum" in plan["value", S.PROMPT_TOKENS]
    assert "DCGM_FI_PROF_DRAM_ACTIVE" in plan["value", S.DRAM_ACTIVE]


BUCKETS = [(0.1, 2.0), (0.5, 6.0), (1.0, 7.0), (math.inf, 8.0)]

PARSE_CASES: list[tuple[str, dict[tuple[str, metrics.Signal], list[dict[str, Any]]], dict[str, Any]]] = [
    ("no data", {("value", S.RUNNING): []}, {}),
    ("two pods", {("value", S.RUNNING): vec((POD_A, 3), (POD_B, 5))}, {"a": {S.RUNNING: 3.0}, "b": {S.RUNNING: 5.0}}),
    ("one pod missing", {("value", S.RUNNING): vec((POD_A, 3)), ("value", S.WAITING): vec((POD_B, 1))},
     {"a": {S.RUNNING: 3.0}, "b": {S.WAITING: 1.0}}),
    ("NaN dropped", {("value", S.KV_USAGE): vec((POD_A, "NaN"))}, {"a": {}}),
    ("+Inf dropped", {("value", S.RUNNING): vec((POD_A, "+Inf"))}, {"a": {}}),
    ("negative dropped", {("value", S.WAITING): vec((POD_A, -4))}, {"a": {}}),
    ("absurd KV usage dropped", {("value", S.KV_USAGE): vec((POD_A, 37))}, {"a": {}}),
    ("series without pod ignored", {("value", S.RUNNING): vec(({"namespace": "ns"}, 3))}, {}),
    ("garbage value", {("value", S.RUNNING): [{"metric": POD_A, "value": ["x"]}]}, {"a": {}}),
]


@pytest.mark.parametrize(("name", "results", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_edge_cases(name: str, results: Any, expected: dict[str, dict[metrics.Signal, float]]) -> None:
    pods = prometheus.parse(results)
    assert {k[1]: dict(v.values) for k, v in pods.items()} == expected


def test_dropped_values_carry_a_reason() -> None:
    pods = prometheus.parse({("value", S.KV_USAGE): vec((POD_A, "NaN")), ("value", S.WAITING): vec((POD_A, -1))})
    reasons = pods["ns", "a"].dropped
    assert any("kv_usage: not a finite number" in r for r in reasons)
    assert any("waiting: negative (-1)" in r for r in reasons)


def test_histogram_buckets_sorted_with_inf() -> None:
    series = [{"metric": {**POD_A, "le": le}, "value": [0, str(v)]}
              for le, v in (("+Inf", 8), ("0.1", 2), ("1", 7), ("0.5", 6))]
    pods = prometheus.parse({("buckets", S.TTFT): series})
    assert pods["ns", "a"].buckets[S.TTFT] == tuple(BUCKETS)


@pytest.mark.parametrize(("q", "expected"),
                         [(0.25, 0.1), (0.5, 0.3), (0.75, 0.5), (0.8, 0.7), (0.875, 1.0), (0.99, 1.0)])
def test_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    assert prometheus.quantile(q, BUCKETS) == pytest.approx(expected)


@pytest.mark.parametrize(("threshold", "expected"), [(0.05, 0.125), (0.1, 0.25), (0.3, 0.5), (1.0, 0.875),
                                                     (5.0, 0.875)])
def test_fraction_below(threshold: float, expected: float) -> None:
    assert prometheus.fraction_below(threshold, BUCKETS) == pytest.approx(expected)


def test_quantile_of_nothing_is_none() -> None:
    assert prometheus.quantile(0.95, []) is None
    assert prometheus.quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None  # no requests in the window
    assert prometheus.fraction_below(1.0, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_pod_metrics_from_raw() -> None:
    raw = prometheus.RawPod(
        buckets={S.TTFT: tuple(BUCKETS), S.ITL: ((0.02, 50.0), (0.04, 90.0), (math.inf, 100.0)),
                 S.E2E: ((10.0, 7.5), (math.inf, 8.0))},
        sums={S.TTFT: 2.4, S.ITL: 2.5},
        values={S.PROMPT_TOKENS: 8000.0, S.GENERATION_TOKENS: 1600.0, S.PREFIX_QUERIES: 8000.0,
                S.PREFIX_HITS: 2000.0, S.KV_USAGE: 0.4},
    )
    m = prometheus.pod_metrics(raw, percentile=95, ttft_slo=0.5, itl_slo=0.04)
    assert m.requests_per_s == 8.0
    assert m.ttft_mean == pytest.approx(0.3) and m.itl_mean == pytest.approx(0.025)
    assert m.mean_input_tokens == 1000 and m.mean_output_tokens == 200
    assert m.prefix_hit_rate == 0.25
    assert m.slo_attainment == pytest.approx(0.75 * 0.9)
    # Both objectives sit on bucket edges (0.5 s, 40 ms): the buckets pin the share down exactly.
    assert m.slo_attainment_low == m.slo_attainment_high == pytest.approx(0.75 * 0.9)
    assert m.itl_p == 0.04  # beyond the last finite bucket: its bound, as histogram_quantile does


def test_length_points_keep_the_spread_of_each_bucket() -> None:
    # 2 req/s up to 100 tokens, 4 between 100 and 500: two points per bucket at the Gauss-Legendre nodes.
    points = prometheus.length_points(((100.0, 2.0), (500.0, 6.0), (math.inf, 6.0)))
    assert [round(x, 1) for x, _ in points] == [21.1, 78.9, 184.5, 415.5]
    assert [w for _, w in points] == [1.0, 1.0, 2.0, 2.0]
    # Uniform within a bucket, the points' second moment is the bucket's: (0^2 + 0 x 100 + 100^2) / 3.
    assert sum(x * x * w for x, w in points[:2]) / 2 == pytest.approx(10_000 / 3)


def test_length_points_put_the_overflow_at_the_last_bound() -> None:
    assert prometheus.length_points(((100.0, 1.0), (math.inf, 3.0)))[-1] == (100.0, 2.0)


@pytest.mark.parametrize("buckets", [
    (), ((100.0, 1.0),),  # no +Inf bucket
    ((100.0, 3.0), (500.0, 2.0), (math.inf, 3.0)),  # cumulative counts that fall: no distribution
])
def test_length_points_of_no_distribution_are_empty(buckets: tuple[tuple[float, float], ...]) -> None:
    assert prometheus.length_points(buckets) == ()


def test_pod_metrics_carry_the_prompt_lengths() -> None:
    raw = prometheus.RawPod(buckets={S.PROMPT_LENGTH: ((1000.0, 1.0), (2000.0, 4.0), (math.inf, 4.0))},
                            sums={}, values={})
    m = prometheus.pod_metrics(raw, percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert sum(w for _, w in m.prompt_lengths) == pytest.approx(4.0)
    assert all(0 < x < 2000 for x, _ in m.prompt_lengths)
    rejected = prometheus.parse({("buckets", S.PROMPT_LENGTH): vec(({**POD_A, "le": "-5"}, 1.0),
                                                                 ({**POD_A, "le": "+Inf"}, 1.0))})
    assert prometheus.pod_metrics(rejected["ns", "a"], percentile=95, ttft_slo=1.0,
                                  itl_slo=0.05).prompt_lengths == ()


def _burst_start(sums: dict[metrics.Signal, float] | None = None,
                 counts: dict[metrics.Signal, float] | None = None) -> prometheus.RawPod:
    """The first minute of a decode-heavy burst (200 tokens in, 1,500 out, 10 req/s arriving): 10 requests/s get
    their first token and prefill 2,000 tokens/s; 30 tokens/s of generation per running request; 0.1 req/s end."""
    return prometheus.RawPod(
        buckets={S.TTFT: ((0.1, 10.0), (math.inf, 10.0)), S.E2E: ((60.0, 0.1), (math.inf, 0.1))}, sums=sums or {},
        values={S.PROMPT_TOKENS: 2000.0, S.GENERATION_TOKENS: 9000.0}, counts=counts or {})


def test_the_shape_comes_from_the_per_request_length_histograms() -> None:
    # The one request in ten that ended had 180 tokens in and 400 out (an early, short one).
    raw = _burst_start(sums={S.PROMPT_LENGTH: 18.0, S.GENERATION_LENGTH: 40.0},
                       counts={S.PROMPT_LENGTH: 0.1, S.GENERATION_LENGTH: 0.1})
    m = prometheus.pod_metrics(raw, percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert m.mean_input_tokens == pytest.approx(180) and m.mean_output_tokens == pytest.approx(400)
    # Demand is counted as requests start, not as they end 40 s later, and says so (a running request is in it).
    assert m.requests_per_s == 10.0 and m.counted_at_start


def test_an_engine_without_ttft_counts_requests_as_they_end_and_says_so() -> None:
    raw = _burst_start()
    ends = prometheus.RawPod(buckets={S.E2E: raw.buckets[S.E2E]}, sums={}, values=raw.values, counts={})
    m = prometheus.pod_metrics(ends, percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert m.requests_per_s == pytest.approx(0.1) and not m.counted_at_start


def test_without_length_histograms_the_prompt_counter_is_divided_by_the_requests_it_counted() -> None:
    m = prometheus.pod_metrics(_burst_start(), percentile=95, ttft_slo=1.0, itl_slo=0.05)
    # 2,000 prompt tokens/s over 10 first tokens/s, not over 0.1 ends/s (20,000 tokens).
    assert m.mean_input_tokens == pytest.approx(200)
    # The generation counter has no partner counted per token: over the ends it reads high while a burst runs,
    # right at a steady load (the engines without histograms: TensorRT-LLM).
    assert m.mean_output_tokens == pytest.approx(90_000)


def test_a_length_histogram_count_of_zero_or_garbage_is_not_divided_by() -> None:
    m = prometheus.pod_metrics(_burst_start(sums={S.PROMPT_LENGTH: 18.0}, counts={S.PROMPT_LENGTH: 0.0}),
                               percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert m.mean_input_tokens == pytest.approx(200)  # the counter's reading, not 18 / 0
    parsed = prometheus.parse({("count", S.PROMPT_LENGTH): vec((POD_A, -3.0)),
                               ("sum", S.PROMPT_LENGTH): vec((POD_A, 600.0))})
    pod = parsed["ns", "a"]
    assert S.PROMPT_LENGTH not in pod.counts and pod.sums[S.PROMPT_LENGTH] == 600.0
    assert any("prompt_length: negative" in d for d in pod.dropped)
    too_many = prometheus.parse({("count", S.GENERATION_LENGTH): vec((POD_A, 1e9))})["ns", "a"]
    assert not too_many.counts and "implausible" in too_many.dropped[0]


def test_an_absurd_but_finite_histogram_sum_is_dropped_with_its_signal_named() -> None:
    # A length histogram's sum is tokens/s (over the 10 M tokens/s ceiling here); a latency histogram's is, by
    # Little's law, the requests inside the span it times (over every request running or waiting here).
    parsed = prometheus.parse({("sum", S.PROMPT_LENGTH): vec((POD_A, 3e12)),
                               ("sum", S.GENERATION_LENGTH): vec((POD_A, 9000.0)),
                               ("sum", S.TTFT): vec((POD_A, 1e300)), ("sum", S.ITL): vec((POD_A, 4.0))})
    pod = parsed["ns", "a"]
    assert pod.sums == {S.GENERATION_LENGTH: 9000.0, S.ITL: 4.0}  # the pod's other sums are kept
    assert sorted(d.split(":")[0] for d in pod.dropped) == [S.PROMPT_LENGTH.value, S.TTFT.value]
    assert all("implausible" in d for d in pod.dropped)


# vLLM's per-request ITL buckets near a 40 ms objective: every request of the window between 25 and 50 ms.
VLLM_TPOT = ((0.01, 0.0), (0.025, 0.0), (0.05, 4.0), (0.075, 4.0), (math.inf, 4.0))


def test_a_bucket_straddling_the_objective_bounds_the_share_instead_of_guessing_it() -> None:
    assert prometheus.fraction_below(0.04, VLLM_TPOT) == pytest.approx(0.6)  # the interpolated guess
    assert prometheus.fraction_bounds(0.04, VLLM_TPOT) == (0.0, 1.0)  # what the buckets allow
    assert prometheus.fraction_bounds(0.05, VLLM_TPOT) == (1.0, 1.0)  # on an edge: exact
    assert prometheus.fraction_bounds(0.2, VLLM_TPOT) == (1.0, 1.0)
    assert prometheus.fraction_bounds(0.04, [(0.1, 0.0), (math.inf, 0.0)]) is None
    raw = prometheus.RawPod(buckets={S.TTFT: tuple(BUCKETS), S.TPOT: VLLM_TPOT}, sums={}, values={})
    m = prometheus.pod_metrics(raw, percentile=95, ttft_slo=1.0, itl_slo=0.04)
    assert m.slo_attainment == pytest.approx(0.875 * 0.6)
    assert (m.slo_attainment_low, m.slo_attainment_high) == (0.0, pytest.approx(0.875))
    # The p95 interpolates to 48.75 ms inside (25, 50] ms; all the buckets say is "more than 25 ms".
    assert m.tpot_p == pytest.approx(0.04875) and m.itl_floor == 0.025


def test_the_itl_floor_comes_from_the_histogram_the_percentile_is_read_from() -> None:
    # No request finished in the window (long generations): TPOT series with nothing in them, tokens flowing.
    empty = ((0.025, 0.0), (0.05, 0.0), (math.inf, 0.0))
    raw = prometheus.RawPod(buckets={S.TTFT: tuple(BUCKETS), S.TPOT: empty, S.ITL: VLLM_TPOT}, sums={}, values={})
    m = prometheus.pod_metrics(raw, percentile=95, ttft_slo=1.0, itl_slo=0.04)
    assert m.tpot_p is None and m.itl_p == pytest.approx(0.04875)  # what decide() reads then
    assert m.itl_floor == 0.025  # ... and its floor, not None ("exact")


def test_the_least_a_percentile_can_be_is_the_edge_below_its_bucket() -> None:
    assert prometheus.quantile_floor(0.95, VLLM_TPOT) == 0.025
    assert prometheus.quantile_floor(0.5, ((0.1, 2.0), (0.5, 6.0), (math.inf, 8.0))) == 0.1  # quantile: 0.3
    assert prometheus.quantile_floor(0.2, ((0.1, 2.0), (0.5, 6.0), (math.inf, 8.0))) == 0.0  # first bucket
    assert prometheus.quantile_floor(0.99, ((0.1, 2.0), (0.5, 6.0), (math.inf, 8.0))) == 0.5  # beyond the last
    assert prometheus.quantile_floor(0.95, ((0.1, 0.0), (math.inf, 0.0))) is None  # nothing observed
    assert prometheus.quantile_floor(0.95, ((0.1, 1.0),)) is None  # no +Inf bucket: not a histogram


class FakeQuery:
    """Answers from a table; can fail the first N calls or be slow."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]] | None = None, fail_first: int = 0,
                 delay: float = 0.0, error: str = "HTTP Status Code 503") -> None:
        self.answers = answers or {}
        self.fail_first = fail_first
        self.delay = delay
        self.error = error
        self.calls: list[str] = []

    def __call__(self, promql: str, *, timeout: float) -> list[dict[str, Any]]:
        self.calls.append(promql)
        if self.delay:
            time.sleep(min(self.delay, timeout))
            if self.delay > timeout:
                raise prometheus.PrometheusError("timed out")
        if len(self.calls) <= self.fail_first:
            raise prometheus.PrometheusError(self.error)
        for needle, answer in self.answers.items():
            if needle in promql:
                return answer
        return []


async def test_source_caches_one_snapshot_per_cycle() -> None:
    fake = FakeQuery({"num_requests_running": vec((POD_A, 2))})
    source = prometheus.Source(query=fake, window=30)
    first = await source.snapshot(max_age=10)
    second = await source.snapshot(max_age=10)
    assert first is second
    assert len(fake.calls) == 24
    assert first.ok and first.pods["ns", "a"].values[S.RUNNING] == 2.0


async def test_source_shares_a_snapshot_between_concurrent_callers() -> None:
    fake = FakeQuery()
    source = prometheus.Source(query=fake)
    await asyncio.gather(*(source.snapshot(max_age=10) for _ in range(50)))
    assert len(fake.calls) == 24  # 50 resources, one batch


async def test_a_transient_error_is_retried() -> None:
    fake = FakeQuery(fail_first=3)
    snap = await prometheus.Source(query=fake, attempts=2).snapshot(max_age=0)
    assert snap.ok
    assert len(fake.calls) == 27  # 24 queries, 3 of them twice


async def test_a_persistent_error_makes_the_snapshot_unusable() -> None:
    fake = FakeQuery(fail_first=10_000)
    snap = await prometheus.Source(query=fake, attempts=2).snapshot(max_age=0)
    assert not snap.ok
    assert "503" in snap.error
    assert len(snap.failed_signals) == 24
    assert len(fake.calls) == 48  # bounded: two attempts each


async def test_a_slow_prometheus_cannot_stall_the_loop() -> None:
    fake = FakeQuery(delay=5.0)
    started = time.monotonic()
    snap = await prometheus.Source(query=fake, budget=0.5).snapshot(max_age=0)
    assert time.monotonic() - started < 2.0
    assert not snap.ok


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def do_GET(self) -> None:
        if self.mode == "500":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        if self.mode == "slow":
            # Longer than the client's 1 s timeout; the fixture cuts it short at teardown so no handler thread
            # outlives its test (one writing to the closed socket later printed into another test's stderr).
            assert isinstance(self.server, _Server)
            self.server.release.wait(3)
        body = b"not json" if self.mode == "garbage" else json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": vec((POD_A, 1))}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    release: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client gave up on a slow answer: the broken pipe is the point of the test, not news


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {})
    server = _Server(("127.0.0.1", 0), handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("mode", "message"), [("500", "HTTP Status Code 500"), ("garbage", "malformed answer"),
                                               ("slow", "Timeout")])
def test_the_http_client_turns_failures_into_prometheus_errors(fake_prometheus: tuple[str, type[_Handler]],
                                                               mode: str, message: str) -> None:
    url, handler = fake_prometheus
    handler.mode = mode
    query = prometheus.connect(url, timeout=1)
    with pytest.raises(prometheus.PrometheusError, match=message):
        query("up", timeout=1)


def test_the_http_client_returns_the_vector(fake_prometheus: tuple[str, type[_Handler]]) -> None:
    url, _ = fake_prometheus
    assert prometheus.connect(url)("up", timeout=1) == vec((POD_A, 1))


def test_a_failed_request_is_described_without_its_url(fake_prometheus: tuple[str, type[_Handler]]) -> None:
    """The query is kilobytes of URL: the condition's message keeps the cause and drops the address."""
    url, handler = fake_prometheus
    handler.mode = "slow"
    with pytest.raises(prometheus.PrometheusError) as raised:
        prometheus.connect(url, timeout=1)('sum by (namespace, pod) (rate({__name__="x"}[60s]))', timeout=1)
    message = str(raised.value)
    assert "ReadTimeoutError: Read timed out" in message
    assert "query" not in message and "127.0.0.1" not in message and len(message) < 120


async def test_the_failure_message_does_not_depend_on_which_query_failed_first() -> None:
    """Which query times out first is a race; the message names the first failed signal in name order."""
    plan = prometheus.queries((*registry.dialects(), metrics.DCGM), 60)

    def failing(promql: str, *, timeout: float) -> list[dict[str, Any]]:
        time.sleep(random.uniform(0, 0.01))  # the threads finish in a different order each time
        raise prometheus.PrometheusError(f"failed: {promql[:60]}")

    for _ in range(3):
        snap = await prometheus.Source(query=failing, attempts=1, window=60).snapshot(max_age=0)
        part, signal = snap.failed_signals[0].split(":")
        assert snap.failed_signals[0] == "buckets:e2e"
        assert snap.error == f"failed: {plan[part, metrics.Signal(signal)][:60]}"


async def test_a_stale_snapshot_is_served_while_the_next_is_fetched() -> None:
    clock = [0.0]
    fake = FakeQuery({"num_requests_running": vec((POD_A, 2))})
    source = prometheus.Source(query=fake, budget=5.0, clock=lambda: clock[0])
    first = await source.snapshot(max_age=5)
    assert len(fake.calls) == 24
    fake.delay = 0.3  # the next batch takes a while
    clock[0] = 6.0  # past max_age, within max_age + budget
    started = time.monotonic()
    again = await source.snapshot(max_age=5)
    assert again is first and time.monotonic() - started < 0.1  # served at once, not after the queries
    assert source._refresh is not None
    fresh = await source._refresh
    assert fresh is not first and len(fake.calls) == 48
    assert await source.snapshot(max_age=5) is fresh
    clock[0] = 20.0  # far too old to serve: the caller waits for the new one
    fake.delay = 0.0
    newest = await source.snapshot(max_age=5)
    assert newest is not fresh and len(fake.calls) == 72


def _loaded(pods: int) -> dict[tuple[str, metrics.Signal], list[dict[str, Any]]]:
    """Answers of a loaded fleet: every pod sends every bucket of five histograms (vLLM's counts)."""
    out: dict[tuple[str, metrics.Signal], list[dict[str, Any]]] = {}
    for signal, n in ((S.TTFT, 22), (S.ITL, 20), (S.TPOT, 20), (S.E2E, 22), (S.PROMPT_LENGTH, 13)):
        out["buckets", signal] = vec(*(({"namespace": "ns", "pod": f"pod-{i:04d}", "le": "+Inf" if b == n - 1
                                         else repr(0.001 * 2**b)}, 0.01 * (b + 1))
                                       for i in range(pods) for b in range(n)))
    out["value", S.RUNNING] = vec(*(({"namespace": "ns", "pod": f"pod-{i:04d}"}, 3) for i in range(pods)))
    return out


def test_folding_answers_one_at_a_time_reads_what_parsing_them_together_does() -> None:
    answers = _loaded(30)
    fold = prometheus.Fold()
    for (part, signal), vector in reversed(answers.items()):
        fold.add(part, signal, vector)
    assert fold.pods() == prometheus.parse(answers)
    # A late second answer to a query already folded (an attempt that answered after its retry had) is ignored:
    # its buckets twice over would be no histogram.
    before = fold.pods()
    fold.add("buckets", S.TTFT, answers["buckets", S.TTFT])
    assert fold.pods() == before
    assert len(before["ns", "pod-0000"].buckets[S.TTFT]) == 22


def test_a_snapshot_holds_one_decoded_answer_at_a_time_not_all_of_them() -> None:
    # 200 loaded pods: the five histogram answers decode to ~13 MiB of Python objects together. Folded as each
    # is decoded (as Source does, in the thread that fetched it), the peak is one answer and the folded pods.
    import gc
    import tracemalloc

    texts = {key: json.dumps(vector) for key, vector in _loaded(200).items()}
    gc.collect()
    tracemalloc.start()
    try:
        together = {key: json.loads(text) for key, text in texts.items()}
        prometheus.parse(together)
        _, peak_together = tracemalloc.get_traced_memory()
        del together
        gc.collect()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fold = prometheus.Fold()
        for (part, signal), text in texts.items():
            fold.add(part, signal, json.loads(text))
        fold.pods()
        _, peak_folded = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_folded - base < 0.5 * peak_together, (peak_folded - base, peak_together)


async def test_source_folds_each_answer_in_the_thread_that_fetched_it() -> None:
    # The answers are folded off the event loop: each query's thread folds what it decoded.
    threads: set[int] = set()
    real = prometheus.Fold.add

    def add(self: prometheus.Fold, part: str, signal: metrics.Signal, vector: list[dict[str, Any]]) -> None:
        threads.add(threading.get_ident())
        real(self, part, signal, vector)

    answers = _loaded(3)
    source = prometheus.Source(query=lambda promql, timeout: answers.get(("value", S.RUNNING), []))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prometheus.Fold, "add", add)
        snap = await source.snapshot(max_age=5)
    assert snap.ok and snap.pods["ns", "pod-0000"].values[S.RUNNING] == 3.0
    assert threads and threading.get_ident() not in threads


def test_the_busy_share_is_read_per_pod_and_one_past_the_whole_window_is_dropped() -> None:
    # The subquery's answer: pod a ran a request in 3 of every 4 steps of the window; pod b's 1.5 of the window
    # is no share of it (a relabelled series, a broken exporter) and is dropped with the reason, the rest kept.
    pods = prometheus.parse({("value", S.RUNNING): vec((POD_A, 1.2), (POD_B, 0.3)),
                             ("busy", S.RUNNING): vec((POD_A, 0.75), (POD_B, 1.5))})
    a = prometheus.pod_metrics(pods["ns", "a"], percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert (a.running, a.busy) == (1.2, 0.75)
    b = prometheus.pod_metrics(pods["ns", "b"], percentile=95, ttft_slo=1.0, itl_slo=0.05)
    assert (b.running, b.busy) == (0.3, None)
    assert pods["ns", "b"].dropped == ("running: implausible (1.5 > 1)",)
