"""What an evaluation produces: scores, each tied to its scenario, instrument and threshold.

A score is either a measured value or ``not measured`` with the reason; it is never a
made-up 0 or 100. Pass/fail comes from a threshold kept in the scenario manifest, or is
``None`` when the manifest sets none (a figure reported for information).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Threshold:
    """A pass/fail rule for one metric, optionally for one language only."""

    metric: str
    minimum: float | None = None
    maximum: float | None = None
    equals_expected: bool = False  # for categorical metrics: the value must equal ``expected``
    language: str | None = None
    why: str = ""

    def check(self, value: float | str, expected: str | None = None) -> bool:
        """Whether ``value`` passes this rule."""
        if self.equals_expected:
            return expected is not None and str(value) == expected
        number = float(value)
        if math.isnan(number):
            return False
        if self.minimum is not None and number < self.minimum:
            return False
        return not (self.maximum is not None and number > self.maximum)

    def describe(self) -> str:
        """The rule as a reader would write it: ``≤ 0.15``, ``-125 … 45``, ``= expected``."""
        if self.equals_expected:
            return "= requested"
        if self.minimum is not None and self.maximum is not None:
            return f"{_fmt(self.minimum)} … {_fmt(self.maximum)}"
        if self.minimum is not None:
            return f"≥ {_fmt(self.minimum)}"
        if self.maximum is not None:
            return f"≤ {_fmt(self.maximum)}"
        return ""


def _fmt(number: float) -> str:
    return f"{number:g}"


@dataclass
class Score:
    """One figure: what was measured, on which scenario, by which instrument."""

    scenario: str
    metric: str
    value: float | str | None
    unit: str
    instrument: str
    category: str
    detail: str = ""  # which turn, segment or window inside the scenario
    language: str | None = None
    expected: str | None = None  # for categorical metrics (a language code)
    measured: bool = True
    reason: str = ""  # why it was not measured
    threshold: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        data = asdict(self)
        value = data["value"]
        if isinstance(value, float):
            data["value"] = None if math.isnan(value) else round(value, 4)
        return data


def not_measured(
    scenario: str,
    metric: str,
    instrument: str,
    category: str,
    reason: str,
    *,
    unit: str = "",
    detail: str = "",
    language: str | None = None,
) -> Score:
    """A score that could not be taken, with the reason; it neither passes nor fails."""
    return Score(
        scenario=scenario,
        metric=metric,
        value=None,
        unit=unit,
        instrument=instrument,
        category=category,
        detail=detail,
        language=language,
        measured=False,
        reason=reason,
    )


def apply_thresholds(scores: list[Score], thresholds: list[Threshold]) -> None:
    """Set ``threshold`` and ``passed`` on every measured score a rule covers.

    A rule for the score's language wins over a rule for any language.
    """
    for score in scores:
        if not score.measured or score.value is None:
            continue
        rule = _rule_for(score, thresholds)
        if rule is None:
            continue
        score.threshold = rule.describe()
        score.passed = rule.check(score.value, score.expected)


def _rule_for(score: Score, thresholds: list[Threshold]) -> Threshold | None:
    general = None
    for rule in thresholds:
        if rule.metric != score.metric:
            continue
        if rule.language is not None and rule.language == score.language:
            return rule
        if rule.language is None:
            general = rule
    return general


@dataclass
class Summary:
    """Counts over a report's scores."""

    passed: int = 0
    failed: int = 0
    informational: int = 0
    not_measured: int = 0
    scenario_errors: int = 0

    @classmethod
    def of(cls, scores: list[Score], scenario_errors: int) -> Summary:
        """Count the scores of a report."""
        summary = cls(scenario_errors=scenario_errors)
        for score in scores:
            if not score.measured:
                summary.not_measured += 1
            elif score.passed is None:
                summary.informational += 1
            elif score.passed:
                summary.passed += 1
            else:
                summary.failed += 1
        return summary
