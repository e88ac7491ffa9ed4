"""Live figures: the real ``avatar serve`` and an aiortc client speaking clips whose speech
ends (and starts) are known to the sample.

Every time below is on one clock: the client and the server run on this machine and both
read ``time.monotonic()``. The client names frames by the server's frame index (the
server tells it which frame its RTP clock started on), so "the first frame of the answer"
and "the last frame of an interrupted answer" are exact, not guessed from pixels.

- ``asr_figures``: the recognizer in the engine's ``Conversation`` (real VAD, real-time
  mic pace), the reply side cut short.
- ``conversation_figures``: voice to first frame, voice to first sound, the ASR final
  after the end of speech, barge-in, over one call of spoken questions.
- ``fps_figures``: frames per second delivered to 1, 2 and 4 calls at once, each talking,
  with the server's CPU per session, peak memory and event-loop lag (p99, from its
  ``/metrics`` histogram).
- ``soak_figures``: one call for minutes (30 in the full suite); memory must stay flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import ASR_RATE_HZ
from ..events import ErrorEvent, StatusEvent, TranscriptEvent, TurnEvent
from ..frames import Speech, Transcript
from .figures import BenchContext, Figure, Target

QUESTIONS = [
    "What is your name?",
    "Where do you run?",
    "Do you speak Spanish?",
    "How are you today?",
    "What can you do?",
    "Who made you?",
    "Can I make my own avatar?",
    "Thank you very much.",
    "Tell me a joke.",
    "What languages do you speak?",
]
LONG_ANSWER_QUESTION = "Can I make my own avatar?"  # the persona answers in several sentences
INTERRUPTIONS = ["Wait, stop.", "Hold on a second.", "Sorry, one moment."]
LIVE_COMMAND = "avatar bench --only {group}"


@cache
def _speech(text: str) -> np.ndarray:
    """``text`` spoken by Piper into the client's microphone (cached per text)."""
    from ..evaluate.rtc_client import mic_audio

    return mic_audio(text, "en")


def proc_stats(pid: int) -> tuple[float, float]:
    """CPU seconds used and RSS in MiB of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    rss_mib = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu_s, rss_mib


@contextlib.contextmanager
def _server(ctx: BenchContext, **env: str) -> Iterator[Any]:
    from ..evaluate.server_proc import running_server

    ctx.default_avatar  # noqa: B018 - registered before the server starts, not inside it
    with running_server(ctx.data_dir, ctx.work_dir / "logs", **env) as server:
        yield server


@dataclass
class _Sampler:
    """Samples a process's RSS in the background while a call runs."""

    pid: int
    every_s: float = 1.0
    rss_mib: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.rss_mib.append((time.monotonic(), proc_stats(self.pid)[1]))
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def peak(self) -> float:
        return max((r for _, r in self.rss_mib), default=float("nan"))


# ------------------------------------------------------------------------------------ ASR
class _RecordingResponder:
    """A ``Responder`` that notes when it is asked, and with what words; answers one word."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []  # (time.monotonic(), the user's words)

    async def respond(self, history: list[Any], text: str, language: str) -> AsyncIterator[str]:
        self.calls.append((time.monotonic(), text))
        yield "Okay."


class _SilentSpeech:
    """A ``SpeechMaker`` that says nothing for one frame: the reply ends at once."""

    def speak(
        self, text: str, language: str, turn_id: int = 0, *, first: bool = False, more: bool = False
    ) -> Speech:
        return Speech(turn_id, text, language, np.zeros(ASR_RATE_HZ // 25, np.float32), ASR_RATE_HZ)


class _BlankDrawer:
    """A ``FaceDrawer`` that draws nothing worth seeing: 8x8 grey."""

    name = "blank"
    size_px = 8

    def render(self, params: Any) -> np.ndarray:
        return np.full((self.size_px, self.size_px, 3), 128, np.uint8)


class _Utterances:
    """The real recognizer, its utterances kept by turn for their decode time."""

    def __init__(self, recognizer: Any) -> None:
        self.recognizer = recognizer
        self.name: str = recognizer.name
        self.by_turn: dict[int, Any] = {}

    def languages(self) -> frozenset[str]:
        return frozenset(self.recognizer.languages())

    def start(self, turn_id: int, language: str = "auto") -> Any:
        utterance = self.by_turn[turn_id] = self.recognizer.start(turn_id, language)
        return utterance


async def _listen(ctx: BenchContext, recognizer: Any, questions: list[str]) -> dict[str, Any]:
    """Speak ``questions`` into a ``Conversation`` at real-time pace; time each turn."""
    from ..engine.conversation import Conversation, Stages
    from ..engine.turns import same_words
    from ..evaluate.rtc_client import MIC_RATE_HZ
    from ..media.audio import resample
    from ..render.animated import AnimatedRenderer
    from ..vad.registry import get_vad

    settings = ctx.settings
    responder = _RecordingResponder()
    utterances = _Utterances(recognizer)
    events: list[tuple[float, Any]] = []
    conv = Conversation(
        Stages(
            vad=get_vad(settings=settings),
            recognizer=utterances,
            responder=responder,
            speech=_SilentSpeech(),
            renderer=AnimatedRenderer(_BlankDrawer()),
        ),
        language="en",
        on_event=lambda event: events.append((time.monotonic(), event)),
        max_utterance_s=settings.max_utterance_s,
    )
    chunk = ASR_RATE_HZ // 50  # 20 ms, as the transport hands mic audio over
    fed = 0  # samples fed since ``began``
    out: dict[str, Any] = {"ready": [], "commit": [], "rtf": [], "speculative": [], "missed": 0}
    await conv.start()
    began = time.monotonic()

    async def feed(block: np.ndarray) -> float:
        """Feed ``block`` once it has been spoken; return when it was fed."""
        nonlocal fed
        fed += len(block)
        await asyncio.sleep(max(began + fed / ASR_RATE_HZ - time.monotonic(), 0.0))
        at = time.monotonic()
        await conv.push_mic(block)
        if fed // chunk % 2 == 0:
            conv.next_frame()  # the transport pulls a frame every 40 ms
        return at

    def turn_event(since: int) -> TurnEvent | None:
        """The report of the latest turn, once it has ended."""
        for _, event in events[since:]:
            if isinstance(event, TurnEvent) and event.turn_id == conv.turn_id:
                return event
        return None

    try:
        for index, question in enumerate(questions):
            ctx.progress("ASR", index, len(questions))
            speech = resample(_speech(question), MIC_RATE_HZ, ASR_RATE_HZ)
            voiced = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
            lead = np.zeros(int(0.5 * ASR_RATE_HZ), np.float32)
            pcm = np.concatenate([lead, speech, np.zeros(ASR_RATE_HZ, np.float32)])
            last_voiced = len(lead) + voiced[-1] + 1  # samples up to the last voiced one
            since = len(events)
            responder.calls.clear()
            speech_end = float("nan")
            for start in range(0, len(pcm), chunk):
                block = pcm[start : start + chunk]
                at = await feed(block)
                if start < last_voiced <= start + len(block):
                    # That sample was spoken (start + len(block) - last_voiced) samples
                    # before its chunk was complete and handed over.
                    speech_end = at - (start + len(block) - last_voiced) / ASR_RATE_HZ
            silence = np.zeros(chunk, np.float32)
            for _ in range(5 * 50):  # the mic stays open until the turn has ended
                if turn_event(since) is not None:
                    break
                await feed(silence)
            ended = turn_event(since)
            finals = [
                (t, e)
                for t, e in events[since:]
                if isinstance(e, TranscriptEvent)
                and e.role == "user"
                and e.final
                and e.turn_id == conv.turn_id
            ]
            if index == 0:
                continue  # the first round warms the models up
            if not finals or ended is None:
                out["missed"] += 1
                continue
            committed, final = finals[-1]
            # The reply the turn played was asked for last with the final words: at the
            # pause when the speculation was released, else after the commit.
            heard = Transcript(final.turn_id, final.text, True)
            asked = [
                t for t, text in responder.calls if same_words(Transcript(0, text, True), heard)
            ]
            if not asked:
                out["missed"] += 1
                continue
            out["ready"].append((asked[-1] - speech_end) * 1000)
            out["commit"].append((committed - speech_end) * 1000)
            out["speculative"].append(ended.speculative)
            utterance = utterances.by_turn.get(final.turn_id)
            decode_s = float(getattr(utterance, "decode_seconds", float("nan")))
            out["rtf"].append(decode_s / (len(speech) / ASR_RATE_HZ))
    finally:
        await conv.close()
    ctx.progress("ASR", len(questions), len(questions))
    return out


def asr_figures(ctx: BenchContext) -> list[Figure]:
    """The recognizer as the live session runs it: the engine's ``Conversation``, real time.

    Each question is fed in 20 ms chunks at real-time pace through a ``Conversation`` with
    the real VAD and recognizer; the reply side is cut short (a one-word responder that
    notes when it is asked, silent speech, a blank face). The transcript is ready when the
    responder is asked with the final words (at the pause, when the speculative reply is
    released; else at the commit); the turn is committed when the final user transcript
    event goes out. Both are wall-clock times after the last voiced sample was fed.
    """
    from ..asr.registry import get_recognizer

    settings = ctx.settings
    recognizer = get_recognizer(settings=settings)
    rounds = ctx.repeats(10, 20)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(rounds + 1)]
    data = asyncio.run(_listen(ctx, recognizer, questions))
    released = sum(data["speculative"])
    note = (
        f"{recognizer.name} in the engine's Conversation with the real VAD, fed 20 ms chunks "
        "at real-time pace; from when the last voiced sample was spoken (its chunk is fed "
        f"once complete); VAD pause {settings.vad_pause_ms} ms, end "
        f"{settings.vad_min_silence_ms} ms"
    )
    if data["missed"]:
        note += f"; {data['missed']} round(s) ended no turn with a transcript: left out"
    command = LIVE_COMMAND.format(group="asr")
    return [
        Figure(
            "asr_final_ms",
            "ASR final transcript after end of speech",
            "ms",
            data["ready"],
            Target("<=", 250.0),
            note + "; ready when the responder is asked with the final words: at the pause "
            f"when the speculative reply is released ({released} of "
            f"{len(data['speculative'])} turns), else at the commit",
            command,
        ),
        Figure(
            "asr_turn_commit_ms",
            "turn committed (VAD end) after end of speech",
            "ms",
            data["commit"],
            None,
            note + "; the final user transcript event (VAD end, then the final decode)",
            command,
        ),
        Figure(
            "asr_rtf",
            "ASR real-time factor (all decodes)",
            "x",
            data["rtf"],
            None,
            "decode time of the partials, the pause's peek and the final per second of speech",
            command,
        ),
    ]


# ------------------------------------------------------------------------------------ calls
async def _wait_turn(call: Any, since: int, interrupted: bool, timeout_s: float = 40) -> TurnEvent:
    turn = await call.wait_for_event(
        lambda e: isinstance(e, TurnEvent) and e.interrupted == interrupted,
        timeout_s,
        since=since,
    )
    assert isinstance(turn, TurnEvent)
    return turn


async def _ask(call: Any, question: str) -> tuple[Any, TurnEvent]:
    """Say ``question``; return its clip and the turn event once the answer has played."""
    seen = len(call.record.events)
    clip = call.mic.say_now(_speech(question), lead_s=0.1)
    turn = await _wait_turn(call, seen, interrupted=False)
    await asyncio.sleep(0.3)  # the answer's last frames are still on the way
    return clip, turn


async def _conversation(base: str, turns: int, barge_ins: int, ctx: BenchContext) -> dict:
    from ..evaluate.rtc_client import AvatarCall

    call: Any = AvatarCall(base, [])
    await call.start()
    out: dict[str, list[float]] = {
        "first_frame": [],
        "first_audio": [],
        "asr_final": [],
        "server_first_frame": [],
        "mic_path": [],
        "barge_in": [],
        "speculative": [],
    }
    total = turns + barge_ins + 1
    try:
        await asyncio.sleep(1.0)
        await _ask(call, QUESTIONS[0])  # warm-up: first decode, first synthesis
        for i in range(turns):
            ctx.progress("conversation", i + 1, total)
            clip, turn = await _ask(call, QUESTIONS[(i + 1) % len(QUESTIONS)])
            end = clip.speech_end_s
            frame = call.record.arrival_of_frame(turn.first_frame_index)
            sound = call.record.first_answer_audio(end)
            if frame is not None:
                out["first_frame"].append((frame - end) * 1000)
            if sound is not None:
                out["first_audio"].append((sound - end) * 1000)
            if turn.asr_final_ms is not None:
                asr_mono = turn.speech_end_mono + turn.asr_final_ms / 1000
                out["asr_final"].append((asr_mono - end) * 1000)
                out.setdefault("server_asr_final_ms", []).append(turn.asr_final_ms)
            if turn.first_frame_ms is not None:
                out["server_first_frame"].append(turn.first_frame_ms)
            if turn.first_audio_ms is not None:
                out.setdefault("server_first_audio_ms", []).append(turn.first_audio_ms)
            out["mic_path"].append((turn.speech_end_mono - end) * 1000)
            out["speculative"].append(1.0 if turn.speculative else 0.0)
            out.setdefault("gap_ms", []).append(40.0 * turn.gap_frames)
        for i in range(barge_ins):
            ctx.progress("barge-in", turns + i + 1, total)
            seen = len(call.record.events)
            call.mic.say_now(_speech(LONG_ANSWER_QUESTION), lead_s=0.1)
            await call.wait_for_event(
                lambda e: isinstance(e, StatusEvent) and e.state == "speaking",
                40,
                since=seen,
            )
            await asyncio.sleep(0.8 + 0.2 * (i % 3))  # well into the answer
            seen = len(call.record.events)
            clip = call.mic.say_now(_speech(INTERRUPTIONS[i % len(INTERRUPTIONS)]), lead_s=0.05)
            stopped = await _wait_turn(call, seen, interrupted=True)
            await _wait_turn(call, seen, interrupted=False)  # the reply to the interruption
            await asyncio.sleep(0.3)
            last = call.record.arrival_of_frame(stopped.last_frame_index)
            if last is not None and clip.speech_start_s:
                out["barge_in"].append((last - clip.speech_start_s) * 1000)
        ctx.progress("conversation", total, total)
        out["fps"] = [call.record.fps(since_s=1.0)]
    finally:
        await call.close()
    return out


def conversation_figures(
    ctx: BenchContext, turns: int | None = None, barge_ins: int | None = None
) -> list[Figure]:
    """Voice to first frame, first sound, ASR final, barge-in: one call, spoken questions."""
    turns = ctx.repeats(8, 20) if turns is None else turns
    barge_ins = ctx.repeats(3, 10) if barge_ins is None else barge_ins
    with _server(ctx) as server:
        data = asyncio.run(_conversation(server.base_url, turns, barge_ins, ctx))
    command = LIVE_COMMAND.format(group="conversation")
    client = "aiortc client on loopback, frames handed over when complete (as a browser does)"
    speculative = sum(data["speculative"])
    return [
        Figure(
            "voice_to_first_frame_ms",
            "voice to first frame of the answer",
            "ms",
            data["first_frame"],
            Target("<=", 600.0),
            f"{client}; end of speech in the mic audio -> arrival of the answer's first "
            f"frame; {speculative:.0f} of {len(data['speculative'])} turns released a "
            "speculative reply",
            command,
        ),
        Figure(
            "voice_to_first_frame_p95_ms",
            "voice to first frame (p95 target)",
            "ms",
            data["first_frame"],
            Target("<=", 900.0, "p95"),
            "same samples as voice_to_first_frame_ms",
            command,
        ),
        Figure(
            "voice_to_first_sound_ms",
            "voice to first audible answer audio",
            "ms",
            data["first_audio"],
            None,
            client,
            command,
        ),
        Figure(
            "asr_final_live_ms",
            "ASR transcript ready after end of speech (live)",
            "ms",
            data["asr_final"],
            Target("<=", 250.0),
            "server mark of the transcript the reply used, from the end of speech in the "
            "client's mic audio",
            command,
        ),
        Figure(
            "server_first_frame_ms",
            "server: VAD speech end -> first answer frame",
            "ms",
            data["server_first_frame"],
            None,
            "inside the server, from the VAD's back-dated end of speech",
            command,
        ),
        Figure(
            "server_asr_final_ms",
            "server: VAD speech end -> transcript",
            "ms",
            data.get("server_asr_final_ms", []),
            None,
            "pause (vad_pause_ms) plus the peek decode",
            command,
        ),
        Figure(
            "server_first_audio_ms",
            "server: VAD speech end -> first clause voiced",
            "ms",
            data.get("server_first_audio_ms", []),
            None,
            "transcript, reply, first clause's TTS and voice match",
            command,
        ),
        Figure(
            "mic_path_ms",
            "mic path: end of speech -> server's speech-end mark",
            "ms",
            data["mic_path"],
            None,
            "Opus, network, receive buffer, resampling, VAD frame",
            command,
        ),
        Figure(
            "answer_gap_ms",
            "silence inside an answer (next piece late)",
            "ms",
            data.get("gap_ms", []),
            Target("<=", 0.0, "p95"),
            "idle frames between the first and last frame of each answer: a piece that "
            "was not synthesized by the time the one before it ended",
            command,
        ),
        Figure(
            "barge_in_ms",
            "barge-in: user speech onset -> last answer frame",
            "ms",
            data["barge_in"],
            Target("<=", 300.0, "p95"),
            "arrival of the interrupted answer's last frame after the interruption's "
            "first voiced sample",
            command,
        ),
    ]


# ------------------------------------------------------------------------------------ scale
LOOP_LAG_METRIC = "avatar_event_loop_lag_seconds"


def histogram_buckets(exposition: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts ``{upper bound: count}`` of histogram ``name`` in a
    Prometheus text exposition (``/metrics``); empty if it is not there."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def quantile_from_buckets(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The ``q`` quantile (0..1) of what a histogram observed between two scrapes.

    At bucket resolution: the upper bound of the bucket the quantile falls in (so the
    true value is at most this). Beyond the last finite bound it is that bound (the true
    value is then at least this). NaN when nothing was observed in between.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    finite = [b for b in bounds if math.isfinite(b)]
    rank = q * counts[-1]
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            return bound if math.isfinite(bound) else (finite[-1] if finite else bound)
    return finite[-1] if finite else float("nan")


async def _loop_lag_buckets(base: str) -> dict[float, float]:
    """The server's event-loop lag histogram, scraped from ``/metrics``."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        res = await http.get(f"{base}/metrics")
    res.raise_for_status()
    return histogram_buckets(res.text, LOOP_LAG_METRIC)


async def _talking_calls(base: str, n: int, seconds: float, pid: int) -> dict:
    from ..evaluate.rtc_client import AvatarCall

    calls = [AvatarCall(base, [], measure_mouth=False) for _ in range(n)]
    for call in calls:
        await call.start()
    sampler = _Sampler(pid)
    sampler.start()
    lag0 = await _loop_lag_buckets(base)
    cpu0 = proc_stats(pid)[0]
    began = time.monotonic()
    try:

        async def talk(index: int, call: Any) -> None:
            await asyncio.sleep(1.0 + 1.5 * index)  # staggered, as real callers are
            turn = index
            while time.monotonic() - began < seconds - 4:
                call.mic.say_now(_speech(QUESTIONS[turn % len(QUESTIONS)]), lead_s=0.05)
                turn += n
                await asyncio.sleep(7.0)

        talkers = [asyncio.ensure_future(talk(i, c)) for i, c in enumerate(calls)]
        await asyncio.sleep(seconds)
        for task in talkers:
            task.cancel()
        elapsed = time.monotonic() - began
        cpu = (proc_stats(pid)[0] - cpu0) / elapsed * 100
        lag1 = await _loop_lag_buckets(base)
        fps = [c.record.fps(since_s=2.0) for c in calls]
        answered = [len(c.record.of_type(TurnEvent)) for c in calls]
    finally:
        await sampler.stop()
        for call in calls:
            await call.close()
    return {
        "fps": fps,
        "cpu_percent": cpu,
        "peak_rss_mib": sampler.peak,
        "answered": answered,
        "loop_lag_p99_ms": quantile_from_buckets(lag0, lag1, 0.99) * 1000,
        "loop_lag_samples": lag1.get(math.inf, 0.0) - lag0.get(math.inf, 0.0),
    }


def fps_figures(ctx: BenchContext) -> list[Figure]:
    """Delivered fps with 1, 2 and 4 calls, each asking a question every 7 s."""
    seconds = ctx.repeats(20, 45)
    figures: list[Figure] = []
    command = LIVE_COMMAND.format(group="fps")
    with _server(ctx, AVATAR_MAX_SESSIONS="4") as server:
        for step, n in enumerate((1, 2, 4)):
            ctx.progress(f"{n} session(s)", step, 3)
            data = asyncio.run(_talking_calls(server.base_url, n, seconds, server.pid))
            note = (
                f"{n} call(s) of {seconds} s, each talking; server CPU "
                f"{data['cpu_percent']:.0f}% of one core; turns answered {data['answered']}; "
                f"the clients decode on the same {os.cpu_count()} cores"
            )
            figures.append(
                Figure(
                    f"fps_{n}_sessions",
                    f"delivered fps, {n} session(s) (per call)",
                    "fps",
                    data["fps"],
                    Target(">=", 24.5, "min"),
                    note,
                    command,
                )
            )
            figures.append(
                Figure(
                    f"server_loop_lag_p99_{n}_sessions_ms",
                    f"server event-loop lag p99, {n} session(s)",
                    "ms",
                    [data["loop_lag_p99_ms"]],
                    Target("<=", 10.0, "max") if n == 4 else None,
                    f"{LOOP_LAG_METRIC} from /metrics before and after the {n}-call run "
                    f"({data['loop_lag_samples']:.0f} timer wake-ups, every 50 ms); at "
                    "bucket resolution: the upper bound of the bucket holding the p99",
                    command,
                )
            )
            figures.append(
                Figure(
                    f"server_cpu_per_session_{n}_sessions_percent",
                    f"server CPU per talking session, {n} session(s)",
                    "% of a core",
                    [data["cpu_percent"] / n],
                    None,
                    f"server process CPU time over the {n}-call run / wall time / {n}; "
                    "each call asks a question every 7 s",
                    command,
                )
            )
            if n in (1, 4):
                figures.append(
                    Figure(
                        f"server_peak_rss_{n}_sessions_mb",
                        f"server peak RSS, {n} session(s)",
                        "MiB",
                        [data["peak_rss_mib"]],
                        Target("<=", 1536.0, "max") if n == 1 else None,
                        f"sampled every second during the {n}-call run",
                        command,
                    )
                )
            time.sleep(2.0)  # let the sessions close before the next step
        ctx.progress("sessions", 3, 3)
    return figures


# ------------------------------------------------------------------------------------ soak
SOAK_SESSIONS = 2  # the default session limit: both talking for the whole soak
SOAK_FPS_WINDOW_S = 60.0


def _window_fps(times: list[float], start: float, stop: float, window_s: float) -> list[float]:
    """Frames per second received in each whole ``window_s`` window of [start, stop)."""
    out = []
    edge = start
    while edge + window_s <= stop:
        out.append(sum(edge <= t < edge + window_s for t in times) / window_s)
        edge += window_s
    return out


async def _soak(base: str, seconds: float, pid: int, ctx: BenchContext) -> dict:
    from ..evaluate.rtc_client import AvatarCall

    calls = [AvatarCall(base, [], measure_mouth=False) for _ in range(SOAK_SESSIONS)]
    for call in calls:
        await call.start()
    sampler = _Sampler(pid, every_s=5.0)
    sampler.start()
    lag0 = await _loop_lag_buckets(base)
    began = time.monotonic()
    asked = [0] * len(calls)

    async def talk(index: int, call: Any) -> None:
        await asyncio.sleep(1.0 + 4.0 * index)  # staggered: answers overlap, questions not
        while time.monotonic() - began < seconds - 4:
            question = QUESTIONS[(asked[index] * len(calls) + index) % len(QUESTIONS)]
            call.mic.say_now(_speech(question), lead_s=0.05)
            asked[index] += 1
            await asyncio.sleep(8.0)

    async def progress() -> None:
        while (elapsed := time.monotonic() - began) < seconds:
            ctx.progress("soak", int(elapsed), int(seconds))
            await asyncio.sleep(5.0)

    try:
        await asyncio.gather(
            progress(), *(talk(i, c) for i, c in enumerate(calls)), asyncio.sleep(seconds)
        )
        lag1 = await _loop_lag_buckets(base)
        stop = time.monotonic()
        # From 10 s in (both calls connected and warm) to the end, per minute and per call.
        window_fps = [
            _window_fps([t for t, _ in c.record.video], began + 10, stop, SOAK_FPS_WINDOW_S)
            for c in calls
        ]
        turns = [len(c.record.of_type(TurnEvent)) for c in calls]
        errors = [len(c.record.of_type(ErrorEvent)) for c in calls]
    finally:
        await sampler.stop()
        for call in calls:
            await call.close()
    return {
        "rss": sampler.rss_mib,
        "began": began,
        "window_fps": window_fps,
        "turns": turns,
        "asked": asked,
        "errors": errors,
        "loop_lag_p99_ms": quantile_from_buckets(lag0, lag1, 0.99) * 1000,
    }


def soak_figures(ctx: BenchContext) -> list[Figure]:
    """Two talking calls for 30 minutes (full) or 2 (quick), a question every 8 s each: RSS
    must stay flat, every minute of each call at 25 fps, no error, the loop responsive."""
    seconds = ctx.repeats(120, 1800)
    with _server(ctx) as server:
        data = asyncio.run(_soak(server.base_url, seconds, server.pid, ctx))
    rss = data["rss"]
    # After warm-up (the first fifth: caches, first turns) vs the last fifth of the run.
    window = max(seconds / 5, 10)
    early = [r for t, r in rss if window <= t - data["began"] < 2 * window]
    late = [r for t, r in rss if t - data["began"] >= seconds - window]
    growth = (np.mean(late) / np.mean(early) - 1) * 100 if early and late else float("nan")
    command = LIVE_COMMAND.format(group="soak")
    every_minute = [f for per_call in data["window_fps"] for f in per_call]
    note = (
        f"{seconds / 60:.0f} min, {SOAK_SESSIONS} talking calls, questions asked "
        f"{data['asked']}, turns ended {data['turns']}, error events {data['errors']}; "
        "RSS every 5 s"
    )
    fps_note = (
        f"{SOAK_SESSIONS} calls, fps of each whole {SOAK_FPS_WINDOW_S:.0f} s window from 10 s "
        f"in; per call min {[round(min(f), 2) if f else None for f in data['window_fps']]}"
    )
    figures = [
        Figure(
            "soak_fps_per_minute",
            "delivered fps, each minute of each call",
            "fps",
            every_minute or [float("nan")],
            Target(">=", 24.5, "min"),
            fps_note,
            command,
        ),
        Figure(
            "soak_error_events",
            "error events received by the calls",
            "count",
            [float(sum(data["errors"]))],
            Target("<=", 0.0, "max"),
            note,
            command,
        ),
        Figure(
            "soak_loop_lag_p99_ms",
            "server event-loop lag p99 over the soak (histogram bucket edge)",
            "ms",
            [float(data["loop_lag_p99_ms"])],
            None,
            note,
            command,
        ),
    ]
    return figures + [
        Figure(
            "soak_rss_growth_percent",
            "RSS growth over the session (after warm-up)",
            "%",
            [float(growth)],
            Target("<=", 5.0, "max"),
            note + f"; mean of minute-window {window:.0f} s early vs last",
            command,
        ),
        Figure(
            "soak_rss_mb",
            "server RSS during the session",
            "MiB",
            [r for _, r in rss],
            Target("<=", 1536.0, "max"),
            note,
            command,
        ),
    ]
