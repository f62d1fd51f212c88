"""CLI: `infertune run | crd | render | validate | catalog` and the twin's commands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from infertune import catalog, crd, decide, models, offline, render, validation
from infertune.sim import commands as sim_commands

EXIT_OK = 0
EXIT_INVALID = 2

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class UsageError(Exception):
    """Bad input to a command: printed as one line, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Document:
    source: str  # "file.yaml" or "file.yaml#2" for the second document
    body: dict[str, Any]


def read_documents(path: str) -> list[Document]:
    """The YAML documents of a file ('-' is stdin); raises UsageError naming the file on any read problem."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (invalid UTF-8)") from None
    try:
        raw = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not raw:
        raise UsageError(f"{path}: no YAML documents found")
    docs = []
    for i, body in enumerate(raw, start=1):
        source = path if len(raw) == 1 else f"{path}#{i}"
        if not isinstance(body, dict):
            raise UsageError(f"{source}: expected a mapping (an InferenceDeployment), got {type(body).__name__}")
        docs.append(Document(source, body))
    return docs


def resource_problems(body: dict[str, Any]) -> list[validation.Problem]:
    """apiVersion/kind/metadata checks of a resource document, before its spec."""
    problems = []
    expected = f"{models.GROUP}/{models.VERSION}"
    if body.get("apiVersion") != expected:
        problems.append(validation.Problem("apiVersion", f"must be {expected}, got {body.get('apiVersion')!r}"))
    if body.get("kind") != models.KIND:
        problems.append(validation.Problem("kind", f"must be {models.KIND}, got {body.get('kind')!r}"))
    meta = body.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        problems.append(validation.Problem("metadata.name", "required field is missing"))
    else:
        problems += validation.check_name(meta["name"])
    if "spec" not in body:
        problems.append(validation.Problem("spec", "required field is missing"))
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        for doc in read_documents(path):
            problems = resource_problems(doc.body)
            if "spec" in doc.body:
                problems += validation.parse(doc.body["spec"])[1]
            meta = doc.body.get("metadata")
            name = meta.get("name", "?") if isinstance(meta, dict) else "?"
            if problems:
                failed = True
                for p in problems:
                    print(f"{doc.source}: {name}: {p}", file=sys.stderr)
            else:
                print(f"{doc.source}: {name}: valid")
    return EXIT_INVALID if failed else EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    out: list[dict[str, Any]] = []
    for path in args.files:
        for doc in read_documents(path):
            problems = resource_problems(doc.body)
            spec, spec_problems = validation.parse(doc.body.get("spec"))
            problems += spec_problems
            if problems or spec is None:
                for p in problems:
                    print(f"{doc.source}: {p}", file=sys.stderr)
                return EXIT_INVALID
            meta = doc.body["metadata"]
            owner = render.Owner(
                name=meta["name"], namespace=meta.get("namespace") or args.namespace, uid=PLACEHOLDER_UID
            )
            knobs, _ = decide.initial_knobs(spec)
            replicas = spec.scaling.min_replicas + spec.scaling.standby.min
            out += render.manifests(owner, spec, knobs, replicas=replicas)
    sys.stdout.write(f"# ownerReferences carry the placeholder uid {PLACEHOLDER_UID}; "
                     "the operator sets the real one.\n")
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, width=120))
    return EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.render_yaml())
    return EXIT_OK


def cmd_catalog(args: argparse.Namespace) -> int:
    print("GPUs (accelerator.type):")
    for g in catalog.GPUS.values():
        fp8 = f"{g.tflops_fp8:g}" if g.tflops_fp8 else "-"
        print(f"  {g.name:16} {g.memory_gib:>5g} GiB {g.bandwidth_gbps:>6g} GB/s  "
              f"bf16 {g.tflops_bf16:>5g}  fp8 {fp8:>5} TFLOPS")
    print("Models (model.architecture):")
    for m in catalog.MODELS.values():
        kv = m.kv_bytes_per_token(2) / 1024
        print(f"  {m.name:16} {m.parameters / 1e9:>6.1f}B params  {m.layers:>3} layers  KV {kv:g} KiB/token (bf16)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from infertune import main as operator_main  # kopf and the API client load only for `run`

    config = models.OperatorConfig(
        prometheus_url=args.prometheus_url,
        prometheus_token_file=args.prometheus_token_file,
        prometheus_ca_file=args.prometheus_ca_file,
        metrics_window=args.metrics_window,
        engine_job=args.engine_job,
        dcgm_job=args.dcgm_job,
        namespaces=tuple(args.namespace or ()),
        interval=args.interval,
        dry_run=args.dry_run,
        metrics_port=args.metrics_port,
        standalone=not args.peering,
        priority=args.priority,
        peering_name=args.peering,
        peering_lifetime=args.peering_lifetime,
    )
    _logging(args.log_format, args.verbose)
    return asyncio.run(operator_main.run(config, kubeconfig=args.kubeconfig, liveness=args.liveness))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": self.formatTime(record), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
            **({"object": f"{record.k8s_ref.get('namespace')}/{record.k8s_ref.get('name')}"}
               if hasattr(record, "k8s_ref") and isinstance(record.k8s_ref, dict) else {}),
        })


def _logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero, got {text!r}")
    return value


def _job(text: str) -> str:
    """A scrape job name as it goes into PromQL's job="..." (no quotes, braces or spaces to break out of it)."""
    if not models.JOB_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a job name is letters, digits and _.:/- only, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infertune", description=__doc__.split(":", 1)[1].strip() if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("--prometheus-url", help="Prometheus base URL (without it, no metrics: knobs stay frozen)")
    run.add_argument("--prometheus-token-file", help="file holding a bearer token for Prometheus (from a Secret)")
    run.add_argument("--prometheus-ca-file", help="CA bundle for Prometheus over TLS")
    run.add_argument("--metrics-window", type=_positive_float, default=60.0,
                     help="seconds of history behind rates and quantiles (default 60)")
    run.add_argument("--engine-job", type=_job, default=models.ENGINE_JOB,
                     help="the scrape job whose engine series are read; no other job may speak for an engine pod "
                          f"(default {models.ENGINE_JOB}, the shipped PodMonitor's and scrape config's)")
    run.add_argument("--dcgm-job", type=_job, default=models.DCGM_JOB,
                     help="the scrape job whose DCGM series are read (default "
                          f"{models.DCGM_JOB}, scraping only the GPU Operator's namespace)")
    run.add_argument("--namespace", "-n", action="append", help="namespace to watch (repeatable); all when absent")
    run.add_argument("--interval", type=_positive_float, default=15.0,
                     help="seconds between reconcile cycles (default 15)")
    run.add_argument("--dry-run", action="store_true", help="decide and log, but change nothing")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--metrics-port", type=int, default=8080, help="port of the operator's /metrics (0: off)")
    run.add_argument("--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--peering", help="kopf peering name for high availability (default: standalone)")
    run.add_argument("--priority", type=int, default=0, help="kopf peering priority (the highest acts)")
    run.add_argument("--peering-lifetime", type=int, default=60,
                     help="seconds a silent instance keeps its claim before another takes over (default 60)")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(fn=cmd_run)

    c = sub.add_parser("crd", help="print the CustomResourceDefinition")
    c.set_defaults(fn=cmd_crd)

    r = sub.add_parser("render", help="print the manifests the operator would apply for a resource file")
    r.add_argument("files", nargs="+", metavar="FILE")
    r.add_argument("--namespace", default="default", help="namespace when the resource names none")
    r.set_defaults(fn=cmd_render)

    v = sub.add_parser("validate", help="check resource files; exit 2 with one line per problem")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(fn=cmd_validate)

    cat = sub.add_parser("catalog", help="list the GPUs and models the operator knows")
    cat.set_defaults(fn=cmd_catalog)

    # The twin's commands (sweep, simulate) and the offline analysis commands (knee, cost) live with their code.
    sim_commands.register(sub)
    offline.register(sub)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except UsageError as e:
        print(f"infertune {args.command}: {e}", file=sys.stderr)
        return EXIT_INVALID
    return code


if __name__ == "__main__":
    sys.exit(main())
