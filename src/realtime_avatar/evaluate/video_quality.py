"""How sharp the call's video arrives: received frames scored against the frames as drawn.

The server, started with ``AVATAR_VIDEO_REFERENCE_DIR``, keeps every rendered frame of a
call under its index (``server/encoders.py`` ``ReferenceTap``, files named by the call's
video SSRC). A client names each received frame by the same index: the server's first
sent frame (its ``media`` event) plus the frame's RTP time in frames. That naming is not
taken on trust: the offset from it is searched over a small window (the one that best
matches over the speaking frames, one offset for the whole call, never per frame) and
reported; 0 means the pairing is exact.

The figures: SSIM (on luma, skimage's default 7x7 window) and PSNR (RGB) of the face
region (the face mesh's bounding box) and of the mouth, over the frames where the avatar
speaks, plus frames missing from the received sequence.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ..constants import VIDEO_TICKS_PER_FRAME
from ..server.encoders import negotiated_codec
from .rtc_client import AvatarCall, Clip

OFFSET_WINDOW = 3  # frames either side of the named index searched for the best match
OFFSET_SAMPLE = 80  # speaking frames the offset search looks at (spread over the call)
FLAG_IDLE, FLAG_SPEAKING = 1, 2


@dataclass(frozen=True)
class Box:
    """A pixel rectangle: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        """The rectangle's pixels of ``rgb``."""
        return rgb[self.y0 : self.y1, self.x0 : self.x1]

    def within(self, other: Box) -> Box:
        """This box in ``other``'s crop coordinates."""
        return Box(self.y0 - other.y0, self.y1 - other.y0, self.x0 - other.x0, self.x1 - other.x0)


def boxes_from_landmarks(landmarks: np.ndarray, size_px: int) -> tuple[Box, Box]:
    """The face box (the mesh's bounds) and the mouth box (lips, and the chin below them)."""
    from ..face.landmarks import LIP_LOWER_OUTER, LIP_UPPER_OUTER

    def clamp(lo: np.ndarray, hi: np.ndarray) -> Box:
        x0, y0 = np.maximum(lo, 0).astype(int)
        x1, y1 = np.minimum(hi, size_px).astype(int)
        return Box(int(y0), int(y1), int(x0), int(x1))

    points = landmarks[:, :2]
    lips = points[LIP_UPPER_OUTER + LIP_LOWER_OUTER]
    face = clamp(points.min(axis=0), points.max(axis=0) + 1)
    mouth = clamp(lips.min(axis=0) - 10, lips.max(axis=0) + [10, 30])
    return face, mouth


def avatar_boxes(name: str = "default", settings: Any = None) -> tuple[Box, Box]:
    """Face and mouth boxes of a registered avatar, from its prepared landmarks."""
    from ..avatars.registry import load_avatar

    face = load_avatar(name, settings=settings).face
    return boxes_from_landmarks(np.asarray(face.landmarks), face.face_rgb.shape[0])


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, as the codecs see it."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def ssim(reference: np.ndarray, received: np.ndarray) -> float:
    """SSIM of two RGB crops, on luma (skimage's default window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(luma(reference), luma(received), data_range=255))


def psnr(reference: np.ndarray, received: np.ndarray) -> float:
    """PSNR in dB of two RGB crops (100 when identical)."""
    mse = float(np.mean((reference.astype(np.float32) - received.astype(np.float32)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class ReferenceFrames:
    """The frames a server drew for one call (``ReferenceTap``'s files), read from disk."""

    def __init__(self, folder: Path, name: str) -> None:
        meta_path = folder / f"{name}.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no reference frames for call {name} in {folder}: was the server started "
                "with AVATAR_VIDEO_REFERENCE_DIR set to that folder?"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.size_px = int(meta["size_px"])
        self.flags = np.fromfile(folder / f"{name}.flags", dtype=np.uint8)
        raw = np.memmap(folder / f"{name}.rgb", dtype=np.uint8, mode="r")
        count = min(len(self.flags), raw.size // int(meta["frame_bytes"]))
        self.flags = self.flags[:count]
        self._frames = raw[: count * int(meta["frame_bytes"])].reshape(
            count, self.size_px, self.size_px, 3
        )

    @classmethod
    def from_arrays(cls, frames: np.ndarray, speaking: Iterable[bool]) -> ReferenceFrames:
        """Reference frames held in memory (tests, offline encoder runs)."""
        self = cls.__new__(cls)
        self._frames = frames
        self.size_px = int(frames.shape[1])
        self.flags = np.array([FLAG_SPEAKING if s else FLAG_IDLE for s in speaking], np.uint8)
        return self

    def __len__(self) -> int:
        return len(self.flags)

    def has(self, index: int) -> bool:
        """Whether frame ``index`` was drawn and kept."""
        return 0 <= index < len(self.flags) and self.flags[index] != 0

    def speaking(self, index: int) -> bool:
        """Whether frame ``index`` was drawn while the avatar spoke."""
        return self.has(index) and self.flags[index] == FLAG_SPEAKING

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as drawn (H x W x 3 RGB)."""
        return np.asarray(self._frames[index])


@dataclass
class QualityReport:
    """What arrived against what was drawn, for one call or one offline encode."""

    codec: str
    bitrate_kbps: int
    frames_received: int
    frames_missing: int  # gaps in the received sequence (dropped or lost on the way)
    offset_frames: int  # best-matching shift from the named index (0: the pairing is exact)
    offset_psnr_db: dict[int, float]  # mean face PSNR at each shift searched
    speaking_frames: int  # received frames drawn while the avatar spoke, scored below
    face_ssim: float
    face_ssim_p5: float
    face_ssim_min: float
    face_psnr_db: float
    mouth_ssim: float
    mouth_psnr_db: float
    idle_face_ssim: float | None  # the same on frames where it listened, for comparison
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, rounded."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        out["offset_psnr_db"] = {str(k): round(v, 2) for k, v in self.offset_psnr_db.items()}
        return out


def best_offset(
    received: dict[int, np.ndarray],
    reference: ReferenceFrames,
    face: Box,
    window: int = OFFSET_WINDOW,
) -> tuple[int, dict[int, float]]:
    """The one shift of the named indexes that best matches the reference, and each shift's
    mean face PSNR, over (a spread sample of) the speaking frames; idle frames are too
    alike to tell neighbours apart. ``received`` maps a named index to the face crop."""
    indexes = [i for i in sorted(received) if reference.speaking(i)] or sorted(received)
    if not indexes:
        raise ValueError("no received frames to pair")
    step = max(1, len(indexes) // OFFSET_SAMPLE)
    sample = indexes[::step]
    table: dict[int, float] = {}
    for shift in range(-window, window + 1):
        values = [
            psnr(face.crop(reference.frame(i + shift)), received[i])
            for i in sample
            if reference.has(i + shift)
        ]
        if len(values) >= max(1, len(sample) // 2):
            table[shift] = float(np.mean(values))
    if not table:
        raise ValueError("the received frames match no reference frames")
    return max(table, key=lambda k: table[k]), table


def score(
    received: dict[int, np.ndarray],
    reference: ReferenceFrames,
    face: Box,
    mouth: Box,
    *,
    codec: str = "",
    bitrate_kbps: int = 0,
    window: int = OFFSET_WINDOW,
) -> QualityReport:
    """Score received face crops (named index -> ``face``-sized RGB crop) against the
    reference at the best single shift; speaking frames give the headline figures."""
    offset, table = best_offset(received, reference, face, window)
    inner = mouth.within(face)
    speaking: list[tuple[float, float, float, float]] = []
    idle: list[float] = []
    for index in sorted(received):
        source = index + offset
        if not reference.has(source):
            continue
        drawn = face.crop(reference.frame(source))
        got = received[index]
        if reference.speaking(source):
            speaking.append(
                (
                    ssim(drawn, got),
                    psnr(drawn, got),
                    ssim(inner.crop(drawn), inner.crop(got)),
                    psnr(inner.crop(drawn), inner.crop(got)),
                )
            )
        elif len(idle) < 100:  # enough for a comparison figure
            idle.append(ssim(drawn, got))
    if not speaking:
        raise ValueError("no received frame was drawn while the avatar spoke")
    values = np.array(speaking)
    names = sorted(received)
    missing = (names[-1] - names[0] + 1) - len(names)
    return QualityReport(
        codec=codec,
        bitrate_kbps=bitrate_kbps,
        frames_received=len(received),
        frames_missing=int(missing),
        offset_frames=offset,
        offset_psnr_db=table,
        speaking_frames=len(speaking),
        face_ssim=float(values[:, 0].mean()),
        face_ssim_p5=float(np.percentile(values[:, 0], 5)),
        face_ssim_min=float(values[:, 0].min()),
        face_psnr_db=float(values[:, 1].mean()),
        mouth_ssim=float(values[:, 2].mean()),
        mouth_psnr_db=float(values[:, 3].mean()),
        idle_face_ssim=float(np.mean(idle)) if idle else None,
    )


def ssrc_of(sdp: str, kind: str = "video") -> str:
    """The first SSRC an SDP announces for ``kind``'s media section ("" if none)."""
    section = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            section = line[2:].split(" ", 1)[0]
        elif section == kind:
            found = re.match(r"a=ssrc:(\d+) ", line)
            if found:
                return found.group(1)
    return ""


def encode_offline(
    frames: np.ndarray,
    make_stream: Callable[[], Any],
    decoder: str,
) -> tuple[dict[int, np.ndarray], float, float]:
    """Encode ``frames`` with a server stream (``encode(rgb, index)``) and decode them as a
    receiver does: every decoded frame by index, the median encode ms a frame (a shared
    machine preempts some frames: the median is the codec's cost), kbit/s produced."""
    from ..constants import FPS

    stream = make_stream()
    codec: Any = av.CodecContext.create(decoder, "r")
    decoded: dict[int, np.ndarray] = {}
    spent_ms: list[float] = []
    size_bytes = 0
    for index, rgb in enumerate(frames):
        began = time.perf_counter()
        packets = stream.encode(rgb, index)
        spent_ms.append((time.perf_counter() - began) * 1000)
        for packet in packets:
            size_bytes += packet.size
            for frame in codec.decode(packet):
                decoded[int(frame.pts or 0) // VIDEO_TICKS_PER_FRAME] = frame.to_ndarray(
                    format="rgb24"
                )
    kbps = size_bytes * 8 * FPS / len(frames) / 1000
    return decoded, float(np.median(spent_ms)), kbps


class QualityCall(AvatarCall):
    """The aiortc client, keeping each received frame's face crop by its RTP tick."""

    def __init__(self, *args: Any, boxes: tuple[Box, Box], **kwargs: Any) -> None:
        """``boxes``: the face and mouth boxes (``avatar_boxes``), known before the call: a
        face detector run on the loop while packets arrive would lose them."""
        kwargs.setdefault("measure_mouth", False)
        super().__init__(*args, **kwargs)
        self.face_box, self.mouth_box = boxes
        self.kept: dict[int, np.ndarray] = {}  # tick (frames since the first) -> face crop

    def on_video(self, arrival: float, frame: av.VideoFrame) -> None:
        """Record the frame, and keep its face crop."""
        super().on_video(arrival, frame)
        rgb = frame.to_ndarray(format="rgb24")
        self.kept[int(frame.pts or 0) // VIDEO_TICKS_PER_FRAME] = self.face_box.crop(rgb).copy()

    def named(self) -> dict[int, np.ndarray]:
        """The kept crops by the server's frame index (its "media" event names the first)."""
        origin = self.record.video_origin_index()
        if origin is None:
            raise RuntimeError("the server sent no media event: frames cannot be named")
        return {origin + tick: crop for tick, crop in self.kept.items()}

    @property
    def answer_sdp(self) -> str:
        """The server's answer."""
        if self._pc is None or self._pc.remoteDescription is None:
            raise RuntimeError("the call is not started")
        return str(self._pc.remoteDescription.sdp)

    def report(self, reference_dir: Path, bitrate_kbps: int = 0) -> QualityReport:
        """Score what arrived against the frames the server kept in ``reference_dir``."""
        if not self.kept:
            raise RuntimeError("no video arrived")
        answer = self.answer_sdp
        reference = ReferenceFrames(reference_dir, ssrc_of(answer))
        report = score(
            self.named(),
            reference,
            self.face_box,
            self.mouth_box,
            codec=negotiated_codec(answer, "video"),
            bitrate_kbps=bitrate_kbps,
        )
        report.extra["fps"] = round(self.record.fps(since_s=1.0), 2)
        return report


async def measure_call(
    base_url: str,
    reference_dir: Path,
    clips: list[Clip],
    *,
    listen_s: float,
    codecs: list[str] | None = None,
    bitrate_kbps: int = 0,
) -> QualityReport:
    """One call through the real server with the aiortc client: speak ``clips``, keep
    ``listen_s`` seconds of video, score it. ``codecs`` (["H264"], ["VP8"]) limits what the
    client offers; None offers aiortc's list (VP8 first, then H.264)."""
    call = QualityCall(base_url, clips, boxes=avatar_boxes(), video_codecs=codecs)
    await call.start()
    try:
        await asyncio.sleep(listen_s)
    finally:
        await call.close()
    return call.report(reference_dir, bitrate_kbps)


# In the page: a call of its own (not the app's script), each decoded frame drawn to a
# canvas at its natural size from requestVideoFrameCallback, the face box kept with the
# frame's RTP timestamp. Returns the answer and the kept frames (RGB, base64).
_CHROMIUM_CALL = """
async ([box, seconds, maxFrames]) => {
  const [x0, y0, w, h] = box;
  const pc = new RTCPeerConnection();
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  pc.addTransceiver('video', {direction: 'recvonly'});
  const channel = pc.createDataChannel('events');
  let origin = null, turns = 0;
  channel.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === 'media') origin = e.video_origin_index;
    if (e.type === 'turn') turns += 1;
  };
  const video = document.createElement('video');
  video.muted = true; video.playsInline = true; video.autoplay = true;
  document.body.appendChild(video);
  pc.ontrack = (ev) => {
    if (ev.track.kind === 'video') video.srcObject = new MediaStream([ev.track]);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') done();
    });
  });
  const res = await fetch('/api/v1/rtc/offer', {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer'}),
  });
  const answer = await res.json();
  await pc.setRemoteDescription({sdp: answer.sdp, type: answer.type});
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const frames = [];
  let size = null, drawn = 0, firstDrawn = null, lastDrawn = null;
  const onFrame = (now, meta) => {
    drawn += 1;
    firstDrawn = firstDrawn === null ? now : firstDrawn;
    lastDrawn = now;
    if (frames.length < maxFrames) {
      canvas.width = meta.width; canvas.height = meta.height;
      size = [meta.width, meta.height];
      ctx.drawImage(video, 0, 0, meta.width, meta.height);
      const rgba = ctx.getImageData(x0, y0, w, h).data;
      const rgb = new Uint8Array(w * h * 3);
      for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
        rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
      }
      frames.push([meta.rtpTimestamp, rgb]);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const started = performance.now();
  while (performance.now() - started < seconds * 1000 && turns === 0) {
    await new Promise((r) => setTimeout(r, 200));
  }
  await new Promise((r) => setTimeout(r, 500));
  let decoded = 0, dropped = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      decoded = r.framesDecoded; dropped = r.framesDropped || 0;
    }
  });
  pc.close();
  const b64 = (bytes) => {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  const pageFps = drawn > 1 ? (drawn - 1) * 1000 / (lastDrawn - firstDrawn) : 0;
  return {answer: answer.sdp, origin, turns, size, decoded, dropped, pageFps,
          frames: frames.map(([rtp, rgb]) => [rtp, b64(rgb)])};
}
"""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
]
BROWSER_OFFSET_WINDOW = 120  # the page's first drawn frame is some frames after the first sent


def measure_in_chromium(
    base_url: str,
    reference_dir: Path,
    mic_wav: Path,
    boxes: tuple[Box, Box],
    *,
    chromium: str = "/usr/bin/chromium",
    timeout_s: float = 60.0,
    max_frames: int = 1000,
) -> QualityReport:
    """One call from headless Chromium (fake microphone from ``mic_wav``): frames as the
    page decodes them, scored like the aiortc client's. The page names a frame by its RTP
    time since the first frame it drew, so the offset to the server's index is found by
    the same best-match search, over a wider window, and reported."""
    import base64

    from playwright.sync_api import sync_playwright

    face, mouth = boxes
    box = [face.x0, face.y0, face.x1 - face.x0, face.y1 - face.y0]
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}%noloop"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(base_url)
            result = page.evaluate(_CHROMIUM_CALL, [box, timeout_s, max_frames])
        finally:
            browser.close()
    if not result["frames"] or result["origin"] is None:
        raise RuntimeError(f"Chromium drew no frames (or got no media event): {result['size']}")
    if not result["turns"]:
        raise RuntimeError(f"the avatar did not answer within {timeout_s:g} s")
    first_rtp = int(result["frames"][0][0])
    height, width = face.y1 - face.y0, face.x1 - face.x0
    received: dict[int, np.ndarray] = {}
    for rtp, data in result["frames"]:
        tick = ((int(rtp) - first_rtp) % 2**32) // VIDEO_TICKS_PER_FRAME
        pixels = np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 3)
        received[int(result["origin"]) + tick] = pixels
    reference = ReferenceFrames(reference_dir, ssrc_of(result["answer"]))
    report = score(
        received,
        reference,
        face,
        mouth,
        codec=negotiated_codec(result["answer"], "video"),
        window=BROWSER_OFFSET_WINDOW,
    )
    report.extra.update(
        client="chromium",
        frame_size=result["size"],
        frames_decoded=result["decoded"],
        frames_dropped_by_browser=result["dropped"],
        page_fps=round(float(result["pageFps"]), 2),  # requestVideoFrameCallback's rate
    )
    return report
