"""Test: trace replay, rate scaling and synthetic arrivals — shapes, determinism and bad input."""

from __future__ import annotations

import itertools
import json
import pathlib
import statistics

import pytest

from infertune.sim import workload

TRACE = pathlib.Path(__file__).resolve().parents[2] / "data" / "traces" / "azure-llm-2023-conversation.csv"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:15:46.6805900,374,44\n"


@pytest.fixture(scope="module")
def trace() -> list[workload.Arrival]:
    return workload.load_trace(TRACE)


def test_azure_trace_loads(trace: list[workload.Arrival]) -> None:
    assert len(trace) == 19366  # the README says 19,365; the file has one more row
    assert trace[0].time == 0.0 and 3400 < trace[-1].time < 3600  # 58 minutes
    assert statistics.fmean(a.prompt_tokens for a in trace) == pytest.approx(1155, rel=0.01)
    assert statistics.fmean(a.output_tokens for a in trace) == pytest.approx(211, rel=0.01)
    assert all(b.time >= a.time for a, b in itertools.pairwise(trace))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty file", "", "t.csv: the trace is empty"),
        ("header only", HEADER, "t.csv: the trace has a header but no requests"),
        ("missing column", "TIMESTAMP,ContextTokens\n", "t.csv line 1: missing column(s) GeneratedTokens"),
        ("not an integer", HEADER + ROW + "2023-11-16 18:15:47.0,abc,5\n",
         "t.csv line 3: ContextTokens 'abc' is not an integer"),
        ("negative", HEADER + "2023-11-16 18:15:47.0,10,-5\n", "t.csv line 2: GeneratedTokens must not be negative"),
        ("bad time", HEADER + "yesterday,10,5\n", "t.csv line 2: TIMESTAMP 'yesterday' is not a timestamp"),
        ("short row", HEADER + "2023-11-16 18:15:47.0,10\n", "t.csv line 2: expected 3 fields, got 2"),
        ("out of order", HEADER + ROW + "2023-11-16 18:15:40.0,10,5\n", "t.csv line 3: TIMESTAMP"),
        ("zero prompt", HEADER + "2023-11-16 18:15:47.0,0,5\n", "t.csv line 2: ContextTokens must be at least 1"),
    ],
)
def test_malformed_trace_names_file_and_line(tmp_path: pathlib.Path, name: str, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(workload.WorkloadError) as err:
        workload.load_trace(path)
    assert str(err.value).startswith(message)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(workload.WorkloadError, match=r"nope\.csv: cannot read"):
        workload.load_trace(tmp_path / "nope.csv")


def test_zero_output_still_generates_one_token(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "2023-11-16 18:15:47.0,10,0\n")
    assert workload.load_trace(path) == [workload.Arrival(0.0, 10, 1)]


def test_rate_scaling(trace: list[workload.Arrival]) -> None:
    span = trace[-1].time
    compressed = workload.scale_rate(trace, 4.0, method="compress")
    assert len(compressed) == len(trace) and compressed[-1].time == pytest.approx(span / 4)
    stacked = workload.scale_rate(trace, 3.6, seed=1)
    assert len(stacked) == pytest.approx(3.6 * len(trace), rel=0.01)
    assert stacked[0].time >= 0.0 and stacked[-1].time <= span  # same length, same shape
    assert workload.scale_rate(trace, 3.6, seed=1) == stacked
    assert workload.scale_rate(trace, 3.6, seed=2) != stacked


@pytest.mark.parametrize("factor", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_rate_scale(trace: list[workload.Arrival], factor: float) -> None:
    with pytest.raises(workload.WorkloadError, match="rate scale must be a positive number"):
        workload.scale_rate(trace, factor)


FIXED = workload.Fixed(100)


def _rate(arrivals: list[workload.Arrival], start: float, end: float) -> float:
    return sum(start <= a.time < end for a in arrivals) / (end - start)


def test_poisson_rate_and_determinism() -> None:
    a = workload.poisson(10.0, duration=600.0, isl=FIXED, osl=FIXED, seed=1)
    assert _rate(a, 0, 600) == pytest.approx(10.0, rel=0.05)
    assert a == workload.poisson(10.0, duration=600.0, isl=FIXED, osl=FIXED, seed=1)
    assert a != workload.poisson(10.0, duration=600.0, isl=FIXED, osl=FIXED, seed=2)


@pytest.mark.parametrize(
    ("name", "profile", "windows"),
    [
        ("diurnal", workload.diurnal(10.0, amplitude=0.8, period=400.0),
         [((50, 150), 17.2), ((250, 350), 2.8)]),  # 10 x (1 +- 0.8 x 0.9): sine averaged over 90 degrees
        ("ramp", workload.ramp(2.0, 20.0, duration=400.0), [((0, 40), 2.9), ((360, 400), 19.1)]),
        ("spike", workload.spike(5.0, 40.0, at=200.0, length=50.0), [((0, 200), 5.0), ((200, 250), 40.0)]),
        ("on off", workload.on_off(20.0, on=30.0, off=30.0), [((0, 30), 20.0), ((30, 60), 0.0)]),
    ],
)
def test_shapes(name: str, profile: workload.RateProfile, windows: list[tuple[tuple[float, float], float]]) -> None:
    arrivals = workload.synthetic(profile, duration=400.0, isl=FIXED, osl=FIXED, seed=5)
    for (start, end), expected in windows:
        assert _rate(arrivals, start, end) == pytest.approx(expected, rel=0.2, abs=0.3), (start, end)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("zero rate", lambda: workload.constant(0.0), "rate must be more than zero"),
        ("negative rate", lambda: workload.constant(-2.0), "rate must be more than zero"),
        ("negative spike", lambda: workload.spike(1.0, -3.0, at=0, length=1), "spike rate"),
        ("flat ramp", lambda: workload.ramp(0.0, 0.0, duration=10), "sends nothing"),
        ("big amplitude", lambda: workload.diurnal(1.0, amplitude=2.0), "amplitude"),
        ("zero duration", lambda: workload.poisson(1.0, duration=0.0, isl=FIXED, osl=FIXED), "duration"),
        ("zero length", lambda: workload.Fixed(0), "at least 1 token"),
        ("negative cv", lambda: workload.LogNormal(100, -1), "cv"),
    ],
)
def test_bad_synthetic_input(name: str, make: object, message: str) -> None:
    with pytest.raises(workload.WorkloadError, match=message):
        make()  # type: ignore[operator]


def test_lognormal_lengths() -> None:
    import random

    rng = random.Random(0)
    dist = workload.LogNormal(1155, 0.8)
    xs = [dist.sample(rng) for _ in range(20000)]
    assert statistics.fmean(xs) == pytest.approx(1155, rel=0.03)
    assert statistics.pstdev(xs) / statistics.fmean(xs) == pytest.approx(0.8, rel=0.1)
    clipped = workload.LogNormal(1155, 0.8, low=10, high=2000)
    assert all(10 <= clipped.sample(rng) <= 2000 for _ in range(1000))


# ---------------------------------------------------------------------------------------------- mixtures


def test_a_mix_draws_each_shape_by_weight() -> None:
    mix = workload.Mix(((3.0, workload.Fixed(100), workload.Fixed(10)),
                        (1.0, workload.Fixed(2000), workload.Fixed(30))))
    arrivals = workload.synthetic(workload.constant(20.0), duration=400.0, mix=mix, seed=3)
    shapes = {(a.prompt_tokens, a.output_tokens) for a in arrivals}
    assert shapes == {(100, 10), (2000, 30)}  # lengths stay paired: no (100, 30)
    share = sum(a.prompt_tokens == 100 for a in arrivals) / len(arrivals)
    assert share == pytest.approx(0.75, abs=0.04)
    assert workload.synthetic(workload.constant(20.0), duration=400.0, mix=mix, seed=3) == arrivals


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: workload.Mix(()), "at least one part"),
        (lambda: workload.Mix(((0.0, FIXED, FIXED),)), "weights must be positive"),
        (lambda: workload.Mix(((float("nan"), FIXED, FIXED),)), "weights must be positive"),
        (lambda: workload.synthetic(workload.constant(1.0), duration=10.0, isl=FIXED), "either isl and osl, or mix"),
        (lambda: workload.synthetic(workload.constant(1.0), duration=10.0, isl=FIXED, osl=FIXED,
                                    mix=workload.Mix(((1.0, FIXED, FIXED),))), "either isl and osl, or mix"),
    ],
)
def test_bad_mix(make: object, message: str) -> None:
    with pytest.raises(workload.WorkloadError, match=message):
        make()  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------- Mooncake traces

MOONCAKE = TRACE.parent / "mooncake-fast25-conversation.jsonl"


def _line(ms: int, prompt: int, output: int, ids: list[int]) -> str:
    return json.dumps({"timestamp": ms, "input_length": prompt, "output_length": output, "hash_ids": ids}) + "\n"


def test_the_mooncake_trace_loads() -> None:
    t = workload.load_mooncake(MOONCAKE)
    assert len(t.arrivals) == len(t.hash_ids) == 12031  # data/README.md: 12,031 requests over 59 minutes
    assert t.arrivals[0].time == 0.0 and 3500 < t.arrivals[-1].time < 3600
    assert statistics.fmean(a.prompt_tokens for a in t.arrivals) == pytest.approx(12035, rel=0.001)
    assert statistics.fmean(a.output_tokens for a in t.arrivals) == pytest.approx(343, rel=0.01)
    assert all(len(ids) == -(-a.prompt_tokens // 512) for a, ids in zip(t.arrivals, t.hash_ids, strict=True))


def test_mooncake_times_are_seconds_from_the_first_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(_line(5000, 600, 0, [1, 2]) + "\n" + _line(6500, 100, 7, [3]) + json.dumps(
        {"timestamp": 7000, "input_length": 10, "output_length": 1, "hash_ids": [4], "extra": "ignored"}) + "\n")
    t = workload.load_mooncake(path)
    assert t.arrivals == (workload.Arrival(0.0, 600, 1), workload.Arrival(1.5, 100, 7), workload.Arrival(2.0, 10, 1))
    assert t.hash_ids == ((1, 2), (3,), (4,))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.jsonl: the trace has no requests"),
        (_line(0, 10, 1, [1]) + "{not json\n", "t.jsonl line 2: not valid JSON"),
        ("[1, 2]\n", "t.jsonl line 1: expected a JSON object, got list"),
        ('{"timestamp": 0, "input_length": 10}\n', "t.jsonl line 1: missing key(s) output_length, hash_ids"),
        (_line(0, 10, 1, [1]) + _line(-1, 10, 1, [1]), "t.jsonl line 2: timestamp must be at least 0, got -1"),
        (_line(0, 0, 1, []), "t.jsonl line 1: input_length must be at least 1, got 0"),
        (_line(0, 10, -3, [1]), "t.jsonl line 1: output_length must be at least 0, got -3"),
        (_line(0, 10, 1, [1]).replace('"input_length": 10', '"input_length": 10.5'),
         "t.jsonl line 1: input_length must be a whole number, got 10.5"),
        (_line(0, 10, 1, [1]).replace('"output_length": 1', '"output_length": true'),
         "t.jsonl line 1: output_length must be a whole number, got True"),
        (_line(0, 10, 1, [1]).replace("[1]", '"abc"'), "t.jsonl line 1: hash_ids must be a list of whole numbers"),
        (_line(0, 10, 1, [-4]), "t.jsonl line 1: hash_ids must be a list of whole numbers >= 0"),
        (_line(0, 1100, 1, [1, 2]), "t.jsonl line 1: hash_ids has 2 ids; input_length 1100 needs 3"),
        (_line(2000, 10, 1, [1]) + _line(1000, 10, 1, [2]), "t.jsonl line 2: timestamp 1000 is earlier"),
    ],
)
def test_bad_mooncake_lines_name_the_line(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(workload.WorkloadError) as err:
        workload.load_mooncake(path)
    assert str(err.value).startswith(message)


def test_a_missing_or_binary_mooncake_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(workload.WorkloadError, match=r"nope\.jsonl: cannot read"):
        workload.load_mooncake(tmp_path / "nope.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(workload.WorkloadError, match=r"b\.jsonl: not a text file"):
        workload.load_mooncake(tmp_path / "b.jsonl")


def _blocks(*rows: tuple[float, int, tuple[int, ...]]) -> workload.BlockTrace:
    return workload.BlockTrace(tuple(workload.Arrival(t, n, 1) for t, n, _ in rows), tuple(ids for _, _, ids in rows))


def test_prefix_hits_are_leading_blocks_seen_within_the_retention() -> None:
    trace = _blocks(
        (0.0, 1100, (1, 2, 3)),
        (30.0, 1100, (1, 2, 4)),  # blocks 1 and 2 seen 30 s ago: 1,024 tokens hit at 60 s retention
        (40.0, 1100, (9, 2, 3)),  # block 2 seen, but the first block is new: a prefix cache matches nothing
        (45.0, 600, (1, 2)),  # both blocks seen 15 s ago; the last token is computed: 599 of 600 hit
    )
    assert workload.prefix_hit_rate(trace, retention=60.0) == pytest.approx((0 + 1024 + 0 + 599) / 3900)
    assert workload.prefix_hit_rate(trace, retention=20.0) == pytest.approx(599 / 3900)  # 30 s is too long ago
    assert workload.prefix_hit_rate(trace, retention=0.0) == 0.0
    # Requests before the window warm the cache but are not counted.
    assert workload.prefix_hit_rate(trace, retention=60.0, start=30.0, duration=10.0) == pytest.approx(1024 / 1100)


def test_the_mooncake_trace_reuses_prefixes_more_the_longer_blocks_stay() -> None:
    t = workload.load_mooncake(MOONCAKE)
    rates = [workload.prefix_hit_rate(t, retention=r) for r in (10.0, 60.0, 600.0, 1e9)]
    assert rates == sorted(rates) and rates[0] < 0.1 < rates[-1] < 0.5


@pytest.mark.parametrize("retention", [-1.0, float("nan"), float("inf")])
def test_bad_retention(retention: float) -> None:
    with pytest.raises(workload.WorkloadError, match="retention must be zero or more seconds"):
        workload.prefix_hit_rate(_blocks((0.0, 10, (1,))), retention=retention)
