"""Test: kmock fixtures for running the real kopf handlers against an emulated API server."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
import pytest

from infertune import handlers, kube, models

RESOURCE = f"{models.GROUP}/{models.VERSION}/{models.PLURAL}"


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kmock: kmock.KubernetesEmulator) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""
apiVersion: v1
kind: Config
current-context: mock
clusters:
  - name: mock
    cluster: {{server: "{kmock.url!s}"}}
users:
  - name: mock
    user: {{token: "test-token"}}
contexts:
  - name: mock
    context: {{cluster: mock, user: mock}}
""")
    monkeypatch.setenv("KUBECONFIG", str(path))
    kmock.resources.load_bundled()
    kmock.resources[RESOURCE].verbs = {"get", "list", "watch", "patch", "create", "delete"}
    kmock.resources[RESOURCE].namespaced = True
    kmock.resources[RESOURCE].kind = models.KIND
    return str(path)


@pytest.fixture
async def run_operator(kubeconfig: str) -> AsyncIterator[Callable[..., Any]]:
    """Start the operator (the real handlers, registry and settings) in the test's event loop."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None], kube.KubeCluster]] = []

    async def start(**config: Any) -> handlers.Operator:
        cfg = models.OperatorConfig(**{"interval": 0.5, "namespaces": ("ns1",), **config})
        cluster = await kube.KubeCluster.connect(kubeconfig)
        operator = handlers.Operator(config=cfg, cluster=cluster, kubeconfig=kubeconfig)
        registry = kopf.OperatorRegistry()
        handlers.register(operator, registry)
        settings = kopf.OperatorSettings()
        handlers.configure(settings, cfg)  # plain namespace names: kopf's scanning is off (no cluster-wide reads)
        settings.posting.enabled = True
        settings.watching.server_timeout = 10
        stop = asyncio.Event()
        task = asyncio.create_task(kopf.operator(
            registry=registry, settings=settings, standalone=True, namespaces=cfg.namespaces, stop_flag=stop,
        ))
        stops.append((stop, task, cluster))
        return operator

    yield start
    for stop, task, cluster in stops:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=10)
        await cluster.close()


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until check() returns something truthy without raising; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if result:
                return result
        except (KeyError, AssertionError, IndexError, TypeError, StopIteration) as e:
            last = e
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")
