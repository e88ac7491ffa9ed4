"""A local face for pipecat voice agents: ``AvatarVideoService``, placed right after TTS.

    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                         AvatarVideoService(avatar="default"), transport.output(), bot_agg])

with the transport's ``TransportParams(video_out_enabled=True, video_out_is_live=True,
video_out_width=512, video_out_height=512, video_out_framerate=25)``.

The service takes the ``TTSAudioRawFrame``s of any sample rate, hands them to the project's
render seam as ``Speech`` (audio only, no phoneme timings: the embedded renderer animates
the mouth from the audio), and pushes downstream, every 40 ms, one ``OutputImageRawFrame``
of the face paired with exactly that frame's 40 ms of the same audio (48 kHz) as a
``TTSAudioRawFrame``; when the bot is silent it pushes the idle face alone (blinks,
breathing) so the video never freezes. ``InterruptionFrame`` and
``UserStartedSpeakingFrame`` drop everything it holds at once. Every other frame passes
through untouched and in order: a downstream frame that comes after held audio (the TTS's
``TTSStoppedFrame``, its text, the end of the LLM's response) waits until that audio has
been emitted, since the transport reads, say, ``TTSStoppedFrame`` as "the bot stopped
speaking"; system frames and upstream frames are never held.

Where the 25 fps clock lives, and why: here, in one task of this processor that pulls the
renderer's ``next_frame()`` every 40 ms on a thread of its own. pipecat's output transport
paces audio in real time (the WebRTC track takes 10 ms at a time) but paces live video on
a separate queue; a renderer that pushed faster than real time would fill both queues with
seconds of media that an interruption must then chase, and their two clocks would drift
apart. Emitting image and audio together, at the wall clock, a fixed ``lead_frames`` ahead
(enough to ride out scheduling jitter, 80 ms by default), keeps both transport queues
equally short, so they leave in step and a barge-in stops the mouth within a frame or two.
Drawing runs on the thread, so a 5-10 ms render never blocks pipecat's event loop, and the
loop never waits on the renderer's lock while a frame is drawn.

TTS services stream audio faster than real time in small chunks; the renderer pads every
piece it is pushed to whole frames, so the service buffers the audio and pushes whole
frames only, and only when the renderer is about to run dry: pieces are as long as what
arrived while the previous one played (the audio-driven mouth reads the level of a piece
relative to itself, so longer pieces animate better), and the first one starts at once.
The remainder shorter than a frame is pushed when the TTS says it stopped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from typing import Any

import numpy as np

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        SystemFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
        UserStartedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from ..errors import ConfigurationError

    raise ConfigurationError(
        "pipecat is not installed; run `pip install 'realtime-avatar[pipecat]'` and "
        "`pip install --no-deps pipecat-ai==1.14.0` (see README, 'pipecat face')"
    ) from exc

from ..constants import FPS, OUTPUT_RATE_HZ
from ..frames import AVFrame, Speech
from ..render.base import Renderer
from ..settings import Settings, get_settings

log = logging.getLogger(__name__)

FRAME_S = 1.0 / FPS
# Frames left in the renderer at or under which buffered audio is pushed to it.
REFILL_AT_FRAMES = 2
# A stall longer than this many frames restarts the clock instead of bursting to catch up.
RESYNC_FRAMES = 5


def load_renderer(avatar: str, renderer: str | None, settings: Settings) -> Renderer:
    """A renderer of ``avatar``'s face (the default avatar is made on first use)."""
    from ..avatars.registry import load_avatar
    from ..render.registry import create_renderer

    face = load_avatar(avatar, settings=settings).face
    return create_renderer(renderer or settings.renderer, face, settings)


def pcm_from_frame(frame: TTSAudioRawFrame) -> np.ndarray:
    """A pipecat frame's int16 bytes as mono float32 in [-1, 1] (channels averaged)."""
    pcm = np.frombuffer(frame.audio, np.int16).astype(np.float32) / 32768.0
    if frame.num_channels > 1:
        pcm = pcm[: len(pcm) // frame.num_channels * frame.num_channels]
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1)
    return pcm


class AvatarVideoService(FrameProcessor):
    """The avatar's face for a pipecat bot: TTS audio in, paired 25 fps face video and audio out.

    ``avatar`` names a registered avatar (``avatar register``; ``"default"`` is made on first
    use); ``renderer`` a renderer of the project's registry (default: ``AVATAR_RENDERER``), or
    a ``Renderer`` instance to use as is; ``lead_frames`` how many frames the service runs
    ahead of the wall clock.
    """

    def __init__(
        self,
        avatar: str = "default",
        *,
        renderer: str | Renderer | None = None,
        settings: Settings | None = None,
        lead_frames: int = 2,
        language: str = "en",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.avatar = avatar
        self.language = language
        self.lead_frames = max(lead_frames, 0)
        self._settings = settings
        self._renderer_option = renderer
        self._renderer: Renderer | None = renderer if isinstance(renderer, Renderer) else None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._turn_id = 1  # bumped by every interruption: older frames are stale
        self._buffer: list[np.ndarray] = []  # TTS audio not yet pushed, at _buffer_rate_hz
        self._buffer_rate_hz = 0
        self._flush = False  # the TTS stopped: push the last partial frame too
        self._received_frames = 0.0  # TTS audio received since the face last fell idle
        self._pushed_frames = 0  # of it, frames of speech pushed to the renderer
        self._spoken_frames = 0  # of those, frames emitted
        # Downstream frames that came after held audio, with how much audio preceded them.
        self._pending: collections.deque[tuple[float, Frame]] = collections.deque()
        self._context_id: str | None = None
        self._drained = asyncio.Event()
        self.frames_out = 0  # images pushed downstream (speech and idle)

    @property
    def renderer(self) -> Renderer:
        """The renderer, once the pipeline has started."""
        if self._renderer is None:
            raise RuntimeError("AvatarVideoService has not started yet")
        return self._renderer

    @property
    def holding(self) -> bool:
        """Whether speech is buffered here or queued in the renderer."""
        if self._buffer or self._pushed_frames > self._spoken_frames:
            return True
        return self._renderer is not None and self._renderer.busy

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Consume TTS audio; drop what is held on interruption; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._start()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._hold(frame)
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            kept = self._drop()
            await self.push_frame(frame, direction)
            for held in kept:
                await self.push_frame(held)
        elif isinstance(frame, EndFrame):
            await self._drain()
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif (
            direction == FrameDirection.DOWNSTREAM
            and not isinstance(frame, SystemFrame)
            and (self._pending or self.holding)
        ):
            if isinstance(frame, TTSStoppedFrame):
                self._flush = True
            self._pending.append((self._received_frames, frame))
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        """Stop the clock and its thread if the pipeline ends without an End/Cancel frame."""
        await self._stop()
        await super().cleanup()

    # -- the held audio --------------------------------------------------------------------

    def _hold(self, frame: TTSAudioRawFrame) -> None:
        if self._buffer and frame.sample_rate != self._buffer_rate_hz:
            self._push_buffer(whole_frames_only=False)  # a rate change ends the piece
        self._buffer_rate_hz = frame.sample_rate
        pcm = pcm_from_frame(frame)
        self._buffer.append(pcm)
        self._received_frames += len(pcm) / (frame.sample_rate * FRAME_S)
        self._context_id = frame.context_id
        self._flush = False
        self._drained.clear()

    def _drop(self) -> list[Frame]:
        """Forget the held speech and the frames after it; return those that are uninterruptible."""
        self._turn_id += 1
        self._buffer.clear()
        self._flush = False
        self._received_frames = 0.0
        self._pushed_frames = self._spoken_frames = 0
        kept = [frame for _, frame in self._pending if not frame.interruptible]
        self._pending.clear()
        if self._renderer is not None:
            self._renderer.clear()
        return kept

    def _refill(self) -> None:
        """Push buffered audio to the renderer when it is about to run dry."""
        if not self._buffer or self._pushed_frames - self._spoken_frames > REFILL_AT_FRAMES:
            return
        self._push_buffer(whole_frames_only=not self._flush)

    def _push_buffer(self, *, whole_frames_only: bool) -> None:
        pcm = np.concatenate(self._buffer)
        rate = self._buffer_rate_hz
        per_frame = rate * FRAME_S
        take = len(pcm)
        if whole_frames_only:
            take = int(int(len(pcm) / per_frame) * per_frame)
        if take <= 0:
            return
        rest = pcm[take:]
        self._buffer = [rest] if len(rest) else []
        if not self._buffer:
            self._flush = False
        self._pushed_frames += int(np.ceil(take / per_frame))
        self.renderer.push(Speech(self._turn_id, "", self.language, pcm[:take], rate))

    # -- the clock ---------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._renderer is None:
            settings = self._settings or get_settings()
            name = self._renderer_option if isinstance(self._renderer_option, str) else None
            self._renderer = await asyncio.to_thread(load_renderer, self.avatar, name, settings)
        if self._clock_task is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "avatar-render")
            self._clock_task = self.create_task(self._clock(), "avatar-clock")

    async def _stop(self) -> None:
        if self._clock_task is not None:
            await self.cancel_task(self._clock_task)
            self._clock_task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _drain(self, timeout_s: float = 30.0) -> None:
        """Wait until the held speech has been emitted (an EndFrame ends after the answer)."""
        self._flush = True
        if self._clock_task is None or not (self.holding or self._pending):
            return
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            log.warning("avatar face: speech still held after %.0f s at the end", timeout_s)

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic() - self.lead_frames * FRAME_S
        ticks = 0
        while True:
            self._refill()
            turn_id = self._turn_id
            av = await loop.run_in_executor(self._executor, self.renderer.next_frame)
            await self._emit(av, fresh=turn_id == self._turn_id)
            ticks += 1
            delay = start + ticks * FRAME_S - time.monotonic()
            if delay < -RESYNC_FRAMES * FRAME_S:
                start, ticks = time.monotonic() - self.lead_frames * FRAME_S, 0
                log.debug("avatar face: clock stalled %.0f ms; restarted", -delay * 1000)
            elif delay > 0:
                await asyncio.sleep(delay)

    async def _emit(self, av: AVFrame, *, fresh: bool) -> None:
        height, width = av.rgb.shape[:2]
        image = OutputImageRawFrame(
            image=np.ascontiguousarray(av.rgb).tobytes(), size=(width, height), format="RGB"
        )
        speaking = av.speaking and fresh and av.turn_id == self._turn_id
        if speaking:
            self._spoken_frames += 1
        await self.push_frame(image)
        self.frames_out += 1
        # An interruption may have gone by while the image was pushed: its audio is stale.
        if speaking and av.turn_id == self._turn_id:
            audio = TTSAudioRawFrame(av.audio.tobytes(), OUTPUT_RATE_HZ, 1)
            audio.context_id = self._context_id
            await self.push_frame(audio)
        await self._release()
        if not self.holding and not self._pending:
            self._received_frames = 0.0
            self._pushed_frames = self._spoken_frames = 0
            self._drained.set()

    async def _release(self) -> None:
        """Push the held frames whose preceding audio has now been emitted."""
        while self._pending:
            position, frame = self._pending[0]
            # Only the last piece before a pause is padded to a whole frame: the audio that
            # preceded the frame has gone once the frame it ends in has.
            if self.holding and self._spoken_frames < np.ceil(position - 1e-6):
                return
            self._pending.popleft()
            await self.push_frame(frame)
