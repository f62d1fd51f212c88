"""Bench: simulated seconds per wall second of the twin — 8 x Llama-3.1-70B FP8 on one H100 each, Azure trace."""

from __future__ import annotations

import argparse
import pathlib
import time

from infertune import catalog, models, perfmodel
from infertune.sim import fleet, workload

TRACE = pathlib.Path(__file__).resolve().parents[1] / "data" / "traces" / "azure-llm-2023-conversation.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trace", type=pathlib.Path, default=TRACE)
    parser.add_argument("--rate", type=float, default=20.0, help="target requests/s after rate scaling")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds (default: whole trace)")
    parser.add_argument("--kv-dtype", choices=[k.value for k in models.KvDtype], default="default")
    parser.add_argument("--method", choices=["superpose", "compress"], default="superpose")
    args = parser.parse_args()

    replica = perfmodel.Replica(
        gpu=catalog.gpu("h100-sxm-80gb"), model=catalog.model("llama-3.1-70b"), gpus=1,
        weights=models.Precision.FP8, kv_dtype=models.KvDtype(args.kv_dtype),
    )
    trace = workload.load_trace(args.trace)
    span = trace[-1].time
    arrivals = workload.scale_rate(trace, args.rate * span / len(trace), method=args.method, seed=1)
    duration = args.duration or arrivals[-1].time
    arrivals = workload.window(arrivals, duration=duration)
    start = time.perf_counter()
    result = fleet.simulate(replica, arrivals, replicas=args.replicas, duration=duration, interval=15.0)
    wall = time.perf_counter() - start
    done = [r for r in result.records if r.status == "finished"]
    tokens = sum(r.generated for r in done)
    print(f"{len(arrivals)} requests ({len(arrivals) / duration:.1f}/s) over {duration:.0f} simulated s "
          f"on {args.replicas} x {replica.model.name} {replica.weights.value} / {replica.gpu.name} "
          f"(KV {perfmodel.kv_capacity_tokens(replica)} tokens per replica)")
    print(f"finished {len(done)}, {tokens / duration:.0f} output tok/s, "
          f"waiting at the end {result.intervals[-1].waiting}, "
          f"preemptions {sum(i.preemptions for i in result.intervals)}")
    print(f"wall {wall:.2f} s -> {duration / wall:.0f}x real time")


if __name__ == "__main__":
    main()
