"""Test: trace replay, rate scaling and synthetic arrivals — shapes, determinism and bad input."""

from __future__ import annotations

import itertools
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
