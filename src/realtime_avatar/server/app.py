"""The FastAPI app. For now: health, avatars and OpenAPI; the live session comes next."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..avatars.registry import list_avatars
from ..errors import AvatarError
from ..settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app with its routes."""
    settings = settings or get_settings()
    app = FastAPI(title="realtime-avatar", version=__version__)

    @app.exception_handler(AvatarError)
    async def avatar_error(_request: Request, exc: AvatarError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/avatars")
    async def avatars() -> dict[str, list[str]]:
        return {"avatars": list_avatars(settings)}

    return app
