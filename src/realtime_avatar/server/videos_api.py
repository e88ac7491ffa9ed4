"""The video jobs API: ``/api/v1/videos``.

- ``POST /api/v1/videos``: JSON ``{"text", "avatar", "language"}`` to speak a script, or a
  multipart form with an ``audio`` file (and ``avatar``) to lip-sync a recording; answers
  ``202 {"id", "state", ...}``.
- ``GET /api/v1/videos/{id}``: state (queued, running, done, failed, cancelled), progress,
  error, timings.
- ``GET /api/v1/videos/{id}/stream``: while the job renders, its fragmented MP4 as it grows
  (a ``<video>`` plays it from the first fragment); once done, the finished file, with
  ``Range`` support.
- ``DELETE /api/v1/videos/{id}``: cancel a queued or running job.

With a token set, ``<video src>`` cannot send the ``Authorization`` header, so the job's
answer carries a ``stream_url`` with a per-job key (an HMAC of the id under the token):
it opens that job's stream and nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from ..errors import AvatarError
from ..jobs.model import FINAL, JobConflictError, JobRecord, JobState
from ..jobs.service import VideoJobs, owner_of
from ..settings import Settings

CHUNK_BYTES = 64 * 1024
POLL_S = 0.05  # how often a stream looks for new bytes
RECORD_EVERY_S = 0.25  # how often it re-reads the job's state while waiting
UPLOAD_COPY_BYTES = 1024 * 1024


class VideoRequest(BaseModel):
    """A script to speak as a video."""

    text: str = Field(description="what the avatar says (plain text; sentences are spoken in turn)")
    avatar: str = Field("default", description="a registered avatar's name")
    language: str = Field("auto", description="en, es, zh, ... or auto (detected per sentence)")


class VideoAccepted(BaseModel):
    """A queued job."""

    id: str
    state: str
    status_url: str
    stream_url: str


_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["audio"],
    "properties": {
        "audio": {
            "type": "string",
            "format": "binary",
            "description": "a recording to lip-sync (WAV, MP3, M4A, OGG, FLAC)",
        },
        "avatar": {"type": "string", "default": "default"},
    },
}


def _stream_key(token: str, job_id: str) -> str:
    return hmac.new(token.encode(), f"stream:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]


def videos_router(
    jobs: VideoJobs, settings: Settings, require_token: Callable[[Request], None]
) -> APIRouter:
    """The ``/api/v1/videos`` routes over one ``VideoJobs``."""
    router = APIRouter(prefix="/api/v1/videos", tags=["videos"])

    def stream_url(record: JobRecord) -> str:
        url = f"/api/v1/videos/{record.id}/stream"
        return f"{url}?key={_stream_key(settings.token, record.id)}" if settings.token else url

    def answer(record: JobRecord) -> dict[str, Any]:
        body = record.public()
        body["stream_url"] = stream_url(record)
        body["heartbeat_age_s"] = jobs.heartbeat_age_s(record)
        body.pop("owner", None)
        return body

    @router.post(
        "",
        status_code=202,
        response_model=VideoAccepted,
        dependencies=[Depends(require_token)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": VideoRequest.model_json_schema()},
                    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                },
            }
        },
        responses={
            400: {"description": "no words to say, a bad avatar name, an unreadable recording"},
            404: {"description": "no such avatar"},
            413: {"description": "the body is over AVATAR_MAX_JSON_BYTES / MAX_UPLOAD_BYTES"},
            422: {"description": "malformed body, or a script over AVATAR_JOB_MAX_TEXT_CHARS"},
            429: {"description": "too many queued or running jobs for this token"},
        },
    )
    async def submit(request: Request) -> JSONResponse:
        """Queue a video: JSON ``{"text", "avatar", "language"}``, or multipart ``audio``."""
        owner = owner_of(request.headers.get("authorization") if settings.token else None)
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            record = await _submit_audio(request, owner)
        elif content_type.startswith("application/json") or not content_type:
            try:
                body = VideoRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise _InvalidBody(_validation_message(exc)) from None
            record = await asyncio.to_thread(
                jobs.submit_text, owner, body.text, body.avatar, body.language
            )
        else:
            raise _UnsupportedMedia(
                f"send JSON (Content-Type: application/json) with a script, or "
                f"multipart/form-data with an audio file; got {content_type[:60]!r}"
            )
        accepted = VideoAccepted(
            id=record.id,
            state=str(record.state),
            status_url=f"/api/v1/videos/{record.id}",
            stream_url=stream_url(record),
        )
        return JSONResponse(accepted.model_dump(), status_code=202)

    async def _submit_audio(request: Request, owner: str) -> JobRecord:
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors, in words
            raise AvatarError(f"could not read the multipart form ({type(exc).__name__})") from None
        try:
            audio = form.get("audio")
            avatar = form.get("avatar", "default")
            if audio is None or isinstance(audio, str):
                raise AvatarError(
                    "the form has no 'audio' file; send the recording as a file field "
                    "named audio (or JSON with a script)"
                )
            if not isinstance(avatar, str):
                raise AvatarError("the 'avatar' field must be a name, not a file")
            jobs.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=jobs.root)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := await audio.read(UPLOAD_COPY_BYTES):
                        out.write(chunk)
                return await asyncio.to_thread(
                    jobs.submit_audio, owner, Path(tmp), audio.filename or "", avatar
                )
            finally:
                Path(tmp).unlink(missing_ok=True)  # moved into the job's folder on success
        finally:
            await form.close()

    @router.get("/{job_id}", dependencies=[Depends(require_token)])
    async def status(job_id: str) -> dict[str, Any]:
        """A job's state, progress (0..1), error and timings."""
        return answer(await asyncio.to_thread(jobs.get, job_id))

    @router.delete("/{job_id}", dependencies=[Depends(require_token)])
    async def cancel(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (409 once it is done, failed or cancelled)."""
        return answer(await asyncio.to_thread(jobs.cancel, job_id))

    @router.get(
        "/{job_id}/stream",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"video/mp4": {}}, "description": "fragmented MP4"},
            206: {"description": "a byte range of the finished file"},
            409: {"description": "the job failed or was cancelled"},
        },
    )
    async def stream(job_id: str, request: Request, key: str | None = None) -> Any:
        """The video: growing while it renders, then the whole file with Range support."""
        if settings.token and not (
            key and hmac.compare_digest(key, _stream_key(settings.token, job_id))
        ):
            require_token(request)
        record = await asyncio.to_thread(jobs.get, job_id)
        if record.state is JobState.DONE:
            return FileResponse(
                jobs.video_path(record),
                media_type="video/mp4",
                filename=f"avatar-{record.id[:8]}.mp4",
                content_disposition_type="inline",
            )
        if record.state in FINAL:
            raise JobConflictError(
                f"job {record.id} {record.state}: {record.error or 'no video'}; nothing to stream"
            )
        return StreamingResponse(
            _follow(jobs, record.id),
            media_type="video/mp4",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


async def _follow(jobs: VideoJobs, job_id: str) -> AsyncIterator[bytes]:
    """The bytes of a job's growing MP4 as they are written, until its attempt ends.

    Waits while the job is queued; follows the running attempt's file (kept open, so the
    rename into place when it completes changes nothing for the reader); ends when the job
    is final, or when another attempt takes over (the file being followed is then dead).
    """
    loop = asyncio.get_running_loop()
    handle = None
    attempt = -1
    last_look = 0.0
    try:
        while True:
            if handle is None:
                record = await asyncio.to_thread(jobs.get, job_id)
                if record.state is JobState.DONE:
                    async for chunk in _read_all(jobs.video_path(record)):
                        yield chunk
                    return
                if record.state in FINAL:
                    return
                path = jobs.stream_path(record)
                if record.state is JobState.RUNNING and path is not None:
                    try:
                        handle = open(path, "rb")  # noqa: SIM115 - kept open across yields
                        attempt = record.attempt
                    except FileNotFoundError:
                        pass
                if handle is None:
                    await asyncio.sleep(POLL_S)
                    continue
            chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            if chunk:
                yield chunk
                continue
            if loop.time() - last_look < RECORD_EVERY_S:
                await asyncio.sleep(POLL_S)
                continue
            last_look = loop.time()
            record = await asyncio.to_thread(jobs.get, job_id)
            if record.state is JobState.RUNNING and record.attempt == attempt:
                await asyncio.sleep(POLL_S)
                continue
            # Final, or taken over: the writer is done with this file; send what is left.
            while rest := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield rest
            return
    finally:
        if handle is not None:
            handle.close()


async def _read_all(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk


class _UnsupportedMedia(AvatarError):
    status_code = 415


class _InvalidBody(AvatarError):
    status_code = 422


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where[:60]}: {str(error.get('msg', 'invalid'))[:120]}")
    return (
        "invalid request: "
        + "; ".join(parts)
        + ' (send JSON like {"text": "Hello!", "avatar": "default", "language": "en"})'
    )
