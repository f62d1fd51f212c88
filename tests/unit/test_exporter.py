"""Test: the operator's /metrics — gauges replaced per status, counters from new decisions, series removed."""

from __future__ import annotations

from prometheus_client import parser

import specs
from infertune import exporter, models, observation, validation

SPEC, _ = validation.parse(specs.spec())
assert SPEC is not None


def status(reason: str, *, batch: int = 64) -> models.InferenceDeploymentStatus:
    return models.InferenceDeploymentStatus(
        config=models.ConfigStatus(revision="r", max_batch_size=batch, kv_cache_dtype=models.KvDtype.FP8),
        replicas=models.ReplicaStatus(desired=2, serving=2, standby=1, ready=3, display="2/2"),
        conditions=(models.Condition(type="Ready", status="True", reason=reason,
                                     last_transition_time="2026-01-01T00:00:00Z"),),
    )


def samples(e: exporter.Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in parser.text_string_to_metric_families(e.text()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def find(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str) -> list[float]:
    return [v for (n, ls), v in values.items()
            if n == metric and all(dict(ls).get(k) == x for k, x in labels.items())]


POD = observation.PodFacts(name="p1", revision="r", ready=True, serving=True, created=0)


def test_gauges_follow_the_status_and_stale_label_sets_go() -> None:
    e = exporter.Exporter()
    e.update("ns", "llm", spec=SPEC, status=status("Serving"), pods=[POD], new_records=[])
    v = samples(e)
    assert find(v, "infertune_max_batch_size", namespace="ns", name="llm") == [64.0]
    assert find(v, "infertune_kv_cache_fp8", name="llm") == [1.0]
    assert find(v, "infertune_replicas", state="standby") == [1.0]
    assert find(v, "infertune_condition", type="Ready", reason="Serving") == [1.0]
    assert find(v, "infertune_pod_info", pod="p1", role="serving") == [1.0]
    assert find(v, "infertune_slo_itl_seconds", name="llm") == [0.04]
    e.update("ns", "llm", spec=SPEC, status=status("ReplicasNotReady", batch=96), pods=[], new_records=[])
    v = samples(e)
    assert find(v, "infertune_condition", type="Ready", reason="Serving") == []
    assert find(v, "infertune_condition", type="Ready", reason="ReplicasNotReady") == [1.0]
    assert find(v, "infertune_max_batch_size", name="llm") == [96.0]
    assert find(v, "infertune_pod_info", pod="p1") == []


def test_counters_count_new_decisions_and_start_at_zero() -> None:
    e = exporter.Exporter()
    e.update("ns", "llm", spec=SPEC, status=status("Serving"), pods=[], new_records=[])
    assert find(samples(e), "infertune_rollbacks_total", name="llm") == [0.0]
    records = [
        models.DecisionRecord(time="2026-01-01T00:00:00Z", kind="knobs", action="maxBatchSize 1024 -> 96", applied=True,
                              reason="predicted goodput +40% per replica"),
        models.DecisionRecord(time="2026-01-01T00:00:00Z", kind="rollback", action="maxBatchSize 96 -> 1024",
                              applied=True, reason="measured ITL p95 80 ms > SLO 40 ms"),
    ]
    e.update("ns", "llm", spec=SPEC, status=status("Serving"), pods=[], new_records=records)
    v = samples(e)
    assert find(v, "infertune_decisions_total", kind="knobs", reason="goodput_gain") == [1.0]
    assert find(v, "infertune_decisions_total", kind="rollback", reason="latency_regression") == [1.0]
    assert find(v, "infertune_rollbacks_total", name="llm") == [1.0]


def test_forget_removes_every_series_of_the_resource() -> None:
    e = exporter.Exporter()
    e.update("ns", "llm", spec=SPEC, status=status("Serving"), pods=[POD], new_records=[])
    e.update("ns", "other", spec=SPEC, status=status("Serving"), pods=[], new_records=[])
    e.forget("ns", "llm")
    v = samples(e)
    assert not [k for k in v if dict(k[1]).get("name") == "llm"]
    assert find(v, "infertune_max_batch_size", name="other") == [64.0]


def test_operator_counters() -> None:
    e = exporter.Exporter()
    e.promql(18, 0)
    e.promql(36, 2)
    e.api_error()
    e.reconciled(0.2)
    v = samples(e)
    assert find(v, "infertune_promql_queries_total") == [36.0]
    assert find(v, "infertune_promql_errors_total") == [2.0]
    assert find(v, "infertune_api_errors_total") == [1.0]
    assert find(v, "infertune_reconcile_duration_seconds_count") == [1.0]
    assert find(v, "infertune_build_info") == [1.0]
