"""Pure: the M/M/c queue of batch slots: P(wait), the share queueing past a budget, replicas and SLO rate."""

from __future__ import annotations

import dataclasses
import math

from infertune import perfmodel

# Queueing is given at least this much of the TTFT objective, so a prefill that takes all of it still sizes on a
# finite budget (the decision reports such a prefill as infeasible; see knee.predict).
MIN_WAIT = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class WaitBudget:
    """What the TTFT objective leaves for waiting for a batch slot, at the utilization the replicas run at.

    A request's prefill waits behind other prefills as in M/G/1 (perfmodel.prefill_ttft), and that wait grows
    with the arrival rate per replica: the budget is the objective less the prefill at the rate sized for, not
    at full throughput. 405B FP8 on 8 x H200 at a 256-token budget, 1.9 s of objective, a 0.29 s p95 prefill at a
    load of 0.98: at 60% of the throughput the prefill reads 0.50 s and 1.40 s is left; at full throughput,
    3.0 s, and only the 0.1 s floor.
    """

    objective: float  # seconds: the TTFT objective less its margin
    prefill: float = 0.0  # seconds: a request's own prefill at the percentile, without waiting behind others
    load: float = 0.0  # the prefill's utilization at full throughput (perfmodel.OperatingPoint.prefill_load)
    cv2: float = 0.0  # the prefill service's squared coefficient of variation (perfmodel.prefill_ttft)

    def at(self, utilization: float) -> float:
        """Seconds of queueing allowed with the replicas at `utilization` of their throughput (0-1)."""
        wait = perfmodel.prefill_ttft(self.prefill, self.load * min(max(utilization, 0.0), 1.0), self.cv2)
        return max(MIN_WAIT, self.objective - wait)


Budget = float | WaitBudget


def budget_at(budget: Budget, utilization: float) -> float:
    """Seconds of queueing a budget allows at `utilization` (a plain number allows the same at any load)."""
    return budget.at(utilization) if isinstance(budget, WaitBudget) else budget


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with `servers` slots and `load` Erlangs.

    Exact (Erlang B recursion) up to 400 slots; beyond, the Halfin-Whitt limit, which is accurate there.
    8 slots at 6 Erlangs: P(wait) = 0.32; 80 slots at 60 Erlangs: 0.04 (pooling shortens queues).
    """
    if load <= 0:
        return 0.0
    if load >= servers:
        return 1.0
    if servers <= 400:
        b = 1.0
        for k in range(1, servers + 1):
            b = load * b / (k + load * b)
        rho = load / servers
        return b / (1.0 - rho * (1.0 - b))
    beta = (servers - load) / math.sqrt(load)
    phi = math.exp(-beta * beta / 2.0) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    return 1.0 / (1.0 + beta * cdf / phi) if phi > 0 else 0.0


def replicas_for(rate: float, *, capacity: float, slots: float, wait_budget: Budget, miss: float,
                 limit: int, pooled: bool = True) -> int:
    """Fewest replicas whose pooled batch slots keep P(queueing longer than wait_budget) under `miss`.

    Each replica offers `slots` concurrent requests and serves `capacity` req/s with all of them busy, so
    a request holds a slot for slots / capacity seconds (8 / 1.15 = 7 s for a 70B chat replica). Requests
    wait for a free slot as in M/M/c: P(W > t) = P(wait) x exp(-(c - a) t / hold).
    20 req/s x 7 s = 140 Erlangs: 18 replicas (144 slots) queue too often, 20 (160 slots) wait > 1.2 s for
    under 2.5% of requests. A WaitBudget is read at each count's utilization: more replicas, less load each, a
    shorter wait for prefill, more left for queueing; so the first count that holds is still the fewest.
    """
    if rate <= 0 or capacity <= 0 or slots <= 0:
        return 0
    for n in range(1, limit + 1):
        if late(rate, replicas=n, capacity=capacity, slots=slots, wait_budget=wait_budget, pooled=pooled) <= miss:
            return n
    return limit


def late(rate: float, *, replicas: int, capacity: float, slots: float, wait_budget: Budget,
         pooled: bool = True) -> float:
    """P(a request queues longer than wait_budget) with `replicas` pooled: replicas_for's queue (1.0 when the
    load exceeds the slots). 20 req/s over 20 replicas of 8 slots at 1.15 req/s, 1.2 s budget: under 2.5%.

    Pooled is what a router that sends each request to the replica with the fewest in flight makes of the fleet:
    one queue for all the slots. Not pooled, each replica queues on its own for its own slots, with a share of
    the arrivals drawn at random (a plain Kubernetes Service: kube-proxy picks an endpoint at random, and a
    random split of Poisson arrivals is Poisson at rate / replicas): 20 req/s over 20 replicas of 8 slots is
    then 20 queues of 8 slots at 7 Erlangs each, late for about half the requests instead of 0.15%."""
    if rate <= 0:
        return 0.0
    if capacity <= 0 or slots <= 0 or replicas <= 0:
        return 1.0
    hold = slots / capacity
    budget = budget_at(wait_budget, rate / (replicas * capacity))
    if not pooled:
        rate, replicas = rate / replicas, 1
    load = rate * hold
    servers = max(1, round(replicas * slots))
    if load >= servers:
        return 1.0
    return erlang_c(servers, load) * math.exp(-(servers - load) * max(budget, 0.0) / hold)


def slo_rate(*, capacity: float, slots: float, wait_budget: Budget, miss: float) -> float:
    """The most requests/s one replica takes while P(queueing longer than wait_budget) stays under `miss`.

    The replica's SLO capacity on Poisson arrivals (replicas_for's queue with one replica): a configuration
    whose prefill leaves no TTFT for queueing serves far below its throughput. 8 slots at 5.8 req/s with
    0.1 s to spare: 2.4 req/s; with 1.1 s: 4.3 req/s. Bisection on the rate (late grows with it), to 0.1%.
    """
    if capacity <= 0 or slots <= 0:
        return 0.0
    lo, hi = 0.0, capacity
    while hi - lo > capacity * 1e-3:
        mid = (lo + hi) / 2
        ok = late(mid, replicas=1, capacity=capacity, slots=slots, wait_budget=wait_budget) <= miss
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo
