"""Six face keypoints from BlazeFace, the evaluator's own face locator.

The renderer places and moves the mouth with the mediapipe *face mesh* (478 points);
grading its output with the same mesh would grade it by its own yardstick. The evaluator
uses instead mediapipe's *short-range BlazeFace detector* (``face_detection``,
``model_selection=0``), a different network that gives a box and six keypoints: both eyes,
the nose tip, the mouth centre and both ear tragions. Registration uses the full-range
detector only to find the face in the photo, never for mouth placement.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "face_detection_short_range.tflite"
MIN_SCORE = 0.5

# Keypoint order as mediapipe gives it.
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass(frozen=True)
class FacePoints:
    """The keypoints of one face in pixels (6 x 2) and the detection score."""

    points: np.ndarray
    score: float

    @property
    def eye_mid(self) -> np.ndarray:
        return (self.points[RIGHT_EYE] + self.points[LEFT_EYE]) / 2.0

    @property
    def interocular_px(self) -> float:
        return float(np.linalg.norm(self.points[LEFT_EYE] - self.points[RIGHT_EYE]))


class BlazeFaceLocator:
    """BlazeFace short-range keypoints; one instance per evaluation, calls serialised."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._detector: Any = mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=MIN_SCORE
        )
        self._lock = threading.Lock()

    def locate(self, rgb: np.ndarray) -> FacePoints | None:
        """The most confident face's keypoints, or ``None`` when no face is found."""
        height, width = rgb.shape[:2]
        with self._lock:
            result = self._detector.process(np.ascontiguousarray(rgb))
        if not result.detections:
            return None
        best = max(result.detections, key=lambda d: float(d.score[0]))
        points = np.array(
            [(k.x * width, k.y * height) for k in best.location_data.relative_keypoints],
            dtype=np.float64,
        )
        return FacePoints(points, float(best.score[0]))

    def close(self) -> None:
        """Release the mediapipe graph."""
        self._detector.close()


def instrument_version() -> dict[str, str]:
    """Package version and model checksum, for the report."""
    import mediapipe as mp

    model = Path(mp.__file__).parent / "modules" / "face_detection" / MODEL_FILE
    digest = hashlib.sha256(model.read_bytes()).hexdigest() if model.is_file() else "missing"
    return {
        "package": f"mediapipe {metadata.version('mediapipe')}",
        "model": f"{MODEL_FILE} (BlazeFace short range)",
        "model_sha256": digest,
    }
