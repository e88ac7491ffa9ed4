"""One live conversation: mic audio in, paired audio/video frames and typed events out.

The conversation knows nothing of WebRTC. The transport feeds it 16 kHz mic audio and
pulls one ``AVFrame`` every 40 ms; in between it runs the turn loop:

    VAD -> ASR (partials, final) -> Responder (text deltas) -> chunker
        -> SpeechMaker (TTS, trims, voice match) -> Renderer.push -> Renderer.next_frame

Threads: the event loop only moves audio and events. VAD, ASR, speech and the renderer
work on the session's worker threads (one each, so a session's work stays in order and
sessions share the cores fairly); the transport pulls frames on its render thread.

Barge-in is one mechanism: a new utterance bumps ``turn_id``, the old turn's reply task is
cancelled and the renderer is cleared, so the very next frame is the idle face.

Speculation hides the wait for the end of the turn: when the VAD reports a pause, the
conversation decodes what it heard and starts the reply at once, holding back its speech
and events. When the VAD confirms the end and the final transcript has the same words,
the held reply is released and the first words play at once; if the user goes on
talking, or the final differs, the speculation is dropped unheard.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..asr.base import Recognizer, Utterance
from ..constants import ASR_RATE_HZ
from ..dialogue.base import DialogueError, Message, Responder
from ..errors import AvatarError
from ..events import (
    AvatarState,
    ErrorEvent,
    InterruptedEvent,
    ServerEvent,
    StatusEvent,
    TranscriptEvent,
)
from ..frames import AVFrame, Speech, Transcript
from ..render.animated import SILENCE
from ..render.base import Renderer
from ..text.language import detect_language
from ..vad.base import VoiceActivity
from .clock import Clock, monotonic
from .turns import Speculation, TurnRecord, later_for, same_words
from .voice import as_spoken, reply_chunker

log = logging.getLogger(__name__)

ECHO_GUARD_S = 0.15  # ignore the VAD this long after the avatar starts speaking
PREROLL_S = 0.3  # the VAD starts late on soft onsets ("the..."): give ASR what came before
HISTORY_TURNS = 8
MAX_UTTERANCE_S = 30.0  # a user who never pauses is answered at this length
DECISION_AUDIO_S = 8.0  # the end-of-turn model reads this much of the utterance
DECISIONS_KEPT = 16  # per turn, in its record
TYPED_LANGUAGES = ("en", "es", "zh")  # what a typed message may be answered in

EventSink = Callable[[ServerEvent], None]
T = TypeVar("T")


BACKGROUND_NICENESS = 5  # measured: 4 talking sessions hold 25 fps with it, 23.7-25 without


def typed_language(text: str) -> str:
    """The language of a typed message, among those a conversation speaks (else English)."""
    try:
        language = detect_language(text)
    except AvatarError:  # a script no voice speaks: answered in English
        return "en"
    return language if language in TYPED_LANGUAGES else "en"


def lower_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Give the calling thread a lower scheduling priority, where the OS allows it."""
    if hasattr(os, "setpriority") and niceness:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:
            log.debug("could not lower a worker thread's priority", exc_info=True)


class TurnDecision(Protocol):
    """What an end-of-turn decider says at a pause (``engine.endpointing.Decision``)."""

    @property
    def release(self) -> bool:
        """End the turn now."""
        ...

    @property
    def wait_ms(self) -> float:
        """If not: how much more silence before asking again."""
        ...

    def as_record(self) -> dict[str, Any]:
        """Inputs and verdict as plain JSON values."""
        ...


class EndOfTurn(Protocol):
    """Whether the user's turn is over: from the words so far, the audio, the silence."""

    def decide(
        self, transcript: str, language: str, audio_16k: np.ndarray | None, silence_ms: float
    ) -> TurnDecision: ...


class SpeechMaker(Protocol):
    """Text to the avatar's speech: synthesis, trims, voice matching (``engine.voice``)."""

    def speak(
        self, text: str, language: str, turn_id: int = 0, *, first: bool = False, more: bool = False
    ) -> Speech:
        """Speak ``text``; ``first``: the reply's first piece, ``more``: the reply goes on."""
        ...


@dataclass
class Stages:
    """One session's stages: the models inside are loaded once per process."""

    vad: VoiceActivity
    recognizer: Recognizer
    responder: Responder
    speech: SpeechMaker
    renderer: Renderer
    fallback_lines: dict[str, str] = field(default_factory=dict)
    # Decides at each pause whether the user is done (engine/endpointing.py); None: the
    # VAD's end of speech (a fixed silence) ends the turn.
    turn_decider: EndOfTurn | None = None


class Conversation:
    """The turn loop of one conversation. Create, ``await start()``, feed audio, pull frames."""

    def __init__(
        self,
        stages: Stages,
        *,
        language: str = "auto",
        on_event: EventSink | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        clock: Clock = monotonic,
        max_utterance_s: float = MAX_UTTERANCE_S,
    ) -> None:
        self.stages = stages
        self.renderer = stages.renderer
        self.language = language
        self.clock = clock
        self.max_utterance_s = max_utterance_s
        self._emit = on_event or (lambda _e: None)
        self._on_turn = on_turn or (lambda _t: None)
        self.turn_id = 0
        self._playing_turn = -1
        self._speaking_since = 0.0
        self._history: list[Message] = []
        self._utterance: Utterance | None = None
        self._utterance_s = 0.0
        self._asr_queue: asyncio.Queue[Any] | None = None
        self._asr_feeder_task: asyncio.Task[None] | None = None
        self._utterance_turn = -1
        self._turns: dict[int, TurnRecord] = {}  # only turns not yet reported
        self._reply_task: asyncio.Task[None] | None = None
        self._speculation: Speculation | None = None
        self._mic_pool = ThreadPoolExecutor(1, thread_name_prefix="vad")
        # When the cores are busy, a late frame is seen at once and a late word is not: the
        # turn's heavy work yields to the render threads (a lower OS priority, Linux).
        self._asr_pool = ThreadPoolExecutor(1, "asr", initializer=lower_priority)
        self._speech_pool = ThreadPoolExecutor(1, "tts", initializer=lower_priority)
        self._pending_user_text = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mic_s = 0.0
        # End of turn by decision: where the current silence began (stream seconds; None
        # while the user speaks), when to ask the decider next, whether it is asked now.
        self._silence_from_s: float | None = None
        self._next_check_s = 0.0
        self._deciding = False
        self._turn_pool = ThreadPoolExecutor(1, thread_name_prefix="turn")
        self._heard: collections.deque[np.ndarray] = collections.deque()  # last 8 s
        self._heard_s = 0.0
        self._preroll: collections.deque[np.ndarray] = collections.deque()
        self._preroll_s = 0.0
        self._closed = False
        self._state: AvatarState | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind to the running loop and announce that the avatar listens."""
        self._loop = asyncio.get_running_loop()
        self._set_state("listening")

    async def close(self) -> None:
        """Cancel work in flight and release the worker threads."""
        if self._closed:
            return
        self._closed = True
        self._drop_speculation()
        tasks = [t for t in (self._reply_task, self._asr_feeder_task) if t is not None]
        for task in tasks:
            task.cancel()
        self.renderer.clear()
        for pool in (self._mic_pool, self._asr_pool, self._speech_pool, self._turn_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        # The reply's stream closes its backend when cancelled: let it, before closing it.
        await asyncio.gather(*tasks, return_exceptions=True)
        # A turn the caller hung up on is still a turn: reported as cut off, then gone.
        for record in list(self._turns.values()):
            if record.user_text or record.heard_text:
                record.interrupted = True
                record.error = record.error or "the call ended"
                record.turn_end = record.turn_end or self.clock()
                self._finish_turn(record)
        self._turns.clear()
        aclose = getattr(self.stages.responder, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - closing a backend must not block teardown
                log.warning("responder did not close cleanly", exc_info=True)

    async def _off_loop(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(pool, fn, *args)

    # ------------------------------------------------------------------ events
    def _set_state(
        self,
        state: AvatarState,
        *,
        user_speaking: bool = False,
        first_frame_index: int | None = None,
    ) -> None:
        if state != self._state:
            self._state = state
            self._emit(
                StatusEvent(
                    state=state,
                    turn_id=self.turn_id,
                    user_speaking=user_speaking,
                    first_frame_index=first_frame_index,
                )
            )

    @property
    def speaking(self) -> bool:
        """Whether the avatar is playing (or about to play) an answer."""
        return self.renderer.busy

    # ------------------------------------------------------------------ typed turns
    def say_text(self, text: str) -> None:
        """A typed message: a user turn with no audio, answered exactly as a spoken one
        (same responder, speech, renderer and events). Typed over the avatar, it is a
        barge-in; typed while the user was talking, that utterance is dropped."""
        text = " ".join(text.split())
        if self._closed or not text or self._loop is None:
            return
        replying = self._reply_task is not None and not self._reply_task.done()
        if self.speaking or replying:
            self._interrupt()
        if self._utterance is not None:
            self._abandon_utterance()
        self.turn_id += 1
        turn = self.turn_id
        now = self.clock()
        self._turns[turn] = TurnRecord(turn, speech_start=now, speech_end=now)

        async def typed() -> Transcript:
            language = self.language
            if language == "auto":
                language = await self._off_loop(self._asr_pool, typed_language, text)
            return Transcript(turn, text, True, language)

        self._reply_task = asyncio.ensure_future(self._run_turn(turn, typed, None))

    def interrupt(self) -> None:
        """The user cut in without a sound (started typing): stop speaking and listen."""
        replying = self._reply_task is not None and not self._reply_task.done()
        if self._closed or not (self.speaking or replying):
            return
        self._interrupt()
        self.turn_id += 1  # frames drawn during the clear are silenced (see next_frame)
        self._set_state("listening")

    def _abandon_utterance(self) -> None:
        """Drop the utterance being heard, unanswered (a typed message replaces it)."""
        self._drop_speculation()
        if self._asr_queue is not None:
            self._asr_queue.put_nowait(None)  # the feeder drains and stops
        self._turns.pop(self._utterance_turn, None)
        self._utterance = None
        self._asr_queue, self._asr_feeder_task = None, None
        self._silence_from_s = None

    # ------------------------------------------------------------------ mic side
    async def push_mic(self, pcm_16k: np.ndarray) -> None:
        """Feed mic audio (float32 mono 16 kHz) from the transport, in arrival order."""
        if self._closed:
            return
        self._mic_s += len(pcm_16k) / ASR_RATE_HZ
        events = await self._off_loop(self._mic_pool, self.stages.vad.feed, pcm_16k)
        if self._closed:
            return
        deciding = self.stages.turn_decider is not None
        for event in events:
            if event.kind == "start" and deciding and self._utterance is not None:
                self._user_goes_on("speech after a long pause")
            elif event.kind == "start" or (event.kind == "resume" and self._utterance is None):
                # A resume with no utterance open: the decider ended the turn at the pause,
                # and the user went on; it is a new utterance (a barge-in if we answer).
                self._on_speech_start()
                if self._utterance is not None and self._preroll:
                    self._feed_utterance(np.concatenate(list(self._preroll)))
            elif event.kind == "pause":
                self._on_pause()
                self._silence_from_s = self._next_check_s = event.time_s
            elif event.kind == "resume":
                self._user_goes_on("resumed")
            elif event.kind == "end" and not deciding:
                self._on_speech_end(event.time_s)
            elif event.kind == "end" and self._silence_from_s is None:
                self._silence_from_s = self._next_check_s = event.time_s  # no pause event
        if self._utterance is not None:
            self._feed_utterance(pcm_16k)
            self._remember(pcm_16k)
            if deciding and self._silence_from_s is not None and not self._deciding:
                if self._mic_s >= self._next_check_s:
                    self._deciding = True
                    asyncio.ensure_future(self._decide(self._utterance_turn, self._silence_from_s))
            if self._utterance_s >= self.max_utterance_s:
                # A monologue with no pause: answer what was said so far (bounded memory).
                log.info(
                    "turn %d: utterance cap of %.0f s reached", self.turn_id, self._utterance_s
                )
                self._turns[self._utterance_turn].utterance_capped = True
                self._on_speech_end(self._mic_s)
        self._preroll.append(pcm_16k)
        self._preroll_s += len(pcm_16k) / ASR_RATE_HZ
        while self._preroll and self._preroll_s - len(self._preroll[0]) / ASR_RATE_HZ >= PREROLL_S:
            self._preroll_s -= len(self._preroll.popleft()) / ASR_RATE_HZ

    def _remember(self, pcm_16k: np.ndarray) -> None:
        """Keep the utterance's last few seconds for the end-of-turn model."""
        self._heard.append(pcm_16k)
        self._heard_s += len(pcm_16k) / ASR_RATE_HZ
        while self._heard and self._heard_s - len(self._heard[0]) / ASR_RATE_HZ >= DECISION_AUDIO_S:
            self._heard_s -= len(self._heard.popleft()) / ASR_RATE_HZ

    def _user_goes_on(self, why: str) -> None:
        """Speech again inside an open utterance: the pause was not the end."""
        if self._silence_from_s is not None:
            log.debug(
                "turn %d: %s after %.0f ms of silence",
                self._utterance_turn,
                why,
                (self._mic_s - self._silence_from_s) * 1e3,
            )
        self._silence_from_s = None
        self._drop_speculation()

    async def _decide(self, turn: int, silence_from_s: float) -> None:
        """Ask the decider whether the user is done; end the turn, or ask again later."""
        decider = self.stages.turn_decider
        assert decider is not None
        try:
            speculation = self._speculation
            transcript = ""
            language = self.language
            audio = np.concatenate(list(self._heard)) if self._heard else None
            silence_ms = (self._mic_s - silence_from_s) * 1000.0
            # The model reads the audio while the recognizer decodes the words: the first
            # decision waits for the slower of the two, not for both.
            read_prosody = getattr(decider, "read_prosody", None)
            prosody: asyncio.Future[Any] | None = None
            if read_prosody is not None:
                prosody = asyncio.ensure_future(
                    self._off_loop(self._turn_pool, read_prosody, audio)
                )
            if speculation is not None and speculation.peeked is not None:
                try:
                    heard = await asyncio.shield(speculation.peeked)
                except Exception:  # noqa: BLE001 - no words: decide from the rest
                    heard = None
                if heard is not None:
                    transcript = heard.text
                    language = heard.language if self.language == "auto" else self.language
            if prosody is None:
                decision = await self._off_loop(
                    self._turn_pool, decider.decide, transcript, language, audio, silence_ms
                )
            else:
                reading = await prosody
                decision = await self._off_loop(
                    self._turn_pool,
                    decider.decide,
                    transcript,
                    language,
                    audio,
                    silence_ms,
                    reading,
                )
        except Exception:  # noqa: BLE001 - a broken decider must not hang the turn
            log.exception("turn %d: end-of-turn decision failed; ending the turn", turn)
            decision = None
        finally:
            self._deciding = False
        if self._utterance is None or turn != self._utterance_turn:
            return  # the turn ended meanwhile (the cap, or the session)
        went_on = self._silence_from_s != silence_from_s
        record = self._turns.get(turn)
        if record is not None and decision is not None:
            entry = {**decision.as_record(), **({"user_went_on": True} if went_on else {})}
            record.decisions = [*record.decisions[-(DECISIONS_KEPT - 1) :], entry]
        if went_on:
            return  # the user spoke again while it was decided: the pause was not the end
        if decision is None or decision.release:
            self._on_speech_end(silence_from_s, heard_already=bool(transcript))
        else:
            self._next_check_s = silence_from_s + (silence_ms + decision.wait_ms) / 1000.0

    def _on_speech_start(self) -> None:
        now = self.clock()
        if self.speaking and now - self._speaking_since < ECHO_GUARD_S:
            return  # the avatar's first syllable leaking back through the mic
        replying = self._reply_task is not None and not self._reply_task.done()
        if self.speaking or replying:
            self._interrupt()
        self.turn_id += 1
        self._turns[self.turn_id] = TurnRecord(self.turn_id, speech_start=now)
        if self._asr_queue is not None and self._asr_feeder_task is not None:
            self._asr_queue.put_nowait(None)  # an utterance that never ended: let it go
        self._utterance = self.stages.recognizer.start(self.turn_id, self.language)
        self._utterance_s = 0.0
        self._silence_from_s = None
        self._heard.clear()
        self._heard_s = 0.0
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
        self.renderer.clear()
        record = self._turns.get(old)
        if record is not None:
            record.interrupted = True
            if not record.turn_end:
                record.turn_end = self.clock()
            # The user went on talking before hearing anything: keep what they said (the
            # peek's words if the final transcript is not in yet).
            said = record.user_text or record.heard_text
            if not had_audio and said:
                self._pending_user_text = said
            self._finish_turn(record)
        self._emit(InterruptedEvent(turn_id=old))

    def _feed_utterance(self, pcm_16k: np.ndarray) -> None:
        """Hand audio to the utterance's ASR feeder; the mic path never waits on decoding.

        The queue holds at most ``max_utterance_s`` of audio: the cap ends the utterance.
        """
        assert self._asr_queue is not None
        self._utterance_s += len(pcm_16k) / ASR_RATE_HZ
        self._asr_queue.put_nowait(pcm_16k)

    async def _asr_feeder(self, utterance: Utterance, queue: asyncio.Queue[Any], turn: int) -> None:
        """Feed queued audio to the recognizer in order, batching what piled up meanwhile.

        A future in the queue asks for a peek: it is answered once every sample queued
        before it was fed.
        """
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
                began = self.clock()
                await self._feed_partial(utterance, np.concatenate(audio), turn)
                if self.clock() - began > 0.02:
                    log.debug("turn %d: feed took %.0f ms", turn, (self.clock() - began) * 1e3)
            if request is not None and not request.done():
                try:
                    began = self.clock()
                    heard = await self._off_loop(self._asr_pool, utterance.peek)
                    log.debug("turn %d: peek took %.0f ms", turn, (self.clock() - began) * 1e3)
                except Exception as exc:  # noqa: BLE001 - the turn's final decides then
                    if not request.done():
                        request.set_exception(exc)
                else:
                    if not request.done():  # a dropped speculation cancelled it meanwhile
                        request.set_result(heard)

    async def _feed_partial(self, utterance: Utterance, pcm: np.ndarray, turn: int) -> None:
        """Feed audio; show the partial transcript it may give."""
        partial = await self._off_loop(self._asr_pool, utterance.feed, pcm)
        if partial is not None and partial.text.strip() and turn == self.turn_id:
            self._emit(TranscriptEvent(role="user", text=partial.text, final=False, turn_id=turn))

    def _on_speech_end(self, stream_time_s: float, heard_already: bool = False) -> None:
        """The turn is over: close the utterance and commit the reply. ``heard_already``:
        the pause's peek heard everything said (only silence came after it)."""
        if self._utterance is None:
            return
        now = self.clock()
        record = self._turns[self._utterance_turn]
        # The VAD reports when speech stopped, not when it noticed: back-date the mark.
        record.speech_end = now - max(self._mic_s - stream_time_s, 0.0)
        utterance, turn = self._utterance, self._utterance_turn
        feeder = self._asr_feeder_task
        assert self._asr_queue is not None and feeder is not None
        self._asr_queue.put_nowait(None)  # the feeder drains what is queued, then stops
        self._utterance = None
        self._silence_from_s = None
        self._asr_queue, self._asr_feeder_task = None, None
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.transcript is not None:
            record.heard_text = speculation.transcript.text.strip()
        self._reply_task = asyncio.ensure_future(
            self._commit_turn(utterance, turn, feeder, speculation, heard_already)
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
        speculation = Speculation(turn, peeked=request)

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
        speculation: Speculation | None,
        heard_already: bool = False,
    ) -> None:
        """The turn has ended: release the held reply if it heard the same, else reply now."""

        async def final() -> Transcript:
            await feeder  # every sample heard so far is in the utterance
            return await self._off_loop(self._asr_pool, utterance.finish)

        if speculation is not None and speculation.task is not None:
            heard: Transcript | None = None
            if heard_already and speculation.transcript is not None:
                # Ended by a decision on the peek's words, with only silence after them:
                # decoding it all again (~100 ms) would hear the same words.
                heard = speculation.transcript
            else:
                try:
                    heard = await final()
                except Exception:  # noqa: BLE001 - the plain path below meets it again
                    heard = None
            task = speculation.task
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            guessed = speculation.transcript
            if (
                heard is not None
                and guessed is not None
                and same_words(heard, guessed)
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
        speculation: Speculation | None,
    ) -> None:
        """Answer what ``heard`` returns; under a speculation, speech and events are held."""
        record = self._turns[turn]
        later = later_for(speculation)
        try:
            transcript = await heard()
            asr_done = self.clock()
            # What the user said before an interruption they made themselves is kept; a
            # speculation reads it but leaves it until released, as it may be dropped.
            text = " ".join(t for t in (self._pending_user_text, transcript.text.strip()) if t)
            if speculation is None:
                self._pending_user_text = ""
            if not text:
                later(self._forget_empty_turn(record))
                return
            language = transcript.language if self.language == "auto" else self.language

            def announce() -> None:
                record.asr_final = asr_done
                record.user_text, record.language = text, language
                record.speculative = speculation is not None
                if speculation is not None:
                    self._pending_user_text = ""
                self._emit(
                    TranscriptEvent(
                        role="user", text=text, final=True, turn_id=turn, language=language
                    )
                )
                self._set_state("thinking")

            later(announce)
            reply = await self._reply(text, language, turn, record, speculation)
            self._history += [Message("user", text), Message("assistant", reply)]
            self._history = self._history[-2 * HISTORY_TURNS :]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed turn must not end the session
            if speculation is not None and not speculation.released.is_set():
                raise  # unheard: the committed turn decodes and answers again
            log.exception("turn %d failed", turn)
            record.error = str(exc)
            self._emit(ErrorEvent(message=f"turn failed: {exc}", turn_id=turn))
            record.turn_end = record.turn_end or self.clock()
            self._finish_turn(record)
            self._set_state("listening")

    def _forget_empty_turn(self, record: TurnRecord) -> Callable[[], None]:
        def forget() -> None:
            # Nothing was said (a cough, a door): no turn to report, back to listening.
            self._turns.pop(record.turn_id, None)
            self._set_state("listening")

        return forget

    async def _reply(
        self,
        text: str,
        language: str,
        turn: int,
        record: TurnRecord,
        speculation: Speculation | None = None,
    ) -> str:
        # A short first piece starts the voice sooner; later pieces may be longer.
        chunker = reply_chunker()
        spoken: list[str] = []
        later = later_for(speculation)

        def emit(event: ServerEvent) -> None:
            later(lambda: self._emit(event))

        async def speak(piece: str, more: bool = False) -> None:
            if not piece.strip() or turn != self.turn_id:
                return
            speech = await self._off_loop(
                self._speech_pool, self._synthesize, as_spoken(piece, more), language, turn,
                not spoken, speculation, more,
            )  # fmt: skip
            if speech is None:
                return
            if speculation is not None:
                await speculation.released.wait()  # the turn has not ended yet: hold
            if turn != self.turn_id:
                return
            # Marked when it could play: a held piece counts from its release, and a
            # dropped speculation leaves no mark on the turn that goes on.
            if not record.first_audio:
                record.first_audio = self.clock()
            spoken.append(piece)
            self.renderer.push(speech)

        try:
            async for delta in self.stages.responder.respond(self._history, text, language):
                if not record.first_token:
                    record.first_token = self.clock()
                emit(
                    TranscriptEvent(
                        role="avatar", text=delta, final=False, delta=True, turn_id=turn
                    )
                )
                for piece in chunker.push(delta):
                    await speak(piece, more=True)
            for piece in chunker.flush():
                await speak(piece)
        except DialogueError as exc:
            record.error = str(exc)
            emit(ErrorEvent(message=str(exc), turn_id=turn))
            lines = self.stages.fallback_lines
            fallback = lines.get(language) or lines.get("en", "")
            if fallback:
                await speak(fallback)
        if speculation is not None:
            await speculation.released.wait()
        reply = " ".join(spoken)
        record.reply_text = reply
        self._emit(TranscriptEvent(role="avatar", text=reply, final=True, turn_id=turn))
        if not spoken:
            record.turn_end = self.clock()
            self._finish_turn(record)
            self._set_state("listening")
        return reply

    def _synthesize(
        self,
        text: str,
        language: str,
        turn: int,
        first: bool,
        speculation: Speculation | None,
        more: bool,
    ) -> Speech | None:
        if speculation is not None and speculation.dropped:
            return None  # the user went on: the next real turn needs this thread
        return self.stages.speech.speak(text, language, turn, first=first, more=more)

    def _finish_turn(self, record: TurnRecord) -> None:
        """Report a turn once, then forget it: finished turns are not kept in memory."""
        if self._turns.pop(record.turn_id, None) is None:
            return
        self._on_turn(record)
        self._emit(record.event())

    # ------------------------------------------------------------------ frame side
    def next_frame(self) -> AVFrame:
        """The frame for the next 40 ms tick: the answer if one is playing, else idle.

        Called by the transport from one render thread at 25 fps.
        """
        frame = self.renderer.next_frame()
        if frame.speaking and frame.turn_id != self.turn_id:
            # Drawn while a barge-in cleared the renderer: its sound must not play.
            frame.audio, frame.speaking = SILENCE, False
        if frame.speaking:
            self._mark_playing(frame)
        elif not self.renderer.busy:
            self._mark_idle()
        return frame

    def _mark_playing(self, frame: AVFrame) -> None:
        self._playing_turn = frame.turn_id
        record = self._turns.get(frame.turn_id)
        if record is None:
            return
        record.last_frame_index = frame.index
        record.frames_played += 1
        if not record.first_frame:
            record.first_frame = self.clock()
            record.first_frame_index = frame.index
            self._speaking_since = record.first_frame
            self._call_soon(lambda: self._set_state("speaking", first_frame_index=frame.index))

    def _mark_idle(self) -> None:
        record = self._turns.get(self._playing_turn)
        reply_done = self._reply_task is None or self._reply_task.done()
        if record is not None and record.first_frame and not record.turn_end and reply_done:
            record.turn_end = self.clock()
            self._call_soon(lambda: self._finish_turn(record))
            self._call_soon(lambda: self._set_state("listening"))

    def _call_soon(self, fn: Callable[[], None]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)
