"""Renderer names (as settings spell them) to factories that build one for an avatar.

A factory receives the avatar's prepared face and the settings (``renderer_model_path``,
``renderer_device``), so a renderer that loads weights finds them there. Add one with
``register_renderer`` (a plug-in, or a test) or by a line in ``RENDERERS``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigurationError
from ..settings import Settings
from .base import FaceImage, Renderer

RendererFactory = Callable[[FaceImage, Settings], Renderer]


def _mesh2d(face: FaceImage, settings: Settings) -> Renderer:
    from .animated import AnimatedRenderer
    from .mesh2d import Mesh2DRenderer

    return AnimatedRenderer(Mesh2DRenderer(face.face_rgb, face.landmarks), name="mesh2d")


def _wav2lip(face: FaceImage, settings: Settings) -> Renderer:
    from .wav2lip import build_wav2lip  # torch is imported only when this is chosen

    return build_wav2lip(face, settings)


RENDERERS: dict[str, RendererFactory] = {"mesh2d": _mesh2d, "wav2lip": _wav2lip}


def register_renderer(name: str, factory: RendererFactory) -> None:
    """Make ``AVATAR_RENDERER=name`` build renderers with ``factory``."""
    RENDERERS[name] = factory


def create_renderer(name: str, face: FaceImage, settings: Settings) -> Renderer:
    """A renderer for one avatar's prepared face (one per session: it keeps the clock).

    With ``AVATAR_MODEL_SERVICE_URL`` set it renders on the model service
    (``modelservice/client.py``), which may have renderers this machine has not.
    """
    if settings.model_service_url:
        from ..modelservice.client import create_remote_renderer, uses_service

        if uses_service(settings, "render"):
            return create_remote_renderer(name, face, settings)
    try:
        factory = RENDERERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown renderer {name!r}; set AVATAR_RENDERER to one of: {', '.join(RENDERERS)}"
        ) from None
    return factory(face, settings)
