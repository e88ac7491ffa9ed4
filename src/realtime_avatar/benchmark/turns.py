"""Turn-taking figures: the pause set spoken through the real ``avatar serve``.

Each item of the pause set (``evaluate/pauses.py``: questions with a thinking pause inside
an unfinished sentence, and complete ones; en, es, zh) is played into one aiortc call,
one call per language so each is heard by the recognizer the product uses for it. The
server runs twice: with the end-of-turn decision (``AVATAR_TURN_TAKING=decide``, the
default) and with the old fixed silence (``silence``) as the baseline, side by side.

Every time is on the client's monotonic clock (client and server share the machine):

- the true end of speech is when the item's last audible sample was spoken on the mic's
  clock (its 20 ms block is handed over once complete, as a real microphone does);
- the answer starts at the arrival of the first audible answer audio after the item's
  speech start, or at the server's first-frame mark, whichever says earlier;
- a *cut-in* is an answer that starts after the item's speech start and before its true
  end: the avatar talked in the pause. Cut-ins are left out of the latency samples.

Items are played one at a time: the next waits until the previous turn has ended and the
server has been quiet for a few seconds, so an answer to a previous item is never counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..events import StatusEvent, TurnEvent
from .figures import BenchContext, Figure, Target
from .live import LIVE_COMMAND, _server

MODES = ("decide", "silence")  # AVATAR_TURN_TAKING: the decision, then the baseline
QUICK_COUNTS = {"en": (8, 8), "es": (1, 1), "zh": (1, 1)}  # (paused, complete) per language
SETTLE_S = 2.5  # quiet after a turn ends before the next item: no answer carries over
TURN_TIMEOUT_S = 40.0
CUTIN_TARGET = 0.05  # the "at most 1 in 20"


@dataclass(frozen=True)
class ItemMarks:
    """One played item as the client saw it; every time on the client's monotonic clock."""

    item_id: str
    language: str
    paused: bool
    speech_start: float  # first audible sample of the question, as spoken
    speech_end: float  # one past its last audible sample: the true end of speech
    first_audio: float | None = None  # arrival of the first audible answer audio after start
    server_first_frame: float | None = None  # the earliest first-frame mark of its turns
    turns: int = 0  # turn events the item caused (a cut-in that is talked over makes two)

    @property
    def answered(self) -> bool:
        """Whether any answer started after the question did."""
        return self.answer_start is not None

    @property
    def answer_start(self) -> float | None:
        """When the answer started: the earlier of the client's audio and the server's mark."""
        marks = [
            m for m in (self.first_audio, self.server_first_frame) if m and m > self.speech_start
        ]
        return min(marks) if marks else None

    @property
    def cut_in(self) -> bool:
        """The answer started while the user was still inside the question."""
        start = self.answer_start
        return start is not None and start < self.speech_end

    @property
    def latency_ms(self) -> float | None:
        """True end of speech -> first audible answer audio; None for a cut-in or no audio."""
        if self.cut_in or self.first_audio is None:
            return None
        return (self.first_audio - self.speech_end) * 1000.0


@dataclass
class ModeSummary:
    """What one server mode did over the played items."""

    cutins_paused: int
    paused: int
    cutins_complete: int
    complete: int
    latency_complete_ms: list[float]
    latency_paused_ms: list[float]
    unanswered: list[str]  # item ids with no answer audio
    cut_into: list[str]  # item ids the avatar talked into

    @property
    def cutin_rate(self) -> float:
        """Cut-ins per paused item (NaN when none was played)."""
        return self.cutins_paused / self.paused if self.paused else math.nan


def summarize(marks: Sequence[ItemMarks]) -> ModeSummary:
    """Cut-in counts and latency samples of one mode's items."""
    paused = [m for m in marks if m.paused]
    complete = [m for m in marks if not m.paused]

    def latencies(group: list[ItemMarks]) -> list[float]:
        return [ms for m in group if (ms := m.latency_ms) is not None]

    return ModeSummary(
        cutins_paused=sum(m.cut_in for m in paused),
        paused=len(paused),
        cutins_complete=sum(m.cut_in for m in complete),
        complete=len(complete),
        latency_complete_ms=latencies(complete),
        latency_paused_ms=latencies(paused),
        unanswered=[m.item_id for m in marks if not m.answered],
        cut_into=[m.item_id for m in marks if m.cut_in],
    )


def pick_items(full: bool) -> list[Any]:
    """The items to play: all of them (full), or a subset per language (quick), the
    paused and complete ones of a language interleaved so neither kind runs in a block."""
    from ..evaluate.pauses import complete_items, paused_items

    chosen: list[Any] = []
    for language, (n_paused, n_complete) in QUICK_COUNTS.items():
        paused = [i for i in paused_items() if i.language == language]
        complete = [i for i in complete_items() if i.language == language]
        if not full:
            paused, complete = paused[:n_paused], complete[:n_complete]
        for index in range(max(len(paused), len(complete))):
            chosen += paused[index : index + 1] + complete[index : index + 1]
    return chosen


# ------------------------------------------------------------------------------ the calls
async def _settle(call: Any, since: int, not_before: float) -> int:
    """Wait until the item's turns have ended and the server stays quiet for SETTLE_S.

    Returns how many turn events arrived since ``since``.
    """
    while True:
        await call.wait_for_event(
            lambda e: isinstance(e, TurnEvent) and not e.interrupted, TURN_TIMEOUT_S, since=since
        )
        ended_at = len(call.record.events)
        # The mic has not finished the question yet (a cut-in answered its first part).
        await asyncio.sleep(max(not_before - time.monotonic(), 0.0) + SETTLE_S)
        later = call.record.events[ended_at:]
        if not any(
            isinstance(e, StatusEvent) and (e.state != "listening" or e.user_speaking)
            for _, e in later
        ):
            return sum(isinstance(e, TurnEvent) for _, e in call.record.events[since:])
        since = ended_at  # another turn started meanwhile (the second part): wait for it


async def _play(call: Any, rendered: Any) -> ItemMarks:
    """Say one rendered item into ``call``; measure when its answer started."""
    assert call.mic is not None
    rate = rendered.rate_hz
    seen = len(call.record.events)
    clip = call.mic.say_now(rendered.pcm, lead_s=0.1)
    clip_end = time.monotonic() + 0.1 + len(rendered.pcm) / rate
    item = rendered.item
    try:
        turns = await _settle(call, seen, clip_end)
    except TimeoutError:
        turns = 0
    # The mic's clock: the clip's first (5 %-of-peak) sample was spoken at speech_start_s.
    first_loud, _ = clip.speech_bounds()
    origin = clip.speech_start_s - first_loud / rate
    start = origin + rendered.speech_start / rate
    end = origin + rendered.speech_end / rate
    server_marks = [
        e.first_frame_mono
        for _, e in call.record.events[seen:]
        if isinstance(e, TurnEvent) and e.first_frame_mono > start
    ]
    return ItemMarks(
        item_id=item.id,
        language=item.language,
        paused=item.has_pause,
        speech_start=start,
        speech_end=end,
        first_audio=call.record.first_answer_audio(start),
        server_first_frame=min(server_marks) if server_marks else None,
        turns=turns,
    )


async def _language_call(
    base: str, language: str, rendered: list[Any], warm_up: Any, ctx: BenchContext, label: str
) -> list[ItemMarks]:
    """One call in ``language``: a discarded warm-up item, then each rendered item."""
    from ..evaluate.rtc_client import AvatarCall

    call: Any = AvatarCall(base, [], language=language, measure_mouth=False)
    await call.start()
    marks: list[ItemMarks] = []
    try:
        await asyncio.sleep(1.0)
        with contextlib.suppress(TimeoutError):
            await _play(call, warm_up)  # first decode, first synthesis
        for index, item in enumerate(rendered):
            ctx.progress(f"{label} {language}", index, len(rendered))
            marks.append(await _play(call, item))
    finally:
        await call.close()
    return marks


def _run_mode(
    ctx: BenchContext, mode: str, by_language: dict[str, list[Any]], warm_ups: dict[str, Any]
) -> list[ItemMarks]:
    marks: list[ItemMarks] = []
    with _server(ctx, AVATAR_TURN_TAKING=mode) as server:
        for language, rendered in by_language.items():
            marks += asyncio.run(
                _language_call(server.base_url, language, rendered, warm_ups[language], ctx, mode)
            )
            time.sleep(1.0)  # let the session close before the next call
    return marks


# ------------------------------------------------------------------------------ figures
def turns_figures(
    ctx: BenchContext, items: Sequence[Any] | None = None, modes: Sequence[str] = MODES
) -> list[Figure]:
    """Cut-ins in the pause and end of speech -> first answer audio, per turn-taking mode."""
    from ..evaluate.pauses import complete_items, render
    from ..evaluate.rtc_client import MIC_RATE_HZ

    chosen = list(items) if items is not None else pick_items(ctx.full)
    by_language: dict[str, list[Any]] = {}
    for index, item in enumerate(chosen):
        ctx.progress("rendering the pause set", index, len(chosen))
        by_language.setdefault(item.language, []).append(render(item, MIC_RATE_HZ, ctx.settings))
    warm_ups = {
        language: render(
            next(i for i in complete_items() if i.language == language), MIC_RATE_HZ, ctx.settings
        )
        for language in by_language
    }
    command = LIVE_COMMAND.format(group="turns")
    figures: list[Figure] = []
    for mode in modes:
        data = summarize(_run_mode(ctx, mode, by_language, warm_ups))
        figures += _mode_figures(mode, data, command, baseline=mode != MODES[0])
    return figures


def _mode_figures(mode: str, data: ModeSummary, command: str, baseline: bool) -> list[Figure]:
    suffix = f"_{mode}" if baseline else ""
    how = (
        f"AVATAR_TURN_TAKING={mode}"
        + (" (the old fixed VAD silence: the baseline)" if baseline else " (end-of-turn decision)")
        + "; aiortc client on loopback, one call per language"
    )
    missing = f"; no answer audio for {', '.join(data.unanswered)}" if data.unanswered else ""
    cutins = (
        f"{data.cutins_paused} of {data.paused} paused items answered before the true end of "
        f"speech (first answer audio at the client or the server's first frame); complete "
        f"items: {data.cutins_complete} of {data.complete}"
        + (f" (cut into: {', '.join(data.cut_into)})" if data.cut_into else "")
    )
    left_out = "cut-ins left out (their answer began before the end)"

    def target(value: float, statistic: Any = "p50") -> Target | None:
        return None if baseline else Target("<=", value, statistic)

    figures = [
        Figure(
            f"cutins_paused{suffix}",
            f"cut-ins: answer in the user's pause, rate ({mode})",
            "ratio",
            [data.cutin_rate],
            target(CUTIN_TARGET, "max"),
            f"{how}; {cutins}{missing}",
            command,
        ),
        Figure(
            f"eot_first_audio_complete{suffix}_ms",
            f"end of speech -> first answer audio, complete questions ({mode})",
            "ms",
            data.latency_complete_ms,
            target(300.0),
            f"{how}; from the question's last audible sample as the mic spoke it to the "
            f"arrival of the first audible answer audio; {left_out}{missing}",
            command,
        ),
    ]
    if not baseline:
        figures.append(
            Figure(
                "eot_first_audio_complete_p95_ms",
                "end of speech -> first answer audio, complete (p95 target)",
                "ms",
                data.latency_complete_ms,
                Target("<=", 450.0, "p95"),
                "same samples as eot_first_audio_complete_ms",
                command,
            )
        )
    figures.append(
        Figure(
            f"eot_first_audio_paused{suffix}_ms",
            f"true end of speech -> first answer audio, paused questions ({mode})",
            "ms",
            data.latency_paused_ms,
            target(450.0),
            f"{how}; from the last audible sample after the pause; {left_out}: "
            f"{data.cutins_paused} of {data.paused}",
            command,
        )
    )
    return figures
