"""The evaluator's instruments, loaded once per run, and what each one is.

Every score names one of the instrument ids below; ``describe()`` gives, for the report,
what the instrument measures, what it is independent of, and its exact versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from ..avatars.registry import Avatar
from ..settings import Settings
from . import face_points, intelligibility, language_id, speaker
from .face_points import BlazeFaceLocator
from .identity import IdentityJudge
from .intelligibility import AsrJudge
from .language_id import TextLanguageJudge
from .speaker import SpeakerJudge

log = logging.getLogger(__name__)

LIPSYNC = "lipsync.blazeface-xcorr"
SPEAKER = "voice.resemblyzer"
ASR = "asr.whisper"
LID_AUDIO = "language.whisper-lid"
LID_TEXT = "language.lingua"
IDENTITY = "identity.blazeface-ssim"
RENDER_CLOCK = "clock.render-wall"
SERVER_MARKS = "clock.server-turn-marks"
CLIENT_CLOCK = "clock.client"
LIVE_ASR = "asr.live-recognizer"

DESCRIPTIONS: dict[str, dict[str, str]] = {
    LIPSYNC: {
        "measures": "audio-video offset (ms) and peak correlation: mouth opening on the "
        "pixels (dark share of an eye-aligned mouth patch) cross-correlated with the audio "
        "envelope (dB per 40 ms frame) at lags of ±10 frames, parabolic sub-frame peak",
        "independent_of": "the renderer's face mesh and mouth parameters: the mouth is "
        "located by BlazeFace short-range keypoints and measured on the output pixels",
    },
    SPEAKER: {
        "measures": "cosine similarity of GE2E speaker embeddings of the output audio and "
        "the avatar's reference voice sample",
        "independent_of": "the WORLD voice profile the matcher uses",
    },
    ASR: {
        "measures": "WER (space-separated languages) or CER (Mandarin) of a Whisper "
        "transcription of the output audio against the text it was asked to say",
        "independent_of": "the text pipeline; NOT fully independent of the live ASR, which "
        "uses Whisper too (tiny.en for English, the same base model for es/zh)",
    },
    LID_AUDIO: {
        "measures": "the spoken language of the output audio, Whisper base language "
        "identification over all its languages",
        "independent_of": "the synthesizer choice; the live recognizer restricts itself "
        "to en/es/zh, the judge does not",
    },
    LID_TEXT: {
        "measures": "the language of the reply text, lingua over ten languages",
        "independent_of": "the product's en/es/zh-only detector (same library, wider question)",
    },
    IDENTITY: {
        "measures": "per sampled frame: BlazeFace keypoint geometry residual after a "
        "similarity alignment (inter-ocular units), and SSIM to the registered photo after "
        "ECC alignment with the mouth masked",
        "independent_of": "the face mesh that drives the renderer's warp",
    },
    RENDER_CLOCK: {
        "measures": "wall time of render_script (time.perf_counter) and real-time factor "
        "= wall / video duration",
        "independent_of": "nothing to be independent of: a stopwatch around the call",
    },
    SERVER_MARKS: {
        "measures": "the session's own per-stage marks (TurnTimings) sent in each turn "
        "event, in ms after the VAD's end of the user's speech",
        "independent_of": "reported as the pipeline measures itself; the client clock "
        "below checks them end to end",
    },
    CLIENT_CLOCK: {
        "measures": "the evaluator client's monotonic clock: end of the client's speech to "
        "first audible answer audio, barge-in stop times, received fps",
        "independent_of": "the server's own timing marks",
    },
    LIVE_ASR: {
        "measures": "what the server's recognizer heard (its final transcript event) "
        "against what the client said; grades the live ASR on synthetic mic speech",
        "independent_of": "the client's gold text is the reference",
    },
}


@dataclass
class Instruments:
    """Everything that scores, loaded once. Missing optional judges carry their reason."""

    settings: Settings
    avatar: Avatar
    locator: BlazeFaceLocator
    identity: IdentityJudge
    asr: AsrJudge
    text_language: TextLanguageJudge
    speaker: SpeakerJudge | None
    speaker_reason: str = ""
    reference_embedding: np.ndarray | None = None
    reference_self_similarity: float | None = None
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings, avatar: Avatar) -> Instruments:
        """Load every instrument; a judge that cannot load is recorded, not fatal."""
        locator = BlazeFaceLocator()
        judge: SpeakerJudge | None = None
        reason = ""
        reference = None
        self_similarity = None
        try:
            judge = SpeakerJudge()
        except ImportError as error:
            reason = (
                f"resemblyzer is not installed ({error}); "
                "install the evaluation extras: pip install 'realtime-avatar[eval]'"
            )
        if judge is not None:
            pcm, rate = sf.read(avatar.voice_path, dtype="float32", always_2d=False)
            reference = judge.embed(pcm, int(rate))
            half = len(pcm) // 2
            first, second = judge.embed(pcm[:half], int(rate)), judge.embed(pcm[half:], int(rate))
            if first is not None and second is not None:
                self_similarity = judge.similarity(first, second)
            if reference is None:
                reason = "the avatar's reference voice sample holds too little speech"
                judge = None
        instruments = cls(
            settings=settings,
            avatar=avatar,
            locator=locator,
            identity=IdentityJudge(locator, avatar.face_rgb),
            asr=AsrJudge(settings),
            text_language=TextLanguageJudge(),
            speaker=judge,
            speaker_reason=reason,
            reference_embedding=reference,
            reference_self_similarity=self_similarity,
        )
        instruments.versions = _versions()
        return instruments

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every instrument: what it measures, what it is independent of, versions."""
        out: dict[str, dict[str, Any]] = {}
        for name, text in DESCRIPTIONS.items():
            out[name] = {**text, **self.versions.get(name, {})}
        return out

    def close(self) -> None:
        """Release native resources."""
        self.locator.close()


def _versions() -> dict[str, dict[str, str]]:
    versions: dict[str, dict[str, str]] = {}
    blaze = face_points.instrument_version()
    versions[LIPSYNC] = blaze
    versions[IDENTITY] = {
        **blaze,
        "package": blaze["package"]
        + f", opencv {_cv2_version()}, scikit-image {_pkg('scikit-image')}",
    }
    try:
        versions[SPEAKER] = speaker.instrument_version()
    except ImportError as error:
        versions[SPEAKER] = {"package": f"not installed ({error})"}
    whisper = intelligibility.instrument_version()
    versions[ASR] = whisper
    versions[LID_AUDIO] = whisper
    versions[LID_TEXT] = language_id.instrument_version()
    return versions


def _pkg(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cv2_version() -> str:
    import cv2

    return str(cv2.__version__)
