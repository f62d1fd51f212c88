"""Pure: benchmark exports (genai-perf, AIPerf, vllm bench serve, CSV) -> frontier points, the knee, replicas.

Formats, read by their keys (sources in comments at each parser):
- genai-perf `profile_export_genai_perf.json` and AIPerf `profile_export_aiperf.json`: one run each, metrics as
  {"unit": "ms", "avg": ..., "p95": ...}, the run's arguments under `input_config`;
- `vllm bench serve --save-result` JSON (`mean_ttft_ms`, `p99_tpot_ms`, `output_throughput`, `max_concurrency`),
  one object per run; `--append-result` writes one object per line;
- a CSV with one row per concurrency: `concurrency,ttft_ms,itl_ms,output_tokens_per_s` (the calibration data's
  format), with optional statistics in the column names (`ttft_p95_ms`, `itl_ms_mean`, `p99_tpot_ms`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from infertune import cost, scaling

# Points whose throughput is within 2% of the best one inside the SLO are on the plateau: more concurrency
# there buys (almost) no throughput, only queueing, so the knee is the smallest of them.
FLAT = 0.02

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "seconds": 1.0}
_STAT = r"(?:mean|avg|median|p\d+(?:\.\d+)?)"


class FormatError(ValueError):
    """The input is not a benchmark export this module reads; the message says what is wrong and where."""


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One benchmark run: latencies in seconds keyed by statistic ("mean", "p50", "p95", ...)."""

    concurrency: float
    ttft: Mapping[str, float]
    itl: Mapping[str, float]  # per-request inter-token latency (TPOT where the tool reports both)
    output_tokens_per_s: float
    requests_per_s: float | None = None
    source: str = ""
    concurrency_estimated: bool = False  # a request-rate run: requests in flight by Little's law


@dataclasses.dataclass(frozen=True, slots=True)
class Export:
    format: str  # genai-perf, aiperf, vllm-bench-serve, csv (or "a + b" for several files)
    points: tuple[Point, ...]
    notes: tuple[str, ...] = ()


def _stat(name: str) -> str:
    name = name.lower()
    if name in ("avg", "mean"):
        return "mean"
    if name == "median":
        return "p50"
    return name


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FormatError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise FormatError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise FormatError(f"{where}: expected a finite number, got {value!r}")
    return out


def _unit(text: str, where: str) -> float:
    scale = _UNITS.get(text.strip().lower())
    if scale is None:
        raise FormatError(f"{where}: unknown time unit {text!r} (expected one of ns, us, ms, s)")
    return scale


# ---------------------------------------------------------------------------------------------- JSON


def _documents(text: str) -> list[tuple[str, Any]]:
    """A JSON document, or JSON lines (vLLM's --append-result); each with where it came from."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as first:
        lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if len(lines) < 2:
            raise FormatError(f"line {first.lineno}: not valid JSON: {first.msg}") from None
        docs = []
        for number, line in lines:
            try:
                docs.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise FormatError(f"line {number}: not valid JSON: {e.msg}") from None
        return docs
    if isinstance(whole, list):
        return [(f"item {i}", d) for i, d in enumerate(whole, start=1)]
    return [("", whole)]


def _distribution(doc: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    """genai-perf/AIPerf {"unit": "ms", "avg": 12.3, "p95": 15.0, ...} -> seconds by statistic."""
    raw = doc.get(key)
    if not isinstance(raw, dict):
        raise FormatError(f"{where}{key}: missing (expected an object with unit and avg/p95...)")
    scale = _unit(str(raw.get("unit", "ms")), f"{where}{key}.unit")
    out = {}
    for name, value in raw.items():
        if re.fullmatch(_STAT, str(name)) and value is not None:
            out[_stat(str(name))] = _number(value, f"{where}{key}.{name}") * scale
    if "mean" not in out and not any(k.startswith("p") for k in out):
        raise FormatError(f"{where}{key}: no avg or percentile values")
    return out


def _dig(doc: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _profile_export(doc: Mapping[str, Any], *, where: str, name: str) -> tuple[str, Point, list[str]]:
    """genai-perf (genai_perf/export_data/json_exporter.py: the stats plus the CLI args as `input_config`) or
    AIPerf (docs/tutorials/working-with-profile-exports.md: `input_config.loadgen.concurrency`)."""
    prefix = f"{where}: " if where else ""
    config = doc.get("input_config") if isinstance(doc.get("input_config"), dict) else {}
    kind = "aiperf" if isinstance(_dig(config, "loadgen"), dict) else "genai-perf"
    ttft = _distribution(doc, "time_to_first_token", prefix)
    itl = _distribution(doc, "inter_token_latency", prefix)
    tokens = _dig(doc, "output_token_throughput", "avg")
    if tokens is None:
        raise FormatError(f"{prefix}output_token_throughput.avg: missing")
    tokens_s = _number(tokens, f"{prefix}output_token_throughput.avg")
    req = _dig(doc, "request_throughput", "avg")
    req_s = None if req is None else _number(req, f"{prefix}request_throughput.avg")
    notes: list[str] = []
    raw_c = (_dig(config, "concurrency") or _dig(config, "loadgen", "concurrency")
             or _dig(config, "perf_analyzer", "stimulus", "concurrency"))
    estimated = False
    if raw_c is None:
        # genai-perf names its artifact directory <model>-<endpoint>-concurrency<N>.
        found = re.search(r"concurrency[_-]?(\d+)", name)
        if found:
            raw_c = found.group(1)
    if raw_c is None:
        latency = _dig(doc, "request_latency", "avg")
        if req_s is None or latency is None:
            raise FormatError(f"{prefix}input_config: no concurrency (a request-rate run without request_latency "
                              "and request_throughput to estimate it)")
        scale = _unit(str(_dig(doc, "request_latency", "unit") or "ms"), f"{prefix}request_latency.unit")
        # Little's law: 3.2 req/s x 12.5 s per request = 40 requests in flight on average.
        raw_c = req_s * _number(latency, f"{prefix}request_latency.avg") * scale
        estimated = True
        notes.append(f"{name}{' ' + where if where else ''}: no concurrency (a request-rate run): "
                     f"{raw_c:.1f} in flight by Little's law")
    c = _number(raw_c, f"{prefix}concurrency")
    return kind, Point(concurrency=c, ttft=ttft, itl=itl, output_tokens_per_s=tokens_s, requests_per_s=req_s,
                       source=f"{name}{' ' + where if where else ''}", concurrency_estimated=estimated), notes


def _vllm_stats(doc: Mapping[str, Any], metric: str, where: str) -> dict[str, float]:
    out = {}
    for key, value in doc.items():
        m = re.fullmatch(rf"({_STAT})_{metric}_ms", str(key))
        if m and value is not None:
            out[_stat(m.group(1))] = _number(value, f"{where}{key}") / 1000.0
    return out


def _vllm_result(doc: Mapping[str, Any], *, where: str, name: str) -> tuple[Point, list[str]]:
    """`vllm bench serve --save-result` (vllm/benchmarks/serve.py): mean_/median_/pNN_{ttft,tpot,itl}_ms,
    output_throughput, request_throughput, max_concurrency (null for a request-rate run)."""
    prefix = f"{where}: " if where else ""
    ttft = _vllm_stats(doc, "ttft", prefix)
    # TPOT is per request (decode time / (tokens - 1)), which is what an ITL objective means; vLLM's "ITL" is
    # per streamed chunk across all requests. Use TPOT when present.
    itl = _vllm_stats(doc, "tpot", prefix) or _vllm_stats(doc, "itl", prefix)
    if not ttft:
        raise FormatError(f"{prefix}no mean_ttft_ms/pNN_ttft_ms (run with --percentile-metrics ttft,tpot,itl)")
    if not itl:
        raise FormatError(f"{prefix}no mean_tpot_ms or mean_itl_ms (run with --percentile-metrics ttft,tpot,itl)")
    if doc.get("output_throughput") is None:
        raise FormatError(f"{prefix}output_throughput: missing")
    tokens_s = _number(doc["output_throughput"], f"{prefix}output_throughput")
    req_s = None if doc.get("request_throughput") is None else _number(doc["request_throughput"],
                                                                        f"{prefix}request_throughput")
    notes: list[str] = []
    label = f"{name}{' ' + where if where else ''}"
    if doc.get("failed"):
        notes.append(f"{label}: {doc['failed']} request(s) failed")
    estimated = False
    if doc.get("max_concurrency") is not None:
        c = _number(doc["max_concurrency"], f"{prefix}max_concurrency")
    else:
        completed = doc.get("completed")
        out_tokens = doc.get("total_output_tokens")
        if req_s is None or not completed or out_tokens is None or "mean" not in itl or "mean" not in ttft:
            raise FormatError(f"{prefix}max_concurrency is null (a request-rate run) and the file lacks what "
                              "Little's law needs (request_throughput, completed, total_output_tokens, means)")
        osl = _number(out_tokens, f"{prefix}total_output_tokens") / _number(completed, f"{prefix}completed")
        # Little's law: 2 req/s x (0.3 s TTFT + 499 x 0.04 s) = 40.5 requests in flight on average.
        c = req_s * (ttft["mean"] + itl["mean"] * max(0.0, osl - 1))
        estimated = True
        notes.append(f"{label}: max_concurrency is null (a request-rate run): {c:.1f} in flight by Little's law")
    return Point(concurrency=c, ttft=ttft, itl=itl, output_tokens_per_s=tokens_s, requests_per_s=req_s,
                 source=label, concurrency_estimated=estimated), notes


def _parse_json(text: str, name: str) -> Export:
    points: list[Point] = []
    notes: list[str] = []
    kinds: list[str] = []
    for where, doc in _documents(text):
        prefix = f"{where}: " if where else ""
        if not isinstance(doc, dict):
            raise FormatError(f"{prefix}expected a JSON object, got {type(doc).__name__}")
        if isinstance(doc.get("time_to_first_token"), dict):
            kind, point, more = _profile_export(doc, where=where, name=name)
        elif any(re.fullmatch(rf"{_STAT}_ttft_ms", str(k)) for k in doc):
            kind = "vllm-bench-serve"
            point, more = _vllm_result(doc, where=where, name=name)
        else:
            raise FormatError(f"{prefix}not a genai-perf/AIPerf profile export (time_to_first_token) nor a "
                              "vllm bench serve result (mean_ttft_ms)")
        kinds.append(kind)
        points.append(point)
        notes += more
    if not points:
        raise FormatError("no benchmark runs in the file")
    if "vllm-bench-serve" in kinds:
        notes.append(f"{name}: ITL is vllm bench serve's TPOT where present (per request, after the first token), "
                     "which is what an ITL objective bounds; its per-chunk ITL otherwise")
    return Export(format=" + ".join(dict.fromkeys(kinds)), points=tuple(points), notes=tuple(notes))


# ---------------------------------------------------------------------------------------------- CSV

_CONCURRENCY = {"concurrency", "max_concurrency", "users", "num_users"}
_TOKENS = re.compile(r"(output_)?(tokens?|token_throughput|throughput)(_per)?_(s|sec|second)|output_throughput|"
                     r"output_token_throughput(_avg)?|(output_)?tok_s")
_REQUESTS = re.compile(r"requests?_per_(s|sec|second)|request_throughput(_avg)?|req_s")
_LATENCY = re.compile(
    rf"(?:(?P<pre>{_STAT})_)?(?P<metric>ttft|time_to_first_token|tpot|itl|inter_token_latency)"
    rf"(?:_(?P<mid>{_STAT}))?(?:_(?P<unit>[a-zµ]+))??(?:_(?P<post>{_STAT}))?")


def _column(header: str) -> str:
    return re.sub(r"[\s\-/]+", "_", header.strip().lower()).replace("(", "").replace(")", "")


def _parse_csv(text: str, name: str) -> Export:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise FormatError("empty file")
    header = [_column(h) for h in rows[0]]
    if header and header[0] == "metric":
        raise FormatError("line 1: a genai-perf/AIPerf CSV export holds one run without its concurrency; "
                          "pass its profile_export_*.json files instead")
    concurrency = next((i for i, h in enumerate(header) if h in _CONCURRENCY), None)
    tokens = next((i for i, h in enumerate(header) if _TOKENS.fullmatch(h)), None)
    requests = next((i for i, h in enumerate(header) if _REQUESTS.fullmatch(h)), None)
    latency: dict[str, list[tuple[int, str, float]]] = {"ttft": [], "itl": [], "tpot": []}
    for i, h in enumerate(header):
        m = _LATENCY.fullmatch(h)
        if m is None:
            continue
        metric = {"time_to_first_token": "ttft", "inter_token_latency": "itl"}.get(m["metric"], m["metric"])
        if m["unit"] is None:
            raise FormatError(f"line 1: column {rows[0][i].strip()!r} has no time unit; name it "
                              f"{m['metric']}_ms or {m['metric']}_s")
        scale = _unit(m["unit"], f"line 1: column {rows[0][i].strip()!r}")
        stat = _stat(m["pre"] or m["mid"] or m["post"] or "mean")
        latency[metric].append((i, stat, scale))
    itl_cols = latency["tpot"] or latency["itl"]
    missing = [label for label, found in (("concurrency", concurrency is not None), ("ttft_ms", bool(latency["ttft"])),
                                          ("itl_ms", bool(itl_cols)), ("output_tokens_per_s", tokens is not None))
               if not found]
    if missing:
        raise FormatError(f"line 1: no column for {', '.join(missing)} (expected a header such as "
                          "concurrency,ttft_ms,itl_ms,output_tokens_per_s)")
    assert concurrency is not None and tokens is not None
    points = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise FormatError(f"line {line}: {len(row)} fields, the header has {len(header)}")

        def cell(i: int, line: int = line, row: list[str] = row) -> float:
            return _number(row[i].strip(), f"line {line}: column {rows[0][i].strip()!r}")

        points.append(Point(
            concurrency=cell(concurrency),
            ttft={stat: cell(i) * scale for i, stat, scale in latency["ttft"]},
            itl={stat: cell(i) * scale for i, stat, scale in itl_cols},
            output_tokens_per_s=cell(tokens),
            requests_per_s=cell(requests) if requests is not None else None,
            source=f"{name} line {line}",
        ))
    if not points:
        raise FormatError("a header but no rows")
    return Export(format="csv", points=tuple(points))


def parse(text: str, *, name: str = "") -> Export:
    """One file's text -> its runs. `name` (the file's path) only labels points and finds genai-perf's
    `...-concurrencyN` directory names. Raises FormatError saying what is wrong and where."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise FormatError("empty file")
    if stripped[0] in "{[":
        return _parse_json(stripped, name)
    return _parse_csv(stripped, name)


def merge(exports: Iterable[Export]) -> Export:
    """Several files (genai-perf writes one per concurrency) as one frontier, sorted by concurrency."""
    items = list(exports)
    points = sorted((p for e in items for p in e.points), key=lambda p: p.concurrency)
    formats = " + ".join(dict.fromkeys(e.format for e in items))
    notes = [n for e in items for n in e.notes]
    seen: dict[float, str] = {}
    for p in points:
        if p.concurrency in seen:
            notes.append(f"concurrency {_fmt_c(p.concurrency)} measured twice ({seen[p.concurrency]}, {p.source})")
        seen[p.concurrency] = p.source
    return Export(format=formats, points=tuple(points), notes=tuple(notes))


def _fmt_c(c: float) -> str:
    return f"{c:g}" if c == int(c) else f"{c:.1f}"


# ---------------------------------------------------------------------------------------------- the knee


@dataclasses.dataclass(frozen=True, slots=True)
class Slo:
    ttft: float  # seconds
    itl: float  # seconds
    percentile: float = 95.0


@dataclasses.dataclass(frozen=True, slots=True)
class Basis:
    """Which statistic of each latency is compared with the SLO, and what the file offered."""

    ttft: str  # "p95" or "mean"
    itl: str
    ttft_available: tuple[str, ...]
    itl_available: tuple[str, ...]
    wanted: str

    @property
    def exact(self) -> bool:
        return self.ttft == self.wanted and self.itl == self.wanted


def _percentile_name(percentile: float) -> str:
    return f"p{percentile:g}"


def _stat_order(stat: str) -> tuple[int, float]:
    return (0, 0.0) if stat == "mean" else (1, float(stat[1:]))


def choose_basis(points: Sequence[Point], percentile: float) -> Basis:
    """The SLO's percentile where every point has it, else the mean (optimistic for tails: the report says so).

    Raises FormatError when some point lacks both.
    """
    wanted = _percentile_name(percentile)

    def common(field: str) -> tuple[str, ...]:
        sets = [set(getattr(p, field)) for p in points]
        return tuple(sorted(set.intersection(*sets) if sets else set(), key=_stat_order))

    chosen = []
    for field in ("ttft", "itl"):
        have = common(field)
        if wanted in have:
            chosen.append(wanted)
        elif "mean" in have:
            chosen.append("mean")
        else:
            raise FormatError(f"{field.upper()}: neither {wanted} nor the mean is present in every run "
                              f"(common: {', '.join(have) or 'none'})")
    return Basis(ttft=chosen[0], itl=chosen[1], ttft_available=common("ttft"), itl_available=common("itl"),
                 wanted=wanted)


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    point: Point
    ttft: float  # seconds, at the basis statistic
    itl: float
    ttft_ok: bool
    itl_ok: bool

    @property
    def ok(self) -> bool:
        return self.ttft_ok and self.itl_ok


@dataclasses.dataclass(frozen=True, slots=True)
class Knee:
    rows: tuple[Row, ...]
    basis: Basis
    slo: Slo
    knee: Row | None  # None: no measured concurrency meets the SLO
    best: Row | None  # the highest throughput within the SLO (the knee unless it sits on the plateau)
    boundary: float | None  # concurrency where the next point's violated SLO is crossed, interpolated
    boundary_metric: str | None

    @property
    def at_edge(self) -> bool:
        """The knee is the largest concurrency measured: the real knee may lie higher."""
        return self.knee is not None and self.knee is self.rows[-1]

    @property
    def max_batch_size(self) -> int | None:
        """The knee's concurrency as an engine max batch size (a Little's-law estimate rounds down)."""
        return None if self.knee is None else max(1, math.floor(self.knee.point.concurrency))


def find_knee(points: Sequence[Point], slo: Slo) -> Knee:
    """The knee: among runs whose TTFT and ITL meet the SLO, the highest throughput, or the smallest concurrency
    within FLAT (2%) of it when several sit on the saturation plateau.

    The NIM 70B sweep with TTFT 1 s and ITL 70 ms: concurrency 50 (835 ms, 59.7 ms, 814 tok/s) meets both,
    100 does not (TTFT 8.0 s from queueing): the knee is 50.
    """
    if not points:
        raise FormatError("no benchmark runs")
    basis = choose_basis(points, slo.percentile)
    ordered = sorted(points, key=lambda p: p.concurrency)
    rows = tuple(Row(point=p, ttft=p.ttft[basis.ttft], itl=p.itl[basis.itl], ttft_ok=p.ttft[basis.ttft] <= slo.ttft,
                     itl_ok=p.itl[basis.itl] <= slo.itl) for p in ordered)
    feasible = [r for r in rows if r.ok]
    if not feasible:
        return Knee(rows=rows, basis=basis, slo=slo, knee=None, best=None, boundary=None, boundary_metric=None)
    best = max(feasible, key=lambda r: r.point.output_tokens_per_s)
    knee = min((r for r in feasible if r.point.output_tokens_per_s >= best.point.output_tokens_per_s * (1 - FLAT)),
               key=lambda r: r.point.concurrency)
    boundary, metric = _boundary(rows, knee, slo) if knee is best else (None, None)
    return Knee(rows=rows, basis=basis, slo=slo, knee=knee, best=best, boundary=boundary, boundary_metric=metric)


def _boundary(rows: Sequence[Row], knee: Row, slo: Slo) -> tuple[float | None, str | None]:
    """Where between the knee and the next (failing) run the first objective is crossed, by linear interpolation.

    NIM sweep, TTFT SLO 1 s: 835 ms at 50 and 7,996 ms at 100 -> 50 + 50 x (1,000 - 835) / 7,162 = 51.2.
    """
    later = [r for r in rows if r.point.concurrency > knee.point.concurrency]
    if not later or later[0].ok:
        return None, None
    nxt = later[0]
    span = nxt.point.concurrency - knee.point.concurrency
    crossings = []
    for metric, lo, hi, limit, ok in (("TTFT", knee.ttft, nxt.ttft, slo.ttft, nxt.ttft_ok),
                                      ("ITL", knee.itl, nxt.itl, slo.itl, nxt.itl_ok)):
        if not ok and hi > lo:
            crossings.append((knee.point.concurrency + span * (limit - lo) / (hi - lo), metric))
    if not crossings:
        return None, None
    at, metric = min(crossings)
    return at, metric


# ---------------------------------------------------------------------------------------------- replicas


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    replicas: int
    target: float
    capacity: float  # per replica at the knee, in `unit`
    unit: str  # "req/s" or "tok/s"
    utilization: float

    def worked(self) -> str:
        """'120 req/s / (3.25 req/s per replica x 0.8) = 46.2 -> 47 replicas'."""
        raw = self.target / (self.capacity * self.utilization)
        return (f"{cost.number(self.target)} {self.unit} / ({cost.number(self.capacity)} {self.unit} per replica x "
                f"{self.utilization:g}) = {raw:,.2f} -> {self.replicas} replica{'s' if self.replicas != 1 else ''}")


def request_capacity(point: Point, *, osl: float | None = None) -> float | None:
    """Requests/s of one replica at this point: measured, or output tokens/s over output tokens per request."""
    if point.requests_per_s is not None:
        return point.requests_per_s
    if osl is not None and osl > 0:
        # 814 tok/s / 500 tokens per request = 1.63 req/s.
        return point.output_tokens_per_s / osl
    return None


def replicas_at_utilization(target: float, capacity: float, *, unit: str,
                            utilization: float = scaling.UTILIZATION) -> Plan:
    """Replicas that carry a throughput `target` with each at `utilization` of the knee's measured capacity (the
    operator's 0.8): a plain share of the knee, where queueing.replicas_for sizes for queueing under live demand.

    120 req/s at 1.63 req/s per replica x 0.8: ceil(92.0) = 92 replicas.
    """
    if not target > 0:
        raise ValueError(f"target: must be greater than zero, got {target!r}")
    if not capacity > 0:
        raise ValueError(f"capacity: must be greater than zero, got {capacity!r}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization: must lie in (0, 1], got {utilization!r}")
    n = max(1, math.ceil(target / (capacity * utilization) - 1e-9))
    return Plan(replicas=n, target=target, capacity=capacity, unit=unit, utilization=utilization)
