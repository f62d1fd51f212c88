"""Test: the simulated pod's /metrics parses, and has vLLM's and DCGM's names, types, labels and buckets."""

from __future__ import annotations

import pytest
from prometheus_client import parser

from infertune import catalog, perfmodel
from infertune.runtimes import vllm
from infertune.sim import engine, exposition

IDENTITY = exposition.PodIdentity(
    model_name="meta-llama/Llama-3.1-8B-Instruct", pod="llm-abc-0", namespace="prod", gpus=2,
    gpu_model=exposition.gpu_model_name("NVIDIA-H100-80GB-HBM3"),
)


@pytest.fixture(scope="module")
def scraped() -> tuple[str, dict[str, parser.Metric]]:
    r = perfmodel.Replica(gpu=catalog.gpu("h100-sxm-80gb"), model=catalog.model("llama-3.1-8b"), gpus=2)
    e = engine.SimEngine(r)
    for i in range(40):
        e.submit(engine.Request(id=i, arrival=i * 0.05, prompt_tokens=800, output_tokens=200), i * 0.05)
    exporter = exposition.PodExporter(e, IDENTITY)
    exporter.scrape(1.0)
    text = exporter.scrape(3.0)
    return text, {f.name: f for f in parser.text_string_to_metric_families(text)}


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:request_time_per_output_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prefix_cache_queries", "counter"),
        ("vllm:prefix_cache_hits", "counter"),
        ("vllm:prompt_tokens", "counter"),
        ("vllm:generation_tokens", "counter"),
        ("vllm:num_preemptions", "counter"),
        ("vllm:request_success", "counter"),
        ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge"),
        ("DCGM_FI_DEV_GPU_UTIL", "gauge"),
    ],
)
def test_names_and_types(scraped: tuple[str, dict[str, parser.Metric]], name: str, kind: str) -> None:
    _, families = scraped
    assert families[name].type == kind


def test_counters_are_scraped_with_total(scraped: tuple[str, dict[str, parser.Metric]]) -> None:
    text, families = scraped
    assert "vllm:generation_tokens_total{" in text
    [sample] = families["vllm:generation_tokens"].samples
    assert sample.name == "vllm:generation_tokens_total" and sample.value > 0
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort"}


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("vllm:time_to_first_token_seconds", vllm.TTFT_BUCKETS),
        ("vllm:inter_token_latency_seconds", vllm.TPOT_BUCKETS),
        ("vllm:e2e_request_latency_seconds", vllm.LATENCY_BUCKETS),
    ],
)
def test_histogram_buckets_and_consistency(
    scraped: tuple[str, dict[str, parser.Metric]], name: str, bounds: tuple[float, ...]
) -> None:
    _, families = scraped
    samples = families[name].samples
    buckets = [s for s in samples if s.name.endswith("_bucket")]
    les = [s.labels["le"] for s in buckets]
    assert les == [*(repr(float(b)) for b in bounds), "+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    [count] = [s.value for s in samples if s.name.endswith("_count")]
    assert counts[-1] == count > 0


def test_vllm_labels(scraped: tuple[str, dict[str, parser.Metric]]) -> None:
    _, families = scraped
    [sample] = families["vllm:num_requests_running"].samples
    assert sample.labels == {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0"}


def test_dcgm_series_per_gpu(scraped: tuple[str, dict[str, parser.Metric]]) -> None:
    _, families = scraped
    dram = families["DCGM_FI_PROF_DRAM_ACTIVE"].samples
    util = families["DCGM_FI_DEV_GPU_UTIL"].samples
    assert [s.labels["gpu"] for s in dram] == ["0", "1"]
    labels = dram[0].labels
    assert {"gpu", "UUID", "modelName", "pod", "namespace", "container"} <= set(labels)
    assert labels["pod"] == "llm-abc-0" and labels["namespace"] == "prod"
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["UUID"].startswith("GPU-")
    assert dram[0].labels["UUID"] != dram[1].labels["UUID"]
    assert all(0 < s.value <= 1 for s in dram)
    assert all(0 < s.value <= 100 for s in util)


def test_a_dialect_without_a_signal_leaves_it_out() -> None:
    small = exposition.Dialect(
        name="tiny", path="/metrics", labels=(("model_name", "model_name"),),
        metrics={exposition.RUNNING: exposition.MetricSpec("tiny_running", exposition.Kind.GAUGE, "Running.")},
    )
    r = perfmodel.Replica(gpu=catalog.gpu("l4"), model=catalog.model("llama-3.1-8b"))
    current = exposition.sample(engine.SimEngine(r), now=1.0)
    text = exposition.render(current, IDENTITY, dialects=[small])
    families = list(parser.text_string_to_metric_families(text))
    assert [f.name for f in families] == ["tiny_running"]


def test_unknown_dialect() -> None:
    with pytest.raises(KeyError, match="unknown metrics dialect 'tgi-old'"):
        exposition.dialect("tgi-old")


def test_buckets_125() -> None:
    assert exposition.buckets_125(100) == (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
