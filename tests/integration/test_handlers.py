"""Test: the kopf handlers against kmock — create, invalid spec, spec update, ownership."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
from conftest import RESOURCE, eventually

import specs
from infertune import decide, models, render, validation


def seed(emulator: kmock.KubernetesEmulator, name: str = "llm", uid: str = "uid-1", **changes: Any) -> dict[str, Any]:
    body = specs.resource(name=name, namespace="ns1", **changes)
    body["metadata"].update({"uid": uid, "generation": 1, "resourceVersion": "1"})
    emulator.objects[RESOURCE, "ns1", name] = body
    return body


def revision_of(body: dict[str, Any]) -> str:
    spec, problems = validation.parse(body["spec"])
    assert spec is not None, problems
    knobs, _ = decide.initial_knobs(spec)
    return render.revision(spec, knobs)


def ready_pod(emulator: kmock.KubernetesEmulator, deployment: dict[str, Any], name: str) -> None:
    """Play the Deployment controller and kubelet: one Ready pod of this revision, labelled as its template."""
    labels = dict(deployment["spec"]["template"]["metadata"]["labels"])
    emulator.objects["v1/pods", "ns1", name] = {
        "metadata": {"name": name, "namespace": "ns1", "labels": labels, "uid": f"uid-{name}",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]},
    }


def deployments(emulator: kmock.KubernetesEmulator) -> dict[str, dict[str, Any]]:
    return {
        key[2]: obj.raw for key, obj in emulator.objects.items()
        if key[0] == "apps/v1/deployments" and not obj.deleted
    }


def condition(emulator: kmock.KubernetesEmulator, type_: str, name: str = "llm") -> dict[str, Any]:
    status = emulator.objects[RESOURCE, "ns1", name].raw.get("status") or {}
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def events(emulator: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    return [obj.raw for key, obj in emulator.objects.items() if key[0] in ("v1/events", "events.k8s.io/v1/events")]


async def change_image(emulator: kmock.KubernetesEmulator, **changes: Any) -> str:
    """A spec change (a new engine image, generation 2) the operator's watch sees; returns the new revision."""
    changed = specs.spec(**{"engine.image": "vllm/vllm-openai:v0.12.0", **changes})
    emulator.objects[RESOURCE, "ns1", "llm"].patch({"spec": changed, "metadata": {"generation": 2}})
    # kmock streams the patch to the operator's watch only when it goes through the API.
    await emulator.patch("/apis/infertune.io/v1alpha1/namespaces/ns1/inferencedeployments/llm",
                         json={"metadata": {"annotations": {"touch": "1"}}})
    return render.revision(validation.parse(changed)[0], models.Knobs(max_batch_size=256))  # type: ignore[arg-type]


async def test_create_applies_deployment_and_service_with_owner_references(kmock, run_operator) -> None:
    body = seed(kmock)
    await run_operator()
    rev = revision_of(body)
    dep = await eventually(lambda: deployments(kmock)[f"llm-{rev}"])
    owner = {"apiVersion": "infertune.io/v1alpha1", "kind": "InferenceDeployment", "name": "llm", "uid": "uid-1",
             "controller": True, "blockOwnerDeletion": True}
    assert dep["metadata"]["ownerReferences"] == [owner]
    assert dep["spec"]["replicas"] == 1  # minReplicas 1 + standby.min 0
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "256"  # vLLM's default on a 48 GB L40S, within 8..512
    svc = await eventually(lambda: kmock.objects["v1/services", "ns1", "llm"].raw)
    assert svc["metadata"]["ownerReferences"] == [owner]
    assert svc["spec"]["selector"] == {"infertune.io/deployment": "llm", "infertune.io/serving": "true"}
    status = await eventually(lambda: kmock.objects[RESOURCE, "ns1", "llm"].raw["status"]["config"])
    assert status["revision"] == rev and status["maxBatchSize"] == 256
    assert "vllm default (256)" in status["reason"]
    assert condition(kmock, "SpecValid")["status"] == "True"
    assert condition(kmock, "Ready")["status"] == "False"  # no pod is Ready in the emulator
    assert condition(kmock, "Progressing")["reason"] == "PodsStarting"
    assert kmock.objects[RESOURCE, "ns1", "llm"].raw["status"]["observedGeneration"] == 1
    assert "kopf" not in kmock.objects[RESOURCE, "ns1", "llm"].raw["status"]  # progress lives in annotations


async def test_invalid_spec_sets_condition_and_event_and_creates_nothing(kmock, run_operator) -> None:
    seed(kmock, **{"tuning.maxBatchSize": {"min": 8, "max": 512}, "model.architecture": "gpt-5"})
    await run_operator()
    cond = await eventually(lambda: condition(kmock, "SpecValid"))
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "spec.model.architecture: unknown model 'gpt-5'" in cond["message"]
    warnings = await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "InvalidSpec"])
    assert warnings[0]["type"] == "Warning"
    await asyncio.sleep(1.5)  # several timer cycles
    assert deployments(kmock) == {}
    assert ("v1/services", "ns1", "llm") not in kmock.objects
    # The warning is posted once, not on every cycle.
    assert len([e for e in events(kmock) if e.get("reason") == "InvalidSpec"]) == 1


async def test_spec_update_creates_a_new_revision(kmock, run_operator) -> None:
    body = seed(kmock)
    await run_operator()
    first = revision_of(body)
    ready_pod(kmock, await eventually(lambda: deployments(kmock)[f"llm-{first}"]), "old-1")
    second = await change_image(kmock)
    assert second != first
    await eventually(lambda: deployments(kmock)[f"llm-{second}"])
    # The old revision serves until the new one is Ready (never in the emulator: no kubelet).
    assert f"llm-{first}" in deployments(kmock)
    # The Deployment is applied before the status is written: wait for the status too.
    status = await eventually(lambda: (s := kmock.objects[RESOURCE, "ns1", "llm"].raw["status"])
                              and s.get("target", {}).get("revision") == second and s)
    assert status["config"]["revision"] == first
    assert condition(kmock, "Progressing")["reason"] == "RollingOut"


async def test_old_revision_is_removed_once_the_new_one_is_ready(kmock, run_operator) -> None:
    # The pods are put straight into the emulator, so they never reach the operator's watch cache: every
    # decision to act here is made again from a fresh read, which is what keeps the old revision serving.
    body = seed(kmock, **{"scaling.drainTimeout": "1s"})
    first = revision_of(body)
    await run_operator()
    ready_pod(kmock, await eventually(lambda: deployments(kmock)[f"llm-{first}"]), "old-1")
    second = await change_image(kmock, **{"scaling.drainTimeout": "1s"})
    new = await eventually(lambda: deployments(kmock)[f"llm-{second}"])
    await asyncio.sleep(1.0)
    assert f"llm-{first}" in deployments(kmock)  # the old revision serves while the new one loads
    ready_pod(kmock, new, "new-1")
    # The old pod leaves the Service first (drain), then its revision goes.
    old_pod = kmock.objects["v1/pods", "ns1", "old-1"]
    await eventually(lambda: "infertune.io/serving" not in old_pod.raw["metadata"]["labels"])
    assert "infertune.io/unserved-since" in kmock.objects["v1/pods", "ns1", "old-1"].raw["metadata"]["annotations"]
    await eventually(lambda: f"llm-{first}" not in deployments(kmock), timeout=10)
    resource = kmock.objects[RESOURCE, "ns1", "llm"]
    status = await eventually(lambda: resource.raw["status"]["config"]["revision"] == second)
    assert status


async def test_a_new_image_half_ready_keeps_its_size_while_the_old_revision_shrinks(kmock, run_operator) -> None:
    # Two replicas, a new image, one new pod Ready: the old revision keeps one pod serving beside it. The old
    # revision's plan must resize the old Deployment; rendered from today's spec (the new image, the same knobs)
    # it named the new Deployment, which was then set to 2 and back to 1 every cycle, and its ReplicaSet added
    # and removed its second pod before it could load (the e2e rollout that never ended after an API restart).
    scaling = {"scaling.minReplicas": 2, "scaling.maxReplicas": 2, "scaling.drainTimeout": "1s"}
    body = seed(kmock, **scaling)
    first = revision_of(body)
    await run_operator()
    old = await eventually(lambda: deployments(kmock)[f"llm-{first}"])
    ready_pod(kmock, old, "old-1")
    ready_pod(kmock, old, "old-2")
    second = await change_image(kmock, **scaling)
    new = await eventually(lambda: deployments(kmock)[f"llm-{second}"])
    ready_pod(kmock, new, "new-1")
    await eventually(lambda: deployments(kmock)[f"llm-{first}"]["spec"]["replicas"] == 1)
    sizes = set()
    for _ in range(30):  # 3 s: six cycles of 0.5 s
        sizes.add(deployments(kmock)[f"llm-{second}"]["spec"]["replicas"])
        await asyncio.sleep(0.1)
    assert sizes == {2}
    # No third Deployment (the new image with the old knobs) was ever made.
    assert set(deployments(kmock)) == {f"llm-{first}", f"llm-{second}"}


async def test_a_service_owned_by_someone_else_is_left_alone(kmock, run_operator) -> None:
    kmock.objects["v1/services", "ns1", "llm"] = {
        "metadata": {"name": "llm", "namespace": "ns1", "uid": "foreign"}, "spec": {"selector": {"app": "mine"}}}
    seed(kmock)
    await run_operator()
    cond = await eventually(lambda: condition(kmock, "Degraded"))
    assert cond["status"] == "True" and cond["reason"] == "NameConflict"
    assert "not owned by this InferenceDeployment" in cond["message"]
    # Cycles later (the stamps have whole seconds) the conflict is the same one: it began when it began.
    await asyncio.sleep(2.5)
    later = condition(kmock, "Degraded")
    assert later["reason"] == "NameConflict" and later["lastTransitionTime"] == cond["lastTransitionTime"]
    assert kmock.objects["v1/services", "ns1", "llm"].raw["spec"]["selector"] == {"app": "mine"}
    patches = [r for r in kmock[kmock.resource("v1/services")] if r.method in ("PATCH", "PUT", "DELETE")]
    assert patches == []


async def test_dry_run_writes_nothing(kmock, run_operator) -> None:
    seed(kmock)
    await run_operator(dry_run=True)
    await asyncio.sleep(1.5)
    assert deployments(kmock) == {}
    assert "status" not in kmock.objects[RESOURCE, "ns1", "llm"].raw


async def test_events_are_posted_once_per_decision(kmock, run_operator) -> None:
    seed(kmock)
    await run_operator()
    await eventually(lambda: kmock.objects[RESOURCE, "ns1", "llm"].raw["status"]["config"])
    await asyncio.sleep(2.0)  # four more cycles
    posted = [r for r in kmock if r.method == "POST" and "events" in str(r.url)]
    reasons = sorted(r.data.get("reason") for r in posted)
    assert reasons == ["RevisionCreated", "RevisionServing"], reasons


async def test_no_finalizer_is_added(kmock, run_operator) -> None:
    # Without a finalizer a resource (and its namespace) can be deleted while the operator is not running.
    seed(kmock)
    await run_operator()
    await eventually(lambda: kmock.objects[RESOURCE, "ns1", "llm"].raw["status"]["config"])
    await asyncio.sleep(1.0)
    assert not kmock.objects[RESOURCE, "ns1", "llm"].raw["metadata"].get("finalizers")


async def test_a_failed_write_shows_in_degraded_and_the_retry_decides_and_posts_once(kmock, run_operator) -> None:
    body = seed(kmock)
    rev = revision_of(body)
    # The API server refuses the first Deployment create (an admission webhook timing out, say).
    kmock["post"][kmock.resource("apps/v1/deployments")][:1] << 500
    await run_operator()
    await eventually(lambda: deployments(kmock)[f"llm-{rev}"])
    await eventually(lambda: condition(kmock, "Degraded")["status"] == "False")
    await asyncio.sleep(1.0)
    writes = [r.data["status"] for r in kmock if r.method == "PATCH" and str(r.url.path).endswith("/llm/status")]
    # The failed cycle wrote only the condition, with what failed where on-call looks; the retry, a second
    # later, made the decision and recorded it.
    failed = writes[0]
    degraded = next(c for c in failed["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ApiError"
    assert "POST /apis/apps/v1/namespaces/ns1/deployments: HTTP 500" in degraded["message"]
    assert not failed.get("decisions") and "config" not in failed
    assert any(w.get("config", {}).get("revision") == rev for w in writes[1:])
    posted = [r.data.get("reason") for r in kmock if r.method == "POST" and "events" in str(r.url)]
    assert posted.count("RevisionCreated") == 1, posted


async def test_the_cycle_stops_once_the_resource_is_deleted(kmock, run_operator) -> None:
    # Without a finalizer kopf never sees a deletion timestamp; the cycle must still stop, or it would keep
    # re-creating the children that garbage collection removes.
    body = seed(kmock)
    await run_operator()
    await eventually(lambda: deployments(kmock)[f"llm-{revision_of(body)}"])
    await kmock.delete("/apis/infertune.io/v1alpha1/namespaces/ns1/inferencedeployments/llm")
    await asyncio.sleep(1.5)  # the DELETED event, and the one cycle that stops
    before = len(list(kmock))
    await asyncio.sleep(2.0)  # four intervals
    after = [(r.method, str(r.url.path)) for r in list(kmock)[before:]]
    assert not [r for r in after if "/ns1/" in r[1]], after


async def test_a_steady_cycle_reads_the_watch_cache_not_the_api_server(kmock, run_operator) -> None:
    """Once the revision exists and nothing is to change, cycles decide from the watch caches: no LIST."""
    body = seed(kmock)
    operator = await run_operator()
    rev = revision_of(body)
    await eventually(lambda: deployments(kmock)[f"llm-{rev}"])
    await asyncio.sleep(1.5)  # the Deployment's ADDED event reaches the cache
    reads, cycles, cached_cycles = 0, 0, 0
    facts, reconcile = operator.cluster.facts, operator.reconcile

    async def counting_facts(namespace: str, name: str) -> Any:
        nonlocal reads
        reads += 1
        return await facts(namespace, name)

    async def counting_reconcile(body: Any, logger: Any, cached: Any = None) -> None:
        nonlocal cycles, cached_cycles
        cycles += 1
        cached_cycles += cached is not None and bool(cached[0])
        await reconcile(body, logger, cached)

    operator.cluster.facts = counting_facts  # type: ignore[method-assign]
    operator.reconcile = counting_reconcile  # type: ignore[method-assign]
    await asyncio.sleep(3)  # six cycles at 0.5 s
    assert cycles >= 3 and cached_cycles == cycles
    assert reads == 0
    assert set(deployments(kmock)) == {f"llm-{rev}"}
