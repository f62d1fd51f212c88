"""Pure: the shipped engines, and the Engine that serves an engine spec."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from infertune import models, runtimes
from infertune.runtimes import metrics, nim, sglang, tgi, trtllm, vllm

# Every engine the operator ships, in the order the docs tables list them. Adding an engine: one module that
# defines its Engine, one models.EngineKind value, this line (docs/engines.md, "Adding an engine").
ALL: tuple[runtimes.Engine, ...] = (
    vllm.ENGINE, sglang.ENGINE, trtllm.ENGINE, nim.ENGINE_1, nim.ENGINE_2_VLLM, nim.ENGINE_2_SGLANG, tgi.ENGINE,
)

# Engines added for the current context only (a test's fake engine, through `registered`); none in production.
_EXTRA: contextvars.ContextVar[tuple[runtimes.Engine, ...]] = contextvars.ContextVar("extra_engines", default=())


def engines() -> tuple[runtimes.Engine, ...]:
    return (*ALL, *_EXTRA.get())


def for_engine(engine: models.EngineSpec) -> runtimes.Engine:
    """The Engine that serves this spec: its kind's variant that selects it (NIM picks by generation and backend)."""
    for e in engines():
        if e.kind == engine.kind and e.selects(engine):
            return e
    raise KeyError(f"no engine serves spec.engine.kind {str(engine.kind)!r}")


def by_variant(variant: str) -> runtimes.Engine:
    for e in engines():
        if e.variant == variant:
            return e
    raise KeyError(f"unknown engine variant {variant!r}; known: {', '.join(e.variant for e in engines())}")


def dialects() -> tuple[metrics.Dialect, ...]:
    """The registered engines' dialects without repeats of the same names (NIM 2.x exports its backend's)."""
    out: list[metrics.Dialect] = []
    for e in engines():
        if all(e.dialect.sources != seen.sources for seen in out):
            out.append(e.dialect)
    return tuple(out)


@contextlib.contextmanager
def registered(*added: runtimes.Engine) -> Iterator[None]:
    """Engines served beside the shipped ones inside the block (for a test's fake engine); variants stay unique."""
    taken = {e.variant for e in engines()}
    for e in added:
        if e.variant in taken:
            raise ValueError(f"engine variant {e.variant!r} is already registered")
        taken.add(e.variant)
    token = _EXTRA.set((*_EXTRA.get(), *added))
    try:
        yield
    finally:
        _EXTRA.reset(token)
