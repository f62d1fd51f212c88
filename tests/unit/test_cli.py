"""Test: `infertune validate | render | crd | catalog` exit codes and messages."""

from __future__ import annotations

import glob
import pathlib

import pytest
import yaml

import specs
from infertune import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted(glob.glob(str(ROOT / "manifests/samples/*.yaml")))


def write(tmp_path: pathlib.Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: pathlib.Path(p).stem)
def test_validate_every_sample(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", sample]) == 0
    assert ": valid" in capsys.readouterr().out


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: pathlib.Path(p).stem)
def test_render_every_sample(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", sample]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [d["kind"] for d in docs]
    assert "Deployment" in kinds and "Service" in kinds
    name = yaml.safe_load(pathlib.Path(sample).read_text())["metadata"]["name"]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["metadata"]["name"].startswith(f"{name}-")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == cli.PLACEHOLDER_UID


def test_validate_reports_one_line_per_problem_with_the_field(tmp_path: pathlib.Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = specs.resource(name="bad", **{"slo.ttft": "soon", "scaling.minReplicas": 9, "engine.port": 0})
    path = write(tmp_path, "bad.yaml", yaml.safe_dump(bad))
    assert cli.main(["validate", path]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert any(f"{path}: bad: spec.slo.ttft: expected a duration with a unit" in line for line in lines)
    assert any("spec.engine.port: Input should be greater than or equal to 1" in line for line in lines)
    assert any("spec.scaling: minReplicas (9) must not exceed maxReplicas (4)" in line for line in lines)


def test_validate_multi_document_files_name_each_document(tmp_path: pathlib.Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = specs.resource(name="good")
    bad = specs.resource(name="bad", **{"accelerator.type": "tpu"})
    path = write(tmp_path, "two.yaml", yaml.safe_dump_all([good, bad]))
    assert cli.main(["validate", path]) == 2
    out = capsys.readouterr()
    assert f"{path}#1: good: valid" in out.out
    assert f"{path}#2: bad: spec.accelerator.type: unknown GPU 'tpu'" in out.err


@pytest.mark.parametrize(("content", "message"), [
    ("a: [unclosed", "not valid YAML"),
    ("", "no YAML documents found"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_validate_rejects_unreadable_input(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                           content: str, message: str) -> None:
    path = write(tmp_path, "x.yaml", content)
    assert cli.main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert path in err and message in err


def test_validate_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "/nonexistent/x.yaml"]) == 2
    assert "/nonexistent/x.yaml: cannot read" in capsys.readouterr().err


def test_validate_binary_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert cli.main(["validate", str(path)]) == 2
    assert "not a text file" in capsys.readouterr().err


def test_validate_wrong_kind_and_name(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = specs.resource(name="Bad_Name")
    doc["kind"] = "Deployment"
    assert cli.main(["validate", write(tmp_path, "k.yaml", yaml.safe_dump(doc))]) == 2
    err = capsys.readouterr().err
    assert "kind: must be InferenceDeployment" in err
    assert "metadata.name: must be a DNS-1035 label" in err


def test_render_refuses_an_invalid_resource(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.yaml", yaml.safe_dump(specs.resource(**{"engine.args": ["--port=9"]})))
    assert cli.main(["render", path]) == 2
    captured = capsys.readouterr()
    assert "spec.engine.args[0]: --port sets port" in captured.err
    assert captured.out == ""


def test_crd_command_prints_the_committed_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "crds/inferencedeployments.infertune.io.yaml").read_text()


def test_catalog_lists_known_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm-80gb" in out and "qwen3-32b" in out


def test_run_rejects_a_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--interval", "-1"])
    assert exc.value.code == 2
    assert "--interval: must be greater than zero" in capsys.readouterr().err


# A 9 x 9 "billion laughs": 342 bytes that expand to 9^9 (387 million) strings.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize(("name", "content", "text"), [
    ("billion laughs", LAUGHS, "more than 100,000 values once its aliases are expanded"),
    ("50,000-deep flow nesting", "a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ("100-deep block nesting", "".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "x: 1\n",
     "nested too deeply"),
    ("duplicate key", "apiVersion: infertune.io/v1alpha1\nkind: InferenceDeployment\nkind: Other\n",
     "line 3: duplicate key 'kind'"),
])
def test_hostile_yaml_is_refused_in_one_line_without_a_traceback(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], name: str, content: str, text: str) -> None:
    path = write(tmp_path, "hostile.yaml", content)
    for command in ("validate", "render"):
        assert cli.main([command, path]) == 2
        err = capsys.readouterr().err
        assert text in err, f"{name}: {err}"
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_aliases_within_the_limit_still_work(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = specs.resource(name="ok", **{"template.labels": {"team": "a"}, "template.nodeSelector": {"team": "a"}})
    # PyYAML writes one dict used twice as &id001 and *id001.
    body["spec"]["template"]["nodeSelector"] = body["spec"]["template"]["labels"]
    text = yaml.safe_dump(body)
    assert "&id001" in text and "*id001" in text
    assert cli.main(["validate", write(tmp_path, "alias.yaml", text)]) == 0
    assert ": valid" in capsys.readouterr().out


@pytest.mark.parametrize(("changes", "text"), [
    ({"engine.port": True}, "spec.engine.port: Input should be a valid integer"),
    ({"engine.port": "3"}, "spec.engine.port: Input should be a valid integer"),
])
def test_validate_is_as_strict_as_the_crd_about_types(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                                      changes: dict[str, object], text: str) -> None:
    path = write(tmp_path, "t.yaml", yaml.safe_dump(specs.resource(name="t", **changes)))
    assert cli.main(["validate", path]) == 2
    assert text in capsys.readouterr().err


def test_validate_reports_schema_and_catalog_problems_in_one_pass(tmp_path: pathlib.Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = specs.resource(name="bad", **{"slo.ttft": "soon", "scaling.maxReplicas": 0, "accelerator.type": "tpu"})
    assert cli.main(["validate", write(tmp_path, "bad.yaml", yaml.safe_dump(bad))]) == 2
    err = capsys.readouterr().err
    for field in ("spec.slo.ttft", "spec.scaling.maxReplicas", "spec.accelerator.type: unknown GPU 'tpu'"):
        assert field in err, err


def test_render_prints_plain_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", SAMPLES[0]]) == 0
    out = capsys.readouterr().out
    assert "&id" not in out and "*id" not in out
    assert "[]" not in out and "{}\n" not in out.replace("emptyDir: {}", "")


def test_validate_warns_when_an_objective_lies_inside_a_bucket_and_keeps_the_exit_code(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    # vLLM's per-request TPOT buckets have edges at 25 and 50 ms: 40 ms cannot be judged, 50 ms can.
    inside = write(tmp_path, "inside.yaml", yaml.safe_dump(specs.resource(name="inside", **{"slo.itl": "40ms"})))
    assert cli.main(["validate", inside]) == 0
    out = capsys.readouterr()
    assert ": inside: valid" in out.out
    warnings = [line for line in out.err.splitlines() if ": warning: spec.slo.itl" in line]
    assert len(warnings) == 1
    assert "spec.slo.itl" in warnings[0] and "25-50 ms" in warnings[0] and "use 25 ms or 50 ms" in warnings[0]
    edge = write(tmp_path, "edge.yaml", yaml.safe_dump(specs.resource(name="edge", **{"slo.itl": "50ms"})))
    assert cli.main(["validate", edge]) == 0
    assert "warning: spec.slo.itl" not in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--engine-job", "--dcgm-job"])
@pytest.mark.parametrize("value", ['x"} or vector(1e12) or {a="', "two words", ""])
def test_run_refuses_a_job_name_that_could_break_out_of_promql(flag: str, value: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", flag, value])
    assert exc.value.code == 2
    assert f"{flag}: a job name is letters, digits and _.:/- only" in capsys.readouterr().err
