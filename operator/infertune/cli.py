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

from infertune import catalog, crd, decide, exits, models, offline, render, validation
from infertune.sim import commands as sim_commands

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class PlainDumper(yaml.SafeDumper):
    """Writes every value out in full: no `&id001` anchors and `*id001` aliases for objects used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class Document:
    source: str  # "file.yaml" or "file.yaml#2" for the second document
    body: dict[str, Any]


# The deepest field of an InferenceDeployment is 6 levels down (spec.engine.env[i].valueFrom.secretKeyRef.name);
# 64 leaves room for any hand-written file while a 50,000-deep one is refused before it is built.
MAX_DEPTH = 64
# Nodes once every alias is expanded: a full resource has a few hundred. A 528-byte "billion laughs" file
# expands to 10^9 and would hang whatever walks it; aliases within the limit still work.
MAX_NODES = 100_000


def check_node(root: yaml.Node) -> str | None:
    """Why a composed YAML document must not be built (duplicate keys, too deep, too large with its aliases
    expanded), or None. Iterative, so that no depth of nesting can exhaust the stack."""
    expanded: dict[int, int] = {}
    # (node, depth, children done): post-order, each shared (aliased) node counted once per use but walked once.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            return f"line {node.start_mark.line + 1}: nested too deeply (at most {MAX_DEPTH} levels)"
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        return f"line {key.start_mark.line + 1}: duplicate key {key.value!r} (a later value would " \
                               "silently replace the first)"
                    seen.add(key.value)
                children += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not done:
            if id(node) in expanded:
                continue
            stack.append((node, depth, True))
            stack += [(c, depth + 1, False) for c in children if id(c) not in expanded]
            continue
        expanded[id(node)] = 1 + sum(expanded.get(id(c), 0) for c in children)
        if expanded[id(node)] > MAX_NODES:
            return f"line {node.start_mark.line + 1}: more than {MAX_NODES:,} values once its aliases are expanded"
    return None


def read_documents(path: str) -> list[Document]:
    """The YAML documents of a file ('-' is stdin); raises a UsageError naming the file on any read problem."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise exits.UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise exits.UsageError(f"{path}: not a text file (invalid UTF-8)") from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise exits.UsageError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise exits.UsageError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    raw = []
    for node in nodes:
        problem = check_node(node)
        if problem:
            raise exits.UsageError(f"{path}: {problem}")
        loader = yaml.SafeLoader("")
        try:
            raw.append(loader.construct_document(node))
        finally:
            loader.dispose()
    raw = [d for d in raw if d is not None]
    if not raw:
        raise exits.UsageError(f"{path}: no YAML documents found")
    docs = []
    for i, body in enumerate(raw, start=1):
        source = path if len(raw) == 1 else f"{path}#{i}"
        if not isinstance(body, dict):
            raise exits.UsageError(f"{source}: expected a mapping (an InferenceDeployment), got {type(body).__name__}")
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
            spec = None
            if "spec" in doc.body:
                spec, spec_problems = validation.parse(doc.body["spec"])
                problems += spec_problems
            meta = doc.body.get("metadata")
            name = meta.get("name", "?") if isinstance(meta, dict) else "?"
            if problems:
                failed = True
                for p in problems:
                    print(f"{doc.source}: {name}: {p}", file=sys.stderr)
            else:
                print(f"{doc.source}: {name}: valid")
            # Warnings keep the exit code: the spec is valid, but its SLO verdict may read Unknown.
            for w in validation.objective_warnings(spec) if spec is not None else ():
                print(f"{doc.source}: {name}: warning: {w}", file=sys.stderr)
    return exits.EXIT_INVALID if failed else exits.EXIT_OK


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
                return exits.EXIT_INVALID
            meta = doc.body["metadata"]
            owner = render.Owner(
                name=meta["name"], namespace=meta.get("namespace") or args.namespace, uid=PLACEHOLDER_UID
            )
            knobs, _ = decide.initial_knobs(spec)
            replicas = spec.scaling.min_replicas + spec.scaling.standby.min
            out += render.manifests(owner, spec, knobs, replicas=replicas)
    sys.stdout.write(f"# ownerReferences carry the placeholder uid {PLACEHOLDER_UID}; "
                     "the operator sets the real one.\n")
    sys.stdout.write(yaml.dump_all(out, Dumper=PlainDumper, sort_keys=False, width=120))
    return exits.EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.render_yaml())
    return exits.EXIT_OK


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
    return exits.EXIT_OK


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
    run.add_argument("--namespace", "-n", action="append",
                     help="namespace to watch (repeatable); all when absent. Plain names need only a Role in each "
                     "(manifests/); globs (team-*) or all namespaces need the ClusterRole (manifests/clusterwide)")
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
    return exits.run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
