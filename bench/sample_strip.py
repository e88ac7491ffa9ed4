"""Make the sample frames shown in docs/RENDERER.md from a real `avatar say` run.

Run: .venv/bin/python bench/sample_strip.py docs/img
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from realtime_avatar.avatars.registry import load_avatar
from realtime_avatar.engine.script import render_script
from realtime_avatar.frames import FaceParams
from realtime_avatar.render.mesh2d import Mesh2DRenderer


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    avatar = load_avatar("default")
    renderer = Mesh2DRenderer(avatar.face_rgb, avatar.landmarks)
    shapes = [
        ("rest", FaceParams()),
        ("m (pressed)", FaceParams(lip_press=1.0)),
        ("ee", FaceParams(jaw_open=0.2, lip_spread=0.75)),
        ("eh", FaceParams(jaw_open=0.45, lip_spread=0.5)),
        ("ah", FaceParams(jaw_open=0.8, lip_spread=0.2)),
        ("oh", FaceParams(jaw_open=0.45, lip_round=0.7)),
        ("oo", FaceParams(jaw_open=0.2, lip_round=0.9)),
        ("blink", FaceParams(blink=1.0)),
    ]
    tiles = []
    for label, params in shapes:
        crop = renderer.render(params)[100:420, 96:416]
        tile = cv2.resize(crop, (240, 240), interpolation=cv2.INTER_AREA)
        cv2.putText(
            tile, label, (8, 228), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA
        )
        tiles.append(tile)
    strip = np.concatenate([np.concatenate(tiles[:4], 1), np.concatenate(tiles[4:], 1)], 0)
    cv2.imwrite(str(out_dir / "visemes.jpg"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "s.mp4"
        render_script(
            "Hello! How are you doing today? I am glad to meet you.", video, language="en"
        )
        with av.open(str(video)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picks = frames[10:58:4][:12]
    small = [
        cv2.resize(f[100:420, 96:416], (160, 160), interpolation=cv2.INTER_AREA) for f in picks
    ]
    sequence = np.concatenate([np.concatenate(small[:6], 1), np.concatenate(small[6:12], 1)], 0)
    cv2.imwrite(str(out_dir / "sequence.jpg"), cv2.cvtColor(sequence, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
