"""Pure: the signals the operator reads and how a dialect (an engine's metric names, newest first) maps them."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Signal(enum.StrEnum):
    """What the operator reads, independent of any engine's names."""

    TTFT = "ttft"  # histogram, seconds
    ITL = "itl"  # histogram, seconds between output tokens (one observation per token)
    TPOT = "tpot"  # histogram, one observation per request: its mean time per output token (the SLO's ITL)
    E2E = "e2e"  # histogram, seconds; its _count rate is the request rate
    QUEUE = "queue"  # histogram, seconds
    RUNNING = "running"  # gauge, requests in the batch
    WAITING = "waiting"  # gauge, requests queued
    KV_USAGE = "kv_usage"  # gauge, 0-1
    PREEMPTIONS = "preemptions"  # counter (or a gauge of paused requests)
    PROMPT_TOKENS = "prompt_tokens"  # counter, tokens
    GENERATION_TOKENS = "generation_tokens"  # counter, tokens
    # Per-request length histograms (read through their _sum and _count): the request shape. The counters above
    # count tokens as they are processed, so over a window that a burst starts or ends in they do not divide by
    # the finished requests (a decode-heavy burst of 200/1,500-token requests read 7,300/13,700 as it began and
    # 0 prompt tokens as it ended).
    PROMPT_LENGTH = "prompt_length"
    GENERATION_LENGTH = "generation_length"
    PREFIX_QUERIES = "prefix_queries"  # counter, tokens looked up in the prefix cache
    PREFIX_HITS = "prefix_hits"  # counter, tokens found
    PREFIX_HIT_RATE = "prefix_hit_rate"  # gauge, 0-1 (engines without the counters)
    DRAM_ACTIVE = "dram_active"  # DCGM gauge, 0-1


class Kind(enum.StrEnum):
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    COUNTER = "counter"
    # A histogram read only through its _sum (token-length histograms of TGI): a counter of the sum.
    HISTOGRAM_SUM = "histogram_sum"


KINDS: Mapping[Signal, Kind] = {
    Signal.TTFT: Kind.HISTOGRAM, Signal.ITL: Kind.HISTOGRAM, Signal.TPOT: Kind.HISTOGRAM,
    Signal.E2E: Kind.HISTOGRAM, Signal.QUEUE: Kind.HISTOGRAM,
    Signal.RUNNING: Kind.GAUGE, Signal.WAITING: Kind.GAUGE, Signal.KV_USAGE: Kind.GAUGE,
    Signal.PREEMPTIONS: Kind.COUNTER, Signal.PROMPT_TOKENS: Kind.COUNTER, Signal.GENERATION_TOKENS: Kind.COUNTER,
    Signal.PROMPT_LENGTH: Kind.HISTOGRAM, Signal.GENERATION_LENGTH: Kind.HISTOGRAM,
    Signal.PREFIX_QUERIES: Kind.COUNTER, Signal.PREFIX_HITS: Kind.COUNTER, Signal.PREFIX_HIT_RATE: Kind.GAUGE,
    Signal.DRAM_ACTIVE: Kind.GAUGE,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """Where a signal comes from in one dialect: metric names in order of preference, and its kind there."""

    names: tuple[str, ...]
    kind: Kind | None = None  # None: the signal's usual kind
    scale: float = 1.0  # multiply to get the signal's unit (percent -> 0-1: 0.01)


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    path: str
    sources: Mapping[Signal, Source]

    def lacks(self, signal: Signal) -> bool:
        return signal not in self.sources


def source(*names: str, kind: Kind | None = None, scale: float = 1.0) -> Source:
    return Source(names=names, kind=kind, scale=scale)


# DCGM exporter in Kubernetes mode labels GPU series with the pod and namespace they serve.
DCGM = Dialect("dcgm", "/metrics", {Signal.DRAM_ACTIVE: source("DCGM_FI_PROF_DRAM_ACTIVE")})

# Each engine's dialect lives in its own module (runtimes/vllm.py, ...) as Engine.dialect; the registry lists
# them (registry.dialects()).
