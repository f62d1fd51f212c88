"""Test: the shell bounds how many reconciles run at once, whatever the number of resources asking."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from infertune import handlers, models


def test_at_most_32_reconciles_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    op = handlers.Operator(config=models.OperatorConfig(), cluster=None)  # type: ignore[arg-type]
    running, peak, done = 0, 0, 0

    async def slow(body: Any, logger: Any, cached: Any) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1

    monkeypatch.setattr(op, "_reconcile", slow)

    async def many() -> None:
        bodies = [{"metadata": {"uid": f"u{i}", "name": f"r{i}", "namespace": "ns"}} for i in range(200)]
        await asyncio.gather(*(op.reconcile(b, None) for b in bodies))  # type: ignore[arg-type]

    asyncio.run(many())
    assert done == 200 and peak == handlers.CONCURRENT_RECONCILES == 32
