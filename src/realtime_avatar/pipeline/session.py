"""One live conversation: mic audio in, paired audio/video frames and events out.

The session knows nothing of WebRTC. The transport feeds it 16 kHz mic audio and pulls one
``AVFrame`` every 40 ms; the session runs the turn loop in between:

    VAD -> ASR (partials, final) -> Responder (text deltas) -> SentenceChunker
        -> TTS -> VoiceMatch -> speech queue -> AVSynth (animate + render) -> frame

Barge-in is one mechanism: a new utterance bumps ``turn_id``; the reply task of the old
turn is cancelled and every queued frame of an older turn is dropped, so the very next
frame is the idle face.

Speculation hides the wait for the end of the turn: when the VAD reports a pause (the
user has probably finished), the session decodes what it heard and starts the reply at
once, holding back its speech and its events. When the VAD confirms the end and the final
transcript is the same, the held reply is released and the first words play at once; if
the user goes on talking, or the final differs, the speculation is dropped unheard.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..asr.base import Recognizer, Utterance
from ..constants import ASR_RATE_HZ
from ..dialogue.base import DialogueError, Message, Responder
from ..frames import AVFrame, Speech, Transcript
from ..text.chunker import SentenceChunker
from ..tts.base import Synthesizer
from ..vad.base import VoiceActivity
from ..voice.base import VoiceMatcher
from .avsync import AVSynth, trim_leading_silence, trim_trailing_silence

log = logging.getLogger(__name__)

ECHO_GUARD_S = 0.15  # ignore the VAD this long after the avatar starts speaking
PREROLL_S = 0.3  # the VAD starts late on soft onsets ("the..."): give ASR what came before
HISTORY_TURNS = 8
LEAD_IN_KEEP_S = 0.02
CLAUSE_PAUSE_KEEP_S = 0.15  # Piper ends "Sure," with ~0.3 s of silence; the next piece adds 0.05
FIRST_CLAUSE_CHARS = 4  # "Sure," and "Hello there," are worth saying on their own
FIRST_PHRASE_CHARS = 24  # a longer first clause is cut before "and", "with", "from"...

EventSink = Callable[[dict[str, Any]], None]


def reply_chunker() -> SentenceChunker:
    """The chunker a streaming reply goes through: a short first piece, longer ones after."""
    return SentenceChunker(
        min_clause_chars=FIRST_CLAUSE_CHARS, first_phrase_chars=FIRST_PHRASE_CHARS
    )


def as_spoken(piece: str, more: bool) -> str:
    """The text to synthesize for ``piece``; ``more``: the reply goes on after it.

    A piece cut inside a sentence is read as a clause that goes on, not as the end of a
    statement: a comma gives it that intonation.
    """
    return f"{piece}," if more and piece[-1:].isalnum() else piece


@dataclass
class TurnTimings:
    """Wall-clock marks of one turn (``time.monotonic()`` seconds), and what was said."""

    turn_id: int
    speech_start: float = 0.0
    speech_end: float = 0.0
    asr_final: float = 0.0
    first_token: float = 0.0
    first_audio: float = 0.0
    first_frame: float = 0.0
    turn_end: float = 0.0
    user_text: str = ""
    reply_text: str = ""
    language: str = ""
    interrupted: bool = False
    error: str = ""
    first_frame_index: int = -1
    last_frame_index: int = -1
    frames_played: int = 0  # answer frames; fewer than last - first + 1 means gaps
    speculative: bool = False  # the reply was prepared during the pause, before the end

    def stage_ms(self) -> dict[str, float]:
        """Each stage's mark in ms after the end of the user's speech."""
        base = self.speech_end
        out: dict[str, float] = {}
        for name in ("asr_final", "first_token", "first_audio", "first_frame", "turn_end"):
            mark = getattr(self, name)
            if mark and base:
                out[f"{name}_ms"] = round((mark - base) * 1000.0, 1)
        return out


def _same_words(a: Transcript, b: Transcript) -> bool:
    """Whether two transcripts say the same words (case and punctuation aside)."""

    def words(text: str) -> list[str]:
        return "".join(c.lower() if c.isalnum() else " " for c in text).split()

    return words(a.text) == words(b.text)


@dataclass
class _Speculation:
    """A reply started at a pause: its speech and events wait for ``release``."""

    turn: int
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


def _later_for(speculation: _Speculation | None) -> Callable[[Callable[[], None]], None]:
    """How a turn's events go out: held by its speculation until released, else at once."""
    if speculation is not None:
        return speculation.later
    return lambda action: action()


@dataclass
class SessionStages:
    """The per-session stage instances (models inside them are loaded once per process)."""

    vad: VoiceActivity
    recognizer: Recognizer
    responder: Responder
    synthesizer_for: Callable[[str], Synthesizer]
    matcher_for: Callable[[Synthesizer, str], VoiceMatcher]
    fallback_lines: dict[str, str] = field(default_factory=dict)


class ConversationSession:
    """The turn loop of one conversation. Create, ``await start()``, feed audio, pull frames."""

    def __init__(
        self,
        av_synth: AVSynth,
        stages: SessionStages,
        *,
        language: str = "auto",
        on_event: EventSink | None = None,
        on_turn: Callable[[TurnTimings], None] | None = None,
    ) -> None:
        self.av = av_synth
        self.stages = stages
        self.language = language
        self._emit = on_event or (lambda _e: None)
        self._on_turn = on_turn or (lambda _t: None)
        self.turn_id = 0
        self._lock = threading.Lock()  # guards the speech queue and the current utterance
        self._speech: collections.deque[Speech] = collections.deque()
        self._frames: Any = None  # iterator of the utterance being played
        self._playing_turn = -1
        self._speaking_since = 0.0
        self._history: list[Message] = []
        self._utterance: Utterance | None = None
        self._asr_queue: asyncio.Queue[Any] | None = None
        self._asr_feeder_task: asyncio.Task[None] | None = None
        self._utterance_turn = -1
        self._timings: dict[int, TurnTimings] = {}
        self._reported: set[int] = set()
        self._reply_task: asyncio.Task[None] | None = None
        self._speculation: _Speculation | None = None
        self._asr_pool = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._speech_pool = ThreadPoolExecutor(1, thread_name_prefix="tts")
        self._pending_user_text = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mic_s = 0.0
        self._preroll: collections.deque[np.ndarray] = collections.deque()
        self._preroll_s = 0.0
        self._closed = False
        self._state = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind to the running loop and announce that the avatar listens."""
        self._loop = asyncio.get_running_loop()
        self._set_state("listening")

    async def close(self) -> None:
        """Cancel work in flight and release the worker threads."""
        self._closed = True
        self._drop_speculation()
        if self._reply_task:
            self._reply_task.cancel()
        if self._asr_feeder_task:
            self._asr_feeder_task.cancel()
        self._asr_pool.shutdown(wait=False, cancel_futures=True)
        self._speech_pool.shutdown(wait=False, cancel_futures=True)
        aclose = getattr(self.stages.responder, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - closing a backend must not block teardown
                log.warning("responder did not close cleanly", exc_info=True)

    # ------------------------------------------------------------------ events
    def _set_state(self, state: str, **extra: Any) -> None:
        if state != self._state:
            self._state = state
            self._emit({"type": "status", "state": state, "turn_id": self.turn_id, **extra})

    @property
    def speaking(self) -> bool:
        """Whether the avatar is playing (or about to play) an answer."""
        with self._lock:
            return self._frames is not None or bool(self._speech)

    # ------------------------------------------------------------------ mic side
    async def push_mic(self, pcm_16k: np.ndarray) -> None:
        """Feed mic audio (float32 mono 16 kHz) from the transport, in arrival order."""
        if self._closed:
            return
        self._mic_s += len(pcm_16k) / ASR_RATE_HZ
        events = self.stages.vad.feed(pcm_16k)
        for event in events:
            if event.kind == "start":
                self._on_speech_start()
                if self._utterance is not None and self._preroll:
                    self._feed_utterance(np.concatenate(list(self._preroll)))
            elif event.kind == "pause":
                self._on_pause()
            elif event.kind == "resume":
                self._drop_speculation()
            elif event.kind == "end":
                self._on_speech_end(event.time_s)
        if self._utterance is not None:
            self._feed_utterance(pcm_16k)
        self._preroll.append(pcm_16k)
        self._preroll_s += len(pcm_16k) / ASR_RATE_HZ
        while self._preroll and self._preroll_s - len(self._preroll[0]) / ASR_RATE_HZ >= PREROLL_S:
            self._preroll_s -= len(self._preroll.popleft()) / ASR_RATE_HZ

    def _on_speech_start(self) -> None:
        now = time.monotonic()
        if self.speaking and now - self._speaking_since < ECHO_GUARD_S:
            return  # the avatar's first syllable leaking back through the mic
        replying = self._reply_task is not None and not self._reply_task.done()
        if self.speaking or replying:
            self._interrupt()
        self.turn_id += 1
        timing = TurnTimings(self.turn_id, speech_start=now)
        self._timings[self.turn_id] = timing
        if self._asr_queue is not None and self._asr_feeder_task is not None:
            self._asr_queue.put_nowait(None)  # an utterance that never ended: let it go
        self._utterance = self.stages.recognizer.start(self.turn_id, self.language)
        self._utterance_turn = self.turn_id
        self._asr_queue = asyncio.Queue()
        self._asr_feeder_task = asyncio.ensure_future(
            self._asr_feeder(self._utterance, self._asr_queue, self.turn_id)
        )
        self._set_state("listening", user_speaking=True)

    def _interrupt(self) -> None:
        """Barge-in: drop the old turn everywhere; the next frame is the idle face."""
        old = self.turn_id
        had_audio = self._playing_turn == old
        self._drop_speculation()
        if self._reply_task:
            self._reply_task.cancel()
            self._reply_task = None
        with self._lock:
            self._speech.clear()
            self._frames = None
        timing = self._timings.get(old)
        if timing is not None:
            timing.interrupted = True
            if not timing.turn_end:
                timing.turn_end = time.monotonic()
            # The user went on talking before hearing anything: keep what they said.
            if not had_audio and timing.user_text:
                self._pending_user_text = timing.user_text
            self._finish_turn(timing)
        self._emit({"type": "interrupted", "turn_id": old})

    def _feed_utterance(self, pcm_16k: np.ndarray) -> None:
        """Hand audio to the utterance's ASR feeder; the mic path never waits on decoding."""
        assert self._asr_queue is not None
        self._asr_queue.put_nowait(pcm_16k)

    async def _asr_feeder(self, utterance: Utterance, queue: asyncio.Queue[Any], turn: int) -> None:
        """Feed queued audio to the recognizer in order, batching what piled up meanwhile.

        A future in the queue asks for a peek: it is answered once every sample queued
        before it was fed.
        """
        assert self._loop is not None
        done = False
        while not done:
            chunks = [await queue.get()]
            while not queue.empty() and isinstance(chunks[-1], np.ndarray):
                chunks.append(queue.get_nowait())
            if chunks[-1] is None:
                done = True
            request = chunks.pop() if isinstance(chunks[-1], asyncio.Future) else None
            audio = [c for c in chunks if c is not None]
            if audio:
                began = time.monotonic()
                await self._feed_partial(utterance, np.concatenate(audio), turn)
                if time.monotonic() - began > 0.02:
                    log.debug("turn %d: feed took %.0f ms", turn, (time.monotonic() - began) * 1e3)
            if request is not None and not request.done():
                try:
                    began = time.monotonic()
                    heard = await self._loop.run_in_executor(self._asr_pool, utterance.peek)
                    log.debug("turn %d: peek took %.0f ms", turn, (time.monotonic() - began) * 1e3)
                except Exception as exc:  # noqa: BLE001 - the turn's final decides then
                    if not request.done():
                        request.set_exception(exc)
                else:
                    if not request.done():  # a dropped speculation cancelled it meanwhile
                        request.set_result(heard)

    async def _feed_partial(self, utterance: Utterance, pcm: np.ndarray, turn: int) -> None:
        """Feed audio; show the partial transcript it may give."""
        assert self._loop is not None
        partial = await self._loop.run_in_executor(self._asr_pool, utterance.feed, pcm)
        if partial is not None and partial.text.strip() and turn == self.turn_id:
            self._emit(
                {
                    "type": "transcript",
                    "role": "user",
                    "text": partial.text,
                    "final": False,
                    "turn_id": turn,
                }
            )

    def _on_speech_end(self, stream_time_s: float) -> None:
        if self._utterance is None:
            return
        now = time.monotonic()
        timing = self._timings[self._utterance_turn]
        # The VAD reports when speech stopped, not when it noticed: back-date the mark.
        timing.speech_end = now - max(self._mic_s - stream_time_s, 0.0)
        utterance, turn = self._utterance, self._utterance_turn
        feeder = self._asr_feeder_task
        assert self._asr_queue is not None and feeder is not None
        self._asr_queue.put_nowait(None)  # the feeder drains what is queued, then stops
        self._utterance = None
        self._asr_queue, self._asr_feeder_task = None, None
        speculation, self._speculation = self._speculation, None
        self._reply_task = asyncio.ensure_future(
            self._commit_turn(utterance, turn, feeder, speculation)
        )

    # ------------------------------------------------------------------ speculation
    def _on_pause(self) -> None:
        """The user has probably finished: hear what they said and start the reply, held."""
        if self._utterance is None or self._asr_queue is None or self._loop is None:
            return
        self._drop_speculation()
        turn = self._utterance_turn
        log.debug("turn %d: pause, peeking", turn)
        request: asyncio.Future[Transcript] = self._loop.create_future()
        self._asr_queue.put_nowait(request)  # answered once everything heard so far is fed
        speculation = _Speculation(turn)

        async def heard() -> Transcript:
            transcript = await request
            speculation.transcript = transcript
            return transcript

        speculation.task = asyncio.ensure_future(self._run_turn(turn, heard, speculation))
        # A dropped speculation's failure is nobody's business: retrieve it, say nothing.
        speculation.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._speculation = speculation

    def _drop_speculation(self) -> None:
        """The user went on (or the session ends): forget the held reply, unheard."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            speculation.dropped = True
            if speculation.task is not None:
                speculation.task.cancel()

    async def _commit_turn(
        self,
        utterance: Utterance,
        turn: int,
        feeder: asyncio.Task[None],
        speculation: _Speculation | None,
    ) -> None:
        """The turn has ended: release the held reply if it heard the same, else reply now."""
        assert self._loop is not None
        loop = self._loop

        async def final() -> Transcript:
            await feeder  # every sample heard so far is in the utterance
            return await loop.run_in_executor(self._asr_pool, utterance.finish)

        if speculation is not None and speculation.task is not None:
            try:
                heard: Transcript | None = await final()
            except Exception:  # noqa: BLE001 - the plain path below meets it again and says so
                heard = None
            task = speculation.task
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            guessed = speculation.transcript
            if (
                heard is not None
                and guessed is not None
                and _same_words(heard, guessed)
                and not failed
            ):
                speculation.release()
                await task
                return
            task.cancel()
        await self._run_turn(turn, final, None)

    # ------------------------------------------------------------------ reply side
    async def _run_turn(
        self,
        turn: int,
        heard: Callable[[], Awaitable[Transcript]],
        speculation: _Speculation | None,
    ) -> None:
        """Answer what ``heard`` returns; under a speculation, speech and events are held."""
        timing = self._timings[turn]
        later = _later_for(speculation)
        try:
            transcript = await heard()
            asr_done = time.monotonic()
            # What the user said before an interruption they made themselves is kept; a
            # speculation reads it but leaves it until released, as it may be dropped.
            text = " ".join(t for t in (self._pending_user_text, transcript.text.strip()) if t)
            if speculation is None:
                self._pending_user_text = ""
            if not text:
                later(lambda: self._set_state("listening"))
                return
            language = transcript.language if self.language == "auto" else self.language

            def announce() -> None:
                timing.asr_final = asr_done
                timing.user_text, timing.language = text, language
                timing.speculative = speculation is not None
                if speculation is not None:
                    self._pending_user_text = ""
                self._emit(
                    {
                        "type": "transcript",
                        "role": "user",
                        "text": text,
                        "final": True,
                        "turn_id": turn,
                        "language": language,
                    }
                )
                self._set_state("thinking")

            later(announce)
            reply = await self._reply(text, language, turn, timing, speculation)
            self._history += [Message("user", text), Message("assistant", reply)]
            self._history = self._history[-2 * HISTORY_TURNS :]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed turn must not end the session
            if speculation is not None and not speculation.released.is_set():
                raise  # unheard: the committed turn decodes and answers again
            log.exception("turn %d failed", turn)
            timing.error = str(exc)
            self._emit({"type": "error", "message": f"turn failed: {exc}", "turn_id": turn})
            self._set_state("listening")

    async def _reply(
        self,
        text: str,
        language: str,
        turn: int,
        timing: TurnTimings,
        speculation: _Speculation | None = None,
    ) -> str:
        # A short first piece starts the voice sooner; later pieces may be longer.
        chunker = reply_chunker()
        spoken: list[str] = []
        later = _later_for(speculation)

        def emit(event: dict[str, Any]) -> None:
            later(lambda: self._emit(event))

        async def speak(piece: str, more: bool = False) -> None:
            if not piece.strip() or turn != self.turn_id:
                return
            said = as_spoken(piece, more)
            speech = await self._loop.run_in_executor(  # type: ignore[union-attr]
                self._speech_pool,
                self._synthesize,
                said,
                language,
                turn,
                not spoken,
                speculation,
                more,
            )
            if speech is None:
                return
            if not timing.first_audio:
                timing.first_audio = time.monotonic()
            if speculation is not None:
                await speculation.released.wait()  # the turn has not ended yet: hold
            if turn != self.turn_id:
                return
            spoken.append(piece)
            with self._lock:
                self._speech.append(speech)

        try:
            async for delta in self.stages.responder.respond(self._history, text, language):
                if not timing.first_token:
                    timing.first_token = time.monotonic()
                emit(
                    {
                        "type": "transcript",
                        "role": "avatar",
                        "text": delta,
                        "final": False,
                        "delta": True,
                        "turn_id": turn,
                    }
                )
                for piece in chunker.push(delta):
                    await speak(piece, more=True)
            for piece in chunker.flush():
                await speak(piece)
        except DialogueError as exc:
            timing.error = str(exc)
            emit({"type": "error", "message": str(exc), "turn_id": turn})
            fallback = self.stages.fallback_lines.get(language) or self.stages.fallback_lines.get(
                "en", ""
            )
            if fallback:
                await speak(fallback)
        if speculation is not None:
            await speculation.released.wait()
        reply = " ".join(spoken)
        timing.reply_text = reply
        self._emit(
            {"type": "transcript", "role": "avatar", "text": reply, "final": True, "turn_id": turn}
        )
        if not spoken:
            timing.turn_end = time.monotonic()
            self._finish_turn(timing)
            self._set_state("listening")
        return reply

    def _synthesize(
        self,
        text: str,
        language: str,
        turn: int,
        first: bool = False,
        speculation: _Speculation | None = None,
        more: bool = False,
    ) -> Speech | None:
        if speculation is not None and speculation.dropped:
            return None  # the user went on: the next real turn needs this thread
        synth = self.stages.synthesizer_for(language)
        speech = synth.synthesize(text, language, turn_id=turn)
        if first:
            # The answer's first words are the latency the user feels: no lead-in silence.
            speech = trim_leading_silence(speech, LEAD_IN_KEEP_S)
        if more:
            # The pause after a clause, not after a whole statement: the reply goes on.
            speech = trim_trailing_silence(speech, CLAUSE_PAUSE_KEEP_S)
        return self.stages.matcher_for(synth, language).convert(speech)

    def _finish_turn(self, timing: TurnTimings) -> None:
        if timing.turn_id in self._reported:
            return
        self._reported.add(timing.turn_id)
        self._on_turn(timing)
        self._emit(
            {
                "type": "turn",
                "turn_id": timing.turn_id,
                "interrupted": timing.interrupted,
                # Monotonic marks let a client on the same machine split the latency.
                "speech_end_mono": timing.speech_end,
                "first_frame_mono": timing.first_frame,
                # The session's frame clock: the transport maps it to what the client sees.
                "first_frame_index": timing.first_frame_index,
                "last_frame_index": timing.last_frame_index,
                # Idle frames between the answer's pieces: the next one was not ready.
                "gap_frames": max(
                    timing.last_frame_index - timing.first_frame_index + 1 - timing.frames_played,
                    0,
                )
                if timing.frames_played
                else 0,
                "speculative": timing.speculative,
                **timing.stage_ms(),
            }
        )

    # ------------------------------------------------------------------ frame side
    def next_frame(self) -> AVFrame:
        """The frame for the next 40 ms tick: the answer if one is playing, else idle.

        Called by the transport from one render thread at 25 fps.
        """
        with self._lock:
            frame = None
            while frame is None:
                if self._frames is None:
                    while self._speech and self._speech[0].turn_id != self.turn_id:
                        self._speech.popleft()  # stale: a newer turn began
                    if not self._speech:
                        break
                    speech = self._speech.popleft()
                    self._frames = self.av.speech_frames(speech)
                    self._playing_turn = speech.turn_id
                if self._playing_turn != self.turn_id:
                    self._frames = None
                    continue
                frame = next(self._frames, None)
                if frame is None:
                    self._frames = None
            if frame is not None:
                self._mark_playing(frame)
                return frame
        idle = self.av.idle_frame(self.turn_id)
        self._mark_idle()
        return idle

    def _mark_playing(self, frame: AVFrame) -> None:
        timing = self._timings.get(frame.turn_id)
        if timing is not None:
            timing.last_frame_index = frame.index
            timing.frames_played += 1
        if timing is not None and not timing.first_frame:
            timing.first_frame = time.monotonic()
            timing.first_frame_index = frame.index
            self._speaking_since = timing.first_frame
            self._call_soon(self._set_state, "speaking", first_frame_index=frame.index)

    def _mark_idle(self) -> None:
        timing = self._timings.get(self._playing_turn)
        reply_done = self._reply_task is None or self._reply_task.done()
        if timing is not None and timing.first_frame and not timing.turn_end and reply_done:
            timing.turn_end = time.monotonic()
            self._call_soon(self._finish_turn, timing)
            self._call_soon(self._set_state, "listening")

    def _call_soon(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: fn(*args, **kwargs))
