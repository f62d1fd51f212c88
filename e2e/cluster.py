"""Test: the real e2e control plane (kwokctl, binary runtime, on locally built binaries) with fake GPU nodes.

`python -m e2e.cluster up|down|status|env`. Every component is a binary built by e2e/build-binaries.sh; each
`--*-binary` flag points at one, so kwokctl downloads nothing. State lives in `.e2e/` (git-ignored):
kwokctl's workdir (pid files, logs, PKI, etcd data) in `.e2e/kwok/`, the admin kubeconfig in
`.e2e/kubeconfig`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from e2e import prometheus

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("INFERTUNE_E2E_DIR", REPO / ".e2e"))
KWOK_WORKDIR = STATE / "kwok"
KUBECONFIG = STATE / "kubeconfig"
CLUSTER_NAME = "infertune-e2e"
CACHE = Path(os.environ.get("INFERTUNE_CACHE", Path.home() / ".cache" / "infertune"))
KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
POD_STAGES = Path(__file__).resolve().parent / "kwok" / "pod-stages.yaml"
# kwok's default node stages (what kwokctl uses when given no stages of its own), read from the kwok
# module source in the Go module cache: "node-initialize" marks a node Ready, "heartbeat-with-lease"
# refreshes its status every 10 min while the controller renews its Lease.
KWOK_NODE_STAGES = ("kustomize/stage/node/fast/node-initialize.yaml",
                    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml")

PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"
READY_JITTER_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/jitter-delay"

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The e2e cluster could not be built, started, reached or stopped."""


@dataclasses.dataclass(frozen=True, slots=True)
class NodePool:
    """`count` fake nodes of one GPU product, each with `gpus` allocatable nvidia.com/gpu."""

    product: str
    count: int
    gpus: int = 8


# Four H100 SXM nodes for the main job, one node of every other product the catalog knows, so a sample
# for any GPU schedules.
DEFAULT_NODES: tuple[NodePool, ...] = (
    NodePool("NVIDIA-H100-80GB-HBM3", 4),
    NodePool("NVIDIA-H200", 1),
    NodePool("NVIDIA-H100-PCIe", 1),
    NodePool("NVIDIA-A100-SXM4-80GB", 1),
    NodePool("NVIDIA-B200", 1),
    NodePool("NVIDIA-L40S", 2),
    NodePool("NVIDIA-L4", 1),
)


def parse_nodes(spec: str) -> tuple[NodePool, ...]:
    """`PRODUCT=COUNTxGPUS,...`, e.g. `NVIDIA-H100-80GB-HBM3=4x8,NVIDIA-L4=2x4` (GPUS defaults to 8)."""
    pools = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        product, sep, shape = item.partition("=")
        count, _, gpus = shape.partition("x")
        try:
            pool = NodePool(product.strip(), int(count), int(gpus or 8))
        except ValueError:
            pool = None
        if not sep or pool is None or not pool.product or pool.count < 0 or pool.gpus < 0:
            raise ClusterError(
                f"--nodes / INFERTUNE_E2E_NODES: bad item {item!r}; want PRODUCT=COUNTxGPUS, "
                "e.g. NVIDIA-H100-80GB-HBM3=4x8"
            )
        pools.append(pool)
    return tuple(pools)


def configured_nodes() -> tuple[NodePool, ...]:
    spec = os.environ.get("INFERTUNE_E2E_NODES", "")
    return parse_nodes(spec) if spec.strip() else DEFAULT_NODES


# --- binaries ---------------------------------------------------------------------------------------

_bin_dir: Path | None = None


def binaries() -> Path:
    """The directory of locally built binaries; builds them on first use (cached under ~/.cache/infertune)."""
    global _bin_dir  # noqa: PLW0603 - one build-script run per process is enough
    if _bin_dir is None:
        done = subprocess.run(
            ["bash", str(REPO / "e2e" / "build-binaries.sh")], stdout=subprocess.PIPE, text=True, check=False
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise ClusterError(f"e2e/build-binaries.sh failed (exit {done.returncode}); see its output above")
        _bin_dir = Path(lines[-1])
    return _bin_dir


def binary(name: str) -> Path:
    path = binaries() / name
    if not path.is_file():
        raise ClusterError(f"binary {name!r} missing from {path.parent}; rerun e2e/build-binaries.sh")
    return path


def _go_env() -> dict[str, str]:
    # The same module cache build-binaries.sh fills, so reading kwok's source needs no network.
    return {
        **os.environ,
        "GOMODCACHE": os.environ.get("GOMODCACHE_OVERRIDE", str(CACHE / "gomod")),
        "GOCACHE": os.environ.get("GOCACHE_OVERRIDE", str(CACHE / "gobuild")),
        "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOWORK": "off",
    }


def kwok_source() -> Path:
    """kwok's module source (for its stage files), from the Go module cache build-binaries.sh filled."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        capture_output=True, text=True, env=_go_env(), check=False,
    )
    if done.returncode != 0:
        raise ClusterError(f"go mod download sigs.k8s.io/kwok@{KWOK_VERSION} failed:\n{done.stderr}")
    return Path(json.loads(done.stdout)["Dir"])


def kwok_config_documents() -> list[dict[str, Any]]:
    """The Stage documents handed to the kwok controller: kwok's node stages plus our pod stages."""
    src = kwok_source()
    docs: list[dict[str, Any]] = [{
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        # Listen on loopback only (kwokctl's default is every interface); ports are picked free by kwokctl.
        "options": {"bindAddress": "127.0.0.1"},
    }]
    for rel in KWOK_NODE_STAGES:
        docs.extend(d for d in yaml.safe_load_all((src / rel).read_text()) if d)
    docs.extend(d for d in yaml.safe_load_all(POD_STAGES.read_text()) if d)
    return docs


# --- kubectl and friends ----------------------------------------------------------------------------


def kubectl(
    *args: str,
    input: str | None = None,
    check: bool = True,
    kubeconfig: Path | None = None,
    timeout: float = 60.0,
) -> str:
    """Runs the locally built kubectl against the e2e cluster (or `kubeconfig`); returns stdout, or with
    check=False stdout followed by stderr (so a refusal's message can be asserted on)."""
    cmd = [str(binary("kubectl")), f"--kubeconfig={kubeconfig or KUBECONFIG}", *args]
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise ClusterError(f"kubectl {shlex.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout if check else done.stdout + done.stderr


def kubectl_json(*args: str, kubeconfig: Path | None = None, timeout: float = 60.0) -> Any:
    """`kubectl ... -o json`, parsed."""
    return json.loads(kubectl(*args, "-o", "json", kubeconfig=kubeconfig, timeout=timeout))


def _yaml_text(manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(manifest, str):
        return manifest
    docs = [manifest] if isinstance(manifest, Mapping) else list(manifest)
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)


def apply_yaml(
    manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    namespace: str | None = None,
    kubeconfig: Path | None = None,
    server_side: bool = False,
) -> str:
    """`kubectl apply -f -` for YAML text, one object, or a list of objects; returns kubectl's output."""
    args = ["apply", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    if server_side:
        args += ["--server-side", "--force-conflicts"]
    return kubectl(*args, input=_yaml_text(manifest), kubeconfig=kubeconfig)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Calls `predicate` until it returns something truthy, and returns that; raises TimeoutError after
    `timeout` s. Exceptions from the predicate count as "not yet" until the deadline, then re-raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            if time.monotonic() >= deadline:
                raise
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {message}")
        time.sleep(interval)


def _admin_cluster_entry(kubeconfig: Path) -> dict[str, Any]:
    view = kubectl_json("config", "view", "--raw", "--minify", "--flatten", kubeconfig=kubeconfig)
    return dict(view["clusters"][0]["cluster"])


def service_account_kubeconfig(
    namespace: str,
    name: str,
    path: Path,
    *,
    duration: str = "24h",
    admin_kubeconfig: Path | None = None,
) -> Path:
    """Writes a kubeconfig at `path` that authenticates as ServiceAccount `namespace/name`, with a token from
    the TokenRequest API (`kubectl create token`); the SA must exist. Returns `path`."""
    admin = admin_kubeconfig or KUBECONFIG
    token = kubectl("create", "token", name, "-n", namespace, f"--duration={duration}", kubeconfig=admin)
    token = token.strip()
    cluster = _admin_cluster_entry(admin)
    ca = cluster.get("certificate-authority-data")
    if not ca and cluster.get("certificate-authority"):
        ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    entry: dict[str, Any] = {"server": cluster["server"]}
    if ca:
        entry["certificate-authority-data"] = ca
    else:
        entry["insecure-skip-tls-verify"] = True
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": user, "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace}},
        ],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclasses.dataclass(frozen=True)
class Kube:
    """kubectl-based helpers bound to one kubeconfig; what the `k8s` fixture hands to tests."""

    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0) -> str:
        return kubectl(*args, input=input, check=check, kubeconfig=self.kubeconfig, timeout=timeout)

    def json(self, *args: str) -> Any:
        return kubectl_json(*args, kubeconfig=self.kubeconfig)

    def apply(
        self, manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]], *, namespace: str | None = None
    ) -> str:
        return apply_yaml(manifest, namespace=namespace, kubeconfig=self.kubeconfig)

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        args = ["get", kind, name, "--ignore-not-found", "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args).strip()
        return json.loads(out) if out else None

    def list(
        self, kind: str, *, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        args = ["get", kind]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if selector:
            args += ["-l", selector]
        return list(self.json(*args)["items"])

    def delete(self, kind: str, name: str, *, namespace: str | None = None, wait: bool = False,
               grace_period: int | None = None) -> None:
        args = ["delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}"]
        if namespace:
            args += ["-n", namespace]
        if grace_period is not None:
            args += [f"--grace-period={grace_period}"]
        self.kubectl(*args)

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, *, interval: float = 0.2,
                 message: str = "condition") -> T:
        return wait_for(predicate, timeout, interval=interval, message=message)

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, *, duration: str = "24h"
    ) -> Path:
        return service_account_kubeconfig(
            namespace, name, path, duration=duration, admin_kubeconfig=self.kubeconfig
        )

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this kubeconfig (imported lazily: the CLI does not need it)."""
        config = importlib.import_module("kubernetes.config")
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def is_ready(pod: Mapping[str, Any] | None) -> bool:
    """True when the object's (a pod's or a node's) Ready condition is True."""
    if not pod:
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# --- fake GPU nodes ---------------------------------------------------------------------------------


def node_name(product: str, index: int) -> str:
    return f"{product.lower()}-{index}"


def node_manifests(pools: Iterable[NodePool]) -> list[dict[str, Any]]:
    """Node objects for kwok to play: GPU capacity and the GPU feature discovery product label."""
    return [_node(pool, i, n) for n, (pool, i) in enumerate((p, i) for p in pools for i in range(p.count))]


def _node(pool: NodePool, index: int, n: int) -> dict[str, Any]:
    name = node_name(pool.product, index)
    # An 8-GPU HGX box has ~2 TiB RAM and 224 vCPU; generous numbers keep CPU and memory from ever being
    # what blocks scheduling here: only GPUs should.
    resources = {"cpu": "224", "memory": "2Ti", "pods": "110", "ephemeral-storage": "30Ti",
                 GPU_RESOURCE: str(pool.gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                PRODUCT_LABEL: pool.product,
                "nvidia.com/gpu.count": str(pool.gpus),
                "nvidia.com/gpu.present": "true",
            },
        },
        # A /24 of pod IPs per node, so kwok hands out distinct, node-local pod IPs.
        "spec": {"podCIDR": f"10.{64 + n // 256}.{n % 256}.0/24"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"10.255.{n // 250}.{n % 250 + 1}"},
                          {"type": "Hostname", "address": name}],
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake",
                         "kubeProxyVersion": "fake"},
            "phase": "Running",
        },
    }


# --- processes --------------------------------------------------------------------------------------


def _cluster_dir() -> Path:
    return KWOK_WORKDIR / "clusters" / CLUSTER_NAME


def component_logs_dir() -> Path:
    """Where kwokctl's control-plane components (and restart_component's restarts) write their logs."""
    return _cluster_dir() / "logs"


def _kwokctl(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KWOK_WORKDIR": str(KWOK_WORKDIR)}
    # Belt and braces: were a binary option ever left unset, kwokctl would fetch it; kubectl has no flag.
    env["KWOK_KUBECTL_BINARY"] = str(binary("kubectl"))
    return subprocess.run(
        [str(binary("kwokctl")), "--name", CLUSTER_NAME, *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )


# Where `make demo` records the processes it starts beside the cluster (the operator, the twin), one
# `<name>.pid` each; its Prometheus records itself in `.e2e/demo/prometheus/prometheus.pid`.
DEMO_PIDS = STATE / "demo" / "pids"


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def prometheus_dirs() -> list[Path]:
    """Every Prometheus workdir under .e2e/ that records a pid (`make cluster-up`'s, the demo's, any other)."""
    return sorted(p.parent for p in STATE.rglob("prometheus.pid"))


def recorded_pids() -> dict[str, int]:
    """Component name -> pid, from kwokctl's pid files and ours under .e2e/ (Prometheus, the demo's processes)."""
    pids: dict[str, int] = {}
    for pid_file in sorted(_cluster_dir().glob("pids/*.pid")):
        if (pid := _read_pid(pid_file)) is not None:
            pids[pid_file.stem] = pid
    for workdir in prometheus_dirs():
        if (pid := _read_pid(workdir / "prometheus.pid")) is not None:
            pids[_prometheus_name(workdir)] = pid
    for pid_file in sorted(DEMO_PIDS.glob("*.pid")):
        if (pid := _read_pid(pid_file)) is not None:
            pids[f"demo-{pid_file.stem}"] = pid
    return pids


def _prometheus_name(workdir: Path) -> str:
    """.e2e/prometheus -> 'prometheus'; .e2e/demo/prometheus -> 'prometheus (demo)'."""
    rel = workdir.relative_to(STATE)
    return "prometheus" if rel.parent == Path(".") else f"prometheus ({rel.parent})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def restart_component(name: str, *, down_for: float = 5.0, timeout: float = 60.0) -> int:
    """Stop one control-plane component (SIGTERM, as a rolling upgrade would) and start it again after
    `down_for` s with the same command line, working directory and environment; returns the new pid, which is
    written to its pid file so that `down` stops it. For fault tests: kwokctl can only stop the whole cluster."""
    pid_file = _cluster_dir() / "pids" / f"{name}.pid"
    pid = int(pid_file.read_text().strip())
    if not _alive(pid) or not _our_process(pid):
        raise RuntimeError(f"{name} (pid {pid}) is not a live process of this cluster")
    proc_dir = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc_dir / "cmdline").read_bytes().split(b"\0") if a]
    cwd = os.readlink(proc_dir / "cwd")
    env = dict(e.decode(errors="replace").split("=", 1) for e in (proc_dir / "environ").read_bytes().split(b"\0")
               if b"=" in e)
    _kill({name: pid})
    time.sleep(down_for)
    with (_cluster_dir() / "logs" / f"{name}.log").open("ab") as log:
        new = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(new.pid))  # kwokctl reads the bare number (a newline makes it lose the process)
    if name == "kube-apiserver":
        wait_for(is_up, timeout, interval=0.5, message="kube-apiserver serving again")
    return new.pid


def _our_process(pid: int) -> bool:
    """A pid from a pid file is ours only if its command line still points into our state directory or
    binary directory: pids are recycled, and a stranger's process must never be signalled."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(STATE) in cmdline or (_bin_dir is not None and str(_bin_dir) in cmdline)


def _component_pids() -> dict[str, int]:
    """The live control-plane processes recorded by kwokctl that are provably ours."""
    return {n: p for n, p in recorded_pids().items()
            if not _beside(n) and _alive(p) and _our_process(p)}


def _beside(name: str) -> bool:
    """A process recorded beside the cluster (Prometheus, the demo's), not a control-plane component."""
    return name.startswith(("prometheus", "demo-"))


def dead_components() -> list[str]:
    """Control-plane components with a pid file whose process is gone (a cluster that answers /readyz can
    still have lost its controller manager: then nothing creates pods)."""
    live = _component_pids()
    return sorted(n for n in recorded_pids() if not _beside(n) and n not in live)


def stop_demo_processes() -> list[str]:
    """Stops what `make demo` recorded in .e2e/demo/pids/ (each only if its command line is ours) and removes the
    pid files; returns 'name (pid N)' for each process stopped."""
    pids = {}
    for pid_file in sorted(DEMO_PIDS.glob("*.pid")):
        pid = _read_pid(pid_file)
        if pid is not None and _alive(pid) and _our_process(pid):
            pids[f"demo {pid_file.stem} (pid {pid})"] = pid
        pid_file.unlink(missing_ok=True)
    return _kill(pids)


def _kill(pids: Mapping[str, int], timeout: float = 10.0) -> list[str]:
    """SIGTERM, then SIGKILL after `timeout` s, each of `pids` still alive; returns the names it stopped."""
    live = {n: p for n, p in pids.items() if _alive(p)}
    for pid in live.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in live.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in live.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return sorted(live)


def is_up(kubeconfig: Path = KUBECONFIG) -> bool:
    """True when the API server answers /readyz with our kubeconfig."""
    if not kubeconfig.exists() or not _cluster_dir().exists():
        return False
    try:
        return kubectl("get", "--raw=/readyz", check=False, kubeconfig=kubeconfig, timeout=5).strip() == "ok"
    except subprocess.TimeoutExpired:
        return False


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What `up` hands back: where to reach the cluster and what it runs on."""

    kubeconfig: Path
    bin_dir: Path
    server: str
    nodes: tuple[NodePool, ...]

    @property
    def kube(self) -> Kube:
        return Kube(self.kubeconfig)


def _log(msg: str) -> None:
    print(f"[e2e.cluster] {msg}", file=sys.stderr, flush=True)


def up(*, nodes: tuple[NodePool, ...] | None = None, timeout: float = 120.0) -> Cluster:
    """Creates the cluster (or reuses a running one), adds the fake GPU nodes and waits for readiness."""
    started = time.monotonic()
    pools = configured_nodes() if nodes is None else nodes
    bin_dir = binaries()
    dead = dead_components()
    if is_up() and not dead:
        _log("cluster already up; reusing it")
    else:
        if _cluster_dir().exists():
            why = f" ({', '.join(dead)} not running)" if dead else ""
            _log(f"removing a stopped or broken cluster left in .e2e/{why}")
            down(stop_prometheus=False)
        STATE.mkdir(parents=True, exist_ok=True)
        KUBECONFIG.unlink(missing_ok=True)
        config_path = STATE / "kwok-config.yaml"
        config_path.write_text(yaml.safe_dump_all(kwok_config_documents(), sort_keys=False))
        args = [
            "create", "cluster", "--runtime", "binary", f"--config={config_path}",
            f"--kube-apiserver-binary={bin_dir / 'kube-apiserver'}",
            f"--kube-controller-manager-binary={bin_dir / 'kube-controller-manager'}",
            f"--kube-scheduler-binary={bin_dir / 'kube-scheduler'}",
            f"--etcd-binary={bin_dir / 'etcd'}",
            f"--kwok-controller-binary={bin_dir / 'kwok'}",
            # RBAC and admission on: the operator's own ServiceAccount must be refused what it isn't granted.
            "--kube-authorization=true", "--kube-admission=true",
            # A /16 of Service IPs: the default /24 holds 253 Services, and the scale benchmark creates 1,000.
            "--extra-args=kube-apiserver=service-cluster-ip-range=10.96.0.0/16",
            # One controller manager and one scheduler, nothing to elect: with leader election on, each exits
            # when the API server is away for a few seconds (a restart), and nothing here would restart them.
            "--extra-args=kube-controller-manager=leader-elect=false",
            "--extra-args=kube-scheduler=leader-elect=false",
            f"--kubeconfig={KUBECONFIG}", f"--wait={int(timeout)}s", f"--timeout={int(timeout)}s",
        ]
        _log("kwokctl " + shlex.join(args))
        done = _kwokctl(*args, timeout=timeout + 60)
        if done.returncode != 0:
            logs = _cluster_dir() / "logs"
            raise ClusterError(
                f"kwokctl create cluster failed (exit {done.returncode}):\n{done.stderr[-4000:]}\n"
                f"component logs: {logs}"
            )
    if pools:
        # Only nodes that are missing: a node's podCIDR cannot change, and a reused cluster keeps its own.
        existing = {n["metadata"]["name"] for n in kubectl_json("get", "nodes")["items"]}
        missing = [n for n in node_manifests(pools) if n["metadata"]["name"] not in existing]
        if missing:
            apply_yaml(missing)
    names = {node_name(p.product, i) for p in pools for i in range(p.count)}
    wait_for(lambda: _ready_nodes() >= names, timeout, message=f"{len(names)} fake GPU nodes Ready")
    # Admission needs the namespace's default ServiceAccount before it accepts a pod; the controller
    # manager creates it a moment after start.
    wait_for(lambda: kubectl("get", "serviceaccount", "default", "-n", "default", check=False).strip(),
             timeout, message="ServiceAccount default/default")
    server = _admin_cluster_entry(KUBECONFIG)["server"]
    _log(f"up in {time.monotonic() - started:.1f} s: {server}, {len(names)} GPU nodes; "
         f"export KUBECONFIG={KUBECONFIG}")
    return Cluster(kubeconfig=KUBECONFIG, bin_dir=bin_dir, server=server, nodes=pools)


def _ready_nodes() -> set[str]:
    items = kubectl_json("get", "nodes")["items"]
    return {n["metadata"]["name"] for n in items if is_ready(n)}


def down(*, stop_prometheus: bool = True) -> list[str]:
    """Deletes the cluster and, with stop_prometheus, stops every process recorded beside it in .e2e/ (each
    Prometheus, what `make demo` started); no recorded process outlives it. Says what it stopped, and returns it
    as 'name (pid N)' strings."""
    stopped: list[str] = []
    if stop_prometheus:
        # The demo's operator first: it would otherwise log errors for every second the API server is gone.
        stopped += stop_demo_processes()
        for workdir in prometheus_dirs():
            pid = _read_pid(workdir / "prometheus.pid")
            if prometheus.stop(workdir):
                stopped.append(f"{_prometheus_name(workdir)} (pid {pid})")
    # Read the pid files before kwokctl deletes them, to check afterwards that it really stopped everything.
    pids = _component_pids()
    if _cluster_dir().exists():
        done = _kwokctl("delete", "cluster", f"--kubeconfig={KUBECONFIG}", timeout=120)
        if done.returncode != 0:
            _log(f"kwokctl delete cluster exited {done.returncode}: {done.stderr.strip()}")
        killed = _kill(pids)
        if killed:
            _log(f"stopped leftover processes: {', '.join(killed)}")
        stopped += [f"{name} (pid {pid})" for name, pid in sorted(pids.items())]
        if _cluster_dir().exists():
            # kwokctl could not clean up after itself; with every process gone the directory is just files.
            shutil.rmtree(_cluster_dir(), ignore_errors=True)
    KUBECONFIG.unlink(missing_ok=True)
    _log(f"stopped {len(stopped)} process(es): {', '.join(stopped)}" if stopped else "nothing was running")
    return stopped


def env_exports() -> dict[str, str]:
    """Shell exports for working with the cluster by hand; PATH gains the built kubectl, kwokctl and friends."""
    return {"KUBECONFIG": shlex.quote(str(KUBECONFIG)), "KWOK_WORKDIR": shlex.quote(str(KWOK_WORKDIR)),
            "PATH": f"{shlex.quote(str(binaries()))}{os.pathsep}\"$PATH\""}


def status() -> dict[str, Any]:
    pids = recorded_pids()
    return {
        "up": is_up(),
        "kubeconfig": str(KUBECONFIG),
        "processes": {name: {"pid": pid, "alive": _alive(pid)} for name, pid in pids.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build binaries if needed, start the cluster, add fake GPU nodes")
    p_up.add_argument("--nodes", help="PRODUCT=COUNTxGPUS,... (default: $INFERTUNE_E2E_NODES or built-in)")
    p_up.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("down", help="stop every process and delete the cluster")
    sub.add_parser("status", help="is it up, and which recorded processes live")
    sub.add_parser("env", help="print shell exports: eval \"$(python -m e2e.cluster env)\"")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            up(nodes=parse_nodes(args.nodes) if args.nodes else None, timeout=args.timeout)
        elif args.cmd == "down":
            down()
        elif args.cmd == "status":
            info = status()
            print(json.dumps(info, indent=2))
            return 0 if info["up"] else 1
        elif args.cmd == "env":
            for key, value in env_exports().items():
                print(f"export {key}={value}")
    except (ClusterError, TimeoutError) as e:
        print(f"e2e.cluster {args.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
