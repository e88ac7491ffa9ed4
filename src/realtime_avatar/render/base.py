"""The ``Renderer`` protocol: face parameters for one frame in, one RGB frame out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..frames import FaceParams


@runtime_checkable
class Renderer(Protocol):
    """Draws the avatar for one 40 ms frame. One instance per session; not thread-safe."""

    name: str
    size_px: int

    def render(self, params: FaceParams) -> np.ndarray:
        """An H x W x 3 uint8 RGB frame showing the face in the state ``params`` describes."""
        ...
