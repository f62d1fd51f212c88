"""Shell: kopf handlers that run observe -> decide -> render -> apply -> report, and hold no policy."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import kopf

from infertune import conditions, decide, kube, models, observation, prometheus, render, validation
from infertune import exporter as exporter_

log = logging.getLogger("infertune")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def seen_edges(raws: list[prometheus.RawPod]) -> dict[str, tuple[float, ...]]:
    """Signal ("ttft", "tpot", ...) -> the finite `le` edges these pods' histograms have, for the core to check the
    objectives against (resolution.check); a pod that observed nothing sends only +Inf and adds none."""
    edges: dict[str, set[float]] = {}
    for raw in raws:
        for signal, buckets in raw.buckets.items():
            edges.setdefault(signal.value, set()).update(le for le, _ in buckets if math.isfinite(le))
    return {k: tuple(sorted(v)) for k, v in edges.items() if v}


@dataclasses.dataclass
class Operator:
    """The composition root: adapters chosen once at start-up, shared by every handler call."""

    config: models.OperatorConfig
    cluster: kube.Cluster
    kubeconfig: str | None = None
    metrics: prometheus.Source | None = None
    exporter: exporter_.Exporter | None = None
    clock: Callable[[], datetime.datetime] = utcnow
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)
    # Per object: the generation and revisions whose Service and config were last made sure of, and when.
    ensured: dict[str, tuple[int, frozenset[str], float]] = dataclasses.field(default_factory=dict)
    # Per object: the latest status decided (the next decision builds on it: a handler's body can predate the
    # previous cycle), what the API server holds, and when it was last written.
    latest: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    written: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    written_at: dict[str, float] = dataclasses.field(default_factory=dict)
    # Objects deleted whose cycle has not yet stopped (see register's cycle).
    gone: set[str] = dataclasses.field(default_factory=set)
    # Reconciles in flight at once. A steady one takes milliseconds, so a few are in flight at 500 a second;
    # without a bound, 1,000 resources created together run 1,000 reconciles at once, each with its fresh
    # reads and renders alive, and the process keeps that peak as its resident size for good.
    slots: asyncio.Semaphore = dataclasses.field(default_factory=lambda: asyncio.Semaphore(CONCURRENT_RECONCILES))

    async def reconcile(self, body: kopf.Body, logger: logging.Logger | Any, cached: Facts | None = None) -> None:
        uid = body["metadata"]["uid"]
        # Change handlers and the cycle may fire together for one object; one reconcile at a time.
        async with self.locks.setdefault(uid, asyncio.Lock()), self.slots:
            started = time.perf_counter()
            try:
                await self._reconcile(body, logger, cached)
            except kube.ApiError as e:
                if self.exporter is not None:
                    self.exporter.api_error()
                # Deleted while the cycle ran (its namespace or the resource itself): nothing to retry.
                if e.status == 404 and not await self.cluster.exists(body["metadata"]["namespace"],
                                                                     body["metadata"]["name"], uid):
                    logger.info("the resource is gone; cycle abandoned")
                    self.forget(body)
                    return
                raise
            finally:
                if self.exporter is not None:
                    self.exporter.reconciled(time.perf_counter() - started)
                    if self.metrics is not None:
                        self.exporter.promql(self.metrics.queries_sent, self.metrics.errors)

    def forget(self, body: kopf.Body) -> None:
        """The resource was deleted: drop what this process keeps about it."""
        meta = body["metadata"]
        self.gone.add(meta["uid"])
        self.locks.pop(meta["uid"], None)
        self.latest.pop(meta["uid"], None)
        self.ensured.pop(meta["uid"], None)
        self.written.pop(meta["uid"], None)
        self.written_at.pop(meta["uid"], None)
        if self.exporter is not None:
            self.exporter.forget(meta["namespace"], meta["name"])

    async def _reconcile(self, body: kopf.Body, logger: logging.Logger | Any, cached: Facts | None) -> None:
        meta = body["metadata"]
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        generation = int(meta.get("generation") or 0)
        previous_raw = self.latest.get(uid) or dict(body.get("status") or {})
        previous = kube.parse_status(previous_raw)
        now = self.clock()

        spec, problems = validation.parse(dict(body.get("spec") or {}))
        problems = validation.check_name(name) + problems
        if spec is None or problems:
            message = "; ".join(str(p) for p in problems)
            status = decide.invalid_status(previous, message=message, generation=generation, now=now)
            old = conditions.get(previous.conditions, models.ConditionType.SPEC_VALID)
            if old is None or old.status != "False" or old.message != message:
                logger.warning(f"invalid spec, nothing changed: {message}")
                kopf.warn(body, reason="InvalidSpec", message=message[:1024])
            await self._write_status(namespace, name, uid, previous_raw, status)
            return

        owner = render.Owner(name=name, namespace=namespace, uid=uid)

        async def decide_from(facts: Facts) -> tuple[observation.Decision, tuple[observation.PodFacts, ...]]:
            deployments, pods = facts
            pod_facts = tuple(p for p in map(kube.pod_facts, pods) if p is not None)
            obs = observation.Observation(
                name=name, namespace=namespace, generation=generation, spec=spec, status=previous,
                revisions=tuple(r for r in map(kube.revision_facts, deployments) if r is not None),
                pods=pod_facts, metrics=await self._metrics(namespace, spec, pod_facts),
            )
            return decide.decide(obs, now=now), pod_facts

        # A steady cycle decides from the watch caches (no API request: 1,000 resources at a 15 s interval
        # would otherwise LIST 133 times a second). A cache can lag a just-created revision or pod, so a
        # decision that would write anything is made again from a fresh read before it acts: the old
        # revision is never removed, nor a pod relabelled, on a stale picture.
        facts = cached
        if facts is not None:
            decision, pod_facts = await decide_from(facts)
            rendered = render.revisions(owner, spec, decision)
            if kube.would_write(owner.uid, decision, rendered, facts[0]):
                facts = None
        if facts is None:
            facts = await self.cluster.facts(namespace, name)
            decision, pod_facts = await decide_from(facts)
            rendered = render.revisions(owner, spec, decision)
        deployments = facts[0]
        status = decision.status
        if self.config.dry_run:
            logger.info(f"dry run: would run {[(p.revision, p.replicas) for p in decision.revisions]}")
            return
        try:
            await self._apply(owner, decision, rendered, deployments, generation=generation)
        except kube.ApiError as e:
            # Say what failed where people look, then let kopf retry the cycle. Only the condition is written:
            # the decision itself (its records, its target) is made again by the retry, whose events are then
            # posted once; writing it now would record a decision whose event never went out.
            failed = previous.model_copy(update={"conditions": conditions.upsert(
                previous.conditions, type=models.ConditionType.DEGRADED, status=True, reason="ApiError",
                message=str(e)[:1024], generation=generation, now=now)})
            await self._write_status(namespace, name, uid, previous_raw, failed)
            raise
        except kube.NotOwnedError as e:
            # Onto the Degraded this resource had before the cycle (decide() rewrote it as AsExpected, knowing
            # nothing of the conflict): a conflict that lasts keeps the time it began.
            prior = tuple(c for c in previous.conditions if c.type == models.ConditionType.DEGRADED)
            kept = tuple(c for c in status.conditions if c.type != models.ConditionType.DEGRADED) + prior
            status = status.model_copy(update={"conditions": conditions.upsert(
                kept, type=models.ConditionType.DEGRADED, status=True, reason="NameConflict",
                message=str(e), generation=generation, now=now)})
            if not conditions.is_true(previous.conditions, models.ConditionType.DEGRADED):
                kopf.warn(body, reason="NameConflict", message=str(e))
        await self._write_status(namespace, name, uid, previous_raw, status)
        if self.exporter is not None:
            seen = {(r.time, r.kind, r.action) for r in previous.decisions}
            fresh = [r for r in status.decisions if (r.time, r.kind, r.action) not in seen]
            self.exporter.update(namespace, name, spec=spec, status=status, pods=pod_facts, new_records=fresh)
        for event in decision.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])

    async def _metrics(self, namespace: str, spec: models.InferenceDeploymentSpec,
                       pods: tuple[observation.PodFacts, ...]) -> observation.Metrics | None:
        """This resource's pods out of the cycle's shared snapshot (one batch of queries for every resource)."""
        if self.metrics is None:
            return None
        # Rates over a minute-long window barely move in a few seconds: one snapshot serves every resource for
        # at least 5 s, however short the interval (18 queries per snapshot, whatever the number of pods).
        snap = await self.metrics.snapshot(max_age=max(self.config.interval * 0.8, 5.0))
        grace = self.metrics.window + 15.0
        if not snap.ok:
            failed = ", ".join(snap.failed_signals[:4])
            return observation.Metrics(available=False, reason="PrometheusUnavailable", grace=grace,
                                       message=f"Prometheus query failed ({snap.error}); signals: {failed}")
        out: dict[str, observation.PodMetrics] = {}
        ignored: list[str] = []
        raws: list[prometheus.RawPod] = []
        for p in pods:
            raw = snap.pods.get((namespace, p.name))
            if raw is None:
                continue
            raws.append(raw)
            out[p.name] = prometheus.pod_metrics(raw, percentile=spec.slo.percentile, ttft_slo=spec.slo.ttft,
                                                 itl_slo=spec.slo.itl)
            ignored += [f"{p.name} {d}" for d in raw.dropped]
        return observation.Metrics(pods=out, grace=grace, window=self.metrics.window, ignored=tuple(ignored),
                                   edges=seen_edges(raws))

    async def _patch_pods(self, owner: render.Owner, patches: tuple[observation.PodPatch, ...]) -> None:
        for p in patches:
            labels: dict[str, str | None] = {}
            annotations: dict[str, str | None] = {}
            if p.serving is not None:
                labels[render.LABEL_SERVING] = "true" if p.serving else None
                annotations[render.ANNOTATION_UNSERVED_SINCE] = None if p.serving else p.unserved_since
            if p.deletion_cost is not None:
                annotations[render.ANNOTATION_DELETION_COST] = str(p.deletion_cost) if p.deletion_cost else None
            await self.cluster.patch_pod(owner.namespace, p.name, labels=labels, annotations=annotations)
            log.info("Pod %s/%s patched: labels %s, annotations %s", owner.namespace, p.name, labels, annotations)

    async def _write(self, owner: render.Owner, manifest: dict[str, Any], known: dict[str, Any] | None) -> None:
        """Apply one manifest; every write that reaches the API server is logged, for whoever reads the log after
        an incident (a decision's event says why; this says what was written, and when)."""
        done = await self.cluster.apply(manifest, owner_uid=owner.uid, known=known)
        if done != "unchanged":
            size = f" (replicas {manifest['spec']['replicas']})" if manifest["kind"] == "Deployment" else ""
            log.info("%s %s/%s %s%s", manifest["kind"], owner.namespace, manifest["metadata"]["name"], done, size)

    async def _apply(
        self, owner: render.Owner, decision: observation.Decision, rendered: render.Rendered,
        deployments: list[dict[str, Any]], *, generation: int,
    ) -> None:
        # Pod patches go first: a deletion cost must be on the pod before its Deployment shrinks.
        await self._patch_pods(owner, decision.pod_patches)
        keep = set()
        known = {d["metadata"]["name"]: d for d in deployments}
        # Service and per-revision config change only with the spec or the set of revisions: made sure of
        # then, and every ENSURE_EVERY seconds (someone may have deleted them), not on every cycle.
        revisions = frozenset(p.revision for p in decision.revisions)
        last = self.ensured.get(owner.uid)
        ensure = (last is None or last[:2] != (generation, revisions)
                  or time.monotonic() - last[2] >= ENSURE_EVERY)
        for revision_name, manifests in rendered:
            for manifest in manifests:
                if manifest["kind"] != "Deployment":
                    if ensure:
                        await self._write(owner, manifest, None)
                    continue
                current = known.get(manifest["metadata"]["name"])
                if render.applies(manifest, current):
                    await self._write(owner, manifest, current)
            keep.add(revision_name)
        if ensure:
            self.ensured[owner.uid] = (generation, revisions, time.monotonic())
        for d in deployments:
            meta = d["metadata"]
            if meta["name"] in keep or not kube.owned_by(d, owner.uid):
                continue
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta}
            if await self.cluster.delete(deployment, owner_uid=owner.uid):
                log.info("Deployment %s/%s deleted", owner.namespace, meta["name"])
            # The revision's ConfigMap (TensorRT-LLM options) goes with it; absent for other engines.
            await self.cluster.delete({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}, owner_uid=owner.uid)

    async def _write_status(self, namespace: str, name: str, uid: str, previous: dict[str, Any],
                            status: models.InferenceDeploymentStatus) -> None:
        new = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.latest[uid] = new
        stored = self.written.get(uid, previous)
        if new == stored:
            return
        # Measurements drift every cycle; writing each drift would be a status write per resource per interval
        # (1,000 resources at 15 s: 67 writes/s, each an event for every watcher). Decisions, conditions and
        # replica counts go out at once; measurements at most every measurement_refresh() seconds.
        significant = {k for k in set(new) | set(stored) if new.get(k) != stored.get(k)} - MEASUREMENTS
        now = time.monotonic()
        if not significant and now - self.written_at.get(uid, -math.inf) < measurement_refresh(len(self.latest)):
            return
        # A merge patch: keys that vanished are sent as null so the API server removes them.
        patch: dict[str, Any] = {key: None for key in stored if key not in new}
        for key, value in new.items():
            if stored.get(key) != value:
                patch[key] = _nulls_for_removed(stored.get(key), value)
        await self.cluster.patch_status(namespace, name, patch)
        self.written[uid] = new
        self.written_at[uid] = now


ENSURE_EVERY = 300.0
CONCURRENT_RECONCILES = 32

# An object's owned Deployments and pods, as the API server (or a watch cache of it) holds them.
Facts = tuple[list[dict[str, Any]], list[dict[str, Any]]]


# Status fields that only report measurements (and the smoothing state behind them).
MEASUREMENTS = frozenset({"observed", "cost", "demand", "knee", "coldStartSeconds"})
STATUS_REFRESH = 30.0
# Measurement-only status writes, all resources together, per second. Each write is an etcd write, a watch
# event to every watcher (this operator included: about 3 ms of its time to process) and a request: at 1,000
# resources a 30 s refresh is 33 writes a second for numbers that the operator's own /metrics already serves
# live. Past 300 resources the refresh stretches instead: 1,000 resources refresh every 100 s.
STATUS_WRITES_PER_S = 10.0


def measurement_refresh(resources: int) -> float:
    """Seconds between measurement-only status writes of one resource, when this many are reconciled."""
    return max(STATUS_REFRESH, resources / STATUS_WRITES_PER_S)


def _nulls_for_removed(old: Any, new: Any) -> Any:
    """Merge-patch form of `new` over `old`: nested keys that disappeared become None."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = {k: _nulls_for_removed(old.get(k), v) for k, v in new.items()}
        out.update({k: None for k in old if k not in new})
        return out
    return new


DEPLOYMENT_INDEX = "infertune_deployments"
POD_INDEX = "infertune_pods"


def exact_namespaces(namespaces: tuple[str, ...]) -> bool:
    """Whether the operator watches a list of plain namespace names, not all namespaces or globs.

    kopf reads '*', '?', '!' and ',' as pattern syntax (kopf's references.select_specific_namespaces)."""
    return bool(namespaces) and not any(set(ns) & set("*?!,") for ns in namespaces)


def configure(settings: kopf.OperatorSettings, config: models.OperatorConfig) -> None:
    """kopf settings: progress in annotations (the status schema stays ours), quick retries, posting."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=models.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=models.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    # The watch caches of Deployments and pods hold only what the operator manages: filtered by the API
    # server, so a cluster's 10,000 other pods are never streamed to (or kept by) the operator.
    owned = f"{render.LABEL_MANAGED_BY}={render.MANAGED_BY}"
    settings.watching.label_selectors["apps", "v1", "deployments"] = owned
    settings.watching.label_selectors["", "v1", "pods"] = owned
    # Plain namespace names (the namespaced install, manifests/kustomization.yaml): kopf has no glob to resolve,
    # so it need not list or watch namespaces, nor watch CRDs; the operator then needs no cluster-wide
    # permission. It reads the CRD once through discovery, which main.run checks before starting.
    settings.scanning.disabled = exact_namespaces(config.namespaces)
    settings.peering.standalone = config.standalone
    settings.peering.priority = config.priority
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = not config.namespaces
        settings.peering.lifetime = config.peering_lifetime


def register(operator: Operator, registry: kopf.OperatorRegistry) -> None:
    """Attach the handlers for one Operator to a registry (the interval comes from the config)."""
    resource = (models.GROUP, models.VERSION, models.PLURAL)

    async def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf talks to the API server with exactly the credentials the kube adapter uses.
        c = await kube.load_configuration(operator.kubeconfig)
        token = await kube.bearer_token(c)
        return kopf.ConnectionInfo(
            server=c.host, ca_path=c.ssl_ca_cert, insecure=not c.verify_ssl,
            scheme="Bearer" if token else None, token=token,
            certificate_path=c.cert_file, private_key_path=c.key_file,
        )

    kopf.on.login(registry=registry)(login)

    def keyed(body: kopf.Body, labels: kopf.Labels, namespace: str | None,
              trim: Callable[[kopf.Body], dict[str, Any]]) -> Any:
        owner = labels.get(render.LABEL_DEPLOYMENT)
        if not owner:
            return None
        trimmed = trim(body)
        # managedFields is about half of an object's bytes, and no cycle reads it.
        trimmed["metadata"] = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        return {(namespace, owner): trimmed}

    def pod(body: kopf.Body) -> dict[str, Any]:
        # kube.pod_facts reads the node, the phase, the Ready condition and restart counts: not the spec
        # (containers, args, env), images, container IDs or states: 190 of the 980 bytes of a bench pod's
        # status are kept, and 40 of its 2,460 bytes of spec.
        status = body.get("status") or {}
        return {**body, "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")}, "status": {
            "phase": status.get("phase"),
            "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "Ready"],
            "containerStatuses": [{"restartCount": c.get("restartCount")}
                                  for c in status.get("containerStatuses") or []],
        }}

    def deployment(body: kopf.Body) -> dict[str, Any]:
        # Its spec is compared with the rendered one, so it stays whole; kube.revision_facts reads its ready
        # replicas, not its conditions (620 bytes).
        status = body.get("status") or {}
        return {**body, "status": {k: status[k] for k in ("replicas", "readyReplicas") if k in status}}

    def deployments_by_owner(body: kopf.Body, labels: kopf.Labels, namespace: str | None, **_: Any) -> Any:
        return keyed(body, labels, namespace, deployment)

    def pods_by_owner(body: kopf.Body, labels: kopf.Labels, namespace: str | None, **_: Any) -> Any:
        return keyed(body, labels, namespace, pod)

    # Watch caches of the owned Deployments and pods, keyed by (namespace, InferenceDeployment). The label
    # selector is sent to the API server (settings.watching.label_selectors in configure()): the operator
    # never streams pods it does not own.
    owned = {render.LABEL_MANAGED_BY: render.MANAGED_BY}
    kopf.index("apps", "v1", "deployments", registry=registry, id=DEPLOYMENT_INDEX,
               labels=owned)(deployments_by_owner)
    kopf.index("v1", "pods", registry=registry, id=POD_INDEX, labels=owned)(pods_by_owner)

    def cached(body: kopf.Body, kwargs: dict[str, Any]) -> Facts | None:
        deployments, pods = kwargs.get(DEPLOYMENT_INDEX), kwargs.get(POD_INDEX)
        if deployments is None or pods is None:
            return None
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        return [dict(d) for d in deployments.get(key, [])], [dict(p) for p in pods.get(key, [])]

    async def on_change(body: kopf.Body, logger: Any, **kwargs: Any) -> None:
        await operator.reconcile(body, logger, cached(body, kwargs))

    # A failed cycle (API server hiccup) is retried soon, not after kopf's default minute.
    backoff = min(max(operator.config.interval, 1.0), 30.0)

    async def cycle(body: kopf.Body, logger: Any, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        """One long-lived task per resource that reconciles it every interval until it is stopped.

        A kopf timer would do the same, but each firing goes through kopf's handler machinery (progress state,
        kwargs, an empty patch to apply, an INFO line "Timer 'cycle' succeeded."): at 1,000 resources and a
        15 s interval that is 67 log lines a second that say nothing, and most of each cycle's CPU. The daemon
        is stopped as a timer is: on operator exit and when peering pauses this instance (it is started again
        on resume); `body` is kopf's live view of the resource and the indexes are live too.
        """
        uid = body["metadata"]["uid"]
        delay = operator.config.interval
        while not await stopped.wait(delay):
            if uid in operator.gone:
                # kopf stops a daemon when it sees the deletion timestamp, which an object without a finalizer
                # never shows: left running, this cycle would re-create the children that garbage collection
                # just removed (a Deployment with an owner that no longer exists, once a second, for ever).
                operator.gone.discard(uid)
                return
            delay = backoff
            try:
                await operator.reconcile(body, logger, cached(body, kwargs))
                delay = operator.config.interval
            except kube.ApiError as e:  # the API server refused or failed: Degraded says so already
                logger.warning(f"cycle failed, retrying in {backoff:g} s: {e}"[:2048])
            except Exception:  # anything else is a bug: its traceback, and the loop goes on
                logger.exception(f"cycle failed, retrying in {backoff:g} s")

    async def on_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED":
            operator.forget(body)

    # No finalizer for this one: it only lets go of what the process remembers. The filter runs before kopf
    # invokes (and logs) a handler: every status write echoes back as an event, 33 a second at 1,000
    # resources, and each would otherwise cost a handler call and an INFO line for nothing.
    kopf.on.event(*resource, registry=registry, id="forget",
                  when=lambda type, **_: type == "DELETED")(on_event)
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*resource, registry=registry, id="reconcile", backoff=backoff)(on_change)
    kopf.daemon(*resource, registry=registry, id="cycle", backoff=backoff)(cycle)
    _without_finalizer(registry)


def _without_finalizer(registry: kopf.OperatorRegistry) -> None:
    """Let resources go without the operator: kopf gives daemons a finalizer by default, which leaves an
    InferenceDeployment (and its namespace) stuck Terminating whenever the operator is not running. The cycle
    only reconciles; nothing needs cleaning up before deletion (owner references collect the children), so
    the cycle is registered without one. kopf exposes no switch for this: the handler is replaced in place.
    """
    spawning = getattr(registry, "_spawning", None)
    handlers_ = getattr(spawning, "_handlers", None)
    if not isinstance(handlers_, list):
        log.warning("kopf internals changed: the cycle keeps its finalizer (delete resources before the operator)")
        return
    handlers_[:] = [dataclasses.replace(h, requires_finalizer=False) if getattr(h, "requires_finalizer", False)
                    else h for h in handlers_]
