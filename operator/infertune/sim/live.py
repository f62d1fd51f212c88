"""Twin: live mode — plays every Ready model-server pod of a cluster in wall-clock time, with real /metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
from aiohttp import web

from infertune import catalog, kube, models, perfmodel, render, replica, validation
from infertune.runtimes import registry
from infertune.sim import engine as sim_engine
from infertune.sim import exposition, workload

log = logging.getLogger("infertune.twin")
Key = tuple[str, str]  # (namespace, name)


@dataclasses.dataclass
class Load:
    """Open-loop Poisson load on one InferenceDeployment's Service."""

    rate: float = 0.0
    isl: workload.Length = dataclasses.field(default_factory=lambda: workload.LogNormal(1000, 0.5))
    osl: workload.Length = dataclasses.field(default_factory=lambda: workload.LogNormal(200, 0.5))
    prefix_hit_rate: float = 0.0
    next_at: float = math.inf


@dataclasses.dataclass
class Counts:
    """What happened to one resource's requests."""

    arrived: int = 0
    finished: int = 0
    dropped: int = 0  # in flight on a pod that went away
    unrouted: int = 0  # arrived while the Service had no ready endpoint
    rejected: int = 0  # the engine refused them (too long for its KV cache)
    ttft_ok: int = 0
    itl_ok: int = 0


@dataclasses.dataclass
class LivePod:
    namespace: str
    name: str
    owner: str
    uid: str
    engine: sim_engine.SimEngine | None = None
    exporter: exposition.PodExporter | None = None
    metrics_path: str = "/metrics"  # where its engine serves Prometheus text (TensorRT-LLM: /prometheus/metrics)
    deleting: bool = False
    refused: str = ""  # why the twin would not run it (the engine would crash on start)


def _load_from(body: Mapping[str, Any]) -> Load:
    """A Load from JSON such as {"rate": 4, "input": {"mean": 1000, "cv": 0.5}, "output": {"mean": 200}}."""
    rate = float(body.get("rate", 0))
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be zero or more requests per second, got {body.get('rate')!r}")

    def length(key: str, default: float) -> workload.Length:
        spec = body.get(key) or {}
        if not isinstance(spec, Mapping):
            raise ValueError(f"{key} must be a mapping with mean and cv")
        mean, cv = float(spec.get("mean", default)), float(spec.get("cv", 0.5))
        return workload.Fixed(round(mean)) if cv == 0 else workload.LogNormal(mean, cv)

    hit = float(body.get("prefixHitRate", 0.0))
    if not 0 <= hit <= 1:
        raise ValueError(f"prefixHitRate must be within 0..1, got {hit}")
    return Load(rate=rate, isl=length("input", 1000), osl=length("output", 200), prefix_hit_rate=hit)


class LiveTwin:
    """The cluster's model servers: one simulated engine per Ready pod, fed through the Service's endpoints."""

    def __init__(self, cluster: kube.KubeCluster, *, targets_dir: Path, address: str, seed: int = 0) -> None:
        self.cluster = cluster
        self.targets_dir = targets_dir
        self.address = address  # host:port Prometheus scrapes
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.specs: dict[Key, models.InferenceDeploymentSpec] = {}
        self.pods: dict[Key, LivePod] = {}
        self.endpoints: dict[Key, list[str]] = {}
        self.loads: dict[Key, Load] = {}
        self.counts: dict[Key, Counts] = {}
        self._next_id = 0
        self._targets: list[Any] | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ cluster sync

    async def sync(self) -> None:
        """Read resources, pods and endpoints; start engines for new Ready pods, drop what vanished."""
        infds = await self.cluster.request("GET", f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}")
        specs: dict[Key, models.InferenceDeploymentSpec] = {}
        for item in infds.get("items", []):
            meta = item["metadata"]
            with contextlib.suppress(pydantic.ValidationError, catalog.UnknownKeyError):
                spec, problems = validation.parse(item.get("spec"))
                if spec is not None and not problems:
                    specs[meta["namespace"], meta["name"]] = spec
        self.specs = specs
        pods = await self.cluster.request("GET", "/api/v1/pods", query={"labelSelector": render.LABEL_DEPLOYMENT})
        slices = await self.cluster.request("GET", "/apis/discovery.k8s.io/v1/endpointslices")
        endpoints: dict[Key, list[str]] = {}
        for s in slices.get("items", []):
            service = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if not service:
                continue
            ready = [e["targetRef"]["name"] for e in s.get("endpoints") or []
                     if (e.get("conditions") or {}).get("ready") and (e.get("targetRef") or {}).get("kind") == "Pod"]
            endpoints.setdefault((s["metadata"]["namespace"], service), []).extend(ready)
        self.endpoints = endpoints

        now = self.now()
        seen: set[Key] = set()
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            owner = (meta.get("labels") or {}).get(render.LABEL_DEPLOYMENT, "")
            live = self.pods.get(key)
            if live is not None and live.uid != meta["uid"]:
                self._gone(live, now)  # same name, new pod
                live = None
            if live is None:
                live = self.pods[key] = LivePod(meta["namespace"], meta["name"], owner, meta["uid"])
            live.deleting = bool(meta.get("deletionTimestamp"))
            if live.engine is None and not live.refused and kube.pod_facts(pod) is not None and _ready(pod):
                await self._start(live, pod, now)
        for key in [k for k in self.pods if k not in seen]:
            self._gone(self.pods.pop(key), now)
        self._write_targets()

    async def _start(self, live: LivePod, pod: dict[str, Any], now: float) -> None:
        spec = self.specs.get((live.namespace, live.owner))
        if spec is None:
            return
        container = next((c for c in pod["spec"]["containers"] if c["name"] == render.CONTAINER), None)
        if container is None:
            return
        runtime = registry.for_engine(spec.engine)
        env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
        files: dict[str, str] = {}
        for volume in pod["spec"].get("volumes") or []:
            if volume.get("configMap"):
                cm = await self.cluster.request(
                    "GET", f"/api/v1/namespaces/{live.namespace}/configmaps/{volume['configMap']['name']}")
                files.update(cm.get("data") or {})
        argv = [*container.get("command", []), *container.get("args", [])]
        try:
            read = runtime.read(argv, env, files)
            load = self.loads.get((live.namespace, live.owner), Load())
            replica = pod_replica(spec, read, prefix_cache_hit_rate=load.prefix_hit_rate)
            eng = sim_engine.SimEngine(replica, name=live.name, start=now)
        except (ValueError, perfmodel.ModelDoesNotFit) as e:
            # A real engine would crash on start with this configuration; the twin refuses to serve it.
            live.refused = str(e)
            log.warning("pod %s/%s: refusing to start: %s", live.namespace, live.name, e)
            return
        live.engine = eng
        node = pod["spec"].get("nodeName") or "node"
        gpu = catalog.resolve_gpu(spec.accelerator)
        # The engine's own dialect at its own path: what a scrape of the real server would return.
        live.metrics_path = exposition.dialect(runtime.variant).path
        live.exporter = exposition.PodExporter(eng, exposition.PodIdentity(
            model_name=spec.model.name, pod=live.name, namespace=live.namespace, node=node,
            gpu_model=exposition.gpu_model_name(gpu.product_label), gpus=spec.accelerator.count,
        ), dialects=exposition.pod_dialects(runtime.variant, argv, env=env))
        log.info("pod %s/%s serving: maxBatchSize %s, KV %s", live.namespace, live.name,
                 replica.max_num_seqs, replica.kv_dtype.value)

    def _gone(self, live: LivePod, now: float) -> None:
        """The pod object is gone: whatever it still had in flight is cut off."""
        if live.engine is None:
            return
        live.engine.advance(now)
        aborted = live.engine.abort_all(now)
        counts = self.counts.setdefault((live.namespace, live.owner), Counts())
        counts.dropped += len(aborted)
        self._finish(live)
        if aborted:
            log.warning("pod %s/%s went away with %d requests in flight", live.namespace, live.name, len(aborted))
        live.engine = None

    # ------------------------------------------------------------------ traffic

    def set_load(self, key: Key, load: Load) -> None:
        load.next_at = self.now() + (self.rng.expovariate(load.rate) if load.rate > 0 else math.inf)
        self.loads[key] = load
        self.counts.setdefault(key, Counts())

    def tick(self) -> None:
        """Send the arrivals due by now and run every engine up to now."""
        now = self.now()
        for key, load in self.loads.items():
            while load.next_at <= now:
                self._route(key, load, load.next_at)
                load.next_at += self.rng.expovariate(load.rate) if load.rate > 0 else math.inf
        for live in self.pods.values():
            if live.engine is not None:
                live.engine.advance(now)
                self._finish(live)

    def _route(self, key: Key, load: Load, at: float) -> None:
        counts = self.counts.setdefault(key, Counts())
        counts.arrived += 1
        candidates = [p for name in self.endpoints.get(key, [])
                      if (p := self.pods.get((key[0], name))) is not None and p.engine is not None]
        if not candidates:
            counts.unrouted += 1
            return
        # Least outstanding requests, ties broken at random (what a gateway with queue-depth routing does).
        best = min(candidates, key=lambda p: (p.engine.outstanding if p.engine else 0, self.rng.random()))
        assert best.engine is not None
        self._next_id += 1
        request = sim_engine.Request(self._next_id, at, load.isl.sample(self.rng), load.osl.sample(self.rng))
        best.engine.submit(request, at)

    def _finish(self, live: LivePod) -> None:
        if live.engine is None:
            return
        counts = self.counts.setdefault((live.namespace, live.owner), Counts())
        spec = self.specs.get((live.namespace, live.owner))
        for r in live.engine.pop_finished():
            if r.status == sim_engine.FINISHED:
                counts.finished += 1
                if spec is not None:
                    counts.ttft_ok += r.ttft <= spec.slo.ttft
                    counts.itl_ok += r.generated < 2 or r.itl <= spec.slo.itl
            elif r.status == sim_engine.REJECTED:
                counts.rejected += 1

    # ------------------------------------------------------------------ Prometheus

    def _write_targets(self) -> None:
        targets = [
            {"targets": [self.address], "labels": {
                "namespace": p.namespace, "pod": p.name,
                "__metrics_path__": f"/pods/{p.namespace}/{p.name}{p.metrics_path}"}}
            for p in sorted(self.pods.values(), key=lambda p: (p.namespace, p.name)) if p.engine is not None
        ]
        if targets == self._targets:
            return
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_dir / ".twin.json.tmp"
        tmp.write_text(json.dumps(targets, indent=1))
        os.replace(tmp, self.targets_dir / "twin.json")  # atomic: Prometheus never reads half a file
        self._targets = targets

    def metrics(self, namespace: str, pod: str, path: str = "/metrics") -> str | None:
        """The pod's exposition, or None when it does not serve one at `path`."""
        live = self.pods.get((namespace, pod))
        if live is None or live.exporter is None or path != live.metrics_path:
            return None
        return live.exporter.scrape(self.now())

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (ns, name), c in sorted(self.counts.items()):
            pods = {p.name: {"outstanding": p.engine.outstanding if p.engine else 0, "serving": p.name in
                             self.endpoints.get((ns, name), []), "refused": p.refused}
                    for p in self.pods.values() if p.namespace == ns and p.owner == name}
            out[f"{ns}/{name}"] = {**dataclasses.asdict(c), "pods": pods}
        return out


def _ready(pod: dict[str, Any]) -> bool:
    facts = kube.pod_facts(pod)
    return facts is not None and facts.ready


def pod_replica(spec: models.InferenceDeploymentSpec, read: Mapping[str, object], *,
                prefix_cache_hit_rate: float = 0.0) -> perfmodel.Replica:
    """The replica a pod runs: the spec's model and GPU with the knobs its command line actually sets."""
    batch = read.get("max_batch_size")
    if not isinstance(batch, int):
        raise ValueError("the pod sets no max batch size the twin can read")
    kv = read.get("kv_cache_dtype", models.KvDtype.DEFAULT)
    base = replica.of(spec, models.Knobs(max_batch_size=batch, kv_cache_dtype=models.KvDtype.DEFAULT),
                      prefix_cache_hit_rate=prefix_cache_hit_rate)
    update: dict[str, object] = {}
    for field, knob in (("gpus", "tensor_parallel"), ("max_num_batched_tokens", "max_num_batched_tokens"),
                        ("chunked_prefill", "chunked_prefill"), ("gpu_memory_utilization", "gpu_memory_utilization"),
                        ("prefix_caching", "prefix_caching")):
        if knob in read:
            update[field] = read[knob]
    # Validate again: FP8 KV on a GPU without FP8, or a budget below the batch, is what makes an engine crash.
    return perfmodel.Replica.model_validate({**base.model_dump(), **update, "kv_dtype": kv})


def app(twin: LiveTwin) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/pods/{namespace}/{pod}/{tail:.*}")
    async def pod_metrics(request: web.Request) -> web.Response:
        text = twin.metrics(request.match_info["namespace"], request.match_info["pod"],
                            "/" + request.match_info["tail"])
        if text is None:
            raise web.HTTPNotFound(text="no such serving pod, or not its metrics path\n")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(twin.stats())

    @routes.post("/load/{namespace}/{name}")
    async def set_load(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, Mapping):
                raise ValueError("the body must be a JSON object")
            load = _load_from(body)
        except (ValueError, workload.WorkloadError) as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        twin.set_load((request.match_info["namespace"], request.match_info["name"]), load)
        return web.json_response({"ok": True})

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    application = web.Application()
    application.add_routes(routes)
    return application


async def serve(*, kubeconfig: str | None, host: str, port: int, targets_dir: Path,
                loads: Mapping[Key, Load], sync_every: float = 0.5, tick_every: float = 0.05) -> None:
    cluster = await kube.KubeCluster.connect(kubeconfig)
    twin = LiveTwin(cluster, targets_dir=targets_dir, address=f"{host}:{port}")
    for key, load in loads.items():
        twin.set_load(key, load)
    runner = web.AppRunner(app(twin))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("twin serving on %s:%d, targets in %s", host, port, targets_dir)
    last_sync = -math.inf
    try:
        while True:
            if time.monotonic() - last_sync >= sync_every:
                try:
                    await twin.sync()
                except (kube.ApiError, OSError) as e:
                    log.warning("cluster sync failed (will retry): %s", e)
                last_sync = time.monotonic()
            twin.tick()
            await asyncio.sleep(tick_every)
    finally:
        await runner.cleanup()
        await cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infertune.sim.live", description=__doc__)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets-dir", type=Path, required=True, help="Prometheus file_sd directory")
    parser.add_argument("--tick", type=float, default=0.05,
                        help="seconds between steps of the engines (default 0.05; larger for many idle pods)")
    parser.add_argument("--sync", type=float, default=0.5, help="seconds between reads of the cluster")
    parser.add_argument("--load", action="append", default=[], metavar="NS/NAME=RATE",
                        help="a Poisson load in requests/s on a resource's Service (repeatable)")
    args = parser.parse_args(argv)
    loads: dict[Key, Load] = {}
    for item in args.load:
        try:
            target, rate = item.split("=", 1)
            ns, name = target.split("/", 1)
            loads[ns, name] = _load_from({"rate": rate})
        except ValueError as e:
            parser.error(f"--load {item!r}: expected NS/NAME=RATE ({e})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        if not 0 < args.tick <= 10 or not 0 < args.sync <= 60:
            parser.error("--tick must be within (0, 10] s and --sync within (0, 60] s")
        asyncio.run(serve(kubeconfig=args.kubeconfig, host=args.host, port=args.port, tick_every=args.tick,
                          sync_every=args.sync,
                          targets_dir=args.targets_dir, loads=loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
