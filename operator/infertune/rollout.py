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
    mine = [p for p in live if p.revision == target]
    old = [p for p in live if p.revision != target]
    patches: list[observation.PodPatch] = []

    ready = sorted((p for p in mine if p.ready), key=lambda p: (p.ready_since or p.created, p.name))
    serving_pods = [p for p in ready if p.serving]
    # The pod out of the Service the shortest time is promoted first, and kept as standby first.
    spare = sorted((p for p in ready if not p.serving), key=lambda p: -(p.unserved_since or 0.0))
    promoted = 0
    while len(serving_pods) < serving and spare:
        p = spare.pop(0)
        patches.append(observation.PodPatch(name=p.name, serving=True))
        serving_pods.append(p)
        promoted += 1
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

    # Old revisions serve until the target serves at full size; then their pods drain and go one by one.
    switched = False
    keep_old: dict[str, int] = {}  # pods each old revision still needs
    gone_old: list[observation.PodFacts] = []
    old_serving = [p for p in old if p.ready and p.serving]
    # The rest of a target that grew mid-rollout (a forecast that rose by a pod while the first ones loaded)
    # joins when it is Ready; the old revision need not serve until then.
    switch_at = serving if carry is None else min(serving, max(1, carry))
    if old and len(serving_pods) >= switch_at:
        for p in old:
            if p.serving:
                patches.append(observation.PodPatch(name=p.name, serving=False, unserved_since=stamp))
                switched = True
            if p.ready and (p.serving or not drained(p, in_flight, drain_timeout=drain_timeout, now=t)):
                keep_old[p.revision] = keep_old.get(p.revision, 0) + 1
            elif p.ready:
                gone_old.append(p)
    elif old:
        # Mid-rollout the old pods serve what the target's cannot yet: the target pods missing, in old pods.
        # 6 old pods were sized like 6 target ones (1 each); with 5 of 6 target pods serving, 1 old pod serves
        # (Qwen 72B kept all 6 for 4 minutes while a 6th target pod loaded, 11 serving where 6 do); 13 at
        # 1,024 were sized like 8 at 13/fp8 (1.6 each): with 7 of 8 serving, 2 old ones do. Without a handover
        # ratio, old pods fill up to `serving`.
        missing = serving - len(serving_pods)
        want_old = missing if handover is None else math.ceil(missing * handover - 1e-9)
        if handover is not None and slots:
            # A least-outstanding-requests router evens out requests per pod, not free batch slots: 55 in
            # flight over 6 target pods (13 slots) and 3 old ones at 1,024/default (whose KV cache runs 5) gave
            # the old pods 6 each and they queued (TTFT p95 2.5 s for a minute). 55 / 5 = 11 pods keep every
            # share within an old pod's batch: 5 old ones beside the 6.
            held = sum(in_flight.get(p.name) or 0.0 for p in (*serving_pods, *old_serving))
            fits = min((slots[p.revision] for p in old if p.ready and p.revision in slots), default=0)
            if fits >= 1:
                want_old = max(want_old, math.ceil(held / fits - 1e-9) - len(serving_pods))
        if handover is not None and len(old_serving) > want_old:
            old_serving.sort(key=lambda p: (p.ready_since or p.created, p.name))
            for p in old_serving[want_old:]:
                patches.append(observation.PodPatch(name=p.name, serving=False, unserved_since=stamp))
            old_serving = old_serving[:want_old]
        # ... and the old revision's standby pods are promoted to make up a shortfall.
        old_spare = sorted((p for p in old if p.ready and not p.serving), key=lambda p: -(p.unserved_since or 0.0))
        while len(old_serving) < want_old and old_spare:
            p = old_spare.pop(0)
            patches.append(observation.PodPatch(name=p.name, serving=True))
            old_serving.append(p)
            promoted += 1
        # An old pod neither serving nor needed for the standby pool the target lacks leaves once drained: the
        # first rollout of a 70B chat service left 12 idle 1,024-batch pods up for 5 minutes while the new
        # revision grew from 8 to 10 pods (1 pod-hour of GPUs for nothing). An old revision with pods still
        # starting keeps all of its pods: those may serve before the target's do, and the ReplicaSet would
        # remove them before any drained pod.
        starting_revs = {p.revision for p in old if not p.ready}
        for p in old_spare[max(0, standby - len(keep)):]:
            if p.revision not in starting_revs and drained(p, in_flight, drain_timeout=drain_timeout, now=t):
                gone_old.append(p)
        for p in old:
            keep_old[p.revision] = keep_old.get(p.revision, 0) + (0 if p in gone_old else 1)
        keep_old = {r: n for r, n in keep_old.items() if n > 0}
    for p in gone_old:
        if p.deletion_cost != LEAVING_COST:
            patches.append(observation.PodPatch(name=p.name, deletion_cost=LEAVING_COST))
    # The ReplicaSet removes not-Ready pods first, then the lowest deletion cost: asking for serving +
    # standby + still-draining pods removes exactly the starting surplus and the drained leavers.
    plans = [observation.RevisionPlan(revision=target, knobs=knobs, replicas=serving + standby + len(waiting))]
    for r in revisions:
        if r.revision != target and r.revision in keep_old and r.knobs is not None:
            plans.append(observation.RevisionPlan(revision=r.revision, knobs=r.knobs, replicas=keep_old[r.revision]))
    return Plan(
        revisions=tuple(plans), patches=tuple(patches),
        serving=len(serving_pods) + (0 if switched else len(old_serving)), standby=len(keep),
        draining=len(waiting), promoted=promoted, removed=len(leaving) + len(gone_old), switched=switched,
        rollout_done=not keep_old,
    )
