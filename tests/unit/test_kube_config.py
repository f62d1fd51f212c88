"""Test: the kube adapter's client configuration from a kubeconfig file (no cluster needed to read it)."""

from __future__ import annotations

import asyncio
import pathlib

from infertune import kube

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
  - name: c
    cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
  - name: u
    user: {token: "t0ken"}
contexts:
  - name: x
    context: {cluster: c, user: u}
current-context: x
"""


def test_the_api_client_keeps_a_small_connection_pool(tmp_path: pathlib.Path) -> None:
    """Each pooled TLS connection holds a 256 KiB buffer; 1,000 resources writing at once must not open 100."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    c = asyncio.run(kube.load_configuration(str(path)))
    assert c.host == "https://127.0.0.1:6443"
    assert c.connection_pool_maxsize == kube.API_CONNECTIONS == 16
    assert asyncio.run(kube.bearer_token(c)) == "t0ken"
