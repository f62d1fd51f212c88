"""Pure: the operator's own /metrics: names, types, labels and help of every series, and their values from a status.

The table below is the contract between the exporter (the shell), the alert rules and the Grafana dashboard in
manifests/monitoring/: a test checks that every metric those use is defined here or is an engine/DCGM metric
of `runtimes.metrics`. Names are the wire names (counters end in `_total`; prometheus_client accepts that
spelling and strips it before adding it back).

Label conventions. Per-resource series carry `namespace` and `name` of the InferenceDeployment. The operator's
pod is scraped with `honor_labels: true` (manifests/monitoring/servicemonitor.yaml and scrape-config.yaml), so
these `namespace`/`pod` labels survive instead of being renamed `exported_namespace`/`exported_pod` by the
target's own. Per-operator series have no resource labels.

Exporter notes (what the rules assume):
- create every per-resource counter child at 0 the first time a resource is seen: `increase()` cannot see the
  first event of a series that appears with the value 1 already (the rollback alert would miss it);
- `infertune_condition` has one series per (resource, type): when a condition's status or reason changes,
  remove the old label set before setting the new one to 1;
- remove every series of a resource when it is deleted, and `infertune_pod_info` series of pods that are gone.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping

from infertune import models, observation


class Type(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


RESOURCE = ("namespace", "name")


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """One metric family the operator exports."""

    name: str
    type: Type
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms only

    @property
    def series_names(self) -> tuple[str, ...]:
        """Names as they appear in PromQL: a histogram's _bucket/_sum/_count, others their own name."""
        if self.type is Type.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _r(name: str, type_: Type, help_: str, *extra: str) -> Metric:
    return Metric(name=name, type=type_, help=help_, labels=(*RESOURCE, *extra))


# ------------------------------------------------------------------------------------------ per resource

DECISIONS = _r("infertune_decisions_total", Type.COUNTER,
               "Decisions recorded in status.decisions, by kind (knobs, rollback, verify, revision, replicas, "
               "standby) and a bounded reason code (see telemetry.decision_reason).", "kind", "reason")
MAX_BATCH_SIZE = _r("infertune_max_batch_size", Type.GAUGE,
                    "Engine max batch size of the configuration now serving (status.config.maxBatchSize).")
KV_CACHE_FP8 = _r("infertune_kv_cache_fp8", Type.GAUGE,
                  "1 when the configuration now serving runs an FP8 KV cache, else 0.")
KNEE_MAX_BATCH_SIZE = _r("infertune_knee_max_batch_size", Type.GAUGE,
                         "Max batch size at the knee of the latency-throughput frontier under the SLO.")
KNEE_GOODPUT = _r("infertune_knee_goodput_tokens_per_second", Type.GAUGE,
                  "Predicted output tokens/s per replica at the knee, within the SLO.")
KNEE_CONFIDENCE = _r("infertune_knee_confidence", Type.GAUGE,
                     "Confidence in the knee estimate, 0 (physics prior only) to 1 (well measured near the knee).")
REPLICAS = _r("infertune_replicas", Type.GAUGE,
              "Replicas by state: serving (Ready, taking traffic), standby (Ready, pre-warmed, no traffic), "
              "desired (serving replicas wanted), desired_standby (standby replicas wanted).", "state")
COLD_START = _r("infertune_cold_start_seconds", Type.GAUGE,
                "Measured pod creation-to-Ready time (p90 of recent pods) or scaling.coldStart.")
SLO_ATTAINMENT = _r("infertune_slo_attainment", Type.GAUGE,
                    "Fraction of recent requests within both the TTFT and the ITL objective, 0-1.")
SLO_ATTAINMENT_OBJECTIVE = _r("infertune_slo_attainment_objective", Type.GAUGE,
                              "The attainment the SLO asks for: slo.percentile / 100 (0.95 for p95).")
SLO_TTFT = _r("infertune_slo_ttft_seconds", Type.GAUGE, "The time-to-first-token objective (slo.ttft), seconds.")
SLO_ITL = _r("infertune_slo_itl_seconds", Type.GAUGE, "The inter-token latency objective (slo.itl), seconds.")
OBSERVED_TTFT = _r("infertune_observed_ttft_seconds", Type.GAUGE,
                   "Observed TTFT at the SLO percentile over the metrics window, serving pods, seconds.")
OBSERVED_ITL = _r("infertune_observed_itl_seconds", Type.GAUGE,
                  "Observed per-request ITL at the SLO percentile over the metrics window, serving pods, seconds.")
OUTPUT_TOKENS = _r("infertune_output_tokens_per_second", Type.GAUGE, "Output tokens/s of all serving pods.")
REQUEST_RATE = _r("infertune_requests_per_second", Type.GAUGE, "Requests/s of all serving pods.")
MBU = _r("infertune_mbu", Type.GAUGE,
         "Memory-bandwidth utilisation of serving pods, 0-1: DCGM_FI_PROF_DRAM_ACTIVE, or estimated from token "
         "rates and the performance model without DCGM (status.observed.mbuSource says which).")
COST_PER_MILLION = _r("infertune_cost_per_million_output_tokens", Type.GAUGE,
                      "GPU cost of every pod (serving, standby, starting) over output tokens, per million.")
COST_PER_HOUR = _r("infertune_cost_per_hour", Type.GAUGE, "GPU cost per hour of every pod of the resource.")
STANDBY_COST_SHARE = _r("infertune_standby_cost_share", Type.GAUGE, "Share of the GPU cost spent on standby pods.")
METRICS_AVAILABLE = _r("infertune_metrics_available", Type.GAUGE,
                       "1 when the MetricsAvailable condition is True (decisions use live metrics), else 0.")
ROLLBACKS = _r("infertune_rollbacks_total", Type.COUNTER,
               "Configurations rolled back after a failed verification or a failed rollout.")
CONDITION = _r("infertune_condition", Type.GAUGE,
               "1 for the current status and reason of each condition type; one series per type.",
               "type", "status", "reason")
POD_INFO = _r("infertune_pod_info", Type.GAUGE,
              "1 per pod the resource owns, with its revision and role (serving, standby, starting, draining); "
              "join engine series on (namespace, pod) to get the resource name.", "pod", "revision", "role")

# ------------------------------------------------------------------------------------------ per operator

# A reconcile is one observe -> decide -> apply -> status write; the API server and Prometheus dominate.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECONCILE_DURATION = Metric("infertune_reconcile_duration_seconds", Type.HISTOGRAM,
                            "Wall time of one reconcile of one resource.", buckets=RECONCILE_BUCKETS)
PROMQL_QUERIES = Metric("infertune_promql_queries_total", Type.COUNTER,
                        "PromQL queries sent (one batch per cycle for all resources; retries count).")
PROMQL_ERRORS = Metric("infertune_promql_errors_total", Type.COUNTER,
                       "PromQL queries that failed (HTTP error, timeout, malformed result).")
API_ERRORS = Metric("infertune_api_errors_total", Type.COUNTER,
                    "Kubernetes API calls that failed (apply, patch, delete, list, status).")
BUILD_INFO = Metric("infertune_build_info", Type.GAUGE, "Always 1; the operator's version.", labels=("version",))

PER_RESOURCE: tuple[Metric, ...] = (
    DECISIONS, MAX_BATCH_SIZE, KV_CACHE_FP8, KNEE_MAX_BATCH_SIZE, KNEE_GOODPUT, KNEE_CONFIDENCE, REPLICAS,
    COLD_START, SLO_ATTAINMENT, SLO_ATTAINMENT_OBJECTIVE, SLO_TTFT, SLO_ITL, OBSERVED_TTFT, OBSERVED_ITL,
    OUTPUT_TOKENS, REQUEST_RATE, MBU, COST_PER_MILLION, COST_PER_HOUR, STANDBY_COST_SHARE, METRICS_AVAILABLE,
    ROLLBACKS, CONDITION, POD_INFO,
)
PER_OPERATOR: tuple[Metric, ...] = (RECONCILE_DURATION, PROMQL_QUERIES, PROMQL_ERRORS, API_ERRORS, BUILD_INFO)
METRICS: tuple[Metric, ...] = (*PER_RESOURCE, *PER_OPERATOR)
BY_NAME: Mapping[str, Metric] = {m.name: m for m in METRICS}

REPLICA_STATES = ("serving", "standby", "desired", "desired_standby")
POD_ROLES = ("serving", "standby", "starting", "draining")


def series_names() -> frozenset[str]:
    """Every name a PromQL expression may use for the operator's own metrics."""
    return frozenset(n for m in METRICS for n in m.series_names)


# ------------------------------------------------------------------------------------------ values


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One gauge value: set `metric` with these label values (in the metric's label order)."""

    metric: Metric
    labels: tuple[str, ...]
    value: float


def resource_samples(
    namespace: str, name: str, spec: models.InferenceDeploymentSpec, status: models.InferenceDeploymentStatus
) -> tuple[Sample, ...]:
    """The per-resource gauges for one status; a value the status lacks is left out (remove its series).

    Counters are not here: the shell increments DECISIONS and ROLLBACKS for each new status.decisions entry.
    """
    key = (namespace, name)
    out: list[Sample] = []

    def put(metric: Metric, value: float | None, *extra: str) -> None:
        if value is not None:
            out.append(Sample(metric, (*key, *extra), float(value)))

    cfg = status.config
    if cfg is not None:
        put(MAX_BATCH_SIZE, cfg.max_batch_size)
        put(KV_CACHE_FP8, 1.0 if cfg.kv_cache_dtype is models.KvDtype.FP8 else 0.0)
    if status.knee is not None:
        put(KNEE_MAX_BATCH_SIZE, status.knee.max_batch_size)
        put(KNEE_GOODPUT, status.knee.goodput)
        put(KNEE_CONFIDENCE, status.knee.confidence)
    r = status.replicas
    for state, value in zip(REPLICA_STATES, (r.serving, r.standby, r.desired, r.desired_standby), strict=True):
        put(REPLICAS, value, state)
    put(COLD_START, status.cold_start_seconds)
    put(SLO_TTFT, spec.slo.ttft)
    put(SLO_ITL, spec.slo.itl)
    put(SLO_ATTAINMENT_OBJECTIVE, spec.slo.percentile / 100.0)
    o = status.observed
    if o is not None:
        put(SLO_ATTAINMENT, o.slo_attainment)
        put(MBU, o.mbu)
        put(OBSERVED_TTFT, None if o.ttft_p95_ms is None else o.ttft_p95_ms / 1000.0)
        put(OBSERVED_ITL, None if o.itl_p95_ms is None else o.itl_p95_ms / 1000.0)
        put(OUTPUT_TOKENS, o.output_tokens_per_second)
        put(REQUEST_RATE, o.request_rate)
    c = status.cost
    if c is not None:
        put(COST_PER_MILLION, c.cost_per_million_output_tokens)
        put(COST_PER_HOUR, c.hourly)
        put(STANDBY_COST_SHARE, c.standby_share)
    for cond in status.conditions:
        put(CONDITION, 1.0, cond.type, cond.status, cond.reason)
        if cond.type == models.ConditionType.METRICS_AVAILABLE:
            put(METRICS_AVAILABLE, 1.0 if cond.status == "True" else 0.0)
    return tuple(out)


def pod_role(pod: observation.PodFacts) -> str:
    """serving, standby (Ready without the serving label), starting (not Ready) or draining (being deleted)."""
    if pod.deleting:
        return "draining"
    if not pod.ready:
        return "starting"
    return "serving" if pod.serving else "standby"


def pod_samples(namespace: str, name: str, pods: Iterable[observation.PodFacts]) -> tuple[Sample, ...]:
    """`infertune_pod_info` for the resource's pods: the join from engine series to the resource."""
    return tuple(Sample(POD_INFO, (namespace, name, p.name, p.revision, pod_role(p)), 1.0) for p in pods)


# Reason codes of infertune_decisions_total. status.decisions reasons are free text with numbers, which would
# make a label of unbounded cardinality; decision_reason maps them onto this fixed vocabulary.
DECISION_KINDS = ("knobs", "rollback", "verify", "revision", "replicas", "standby")
DECISION_REASONS = frozenset({
    "recommended", "slo_violation", "goodput_gain",  # knobs
    "crash_loop", "not_ready", "prefix_cache_collapse", "latency_regression",  # rollback
    "verified", "nothing_to_roll_back",  # verify
    "initial", "bounds_changed", "spec_changed",  # revision
    "scale_up", "scale_down", "frozen",  # replicas, standby
    "other",
})
# (kind, pattern searched in "action\nreason", code), first match wins.
_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("knobs", r"recommendation only", "recommended"),
    ("knobs", r"misses the ITL SLO", "slo_violation"),
    ("knobs", r"predicted goodput", "goodput_gain"),
    ("rollback", r"restarted \d+ times", "crash_loop"),
    ("rollback", r"became Ready", "not_ready"),
    ("rollback", r"prefix-cache hit rate", "prefix_cache_collapse"),
    ("rollback", r"measured ITL", "latency_regression"),
    ("verify", r"no earlier configuration", "nothing_to_roll_back"),
    ("verify", r"^kept maxBatchSize", "verified"),
    ("revision", r"spec no longer allows", "bounds_changed"),
    ("revision", r"initialMaxBatchSize|default \(\d+\)", "initial"),
    ("revision", r"", "spec_changed"),
)
_CHANGE = re.compile(r"(\d+) -> (\d+)")


def decision_kind(record: models.DecisionRecord) -> str:
    """The record's kind, or `other` for a kind this table does not know (keeps the label bounded)."""
    return record.kind if record.kind in DECISION_KINDS else "other"


def decision_reason(record: models.DecisionRecord) -> str:
    """A bounded reason code for a decision record: `slo_violation`, `goodput_gain`, `crash_loop`, ..."""
    if record.kind in ("replicas", "standby"):
        if record.reason.startswith("frozen"):
            return "frozen"
        change = _CHANGE.search(record.action)
        if change is not None:
            return "scale_up" if int(change.group(2)) > int(change.group(1)) else "scale_down"
        return "other"
    text = f"{record.action}\n{record.reason}"
    for kind, pattern, code in _PATTERNS:
        if record.kind == kind and re.search(pattern, text, flags=re.MULTILINE):
            return code
    return "other"
