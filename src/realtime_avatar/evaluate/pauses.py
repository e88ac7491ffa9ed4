"""The pause set: spoken questions with a thinking pause inside, and complete ones without.

The items live in ``scenarios/pauses.yaml``. ``render`` speaks one with the product's
synthesizers (``tts.registry.get_synthesizer``: Piper for English by default, espeak-ng
for Spanish and Mandarin): each part is synthesized on its own, resampled, cut to its
audible extent, and the parts are joined with exactly ``pause_ms`` of silence. The result
carries the sample positions an end-of-turn test needs: where speech starts, where the
pause starts and ends, and where speech truly ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..constants import ASR_RATE_HZ
from ..engine.voice import as_spoken
from ..errors import ConfigurationError
from ..media.audio import resample
from ..settings import Settings
from ..text.language import normalize_language_code
from ..tts.registry import get_synthesizer

PAUSES_PATH = Path(__file__).parent / "scenarios" / "pauses.yaml"
MIN_PAUSE_MS = 300
MAX_PAUSE_MS = 1200
LEAD_MS = 300  # silence before the question, as a microphone hears before anyone speaks
TAIL_MS = 1500  # silence after it: room for the end-of-turn decision to happen
# Audible: a 5 ms window louder than this fraction of the part's peak (-46 dB). Quiet
# fricatives ("if", "bus") stay in; the synthesizers' digital near-silence goes.
_AUDIBLE_RATIO = 0.005
_WINDOW_MS = 5


@dataclass(frozen=True)
class PauseItem:
    """One spoken question: ``before``, ``pause_ms`` of silence, ``after`` (a complete one
    has only ``before``, its whole text, and no pause)."""

    id: str
    language: str
    before: str
    pause_ms: int = 0
    after: str = ""
    cue: str = ""  # why the words before the pause cannot be the end

    @property
    def has_pause(self) -> bool:
        """Whether the question has a pause inside it."""
        return self.pause_ms > 0

    @property
    def text(self) -> str:
        """The whole question as one line of text (what a transcript should read)."""
        return f"{self.before} {self.after}".strip() if self.after else self.before

    @property
    def parts(self) -> tuple[str, ...]:
        """The pieces said without a pause: one for a complete item, two for a paused one."""
        return (self.before, self.after) if self.has_pause else (self.before,)


@dataclass(frozen=True)
class RenderedItem:
    """An item as mono float32 PCM with the sample positions of what was said."""

    item: PauseItem
    pcm: np.ndarray
    rate_hz: int
    speech_start: int  # first audible sample of the question
    speech_end: int  # one past the last audible sample: the true end of speech
    pause_start: int | None = None  # first sample of the inner pause (None: no pause)
    pause_end: int | None = None  # one past its last sample

    def seconds(self, sample: int) -> float:
        """A sample position in seconds."""
        return sample / self.rate_hz


def _item(raw: dict, paused: bool) -> PauseItem:
    if paused:
        return PauseItem(
            id=str(raw["id"]),
            language=normalize_language_code(str(raw["language"])),
            before=str(raw["before"]).strip(),
            pause_ms=int(raw["pause_ms"]),
            after=str(raw["after"]).strip(),
            cue=str(raw.get("cue", "")),
        )
    return PauseItem(
        id=str(raw["id"]),
        language=normalize_language_code(str(raw["language"])),
        before=str(raw["text"]).strip(),
    )


@lru_cache(maxsize=4)
def load_items(path: Path = PAUSES_PATH) -> tuple[PauseItem, ...]:
    """Every item of the pause set: the paused ones first, then the complete ones."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        paused = [_item(raw, True) for raw in data["paused"]]
        complete = [_item(raw, False) for raw in data["complete"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(
            f"The pause set {path} cannot be read ({error}); restore it from the package."
        ) from error
    items = (*paused, *complete)
    for item in items:
        if item.has_pause and not (MIN_PAUSE_MS <= item.pause_ms <= MAX_PAUSE_MS):
            raise ConfigurationError(
                f"Pause set item {item.id} pauses {item.pause_ms} ms; "
                f"keep pauses within {MIN_PAUSE_MS}-{MAX_PAUSE_MS} ms."
            )
        if item.has_pause and not item.after:
            raise ConfigurationError(f"Pause set item {item.id} has nothing after its pause.")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"The pause set {path} repeats an item id.")
    return items


def paused_items() -> list[PauseItem]:
    """The questions with a pause inside them."""
    return [item for item in load_items() if item.has_pause]


def complete_items() -> list[PauseItem]:
    """The questions said in one go."""
    return [item for item in load_items() if not item.has_pause]


def audible_extent(pcm: np.ndarray, rate_hz: int) -> tuple[int, int]:
    """(first, one past last) sample of the audible part of ``pcm``, to 5 ms windows and
    then refined to the sample; (0, 0) when nothing in it is audible."""
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    if peak <= 0.0:
        return 0, 0
    window = max(1, rate_hz * _WINDOW_MS // 1000)
    count = len(pcm) // window
    if count == 0:
        return 0, len(pcm)
    frames = pcm[: count * window].reshape(count, window).astype(np.float64)
    rms = np.sqrt(np.mean(np.square(frames), axis=1))
    loud = np.flatnonzero(rms > _AUDIBLE_RATIO * peak)
    if loud.size == 0:
        return 0, 0
    first_window, last_window = int(loud[0]), int(loud[-1])
    # Within the edge windows, start and end at the first and last sample above the floor.
    floor = _AUDIBLE_RATIO * peak
    head = pcm[first_window * window : (first_window + 1) * window]
    tail = pcm[last_window * window : (last_window + 1) * window]
    start = first_window * window + int(np.argmax(np.abs(head) > floor))
    above = np.flatnonzero(np.abs(tail) > floor)
    end = last_window * window + (int(above[-1]) + 1 if above.size else window)
    return start, end


def speak_part(
    text: str, language: str, rate_hz: int, settings: Settings, more: bool
) -> np.ndarray:
    """One part of an item: synthesized, resampled to ``rate_hz``, cut to what is audible.
    ``more``: the question goes on after it, so it is said as a clause that continues."""
    synthesizer = get_synthesizer(language, settings)
    speech = synthesizer.synthesize(as_spoken(text, more), language)
    pcm = resample(speech.pcm, speech.sample_rate_hz, rate_hz).astype(np.float32)
    start, end = audible_extent(pcm, rate_hz)
    if end <= start:
        raise ConfigurationError(f"The synthesizer said nothing audible for {text!r}.")
    return pcm[start:end]


def render(
    item: PauseItem,
    rate_hz: int = ASR_RATE_HZ,
    settings: Settings | None = None,
    lead_ms: int = LEAD_MS,
    tail_ms: int = TAIL_MS,
) -> RenderedItem:
    """``item`` as float32 PCM at ``rate_hz`` (16 kHz or 48 kHz): ``lead_ms`` of silence,
    the first part, exactly ``pause_ms`` of silence, the second part, ``tail_ms`` of silence."""
    settings = settings or Settings()
    lead = np.zeros(rate_hz * lead_ms // 1000, dtype=np.float32)
    tail = np.zeros(rate_hz * tail_ms // 1000, dtype=np.float32)
    first = speak_part(item.before, item.language, rate_hz, settings, more=item.has_pause)
    if not item.has_pause:
        pcm = np.concatenate([lead, first, tail])
        return RenderedItem(item, pcm, rate_hz, len(lead), len(lead) + len(first))
    pause = np.zeros(rate_hz * item.pause_ms // 1000, dtype=np.float32)
    second = speak_part(item.after, item.language, rate_hz, settings, more=False)
    pause_start = len(lead) + len(first)
    pause_end = pause_start + len(pause)
    pcm = np.concatenate([lead, first, pause, second, tail])
    return RenderedItem(
        item,
        pcm,
        rate_hz,
        speech_start=len(lead),
        speech_end=pause_end + len(second),
        pause_start=pause_start,
        pause_end=pause_end,
    )
