"""How sharp the call's video arrives: face SSIM/PSNR of received vs rendered frames.

Two parts, each figure with its own command line in the JSON:

- offline: the default avatar speaking two sentences (Piper, the mesh2d renderer), each
  frame encoded by the server's own streams (``server/encoders.py``) at each codec and
  bitrate, decoded as a receiver does, scored; and the encode time a frame.
- live: ``avatar serve`` (started with ``AVATAR_VIDEO_REFERENCE_DIR``) and the aiortc
  client (``evaluate/video_quality.py``); the client asks a question, keeps every frame
  it receives while the avatar answers, and scores it against the frames as drawn. One
  variant per codec/bitrate setting, and ``--sessions 2`` runs two calls at once.

Run: .venv/bin/python bench/video_quality.py [--parts offline,live,chromium]
     [--variants before,after] [--sessions 2] [--json bench/results/video_quality.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from realtime_avatar.evaluate.server_proc import running_server  # noqa: E402
from realtime_avatar.evaluate.video_quality import (  # noqa: E402
    QualityCall,
    QualityReport,
    ReferenceFrames,
    avatar_boxes,
    boxes_from_landmarks,
    encode_offline,
    score,
)

QUESTION = "Tell me about yourself and what you like to do."
SENTENCES = [
    "Hello! I am glad to meet you, and I would love to tell you about myself.",
    "I live inside this computer, and I answer questions about who I am.",
]
# name -> (server environment, codecs the client offers: None is aiortc's list, VP8 first)
LIVE_VARIANTS: dict[str, tuple[dict[str, str], list[str] | None]] = {
    "before": ({"AVATAR_VIDEO_CODECS": "vp8", "AVATAR_VIDEO_BITRATE_KBPS": "1200"}, None),
    "after": ({}, None),  # the defaults: H.264 preferred, AVATAR_VIDEO_BITRATE_KBPS default
    "vp8-2000": ({"AVATAR_VIDEO_CODECS": "vp8", "AVATAR_VIDEO_BITRATE_KBPS": "2000"}, None),
    "h264-1200": ({"AVATAR_VIDEO_BITRATE_KBPS": "1200"}, None),
    "client-vp8-only": ({}, ["VP8"]),  # a peer without H.264 still gets the fallback
}
OFFLINE_SETTINGS = [("VP8", 1200), ("VP8", 2000), ("H264", 1200), ("H264", 2000), ("H264", 3000)]


def _speaking_frames(data_dir: Path) -> tuple[np.ndarray, list[bool], np.ndarray]:
    """The default avatar saying SENTENCES: frames, whether each is speech, landmarks."""
    from realtime_avatar.avatars.registry import ensure_default_avatar, load_avatar
    from realtime_avatar.engine.voice import AvatarVoice
    from realtime_avatar.render.base import spoken_frames
    from realtime_avatar.render.registry import create_renderer
    from realtime_avatar.settings import get_settings

    settings = get_settings(data_dir=data_dir)
    ensure_default_avatar(settings)
    avatar = load_avatar("default", settings=settings)
    renderer = create_renderer(settings.renderer, avatar.face, settings)
    voice = AvatarVoice.for_avatar(avatar, settings)
    frames = [renderer.next_frame().rgb for _ in range(10)]
    speaking = [False] * len(frames)
    for text in SENTENCES:
        for frame in spoken_frames(renderer, voice.speak(text, "en")):
            frames.append(frame.rgb)
            speaking.append(True)
    return np.stack(frames), speaking, np.asarray(avatar.face.landmarks)


def offline(data_dir: Path) -> list[dict[str, Any]]:
    """Each codec and bitrate on the same rendered speech: sharpness and encode cost."""
    from realtime_avatar.server.encoders import video_stream

    frames, speaking, landmarks = _speaking_frames(data_dir)
    face, mouth = boxes_from_landmarks(landmarks, frames.shape[1])
    reference = ReferenceFrames.from_arrays(frames, speaking)
    rows = []
    for codec, kbps in OFFLINE_SETTINGS:
        decoded, encode_ms, made_kbps = encode_offline(
            frames,
            lambda codec=codec, kbps=kbps: video_stream(codec, frames.shape[1], kbps),
            "h264" if codec == "H264" else "vp8",
        )
        crops = {index: face.crop(rgb) for index, rgb in decoded.items()}
        report = score(crops, reference, face, mouth, codec=codec, bitrate_kbps=kbps)
        report.extra.update(encode_ms_p50=round(encode_ms, 2), produced_kbps=round(made_kbps))
        rows.append(report.to_json())
        _print(f"offline {codec} {kbps}", report)
    for codec in ("VP8", "H264"):
        decoded, encode_ms, made_kbps = _aiortc_encoded(codec, frames)
        crops = {index: face.crop(rgb) for index, rgb in decoded.items()}
        report = score(crops, reference, face, mouth, codec=codec, bitrate_kbps=round(made_kbps))
        report.extra.update(
            encoder="aiortc's own, default rate",
            encode_ms_p50=round(encode_ms, 2),
            produced_kbps=round(made_kbps),
        )
        rows.append(report.to_json())
        _print(f"offline aiortc {codec}", report)
    return rows


def _aiortc_encoded(codec: str, frames: np.ndarray) -> tuple[dict[int, np.ndarray], float, float]:
    """Frames through aiortc's own encoder at its default rate (what a call sent before the
    render thread encoded: VP8 500 kbit/s with denoising, H.264 1 Mbit/s ``medium``),
    depayloaded and decoded as aiortc's receiver does."""
    from fractions import Fraction

    import av
    from aiortc.codecs import CODECS, depayload, get_decoder, get_encoder
    from aiortc.jitterbuffer import JitterFrame

    params = next(c for c in CODECS["video"] if c.name == codec)
    encoder, decoder = get_encoder(params), get_decoder(params)
    decoded: dict[int, np.ndarray] = {}
    spent_ms: list[float] = []
    size_bytes = 0
    for index, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = index * 3600, Fraction(1, 90_000)
        began = time.perf_counter()
        payloads, timestamp = encoder.encode(frame, force_keyframe=index == 0)
        spent_ms.append((time.perf_counter() - began) * 1000)
        data = b"".join(depayload(params, payload) for payload in payloads)
        size_bytes += len(data)
        for out in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            decoded[int(out.pts or 0) // 3600] = out.to_ndarray(format="rgb24")
    return decoded, float(np.median(spent_ms)), size_bytes * 8 * 25 / len(frames) / 1000


def _print(name: str, report: QualityReport) -> None:
    print(
        f"{name:28} {report.codec:5} face SSIM {report.face_ssim:.4f} (p5 "
        f"{report.face_ssim_p5:.4f}) PSNR {report.face_psnr_db:.2f} dB, mouth SSIM "
        f"{report.mouth_ssim:.4f}; n={report.speaking_frames} missing={report.frames_missing} "
        f"offset={report.offset_frames} {report.extra}",
        flush=True,
    )


async def _calls(
    base_url: str, reference_dir: Path, sessions: int, codecs: list[str] | None, kbps: int
) -> list[QualityReport]:
    from realtime_avatar.evaluate.rtc_client import Clip, mic_audio
    from realtime_avatar.events import TurnEvent

    pcm = mic_audio(QUESTION)
    boxes = avatar_boxes()
    calls = [
        QualityCall(base_url, [Clip(pcm, at_s=1.0)], video_codecs=codecs, boxes=boxes)
        for _ in range(sessions)
    ]
    for call in calls:
        await call.start()
    try:
        # The answer's turn event comes when it has been spoken (timeouts: a loaded machine).
        await asyncio.gather(
            *(call.wait_for_event(lambda e: isinstance(e, TurnEvent), 90) for call in calls)
        )
        await asyncio.sleep(0.5)
    finally:
        for call in calls:
            await call.close()
    return [call.report(reference_dir, kbps) for call in calls]


def _server_video_lines(log_path: Path) -> list[str]:
    """The server's per-call video lines ("video H264: N frames in T s (F fps), D dropped")."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [
        line.split(": ", 1)[1]
        for line in text.splitlines()
        if "realtime_avatar.server.rtc: video " in line
    ]


def live(data_dir: Path, work: Path, variants: list[str], sessions: int) -> dict[str, Any]:
    """Each variant through the real server: what the aiortc client received."""
    from realtime_avatar.settings import Settings

    results: dict[str, Any] = {}
    for name in variants:
        env, codecs = LIVE_VARIANTS[name]
        reference_dir = work / f"reference-{name}"
        kbps = int(env.get("AVATAR_VIDEO_BITRATE_KBPS", Settings().video_bitrate_kbps))
        with running_server(
            data_dir,
            work / "logs",
            AVATAR_VIDEO_REFERENCE_DIR=str(reference_dir),
            AVATAR_LOG_LEVEL="INFO",
            **env,
        ) as server:
            reports = asyncio.run(_calls(server.base_url, reference_dir, sessions, codecs, kbps))
            time.sleep(1.0)  # the sessions' closing lines
            server_video = _server_video_lines(server.log_path)
        shutil.rmtree(reference_dir, ignore_errors=True)  # ~20 MB a second of call
        for index, report in enumerate(reports):
            _print(f"live {name} call {index + 1}/{sessions}", report)
        print(f"  server: {server_video}", flush=True)
        results[name] = {
            "server_env": env,
            # What the server's pump made and sent (fps over the whole call, frames
            # dropped toward aiortc's sender): the server's side, whatever the client kept.
            "server_video": server_video,
            "client_offers": codecs or "aiortc default (VP8, H264)",
            "calls": [report.to_json() for report in reports],
        }
    return results


def chromium(data_dir: Path, work: Path, variants: list[str]) -> dict[str, Any]:
    """Each variant with headless Chromium as the client: what the browser decodes."""
    import soundfile as sf

    from realtime_avatar.evaluate.rtc_client import MIC_RATE_HZ, mic_audio
    from realtime_avatar.evaluate.video_quality import measure_in_chromium

    wav = work / "question.wav"
    # The fake microphone starts at getUserMedia, before the call connects: 3 s of lead.
    lead, tail = np.zeros(3 * MIC_RATE_HZ, np.float32), np.zeros(MIC_RATE_HZ, np.float32)
    sf.write(wav, np.concatenate([lead, mic_audio(QUESTION), tail]), MIC_RATE_HZ)
    boxes = avatar_boxes()
    results: dict[str, Any] = {}
    for name in variants:
        env, client_codecs = LIVE_VARIANTS[name]
        if client_codecs is not None:
            continue  # the page offers what Chromium has; only the server's side varies
        reference_dir = work / f"reference-chromium-{name}"
        with running_server(
            data_dir,
            work / "logs",
            AVATAR_VIDEO_REFERENCE_DIR=str(reference_dir),
            AVATAR_LOG_LEVEL="INFO",
            **env,
        ) as server:
            try:
                report = measure_in_chromium(server.base_url, reference_dir, wav, boxes)
                time.sleep(1.0)  # the session's closing line
                report.extra["server_video"] = _server_video_lines(server.log_path)
            except (RuntimeError, ValueError) as exc:  # recorded; the other variants go on
                print(f"chromium {name}: {exc}", flush=True)
                results[name] = {"server_env": env, "error": str(exc)}
                continue
            finally:
                shutil.rmtree(reference_dir, ignore_errors=True)
        _print(f"chromium {name}", report)
        results[name] = {"server_env": env, "report": report.to_json()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts", default="offline,live", help="offline, live (aiortc), chromium; comma separated"
    )
    parser.add_argument("--variants", default="before,after", help=",".join(LIVE_VARIANTS))
    parser.add_argument("--sessions", type=int, default=1, help="calls at once (live)")
    parser.add_argument(
        "--chromium", action="store_true", help="add the chromium part (as the 2026-12-02 run)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()} | (
        {"chromium"} if args.chromium else set()
    )
    unknown = [v for v in variants if v not in LIVE_VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(LIVE_VARIANTS)}")
    data_dir = Path(os.environ.get("AVATAR_DATA_DIR") or tempfile.mkdtemp(prefix="avatar-vq-"))
    out: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, loaded)",
        "metric": "SSIM (luma, 7x7) and PSNR (RGB) of the face-mesh box, frames drawn while "
        "speaking; mouth: lips box + 30 px below",
    }
    with tempfile.TemporaryDirectory(prefix="avatar-vq-work-") as work:
        if "offline" in parts:
            out["offline"] = offline(data_dir)
        if "live" in parts:
            out["live"] = live(data_dir, Path(work), variants, args.sessions)
            out["live_sessions"] = args.sessions
        if "chromium" in parts:
            out["chromium"] = chromium(data_dir, Path(work), variants)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
