"""Pure: what the core sees of the world (cluster facts, metrics) and what it decides, as frozen values."""

from __future__ import annotations

from typing import Literal

import pydantic

from infertune import models


class PodFacts(models.Base):
    """One pod of a revision, as the API server reports it."""

    name: str
    revision: str
    ready: bool
    serving: bool
    created: float = pydantic.Field(description="creationTimestamp, epoch seconds")
    ready_since: float | None = pydantic.Field(default=None, description="Ready condition's transition, epoch seconds")
    deleting: bool = False
    node: str | None = None
    restarts: int = 0
    failed: bool = False
    unserved_since: float | None = pydantic.Field(
        default=None, description="When the operator last removed its serving label, epoch seconds"
    )
    deletion_cost: int = 0


class RevisionFacts(models.Base):
    """One owned Deployment."""

    name: str
    revision: str
    knobs: models.Knobs | None
    replicas: int
    ready_replicas: int
    created: float


class PodMetrics(models.Base):
    """Signals of one pod over the observation window; None where the engine did not report it."""

    ttft_p: float | None = None  # seconds, at the SLO percentile
    itl_p: float | None = None  # per output token
    tpot_p: float | None = None  # per request (its mean ITL), at the SLO percentile
    ttft_mean: float | None = None
    itl_mean: float | None = None
    running: float | None = None
    # The share of the window with a request running (the engine stepping): tokens are made only then.
    busy: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    preemptions_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    output_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    prefix_hit_rate: float | None = None
    mbu: float | None = None
    slo_attainment: float | None = None
    # What the histogram buckets around the objectives allow (the twin reads them through the same parser).
    slo_attainment_low: float | None = None
    slo_attainment_high: float | None = None
    # The least the per-request ITL percentile (tpot_p, else itl_p) can be: the edge below its bucket.
    itl_floor: float | None = None
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    # Prompts per second by length, (tokens, rate) points from the prompt-length histogram (prometheus.length_points).
    prompt_lengths: tuple[tuple[float, float], ...] = ()
    in_flight: float | None = None  # running + waiting right now (drain detection)
    # Whether requests_per_s counts requests as they start (their first token: the TTFT histogram's count), so a
    # running request is already in it, or as they end (engines without TTFT: the end-to-end histogram's).
    counted_at_start: bool = False


class Metrics(models.Base):
    """Per-pod signals for one resource, plus why any are missing."""

    pods: dict[str, PodMetrics] = pydantic.Field(default_factory=dict)
    available: bool = True
    reason: str = "MetricsFound"
    message: str = ""
    ignored: tuple[str, ...] = ()  # garbage dropped from owned pods' series, "<pod> <signal>: <why>"
    mbu_source: Literal["dcgm", "estimated"] | None = None
    estimated: tuple[str, ...] = ()
    grace: float = 60.0  # seconds a newly Ready pod may lack series (scrape and rate windows fill up)
    window: float = 60.0  # seconds the rates are measured over (their Poisson noise shrinks with it)
    # Signal ("ttft", "tpot", "itl") -> the finite `le` edges its histogram has on this resource's pods: what the
    # buckets can resolve (resolution.check); absent ones are read as the engine's published defaults.
    edges: dict[str, tuple[float, ...]] = pydantic.Field(default_factory=dict)


class Observation(models.Base):
    """Everything decide() needs about one InferenceDeployment."""

    name: str
    namespace: str
    generation: int
    spec: models.InferenceDeploymentSpec
    status: models.InferenceDeploymentStatus
    revisions: tuple[RevisionFacts, ...] = ()
    pods: tuple[PodFacts, ...] = ()
    metrics: Metrics | None = None


class RevisionPlan(models.Base):
    """A revision that should exist, with its Deployment's replica count."""

    revision: str
    knobs: models.Knobs
    replicas: int


class PodPatch(models.Base):
    """A label or annotation change on one pod (serving label; deletion cost to steer scale-down)."""

    name: str
    serving: bool | None = None
    unserved_since: str | None = None  # set with serving=False: when draining started
    deletion_cost: int | None = None


class Event(models.Base):
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class Decision(models.Base):
    """The desired state: revisions to keep (others are deleted), pod patches, the new status, events."""

    revisions: tuple[RevisionPlan, ...]
    pod_patches: tuple[PodPatch, ...] = ()
    status: models.InferenceDeploymentStatus
    events: tuple[Event, ...] = ()
