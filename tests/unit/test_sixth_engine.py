"""Test: a sixth engine, defined only in tests/toy_engine.py (the module docs/engines.md walks through), is
rendered, validated, scraped by the twin, read by the operator's parser and decided on; no other module changes."""

from __future__ import annotations

import datetime
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import parser

import scrapes
import specs
import toy_engine
from infertune import decide, docs_tables, models, observation, prometheus, render, validation
from infertune.runtimes import metrics, registry
from infertune.sim import exposition

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOY = toy_engine.ENGINE
OWNER = render.Owner(name="llm", namespace="ns1", uid="uid-1")
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def toy() -> Iterator[None]:
    with registry.registered(TOY):
        yield


# The stand-in kind is not a models.EngineKind, so pydantic warns when it dumps the spec (render's revision hash);
# the JSON is the same string a real enum value gives.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


def toy_spec(engine: dict[str, Any] | None = None, **changes: Any) -> models.InferenceDeploymentSpec:
    """A valid spec whose engine kind is Toy's, with `engine` fields set after parsing. A test cannot add a
    models.EngineKind value (the one line a real engine adds there), so the kind is put on a parsed spec."""
    base = {"accelerator.type": "h100-sxm-80gb", "tuning.maxBatchSize": {"min": 8, "max": 256}}
    spec, problems = validation.parse(specs.spec(**{**base, **changes}))
    assert spec is not None, problems
    update = {"kind": toy_engine.Kind.TOY, "image": TOY.sample_image, **(engine or {})}
    return spec.model_copy(update={"engine": spec.engine.model_copy(update=update)})


def test_the_registry_serves_toy_only_while_registered() -> None:
    spec = toy_spec()
    assert registry.for_engine(spec.engine) is TOY
    assert registry.by_variant("toy").dialect is TOY.dialect
    with pytest.raises(ValueError, match="'toy' is already registered"), registry.registered(TOY):
        pass


def test_the_shipped_list_never_holds_toy() -> None:
    spec = toy_spec()
    with registry.registered():  # a nested, empty registration changes nothing
        assert registry.for_engine(spec.engine) is TOY
    assert "toy" not in [e.variant for e in registry.ALL]


def test_it_renders_with_its_own_command_flags_probes_and_metrics_path() -> None:
    knobs = models.Knobs(max_batch_size=48, kv_cache_dtype=models.KvDtype.FP8)
    dep = render.deployment(OWNER, toy_spec({"max_num_batched_tokens": 4096}), knobs, replicas=1)
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["toy-serve"]
    args = c["args"]
    for flag, value in (("--max-seqs", "48"), ("--kv-dtype", "fp8"), ("--step-tokens", "4096"), ("--gpus", "1")):
        assert args[args.index(flag) + 1] == value, (flag, args)
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/stats"
    assert pod["metadata"]["labels"][render.LABEL_ENGINE] == "toy"
    # What it launched reads back as the knobs it was given.
    read = TOY.read([*c["command"], *args], {}, {})
    assert read["max_batch_size"] == 48 and read["kv_cache_dtype"] is models.KvDtype.FP8


def test_its_token_budget_flag_is_looked_up_from_the_engine() -> None:
    assert TOY.knob_flag("max_num_batched_tokens") == "--step-tokens"
    assert TOY.knob_flag("prefix_caching") is None and TOY.lacks("prefix_caching")


def test_it_validates_with_its_owned_flags_variables_and_check() -> None:
    assert validation.check(toy_spec()) == []
    # vLLM's --max-num-seqs is an unknown flag to Toy, not an owned one; Toy's --host and TOY_MAX_SEQS are owned.
    env = [models.EnvVar(name="TOY_MAX_SEQS", value="9")]
    problems = validation.check(toy_spec({"args": ["--max-num-seqs=8", "--host=0.0.0.0"], "env": env},
                                         **{"tuning.maxBatchSize": {"min": 8, "max": 512}}))
    assert [p.path for p in problems] == ["spec.engine.args[1]", "spec.engine.env[0].name",
                                         "spec.tuning.maxBatchSize.max"]
    assert "--host sets port, which the operator owns" in problems[0].message
    assert "toy runs at most 256 sequences" in problems[2].message


def test_the_docs_tables_grow_a_toy_column() -> None:
    knobs = docs_tables.knob_table().splitlines()
    assert knobs[0].endswith("| toy |")
    assert "`--step-tokens`" in next(row for row in knobs if row.startswith("| `max_num_batched_tokens`"))
    assert "`/stats`" in next(row for row in docs_tables.signal_table().splitlines() if row.startswith("| endpoint"))


def scraped_pod() -> observation.PodMetrics:
    """A Toy pod under load in the twin: its exposition scraped as text, answered as Prometheus would, read by the
    operator's own parser."""
    run = scrapes.simulate(rate=3.0, isl=1000, osl=200, hit_rate=0.0, warmup=30, window=60, step=2, seed=11)
    argv = [*(TOY.launch(render.engine_knobs(toy_spec(), models.Knobs(max_batch_size=64))).command or ())]
    served = exposition.pod_dialects("toy", argv, env={})
    assert served == (exposition.dialect("toy"), exposition.DCGM)
    twin = served[0]
    assert twin.path == "/stats"
    texts = scrapes.scrape(run, twin)
    assert "toy_ttft_seconds" in texts[-1] and texts[-1]["toy_ttft_seconds"].type == "histogram"
    pairs = zip(texts, scrapes.scrape(run, exposition.DCGM), strict=True)
    flat = [scrapes.flat(a) | scrapes.flat(b) for a, b in pairs]
    plan = prometheus.queries([TOY.dialect, metrics.DCGM], window=run.window)
    results = {k: scrapes.promql(flat, k, dt=run.window, dialects=[TOY.dialect, metrics.DCGM]) for k in plan}
    raw = prometheus.parse(results)[scrapes.NAMESPACE, scrapes.POD]
    assert not raw.dropped
    return prometheus.pod_metrics(raw, percentile=95.0, ttft_slo=1.5, itl_slo=0.04)


def test_the_twin_serves_its_dialect_and_the_operator_reads_it() -> None:
    pod = scraped_pod()
    assert pod.requests_per_s == pytest.approx(3.0, rel=0.3)
    for field in ("ttft_p", "itl_p", "tpot_p", "running", "kv_usage", "output_tokens_per_s", "slo_attainment"):
        assert getattr(pod, field) is not None, field
    assert pod.preemptions_per_s is None  # Toy exports no preemption series


def test_the_twin_text_parses_under_the_toy_names() -> None:
    run = scrapes.simulate(rate=1.0, isl=500, osl=100, hit_rate=0.0, warmup=10, window=4, step=2, seed=3)
    text = exposition.render(run.samples[-1], scrapes.IDENTITY, dialects=[exposition.dialect("toy")])
    names = {f.name for f in parser.text_string_to_metric_families(text)}
    assert names == {"toy_ttft_seconds", "toy_itl_seconds", "toy_tpot_seconds", "toy_e2e_seconds", "toy_running",
                     "toy_waiting", "toy_kv_usage", "toy_prompt_tokens", "toy_generation_tokens"}


def test_decide_starts_it_at_its_default_then_decides_on_its_metrics() -> None:
    spec = toy_spec()
    first = decide.decide(observation.Observation(
        name="llm", namespace="ns1", generation=1, spec=spec, status=models.InferenceDeploymentStatus()), now=NOW)
    (plan,) = first.revisions
    assert plan.knobs.max_batch_size == 64  # Toy's own default
    born = NOW.timestamp() - 3600
    metrics_seen = scraped_pod()
    revision = observation.RevisionFacts(name=f"llm-{plan.revision}", revision=plan.revision, knobs=plan.knobs,
                                         replicas=plan.replicas, ready_replicas=plan.replicas, created=born)
    pod = observation.PodFacts(name="llm-0", revision=plan.revision, ready=True, serving=True, created=born,
                               ready_since=born)
    later = NOW + datetime.timedelta(minutes=1)
    second = decide.decide(observation.Observation(
        name="llm", namespace="ns1", generation=1, spec=spec, status=first.status, revisions=(revision,),
        pods=(pod,), metrics=observation.Metrics(pods={"llm-0": metrics_seen})), now=later)
    status = second.status
    assert status.config is not None and "the toy default (64)" in status.config.reason
    # Demand and the knee come from what the operator read in Toy's dialect.
    assert status.demand is not None and status.demand.rate == pytest.approx(metrics_seen.requests_per_s, rel=0.05)
    assert status.knee is not None and status.knee.basis == "measured"
    assert status.observed is not None and metrics_seen.ttft_p is not None
    assert status.observed.ttft_p95_ms == pytest.approx(metrics_seen.ttft_p * 1000, abs=0.1)


# ------------------------------------------------------------------------------------------ the walk-through


def doc_module() -> str:
    """The module docs/engines.md shows under "Adding an engine"."""
    text = (ROOT / "docs" / "engines.md").read_text()
    section = text[text.index("## Adding an engine"):]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "docs/engines.md: no python block under 'Adding an engine'"
    return found.group(1)


def test_the_walk_through_shows_the_fixture_save_the_enum_a_test_cannot_add() -> None:
    source = (ROOT / "tests" / "toy_engine.py").read_text()
    stand_in = re.search(r"\nclass Kind\(enum.StrEnum\):.*?\n\n\n", source, re.S)
    assert stand_in is not None
    expected = (source.replace(stand_in.group(0), "\n\n").replace("kind=Kind.TOY", "kind=models.EngineKind.TOY")
                .replace("import enum\n", ""))
    assert doc_module() == expected


def test_the_walk_through_names_commands_and_files_that_exist() -> None:
    text = (ROOT / "docs" / "engines.md").read_text()
    section = text[text.index("## Adding an engine"):text.index("## The twin speaks every dialect")]
    targets = re.findall(r"`make (\w+)`", section)
    makefile = (ROOT / "Makefile").read_text()
    assert targets and all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets
    paths = re.findall(r"\.venv/bin/pytest (tests/\S+\.py)", section)
    assert paths and all((ROOT / p).is_file() for p in paths), paths
    assert "registry.ALL" in section and "models.EngineKind" in section


def test_its_buckets_resolve_objectives_as_the_shipped_engines_do() -> None:
    # 40 ms lies inside Toy's 20-50 ms TPOT bucket, 1.5 s inside its 1-2 s TTFT one; 50 ms and 2 s are edges.
    inside = validation.objective_warnings(toy_spec(**{"slo.ttft": "1500ms", "slo.itl": "40ms"}))
    assert [(p.path, p.message.split(" of ")[1].split()[0]) for p in inside] == [
        ("spec.slo.ttft", "toy_ttft_seconds"), ("spec.slo.itl", "toy_tpot_seconds")]
    assert validation.objective_warnings(toy_spec(**{"slo.ttft": "2s", "slo.itl": "50ms"})) == []
