"""IPA phonemes (as espeak-ng and Piper write them) to mouth shapes."""

from __future__ import annotations

import unicodedata

# (jaw_open, lip_spread, lip_round, lip_press) targets for each class of sound.
SILENCE = (0.0, 0.0, 0.0, 0.0)
BILABIAL = (0.0, 0.0, 0.0, 1.0)
_TABLE: dict[str, tuple[float, float, float, float]] = {
    "p": BILABIAL,
    "b": BILABIAL,
    "m": BILABIAL,
    "ɸ": BILABIAL,
    "β": BILABIAL,
    "f": (0.08, 0.15, 0.0, 0.35),
    "v": (0.08, 0.15, 0.0, 0.35),
    "θ": (0.16, 0.15, 0.0, 0.0),
    "ð": (0.16, 0.15, 0.0, 0.0),
    "t": (0.18, 0.2, 0.0, 0.0),
    "d": (0.18, 0.2, 0.0, 0.0),
    "n": (0.16, 0.2, 0.0, 0.0),
    "l": (0.22, 0.15, 0.0, 0.0),
    "ɾ": (0.2, 0.15, 0.0, 0.0),
    "ɫ": (0.22, 0.1, 0.0, 0.0),
    "s": (0.1, 0.4, 0.0, 0.0),
    "z": (0.1, 0.4, 0.0, 0.0),
    "ɕ": (0.12, 0.3, 0.0, 0.0),
    "ʃ": (0.14, 0.0, 0.55, 0.0),
    "ʒ": (0.14, 0.0, 0.55, 0.0),
    "ʂ": (0.14, 0.0, 0.45, 0.0),
    "ʐ": (0.14, 0.0, 0.4, 0.0),
    "ʈ": (0.16, 0.1, 0.2, 0.0),
    "k": (0.26, 0.05, 0.0, 0.0),
    "g": (0.26, 0.05, 0.0, 0.0),
    "ɡ": (0.26, 0.05, 0.0, 0.0),
    "ŋ": (0.22, 0.05, 0.0, 0.0),
    "x": (0.28, 0.05, 0.0, 0.0),
    "h": (0.35, 0.05, 0.0, 0.0),
    "ɲ": (0.2, 0.2, 0.0, 0.0),
    "ʎ": (0.2, 0.2, 0.0, 0.0),
    "ʝ": (0.18, 0.35, 0.0, 0.0),
    "ɹ": (0.18, 0.0, 0.4, 0.0),
    "r": (0.22, 0.05, 0.15, 0.0),
    "w": (0.08, 0.0, 0.9, 0.0),
    "j": (0.16, 0.45, 0.0, 0.0),
    "ʔ": (0.1, 0.0, 0.0, 0.0),
    "i": (0.2, 0.75, 0.0, 0.0),
    "ɪ": (0.28, 0.55, 0.0, 0.0),
    "y": (0.2, 0.0, 0.8, 0.0),
    "e": (0.42, 0.55, 0.0, 0.0),
    "ɛ": (0.5, 0.45, 0.0, 0.0),
    "æ": (0.72, 0.45, 0.0, 0.0),
    "a": (0.8, 0.2, 0.0, 0.0),
    "ɑ": (0.82, 0.05, 0.05, 0.0),
    "ɐ": (0.6, 0.15, 0.0, 0.0),
    "ʌ": (0.6, 0.1, 0.0, 0.0),
    "ɒ": (0.7, 0.0, 0.35, 0.0),
    "ɔ": (0.55, 0.0, 0.6, 0.0),
    "o": (0.45, 0.0, 0.7, 0.0),
    "ʊ": (0.25, 0.0, 0.7, 0.0),
    "u": (0.2, 0.0, 0.9, 0.0),
    "ɯ": (0.2, 0.35, 0.0, 0.0),
    "ɤ": (0.4, 0.1, 0.0, 0.0),
    "ə": (0.35, 0.1, 0.05, 0.0),
    "ɚ": (0.3, 0.0, 0.3, 0.0),
    "ɜ": (0.4, 0.1, 0.1, 0.0),
    "ɝ": (0.3, 0.0, 0.3, 0.0),
    "ᵻ": (0.25, 0.3, 0.0, 0.0),
    "ɨ": (0.25, 0.3, 0.0, 0.0),
}
_VOWELS = set("iɪyeɛæaɑɐʌɒɔoʊuɯɤəɚɜɝᵻɨ")
_IGNORED = set("ˈˌːˑ.‿|-_0123456789^")


def _strip(phoneme: str) -> str:
    """Drop stress, length, tone and combining marks: only the base letters decide the shape."""
    decomposed = unicodedata.normalize("NFD", phoneme)
    return "".join(
        c
        for c in decomposed
        if c not in _IGNORED and not unicodedata.combining(c) and not c.isspace()
    )


def viseme(phoneme: str) -> tuple[float, float, float, float]:
    """Mouth-shape targets for one phoneme; diphthongs take their first, open part."""
    base = _strip(phoneme)
    if not base:
        return SILENCE
    vowels = [c for c in base if c in _VOWELS]
    if vowels:
        shapes = [_TABLE[c] for c in vowels if c in _TABLE]
        if shapes:
            # A diphthong glides: weight the nucleus (first vowel) more than the glide.
            if len(shapes) == 1:
                return shapes[0]
            first, last = shapes[0], shapes[-1]
            return tuple(0.65 * a + 0.35 * b for a, b in zip(first, last, strict=True))  # type: ignore[return-value]
    for c in base:
        if c in _TABLE:
            return _TABLE[c]
    return (0.18, 0.1, 0.0, 0.0)  # an unknown consonant: a small, neutral opening
