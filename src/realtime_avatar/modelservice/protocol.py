"""The model service's wire format, version 1: one WebSocket, JSON control, binary payloads.

Every message is one WebSocket message. Control messages are text: a JSON object with a
``type``. Messages that carry samples or pixels are binary: a 4-byte big-endian length, a
JSON header of that many bytes (an object with a ``type``), then the payload::

    | u32 header_len | header (UTF-8 JSON) | payload bytes |

A connection serves one role, chosen in the handshake (``docs/MODELS.md`` has the whole
exchange):

- ``hello``  client -> service: ``{"type": "hello", "protocol": 1, "role": "render"|"tts"}``;
  the service answers ``welcome`` or an ``error`` (a mismatched version is refused, naming
  both versions) and closes.
- render: binary ``render_open`` (renderer name, frame codec, frames ahead; payload the
  face RGB then its landmarks as float32), answered by ``render_ready``. Then binary
  ``push`` (speech: header with turn, text, timings; payload float32 PCM), text ``clear``
  and ``credit`` from the client; binary ``frame`` from the service (payload: the frame's
  int16 audio, then its image, raw RGB or JPEG). ``push`` and ``clear`` carry a sequence
  number ``seq``; each frame says the last ``seq`` the service had applied when it drew it,
  so the client can drop frames a barge-in made stale.
- tts: binary ``synth_open`` (synthesizer name; payload the avatar's voice sample, or
  empty), answered by ``synth_ready`` (capabilities, voice id). Then text ``synthesize``
  with a request ``id``, answered by binary ``speech`` chunks as they are made, then text
  ``speech_end``, or a ``synth_error``; text ``cancel`` drops a request not yet finished.
- ``error`` from the service, with ``fatal`` when the connection ends after it.

Authentication is the main server's rule: ``Authorization: Bearer <AVATAR_TOKEN>`` on
the upgrade request, refused with HTTP 401 and ``{"error": "missing or wrong bearer
token; ..."}``.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..constants import SAMPLES_PER_FRAME
from ..errors import AvatarError
from ..frames import AVFrame, PhonemeTiming, Speech, WordTiming

PROTOCOL_VERSION = 1
WS_PATH = "/ws"
ROLES = ("render", "tts")
FRAME_CODECS = ("raw", "jpeg")
JPEG_QUALITY = 90

MAX_HEADER_BYTES = 1 << 20  # a header holds text and timings, never samples
MAX_TEXT_CHARS = 20_000  # one piece of speech's text
MAX_SPEECH_S = 120.0  # one pushed piece of speech
MAX_FACE_PX = 2048
MAX_LANDMARKS = 10_000
MAX_REFERENCE_BYTES = 64 * 1024 * 1024  # the avatar's voice sample
MAX_AHEAD_FRAMES = 250
MAX_MESSAGE_BYTES = MAX_REFERENCE_BYTES + MAX_HEADER_BYTES + 4
_LENGTH = struct.Struct(">I")

# Close codes (4000-4999 are the application's).
CLOSE_PROTOCOL = 4000  # a malformed or unexpected message
CLOSE_VERSION = 4001  # a protocol version this side does not speak
CLOSE_OPEN_FAILED = 4002  # the renderer or synthesizer asked for cannot be built here

AUTH_MESSAGE = "missing or wrong bearer token; send 'Authorization: Bearer <AVATAR_TOKEN>'"


class ModelServiceError(AvatarError):
    """The model service refused us, failed, or cannot be reached."""

    status_code = 502


class ProtocolError(ModelServiceError):
    """A message that does not follow this protocol."""

    status_code = 400


class VersionMismatch(ModelServiceError):
    """The two sides speak different protocol versions."""

    status_code = 400


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address."""
    if host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- framing ------------------------------------------------------------------------


def encode_binary(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    """One binary message: the header's length, the header as JSON, the payload."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((_LENGTH.pack(len(head)), head, bytes(payload)))


def decode_binary(data: bytes) -> tuple[dict[str, Any], memoryview]:
    """The header and payload of a binary message (``ProtocolError`` when malformed)."""
    if len(data) < _LENGTH.size:
        raise ProtocolError("binary message shorter than its 4-byte header length")
    (length,) = _LENGTH.unpack_from(data)
    if length > MAX_HEADER_BYTES or _LENGTH.size + length > len(data):
        raise ProtocolError(
            f"binary message header length {length} exceeds the message "
            f"({len(data)} bytes) or {MAX_HEADER_BYTES} bytes"
        )
    header = _parse_object(bytes(data[_LENGTH.size : _LENGTH.size + length]))
    return header, memoryview(data)[_LENGTH.size + length :]


def encode_text(message: dict[str, Any]) -> str:
    """One control message as JSON text."""
    return json.dumps(message, separators=(",", ":"))


def decode_text(text: str | bytes) -> dict[str, Any]:
    """A control message (``ProtocolError`` unless it is a JSON object with a ``type``)."""
    return _parse_object(text.encode() if isinstance(text, str) else text)


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"message is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('message must be a JSON object with a string "type"')
    return message


def field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``message[name]`` checked to be of ``kind`` (bool is never an int here)."""
    value = message.get(name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None or (isinstance(value, bool) and bool not in kinds):
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ProtocolError(
            f"{message.get('type', '?')} message: field {name!r} must be {names}, "
            f"got {value!r:.40}"
        )
    return value


# --- handshake ----------------------------------------------------------------------


def hello(role: str) -> dict[str, Any]:
    """The client's first message."""
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "role": role}


def check_hello(message: dict[str, Any]) -> str:
    """The role a ``hello`` asks for; a version or role this service does not speak is
    refused with a message saying what to do."""
    if message.get("type") != "hello":
        raise ProtocolError(f"expected hello first, got {message.get('type')!r}")
    version = message.get("protocol")
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"this model service speaks protocol version {PROTOCOL_VERSION}, the client "
            f"version {version!r}; run the same realtime-avatar version on both machines"
        )
    role = message.get("role")
    if role not in ROLES:
        raise ProtocolError(f"hello: role must be one of {', '.join(ROLES)}, got {role!r}")
    return str(role)


# --- speech -------------------------------------------------------------------------


def speech_header(speech: Speech, **extra: Any) -> dict[str, Any]:
    """A piece of speech's header (the PCM is the payload, float32 little-endian)."""
    return {
        "turn_id": int(speech.turn_id),
        "text": speech.text,
        "language": speech.language,
        "sample_rate_hz": int(speech.sample_rate_hz),
        "phonemes": [[p.phoneme, round(p.start_s, 6), round(p.end_s, 6)] for p in speech.phonemes],
        "words": [[w.word, round(w.start_s, 6), round(w.end_s, 6)] for w in speech.words],
        **extra,
    }


def encode_speech(kind: str, speech: Speech, **extra: Any) -> bytes:
    """A binary message of ``kind`` (``push`` or ``speech``) carrying ``speech``."""
    pcm = np.ascontiguousarray(speech.pcm, dtype="<f4")
    return encode_binary({"type": kind, **speech_header(speech, **extra)}, pcm.tobytes())


def decode_speech(header: dict[str, Any], payload: memoryview) -> Speech:
    """The ``Speech`` a ``push`` or ``speech`` message carries, its fields checked."""
    rate = field(header, "sample_rate_hz", int)
    if not 4_000 <= rate <= 192_000:
        raise ProtocolError(f"{header['type']}: sample_rate_hz {rate} is not 4000..192000")
    if len(payload) % 4:
        raise ProtocolError(f"{header['type']}: PCM payload is not whole float32 samples")
    if len(payload) // 4 > MAX_SPEECH_S * rate:
        raise ProtocolError(f"{header['type']}: more than {MAX_SPEECH_S:g} s of speech at once")
    text = header.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise ProtocolError(f"{header['type']}: text must be a string of at most "
                            f"{MAX_TEXT_CHARS} characters")
    language = header.get("language", "")
    if not isinstance(language, str) or len(language) > 16:
        raise ProtocolError(f"{header['type']}: language must be a short string")
    pcm = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    if not np.isfinite(pcm).all():
        raise ProtocolError(f"{header['type']}: PCM holds NaN or infinite samples")
    return Speech(
        turn_id=field(header, "turn_id", int),
        text=text,
        language=language,
        pcm=pcm,
        sample_rate_hz=rate,
        phonemes=[PhonemeTiming(*t) for t in _timings(header, "phonemes")],
        words=[WordTiming(*t) for t in _timings(header, "words")],
    )


def _timings(header: dict[str, Any], name: str) -> list[tuple[str, float, float]]:
    rows = header.get(name, [])
    out: list[tuple[str, float, float]] = []
    if not isinstance(rows, list):
        raise ProtocolError(f"{header['type']}: {name} must be a list of [label, start_s, end_s]")
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != 3
            or not isinstance(row[0], str)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row[1:])
        ):
            raise ProtocolError(
                f"{header['type']}: each of {name} must be [label, start_s, end_s], got {row!r:.60}"
            )
        out.append((row[0], float(row[1]), float(row[2])))
    return out


# --- the face a render session is opened with ---------------------------------------


@dataclass(frozen=True)
class RenderOpen:
    """What a render session is built from."""

    renderer: str
    face_rgb: np.ndarray
    landmarks: np.ndarray
    frame_codec: str
    ahead_frames: int


def encode_render_open(
    renderer: str, face_rgb: np.ndarray, landmarks: np.ndarray, frame_codec: str, ahead: int
) -> bytes:
    """``render_open``: the renderer's name and the avatar's prepared face."""
    face = np.ascontiguousarray(face_rgb[..., :3], dtype=np.uint8)
    points = np.ascontiguousarray(landmarks, dtype="<f4")
    header = {
        "type": "render_open",
        "renderer": renderer,
        "face_shape": list(face.shape),
        "landmarks_shape": list(points.shape),
        "frame_codec": frame_codec,
        "ahead_frames": int(ahead),
    }
    return encode_binary(header, face.tobytes() + points.tobytes())


def decode_render_open(header: dict[str, Any], payload: memoryview) -> RenderOpen:
    """The checked contents of a ``render_open``."""
    name = field(header, "renderer", str)
    shape = field(header, "face_shape", list)
    if (
        len(shape) != 3
        or shape[2] != 3
        or not all(isinstance(n, int) and 16 <= n <= MAX_FACE_PX for n in shape[:2])
    ):
        raise ProtocolError(
            f"render_open: face_shape must be [H, W, 3] with H, W in 16..{MAX_FACE_PX}, "
            f"got {shape!r:.40}"
        )
    points_shape = field(header, "landmarks_shape", list)
    if (
        len(points_shape) != 2
        or not all(isinstance(n, int) for n in points_shape)
        or not 1 <= points_shape[0] <= MAX_LANDMARKS
        or points_shape[1] not in (2, 3)
    ):
        raise ProtocolError(
            f"render_open: landmarks_shape must be [N, 2 or 3], got {points_shape!r:.40}"
        )
    face_bytes = shape[0] * shape[1] * 3
    if len(payload) != face_bytes + points_shape[0] * points_shape[1] * 4:
        raise ProtocolError("render_open: payload size does not match face_shape and "
                            "landmarks_shape")
    codec = field(header, "frame_codec", str)
    if codec not in FRAME_CODECS:
        raise ProtocolError(f"render_open: frame_codec must be one of {', '.join(FRAME_CODECS)}")
    ahead = field(header, "ahead_frames", int)
    if not 1 <= ahead <= MAX_AHEAD_FRAMES:
        raise ProtocolError(f"render_open: ahead_frames must be 1..{MAX_AHEAD_FRAMES}")
    face = np.frombuffer(payload[:face_bytes], np.uint8).reshape(shape).copy()
    points = np.frombuffer(payload[face_bytes:], "<f4").reshape(points_shape).astype(np.float32)
    return RenderOpen(name, face, points, codec, ahead)


# --- frames -------------------------------------------------------------------------


def encode_frame(frame: AVFrame, *, seq: int, busy: bool, codec: str) -> bytes:
    """A rendered frame with its 40 ms of audio; the image raw RGB or JPEG."""
    rgb = np.ascontiguousarray(frame.rgb, dtype=np.uint8)
    if codec == "jpeg":
        ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ModelServiceError("could not encode a frame as JPEG")
        image = data.tobytes()
    else:
        image = rgb.tobytes()
    audio = np.ascontiguousarray(frame.audio, dtype="<i2")
    header = {
        "type": "frame",
        "seq": int(seq),
        "index": int(frame.index),
        "turn_id": int(frame.turn_id),
        "speaking": bool(frame.speaking),
        "busy": bool(busy),
        "codec": codec,
        "shape": list(rgb.shape),
        "audio_samples": int(len(audio)),
    }
    return encode_binary(header, audio.tobytes() + image)


@dataclass
class FrameMessage:
    """A frame as it arrived: the frame, the push/clear ``seq`` it was drawn after, and
    whether the service's renderer still had speech after drawing it."""

    frame: AVFrame
    seq: int
    busy: bool


def decode_frame(header: dict[str, Any], payload: memoryview) -> FrameMessage:
    """The frame of a ``frame`` message, checked."""
    samples = field(header, "audio_samples", int)
    if samples != SAMPLES_PER_FRAME:
        raise ProtocolError(f"frame: audio_samples must be {SAMPLES_PER_FRAME}, got {samples}")
    shape = field(header, "shape", list)
    if len(shape) != 3 or shape[2] != 3 or not all(
        isinstance(n, int) and 1 <= n <= MAX_FACE_PX for n in shape[:2]
    ):
        raise ProtocolError(f"frame: shape must be [H, W, 3], got {shape!r:.40}")
    audio_bytes = samples * 2
    if len(payload) < audio_bytes:
        raise ProtocolError("frame: payload shorter than its audio")
    audio = np.frombuffer(payload[:audio_bytes], "<i2").astype(np.int16)
    image = payload[audio_bytes:]
    codec = field(header, "codec", str)
    if codec == "raw":
        if len(image) != shape[0] * shape[1] * 3:
            raise ProtocolError("frame: raw image size does not match its shape")
        rgb = np.frombuffer(image, np.uint8).reshape(shape).copy()
    elif codec == "jpeg":
        bgr = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or list(bgr.shape) != shape:
            raise ProtocolError("frame: JPEG image does not decode to its shape")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
    else:
        raise ProtocolError(f"frame: codec must be one of {', '.join(FRAME_CODECS)}")
    frame = AVFrame(
        turn_id=field(header, "turn_id", int),
        index=field(header, "index", int),
        rgb=rgb,
        audio=audio,
        speaking=bool(header.get("speaking")),
    )
    return FrameMessage(frame, field(header, "seq", int), bool(header.get("busy")))
