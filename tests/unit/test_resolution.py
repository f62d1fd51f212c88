"""Test: objectives inside a histogram bucket are named with the edges either side (validate and a condition)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import yaml

import specs
from infertune import conditions, decide, handlers, models, observation, prometheus, resolution, validation
from infertune.runtimes import metrics
from infertune.sim import exposition

ROOT = Path(__file__).resolve().parents[2]
DEMO_SAMPLE = ROOT / "manifests" / "samples" / "vllm-llama-3.1-8b-l40s.yaml"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def spec_of(**changes: Any) -> models.InferenceDeploymentSpec:
    spec, problems = validation.parse(specs.spec(**changes))
    assert spec is not None, problems
    return spec


def test_enclosing_names_the_bucket_around_a_value_and_nothing_for_an_edge() -> None:
    assert resolution.enclosing(0.040, resolution.VLLM_TPOT) == (0.025, 0.05)
    assert resolution.enclosing(0.050, resolution.VLLM_TPOT) is None
    assert resolution.enclosing(1.0, resolution.VLLM_TTFT) is None
    assert resolution.enclosing(0.005, resolution.VLLM_TPOT) == (0.0, 0.01)  # below the first edge
    assert resolution.enclosing(100.0, resolution.VLLM_TPOT) == (80.0, math.inf)  # past the last finite one
    assert resolution.enclosing(0.04, ()) is None


def test_objectives_inside_vllm_buckets_are_named_with_both_edges() -> None:
    inside = resolution.check(spec_of(**{"engine.kind": "vllm", "slo.ttft": "1500ms", "slo.itl": "40ms"}))
    by_field = {i.field: i for i in inside}
    assert set(by_field) == {"slo.ttft", "slo.itl"}
    itl = by_field["slo.itl"]
    assert (itl.lower, itl.upper, itl.seen) == (0.025, 0.05, False)
    # The per-request histogram is the one the SLO is read from (prometheus.pod_metrics prefers it).
    assert itl.metric == "vllm:request_time_per_output_token_seconds"
    assert "25-50 ms" in str(itl) and "use 25 ms or 50 ms" in str(itl)
    assert "1000-2500 ms" in str(by_field["slo.ttft"])


def test_objectives_on_edges_are_fine() -> None:
    assert resolution.check(spec_of(**{"engine.kind": "vllm", "slo.ttft": "1s", "slo.itl": "50ms"})) == []


def test_edges_seen_on_the_pods_replace_the_defaults() -> None:
    spec = spec_of(**{"engine.kind": "vllm", "slo.ttft": "1s", "slo.itl": "50ms"})
    # An image built with custom buckets: 40 and 80 ms around the objective.
    inside = resolution.check(spec, {"tpot": (0.02, 0.04, 0.08)})
    assert [(i.field, i.lower, i.upper, i.seen) for i in inside] == [("slo.itl", 0.04, 0.08, True)]
    assert "the buckets its pods export" in str(inside[0])
    # Only the signal seen is replaced: TTFT still reads the default edges (1 s is one of them).
    assert resolution.check(spec_of(**{"engine.kind": "vllm", "slo.itl": "40ms", "slo.ttft": "1s"}),
                            {"tpot": (0.02, 0.04, 0.08)}) == []


def test_each_engine_is_checked_on_the_histogram_its_objective_is_read_from() -> None:
    sglang = resolution.check(spec_of(**{"engine.kind": "sglang", "slo.ttft": "1s", "slo.itl": "50ms"}))
    assert [(i.metric, i.lower, i.upper) for i in sglang] == [("sglang:inter_token_latency_seconds", 0.04, 0.06)]
    # TGI exports no TTFT (it is estimated): only the ITL objective is checked, on the per-request histogram.
    tgi = resolution.check(spec_of(**{"engine.kind": "tgi", "slo.ttft": "1500ms", "slo.itl": "40ms"}))
    assert [i.field for i in tgi] == ["slo.itl"]


def test_the_twin_exports_the_edges_the_operator_checks() -> None:
    by_name = {spec.name: spec.buckets for spec in exposition.VLLM.metrics.values()}
    assert by_name["vllm:request_time_per_output_token_seconds"] == resolution.VLLM_TPOT
    assert by_name["vllm:time_to_first_token_seconds"] == resolution.VLLM_TTFT
    sglang = {spec.name: spec.buckets for spec in exposition.SGLANG.metrics.values()}
    assert sglang["sglang:inter_token_latency_seconds"] == resolution.SGLANG_ITL


def test_validate_warns_with_the_field_path_and_the_demo_sample_has_no_warning() -> None:
    warnings = validation.objective_warnings(spec_of(**{"slo.ttft": "1s", "slo.itl": "40ms"}))
    assert [w.path for w in warnings] == ["spec.slo.itl"]
    assert "25 ms or 50 ms" in warnings[0].message
    sample = yaml.safe_load(DEMO_SAMPLE.read_text())
    spec, problems = validation.parse(sample["spec"])
    assert spec is not None, problems
    assert validation.objective_warnings(spec) == []


def _decide(spec: models.InferenceDeploymentSpec, metrics: observation.Metrics | None) -> observation.Decision:
    obs = observation.Observation(name="llm", namespace="ns", generation=1, spec=spec,
                                  status=models.InferenceDeploymentStatus(), metrics=metrics)
    return decide.decide(obs, now=T0)


def test_the_condition_reports_an_objective_inside_a_bucket_before_any_traffic() -> None:
    spec = spec_of(**{"engine.kind": "vllm", "slo.ttft": "1s", "slo.itl": "40ms"})
    found = conditions.get(_decide(spec, None).status.conditions, models.ConditionType.OBJECTIVES_RESOLVABLE)
    assert found is not None and (found.status, found.reason) == ("False", "InsideBucket")
    assert "slo.itl 40 ms" in found.message and "25-50 ms" in found.message
    # The pods export an edge at 40 ms: now it is counted exactly.
    seen = observation.Metrics(pods={}, grace=0, edges={"tpot": (0.01, 0.02, 0.04, 0.08)})
    found = conditions.get(_decide(spec, seen).status.conditions, models.ConditionType.OBJECTIVES_RESOLVABLE)
    assert found is not None and (found.status, found.reason) == ("True", "AtBucketEdges")


def test_the_shell_hands_the_core_the_edges_its_pods_export() -> None:
    inf = math.inf
    busy = prometheus.RawPod(buckets={metrics.Signal.TPOT: ((0.025, 1.0), (0.05, 2.0), (inf, 3.0)),
                                      metrics.Signal.TTFT: ((1.0, 1.0), (inf, 1.0))}, sums={}, values={})
    other = prometheus.RawPod(buckets={metrics.Signal.TPOT: ((0.04, 1.0), (inf, 1.0))}, sums={}, values={})
    idle = prometheus.RawPod(buckets={metrics.Signal.ITL: ((inf, 0.0),)}, sums={}, values={})
    assert handlers.seen_edges([busy, other, idle]) == {"tpot": (0.025, 0.04, 0.05), "ttft": (1.0,)}
    assert handlers.seen_edges([]) == {}
