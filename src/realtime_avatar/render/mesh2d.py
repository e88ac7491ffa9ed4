"""The embedded renderer: a landmark-driven 2D warp of the avatar photo.

Every facial motion (jaw, lip spread and rounding, blinks, brows, head motion) is a
displacement field that is linear in its parameter. The fields are built once per avatar
by interpolating per-vertex displacements over a Delaunay mesh of the face landmarks (plus
a fixed ring and the image border, so the warp fades out with no seam) and smoothed. A
frame is then a weighted sum of a few fields inside a region of interest, one fixed-point
refinement to invert the forward warp, one ``cv2.remap``, and a drawn mouth interior.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..face.landmarks import (
    BROW_A,
    BROW_B,
    CHEEK_A,
    CHEEK_B,
    CHIN,
    EYE_A_LOWER,
    EYE_A_UPPER,
    EYE_B_LOWER,
    EYE_B_UPPER,
    FACE_OVAL,
    FOREHEAD,
    LIP_LOWER_INNER,
    LIP_LOWER_OUTER,
    LIP_UPPER_INNER,
    LIP_UPPER_OUTER,
    MOUTH_CORNER_A,
    MOUTH_CORNER_B,
)
from ..frames import FaceParams

RING_SCALE = 1.45  # a fixed ring around the face oval where local motions fade to zero
BORDER_STEP_PX = 64
FIELD_BLUR_SIGMA_PX = 1.0

# Motion amplitudes at parameter 1.0, in units of the mouth width or face height.
JAW_DROP_PER_MOUTH_W = 0.40
SPREAD_PER_MOUTH_W = 0.10
ROUND_PER_MOUTH_W = 0.15
BROW_PER_FACE_H = 0.035


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class _Field:
    """One displacement basis: a field over a sub-rectangle of the ROI, and its vertex values."""

    y0: int
    y1: int
    x0: int
    x1: int
    field: np.ndarray  # (y1 - y0) x (x1 - x0) x 2 float32
    vertex: np.ndarray  # N x 2 float32, displacement of each mesh vertex


class Mesh2DRenderer:
    """Landmark-driven piecewise-affine warp with a drawn mouth interior (no model needed)."""

    name = "mesh2d"

    def __init__(self, face_rgb: np.ndarray, landmarks: np.ndarray) -> None:
        if face_rgb.ndim != 3 or face_rgb.shape[0] != face_rgb.shape[1]:
            raise ValueError("the renderer expects a square RGB face image")
        self.size_px = int(face_rgb.shape[0])
        self._base = np.ascontiguousarray(face_rgb)
        self._out = self._base.copy()
        lms = landmarks[:468].astype(np.float64)
        self._lms = lms
        self._teeth_rgb = self._sample_teeth_color()
        self._close_mouth()
        lms = self._lms
        # Coincident inner-lip points would vanish from the triangulation and the lower lip
        # would not follow the jaw: keep the seam one pixel wide.
        inner_low = LIP_LOWER_INNER[1:-1]
        lms[inner_low, 1] = np.maximum(lms[inner_low, 1], lms[LIP_UPPER_INNER[1:-1], 1] + 1.0)
        self._out = self._base.copy()
        self._geometry(lms)
        self._build_mesh(lms)
        self._build_fields(lms)
        self._build_head_fields()

    # ------------------------------------------------------------------ set-up
    def _close_mouth(self) -> None:
        """Make the neutral face close-lipped, once, whatever the photo shows.

        Closing is a collapse (the teeth between the lips vanish), which a backward warp
        cannot invert by iteration; per column it is a monotone 1D map, inverted exactly.
        Every avatar then starts from the same closed neutral and the interior is drawn.
        """
        lms = self._lms
        up, low = lms[LIP_UPPER_INNER].copy(), lms[LIP_LOWER_INNER].copy()
        if float(np.max(low[:, 1] - up[:, 1])) < 1.0:
            return
        mouth_w = float(np.linalg.norm(lms[MOUTH_CORNER_B] - lms[MOUTH_CORNER_A]))
        # The mesh puts the inner-lip points a little inside the teeth; remove a margin too,
        # or a grey strip of teeth stays on the lip edges and shows when the jaw opens.
        open_pts = (low[:, 1] - up[:, 1]) > 1.0
        up[open_pts, 1] -= 0.015 * mouth_w
        low[open_pts, 1] += 0.03 * mouth_w
        gap_pts = np.maximum(low[:, 1] - up[:, 1], 0.0)
        size = self.size_px
        x0 = max(int(np.floor(up[:, 0].min())) - 1, 0)
        x1 = min(int(np.ceil(up[:, 0].max())) + 2, size)
        ys = np.arange(size, dtype=np.float64)
        src_y = np.empty((size, x1 - x0), np.float32)
        upper_reach, lower_reach = 0.5 * mouth_w, 0.6 * mouth_w

        def forward(x: float, y: np.ndarray) -> np.ndarray:
            top = float(np.interp(x, up[:, 0], up[:, 1]))
            bottom = float(np.interp(x, low[:, 0], low[:, 1]))
            gap = max(bottom - top, 0.0)
            d_up = 0.45 * gap * _smoothstep((y - (top - upper_reach)) / upper_reach)
            d_low = -0.55 * gap * (1.0 - _smoothstep((y - bottom) / lower_reach))
            return np.where(y <= top, y + d_up, np.where(y >= bottom, y + d_low, top + 0.45 * gap))

        for i, x in enumerate(range(x0, x1)):
            top = np.interp(x, up[:, 0], up[:, 1])
            bottom = np.interp(x, low[:, 0], low[:, 1])
            keep = (ys <= top) | (ys >= bottom)
            src_y[:, i] = np.interp(ys, forward(x, ys[keep]), ys[keep])
        xs = np.broadcast_to(np.arange(x0, x1, dtype=np.float32)[None, :], src_y.shape)
        base = self._base.copy()
        base[:, x0:x1] = cv2.remap(
            self._base,
            np.ascontiguousarray(xs),
            src_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        moved = lms.copy()
        inside = (lms[:, 0] >= x0) & (lms[:, 0] < x1)
        for i in np.flatnonzero(inside):
            moved[i, 1] = forward(float(lms[i, 0]), np.array([lms[i, 1]]))[0]
        moved[LIP_UPPER_INNER, 1] = up[:, 1] + 0.45 * gap_pts
        moved[LIP_LOWER_INNER, 1] = up[:, 1] + 0.45 * gap_pts
        # A soft crease where the lips meet, as closed lips show.
        crease = np.zeros(base.shape[:2], np.float32)
        line = np.stack([moved[LIP_UPPER_INNER, 0], moved[LIP_UPPER_INNER, 1]], 1)
        cv2.polylines(crease, [np.round(line * 16).astype(np.int32)], False, 1.0, 2, cv2.LINE_AA, 4)
        crease = cv2.GaussianBlur(crease, (0, 0), 1.0)
        base = (base.astype(np.float32) * (1.0 - 0.35 * crease[..., None])).astype(np.uint8)
        self._base = base
        self._lms = moved

    def _geometry(self, lms: np.ndarray) -> None:
        self.mouth_w = float(np.linalg.norm(lms[MOUTH_CORNER_B] - lms[MOUTH_CORNER_A]))
        self.face_h = float(lms[CHIN, 1] - lms[FOREHEAD, 1])
        self.face_w = float(np.linalg.norm(lms[CHEEK_B] - lms[CHEEK_A]))
        self.mouth_c = lms[LIP_UPPER_INNER + LIP_LOWER_INNER].mean(axis=0)
        self.face_c = lms[FACE_OVAL].mean(axis=0)
        self.corner_y = float((lms[MOUTH_CORNER_A, 1] + lms[MOUTH_CORNER_B, 1]) / 2)

    def _build_mesh(self, lms: np.ndarray) -> None:
        size = self.size_px
        oval = lms[FACE_OVAL]
        ring = self.face_c + (oval - self.face_c) * RING_SCALE
        steps = np.arange(0, size + 1, BORDER_STEP_PX, dtype=np.float64)
        steps[-1] = size - 1
        border = np.concatenate(
            [
                np.stack([steps, np.zeros_like(steps)], 1),
                np.stack([steps, np.full_like(steps, size - 1)], 1),
                np.stack([np.zeros_like(steps), steps], 1),
                np.stack([np.full_like(steps, size - 1), steps], 1),
            ]
        )
        ring = np.clip(ring, 0, size - 1)
        self._n_face = len(lms)
        self._vertices = np.concatenate([lms, ring, border])
        self._tri = Delaunay(self._vertices)

        # Local motions live inside the ring: that is the region of interest.
        x0, y0 = np.floor(ring.min(axis=0)).astype(int)
        x1, y1 = np.ceil(ring.max(axis=0)).astype(int) + 1
        self._roi = (max(y0, 0), min(y1, size), max(x0, 0), min(x1, size))
        ry0, ry1, rx0, rx1 = self._roi
        idx, weights = self._barycentric(ry0, ry1, rx0, rx1)
        self._roi_idx = idx.reshape(ry1 - ry0, rx1 - rx0, 3)
        self._roi_weights = weights.reshape(ry1 - ry0, rx1 - rx0, 3)

    def _barycentric(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertex indices and barycentric weights of every pixel in a rectangle."""
        ys, xs = np.mgrid[y0:y1, x0:x1]
        pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        simplex = self._tri.find_simplex(pts)
        simplex = np.where(simplex < 0, 0, simplex)
        transform = self._tri.transform[simplex]
        delta = pts - transform[:, 2]
        b = np.einsum("nij,nj->ni", transform[:, :2], delta)
        weights = np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)
        return self._tri.simplices[simplex], weights.astype(np.float32)

    def _field_from_vertices(self, vertex_disp: np.ndarray) -> _Field:
        """Interpolate per-vertex displacements over the mesh into a smooth pixel field."""
        full = np.zeros((len(self._vertices), 2), dtype=np.float32)
        full[: self._n_face] = vertex_disp
        moving = np.abs(vertex_disp).max(axis=1) > 0.05
        if not moving.any():
            return _Field(0, 1, 0, 1, np.zeros((1, 1, 2), np.float32), full[: self._n_face])
        # The support of the field: triangles touching a moving vertex, padded for the blur.
        touched = np.isin(self._tri.simplices, np.flatnonzero(moving)).any(axis=1)
        corners = self._vertices[self._tri.simplices[touched].ravel()]
        pad = int(3 * FIELD_BLUR_SIGMA_PX) + 2
        ry0, ry1, rx0, rx1 = self._roi
        x0 = int(max(np.floor(corners[:, 0].min()) - pad, rx0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + pad + 1, rx1))
        y0 = int(max(np.floor(corners[:, 1].min()) - pad, ry0))
        y1 = int(min(np.ceil(corners[:, 1].max()) + pad + 1, ry1))
        ry0, _, rx0, _ = self._roi
        rows = slice(y0 - ry0, y1 - ry0)
        cols = slice(x0 - rx0, x1 - rx0)
        idx = self._roi_idx[rows, cols].reshape(-1, 3)
        weights = self._roi_weights[rows, cols].reshape(-1, 3)
        field = (full[idx] * weights[:, :, None]).sum(axis=1)
        field = field.reshape(y1 - y0, x1 - x0, 2).astype(np.float32)
        field = cv2.GaussianBlur(field, (0, 0), FIELD_BLUR_SIGMA_PX)
        return _Field(y0, y1, x0, x1, np.ascontiguousarray(field), full[: self._n_face])

    def _build_fields(self, lms: np.ndarray) -> None:
        n = len(lms)
        mw, fh = self.mouth_w, self.face_h
        mc = self.mouth_c
        rel = lms - mc

        # Jaw: everything below the lips' seam drops, most at the centre of the face; the
        # chin follows the lower lip and the jaw angles near the ears barely move. Beside
        # the mouth the drop ramps in slowly so the cheeks stretch instead of tearing.
        seam = np.interp(lms[:, 0], lms[LIP_UPPER_INNER, 0], lms[LIP_UPPER_INNER, 1])
        outside = np.clip((np.abs(rel[:, 0]) - 0.5 * mw) / (0.3 * mw), 0.0, 1.0)
        ramp = 1.0 + 0.6 * mw * outside
        below = _smoothstep((lms[:, 1] - seam) / ramp)
        below[LIP_LOWER_INNER[1:-1] + LIP_LOWER_OUTER[1:-1]] = 1.0
        # The lips open as an ellipse (the corners are hinges); well below the lip the
        # whole jaw drops evenly.
        lip_shape = np.sqrt(np.clip(1.0 - (rel[:, 0] / (0.56 * mw)) ** 2, 0.0, 1.0))
        lower_outer = np.interp(lms[:, 0], lms[LIP_LOWER_OUTER, 0], lms[LIP_LOWER_OUTER, 1])
        depth = np.clip((lms[:, 1] - lower_outer) / (0.45 * mw), 0.0, 1.0)
        below *= lip_shape + (1.0 - lip_shape) * _smoothstep(depth)
        central = np.clip(1.0 - (np.abs(lms[:, 0] - mc[0]) / (0.62 * self.face_w)) ** 2, 0.0, 1.0)
        jaw = np.zeros((n, 2))
        jaw[:, 1] = below * central
        jaw[LIP_UPPER_INNER, 1] = -0.06
        jaw[LIP_UPPER_OUTER, 1] = -0.03
        for corner in (MOUTH_CORNER_A, MOUTH_CORNER_B, LIP_UPPER_INNER[0], LIP_UPPER_INNER[-1]):
            jaw[corner, 1] = 0.22
            jaw[corner, 0] = -0.04 * np.sign(rel[corner, 0])
        jaw *= JAW_DROP_PER_MOUTH_W * mw

        # Spread and rounding: lips move along the mouth line, fading smoothly into the cheeks.
        bump = np.exp(-((rel[:, 0] / (0.75 * mw)) ** 2) - (rel[:, 1] / (0.45 * mw)) ** 2)
        along = np.clip(rel[:, 0] / (0.5 * mw), -1.4, 1.4)
        spread = np.zeros((n, 2))
        spread[:, 0] = SPREAD_PER_MOUTH_W * mw * along * bump
        spread[:, 1] = -0.03 * mw * np.abs(along) * bump
        rounding = np.zeros((n, 2))
        rounding[:, 0] = -ROUND_PER_MOUTH_W * mw * along * bump
        rounding[LIP_UPPER_OUTER[2:-2], 1] = -0.03 * mw
        rounding[LIP_LOWER_OUTER[2:-2], 1] = 0.03 * mw

        # Pressed lips (p, b, m): the lips thin as they push together.
        press = np.zeros((n, 2))
        press[LIP_UPPER_OUTER[1:-1], 1] = 0.03 * mw
        press[LIP_LOWER_OUTER[1:-1], 1] = -0.03 * mw

        self._fields = {
            "jaw_open": self._field_from_vertices(jaw),
            "lip_spread": self._field_from_vertices(spread),
            "lip_round": self._field_from_vertices(rounding),
            "lip_press": self._field_from_vertices(press),
            "blink": self._field_from_vertices(self._blink_vertices(lms)),
            "brow_raise": self._field_from_vertices(self._brow_vertices(lms, fh)),
        }
        self._upper_teeth_h = 0.085 * mw
        self._lower_teeth_h = 0.04 * mw

    def _blink_vertices(self, lms: np.ndarray) -> np.ndarray:
        disp = np.zeros((len(lms), 2))
        for upper, lower in ((EYE_A_UPPER, EYE_A_LOWER), (EYE_B_UPPER, EYE_B_LOWER)):
            up, low = lms[upper], lms[lower]
            gap = np.maximum(low[:, 1] - up[:, 1], 0.0)
            eye_h = float(gap.max()) or 1.0
            x0, x1 = up[0, 0], up[-1, 0]
            # Lids meet a little below the middle, as real lids do; skin above follows.
            for i, idx in enumerate(upper[1:-1], start=1):
                disp[idx, 1] = 1.0 * gap[i]
            for i, idx in enumerate(lower[1:-1], start=1):
                disp[idx, 1] = -0.15 * gap[i]
            span = (lms[:, 0] > x0) & (lms[:, 0] < x1)
            top = np.interp(lms[:, 0], up[:, 0], up[:, 1])
            above = span & (lms[:, 1] < top - 0.5)
            dist = (top - lms[:, 1]) / (1.2 * eye_h)
            follow = 0.80 * np.interp(lms[:, 0], up[:, 0], gap) * np.exp(-(dist**2)) * 0.6
            mask = above & ~np.isin(np.arange(len(lms)), upper + lower)
            disp[mask, 1] = np.maximum(disp[mask, 1], follow[mask])
        return disp

    def _brow_vertices(self, lms: np.ndarray, face_h: float) -> np.ndarray:
        disp = np.zeros((len(lms), 2))
        lift = BROW_PER_FACE_H * face_h
        for brow in (BROW_A, BROW_B):
            pts = lms[brow]
            c = pts.mean(axis=0)
            w = float(np.ptp(pts[:, 0])) or 1.0
            d = np.hypot((lms[:, 0] - c[0]) / (0.9 * w), (lms[:, 1] - c[1]) / (0.5 * w))
            disp[:, 1] = np.minimum(disp[:, 1], -lift * np.exp(-(d**2)))
        return disp

    def _build_head_fields(self) -> None:
        """Head motion: a rotation and shift of the head and hair that fades into the body."""
        y0, y1, x0, x1 = 0, self.size_px, 0, self.size_px
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        pivot = np.array([self.face_c[0], self.face_c[1] + 0.75 * self.face_h], np.float32)
        head_c = np.array([self.face_c[0], self.face_c[1] - 0.12 * self.face_h])
        rx, ry = 0.95 * self.face_w, 0.85 * self.face_h
        d = np.hypot((xs - head_c[0]) / rx, (ys - head_c[1]) / ry)
        mask = (1.0 - _smoothstep((d - 0.85) / 0.6)).astype(np.float32)
        # The neck and shoulders stay put: fade out below the chin.
        chin_y = self._lms[CHIN, 1]
        mask *= (1.0 - _smoothstep((ys - chin_y) / (0.35 * self.face_h))).astype(np.float32)
        rows = np.flatnonzero(mask.max(axis=1) > 1e-3)
        cols = np.flatnonzero(mask.max(axis=0) > 1e-3)
        hy0, hy1 = int(rows[0]), int(rows[-1]) + 1
        hx0, hx1 = int(cols[0]), int(cols[-1]) + 1
        ry0, ry1, rx0, rx1 = self._roi
        # The working window covers the head motion and every local field.
        self._win = (min(hy0, ry0), max(hy1, ry1), min(hx0, rx0), max(hx1, rx1))
        wy0, wy1, wx0, wx1 = self._win
        m = mask[wy0:wy1, wx0:wx1]
        gy, gx = ys[wy0:wy1, wx0:wx1], xs[wy0:wy1, wx0:wx1]
        self._head_rot = np.ascontiguousarray(
            np.stack([-(gy - pivot[1]) * m, (gx - pivot[0]) * m], axis=-1)
        )
        self._head_dx = np.ascontiguousarray(np.stack([m, np.zeros_like(m)], axis=-1))
        self._head_dy = np.ascontiguousarray(np.stack([np.zeros_like(m), m], axis=-1))
        self._grid = np.ascontiguousarray(np.stack([gx, gy], axis=-1))
        self._disp = np.zeros_like(self._grid)
        self._pivot = pivot
        self._head_mask_at = lambda pts: mask[
            np.clip(pts[:, 1].astype(int), 0, self.size_px - 1),
            np.clip(pts[:, 0].astype(int), 0, self.size_px - 1),
        ]

    def _sample_teeth_color(self) -> np.ndarray:
        """Teeth colour from the photo when its mouth shows teeth, else a natural off-white."""
        up = self._lms[LIP_UPPER_INNER[2:-2]]
        low = self._lms[LIP_LOWER_INNER[2:-2]]
        gap = float(np.median(low[:, 1] - up[:, 1]))
        default = np.array([222, 214, 204], np.float32)
        if gap < 3.0:
            return default
        poly = np.concatenate([up, low[::-1]]).astype(np.int32)
        mask = np.zeros(self._base.shape[:2], np.uint8)
        cv2.fillPoly(mask, [poly], 255)
        pixels = self._base[mask > 0].astype(np.float32)
        if len(pixels) < 10:
            return default
        bright = pixels[pixels.sum(axis=1) >= np.percentile(pixels.sum(axis=1), 75)]
        color = np.median(bright, axis=0)
        # Blend toward a clean tooth colour: small crops of teeth are often blurred with lip.
        return (0.6 * color + 0.4 * default).astype(np.float32)

    # ------------------------------------------------------------------ per frame
    def _coefficients(self, p: FaceParams) -> dict[str, float]:
        return {
            "jaw_open": float(np.clip(p.jaw_open, 0.0, 1.2)),
            "lip_spread": float(np.clip(p.lip_spread, -0.5, 1.0)),
            "lip_round": float(np.clip(p.lip_round, 0.0, 1.0)),
            "lip_press": float(np.clip(p.lip_press, 0.0, 1.0)),
            "blink": float(np.clip(p.blink, 0.0, 1.0)),
            "brow_raise": float(np.clip(p.brow_raise, -0.5, 1.0)),
        }

    def render(self, params: FaceParams) -> np.ndarray:
        """Draw one frame."""
        wy0, wy1, wx0, wx1 = self._win
        disp = self._disp
        theta = float(np.radians(params.head_roll_deg))
        np.multiply(self._head_rot, theta, out=disp)
        if params.head_dx_px:
            cv2.scaleAdd(self._head_dx, float(params.head_dx_px), disp, dst=disp)
        if params.head_dy_px:
            cv2.scaleAdd(self._head_dy, float(params.head_dy_px), disp, dst=disp)
        coeffs = self._coefficients(params)
        for key, value in coeffs.items():
            if abs(value) < 1e-3:
                continue
            f = self._fields[key]
            view = disp[f.y0 - wy0 : f.y1 - wy0, f.x0 - wx0 : f.x1 - wx0]
            cv2.scaleAdd(f.field, value, view, dst=view)
        # Backward map with one fixed-point step: source(p) = p - D(p - D(p)).
        first = self._grid - disp
        local = first - np.array([wx0, wy0], np.float32)
        disp_at = cv2.remap(disp, local, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        source = self._grid - disp_at
        out = self._out
        out[wy0:wy1, wx0:wx1] = cv2.remap(
            self._base, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        self._draw_mouth(out, coeffs, theta, params)
        return out.copy()

    def _vertex_positions(
        self, idx: list[int], coeffs: dict[str, float], theta: float, params: FaceParams
    ) -> np.ndarray:
        pts = self._lms[idx].copy()
        for key, value in coeffs.items():
            if value:
                pts += value * self._fields[key].vertex[idx]
        m = self._head_mask_at(pts)[:, None]
        rel = pts - self._pivot
        rot = np.stack([-rel[:, 1], rel[:, 0]], axis=1) * theta
        pts += m * (rot + np.array([params.head_dx_px, params.head_dy_px]))
        return pts

    def _draw_mouth(
        self, out: np.ndarray, coeffs: dict[str, float], theta: float, params: FaceParams
    ) -> None:
        """Paint the mouth interior inside the displaced inner lips, with soft edges."""
        upper = self._vertex_positions(LIP_UPPER_INNER, coeffs, theta, params)
        lower = self._vertex_positions(LIP_LOWER_INNER, coeffs, theta, params)
        opening = lower[:, 1] - upper[:, 1]
        # The backward warp is least exact where the lips stretch apart; let the interior
        # reach a little over the lower lip's inner edge so no stretched seam shows.
        lower[1:-1, 1] += np.minimum(0.1 * opening[1:-1], 2.0)
        open_c = float(opening[4:7].mean())
        if open_c < 1.0:
            return
        pad = 4
        x0 = int(np.floor(min(upper[:, 0].min(), lower[:, 0].min()))) - pad
        x1 = int(np.ceil(max(upper[:, 0].max(), lower[:, 0].max()))) + pad
        y0 = int(np.floor(upper[:, 1].min())) - pad
        y1 = int(np.ceil(lower[:, 1].max())) + pad
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.size_px), min(y1, self.size_px)
        h, w = y1 - y0, x1 - x0
        if h < 3 or w < 3:
            return
        shift = 4  # sub-pixel polygon precision
        origin = np.array([x0, y0])

        def poly(points: np.ndarray) -> np.ndarray:
            return np.round((points - origin) * (1 << shift)).astype(np.int32)

        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [poly(np.concatenate([upper, lower[::-1]]))], 255, cv2.LINE_AA, shift)

        ys = np.arange(h, dtype=np.float32)[:, None] + y0
        xs = np.arange(w, dtype=np.float32)[None, :] + x0
        top = np.interp(xs[0], upper[:, 0], upper[:, 1])[None, :]
        bottom = np.interp(xs[0], lower[:, 0], lower[:, 1])[None, :]
        depth = np.clip((ys - top) / np.maximum(bottom - top, 1.0), 0.0, 1.0)
        mid_x = 0.5 * (upper[0, 0] + upper[-1, 0])
        half_w = max(0.5 * (upper[-1, 0] - upper[0, 0]), 1.0)
        # 1 at the middle of the mouth, 0 at the corners: teeth and tongue recede there.
        side = np.clip(1.0 - (np.abs(xs - mid_x) / half_w) ** 2, 0.0, 1.0)
        # Cavity: near black under the upper teeth, warming to a dark red tongue below.
        warm = depth**1.5 * (0.4 + 0.6 * side)
        cavity = np.empty((h, w, 3), np.float32)
        cavity[..., 0] = 16 + 92 * warm
        cavity[..., 1] = 7 + 26 * warm
        cavity[..., 2] = 8 + 30 * warm
        teeth = self._teeth_rgb[None, None, :]
        # Upper teeth hang from the upper jaw: a band under the upper lip, never more than
        # about half the opening, shaded darker toward their edge and the corners.
        teeth_up = min(self._upper_teeth_h, 0.45 * open_c + 1.0)
        band_up = (1.0 - _smoothstep((ys - top - teeth_up + 1.0) / 2.0)) * side**0.7
        # Bright enamel with a soft shadow under the lip and faint gaps between teeth,
        # the central incisors widest; without the gaps the band reads as a metal strip.
        under_lip = _smoothstep((ys - top) / 1.5)
        tooth_w = 0.11 * self.mouth_w * (1.0 + 0.25 * side)
        phase = np.abs(((xs - mid_x) / tooth_w) % 1.0 - 0.5)
        gaps = 1.0 - 0.18 * np.exp(-(((phase - 0.5) / 0.07) ** 2)) * (ys - top > 1.0)
        shade_up = (0.78 + 0.22 * under_lip) * (0.9 + 0.1 * side) * gaps
        shade_up = shade_up - 0.12 * _smoothstep((ys - top) / max(teeth_up, 1.0))
        interior = cavity + band_up[..., None] * (teeth * shade_up[..., None] - cavity)
        # Lower teeth show only when the jaw is well open, in the middle, in shadow.
        if open_c > 0.12 * self.mouth_w:
            teeth_low = min(self._lower_teeth_h, 0.2 * open_c)
            band_low = 0.55 * _smoothstep((ys - (bottom - teeth_low) + 1.0) / 2.0) * side**3
            interior += band_low[..., None] * (teeth * 0.6 - interior)
        interior *= (0.65 + 0.35 * side)[..., None]

        alpha = cv2.GaussianBlur(mask, (0, 0), 0.9).astype(np.float32)[..., None] / 255.0
        region = out[y0:y1, x0:x1].astype(np.float32)
        blended = region + alpha * (interior - region)
        out[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
