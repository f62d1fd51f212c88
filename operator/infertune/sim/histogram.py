"""Twin: a fine log-bucketed histogram that takes weighted and arithmetic-series observations in bulk."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Bins are 1% wide: bin i holds [MIN x RATIO^i, MIN x RATIO^(i+1)). Re-bucketed onto an engine's coarse
# bounds (0.01, 0.025, ... s) a value within 1% below a bound may land one bucket high; quantiles are
# read at the bin's geometric middle, within 0.5%.
RATIO = 1.01
MIN = 1e-6
_LOG_RATIO = math.log(RATIO)
_UNDER = -1  # values at or below MIN (and zero)


def _index(value: float) -> int:
    if value <= MIN:
        return _UNDER
    return int(math.log(value / MIN) / _LOG_RATIO)


def _lower(index: int) -> float:
    return 0.0 if index == _UNDER else MIN * RATIO**index


def _upper(index: int) -> float:
    return MIN if index == _UNDER else MIN * RATIO ** (index + 1)


class LogHistogram:
    """Counts (possibly weighted) of non-negative values in 1%-wide log bins, with an exact sum and count."""

    __slots__ = ("bins", "count", "sum")

    def __init__(self) -> None:
        self.bins: dict[int, float] = {}
        self.count = 0.0
        self.sum = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        i = _index(value)
        bins = self.bins
        bins[i] = bins.get(i, 0.0) + weight
        self.count += weight
        self.sum += value * weight

    def observe_series(self, first: float, step: float, n: int, weight: float = 1.0) -> None:
        """Observe first + step x j for j = 0..n-1, each `weight` times, in O(bins spanned).

        A decode macro-step of 200 steps whose step time grows by 1 us per step spans one or two bins.
        """
        if n <= 0:
            return
        last = first + step * (n - 1)
        self.count += n * weight
        # Sum of the series: n x first + step x n(n-1)/2.
        self.sum += (n * first + step * n * (n - 1) / 2.0) * weight
        i0, i1 = _index(first), _index(last)
        bins = self.bins
        if i0 == i1 or step == 0.0:
            bins[i0] = bins.get(i0, 0.0) + n * weight
            return
        if step < 0:  # values fall: count the mirrored series from the other end
            first, step, i0, i1 = last, -step, i1, i0
        done = 0
        for i in range(i0, i1):
            # j values below this bin's upper edge: ceil((upper - first) / step), clipped to [done, n].
            below = min(n, max(done, math.ceil((_upper(i) - first) / step)))
            if below > done:
                bins[i] = bins.get(i, 0.0) + (below - done) * weight
                done = below
        if n > done:
            bins[i1] = bins.get(i1, 0.0) + (n - done) * weight

    def merge(self, other: LogHistogram) -> None:
        bins = self.bins
        for i, w in other.bins.items():
            bins[i] = bins.get(i, 0.0) + w
        self.count += other.count
        self.sum += other.sum

    def copy(self) -> LogHistogram:
        h = LogHistogram()
        h.bins = dict(self.bins)
        h.count = self.count
        h.sum = self.sum
        return h

    def minus(self, earlier: LogHistogram) -> LogHistogram:
        """Observations since `earlier` (an older copy of this histogram)."""
        h = LogHistogram()
        for i, w in self.bins.items():
            d = w - earlier.bins.get(i, 0.0)
            if d > 1e-9:
                h.bins[i] = d
        h.count = self.count - earlier.count
        h.sum = self.sum - earlier.sum
        return h

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), read at the middle of its bin; NaN when empty."""
        if self.count <= 0:
            return math.nan
        target = q * self.count
        seen = 0.0
        keys = sorted(self.bins)
        for i in keys:
            seen += self.bins[i]
            if seen >= target - 1e-9:
                return _lower(i) if i == _UNDER else math.sqrt(_lower(i) * _upper(i))
        last = keys[-1]
        return math.sqrt(_lower(last) * _upper(last))

    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else math.nan

    def cumulative(self, bounds: Sequence[float]) -> list[float]:
        """Counts at or below each bound (Prometheus `le` buckets), bounds ascending."""
        out = [0.0] * len(bounds)
        if not self.bins:
            return out
        idx = [_index(b) for b in bounds]
        for i, w in self.bins.items():
            # A bin belongs to the first bound whose own bin is at or above it.
            for k, bi in enumerate(idx):
                if i <= bi:
                    out[k] += w
                    break
        running = 0.0
        for k in range(len(out)):
            running += out[k]
            out[k] = running
        return out
