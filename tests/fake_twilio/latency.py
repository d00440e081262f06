"""How long the fake Twilio takes to answer a send: fixed, or like the real API.

Twilio's REST API answers most sends in 150-300 ms, has a tail past a second, and now and then
stalls for seconds. ``Latency.realistic()`` is a log-normal distribution fitted to a median and a
99th percentile, plus rare stalls; every send benchmark uses it unless told otherwise.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

Z_99 = 2.3263478740408408  # the standard normal's 99th percentile

REALISTIC_MEDIAN = 0.25
REALISTIC_P99_RATIO = 6.0  # p99 / median: 250 ms -> 1.5 s
REALISTIC_STALL_RATE = 0.001
REALISTIC_STALL_SECONDS = 4.0


@dataclass(frozen=True)
class Latency:
    """A latency model, in seconds. ``p99 == median`` means a fixed latency."""

    median: float = 0.0
    p99: float = 0.0
    stall_rate: float = 0.0  # share of requests that stall
    stall_seconds: float = 0.0  # how long a stall lasts

    def __post_init__(self) -> None:
        if self.median < 0 or self.stall_rate < 0 or self.stall_seconds < 0 or self.stall_rate > 1:
            raise ValueError("latency figures must be positive (stall_rate a share)")
        if self.p99 < self.median:
            raise ValueError("the latency's p99 cannot be below its median")

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        return cls(median=seconds, p99=seconds)

    @classmethod
    def realistic(cls, median: float = REALISTIC_MEDIAN, p99: float | None = None) -> Latency:
        return cls(
            median=median,
            p99=median * REALISTIC_P99_RATIO if p99 is None else p99,
            stall_rate=REALISTIC_STALL_RATE,
            stall_seconds=REALISTIC_STALL_SECONDS,
        )

    @property
    def sigma(self) -> float:
        return math.log(self.p99 / self.median) / Z_99 if self.median and self.p99 > self.median else 0.0

    @property
    def mean(self) -> float:
        """The expected latency (what Little's law needs): the log-normal's mean plus the stalls' share."""
        body = self.median * math.exp(self.sigma**2 / 2)
        return (1 - self.stall_rate) * body + self.stall_rate * self.stall_seconds

    def sample(self, rng: random.Random) -> float:
        if self.stall_rate and rng.random() < self.stall_rate:
            return self.stall_seconds
        if not self.median:
            return 0.0
        return self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)) if self.sigma else self.median

    def describe(self) -> dict:
        kind = "lognormal" if self.sigma else "fixed"
        figures = {f"{name}_ms": round(value * 1000) for name, value in asdict(self).items() if name != "stall_rate"}
        return {"model": kind, **figures, "stall_rate": self.stall_rate, "mean_ms": round(self.mean * 1000)}


def arguments_add(parser, *, realistic: bool = True) -> None:
    """The latency options of the fake server's and the benchmarks' command lines."""
    median = REALISTIC_MEDIAN if realistic else 0.0
    parser.add_argument("--latency", type=float, default=median, help=f"median seconds per send (default {median})")
    parser.add_argument(
        "--latency-p99", type=float, help=f"99th percentile, seconds (default {REALISTIC_P99_RATIO:g} x the median)"
    )
    parser.add_argument("--stall-rate", type=float, help=f"share of sends that stall (default {REALISTIC_STALL_RATE})")
    parser.add_argument("--stall-seconds", type=float, default=REALISTIC_STALL_SECONDS)
    parser.add_argument("--fixed-latency", action="store_true", help="every send takes exactly --latency")


def from_arguments(args) -> Latency:
    if args.fixed_latency or not args.latency:
        return Latency.fixed(args.latency)
    stall_rate = REALISTIC_STALL_RATE if args.stall_rate is None else args.stall_rate
    p99 = args.latency * REALISTIC_P99_RATIO if args.latency_p99 is None else args.latency_p99
    return Latency(median=args.latency, p99=p99, stall_rate=stall_rate, stall_seconds=args.stall_seconds)
