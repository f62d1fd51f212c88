"""Test: the operator's metric table, the alert rules (promtool check and unit tests), monitors and the dashboard."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from infertune import models, observation, render, telemetry
from infertune.runtimes import metrics as dialects
from infertune.runtimes import registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "infertune.rules.yaml"
RULE_TESTS = MONITORING / "infertune.rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
# e2e/prometheus.py installs Debian's prometheus package (promtool comes with it) when it is missing.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
e2e_prometheus: Any = importlib.import_module("e2e.prometheus")

# Series Prometheus makes itself: `up` per scrape target.
PROMETHEUS_BUILTINS = frozenset({"up"})
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def promtool() -> pathlib.Path:
    found = e2e_prometheus.promtool()
    if found is None:
        e2e_prometheus.install()
        found = e2e_prometheus.promtool()
    assert found is not None, "promtool missing after installing Debian's prometheus package"
    return pathlib.Path(found)


def run(promtool: pathlib.Path, *args: str, cwd: pathlib.Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# ---------------------------------------------------------------------------------------------- PromQL names

# PromQL words that are not metric names: operators, modifiers and the literals inf/nan.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "atan2", "inf", "nan", "Inf", "NaN"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_PLAIN_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects. promtool proves the syntax; this small lexer only has to find the
    names: `__name__` matchers (an alternation of literal names), then, with strings, label matchers, ranges and
    grouping clauses removed, every identifier that is not a function call, a keyword or part of a number."""
    names: set[str] = set()
    for op, value in _NAME_MATCHER.findall(expr):
        parts = value.split("|") if op == "=~" else [value]
        for part in parts:
            assert _PLAIN_NAME.fullmatch(part), f"__name__ matcher {value!r} is not a list of literal names"
        names |= set(parts)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("(") or m.group(0) in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum by (le) (rate(foo_bucket{a="b", c=~"x|y"}[5m]))', {"foo_bucket"}),
    ("a > bool 2 and on (namespace, name) b == 1 unless ignoring (x) c offset 5m", {"a", "b", "c"}),
    ('x / on (n) group_left (name) max by (n, name) (y{role="serving"}) * 1e3', {"x", "y"}),
    ('rate({__name__=~"vllm:ttft_bucket|ttft_bucket"}[1m]) or absent(up{job="j"})', {"vllm:ttft_bucket",
                                                                                      "ttft_bucket", "up"}),
    ("histogram_quantile(0.99, sum(rate(h_bucket[$__rate_interval])) by (le))", {"h_bucket"}),
])
def test_metric_names_lexer(expr: str, expected: set[str]) -> None:
    assert metric_names(expr.replace("$__rate_interval", "5m")) == expected


def engine_series_names() -> frozenset[str]:
    """Every series name the engines' dialects and DCGM's hold: histograms with their _bucket/_sum/_count."""
    out: set[str] = set()
    for d in (*(e.dialect for e in registry.engines()), dialects.DCGM):
        for signal, source in d.sources.items():
            kind = source.kind or dialects.KINDS[signal]
            for name in source.names:
                out.add(name)
                if kind is dialects.Kind.HISTOGRAM:
                    out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                elif kind is dialects.Kind.HISTOGRAM_SUM:
                    out |= {f"{name}_sum", f"{name}_count"}
    return frozenset(out)


KNOWN = telemetry.series_names() | engine_series_names() | PROMETHEUS_BUILTINS


# ---------------------------------------------------------------------------------------------- the table


def test_metric_table_follows_prometheus_naming() -> None:
    names = [m.name for m in telemetry.METRICS]
    assert len(names) == len(set(names))
    for m in telemetry.METRICS:
        assert re.fullmatch(r"infertune_[a-z0-9_]+", m.name), m.name
        assert m.help.strip(), m.name
        assert m.name.endswith("_total") == (m.type is telemetry.Type.COUNTER), m.name
        assert len(set(m.labels)) == len(m.labels), m.name
        assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", label) and not label.startswith("__") for label in m.labels)
        if m.type is telemetry.Type.HISTOGRAM:
            assert m.buckets and list(m.buckets) == sorted(m.buckets), m.name
            assert "le" not in m.labels
    for m in telemetry.PER_RESOURCE:
        assert m.labels[:2] == ("namespace", "name"), m.name
    for m in telemetry.PER_OPERATOR:
        assert "namespace" not in m.labels and "name" not in m.labels, m.name


def test_the_lead_s_required_metrics_are_in_the_table() -> None:
    required = {
        "infertune_decisions_total": ("kind", "reason"), "infertune_max_batch_size": (), "infertune_kv_cache_fp8": (),
        "infertune_knee_max_batch_size": (), "infertune_knee_confidence": (), "infertune_replicas": ("state",),
        "infertune_cold_start_seconds": (), "infertune_slo_attainment": (), "infertune_mbu": (),
        "infertune_cost_per_million_output_tokens": (), "infertune_metrics_available": (),
        "infertune_rollbacks_total": (), "infertune_slo_ttft_seconds": (), "infertune_slo_itl_seconds": (),
    }
    for name, extra in required.items():
        assert telemetry.BY_NAME[name].labels == ("namespace", "name", *extra), name
    assert telemetry.BY_NAME["infertune_reconcile_duration_seconds"].type is telemetry.Type.HISTOGRAM
    for name in ("infertune_promql_queries_total", "infertune_promql_errors_total", "infertune_api_errors_total"):
        assert telemetry.BY_NAME[name].type is telemetry.Type.COUNTER


def _spec() -> models.InferenceDeploymentSpec:
    return models.parse_spec({
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"},
        "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"},
        "accelerator": {"type": "l40s", "hourlyCost": 1.1},
        "slo": {"ttft": "1500ms", "itl": "40ms", "percentile": 90},
    })


def _condition(type_: str, status: str, reason: str) -> models.Condition:
    return models.Condition(type=type_, status=status, reason=reason, last_transition_time="2026-01-01T00:00:00Z")


def test_resource_samples_of_a_full_status() -> None:
    status = models.InferenceDeploymentStatus(
        replicas=models.ReplicaStatus(desired=3, desired_standby=1, serving=2, standby=1, ready=3, display="2/3"),
        config=models.ConfigStatus(revision="abc", max_batch_size=96, kv_cache_dtype=models.KvDtype.FP8),
        knee=models.KneeStatus(max_batch_size=128, goodput=2400.0, basis="measured", confidence=0.8),
        observed=models.ObservedStatus(ttft_p95_ms=850.0, itl_p95_ms=32.5, output_tokens_per_second=4000.0,
                                       request_rate=12.5, mbu=0.62, slo_attainment=0.97),
        cost=models.CostStatus(cost_per_million_output_tokens=0.23, standby_share=0.25, hourly=4.4),
        cold_start_seconds=95.0,
        conditions=(_condition("MetricsAvailable", "True", "MetricsFound"), _condition("Tuned", "False", "Converging")),
    )
    got = {(s.metric.name, s.labels[2:]): s.value for s in telemetry.resource_samples("ns1", "llm", _spec(), status)}
    assert got == {
        ("infertune_max_batch_size", ()): 96, ("infertune_kv_cache_fp8", ()): 1,
        ("infertune_knee_max_batch_size", ()): 128, ("infertune_knee_goodput_tokens_per_second", ()): 2400,
        ("infertune_knee_confidence", ()): 0.8,
        ("infertune_replicas", ("serving",)): 2, ("infertune_replicas", ("standby",)): 1,
        ("infertune_replicas", ("desired",)): 3, ("infertune_replicas", ("desired_standby",)): 1,
        ("infertune_cold_start_seconds", ()): 95, ("infertune_slo_ttft_seconds", ()): 1.5,
        ("infertune_slo_itl_seconds", ()): 0.04, ("infertune_slo_attainment_objective", ()): 0.9,
        ("infertune_slo_attainment", ()): 0.97, ("infertune_mbu", ()): 0.62,
        ("infertune_observed_ttft_seconds", ()): 0.85, ("infertune_observed_itl_seconds", ()): 0.0325,
        ("infertune_output_tokens_per_second", ()): 4000, ("infertune_requests_per_second", ()): 12.5,
        ("infertune_cost_per_million_output_tokens", ()): 0.23, ("infertune_cost_per_hour", ()): 4.4,
        ("infertune_standby_cost_share", ()): 0.25,
        ("infertune_condition", ("MetricsAvailable", "True", "MetricsFound")): 1,
        ("infertune_condition", ("Tuned", "False", "Converging")): 1,
        ("infertune_metrics_available", ()): 1,
    }
    for s in telemetry.resource_samples("ns1", "llm", _spec(), status):
        assert s.labels[:2] == ("ns1", "llm")
        assert len(s.labels) == len(s.metric.labels), s.metric.name
        assert s.metric.type is telemetry.Type.GAUGE


def test_resource_samples_leave_out_what_the_status_lacks() -> None:
    status = models.InferenceDeploymentStatus(conditions=(
        _condition("MetricsAvailable", "False", "NoPrometheus"),))
    got = {s.metric.name for s in telemetry.resource_samples("ns1", "new", _spec(), status)}
    assert got == {"infertune_replicas", "infertune_slo_ttft_seconds", "infertune_slo_itl_seconds",
                   "infertune_slo_attainment_objective", "infertune_condition", "infertune_metrics_available"}
    available = next(s for s in telemetry.resource_samples("ns1", "new", _spec(), status)
                     if s.metric is telemetry.METRICS_AVAILABLE)
    assert available.value == 0


@pytest.mark.parametrize(("ready", "serving", "deleting", "role"), [
    (True, True, False, "serving"),
    (True, False, False, "standby"),
    (False, True, False, "starting"),
    (False, False, False, "starting"),
    (True, True, True, "draining"),
])
def test_pod_roles(ready: bool, serving: bool, deleting: bool, role: str) -> None:
    pod = observation.PodFacts(name="llm-abc-1", revision="abc", ready=ready, serving=serving, created=0.0,
                               deleting=deleting)
    assert telemetry.pod_role(pod) == role
    (sample,) = telemetry.pod_samples("ns1", "llm", [pod])
    assert sample.labels == ("ns1", "llm", "llm-abc-1", "abc", role) and sample.metric is telemetry.POD_INFO


@pytest.mark.parametrize(("kind", "action", "reason", "code"), [
    ("knobs", "maxBatchSize 256 -> 96, KV default -> default",
     "maxBatchSize 256 misses the ITL SLO (52.0 ms > 40 ms); knee at maxBatchSize 96 (default KV): ...",
     "slo_violation"),
    ("knobs", "maxBatchSize 32 -> 96, KV default -> fp8", "predicted goodput +35% per replica; knee at ...",
     "goodput_gain"),
    ("knobs", "maxBatchSize 32 -> 96, KV default -> fp8",
     "recommendation only (tuning.mode recommend): predicted goodput +35% per replica; ...", "recommended"),
    ("rollback", "maxBatchSize 96 -> 32, KV fp8 -> default", "pod llm-x of the new revision restarted 3 times",
     "crash_loop"),
    ("rollback", "maxBatchSize 96 -> 32, KV fp8 -> default", "no pod of the new revision became Ready within 900 s",
     "not_ready"),
    ("rollback", "maxBatchSize 96 -> 32, KV fp8 -> default",
     "prefix-cache hit rate fell from 60% to 5% with the FP8 KV cache", "prefix_cache_collapse"),
    ("rollback", "maxBatchSize 96 -> 32, KV default -> default",
     "measured ITL p95 48.0 ms > SLO 40 ms (predicted 36.0 ms)", "latency_regression"),
    ("verify", "kept maxBatchSize 96/KV default", "measured ITL 33.0 ms vs predicted 36.0 ms (SLO 40 ms)", "verified"),
    ("verify", "kept: no earlier configuration to return to", "measured ITL p95 48.0 ms > SLO 40 ms",
     "nothing_to_roll_back"),
    ("revision", "roll out revision abc (maxBatchSize 256, KV default)",
     "maxBatchSize 256: the vllm default (256); KV cache default", "initial"),
    ("revision", "roll out revision abc (maxBatchSize 64, KV default)",
     "maxBatchSize 64 from tuning.initialMaxBatchSize; KV cache default", "initial"),
    ("revision", "roll out revision abc (maxBatchSize 256, KV default)",
     "the spec no longer allows maxBatchSize 512/KV default; maxBatchSize 256: ...", "bounds_changed"),
    ("revision", "roll out revision def (maxBatchSize 96, KV default)", "predicted goodput +35% per replica; ...",
     "spec_changed"),
    ("replicas", "serving replicas 2 -> 5", "forecast 11.00 req/s over 120 s / (2.75 req/s per replica x 0.8) -> 5",
     "scale_up"),
    ("replicas", "serving replicas 5 -> 3", "forecast ... -> 3 after 300 s below", "scale_down"),
    ("standby", "standby replicas 0 -> 1", "forecast ...", "scale_up"),
    ("standby", "standby replicas 2 -> 1", "frozen: no Prometheus URL is configured", "frozen"),
    ("surprise", "something new", "whatever", "other"),
])
def test_decision_reasons_are_a_bounded_vocabulary(kind: str, action: str, reason: str, code: str) -> None:
    record = models.DecisionRecord(time="2026-01-01T00:00:00Z", kind=kind, action=action, reason=reason, applied=True)
    assert telemetry.decision_reason(record) == code
    assert code in telemetry.DECISION_REASONS
    assert telemetry.decision_kind(record) == (kind if kind in telemetry.DECISION_KINDS else "other")


def test_every_decision_kind_decide_records_is_known() -> None:
    source = (ROOT / "operator" / "infertune" / "decide.py").read_text()
    kinds = set(re.findall(r'out\.record\(\s*now,\s*"(\w+)"', source))
    assert kinds, "no out.record(now, \"kind\", ...) calls found in decide.py"
    assert kinds <= set(telemetry.DECISION_KINDS)


# ---------------------------------------------------------------------------------------------- rules


def rules() -> list[dict[str, Any]]:
    return [r for g in load(RULES)["groups"] for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_rules_pass_promtool_check(promtool: pathlib.Path) -> None:
    done = run(promtool, "check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_rules_pass_their_promtool_unit_tests(promtool: pathlib.Path) -> None:
    done = run(promtool, "test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    fired = {case["alertname"] for test in load(RULE_TESTS)["tests"] for case in test.get("alert_rule_test", ())
             if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in load(RULE_TESTS)["tests"] for case in test.get("alert_rule_test", ())
             if not case.get("exp_alerts")}
    names = {a["alert"] for a in alerts()}
    assert names <= fired, f"never seen firing: {sorted(names - fired)}"
    assert {"InferTuneMBULow", "InferTuneTTFTP99High", "InferTuneMetricsMissing", "InferTuneOperatorDown",
            "InferTuneRolledBack"} <= quiet


def test_the_issue_s_alerts_exist_with_their_thresholds() -> None:
    by_name = {a["alert"]: a for a in alerts()}
    assert "infertune_mbu < 0.4" in by_name["InferTuneMBULow"]["expr"] and by_name["InferTuneMBULow"]["for"] == "15m"
    ttft = by_name["InferTuneTTFTP99High"]["expr"]
    assert "infertune:ttft_seconds:p99_5m" in ttft
    assert "2 * max by (namespace, name) (infertune_slo_ttft_seconds)" in ttft
    assert "infertune_metrics_available == 0" in by_name["InferTuneMetricsMissing"]["expr"]
    assert 'up{job="infertune-operator"}' in by_name["InferTuneOperatorDown"]["expr"]
    assert "infertune_rollbacks_total" in by_name["InferTuneRolledBack"]["expr"]


def test_alerts_carry_severity_summary_and_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    headings = set(re.findall(r"^### (\S+)\s*$", runbook, flags=re.MULTILINE))
    for a in alerts():
        name = a["alert"]
        assert a["labels"]["severity"] in ("info", "warning", "critical"), name
        assert a["annotations"]["summary"] and a["annotations"]["description"], name
        assert a["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in headings, f"docs/runbook.md has no '### {name}' entry"


def test_prometheusrule_carries_the_same_groups_as_the_plain_rule_file() -> None:
    cr = load(MONITORING / "prometheusrule.yaml")
    assert cr["apiVersion"] == "monitoring.coreos.com/v1" and cr["kind"] == "PrometheusRule"
    assert cr["spec"]["groups"] == load(RULES)["groups"], "copy infertune.rules.yaml's groups under spec: there"


def test_rules_use_only_known_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    for r in rules():
        unknown = metric_names(r["expr"]) - KNOWN - recorded
        assert not unknown, f"{r.get('alert') or r.get('record')}: {sorted(unknown)}"


def test_the_ttft_rule_reads_every_engine_s_ttft_histogram() -> None:
    expected = set()
    for d in registry.dialects():
        source = d.sources.get(dialects.Signal.TTFT)
        if source is not None:
            expected |= {f"{n}_bucket" for n in source.names}
    (rule,) = [r for r in rules() if r.get("record") == "infertune:ttft_seconds_bucket:rate5m"]
    assert metric_names(rule["expr"]) - {"infertune_pod_info"} == expected


# ---------------------------------------------------------------------------------------------- scraping


def test_plain_scrape_config_passes_promtool(promtool: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Debian's promtool is built without Kubernetes service discovery, so each job's kubernetes_sd_configs is
    swapped for a static target; relabelling, honor_labels and the rule file are checked as written."""
    config = load(MONITORING / "scrape-config.yaml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"infertune-model-servers", "infertune-operator", "dcgm-exporter"}
    assert jobs["infertune-operator"]["honor_labels"] is True and jobs["dcgm-exporter"]["honor_labels"] is True
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    config["rule_files"] = [str(MONITORING / f) for f in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = run(promtool, "check", "config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _rendered_pod() -> dict[str, Any]:
    spec = _spec()
    knobs = models.Knobs(max_batch_size=64)
    owner = render.Owner(name="llm", namespace="ns1", uid="u")
    dep = next(m for m in render.manifests(owner, spec, knobs, replicas=1) if m["kind"] == "Deployment")
    template: dict[str, Any] = dep["spec"]["template"]
    return template


def test_pod_monitor_and_scrape_config_select_the_pods_the_operator_renders() -> None:
    pod = _rendered_pod()
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", ())}
    pm = load(MONITORING / "podmonitor.yaml")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["relabelings"][0]["sourceLabels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_path"]
    assert annotations["prometheus.io/path"] == "/metrics"
    job = next(j for j in load(MONITORING / "scrape-config.yaml")["scrape_configs"]
               if j["job_name"] == "infertune-model-servers")
    keep = job["relabel_configs"][0]
    sources = [s.removeprefix("__meta_kubernetes_pod_label_") for s in keep["source_labels"]]
    values = keep["regex"].split(";")
    for source, value in zip(sources, values, strict=True):
        key = next(k for k in labels if re.sub(r"[^A-Za-z0-9_]", "_", k) == source)
        assert labels[key] == value
    assert job["relabel_configs"][1]["regex"] in ports


def test_service_monitor_selects_the_operator_service() -> None:
    service = load(ROOT / "manifests" / "operator" / "service.yaml")
    sm = load(MONITORING / "servicemonitor.yaml")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True
    assert {"targetLabel": "job", "replacement": "infertune-operator", "action": "replace"} in endpoint["relabelings"]
    assert e2e_prometheus.OPERATOR_JOB == "infertune-operator"  # the e2e Prometheus names the job the same


def test_kustomization_lists_files_that_exist() -> None:
    k = load(MONITORING / "kustomization.yaml")
    for resource in k["resources"]:
        doc = load(MONITORING / resource)
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", resource
    (generator,) = k["configMapGenerator"]
    for entry in generator["files"]:
        assert (MONITORING / entry.split("=")[-1]).is_file(), entry
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}


# ---------------------------------------------------------------------------------------------- dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", ())


def exprs(d: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query: panel targets and annotation queries."""
    for p in panels(d):
        for t in p.get("targets", ()):
            yield f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"]
    for a in d["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"]


# Grafana's variables, replaced by values of the same PromQL type before the expressions are parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*", "$name": ".*"}


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "name"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
        assert variables[name]["allValue"] == ".*"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for p in panels(d):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[(x, y)]}"
                cells[x, y] = p["id"]
        assert p["type"] in {"row", "stat", "timeseries", "xychart"}, p["type"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), p["title"]
    for a in d["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == DATASOURCE


def test_every_dashboard_query_parses(promtool: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Prometheus's own parser via promtool: every query becomes a recording rule of a throw-away rule file."""
    found = list(exprs(dashboard()))
    assert found
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": substitute(e)}
                                            for i, (_, e) in enumerate(found)]}
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    done = run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + "\n".join(
        f"query{i}: {w}" for i, (w, _) in enumerate(found))


def test_dashboard_uses_only_known_metrics_and_no_recording_rules() -> None:
    for where, e in exprs(dashboard()):
        unknown = metric_names(substitute(e)) - KNOWN
        assert not unknown, f"{where}: {sorted(unknown)}"
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            (inside,) = re.findall(r"label_values\((.+),\s*\w+\)$", v["definition"])
            assert metric_names(substitute(inside)) <= telemetry.series_names()


@pytest.mark.parametrize(("view", "must_use"), [
    ("frontier", {"infertune_observed_itl_seconds", "infertune_output_tokens_per_second"}),
    ("knobs over time", {"infertune_max_batch_size", "infertune_knee_max_batch_size", "infertune_kv_cache_fp8"}),
    ("replicas and standby", {"infertune_replicas"}),
    ("latency against the SLO", {"infertune_slo_ttft_seconds", "infertune_slo_itl_seconds",
                                 "infertune_observed_ttft_seconds", "infertune_observed_itl_seconds"}),
    ("MBU", {"infertune_mbu", "DCGM_FI_PROF_DRAM_ACTIVE"}),
    ("$ per 1M output tokens", {"infertune_cost_per_million_output_tokens"}),
    ("operator health", {"infertune_reconcile_duration_seconds_bucket", "infertune_promql_errors_total"}),
])
def test_dashboard_shows_each_view(view: str, must_use: set[str]) -> None:
    used = {n for _, e in exprs(dashboard()) for n in metric_names(substitute(e))}
    assert must_use <= used, f"{view}: missing {sorted(must_use - used)}"


def test_dashboard_frontier_is_an_xy_chart() -> None:
    (frontier,) = [p for p in panels(dashboard()) if p["type"] == "xychart"]
    assert "frontier" in frontier["title"].lower() and len(frontier["targets"]) == 2


# ---------------------------------------------------------------------------------------------- runbook


def _condition_reasons() -> set[str]:
    """Every condition reason decide.py and handlers.py can write, read from their source."""
    reasons: set[str] = set()
    for module in ("decide.py", "handlers.py"):
        source = (ROOT / "operator" / "infertune" / module).read_text()
        # upsert calls, a (condition, (status, reason, message)) row, and each condition writer's returns
        lines = re.findall(r"up\([\w.]+, C\.\w+,.*", source) + re.findall(r"\(C\.\w+, \(.*", source)
        lines += re.findall(r"^\s*return (?:True|False|None|met), .*", source, flags=re.MULTILINE)
        for line in lines:
            reasons |= set(re.findall(r'"([A-Z][A-Za-z]+)"', line))
        reasons |= set(re.findall(r'_Metrics\(\w+, "(\w+)"', source))
        reasons |= set(re.findall(r'reason="([A-Z]\w+)"', source))
    reasons.add(observation.Metrics().reason)
    return reasons


def test_runbook_has_an_entry_for_every_condition_and_reason() -> None:
    runbook = RUNBOOK.read_text()
    headings = set(re.findall(r"^### (\S+)\s*$", runbook, flags=re.MULTILINE))
    for t in models.ConditionType:
        assert t.value in headings, f"docs/runbook.md has no '### {t.value}' entry"
    reasons = _condition_reasons()
    assert {"Serving", "ReplicasNotReady", "SLOMissed", "AtKnee", "RolledBack", "InvalidSpec", "NoPrometheus",
            "PartialMetrics", "PrometheusUnavailable", "MetricsFound", "NameConflict", "AsExpected"} <= reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in runbook)
    assert not missing, f"docs/runbook.md does not mention reason(s) {missing}"


def test_runbook_lists_every_event_reason() -> None:
    source = (ROOT / "operator" / "infertune" / "decide.py").read_text()
    events = set(re.findall(r'event="(\w+)"', source)) | set(re.findall(r'Event\(type="\w+", reason="(\w+)"', source))
    events |= set(re.findall(r'kind = "(Scaled\w+)" if .* else "(Scaled\w+)"', source)[0])
    assert {"TuningChanged", "Rollback", "StandbyPromoted", "ScaledUp", "ScaledDown"} <= events
    section = RUNBOOK.read_text().split("## Events", 1)[1]
    missing = sorted(e for e in events if f"| `{e}` |" not in section)
    assert not missing, f"docs/runbook.md's Events table lacks {missing}"


def test_monitoring_readme_lists_every_metric_and_alert() -> None:
    readme = (MONITORING / "README.md").read_text()
    for m in telemetry.METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        assert f"| `{m.name}` | {m.type.value} | {labels} |" in readme, m.name
    for a in alerts():
        assert f"| `{a['alert']}` | {a['labels']['severity']} |" in readme, a["alert"]
