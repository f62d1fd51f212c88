"""Pure: cost per million output tokens from a GPU-hour price, GPUs per replica, throughput and utilisation."""

from __future__ import annotations

import dataclasses

SECONDS_PER_HOUR = 3600.0
MILLION = 1e6


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """The formula's inputs and result, so a report can show the worked line."""

    gpu_hourly: float  # price of one GPU-hour
    gpus: int  # GPUs per replica (all of them are paid for)
    tokens_per_second: float  # output tokens/s of one replica while it works
    utilization: float  # share of paid hours that produce at that rate, (0, 1]

    @property
    def hourly(self) -> float:
        return self.gpu_hourly * self.gpus

    @property
    def tokens_per_hour(self) -> float:
        return self.tokens_per_second * SECONDS_PER_HOUR * self.utilization

    @property
    def per_million(self) -> float:
        return self.hourly / self.tokens_per_hour * MILLION

    def worked(self) -> str:
        """'$2.50/h x 2 GPUs = $5.00/h; 900 tok/s x 3,600 s x 0.60 = 1.944 M tok/h; $5.00 / 1.944 M = $2.572 per 1M'."""
        millions = number(self.tokens_per_hour / MILLION)
        return (f"${self.gpu_hourly:,.2f}/h x {self.gpus} GPU{'s' if self.gpus != 1 else ''} = ${self.hourly:,.2f}/h; "
                f"{number(self.tokens_per_second)} tok/s x 3,600 s x {self.utilization:.2f} = {millions} M tok/h; "
                f"${self.hourly:,.2f} / {millions} M = ${number(self.per_million)} per 1M")


def number(x: float) -> str:
    """Readable in a worked line: 20,000 / 814.4 / 2.932 / 0.3858."""
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:,.4g}"


FORMULA = "$ per 1M output tokens = GPU-hour price x GPUs / (output tok/s x 3,600 s x utilisation) x 1,000,000"


def per_million_output_tokens(
    gpu_hourly: float, tokens_per_second: float, *, gpus: int = 1, utilization: float = 1.0
) -> Cost:
    """The article's formula, every GPU of a replica paid for, idle time charged to the tokens produced.

    $2.50 per GPU-hour, one GPU, 1,800 tok/s: $2.50 / (1,800 x 3,600 = 6.48 M tokens) = $0.39 per million;
    the same at 60% utilisation: $2.50 / 3.888 M = $0.64 per million. Raises ValueError naming the bad input.
    """
    if not gpu_hourly > 0:
        raise ValueError(f"gpu_hourly: must be greater than zero, got {gpu_hourly!r}")
    if not tokens_per_second > 0:
        raise ValueError(f"tokens_per_second: must be greater than zero, got {tokens_per_second!r}")
    if gpus < 1:
        raise ValueError(f"gpus: must be at least 1, got {gpus!r}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization: must lie in (0, 1], got {utilization!r}")
    return Cost(gpu_hourly=gpu_hourly, gpus=gpus, tokens_per_second=tokens_per_second, utilization=utilization)
