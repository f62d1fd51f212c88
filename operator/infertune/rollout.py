"""Pure: which revisions run how many pods, which pods serve, stand by, drain or go — nothing in flight is cut."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping

from infertune import conditions, models, observation

# A pod that leaves is given this deletion cost so the ReplicaSet removes it, not a serving one
# (controller.kubernetes.io/pod-deletion-cost: lower goes first; the default is 0).
LEAVING_COST = -1000


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    revisions: tuple[observation.RevisionPlan, ...]
    patches: tuple[observation.PodPatch, ...]
    serving: int  # Ready pods serving after the patches
    standby: int  # Ready pods kept warm after the patches
    draining: int  # pods without the serving label that still have requests in flight
    promoted: int
    removed: int
    switched: bool  # the target revision took over from an older one this cycle
    rollout_done: bool
    # The pods that go this cycle with requests still in flight (by the metrics), because their drain timeout
    # ended, and how many each held: those are cut. Pods that go empty cut none.
    cut: tuple[tuple[str, float], ...] = ()


def drained(pod: observation.PodFacts, in_flight: Mapping[str, float | None], *, drain_timeout: float,
            now: float) -> bool:
    """No request left on it (by the metrics), or it has been out of the Service longer than the drain timeout."""
    load = in_flight.get(pod.name)
    if load is not None and load < 0.5:
        return True
    return pod.unserved_since is not None and now - pod.unserved_since >= drain_timeout


def plan(
    *, target: str, knobs: models.Knobs, serving: int, standby: int,
    revisions: tuple[observation.RevisionFacts, ...], pods: tuple[observation.PodFacts, ...],
    in_flight: Mapping[str, float | None], drain_timeout: float, now: datetime.datetime,
    handover: float | None = None, slots: Mapping[str, int] | None = None, carry: int | None = None,
) -> Plan:
    """Move the pods toward `serving` + `standby` Ready pods of the target revision.

    Surge first: the target revision grows to full size while the old one keeps serving; once `serving`
    target pods serve, the old pods leave the Service, finish what they hold, and their Deployment goes.
    With `handover` (old serving pods per target pod when the rollout began) the old pods hand over in
    proportion as target pods serve, so a target that grows mid-rollout does not keep the whole old revision up.
    `slots` (per old revision, the requests its pods run at once) keeps enough old pods serving beside the
    target's that the router's even share of the requests in flight fits an old pod's batch. With `carry`
    (target pods that serve the demand measured now on their own) the old pods leave once that many serve.
    Inside the target revision standby pods are promoted by labelling them, surplus serving pods lose the
    label (standing by, or draining when the pool is full), and a pod is deleted only once drained.
    """
    t = now.timestamp()
    stamp = conditions.timestamp(now)
    live = [p for p in pods if not p.deleting]
    old = [p for p in live if p.revision != target]
    mine = _target(
        [p for p in live if p.revision == target], serving=serving, standby=standby, in_flight=in_flight,
        drain_timeout=drain_timeout, t=t, stamp=stamp)
    patches, promoted = list(mine.patches), mine.promoted
    serving_pods, keep, leaving, waiting = mine.serving, mine.keep, mine.leaving, mine.waiting

    # Old revisions serve until the target serves at full size; then their pods drain and go one by one.
    # The rest of a target that grew mid-rollout (a forecast that rose by a pod while the first ones loaded)
    # joins when it is Ready; the old revision need not serve until then.
    switch_at = serving if carry is None else min(serving, max(1, carry))
    if old and len(serving_pods) >= switch_at:
        o = _switch(old, in_flight=in_flight, slots=slots or {}, drain_timeout=drain_timeout, t=t, stamp=stamp)
    elif old:
        want_old = _old_wanted(serving - len(serving_pods), handover=handover, slots=slots, in_flight=in_flight,
                               serving_pods=serving_pods, old=old,
                               old_serving=[p for p in old if p.ready and p.serving])
        o = _mid(old, want_old, handover=handover, pool=max(0, standby - len(keep)), in_flight=in_flight,
                 drain_timeout=drain_timeout, t=t, stamp=stamp)
    else:
        o = _Old((), 0, switched=False, serving=[], keep={}, gone=[])
    patches += o.patches
    promoted += o.promoted
    switched, old_serving, keep_old, gone_old = o.switched, o.serving, o.keep, o.gone
    for p in gone_old:
        if p.deletion_cost != LEAVING_COST:
            patches.append(observation.PodPatch(name=p.name, deletion_cost=LEAVING_COST))
    # The ReplicaSet removes not-Ready pods first, then the lowest deletion cost: asking for serving +
    # standby + still-draining pods removes exactly the starting surplus and the drained leavers.
    plans = [observation.RevisionPlan(revision=target, knobs=knobs, replicas=serving + standby + len(waiting))]
    for r in revisions:
        if r.revision != target and r.revision in keep_old and r.knobs is not None:
            plans.append(observation.RevisionPlan(revision=r.revision, knobs=r.knobs, replicas=keep_old[r.revision]))
    cut = tuple((p.name, n) for p in (*leaving, *gone_old) if (n := in_flight.get(p.name) or 0.0) >= 0.5)
    return Plan(
        revisions=tuple(plans), patches=tuple(patches),
        serving=len(serving_pods) + len(old_serving), standby=len(keep),
        draining=len(waiting), promoted=promoted, removed=len(leaving) + len(gone_old), switched=switched,
        rollout_done=not keep_old, cut=cut,
    )


def _promote(serving: list[observation.PodFacts], spare: list[observation.PodFacts], want: int,
             patches: list[observation.PodPatch]) -> int:
    """Label spare pods (in order) serving until `want` serve; both lists and `patches` are updated in place."""
    promoted = 0
    while len(serving) < want and spare:
        p = spare.pop(0)
        patches.append(observation.PodPatch(name=p.name, serving=True))
        serving.append(p)
        promoted += 1
    return promoted


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """The target revision's pods sorted out: who serves, who stands by, who leaves (drained) or waits to."""

    patches: tuple[observation.PodPatch, ...]
    promoted: int
    serving: list[observation.PodFacts]
    keep: list[observation.PodFacts]
    leaving: list[observation.PodFacts]
    waiting: list[observation.PodFacts]


def _target(mine: list[observation.PodFacts], *, serving: int, standby: int, in_flight: Mapping[str, float | None],
            drain_timeout: float, t: float, stamp: str) -> _Target:
    """Inside the target revision standby pods are promoted by labelling them, surplus serving pods lose the
    label (standing by, or draining when the pool is full), and a pod is deleted only once drained."""
    patches: list[observation.PodPatch] = []
    ready = sorted((p for p in mine if p.ready), key=lambda p: (p.ready_since or p.created, p.name))
    serving_pods = [p for p in ready if p.serving]
    # The pod out of the Service the shortest time is promoted first, and kept as standby first.
    spare = sorted((p for p in ready if not p.serving), key=lambda p: -(p.unserved_since or 0.0))
    promoted = _promote(serving_pods, spare, serving, patches)
    # Demote: the newest serving pods leave first (they hold the fewest long-running requests).
    demoted: set[str] = set()
    while len(serving_pods) > serving:
        p = serving_pods.pop()
        patches.append(observation.PodPatch(name=p.name, serving=False, unserved_since=stamp))
        demoted.add(p.name)
        spare.insert(0, p)
    keep, surplus = spare[:standby], spare[standby:]
    for p in [*serving_pods, *keep]:
        if p.deletion_cost < 0:
            # Chosen to leave earlier, needed again now: the ReplicaSet must not pick it.
            patches.append(observation.PodPatch(name=p.name, deletion_cost=0))
    leaving = [p for p in surplus
               if p.name not in demoted and drained(p, in_flight, drain_timeout=drain_timeout, now=t)]
    waiting = [p for p in surplus if p not in leaving]
    for p in leaving:
        if p.deletion_cost != LEAVING_COST:
            patches.append(observation.PodPatch(name=p.name, deletion_cost=LEAVING_COST))
    return _Target(patches=tuple(patches), promoted=promoted, serving=serving_pods, keep=keep, leaving=leaving,
                   waiting=waiting)


def _old_wanted(missing: int, *, handover: float | None, slots: Mapping[str, int] | None,
                in_flight: Mapping[str, float | None], serving_pods: list[observation.PodFacts],
                old: list[observation.PodFacts], old_serving: list[observation.PodFacts]) -> int:
    """Old pods that serve mid-rollout: what the target's cannot yet, the target pods missing, in old pods.

    6 old pods were sized like 6 target ones (1 each); with 5 of 6 target pods serving, 1 old pod serves
    (Qwen 72B kept all 6 for 4 minutes while a 6th target pod loaded, 11 serving where 6 do); 13 at 1,024 were
    sized like 8 at 13/fp8 (1.6 each): with 7 of 8 serving, 2 old ones do. Without a handover ratio, old pods
    fill up to `serving`."""
    want_old = missing if handover is None else math.ceil(missing * handover - 1e-9)
    if handover is not None and slots:
        # A least-outstanding-requests router evens out requests per pod, not free batch slots: 55 in flight
        # over 6 target pods (13 slots) and 3 old ones at 1,024/default (whose KV cache runs 5) gave the old
        # pods 6 each and they queued (TTFT p95 2.5 s for a minute). 55 / 5 = 11 pods keep every share within
        # an old pod's batch: 5 old ones beside the 6.
        held = sum(in_flight.get(p.name) or 0.0 for p in (*serving_pods, *old_serving))
        fits = min((slots[p.revision] for p in old if p.ready and p.revision in slots), default=0)
        if fits >= 1:
            want_old = max(want_old, math.ceil(held / fits - 1e-9) - len(serving_pods))
    return want_old


@dataclasses.dataclass(frozen=True, slots=True)
class _Old:
    """The old revisions' pods sorted out: label patches, promotions, and what each old revision keeps."""

    patches: tuple[observation.PodPatch, ...]
    promoted: int
    switched: bool  # the target took over this cycle: old pods left the Service
    serving: list[observation.PodFacts]
    keep: dict[str, int]  # pods each old revision still needs
    gone: list[observation.PodFacts]


def _switch(old: list[observation.PodFacts], *, in_flight: Mapping[str, float | None], slots: Mapping[str, int],
            drain_timeout: float, t: float, stamp: str) -> _Old:
    """The target serves at full size: every old pod leaves the Service, drains, and goes; one that holds a queue
    (more in flight than its revision runs at once, `slots`) leaves once it has worked that queue off.

    Out of the Service a pod gets the drain timeout for what it holds, and a queue is requests that have not even
    started. 405B on 8 x H200 after a knob change in overload: the old pods held about 1,000 each, queued for
    minutes, when the new revision took over, and 963 requests were cut when the drain timeout ended. Serving,
    a pod with a queue takes few new requests from a least-request router while it works the queue off; kept so
    until it had, none was cut (1 GPU-hour more, 46.6 against 45.5)."""
    patches: list[observation.PodPatch] = []
    keep: dict[str, int] = {}
    gone: list[observation.PodFacts] = []
    switched = False
    held: list[observation.PodFacts] = []
    for p in old:
        if p.serving and p.ready and (in_flight.get(p.name) or 0.0) > slots.get(p.revision, math.inf):
            held.append(p)
            keep[p.revision] = keep.get(p.revision, 0) + 1
            continue
        if p.serving:
            patches.append(observation.PodPatch(name=p.name, serving=False, unserved_since=stamp))
            switched = True
        if p.ready and (p.serving or not drained(p, in_flight, drain_timeout=drain_timeout, now=t)):
            keep[p.revision] = keep.get(p.revision, 0) + 1
        elif p.ready:
            gone.append(p)
    return _Old(tuple(patches), 0, switched=switched, serving=held, keep=keep, gone=gone)


def _mid(old: list[observation.PodFacts], want_old: int, *, handover: float | None, pool: int,
         in_flight: Mapping[str, float | None], drain_timeout: float, t: float, stamp: str) -> _Old:
    """Mid-rollout: `want_old` old pods serve (the longest Ready first), old standby pods make up a shortfall,
    and the old pods neither serving nor needed for the `pool` of standby the target lacks leave once drained.

    The first rollout of a 70B chat service left 12 idle 1,024-batch pods up for 5 minutes while the new
    revision grew from 8 to 10 pods (1 pod-hour of GPUs for nothing). An old revision with pods still starting
    keeps all of its pods: those may serve before the target's do, and the ReplicaSet would remove them before
    any drained pod."""
    patches: list[observation.PodPatch] = []
    old_serving = [p for p in old if p.ready and p.serving]
    if handover is not None and len(old_serving) > want_old:
        old_serving.sort(key=lambda p: (p.ready_since or p.created, p.name))
        for p in old_serving[want_old:]:
            patches.append(observation.PodPatch(name=p.name, serving=False, unserved_since=stamp))
        old_serving = old_serving[:want_old]
    old_spare = sorted((p for p in old if p.ready and not p.serving), key=lambda p: -(p.unserved_since or 0.0))
    promoted = _promote(old_serving, old_spare, want_old, patches)
    starting_revs = {p.revision for p in old if not p.ready}
    gone = [p for p in old_spare[pool:]
            if p.revision not in starting_revs and drained(p, in_flight, drain_timeout=drain_timeout, now=t)]
    keep: dict[str, int] = {}
    for p in old:
        keep[p.revision] = keep.get(p.revision, 0) + (0 if p in gone else 1)
    return _Old(tuple(patches), promoted, switched=False, serving=old_serving,
                keep={r: n for r, n in keep.items() if n > 0}, gone=gone)
