"""Test: the shell's memory keeper: two malloc arenas, then freed heap handed back every interval."""

from __future__ import annotations

import asyncio

import pytest

from infertune import main


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", (param, value)))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", (pad,)))
        return 1


def test_arenas_are_capped_once_and_the_heap_trimmed_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLibc()
    monkeypatch.setattr(main, "_libc", lambda: fake)

    async def a_while() -> None:
        task = asyncio.create_task(main.keep_memory_small(every=0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(a_while())
    assert fake.calls[0] == ("mallopt", (main.M_ARENA_MAX, 2))
    trims = [c for c in fake.calls[1:] if c[0] == "malloc_trim"]
    assert len(trims) >= 3 and len(trims) == len(fake.calls) - 1


def test_without_glibc_the_keeper_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "_libc", lambda: None)
    asyncio.run(asyncio.wait_for(main.keep_memory_small(every=0.01), timeout=1))


def test_this_machine_s_libc_has_both_calls() -> None:
    lib = main._libc()
    assert lib is not None and lib.malloc_trim(0) in (0, 1)
