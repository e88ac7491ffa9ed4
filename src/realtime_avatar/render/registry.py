"""Renderer names (as settings spell them) to factories."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigurationError
from .base import Renderer
from .mesh2d import Mesh2DRenderer

RendererFactory = Callable[[np.ndarray, np.ndarray], Renderer]

RENDERERS: dict[str, RendererFactory] = {"mesh2d": Mesh2DRenderer}


def create_renderer(name: str, face_rgb: np.ndarray, landmarks: np.ndarray) -> Renderer:
    """A renderer for one avatar's prepared face."""
    try:
        factory = RENDERERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown renderer {name!r}; set AVATAR_RENDERER to one of: {', '.join(RENDERERS)}"
        ) from None
    return factory(face_rgb, landmarks)
