"""The call's encoders: each frame to H.264 or VP8, its audio to Opus, on the render thread.

aiortc's own encoders run on the event loop's shared thread pool, two hops per 40 ms tick
and session, and are tuned for cameras: VP8 with temporal denoising (it blurs a moving
mouth and costs ~0.6 ms a frame) at 500 kbit/s CBR, H.264 at x264's default preset (35
ms a frame here) following the receiver's estimate down to 500 kbit/s. A rendered face
has no sensor noise, and every session already has a render thread: the pump encodes
there, right after drawing, and hands aiortc finished packets (its sender packetizes an
``av.Packet`` as it is).

H.264 is preferred when the peer offers it (``AVATAR_VIDEO_CODECS``): every browser
decodes it (most in hardware), and x264 ``superfast`` costs what VP8 costs here (p50
2.7 ms a 512x512 frame) at face SSIM 0.994 (bench/video_quality.py, docs/BENCHMARKS.md).
Both run at a fixed target rate (``AVATAR_VIDEO_BITRATE_KBPS``) with a one-second rate
buffer, whatever the receiver estimates: that suits loopback and a LAN; a slow link is
not handled.

A receiver that loses a keyframe asks for one (RTCP PLI/FIR); aiortc forwards that to its
encoder, which with packets is not used, so ``attach_keyframe_requests`` takes the request.

``ReferenceTap`` (evaluation only, ``AVATAR_VIDEO_REFERENCE_DIR``) keeps every rendered
frame as drawn, so what a client receives can be scored against it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ..constants import FPS, OUTPUT_RATE_HZ, VIDEO_CLOCK_HZ, VIDEO_TICKS_PER_FRAME

log = logging.getLogger(__name__)

OPUS_FRAME_SAMPLES = OUTPUT_RATE_HZ // 50  # 20 ms: one Opus packet each (see rtc.py)
KEYFRAME_EVERY_FRAMES = 250  # a lost keyframe costs at most 10 s even without a PLI
VIDEO_CODECS = ("H264", "VP8")  # the codecs the render thread encodes (names as in SDP)
X264_PRESET = "superfast"  # ultrafast: ~0.001 less face SSIM; veryfast: ~2x the time


def negotiated_codec(answer_sdp: str, kind: str) -> str:
    """The codec the answer chose for ``kind`` (audio, video): its name, upper case."""
    payload: str | None = None
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            parts = line.split()
            payload = parts[3] if parts[0] == f"m={kind}" and len(parts) > 3 else None
        elif payload is not None and line.startswith(f"a=rtpmap:{payload} "):
            return line.split(" ", 1)[1].split("/")[0].upper()
    return ""


class VideoStream:
    """One call's video encoder; ``encode`` from one thread, ``request_keyframe`` from any."""

    codec_name = ""  # the SDP name: H264, VP8

    def __init__(self, size_px: int, bitrate_kbps: int) -> None:
        self.size_px = size_px
        self.bitrate_bps = bitrate_kbps * 1000
        self._codec: Any = None
        self._keyframe = threading.Event()
        self._keyframe.set()  # the first frame

    def request_keyframe(self) -> None:
        """The receiver lost the picture: make the next frame a keyframe."""
        self._keyframe.set()

    def _open(self) -> Any:
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, index: int) -> list[av.Packet]:
        """The packets of frame ``index`` (its pts on the 90 kHz clock)."""
        if self._codec is None:
            self._codec = self._open()
        # OpenCV converts in 0.16 ms without the GIL; PyAV's swscale took 1 ms holding it.
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = index * VIDEO_TICKS_PER_FRAME
        frame.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        if self._keyframe.is_set():
            self._keyframe.clear()
            frame.pict_type = av.video.frame.PictureType.I
        packets: list[av.Packet] = self._codec.encode(frame)
        for packet in packets:
            packet.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        return packets


class Vp8Stream(VideoStream):
    """VP8 (libvpx) for one call: realtime, no denoising, static blocks skipped."""

    codec_name = "VP8"

    def _open(self) -> Any:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = codec.height = self.size_px
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = self.bitrate_bps
        codec.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        codec.gop_size = KEYFRAME_EVERY_FRAMES
        codec.qmin, codec.qmax = 2, 56
        codec.thread_count = 1  # one per session: sessions run side by side instead
        codec.options = {
            "deadline": "realtime",
            "cpu-used": "-8",
            "lag-in-frames": "0",  # a frame leaves as soon as it is drawn
            # A rendered background never changes: skip blocks that barely moved.
            "static-thresh": "100",
            "partitions": "0",
            "bufsize": str(self.bitrate_bps),  # a one-second rate buffer
            "undershoot-pct": "100",
            "overshoot-pct": "15",
        }
        return codec


class H264Stream(VideoStream):
    """H.264 (x264) for one call: constrained baseline, as the SDP's 42e01f/42001f promise."""

    codec_name = "H264"

    def _open(self) -> Any:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = codec.height = self.size_px
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = self.bitrate_bps
        codec.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        codec.framerate = Fraction(FPS, 1)
        codec.gop_size = KEYFRAME_EVERY_FRAMES
        codec.profile = "Baseline"  # no B-frames, no CABAC: what every WebRTC peer decodes
        # Say what the pixels are (BT.601, limited range: OpenCV's conversion). Unsaid,
        # Chromium showed the frames ~3 dB (PSNR) off the drawn colours.
        codec.colorspace = 6  # SMPTE 170M (BT.601)
        codec.color_primaries = 6
        codec.color_trc = 6
        codec.color_range = 1  # MPEG (limited)
        codec.thread_count = 1  # one per session: sessions run side by side instead
        kbps = self.bitrate_bps // 1000
        codec.options = {
            "preset": X264_PRESET,
            "tune": "zerolatency",  # no lookahead: a frame leaves as soon as it is drawn
            "level": "31",
            "forced-idr": "1",  # a requested keyframe is an IDR, with SPS/PPS before it
            # A one-second rate buffer capped at the target: no burst a link must absorb.
            "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps}",
        }
        return codec


def video_stream(codec_name: str, size_px: int, bitrate_kbps: int) -> VideoStream | None:
    """Our encoder for the negotiated ``codec_name`` (SDP name), or None to leave it to aiortc."""
    streams: dict[str, type[VideoStream]] = {"H264": H264Stream, "VP8": Vp8Stream}
    kind = streams.get(codec_name.upper())
    return None if kind is None else kind(size_px, bitrate_kbps)


def codec_preferences(order: str) -> list[Any]:
    """aiortc's video codec capabilities in the order ``order`` names ("h264,vp8"), RTX kept.

    Names not given keep aiortc's order after those given; an unknown name is an error.
    """
    from aiortc import RTCRtpSender

    from ..errors import ConfigurationError

    wanted = [name.strip().upper() for name in order.split(",") if name.strip()]
    codecs = RTCRtpSender.getCapabilities("video").codecs
    known = {c.name.upper() for c in codecs if c.name.lower() != "rtx"}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigurationError(
            f"AVATAR_VIDEO_CODECS names {', '.join(unknown)}, which this server cannot send; "
            f"use some of {', '.join(sorted(known))} (e.g. h264,vp8)"
        )

    def rank(codec: Any) -> int:
        name = codec.name.upper()
        return wanted.index(name) if name in wanted else len(wanted)

    return sorted(codecs, key=rank)  # stable: H.264's profiles keep aiortc's order


class ReferenceTap:
    """Every rendered frame of one call as drawn: raw RGB at ``index * frame_bytes``.

    Evaluation only (``AVATAR_VIDEO_REFERENCE_DIR``). Files in ``folder``, named by the
    call's video SSRC (which the client reads from the answer): ``<ssrc>.rgb`` (frames,
    a sparse file), ``<ssrc>.flags`` (one byte a frame: 0 not written, 1 idle, 2
    speaking) and ``<ssrc>.json`` (the frame size). ``evaluate/video_quality.py`` reads them.
    """

    def __init__(self, folder: Path, name: str, size_px: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.frame_bytes = size_px * size_px * 3
        (folder / f"{name}.json").write_text(
            json.dumps({"size_px": size_px, "frame_bytes": self.frame_bytes}), encoding="utf-8"
        )
        self._frames = os.open(folder / f"{name}.rgb", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self._flags = os.open(folder / f"{name}.flags", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self._closed = False

    def write(self, index: int, rgb: np.ndarray, speaking: bool) -> None:
        """Keep frame ``index`` (about 0.2 ms: a copy into the page cache)."""
        if self._closed:
            return
        try:
            os.pwrite(
                self._frames, np.ascontiguousarray(rgb, np.uint8).data, index * self.frame_bytes
            )
            os.pwrite(self._flags, bytes([2 if speaking else 1]), index)
        except OSError:
            if not self._closed:  # closed by the call's teardown while this frame was drawn
                raise

    def close(self) -> None:
        """Close the files (what was written stays)."""
        self._closed = True
        for fd in (self._frames, self._flags):
            with contextlib.suppress(OSError):
                os.close(fd)


class OpusStream:
    """Mono Opus for one call's voice, 20 ms a packet; ``encode`` from one thread."""

    def __init__(self, bitrate_kbps: int = 48) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = OUTPUT_RATE_HZ
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bitrate_kbps * 1000
        codec.time_base = Fraction(1, OUTPUT_RATE_HZ)
        codec.options = {"application": "voip"}
        self._codec: Any = codec
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> list[av.Packet]:
        """Packets for int16 mono samples at 48 kHz, a whole number of 20 ms frames."""
        packets: list[av.Packet] = []
        for half in pcm.reshape(-1, OPUS_FRAME_SAMPLES):
            frame = av.AudioFrame.from_ndarray(half.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = OUTPUT_RATE_HZ
            frame.pts = self._pts
            frame.time_base = Fraction(1, OUTPUT_RATE_HZ)
            self._pts += len(half)
            packets += self._codec.encode(frame)
        return packets


def attach_keyframe_requests(sender: Any, stream: VideoStream) -> None:
    """Route the receiver's keyframe requests (PLI/FIR) to ``stream``.

    aiortc 1.16's ``RTCRtpSender`` answers them by calling ``_send_keyframe``, which only
    reaches its own encoder; pinned in constraints.txt, checked by the call tests.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        log.warning(
            "this aiortc has no keyframe hook: keyframes every %d frames only",
            KEYFRAME_EVERY_FRAMES,
        )
        return
    original = sender._send_keyframe

    def send_keyframe() -> None:
        stream.request_keyframe()
        original()

    sender._send_keyframe = send_keyframe
