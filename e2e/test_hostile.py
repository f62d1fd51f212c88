"""Test: 40+ invalid or hostile resources against the real API server and operator — each stopped where it
should be (schema, CEL rule, or the operator's own validation) with a readable message, nothing created."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as e2e_cluster
from e2e.conftest import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml").read_text())
D = object()  # delete the field
CUSTOM_MODEL = {"name": "x", "layers": 1, "hiddenSize": 1, "attentionHeads": 1, "kvHeads": 1, "headDim": 1,
                "intermediateSize": 1, "parameters": 1e9, "vocabSize": 1, "maxContextTokens": 1}


def resource(name: str, namespace: str, changes: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"] = {"name": name, "namespace": namespace}
    for path, value in changes.items():
        if path.startswith("metadata."):
            body["metadata"][path.split(".", 1)[1]] = value
            continue
        node = body["spec"]
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is D:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


# (name, changes, layer, text the refusal must contain). layer: schema | cel | operator.
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing model", {"model": D}, "schema", 'spec.model: Required value'),
    ("missing image", {"engine.image": D}, "schema", "spec.engine.image: Required value"),
    ("unknown engine", {"engine.kind": "llamacpp"}, "schema", 'spec.engine.kind: Unsupported value: "llamacpp"'),
    ("negative port", {"engine.port": -1}, "schema", "spec.engine.port: Invalid value: -1"),
    ("port too large", {"engine.port": 70000}, "schema", "spec.engine.port: Invalid value: 70000"),
    ("huge replica count", {"scaling.maxReplicas": 10**12}, "schema", "spec.scaling.maxReplicas: Invalid value"),
    ("too many gpus", {"accelerator.count": 65}, "schema", "spec.accelerator.count: Invalid value: 65"),
    ("zero gpus", {"accelerator.count": 0}, "schema", "spec.accelerator.count: Invalid value: 0"),
    ("negative price", {"accelerator.hourlyCost": -2}, "schema", "spec.accelerator.hourlyCost: Invalid value"),
    ("duration without unit", {"slo.ttft": "1500"}, "schema", 'spec.slo.ttft: Invalid value: "1500"'),
    ("duration as number", {"slo.ttft": 1.5}, "schema", "spec.slo.ttft: Invalid value"),
    ("negative duration", {"slo.itl": "-40ms"}, "schema", 'spec.slo.itl: Invalid value: "-40ms"'),
    ("zero duration", {"slo.itl": "0ms"}, "cel", "slo.itl must be longer than zero"),
    ("percentile too low", {"slo.percentile": 49}, "schema", "spec.slo.percentile: Invalid value: 49"),
    ("percentile too high", {"slo.percentile": 100}, "schema", "spec.slo.percentile: Invalid value: 100"),
    ("batch bounds reversed", {"tuning.maxBatchSize": {"min": 64, "max": 8}}, "cel",
     "maxBatchSize.min must not exceed maxBatchSize.max"),
    ("batch bound zero", {"tuning.maxBatchSize": {"min": 0, "max": 8}}, "schema",
     "spec.tuning.maxBatchSize.min: Invalid value: 0"),
    ("initial outside bounds", {"tuning.initialMaxBatchSize": 1000}, "cel",
     "initialMaxBatchSize must lie within maxBatchSize.min..max"),
    ("unknown tuning mode", {"tuning.mode": "yolo"}, "schema", 'spec.tuning.mode: Unsupported value: "yolo"'),
    ("unknown kv policy", {"tuning.kvCacheDtype": "int4"}, "schema", "spec.tuning.kvCacheDtype: Unsupported value"),
    ("bad change interval", {"tuning.minChangeInterval": "soon"}, "schema", "spec.tuning.minChangeInterval"),
    ("replica bounds reversed", {"scaling.minReplicas": 5}, "cel", "minReplicas must not exceed maxReplicas"),
    ("standby above max replicas", {"scaling.standby": {"min": 0, "max": 9}}, "cel",
     "standby.max must not exceed maxReplicas"),
    ("standby bounds reversed", {"scaling.standby": {"min": 2, "max": 1}}, "cel",
     "standby.min must not exceed standby.max"),
    ("bad cold start", {"scaling.coldStart": "later"}, "schema", 'spec.scaling.coldStart: Invalid value: "later"'),
    ("bad drain timeout", {"scaling.drainTimeout": "1y"}, "schema", "spec.scaling.drainTimeout"),
    ("unknown field", {"slo.ttfb": "1s"}, "schema", 'unknown field "spec.slo.ttfb"'),
    ("architecture and custom", {"model.custom": CUSTOM_MODEL}, "cel", "set exactly one of model.architecture"),
    ("no gpu", {"accelerator.type": D}, "cel", "set exactly one of accelerator.type"),
    ("nim settings on vllm", {"engine.nim": {"generation": 2}}, "cel", "engine.nim is only valid with engine.kind nim"),
    ("name too long", {"metadata.name": "n" * 43}, "cel", "metadata.name must be at most 42 characters"),
    ("long unicode model name", {"model.name": "модель-" * 40}, "schema", "spec.model.name"),
    ("shell in image", {"engine.image": "vllm; rm -rf /"}, "schema", "spec.engine.image: Invalid value"),
    ("argument too long", {"engine.args": ["x" * 5000]}, "schema", "spec.engine.args[0]: Too long"),
    ("too many env vars", {"engine.env": [{"name": f"V{i}", "value": "1"} for i in range(200)]}, "schema",
     "spec.engine.env: Too many"),
    ("bad toleration operator", {"template.tolerations": [{"key": "k", "operator": "Maybe"}]}, "schema",
     'spec.template.tolerations[0].operator: Unsupported value: "Maybe"'),
    ("upper-case priority class", {"template.priorityClassName": "High"}, "schema", "spec.template.priorityClassName"),
    ("custom gpu without bandwidth", {"accelerator.type": D, "accelerator.custom": {
        "name": "x", "memoryGib": 80, "bandwidthGbps": 0, "tflopsBf16": 100}}, "schema",
     "spec.accelerator.custom.bandwidthGbps: Invalid value: 0"),
    # Issue 18: input that passes the types and can never run, refused by the API server.
    ("drain timeout beyond int64", {"scaling.drainTimeout": "9999999999999999h"}, "schema",
     'spec.scaling.drainTimeout: Invalid value: "9999999999999999h"'),
    ("drain timeout over a day", {"scaling.drainTimeout": "25h"}, "cel", "scaling.drainTimeout must be at most 24h"),
    ("slo over an hour", {"slo.itl": "61m"}, "cel", "slo.itl must be at most 1h"),
    ("change interval over 30 days", {"tuning.minChangeInterval": "721h"}, "cel",
     "tuning.minChangeInterval must be at most 720h"),
    ("scale-down delay over a day", {"scaling.scaleDownDelay": "1441m"}, "cel",
     "scaling.scaleDownDelay must be at most 24h"),
    ("scale-down delay neither auto nor a duration", {"scaling.scaleDownDelay": "sometimes"}, "schema",
     'spec.scaling.scaleDownDelay: Invalid value: "sometimes"'),
    ("cold start over a day", {"scaling.coldStart": "25h"}, "cel", "scaling.coldStart must be at most 24h"),
    ("image without a tag after the colon", {"engine.image": "vllm/vllm-openai:"}, "schema",
     'spec.engine.image: Invalid value: "vllm/vllm-openai:"'),
    ("image with upper-case path", {"engine.image": "Vllm/vllm-openai:v1"}, "schema", "spec.engine.image"),
    ("image with a short digest", {"engine.image": "vllm@sha256:abc"}, "schema", "spec.engine.image"),
    ("annotations over 256 KiB", {"template.annotations": {f"k{i}": "x" * 16_000 for i in range(17)}}, "cel",
     "template.annotations must total at most 261,120 bytes"),
    ("unbounded tolerationSeconds", {"template.tolerations": [{"key": "k", "operator": "Exists",
     "effect": "NoExecute", "tolerationSeconds": 10**12}]}, "schema",
     "spec.template.tolerations[0].tolerationSeconds: Invalid value"),
    ("replicas x gpus beyond any cluster", {"scaling.maxReplicas": 1000, "accelerator.count": 64}, "cel",
     "x accelerator.count must be at most 40,000 GPUs"),
    ("port as a boolean", {"engine.port": True}, "schema", "spec.engine.port: Invalid value"),
    ("port as a string", {"engine.port": "3"}, "schema", "spec.engine.port: Invalid value"),
    ("root without consent", {"template.securityContext": {"runAsUser": 0}}, "cel",
     "securityContext.runAsUser 0 is root"),
    ("unknown seccomp profile", {"template.securityContext": {"seccompProfile": "Localhost"}}, "schema",
     'spec.template.securityContext.seccompProfile: Unsupported value: "Localhost"'),
    # Past the schema: only the operator knows the catalog, the engines' flags, the hardware and the labels it owns.
    ("unknown architecture", {"model.architecture": "gpt-5"}, "operator",
     "spec.model.architecture: unknown model 'gpt-5'; known:"),
    ("unknown gpu", {"accelerator.type": "tpu-v5"}, "operator", "spec.accelerator.type: unknown GPU 'tpu-v5'"),
    ("owned flag in args", {"engine.args": ["--max-num-seqs=64"]}, "operator",
     "spec.engine.args[0]: --max-num-seqs sets max_batch_size, which the operator owns"),
    ("argparse prefix of an owned flag", {"engine.args": ["--max-num-seq=4096"]}, "operator",
     "spec.engine.args[0]: --max-num-seq is read by the engine as --max-num-seqs, which sets max_batch_size"),
    ("sglang tensor-parallel alias", {"engine.kind": "sglang", "engine.args": ["--tensor-parallel-size", "2"]},
     "operator", "spec.engine.args[0]: --tensor-parallel-size sets tensor_parallel"),
    ("tgi SHARDED", {"engine.kind": "tgi", "engine.env": [{"name": "SHARDED", "value": "true"}]}, "operator",
     "spec.engine.env[0].name: SHARDED (the engine's variable for --sharded) sets tensor_parallel"),
    ("tgi SERVED_MODEL_NAME", {"engine.kind": "tgi", "engine.env": [{"name": "SERVED_MODEL_NAME", "value": "x"}]},
     "operator", "spec.engine.env[0].name: SERVED_MODEL_NAME (the engine's variable for --served-model-name)"),
    ("end of options", {"engine.args": ["--", "--max-num-seqs=1"]}, "operator",
     "spec.engine.args[0]: '--' would end the engine's options"),
    ("owned env var", {"engine.kind": "nim", "engine.nim": {"generation": 1},
                       "engine.env": [{"name": "NIM_MAX_NUM_SEQS", "value": "8"}]}, "operator",
     "spec.engine.env[0].name: NIM_MAX_NUM_SEQS sets max_batch_size"),
    ("value and valueFrom", {"engine.env": [{"name": "A", "value": "1",
                                             "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "operator", "spec.engine.env[0]: set at most one of value and valueFrom"),
    ("owned label", {"template.labels": {"infertune.io/serving": "false"}}, "operator",
     "spec.template.labels: 'infertune.io/serving' is owned by the operator"),
    ("owned annotation", {"template.annotations": {"infertune.io/unserved-since": "x"}}, "operator",
     "spec.template.annotations: 'infertune.io/unserved-since' is owned by the operator"),
    ("promql in a label value", {"template.labels": {"team": 'x"} or vector(1) #'}}, "operator",
     "spec.template.labels: the value of 'team' is not a valid label value"),
    ("gpu product in node selector", {"template.nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
     "operator", "spec.template.nodeSelector: nvidia.com/gpu.product is set from the accelerator"),
    ("fp8 weights on a100", {"accelerator.type": "a100-80gb", "model.weights": "fp8"}, "operator",
     "spec.model.weights: fp8 weights need FP8 tensor cores, which a100-80gb lacks"),
    ("model does not fit", {"model.architecture": "llama-3.1-70b"}, "operator", "short by"),
    ("context longer than the model", {"model.maxModelLen": 10_000_000}, "operator",
     "spec.model.maxModelLen: 10000000 exceeds llama-3.1-8b's context"),
    ("budget below the batch", {"engine.maxNumBatchedTokens": 256}, "operator",
     "spec.engine.maxNumBatchedTokens: vLLM needs a token budget of at least the largest batch"),
]


@pytest.fixture(scope="module")
def ns(k8s: e2e_cluster.Kube) -> Any:
    name = f"e2e-hostile-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    yield name
    k8s.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_the_catalog_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert {layer for _, _, layer, _ in CASES} == {"schema", "cel", "operator"}


@pytest.mark.parametrize(("name", "changes", "layer", "text"), [c for c in CASES if c[2] != "operator"],
                         ids=[c[0] for c in CASES if c[2] != "operator"])
def test_the_api_server_refuses(k8s: e2e_cluster.Kube, operator: OperatorProcess, ns: str, *, name: str,
                                changes: dict[str, Any], layer: str, text: str) -> None:
    body = resource("hostile", ns, changes)
    # create, not apply: apply would copy the whole object into a last-applied annotation, and an object with
    # 255 KiB of template annotations would then be refused for its metadata, before the rule under test.
    out = k8s.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
    assert text in out, out
    assert "created (server dry run)" not in out


def test_auto_durations_pass_the_api_server(k8s: e2e_cluster.Kube, operator: OperatorProcess, ns: str) -> None:
    # The CEL bounds read durations; `auto` is none, and a rule that parsed it anyway would refuse every resource
    # that writes it.
    body = resource("auto", ns, {"scaling.coldStart": "auto", "scaling.scaleDownDelay": "auto"})
    out = k8s.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
    assert "created (server dry run)" in out, out


def test_the_operator_refuses_what_the_schema_cannot_know(k8s: e2e_cluster.Kube, operator: OperatorProcess,
                                                          ns: str) -> None:
    cases = [c for c in CASES if c[2] == "operator"]
    names = {f"bad-{i}": c for i, c in enumerate(cases)}
    for name, (_, changes, _, _) in names.items():
        k8s.apply(resource(name, ns, changes))

    def refused() -> dict[str, str] | None:
        out = {}
        for item in k8s.list("inferencedeployment", namespace=ns):
            cond = next((c for c in item.get("status", {}).get("conditions", []) if c["type"] == "SpecValid"), None)
            if cond is None or cond["status"] != "False":
                return None
            out[item["metadata"]["name"]] = cond["message"]
        return out if len(out) == len(names) else None

    messages = k8s.wait_for(refused, 90, message="SpecValid=False on every resource")
    for name, (case, _, _, text) in names.items():
        assert text in messages[name], f"{case}: {messages[name]}"
    assert k8s.list("deployment", namespace=ns) == []
    assert k8s.list("service", namespace=ns) == []


def test_yaml_and_shell_metacharacters_in_args_reach_the_engine_as_written(k8s: e2e_cluster.Kube,
                                                                           operator: OperatorProcess) -> None:
    ns = f"e2e-hostile-args-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", ns)
    hostile = ["--chat-template", "{% for m in messages %}{{ m['content'] }}{% endfor %}", "--x=a: b\n- c",
               "$(rm -rf /)", "$(X)", "'\"`;|&", "ünïcødé ✓"]
    # X would turn "$(X)" into an owned flag if the kubelet expanded it.
    k8s.apply(resource("args", ns, {"engine.args": hostile,
                                    "engine.env": [{"name": "X", "value": "--max-num-seqs=1"}]}))
    dep = k8s.wait_for(lambda: next(iter(k8s.list("deployment", namespace=ns)), None), 60, message="the Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    # The user's arguments come first, with `$` doubled: the kubelet's $(VAR) expansion turns `$$` back into `$`
    # and expands nothing, so the engine receives each argument exactly as written.
    assert args[:len(hostile)] == [a.replace("$", "$$") for a in hostile]
    assert [a.replace("$$", "$") for a in args[:len(hostile)]] == hostile
    assert args[-2:] != hostile[-2:]  # the operator's flags come last
    k8s.kubectl("delete", "namespace", ns, "--wait=false")
