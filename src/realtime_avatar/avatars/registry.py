"""Register, load and list avatars: one folder per avatar under ``<data_dir>/avatars``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
    ConfigurationError,
    InvalidImageError,
    InvalidNameError,
    InvalidTextError,
    ProtectedAvatarError,
    StorageError,
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
# Only the start of a long voice sample is decoded, kept and profiled: the profile of 120 s
# took 880 MB and a minute; 30 s is three times what it needs.
VOICE_USED_S = 30.0
MAX_PERSONA_BYTES = 256 * 1024
MANIFEST = "manifest.json"
OWNER = ".owner-pid"  # inside a staging folder: the process that is writing it
# A register writes its hidden ".NAME-xxxx" staging folder in seconds; one whose writer has
# died (or, without an owner file, one older than this) is a leftover of a killed register.
STALE_STAGING_S = 600.0
DEAD_OWNER_GRACE_S = 60.0
TRASH_STALE_S = 60.0
_LEFTOVER_RE = re.compile(r"^\.(?:trash-)?[a-z0-9][a-z0-9_-]{0,39}-")

Progress = Callable[[str], None]
FitProgress = Callable[[int, int, str], None]  # (done, total, what): the voice fit's steps


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


def writable_avatars_dir(settings: Settings) -> Path:
    """The avatars folder, created if needed; a clear error if the data directory is a
    file or cannot be written, before any slow work starts."""
    data = Path(settings.data_dir).expanduser()
    root = avatars_dir(settings)
    if data.exists() and not data.is_dir():
        raise ConfigurationError(
            f"AVATAR_DATA_DIR={data} is a file, not a folder; point it at a folder "
            "(or unset it for ~/.local/share/realtime-avatar)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write to {root} ({exc.strerror or exc}); set AVATAR_DATA_DIR to a "
            "folder you can write"
        ) from None
    return root


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _is_stale(folder: Path, now: float) -> bool:
    """A leftover staging or trash folder whose writer is gone."""
    if folder.name.startswith(".trash-"):
        # Named by the time of the swap, which takes milliseconds; the old avatar inside
        # keeps its own (old) times.
        stamp = folder.name.rsplit("-", 1)[-1]
        return not stamp.isdigit() or now - int(stamp) / 1000 > TRASH_STALE_S
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    try:
        owner = int((folder / OWNER).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return age > STALE_STAGING_S
    # The grace period covers a writer in another pid namespace (a container), whose pid
    # means nothing here: a live register touches its folder every few seconds at most.
    return owner != os.getpid() and not _pid_alive(owner) and age > DEAD_OWNER_GRACE_S


def clean_leftovers(root: Path) -> list[str]:
    """Remove what a killed ``register`` left behind; returns the names removed.

    A trash folder whose avatar is missing holds the only copy (killed between the two
    renames of a ``--force`` replace): it is put back instead of removed.
    """
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for folder in root.iterdir():
        if not folder.is_dir() or not _LEFTOVER_RE.match(folder.name):
            continue
        if not _is_stale(folder, now):
            continue
        if folder.name.startswith(".trash-"):
            name = folder.name[len(".trash-") :].rsplit("-", 1)[0]
            target = root / name
            if NAME_RE.fullmatch(name) and not target.exists() and (folder / MANIFEST).is_file():
                (folder / OWNER).unlink(missing_ok=True)
                folder.rename(target)
                log.warning("restored avatar %s from an interrupted replace", name)
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
        log.info("removed %s, left by an interrupted register", folder.name)
    return removed


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
    voice_fit: str | None = None,
    fit_progress: FitProgress | None = None,
) -> Avatar:
    """Validate a photo and a voice sample, precompute everything, and store the avatar.

    ``voice_fit`` (``off``, ``fast``, ``full``; default ``AVATAR_VOICE_FIT``) fits the
    English voice recipe to the sample (``voice.fit``) and stores it with its scores in
    the manifest's ``voice_fit``; ``fit_progress`` follows the fit's candidates.

    The avatar is written to a temporary folder and moved into place at the end, so a
    failure or an interruption never leaves a half-made avatar or damages an existing one.
    """
    settings = settings or get_settings()
    step = progress or (lambda _msg: None)
    name = validate_name(name)
    fit_mode = _voice_fit_mode(voice_fit if voice_fit is not None else settings.voice_fit)
    root = writable_avatars_dir(settings)
    clean_leftovers(root)
    target = root / name
    if target.exists() and not force:
        raise AvatarExistsError(
            f"an avatar named {name!r} already exists; "
            "pick another name or pass --force to replace it"
        )

    # Cheap checks first: a bad file of either kind is refused before any model loads.
    step("reading photo")
    rgb = image if isinstance(image, np.ndarray) else load_rgb(image, settings.max_image_pixels)
    step("checking the voice sample")
    pcm = decode_audio(Path(voice), VOICE_RATE_HZ, max_s=VOICE_USED_S)
    check = validate_voice(pcm, VOICE_RATE_HZ, settings.min_voice_s)
    persona_text = _read_persona(persona)
    step("finding the face")
    face_rgb, landmarks, face_info = prepare_face(
        rgb, settings.render_size_px, settings.min_face_px
    )

    step("computing the voice profile")
    # Normalise loudness so the profile and later comparisons do not depend on mic gain.
    peak = float(np.max(np.abs(pcm))) or 1.0
    pcm = (pcm * min(0.9 / peak, 10.0)).astype(np.float32)
    profile = compute_profile(pcm, VOICE_RATE_HZ)
    fitted = None
    if fit_mode != "off":
        step("fitting the voice")
        from ..engine.voice import fit_sample

        fitted = fit_sample(pcm, VOICE_RATE_HZ, settings, fit_mode, fit_progress)

    step("saving")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        (staging / OWNER).write_text(str(os.getpid()), encoding="ascii")
        if not cv2.imwrite(str(staging / "face.png"), cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {staging / 'face.png'}")
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
        if fitted is not None:
            manifest["voice_fit"] = fitted
        # The manifest is what makes a folder an avatar: written last, whole, atomically.
        _write_atomically(staging / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
        (staging / OWNER).unlink()
        if target.exists():
            trash = root / f".trash-{name}-{int(time.time() * 1000)}"
            target.rename(trash)
            staging.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException as exc:
        failed = isinstance(exc, OSError | RuntimeError) and not isinstance(
            exc, NotImplementedError
        )
        message = _save_failed_message(root, exc) if failed else ""  # free space: before clean-up
        shutil.rmtree(staging, ignore_errors=True)
        if failed:
            raise StorageError(message) from None
        raise
    log.info("registered avatar %s in %s", name, target)
    return load_avatar(name, settings=settings)


def _voice_fit_mode(mode: str) -> str:
    """``off``, ``fast`` or ``full``, else a clear error (before any slow work)."""
    clean = (mode or "").strip().lower()
    if clean not in ("off", "fast", "full"):
        raise ConfigurationError(
            f"unknown voice fit {mode!r}; use off, fast (about 15 s) or full (about 90 s) "
            "(--voice-fit or AVATAR_VOICE_FIT)"
        )
    return clean


def voice_fit_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What a listing shows of an avatar's fitted voice: recipe and held-out scores."""
    fit = manifest.get("voice_fit")
    if not isinstance(fit, dict):
        return None
    raw, fitted = fit.get("raw") or {}, fit.get("fitted") or {}
    return {
        "mode": fit.get("mode"),
        "measure": fit.get("measure"),
        "recipe": fit.get("recipe"),
        "describe": fit.get("describe"),
        "similarity_raw": raw.get("similarity"),
        "similarity_fitted": fitted.get("similarity"),
        "median_f0_hz": {
            "target": fit.get("target_median_f0_hz"),
            "raw": raw.get("median_f0_hz"),
            "fitted": fitted.get("median_f0_hz"),
        },
        "envelope_db": {"raw": raw.get("envelope_db"), "fitted": fitted.get("envelope_db")},
        "wer": {"raw": raw.get("wer"), "fitted": fitted.get("wer")},
        "seconds": fit.get("seconds"),
        "note": fit.get("note", ""),
    }


def voice_fits(names: list[str], settings: Settings | None = None) -> dict[str, Any]:
    """Each named avatar's voice fit summary (``None`` when not fitted), read from manifests."""
    settings = settings or get_settings()
    out: dict[str, Any] = {}
    for name in names:
        try:
            manifest = json.loads(
                (avatars_dir(settings) / name / MANIFEST).read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            out[name] = None
            continue
        out[name] = voice_fit_summary(manifest) if isinstance(manifest, dict) else None
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, synced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _save_failed_message(root: Path, exc: BaseException) -> str:
    """Why saving failed, in words: usually a full or read-only disk."""
    try:
        free_mb = shutil.disk_usage(root).free / 1e6
    except OSError:
        free_mb = -1.0
    reason = getattr(exc, "strerror", None) or f"{exc.__class__.__name__}: {exc}".strip(": ")
    space = f", {free_mb:.1f} MB free" if free_mb >= 0 else ""
    return (
        f"could not save the avatar in {root} ({reason}{space}); free some space or set "
        "AVATAR_DATA_DIR to another folder. Nothing was changed."
    )


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
    clean_leftovers(root)
    # Hidden folders are staging or trash: never avatars, even with a manifest inside.
    return sorted(
        p.name for p in root.iterdir() if NAME_RE.fullmatch(p.name) and (p / MANIFEST).is_file()
    )


def delete_avatar(name: str, *, settings: Settings | None = None) -> None:
    """Remove a registered avatar; the shipped default cannot be removed.

    The folder is first renamed to a hidden ``.deleted-NAME-...`` folder (one atomic step:
    the avatar is gone from every list at once), then removed; what an interrupted delete
    leaves is a leftover that ``clean_leftovers`` removes, never a half-deleted avatar.
    """
    settings = settings or get_settings()
    name = validate_name(name)
    if name == DEFAULT_AVATAR:
        raise ProtectedAvatarError(
            "the default avatar ships with the program and cannot be deleted; "
            "delete one you made instead"
        )
    root = avatars_dir(settings)
    folder = root / name
    if not (folder / MANIFEST).is_file():
        known = ", ".join(n for n in list_avatars(settings) if n != DEFAULT_AVATAR) or "none"
        raise AvatarNotFoundError(f"no avatar named {name!r} to delete (yours: {known})")
    doomed = root / f".deleted-{name}-{int(time.time() * 1000)}"
    try:
        folder.rename(doomed)
    except OSError as exc:
        raise StorageError(
            f"could not delete the avatar {name!r} ({exc.strerror or exc}); "
            f"check that {root} is writable"
        ) from None
    shutil.rmtree(doomed, ignore_errors=True)
    log.info("deleted avatar %s", name)


def default_portrait() -> np.ndarray:
    """The public-domain NASA portrait from scikit-image, upscaled so the face is large enough."""
    from skimage import data

    rgb = data.astronaut()
    return cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LANCZOS4)


# SHA-256 of persona texts earlier releases shipped for the default avatar: a data directory
# holding one of them, unedited, gets the current text (answers in es/zh need its facts).
_OLD_DEFAULT_PERSONAS = frozenset(
    {"136bad3c40b01cb0bb386fc20376ecd981d2d207575aa43ec790e7aa328a1b6a"}
)


def _refresh_default_persona(folder: Path) -> None:
    """Replace an earlier release's default persona with the shipped one, atomically; a
    persona the user edited is theirs and stays."""
    stored = folder / "persona.md"
    try:
        digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    except OSError:
        return
    if digest not in _OLD_DEFAULT_PERSONAS:
        return
    shipped = resources.files("realtime_avatar") / "assets" / "default" / "persona.md"
    fresh = folder / ".persona.md.new"
    fresh.write_bytes(shipped.read_bytes())
    os.replace(fresh, stored)
    log.info("default avatar: persona updated to this release's (en/es/zh facts)")


def ensure_default_avatar(settings: Settings | None = None) -> None:
    """Register the shipped default avatar on first use (and bring an earlier release's
    unedited default persona up to date)."""
    settings = settings or get_settings()
    folder = avatars_dir(settings) / DEFAULT_AVATAR
    if (folder / MANIFEST).is_file():
        _refresh_default_persona(folder)
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
            voice_fit="off",  # the shipped voice is synthetic; a first serve must not wait
        )
