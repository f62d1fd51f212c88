"""Twin: request arrivals — Azure and Mooncake trace replay with rate scaling, and seeded synthetic load shapes."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class WorkloadError(ValueError):
    """Bad workload input; the message names the file and line, or the parameter."""


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """One request: when it arrives (seconds from the start) and its token counts."""

    time: float
    prompt_tokens: int
    output_tokens: int


# ---------------------------------------------------------------------------------------------- traces


def _timestamp(text: str) -> datetime.datetime:
    # The Azure trace writes 7 fractional digits ("18:15:46.6805900"); datetime takes at most 6.
    head, dot, frac = text.strip().partition(".")
    if dot:
        text = f"{head}.{frac[:6]}"
    return datetime.datetime.fromisoformat(text)


def load_trace(path: str | Path) -> list[Arrival]:
    """Read an Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens), times from its first row.

    Rows must be in time order. A request with 0 generated tokens still produces one (engines always
    sample at least one token).
    """
    p = Path(path)
    name = p.name
    try:
        handle = p.open(newline="", encoding="utf-8")
    except OSError as err:
        raise WorkloadError(f"{name}: cannot read the trace: {err.strerror or err}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{name}: the trace is empty; expected the header {','.join(TRACE_COLUMNS)}")
        cols = [h.strip() for h in header]
        missing = [c for c in TRACE_COLUMNS if c not in cols]
        if missing:
            raise WorkloadError(f"{name} line 1: missing column(s) {', '.join(missing)}; found {','.join(cols)}")
        i_ts, i_in, i_out = (cols.index(c) for c in TRACE_COLUMNS)
        out: list[Arrival] = []
        start: datetime.datetime | None = None
        last = -math.inf
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(cols):
                raise WorkloadError(f"{name} line {line_no}: expected {len(cols)} fields, got {len(row)}")
            try:
                ts = _timestamp(row[i_ts])
            except ValueError:
                raise WorkloadError(f"{name} line {line_no}: TIMESTAMP {row[i_ts]!r} is not a timestamp") from None
            prompt = _count(name, line_no, "ContextTokens", row[i_in])
            output = _count(name, line_no, "GeneratedTokens", row[i_out])
            if prompt < 1:
                raise WorkloadError(f"{name} line {line_no}: ContextTokens must be at least 1, got {prompt}")
            if start is None:
                start = ts
            t = (ts - start).total_seconds()
            if t < last:
                raise WorkloadError(f"{name} line {line_no}: TIMESTAMP {row[i_ts]!r} is earlier than the row before")
            last = t
            out.append(Arrival(t, prompt, max(output, 1)))
    if not out:
        raise WorkloadError(f"{name}: the trace has a header but no requests")
    return out


# Mooncake traces (kvcache-ai/Mooncake, FAST '25) hash each prompt in blocks of 512 tokens: the `hash_ids` of a
# 1,100-token prompt are 3 ids (512 + 512 + 76 tokens), and an id equal to one in an earlier request is the
# same content there (a shared prefix: the earlier turns of a conversation, a shared system prompt).
MOONCAKE_BLOCK = 512
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")


@dataclasses.dataclass(frozen=True, slots=True)
class BlockTrace:
    """A trace whose prompts come as block hashes: the arrivals, and each one's `hash_ids` (same order)."""

    arrivals: tuple[Arrival, ...]
    hash_ids: tuple[tuple[int, ...], ...]
    block: int = MOONCAKE_BLOCK


def _json_count(name: str, line_no: int, key: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{name} line {line_no}: {key} must be a whole number, got {value!r}")
    if value < low:
        raise WorkloadError(f"{name} line {line_no}: {key} must be at least {low}, got {value}")
    return value


def load_mooncake(path: str | Path) -> BlockTrace:
    """Read a Mooncake trace: one JSON object a line with `timestamp` (ms), `input_length`, `output_length` and
    `hash_ids` (one id per 512-token block of the prompt), times from its first line.

    Lines must be in time order; other keys are ignored. A request with 0 output tokens still produces one
    (engines always sample at least one token).
    """
    p = Path(path)
    name = p.name
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise WorkloadError(f"{name}: cannot read the trace: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{name}: not a text file (invalid UTF-8)") from None
    arrivals: list[Arrival] = []
    hashes: list[tuple[int, ...]] = []
    start: int | None = None
    last = -1
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise WorkloadError(f"{name} line {line_no}: not valid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise WorkloadError(f"{name} line {line_no}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in MOONCAKE_KEYS if k not in row]
        if missing:
            raise WorkloadError(f"{name} line {line_no}: missing key(s) {', '.join(missing)}")
        ms = _json_count(name, line_no, "timestamp", row["timestamp"], low=0)
        prompt = _json_count(name, line_no, "input_length", row["input_length"], low=1)
        output = _json_count(name, line_no, "output_length", row["output_length"], low=0)
        ids = row["hash_ids"]
        if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            raise WorkloadError(f"{name} line {line_no}: hash_ids must be a list of whole numbers >= 0")
        blocks = -(-prompt // MOONCAKE_BLOCK)
        if len(ids) != blocks:
            raise WorkloadError(f"{name} line {line_no}: hash_ids has {len(ids)} ids; input_length {prompt} "
                                f"needs {blocks} (one per {MOONCAKE_BLOCK} tokens)")
        if ms < last:
            raise WorkloadError(f"{name} line {line_no}: timestamp {ms} is earlier than the line before")
        last = ms
        if start is None:
            start = ms
        arrivals.append(Arrival((ms - start) / 1000.0, prompt, max(output, 1)))
        hashes.append(tuple(ids))
    if not arrivals:
        raise WorkloadError(f"{name}: the trace has no requests")
    return BlockTrace(tuple(arrivals), tuple(hashes))


def prefix_hit_rate(trace: BlockTrace, *, retention: float, start: float = 0.0, duration: float | None = None
                    ) -> float:
    """Share of the prompt tokens of the requests in [start, start + duration) that a prefix cache serves when
    it keeps a block for `retention` seconds after its last use.

    A prompt hits on its leading blocks only (a prefix cache matches from the first token), the last token is
    always computed, and requests before `start` warm the cache. Prompts of 1,100 tokens (3 blocks) whose first
    2 blocks were used 30 s ago hit 1,024 tokens at a retention of 60 s, none at 20 s.
    """
    if not retention >= 0 or math.isinf(retention):
        raise WorkloadError(f"retention must be zero or more seconds, got {retention}")
    end = math.inf if duration is None else start + duration
    used: dict[int, float] = {}
    hits = total = 0
    for a, ids in zip(trace.arrivals, trace.hash_ids, strict=True):
        if a.time >= end:
            break
        if a.time >= start:
            k = 0
            for i in ids:
                seen = used.get(i)
                if seen is None or a.time - seen > retention:
                    break
                k += 1
            hits += min(k * trace.block, a.prompt_tokens - 1)
            total += a.prompt_tokens
        for i in ids:
            used[i] = a.time
    return hits / total if total else 0.0


def _count(name: str, line_no: int, column: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise WorkloadError(f"{name} line {line_no}: {column} {text!r} is not an integer") from None
    if value < 0:
        raise WorkloadError(f"{name} line {line_no}: {column} must not be negative, got {value}")
    return value


def scale_rate(
    arrivals: Sequence[Arrival],
    factor: float,
    *,
    method: Literal["superpose", "compress"] = "superpose",
    shift: float = 60.0,
    seed: int = 0,
) -> list[Arrival]:
    """Multiply a trace's request rate by `factor`.

    compress: divide every timestamp by the factor; the same requests in a shorter trace (a 58-minute
    trace at x3.6 lasts 16 minutes, and its ramps are 3.6 times steeper).
    superpose: overlay copies of the trace, each shifted by a random offset in [0, shift) seconds and
    wrapped around the end, so the trace keeps its length and shape; a fractional factor adds a random
    subset of one more copy (x3.6 = 3 copies + 60% of a fourth).
    """
    if not factor > 0 or math.isinf(factor):
        raise WorkloadError(f"rate scale must be a positive number, got {factor}")
    if not arrivals:
        raise WorkloadError("cannot scale an empty trace")
    if method == "compress":
        return [Arrival(a.time / factor, a.prompt_tokens, a.output_tokens) for a in arrivals]
    if method != "superpose":
        raise WorkloadError(f"rate scale method must be superpose or compress, got {method!r}")
    if shift < 0:
        raise WorkloadError(f"shift must not be negative, got {shift}")
    rng = random.Random(seed)
    span = arrivals[-1].time - arrivals[0].time
    length = span if span > 0 else 1.0
    whole = math.floor(factor)
    fraction = factor - whole
    out: list[Arrival] = []
    copies = whole + (1 if fraction > 0 else 0)
    for copy in range(copies):
        offset = 0.0 if copy == 0 else rng.uniform(0.0, min(shift, length))
        keep = fraction if copy == whole else 1.0
        for a in arrivals:
            if keep < 1.0 and rng.random() >= keep:
                continue
            t = a.time + offset
            if t > length:
                t -= length
            out.append(Arrival(t, a.prompt_tokens, a.output_tokens))
    out.sort(key=lambda a: a.time)
    return out


def window(arrivals: Sequence[Arrival], *, start: float = 0.0, duration: float | None = None) -> list[Arrival]:
    """The arrivals in [start, start + duration), re-timed to begin at 0."""
    end = math.inf if duration is None else start + duration
    return [Arrival(a.time - start, a.prompt_tokens, a.output_tokens) for a in arrivals if start <= a.time < end]


# ---------------------------------------------------------------------------------------------- lengths


@dataclasses.dataclass(frozen=True, slots=True)
class Fixed:
    """Every request has exactly this many tokens."""

    tokens: int

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise WorkloadError(f"fixed length must be at least 1 token, got {self.tokens}")

    def sample(self, rng: random.Random) -> int:
        return self.tokens


@dataclasses.dataclass(frozen=True, slots=True)
class LogNormal:
    """Lognormal token counts with this mean and coefficient of variation, clipped to [low, high].

    sigma^2 = ln(1 + cv^2), mu = ln(mean) - sigma^2 / 2: mean 1,155 and cv 0.8 give a median of 902.
    """

    mean: float
    cv: float
    low: int = 1
    high: int | None = None
    _mu: float = dataclasses.field(init=False, repr=False, compare=False, default=0.0)
    _sigma: float = dataclasses.field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        if not self.mean >= 1:
            raise WorkloadError(f"lognormal mean must be at least 1 token, got {self.mean}")
        if not self.cv >= 0:
            raise WorkloadError(f"lognormal cv must not be negative, got {self.cv}")
        if self.low < 1 or (self.high is not None and self.high < self.low):
            raise WorkloadError(f"lognormal bounds must satisfy 1 <= low <= high, got {self.low}..{self.high}")
        # Once, not per draw: a 30-minute scenario draws a million lengths.
        s2 = math.log(1.0 + self.cv * self.cv)
        object.__setattr__(self, "_mu", math.log(self.mean) - s2 / 2.0)
        object.__setattr__(self, "_sigma", math.sqrt(s2))

    def sample(self, rng: random.Random) -> int:
        value = round(self.mean) if self.cv == 0 else round(rng.lognormvariate(self._mu, self._sigma))
        value = max(self.low, value)
        return value if self.high is None else min(self.high, value)


Length = Fixed | LogNormal


@dataclasses.dataclass(frozen=True, slots=True)
class Mix:
    """Several request shapes in one stream: each request draws a part by weight, then its prompt and output
    lengths from that part (weights 3 and 1: three requests in four take the first shape)."""

    parts: tuple[tuple[float, Length, Length], ...]  # (weight, prompt length, output length)

    def __post_init__(self) -> None:
        if not self.parts:
            raise WorkloadError("a mix needs at least one part")
        for weight, _, _ in self.parts:
            if not weight > 0 or math.isinf(weight):
                raise WorkloadError(f"mix weights must be positive numbers, got {weight}")

    def sample(self, rng: random.Random) -> tuple[int, int]:
        x = rng.random() * sum(w for w, _, _ in self.parts)
        for weight, isl, osl in self.parts:
            x -= weight
            if x < 0:
                return isl.sample(rng), osl.sample(rng)
        _, isl, osl = self.parts[-1]  # x == total after rounding
        return isl.sample(rng), osl.sample(rng)


# ---------------------------------------------------------------------------------------------- rates


@dataclasses.dataclass(frozen=True, slots=True)
class RateProfile:
    """Requests per second as a function of time, with an upper bound for thinning."""

    rate: Callable[[float], float]
    peak: float
    name: str


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    ok = value >= 0 if zero_ok else value > 0
    if not ok or math.isinf(value) or math.isnan(value):
        need = "zero or more" if zero_ok else "more than zero"
        raise WorkloadError(f"{name} must be {need} requests per second, got {value}")


def constant(rate: float) -> RateProfile:
    """A steady Poisson stream."""
    _positive("rate", rate)
    return RateProfile(lambda t: rate, rate, f"poisson({rate:g}/s)")


def diurnal(mean: float, *, amplitude: float = 0.5, period: float = 86400.0, phase: float = 0.0) -> RateProfile:
    """mean x (1 + amplitude x sin(2 pi (t - phase) / period)); amplitude in [0, 1]."""
    _positive("mean rate", mean)
    if not 0 <= amplitude <= 1:
        raise WorkloadError(f"amplitude must be within 0..1, got {amplitude}")
    if period <= 0:
        raise WorkloadError(f"period must be positive seconds, got {period}")
    return RateProfile(
        lambda t: mean * (1.0 + amplitude * math.sin(2.0 * math.pi * (t - phase) / period)),
        mean * (1.0 + amplitude),
        f"diurnal({mean:g}/s, ±{amplitude:g})",
    )


def ramp(start: float, end: float, *, duration: float) -> RateProfile:
    """Linear from `start` to `end` requests/s over `duration` seconds, then `end`."""
    _positive("start rate", start, zero_ok=True)
    _positive("end rate", end, zero_ok=True)
    if duration <= 0:
        raise WorkloadError(f"ramp duration must be positive seconds, got {duration}")
    if start == 0 and end == 0:
        raise WorkloadError("a ramp from 0 to 0 requests per second sends nothing")
    return RateProfile(
        lambda t: start + (end - start) * min(max(t / duration, 0.0), 1.0),
        max(start, end),
        f"ramp({start:g}->{end:g}/s)",
    )


def spike(base: float, peak: float, *, at: float, length: float) -> RateProfile:
    """`base` requests/s, and `peak` during [at, at + length)."""
    _positive("base rate", base, zero_ok=True)
    _positive("spike rate", peak)
    if length <= 0 or at < 0:
        raise WorkloadError(f"spike needs at >= 0 and length > 0 seconds, got at={at}, length={length}")
    return RateProfile(
        lambda t: peak if at <= t < at + length else base, max(base, peak), f"spike({base:g}/{peak:g}/s)"
    )


def on_off(rate: float, *, on: float, off: float, off_rate: float = 0.0) -> RateProfile:
    """Bursts: `rate` for `on` seconds, then `off_rate` for `off` seconds, repeated."""
    _positive("burst rate", rate)
    _positive("off rate", off_rate, zero_ok=True)
    if on <= 0 or off < 0:
        raise WorkloadError(f"on/off periods need on > 0 and off >= 0 seconds, got on={on}, off={off}")
    cycle = on + off
    return RateProfile(lambda t: rate if (t % cycle) < on else off_rate, max(rate, off_rate), f"onoff({rate:g}/s)")


def synthetic(
    profile: RateProfile,
    *,
    duration: float,
    isl: Length | None = None,
    osl: Length | None = None,
    mix: Mix | None = None,
    seed: int = 0,
) -> list[Arrival]:
    """Non-homogeneous Poisson arrivals by thinning (Lewis-Shedler), seeded and deterministic; lengths from
    `isl` and `osl`, or from `mix`."""
    if not duration > 0 or math.isinf(duration):
        raise WorkloadError(f"duration must be positive seconds, got {duration}")
    lengths = isl is not None and osl is not None
    if (mix is None and not lengths) or (mix is not None and (isl is not None or osl is not None)):
        raise WorkloadError("give either isl and osl, or mix")
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = 0.0
    peak = profile.peak
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            return out
        r = profile.rate(t)
        if r < 0:
            raise WorkloadError(f"{profile.name} gives a negative rate {r} at t={t:.1f}s")
        if rng.random() * peak <= r:
            if mix is not None:
                out.append(Arrival(t, *mix.sample(rng)))
            else:
                assert isl is not None and osl is not None
                out.append(Arrival(t, isl.sample(rng), osl.sample(rng)))


def poisson(rate: float, *, duration: float, isl: Length, osl: Length, seed: int = 0) -> list[Arrival]:
    """A steady Poisson stream of `rate` requests/s."""
    return synthetic(constant(rate), duration=duration, isl=isl, osl=osl, seed=seed)


def merge(*streams: Iterable[Arrival]) -> list[Arrival]:
    """Several arrival streams as one, in time order."""
    out = [a for s in streams for a in s]
    out.sort(key=lambda a: a.time)
    return out
