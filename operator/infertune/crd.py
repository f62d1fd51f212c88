"""Pure: the InferenceDeployment CRD, generated from the pydantic models (structural schema, CEL, columns)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from infertune import models

# Cross-field rules the API server enforces before the operator ever sees the object. Each is
# (path of the object it sits on, rule, message); pydantic checks the same things in the operator.
CEL_RULES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("spec", "model"), "has(self.architecture) != has(self.custom)",
     "set exactly one of model.architecture (a catalog key) and model.custom (the numbers)"),
    (("spec", "accelerator"), "has(self.type) != has(self.custom)",
     "set exactly one of accelerator.type (a catalog key) and accelerator.custom (the numbers)"),
    (("spec", "engine"), "!has(self.nim) || self.kind == 'nim'", "engine.nim is only valid with engine.kind nim"),
    (("spec", "slo"), "duration(self.ttft) > duration('0s')", "slo.ttft must be longer than zero"),
    (("spec", "slo"), "duration(self.itl) > duration('0s')", "slo.itl must be longer than zero"),
    (("spec", "tuning", "maxBatchSize"), "self.min <= self.max", "maxBatchSize.min must not exceed maxBatchSize.max"),
    (("spec", "tuning"),
     "!has(self.initialMaxBatchSize) || !has(self.maxBatchSize) || "
     "(self.initialMaxBatchSize >= self.maxBatchSize.min && self.initialMaxBatchSize <= self.maxBatchSize.max)",
     "initialMaxBatchSize must lie within maxBatchSize.min..max"),
    (("spec", "tuning"), "!has(self.minChangeInterval) || duration(self.minChangeInterval) > duration('0s')",
     "tuning.minChangeInterval must be longer than zero"),
    (("spec", "scaling"), "self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas"),
    (("spec", "scaling"), "!has(self.standby) || self.standby.max <= self.maxReplicas",
     "standby.max must not exceed maxReplicas"),
    (("spec", "scaling", "standby"), "self.min <= self.max", "standby.min must not exceed standby.max"),
    (("spec", "scaling"),
     "!has(self.coldStart) || self.coldStart == 'auto' || duration(self.coldStart) > duration('0s')",
     "scaling.coldStart must be auto or a duration longer than zero"),
    # Upper bounds (models.MAX_*): what could never run is refused before it is stored.
    (("spec", "slo"), f"duration(self.ttft) <= duration('{models.format_duration(models.MAX_SLO)}')",
     f"slo.ttft must be at most {models.format_duration(models.MAX_SLO)}"),
    (("spec", "slo"), f"duration(self.itl) <= duration('{models.format_duration(models.MAX_SLO)}')",
     f"slo.itl must be at most {models.format_duration(models.MAX_SLO)}"),
    (("spec", "tuning"),
     f"!has(self.minChangeInterval) || duration(self.minChangeInterval) <= "
     f"duration('{models.format_duration(models.MAX_CHANGE_INTERVAL)}')",
     f"tuning.minChangeInterval must be at most {models.format_duration(models.MAX_CHANGE_INTERVAL)}"),
    (("spec", "scaling"),
     f"!has(self.coldStart) || self.coldStart == 'auto' || duration(self.coldStart) <= "
     f"duration('{models.format_duration(models.MAX_COLD_START)}')",
     f"scaling.coldStart must be at most {models.format_duration(models.MAX_COLD_START)}"),
    (("spec", "scaling"),
     f"!has(self.drainTimeout) || duration(self.drainTimeout) <= "
     f"duration('{models.format_duration(models.MAX_DRAIN)}')",
     f"scaling.drainTimeout must be at most {models.format_duration(models.MAX_DRAIN)}"),
    (("spec", "scaling"),
     f"!has(self.scaleDownDelay) || self.scaleDownDelay == 'auto' || duration(self.scaleDownDelay) <= "
     f"duration('{models.format_duration(models.MAX_SCALE_DOWN_DELAY)}')",
     f"scaling.scaleDownDelay must be at most {models.format_duration(models.MAX_SCALE_DOWN_DELAY)}"),
    (("spec",),
     "(has(self.scaling) ? self.scaling.maxReplicas + (has(self.scaling.standby) ? self.scaling.standby.max : 0) "
     f": 1) * (has(self.accelerator.count) ? self.accelerator.count : 1) <= {models.MAX_GPUS}",
     f"(scaling.maxReplicas + scaling.standby.max) x accelerator.count must be at most {models.MAX_GPUS:,} GPUs"),
    (("spec", "template"),
     "!has(self.annotations) || self.annotations.map(k, bytes(k).size() + bytes(self.annotations[k]).size()).sum()"
     f" <= {models.MAX_ANNOTATION_BYTES}",
     f"template.annotations must total at most {models.MAX_ANNOTATION_BYTES:,} bytes (the API server's 256 KiB "
     "less the operator's own)"),
    (("spec", "template", "securityContext"),
     "!has(self.runAsUser) || self.runAsUser != 0 || (has(self.runAsNonRoot) && !self.runAsNonRoot)",
     "securityContext.runAsUser 0 is root: set runAsNonRoot false as well to run as root"),
)

# (name, type, jsonPath, description, priority): what an on-call person needs at a glance.
PRINTER_COLUMNS: tuple[tuple[str, str, str, str, int], ...] = (
    ("Serving", "string", ".status.replicas.display", "Serving replicas / desired", 0),
    ("Standby", "integer", ".status.replicas.standby", "Pre-warmed standby replicas", 0),
    ("Batch", "integer", ".status.config.maxBatchSize", "Engine max batch size now serving", 0),
    ("KV", "string", ".status.config.kvCacheDtype", "KV cache dtype now serving", 0),
    ("TTFT-p95", "number", ".status.observed.ttftP95Ms", "Observed TTFT at the SLO percentile (ms)", 0),
    ("ITL-p95", "number", ".status.observed.itlP95Ms", "Observed ITL at the SLO percentile (ms)", 0),
    ("MBU", "number", ".status.observed.mbu", "Memory-bandwidth utilisation (0-1)", 0),
    ("$/1M", "number", ".status.cost.costPerMillionOutputTokens", "Cost per million output tokens", 0),
    ("SLO", "string", ".status.conditions[?(@.type==\"SLOMet\")].status", "SLO met", 0),
    ("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status", "Ready", 1),
    ("Knee", "integer", ".status.knee.maxBatchSize", "Max batch size at the knee", 1),
    ("Age", "date", ".metadata.creationTimestamp", "", 0),
)

_DROP = {"title", "additionalProperties"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs, turn nullable anyOf into nullable: true, and drop what Kubernetes rejects."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    if "anyOf" in node:
        return _union(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 spells the bound in the keyword; OpenAPI v3.0 wants minimum + a boolean.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key in ("prefixItems",):
            raise ValueError("fixed-length tuples are not structural")
        else:
            out[key] = _resolve(value, defs)
    return _bounded(out)


def _union(node: dict[str, Any], defs: dict[str, Any]) -> Any:
    """`X | None` (pydantic's anyOf with null) as X, not required; any other union cannot be structural."""
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    nullable = len(options) < len(node["anyOf"])
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(options) != 1:
        raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
    merged = _resolve({**options[0], **rest}, defs)
    if nullable:
        # Optional fields are simply not required. They are deliberately not `nullable`: the API
        # server then prunes explicit nulls, so CEL's has() and the operator see an absent field.
        merged.pop("default", None)
    return merged


def _bounded(out: dict[str, Any]) -> dict[str, Any]:
    if out.get("type") == "array" and "items" in out and "maxItems" not in out:
        out["maxItems"] = 256  # bounds the CEL cost estimate
    if "default" in out and out.get("type") == "object" and not out["default"]:
        del out["default"]
    return out


def _schema(model: type[models.Base]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    resolved: dict[str, Any] = _resolve(raw, defs)
    return resolved


def _at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = schema
    for part in path:
        node = node["properties"][part]
    return node


def _condition_list(status: dict[str, Any]) -> None:
    conds = status["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    item = conds["items"]
    item["required"] = ["type", "status", "reason", "lastTransitionTime"]


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the resource: spec and status from the models, metadata left to the API server."""
    spec = _schema(models.InferenceDeploymentSpec)
    status = _schema(models.InferenceDeploymentStatus)
    _condition_list(status)
    root: dict[str, Any] = {
        "type": "object",
        "description": "An LLM inference server kept at the cheapest operating point that meets its SLOs.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [{
            "rule": "self.metadata.name.size() <= 42",
            "message": "metadata.name must be at most 42 characters (revisions append a 10-character hash)",
        }],
    }
    for path, rule, message in CEL_RULES:
        node = _at(root, path)
        node.setdefault("x-kubernetes-validations", []).append({"rule": rule, "message": message})
    return root


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.GROUP}",
            "labels": {"app.kubernetes.io/name": "infertune", "app.kubernetes.io/part-of": "infertune"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": ["all", "infertune"],
            },
            "versions": [{
                "name": models.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": n, "type": t, "jsonPath": p, **({"description": d} if d else {}),
                     **({"priority": pr} if pr else {})}
                    for n, t, p, d, pr in PRINTER_COLUMNS
                ],
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `infertune crd` from operator/infertune/models.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)
