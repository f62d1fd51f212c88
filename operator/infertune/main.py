"""Shell: the operator process: connect the adapters, configure kopf, run until stopped."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

import kopf

from infertune import exporter, handlers, kube, models, prometheus

log = logging.getLogger("infertune")


# glibc's mallopt parameter for the number of malloc arenas (malloc.h).
M_ARENA_MAX = -8
ARENAS = 2
TRIM_EVERY = 60.0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


async def keep_memory_small(every: float = TRIM_EVERY) -> None:
    """Give freed heap back to the kernel every minute (glibc only; elsewhere a no-op).

    glibc keeps what a burst freed (1,000 resources created at once) as the process's resident size, and gives
    each thread that ever allocated its own arena: the Prometheus query threads and the /metrics server's
    threads each kept theirs. On an operator holding 1,000 resources, one malloc_trim took 326 MiB down to
    307 MiB; with two arenas, the trim every minute and at most 32 reconciles at once, the same bench ends at
    242 MiB instead of 320 (bench/operator_overhead.py; docs/scale.md).
    """
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(M_ARENA_MAX, ARENAS)
    while True:
        await asyncio.sleep(every)
        libc.malloc_trim(0)


async def served(cluster: kube.KubeCluster) -> bool:
    """Whether the API server serves InferenceDeployments (discovery, which every authenticated user may read)."""
    try:
        group = await cluster.request("GET", f"/apis/{models.GROUP}/{models.VERSION}")
    except kube.ApiError as e:
        if e.status == 404:
            return False
        raise
    return any(r.get("name") == models.PLURAL for r in (group or {}).get("resources", []))


async def run(config: models.OperatorConfig, *, kubeconfig: str | None = None, liveness: str | None = None) -> int:
    """Run the operator; returns the exit status."""
    keeper = asyncio.create_task(keep_memory_small())
    cluster = await kube.KubeCluster.connect(kubeconfig)
    if handlers.exact_namespaces(config.namespaces) and not await served(cluster):
        # kopf does not watch CRDs in this mode (handlers.configure): started before the CRD, it would serve
        # nothing until restarted. Exiting lets the Deployment restart it until the CRD is there.
        log.error("the %s API is not served: install crds/ first (kubectl apply -k manifests/)", models.PLURAL)
        keeper.cancel()
        await cluster.close()
        return 1
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
                                   jobs=prometheus.Jobs(engine=config.engine_job, dcgm=config.dcgm_job),
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
        keeper.cancel()
        await cluster.close()
    return 0
