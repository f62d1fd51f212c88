"""Shell: the operator process: connect the adapters, configure kopf, run until stopped."""

from __future__ import annotations

import logging

import kopf

from infertune import exporter, handlers, kube, models, prometheus

log = logging.getLogger("infertune")


async def run(config: models.OperatorConfig, *, kubeconfig: str | None = None, liveness: str | None = None) -> int:
    """Run the operator; returns the exit status."""
    cluster = await kube.KubeCluster.connect(kubeconfig)
    source = None
    if config.prometheus_url:
        token = None
        if config.prometheus_token_file:
            with open(config.prometheus_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        query = prometheus.connect(config.prometheus_url, token=token, ca_file=config.prometheus_ca_file)
        # The batch for 1,000 pods takes 1-2 s on a busy 2-core machine: a 1 s budget (interval 1 s, as the e2e
        # suite runs) timed out and froze every resource. Cycles are not held up by it: a snapshot past its
        # age is served while the next one is fetched (prometheus.Source.snapshot).
        source = prometheus.Source(query=query, window=config.metrics_window,
                                   budget=max(5.0, min(10.0, config.interval * 0.8)))
    own_metrics = None
    if config.metrics_port:
        own_metrics = exporter.Exporter()
        own_metrics.serve(config.metrics_port)
        log.info("operator metrics on :%d/metrics", config.metrics_port)
    operator = handlers.Operator(config=config, cluster=cluster, kubeconfig=kubeconfig, metrics=source,
                                 exporter=own_metrics)
    registry = kopf.OperatorRegistry()
    handlers.register(operator, registry)
    settings = kopf.OperatorSettings()
    handlers.configure(settings, config)
    log.info(
        "infertune starting: namespaces=%s interval=%ss prometheus=%s dry_run=%s",
        ",".join(config.namespaces) or "(all)", config.interval, config.prometheus_url or "(none)", config.dry_run,
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=config.standalone,
            priority=config.priority,
            peering_name=config.peering_name,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        await cluster.close()
    return 0
