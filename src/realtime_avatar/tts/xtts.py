"""XTTS-v2 voice cloning through the maintained ``coqui-tts`` package (the ``xtts`` extra).

It loads a model directory as users download it from the Hugging Face hub (coqui/XTTS-v2):
``config.json``, ``model.pth``, ``vocab.json`` and ``speakers_xtts.pth``. Each file is
checked before coqui's loader sees it, so a missing, truncated or mismatched file is one
clear line naming that file. coqui's own loader rewrites a legacy ``model.pth`` in place
(its pickled config as a dict); here the checkpoint is read once, read-only, and handed to
that loader, so a user's download (or a read-only mount) is never written to.

It speaks in the avatar's own voice: the GPT conditioning latents and the speaker embedding
are computed once from the avatar's voice sample and cached beside it in the avatar's
folder (keyed by the sample's and the model's content), so its capabilities declare
``reference_voice`` and no DSP matching follows. It streams: ``synthesize_stream`` yields
the audio of a sentence in pieces as coqui's ``inference_stream`` makes them. It gives no
phoneme timings; the animator works from the audio (``animate.mouth.AudioAnimator``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..devices import check_torch_device
from ..errors import ConfigurationError, InvalidTextError, UnsupportedLanguageError
from ..frames import Speech
from ..text.chunker import normalize_for_speech
from ..text.language import normalize_language_code
from .base import ReferenceVoice, SynthCapabilities, content_digest, file_digest

if TYPE_CHECKING:
    import torch

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 24_000  # what XTTS-v2's HiFi-GAN decoder speaks at
CONDITIONING_RATE_HZ = 22_050  # what its conditioning encoders read
MODEL_FILES = ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth")
# Our language codes and XTTS's (its Mandarin is "zh-cn", romanised with pypinyin).
XTTS_LANGUAGES = {"en": "en", "es": "es", "zh": "zh-cn"}
# Characters XTTS reads well in one generation (coqui's char_limits); longer text is split.
CHAR_LIMITS = {"en": 250, "es": 239, "zh": 82}
STREAM_CHUNK_TOKENS = 20  # audio tokens per streamed piece: 20 x 1024 samples, 0.93 s
MIN_REFERENCE_S = 0.5  # the conditioning encoder ignores shorter chunks
LATENTS_PREFIX = "xtts-latents-"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；])\s*")

INSTALL = (
    "the xtts synthesizer needs the xtts extra (coqui-tts with its torch audio packages): "
    "pip install -c constraints.txt -e '.[xtts]' (make deps installs it)"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    reason = text.splitlines()[0][:160] if text else ""
    return f"{exc.__class__.__name__}{': ' + reason if reason else ''}"


@cache
def _coqui() -> Any:
    """coqui-tts's XTTS module, or a ConfigurationError saying how to install it."""
    try:
        from TTS.tts.models import xtts
    except ImportError as exc:
        raise ConfigurationError(f"{INSTALL} ({_first_line(exc)})") from None
    except OSError as exc:  # a torchaudio built for another torch (PyPI's is a CUDA build)
        raise ConfigurationError(
            f"{INSTALL}; torchaudio's compiled extension does not load against this torch "
            f"({_first_line(exc)}); `make deps` removes it on a CPU-only torch"
        ) from None
    # coqui builds its GPT2 config with GPT-2's text token ids, outside XTTS's audio
    # vocabulary (never used: it passes its own); transformers warns at every load.
    logging.getLogger("transformers.configuration_utils").setLevel(logging.ERROR)
    return xtts


@cache
def _model_class() -> type:
    """coqui's ``Xtts`` reading an already loaded checkpoint instead of ``model.pth``."""
    base = _coqui().Xtts

    class PreloadedXtts(base):  # type: ignore[misc, valid-type]
        """``Xtts`` whose ``load_checkpoint`` takes the weights read (and checked) here:
        coqui's own reader would rewrite a legacy ``model.pth`` in the user's folder."""

        preloaded: dict[str, Any] | None = None

        def _load_checkpoint(self, model_path: Path) -> dict[str, Any]:
            if self.preloaded is None:
                raise RuntimeError("the XTTS checkpoint was not read before loading")
            return self.preloaded

    return PreloadedXtts


# --------------------------------------------------------------------------------------
# The model directory, file by file
# --------------------------------------------------------------------------------------


def model_files(model_dir: Path | None) -> dict[str, Path]:
    """The four files of an XTTS-v2 download, each present, by name."""
    if model_dir is None:
        raise ConfigurationError(
            "the xtts synthesizer needs AVATAR_XTTS_MODEL_DIR=/path/to/XTTS-v2, the folder "
            "downloaded from coqui/XTTS-v2 (see docs/MODELS.md)"
        )
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ConfigurationError(
            f"AVATAR_XTTS_MODEL_DIR={model_dir} is not a folder; point it at the XTTS-v2 "
            f"download holding {', '.join(MODEL_FILES)}"
        )
    files = {name: folder / name for name in MODEL_FILES}
    for path in files.values():
        if not path.is_file():
            raise ConfigurationError(
                f"{path} is missing: an XTTS-v2 model folder holds {', '.join(MODEL_FILES)} "
                "(download them from coqui/XTTS-v2)"
            )
    return files


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and a GPU torch can see when one is asked for."""
    return check_torch_device(device, "AVATAR_XTTS_DEVICE")


def read_config(path: Path) -> Any:
    """``config.json`` as coqui's ``XttsConfig``, checked to describe an XTTS model."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read {path} ({_first_line(exc)}); download XTTS-v2's config.json again"
        ) from None
    if not isinstance(raw, dict) or raw.get("model") != "xtts":
        found = raw.get("model") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigurationError(
            f"{path} is not an XTTS config (its \"model\" is {found!r}, expected \"xtts\"); "
            "use the config.json from coqui/XTTS-v2"
        )
    if not isinstance(raw.get("model_args"), dict):
        raise ConfigurationError(f"{path} has no \"model_args\" object; download it again")
    from TTS.tts.configs.xtts_config import XttsConfig

    config = XttsConfig()
    try:  # what coqui's load_json does, on the JSON read (and checked) above
        config.deserialize(raw)
        config.check_values()
    except Exception as exc:  # coqpit's type checks: a field of the wrong kind
        raise ConfigurationError(
            f"{path} does not fit XTTS's settings ({_first_line(exc)}); "
            "use the config.json from coqui/XTTS-v2"
        ) from None
    return config


def read_vocab(path: Path) -> Any:
    """``vocab.json``: the BPE tokenizer, with the control tokens XTTS encodes with."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # not JSON, or JSON that is not a tokenizer
        raise ConfigurationError(
            f"cannot read {path} as a tokenizer ({_first_line(exc)}); "
            "download XTTS-v2's vocab.json again"
        ) from None
    vocab = tokenizer.get_vocab()
    missing = [token for token in ("[STOP]", "[UNK]", "[SPACE]", "[START]") if token not in vocab]
    if missing:
        raise ConfigurationError(
            f"{path} is not XTTS's vocabulary: it lacks {', '.join(missing)}; "
            "use the vocab.json from coqui/XTTS-v2"
        )
    return tokenizer


def _torch_load(path: Path, what: str) -> Any:
    """A torch file read with ``weights_only`` (no code runs), or one clear line."""
    import torch

    legacy = _coqui()._legacy_safe_globals  # the published model.pth pickles its XttsConfig
    try:
        with legacy():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, an HTML page, a pickle of something else
        raise ConfigurationError(
            f"cannot read {path} ({_first_line(exc)}); the file is truncated or not "
            f"{what}: download it again from coqui/XTTS-v2"
        ) from None


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """``model.pth``'s tensors (``{"model": state_dict, "config": ...}`` as published)."""
    import torch

    loaded = _torch_load(path, "an XTTS checkpoint")
    weights = loaded.get("model") if isinstance(loaded, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ConfigurationError(
            f"{path} holds no \"model\" state_dict; expected XTTS-v2's model.pth "
            "(not dvae.pth, mel_stats.pth or a trainer's optimizer file)"
        )
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigurationError(f"{path}: entry {key!r} is not a tensor")
        if not value.is_floating_point() and not key.endswith("num_batches_tracked"):
            raise ConfigurationError(
                f"{path}: entry {key!r} holds {value.dtype}, expected floating point"
            )
    return weights


def read_speakers(path: Path, model_dim: int, d_vector_dim: int) -> dict[str, dict[str, Any]]:
    """``speakers_xtts.pth``: the studio voices, name to latents and speaker embedding."""
    import torch

    loaded = _torch_load(path, "XTTS's speaker file")
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigurationError(
            f"{path} holds no speakers; expected XTTS-v2's speakers_xtts.pth"
        )
    for name, entry in loaded.items():
        latent = entry.get("gpt_cond_latent") if isinstance(entry, dict) else None
        embedding = entry.get("speaker_embedding") if isinstance(entry, dict) else None
        if not isinstance(latent, torch.Tensor) or not isinstance(embedding, torch.Tensor):
            raise ConfigurationError(
                f"{path}: speaker {name!r} lacks gpt_cond_latent / speaker_embedding tensors"
            )
        if latent.shape[-1] != model_dim or embedding.shape[-2] != d_vector_dim:
            raise ConfigurationError(
                f"{path}: speaker {name!r} has latents {tuple(latent.shape)} and embedding "
                f"{tuple(embedding.shape)}, expected (1, N, {model_dim}) and "
                f"(1, {d_vector_dim}, 1): the file is from another model than model.pth"
            )
    return loaded


def _expected_keys(name: str) -> str:
    """A state_dict key as coqui's model names it (weight norm as a parametrization)."""
    if name.endswith(".weight_g"):
        return name[: -len("weight_g")] + "parametrizations.weight.original0"
    if name.endswith(".weight_v"):
        return name[: -len("weight_v")] + "parametrizations.weight.original1"
    return name


# Built at load time from the GPT's own tensors (coqui's init_gpt_for_inference): not in
# the published file, though XTTS v1 files carried them.
_BUILT_AT_LOAD = ("gpt.gpt_inference.", "gpt.gpt.wte.")


def layout_problem(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> str | None:
    """The first way ``weights`` differ from the model's tensors (a key or a shape)."""

    def shape(tensor: Any) -> str:
        return "(" + ", ".join(str(int(n)) for n in tensor.shape) + ")"

    given = {_expected_keys(key.removeprefix("xtts.")): value for key, value in weights.items()}
    for key, tensor in expected.items():
        if key.startswith(_BUILT_AT_LOAD):
            continue
        if key not in given:
            return f"key {key!r} is missing (expected shape {shape(tensor)})"
        if tuple(given[key].shape) != tuple(tensor.shape):
            return f"key {key!r} has shape {shape(given[key])}, expected {shape(tensor)}"
    ignored = ("torch_mel_spectrogram_style_encoder", "torch_mel_spectrogram_dvae", "dvae")
    for key in given:
        if key not in expected and key.split(".")[0] not in ignored:
            if not key.startswith(_BUILT_AT_LOAD):
                return f"unexpected key {key!r}"
    return None


# --------------------------------------------------------------------------------------
# The loaded model: once per process, per folder and device
# --------------------------------------------------------------------------------------


@dataclass
class LoadedXtts:
    """One loaded XTTS model and what it was loaded from."""

    model: Any  # TTS.tts.models.xtts.Xtts
    config: Any  # XttsConfig
    files: dict[str, Path]
    device: str
    languages: frozenset[str]
    speakers: dict[str, dict[str, Any]]
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def content_key(self) -> str:
        """SHA-256 over config.json, model.pth and vocab.json (computed once per process)."""
        return content_digest(
            [self.files["config.json"], self.files["model.pth"], self.files["vocab.json"]]
        )


_MODELS: dict[tuple[str, str, int, int], LoadedXtts] = {}
_MODELS_LOCK = threading.Lock()


def load_xtts(model_dir: Path | None, device: str = "cpu") -> LoadedXtts:
    """The XTTS model in ``model_dir`` on ``device``, loaded once per process and shared."""
    files = model_files(model_dir)
    _coqui()
    device = check_device(device)
    stat = files["model.pth"].stat()
    key = (str(files["model.pth"].resolve()), device, stat.st_mtime_ns, stat.st_size)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _load(files, device)
            _MODELS[key] = loaded
        return loaded


def _load(files: dict[str, Path], device: str) -> LoadedXtts:
    config = read_config(files["config.json"])
    read_vocab(files["vocab.json"])
    args = config.model_args
    speakers = read_speakers(
        files["speakers_xtts.pth"], int(args.gpt_n_model_channels), int(args.d_vector_dim)
    )
    weights = read_checkpoint(files["model.pth"])
    model = _model_class()(config)
    model.preloaded = weights
    try:
        model.load_checkpoint(
            config,
            checkpoint_dir=str(files["model.pth"].parent),
            vocab_path=str(files["vocab.json"]),
            speaker_file_path=str(files["speakers_xtts.pth"]),
            eval=True,
            use_deepspeed=False,
        )
    except RuntimeError as exc:  # load_state_dict: keys or shapes differ from the config
        problem = layout_problem(weights, model.state_dict()) or _first_line(exc)
        raise ConfigurationError(
            f"{files['model.pth']} does not fit {files['config.json']} and "
            f"{files['vocab.json']}: {problem}; the files come from different XTTS "
            "releases or were modified: download all of coqui/XTTS-v2 again"
        ) from None
    finally:
        model.preloaded = None  # the tensors now live in the model
    model.to(device)
    listed = {str(code) for code in (config.languages or [])}
    vocab = model.tokenizer.tokenizer.get_vocab()
    languages = frozenset(
        code
        for code, xtts_code in XTTS_LANGUAGES.items()
        if (not listed or xtts_code in listed) and f"[{xtts_code}]" in vocab
    )
    if not languages:
        raise ConfigurationError(
            f"{files['vocab.json']} has none of the language tokens "
            f"{', '.join(f'[{c}]' for c in XTTS_LANGUAGES.values())}; use XTTS-v2's vocab.json"
        )
    _LOGGER.info("Loaded XTTS from %s on %s", files["model.pth"].parent, device)
    return LoadedXtts(model, config, files, device, languages, speakers)


# --------------------------------------------------------------------------------------
# The avatar's voice: conditioning latents, computed once and kept beside the sample
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceLatents:
    """What XTTS speaks a voice from: the GPT's conditioning latents and the decoder's
    speaker embedding."""

    gpt_cond_latent: Any  # torch.Tensor (1, 32, model_dim)
    speaker_embedding: Any  # torch.Tensor (1, d_vector_dim, 1)


def latents_path(loaded: LoadedXtts, sample_path: Path) -> Path:
    """Where the latents of ``sample_path`` for this model are cached: the avatar's folder."""
    key = hashlib.sha256(
        f"{file_digest(sample_path)}:{loaded.content_key}".encode()
    ).hexdigest()
    return sample_path.parent / f"{LATENTS_PREFIX}{key[:16]}.pt"


def compute_latents(loaded: LoadedXtts, sample_path: Path) -> VoiceLatents:
    """The voice sample's latents, as coqui's ``get_conditioning_latents`` computes them
    (its audio reader needs torchcodec; the sample is decoded here with FFmpeg instead)."""
    import torch

    from ..media.audio import decode_audio

    config = loaded.config
    max_s = float(config.max_ref_len or 30)
    pcm = decode_audio(sample_path, CONDITIONING_RATE_HZ, max_s=max_s)
    if len(pcm) < MIN_REFERENCE_S * CONDITIONING_RATE_HZ:
        raise ConfigurationError(
            f"{sample_path} has {len(pcm) / CONDITIONING_RATE_HZ:.2f} s of audio; XTTS needs "
            "a voice sample of a few seconds: register the avatar again with a longer one"
        )
    audio = torch.from_numpy(np.clip(pcm, -1.0, 1.0))[None].to(loaded.device)
    model = loaded.model
    with loaded.lock, torch.inference_mode():
        embedding = model.get_speaker_embedding(audio, CONDITIONING_RATE_HZ)
        latent = model.get_gpt_cond_latents(
            audio,
            CONDITIONING_RATE_HZ,
            length=int(config.gpt_cond_len),
            chunk_length=int(config.gpt_cond_chunk_len),
        )
    return VoiceLatents(latent.cpu(), embedding.cpu())


def _read_cached(path: Path, loaded: LoadedXtts) -> VoiceLatents | None:
    """Latents cached earlier, or ``None`` when absent or not for this model's sizes."""
    import torch

    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        latent, embedding = saved["gpt_cond_latent"], saved["speaker_embedding"]
        args = loaded.config.model_args
        if latent.shape[-1] != args.gpt_n_model_channels or embedding.shape[1] != args.d_vector_dim:
            raise ValueError("sizes of another model")
    except Exception as exc:  # a torn write, an edited file: computed again
        _LOGGER.warning("ignoring cached XTTS latents %s (%s)", path, _first_line(exc))
        return None
    return VoiceLatents(latent, embedding)


def _write_cached(path: Path, latents: VoiceLatents) -> None:
    """Save the latents atomically; a read-only avatar folder only costs a recomputation."""
    import torch

    try:
        handle, tmp = tempfile.mkstemp(prefix=".xtts-", suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            torch.save(
                {
                    "gpt_cond_latent": latents.gpt_cond_latent,
                    "speaker_embedding": latents.speaker_embedding,
                },
                tmp,
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        _LOGGER.warning("cannot cache XTTS latents in %s (%s)", path.parent, _first_line(exc))


def voice_latents(loaded: LoadedXtts, reference: ReferenceVoice | None) -> VoiceLatents:
    """The latents for ``reference`` (cached beside its sample), or without one the first
    studio speaker of ``speakers_xtts.pth``."""
    if reference is None:
        name, entry = next(iter(loaded.speakers.items()))
        _LOGGER.info("XTTS without a voice sample speaks as studio speaker %s", name)
        return VoiceLatents(entry["gpt_cond_latent"], entry["speaker_embedding"])
    sample = Path(reference.sample_path)
    path = latents_path(loaded, sample)
    cached = _read_cached(path, loaded)
    if cached is not None:
        return cached
    latents = compute_latents(loaded, sample)
    _write_cached(path, latents)
    _LOGGER.info("XTTS latents of %s's voice computed and cached in %s", reference.name, path)
    return latents


# --------------------------------------------------------------------------------------
# The synthesizer
# --------------------------------------------------------------------------------------


def split_text(text: str, language: str) -> list[str]:
    """``text`` in pieces XTTS reads in one generation: sentences, then wrapped lines."""
    limit = CHAR_LIMITS.get(language, 250)
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= limit:
            pieces[-1] = f"{pieces[-1]} {sentence}"
        elif len(sentence) <= limit:
            pieces.append(sentence)
        else:
            pieces += textwrap.wrap(sentence, width=limit, break_on_hyphens=False)
    return pieces


class XttsSynthesizer:
    """XTTS-v2 speaking in an avatar's voice: en, es and zh, streamed, no phoneme timings."""

    name = "xtts"
    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(
        self,
        model_dir: Path | None,
        reference: ReferenceVoice | None = None,
        *,
        device: str = "cpu",
        stream_chunk_tokens: int = STREAM_CHUNK_TOKENS,
        max_audio_tokens: int | None = None,
    ) -> None:
        """Check the folder and the device; the model loads on first use (or ``warm_up``).

        ``max_audio_tokens`` caps one generation below the model's own limit (a benchmark
        with random weights, which never choose to stop, sets it to a sentence's length).
        """
        self.files = model_files(model_dir)
        _coqui()
        self.device = check_device(device)
        self.reference = reference
        self.stream_chunk_tokens = max(int(stream_chunk_tokens), 1)
        self.max_audio_tokens = max_audio_tokens
        self._latents: VoiceLatents | None = None
        self._latents_lock = threading.Lock()
        # Every instance is one voice (the avatar's): the registry keeps one per reference.
        self.capabilities = SynthCapabilities(
            languages=frozenset(XTTS_LANGUAGES), timings=False, reference_voice=True
        )

    @property
    def loaded(self) -> LoadedXtts:
        """The shared model (loaded on first use)."""
        loaded = load_xtts(self.files["model.pth"].parent, self.device)
        if loaded.languages != self.capabilities.languages:
            self.capabilities = SynthCapabilities(
                languages=loaded.languages, timings=False, reference_voice=True
            )
        return loaded

    @property
    def voice_id(self) -> str:
        """``xtts:``, the model's content key and the voice sample's (or the studio voice)."""
        voice = file_digest(self.reference.sample_path) if self.reference else "studio"
        model = content_digest([self.files[name] for name in MODEL_FILES])
        return f"xtts:{model}:{voice}"

    def languages(self) -> frozenset[str]:
        """``en``, ``es`` and ``zh`` (those the model's vocabulary has)."""
        return self.capabilities.languages

    def latents(self) -> VoiceLatents:
        """This voice's latents: from the avatar's folder, or computed once and saved there."""
        with self._latents_lock:
            if self._latents is None:
                self._latents = voice_latents(self.loaded, self.reference)
            return self._latents

    def warm_up(self) -> None:
        """Load the model and this voice's latents (no speech: a sentence costs seconds)."""
        self.latents()

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text`` whole: mono float32 at 24 kHz, no phoneme or word timings."""
        pieces = list(self.synthesize_stream(text, language, turn_id=turn_id))
        pcm = np.concatenate([piece.pcm for piece in pieces]).astype(np.float32)
        return Speech(turn_id, pieces[0].text, pieces[0].language, pcm, SAMPLE_RATE_HZ)

    def synthesize_stream(self, text: str, language: str, turn_id: int = 0) -> Iterator[Speech]:
        """Speak ``text`` in pieces as they are made (about 0.9 s each). The first piece
        carries the text; the others carry ``""``. Closing the iterator stops the model."""
        code = normalize_language_code(language)
        spoken = normalize_for_speech(text)
        if not spoken:
            raise InvalidTextError("Nothing to say: the text is empty.")
        loaded = self.loaded
        if code not in loaded.languages:
            raise UnsupportedLanguageError(
                f"xtts here speaks {', '.join(sorted(loaded.languages))}, not '{language}'; "
                "set AVATAR_TTS_OTHER=espeak for other languages"
            )
        latents = self.latents()
        config = loaded.config
        model = loaded.model
        first = True
        # The lock is held while the caller reads the pieces (the model is busy); coqui's
        # inference_stream enters inference mode only while it runs, not between pieces.
        with loaded.lock:
            default_limit = model.gpt.max_gen_mel_tokens
            if self.max_audio_tokens is not None:
                model.gpt.max_gen_mel_tokens = min(default_limit, int(self.max_audio_tokens))
            try:
                for piece in split_text(spoken, code):
                    chunks = model.inference_stream(
                        piece,
                        XTTS_LANGUAGES[code],
                        latents.gpt_cond_latent,
                        latents.speaker_embedding,
                        stream_chunk_size=self.stream_chunk_tokens,
                        temperature=float(config.temperature),
                        length_penalty=float(config.length_penalty),
                        repetition_penalty=float(config.repetition_penalty),
                        top_k=int(config.top_k),
                        top_p=float(config.top_p),
                    )
                    for chunk in chunks:
                        pcm = np.clip(chunk.detach().float().cpu().numpy(), -1.0, 1.0)
                        if not pcm.size:
                            continue
                        yield Speech(
                            turn_id,
                            spoken if first else "",
                            code,
                            pcm.astype(np.float32).reshape(-1),
                            SAMPLE_RATE_HZ,
                        )
                        first = False
            finally:
                model.gpt.max_gen_mel_tokens = default_limit
        if first:  # the model stopped at once: a short silence, so callers still get audio
            silence = np.zeros(SAMPLE_RATE_HZ // 10, np.float32)
            yield Speech(turn_id, spoken, code, silence, SAMPLE_RATE_HZ)
