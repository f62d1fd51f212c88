"""Bench: `make demo` — a real control plane, Prometheus, the twin, the operator and a sample, told as a story.

The sample starts at the engine's defaults on one replica under a load they cannot serve within the SLO; the
operator measures it, picks the knee and sizes the replicas, and the demo prints what that bought: a before/after
summary, one line per decision with its reason, and a table reprinted only when the state changes.

However it ends (Ctrl-C, SIGTERM, SIGHUP, a closed stdout as in `make demo | head`, an exception) every process it
started is stopped: the operator and the twin run in their own process groups and die with the demo even if it is
killed outright; the cleanup never writes to the terminal in a way that can fail. `make cluster-down` stops whatever
a demo killed with SIGKILL left (its pids are recorded under .e2e/demo/).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import yaml

from e2e import cluster as e2e_cluster
from e2e import conftest
from e2e import prometheus as e2e_prometheus

REPO = Path(__file__).resolve().parents[1]
DEMO_NAMESPACE = "demo"
WORKDIR = e2e_cluster.STATE / "demo"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The load: chat requests of 1,000 tokens in and 200 out (cv 0.5). 6 req/s is more than one L40S at vLLM's
# default max-num-seqs (256) serves within the sample's 50 ms ITL objective: the twin measures 15% of requests
# within it on one replica (`infertune simulate` of the same load, static knobs), while the knee (about 60, FP8 KV)
# on two replicas keeps all of them within.
DEFAULT_RATE = 6.0
CONDITION_TYPES = ("Ready", "ObjectivesResolvable", "MetricsAvailable", "SLOMet", "Tuned", "Progressing", "Degraded")


class Output:
    """The demo's voice: stdout and .e2e/demo/demo.log. A closed stdout (a `head` that has read enough, a `tee`
    killed by Ctrl-C) never raises: it is remembered, fd 1 (and fd 2 when it is the same pipe) is pointed at
    /dev/null so that nothing later (a library's print, Python's flush at exit) fails on it either, and the demo
    stops, as nobody is watching."""

    def __init__(self, log: Path, stream: TextIO | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("a", buffering=1)
        self.stream = stream or sys.stdout
        self.closed = False

    def say(self, text: str = "") -> None:
        with contextlib.suppress(OSError, ValueError):
            self.log.write(text + "\n")
        if self.closed:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # BrokenPipeError is an OSError; ValueError: the stream was closed
            self.closed = True
            _silence_closed_stdout()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.log.close()


def _silence_closed_stdout() -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        same = False
        with contextlib.suppress(OSError):
            out, err = os.fstat(1), os.fstat(2)
            same = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
        os.dup2(devnull, 1)
        if same:
            os.dup2(devnull, 2)
        os.close(devnull)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the demo dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclasses.dataclass
class Child:
    """A process the demo started in its own process group (so Ctrl-C reaches it only through the demo, which
    stops it in order), with its pid recorded for `make cluster-down`."""

    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM to its group, SIGKILL after `timeout` s; True if it was still running."""
        if self.process.poll() is not None:
            (e2e_cluster.DEMO_PIDS / f"{self.name}.pid").unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        (e2e_cluster.DEMO_PIDS / f"{self.name}.pid").unlink(missing_ok=True)
        return True


def spawn(name: str, args: list[str], log: Path) -> Child:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO / "operator")}, start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the demo is single-threaded
        )
    e2e_cluster.DEMO_PIDS.mkdir(parents=True, exist_ok=True)
    (e2e_cluster.DEMO_PIDS / f"{name}.pid").write_text(str(process.pid))
    return Child(name, process)


def sample(path: Path, ready_delay: str) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(path.read_text()))
    body["metadata"]["namespace"] = DEMO_NAMESPACE
    template = body["spec"].setdefault("template", {})
    # kwok plays the GPU node: the pod turns Ready after this long, like a model loading.
    template.setdefault("annotations", {})[e2e_cluster.READY_DELAY_ANNOTATION] = ready_delay
    return body


def _load(port: int, name: str, rate: float) -> None:
    """Ask the twin for Poisson traffic on the sample's Service."""
    body = json.dumps({"rate": rate, "input": {"mean": 1000, "cv": 0.5}, "output": {"mean": 200, "cv": 0.5}})
    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/load/{DEMO_NAMESPACE}/{name}",
                                             data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- what the resource's status says, in the demo's words ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """One operating point as measured: the numbers of the before/after summary."""

    knobs: str  # "256 / default"
    attained: float | None
    ttft_ms: float | None
    itl_ms: float | None
    replicas: int
    gpus: int | None
    cost: float | None
    slo_met: str  # the SLOMet condition's status

    def row(self, label: str) -> str:
        return (f"   {label:<7}{self.knobs:<16}{_pct(self.attained):>10}{_num(self.ttft_ms, ' ms', 0):>10}"
                f"{_num(self.itl_ms, ' ms', 1):>10}{self.replicas:>9}{_num(self.gpus, '', 0):>6}"
                f"{_num(self.cost, '', 2):>7}   SLOMet {self.slo_met}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, unit: str, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def gpus(spec: dict[str, Any], status: dict[str, Any]) -> int | None:
    """GPUs held now: the hourly cost over the GPU price (every pod that exists holds its GPUs, Ready or not:
    $3.30/h at $1.10 per GPU-hour is 3 GPUs), else Ready pods x GPUs per replica."""
    accelerator = spec.get("accelerator") or {}
    hourly, price = (status.get("cost") or {}).get("hourly"), accelerator.get("hourlyCost")
    if hourly is not None and price:
        return round(float(hourly) / float(price))
    ready = (status.get("replicas") or {}).get("ready")
    return None if ready is None else int(ready) * int(accelerator.get("count", 1))


def point(spec: dict[str, Any], status: dict[str, Any]) -> Point:
    config, observed = status.get("config") or {}, status.get("observed") or {}
    return Point(
        knobs=f"{config.get('maxBatchSize', '?')} / {config.get('kvCacheDtype', '?')}",
        attained=observed.get("sloAttainment"), ttft_ms=observed.get("ttftP95Ms"), itl_ms=observed.get("itlP95Ms"),
        replicas=int((status.get("replicas") or {}).get("serving") or 0), gpus=gpus(spec, status),
        cost=(status.get("cost") or {}).get("costPerMillionOutputTokens"),
        slo_met=condition(status, "SLOMet").get("status", "Unknown"),
    )


def freshness(status: dict[str, Any], window: float) -> str:
    """'' when the measured columns are the serving revision's own; else what they are instead."""
    config, observed = status.get("config") or {}, status.get("observed") or {}
    measured = observed.get("revisions") or []
    if not measured:
        return f"waiting for data: no serving pod has a whole {window:.0f} s metrics window yet"
    if measured != [config.get("revision")]:
        return (f"from the previous revision ({', '.join(measured)}): revision {config.get('revision')}'s pods are "
                f"filling their first {window:.0f} s window")
    return ""


def table(spec: dict[str, Any], status: dict[str, Any], window: float) -> list[str]:
    config, target = status.get("config") or {}, status.get("target")
    replicas = status.get("replicas") or {}
    knee = status.get("knee") or {}
    p = point(spec, status)
    stale = freshness(status, window)
    mark = "" if not stale else ("?" if stale.startswith("waiting") else "*")

    def measured(text: str) -> str:
        return "waiting" if mark == "?" else f"{text}{mark}"

    lines = [
        f"   {'REVISION':<12}{'BATCH/KV':<16}{'SERVING':>8}{'STANDBY':>8}{'GPUS':>6}{'TTFT-P95':>11}{'ITL-P95':>11}"
        f"{'WITHIN':>9}{'$/1M':>8}  {'KNEE':<14}{'SLO':<8}TUNED",
        f"   {config.get('revision', '-'):<12}{p.knobs:<16}{replicas.get('display', '-'):>8}"
        f"{replicas.get('standby', 0):>8}{_num(p.gpus, '', 0):>6}{measured(_num(p.ttft_ms, ' ms', 0)):>11}"
        f"{measured(_num(p.itl_ms, ' ms', 1)):>11}{measured(_pct(p.attained)):>9}{measured(_num(p.cost, '', 2)):>8}"
        f"  {str(knee.get('maxBatchSize', '-')) + ' / ' + str(knee.get('kvCacheDtype', '-')):<14}{p.slo_met:<8}"
        f"{condition(status, 'Tuned').get('status', '-')}",
    ]
    if target:
        lines.append(f"   rolling out revision {target.get('revision')} ({target.get('maxBatchSize')} / "
                     f"{target.get('kvCacheDtype')}): the old revision serves until its pods are Ready")
    if stale:
        lines.append(f"   {mark} {stale}")
    return lines


def state_key(status: dict[str, Any]) -> tuple[Any, ...]:
    """What must change for the table to be reprinted: revisions, replica counts, conditions' status and reason,
    which revision the numbers come from, decisions. Not latency, attainment or cost jitter, nor the knee's
    wobble while the serving knobs stay."""
    config, target, replicas = status.get("config") or {}, status.get("target") or {}, status.get("replicas") or {}
    conds = tuple((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or [])
    return (config.get("revision"), target.get("revision"), replicas.get("desired"), replicas.get("serving"),
            replicas.get("standby"), replicas.get("ready"), conds,
            tuple((status.get("observed") or {}).get("revisions") or ()), len(status.get("decisions") or ()))


@dataclasses.dataclass
class Story:
    """Follows the resource's status and says what changed: decisions, condition transitions, the table, and the
    before/after summary."""

    out: Output
    spec: dict[str, Any]
    window: float
    started: float  # monotonic time the load started
    seen: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    conditions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    key: tuple[Any, ...] | None = None
    first_revision: str | None = None
    before: Point | None = None
    after: Point | None = None
    after_revision: str | None = None
    said: tuple[Any, ...] | None = None
    met_after: float | None = None  # seconds from the load's start to SLOMet True on a tuned revision

    def stamp(self) -> str:
        return f"{time.strftime('%H:%M:%S')} +{time.monotonic() - self.started:5.0f}s"

    def follow(self, status: dict[str, Any]) -> None:
        # What was measured first, then what was decided on it (both may come from the same cycle).
        for kind in CONDITION_TYPES:
            c = condition(status, kind)
            if not c:
                continue
            now = (c.get("status", ""), c.get("reason", ""))
            if self.conditions.get(kind) != now:
                self.conditions[kind] = now
                self.out.say(f"{self.stamp()}  {kind} {now[0]} ({now[1]}): {c.get('message', '')}")
        for record in status.get("decisions") or []:
            ident = (record.get("time", ""), record.get("kind", ""), record.get("action", ""))
            if ident in self.seen:
                continue
            self.seen.add(ident)
            self.out.say(f"{self.stamp()}  decision  {record.get('kind')}: {record.get('action')}")
            self.out.say(f"{'':17}because {record.get('reason')}")
        key = state_key(status)
        if key != self.key:
            self.key = key
            for line in table(self.spec, status, self.window):
                self.out.say(line)
        self._summary(status)

    def _summary(self, status: dict[str, Any]) -> None:
        config = status.get("config") or {}
        revision = config.get("revision")
        if revision and self.first_revision is None:
            self.first_revision = revision
        measured = (status.get("observed") or {}).get("revisions") or []
        verdict = condition(status, "SLOMet")
        if measured != [revision] or verdict.get("reason") == "NoMeasurement" or not verdict:
            return
        now = point(self.spec, status)
        if revision == self.first_revision:
            if status.get("target") and self.before is not None:
                return  # leaving the defaults: new pods already count in GPUs and cost; the before is taken
            self.before = now
        else:
            self.after, self.after_revision = now, revision
            if now.slo_met == "True" and self.met_after is None:
                self.met_after = time.monotonic() - self.started
        # Said again only when a verdict or the revision measured changes, not on every new number.
        said = (self.before and self.before.slo_met, self.after and (self.after.slo_met, self.after.replicas),
                self.after_revision)
        if said == self.said:
            return
        self.said = said
        slo = self.spec.get("slo") or {}
        self.out.say(f"== before/after: p{slo.get('percentile', 95)} of requests within TTFT {slo.get('ttft')} "
                     f"and ITL {slo.get('itl')}")
        self.out.say(f"   {'':<7}{'BATCH/KV':<16}{'WITHIN':>10}{'TTFT-P95':>10}{'ITL-P95':>10}{'REPLICAS':>9}"
                     f"{'GPUS':>6}{'$/1M':>7}")
        if self.before is not None:
            self.out.say(self.before.row("before"))
        if self.after is not None:
            self.out.say(self.after.row("after"))
        if self.before is not None and self.after is not None:
            b, a = self.before, self.after
            self.out.say(
                f"before/after: {_pct(b.attained)} -> {_pct(a.attained)} of requests within the SLO (SLOMet "
                f"{b.slo_met} -> {a.slo_met}); replicas {b.replicas} -> {a.replicas}, GPUs {_num(b.gpus, '', 0)} -> "
                f"{_num(a.gpus, '', 0)}, ${_num(b.cost, '', 2)} -> ${_num(a.cost, '', 2)} per 1M output tokens")
        if self.met_after is not None and self.after is not None and self.after.slo_met == "True":
            self.out.say(f"== SLOMet True on the tuned revision {self.met_after:.0f} s after the load started")


# --- the run ----------------------------------------------------------------------------------------------------


class Stop(Exception):
    """Raised by the loop when a signal or a closed stdout asks the demo to end."""


def install_signals(on_signal: Callable[[int], None]) -> None:
    def handler(signum: int, _frame: object) -> None:
        on_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=REPO / "manifests/samples/vllm-llama-3.1-8b-l40s.yaml")
    parser.add_argument("--ready-delay", default="20s", help="emulated model load time per pod (default 20s)")
    parser.add_argument("--interval", default="2", help="operator reconcile interval in seconds (default 2)")
    parser.add_argument("--metrics-window", type=float, default=60.0,
                        help="seconds the operator measures rates and percentiles over (default 60)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help=f"requests per second the twin sends (default {DEFAULT_RATE:g})")
    parser.add_argument("--until-slo-met", action="store_true",
                        help="stop once a tuned revision meets the SLO (SLOMet True) and the summary is printed")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="give up (exit 1) after this many seconds of load; 0: run until stopped")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.metrics_window <= 0 or args.timeout < 0:
        parser.error("--rate and --metrics-window must be positive, --timeout at least 0")

    out = Output(WORKDIR / "demo.log")
    stop_reason: list[str] = []

    def on_signal(signum: int) -> None:
        if not stop_reason:
            stop_reason.append(signal.Signals(signum).name)

    install_signals(on_signal)
    children: list[Child] = []
    prom: e2e_prometheus.Prometheus | None = None
    was_up: bool | None = None
    k8s: e2e_cluster.Kube | None = None
    code = 1

    def check() -> None:
        if out.closed and not stop_reason:
            stop_reason.append("stdout closed")
        if stop_reason:
            raise Stop(stop_reason[0])

    try:
        out.say(f"== demo log: {WORKDIR / 'demo.log'}")
        out.say("== control plane (built from the Go module proxy on first use, cached afterwards)")
        was_up = e2e_cluster.is_up()
        info = e2e_cluster.up()
        k8s = info.kube
        check()
        port = e2e_prometheus.free_port()
        out.say("== Prometheus")
        prom = e2e_prometheus.start(workdir=WORKDIR / "prometheus", operator_target=f"127.0.0.1:{port}")
        out.say(f"   {prom.url}")
        check()
        twin_port = e2e_prometheus.free_port()
        out.say(f"== the digital twin playing the model servers (127.0.0.1:{twin_port}, log: {WORKDIR / 'twin.log'})")
        children.append(spawn("twin", [
            sys.executable, "-m", "infertune.sim.live", "--kubeconfig", str(info.kubeconfig),
            "--port", str(twin_port), "--targets-dir", str(prom.targets_dir)], WORKDIR / "twin.log"))
        out.say("== CRD and RBAC from manifests/")
        conftest.install_operator_manifests(k8s)
        kubeconfig = k8s.service_account_kubeconfig(conftest.OPERATOR_NAMESPACE, conftest.OPERATOR_SA,
                                                    WORKDIR / "operator.kubeconfig")
        log = WORKDIR / "operator.log"
        out.say(f"== the operator, as ServiceAccount {conftest.OPERATOR_NAMESPACE}/{conftest.OPERATOR_SA} "
                f"(log: {log})")
        operator = spawn("operator", [
            sys.executable, "-m", "infertune.cli", "run", "--kubeconfig", str(kubeconfig),
            "--interval", args.interval, "--metrics-window", f"{args.metrics_window:g}",
            "--prometheus-url", prom.url, "--metrics-port", str(port)], log)
        children.append(operator)
        check()
        k8s.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
        body = sample(args.sample, args.ready_delay)
        name = body["metadata"]["name"]
        out.say(f"== {os.path.relpath(args.sample, REPO)} as {DEMO_NAMESPACE}/{name} "
                f"(model load: {args.ready_delay}), SLO {body['spec']['slo']}")
        k8s.apply(body)
        _load(twin_port, name, args.rate)
        out.say(f"   {args.rate:g} requests/s of chat traffic (1,000 tokens in, 200 out) on its Service, from now")
        out.say(f"   watch it yourself: KUBECONFIG={info.kubeconfig} kubectl get infd -n {DEMO_NAMESPACE} -w")
        out.say("   (BATCH/KV: max batch size / KV cache dtype; ? waiting for data; * from the previous revision)")
        story = Story(out=out, spec=body["spec"], window=args.metrics_window, started=time.monotonic())
        while True:
            check()
            if operator.process.poll() is not None:
                out.say(f"the operator exited with {operator.process.returncode}; see {log}")
                return 1
            try:
                obj = k8s.get("inferencedeployment", name, namespace=DEMO_NAMESPACE) or {}
            except (e2e_cluster.ClusterError, subprocess.SubprocessError, json.JSONDecodeError) as e:
                check()  # a Ctrl-C from the terminal also kills the kubectl it was running
                out.say(f"{story.stamp()}  (could not read the resource: {str(e)[:200]})")
                obj = {}
            story.follow(obj.get("status") or {})
            if args.until_slo_met and story.met_after is not None:
                code = 0
                break
            if args.timeout and time.monotonic() - story.started > args.timeout:
                out.say(f"== no tuned revision met the SLO within {args.timeout:.0f} s")
                break
            for _ in range(10):  # 2 s, in steps that notice a signal
                check()
                time.sleep(0.2)
    except Stop as why:
        code = 0
        out.say(f"== {why}")
    except BrokenPipeError:  # a library's print (the cluster's progress on stderr) met the closed pipe first
        code = 0
        out.closed = True
        _silence_closed_stdout()
        stop_reason.append("stdout closed")
        out.say("== stdout closed")
    except Exception as e:
        if stop_reason:  # a Ctrl-C from the terminal also kills the kwokctl or kubectl the demo was waiting on
            code = 0
            out.say(f"== {stop_reason[0]} ({type(e).__name__} on the way out: {str(e)[:200]})")
        else:
            out.say(f"== the demo failed: {type(e).__name__}: {e}")
            raise
    finally:
        cleanup(out, children, prom=prom, was_up=was_up, k8s=k8s, stop_reason=stop_reason)
    return code


def cleanup(out: Output, children: list[Child], *, prom: e2e_prometheus.Prometheus | None, was_up: bool | None,
            k8s: e2e_cluster.Kube | None, stop_reason: list[str]) -> None:
    """Stops everything the demo started, each step on its own: one that fails does not skip the next. A second
    Ctrl-C while this runs is noted, not obeyed: an interrupted cleanup is what left processes running."""
    install_signals(lambda signum: out.say(f"   ({signal.Signals(signum).name}: still stopping, one moment)"))
    out.say("== shutting down")
    steps: list[tuple[str, Callable[[], object]]] = []
    # The operator first (it would log errors for every second the API server is gone), then the twin.
    for child in reversed(children):
        steps.append((child.name, lambda child=child: child.stop() and out.say(f"   stopped the {child.name} "
                                                                               f"(pid {child.process.pid})")))
    if prom is not None:
        steps.append(("prometheus", lambda: prom.stop() or out.say(f"   stopped Prometheus (pid {prom.pid})")))
    if was_up is False:
        steps.append(("cluster", lambda: e2e_cluster.down() and out.say("   deleted the cluster")))
    elif was_up and k8s is not None:
        steps.append(("namespace", lambda: k8s.kubectl("delete", "namespace", DEMO_NAMESPACE, "--wait=false",
                                                       check=False)
                      and out.say(f"   deleted namespace {DEMO_NAMESPACE}; the cluster you started stays up")))
    for what, step in steps:
        try:
            step()
        except Exception as e:  # every step runs, whatever the one before did
            out.say(f"   stopping {what} failed: {type(e).__name__}: {e}")
    out.say(f"== stopped at {datetime.datetime.now().strftime('%H:%M:%S')}"
            + (f" ({stop_reason[0]})" if stop_reason else ""))
    out.close()


if __name__ == "__main__":
    sys.exit(main())
