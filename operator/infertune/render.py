"""Pure: spec + knobs -> the Deployment of a revision, the Service and config, as plain manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from infertune import catalog, models, observation, runtimes, validation
from infertune.runtimes import registry

PREFIX = "infertune.io/"
LABEL_DEPLOYMENT = PREFIX + "deployment"
LABEL_REVISION = PREFIX + "revision"
LABEL_SERVING = PREFIX + "serving"
LABEL_BATCH = PREFIX + "max-batch-size"
LABEL_KV = PREFIX + "kv-cache-dtype"
LABEL_BUDGET = PREFIX + "max-num-batched-tokens"
LABEL_ENGINE = PREFIX + "engine"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "infertune"
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# When the operator took the pod out of the Service (drain timeouts count from here).
ANNOTATION_UNSERVED_SINCE = PREFIX + "unserved-since"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CONTAINER = "engine"

# Endpoints take a few seconds to drop a terminating pod everywhere (kube-proxy, gateways); the preStop
# sleep keeps the engine serving for that long after deletion starts, so no new request lands on a closed port.
PRESTOP_SECONDS = 15
# A model loads in minutes (NIM 3-10 min, vLLM 37-90 s for a 32B model): the startup probe allows
# 180 x 10 s = 30 min before liveness takes over.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURES = 180

# The engines' images run as root (vLLM's docs: "designed to be run under the root user"); the restricted Pod
# Security Standard refuses UID 0, so engines run as this UID/GID unless spec.template.securityContext says
# otherwise. 1000 is the first regular user on Debian and Ubuntu, the images' base (no meaning beyond non-zero).
DEFAULT_UID = 1000
# A non-root engine cannot write the root-owned /root: HOME (model and compile caches under ~/.cache)
# moves to an emptyDir, as do the runtime's other writable paths.
HOME = "/var/lib/engine"  # inside the container (an emptyDir), not a path of any host
# vLLM's process layout: 1 API server, 1 engine core and 1 worker per GPU (vLLM docs, design/arch_overview:
# "Multi-process architecture"); each wants a core: 2 + 1 = 3 CPUs for one GPU. SGLang, TGI and TensorRT-LLM
# run the same kind of layout (an HTTP front end, a scheduler, a process per GPU).
CPU_PER_ENGINE = 2
CPU_PER_GPU = 1
GIB = 1024**3


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The InferenceDeployment that owns the rendered objects."""

    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": models.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def engine_knobs(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> runtimes.EngineKnobs:
    e = spec.engine
    return runtimes.EngineKnobs(
        model=spec.model.name,
        served_model_name=spec.model.name,
        port=e.port,
        tensor_parallel=spec.accelerator.count,
        max_batch_size=knobs.max_batch_size,
        kv_cache_dtype=knobs.kv_cache_dtype,
        chunked_prefill=e.chunked_prefill,
        # A tuned budget (knobs) wins over none; the tuner tunes it only when the spec leaves it unset.
        max_num_batched_tokens=knobs.max_num_batched_tokens or e.max_num_batched_tokens,
        prefix_caching=e.prefix_caching,
        gpu_memory_utilization=e.gpu_memory_utilization,
        max_model_len=spec.model.max_model_len,
    )


def revision(spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> str:
    """10 hex digits of a hash over everything that shapes the pods (not the SLO, scaling or price)."""
    shaping = {
        "model": spec.model.model_dump(mode="json", by_alias=True),
        "engine": spec.engine.model_dump(mode="json", by_alias=True),
        "accelerator": spec.accelerator.model_dump(mode="json", by_alias=True, exclude={"hourly_cost"}),
        "template": spec.template.model_dump(mode="json", by_alias=True),
        # Unset knobs are left out, so a knob added later (the token budget) does not rename every revision.
        "knobs": knobs.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return digest[:10]


def revision_name(owner: Owner, rev: str) -> str:
    return f"{owner.name}-{rev}"


def common_labels(owner: Owner, spec: models.InferenceDeploymentSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": spec.engine.kind.value,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "model-server",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: owner.name,
        LABEL_ENGINE: spec.engine.kind.value,
    }


def revision_labels(
    owner: Owner, spec: models.InferenceDeploymentSpec, knobs: models.Knobs, rev: str
) -> dict[str, str]:
    labels = {
        **common_labels(owner, spec),
        LABEL_REVISION: rev,
        LABEL_BATCH: str(knobs.max_batch_size),
        LABEL_KV: knobs.kv_cache_dtype.value,
    }
    if knobs.max_num_batched_tokens is not None:
        labels[LABEL_BUDGET] = str(knobs.max_num_batched_tokens)
    return labels


def selector(owner: Owner, rev: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: owner.name, LABEL_REVISION: rev}


def grace_period_seconds(spec: models.InferenceDeploymentSpec) -> int:
    # preStop (15 s) + the longest drain (2 m) + 15 s for the engine to exit = 150 s by default.
    return PRESTOP_SECONDS + math.ceil(spec.scaling.drain_timeout) + 15


def deployment(
    owner: Owner, spec: models.InferenceDeploymentSpec, knobs: models.Knobs, *, replicas: int
) -> dict[str, Any]:
    """The Deployment of one revision: one configuration of knobs, pods created serving (fail open)."""
    runtime = registry.for_engine(spec.engine)
    launch = runtime.launch(engine_knobs(spec, knobs))
    rev = revision(spec, knobs)
    name = revision_name(owner, rev)
    labels = revision_labels(owner, spec, knobs, rev)
    t = spec.template
    # Owned keys are written last, so nothing in the user's overrides can replace them.
    pod_labels = {**t.labels, **labels, LABEL_SERVING: "true"}
    pod_annotations = {
        **t.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.engine.port),
        "prometheus.io/path": runtime.metrics_path,
    }
    gpu = catalog.resolve_gpu(spec.accelerator)
    node_selector = dict(t.node_selector)
    if gpu.product_label:
        node_selector[GPU_PRODUCT_LABEL] = gpu.product_label

    env: list[dict[str, Any]] = [
        v.model_dump(mode="json", by_alias=True, exclude_none=True) for v in spec.engine.env
    ]
    if not any(v.name == "HOME" for v in spec.engine.env):
        env.append({"name": "HOME", "value": HOME})
    # The operator's variables come last: the kubelet keeps the last of duplicate names.
    env += [{"name": k, "value": v} for k, v in launch.env]
    resources = container_resources(spec)

    probe_get = {"httpGet": {"path": runtime.health_path, "port": "http"}}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.engine.image,
        # The user's arguments first (checked against the engine's parsing in validation), the operator's knob
        # flags last, so that an engine reading the last occurrence of a flag reads the operator's. `$` is
        # doubled so the kubelet's $(VAR) expansion hands the engine each argument as written.
        "args": [*(runtimes.escape_expansion(a) for a in spec.engine.args), *launch.args],
        "env": env,
        "ports": [{"name": "http", "containerPort": spec.engine.port, "protocol": "TCP"}],
        "resources": resources,
        "startupProbe": {**probe_get, "periodSeconds": STARTUP_PERIOD_SECONDS, "failureThreshold": STARTUP_FAILURES},
        "readinessProbe": {**probe_get, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe_get, "periodSeconds": 10, "failureThreshold": 6},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": container_security(spec.template.security_context),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "home", "mountPath": HOME}],
    }
    # No `args: []` or `env: []` (NIM takes no arguments; a user who sets HOME may leave no variable).
    for key in ("args", "env"):
        if not container[key]:
            del container[key]
    if launch.command is not None:
        container["command"] = list(launch.command)
    # Tensor parallelism exchanges activations through shared memory; the container default of 64 MiB is too small.
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}}, {"name": "home", "emptyDir": {}},
    ]
    for i, path in enumerate(runtime.writable_paths):
        container["volumeMounts"].append({"name": f"cache-{i}", "mountPath": path})
        volumes.append({"name": f"cache-{i}", "emptyDir": {}})
    if launch.files:
        container["volumeMounts"].append({"name": "config", "mountPath": runtimes.CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "config", "configMap": {"name": name}})

    sc = spec.template.security_context
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # Engines talk to no Kubernetes API: no token in the pod for a compromised engine to use.
        "automountServiceAccountToken": False,
        "securityContext": {
            "fsGroup": DEFAULT_UID if sc.fs_group is None else sc.fs_group,
            "seccompProfile": {"type": sc.seccomp_profile},
        },
        "terminationGracePeriodSeconds": grace_period_seconds(spec),
        "tolerations": [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
            *(x.model_dump(mode="json", by_alias=True, exclude_none=True) for x in t.tolerations),
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if t.priority_class_name:
        pod_spec["priorityClassName"] = t.priority_class_name
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    if t.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in t.image_pull_secrets]

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(owner, rev)},
            # The pod template of a revision never changes (a change is a new revision), so there is
            # never a rolling update to run; the progress deadline only has to outlast a model load.
            "revisionHistoryLimit": 1,
            "progressDeadlineSeconds": STARTUP_PERIOD_SECONDS * STARTUP_FAILURES + 600,
            "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
        },
    }


def container_security(sc: models.SecuritySpec) -> dict[str, Any]:
    """The engine container's securityContext; the defaults meet the restricted Pod Security Standard."""
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if sc.add_capabilities:
        capabilities["add"] = list(sc.add_capabilities)
    return {
        "runAsNonRoot": sc.run_as_non_root,
        "runAsUser": DEFAULT_UID if sc.run_as_user is None else sc.run_as_user,
        "runAsGroup": DEFAULT_UID if sc.run_as_group is None else sc.run_as_group,
        "allowPrivilegeEscalation": sc.allow_privilege_escalation,
        "capabilities": capabilities,
        "seccompProfile": {"type": sc.seccomp_profile},
    }


def container_resources(spec: models.InferenceDeploymentSpec) -> dict[str, Any]:
    """GPUs, and CPU and memory requests from the model's needs so the pod is never BestEffort.

    Memory: the weights of one replica pass through host memory while they load (safetensors are read through
    the page cache, which counts against the pod's memory cgroup): parameters x bytes per parameter, for
    Llama-3.1-8B in BF16 8.03e9 x 2 B = 15.0 GiB -> 15Gi (physics). No memory limit unless the user sets one:
    page cache above the request is reclaimable, and an OOM kill mid-load would only restart the load.
    CPU: 2 + 1 per GPU (CPU_PER_ENGINE, CPU_PER_GPU): 3 for one GPU, 10 for eight.
    """
    gpus = spec.accelerator.count
    requests: dict[str, str] = {GPU_RESOURCE: str(gpus)}
    limits: dict[str, str] = {GPU_RESOURCE: str(gpus)}
    t = spec.template
    requests["cpu"] = t.cpu or str(CPU_PER_ENGINE + CPU_PER_GPU * gpus)
    shape = catalog.resolve_model(spec.model)
    requests["memory"] = t.memory or f"{math.ceil(validation.weight_bytes(shape, spec.model.weights) / GIB)}Gi"
    if t.memory:
        limits["memory"] = t.memory
    return {"limits": limits, "requests": requests}


def config_map(owner: Owner, spec: models.InferenceDeploymentSpec, knobs: models.Knobs) -> dict[str, Any] | None:
    """Engine options that have no flag (TensorRT-LLM's YAML), one ConfigMap per revision."""
    launch = registry.for_engine(spec.engine).launch(engine_knobs(spec, knobs))
    if not launch.files:
        return None
    rev = revision(spec, knobs)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": revision_name(owner, rev),
            "namespace": owner.namespace,
            "labels": revision_labels(owner, spec, knobs, rev),
            "ownerReferences": [owner_reference(owner)],
        },
        "data": dict(launch.files),
    }


def service(owner: Owner, spec: models.InferenceDeploymentSpec) -> dict[str, Any]:
    """One Service per resource; it selects only pods labelled serving, whatever their revision."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": common_labels(owner, spec),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_DEPLOYMENT: owner.name, LABEL_SERVING: "true"},
            "ports": [{"name": "http", "port": spec.engine.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def manifests(
    owner: Owner, spec: models.InferenceDeploymentSpec, knobs: models.Knobs, *, replicas: int
) -> list[dict[str, Any]]:
    """Everything one revision needs, in apply order: config, Deployment, Service."""
    out: list[dict[str, Any]] = []
    cm = config_map(owner, spec, knobs)
    if cm is not None:
        out.append(cm)
    out.append(deployment(owner, spec, knobs, replicas=replicas))
    out.append(service(owner, spec))
    return out


# Each planned revision's Deployment name and manifests, rendered once per decision.
Rendered = list[tuple[str, list[dict[str, Any]]]]


def revisions(owner: Owner, spec: models.InferenceDeploymentSpec, decision: observation.Decision) -> Rendered:
    """Every revision the decision plans: its Deployment's name and its manifests, in apply order.

    A revision made under an earlier spec (a rollout of a new image still draining the old pods) is rendered as a
    resize of its own Deployment: its pods run what the spec said then, which today's spec cannot render. Rendered
    from today's spec it would be another revision; with the same knobs, the target itself, whose Deployment would
    then be patched twice a cycle (the target's size, then the leaving revision's), and its ReplicaSet would add
    and remove a pod every cycle.
    """
    out: Rendered = []
    for plan in decision.revisions:
        name = revision_name(owner, plan.revision)
        if revision(spec, plan.knobs) == plan.revision:
            out.append((name, manifests(owner, spec, plan.knobs, replicas=plan.replicas)))
        else:
            out.append((name, [resize(owner, name, plan.replicas)]))
    return out


def resize(owner: Owner, name: str, replicas: int) -> dict[str, Any]:
    """A Deployment's replica count and nothing else: applied to an existing Deployment only, never created."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": owner.namespace},
            "spec": {"replicas": replicas}}


def is_resize(manifest: dict[str, Any]) -> bool:
    """Whether a rendered manifest only resizes a Deployment (see `resize`)."""
    return manifest["kind"] == "Deployment" and "template" not in manifest.get("spec", {})


def applies(manifest: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether a rendered Deployment is to be written, given the one in the cluster under its name (None: none).
    A resize applies only to a Deployment that exists: a leaving revision's Deployment that is gone already
    is not made again (it would have no pod template)."""
    return current is not None or not is_resize(manifest)


def knobs_from_labels(labels: dict[str, str]) -> models.Knobs | None:
    """The knobs a revision runs with, read back from its labels (None when they are missing or bad)."""
    try:
        budget = labels.get(LABEL_BUDGET)
        return models.Knobs(
            max_batch_size=int(labels[LABEL_BATCH]), kv_cache_dtype=models.KvDtype(labels[LABEL_KV]),
            max_num_batched_tokens=None if budget is None else int(budget),
        )
    except (KeyError, ValueError):
        return None
