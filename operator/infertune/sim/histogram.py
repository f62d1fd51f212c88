"""Twin: a fine log-bucketed histogram that takes weighted and arithmetic-series observations in bulk."""

from __future__ import annotations

import bisect
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


class Buckets:
    """Exact counts at an exporter's fixed upper bounds, as a Prometheus histogram keeps them: a value goes
    into the first bucket whose bound is at or above it (`le`), 0.05 into le="0.05", 0.0501 into the next."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)  # ascending, finite
        self.counts = [0.0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is above every bound
        self.count = 0.0
        self.sum = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.count += weight
        self.sum += value * weight

    def observe_series(self, first: float, step: float, n: int, weight: float = 1.0) -> None:
        """Observe first + step x j for j = 0..n-1, each `weight` times, in O(log bounds + bounds spanned).

        200 decode steps from 24.0 ms growing by 0.01 ms each (to 25.99 ms) against bounds 25 and 50 ms:
        steps 0..100 (24.0..25.0 ms) go to le="0.025" and the other 99 to le="0.05".
        """
        if n <= 0:
            return
        self.count += n * weight
        self.sum += (n * first + step * n * (n - 1) / 2.0) * weight
        last = first + step * (n - 1)
        if step < 0:  # values fall: count the mirrored series from the other end
            first, last, step = last, first, -step
        bounds, counts = self.bounds, self.counts
        i0, i1 = bisect.bisect_left(bounds, first), bisect.bisect_left(bounds, last)
        done = 0
        for i in range(i0, i1):
            # Values at or below this bound: j <= (bound - first) / step, corrected for rounding either way.
            upto = min(n, max(done, math.floor((bounds[i] - first) / step) + 1))
            while upto < n and first + step * upto <= bounds[i]:
                upto += 1
            while upto > done and first + step * (upto - 1) > bounds[i]:
                upto -= 1
            counts[i] += (upto - done) * weight
            done = upto
        counts[i1] += (n - done) * weight

    def snapshot(self) -> tuple[tuple[float, ...], float]:
        """(cumulative count at each bound and at +Inf, sum): what one scrape of the histogram reads."""
        out, running = [], 0.0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out), self.sum


class LogHistogram:
    """Counts (possibly weighted) of non-negative values in 1%-wide log bins, with an exact sum and count.

    `exact`, when set, receives every observation too: the exporter's own buckets, kept without the fine bins'
    1% rounding (the twin's Prometheus path reads those).
    """

    __slots__ = ("bins", "count", "exact", "sum")

    def __init__(self) -> None:
        self.bins: dict[int, float] = {}
        self.count = 0.0
        self.sum = 0.0
        self.exact: Buckets | None = None

    def observe(self, value: float, weight: float = 1.0) -> None:
        exact = self.exact
        if exact is not None:
            # Buckets.observe, inlined: an engine observes ten histograms per finished request.
            exact.counts[bisect.bisect_left(exact.bounds, value)] += weight
            exact.count += weight
            exact.sum += value * weight
        # _index, inlined (the same expression, so the same bin).
        i = _UNDER if value <= MIN else int(math.log(value / MIN) / _LOG_RATIO)
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
        if self.exact is not None:
            self.exact.observe_series(first, step, n, weight)
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
