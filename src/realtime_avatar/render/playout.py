"""What every speech-driven renderer keeps: the queue of pushed speech and the frame clock.

A renderer behind the seam cuts each piece of speech into per-frame work (audio padded to
whole frames, a mouth track, mel windows...) and draws one frame per tick. ``Playout`` owns
the part they all share and must get right under threads: ``push`` and ``clear`` from the
event loop while the render thread pulls; a piece is cut outside the lock and installed
only if no ``clear`` came meanwhile; the frame index is counted before drawing (it names
frames to the client, and a barge-in during a draw must not make two frames share one).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..frames import Speech


class Piece(Protocol):
    """One piece of speech, cut into frames."""

    turn_id: int

    @property
    def frames(self) -> int:
        """How many 40 ms frames it lasts."""
        ...


P = TypeVar("P", bound=Piece)


class Playout(Generic[P]):
    """The queue, the piece playing and the frame clock of one renderer (thread-safe)."""

    def __init__(self, cut: Callable[[Speech], P]) -> None:
        self._cut = cut
        self._lock = threading.Lock()
        self._queue: collections.deque[Speech] = collections.deque()
        self._playing: P | None = None
        self._step = 0  # the next frame of the piece playing
        self._starting: Speech | None = None  # taken from the queue, being cut
        self._cleared = 0  # clears so far: a piece cut across a clear is not installed
        self._index = 0

    def push(self, speech: Speech) -> None:
        """Queue speech after what is queued."""
        with self._lock:
            self._queue.append(speech)

    def clear(self) -> None:
        """Drop what is queued and playing; the next frame is idle."""
        with self._lock:
            self._queue.clear()
            self._playing = None
            self._starting = None
            self._cleared += 1

    @property
    def busy(self) -> bool:
        """Whether speech is queued or playing."""
        with self._lock:
            return bool(self._queue) or self._playing is not None or self._starting is not None

    @property
    def frame_index(self) -> int:
        """The index the next frame will carry."""
        return self._index

    def next(self) -> tuple[int, P | None, int]:
        """The next tick: its frame index, and the piece and frame of it to draw (or None)."""
        with self._lock:
            index = self._index
            self._index += 1
            speech = None
            if self._playing is None and self._queue:
                speech = self._starting = self._queue.popleft()
            cleared = self._cleared
        if speech is not None:
            started = self._cut(speech)  # the costly part of a start: outside the lock
            with self._lock:
                if self._cleared == cleared:
                    self._playing, self._step, self._starting = started, 0, None
        with self._lock:
            playing, step = self._playing, self._step
            if playing is not None:
                self._step += 1
                if self._step >= playing.frames:
                    self._playing = None
        return index, playing, step


class PlayoutRenderer(Generic[P]):
    """The seam's ``push``, ``clear``, ``busy`` and ``frame_index``, answered by a
    ``Playout``; a renderer sets ``self._playout`` and writes only ``next_frame``."""

    _playout: Playout[P]

    def push(self, speech: Speech) -> None:
        """Queue speech to be spoken after what is queued already."""
        self._playout.push(speech)

    def clear(self) -> None:
        """Drop everything queued or playing (barge-in): the next frame is idle."""
        self._playout.clear()

    @property
    def busy(self) -> bool:
        """Whether speech is queued or playing."""
        return self._playout.busy

    @property
    def frame_index(self) -> int:
        """The index the next frame will carry."""
        return self._playout.frame_index
