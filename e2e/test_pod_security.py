"""Test: engine pods, rendered offline or by the operator, are admitted where the restricted Pod Security Standard
is enforced (the API server's PodSecurity admission, on by default), and a root override is refused there."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as e2e_cluster
from e2e.conftest import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
ENFORCE = "pod-security.kubernetes.io/enforce"


def restricted_namespace(k8s: e2e_cluster.Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    k8s.kubectl("label", "namespace", name, f"{ENFORCE}=restricted", f"{ENFORCE}-version=latest")
    k8s.wait_for(lambda: k8s.get("serviceaccount", "default", namespace=name), 30, message=f"{name}/default")
    return name


@pytest.fixture
def restricted(k8s: e2e_cluster.Kube) -> Iterator[str]:
    name = restricted_namespace(k8s, "e2e-restricted")
    yield name
    k8s.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def rendered(sample: Path, namespace: str) -> list[dict[str, Any]]:
    """`infertune render` exactly as a user runs it, without the placeholder owner (the garbage collector would
    delete objects whose owner does not exist)."""
    out = subprocess.run([sys.executable, "-m", "infertune.cli", "render", "--namespace", namespace, str(sample)],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO / "operator"), "PATH": "/usr/bin:/bin"})
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in docs:
        d["metadata"].pop("ownerReferences", None)
        d["metadata"]["namespace"] = namespace
    return docs


def as_pod(deployment: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
            "labels": template["metadata"]["labels"]}, "spec": copy.deepcopy(template["spec"])}


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_a_rendered_engine_pod_is_admitted_under_restricted(k8s: e2e_cluster.Kube, restricted: str,
                                                            sample: Path) -> None:
    docs = rendered(sample, restricted)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    # The Pod itself, through the API server's admission (PodSecurity enforces on pods, not on Deployments).
    out = k8s.kubectl("apply", "-f", "-", input=json.dumps(as_pod(deployment, "probe", restricted)), check=False)
    assert "violates PodSecurity" not in out, out
    assert "pod/probe created" in out, out
    # And the way the operator creates them: the ReplicaSet controller creates the pods, none refused.
    k8s.apply(docs)
    pods = k8s.wait_for(lambda: [p for p in k8s.list("pod", namespace=restricted)
                                 if p["metadata"]["name"] != "probe"] or None, 60, message="a ReplicaSet's pod")
    assert pods[0]["spec"]["automountServiceAccountToken"] is False
    events = k8s.list("event", namespace=restricted)
    assert not [e for e in events if e.get("reason") == "FailedCreate"], [e.get("message") for e in events]


def test_the_root_override_is_refused_under_restricted(k8s: e2e_cluster.Kube, restricted: str) -> None:
    # The control: the same pod with the spec's root override (runAsUser 0, runAsNonRoot false) is refused,
    # so the admission above is the standard's verdict, not an admission plugin that is switched off.
    deployment = next(d for d in rendered(SAMPLES[0], restricted) if d["kind"] == "Deployment")
    pod = as_pod(deployment, "root", restricted)
    pod["spec"]["containers"][0]["securityContext"].update(runAsUser=0, runAsNonRoot=False)
    out = k8s.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert 'violates PodSecurity "restricted:latest"' in out, out
    assert "runAsNonRoot != false" in out or "runAsUser=0" in out, out


def test_the_operator_creates_engine_pods_in_a_restricted_namespace(k8s: e2e_cluster.Kube,
                                                                    operator: OperatorProcess) -> None:
    # The session operator watches e2e-* namespaces.
    ns = restricted_namespace(k8s, "e2e-restricted-op")
    try:
        body = yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text())
        body["metadata"] = {"name": "psa", "namespace": ns}
        k8s.apply(body)
        pods = k8s.wait_for(lambda: k8s.list("pod", namespace=ns) or None, 90, message="an engine pod")
        c = pods[0]["spec"]["containers"][0]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        requests = c["resources"]["requests"]
        assert {"cpu", "memory", "nvidia.com/gpu"} <= set(requests)
        assert pods[0]["status"].get("qosClass") != "BestEffort"
        events = k8s.list("event", namespace=ns)
        assert not [e for e in events if e.get("reason") == "FailedCreate"], [e.get("message") for e in events]
    finally:
        k8s.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
