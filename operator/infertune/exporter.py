"""Adapter: the operator's own /metrics (prometheus_client), fed from each status the shell writes."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import prometheus_client

from infertune import __version__, models, observation, telemetry

Key = tuple[str, str]  # (namespace, name)
Family = prometheus_client.Gauge | prometheus_client.Counter | prometheus_client.Histogram


class Exporter:
    """Per-resource gauges and counters from statuses, per-operator counters and the reconcile histogram.

    Gauges of a resource are replaced wholesale on every update (stale label sets, such as a condition's old
    reason, are removed); counters start at 0 the first time a resource is seen, so `increase()` sees its
    first event; everything of a resource goes when it is deleted.
    """

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}
        for m in telemetry.METRICS:
            name = m.name.removesuffix("_total") if m.type is telemetry.Type.COUNTER else m.name
            if m.type is telemetry.Type.COUNTER:
                self._families[m.name] = prometheus_client.Counter(name, m.help, m.labels, registry=self.registry)
            elif m.type is telemetry.Type.HISTOGRAM:
                self._families[m.name] = prometheus_client.Histogram(
                    name, m.help, m.labels, buckets=m.buckets, registry=self.registry)
            else:
                self._families[m.name] = prometheus_client.Gauge(name, m.help, m.labels, registry=self.registry)
        self._gauge_labels: dict[Key, set[tuple[str, tuple[str, ...]]]] = {}
        self._counter_labels: dict[Key, set[tuple[str, tuple[str, ...]]]] = {}
        self._promql_seen = (0, 0)
        self.gauge(telemetry.BUILD_INFO).labels(__version__).set(1)

    def gauge(self, metric: telemetry.Metric) -> prometheus_client.Gauge:
        family = self._families[metric.name]
        assert isinstance(family, prometheus_client.Gauge)
        return family

    def counter(self, metric: telemetry.Metric) -> prometheus_client.Counter:
        family = self._families[metric.name]
        assert isinstance(family, prometheus_client.Counter)
        return family

    def update(self, namespace: str, name: str, *, spec: models.InferenceDeploymentSpec,
               status: models.InferenceDeploymentStatus, pods: Iterable[observation.PodFacts],
               new_records: Iterable[models.DecisionRecord]) -> None:
        key = (namespace, name)
        samples = [*telemetry.resource_samples(namespace, name, spec, status),
                   *telemetry.pod_samples(namespace, name, pods)]
        with self._lock:
            fresh = {(s.metric.name, s.labels) for s in samples}
            for metric_name, labels in self._gauge_labels.get(key, set()) - fresh:
                self._families[metric_name].remove(*labels)
            for s in samples:
                self.gauge(s.metric).labels(*s.labels).set(s.value)
            self._gauge_labels[key] = fresh
            counters = self._counter_labels.setdefault(key, set())
            if (telemetry.ROLLBACKS.name, key) not in counters:
                self.counter(telemetry.ROLLBACKS).labels(*key)  # a child at 0, so increase() sees the first
                counters.add((telemetry.ROLLBACKS.name, key))
            for record in new_records:
                labels = (*key, telemetry.decision_kind(record), telemetry.decision_reason(record))
                self.counter(telemetry.DECISIONS).labels(*labels).inc()
                counters.add((telemetry.DECISIONS.name, labels))
                if record.kind == "rollback":
                    self.counter(telemetry.ROLLBACKS).labels(*key).inc()

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: its series go too."""
        key = (namespace, name)
        with self._lock:
            for metric_name, labels in self._gauge_labels.pop(key, set()) | self._counter_labels.pop(key, set()):
                self._families[metric_name].remove(*labels)

    def reconciled(self, seconds: float) -> None:
        family = self._families[telemetry.RECONCILE_DURATION.name]
        assert isinstance(family, prometheus_client.Histogram)
        family.observe(seconds)

    def api_error(self) -> None:
        self.counter(telemetry.API_ERRORS).inc()

    def promql(self, sent: int, errors: int) -> None:
        """Totals from the Prometheus source; only what is new since the last call is added."""
        with self._lock:
            old_sent, old_errors = self._promql_seen
            if sent > old_sent:
                self.counter(telemetry.PROMQL_QUERIES).inc(sent - old_sent)
            if errors > old_errors:
                self.counter(telemetry.PROMQL_ERRORS).inc(errors - old_errors)
            self._promql_seen = (max(sent, old_sent), max(errors, old_errors))

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)

    def text(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()
