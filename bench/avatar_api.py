"""How long making an avatar over HTTP takes: ``POST /api/v1/avatars`` end to end.

The app runs in-process (FastAPI's TestClient, no server, no network); each POST sends
the public-domain NASA portrait (JPEG, 2x upscaled as the default avatar's) and the
default avatar's voice sample, and runs the real ``register`` (mediapipe face mesh,
voice profile, the voice fit when ``--voice-fit`` is not ``off``). The first POST also
pays the models' first load; the rest are warm.

Run: .venv/bin/python bench/avatar_api.py [--repeat 3] [--voice-fit off|fast|full]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def main() -> None:
    """Time the POSTs and print (or write) the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--voice-fit", default="off", choices=["off", "fast", "full"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from fastapi.testclient import TestClient
    from PIL import Image

    from realtime_avatar.avatars.registry import default_portrait
    from realtime_avatar.server.app import create_app
    from realtime_avatar.settings import Settings

    photo = io.BytesIO()
    Image.fromarray(default_portrait()).save(photo, "JPEG", quality=92)
    voice = (resources.files("realtime_avatar") / "assets" / "default" / "voice.wav").read_bytes()
    timings = []
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(data_dir=Path(home), voice_fit=args.voice_fit)
        client = TestClient(create_app(settings, warm_up=False), base_url="http://127.0.0.1")
        for index in range(args.repeat):
            began = time.perf_counter()
            res = client.post(
                "/api/v1/avatars",
                data={"name": f"bench-{index}"},
                files={
                    "image": ("me.jpg", photo.getvalue(), "image/jpeg"),
                    "voice": ("me.wav", voice, "audio/wav"),
                },
            )
            if res.status_code != 201:
                raise SystemExit(f"POST answered {res.status_code}: {res.text}")
            timings.append(time.perf_counter() - began)
    warm = timings[1:] or timings
    report = {
        "voice_fit": args.voice_fit,
        "photo_kib": len(photo.getvalue()) // 1024,
        "voice_kib": len(voice) // 1024,
        "first_s": round(timings[0], 2),
        "warm_median_s": round(statistics.median(warm), 2),
        "all_s": [round(t, 2) for t in timings],
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
