"""Test: docs/crd-reference.md is the page generated from the models, and it documents every field."""

from __future__ import annotations

import pathlib
import re

from infertune import crd, crd_reference, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "crd-reference.md"


def test_committed_reference_matches_the_models() -> None:
    assert COMMITTED.read_text() == crd_reference.render(), (
        "regenerate: (cd operator && python -m infertune.crd_reference) > docs/crd-reference.md")


def test_every_schema_field_has_a_row_with_its_description() -> None:
    page = crd_reference.render()
    schema = crd.openapi_schema()
    for part in ("spec", "status"):
        found = list(crd_reference.fields(schema["properties"][part], part))
        assert len(found) > 20
        for path, node, _ in found:
            row = next((line for line in page.splitlines() if line.startswith(f"| `{path}` |")), None)
            assert row is not None, path
            description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
            assert row.rstrip().endswith(f"| {description} |"), path


def test_rows_carry_types_requirements_defaults_and_validation() -> None:
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", crd_reference.render(), re.MULTILINE)}
    assert rows["spec.slo.ttft"].startswith("| `spec.slo.ttft` | string | yes |  | a duration: `1500ms`")
    assert "| integer |  | `95` | 50 to 99 |" in rows["spec.slo.percentile"]
    assert "one of `auto`, `recommend`, `off`" in rows["spec.tuning.mode"]
    assert "`auto` or a duration" in rows["spec.scaling.coldStart"]
    assert "| map[string]string |" in rows["spec.template.labels"] and "<= 64 entries" in rows["spec.template.labels"]
    assert "| []string |" in rows["spec.engine.args"] and "each at most 4096 characters" in rows["spec.engine.args"]
    assert "0 (exclusive) to 1e+14" in rows["spec.model.custom.parameters"]
    assert rows["spec.engine.env[].name"].startswith("| `spec.engine.env[].name` | string | yes |")
    assert "| string (date-time) |" in rows["status.conditions[].lastTransitionTime"]


def test_page_lists_columns_cel_rules_and_condition_types() -> None:
    page = crd_reference.render()
    for name, _, path, _, _ in crd.PRINTER_COLUMNS:
        assert f"`{path}`" in page, name
    for _, _, message in crd.CEL_RULES:
        assert message in page
    for t in models.ConditionType:
        assert f"| `{t.value}` |" in page
