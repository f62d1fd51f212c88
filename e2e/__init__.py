"""Test: the real end-to-end environment (control plane, fake GPU nodes, Prometheus) and its suite."""
