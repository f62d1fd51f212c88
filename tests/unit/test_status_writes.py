"""Test: how often the shell writes status — decisions at once, measurement-only drift throttled by fleet size."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from infertune import handlers, models


class Recorder:
    """A cluster that only records status patches (the only call _write_status makes)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append((name, patch))


def status(rate: float, replicas: int = 1) -> models.InferenceDeploymentStatus:
    return models.InferenceDeploymentStatus(replicas=models.ReplicaStatus(desired=replicas),
                                            demand=models.DemandStatus(rate=rate))


def test_measurement_refresh_is_30_s_up_to_300_resources_then_stretches() -> None:
    assert handlers.measurement_refresh(1) == 30.0
    assert handlers.measurement_refresh(300) == 30.0
    assert handlers.measurement_refresh(1000) == 100.0


@pytest.mark.parametrize("resources, quiet_for", [(1, 30.0), (1000, 100.0)])
def test_measurement_drift_waits_for_the_refresh_and_a_decision_goes_out_at_once(
        monkeypatch: pytest.MonkeyPatch, resources: int, quiet_for: float) -> None:
    clock = [1000.0]
    monkeypatch.setattr(handlers.time, "monotonic", lambda: clock[0])
    cluster = Recorder()
    op = handlers.Operator(config=models.OperatorConfig(), cluster=cluster)  # type: ignore[arg-type]
    for i in range(1, resources):  # the other resources this process reconciles
        op.latest[f"other-{i}"] = {}

    async def cycle(s: models.InferenceDeploymentStatus) -> None:
        await op._write_status("ns", "llm", "uid-1", {}, s)

    asyncio.run(cycle(status(1.0)))
    assert len(cluster.patches) == 1  # the first status goes out
    clock[0] += quiet_for - 1
    asyncio.run(cycle(status(1.5)))
    assert len(cluster.patches) == 1  # only the smoothed rate moved: held back
    asyncio.run(cycle(status(1.5, replicas=2)))
    assert len(cluster.patches) == 2
    patch = cluster.patches[-1][1]  # the decision, and the drift held back with it
    assert set(patch) == {"replicas", "demand"} and patch["replicas"]["desired"] == 2 and patch["demand"]["rate"] == 1.5
    clock[0] += quiet_for - 1
    asyncio.run(cycle(status(2.0, replicas=2)))
    assert len(cluster.patches) == 2
    clock[0] += 1
    asyncio.run(cycle(status(2.0, replicas=2)))
    assert len(cluster.patches) == 3 and set(cluster.patches[-1][1]) == {"demand"}
    assert cluster.patches[-1][1]["demand"]["rate"] == 2.0
