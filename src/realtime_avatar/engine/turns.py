"""What the engine keeps of a turn while it runs, and the speculative reply's hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import TurnEvent
from ..frames import Transcript

STAGES = ("asr_final", "first_token", "first_audio", "first_frame", "turn_end")


@dataclass
class TurnRecord:
    """Clock marks of one turn (seconds), and what was said. Dropped when the turn ends."""

    turn_id: int
    speech_start: float = 0.0
    speech_end: float = 0.0
    asr_final: float = 0.0
    first_token: float = 0.0
    first_audio: float = 0.0
    first_frame: float = 0.0
    turn_end: float = 0.0
    user_text: str = ""
    heard_text: str = ""  # what the pause's peek heard, until the final transcript is in
    reply_text: str = ""
    language: str = ""
    interrupted: bool = False
    error: str = ""
    first_frame_index: int = -1
    last_frame_index: int = -1
    frames_played: int = 0  # answer frames; fewer than last - first + 1 means gaps
    speculative: bool = False  # the reply was prepared during the pause, before the end
    utterance_capped: bool = False  # the user spoke past the utterance cap: cut there
    decisions: list[dict[str, Any]] = field(default_factory=list)  # end-of-turn, in order

    def stage_ms(self) -> dict[str, float]:
        """Each stage's mark in ms after the end of the user's speech."""
        base = self.speech_end
        out: dict[str, float] = {}
        for name in STAGES:
            mark = getattr(self, name)
            if mark and base:
                out[f"{name}_ms"] = round((mark - base) * 1000.0, 1)
        return out

    @property
    def gap_frames(self) -> int:
        """Idle frames between the answer's first and last: a piece was not ready in time."""
        if not self.frames_played:
            return 0
        return max(self.last_frame_index - self.first_frame_index + 1 - self.frames_played, 0)

    def event(self) -> TurnEvent:
        """The turn as clients see it."""
        return TurnEvent.model_validate(
            {
                "turn_id": self.turn_id,
                "interrupted": self.interrupted,
                "speculative": self.speculative,
                "speech_end_mono": self.speech_end,
                "first_frame_mono": self.first_frame,
                "first_frame_index": self.first_frame_index,
                "last_frame_index": self.last_frame_index,
                "gap_frames": self.gap_frames,
                "end_of_turn": self.decisions[-1] if self.decisions else None,
                **self.stage_ms(),
            }
        )


def same_words(a: Transcript, b: Transcript) -> bool:
    """Whether two transcripts say the same words (case and punctuation aside)."""

    def words(text: str) -> list[str]:
        return "".join(c.lower() if c.isalnum() else " " for c in text).split()

    return words(a.text) == words(b.text)


@dataclass
class Speculation:
    """A reply started at a pause: its speech and events wait for ``release``."""

    turn: int
    peeked: asyncio.Future[Transcript] | None = None  # the peek's answer, when it comes
    transcript: Transcript | None = None  # what the peek heard (set when it returns)
    task: asyncio.Task[None] | None = None
    dropped: bool = False  # read by worker threads: work queued for it is skipped
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[Callable[[], None]] = field(default_factory=list)  # events until release

    def later(self, action: Callable[[], None]) -> None:
        """Run ``action`` now if released, else when released (never if dropped)."""
        if self.released.is_set():
            action()
        else:
            self.held.append(action)

    def release(self) -> None:
        self.released.set()
        held, self.held = self.held, []
        for action in held:
            action()


def later_for(speculation: Speculation | None) -> Callable[[Callable[[], None]], None]:
    """How a turn's events go out: held by its speculation until released, else at once."""
    if speculation is not None:
        return speculation.later
    return lambda action: action()
