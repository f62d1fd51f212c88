"""Pure: the knob lifecycle, the states a resource's knobs pass through and the moves allowed from each."""

from __future__ import annotations

import enum

from infertune import models, timestamps

# After a tuned change its revision is measured on its own pods this long before the model may move on from it:
# the calibration it inherited came from the previous knobs' pods (75 running overloaded put the ITL tail at
# 1.48, and the moment 49 took over the model called it "above the knee at 25"; measured, 49 ran at 36 ms inside
# 40 ms). Five minutes is five one-minute metric windows, the span the demand forecast smooths over.
VERIFY_SECONDS = 300.0

# A rejected configuration is reported (Degraded: RolledBack) and the state named after it for an hour.
REJECTION_MEMORY = 3600.0


class State(enum.StrEnum):
    FROZEN = "Frozen"  # no usable metrics, or tuning.mode off: nothing moves
    ROLLING = "RollingOut"  # a target revision surges while the old one serves; its pods' health is watched
    UNTUNED = "Untuned"  # the initial knobs (engine default or tuning.initialMaxBatchSize), or a spec-forced reset
    ROLLED_BACK = "RolledBack"  # a tuned revision was rejected and the knobs before it serve again
    VERIFYING = "Verifying"  # tuned knobs serve, measured on their own pods for VERIFY_SECONDS
    VERIFIED = "Verified"  # tuned knobs measured and kept


class Event(enum.StrEnum):
    PROPOSE = "propose"  # the model finds a better operating point (more goodput, or a batch above the knee)
    MISS = "miss"  # a measured ITL miss the knobs cause, or a KV cache full or preempting
    SHIFT = "shift"  # the request shape moved since the knobs were planned (decide.SHIFT)


# Which events may start a knob change (a new revision: State.ROLLING) in each state. A rollout's end, a kept
# verification and a rollback are the checks' own transitions (decide._tune), not choices the planner makes.
# Once tuned, the model's own drift is no reason to restart engines: only a miss or a shift is (one change per
# workload shift); while a change is verified only a miss is.
MOVES: dict[State, frozenset[Event]] = {
    State.FROZEN: frozenset(),
    State.ROLLING: frozenset(),
    State.UNTUNED: frozenset({Event.PROPOSE, Event.MISS, Event.SHIFT}),
    State.ROLLED_BACK: frozenset({Event.PROPOSE, Event.MISS, Event.SHIFT}),
    State.VERIFYING: frozenset({Event.MISS}),
    State.VERIFIED: frozenset({Event.MISS, Event.SHIFT}),
}


def verifiable(config: models.ConfigStatus, t: float) -> bool:
    """Measured long enough on its own pods: VERIFY_SECONDS since its revision took over serving. A rollout that
    took 11 minutes (the demand grew while the new pods loaded) is not judged on the old revision's last ones."""
    since = timestamps.seconds(config.serving_since or config.since)
    return since is not None and t - since >= VERIFY_SECONDS


def state(status: models.InferenceDeploymentStatus, *, frozen: bool, t: float) -> State:
    """Where the knobs are: from the status the last cycle wrote, and whether this cycle's picture is usable."""
    if frozen:
        return State.FROZEN
    if status.target is not None:
        return State.ROLLING
    config = status.config
    if config is None or not config.tuned:
        recent = any(t - (timestamps.seconds(r.time) or 0.0) < REJECTION_MEMORY for r in status.rejected)
        return State.ROLLED_BACK if recent else State.UNTUNED
    return State.VERIFIED if verifiable(config, t) else State.VERIFYING


def allows(now: State, event: Event) -> bool:
    """Whether `event` may start a knob change in state `now` (MOVES)."""
    return event in MOVES[now]
