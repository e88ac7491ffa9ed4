"""Voice instrument: speaker similarity with resemblyzer's GE2E speaker encoder.

The voice matcher moves TTS speech toward the avatar with WORLD statistics (F0, spectral
envelope); the judge is a neural speaker-verification embedding trained for a different
job (telling speakers apart), so the matcher cannot score itself. Similarity is the cosine
of the two utterance embeddings (they are unit-norm), in [-1, 1].
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

RESEMBLYZER_RATE_HZ = 16_000
MIN_SPEECH_S = 1.0  # GE2E embeddings of shorter speech are too noisy to compare


class SpeakerJudge:
    """Resemblyzer's ``VoiceEncoder`` on the CPU; load once, embed many."""

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder, preprocess_wav

        self._preprocess = preprocess_wav
        self.encoder: Any = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, pcm: np.ndarray, rate_hz: int) -> np.ndarray | None:
        """Unit-norm embedding of one utterance, or ``None`` if it holds too little speech."""
        wav = self._preprocess(np.asarray(pcm, dtype=np.float32), source_sr=rate_hz)
        if len(wav) < MIN_SPEECH_S * RESEMBLYZER_RATE_HZ:
            return None
        return np.asarray(self.encoder.embed_utterance(wav), dtype=np.float64)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two embeddings."""
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def instrument_version() -> dict[str, str]:
    """Package version and the checksum of its bundled weights, for the report."""
    import resemblyzer

    weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else "missing"
    return {
        "package": f"resemblyzer {metadata.version('resemblyzer')} "
        f"(torch {metadata.version('torch')})",
        "model": "GE2E speaker encoder, pretrained.pt bundled in the package",
        "model_sha256": digest,
    }
