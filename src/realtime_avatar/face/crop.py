"""Crop a photo to head and shoulders around its face and scale it to the render size."""

from __future__ import annotations

import cv2
import numpy as np

from .landmarks import CHIN, EYE_A_LOWER, EYE_A_UPPER, EYE_B_LOWER, EYE_B_UPPER, FOREHEAD

CROP_PER_FACE_HEIGHT = 2.6  # square side, in face heights: head, hair and shoulders
EYES_FROM_TOP = 0.40  # eye line at 40 % of the crop height, as in a portrait


def head_crop_box(landmarks: np.ndarray, image_hw: tuple[int, int]) -> tuple[float, float, float]:
    """Square (left, top, side) around the head, kept inside the image where possible."""
    h, w = image_hw
    face_h = float(landmarks[CHIN, 1] - landmarks[FOREHEAD, 1])
    eyes = landmarks[EYE_A_UPPER + EYE_A_LOWER + EYE_B_UPPER + EYE_B_LOWER].mean(axis=0)
    side = min(CROP_PER_FACE_HEIGHT * face_h, float(min(h, w)))
    left = float(eyes[0]) - side / 2
    top = float(eyes[1]) - EYES_FROM_TOP * side
    left = min(max(left, 0.0), w - side)
    top = min(max(top, 0.0), h - side)
    return left, top, side


def crop_to_square(
    rgb: np.ndarray, box: tuple[float, float, float], size_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """The box scaled to ``size_px`` square, and the 2x3 affine that maps source to crop."""
    left, top, side = box
    scale = size_px / side
    affine = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]], dtype=np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = cv2.warpAffine(
        rgb, affine, (size_px, size_px), flags=interp, borderMode=cv2.BORDER_REPLICATE
    )
    return out, affine
