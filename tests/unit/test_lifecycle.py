"""Test: the knob lifecycle's states, read from the status, and the moves its table allows."""

from __future__ import annotations

import datetime

import pytest

from infertune import lifecycle, models, timestamps

T = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
S = lifecycle.State
E = lifecycle.Event


def config(*, tuned: bool, serving_minutes_ago: float | None = None) -> models.ConfigStatus:
    ago = serving_minutes_ago
    since = None if ago is None else timestamps.text(T - datetime.timedelta(minutes=ago))
    return models.ConfigStatus(revision="abc", max_batch_size=8, kv_cache_dtype=models.KvDtype.DEFAULT, tuned=tuned,
                               since=since, serving_since=since)


def rejection(minutes_ago: float) -> models.Rejection:
    return models.Rejection(max_batch_size=64, kv_cache_dtype=models.KvDtype.FP8, reason="measured ITL 80 ms",
                            time=timestamps.text(T - datetime.timedelta(minutes=minutes_ago)))


@pytest.mark.parametrize(("status", "frozen", "expected"), [
    (models.InferenceDeploymentStatus(), False, S.UNTUNED),
    (models.InferenceDeploymentStatus(config=config(tuned=True, serving_minutes_ago=1)), True, S.FROZEN),
    (models.InferenceDeploymentStatus(config=config(tuned=False), target=config(tuned=True)), False, S.ROLLING),
    (models.InferenceDeploymentStatus(config=config(tuned=False), rejected=(rejection(10),)), False, S.ROLLED_BACK),
    (models.InferenceDeploymentStatus(config=config(tuned=False), rejected=(rejection(61),)), False, S.UNTUNED),
    (models.InferenceDeploymentStatus(config=config(tuned=True, serving_minutes_ago=4.9)), False, S.VERIFYING),
    (models.InferenceDeploymentStatus(config=config(tuned=True, serving_minutes_ago=5)), False, S.VERIFIED),
])
def test_the_state_is_read_from_what_the_last_cycle_wrote(status: models.InferenceDeploymentStatus, frozen: bool,
                                                          expected: lifecycle.State) -> None:
    assert lifecycle.state(status, frozen=frozen, t=T.timestamp()) is expected


def test_once_tuned_only_a_miss_or_a_shift_starts_a_change() -> None:
    assert not any(lifecycle.allows(s, e) for s in (S.FROZEN, S.ROLLING) for e in E)
    assert all(lifecycle.allows(s, e) for s in (S.UNTUNED, S.ROLLED_BACK) for e in E)
    assert [e for e in E if lifecycle.allows(S.VERIFYING, e)] == [E.MISS]
    assert {e for e in E if lifecycle.allows(S.VERIFIED, e)} == {E.MISS, E.SHIFT}
    assert set(lifecycle.MOVES) == set(S)  # every state has its row
