"""Lip-sync instrument: audio-video offset from mouth opening against the audio envelope.

How it measures, independently of the renderer:

1. **Mouth opening from pixels.** BlazeFace keypoints (``face_points``; not the face mesh
   the renderer uses) give the eyes and the mouth centre. Each frame is cut into a patch
   aligned on the eyes (rotation and scale removed), one inter-ocular distance (IOD) wide
   and 0.8 IOD tall around the mouth. The opening is the share of the patch darker than
   ``DARK_RATIO`` times the patch's median (skin): an open mouth shows its dark inside.
2. **Audio envelope.** RMS of each 40 ms video frame's audio, in dB, floored 50 dB below
   the loudest frame.
3. **Cross-correlation.** Pearson correlation of the two series at every lag within
   ±``MAX_LAG_FRAMES``; the best lag is refined to a fraction of a frame with a parabola
   through its neighbours. Positive offset: the mouth moves *after* the sound (the audio
   leads); negative: the mouth moves first.

The confidence is the peak correlation; ``sharpness`` (peak minus the curve's median, as
SyncNet reports it) says how clearly one lag wins.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..constants import FPS
from .face_points import MOUTH, BlazeFaceLocator, FacePoints

MAX_LAG_FRAMES = 10
DARK_RATIO = 0.55
ENVELOPE_FLOOR_DB = 50.0
PATCH_W, PATCH_H = 64, 52
BOX_W_IOD = 1.0
BOX_ABOVE_IOD = 0.35  # the patch reaches this far above the mouth keypoint...
BOX_BELOW_IOD = 0.45  # ...and this far below it (the jaw drops)
MIN_ACTIVE_SHARE = 0.1  # below this share of voiced frames there is nothing to align
MIN_FRAMES = 2 * MAX_LAG_FRAMES + 10
MOUTH_MEDIAN_FRAMES = 25  # the mouth's place in the face is a running median: steady box


@dataclass(frozen=True)
class SyncResult:
    """The outcome of one cross-correlation."""

    offset_frames: float
    offset_ms: float
    peak_r: float
    sharpness: float
    lags: list[int] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    frames: int = 0


class MouthMeter:
    """Mouth opening per frame, measured on pixels around BlazeFace's mouth keypoint.

    Feed frames in order (``opening``); the mouth's position relative to the eyes is a
    running median, so the patch does not jump with one noisy detection.
    """

    def __init__(self, locator: BlazeFaceLocator) -> None:
        self.locator = locator
        self._mouth_face: collections.deque[np.ndarray] = collections.deque(
            maxlen=MOUTH_MEDIAN_FRAMES
        )
        self._last: FacePoints | None = None
        self.frames = 0
        self.missed = 0

    def opening(self, rgb: np.ndarray) -> float:
        """The mouth opening of one frame (0..1), NaN when no face was ever found."""
        self.frames += 1
        points = self.locator.locate(rgb)
        if points is None:
            self.missed += 1
            points = self._last
            if points is None:
                return math.nan
        self._last = points
        patch = self.patch(rgb, points)
        median = float(np.median(patch))
        return float(np.mean(patch < DARK_RATIO * median))

    def patch(self, rgb: np.ndarray, points: FacePoints) -> np.ndarray:
        """The eye-aligned grey mouth patch (``PATCH_H`` x ``PATCH_W``) of one frame."""
        origin, x_axis, y_axis, iod = _face_frame(points)
        rel = points.points[MOUTH] - origin
        self._mouth_face.append(np.array([rel @ x_axis, rel @ y_axis]) / iod)
        mouth = np.median(np.array(self._mouth_face), axis=0)
        # Patch corners in face units (IOD), then in pixels.
        left, right = mouth[0] - BOX_W_IOD / 2, mouth[0] + BOX_W_IOD / 2
        top, bottom = mouth[1] - BOX_ABOVE_IOD, mouth[1] + BOX_BELOW_IOD

        def to_px(u: float, v: float) -> np.ndarray:
            return origin + iod * (u * x_axis + v * y_axis)

        src = np.array([to_px(left, top), to_px(right, top), to_px(left, bottom)], np.float32)
        dst = np.array([[0, 0], [PATCH_W, 0], [0, PATCH_H]], np.float32)
        affine = cv2.getAffineTransform(src, dst)
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        return cv2.warpAffine(grey, affine, (PATCH_W, PATCH_H), flags=cv2.INTER_AREA)

    def measure(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Openings of a sequence of frames, gaps (no face) filled from neighbours."""
        return fill_gaps(np.array([self.opening(f) for f in frames], dtype=np.float64))


def _face_frame(points: FacePoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (between the eyes), unit axes along and across the eyes, and the IOD."""
    right, left = points.points[0], points.points[1]
    # The subject's right eye is on the image's left: x runs left to right in the image.
    x_axis = left - right
    iod = float(np.linalg.norm(x_axis)) or 1.0
    x_axis = x_axis / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])  # 90° clockwise in image coordinates: down
    return (right + left) / 2.0, x_axis, y_axis, iod


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Replace NaNs by linear interpolation (edges take the nearest value)."""
    values = np.asarray(values, dtype=np.float64)
    bad = np.isnan(values)
    if bad.all() or not bad.any():
        return values
    index = np.arange(len(values))
    values = values.copy()
    values[bad] = np.interp(index[bad], index[~bad], values[~bad])
    return values


def audio_envelope_db(pcm: np.ndarray, rate_hz: int, n_frames: int, fps: int = FPS) -> np.ndarray:
    """RMS level of each video frame's audio in dB, floored ``ENVELOPE_FLOOR_DB`` below the peak."""
    hop = rate_hz // fps
    pcm = np.asarray(pcm, dtype=np.float64).reshape(-1)
    pcm = np.pad(pcm, (0, max(0, n_frames * hop - len(pcm))))[: n_frames * hop]
    rms = np.sqrt(np.mean(pcm.reshape(n_frames, hop) ** 2, axis=1))
    return level_db(rms)


def level_db(rms: np.ndarray) -> np.ndarray:
    """RMS values to dB, floored ``ENVELOPE_FLOOR_DB`` below the loudest."""
    rms = np.asarray(rms, dtype=np.float64)
    peak = float(rms.max()) if rms.size else 0.0
    if peak <= 0:
        return np.full(rms.shape, -120.0)
    floor = peak * 10 ** (-ENVELOPE_FLOOR_DB / 20)
    return 20 * np.log10(np.maximum(rms, floor))


def active_share(envelope_db: np.ndarray) -> float:
    """Share of frames within 30 dB of the loudest: how much of the series is speech."""
    if envelope_db.size == 0:
        return 0.0
    return float(np.mean(envelope_db > envelope_db.max() - 30.0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def cross_correlate(
    mouth: Sequence[float] | np.ndarray,
    envelope_db: Sequence[float] | np.ndarray,
    max_lag: int = MAX_LAG_FRAMES,
    fps: int = FPS,
) -> SyncResult | None:
    """The lag that best aligns the mouth with the audio, or ``None`` if nothing to align.

    ``None`` when the series are too short, one of them is constant, or the audio holds
    too little speech to say anything.
    """
    m = np.asarray(mouth, dtype=np.float64)
    e = np.asarray(envelope_db, dtype=np.float64)
    n = min(len(m), len(e))
    m, e = m[:n], e[:n]
    if n < MIN_FRAMES or m.std() == 0 or e.std() == 0 or active_share(e) < MIN_ACTIVE_SHARE:
        return None
    lags = list(range(-max_lag, max_lag + 1))
    curve = []
    for lag in lags:
        # mouth[t + lag] against audio[t]: a positive lag means the mouth follows the sound.
        if lag >= 0:
            a, b = m[lag:], e[: n - lag]
        else:
            a, b = m[:lag], e[-lag:]
        curve.append(_pearson(a, b))
    values = np.array(curve)
    if np.all(np.isnan(values)):
        return None
    best = int(np.nanargmax(values))
    refined = float(lags[best])
    if 0 < best < len(lags) - 1 and not np.isnan(values[best - 1 : best + 2]).any():
        y0, y1, y2 = values[best - 1], values[best], values[best + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            refined += float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    peak = float(values[best])
    return SyncResult(
        offset_frames=refined,
        offset_ms=refined * 1000.0 / fps,
        peak_r=peak,
        sharpness=peak - float(np.nanmedian(values)),
        lags=lags,
        curve=[round(float(v), 4) for v in values],
        frames=n,
    )


@dataclass(frozen=True)
class WindowSync:
    """The offset found in one window of a long recording."""

    start_s: float
    end_s: float
    result: SyncResult | None

    @property
    def centre_min(self) -> float:
        return (self.start_s + self.end_s) / 2.0 / 60.0


def windowed(
    mouth: np.ndarray, envelope_db: np.ndarray, window_s: float, fps: int = FPS
) -> list[WindowSync]:
    """Cross-correlation in consecutive windows of ``window_s`` (the last may be shorter)."""
    n = min(len(mouth), len(envelope_db))
    size = max(int(round(window_s * fps)), MIN_FRAMES)
    out = []
    for start in range(0, n, size):
        end = min(start + size, n)
        if end - start < size // 2:
            break  # a stub window would be noise
        result = cross_correlate(mouth[start:end], envelope_db[start:end], fps=fps)
        out.append(WindowSync(start / fps, end / fps, result))
    return out


def drift_ms_per_min(windows: list[WindowSync]) -> float | None:
    """Slope of the windows' offsets over time (least squares), or ``None`` below 3 windows."""
    points = [(w.centre_min, w.result.offset_ms) for w in windows if w.result is not None]
    if len(points) < 3:
        return None
    x, y = np.array(points).T
    if np.ptp(x) == 0:
        return None
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def on_grid(
    times_s: np.ndarray, values: np.ndarray, start_s: float, n: int, fps: int = FPS
) -> np.ndarray:
    """Values observed at irregular times, resampled onto a regular frame grid."""
    grid = start_s + np.arange(n) / fps
    return np.interp(grid, np.asarray(times_s, dtype=np.float64), np.asarray(values, np.float64))
