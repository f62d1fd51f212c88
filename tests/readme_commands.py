"""Test: the README's shell commands, as written, and where each one is run (here, in e2e, or elsewhere)."""

from __future__ import annotations

import dataclasses
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}

# Run by tests/integration/test_readme_commands.py from the repository's root, after the `source` line of their
# block: each must exit 0 and print the text given (`claimed`: the README quotes that text, so both stay equal).
RUN_HERE: dict[str, tuple[str, bool]] = {
    "infertune validate manifests/samples/*.yaml": ("vllm-llama-3.1-8b-l40s.yaml", False),
    "infertune render manifests/samples/trtllm-llama-3.3-70b-2xh100.yaml": ("kind: Deployment", False),
    "infertune sweep --model llama-3.3-70b --gpu h100-sxm-80gb --gpus 2 --weights fp8 --kv-dtype fp8 "
    "--isl 5000 --osl 500 --concurrency 1,25,50,100": ("concurrency", False),
    "infertune simulate bench/scenarios/chat-70b-h100.yaml --policy infertune,oracle,hpa": ("oracle", False),
    "infertune knee data/calibration/nim-llama-3.3-70b-2xh100-fp8-tp2-isl5000-osl500.csv --ttft 1s --itl 70ms":
        ("recommended max batch size: 50", True),
    "infertune knee tests/fixtures/benchmarks/genai-perf --ttft 1500ms --itl 70ms":
        ("recommended max batch size: 50", True),
    "infertune cost --gpu-hourly 2.50 --gpus 1 --tokens-per-second 1800": ("$0.39 per 1M output tokens", True),
}
# Lines that set up the shell for the commands after them in the same block; run as part of each.
SETUP = ("source .venv/bin/activate", 'eval "$(python -m e2e.cluster env)"')
# Run by e2e/test_readme.py against the e2e cluster (the demo's cluster is the same one).
RUN_IN_E2E = ("kubectl get infd -n demo -w", "kubectl describe infd -n demo")
# Run by something else, or by nothing, and why.
ELSEWHERE = {
    "make demo": "the e2e demo test runs `make demo` from a fresh cluster",
    "make test": ".ci/run, the CI script, runs `make test`",
    "docker build -t infertune:0.1.0 .": "not run: the test machines have no container runtime",
    "kubectl apply -k manifests/": "e2e/test_readme.py applies it to the e2e cluster with --dry-run=server",
    "kubectl apply -k manifests/monitoring/": "not run: needs the Prometheus Operator's CRDs; e2e/test_readme.py "
    "builds it with `kubectl kustomize`",
    "kubectl apply -f manifests/samples/vllm-llama-3.1-8b-l40s.yaml": "e2e/test_readme.py applies it to the e2e "
    "cluster with --dry-run=server (the CRD's schema and rules check it)",
    "kubectl get infd": "not run as such: e2e/test_readme.py runs `kubectl get infd -n demo -w`",
    # Named in the prose (inline code), not in a block.
    "make venv": "every `make` target that needs Python depends on it, so `make test` (.ci/run) runs it",
    "make cluster-up": "`python -m e2e.cluster up`: the e2e session's `cluster` fixture runs the same e2e.cluster.up()",
    "make cluster-down": "`python -m e2e.cluster down`: the e2e session's `cluster` fixture runs the same "
    "e2e.cluster.down(); the demo's shutdown tests run the target",
    "PYTHONPATH=operator .venv/bin/python bench/decision_quality.py": "run by hand to refresh the results (it "
    "rewrites the README's table, 2.5 min); tests/unit/test_bench_readme.py checks the table is what it writes",
    "kubectl apply": "a verb in the prose, not a command",
    "infertune cost": "the prose names the command; the block under 'Without a cluster' runs it in full",
}
# An inline code span of two words or more is a command when it starts with one of these (or with VAR=value).
COMMAND_WORDS = ("make", "infertune", "kubectl", "python", "python3", ".venv/bin/", "bash", "docker", "source",
                 "eval", "pip", "go", "git", "helm", "kustomize")


@dataclasses.dataclass(frozen=True)
class Command:
    block: int  # which shell block of the README, from 0
    text: str  # one logical line, continuations joined, the trailing comment and extra blanks removed
    raw: str  # the same line as written (only the continuations joined and the comment removed): what runs
    setup: tuple[str, ...]  # the SETUP lines before it in its block


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes, at the start or after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands(text: str | None = None) -> list[Command]:
    """Every command of the README's shell blocks, in order."""
    text = README.read_text() if text is None else text
    found: list[Command] = []
    blocks = re.findall(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for n, body in enumerate(body for language, body in blocks if language.lower() in SHELL_LANGUAGES):
        setup: list[str] = []
        logical = re.sub(r"\\\n", " ", body)
        for raw in logical.splitlines():
            written = _strip_comment(raw).strip()
            line = " ".join(written.split())
            if not line:
                continue
            found.append(Command(block=n, text=line, raw=written, setup=tuple(setup)))
            if line in SETUP:
                setup.append(line)
    return found


def inline_commands(text: str | None = None) -> list[str]:
    """Inline code spans of the README's prose that are commands (block -1 in `commands`), in order."""
    text = README.read_text() if text is None else text
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found = []
    for written in re.findall(r"`([^`\n]+)`", prose):
        span = " ".join(written.split())
        if " " not in span:  # a tool's name (`make`, `infertune`), not a command line
            continue
        first = span.split(" ", 1)[0]
        if re.match(r"[A-Z_][A-Z0-9_]*=\S", first) or first in COMMAND_WORDS or first.startswith(".venv/bin/"):
            found.append(span)
    return found
