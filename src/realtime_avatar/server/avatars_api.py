"""Make and delete avatars over HTTP: the page's "Make your avatar" panel and other tools.

``POST /api/v1/avatars`` takes a multipart form (``name``, ``image``, ``voice``, optional
``persona`` as text or a file) and runs ``avatars.registry.register``, the very code behind
``avatar register``. A plain POST answers ``201`` with the avatar; a client that sends
``Accept: application/x-ndjson`` gets one JSON line per step while the avatar is made,
then a last line with the outcome (``fitting the voice``, the long step when
``AVATAR_VOICE_FIT`` is on, also reports its candidates: fractional ``done`` and a
``detail``). Errors name the form field they are about:
``{"error": "...", "field": "image"}``.

Uploads are copied, bounded, into a hidden staging folder inside the avatars folder (the
leftover rules of ``registry.clean_leftovers`` cover it) and removed afterwards; the
registry writes the avatar to its own staging folder and renames it into place, so a
failure at any step leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from ..avatars.registry import (
    DEFAULT_AVATAR,
    MAX_PERSONA_BYTES,
    OWNER,
    Avatar,
    delete_avatar,
    register,
    validate_name,
    writable_avatars_dir,
)
from ..engine.conversation import lower_priority
from ..errors import (
    AvatarError,
    AvatarExistsError,
    InvalidAudioError,
    InvalidImageError,
    InvalidNameError,
    InvalidTextError,
)
from ..settings import Settings

log = logging.getLogger(__name__)

IMAGE_MAX_BYTES = 15 * 1024 * 1024  # a 2000 px photo is 1-3 MB; a phone's HEIC about 3
VOICE_MAX_BYTES = 20 * 1024 * 1024  # a minute of 48 kHz stereo WAV is 11 MB
COPY_BLOCK = 1 << 20
NDJSON = "application/x-ndjson"
# What register reports, in order (cli.py's bar shows the same): the page's progress bar.
STEPS = (
    "reading photo",
    "checking the voice sample",
    "finding the face",
    "computing the voice profile",
    "fitting the voice",  # only when AVATAR_VOICE_FIT is not off
    "saving",
)
_FIELD_OF: tuple[tuple[type[AvatarError], str], ...] = (
    (InvalidNameError, "name"),
    (AvatarExistsError, "name"),
    (InvalidImageError, "image"),
    (InvalidAudioError, "voice"),
    (InvalidTextError, "persona"),
)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UploadTooLargeError(AvatarError):
    """One uploaded file over its limit."""

    status_code = 413


class MissingFieldError(AvatarError):
    """A form field the request must have."""

    status_code = 422


@dataclass
class FieldError(Exception):
    """An error about one form field; ``field`` is None when it is about none of them."""

    error: AvatarError
    field: str | None

    def response(self) -> JSONResponse:
        """The 4xx JSON body."""
        return JSONResponse(
            {"error": self.error.message, "field": self.field},
            status_code=self.error.status_code,
        )


@dataclass
class _Making:
    """Names being made now: a second POST of the same name waits for nothing, it is refused."""

    names: set[str] = field(default_factory=set)
    # One registration at a time: each loads mediapipe work onto the cores live calls use.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def field_of(exc: AvatarError) -> str | None:
    """The form field an error from ``register`` is about."""
    for kind, name in _FIELD_OF:
        if isinstance(exc, kind):
            return name
    return None


def mb(size: int) -> str:
    """Bytes as megabytes, for messages."""
    return f"{size / (1024 * 1024):.1f} MB"


def avatar_summary(avatar: Avatar) -> dict[str, Any]:
    """What the API says about an avatar."""
    manifest = avatar.manifest
    voice = manifest.get("voice", {})
    return {
        "name": avatar.name,
        "display_name": avatar.display_name,
        "created_unix": manifest.get("created_unix"),
        "face_size_px": manifest.get("face", {}).get("face_size_px"),
        "voice_speech_s": voice.get("speech_s"),
        "has_persona": bool(manifest.get("has_persona")),
        "image": f"/api/v1/avatars/{avatar.name}/image",
        "deletable": avatar.name != DEFAULT_AVATAR,
    }


def _safe_filename(name: str | None, fallback: str) -> str:
    """The uploaded file's own name, kept for messages ("notes.jpg is not an image..."),
    reduced to characters that cannot leave the folder."""
    base = _UNSAFE_CHARS.sub("_", os.path.basename(name or "")).strip("._")[:60]
    return base or fallback


async def _copy_upload(
    upload: UploadFile, target: Path, limit: int, what: str, field_name: str
) -> Path:
    """Copy an upload to ``target`` in blocks, refusing it as soon as it passes ``limit``."""
    size = 0
    await upload.seek(0)
    with open(target, "wb") as out:
        while block := await upload.read(COPY_BLOCK):
            size += len(block)
            if size > limit:
                raise FieldError(
                    UploadTooLargeError(
                        f"the {what} is over the {mb(limit)} limit; "
                        + (
                            "use a smaller photo (a 2000 px side is plenty)"
                            if field_name == "image"
                            else "send about 10-30 s of speech (a shorter or compressed file)"
                        )
                    ),
                    field_name,
                )
            out.write(block)
    if size == 0:
        raise FieldError(
            MissingFieldError(f"the {what} file is empty; choose the file again"), field_name
        )
    return target


def _text_field(form: FormData, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


async def _persona_text(form: FormData) -> str:
    """The persona: a text field or an uploaded Markdown file, UTF-8, bounded."""
    value = form.get("persona")
    if value is None:
        return ""
    if isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = await value.read(MAX_PERSONA_BYTES + 1)
    if len(data) > MAX_PERSONA_BYTES:
        raise FieldError(
            InvalidTextError(
                f"the persona is over {MAX_PERSONA_BYTES // 1024} KiB; keep it to the facts "
                "and style the avatar needs"
            ),
            "persona",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FieldError(
            InvalidTextError("the persona file is not UTF-8 text; save it as UTF-8 Markdown"),
            "persona",
        ) from None


@dataclass
class _Request:
    """A checked creation request, its uploads staged on disk."""

    name: str
    image: Path
    voice: Path
    persona: Path
    staging: Path


async def _stage_request(form: FormData, settings: Settings, making: _Making) -> _Request:
    """Every check that needs no model, and the uploads copied to a staging folder."""
    raw_name = _text_field(form, "name")
    if not raw_name or not raw_name.strip():
        raise FieldError(MissingFieldError("give the avatar a name"), "name")
    try:
        name = validate_name(raw_name)
    except InvalidNameError as exc:
        raise FieldError(exc, "name") from None
    uploads: dict[str, UploadFile] = {}
    for key, what in (("image", "photo"), ("voice", "voice sample")):
        value = form.get(key)
        if not isinstance(value, UploadFile):
            hint = (
                "pick or drop a photo of your face"
                if key == "image"
                else "record your voice or choose an audio file"
            )
            raise FieldError(MissingFieldError(f"no {what} was sent: {hint}"), key)
        uploads[key] = value
    persona = await _persona_text(form)
    root = await asyncio.to_thread(writable_avatars_dir, settings)
    if name in making.names:
        raise FieldError(
            AvatarExistsError(
                f"an avatar named {name!r} is being made right now; pick another name"
            ),
            "name",
        )
    if (root / name).exists():
        raise FieldError(
            AvatarExistsError(
                f"an avatar named {name!r} already exists; pick another name or delete it first"
            ),
            "name",
        )
    making.names.add(name)  # no await since the checks: a second POST of it is refused
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-upload-", dir=root))
    try:
        (staging / OWNER).write_text(str(os.getpid()), encoding="ascii")
        (staging / "image").mkdir()
        (staging / "voice").mkdir()
        image = await _copy_upload(
            uploads["image"],
            staging / "image" / _safe_filename(uploads["image"].filename, "photo"),
            IMAGE_MAX_BYTES,
            "photo",
            "image",
        )
        voice = await _copy_upload(
            uploads["voice"],
            staging / "voice" / _safe_filename(uploads["voice"].filename, "voice"),
            VOICE_MAX_BYTES,
            "voice sample",
            "voice",
        )
        persona_path = staging / "persona.md"
        persona_path.write_text(persona, encoding="utf-8")
    except BaseException:
        making.names.discard(name)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _Request(name, image, voice, persona_path, staging)


def avatars_router(
    settings: Settings,
    require_token: Callable[[Request], None],
    on_change: Callable[[str], None] | None = None,
) -> APIRouter:
    """The create and delete routes; ``on_change(name)`` runs after an avatar is made or
    removed (the live services drop what they cached of it)."""
    router = APIRouter()
    making = _Making()
    # Registration is seconds to minutes of CPU: on its own thread at a lower OS priority,
    # so live calls keep their frames while an avatar is made.
    pool = ThreadPoolExecutor(1, thread_name_prefix="register", initializer=lower_priority)

    async def off_loop(staged: _Request, *callbacks: Any) -> Avatar:
        return await asyncio.get_running_loop().run_in_executor(pool, _register, staged, *callbacks)

    changed = on_change or (lambda _name: None)

    @router.get("/api/v1/avatar-limits")
    async def avatar_limits() -> dict[str, Any]:
        """What an upload may be: the page checks before it sends."""
        return {
            "image_max_bytes": IMAGE_MAX_BYTES,
            "voice_max_bytes": VOICE_MAX_BYTES,
            "persona_max_bytes": MAX_PERSONA_BYTES,
            "min_voice_s": settings.min_voice_s,
            "name_pattern": "^[a-z0-9][a-z0-9_-]{0,39}$",
        }

    @router.post(
        "/api/v1/avatars",
        status_code=201,
        dependencies=[Depends(require_token)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["name", "image", "voice"],
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
                                "image": {"type": "string", "format": "binary"},
                                "voice": {"type": "string", "format": "binary"},
                                "persona": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def create_avatar(request: Request) -> Response:
        """Make an avatar from a photo, a voice sample and an optional persona."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise AvatarError(
                "send the avatar as multipart/form-data with the fields name, image, voice "
                "and (optionally) persona"
            )
        try:
            form = await request.form(max_files=3, max_fields=8)
        except AvatarError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken multipart body is the client's
            if getattr(exc, "status_code", 400) == 413:
                raise
            raise AvatarError(
                "the form could not be read as multipart/form-data; send the fields name, "
                "image, voice and persona"
            ) from None
        try:
            try:
                staged = await _stage_request(form, settings, making)
            except FieldError as exc:
                return exc.response()
        finally:
            await form.close()
        if NDJSON in request.headers.get("accept", ""):
            return StreamingResponse(_stream(staged), media_type=NDJSON)
        try:
            async with making.lock:
                avatar = await off_loop(staged, None)
        except AvatarError as exc:
            return FieldError(exc, field_of(exc)).response()
        finally:
            _done(staged)
        return JSONResponse(avatar_summary(avatar), status_code=201)

    def _register(
        staged: _Request,
        progress: Callable[[str], None] | None,
        fit_progress: Callable[[int, int, str], None] | None = None,
    ) -> Avatar:
        return register(
            staged.name,
            staged.image,
            staged.voice,
            staged.persona,
            settings=settings,
            progress=progress,
            fit_progress=fit_progress,
        )

    def _done(staged: _Request) -> None:
        making.names.discard(staged.name)
        shutil.rmtree(staged.staging, ignore_errors=True)
        changed(staged.name)

    async def _stream(staged: _Request) -> AsyncIterator[bytes]:
        """Progress lines while the avatar is made, then its outcome.

        A client that goes away does not stop the work: the avatar is made (or refused)
        all the same, and its uploads are removed when the work ends, not before.
        """
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        work: asyncio.Future[Avatar] | None = None

        def line(payload: dict[str, Any]) -> bytes:
            return (json.dumps(payload) + "\n").encode("utf-8")

        def progress(step: str) -> None:
            index = STEPS.index(step) if step in STEPS else len(STEPS) - 1
            loop.call_soon_threadsafe(
                lines.put_nowait,
                {"type": "progress", "step": step, "done": index, "total": len(STEPS)},
            )

        def fit_progress(done: int, total: int, what: str) -> None:
            # The voice fit is the long step: its candidates move the bar within the step.
            index = STEPS.index("fitting the voice") + min(done / max(total, 1), 1.0)
            loop.call_soon_threadsafe(
                lines.put_nowait,
                {
                    "type": "progress",
                    "step": "fitting the voice",
                    "done": round(index, 3),
                    "total": len(STEPS),
                    "detail": what,
                },
            )

        try:
            if making.lock.locked():
                yield line(
                    {
                        "type": "progress",
                        "step": "waiting for another avatar to finish",
                        "done": 0,
                        "total": len(STEPS),
                    }
                )
            async with making.lock:
                work = asyncio.ensure_future(off_loop(staged, progress, fit_progress))
                work.add_done_callback(lambda _f: _done(staged))
                while not work.done():
                    getter = asyncio.ensure_future(lines.get())
                    await asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield line(getter.result())
                    else:
                        getter.cancel()
                while not lines.empty():
                    yield line(lines.get_nowait())
            try:
                avatar = work.result()
            except AvatarError as exc:
                yield line(
                    {
                        "type": "error",
                        "status": exc.status_code,
                        "error": exc.message,
                        "field": field_of(exc),
                    }
                )
                return
            except Exception:  # noqa: BLE001 - the stream must end with an outcome
                log.exception("making avatar %s failed", staged.name)
                yield line(
                    {
                        "type": "error",
                        "status": 500,
                        "field": None,
                        "error": "making the avatar failed unexpectedly; see the server log",
                    }
                )
                return
            yield line({"type": "done", "status": 201, "avatar": avatar_summary(avatar)})
        finally:
            if work is None:
                _done(staged)

    @router.delete("/api/v1/avatars/{name}", dependencies=[Depends(require_token)])
    async def remove_avatar(name: str) -> dict[str, Any]:
        """Delete an avatar you made (the default one stays)."""
        clean = validate_name(name)
        if clean in making.names:
            raise AvatarExistsError(
                f"the avatar {clean!r} is being made right now; delete it once it is done"
            )
        await asyncio.to_thread(delete_avatar, clean, settings=settings)
        changed(clean)
        return {"deleted": clean}

    return router
