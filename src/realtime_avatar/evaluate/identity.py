"""Identity instrument: does the rendered face stay the registered face?

Two figures per sampled frame, both against the registered photo (the avatar's
``face.png``, the crop of the user's photo that registration kept):

- **Geometry error**: BlazeFace keypoints (eyes, nose tip, ear tragions; the mouth is left
  out because it is meant to move) of the frame are aligned to the photo's by a similarity
  transform (rotation, scale, shift); the RMS of what is left, in inter-ocular distances.
  A face that is stretched, swollen or drifting apart shows up here.
- **Appearance SSIM**: the frame, aligned to the photo by the same transform, compared with
  the photo by structural similarity (grey levels) over the face box with the mouth region
  masked out. Texture loss, smearing or a different face show up here.

Neither uses the face mesh that drives the renderer. This is a fidelity measure of the
face against its own photo, not a learned face-recognition embedding: no such model ships
inside an installed package here (see docs/EVAL.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from .face_points import LEFT_EAR, LEFT_EYE, MOUTH, NOSE, RIGHT_EAR, RIGHT_EYE, BlazeFaceLocator

STABLE_POINTS = [RIGHT_EYE, LEFT_EYE, NOSE, RIGHT_EAR, LEFT_EAR]
MOUTH_MASK_W_IOD = 1.3
MOUTH_MASK_ABOVE_IOD = 0.35
MOUTH_MASK_BELOW_IOD = 0.7


@dataclass(frozen=True)
class IdentityFrame:
    """Identity figures of one frame; ``None`` values when no face was found."""

    geometry_error_iod: float | None
    appearance_ssim: float | None


class IdentityJudge:
    """Compares frames with the registered photo."""

    def __init__(self, locator: BlazeFaceLocator, reference_rgb: np.ndarray) -> None:
        self.locator = locator
        points = locator.locate(reference_rgb)
        if points is None:
            raise ValueError("no face found in the reference photo")
        self.reference = points
        self.reference_grey = cv2.cvtColor(reference_rgb, cv2.COLOR_RGB2GRAY)
        height, width = reference_rgb.shape[:2]
        self.mask = self._face_mask((height, width))

    def _face_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The face box (from the keypoints) without the mouth region."""
        pts = self.reference.points
        iod = self.reference.interocular_px
        mask = np.zeros(shape, dtype=bool)
        x0 = int(min(pts[RIGHT_EAR, 0], pts[RIGHT_EYE, 0] - 0.5 * iod))
        x1 = int(max(pts[LEFT_EAR, 0], pts[LEFT_EYE, 0] + 0.5 * iod))
        y0 = int(self.reference.eye_mid[1] - 0.7 * iod)
        y1 = int(pts[MOUTH, 1] + 0.55 * iod)
        mask[max(y0, 0) : y1, max(x0, 0) : x1] = True
        mx, my = pts[MOUTH]
        mask[
            max(int(my - MOUTH_MASK_ABOVE_IOD * iod), 0) : int(my + MOUTH_MASK_BELOW_IOD * iod),
            max(int(mx - MOUTH_MASK_W_IOD * iod / 2), 0) : int(mx + MOUTH_MASK_W_IOD * iod / 2),
        ] = False
        return mask

    def _refine(self, grey: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Pixel-exact alignment (ECC, rotation + shift) starting from the keypoint transform.

        Keypoints jitter by a pixel or two; SSIM on fine texture would mostly measure that
        jitter. Returns the warp that maps reference coordinates into the frame.
        """
        inverse = cv2.invertAffineTransform(affine).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        try:
            _, warp = cv2.findTransformECC(
                self.reference_grey.astype(np.float32),
                grey.astype(np.float32),
                inverse,
                cv2.MOTION_EUCLIDEAN,
                criteria,
                self.mask.astype(np.uint8),
                5,
            )
        except cv2.error:
            return inverse
        return np.asarray(warp, dtype=np.float32)

    def frame(self, rgb: np.ndarray) -> IdentityFrame:
        """Geometry error and appearance similarity of one frame."""
        points = self.locator.locate(rgb)
        if points is None:
            return IdentityFrame(None, None)
        src = points.points[STABLE_POINTS].astype(np.float32)
        dst = self.reference.points[STABLE_POINTS].astype(np.float32)
        affine, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if affine is None:
            return IdentityFrame(None, None)
        moved = src @ affine[:, :2].T + affine[:, 2]
        rms = float(np.sqrt(np.mean(np.sum((moved - dst) ** 2, axis=1))))
        geometry = rms / self.reference.interocular_px
        height, width = self.reference_grey.shape
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        affine = self._refine(grey, affine.astype(np.float32))
        aligned = cv2.warpAffine(
            grey, affine, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        _, ssim_map = structural_similarity(
            self.reference_grey, aligned, data_range=255, full=True, gaussian_weights=True
        )
        appearance = float(np.mean(ssim_map[self.mask]))
        return IdentityFrame(geometry, appearance)
