"""CLI: offline analysis commands: `infertune knee` (a benchmark's knee under SLOs) and `infertune cost`."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from infertune import cost, exits, frontier_analysis, models, scaling

# genai-perf and AIPerf write one summary per run into its own artifact directory.
SUMMARY_NAMES = ("profile_export_genai_perf.json", "profile_export_aiperf.json")


# ---------------------------------------------------------------------------------------------- flag types


def _duration(text: str) -> float:
    """'1500ms', '1.5s' -> seconds (the CRD's duration syntax)."""
    try:
        seconds = models.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {text!r}")
    return seconds


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number greater than zero, got {text!r}")
    return value


def _money(text: str) -> float:
    """'2.50' or '$2.50' (a price in any currency; the output uses $)."""
    return _positive(text.strip().removeprefix("$"))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """'0.6' or '60%', in (0, 1]."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.6 or 60%, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1] (0.6 or 60%), got {text!r}")
    return value


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentile such as 95, got {text!r}") from None
    if not 50 <= value < 100:
        raise argparse.ArgumentTypeError(f"must lie in [50, 100), got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- knee


def _files(paths: Sequence[str]) -> list[pathlib.Path]:
    out: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            found = sorted(p for name in SUMMARY_NAMES for p in path.rglob(name))
            if not found:
                raise exits.UsageError(f"{raw}: a directory without {' or '.join(SUMMARY_NAMES)}; name the files")
            out += found
        else:
            out.append(path)
    return out


def _read(path: pathlib.Path) -> frontier_analysis.Export:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise exits.UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise exits.UsageError(f"{path}: not a text file (invalid UTF-8)") from None
    except OSError as e:
        raise exits.UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return frontier_analysis.parse(text, name=str(path))
    except frontier_analysis.FormatError as e:
        raise exits.UsageError(f"{path}: {e}") from None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds >= 0.1 else f"{seconds * 1000:.2f}"


def _c(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _basis_line(basis: frontier_analysis.Basis) -> str:
    have = (f"in the file: TTFT {', '.join(basis.ttft_available)}; ITL {', '.join(basis.itl_available)}")
    if basis.exact:
        return f"latencies: {basis.wanted} of TTFT and ITL ({have})"
    used = f"TTFT {basis.ttft}, ITL {basis.itl}"
    return (f"latencies: {basis.wanted} is not in every run, so compared {used} with the SLO ({have}); "
            "means understate the tail, so the knee may be optimistic")


def _knee_report(result: frontier_analysis.Knee, export: frontier_analysis.Export, plan: frontier_analysis.Plan | None,
                 price: cost.Cost | None) -> str:
    slo = result.slo
    lines = [f"{len(export.points)} run(s), {export.format}",
             f"SLO: TTFT {_ms(slo.ttft)} ms, ITL {_ms(slo.itl)} ms at p{slo.percentile:g}",
             _basis_line(result.basis), ""]
    b = result.basis
    head = (f"{'concurrency':>11}  {'TTFT ' + b.ttft + ' ms':>13}  {'ITL ' + b.itl + ' ms':>11}  {'output tok/s':>12}  "
            f"{'req/s':>7}  SLO")
    lines.append(head)
    for r in result.rows:
        misses = [name for name, ok in (("TTFT", r.ttft_ok), ("ITL", r.itl_ok)) if not ok]
        mark = "ok" if not misses else "misses " + " and ".join(misses)
        if result.knee is r:
            mark += "  <- knee"
        req = "-" if r.point.requests_per_s is None else f"{r.point.requests_per_s:.3g}"
        est = "~" if r.point.concurrency_estimated else ""
        lines.append(f"{est + _c(r.point.concurrency):>11}  {_ms(r.ttft):>13}  {_ms(r.itl):>11}  "
                     f"{r.point.output_tokens_per_s:>12,.2f}  {req:>7}  {mark}")
    lines.append("")
    knee = result.knee
    if knee is None:
        first = result.rows[0]
        misses = [f"TTFT {_ms(first.ttft)} ms > {_ms(slo.ttft)} ms" if not first.ttft_ok else "",
                  f"ITL {_ms(first.itl)} ms > {_ms(slo.itl)} ms" if not first.itl_ok else ""]
        lines.append(f"no knee: no measured concurrency meets the SLO; even concurrency {_c(first.point.concurrency)} "
                     f"has {' and '.join(m for m in misses if m)}. Relax the SLO, or use more or faster GPUs per "
                     "replica (tensor parallel), FP8 weights or a smaller model.")
    else:
        p = knee.point
        lines.append(f"knee: concurrency {_c(p.concurrency)}: {p.output_tokens_per_s:,.2f} output tok/s per replica, "
                     f"TTFT {_ms(knee.ttft)} ms, ITL {_ms(knee.itl)} ms")
        if result.best is not None and result.best is not knee:
            top = result.best
            lines.append(f"  (concurrency {_c(top.point.concurrency)} reaches "
                         f"{top.point.output_tokens_per_s:,.2f} tok/s within the SLO, less than "
                         f"{frontier_analysis.FLAT:.0%} more: the plateau, where more concurrency only queues)")
        lines.append(f"recommended max batch size: {result.max_batch_size}")
        if result.boundary is not None:
            nxt = next(r for r in result.rows if r.point.concurrency > p.concurrency)
            lines.append(f"the {result.boundary_metric} objective is crossed between concurrency {_c(p.concurrency)} "
                         f"and {_c(nxt.point.concurrency)}, near {result.boundary:.0f} by linear interpolation: "
                         "measure there before going above the knee")
        if result.at_edge:
            lines.append(f"the largest concurrency measured meets the SLO: the knee may lie above "
                         f"{_c(p.concurrency)}; extend the sweep")
        if plan is not None:
            lines.append(f"replicas: {plan.worked()}")
        if price is not None:
            lines.append(f"cost at the knee: {price.worked()}")
    notes = list(export.notes)
    if any(r.point.concurrency_estimated for r in result.rows):
        notes.append("~ marks concurrency estimated by Little's law (a request-rate run)")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _knee_json(result: frontier_analysis.Knee, export: frontier_analysis.Export, plan: frontier_analysis.Plan | None,
               price: cost.Cost | None) -> dict[str, Any]:
    def row(r: frontier_analysis.Row) -> dict[str, Any]:
        p = r.point
        return {"concurrency": p.concurrency, "concurrencyEstimated": p.concurrency_estimated,
                "ttftMs": round(r.ttft * 1000, 3), "itlMs": round(r.itl * 1000, 3),
                "outputTokensPerSecond": p.output_tokens_per_s, "requestsPerSecond": p.requests_per_s,
                "ttftOk": r.ttft_ok, "itlOk": r.itl_ok, "source": p.source}

    b = result.basis
    return {
        "format": export.format,
        "slo": {"ttftMs": result.slo.ttft * 1000, "itlMs": result.slo.itl * 1000, "percentile": result.slo.percentile},
        "basis": {"ttft": b.ttft, "itl": b.itl, "wanted": b.wanted, "ttftAvailable": list(b.ttft_available),
                  "itlAvailable": list(b.itl_available)},
        "rows": [row(r) for r in result.rows],
        "knee": None if result.knee is None else row(result.knee),
        "maxBatchSize": result.max_batch_size,
        "atEdge": result.at_edge,
        "boundary": None if result.boundary is None else {"concurrency": round(result.boundary, 1),
                                                          "metric": result.boundary_metric},
        "replicas": None if plan is None else {"replicas": plan.replicas, "target": plan.target, "unit": plan.unit,
                                               "capacityPerReplica": plan.capacity, "utilization": plan.utilization},
        "costPerMillionOutputTokens": None if price is None else round(price.per_million, 4),
        "notes": list(export.notes),
    }


def cmd_knee(args: argparse.Namespace) -> int:
    export = frontier_analysis.merge(_read(p) for p in _files(args.files))
    slo = frontier_analysis.Slo(ttft=args.ttft, itl=args.itl, percentile=args.percentile)
    try:
        result = frontier_analysis.find_knee(export.points, slo)
    except frontier_analysis.FormatError as e:
        raise exits.UsageError(f"{', '.join(args.files)}: {e}") from None
    plan, price = _plan(args, result), None
    if result.knee is not None and args.gpu_hourly is not None:
        price = cost.per_million_output_tokens(args.gpu_hourly, result.knee.point.output_tokens_per_s,
                                               gpus=args.gpus)
    if args.plot and result.rows:
        try:
            plot(result, args.plot)
        except ImportError:
            raise exits.UsageError("--plot needs matplotlib (pip install 'infertune[plot]')") from None
        except OSError as e:
            raise exits.UsageError(f"--plot {args.plot}: cannot write: {e.strerror or e}") from None
    if args.json:
        sys.stdout.write(json.dumps(_knee_json(result, export, plan, price), indent=2) + "\n")
    else:
        sys.stdout.write(_knee_report(result, export, plan, price))
        if args.plot:
            print(f"plot: {args.plot}")
    return exits.EXIT_OK if result.knee is not None else exits.EXIT_NO_KNEE


def _plan(args: argparse.Namespace, result: frontier_analysis.Knee) -> frontier_analysis.Plan | None:
    if result.knee is None or (args.target_rps is None and args.target_tokens is None):
        return None
    point = result.knee.point
    if args.target_tokens is not None:
        return frontier_analysis.replicas_at_utilization(args.target_tokens, point.output_tokens_per_s,
                                                         unit="tok/s", utilization=args.target_utilization)
    capacity = frontier_analysis.request_capacity(point, osl=args.osl)
    if capacity is None:
        raise exits.UsageError("--target-rps: the runs carry no request rate; pass --osl (mean output tokens per "
                          "request) or use --target-tokens")
    return frontier_analysis.replicas_at_utilization(args.target_rps, capacity, unit="req/s",
                                                     utilization=args.target_utilization)


def plot(result: frontier_analysis.Knee, path: str) -> pathlib.Path:
    """Two panels: output tok/s against ITL (the frontier) and TTFT against concurrency, SLO lines, the knee."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    rows = result.rows
    b = result.basis
    fig, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    tput = [r.point.output_tokens_per_s for r in rows]
    left.plot([r.itl * 1000 for r in rows], tput, "o-", label=f"ITL {b.itl}")
    for r in rows:
        left.annotate(_c(r.point.concurrency), (r.itl * 1000, r.point.output_tokens_per_s), fontsize=7,
                      textcoords="offset points", xytext=(3, 3))
    left.axvline(result.slo.itl * 1000, color="red", linestyle=":", label=f"ITL SLO {_ms(result.slo.itl)} ms")
    left.set_xlabel("inter-token latency (ms)")
    left.set_ylabel("output tokens/s per replica")
    left.set_title("latency-throughput frontier")
    conc = [r.point.concurrency for r in rows]
    right.plot(conc, [r.ttft * 1000 for r in rows], "o-", label=f"TTFT {b.ttft}")
    right.axhline(result.slo.ttft * 1000, color="red", linestyle=":", label=f"TTFT SLO {_ms(result.slo.ttft)} ms")
    if result.knee is not None:
        k = result.knee
        left.plot([k.itl * 1000], [k.point.output_tokens_per_s], "*", color="green", markersize=16,
                  label=f"knee: concurrency {_c(k.point.concurrency)}")
        right.plot([k.point.concurrency], [k.ttft * 1000], "*", color="green", markersize=16, label="knee")
    if min(conc) > 0:
        right.set_xscale("log", base=2)
        right.xaxis.set_major_formatter(ticker.ScalarFormatter())
    right.set_yscale("log")
    right.set_xlabel("concurrency")
    right.set_ylabel("time to first token (ms)")
    right.set_title("queueing")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(path)
    try:
        fig.savefig(out, dpi=110)
    finally:
        pyplot.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- cost


def cmd_cost(args: argparse.Namespace) -> int:
    c = cost.per_million_output_tokens(args.gpu_hourly, args.tokens_per_second, gpus=args.gpus,
                                       utilization=args.utilization)
    if args.json:
        sys.stdout.write(json.dumps({
            "gpuHourly": c.gpu_hourly, "gpus": c.gpus, "tokensPerSecond": c.tokens_per_second,
            "utilization": c.utilization, "hourly": round(c.hourly, 4),
            "costPerMillionOutputTokens": round(c.per_million, 4),
        }, indent=2) + "\n")
        return exits.EXIT_OK
    print(f"${c.per_million:,.2f} per 1M output tokens")
    print(f"formula: {cost.FORMULA}")
    print(f"worked:  {c.worked()}")
    return exits.EXIT_OK


# ---------------------------------------------------------------------------------------------- parsers


def register(sub: Any) -> None:
    """Add `knee` and `cost` to the `infertune` parser."""
    k = sub.add_parser(
        "knee", help="the knee of a measured latency-throughput frontier under SLOs",
        description="Read benchmark exports (genai-perf or AIPerf profile_export_*.json, one per concurrency; "
        "vllm bench serve --save-result JSON, one run per file or per line; or a CSV "
        "concurrency,ttft_ms,itl_ms,output_tokens_per_s) and print the frontier, the knee (the concurrency "
        "with the most output tokens/s whose TTFT and ITL meet the SLO), the max batch size it implies and "
        "the replicas for a target load.")
    k.add_argument("files", nargs="+", metavar="FILE",
                   help="export files, or directories searched for profile_export_genai_perf.json/_aiperf.json")
    k.add_argument("--ttft", type=_duration, required=True, help="time-to-first-token objective, e.g. 1500ms or 1s")
    k.add_argument("--itl", type=_duration, required=True, help="inter-token latency objective, e.g. 40ms")
    k.add_argument("--percentile", type=_percentile, default=95.0,
                   help="percentile the objectives apply to (default 95); means are used when the file has none")
    target = k.add_mutually_exclusive_group()
    target.add_argument("--target-rps", type=_positive, metavar="R", help="requests/s to serve: prints replicas")
    target.add_argument("--target-tokens", type=_positive, metavar="T",
                        help="output tokens/s to serve: prints replicas")
    k.add_argument("--osl", type=_positive, help="mean output tokens per request, for --target-rps when the runs "
                   "have no request rate (a plain CSV)")
    k.add_argument("--target-utilization", type=_fraction, default=scaling.UTILIZATION,
                   help=f"share of the knee's throughput each replica is planned at (default {scaling.UTILIZATION:g}, "
                   "as the operator does)")
    k.add_argument("--gpu-hourly", type=_money,
                   help="price of one GPU-hour: also prints $/1M output tokens at the knee")
    k.add_argument("--gpus", type=_count, default=1, help="GPUs per replica (default 1)")
    k.add_argument("--plot", metavar="PNG", help="draw the frontier, the SLO lines and the knee (needs matplotlib)")
    k.add_argument("--json", action="store_true", help="print the result as JSON")
    k.set_defaults(fn=cmd_knee)

    c = sub.add_parser(
        "cost", help="cost per million output tokens from a GPU-hour price and throughput",
        description=f"{cost.FORMULA}. Every GPU of a replica is paid for; --utilization charges idle time "
        "to the tokens produced.")
    c.add_argument("--gpu-hourly", type=_money, required=True, help="price of one GPU-hour, e.g. 2.50")
    c.add_argument("--gpus", type=_count, default=1, help="GPUs per replica (default 1)")
    c.add_argument("--tokens-per-second", type=_positive, required=True,
                   help="output tokens/s of one replica while it serves")
    c.add_argument("--utilization", type=_fraction, default=1.0,
                   help="share of paid time spent producing at that rate, (0, 1] (default 1)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(fn=cmd_cost)


def parser() -> argparse.ArgumentParser:
    """A parser with only these commands (`python -m infertune.offline`); `infertune` adds them to its own."""
    p = argparse.ArgumentParser(prog="infertune")
    register(p.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return exits.run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
