"""Test: docs/engines.md carries the engine tables generated from the code, and the tables say what it does."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from infertune import docs_tables, runtimes
from infertune.runtimes import metrics, registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "engines.md"
# INFERTUNE_UPDATE_DOCS=1 rewrites the generated parts of the page after a change to runtimes/.
UPDATE = os.environ.get("INFERTUNE_UPDATE_DOCS") == "1"


def test_engines_page_is_in_sync_with_the_code() -> None:
    text = PAGE.read_text()
    fresh = docs_tables.sync(text)
    if UPDATE and fresh != text:
        PAGE.write_text(fresh)
        text = fresh
    assert text == fresh, f"{PAGE} is stale: INFERTUNE_UPDATE_DOCS=1 .venv/bin/pytest {__file__}"


def cells(line: str) -> list[str]:
    """A Markdown table row's cells, honouring escaped pipes."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip().replace("\\|", "|") for p in parts[1:-1]]


def rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()
    header = cells(lines[0])
    assert lines[1] == "|" + "---|" * len(header)
    out = {}
    for line in lines[2:]:
        row = cells(line)
        assert len(row) == len(header), line
        out[row[0]] = row
    return out


def header(table: str) -> list[str]:
    return cells(table.splitlines()[0])


def test_knob_table_has_every_engine_and_knob() -> None:
    table = docs_tables.knob_table()
    assert header(table) == ["knob", "spec field", *(r.variant for r in registry.ALL)]
    assert list(rows(table)) == [*(f"`{k}`" for k in runtimes.KNOBS), "FP8 KV cache"]


@pytest.mark.parametrize(("knob", "variant", "cell"), [
    ("max_batch_size", "vllm", "`--max-num-seqs`"),
    ("max_batch_size", "sglang", "`--max-running-requests`"),
    ("max_batch_size", "trtllm", "`--max_batch_size`"),
    ("max_batch_size", "nim-1", "`env NIM_MAX_NUM_SEQS`"),
    ("max_batch_size", "nim-2-vllm", "`NIM_PASSTHROUGH_ARGS --max-num-seqs`"),
    ("kv_cache_dtype", "vllm", "`--kv-cache-dtype fp8|auto`"),  # the pipe survives, escaped
    ("kv_cache_dtype", "nim-1", docs_tables.MISSING),  # NIM 1.x picks it by profile
    ("tensor_parallel", "nim-1", docs_tables.MISSING),
    ("chunked_prefill", "tgi", docs_tables.MISSING),
    ("prefix_caching", "trtllm", "`YAML kv_cache_config.enable_block_reuse`"),
])
def test_knob_cells(knob: str, variant: str, cell: str) -> None:
    table = docs_tables.knob_table()
    column = header(table).index(variant)
    assert rows(table)[f"`{knob}`"][column] == cell


def test_signal_table_has_every_signal_and_the_endpoints() -> None:
    table = docs_tables.signal_table()
    assert header(table) == ["signal", "kind", *(r.variant for r in registry.ALL)]
    got = rows(table)
    assert list(got) == ["endpoint", *(f"`{s.value}`" for s in metrics.Signal)]
    for r in registry.ALL:
        assert got["endpoint"][header(table).index(r.variant)] == f"`{r.metrics_path}`"


@pytest.mark.parametrize(("signal", "variant", "cell"), [
    ("ttft", "tgi", docs_tables.MISSING),
    ("kv_usage", "tgi", docs_tables.MISSING),
    ("ttft", "nim-1", "`time_to_first_token_seconds`"),
    ("kv_usage", "vllm", "`vllm:kv_cache_usage_perc`, then `vllm:gpu_cache_usage_perc`"),
    ("preemptions", "trtllm", "`trtllm_num_paused_requests` (gauge)"),
    ("prompt_tokens", "tgi", "`tgi_request_input_length` (`_sum` of a per-request histogram)"),
    ("dram_active", "sglang", "`DCGM_FI_PROF_DRAM_ACTIVE` (dcgm-exporter)"),
])
def test_signal_cells(signal: str, variant: str, cell: str) -> None:
    table = docs_tables.signal_table()
    assert rows(table)[f"`{signal}`"][header(table).index(variant)] == cell


def test_splice_replaces_only_between_its_markers() -> None:
    text = f"intro\n{docs_tables.begin('knobs')}\nold\n{docs_tables.end('knobs')}\noutro\n"
    assert docs_tables.splice(text, "knobs", table="| new |\n") == (
        f"intro\n{docs_tables.begin('knobs')}\n| new |\n{docs_tables.end('knobs')}\noutro\n")


@pytest.mark.parametrize("text", ["no markers", f"{docs_tables.end('knobs')}\n{docs_tables.begin('knobs')}"])
def test_splice_names_the_missing_markers(text: str) -> None:
    with pytest.raises(ValueError, match="BEGIN GENERATED knobs"):
        docs_tables.splice(text, "knobs", table="")
