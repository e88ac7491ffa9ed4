"""Script to video: the engine's stages driven offline into an MP4, streamed.

text -> sentences -> ``AvatarVoice.speak`` (TTS, voice match) -> ``Renderer`` (push, pull
frames paired with their audio) -> MP4: the same speech stage and render seam as a live
conversation, so what ``say`` shows is what a call shows.

``render_script`` runs its stages side by side, since one after another they leave a core
idle: a worker thread speaks and voice-matches the sentences a little ahead (starting with
the TTS voice load), the calling thread renders, and the MP4 writer's thread encodes.
ONNX Runtime, WORLD, OpenCV and x264 release the GIL for their heavy work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from ..constants import FPS, OUTPUT_RATE_HZ
from ..errors import InvalidTextError
from ..frames import Speech
from ..render.base import Renderer, spoken_frames
from ..settings import Settings, get_settings
from ..text.chunker import normalize_for_speech, split_sentences
from ..text.language import LATIN_DETECTABLE, resolve_language, script_language
from ..tts.registry import get_synthesizer
from .voice import AvatarVoice

# Rendering and encoding modules (OpenCV, PyAV, SciPy, pyworld: ~0.6 s to import) are
# imported inside the functions, so `avatar say` starts loading the TTS voice first and
# imports them while ONNX Runtime builds its session.

log = logging.getLogger(__name__)

LEAD_IN_FRAMES = 8  # a third of a second of the idle face before the first word
PAUSE_FRAMES = 4  # between sentences, on top of the synthesizer's own silence
TAIL_FRAMES = 12
SPEECH_AHEAD = 2  # sentences spoken ahead of the renderer: enough to hide TTS, memory flat
ENCODE_AHEAD = 16  # frames waiting for the encoder thread (~0.8 MB each)

Progress = Callable[[int, int], None]

T = TypeVar("T")


@dataclass(frozen=True)
class ScriptResult:
    """What ``avatar say`` made, and how long it took."""

    path: Path
    frames: int
    duration_s: float
    wall_s: float
    sentences: int
    languages: tuple[str, ...]

    @property
    def real_time_factor(self) -> float:
        return self.wall_s / max(self.duration_s, 1e-6)


class _Prefetcher(Generic[T]):
    """Run a generator on a worker thread, at most ``depth`` items ahead of its consumer.

    Iterate it on one thread: the worker's exception is raised there. ``close`` stops the
    worker and joins it, wherever it is (it finishes the step it is in first).
    """

    def __init__(self, items: Generator[T, None, None], depth: int, name: str) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[Literal["item", "error", "end"], Any]] = queue.Queue(
            maxsize=depth
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield value

    def close(self) -> None:
        """Stop the worker and wait for it; an error it had that nobody asked for is dropped."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put("item", item):
                    return
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer
            self._put("error", error)
        else:
            self._put("end", None)
        finally:
            self._items.close()  # runs the generator's cleanup when stopped early

    def _put(self, kind: Literal["item", "error", "end"], value: object) -> bool:
        """Queue one message unless told to stop first; a full queue is retried, not waited
        on forever, so ``close`` never deadlocks with a consumer that has gone."""
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


SWITCH_MIN_CHARS = 30  # shorter sentences are too ambiguous to switch language on


def _sentence_language(sentence: str, overall: str) -> str:
    """A script may switch language; trust a sentence's own language only when it is long."""
    detected = resolve_language("auto", sentence)
    # A non-Latin script names its language even in a short sentence.
    if detected == overall or (len(sentence) < SWITCH_MIN_CHARS and detected in LATIN_DETECTABLE):
        return overall
    return detected


def _speeches(
    text: str,
    sentences: list[str],
    fixed: str | None,
    settings: Settings,
    voice_for: Future[AvatarVoice],
) -> Generator[tuple[str, Speech], None, None]:
    """Each sentence spoken in the avatar's voice (``AvatarVoice.speak``), with its language."""
    # The voice model (~0.4 s to load) loads while the avatar loads on the main thread and,
    # for auto, while the language detector does (~0.4 s): English is the likeliest.
    preload = threading.Thread(
        target=_load_quietly, args=(fixed or "en", settings), name="say-preload", daemon=True
    )
    preload.start()
    try:
        overall = fixed or resolve_language("auto", text)
        voice: AvatarVoice | None = None
        for index, sentence in enumerate(sentences):
            lang = fixed or _sentence_language(sentence, overall)
            if voice is None:
                voice = voice_for.result()  # the avatar, loaded on the main thread
            yield lang, voice.speak(sentence, lang, turn_id=index)
    finally:
        preload.join()


def _load_quietly(language: str, settings: Settings) -> None:
    """Load the process's shared voice model ahead of need (the avatar is not loaded yet);
    its errors surface when it is really asked for."""
    try:
        synth = get_synthesizer(language, settings)
        warm = getattr(synth, "warm_up", None)
        if callable(warm):
            warm()
    except Exception:  # noqa: BLE001 - reported by the real call
        log.debug("preloading the %s voice failed", language, exc_info=True)


class _RendererPool:
    """Renderers kept between scripts of one process (the server's job thread, a worker).

    Building a renderer for an avatar (the mesh2d warp tables, a neural renderer's weights)
    costs 0.5-2 s on two cores, more than everything else before a job's first fragment;
    a job that opts in (``reuse_renderer``) borrows one built for the same avatar and
    settings, cleared, and gives it back after. One script holds a renderer at a time.
    """

    KEEP_PER_KEY = 1
    MAX_KEYS = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, ...], list[Renderer]] = {}

    @staticmethod
    def key(avatar_path: Path, settings: Settings) -> tuple[str, ...]:
        manifest = avatar_path / "manifest.json"
        stamp = str(manifest.stat().st_mtime_ns) if manifest.exists() else ""
        return (
            settings.renderer,
            str(avatar_path),
            stamp,
            str(settings.renderer_model_path or settings.wav2lip_checkpoint or ""),
            settings.renderer_device,
        )

    def take(self, key: tuple[str, ...], build: Callable[[], Renderer]) -> Renderer:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return build()

    def give_back(self, key: tuple[str, ...], renderer: Renderer) -> None:
        renderer.clear()
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.KEEP_PER_KEY:
                idle.append(renderer)
            while len(self._idle) > self.MAX_KEYS:  # the oldest avatar's go
                self._idle.pop(next(iter(self._idle)))


_RENDERER_POOL = _RendererPool()


MAX_USER_AUDIO_S = 600.0
AUDIO_BLOCK_S = 20.0  # user audio is animated in blocks so memory stays bounded


def render_audio(
    audio_path: Path,
    out_path: Path,
    *,
    avatar_name: str = "default",
    settings: Settings | None = None,
    progress: Progress | None = None,
    stream_path: Path | None = None,
    reuse_renderer: bool = False,
) -> ScriptResult:
    """Lip-sync a recording the user brings (no TTS, no timings): the renderer reads the audio.

    With ``stream_path`` the MP4 is fragmented and grows there, readable while it renders
    (``Mp4Writer``), and is renamed to ``out_path`` when complete. ``reuse_renderer``
    borrows a renderer an earlier call in this process built for the same avatar.
    """
    from ..avatars.registry import load_avatar
    from ..media.audio import decode_audio
    from ..media.mp4 import Mp4Writer, check_output_path
    from ..render.registry import create_renderer

    started = time.perf_counter()
    settings = settings or get_settings()
    out_path = check_output_path(out_path)
    pcm = decode_audio(Path(audio_path), OUTPUT_RATE_HZ, max_s=MAX_USER_AUDIO_S)
    avatar = load_avatar(avatar_name, settings=settings)
    key = _RendererPool.key(avatar.path, settings)
    build = lambda: create_renderer(settings.renderer, avatar.face, settings)  # noqa: E731
    renderer = _RENDERER_POOL.take(key, build) if reuse_renderer else build()
    block = int(AUDIO_BLOCK_S * OUTPUT_RATE_HZ)
    size = renderer.size_px
    with Mp4Writer(
        out_path, size, size, background_frames=ENCODE_AHEAD, stream_path=stream_path
    ) as writer:
        for start in range(0, len(pcm), block):
            piece = Speech(0, "", "", pcm[start : start + block], OUTPUT_RATE_HZ)
            for frame in spoken_frames(renderer, piece):
                writer.write(frame.rgb, frame.audio)
            if progress:
                progress(min(start + block, len(pcm)), len(pcm))
        frames = writer.frames
    if reuse_renderer:  # only after a clean finish: a failed render's renderer is dropped
        _RENDERER_POOL.give_back(key, renderer)
    wall = time.perf_counter() - started
    return ScriptResult(out_path, frames, frames / FPS, wall, 0, ())


MAX_SCRIPT_BYTES = 1_000_000  # about 20 hours of speech; a longer script is a mistake
# Control characters (other than line breaks and tabs) are noise to a synthesizer.
_CONTROL_CHARS = {
    code: None for code in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if chr(code) not in "\t\n\r"
}


def check_script_text(text: str | None) -> str:
    """The script with control characters removed, or an error if it has no words to say."""
    if len((text or "").encode("utf-8", errors="replace")) > MAX_SCRIPT_BYTES:
        raise InvalidTextError(
            f"the script is over {MAX_SCRIPT_BYTES / 1e6:.0f} MB; split it into smaller parts"
        )
    clean = (text or "").translate(_CONTROL_CHARS).strip()
    spoken = normalize_for_speech(clean)
    if not spoken:
        raise InvalidTextError("nothing to say: the text is empty; pass some words or --text-file")
    if not any(char.isalnum() for char in spoken):
        raise InvalidTextError(
            f"nothing to say: {clean[:40]!r} has no words, only punctuation or symbols; "
            "pass some words to speak"
        )
    return clean


def render_script(
    text: str,
    out_path: Path,
    *,
    avatar_name: str = "default",
    language: str = "auto",
    settings: Settings | None = None,
    progress: Progress | None = None,
    stream_path: Path | None = None,
    reuse_renderer: bool = False,
) -> ScriptResult:
    """Speak ``text`` with the avatar into an MP4; memory stays flat with text length.

    With ``stream_path`` the MP4 is fragmented and grows there, readable while it renders
    (``Mp4Writer``), and is renamed to ``out_path`` when complete. ``progress`` is called
    after each sentence; an exception it raises stops the work and removes the partial file.
    ``reuse_renderer`` borrows a renderer an earlier call in this process built for the
    same avatar (``_RendererPool``), so a job's first frames do not wait for one.
    """
    from ..media.mp4 import check_output_path

    started = time.perf_counter()
    settings = settings or get_settings()
    clean = check_script_text(text)
    out_path = check_output_path(out_path)
    sentences = split_sentences(clean)
    # Fail on an unsupported language before any rendering starts.
    fixed = None if language == "auto" else resolve_language(language, clean)
    if fixed is None:
        for sentence in sentences:
            script_language(sentence)  # a script no voice is mapped to: refused now, not later
    if fixed is not None:
        get_synthesizer(fixed, settings)
    voice_for: Future[AvatarVoice] = Future()
    speeches = _Prefetcher(
        _speeches(clean, sentences, fixed, settings, voice_for), SPEECH_AHEAD, "say-speech"
    )
    try:
        from ..avatars.registry import load_avatar
        from ..media.mp4 import Mp4Writer
        from ..render.registry import create_renderer

        avatar = load_avatar(avatar_name, settings=settings)
        voice_for.set_result(AvatarVoice.for_avatar(avatar, settings))
        key = _RendererPool.key(avatar.path, settings)
        build = lambda: create_renderer(settings.renderer, avatar.face, settings)  # noqa: E731
        renderer: Renderer = _RENDERER_POOL.take(key, build) if reuse_renderer else build()
        total_chars = sum(len(s) for s in sentences)
        done_chars = 0
        languages: list[str] = []
        size = renderer.size_px
        with Mp4Writer(
            out_path, size, size, background_frames=ENCODE_AHEAD, stream_path=stream_path
        ) as writer:

            def idle(count: int) -> None:
                for _ in range(count):
                    frame = renderer.next_frame()
                    writer.write(frame.rgb, frame.audio)

            idle(LEAD_IN_FRAMES)
            for index, (lang, speech) in enumerate(speeches):
                if lang not in languages:
                    languages.append(lang)
                for frame in spoken_frames(renderer, speech):
                    writer.write(frame.rgb, frame.audio)
                idle(PAUSE_FRAMES if index < len(sentences) - 1 else TAIL_FRAMES)
                done_chars += len(sentences[index])
                if progress:
                    progress(done_chars, total_chars)
            frames = writer.frames
        if reuse_renderer:  # only after a clean finish: a failed render's renderer is dropped
            _RENDERER_POOL.give_back(key, renderer)
    finally:
        voice_for.cancel()  # wakes the worker if the avatar never loaded
        speeches.close()
    wall = time.perf_counter() - started
    result = ScriptResult(out_path, frames, frames / FPS, wall, len(sentences), tuple(languages))
    log.info("wrote %s: %.1f s of video in %.1f s", out_path, result.duration_s, wall)
    return result
