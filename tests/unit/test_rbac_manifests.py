"""Test: the shipped install's structure: namespaced by default, roles in step, policies bound by parameter, the
operator's pod restricted; and the start-up that lets plain namespace names run without cluster-wide reads."""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Any

import kopf
import pytest
import yaml

from infertune import handlers, kube, main, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = sorted(MANIFESTS.rglob("kustomization.yaml"))


def load(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources(directory: pathlib.Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists, following directories (no transformers: what its files say)."""
    kustomization = load(directory / "kustomization.yaml")[0]
    out: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        out += resources(path) if path.is_dir() else load(path)
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(MANIFESTS)) or ".")
def test_every_kustomization_lists_files_that_exist_and_parse(path: pathlib.Path) -> None:
    for entry in load(path)[0].get("resources", []):
        target = path.parent / entry
        assert target.exists(), f"{path}: {entry} does not exist"
        assert (target / "kustomization.yaml").is_file() if target.is_dir() else load(target)
    assert resources(path.parent) or path.parent.name == "monitoring"


def test_the_default_install_grants_nothing_cluster_wide() -> None:
    default = resources(MANIFESTS)
    assert not [d for d in default if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert one(default, "Role")["rules"] and one(default, "RoleBinding")["roleRef"]["kind"] == "Role"
    clusterwide = resources(MANIFESTS / "clusterwide")
    assert one(clusterwide, "ClusterRoleBinding")["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "infertune"}
    assert not [d for d in clusterwide if d["kind"] in ("Role", "RoleBinding")]


def test_each_watched_namespace_has_its_role_and_its_flag() -> None:
    kustomization = load(MANIFESTS / "kustomization.yaml")[0]
    watched = {load(MANIFESTS / entry / "kustomization.yaml")[0]["namespace"]
               for entry in kustomization["resources"] if entry.startswith("watch/")}
    ops = [op for patch in kustomization["patches"] for op in yaml.safe_load(patch["patch"])]
    flags = {op["value"].removeprefix("--namespace=") for op in ops
             if op["op"] == "add" and op["path"].endswith("/args/-") and op["value"].startswith("--namespace=")}
    assert watched and watched == flags
    operator = one(resources(MANIFESTS / "operator"), "Deployment")
    assert not [a for a in operator["spec"]["template"]["spec"]["containers"][0]["args"] if "--namespace" in a]


def _namespaced_rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


# Cluster-scoped reads the ClusterRole adds, and why: namespace globs (--namespace 'team-*') are resolved by
# watching namespaces; CRD changes are followed by watching CRDs; the cluster-wide peering object.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"),
                  ("kopf.dev", "clusterkopfpeerings")}


def test_the_role_and_the_cluster_role_grant_the_same_in_a_namespace() -> None:
    role = _namespaced_rules(load(MANIFESTS / "rbac" / "namespaced" / "role.yaml")[0]["rules"])
    cluster = _namespaced_rules(load(MANIFESTS / "rbac" / "clusterwide" / "clusterrole.yaml")[0]["rules"])
    assert {x for x in cluster if (x[0], x[1]) not in CLUSTER_SCOPED} == role
    assert {v for g, r, v in cluster if (g, r) in CLUSTER_SCOPED} <= {"get", "list", "watch", "patch"}
    assert {v for g, r, v in cluster if (g, r) != ("kopf.dev", "clusterkopfpeerings")
            and (g, r) in CLUSTER_SCOPED} == {"list", "watch"}  # reads only


@pytest.mark.parametrize("path", [MANIFESTS / "rbac" / "namespaced" / "role.yaml",
                                  MANIFESTS / "rbac" / "clusterwide" / "clusterrole.yaml"], ids=lambda p: p.name)
def test_no_shipped_role_reaches_secrets_identities_or_rbac(path: pathlib.Path) -> None:
    rules = _namespaced_rules(load(path)[0]["rules"])
    assert not {r for _, r, _ in rules} & {"secrets", "serviceaccounts", "serviceaccounts/token", "roles",
                                            "rolebindings", "clusterroles", "clusterrolebindings", "nodes", "*"}
    assert not {v for *_, v in rules} & {"*", "escalate", "bind", "impersonate", "deletecollection"}
    # Objects are patched, never replaced whole: update only where owner references need it.
    assert {(g, r) for g, r, v in rules if v == "update"} == {("infertune.io", "inferencedeployments/finalizers")}
    assert not [g for g, *_ in rules if g == "*"]


def test_the_operator_pod_is_restricted_and_keeps_only_its_own_token() -> None:
    pod = one(resources(MANIFESTS / "operator"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["readOnlyRootFilesystem"] is True
    # It talks to the API server with its ServiceAccount's token: the one credential it mounts.
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "infertune"


def test_the_ownership_policy_names_the_operator_by_parameter() -> None:
    docs = load(MANIFESTS / "rbac" / "owned-objects-policy.yaml")
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ServiceAccount"}
    assert "system:serviceaccount:infertune" not in yaml.safe_dump(policy)  # no hard-coded identity
    account = load(MANIFESTS / "rbac" / "serviceaccount.yaml")[0]["metadata"]
    ref = binding["spec"]["paramRef"]
    assert (ref["namespace"], ref["name"]) == (account["namespace"], account["name"])
    # No ServiceAccount, no token of it: failing closed would block every workload write in the cluster.
    assert ref["parameterNotFoundAction"] == "Allow"


def test_the_limits_policy_reads_the_keys_the_shipped_limits_set() -> None:
    docs = load(MANIFESTS / "admission" / "limits-policy.yaml")
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    limits = load(MANIFESTS / "admission" / "limits.yaml")[0]
    ref = binding["spec"]["paramRef"]
    assert (ref["namespace"], ref["name"]) == (limits["metadata"]["namespace"], limits["metadata"]["name"])
    assert ref["parameterNotFoundAction"] == "Deny"  # no limits object, no InferenceDeployment writes
    text = yaml.safe_dump(policy)
    assert set(re.findall(r"params\.data\.\?(\w+)", text)) == set(limits["data"])
    # Every refusal of a spec names its field first.
    spec_checks = [v for v in policy["spec"]["validations"]
                   if not v["messageExpression"].startswith("'the cluster admin")]
    assert len(spec_checks) == 8
    assert all(v["messageExpression"].startswith("'spec.") for v in spec_checks)
    assert all(re.fullmatch(r"[0-9]+", limits["data"][k]) for k in ("maxReplicas", "maxGPUsPerReplica"))
    assert limits["data"]["allowUnrestrictedEngines"] in ("true", "false")


@pytest.mark.parametrize(("namespaces", "exact"), [
    ((), False), (("team-a",), True), (("team-a", "team-b"), True), (("team-*",), False), (("a,b",), False),
    (("!kube-system",), False), (("team-?",), False), (("team-a", "e2e-*"), False),
])
def test_plain_namespace_names_turn_kopf_scanning_off(namespaces: tuple[str, ...], exact: bool) -> None:
    assert handlers.exact_namespaces(namespaces) is exact
    settings = kopf.OperatorSettings()
    handlers.configure(settings, models.OperatorConfig(namespaces=namespaces))
    assert settings.scanning.disabled is exact


class Discovery:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False

    async def request(self, method: str, path: str, **_: Any) -> Any:
        assert (method, path) == ("GET", f"/apis/{models.GROUP}/{models.VERSION}")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        self.closed = True


SERVED = {"resources": [{"name": models.PLURAL}, {"name": f"{models.PLURAL}/status"}]}


@pytest.mark.parametrize(("answer", "served"), [
    (SERVED, True),
    ({"resources": [{"name": f"{models.PLURAL}/status"}]}, False),
    ({}, False),
    (kube.ApiError(404, "GET", "/apis", '{"message": "not found"}'), False),
])
def test_served_reads_discovery(answer: Any, served: bool) -> None:
    assert asyncio.run(main.served(Discovery(answer))) is served  # type: ignore[arg-type]


def test_served_passes_other_errors_on() -> None:
    with pytest.raises(kube.ApiError, match="HTTP 403"):
        asyncio.run(main.served(Discovery(kube.ApiError(403, "GET", "/apis", "{}"))))  # type: ignore[arg-type]


def test_run_exits_1_when_plain_namespaces_are_watched_before_the_crd_exists(monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    cluster = Discovery({})

    async def connect(_: str | None = None) -> Discovery:
        return cluster

    async def never(**_: Any) -> None:
        raise AssertionError("kopf started")

    monkeypatch.setattr(kube.KubeCluster, "connect", connect)
    monkeypatch.setattr(kopf, "operator", never)
    assert asyncio.run(main.run(models.OperatorConfig(namespaces=("team-a",)))) == 1
    assert cluster.closed and "install crds/ first" in caplog.text
