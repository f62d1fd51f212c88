"""Test: render.revisions (a decision's revisions as manifests) and kube.would_write (whether applying them changes
a pod or a Deployment), the two steps of a steady cycle that the shell and bench/cycle_cost.py share."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import specs
from infertune import kube, models, observation, render, validation

OWNER = render.Owner(name="llm", namespace="ns1", uid="uid-1")
KNOBS = models.Knobs(max_batch_size=96, kv_cache_dtype=models.KvDtype.FP8)


def spec() -> models.InferenceDeploymentSpec:
    parsed, problems = validation.parse(specs.spec())
    assert parsed is not None, problems
    return parsed


def decision(replicas: int = 2, **kw: Any) -> observation.Decision:
    rev = render.revision(spec(), KNOBS)
    return observation.Decision(revisions=(observation.RevisionPlan(revision=rev, knobs=KNOBS, replicas=replicas),),
                                status=models.InferenceDeploymentStatus(), **kw)


def stored(d: observation.Decision) -> list[dict[str, Any]]:
    """The decision's Deployments as the API server holds them once applied (owned, with a status)."""
    out = [copy.deepcopy(m) for _, ms in render.revisions(OWNER, spec(), d) for m in ms if m["kind"] == "Deployment"]
    for m in out:
        m["status"] = {"replicas": m["spec"]["replicas"], "readyReplicas": m["spec"]["replicas"]}
    return out


def test_revisions_renders_each_plan_under_its_deployment_name() -> None:
    d = decision(replicas=3)
    [(name, manifests)] = render.revisions(OWNER, spec(), d)
    assert name == render.revision_name(OWNER, d.revisions[0].revision)
    [dep] = [m for m in manifests if m["kind"] == "Deployment"]
    assert (dep["metadata"]["name"], dep["spec"]["replicas"]) == (name, 3)
    assert manifests == render.manifests(OWNER, spec(), KNOBS, replicas=3)


def test_a_decision_already_applied_writes_nothing() -> None:
    d = decision()
    assert not kube.would_write(OWNER.uid, d, render.revisions(OWNER, spec(), d), stored(d))


def test_a_pod_patch_is_a_write() -> None:
    d = decision(pod_patches=(observation.PodPatch(name="p1", serving=True),))
    assert kube.would_write(OWNER.uid, d, render.revisions(OWNER, spec(), d), stored(d))


@pytest.mark.parametrize("change", ["missing", "other replicas", "not ours"])
def test_a_deployment_not_as_rendered_is_a_write(change: str) -> None:
    d = decision()
    deployments = stored(d)
    if change == "missing":
        deployments = []
    elif change == "other replicas":
        deployments[0]["spec"]["replicas"] = 5
    else:
        deployments[0]["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    assert kube.would_write(OWNER.uid, d, render.revisions(OWNER, spec(), d), deployments)


def test_an_old_revision_of_ours_is_a_write_and_one_of_someone_else_is_not() -> None:
    d = decision()
    old = copy.deepcopy(stored(d)[0])
    old["metadata"]["name"] = "llm-old"
    assert kube.would_write(OWNER.uid, d, render.revisions(OWNER, spec(), d), [*stored(d), old])
    old["metadata"]["ownerReferences"] = []
    assert not kube.would_write(OWNER.uid, d, render.revisions(OWNER, spec(), d), [*stored(d), old])
