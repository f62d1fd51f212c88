"""Test: every API request the operator makes through a revision change is one the namespaced Role grants."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import kmock
import pytest
import yaml
from conftest import eventually
from test_handlers import change_image, deployments, ready_pod, revision_of, seed

ROLE = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "rbac" / "namespaced" / "role.yaml"


def attributes(method: str, path: str, params: dict[str, str]) -> tuple[str, str, str, str | None]:
    """(verb, apiGroup, resource[/subresource], namespace) as the API server's RBAC sees a request."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if method == "GET":
        verb = "get" if name else ("watch" if params.get("watch") in ("true", "1") else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[method]
    return verb, group, f"{resource}/{sub}" if sub else resource, namespace


def granted(rules: list[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def is_discovery(path: str) -> bool:
    """/api, /api/v1, /apis, /apis/GROUP/VERSION, /version: what every authenticated user may read."""
    parts = path.strip("/").split("/")
    return path == "/version" or (parts[0] == "api" and len(parts) <= 2) or (parts[0] == "apis" and len(parts) <= 3)


@pytest.mark.parametrize(("path", "params", "expected"), [
    ("/apis/apps/v1/namespaces/ns1/deployments", {"watch": "true"}, ("watch", "apps", "deployments", "ns1")),
    ("/api/v1/namespaces/ns1/pods", {}, ("list", "", "pods", "ns1")),
    ("/apis/infertune.io/v1alpha1/namespaces/ns1/inferencedeployments/llm/status", {},
     ("get", "infertune.io", "inferencedeployments/status", "ns1")),
    ("/apis/apps/v1/deployments", {}, ("list", "apps", "deployments", None)),
    ("/api/v1/namespaces", {"watch": "true"}, ("watch", "", "namespaces", None)),
    ("/api/v1/namespaces/ns1", {}, ("get", "", "namespaces", None)),  # the namespace itself: cluster-scoped
])
def test_attributes_read_a_path_as_rbac_does(path: str, params: dict[str, str], expected: tuple[str, ...]) -> None:
    assert attributes("GET", path, params) == expected
    assert not is_discovery(path)


async def test_the_namespaced_role_covers_every_request_of_a_revision_change(kmock: kmock.KubernetesEmulator,
                                                                              run_operator: Any) -> None:
    body = seed(kmock, **{"scaling.drainTimeout": "1s"})
    seed(kmock, name="trt", uid="uid-trt", **{"engine.kind": "trtllm"})  # TensorRT-LLM: a ConfigMap too
    first = revision_of(body)
    await run_operator()
    ready_pod(kmock, await eventually(lambda: deployments(kmock)[f"llm-{first}"]), "old-1")
    second = await change_image(kmock, **{"scaling.drainTimeout": "1s"})
    ready_pod(kmock, await eventually(lambda: deployments(kmock)[f"llm-{second}"]), "new-1")
    await eventually(lambda: f"llm-{first}" not in deployments(kmock), timeout=10)
    await eventually(lambda: any(r.method.value == "POST" and r.url.path.endswith("/configmaps") for r in list(kmock)))
    await asyncio.sleep(0.5)

    rules = yaml.safe_load(ROLE.read_text())["rules"]
    seen: set[tuple[str, str, str, str | None]] = set()
    for request in list(kmock):
        if not is_discovery(request.url.path):
            seen.add(attributes(request.method.value, request.url.path, dict(request.params)))
    assert seen, "no request recorded"
    # Nothing cluster-scoped, nothing outside the watched namespace: a Role there is all it needs.
    assert {ns for *_, ns in seen} == {"ns1"}, sorted(map(str, seen))
    refused = sorted(f"{v} {g}/{r}" for v, g, r, _ in seen if not granted(rules, v, g, r))
    assert refused == []
    # And the scenario exercised what the Role is for: the check above is not vacuous.
    assert {("watch", "apps", "deployments"), ("create", "apps", "deployments"), ("delete", "apps", "deployments"),
            ("patch", "infertune.io", "inferencedeployments/status"), ("patch", "", "pods"),
            ("create", "", "configmaps"), ("create", "", "services"), ("create", "", "events"),
            } <= {(v, g, r) for v, g, r, _ in seen}
