"""Test: the committed CRD is the generated one, and it is a structural schema Kubernetes accepts."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from infertune import crd, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "inferencedeployments.infertune.io.yaml"


def test_committed_crd_matches_the_models() -> None:
    assert COMMITTED.read_text() == crd.render_yaml(), "run `make crd` and commit crds/"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in (node.get("properties") or {}).items():
            out += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


SCHEMA = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural() -> None:
    text = yaml.safe_dump(SCHEMA)
    for forbidden in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "prefixItems", "const:", "title:"):
        assert forbidden not in text, forbidden
    for path, node in _walk(SCHEMA):
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert "properties" in node or isinstance(node.get("additionalProperties"), dict), path
        assert node.get("additionalProperties") is not False, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_every_spec_field_is_described() -> None:
    for path, node in _walk(SCHEMA["properties"]["spec"], ".spec"):
        if path != ".spec" and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description (it is kubectl explain's text)"


def test_strings_and_lists_are_bounded_for_cel() -> None:
    for path, node in _walk(SCHEMA["properties"]["spec"], ".spec"):
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "string" and not path.endswith("{}"):
            assert "maxLength" in node or "enum" in node, path


def test_cel_rules_sit_on_the_objects_they_check() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    model_rules = [r["rule"] for r in spec["model"]["x-kubernetes-validations"]]
    assert "has(self.architecture) != has(self.custom)" in model_rules
    scaling_rules = [r["rule"] for r in spec["scaling"]["x-kubernetes-validations"]]
    assert any("standby.max <= self.maxReplicas" in r for r in scaling_rules)
    assert len(crd.CEL_RULES) >= 10


def test_status_declares_everything_the_operator_writes() -> None:
    # A status with every optional field set: each key must exist in the schema, or the API server prunes it.
    full = models.InferenceDeploymentStatus(
        observed_generation=3,
        replicas=models.ReplicaStatus(desired=2, desired_standby=1, serving=2, standby=1, ready=3, display="2/2"),
        config=models.ConfigStatus(revision="abc", max_batch_size=64, kv_cache_dtype=models.KvDtype.FP8, reason="r"),
        target=models.ConfigStatus(revision="def", max_batch_size=96, kv_cache_dtype=models.KvDtype.FP8),
        previous=models.ConfigStatus(revision="xyz", max_batch_size=256, kv_cache_dtype=models.KvDtype.DEFAULT,
                                     since="2026-01-01T00:00:00Z", predicted_itl_p95_ms=30,
                                     baseline_prefix_hit_rate=0.2,
                                     verified=True, tuned=True),
        demand=models.DemandStatus(rate=3, trend=0.1, error=0.5, updated="2026-01-01T00:00:00Z",
                                   below_since="2026-01-01T00:00:00Z"),
        knee=models.KneeStatus(max_batch_size=96, goodput=1000, basis="measured", confidence=0.8, itl_p95_ms=30,
                               ttft_p95_ms=300, limited_by="slo", calibration=models.Calibration(samples=3)),
        observed=models.ObservedStatus(
            ttft_p95_ms=1, itl_p95_ms=2, output_tokens_per_second=3, request_rate=4, mbu=0.5, mbu_source="dcgm",
            kv_cache_usage=0.4, prefix_cache_hit_rate=0.1, queue_length=2, slo_attainment=0.99, estimated=("x",)),
        cost=models.CostStatus(cost_per_million_output_tokens=0.4, standby_share=0.2, hourly=5),
        cold_start_seconds=60,
        rejected=(models.Rejection(max_batch_size=96, kv_cache_dtype=models.KvDtype.FP8, reason="prefix cache",
                                   time="2026-01-01T00:00:00Z"),),
        decisions=(models.DecisionRecord(time="2026-01-01T00:00:00Z", kind="k", action="a", reason="r", applied=True),),
        conditions=(models.Condition(type="Ready", status="True", reason="Serving",
                                     last_transition_time="2026-01-01T00:00:00Z"),),
    )
    dumped = full.model_dump(mode="json", by_alias=True, exclude_none=True)
    declared = {p for p, _ in _walk(SCHEMA["properties"]["status"], "")}

    def paths(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in [f"{prefix}.{k}", *paths(v, f"{prefix}.{k}")]]
        if isinstance(node, list):
            return [p for item in node for p in paths(item, f"{prefix}[]")]
        return []

    missing = [p for p in paths(dumped) if p not in declared]
    assert missing == []


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conds = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns_cover_the_on_call_view() -> None:
    columns = {c["name"]: c for c in crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    for name in ("Serving", "Standby", "Batch", "KV", "TTFT-p95", "ITL-p95", "MBU", "$/1M", "SLO", "Age"):
        assert name in columns
    assert columns["SLO"]["jsonPath"] == '.status.conditions[?(@.type=="SLOMet")].status'


def test_identity() -> None:
    obj = crd.crd()
    assert obj["metadata"]["name"] == "inferencedeployments.infertune.io"
    assert obj["spec"]["names"]["shortNames"] == ["infd"]
    assert obj["spec"]["scope"] == "Namespaced"
    assert obj["spec"]["versions"][0]["subresources"] == {"status": {}}
