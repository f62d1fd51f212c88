"""Test: valid InferenceDeployment specs and a helper to derive broken ones."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"},
    "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"},
    "accelerator": {"type": "l40s", "count": 1, "hourlyCost": 1.1},
    "slo": {"ttft": "1500ms", "itl": "40ms"},
    "tuning": {"maxBatchSize": {"min": 8, "max": 512}},
    "scaling": {"minReplicas": 1, "maxReplicas": 4, "standby": {"min": 0, "max": 1}},
}

DELETE = object()


def spec(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes: spec(**{"slo.ttft": "2s", "engine.port": DELETE})."""
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return out


def resource(name: str = "llm", namespace: str = "ns1", **changes: Any) -> dict[str, Any]:
    return {
        "apiVersion": "infertune.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec(**changes),
    }
