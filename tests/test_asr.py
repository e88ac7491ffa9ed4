"""Speech recognition with the real shipped models: Whisper tiny.en, Whisper base, PocketSphinx."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.constants import ASR_RATE_HZ
from realtime_avatar.errors import ConfigurationError, UnsupportedLanguageError
from realtime_avatar.evaluate.intelligibility import error_rate
from realtime_avatar.frames import Transcript
from realtime_avatar.media.audio import resample
from realtime_avatar.settings import Settings, get_settings

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send me the weather forecast for tomorrow morning.",
    "I would like to order a large pizza with mushrooms and olives.",
]
LONG_ENGLISH = (
    "Last summer we drove along the coast for three weeks, stopping in small towns "
    "to eat fresh fish and to watch the sun go down over the ocean every evening."
)
SPANISH = "Buenos días, ¿cómo estás? Me gustaría reservar una mesa para dos personas esta noche."
# espeak-ng's Mandarin is robotic; Whisper base hears most such sentences as Thai or English.
# This one it reliably hears as Mandarin, which is what checks the zh path end to end.
MANDARIN = "我想喝一杯热茶。"
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
CHUNK = 320  # 20 ms, as the live session feeds audio


def _speak_16k(text: str, language: str) -> np.ndarray:
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer(language).synthesize(text, language)
    return resample(speech.pcm, speech.sample_rate_hz, ASR_RATE_HZ)


def _padded(pcm: np.ndarray, lead_s: float = 0.3, tail_s: float = 0.5) -> np.ndarray:
    """As the session hands audio over: a little pre-roll, and the silence the VAD waited."""
    return np.concatenate(
        [
            np.zeros(int(lead_s * ASR_RATE_HZ), np.float32),
            pcm,
            np.zeros(int(tail_s * ASR_RATE_HZ), np.float32),
        ]
    )


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _wer(reference: str, hypothesis: str) -> float:
    return error_rate(reference, hypothesis, "en").rate


def _stream(utterance, pcm: np.ndarray) -> tuple[list[Transcript], Transcript]:  # type: ignore[no-untyped-def]
    partials = []
    for i in range(0, len(pcm), CHUNK):
        partial = utterance.feed(pcm[i : i + CHUNK])
        if partial is not None:
            partials.append(partial)
    return partials, utterance.finish()


@pytest.fixture(scope="module")
def english() -> list[np.ndarray]:
    return [_speak_16k(text, "en") for text in ENGLISH]


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    from realtime_avatar.asr.registry import get_recognizer

    return get_recognizer("whisper-tiny-en", get_settings())


@pytest.fixture(scope="session")
def asr_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose data dir receives the multilingual model, joined once per run."""
    return get_settings(data_dir=tmp_path_factory.mktemp("asr-data"))


@pytest.fixture(scope="session")
def base_dir(asr_settings: Settings) -> Path:
    from realtime_avatar.asr.multilingual import ensure_multilingual_model

    return ensure_multilingual_model(asr_settings.data_dir)


@pytest.fixture(scope="module")
def base(asr_settings: Settings, base_dir: Path):  # type: ignore[no-untyped-def]
    from realtime_avatar.asr.registry import get_recognizer

    return get_recognizer("whisper-base", asr_settings)


# -- Whisper tiny.en ------------------------------------------------------------------------


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_tiny_en_transcribes_piper_speech(tiny, english: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    assert tiny.languages() == frozenset({"en"})
    errors = 0.0
    for text, pcm in zip(ENGLISH, english, strict=True):
        _, final = _stream(tiny.start(turn_id=3), _padded(pcm))
        assert final.final and final.turn_id == 3 and final.language == "en"
        errors += _wer(text, final.text) * len(_words(text))
    # Piper's prosody is random: allow one more slip than the 3 % measured on average.
    assert errors / sum(len(_words(t)) for t in ENGLISH) < 0.2


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_partials_while_a_long_utterance_is_fed(tiny) -> None:  # type: ignore[no-untyped-def]
    pcm = _padded(_speak_16k(LONG_ENGLISH, "en"))
    utterance = tiny.start(turn_id=1)
    partials, final = _stream(utterance, pcm)
    assert len(pcm) / ASR_RATE_HZ > 6
    assert len(partials) >= 4
    assert all(not p.final and p.text and p.turn_id == 1 for p in partials)
    # Partials grow with the audio and agree with the final on how it began.
    assert len(_words(partials[-1].text)) > len(_words(partials[0].text))
    assert _words(final.text)[:3] == _words(partials[-1].text)[:3]
    assert _wer(LONG_ENGLISH, final.text) < 0.15
    # The partial work stays bounded: well under real time.
    assert utterance.decode_seconds < 0.8 * len(pcm) / ASR_RATE_HZ


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_final_after_partials_matches_a_one_shot_decode(tiny, english) -> None:  # type: ignore[no-untyped-def]
    pcm = _padded(english[1])
    utterance = tiny.start(turn_id=2)
    partials, final = _stream(utterance, pcm)
    assert partials
    # The trailing silence let feed() decode ahead; finish() only had to hand it over.
    assert utterance.final_reused_decode
    # Piper's speech differs run to run and the settled decode saw a shorter padding than
    # the one-shot decode; Whisper may differ by a word at the edges, not more.
    assert _wer(" ".join(_words(tiny.transcribe(pcm).text)), final.text) <= 0.2
    assert utterance.finish() is final  # idempotent
    with pytest.raises(RuntimeError):
        utterance.feed(pcm[:CHUNK])


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_final_without_trailing_silence_decodes_everything(tiny, english) -> None:  # type: ignore[no-untyped-def]
    # Cut right after the last loud 10 ms: Piper's own trailing quiet could let it settle.
    speech = english[2]
    hop = ASR_RATE_HZ // 100
    levels = np.sqrt(np.mean(speech[: len(speech) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    last_loud = int(np.flatnonzero(levels > 10 ** (-40 / 20))[-1])
    pcm = _padded(speech[: (last_loud + 1) * hop], tail_s=0.0)
    utterance = tiny.start(turn_id=4)
    _, final = _stream(utterance, pcm)
    assert not utterance.final_reused_decode
    assert _wer(ENGLISH[2], final.text) < 0.2


@pytest.mark.slow  # loads Whisper tiny.en
def test_silence_gives_an_empty_final(tiny) -> None:  # type: ignore[no-untyped-def]
    utterance = tiny.start(turn_id=5)
    partials, final = _stream(utterance, np.zeros(ASR_RATE_HZ, np.float32))
    assert partials == [] and final.text == "" and final.language == "en"
    assert tiny.start(turn_id=6).finish().text == ""


@pytest.mark.slow  # loads Whisper tiny.en
def test_english_only_model_refuses_other_languages(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedLanguageError):
        tiny.start(turn_id=0, language="es")
    assert tiny.start(turn_id=0, language="en-US") is not None


# -- multilingual Whisper base ---------------------------------------------------------------


@pytest.mark.slow  # joins and hashes Whisper base (~140 MB)
def test_multilingual_model_is_joined_and_verified(base_dir: Path, asr_settings: Settings) -> None:
    from realtime_avatar.asr.multilingual import ensure_multilingual_model

    assert {p.name for p in base_dir.iterdir() if not p.name.startswith(".")} >= {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    assert not list(base_dir.glob("*.tmp")) and not list(base_dir.glob(".*.tmp"))
    digest = hashlib.sha256(base_dir.joinpath("model.bin").read_bytes()).hexdigest()
    assert digest == WHISPER_BASE_SHA256
    # Second call: trusted from its marker, no re-join, same folder.
    mtime = base_dir.joinpath("model.bin").stat().st_mtime_ns
    assert ensure_multilingual_model(asr_settings.data_dir) == base_dir
    assert base_dir.joinpath("model.bin").stat().st_mtime_ns == mtime


@pytest.mark.slow  # reads and hashes the Whisper base parts
def test_a_corrupted_join_is_refused(tmp_path: Path) -> None:
    from realtime_avatar.asr.multilingual import installed_parts, join_model_parts

    (part1, part2), support = installed_parts()
    bad_part2 = tmp_path / "model.bin.part2"
    shutil.copyfile(part2, bad_part2)
    with open(bad_part2, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "whisper-base"
    with pytest.raises(ConfigurationError, match="sha256"):
        join_model_parts([part1, bad_part2], support, target)
    assert not (target / "model.bin").exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # joins and hashes Whisper base
def test_a_corrupted_model_on_disk_is_replaced(tmp_path: Path, base_dir: Path) -> None:
    from realtime_avatar.asr.multilingual import ensure_model_dir, installed_parts

    target = tmp_path / "whisper-base"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(base_dir / name, target / name)
    data = bytearray(base_dir.joinpath("model.bin").read_bytes())
    data[12345] ^= 0xFF
    target.joinpath("model.bin").write_bytes(bytes(data))
    parts, support = installed_parts()
    ensure_model_dir(target, parts, support)
    digest = hashlib.sha256(target.joinpath("model.bin").read_bytes()).hexdigest()
    assert digest == WHISPER_BASE_SHA256


@pytest.mark.slow  # Whisper base on Piper and espeak speech
def test_base_recognises_english_spanish_and_mandarin(base, english) -> None:  # type: ignore[no-untyped-def]
    assert base.languages() == frozenset({"en", "es", "zh"})
    # English through the streaming path, with detection.
    _, final = _stream(base.start(turn_id=7, language="auto"), _padded(english[0]))
    assert final.language == "en"
    assert _wer(ENGLISH[0], final.text) < 0.15
    spanish = base.transcribe(_padded(_speak_16k(SPANISH, "es")), "auto")
    assert spanish.language == "es", spanish
    mandarin = base.transcribe(_padded(_speak_16k(MANDARIN, "zh")), "auto")
    assert mandarin.language == "zh", mandarin


@pytest.mark.slow  # Whisper base on espeak speech
def test_base_follows_a_given_language(base) -> None:  # type: ignore[no-untyped-def]
    _, final = _stream(base.start(turn_id=8, language="es"), _padded(_speak_16k(SPANISH, "es")))
    assert final.language == "es" and final.text


# -- PocketSphinx --------------------------------------------------------------------------


@pytest.mark.slow  # PocketSphinx on Piper speech
def test_pocketsphinx_gives_english_words(english) -> None:  # type: ignore[no-untyped-def]
    from realtime_avatar.asr.registry import get_recognizer

    sphinx = get_recognizer("pocketsphinx", get_settings())
    assert sphinx.languages() == frozenset({"en"})
    partials, final = _stream(sphinx.start(turn_id=9), _padded(english[0]))
    assert partials and all(not p.final for p in partials)
    assert final.final and final.language == "en" and final.text
    right = set(_words(final.text)) & set(_words(ENGLISH[0]))
    assert len(right) >= len(set(_words(ENGLISH[0]))) // 2
    with pytest.raises(UnsupportedLanguageError):
        sphinx.start(turn_id=9, language="zh")


# -- registry --------------------------------------------------------------------------------


def test_user_model_dir_must_exist_and_hold_a_model(tmp_path: Path) -> None:
    from realtime_avatar.asr.registry import get_recognizer

    settings = get_settings(data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        get_recognizer(f"whisper-dir:{tmp_path / 'missing'}", settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="model.bin"):
        get_recognizer(f"whisper-dir:{tmp_path / 'empty'}", settings)
    with pytest.raises(ConfigurationError, match="AVATAR_ASR_MODEL_DIR"):
        get_recognizer("whisper-dir", settings)
    with pytest.raises(ConfigurationError, match="Unknown speech recognizer"):
        get_recognizer("whisper-huge", settings)


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_user_model_dir_is_used(tmp_path: Path, english) -> None:  # type: ignore[no-untyped-def]
    from realtime_avatar.asr.registry import get_recognizer
    from realtime_avatar.asr.whisper import default_model_dir

    user_dir = tmp_path / "my-model"
    shutil.copytree(default_model_dir(), user_dir)
    recognizer = get_recognizer(f"whisper-dir:{user_dir}", get_settings(data_dir=tmp_path))
    assert recognizer.name == f"whisper-dir:{user_dir.resolve()}"
    assert _wer(ENGLISH[0], recognizer.transcribe(english[0]).text) < 0.15


@pytest.mark.slow  # loads Whisper tiny.en and base
def test_recognizer_for_language(asr_settings: Settings, base_dir: Path) -> None:
    from realtime_avatar.asr.registry import recognizer_for_language

    assert recognizer_for_language("en", asr_settings).name == "whisper-tiny-en"
    for language in ("es", "zh", "auto", "zh-CN"):
        assert recognizer_for_language(language, asr_settings).name == "whisper-base"


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_peek_hears_what_finish_will_say(tiny, english) -> None:  # type: ignore[no-untyped-def]
    pcm = _padded(english[0])
    utterance = tiny.start(turn_id=6)
    for i in range(0, len(pcm), CHUNK):
        utterance.feed(pcm[i : i + CHUNK])
    heard = utterance.peek()
    assert not heard.final and heard.text
    decodes = utterance.decodes
    final = utterance.finish()
    # Nothing was said after the peek: its decode is the final, with no second decode.
    assert final.final and final.text == heard.text
    assert utterance.decodes == decodes and utterance.final_reused_decode


@pytest.mark.slow  # Whisper tiny.en on Piper speech
def test_feeding_after_a_peek_goes_on(tiny, english) -> None:  # type: ignore[no-untyped-def]
    first, second = english[0], english[1]
    utterance = tiny.start(turn_id=7)
    utterance.feed(_padded(first, tail_s=0.3))
    heard = utterance.peek()
    utterance.feed(_padded(second))
    final = utterance.finish()
    # The user went on after the pause: the final hears both sentences.
    assert len(_words(final.text)) > len(_words(heard.text)) + 3


def test_a_looped_short_phrase_keeps_its_first_saying() -> None:
    from realtime_avatar.asr.whisper import _looped_unit

    phrase = [11, 12, 13, 14, 15]
    looped = phrase * 3 + phrase[:2]  # cut by the token budget mid-phrase
    assert _looped_unit(looped, audio_s=0.9) == 5
    # Long enough audio to say it three times: not trimmed (the 30 s retry decides).
    assert _looped_unit(looped, audio_s=4.0) is None
    # Not one phrase over and over.
    assert _looped_unit([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 0.5) is None
