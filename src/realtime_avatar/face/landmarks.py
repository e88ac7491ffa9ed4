"""Face detection and the 478-point face mesh (mediapipe 0.10.21, models inside the package)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidImageError

# Contours of the mediapipe face mesh, ordered corner to corner (left to right in the image).
LIP_UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIP_LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
LIP_UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIP_LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
# Eyes as seen in the image: "a" is the eye on the image's left (the subject's right).
EYE_A_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
EYE_A_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
EYE_B_UPPER = [362, 398, 384, 385, 386, 387, 388, 466, 263]
EYE_B_LOWER = [362, 382, 381, 380, 374, 373, 390, 249, 263]
BROW_A = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
BROW_B = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
FACE_OVAL = [
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
]
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
CHEEK_A = 234
CHEEK_B = 454
MOUTH_CORNER_A = 61
MOUTH_CORNER_B = 291

MIN_DETECTION_SCORE = 0.6
SECOND_FACE_AREA_RATIO = 0.35
MAX_YAW_RATIO = 0.28  # nose offset from the cheek midpoint, relative to face width
MAX_ROLL_DEG = 25.0

_lock = threading.Lock()
_models: dict[str, object] = {}


def _detector():  # type: ignore[no-untyped-def]
    import mediapipe as mp

    if "detector" not in _models:
        _models["detector"] = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.3
        )
    return _models["detector"]


def _mesh():  # type: ignore[no-untyped-def]
    import mediapipe as mp

    if "mesh" not in _models:
        _models["mesh"] = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.3,
        )
    return _models["mesh"]


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixels, with the detector's confidence."""

    x: float
    y: float
    width: float
    height: float
    score: float

    @property
    def area(self) -> float:
        return self.width * self.height


DETECT_SIDE_PX = 1280  # the detector's input is downscaled to this (it sees 192 px anyway)
TILE_OVERLAP = 0.25  # a face on a tile border is whole in the next tile
FACES_PER_TILE = 5  # the finest tiles are this many smallest usable faces across


def _detect_in(rgb: np.ndarray, left: int, top: int) -> list[FaceBox]:
    """Faces in one region of the photo, in the photo's pixels, via a copy of bounded size."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE_PX / max(h, w))
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    with _lock:
        result = _detector().process(np.ascontiguousarray(small))
    boxes = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box
        boxes.append(
            FaceBox(
                left + rb.xmin * w,
                top + rb.ymin * h,
                rb.width * w,
                rb.height * h,
                float(det.score[0]),
            )
        )
    return boxes


def _tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of overlapping tiles covering ``length`` pixels."""
    if tile >= length:
        return [0]
    stride = max(1, int(tile * (1 - TILE_OVERLAP)))
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over the smaller box: the same face seen in two tiles is near 1."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / max(min(a.area, b.area), 1e-6)


def _merge(boxes: list[FaceBox]) -> list[FaceBox]:
    """One box per face: the most confident of boxes that overlap, largest first."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: b.score, reverse=True):
        if all(_overlap(box, other) < 0.5 for other in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: b.area, reverse=True)


def detect_faces(rgb: np.ndarray, min_face_px: int = 120) -> list[FaceBox]:
    """All faces the detector sees, largest first.

    The whole photo is looked at first on a downscaled copy; a big photo where that finds
    no confident face is searched again in overlapping tiles, each level half the size of
    the last, down to tiles a few smallest usable faces across, so a small face in a huge
    photo is found. Each tile is downscaled on its own: memory stays bounded.
    """
    h, w = rgb.shape[:2]
    boxes = _detect_in(rgb, 0, 0)
    tile = max(h, w)
    finest = max(FACES_PER_TILE * min_face_px, 256)
    while not any(b.score >= MIN_DETECTION_SCORE for b in boxes) and tile // 2 >= finest:
        tile //= 2
        found = [
            box
            for top in _tile_starts(h, tile)
            for left in _tile_starts(w, tile)
            for box in _detect_in(rgb[top : top + tile, left : left + tile], left, top)
        ]
        boxes = _merge(found)
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def face_mesh(rgb: np.ndarray) -> np.ndarray | None:
    """478 landmarks in pixels (x, y) of the most prominent face, or None."""
    h, w = rgb.shape[:2]
    with _lock:
        result = _mesh().process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return None
    lms = result.multi_face_landmarks[0].landmark
    return np.array([(p.x * w, p.y * h) for p in lms], dtype=np.float32)


def choose_face(rgb: np.ndarray, min_face_px: int) -> FaceBox:
    """The one usable face in a photo, or an error that says what is wrong with it."""
    faces = [f for f in detect_faces(rgb, min_face_px) if f.score >= 0.3]
    confident = [f for f in faces if f.score >= MIN_DETECTION_SCORE]
    if not confident:
        raise InvalidImageError(
            "no face found in the photo; use a well-lit, frontal photo of one person's face"
        )
    # Detectors see faces in patches and visors: pick the largest confident face and only
    # refuse a second one when it is of comparable size.
    best = max(confident, key=lambda f: f.area * f.score)
    rivals = [
        f for f in confident if f is not best and f.area >= SECOND_FACE_AREA_RATIO * best.area
    ]
    if rivals:
        raise InvalidImageError(
            f"found {len(rivals) + 1} faces of similar size; use a photo with exactly one person"
        )
    return best


def check_pose(landmarks: np.ndarray) -> None:
    """Refuse a strongly turned or tilted head: the 2D renderer needs a frontal face."""
    a, b = landmarks[CHEEK_A], landmarks[CHEEK_B]
    width = float(np.linalg.norm(b - a))
    mid = (a + b) / 2
    axis = (b - a) / max(width, 1e-6)
    yaw = float(np.dot(landmarks[NOSE_TIP] - mid, axis)) / max(width, 1e-6)
    if abs(yaw) > MAX_YAW_RATIO:
        raise InvalidImageError(
            "the head is turned too far to the side; use a photo looking straight at the camera"
        )
    eye_a = landmarks[EYE_A_UPPER + EYE_A_LOWER].mean(axis=0)
    eye_b = landmarks[EYE_B_UPPER + EYE_B_LOWER].mean(axis=0)
    roll = float(np.degrees(np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])))
    if abs(roll) > MAX_ROLL_DEG:
        raise InvalidImageError(
            f"the head is tilted by {roll:.0f} degrees; use an upright, frontal photo"
        )


def face_size_px(landmarks: np.ndarray) -> float:
    """Face size: the larger of the mesh's width and its forehead-to-chin height."""
    span = landmarks[:468].max(axis=0) - landmarks[:468].min(axis=0)
    return float(max(span))
