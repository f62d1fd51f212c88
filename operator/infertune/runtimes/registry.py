"""Pure: the runtime for an engine spec."""

from __future__ import annotations

from infertune import models, runtimes
from infertune.runtimes import nim, sglang, tgi, trtllm, vllm

ALL: tuple[runtimes.Runtime, ...] = (
    vllm.RUNTIME, sglang.RUNTIME, trtllm.RUNTIME, nim.RUNTIME_1, nim.RUNTIME_2_VLLM, nim.RUNTIME_2_SGLANG,
    tgi.RUNTIME,
)


def for_engine(engine: models.EngineSpec) -> runtimes.Runtime:
    """The launch rules for this engine (NIM picks by generation and backend)."""
    match engine.kind:
        case models.EngineKind.VLLM:
            return vllm.RUNTIME
        case models.EngineKind.SGLANG:
            return sglang.RUNTIME
        case models.EngineKind.TRTLLM:
            return trtllm.RUNTIME
        case models.EngineKind.TGI:
            return tgi.RUNTIME
        case models.EngineKind.NIM:
            settings = engine.nim or models.NimSpec()
            if settings.generation == 1:
                return nim.RUNTIME_1
            return nim.RUNTIME_2_SGLANG if settings.backend == "sglang" else nim.RUNTIME_2_VLLM
