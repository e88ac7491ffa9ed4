"""Register, load and list avatars: one folder per avatar under ``<data_dir>/avatars``."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from .. import __version__
from ..errors import (
    AvatarExistsError,
    AvatarNotFoundError,
    InvalidImageError,
    InvalidNameError,
    InvalidTextError,
)
from ..face.crop import crop_to_square, head_crop_box
from ..face.landmarks import check_pose, choose_face, face_mesh, face_size_px
from ..media.audio import decode_audio, validate_voice
from ..media.image import load_rgb
from ..render.base import FaceImage
from ..settings import Settings, get_settings
from ..voice.profile import VoiceProfile, compute_profile

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
DEFAULT_AVATAR = "default"
VOICE_RATE_HZ = 22_050  # the voice sample is kept at the TTS rate, where matching happens
MAX_PERSONA_BYTES = 256 * 1024
MANIFEST = "manifest.json"

Progress = Callable[[str], None]


@dataclass
class Avatar:
    """A registered avatar, loaded: everything a session needs, precomputed."""

    name: str
    path: Path
    face_rgb: np.ndarray
    landmarks: np.ndarray
    voice_profile: VoiceProfile
    persona: str
    manifest: dict[str, Any]

    @property
    def voice_path(self) -> Path:
        return self.path / "voice.wav"

    @property
    def face(self) -> FaceImage:
        """What a renderer is built from."""
        return FaceImage(self.face_rgb, self.landmarks, self.path)

    @property
    def display_name(self) -> str:
        """What the avatar calls itself: the persona's title ("# Ava, the demo" -> Ava)."""
        for line in self.persona.splitlines():
            match = re.match(r"^#\s+([^,:(\-–—]+)", line.strip())
            if match and match.group(1).strip():
                return match.group(1).strip()
        return self.name.replace("-", " ").replace("_", " ").title()


def validate_name(name: str) -> str:
    """Lower-case letters, digits, '-' and '_', 1-40 characters; nothing that leaves the folder."""
    clean = (name or "").strip().lower()
    if not NAME_RE.fullmatch(clean):
        raise InvalidNameError(
            f"invalid avatar name {name!r}: use 1-40 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return clean


def avatars_dir(settings: Settings) -> Path:
    """Where avatar folders live."""
    return Path(settings.data_dir).expanduser() / "avatars"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_face(
    rgb: np.ndarray, size_px: int, min_face_px: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Find the one usable face, crop head and shoulders, scale, and compute its mesh."""
    box = choose_face(rgb, min_face_px)
    # A first mesh on a generous crop around the detection gives the geometry for the
    # final crop; the short-range mesh model needs the face to be large in its input.
    pad = 1.0 * max(box.width, box.height)
    left = max(0.0, box.x - pad)
    top = max(0.0, box.y - pad)
    side = min(max(box.width, box.height) + 2 * pad, float(min(rgb.shape[:2])))
    left = min(left, rgb.shape[1] - side)
    top = min(top, rgb.shape[0] - side)
    rough, affine = crop_to_square(rgb, (left, top, side), size_px)
    rough_lms = face_mesh(rough)
    if rough_lms is None:
        raise InvalidImageError(
            "a face was detected but its features could not be located; use a sharper, "
            "well-lit frontal photo"
        )
    scale = affine[0, 0]
    source_lms = (rough_lms - affine[:, 2]) / scale
    size = face_size_px(source_lms)
    if size < min_face_px:
        raise InvalidImageError(
            f"the face is only {size:.0f} px tall in the photo; use a photo where the face is "
            f"at least {min_face_px} px (a closer or higher-resolution shot)"
        )
    check_pose(source_lms)
    crop_box = head_crop_box(source_lms, (rgb.shape[0], rgb.shape[1]))
    face_rgb, _ = crop_to_square(rgb, crop_box, size_px)
    landmarks = face_mesh(face_rgb)
    if landmarks is None:
        raise InvalidImageError("the face could not be located after cropping; try another photo")
    check_pose(landmarks)
    info = {
        "face_size_px": round(size, 1),
        "crop_box": [round(v, 1) for v in crop_box],
        "source_size": [int(rgb.shape[1]), int(rgb.shape[0])],
    }
    return face_rgb, landmarks, info


def _read_persona(path: Path | None) -> str:
    if path is None:
        return ""
    path = Path(path)
    if not path.is_file():
        raise InvalidTextError(f"persona file not found: {path}")
    data = path.read_bytes()
    if len(data) > MAX_PERSONA_BYTES:
        raise InvalidTextError(
            f"persona file is {len(data) // 1024} KiB; "
            f"keep it under {MAX_PERSONA_BYTES // 1024} KiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTextError(
            f"persona file {path.name} is not UTF-8 text; save it as UTF-8 Markdown"
        ) from None


def register(
    name: str,
    image: Path | np.ndarray,
    voice: Path,
    persona: Path | None = None,
    *,
    settings: Settings | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Avatar:
    """Validate a photo and a voice sample, precompute everything, and store the avatar.

    The avatar is written to a temporary folder and moved into place at the end, so a
    failure or an interruption never leaves a half-made avatar or damages an existing one.
    """
    settings = settings or get_settings()
    step = progress or (lambda _msg: None)
    name = validate_name(name)
    root = avatars_dir(settings)
    target = root / name
    if target.exists() and not force:
        raise AvatarExistsError(
            f"an avatar named {name!r} already exists; "
            "pick another name or pass --force to replace it"
        )

    step("reading photo")
    rgb = image if isinstance(image, np.ndarray) else load_rgb(image, settings.max_image_pixels)
    step("finding the face")
    face_rgb, landmarks, face_info = prepare_face(
        rgb, settings.render_size_px, settings.min_face_px
    )

    step("checking the voice sample")
    pcm = decode_audio(Path(voice), VOICE_RATE_HZ)
    check = validate_voice(pcm, VOICE_RATE_HZ, settings.min_voice_s)
    step("computing the voice profile")
    # Normalise loudness so the profile and later comparisons do not depend on mic gain.
    peak = float(np.max(np.abs(pcm))) or 1.0
    pcm = (pcm * min(0.9 / peak, 10.0)).astype(np.float32)
    profile = compute_profile(pcm, VOICE_RATE_HZ)
    persona_text = _read_persona(persona)

    step("saving")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        cv2.imwrite(str(staging / "face.png"), cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR))
        np.save(staging / "landmarks.npy", landmarks)
        sf.write(staging / "voice.wav", pcm, VOICE_RATE_HZ, subtype="PCM_16")
        profile.save(staging / "voice_profile.npz")
        (staging / "persona.md").write_text(persona_text, encoding="utf-8")
        manifest = {
            "name": name,
            "version": 1,
            "created_unix": int(time.time()),
            "software": f"realtime-avatar {__version__}",
            "render_size_px": settings.render_size_px,
            "face": face_info,
            "image_sha256": _sha256(image) if isinstance(image, Path) else None,
            "voice": {
                "duration_s": round(check.duration_s, 2),
                "speech_s": round(check.speech_s, 2),
                "level_dbfs": round(check.level_dbfs, 1),
                "sha256": _sha256(Path(voice)),
            },
            "has_persona": bool(persona_text.strip()),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if target.exists():
            trash = root / f".trash-{name}-{int(time.time() * 1000)}"
            target.rename(trash)
            staging.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("registered avatar %s in %s", name, target)
    return load_avatar(name, settings=settings)


def load_avatar(name: str, *, settings: Settings | None = None) -> Avatar:
    """Load a registered avatar (the default one is made on first use)."""
    settings = settings or get_settings()
    name = validate_name(name)
    if name == DEFAULT_AVATAR:
        ensure_default_avatar(settings)
    folder = avatars_dir(settings) / name
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        known = ", ".join(list_avatars(settings)) or "none yet"
        raise AvatarNotFoundError(
            f"no avatar named {name!r} (registered: {known}); create it with "
            f"`avatar register {name} --image PHOTO --voice VOICE`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    profile = _load_or_rebuild_profile(folder)
    bgr = cv2.imread(str(folder / "face.png"), cv2.IMREAD_COLOR)
    face_rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Avatar(
        name=name,
        path=folder,
        face_rgb=face_rgb,
        landmarks=np.load(folder / "landmarks.npy"),
        voice_profile=profile,
        persona=(folder / "persona.md").read_text(encoding="utf-8"),
        manifest=manifest,
    )


def _load_or_rebuild_profile(folder: Path) -> VoiceProfile:
    """The saved voice profile; recomputed from the kept voice sample if it is from an older
    version of this program or damaged, so an upgrade never strands a registered avatar."""
    path = folder / "voice_profile.npz"
    try:
        return VoiceProfile.load(path)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("voice profile of %s is unreadable (%s); recomputing it", folder.name, exc)
    pcm, rate = sf.read(folder / "voice.wav", dtype="float32", always_2d=False)
    profile = compute_profile(np.asarray(pcm, dtype=np.float32), int(rate))
    tmp = path.with_name(".voice_profile.tmp.npz")
    profile.save(tmp)
    tmp.replace(path)
    return profile


def list_avatars(settings: Settings | None = None) -> list[str]:
    """Names of the registered avatars."""
    settings = settings or get_settings()
    root = avatars_dir(settings)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def default_portrait() -> np.ndarray:
    """The public-domain NASA portrait from scikit-image, upscaled so the face is large enough."""
    from skimage import data

    rgb = data.astronaut()
    return cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LANCZOS4)


def ensure_default_avatar(settings: Settings | None = None) -> None:
    """Register the shipped default avatar on first use."""
    settings = settings or get_settings()
    if (avatars_dir(settings) / DEFAULT_AVATAR / MANIFEST).is_file():
        return
    assets = resources.files("realtime_avatar") / "assets" / "default"
    with (
        resources.as_file(assets / "voice.wav") as voice,
        resources.as_file(assets / "persona.md") as persona,
    ):
        register(
            DEFAULT_AVATAR,
            default_portrait(),
            Path(voice),
            Path(persona),
            settings=settings,
            force=True,
        )
