"""Pure: whether the engines' histogram buckets can resolve the SLO's objectives, and the nearest edges if not.

The operator reads SLO attainment from histogram buckets (prometheus.fraction_bounds): an objective at a bucket
edge is counted exactly, one inside a bucket only to within that bucket. vLLM's per-request ITL buckets jump from
25 to 50 ms, so against a 40 ms objective every request between them may or may not count, and SLOMet reads
Unknown ("Unresolved") whenever the percentile falls there. This module names such objectives and the edges
either side, from the engine's published default buckets or, once pods are scraped, the `le` edges seen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from infertune import models
from infertune.runtimes import metrics, registry, sglang, tgi, vllm

# --- the engines' published default buckets (seconds) ----------------------------------------------------------
# Each engine declares them in its exposition (Engine.exposition, which the twin serves), so what the twin serves
# and what is checked here cannot drift apart: Engine.default_buckets. Named here for the tests and docs.
VLLM_TTFT, VLLM_TPOT, VLLM_LATENCY = vllm.TTFT_BUCKETS, vllm.TPOT_BUCKETS, vllm.LATENCY_BUCKETS
SGLANG_TTFT, SGLANG_ITL = sglang.TTFT_BUCKETS, sglang.ITL_BUCKETS
TGI_DURATION = tgi.DURATION_BUCKETS


@dataclasses.dataclass(frozen=True, slots=True)
class Inside:
    """An objective that lies strictly inside one bucket of the histogram it is read from."""

    field: str  # "slo.ttft" or "slo.itl"
    objective: float  # seconds
    metric: str  # the engine's histogram name
    lower: float  # the edge below (0 below the first edge)
    upper: float  # the edge above (+inf past the last finite edge)
    seen: bool  # edges seen on the pods (True) or the engine's published defaults (False)

    def __str__(self) -> str:
        where = "the buckets its pods export" if self.seen else "the engine's default buckets"
        if math.isinf(self.upper):
            bucket = f"above the largest finite edge ({_ms(self.lower)}) of {self.metric}"
            advice = f"use {_ms(self.lower)} or less"
        else:
            bucket = f"inside the {_ms(self.lower).removesuffix(' ms')}-{_ms(self.upper)} bucket of {self.metric}"
            advice = f"use {_ms(self.upper)}" if self.lower <= 0 else f"use {_ms(self.lower)} or {_ms(self.upper)}"
        return (f"{self.field} {_ms(self.objective)} lies {bucket} ({where}): requests in that bucket may or may not "
                f"meet it, so SLOMet reads Unknown whenever the percentile falls there; {advice}")


def _ms(seconds: float) -> str:
    """0.025 -> '25 ms', 1.0 -> '1000 ms', 0.00015 -> '0.15 ms': edges as a user writes objectives."""
    ms = seconds * 1000
    return f"{ms:.0f} ms" if abs(ms - round(ms)) < 1e-6 else f"{ms:.3g} ms"


def objective_signals(dialect: metrics.Dialect) -> dict[str, metrics.Signal]:
    """Which histogram each objective is read from: TTFT's own; for ITL the per-request one (TPOT) where the
    engine has it, else per-token ITL, as prometheus.pod_metrics reads them. A lacking signal is left out (TGI
    has no TTFT: it is estimated, not read from buckets)."""
    out: dict[str, metrics.Signal] = {}
    if not dialect.lacks(metrics.Signal.TTFT):
        out["slo.ttft"] = metrics.Signal.TTFT
    for signal in (metrics.Signal.TPOT, metrics.Signal.ITL):
        if not dialect.lacks(signal):
            out["slo.itl"] = signal
            break
    return out


def enclosing(value: float, edges: tuple[float, ...]) -> tuple[float, float] | None:
    """The bucket (lower, upper) that holds `value` strictly inside it; None when `value` is an edge (to a part
    in a billion: 50 ms is 0.05 s) or there are no edges. 40 ms in vLLM's TPOT buckets -> (0.025, 0.05)."""
    finite = sorted(e for e in edges if math.isfinite(e))
    if not finite or any(math.isclose(value, e, rel_tol=1e-9, abs_tol=1e-12) for e in finite):
        return None
    lower = max((e for e in finite if e < value), default=0.0)
    upper = min((e for e in finite if e > value), default=math.inf)
    return lower, upper


def check(spec: models.InferenceDeploymentSpec,
          seen: Mapping[str, tuple[float, ...]] | None = None) -> list[Inside]:
    """The objectives that lie inside a bucket. `seen` maps a signal's value ("ttft", "tpot", "itl") to the
    finite `le` edges scraped from this resource's pods; a signal not in it falls back to the defaults."""
    engine = registry.for_engine(spec.engine)
    dialect = engine.dialect
    objectives = {"slo.ttft": spec.slo.ttft, "slo.itl": spec.slo.itl}
    out: list[Inside] = []
    for field, signal in objective_signals(dialect).items():
        observed = (seen or {}).get(signal.value)
        edges = observed or engine.default_buckets(signal)
        if not edges:
            continue
        bucket = enclosing(objectives[field], edges)
        if bucket is not None:
            out.append(Inside(field=field, objective=objectives[field], metric=dialect.sources[signal].names[0],
                              lower=bucket[0], upper=bucket[1], seen=bool(observed)))
    return out
