"""Pure: the one integer bisection the knee and the twin's yardstick searches share."""

from __future__ import annotations

import bisect
from collections.abc import Callable


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), assuming ok is monotone (true, then false); low if none.

    The ends first (one probe each when every n or none holds), then the standard library's bisection between
    them, over the values from high - 1 down to low + 1 (ok reads False, False, ..., True there): its midpoints
    are (lo + hi) // 2 of the known-good and known-bad ends, so a check that is not quite monotone (the twin's
    closed loop) is probed where it always was. For 1..256 with ok(n) = n <= 40: 128, 64, 32, 48, 40, 44, 42, 41.
    """
    if not ok(low):
        return low
    if ok(high):
        return high
    return high - 1 - bisect.bisect_left(range(high - 1, low, -1), True, key=ok)
