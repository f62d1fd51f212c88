"""Test: the rendered Deployment, Service and config for every engine carry the right flag for every knob."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import yaml

import specs
from infertune import catalog, kube, models, render, validation

OWNER = render.Owner(name="llm", namespace="ns1", uid="uid-1")
KNOBS = models.Knobs(max_batch_size=96, kv_cache_dtype=models.KvDtype.FP8)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def full_spec(**changes: Any) -> models.InferenceDeploymentSpec:
    """Every knob set, two H100s per replica."""
    base = {
        "accelerator.type": "h100-sxm-80gb", "accelerator.count": 2,
        "engine.chunkedPrefill": True, "engine.maxNumBatchedTokens": 8192, "engine.prefixCaching": False,
        "engine.gpuMemoryUtilization": 0.85, "model.maxModelLen": 8192,
    }
    spec, problems = validation.parse(specs.spec(**{**base, **changes}))
    assert problems == [], problems
    assert spec is not None
    return spec


def container(spec: models.InferenceDeploymentSpec, knobs: models.Knobs = KNOBS) -> dict[str, Any]:
    dep = render.deployment(OWNER, spec, knobs, replicas=2)
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c["env"]}


def has_flag(args: list[str], flag: str, value: str | None = None) -> bool:
    if value is None:
        return flag in args
    return any(a == flag and b == value for a, b in itertools.pairwise(args))


FLAG_TABLE: list[tuple[str, dict[str, Any], list[tuple[str, str | None]]]] = [
    ("vllm", {}, [
        ("--max-num-seqs", "96"), ("--kv-cache-dtype", "fp8"), ("--enable-chunked-prefill", None),
        ("--max-num-batched-tokens", "8192"), ("--no-enable-prefix-caching", None),
        ("--gpu-memory-utilization", "0.85"), ("--tensor-parallel-size", "2"), ("--served-model-name", MODEL),
        ("--port", "8000"), ("--max-model-len", "8192"), ("--model", MODEL),
    ]),
    ("sglang", {"engine.kind": "sglang"}, [
        ("--max-running-requests", "96"), ("--kv-cache-dtype", "fp8_e4m3"), ("--chunked-prefill-size", "8192"),
        ("--disable-radix-cache", None), ("--mem-fraction-static", "0.85"), ("--tp-size", "2"),
        ("--served-model-name", MODEL), ("--port", "8000"), ("--context-length", "8192"), ("--enable-metrics", None),
        ("--collect-tokens-histogram", None), ("--model-path", MODEL),
    ]),
    ("trtllm", {"engine.kind": "trtllm"}, [
        ("--max_batch_size", "96"), ("--max_num_tokens", "8192"), ("--enable_chunked_prefill", None),
        ("--kv_cache_free_gpu_memory_fraction", "0.85"), ("--tp_size", "2"), ("--port", "8000"),
        ("--max_seq_len", "8192"), ("--extra_llm_api_options", "/etc/infertune/trtllm-options.yaml"),
    ]),
    ("tgi", {"engine.kind": "tgi"}, [
        ("--max-batch-size", "96"), ("--max-concurrent-requests", "128"), ("--kv-cache-dtype", "fp8_e4m3fn"),
        ("--max-batch-prefill-tokens", "8192"), ("--cuda-memory-fraction", "0.85"), ("--num-shard", "2"),
        ("--served-model-name", MODEL), ("--port", "8000"), ("--max-total-tokens", "8192"), ("--model-id", MODEL),
    ]),
]


@pytest.mark.parametrize(("engine", "changes", "expected"), FLAG_TABLE, ids=[r[0] for r in FLAG_TABLE])
def test_every_knob_has_its_flag(engine: str, changes: dict[str, Any], expected: list[tuple[str, str | None]]) -> None:
    args = container(full_spec(**changes))["args"]
    for flag, value in expected:
        assert has_flag(args, flag, value), f"{engine}: {flag} {value} missing from {args}"


def test_tgi_prefix_caching_is_an_env_var() -> None:
    assert env_of(container(full_spec(**{"engine.kind": "tgi"})))["PREFIX_CACHING"] == "0"


def test_sglang_and_trtllm_set_their_commands() -> None:
    assert container(full_spec(**{"engine.kind": "sglang"}))["command"] == ["python3", "-m", "sglang.launch_server"]
    assert container(full_spec(**{"engine.kind": "trtllm"}))["command"] == ["trtllm-serve", MODEL]
    assert "command" not in container(full_spec())  # vLLM keeps the image's entrypoint


def test_trtllm_yaml_options_in_a_config_map() -> None:
    spec = full_spec(**{"engine.kind": "trtllm"})
    cm = render.config_map(OWNER, spec, KNOBS)
    assert cm is not None
    options = yaml.safe_load(cm["data"]["trtllm-options.yaml"])
    assert options == {"kv_cache_config": {"dtype": "fp8", "enable_block_reuse": False}}
    mounts = {m["name"]: m for m in container(spec)["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/infertune"
    assert render.config_map(OWNER, full_spec(), KNOBS) is None


def test_nim_1_knobs_are_env_vars() -> None:
    spec = full_spec(**{"engine.kind": "nim", "engine.nim": {"generation": 1}})
    env = env_of(container(spec, models.Knobs(max_batch_size=96)))
    assert env["NIM_MAX_NUM_SEQS"] == "96"
    assert env["NIM_ENABLE_CHUNKED_PREFILL"] == "1"
    assert env["NIM_MAX_NUM_BATCHED_TOKENS"] == "8192"
    assert env["NIM_ENABLE_KV_CACHE_REUSE"] == "0"
    assert env["NIM_GPU_MEM_FRACTION"] == "0.85"
    assert env["NIM_SERVED_MODEL_NAME"] == MODEL
    assert env["NIM_SERVER_PORT"] == "8000"
    assert env["NIM_MAX_MODEL_LEN"] == "8192"


@pytest.mark.parametrize(("backend", "expected"), [
    ("vllm", ["--max-num-seqs", "96", "--kv-cache-dtype", "fp8", "--tensor-parallel-size", "2"]),
    ("sglang", ["--max-running-requests", "96", "--kv-cache-dtype", "fp8_e4m3", "--enable-metrics",
                "--collect-tokens-histogram"]),
])
def test_nim_2_passes_backend_flags_through(backend: str, expected: list[str]) -> None:
    spec = full_spec(**{"engine.kind": "nim", "engine.nim": {"generation": 2, "backend": backend}})
    c = container(spec)
    passthrough = env_of(c)["NIM_PASSTHROUGH_ARGS"].split()
    for token in expected:
        assert token in passthrough
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"


@pytest.mark.parametrize(("kind", "path"), [("vllm", "/health"), ("sglang", "/health"), ("trtllm", "/health"),
                                            ("tgi", "/health"), ("nim", "/v1/health/ready")])
def test_readiness_on_the_engine_health_endpoint(kind: str, path: str) -> None:
    c = container(full_spec(**{"engine.kind": kind}), models.Knobs(max_batch_size=8))
    assert c["readinessProbe"]["httpGet"] == {"path": path, "port": "http"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600


def test_deployment_shape() -> None:
    spec = full_spec(**{"accelerator.count": 2})
    dep = render.deployment(OWNER, spec, KNOBS, replicas=3)
    rev = render.revision(spec, KNOBS)
    assert dep["metadata"]["name"] == f"llm-{rev}"
    assert dep["metadata"]["ownerReferences"] == [{
        "apiVersion": "infertune.io/v1alpha1", "kind": "InferenceDeployment", "name": "llm", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == {"infertune.io/deployment": "llm", "infertune.io/revision": rev}
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels["infertune.io/serving"] == "true"  # fail open: pods serve unless the operator says otherwise
    assert labels["infertune.io/max-batch-size"] == "96" and labels["infertune.io/kv-cache-dtype"] == "fp8"
    assert labels["app.kubernetes.io/managed-by"] == "infertune"
    c = pod["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2" and c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 15}}
    # 15 s preStop + 120 s drain + 15 s exit
    assert pod["spec"]["terminationGracePeriodSeconds"] == 150
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_service_selects_serving_pods_of_any_revision() -> None:
    svc = render.service(OWNER, full_spec())
    assert svc["metadata"]["name"] == "llm"
    assert svc["spec"]["selector"] == {"infertune.io/deployment": "llm", "infertune.io/serving": "true"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_template_overrides_are_merged() -> None:
    spec = full_spec(**{"template": {
        "labels": {"team": "search"}, "annotations": {"note": "x"}, "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "priorityClassName": "high", "imagePullSecrets": [{"name": "regcred"}], "cpu": "8", "memory": "64Gi",
    }})
    dep = render.deployment(OWNER, spec, KNOBS, replicas=1)
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "search"
    assert pod["metadata"]["annotations"]["note"] == "x"
    assert pod["spec"]["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    toleration = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    assert toleration in pod["spec"]["tolerations"]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    c = pod["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"] == "8" and c["resources"]["limits"]["memory"] == "64Gi"


def test_a_hostile_template_cannot_replace_owned_labels() -> None:
    # Validation rejects this; render must hold even if something skipped validation.
    spec = full_spec().model_copy(update={"template": models.PodTemplateOverrides.model_construct(
        labels={"infertune.io/serving": "false", "infertune.io/deployment": "other", "infertune.io/revision": "x"},
        annotations={}, node_selector={}, tolerations=(), image_pull_secrets=())})
    labels = render.deployment(OWNER, spec, KNOBS, replicas=1)["spec"]["template"]["metadata"]["labels"]
    assert labels["infertune.io/serving"] == "true"
    assert labels["infertune.io/deployment"] == "llm"
    assert labels["infertune.io/revision"] == render.revision(spec, KNOBS)


def test_the_operators_flags_and_variables_are_written_after_the_users() -> None:
    # argparse, click and the kubelet (for duplicate env names) keep the last occurrence: the operator's.
    spec = full_spec(**{"engine.args": ["--enforce-eager"], "engine.env": [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]})
    c = container(spec)
    assert c["args"][0] == "--enforce-eager"
    assert c["args"][-2:] == ["--max-model-len", "8192"]
    assert c["env"][0] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    tgi = container(full_spec(**{"engine.kind": "tgi", "engine.env": [{"name": "HF_TOKEN", "value": "x"}]}))
    assert [e["name"] for e in tgi["env"]][-1] == "PREFIX_CACHING"


def test_kubelet_expansion_cannot_turn_an_argument_into_an_owned_flag() -> None:
    # $(X) with X=--max-num-seqs=4096 would reach vLLM as an owned flag; doubled, the kubelet hands over '$(X)'.
    spec = full_spec(**{"engine.args": ["$(X)", "a$b", "$$"],
                        "engine.env": [{"name": "X", "value": "--max-num-seqs=1"}]})
    assert container(spec)["args"][:3] == ["$$(X)", "a$$b", "$$$$"]


def test_engine_pods_meet_the_restricted_pod_security_standard_by_default() -> None:
    for kind in ("vllm", "sglang", "trtllm", "tgi", "nim"):
        dep = render.deployment(OWNER, full_spec(**{"engine.kind": kind}), KNOBS, replicas=1)
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}, kind
        assert pod["securityContext"] == {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["automountServiceAccountToken"] is False
        # Only volume types the restricted standard allows, and a writable HOME for a non-root engine.
        assert all(set(v) <= {"name", "emptyDir", "configMap"} for v in pod["volumes"]), kind
        assert {"name": "HOME", "value": render.HOME} in c["env"]
        assert {"name": "home", "mountPath": render.HOME} in c["volumeMounts"]
    tgi = container(full_spec(**{"engine.kind": "tgi"}))
    assert "/data" in [m["mountPath"] for m in tgi["volumeMounts"]]


def test_the_security_context_can_be_overridden_for_an_engine_that_needs_more() -> None:
    spec = full_spec(**{"template.securityContext": {
        "runAsUser": 0, "runAsNonRoot": False, "fsGroup": 0, "addCapabilities": ["IPC_LOCK"],
        "seccompProfile": "Unconfined"}, "engine.env": [{"name": "HOME", "value": "/root"}]})
    dep = render.deployment(OWNER, spec, KNOBS, replicas=1)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["runAsUser"] == 0 and c["securityContext"]["runAsNonRoot"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    pod_context = dep["spec"]["template"]["spec"]["securityContext"]
    assert pod_context == {"fsGroup": 0, "seccompProfile": {"type": "Unconfined"}}
    assert [e for e in c["env"] if e["name"] == "HOME"] == [{"name": "HOME", "value": "/root"}]


def test_requests_come_from_the_model_so_pods_are_not_best_effort() -> None:
    # Llama-3.1-8B in BF16: parameters x 2 B of weights pass through host memory; 2 GPUs: 2 + 2 CPUs.
    c = container(full_spec())
    weights = catalog.resolve_model(full_spec().model).parameters * 2
    assert c["resources"]["requests"]["memory"] == f"{math.ceil(weights / 1024**3)}Gi"
    assert c["resources"]["requests"]["cpu"] == "4"
    assert "memory" not in c["resources"]["limits"]
    fp8 = container(full_spec(**{"model.weights": "fp8"}))
    assert int(fp8["resources"]["requests"]["memory"][:-2]) < int(c["resources"]["requests"]["memory"][:-2])
    own = container(full_spec(**{"template.cpu": "6", "template.memory": "40Gi"}))
    assert own["resources"]["requests"]["cpu"] == "6"
    assert own["resources"]["requests"]["memory"] == own["resources"]["limits"]["memory"] == "40Gi"


def test_revision_depends_on_pods_not_on_price_slo_or_scaling() -> None:
    a = full_spec()
    assert render.revision(a, KNOBS) == render.revision(full_spec(**{"accelerator.hourlyCost": 9.0}), KNOBS)
    assert render.revision(a, KNOBS) == render.revision(full_spec(**{"slo.itl": "80ms"}), KNOBS)
    assert render.revision(a, KNOBS) == render.revision(full_spec(**{"scaling.maxReplicas": 3}), KNOBS)
    assert render.revision(a, KNOBS) != render.revision(a, models.Knobs(max_batch_size=97))
    newer = full_spec(**{"engine.image": "vllm/vllm-openai:v0.12.0"})
    assert render.revision(a, KNOBS) != render.revision(newer, KNOBS)
    assert len(render.revision(a, KNOBS)) == 10


def test_knobs_round_trip_through_labels() -> None:
    labels = render.revision_labels(OWNER, full_spec(), KNOBS, "abc")
    assert render.knobs_from_labels(labels) == KNOBS
    assert render.knobs_from_labels({"infertune.io/max-batch-size": "many"}) is None


ROUND_TRIP = [
    ("vllm", {}), ("sglang", {"engine.kind": "sglang"}), ("trtllm", {"engine.kind": "trtllm"}),
    ("tgi", {"engine.kind": "tgi"}), ("nim-1", {"engine.kind": "nim", "engine.nim": {"generation": 1}}),
    ("nim-2-vllm", {"engine.kind": "nim", "engine.nim": {"generation": 2, "backend": "vllm"}}),
    ("nim-2-sglang", {"engine.kind": "nim", "engine.nim": {"generation": 2, "backend": "sglang"}}),
]


@pytest.mark.parametrize(("variant", "changes"), ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
@pytest.mark.parametrize("kv", [models.KvDtype.DEFAULT, models.KvDtype.FP8])
def test_reading_a_launch_back_gives_every_knob_the_engine_has(variant: str, changes: dict[str, Any],
                                                               kv: models.KvDtype) -> None:
    from infertune import runtimes
    from infertune.runtimes import registry

    spec = full_spec(**changes)
    runtime = registry.for_engine(spec.engine)
    assert runtime.variant == variant
    knobs = render.engine_knobs(spec, models.Knobs(max_batch_size=96, kv_cache_dtype=kv))
    launch = runtime.launch(knobs)
    read = runtime.read([*(launch.command or ()), *launch.args], dict(launch.env), dict(launch.files))
    for knob in runtimes.KNOBS:
        if runtime.lacks(knob) or (knob == "kv_cache_dtype" and not runtime.fp8_kv):
            continue
        assert read.get(knob) == getattr(knobs, knob), f"{variant}: {knob} read back as {read.get(knob)!r}"


def _as_the_api_server_stores_it(obj: Any) -> Any:
    """What comes back from a real API server: empty lists and maps are dropped."""
    if isinstance(obj, dict):
        return {k: _as_the_api_server_stores_it(v) for k, v in obj.items() if v not in ([], {})}
    if isinstance(obj, list):
        return [_as_the_api_server_stores_it(v) for v in obj]
    return obj


def test_a_stored_deployment_counts_as_applied_so_steady_cycles_write_nothing() -> None:
    spec, problems = validation.parse(specs.spec())
    assert spec is not None, problems
    deployment = next(m for m in render.manifests(OWNER, spec, KNOBS, replicas=1) if m["kind"] == "Deployment")
    assert {} in [v.get("emptyDir") for v in deployment["spec"]["template"]["spec"]["volumes"]]  # an empty map
    stored = _as_the_api_server_stores_it(deployment)
    assert kube.is_subset(deployment, stored)
    changed = _as_the_api_server_stores_it(deployment)
    changed["spec"]["replicas"] = 2
    assert not kube.is_subset(deployment, changed)
    changed = _as_the_api_server_stores_it(deployment)
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    assert not kube.is_subset(deployment, changed)  # an empty list wanted, a non-empty one found
