"""Figure groups that need no server: rendering, text to speech, and `avatar say`.

Each is ``(BenchContext) -> list[Figure]``: it warms up (discarded), then takes samples.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ..engine.voice import AvatarVoice, as_spoken, reply_chunker
from ..frames import AVFrame, Speech
from .figures import BenchContext, Figure, Target

RENDER_WARMUP_FRAMES = 20
SAY_TIMEOUT_S = 600.0  # a hung `avatar say` must not hang the benchmark
# About 17 s of English speech with the default voice.
SAY_SCRIPT = (
    "Hello, and welcome to realtime avatar. I was made from a single photo and a short "
    "voice sample. Everything you see and hear runs on an ordinary computer, without any "
    "cloud service. My lips follow every sound I make, and my eyes blink now and then. "
    "Thank you for watching!"
)
# Typical first replies of a conversation; the first piece the chunker cuts is what the
# user waits for.
REPLIES: dict[str, list[str]] = {
    "en": [
        "Sure, I can help with that. The weather tomorrow looks sunny and warm.",
        "That is a great question! Let me think about it for a moment.",
        "Hello there, it is nice to meet you. What would you like to talk about today?",
        "Honestly, I think the second option is better, because it is much simpler.",
    ],
    "es": [
        "Claro, puedo ayudarte con eso. Mañana hará sol y calor.",
        "¡Qué buena pregunta! Déjame pensarlo un momento.",
        "Hola, encantada de conocerte. ¿De qué te gustaría hablar hoy?",
        "Sinceramente, creo que la segunda opción es mejor, porque es más sencilla.",
    ],
    "zh": [
        "当然，我可以帮你。明天天气晴朗，也很暖和。",
        "这是个好问题！让我想一想。",
        "你好，很高兴认识你。今天你想聊些什么？",
        "说实话，我觉得第二个方案更好，因为它简单得多。",
    ],
}
FIRST_AUDIO_TARGET_MS: dict[str, float] = {"en": 150.0}  # es/zh: measured, no goal yet


@contextmanager
def one_core() -> Iterator[str]:
    """Run the calling thread on one core with OpenCV single-threaded; restore both after.

    Yields a note for the figure saying which core (or that pinning is unavailable).
    """
    threads = cv2.getNumThreads()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cv2.setNumThreads(1)
    try:
        if cores:
            core = min(cores)
            os.sched_setaffinity(0, {core})
            yield f"pinned to core {core}, cv2 1 thread"
        else:
            yield "not pinned (no sched_setaffinity here), cv2 1 thread"
    finally:
        if cores:
            os.sched_setaffinity(0, cores)
        cv2.setNumThreads(threads)


SPEECH_FRAMES, IDLE_FRAMES = 40, 10  # speech-like: 1.6 s pieces with 0.4 s of idle between


def _speech_piece(index: int, rate_hz: int = 16_000) -> Speech:
    """1.6 s of speech-like sound: noise at syllable rate (4 Hz), no timings given."""
    rng = np.random.default_rng(index)
    t = np.arange(int(SPEECH_FRAMES * 0.04 * rate_hz)) / rate_hz
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + index), 0.0, 1.0)
    pcm = (0.3 * syllables * rng.standard_normal(len(t))).astype(np.float32)
    return Speech(index, "", "en", pcm, rate_hz)


def render_figures(ctx: BenchContext) -> list[Figure]:
    """Milliseconds per frame on one core through the render seam, and with H.264 after it.

    The configured renderer is pushed speech-like pieces and pulled once per frame, as a
    call pulls it: 40 frames of speech, 10 idle, over and over.
    """
    from ..media.mp4 import Mp4Writer
    from ..render.registry import create_renderer

    avatar = ctx.default_avatar
    frames = ctx.repeats(200, 750)  # 8 s / 30 s of video
    total = 2 * (RENDER_WARMUP_FRAMES + frames)

    def pull(count: int, on_frame: Callable[[AVFrame], None], label: str, done: int) -> list[float]:
        renderer = create_renderer(ctx.settings.renderer, avatar.face, ctx.settings)
        spent: list[float] = []
        for i in range(count):
            if i % (SPEECH_FRAMES + IDLE_FRAMES) == IDLE_FRAMES:
                renderer.push(_speech_piece(i))
            start = time.perf_counter()
            on_frame(renderer.next_frame())
            if i >= RENDER_WARMUP_FRAMES:
                spent.append((time.perf_counter() - start) * 1000)
            if i % 25 == 0:
                ctx.progress(label, done + i, total)
        return spent

    count = RENDER_WARMUP_FRAMES + frames
    size = ctx.settings.render_size_px
    with one_core() as pinning:
        render_ms = pull(count, lambda _frame: None, "rendering", 0)
        with Mp4Writer(ctx.work_dir / "render.mp4", size, size) as out:
            encode_ms = pull(
                count, lambda frame: out.write(frame.rgb, frame.audio), "rendering + H.264", count
            )
    notes = f"{ctx.settings.renderer} {size}x{size} through the render seam, {pinning}"
    return [
        Figure(
            "render_ms",
            "render frame",
            "ms",
            render_ms,
            Target("<=", 6.0, "p50"),
            notes,
            "avatar bench --only render",
        ),
        Figure(
            "render_h264_ms",
            "render + H.264",
            "ms",
            encode_ms,
            Target("<=", 10.0, "p50"),
            notes + ", libx264 veryfast + AAC",
            "avatar bench --only render",
        ),
    ]


def _first_piece(reply: str) -> tuple[str, bool]:
    """The first piece a streaming reply speaks, cut and worded as the live session does,
    and whether more of the reply follows it."""
    chunker = reply_chunker()
    pieces = chunker.push(reply)
    more = bool(pieces)  # pushed pieces have more reply after them
    return as_spoken((pieces or chunker.flush())[0], more), more


def _first_audio_ms(voice: AvatarVoice, piece: tuple[str, bool], lang: str) -> float:
    """Milliseconds until a reply's first piece is ready to play, made as the session makes it."""
    text, more = piece
    start = time.perf_counter()
    voice.speak(text, lang, turn_id=1, first=True, more=more)
    return (time.perf_counter() - start) * 1000


def tts_figures(ctx: BenchContext) -> list[Figure]:
    """Per language: time to the first spoken piece (synthesis + voice matching), and RTF."""
    from ..text.chunker import split_sentences

    voice = AvatarVoice.for_avatar(ctx.default_avatar, ctx.settings)
    rounds = ctx.repeats(2, 6)
    rtf_rounds = ctx.repeats(1, 3)
    sentences = {
        lang: [s for reply in replies for s in split_sentences(reply)]
        for lang, replies in REPLIES.items()
    }
    total = sum(
        1 + rounds * len(REPLIES[lang]) + rtf_rounds * len(sentences[lang]) for lang in REPLIES
    )
    done = 0
    figures: list[Figure] = []
    for lang, replies in REPLIES.items():
        ctx.progress(f"TTS {lang}: loading", done, total)
        synth = voice.synthesizer(lang)
        # Measures the synthesizer's voice once (cached in the data dir): not part of a turn.
        matcher = voice.matcher(lang)
        pieces = [_first_piece(reply) for reply in replies]

        _first_audio_ms(voice, pieces[0], lang)  # warm-up: lazy loads, allocations
        done += 1
        first_ms: list[float] = []
        for _ in range(rounds):
            for piece in pieces:
                ctx.progress(f"TTS {lang}: first audio", done, total)
                first_ms.append(_first_audio_ms(voice, piece, lang))
                done += 1
        rtf: list[float] = []
        for _ in range(rtf_rounds):
            for sentence in sentences[lang]:
                ctx.progress(f"TTS {lang}: real-time factor", done, total)
                start = time.perf_counter()
                speech = synth.synthesize(sentence, lang)
                rtf.append((time.perf_counter() - start) / max(speech.duration_s, 1e-3))
                done += 1
        target_ms = FIRST_AUDIO_TARGET_MS.get(lang)
        figures += [
            Figure(
                f"tts_first_audio_ms_{lang}",
                f"TTS first audio {lang}",
                "ms",
                first_ms,
                Target("<=", target_ms, "p50") if target_ms is not None else None,
                f"{synth.name}; first chunker piece of {len(pieces)} replies, "
                f"synthesis + {matcher.name} voice matching",
                "avatar bench --only tts --suite full",
            ),
            Figure(
                f"tts_rtf_{lang}",
                f"TTS RTF {lang}",
                "x",
                rtf,
                None,
                f"{synth.name}; synthesis time / audio duration over "
                f"{len(sentences[lang])} whole sentences, no voice matching",
                "avatar bench --only tts --suite full",
            ),
        ]
    return figures


def video_duration_s(path: Path) -> float:
    """Length of a media file in seconds, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        if container.duration is not None:
            return float(container.duration / av.time_base)
        stream = container.streams.video[0]
        if stream.duration is None or stream.time_base is None:
            raise RuntimeError(f"{path} does not say how long it is")
        return float(stream.duration * stream.time_base)


def _run_say(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run one `avatar say` subprocess: wall seconds and its peak RSS in MB."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # wait4 (not Popen.wait) gives this child's own resource usage; poll for a timeout.
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > SAY_TIMEOUT_S:
                    raise TimeoutError(f"avatar say took over {SAY_TIMEOUT_S:.0f} s")
                time.sleep(0.005)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            lines = log.read().decode("utf-8", errors="replace").strip().splitlines()
            last = lines[-1] if lines else "no output"
            raise RuntimeError(f"avatar say exited with code {proc.returncode}: {last}")
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    rss_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return wall_s, rss_mb


def say_figures(ctx: BenchContext) -> list[Figure]:
    """Wall time and real-time factor of `avatar say` for a ~17 s English script."""
    out = ctx.work_dir / "say.mp4"
    command = [
        sys.executable,
        "-m",
        "realtime_avatar.cli",
        "say",
        SAY_SCRIPT,
        "--lang",
        "en",
        "-o",
        str(out),
    ]
    env = dict(os.environ, AVATAR_DATA_DIR=str(ctx.data_dir))
    runs = ctx.repeats(1, 3)
    ctx.progress("avatar say: setting up", 0, runs + 2)
    _ = ctx.default_avatar  # registered here, not inside the timed runs
    ctx.progress("avatar say: warm-up run", 1, runs + 2)
    _run_say(command, env)  # warm-up: OS file cache, voice-profile cache in the data dir
    wall: list[float] = []
    rtf: list[float] = []
    rss: list[float] = []
    durations: list[float] = []
    for run in range(runs):
        ctx.progress(f"avatar say: run {run + 1}/{runs}", run + 2, runs + 2)
        out.unlink(missing_ok=True)
        wall_s, rss_mb = _run_say(command, env)
        video_s = video_duration_s(out)
        wall.append(wall_s)
        rtf.append(wall_s / video_s)
        rss.append(rss_mb)
        durations.append(video_s)
    notes = f"{durations[-1]:.1f} s of video; whole process, start-up included"
    hint = 'avatar say "..." --lang en -o out.mp4'
    return [
        Figure("say_wall_s", "say wall time", "s", wall, Target("<=", 5.0), notes, hint),
        Figure("say_rtf", "say RTF", "x", rtf, Target("<=", 0.3), notes, hint),
        Figure("say_peak_rss_mb", "say peak RSS", "MB", rss, None, notes, hint),
    ]
