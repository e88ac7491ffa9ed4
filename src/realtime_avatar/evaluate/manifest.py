"""The gold-set manifest: scenarios, suites and pass/fail thresholds, read from YAML.

The manifest (``scenarios/gold.yaml`` beside this module) is the single source of what the
evaluator runs and what counts as passing; its sha256 goes into every report so a result
can be traced to the exact scenarios and thresholds that produced it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AvatarError
from .scores import Threshold

MANIFEST_PATH = Path(__file__).parent / "scenarios" / "gold.yaml"
KINDS = ("say", "live")
MEASURES = ("latency", "voice", "intelligibility", "language", "lipsync", "identity", "drift")
DEFAULT_MEASURES = tuple(m for m in MEASURES if m != "drift")  # drift only where asked


class ManifestError(AvatarError):
    """The scenario manifest is missing, unreadable or malformed."""


class UnknownSuiteError(AvatarError):
    """A suite name the manifest does not define."""


@dataclass(frozen=True)
class TurnSpec:
    """One thing the client says: text, its language, and whether it talks over the avatar."""

    text: str
    language: str
    barge_in: bool = False
    after_speaking_s: float = 0.8  # barge-in: how long into the answer to start talking
    gap_s: float = 0.8  # otherwise: the pause after the previous answer ends


@dataclass(frozen=True)
class Segment:
    """One stretch of a script in one language."""

    language: str
    text: str


@dataclass(frozen=True)
class Scenario:
    """One scenario of the gold set."""

    id: str
    kind: str
    suites: tuple[str, ...]
    description: str = ""
    segments: tuple[Segment, ...] = ()  # say: the script, in order
    turns: tuple[TurnSpec, ...] = ()  # live: what the client says, in order
    session_language: str = "auto"  # live: the language the call asks for
    duration_s: float | None = None  # live: cycle the turns until this long
    window_s: float = 60.0  # drift: window of each offset measurement
    measures: tuple[str, ...] = DEFAULT_MEASURES

    @property
    def text(self) -> str:
        """The whole script of a say scenario."""
        return " ".join(s.text.strip() for s in self.segments)

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages in the order the scenario uses them."""
        items = self.segments or self.turns
        out: list[str] = []
        for item in items:
            if not out or out[-1] != item.language:
                out.append(item.language)
        return tuple(out)


@dataclass(frozen=True)
class Manifest:
    """The whole gold set."""

    version: int
    avatar: str
    suites: dict[str, str]
    thresholds: list[Threshold]
    scenarios: list[Scenario]
    path: Path
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def suite(self, name: str) -> list[Scenario]:
        """The scenarios of suite ``name``, in manifest order."""
        if name not in self.suites:
            raise UnknownSuiteError(
                f"unknown suite {name!r}; choose one of {', '.join(sorted(self.suites))}"
            )
        return [s for s in self.scenarios if name in s.suites]


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: missing '{key}'")
    return data[key]


def _threshold(raw: dict[str, Any], index: int) -> Threshold:
    where = f"thresholds[{index}]"
    metric = str(_require(raw, "metric", where))
    equals = raw.get("equals")
    if equals not in (None, "expected"):
        raise ManifestError(f"{where}: 'equals' may only be 'expected'")
    if equals is None and raw.get("min") is None and raw.get("max") is None:
        raise ManifestError(f"{where} ({metric}): give 'min', 'max' or 'equals: expected'")
    return Threshold(
        metric=metric,
        minimum=None if raw.get("min") is None else float(raw["min"]),
        maximum=None if raw.get("max") is None else float(raw["max"]),
        equals_expected=equals == "expected",
        language=raw.get("language"),
        why=str(raw.get("why", "")).strip(),
    )


def _scenario(raw: dict[str, Any], suites: dict[str, str]) -> Scenario:
    sid = str(_require(raw, "id", "scenario"))
    where = f"scenario {sid}"
    kind = str(_require(raw, "kind", where))
    if kind not in KINDS:
        raise ManifestError(f"{where}: kind must be one of {', '.join(KINDS)}")
    names = tuple(str(s) for s in _require(raw, "suites", where))
    unknown = [s for s in names if s not in suites]
    if unknown:
        raise ManifestError(f"{where}: unknown suite(s) {', '.join(unknown)}")
    measures = tuple(raw.get("measures", DEFAULT_MEASURES))
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise ManifestError(f"{where}: unknown measure(s) {', '.join(bad)}")
    segments: tuple[Segment, ...] = ()
    turns: tuple[TurnSpec, ...] = ()
    if kind == "say":
        if "segments" in raw:
            segments = tuple(
                Segment(str(_require(s, "language", where)), str(_require(s, "text", where)))
                for s in raw["segments"]
            )
        else:
            text = str(_require(raw, "text", where))
            repeat = int(raw.get("repeat", 1))
            segments = (Segment(str(_require(raw, "language", where)), " ".join([text] * repeat)),)
        if not segments or not all(s.text.strip() for s in segments):
            raise ManifestError(f"{where}: a say scenario needs non-empty text")
    else:
        turns = tuple(
            TurnSpec(
                text=str(_require(t, "say", where)),
                language=str(_require(t, "language", where)),
                barge_in=bool(t.get("barge_in", False)),
                after_speaking_s=float(t.get("after_speaking_s", 0.8)),
                gap_s=float(t.get("gap_s", 0.8)),
            )
            for t in _require(raw, "turns", where)
        )
        if not turns:
            raise ManifestError(f"{where}: a live scenario needs turns")
        if turns[0].barge_in:
            raise ManifestError(f"{where}: the first turn cannot barge in (nothing to talk over)")
    return Scenario(
        id=sid,
        kind=kind,
        suites=names,
        description=" ".join(str(raw.get("description", "")).split()),
        segments=segments,
        turns=turns,
        session_language=str(raw.get("session_language", "auto")),
        duration_s=None if raw.get("duration_s") is None else float(raw["duration_s"]),
        window_s=float(raw.get("window_s", 60.0)),
        measures=measures,
    )


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and check the manifest (default: the gold set shipped with the package)."""
    import yaml

    path = Path(path or MANIFEST_PATH)
    try:
        raw_bytes = path.read_bytes()
    except OSError as error:
        raise ManifestError(f"cannot read the scenario manifest {path}: {error}") from error
    try:
        data = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as error:
        raise ManifestError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level")
    suites = {
        str(k): " ".join(str(v).split()) for k, v in _require(data, "suites", str(path)).items()
    }
    thresholds = [_threshold(t, i) for i, t in enumerate(data.get("thresholds", []))]
    scenarios = [_scenario(s, suites) for s in _require(data, "scenarios", str(path))]
    ids = [s.id for s in scenarios]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ManifestError(f"{path}: duplicate scenario id(s) {', '.join(duplicates)}")
    return Manifest(
        version=int(data.get("version", 1)),
        avatar=str(data.get("avatar", "default")),
        suites=suites,
        thresholds=thresholds,
        scenarios=scenarios,
        path=path,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
    )
