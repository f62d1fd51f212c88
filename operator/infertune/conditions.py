"""Pure: metav1.Condition bookkeeping (transition times move only when the status flips)."""

from __future__ import annotations

import datetime

from infertune import models, timestamps

# The name decide, scaling and rollout write their status stamps with; the format lives with its parser.
timestamp = timestamps.text


def upsert(
    conditions: tuple[models.Condition, ...],
    *,
    type: models.ConditionType | str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
) -> tuple[models.Condition, ...]:
    """Set one condition, keeping lastTransitionTime when the status did not change, and the list sorted."""
    value = "Unknown" if status is None else ("True" if status else "False")
    kind = str(type)
    old = next((c for c in conditions if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == value else timestamp(now)
    new = models.Condition(
        type=kind, status=value, reason=reason, message=message[:32768],
        last_transition_time=since, observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != kind]
    return tuple(sorted([*rest, new], key=lambda c: c.type))


def get(conditions: tuple[models.Condition, ...], type: models.ConditionType | str) -> models.Condition | None:
    return next((c for c in conditions if c.type == str(type)), None)


def is_true(conditions: tuple[models.Condition, ...], type: models.ConditionType | str) -> bool:
    found = get(conditions, type)
    return found is not None and found.status == "True"
