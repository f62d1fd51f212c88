"""Pure: the engine x knob x flag and engine x signal x metric tables of docs/engines.md, from the code."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from infertune import runtimes
from infertune.runtimes import metrics, registry

MISSING = "—"


def _cell(text: str) -> str:
    # A pipe inside a cell would end it, code span or not (GitHub-flavoured Markdown).
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _variants() -> list[runtimes.Engine]:
    return list(registry.engines())


def knob_table() -> str:
    """Knob x engine: the flag, variable or YAML option that sets it; an em dash where the engine lacks it."""
    engines = _variants()
    rows = []
    for knob in runtimes.KNOBS:
        flags = [f"`{r.knob_flags[knob]}`" if not r.lacks(knob) else MISSING for r in engines]
        rows.append([f"`{knob}`", f"`{runtimes.KNOB_FIELDS[knob]}`", *flags])
    rows.append(["FP8 KV cache", "", *("yes" if r.fp8_kv else "no" for r in engines)])
    return _table(["knob", "spec field", *(r.variant for r in engines)], rows)


def _source(source: metrics.Source, signal: metrics.Signal, *, dcgm: bool) -> str:
    names = ", then ".join(f"`{n}`" for n in source.names)
    kind = source.kind or metrics.KINDS[signal]
    notes = []
    if kind is not metrics.KINDS[signal]:
        notes.append("`_sum` of a per-request histogram" if kind is metrics.Kind.HISTOGRAM_SUM else kind.value)
    if source.scale != 1.0:
        notes.append(f"x {source.scale:g}")
    if dcgm:
        notes.append("dcgm-exporter")
    return names + (f" ({', '.join(notes)})" if notes else "")


def signal_table() -> str:
    """Signal x engine: the metric names the operator queries (newest first), its endpoint path, and an em
    dash where the engine exports no such series."""
    engines = _variants()
    dialects = [r.dialect for r in engines]
    rows = [["endpoint", "", *(f"`{d.path}`" for d in dialects)]]
    for signal in metrics.Signal:
        cells = []
        for d in dialects:
            own = d.sources.get(signal)
            gpu = metrics.DCGM.sources.get(signal)
            if own is not None:
                cells.append(_source(own, signal, dcgm=False))
            elif gpu is not None:
                cells.append(_source(gpu, signal, dcgm=True))
            else:
                cells.append(MISSING)
        rows.append([f"`{signal.value}`", metrics.KINDS[signal].value, *cells])
    return _table(["signal", "kind", *(r.variant for r in engines)], rows)


TABLES: Mapping[str, Callable[[], str]] = {"knobs": knob_table, "signals": signal_table}


def begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name}: infertune.docs_tables, do not edit by hand -->"


def end(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def splice(text: str, name: str, *, table: str) -> str:
    """`text` with the lines between the markers of table `name` replaced by `table`."""
    start, stop = begin(name), end(name)
    i, j = text.find(start), text.find(stop)
    if i < 0 or j < i:
        raise ValueError(f"docs: markers {start!r} ... {stop!r} not found in order")
    return text[: i + len(start)] + "\n" + table + text[j:]


def sync(text: str) -> str:
    """Every generated table of a page brought up to date with the code."""
    for name, render in TABLES.items():
        text = splice(text, name, table=render())
    return text
