"""Test: session fixtures for the e2e suite: the real cluster, its kubeconfig, Prometheus, kubectl helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import cluster as e2e_cluster
from e2e import prometheus as e2e_prometheus

E2E_DIR = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test under e2e/ needs the real control plane; marking them here (before `-m` deselects)
    # means no test file can forget it and slip into the unit run.
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


# What a failed test's report carries: the last lines of each log it touched, each line cut to a width a
# terminal shows. A CI failure is read once, from a clone that is gone by then; without these, a rare
# failure cannot be told from another.
LOG_TAIL_LINES = 150
LOG_LINE_CHARS = 400


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, each cut to LOG_LINE_CHARS; a note where the file is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({path} unreadable: {e.strerror})"
    return "\n".join(line[:LOG_LINE_CHARS] for line in text.splitlines()[-lines:])


def failure_logs(funcargs: dict[str, Any]) -> list[tuple[str, Path, int]]:
    """The logs behind a failed test, with how many lines of each to show: the operator(s) it used in full
    measure, then the twin and the control-plane components, which mostly say they are alive."""
    found: list[tuple[str, Path, int]] = []
    for name, lines in (("env", LOG_TAIL_LINES), ("operator", LOG_TAIL_LINES), ("twin", LOG_TAIL_LINES // 4)):
        log = getattr(funcargs.get(name), "log", None)
        if isinstance(log, Path):
            found.append((name, log, lines))
    if "cluster" in funcargs:
        logs = e2e_cluster.component_logs_dir()
        found += [(p.stem, p, LOG_TAIL_LINES // 4) for p in sorted(logs.glob("*.log"))] if logs.is_dir() else []
    return found


def namespace_state(funcargs: dict[str, Any]) -> str | None:
    """What a failed test's namespace held as it failed (before teardown deletes it): the owned objects with
    their labels, then the events, oldest first. None where the test had no namespace of its own."""
    env = funcargs.get("env")
    ns = getattr(env, "ns", None) or funcargs.get("namespace")
    if not isinstance(ns, str) or "cluster" not in funcargs:
        return None
    try:
        objects = e2e_cluster.kubectl("get", "inferencedeployments,deployments,replicasets,pods", "-n", ns,
                                      "-o", "wide", "--show-labels", check=False, timeout=20)
        events = e2e_cluster.kubectl("get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False, timeout=20)
        # A node the control plane thinks is gone taints itself, and its pods are evicted: shown beside them.
        nodes = e2e_cluster.kubectl("get", "nodes", "-o", "custom-columns=NODE:.metadata.name,"
                                    "TAINTS:.spec.taints[*].key", check=False, timeout=20)
    except (subprocess.TimeoutExpired, OSError, e2e_cluster.ClusterError) as e:
        return f"(kubectl could not read namespace {ns}: {e})"
    return f"{objects}\n{events}\n{nodes}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        state = namespace_state(funcargs)
        if state is not None:
            report.sections.append(("namespace state", state))
        for name, path, lines in failure_logs(funcargs):
            report.sections.append((f"log tail: {name} ({path.name})", log_tail(path, lines)))
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    # A cold build takes minutes; doing it here, before any test starts, keeps it out of the per-test
    # timeout that would otherwise cover the `cluster` fixture's setup.
    if session.items and not session.config.option.collectonly:
        try:
            e2e_cluster.binaries()
        except e2e_cluster.ClusterError as e:
            pytest.exit(f"e2e: {e}", returncode=3)


@pytest.fixture(scope="session")
def cluster() -> Iterator[e2e_cluster.Cluster]:
    """The e2e cluster, brought up once per session. A cluster that was already up (`make cluster-up`) is
    reused and left running; one this session started is torn down at the end unless
    INFERTUNE_KEEP_CLUSTER=1."""
    was_up = e2e_cluster.is_up()
    info = e2e_cluster.up()
    yield info
    if not was_up and os.environ.get("INFERTUNE_KEEP_CLUSTER") != "1":
        e2e_cluster.down(stop_prometheus=False)


@pytest.fixture(scope="session")
def kubeconfig(cluster: e2e_cluster.Cluster) -> Path:
    """The admin kubeconfig (client certificate, system:masters)."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def k8s(cluster: e2e_cluster.Cluster) -> e2e_cluster.Kube:
    """kubectl helpers bound to the admin kubeconfig."""
    return cluster.kube


@pytest.fixture
def namespace(k8s: e2e_cluster.Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (its default ServiceAccount exists), deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{slug}-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    k8s.wait_for(lambda: k8s.get("serviceaccount", "default", namespace=name), 30,
                 message=f"ServiceAccount {name}/default")
    yield name
    k8s.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_prometheus.Prometheus]:
    """Prometheus on a free port, scraping file_sd targets from a fresh temp directory (`.targets_dir`) and
    the operator's /metrics at `.operator_target` (127.0.0.1 and a port reserved free for the operator)."""
    prom = e2e_prometheus.start(
        workdir=tmp_path_factory.mktemp("prometheus"),
        targets_dir=tmp_path_factory.mktemp("prometheus-targets"),
        operator_target=f"127.0.0.1:{e2e_prometheus.free_port()}",
    )
    yield prom
    prom.stop()


REPO = E2E_DIR.parent
OPERATOR_NAMESPACE = "infertune-system"
OPERATOR_SA = "infertune"


@dataclasses.dataclass
class OperatorProcess:
    """The operator under test: a local process authenticated as the ServiceAccount from manifests/."""

    process: subprocess.Popen[bytes]
    kubeconfig: Path
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def install_operator_manifests(k8s: e2e_cluster.Kube) -> None:
    """The generated CRD, the RBAC we ship (namespace, ServiceAccount, ownership policy) with the opt-in
    cluster-wide role (the session's operator follows the e2e-* glob), peering. Not manifests/admission: the
    hostile-input tests expect the operator's own refusals; e2e/test_rbac.py binds the limits policy itself."""
    k8s.kubectl("apply", "-f", str(REPO / "crds" / "inferencedeployments.infertune.io.yaml"))
    k8s.kubectl("apply", "-f", str(REPO / "manifests" / "peering" / "crds.yaml"))
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                "crd/inferencedeployments.infertune.io", "crd/clusterkopfpeerings.kopf.dev")
    k8s.kubectl("apply", "-k", str(REPO / "manifests" / "rbac"))
    k8s.kubectl("apply", "-k", str(REPO / "manifests" / "rbac" / "clusterwide"))
    k8s.kubectl("apply", "-f", str(REPO / "manifests" / "peering" / "peering.yaml"))


# The session's operator handles the e2e-* namespaces; tests that run their own operators (high availability,
# faults) use namespaces outside that pattern so that exactly their operators act there.
SESSION_NAMESPACES = "e2e-*"


def start_operator(kubeconfig: Path, log: Path, *, prometheus_url: str | None, metrics_port: str,
                   extra: tuple[str, ...] = (), verbose: bool = True) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "infertune.cli", "run", "--kubeconfig", str(kubeconfig), "--interval", "1",
            "--metrics-port", metrics_port, *(["--verbose"] if verbose else []), *extra]
    if prometheus_url:
        args += ["--prometheus-url", prometheus_url]
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO / "operator")})


def stop_operator(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (kopf finishes its handlers), then SIGKILL after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def operator(k8s: e2e_cluster.Kube, prometheus: e2e_prometheus.Prometheus,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """`infertune run` with a TokenRequest token of the shipped ServiceAccount, reconciling every second."""
    install_operator_manifests(k8s)
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = k8s.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SA, workdir / "kubeconfig")
    log = workdir / "operator.log"
    port = (prometheus.operator_target or "127.0.0.1:0").rsplit(":", 1)[1]
    process = start_operator(kubeconfig, log, prometheus_url=prometheus.url, metrics_port=port,
                             extra=("--namespace", SESSION_NAMESPACES))
    handle = OperatorProcess(process=process, kubeconfig=kubeconfig, log=log)
    yield handle
    stop_operator(process)
    if os.environ.get("INFERTUNE_E2E_SHOW_LOGS"):
        print(handle.logs())


@dataclasses.dataclass
class TwinProcess:
    """The live twin playing the model servers; its control API sets load and reports request counts."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def set_load(self, namespace: str, name: str, rate: float, **extra: Any) -> None:
        body = json.dumps({"rate": rate, **extra}).encode()
        request = urllib.request.Request(f"{self.url}/load/{namespace}/{name}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return dict(json.load(response))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def twin(cluster: e2e_cluster.Cluster, prometheus: e2e_prometheus.Prometheus,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    """`python -m infertune.sim.live` with the admin kubeconfig, writing file_sd targets Prometheus reads."""
    port = e2e_prometheus.free_port()
    log = tmp_path_factory.mktemp("twin") / "twin.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "infertune.sim.live", "--kubeconfig", str(cluster.kubeconfig),
             "--port", str(port), "--targets-dir", str(prometheus.targets_dir)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        )
    handle = TwinProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)
    e2e_cluster.wait_for(lambda: _healthy(handle.url), 30, message="the twin's /healthz")
    yield handle
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    if os.environ.get("INFERTUNE_E2E_SHOW_LOGS"):
        print(handle.logs())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
