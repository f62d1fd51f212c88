"""Test: decide()'s revision bookkeeping — initial knobs, surge-then-switch rollouts, conditions."""

from __future__ import annotations

import datetime

import pytest

import specs
from infertune import conditions, decide, models, observation, render, rollout, validation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def spec_of(**changes: object) -> models.InferenceDeploymentSpec:
    spec, problems = validation.parse(specs.spec(**changes))
    assert spec is not None, problems
    return spec


def obs(spec: models.InferenceDeploymentSpec, status: models.InferenceDeploymentStatus | None = None,
        revisions: tuple[observation.RevisionFacts, ...] = (), pods: tuple[observation.PodFacts, ...] = (),
        generation: int = 1) -> observation.Observation:
    return observation.Observation(name="llm", namespace="ns1", generation=generation, spec=spec,
                                   status=status or models.InferenceDeploymentStatus(), revisions=revisions, pods=pods)


def rev_facts(spec: models.InferenceDeploymentSpec, knobs: models.Knobs, ready: int, replicas: int = 1
              ) -> observation.RevisionFacts:
    rev = render.revision(spec, knobs)
    return observation.RevisionFacts(name=f"llm-{rev}", revision=rev, knobs=knobs, replicas=replicas,
                                     ready_replicas=ready, created=0)


def pod(rev: str, name: str, ready: bool = True, serving: bool = True) -> observation.PodFacts:
    return observation.PodFacts(name=name, revision=rev, ready=ready, serving=serving, created=0)


def test_initial_knobs_follow_the_engine_default_within_bounds() -> None:
    knobs, why = decide.initial_knobs(spec_of(**{"accelerator.type": "h100-sxm-80gb"}))
    assert knobs.max_batch_size == 512  # vLLM's 1024 on an H100, clamped to the bound 512
    assert "clamped to tuning.maxBatchSize 8..512" in why
    knobs, _ = decide.initial_knobs(spec_of(**{"tuning.initialMaxBatchSize": 64}))
    assert knobs.max_batch_size == 64
    knobs, _ = decide.initial_knobs(spec_of(**{"tuning.kvCacheDtype": "fp8"}))
    assert knobs.kv_cache_dtype is models.KvDtype.FP8


def test_first_cycle_plans_one_revision_and_records_why() -> None:
    spec = spec_of(**{"scaling.standby": {"min": 1, "max": 1}})
    d = decide.decide(obs(spec), now=NOW)
    assert len(d.revisions) == 1
    assert d.revisions[0].replicas == 2  # one serving + one standby
    assert d.status.config is not None and d.status.config.max_batch_size == 256
    assert [e.reason for e in d.events] == ["RevisionCreated", "RevisionServing"]
    assert d.status.decisions[-1].kind == "revision"
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "ReplicasNotReady"


def test_ready_when_serving_reaches_desired() -> None:
    spec = spec_of()
    knobs, _ = decide.initial_knobs(spec)
    facts = rev_facts(spec, knobs, ready=1)
    first = decide.decide(obs(spec), now=NOW)
    d = decide.decide(obs(spec, first.status, (facts,), (pod(facts.revision, "p1"),)), now=NOW)
    assert d.status.replicas.serving == 1 and d.status.replicas.display == "1/1"
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert d.events == ()  # nothing new happened


def test_spec_change_surges_the_new_revision_before_removing_the_old() -> None:
    spec = spec_of()
    knobs, _ = decide.initial_knobs(spec)
    old = rev_facts(spec, knobs, ready=1)
    settled = decide.decide(obs(spec, None, (old,), (pod(old.revision, "p1"),)), now=NOW).status

    new_spec = spec_of(**{"engine.image": "vllm/vllm-openai:v0.12.0"})
    new_rev = render.revision(new_spec, knobs)
    d = decide.decide(obs(new_spec, settled, (old,), (pod(old.revision, "p1"),), generation=2), now=NOW)
    assert {p.revision: p.replicas for p in d.revisions} == {new_rev: 1, old.revision: 1}
    assert d.status.config is not None and d.status.config.revision == old.revision
    assert d.status.target is not None and d.status.target.revision == new_rev
    assert d.status.target.handover == 1.0  # one old pod served what one new pod will
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert progressing.reason == "RollingOut"

    # The new revision serves: the old pod leaves the Service and drains; its revision stays until drained.
    new = rev_facts(new_spec, knobs, ready=1)
    pods = (pod(old.revision, "p1"), pod(new_rev, "p2"))
    d2 = decide.decide(obs(new_spec, d.status, (old, new), pods, generation=2), now=NOW)
    assert [x.revision for x in d2.revisions] == [new_rev, old.revision]
    unserve = [x for x in d2.pod_patches if x.name == "p1"]
    assert unserve and unserve[0].serving is False and unserve[0].unserved_since == "2026-01-01T00:00:00Z"

    # Drained (no metrics here, so the drain timeout decides): the old revision is dropped from the plan.
    later = NOW + datetime.timedelta(seconds=121)
    drained = observation.PodFacts(name="p1", revision=old.revision, ready=True, serving=False, created=0,
                                   unserved_since=NOW.timestamp())
    d3 = decide.decide(obs(new_spec, d2.status, (old, new), (drained, pod(new_rev, "p2")), generation=2), now=later)
    assert [x.revision for x in d3.revisions] == [new_rev]
    assert d3.status.config is not None and d3.status.config.revision == new_rev
    assert d3.status.target is None
    assert d3.status.config.serving_since == conditions.timestamp(later)
    assert "RevisionServing" in [e.reason for e in d3.events]


def test_narrower_bounds_move_the_knobs_into_them() -> None:
    spec = spec_of()
    first = decide.decide(obs(spec), now=NOW)
    narrowed = spec_of(**{"tuning.maxBatchSize": {"min": 8, "max": 128}})
    d = decide.decide(obs(narrowed, first.status, generation=2), now=NOW)
    assert d.revisions[0].knobs.max_batch_size == 128
    assert "no longer allows maxBatchSize 256" in (d.status.config.reason if d.status.config else "")


def test_invalid_status_changes_only_spec_valid() -> None:
    before = decide.decide(obs(spec_of()), now=NOW).status
    after = decide.invalid_status(before, message="spec.x: bad", generation=2, now=NOW)
    cond = next(c for c in after.conditions if c.type == "SpecValid")
    assert cond.status == "False" and cond.message == "spec.x: bad" and cond.observed_generation == 2
    assert after.config == before.config and after.replicas == before.replicas


def test_condition_transition_time_moves_only_on_a_flip() -> None:
    from infertune import conditions

    t1 = NOW
    t2 = NOW + datetime.timedelta(minutes=5)
    c1 = conditions.upsert((), type="Ready", status=False, reason="A", message="", generation=1, now=t1)
    c2 = conditions.upsert(c1, type="Ready", status=False, reason="B", message="m", generation=1, now=t2)
    assert c2[0].last_transition_time == conditions.timestamp(t1)
    c3 = conditions.upsert(c2, type="Ready", status=True, reason="C", message="", generation=1, now=t2)
    assert c3[0].last_transition_time == conditions.timestamp(t2)


def _plan(pods: tuple[observation.PodFacts, ...], *, serving: int, standby: int = 0,
          in_flight: dict[str, float | None] | None = None, handover: float | None = None,
          slots: dict[str, int] | None = None, carry: int | None = None) -> rollout.Plan:
    old_knobs = models.Knobs(max_batch_size=1024, kv_cache_dtype=models.KvDtype.DEFAULT)
    new_knobs = models.Knobs(max_batch_size=13, kv_cache_dtype=models.KvDtype.FP8)
    revisions = (
        observation.RevisionFacts(name="llm-old", revision="old", knobs=old_knobs,
                                  replicas=sum(1 for p in pods if p.revision == "old"), ready_replicas=0, created=0),
        observation.RevisionFacts(name="llm-new", revision="new", knobs=new_knobs,
                                  replicas=sum(1 for p in pods if p.revision == "new"), ready_replicas=0, created=0),
    )
    return rollout.plan(target="new", knobs=new_knobs, serving=serving, standby=standby, revisions=revisions,
                        pods=pods, in_flight=in_flight or {p.name: 0.0 for p in pods}, drain_timeout=120,
                        now=NOW, handover=handover, slots=slots, carry=carry)


def test_idle_old_pods_leave_mid_rollout_once_drained() -> None:
    # 8 new pods serve and 2 more start; 5 old pods are out of the Service, one still finishing a request.
    pods = (*(pod("new", f"n{i}") for i in range(8)), *(pod("new", f"s{i}", ready=False) for i in range(2)),
            *(pod("old", f"o{i}", serving=False) for i in range(5)))
    p = _plan(pods, serving=10, in_flight={**{f"o{i}": 0.0 for i in range(5)}, "o4": 2.0})
    # Two old pods serve again until the target's starting pods are Ready; the drained rest go, the busy one stays.
    assert {x.name for x in p.patches if x.serving is True} == {"o0", "o1"}
    assert {x.name for x in p.patches if x.deletion_cost == rollout.LEAVING_COST} == {"o2", "o3"}
    assert {r.revision: r.replicas for r in p.revisions} == {"new": 10, "old": 3}
    assert not p.rollout_done and p.serving == 10


def test_old_pods_still_starting_keep_their_revision_whole() -> None:
    pods = (*(pod("new", f"n{i}") for i in range(8)), pod("new", "s0", ready=False),
            pod("old", "o0", serving=False), pod("old", "o1", ready=False, serving=False))
    p = _plan(pods, serving=9)
    assert {r.revision: r.replicas for r in p.revisions}["old"] == 2
    assert not [x for x in p.patches if x.deletion_cost == rollout.LEAVING_COST and x.name.startswith("o")]


def test_after_the_switch_the_old_revision_shrinks_pod_by_pod_as_they_drain() -> None:
    pods = (*(pod("new", f"n{i}") for i in range(3)), *(pod("old", f"o{i}", serving=False) for i in range(3)))
    p = _plan(pods, serving=3, in_flight={"o0": 1.0, "o1": 0.0, "o2": 0.0, **{f"n{i}": 0.0 for i in range(3)}})
    assert {r.revision: r.replicas for r in p.revisions} == {"new": 3, "old": 1}
    assert {x.name for x in p.patches if x.deletion_cost == rollout.LEAVING_COST} == {"o1", "o2"}
    done = _plan(pods[:3], serving=3)
    assert done.rollout_done and [r.revision for r in done.revisions] == ["new"]


@pytest.mark.parametrize(("old_pods", "ready", "wanted", "handover", "old_serving"), [
    (6, 5, 6, None, 6),  # no ratio: every old pod serves until the whole target does
    (6, 5, 6, 1.0, 1),  # sized alike: the one target pod still loading is covered by one old pod
    (13, 7, 8, 1.6, 2),  # 13 at 1,024 were sized like 8 at 13/fp8: the missing one takes 2 of them
    (13, 0, 8, 1.6, 13),  # nothing of the target serves yet: all of them
])
def test_old_pods_hand_over_in_proportion_as_target_pods_serve(old_pods: int, ready: int, wanted: int,
                                                              handover: float | None, old_serving: int) -> None:
    pods = (*(pod("new", f"n{i}") for i in range(ready)),
            *(pod("new", f"s{i}", ready=False) for i in range(wanted - ready)),
            *(pod("old", f"o{i}") for i in range(old_pods)))
    p = _plan(pods, serving=wanted, handover=handover)
    demoted = {x.name for x in p.patches if x.serving is False}
    assert old_pods - len(demoted) == old_serving and all(n.startswith("o") for n in demoted)
    assert p.serving == ready + old_serving and not p.rollout_done


@pytest.mark.parametrize(("held", "old_serving"), [
    (20.0, 3),  # 20 over 9 pods is 2.2 each, within an old pod's 5: the proportional 3 old pods do
    (55.0, 5),  # 55 / 5 = 11 pods keep every even share within 5: 5 old ones beside the 6
    (200.0, 13),  # more than every pod's batch: all of them (no more exist)
])
def test_enough_old_pods_serve_that_the_routers_even_share_fits_their_batch(held: float, old_serving: int) -> None:
    # 6 of 7 target pods serve; the old revision (1,024/default) runs 5 requests per pod at most.
    pods = (*(pod("new", f"n{i}") for i in range(6)), pod("new", "s0", ready=False),
            *(pod("old", f"o{i}") for i in range(13)))
    serving = [p.name for p in pods if p.ready]
    in_flight = {name: held / len(serving) for name in serving}
    p = _plan(pods, serving=7, handover=2.6, slots={"old": 5}, in_flight=in_flight)
    demoted = {x.name for x in p.patches if x.serving is False}
    assert 13 - len(demoted) == old_serving and p.serving == 6 + old_serving
    # Without the old revision's batch, the capacity ratio alone: 3 old pods.
    plain = _plan(pods, serving=7, handover=2.6, in_flight=in_flight)
    assert 13 - len({x.name for x in plain.patches if x.serving is False}) == 3
    # A revision whose batch is unknown (its knobs unreadable) does not switch the guard off for the others.
    other = _plan(pods, serving=7, handover=2.6, slots={"old": 5, "gone": 1}, in_flight=in_flight)
    assert other.patches == p.patches
    stray = (*pods, pod("unknown", "u0"))
    mixed = _plan(stray, serving=7, handover=2.6, slots={"old": 5}, in_flight={**in_flight, "u0": 0.0})
    assert 13 - len({x.name for x in mixed.patches if x.serving is False and x.name.startswith("o")}) >= old_serving


@pytest.mark.parametrize(("carry", "switched"), [(None, False), (8, False), (7, True), (3, True)])
def test_the_old_revision_leaves_once_enough_target_pods_carry_the_demand(carry: int | None, switched: bool) -> None:
    # The target grew to 8 while its first pods loaded; 7 serve, the 8th still loads.
    pods = (*(pod("new", f"n{i}") for i in range(7)), pod("new", "s0", ready=False),
            *(pod("old", f"o{i}") for i in range(4)))
    p = _plan(pods, serving=8, handover=1.0, carry=carry)
    assert p.switched is switched
    assert {x.name for x in p.patches if x.serving is False} == ({f"o{i}" for i in range(4)} if switched
                                                                  else {f"o{i}" for i in range(1, 4)})
    assert p.serving == (7 if switched else 8)
    assert {r.revision: r.replicas for r in p.revisions}["new"] == 8  # the 8th pod keeps loading


def test_pods_that_go_at_the_drain_timeout_with_requests_in_flight_are_named_as_cutting_them() -> None:
    # After the switch: o0 has been out of the Service for the whole drain timeout (120 s) with 40 requests
    # still in flight, o1 went empty, o2 is still within its drain. Only o0 cuts requests, and o2 stays.
    out_since = NOW.timestamp() - 121
    pods = (*(pod("new", f"n{i}") for i in range(3)),
            *(observation.PodFacts(name=f"o{i}", revision="old", ready=True, serving=False, created=0,
                                   unserved_since=out_since if i < 2 else NOW.timestamp() - 30) for i in range(3)))
    in_flight: dict[str, float | None] = {"o0": 40.0, "o1": 0.0, "o2": 7.0, **{f"n{i}": 0.0 for i in range(3)}}
    p = _plan(pods, serving=3, in_flight=in_flight)
    assert p.cut == (("o0", 40.0),)
    assert {x.name for x in p.patches if x.deletion_cost == rollout.LEAVING_COST} == {"o0", "o1"}
    assert {r.revision: r.replicas for r in p.revisions}["old"] == 1
    # Every pod drained empty: nothing is cut.
    assert _plan(pods, serving=3, in_flight={**in_flight, "o0": 0.0}).cut == ()


def test_at_the_switch_an_old_pod_with_a_queue_keeps_serving_until_it_has_worked_it_off() -> None:
    # The target serves at full size. The old revision runs 5 requests per pod at most: o0 holds 40 (35 queued,
    # which the drain timeout would cut had it left the Service), o1 holds 3. o1 leaves; o0 serves on, and its
    # revision stays. Once o0 holds no more than its batch, it leaves too.
    pods = (*(pod("new", f"n{i}") for i in range(3)), pod("old", "o0"), pod("old", "o1"))
    in_flight: dict[str, float | None] = {"o0": 40.0, "o1": 3.0, **{f"n{i}": 1.0 for i in range(3)}}
    p = _plan(pods, serving=3, slots={"old": 5}, in_flight=in_flight)
    assert {x.name for x in p.patches if x.serving is False} == {"o1"}
    assert {r.revision: r.replicas for r in p.revisions} == {"new": 3, "old": 2}
    assert p.serving == 4 and not p.rollout_done
    p = _plan(pods, serving=3, slots={"old": 5}, in_flight={**in_flight, "o0": 5.0})
    assert {x.name for x in p.patches if x.serving is False} == {"o0", "o1"}
    # Without the old revision's batch (no slots known) every old pod leaves, as before.
    assert {x.name for x in _plan(pods, serving=3, in_flight=in_flight).patches if x.serving is False} == {"o0", "o1"}
