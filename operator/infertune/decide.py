"""Pure: decide(observation, now) -> the revisions to run, pod patches, the status and events."""

from __future__ import annotations

import datetime

from infertune import catalog, conditions, models, observation, render
from infertune.runtimes import registry

MAX_DECISIONS = 20


def initial_knobs(spec: models.InferenceDeploymentSpec) -> tuple[models.Knobs, str]:
    """The first revision's knobs and why: the spec's initial size, else the engine default within bounds."""
    bounds = spec.tuning.max_batch_size
    if spec.tuning.initial_max_batch_size is not None:
        batch = spec.tuning.initial_max_batch_size
        why = f"maxBatchSize {batch} from tuning.initialMaxBatchSize"
    else:
        runtime = registry.for_engine(spec.engine)
        default = runtime.default_max_batch_size(catalog.resolve_gpu(spec.accelerator))
        batch = min(max(default, bounds.min), bounds.max)
        why = f"maxBatchSize {batch}: the {runtime.variant} default ({default})"
        if batch != default:
            why += f" clamped to tuning.maxBatchSize {bounds.min}..{bounds.max}"
    kv = models.KvDtype.FP8 if spec.tuning.kv_cache_dtype is models.KvCachePolicy.FP8 else models.KvDtype.DEFAULT
    return models.Knobs(max_batch_size=batch, kv_cache_dtype=kv), f"{why}; KV cache {kv.value}"


def allowed(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> bool:
    """Whether knobs chosen earlier still satisfy the spec (bounds and KV policy may have changed)."""
    bounds = spec.tuning.max_batch_size
    if not bounds.min <= knobs.max_batch_size <= bounds.max:
        return False
    policy = spec.tuning.kv_cache_dtype
    if policy is models.KvCachePolicy.FP8:
        return knobs.kv_cache_dtype is models.KvDtype.FP8
    if policy is models.KvCachePolicy.DEFAULT:
        return knobs.kv_cache_dtype is models.KvDtype.DEFAULT
    return True


def _previous_knobs(status: models.InferenceDeploymentStatus) -> models.Knobs | None:
    chosen = status.target or status.config
    if chosen is None:
        return None
    return models.Knobs(max_batch_size=chosen.max_batch_size, kv_cache_dtype=chosen.kv_cache_dtype)


def target_knobs(obs: observation.Observation) -> tuple[models.Knobs, str]:
    """Keep the knobs in force while the spec allows them; otherwise start from the initial ones."""
    previous = _previous_knobs(obs.status)
    if previous is not None and allowed(obs.spec, previous):
        reason = (obs.status.target or obs.status.config or models.ConfigStatus(
            revision="", max_batch_size=1, kv_cache_dtype=models.KvDtype.DEFAULT)).reason
        return previous, reason
    knobs, why = initial_knobs(obs.spec)
    if previous is not None:
        why = f"the spec no longer allows maxBatchSize {previous.max_batch_size}/KV {previous.kv_cache_dtype.value}; {why}"
    return knobs, why


def decide(obs: observation.Observation, *, now: datetime.datetime) -> observation.Decision:
    """One reconcile: which revisions run with how many pods, and what the status says about it."""
    spec = obs.spec
    knobs, why = target_knobs(obs)
    target_rev = render.revision(spec, knobs)
    desired = spec.scaling.min_replicas
    total = desired + spec.scaling.standby.min

    target = next((r for r in obs.revisions if r.revision == target_rev), None)
    others = [r for r in obs.revisions if r.revision != target_rev]
    target_ready = target.ready_replicas if target is not None else 0
    # Surge first: the new revision must be Ready at full size before the old ones go, so the
    # Service always has endpoints and nothing in flight is cut off by the switch.
    rollout_done = not others or target_ready >= total
    plans = [observation.RevisionPlan(revision=target_rev, knobs=knobs, replicas=total)]
    if not rollout_done:
        plans += [
            observation.RevisionPlan(revision=r.revision, knobs=r.knobs, replicas=r.replicas)
            for r in others if r.knobs is not None
        ]

    target_config = models.ConfigStatus(
        revision=target_rev, max_batch_size=knobs.max_batch_size, kv_cache_dtype=knobs.kv_cache_dtype, reason=why
    )
    events: list[observation.Event] = []
    records = list(obs.status.decisions)
    previous_config = obs.status.config
    config: models.ConfigStatus | None
    in_flight: models.ConfigStatus | None
    if rollout_done:
        config, in_flight = target_config, None
        if previous_config is None or previous_config.revision != target_rev:
            events.append(observation.Event(type="Normal", reason="RevisionServing", message=f"revision {target_rev} serves: {why}"))
    else:
        config, in_flight = previous_config, target_config
    known = obs.status.target or obs.status.config
    if known is None or known.revision != target_rev:
        records.append(models.DecisionRecord(
            time=conditions.timestamp(now), kind="revision",
            action=f"roll out revision {target_rev} (maxBatchSize {knobs.max_batch_size}, KV {knobs.kv_cache_dtype.value})",
            reason=why, applied=True,
        ))
        events.append(observation.Event(type="Normal", reason="RevisionCreated", message=f"revision {target_rev}: {why}"))

    live = [p for p in obs.pods if not p.deleting]
    serving = sum(1 for p in live if p.ready and p.serving)
    ready = sum(1 for p in live if p.ready)
    replicas = models.ReplicaStatus(
        desired=desired, serving=serving, standby=ready - serving, ready=ready, display=f"{serving}/{desired}"
    )

    gen = obs.generation
    conds = conditions.upsert(
        obs.status.conditions, type=models.ConditionType.SPEC_VALID, status=True, reason="Valid",
        message="the spec passed validation", generation=gen, now=now,
    )
    if serving >= desired:
        conds = conditions.upsert(
            conds, type=models.ConditionType.READY, status=True, reason="Serving",
            message=f"{serving} of {desired} replicas serving", generation=gen, now=now,
        )
    else:
        starting = sum(1 for p in live if not p.ready)
        conds = conditions.upsert(
            conds, type=models.ConditionType.READY, status=False, reason="ReplicasNotReady",
            message=f"{serving} of {desired} replicas serving; {starting} pod(s) starting (model loading)",
            generation=gen, now=now,
        )
    if not rollout_done:
        conds = conditions.upsert(
            conds, type=models.ConditionType.PROGRESSING, status=True, reason="RollingOut",
            message=f"revision {target_rev}: {target_ready} of {total} pods ready; the old revision serves until then",
            generation=gen, now=now,
        )
    elif ready < total:
        conds = conditions.upsert(
            conds, type=models.ConditionType.PROGRESSING, status=True, reason="PodsStarting",
            message=f"{ready} of {total} pods ready", generation=gen, now=now,
        )
    else:
        conds = conditions.upsert(
            conds, type=models.ConditionType.PROGRESSING, status=False, reason="Stable",
            message=f"revision {target_rev} at {total} pods", generation=gen, now=now,
        )

    status = obs.status.model_copy(update={
        "observed_generation": gen,
        "replicas": replicas,
        "config": config,
        "target": in_flight,
        "decisions": tuple(records[-MAX_DECISIONS:]),
        "conditions": conds,
    })
    return observation.Decision(revisions=tuple(plans), status=status, events=tuple(events))


def invalid_status(
    status: models.InferenceDeploymentStatus, *, message: str, generation: int, now: datetime.datetime
) -> models.InferenceDeploymentStatus:
    """SpecValid=False with the problems; everything else is left as it was (nothing is changed)."""
    conds = conditions.upsert(
        status.conditions, type=models.ConditionType.SPEC_VALID, status=False, reason="InvalidSpec",
        message=message, generation=generation, now=now,
    )
    return status.model_copy(update={"conditions": conds})
