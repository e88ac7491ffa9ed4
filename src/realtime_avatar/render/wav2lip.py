"""The ``wav2lip`` renderer: the avatar's photo with its mouth driven by the audio.

Behind the render seam as an audio-driven renderer: each pushed piece of speech is cut
into 40 ms frames of 48 kHz audio and, at 16 kHz, into the mel spectrogram the original
model was trained on (80 bins, hop 200, so 3.2 mel frames per video frame); each frame
gets the 16-mel-frame window centred on it, as in Wav2Lip's training. The face box comes
from the avatar's landmarks; its 96x96 crop, lower half blanked, stacked on the unmasked
crop as the reference, is the model's face input. Frames are rendered in batches when the
clock reaches them, the lower half of the generated face is colour-matched to the photo
and pasted back through a feathered mask, so nothing outside the box's lower half changes.

Idle frames are the still photo (no idle motion: the paste-back region must line up with
the photo). Like ``AnimatedRenderer`` the lock only decides which frame comes next; the
mel, the forward pass and the paste-back run outside it, so ``push`` and ``clear`` never
wait. The model loads once per process per (file, device) and is shared by sessions.

Torch is imported only here, when the renderer is built: the embedded default never
needs it.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from scipy.signal import get_window, lfilter

from ..constants import ASR_RATE_HZ, FPS, OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from ..devices import check_torch_device
from ..errors import ConfigurationError
from ..face.landmarks import BROW_A, BROW_B
from ..frames import AVFrame, Speech
from ..media.audio import float_to_int16, resample
from ..settings import Settings
from .base import FaceImage
from .playout import Playout, PlayoutRenderer

if TYPE_CHECKING:
    import torch

    from .wav2lip_net import Wav2Lip

FACE_PX = 96  # the model's face input and output
MEL_BINS = 80
MEL_WINDOW = 16  # mel frames per window: 0.2 s, five video frames
MEL_HOP = 200  # samples at 16 kHz: 80 mel frames a second
MEL_N_FFT = 800
MEL_FMIN_HZ, MEL_FMAX_HZ = 55.0, 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB, MIN_LEVEL_DB = 20.0, -100.0
MEL_MAX_ABS = 4.0  # the symmetric normalisation the checkpoints expect: [-4, 4]
MEL_PER_FRAME = ASR_RATE_HZ / MEL_HOP / FPS  # 3.2
FACE_MESH_POINTS = 468
CHIN_PAD = 0.06  # of the face height below the chin, as the original pads its boxes
FEATHER = 0.12  # of the box width/height over which the paste-back fades in
DEFAULT_BATCH_FRAMES = 8
INSTALL_TORCH = (
    "the wav2lip renderer needs PyTorch: install it with "
    "pip install 'realtime-avatar[eval]' (or pip install torch), "
    "or set AVATAR_RENDERER=mesh2d"
)

SILENCE = np.zeros(SAMPLES_PER_FRAME, np.int16)


# --- audio: the mel spectrogram as Wav2Lip's audio.py computes it ---------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    mel = hz / (200.0 / 3)
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = mel * (200.0 / 3)
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
    return hz


@functools.cache
def mel_filters() -> np.ndarray:
    """80 x 401 triangular filters, Slaney-normalised, 55..7600 Hz (librosa.filters.mel)."""
    fft_hz = np.linspace(0, ASR_RATE_HZ / 2, 1 + MEL_N_FFT // 2)
    edges = _mel_to_hz(
        np.linspace(
            _hz_to_mel(np.array([MEL_FMIN_HZ]))[0],
            _hz_to_mel(np.array([MEL_FMAX_HZ]))[0],
            MEL_BINS + 2,
        )
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    weights = np.zeros((MEL_BINS, len(fft_hz)))
    for i in range(MEL_BINS):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : MEL_BINS + 2] - edges[:MEL_BINS]))[:, None]
    return weights.astype(np.float32)


def mel_spectrogram(pcm_16k: np.ndarray) -> np.ndarray:
    """80 x T normalised log-mel of 16 kHz float PCM, T = 1 + len // 200 (centred STFT)."""
    emphasised = lfilter([1.0, -PREEMPHASIS], [1.0], pcm_16k.astype(np.float64))
    padded = np.pad(
        emphasised, MEL_N_FFT // 2, mode="reflect" if len(emphasised) > 1 else "constant"
    )
    n = 1 + (len(padded) - MEL_N_FFT) // MEL_HOP
    idx = np.arange(MEL_N_FFT)[None, :] + MEL_HOP * np.arange(n)[:, None]
    window = get_window("hann", MEL_N_FFT, fftbins=True)
    magnitude = np.abs(np.fft.rfft(padded[idx] * window, axis=1)).T  # 401 x T
    db = 20 * np.log10(np.maximum(1e-5, mel_filters() @ magnitude)) - REF_LEVEL_DB
    scaled = 2 * MEL_MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MEL_MAX_ABS
    return np.clip(scaled, -MEL_MAX_ABS, MEL_MAX_ABS).astype(np.float32)


def mel_windows(pcm_16k: np.ndarray, n_frames: int) -> np.ndarray:
    """n_frames x 80 x 16: for video frame i, the 16 mel frames centred on its middle.

    The original trains on the window that starts two video frames earlier (the same
    centre); windows reaching past the audio see silence (the normalised floor).
    """
    mel = mel_spectrogram(pcm_16k)
    pad = MEL_WINDOW
    mel = np.pad(mel, ((0, 0), (pad, pad)), constant_values=-MEL_MAX_ABS)
    out = np.empty((n_frames, MEL_BINS, MEL_WINDOW), np.float32)
    for i in range(n_frames):
        start = int(round((i + 0.5) * MEL_PER_FRAME - MEL_WINDOW / 2)) + pad
        start = min(max(start, 0), mel.shape[1] - MEL_WINDOW)
        out[i] = mel[:, start : start + MEL_WINDOW]
    return out


# --- face: the box from the landmarks, the model input, the paste-back ---------------


@dataclass(frozen=True)
class FaceBox:
    """Where the model's 96x96 face sits in the photo (pixels, end-exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def paste_rows(self) -> tuple[int, int]:
        """The lower half: the only rows the paste-back may change."""
        return self.y0 + (self.y1 - self.y0) // 2, self.y1


def face_box(landmarks: np.ndarray, size_px: int) -> FaceBox:
    """The face box from the face-mesh points, padded below the chin, inside the image."""
    points = np.asarray(landmarks, np.float64)[:, :2]
    if len(points) == 0 or not np.isfinite(points).all():
        raise ConfigurationError("the avatar has no usable face landmarks; register it again")
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    if len(points) >= FACE_MESH_POINTS:
        # The checkpoints learnt face-detector boxes, which start mid-forehead rather than
        # at the mesh's hairline: halfway up from the brows, so the blanked lower half
        # starts near the nose as in training.
        y0 = (y0 + points[BROW_A + BROW_B, 1].min()) / 2
    y1 += CHIN_PAD * (y1 - y0)
    box = FaceBox(
        int(np.clip(np.floor(x0), 0, size_px - 1)),
        int(np.clip(np.floor(y0), 0, size_px - 1)),
        int(np.clip(np.ceil(x1) + 1, 1, size_px)),
        int(np.clip(np.ceil(y1) + 1, 1, size_px)),
    )
    if box.x1 - box.x0 < 16 or box.y1 - box.y0 < 16:
        raise ConfigurationError("the avatar's face is too small for wav2lip; use a larger photo")
    return box


def face_input(face_rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    """6 x 96 x 96 float32: the crop with its lower half blanked, then the crop (BGR, 0..1)."""
    crop = face_rgb[box.y0 : box.y1, box.x0 : box.x1, ::-1]  # the checkpoints learnt BGR
    reference = cv2.resize(np.ascontiguousarray(crop), (FACE_PX, FACE_PX)).astype(np.float32) / 255
    masked = reference.copy()
    masked[FACE_PX // 2 :] = 0
    return np.concatenate([masked, reference], axis=2).transpose(2, 0, 1).copy()


def paste_mask(box: FaceBox) -> np.ndarray:
    """Box-sized float32 weights: 0 above the lower half and at its edges, 1 inside."""
    height, width = box.y1 - box.y0, box.x1 - box.x0
    top = height // 2

    def ramp(n: int, fade: int) -> np.ndarray:
        t = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(fade, 1)
        t = np.clip(t, 0.0, 1.0)
        return t * t * (3 - 2 * t)

    mask = np.zeros((height, width), np.float32)
    fade = max(int(FEATHER * min(width, height)), 2)
    mask[top:] = np.outer(ramp(height - top, fade), ramp(width, fade))
    return mask


def paste_back(
    photo: np.ndarray, generated_bgr: np.ndarray, box: FaceBox, mask: np.ndarray
) -> np.ndarray:
    """The photo with the generated face's lower half colour-matched and blended in."""
    width, height = box.x1 - box.x0, box.y1 - box.y0
    face = cv2.resize(generated_bgr, (width, height))[..., ::-1].astype(np.float32)
    top = box.paste_rows[0] - box.y0
    region = photo[box.paste_rows[0] : box.y1, box.x0 : box.x1].astype(np.float32)
    face = face[top:]
    weights = mask[top:, :, None]
    inside = mask[top:] > 0.5
    if inside.any():
        # Match each channel's mean and spread to the photo's: the network's output drifts
        # in colour and contrast from the photo it is pasted into.
        want_mean, want_std = region[inside].mean(0), region[inside].std(0)
        have_mean, have_std = face[inside].mean(0), face[inside].std(0)
        gain = np.clip(want_std / np.maximum(have_std, 1e-3), 0.25, 4.0)
        face = (face - have_mean) * gain + want_mean
    blended = region * (1 - weights) + face * weights
    out = photo.copy()
    out[box.paste_rows[0] : box.y1, box.x0 : box.x1] = np.clip(np.rint(blended), 0, 255)
    return out


# --- the checkpoint -------------------------------------------------------------------


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and a GPU that torch can see when asked for one."""
    return check_torch_device(device, "AVATAR_RENDERER_DEVICE")


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ")"


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The generator's tensors from a ``.pth`` as published (``state_dict``, ``module.``)."""
    import torch

    what = f"the wav2lip checkpoint {path}"
    if not path.is_file():
        raise ConfigurationError(
            f"{what} does not exist; set AVATAR_WAV2LIP_CHECKPOINT to wav2lip_gan.pth "
            "or wav2lip.pth (see docs/MODELS.md)"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle of something else, an HTML page...
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise ConfigurationError(
            f"cannot read {what} ({exc.__class__.__name__}{': ' + reason if reason else ''}); "
            "the file is truncated or not a torch checkpoint: download it again"
        ) from None
    weights = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ConfigurationError(
            f"{what} holds no state_dict of tensors; expected the generator checkpoint "
            "wav2lip.pth or wav2lip_gan.pth"
        )
    stripped: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigurationError(f"{what}: entry {key!r} is not a tensor")
        stripped[str(key).removeprefix("module.")] = value
    return stripped


def check_layout(weights: dict[str, torch.Tensor], expected: dict[str, Any], path: Path) -> None:
    """Every key of the architecture present with its shape, and nothing else."""
    for key, tensor in expected.items():
        if key not in weights:
            if key.endswith("num_batches_tracked"):
                continue  # a training counter; checkpoints may leave it out
            raise ConfigurationError(
                f"{path} is not a Wav2Lip generator checkpoint: key {key!r} is missing "
                f"(expected shape {_shape(tensor.shape)}); use wav2lip.pth or wav2lip_gan.pth, "
                "not the SyncNet or discriminator file"
            )
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise ConfigurationError(
                f"{path} is not a Wav2Lip generator checkpoint: key {key!r} has shape "
                f"{_shape(weights[key].shape)}, expected {_shape(tensor.shape)}"
            )
        if key.endswith("num_batches_tracked"):
            continue
        if not weights[key].is_floating_point():
            raise ConfigurationError(
                f"{path}: key {key!r} holds {weights[key].dtype}, expected floating point"
            )
    extra = next((key for key in weights if key not in expected), None)
    if extra is not None:
        raise ConfigurationError(
            f"{path} is not a Wav2Lip generator checkpoint: unexpected key {extra!r} "
            "(a different model or a modified architecture)"
        )


_MODELS: dict[tuple[str, int, int, str], Wav2Lip] = {}
_MODELS_LOCK = threading.Lock()


def load_wav2lip(path: Path | None, device: str) -> Wav2Lip:
    """The generator from ``path`` on ``device``, loaded once per process and shared."""
    if path is None:
        raise ConfigurationError(
            "AVATAR_RENDERER=wav2lip needs AVATAR_WAV2LIP_CHECKPOINT=/path/to/wav2lip_gan.pth "
            "(see docs/MODELS.md)"
        )
    try:
        from .wav2lip_net import Wav2Lip  # imports torch
    except ImportError:
        raise ConfigurationError(INSTALL_TORCH) from None
    device = check_device(device)
    path = Path(path).expanduser()
    stat = path.stat() if path.is_file() else None
    key = (
        str(path.resolve()),
        stat.st_mtime_ns if stat else 0,
        stat.st_size if stat else 0,
        device,
    )
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        weights = checkpoint_weights(path)
        model = Wav2Lip()
        expected = model.state_dict()
        check_layout(weights, expected, path)
        model.load_state_dict(weights, strict=False)  # only num_batches_tracked may be absent
        model = model.to(device).eval()
        _MODELS[key] = model
        return model


# --- the renderer ---------------------------------------------------------------------


@dataclass
class _Piece:
    """One piece of speech cut into frames: audio, mel windows, faces rendered so far."""

    turn_id: int
    audio: np.ndarray  # n_frames * SAMPLES_PER_FRAME int16 at 48 kHz
    mels: np.ndarray  # n_frames x 80 x 16
    images: list[np.ndarray | None] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.mels)


def cut_speech(speech: Speech) -> _Piece:
    """48 kHz audio padded to whole frames and one mel window per frame."""
    pcm = resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ)
    n_frames = max(int(np.ceil(len(pcm) / SAMPLES_PER_FRAME)), 1)
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, np.int16)
    audio[: len(pcm)] = float_to_int16(pcm)
    pcm_16k = resample(speech.pcm, speech.sample_rate_hz, ASR_RATE_HZ)
    mels = mel_windows(pcm_16k, n_frames)
    return _Piece(speech.turn_id, audio, mels, [None] * n_frames)


class Wav2LipRenderer(PlayoutRenderer[_Piece]):
    """A ``Renderer``: the still photo, its mouth redrawn by Wav2Lip from the audio."""

    name = "wav2lip"

    def __init__(
        self,
        face: FaceImage,
        model: Wav2Lip,
        *,
        device: str = "cpu",
        batch_frames: int = DEFAULT_BATCH_FRAMES,
    ) -> None:
        import torch

        self.photo = np.ascontiguousarray(face.face_rgb[..., :3], dtype=np.uint8)
        self.size_px = int(self.photo.shape[0])
        self.box = face_box(face.landmarks, self.size_px)
        self.mask = paste_mask(self.box)
        self.model = model
        self.device = device
        self.batch_frames = max(int(batch_frames), 1)
        self._face = torch.from_numpy(face_input(self.photo, self.box)).to(device)
        self._playout: Playout[_Piece] = Playout(cut_speech)

    def render_batch(self, mels: np.ndarray) -> list[np.ndarray]:
        """One forward pass over B mel windows: B full frames (the photo, new mouth)."""
        import torch

        with torch.inference_mode():
            audio = torch.from_numpy(mels[:, None]).to(self.device)
            faces = self._face[None].expand(len(mels), -1, -1, -1)
            out = self.model(audio, faces)
            generated = (out.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().cpu().numpy()
        return [paste_back(self.photo, face, self.box, self.mask) for face in generated]

    def next_frame(self) -> AVFrame:
        index, playing, step = self._playout.next()
        if playing is None:
            return AVFrame(0, index, self.photo.copy(), SILENCE)
        image = playing.images[step]
        if image is None:
            # Only the puller touches a piece's images: render this frame and the next few.
            end = min(step + self.batch_frames, playing.frames)
            playing.images[step:end] = self.render_batch(playing.mels[step:end])
            image = playing.images[step]
        playing.images[step] = None  # rendered frames are not kept once shown
        assert image is not None
        audio = playing.audio[step * SAMPLES_PER_FRAME : (step + 1) * SAMPLES_PER_FRAME]
        return AVFrame(playing.turn_id, index, image, audio, speaking=True)


def build_wav2lip(face: FaceImage, settings: Settings) -> Wav2LipRenderer:
    """The registry's factory: the model from the settings' path and device."""
    path = settings.wav2lip_checkpoint or settings.renderer_model_path
    model = load_wav2lip(path, settings.renderer_device)
    return Wav2LipRenderer(face, model, device=check_device(settings.renderer_device))
