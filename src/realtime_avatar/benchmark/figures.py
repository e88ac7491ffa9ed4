"""What a benchmark group measures and hands back: ``Figure``, its ``Target``, the context.

A group is a function ``(BenchContext) -> list[Figure]``. It warms up first and discards
that, then takes the samples; ``Figure.summary`` and ``Figure.met`` do the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..avatars.registry import Avatar
    from ..settings import Settings

Statistic = Literal["min", "p50", "p95", "max"]
Comparison = Literal["<=", ">=", "<", ">"]
# (label, done, total): total None means "no known end"; the runner shows a spinner then.
ProgressFn = Callable[[str, int, int | None], None]

STATISTICS: tuple[Statistic, ...] = ("min", "p50", "p95", "max")
SYMBOLS: dict[str, str] = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def percentile(sorted_samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default does."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = (len(sorted_samples) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_samples) - 1)
    return sorted_samples[low] + (sorted_samples[high] - sorted_samples[low]) * (rank - low)


def significant(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits: stable JSON, tiny ratios kept."""
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class Target:
    """A goal such as "p50 <= 6": which statistic, compared how, with what value."""

    comparison: Comparison
    value: float
    statistic: Statistic = "p50"

    def met_by(self, measured: float) -> bool:
        """Whether ``measured`` (the chosen statistic) reaches the goal."""
        if self.comparison == "<=":
            return measured <= self.value
        if self.comparison == ">=":
            return measured >= self.value
        if self.comparison == "<":
            return measured < self.value
        return measured > self.value

    def describe(self) -> str:
        """Short human form, e.g. ``p50 ≤ 6``."""
        return f"{self.statistic} {SYMBOLS[self.comparison]} {self.value:g}"

    def to_json(self) -> dict[str, Any]:
        """The target as JSON: statistic, comparison, value."""
        return {"statistic": self.statistic, "comparison": self.comparison, "value": self.value}


@dataclass
class Figure:
    """One measured quantity: its samples (taken after a discarded warm-up) and its goal."""

    key: str  # stable id in the JSON, e.g. "render_ms"
    title: str  # what the table shows
    unit: str  # "ms", "s", "x", "MB", ...
    samples: list[float] = field(default_factory=list)
    target: Target | None = None
    notes: str = ""  # conditions worth knowing when reading the number
    command: str = ""  # how to look closer, e.g. "avatar bench --only render"

    def summary(self) -> dict[str, float | int | None]:
        """min, p50 (median), p95, max and n over the samples; None where there are none."""
        clean = sorted(s for s in self.samples if math.isfinite(s))
        if not clean:
            return {"min": None, "p50": None, "p95": None, "max": None, "n": 0}
        return {
            "min": clean[0],
            "p50": percentile(clean, 50),
            "p95": percentile(clean, 95),
            "max": clean[-1],
            "n": len(clean),
        }

    @property
    def met(self) -> bool | None:
        """True/False against the target; None without a target or without samples."""
        if self.target is None:
            return None
        measured = self.summary()[self.target.statistic]
        if measured is None:
            return None
        return self.target.met_by(float(measured))

    def to_json(self, digits: int = 6) -> dict[str, Any]:
        """The figure as JSON-ready data, numbers rounded to ``digits`` significant digits."""
        summary = {
            name: (significant(value, digits) if isinstance(value, float) else value)
            for name, value in self.summary().items()
        }
        return {
            "title": self.title,
            "unit": self.unit,
            **summary,
            "target": self.target.to_json() if self.target else None,
            "met": self.met,
            "notes": self.notes,
            "command": self.command,
            "samples": [significant(s, digits) for s in self.samples if math.isfinite(s)],
        }


@dataclass
class BenchContext:
    """What every figure group gets: where the data is, which suite, how to show progress."""

    data_dir: Path
    suite: str  # "quick" or "full"
    work_dir: Path  # scratch space for this run, removed afterwards
    progress: ProgressFn = field(default=lambda label, done, total: None)

    @property
    def full(self) -> bool:
        """True for the full suite, where groups take more samples."""
        return self.suite == "full"

    def repeats(self, quick: int, full: int) -> int:
        """How many samples to take in this suite."""
        return full if self.full else quick

    @cached_property
    def settings(self) -> Settings:
        """Settings with this run's data directory."""
        from ..settings import get_settings

        return get_settings(data_dir=self.data_dir)

    @cached_property
    def default_avatar(self) -> Avatar:
        """The default avatar, registered in the data directory on first use (~5 s)."""
        from ..avatars.registry import ensure_default_avatar, load_avatar

        ensure_default_avatar(self.settings)
        return load_avatar("default", settings=self.settings)
