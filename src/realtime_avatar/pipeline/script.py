"""Script to video: text -> sentences -> TTS -> voice match -> animation -> MP4, streamed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..animate.mouth import AudioAnimator
from ..avatars.registry import load_avatar
from ..constants import FPS, OUTPUT_RATE_HZ
from ..errors import InvalidTextError
from ..frames import Speech
from ..media.audio import decode_audio
from ..media.mp4 import Mp4Writer, check_output_path
from ..render.registry import create_renderer
from ..settings import Settings, get_settings
from ..text.chunker import normalize_for_speech, split_sentences
from ..text.language import resolve_language
from ..tts.registry import get_synthesizer
from ..voice.base import VoiceMatcher
from .avsync import AVSynth
from .matching import build_matcher

log = logging.getLogger(__name__)

LEAD_IN_FRAMES = 8  # a third of a second of the idle face before the first word
PAUSE_FRAMES = 4  # between sentences, on top of the synthesizer's own silence
TAIL_FRAMES = 12

Progress = Callable[[int, int], None]


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


SWITCH_MIN_CHARS = 30  # shorter sentences are too ambiguous to switch language on


def _sentence_language(sentence: str, overall: str) -> str:
    """A script may switch language; trust a sentence's own language only when it is long."""
    detected = resolve_language("auto", sentence)
    if detected == overall or (len(sentence) < SWITCH_MIN_CHARS and detected != "zh"):
        return overall
    return detected


MAX_USER_AUDIO_S = 600.0
AUDIO_BLOCK_S = 20.0  # user audio is animated in blocks so memory stays bounded


def render_audio(
    audio_path: Path,
    out_path: Path,
    *,
    avatar_name: str = "default",
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> ScriptResult:
    """Lip-sync a recording the user brings (no TTS): the mouth follows the audio alone."""
    started = time.perf_counter()
    settings = settings or get_settings()
    out_path = check_output_path(out_path)
    pcm = decode_audio(Path(audio_path), OUTPUT_RATE_HZ, max_s=MAX_USER_AUDIO_S)
    avatar = load_avatar(avatar_name, settings=settings)
    renderer = create_renderer(settings.renderer, avatar.face_rgb, avatar.landmarks)
    av_synth = AVSynth(renderer, AudioAnimator())
    block = int(AUDIO_BLOCK_S * OUTPUT_RATE_HZ)
    with Mp4Writer(out_path, renderer.size_px, renderer.size_px) as writer:
        for start in range(0, len(pcm), block):
            piece = Speech(0, "", "", pcm[start : start + block], OUTPUT_RATE_HZ)
            for frame in av_synth.speech_frames(piece):
                writer.write(frame.rgb, frame.audio)
            if progress:
                progress(min(start + block, len(pcm)), len(pcm))
        frames = writer.frames
    wall = time.perf_counter() - started
    return ScriptResult(out_path, frames, frames / FPS, wall, 0, ())


def render_script(
    text: str,
    out_path: Path,
    *,
    avatar_name: str = "default",
    language: str = "auto",
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> ScriptResult:
    """Speak ``text`` with the avatar into an MP4; memory stays flat with text length."""
    started = time.perf_counter()
    settings = settings or get_settings()
    clean = (text or "").strip()
    if not normalize_for_speech(clean).strip():
        raise InvalidTextError("nothing to say: the text is empty; pass some words or --text-file")
    out_path = check_output_path(out_path)
    sentences = split_sentences(clean)
    # Fail on an unsupported language before any rendering starts.
    fixed = None if language == "auto" else resolve_language(language, clean)
    if fixed is not None:
        get_synthesizer(fixed, settings)
    overall = fixed or resolve_language("auto", clean)
    avatar = load_avatar(avatar_name, settings=settings)
    renderer = create_renderer(settings.renderer, avatar.face_rgb, avatar.landmarks)
    av_synth = AVSynth(renderer)
    matchers: dict[str, VoiceMatcher] = {}
    total_chars = sum(len(s) for s in sentences)
    done_chars = 0
    languages: list[str] = []
    with Mp4Writer(out_path, renderer.size_px, renderer.size_px) as writer:
        for _ in range(LEAD_IN_FRAMES):
            frame = av_synth.idle_frame()
            writer.write(frame.rgb, frame.audio)
        for index, sentence in enumerate(sentences):
            lang = fixed or _sentence_language(sentence, overall)
            synth = get_synthesizer(lang, settings)
            if lang not in matchers:
                matchers[lang] = build_matcher(settings, avatar, synth, lang)
                languages.append(lang)
            speech = matchers[lang].convert(synth.synthesize(sentence, lang, turn_id=index))
            for frame in av_synth.speech_frames(speech):
                writer.write(frame.rgb, frame.audio)
            for _ in range(PAUSE_FRAMES if index < len(sentences) - 1 else TAIL_FRAMES):
                frame = av_synth.idle_frame()
                writer.write(frame.rgb, frame.audio)
            done_chars += len(sentence)
            if progress:
                progress(done_chars, total_chars)
        frames = writer.frames
    wall = time.perf_counter() - started
    result = ScriptResult(out_path, frames, frames / FPS, wall, len(sentences), tuple(languages))
    log.info("wrote %s: %.1f s of video in %.1f s", out_path, result.duration_s, wall)
    return result
