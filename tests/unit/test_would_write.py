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


def rollout_of_a_new_image(old_replicas: int) -> tuple[observation.Decision, str, str]:
    """Mid-rollout of a new image with the same knobs: the target at 2, the revision made under the old image
    keeping `old_replicas` pods; returns the decision and both revision ids."""
    old_spec, problems = validation.parse(specs.spec(**{"engine.image": "vllm/vllm-openai:v0.10.0"}))
    assert old_spec is not None, problems
    old_rev, new_rev = render.revision(old_spec, KNOBS), render.revision(spec(), KNOBS)
    assert old_rev != new_rev
    d = observation.Decision(revisions=(observation.RevisionPlan(revision=new_rev, knobs=KNOBS, replicas=2),
                                        observation.RevisionPlan(revision=old_rev, knobs=KNOBS, replicas=old_replicas)),
                             status=models.InferenceDeploymentStatus())
    return d, old_rev, new_rev


def test_a_revision_made_under_an_earlier_spec_is_only_resized_under_its_own_name() -> None:
    d, old_rev, new_rev = rollout_of_a_new_image(1)
    [(new_name, new_manifests), (old_name, old_manifests)] = render.revisions(OWNER, spec(), d)
    assert (new_name, old_name) == (render.revision_name(OWNER, new_rev), render.revision_name(OWNER, old_rev))
    # Rendered from today's spec, the old knobs would name the target's Deployment (and size it 1).
    assert [m["metadata"]["name"] for m in new_manifests if m["kind"] == "Deployment"] == [new_name]
    assert old_manifests == [render.resize(OWNER, old_name, 1)]
    assert render.is_resize(old_manifests[0])
    assert not any(render.is_resize(m) for m in new_manifests if m["kind"] == "Deployment")


def test_a_resize_applies_only_to_a_deployment_that_exists() -> None:
    d, _, _ = rollout_of_a_new_image(1)
    [(_, new_manifests), (_, old_manifests)] = render.revisions(OWNER, spec(), d)
    [target] = [m for m in new_manifests if m["kind"] == "Deployment"]
    resize = old_manifests[0]
    assert render.applies(target, None) and render.applies(target, target)
    assert not render.applies(resize, None)
    assert render.applies(resize, target)


def test_resizing_a_leaving_revision_is_a_write_until_it_has_the_size_or_is_gone() -> None:
    d, old_rev, _ = rollout_of_a_new_image(1)
    rendered = render.revisions(OWNER, spec(), d)
    target = [m for m in rendered[0][1] if m["kind"] == "Deployment"]
    for m in target:
        m["status"] = {"replicas": 2}
    old = copy.deepcopy(target[0])
    old["metadata"]["name"] = render.revision_name(OWNER, old_rev)
    old["spec"]["replicas"] = 2
    assert kube.would_write(OWNER.uid, d, rendered, [*target, old])
    old["spec"]["replicas"] = 1
    assert not kube.would_write(OWNER.uid, d, rendered, [*target, old])
    # Gone already (its pods drained and someone removed it): nothing is made again.
    assert not kube.would_write(OWNER.uid, d, rendered, target)
