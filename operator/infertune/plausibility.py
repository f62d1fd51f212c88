"""Pure: engine metrics are claims, not facts: each pod's bounded by its hardware and knobs, outvoted by its peers.

Anyone who controls one engine pod (a compromised image, a tenant's sidecar, a bug) controls what it reports.
The parser (prometheus.py) already drops what no engine could send (NaN, negative, absurd); here each claim is
held to what this pod, with its knobs on its GPUs, can physically do, and a claim that only a minority of the
pods makes does not move the fleet.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

from infertune import models, observation, perfmodel, replica

# Outvoting needs peers: with three pods reporting, one liar is a minority; with two it is a tie.
QUORUM = 3
# Relative float rounding allowed on an average before it counts as beyond a bound (see screen).
ROUNDING = 1e-9


@dataclasses.dataclass(frozen=True, slots=True)
class Screened:
    """The pods' metrics with implausible claims removed (garbage) or overruled (outvoted), and why."""

    pods: dict[str, observation.PodMetrics]
    garbage: tuple[str, ...] = ()  # "<pod> <signal>: <why>": held like a dropped value (see decide)
    outvoted: tuple[str, ...] = ()  # claims a majority of peers contradicts: not counted, not garbage


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """What one pod of a revision can do at most."""

    batch: int  # sequences it runs at once
    requests_per_s: float  # requests it can complete per second
    context: int  # the longest prompt it accepts, tokens


def limits(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> Limits:
    """A pod's physical ceilings at these knobs.

    Sequences: the engine's scheduler admits at most its max batch (vLLM --max-num-seqs, SGLang
    --max-running-requests, TensorRT-LLM --max_batch_size), and each running sequence holds at least one KV block
    (16 tokens in vLLM): 8B on one H100 at batch 1,024 runs at most 1,024. Requests: a request needs at least
    one step (prefill and its first token), and no step of a full batch is faster than the hardware floor of
    reading the weights once at peak bandwidth (perfmodel.roofline_step_time): 16 GB at 3.35 TB/s is 4.8 ms,
    so batch 256 completes at most 256 / 4.8 ms = 53k requests/s.
    """
    # The pod template's labels and annotations (dicts: unhashable) play no part in the hardware.
    return _limits(spec.model_copy(update={"template": None}), knobs)


# Revisions seen at once: a few per resource, for each of 1,000 resources.
@functools.lru_cache(maxsize=4096)
def _limits(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> Limits:
    one = replica.of(spec, knobs)
    batch = knobs.max_batch_size
    try:
        blocks = perfmodel.kv_capacity_tokens(one) // one.efficiency.block_size
        batch = max(1, min(batch, blocks))
    except perfmodel.ModelDoesNotFit:
        pass  # validation refuses such a spec; keep the knob's own bound
    floor = perfmodel.roofline_step_time(one, tokens=batch, kv_tokens=0.0)
    # vLLM --max-model-len where the spec sets it, else the model's own context (max_position_embeddings).
    context = spec.model.max_model_len or one.model.max_context_tokens
    return Limits(batch=batch, requests_per_s=batch / floor if floor > 0 else math.inf, context=context)


def _prompt_lengths(name: str, points: tuple[tuple[float, float], ...], cap: Limits,
                    garbage: list[str]) -> dict[str, tuple[tuple[float, float], ...]]:
    """A pod's prompt-length histogram held to its limits: more prompts a second than the pod can complete is
    garbage (dropped and named); a length beyond the longest prompt it accepts is read as that length, since a
    bucket's upper node may pass it honestly (SGLang's fixed buckets run past an 8,192-token context) and a forged
    100-million-token bucket must not make every prefill look endless."""
    rate = sum(w for _, w in points)
    if rate > cap.requests_per_s:
        garbage.append(f"{name} prompt lengths: {rate:g}/s > {cap.requests_per_s:.0f}/s (its batch at the "
                       "hardware's fastest step)")
        return {"prompt_lengths": ()}
    if any(x > cap.context for x, _ in points):
        return {"prompt_lengths": tuple((min(x, float(cap.context)), w) for x, w in points)}
    return {}


def screen(spec: models.InferenceDeploymentSpec, pods: Sequence[observation.PodFacts],
           revisions: Sequence[observation.RevisionFacts], metrics: Mapping[str, observation.PodMetrics], *,
           window: float = 60.0) -> Screened:
    """Each pod's claims within its limits, and queue claims only where a majority of reporting pods queues.

    Beyond a physical limit the value is garbage (dropped, named, and held like NaN: it could hide the load).
    Queueing is outvoted instead: requests queued in one engine are served only by that engine, so more replicas
    do not drain them; while most pods have free slots, one pod's queue is the router's imbalance or a lie, and
    its waiting and in-flight count at its batch (its free slots are real). 1 pod of 4 reporting 10 M waiting
    adds nothing; 3 of 4 queueing is a queue.
    """
    per_revision = {r.revision: limits(spec, r.knobs) for r in revisions if r.knobs is not None}
    revision_of = {p.name: p.revision for p in pods}
    out: dict[str, observation.PodMetrics] = {}
    garbage: list[str] = []
    caps: dict[str, Limits] = {}
    for name, m in metrics.items():
        found = per_revision.get(revision_of.get(name, ""))
        if found is None:
            out[name] = m
            continue
        cap = caps[name] = found
        update: dict[str, float | tuple[tuple[float, float], ...] | None] = {}
        # The running count is an average over the window (avg_over_time), and an average of samples that are all
        # 136 can come back as 136.00000000000006 (float rounding, seen on the twin's full batches): only a claim
        # beyond the batch by more than rounding is garbage. Rounding is ~1e-16 of the value per sample added; a
        # relative 1e-9 is far above it for any window and far below one request.
        if m.running is not None and m.running > cap.batch * (1 + ROUNDING):
            garbage.append(f"{name} running: {m.running:g} > {cap.batch} (the batch its engine admits)")
            update["running"] = None
        # Every request finished in the window generated at least one token in it, unless it was already running
        # when the window began (at most a batch of them): 10,000 req/s beside 100 tokens/s is no load.
        tokens = m.output_tokens_per_s
        beyond = (tokens is not None and m.requests_per_s is not None
                  and m.requests_per_s > tokens + cap.batch / max(window, 1.0))
        if m.requests_per_s is not None and (m.requests_per_s > cap.requests_per_s or beyond):
            why = (f"more than its {tokens:g} output tokens/s" if beyond else
                   f"> {cap.requests_per_s:.0f}/s (its batch at the hardware's fastest step)")
            garbage.append(f"{name} requests: {m.requests_per_s:g}/s {why}")
            update.update(requests_per_s=None, mean_input_tokens=None, mean_output_tokens=None, prompt_lengths=())
        if m.prompt_lengths and "prompt_lengths" not in update:
            update.update(_prompt_lengths(name, m.prompt_lengths, cap, garbage))
        out[name] = m.model_copy(update=update) if update else m
    outvoted: list[str] = []
    voters = [n for n in out if n in caps and (out[n].in_flight is not None or out[n].waiting is not None)]
    if len(voters) >= QUORUM:
        queueing = [n for n in voters if (out[n].waiting or 0.0) > 0 or (out[n].in_flight or 0.0) > caps[n].batch]
        if 2 * len(queueing) < len(voters):
            for n in queueing:
                m = out[n]
                outvoted.append(f"{n} queue: {m.waiting or 0.0:g} waiting, {m.in_flight or 0.0:g} in flight, while "
                                f"{len(voters) - len(queueing)} of {len(voters)} pods queue nothing")
                out[n] = m.model_copy(update={
                    "waiting": 0.0 if m.waiting is not None else None,
                    "in_flight": min(m.in_flight, float(caps[n].batch)) if m.in_flight is not None else None})
    return Screened(pods=out, garbage=tuple(garbage), outvoted=tuple(outvoted))

