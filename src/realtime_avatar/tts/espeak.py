"""Speech in every language espeak-ng knows, through ctypes on the library that
``espeakng_loader`` ships (espeak-ng 1.52, which speaks real Mandarin).

espeak-ng is one global engine per process: it is initialised once, its voice is global,
and every call into it holds ``_LOCK``. Synthesis runs in synchronous mode: the library
calls ``_on_synth`` with each block of samples and the events (words, IPA phonemes) that
fall in it, and ``espeak_Synth`` returns when the text is spoken.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigurationError, InvalidTextError, UnsupportedLanguageError
from ..frames import PhonemeTiming, Speech, WordTiming
from ..text.chunker import normalize_for_speech
from ..text.language import normalize_language_code, unsupported_message
from .base import SynthCapabilities

_LOGGER = logging.getLogger(__name__)

PAUSE = "_"  # the phoneme that stands for silence in every synthesizer
DEFAULT_RATE_WPM = 160  # espeak's 175 sounds hurried with its robotic prosody

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7

# Voices we prefer where several speak one code: American English to match Piper's voice.
_PREFERRED_VOICES = {"en": "gmw/en-US", "es": "roa/es", "zh": "sit/cmn"}
_EDGE_PUNCTUATION = "\"'“”‘’«»()[]{}.,;:!?¡¿…-—–。，、；：！？「」『』（）"


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT``: what happened, where in the text and where in the audio."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` as ``espeak_ListVoices`` returns it."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)* then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class _RawEvent:
    kind: int
    time_ms: int
    text_position: int
    length: int
    phoneme: str


@dataclass
class _Engine:
    """The process's one espeak-ng: library, sample rate, voices, and the current capture."""

    lib: ctypes.CDLL
    sample_rate_hz: int
    version: str
    voice_by_code: dict[str, str]
    voice_by_tag: dict[str, str]
    callback: object = None  # the ctypes thunk; it must outlive every synthesis
    current_voice: str | None = None
    blocks: list[np.ndarray] = field(default_factory=list)
    events: list[_RawEvent] = field(default_factory=list)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _list_voices(lib: ctypes.CDLL) -> list[tuple[str, list[tuple[int, str]]]]:
    """(identifier, [(priority, language tag)]) for every installed voice, in espeak's order."""
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    table = lib.espeak_ListVoices(None)
    voices = []
    index = 0
    while table[index]:
        voice = table[index].contents
        index += 1
        identifier = (voice.identifier or b"").decode("utf-8", "replace")
        if not identifier or identifier.startswith("mb/"):
            continue  # mbrola voices need a second synthesizer we do not ship
        tags = []
        address = voice.languages
        while address:
            priority = ctypes.c_ubyte.from_address(address).value
            if priority == 0:
                break
            tag = ctypes.string_at(address + 1)
            tags.append((priority, tag.decode("utf-8", "replace").lower()))
            address += len(tag) + 2
        voices.append((identifier, tags))
    return voices


def _index_voices(
    voices: list[tuple[str, list[tuple[int, str]]]],
) -> tuple[dict[str, str], dict[str, str]]:
    """Best voice per language code (``zh``) and per full tag (``pt-br``)."""
    by_code: dict[str, tuple[tuple[int, int, int], str]] = {}
    by_tag: dict[str, tuple[tuple[int, int], str]] = {}
    for order, (identifier, tags) in enumerate(voices):
        for priority, tag in tags:
            code = normalize_language_code(tag)
            code_score = (0 if tag == code else 1, priority, order)
            if code not in by_code or code_score < by_code[code][0]:
                by_code[code] = (code_score, identifier)
            tag_score = (priority, order)
            if tag not in by_tag or tag_score < by_tag[tag][0]:
                by_tag[tag] = (tag_score, identifier)
    voice_by_code = {code: identifier for code, (_, identifier) in by_code.items()}
    identifiers = {identifier for identifier, _ in voices}
    for code, identifier in _PREFERRED_VOICES.items():
        if identifier in identifiers:
            voice_by_code[code] = identifier
    return voice_by_code, {tag: identifier for tag, (_, identifier) in by_tag.items()}


def _engine_locked() -> _Engine:
    """The initialised engine; the caller holds ``_LOCK``."""
    global _ENGINE
    if _ENGINE is not None:
        return _ENGINE
    try:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (ImportError, OSError, RuntimeError) as error:
        raise ConfigurationError(
            f"espeak-ng cannot be loaded ({error}); reinstall the espeakng-loader package."
        ) from error

    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p

    options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
    sample_rate_hz = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), options
    )
    if sample_rate_hz <= 0:
        raise ConfigurationError(
            f"espeak-ng failed to start with data at {data_path}; reinstall espeakng-loader."
        )
    version = (lib.espeak_Info(None) or b"unknown").decode("utf-8", "replace")
    voice_by_code, voice_by_tag = _index_voices(_list_voices(lib))
    engine = _Engine(lib, sample_rate_hz, version, voice_by_code, voice_by_tag)

    def on_synth(wav: ctypes._Pointer, count: int, events: ctypes._Pointer) -> int:
        # Runs inside espeak_Synth on the calling thread, which holds _LOCK.
        try:
            if wav and count > 0:
                engine.blocks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            index = 0
            while events[index].type != _EVENT_LIST_TERMINATED:
                event = events[index]
                index += 1
                if event.type not in (_EVENT_WORD, _EVENT_PHONEME):
                    continue
                phoneme = ""
                if event.type == _EVENT_PHONEME:
                    phoneme = event.id.string.decode("utf-8", "replace")
                engine.events.append(
                    _RawEvent(
                        event.type,
                        event.audio_position,
                        event.text_position,
                        event.length,
                        phoneme,
                    )
                )
        except Exception:  # an exception cannot cross into C: log it, stop this synthesis
            _LOGGER.exception("espeak-ng callback failed")
            return 1
        return 0

    engine.callback = _SYNTH_CALLBACK(on_synth)
    lib.espeak_SetSynthCallback(engine.callback)
    _ENGINE = engine
    _LOGGER.info(
        "espeak-ng %s ready: %d Hz, %d language codes", version, sample_rate_hz, len(voice_by_code)
    )
    return engine


def espeak_languages() -> frozenset[str]:
    """Every language code espeak-ng can speak (``en``, ``es``, ``zh``, ``fr``…)."""
    with _LOCK:
        return frozenset(_engine_locked().voice_by_code)


def _timings(
    events: list[_RawEvent], text: str, duration_s: float
) -> tuple[list[PhonemeTiming], list[WordTiming]]:
    """Phoneme and word timings from espeak's events, covering ``[0, duration_s]`` exactly."""
    # (phoneme, start_s, word index or -1)
    marks: list[tuple[str, float, int]] = []
    spans: list[list[int]] = []  # [start char, end char] per word, 0-based
    last_time = 0.0
    for event in events:
        time_s = min(max(event.time_ms / 1000.0, last_time), duration_s)
        last_time = time_s
        if event.kind == _EVENT_WORD:
            start = max(event.text_position - 1, 0)
            end = start + max(event.length, 1)
            if spans and start < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)  # "3.5" speaks as three words
            else:
                spans.append([start, end])
        elif not (event.phoneme.startswith("(") and event.phoneme.endswith(")")):
            # "(en)" / "(cmn)" mark a switch of language for a foreign word, not a sound.
            marks.append((event.phoneme or PAUSE, time_s, len(spans) - 1))

    # Each phoneme lasts until the next one starts; silence before the first.
    segments: list[list] = []  # [phoneme, start, end, word]
    if not marks or marks[0][1] > 0.0:
        segments.append([PAUSE, 0.0, marks[0][1] if marks else duration_s, -1])
    for index, (phoneme, start_s, owner) in enumerate(marks):
        end_s = marks[index + 1][1] if index + 1 < len(marks) else duration_s
        segments.append([phoneme, start_s, end_s, owner if phoneme != PAUSE else -1])

    merged: list[list] = []
    for index, segment in enumerate(segments):
        if segment[2] <= segment[1] and merged:
            continue  # zero length: a boundary marker with nothing to show
        if segment[0] == PAUSE and merged:
            previous = merged[-1]
            following = next((s for s in segments[index + 1 :] if s[0] != PAUSE), None)
            inside_word = (
                previous[0] != PAUSE
                and following is not None
                and following[3] == previous[3]
                and segment[1] < following[1]
            )
            if previous[0] == PAUSE or inside_word:
                previous[2] = segment[2]  # a syllable break inside a word is not silence
                continue
        merged.append(list(segment))
    if merged:
        merged[-1][2] = duration_s

    phonemes = [PhonemeTiming(p, s, e) for p, s, e, _ in merged]
    words = []
    for word_index, (first_char, end_char) in enumerate(spans):
        # A WORD event's length is 1 for a Chinese word of several characters ("你好"):
        # the word runs on through letters up to where the next word starts.
        limit = spans[word_index + 1][0] if word_index + 1 < len(spans) else len(text)
        while end_char < limit and text[end_char].isalnum():
            end_char += 1
        own = [s for s in merged if s[3] == word_index]
        spelled = text[first_char:end_char].strip().strip(_EDGE_PUNCTUATION)
        if own and spelled:
            words.append(WordTiming(spelled, own[0][1], own[-1][2]))
    return phonemes, words


class EspeakSynthesizer:
    """Any of espeak-ng's ~100 languages: robotic, but a few ms a sentence."""

    name = "espeak"

    def __init__(self, rate_wpm: int = DEFAULT_RATE_WPM) -> None:
        """Start espeak-ng (once per process) and remember the speaking rate."""
        self.rate_wpm = rate_wpm
        with _LOCK:
            engine = _engine_locked()
        self.sample_rate_hz = engine.sample_rate_hz
        self.capabilities = SynthCapabilities(
            languages=frozenset(engine.voice_by_code), timings=True, reference_voice=False
        )
        # Which voice speaks each language is fixed by the library version and its voice
        # table (with our preferences): both go into the key, the language is keyed apart.
        table = sorted(engine.voice_by_code.items()) + sorted(engine.voice_by_tag.items())
        voices = hashlib.sha256(repr(table).encode()).hexdigest()[:16]
        self.voice_id = f"espeak-ng:{engine.version}:{voices}:{rate_wpm}wpm"

    def languages(self) -> frozenset[str]:
        """Every language code espeak-ng speaks."""
        return self.capabilities.languages

    def warm_up(self) -> None:
        """Nothing to load beyond the constructor: espeak starts in milliseconds."""

    def voice_for(self, language: str) -> str:
        """The espeak voice identifier used for ``language`` (``zh`` → ``sit/cmn``)."""
        with _LOCK:
            engine = _engine_locked()
        tag = language.strip().lower().replace("_", "-")
        if tag in engine.voice_by_tag and tag not in engine.voice_by_code:
            return engine.voice_by_tag[tag]  # a regional variant such as pt-br or es-419
        code = normalize_language_code(language)
        if code in engine.voice_by_code:
            return engine.voice_by_code[code]
        raise UnsupportedLanguageError(unsupported_message(language, sorted(engine.voice_by_code)))

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text`` in ``language``; returns mono float32 PCM with timings."""
        spoken = normalize_for_speech(text)
        if not spoken:
            raise InvalidTextError("Nothing to say: the text is empty.")
        voice = self.voice_for(language)
        encoded = spoken.encode("utf-8")
        with _LOCK:
            engine = _engine_locked()
            if engine.current_voice != voice:
                if engine.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ConfigurationError(f"espeak-ng could not load its voice {voice}.")
                engine.current_voice = voice
            # Parameters are global too: set the rate every time, another caller may differ.
            engine.lib.espeak_SetParameter(_PARAM_RATE, self.rate_wpm, 0)
            engine.blocks = []
            engine.events = []
            status = engine.lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            blocks, events = engine.blocks, engine.events
            engine.blocks, engine.events = [], []
        if status != 0:
            raise ConfigurationError(f"espeak-ng failed to speak (error {status}).")

        pcm16 = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
        pcm = (pcm16.astype(np.float32) / 32768.0).reshape(-1)
        duration_s = len(pcm) / engine.sample_rate_hz
        phonemes, words = _timings(events, spoken, duration_s) if len(pcm) else ([], [])
        return Speech(
            turn_id=turn_id,
            text=spoken,
            language=normalize_language_code(language),
            pcm=pcm,
            sample_rate_hz=engine.sample_rate_hz,
            phonemes=phonemes,
            words=words,
        )
