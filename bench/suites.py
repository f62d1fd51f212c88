"""Bench helper: the scenario suites and the command line the per-scenario twin benches share."""

from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITES = {"train": ROOT / "bench" / "scenarios", "grid": ROOT / "bench" / "scenarios" / "grid",
          "validation": ROOT / "bench" / "scenarios" / "validation"}


def run(description: str, default_json: pathlib.Path, one: Callable[[str], dict[str, Any]]
        ) -> tuple[argparse.Namespace, list[dict[str, Any]]]:
    """Parse --suite, --jobs and --json, and run `one` on every scenario of the suites named, in worker processes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--suite", default="train,grid", help="comma-separated: train, grid, validation")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path, default=default_json)
    args = parser.parse_args()
    unknown = [name for name in args.suite.split(",") if name not in SUITES]
    if unknown:
        parser.error(f"--suite: unknown suite {unknown[0]!r}; known: {', '.join(SUITES)}")
    if args.jobs < 1:
        parser.error(f"--jobs: at least 1 worker process, got {args.jobs}")
    paths = [str(p) for name in args.suite.split(",") for p in sorted(SUITES[name].glob("*.yaml"))]
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        return args, list(pool.map(one, paths))
