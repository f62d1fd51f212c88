"""Twin: a simulated continuous-batching engine, its workloads, fleet, metrics and sweeps (docs/twin.md)."""
