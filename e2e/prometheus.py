"""Test: Prometheus from Debian's package as a local process, with a generated config, for the e2e suite."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("INFERTUNE_E2E_DIR", REPO / ".e2e"))
# The twin's live mode writes one JSON file per model-server pod here (file_sd), labelled with
# `namespace` and `pod`.
DEFAULT_WORKDIR = STATE / "prometheus"
# The shipped scrape job's name (manifests/monitoring): the operator reads engine series from it only.
MODEL_SERVER_JOB = "infertune-model-servers"
# The operator reads DCGM series only from this job (models.DCGM_JOB). The twin serves its GPU's DCGM gauges on
# the model server's own endpoint, so the same targets are scraped twice: each job keeps only its own series, as
# a cluster's dcgm-exporter and model-server jobs would.
DCGM_JOB = "dcgm-exporter"
DCGM_SERIES = "DCGM_.*"
OPERATOR_JOB = "infertune-operator"


class PrometheusError(RuntimeError):
    """Prometheus could not be installed, started or queried."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now; the kernel picks it, so two runs never collide on a fixed one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run([*sudo, "apt-get", *args], env=env, capture_output=True, text=True, check=False)


def install() -> Path:
    """Path of the `prometheus` binary, installing Debian's package first when it is missing."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    # Recommends would pull in node-exporter, which we neither need nor want running.
    cmd = ("install", "-y", "--no-install-recommends", "prometheus")
    done = _apt_get(*cmd)
    if done.returncode != 0:
        # A fresh machine's package lists may be empty or stale; refresh them only when needed.
        update = _apt_get("update")
        if update.returncode != 0:
            raise PrometheusError(f"apt-get update failed:\n{update.stderr[-2000:]}")
        done = _apt_get(*cmd)
    found = shutil.which("prometheus")
    if done.returncode != 0 or not found:
        raise PrometheusError(f"apt-get install prometheus failed:\n{done.stderr[-2000:]}")
    return Path(found)


def promtool() -> Path | None:
    """Path of `promtool`, which Debian's prometheus package ships beside the server, if installed."""
    found = shutil.which("promtool")
    return Path(found) if found else None


def render_config(
    *,
    targets_dir: Path,
    operator_target: str | None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """The Prometheus config: a file_sd job for model-server pods and a static job for the operator."""
    jobs: list[dict[str, Any]] = [
        {
            "job_name": MODEL_SERVER_JOB,
            # No relabel_configs: the target labels `namespace` and `pod` written by the twin reach every
            # series unchanged, which is what the operator's PromQL selects on.
            "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}],
            "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": DCGM_SERIES, "action": "drop"}],
        },
        {
            "job_name": DCGM_JOB,
            "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}],
            "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": DCGM_SERIES, "action": "keep"}],
        },
    ]
    if operator_target:
        jobs.append({"job_name": OPERATOR_JOB, "static_configs": [{"targets": [operator_target]}]})
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                   "scrape_timeout": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": jobs,
    }


@dataclasses.dataclass
class Prometheus:
    """A running Prometheus process started by `start`; `stop` ends it."""

    url: str
    port: int
    pid: int
    workdir: Path
    targets_dir: Path
    config_path: Path
    operator_target: str | None

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def query(self, promql: str) -> list[dict[str, Any]]:
        return query(promql, url=self.url)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, as /api/v1/targets reports them."""
        return list(_get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"])

    def reload(self) -> None:
        reload(self.url)

    def write_target(self, name: str, address: str, labels: dict[str, str]) -> Path:
        """Writes one file_sd target file, atomically so Prometheus never reads half of it."""
        return write_target(self.targets_dir, name, address, labels)

    def stop(self) -> None:
        stop(self.workdir)


def write_target(targets_dir: Path, name: str, address: str, labels: dict[str, str]) -> Path:
    """Writes `<targets_dir>/<name>.json` for one target (file_sd format); returns its path."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    tmp.replace(path)
    return path


def _get_json(url: str, *, timeout: float = 5.0, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body: dict[str, Any] = json.loads(resp.read().decode())
        return body


def query(promql: str, *, url: str) -> list[dict[str, Any]]:
    """Instant query through the HTTP API; returns `data.result` (a list of {metric, value})."""
    qs = urllib.parse.urlencode({"query": promql})
    try:
        body = _get_json(f"{url}/api/v1/query?{qs}")
    except urllib.error.HTTPError as e:
        raise PrometheusError(f"query {promql!r} failed: {e.code} {e.read().decode()[:500]}") from e
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r} failed: {body}")
    return list(body["data"]["result"])


def reload(url: str) -> None:
    """Re-reads the config file (needs --web.enable-lifecycle, which `start` sets)."""
    req = urllib.request.Request(f"{url}/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(url: str, *, timeout: float = 30.0, pid: int | None = None, log: Path | None = None) -> None:
    """Blocks until /-/ready answers 200; fails early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ready(url):
            return
        if pid is not None and not _alive(pid):
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise PrometheusError(f"prometheus (pid {pid}) exited before it was ready:\n{tail}")
        time.sleep(0.1)
    raise PrometheusError(f"prometheus at {url} not ready after {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _pid_file(workdir: Path) -> Path:
    return workdir / "prometheus.pid"


def _is_our_prometheus(pid: int, workdir: Path) -> bool:
    """Only a process whose command line names our config is ours to stop; a recycled pid is not."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "prometheus" in cmdline and str(workdir / "prometheus.yml") in cmdline


def stop(workdir: Path = DEFAULT_WORKDIR, *, timeout: float = 10.0) -> bool:
    """Stops the Prometheus whose pid is recorded in `workdir`; True if one was running."""
    pid_file = _pid_file(workdir)
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    stopped = False
    if pid and _alive(pid) and _is_our_prometheus(pid, workdir):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def start(
    *,
    workdir: Path = DEFAULT_WORKDIR,
    targets_dir: Path | None = None,
    operator_target: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: tuple[Path, ...] = (),
    port: int | None = None,
    timeout: float = 30.0,
) -> Prometheus:
    """Starts Prometheus on a free localhost port (or `port`) and waits until it is ready.

    `targets_dir` defaults to `<workdir>/targets`; `operator_target` is "host:port" of the operator's
    /metrics, or None for no operator job. A Prometheus already recorded in `workdir` is stopped first.
    """
    binary = install()
    workdir.mkdir(parents=True, exist_ok=True)
    stop(workdir)
    targets_dir = targets_dir or workdir / "targets"
    targets_dir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config = render_config(
        targets_dir=targets_dir, operator_target=operator_target, scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval, rule_files=rule_files,
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    data = workdir / "data"
    # Each start begins with an empty TSDB, so one run's series never leak into the next run's queries.
    shutil.rmtree(data, ignore_errors=True)
    last_error: Exception | None = None
    # A port picked free can be taken before Prometheus binds it; a second pick fixes that.
    for _ in range(3):
        chosen = port or free_port()
        url = f"http://127.0.0.1:{chosen}"
        log_path = workdir / "prometheus.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={data}",
                    "--storage.tsdb.retention.time=6h",
                    f"--web.listen-address=127.0.0.1:{chosen}",
                    f"--web.external-url={url}",
                    "--web.enable-lifecycle",
                    # Prometheus has no telemetry or update check; nothing else here reaches outside.
                    "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        _pid_file(workdir).write_text(f"{proc.pid}\n")
        try:
            wait_ready(url, timeout=timeout, pid=proc.pid, log=log_path)
        except PrometheusError as e:
            last_error = e
            stop(workdir)
            if port is not None or "address already in use" not in str(e):
                raise
            continue
        return Prometheus(
            url=url, port=chosen, pid=proc.pid, workdir=workdir, targets_dir=targets_dir,
            config_path=config_path, operator_target=operator_target,
        )
    raise PrometheusError(f"prometheus did not start: {last_error}")


def wait_for_series(prom: Prometheus, promql: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Polls `promql` until it returns at least one series; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        result = prom.query(promql)
        if result:
            return result
        if time.monotonic() > deadline:
            raise PrometheusError(f"no series for {promql!r} in {timeout:.0f} s; targets: {prom.targets()}")
        time.sleep(0.25)
