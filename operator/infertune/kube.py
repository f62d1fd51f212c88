"""Adapter: the Kubernetes API for owned objects (kubernetes.aio): read facts, apply, delete, patch pods."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Protocol

import pydantic
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from infertune import models, observation, render, timestamps

FIELD_MANAGER = "infertune"


class ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {str(message)[:500]}")


class NotOwnedError(Exception):
    """An object with the name the operator wants exists and belongs to someone else; it is left alone."""


class Cluster(Protocol):
    """What the shell needs from the API server."""

    async def facts(self, namespace: str, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The owned Deployments and their pods (label infertune.io/deployment=name)."""
        ...

    async def apply(self, manifest: dict[str, Any], *, owner_uid: str, known: dict[str, Any] | None = None) -> str:
        """Create, or patch when it differs; 'created', 'patched' or 'unchanged'. Raises NotOwnedError.

        `known` is the object as just read elsewhere (a watch cache): compared without reading it again.
        """
        ...

    async def delete(self, manifest: dict[str, Any], *, owner_uid: str) -> bool:
        """Delete an owned object (apiVersion, kind, metadata.name/namespace); False when already gone."""
        ...

    async def patch_pod(self, namespace: str, name: str, *, labels: dict[str, str | None],
                        annotations: dict[str, str | None]) -> None:
        ...

    async def exists(self, namespace: str, name: str, uid: str) -> bool:
        """Whether this InferenceDeployment (this uid, not a namesake created since) is still there."""
        ...

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the resource's status subresource."""
        ...


API_CONNECTIONS = 16


async def load_configuration(kubeconfig: str | None = None) -> kclient.Configuration:
    """In-cluster credentials, else the kubeconfig file (the explicit path, then $KUBECONFIG, then ~/.kube/config)."""
    configuration = kclient.Configuration()
    # The client's default pool opens up to 100 TLS connections when 1,000 resources write at once, and each
    # keeps a 256 KiB TLS read buffer: 26 MB held for requests of a few milliseconds each. 16 in flight serve
    # over 1,000 requests a second at 15 ms apiece, more than any cycle asks for.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    if kubeconfig is None:
        try:
            kconfig.load_incluster_config(client_configuration=configuration)
            return configuration
        except kconfig.ConfigException:
            pass
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    await kconfig.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


async def bearer_token(configuration: kclient.Configuration) -> str | None:
    """The token the client would send, without its 'Bearer ' prefix."""
    value = await configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if not value:
        return None
    return str(value).removeprefix("Bearer ").strip()


_PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
}


def collection_path(manifest: dict[str, Any]) -> str:
    key = (manifest["apiVersion"], manifest["kind"])
    return _PATHS[key].format(ns=manifest["metadata"]["namespace"])


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("controller") for r in refs)


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether everything the operator sets is already so (the server adds defaults; those don't count)."""
    if desired in ([], {}) and actual is None:
        # The API server drops empty lists and maps (`env: []` comes back absent): seen as a difference, every
        # cycle of every resource without env vars re-read its Deployment and patched it (4 requests, no change).
        return True
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(is_subset(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(desired) == len(actual)
                and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True)))
    numeric = (int, float)
    if (isinstance(desired, numeric) and isinstance(actual, str)) or (isinstance(desired, str)
                                                                     and isinstance(actual, numeric)):
        return str(desired) == str(actual)
    return bool(desired == actual)


def would_write(owner_uid: str, decision: observation.Decision, rendered: render.Rendered,
                deployments: list[dict[str, Any]]) -> bool:
    """Whether applying the decision would change a pod or a Deployment (Service and config aside): a pod patch,
    a rendered Deployment missing, not ours or not yet as rendered, or one of ours the decision no longer keeps."""
    if decision.pod_patches:
        return True
    known = {d["metadata"]["name"]: d for d in deployments}
    for _, manifests in rendered:
        for manifest in manifests:
            if manifest["kind"] != "Deployment":
                continue
            current = known.get(manifest["metadata"]["name"])
            if not render.applies(manifest, current):
                continue
            if current is None or not owned_by(current, owner_uid) or not is_subset(manifest, current):
                return True
    keep = {name for name, _ in rendered}
    return any(name not in keep and owned_by(d, owner_uid) for name, d in known.items())


@dataclasses.dataclass
class KubeCluster:
    """Cluster over the kubernetes asyncio client's transport (auth, TLS and config loading are its own)."""

    api: kclient.ApiClient
    requests: int = 0

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeCluster:
        return cls(api=kclient.ApiClient(await load_configuration(kubeconfig)))

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, serialized, _ = await self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        self.requests += 1
        response = await self.api.call_api(method, url, header_params=headers, body=serialized)
        data = await response.read()
        if not 200 <= response.status < 300:
            raise ApiError(response.status, method, path, data.decode(errors="replace"))
        return json.loads(data) if data else None

    async def facts(self, namespace: str, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        selector = {"labelSelector": f"{render.LABEL_DEPLOYMENT}={name}"}
        deployments = await self.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments", query=selector)
        pods = await self.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=selector)

        def ours(obj: dict[str, Any]) -> bool:
            # The server filters by label already; checking again keeps a lax API (or a test double) honest.
            return bool((obj.get("metadata", {}).get("labels") or {}).get(render.LABEL_DEPLOYMENT) == name)

        return [d for d in deployments.get("items", []) if ours(d)], [p for p in pods.get("items", []) if ours(p)]

    async def apply(self, manifest: dict[str, Any], *, owner_uid: str, known: dict[str, Any] | None = None) -> str:
        base = collection_path(manifest)
        name = manifest["metadata"]["name"]
        if known is not None and owned_by(known, owner_uid) and is_subset(manifest, known):
            return "unchanged"
        try:
            current = await self.request("GET", f"{base}/{name}")
        except ApiError as e:
            if e.status != 404:
                raise
            await self.request("POST", base, body=manifest, query={"fieldManager": FIELD_MANAGER})
            return "created"
        if not owned_by(current, owner_uid):
            raise NotOwnedError(
                f"{manifest['kind']} {manifest['metadata']['namespace']}/{name} exists and is not owned by this "
                "InferenceDeployment; the operator leaves it alone. Rename or remove it."
            )
        if is_subset(manifest, current):
            return "unchanged"
        # A merge patch of our fields only, guarded by the uid just checked for ownership: an object deleted and
        # re-created by someone else in between fails the patch (uid is immutable) instead of being changed.
        # Not guarded by resourceVersion: the Deployment controller writes status every few seconds during a
        # rollout, and each write would fail our patch with a 409 for nothing.
        meta = {**manifest["metadata"]}
        if current["metadata"].get("uid"):
            meta["uid"] = current["metadata"]["uid"]
        patch = {**manifest, "metadata": meta}
        await self.request("PATCH", f"{base}/{name}", body=patch, content_type="application/merge-patch+json",
                           query={"fieldManager": FIELD_MANAGER})
        return "patched"

    async def delete(self, manifest: dict[str, Any], *, owner_uid: str) -> bool:
        base = collection_path(manifest)
        name = manifest["metadata"]["name"]
        try:
            current = await self.request("GET", f"{base}/{name}")
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        if not owned_by(current, owner_uid):
            raise NotOwnedError(f"{manifest['kind']} {name} is not owned by this InferenceDeployment; not deleting it")
        # Preconditions: delete exactly the object checked above, and let the ReplicaSets go in the background.
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if current["metadata"].get("uid"):
            body["preconditions"] = {"uid": current["metadata"]["uid"]}
        try:
            await self.request("DELETE", f"{base}/{name}", body=body)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def exists(self, namespace: str, name: str, uid: str) -> bool:
        """Whether this InferenceDeployment (this uid, not a namesake created since) is still there."""
        path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{namespace}/{models.PLURAL}/{name}"
        try:
            current = await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return bool(current and current.get("metadata", {}).get("uid") == uid)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{namespace}/{models.PLURAL}/{name}/status"
        await self.request("PATCH", path, body={"status": patch}, content_type="application/merge-patch+json",
                           query={"fieldManager": FIELD_MANAGER})

    async def patch_pod(self, namespace: str, name: str, *, labels: dict[str, str | None],
                        annotations: dict[str, str | None]) -> None:
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        await self.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body={"metadata": meta},
                           content_type="application/merge-patch+json")


# ---------------------------------------------------------------------------------------------
# Reading facts (pure conversions of API objects)
# ---------------------------------------------------------------------------------------------


def revision_facts(deployment: dict[str, Any]) -> observation.RevisionFacts | None:
    meta = deployment.get("metadata", {})
    labels = meta.get("labels") or {}
    rev = labels.get(render.LABEL_REVISION)
    if not rev:
        return None
    return observation.RevisionFacts(
        name=meta["name"],
        revision=rev,
        knobs=render.knobs_from_labels(labels),
        replicas=int(deployment.get("spec", {}).get("replicas") or 0),
        ready_replicas=int(deployment.get("status", {}).get("readyReplicas") or 0),
        created=timestamps.seconds(meta.get("creationTimestamp")) or 0.0,
    )


def pod_facts(pod: dict[str, Any]) -> observation.PodFacts | None:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    rev = labels.get(render.LABEL_REVISION)
    if not rev:
        return None
    status = pod.get("status") or {}
    ready_cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    ready = bool(ready_cond and ready_cond.get("status") == "True")
    statuses = status.get("containerStatuses") or []
    annotations = meta.get("annotations") or {}
    try:
        cost = int(annotations.get(render.ANNOTATION_DELETION_COST, "0"))
    except ValueError:
        cost = 0
    return observation.PodFacts(
        name=meta["name"],
        revision=rev,
        ready=ready,
        serving=labels.get(render.LABEL_SERVING) == "true",
        created=timestamps.seconds(meta.get("creationTimestamp")) or 0.0,
        ready_since=timestamps.seconds(ready_cond.get("lastTransitionTime")) if ready and ready_cond else None,
        deleting=bool(meta.get("deletionTimestamp")),
        node=(pod.get("spec") or {}).get("nodeName"),
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        failed=status.get("phase") == "Failed",
        unserved_since=timestamps.seconds(annotations.get(render.ANNOTATION_UNSERVED_SINCE)),
        deletion_cost=cost,
    )


def parse_status(raw: Any) -> models.InferenceDeploymentStatus:
    """The previous status, tolerating fields written by other versions (unknown keys are ignored at every depth:
    an operator rolled back one version reads `status.knee.calibration.itlError`, which it never wrote, and keeps
    the rest of its knee rather than start from a blank status)."""
    if not isinstance(raw, dict):
        return models.InferenceDeploymentStatus()
    try:
        return models.InferenceDeploymentStatus.model_validate(_known(models.InferenceDeploymentStatus, raw))
    except ValueError:
        # A hand-edited or corrupt status must not wedge the operator: start from a blank one.
        return models.InferenceDeploymentStatus()


def _known(model: type[pydantic.BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with only the keys `model` has (by name or alias), the same done inside each nested model, list and
    tuple of models; values of other types are left for validation to judge."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        for key in (field.alias, name):
            if key is not None and key in raw:
                out[key] = _known_value(field.annotation, raw[key])
                break
    return out


def _known_value(annotation: Any, value: Any) -> Any:
    nested = [a for a in _flat(annotation) if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
    if len(nested) != 1:
        return value  # not a model (or ambiguous): validation judges it as it stands
    if isinstance(value, dict):
        return _known(nested[0], value)
    if isinstance(value, list):
        return [_known(nested[0], v) if isinstance(v, dict) else v for v in value]
    return value


def _flat(annotation: Any) -> list[Any]:
    """The types an annotation names: X | None, list[X] and tuple[X, ...] give X (a mapping is left whole: its keys
    are data, not fields)."""
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) is dict:
        return [annotation]
    return [t for a in args for t in _flat(a)]
