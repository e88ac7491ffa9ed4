"""Process-wide services of the live server: models loaded once, sessions built per peer."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..asr.registry import recognizer_for_language
from ..avatars.registry import Avatar, ensure_default_avatar, list_avatars, load_avatar
from ..dialogue.registry import FALLBACK_LINES, create_responder
from ..pipeline.avsync import AVSynth
from ..pipeline.matching import build_matcher
from ..pipeline.session import ConversationSession, SessionStages, TurnTimings
from ..render.registry import create_renderer
from ..settings import Settings
from ..store.db import Store
from ..text.language import normalize_language_code
from ..tts.base import Synthesizer
from ..tts.registry import get_synthesizer
from ..vad.registry import get_vad
from ..voice.base import VoiceMatcher
from . import metrics

log = logging.getLogger(__name__)

DIALOGUE_BACKENDS = ("persona", "openai", "llama-cpp")
LANGUAGES = ("auto", "en", "es", "zh")


@dataclass
class LiveSession:
    """A conversation session and its id in the store."""

    session_id: str
    session: ConversationSession


class LiveServices:
    """Loads models once, keeps the store, and builds one conversation per peer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(Path(settings.data_dir).expanduser() / "avatar.db")
        self._avatars: dict[str, Avatar] = {}
        self._matchers: dict[tuple[str, str, str], VoiceMatcher] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the store."""
        self.store.close()

    def ensure_default(self) -> None:
        """Make the default avatar if this data directory has none."""
        ensure_default_avatar(self.settings)

    def warm_up(self) -> None:
        """Load every default model now so the first visitor does not wait for it."""
        self.ensure_default()
        avatar = self._avatar("default")
        synth = get_synthesizer("en", self.settings)
        warm = getattr(synth, "warm_up", None)
        if callable(warm):
            warm()
        self._matcher(avatar, synth, "en")
        for language in dict.fromkeys(("en", self.settings.language)):
            recognizer = recognizer_for_language(language, self.settings)
            warm_asr = getattr(recognizer, "warm_up", None)
            if callable(warm_asr):
                warm_asr()  # the first decodes of a fresh model run several times slower
        get_vad(settings=self.settings)
        log.info("models warm")

    def options(self) -> dict[str, Any]:
        """What the page may choose from."""
        return {
            "avatars": list_avatars(self.settings),
            "languages": list(LANGUAGES),
            "dialogue": list(DIALOGUE_BACKENDS),
            "default_dialogue": self.settings.dialogue,
            "default_language": self.settings.language,
        }

    def _avatar(self, name: str) -> Avatar:
        with self._lock:
            if name not in self._avatars:
                self._avatars[name] = load_avatar(name, settings=self.settings)
            return self._avatars[name]

    def _matcher(self, avatar: Avatar, synth: Synthesizer, language: str) -> VoiceMatcher:
        key = (avatar.name, synth.name, language)
        with self._lock:
            matcher = self._matchers.get(key)
        if matcher is None:
            matcher = build_matcher(self.settings, avatar, synth, language)
            with self._lock:
                self._matchers[key] = matcher
        return matcher

    async def open_session(
        self,
        avatar_name: str,
        language: str | None,
        dialogue: str | None,
        emit: Callable[[dict[str, Any]], None],
    ) -> LiveSession:
        """Build a conversation for one peer (heavy parts in a worker thread)."""
        language = normalize_language_code(language or self.settings.language)
        if language not in LANGUAGES:
            language = "auto"
        dialogue = dialogue or self.settings.dialogue
        return await asyncio.to_thread(self._build, avatar_name, language, dialogue, emit)

    def _build(
        self, avatar_name: str, language: str, dialogue: str, emit: Callable[[dict[str, Any]], None]
    ) -> LiveSession:
        settings = self.settings
        avatar = self._avatar(avatar_name)
        renderer = create_renderer(settings.renderer, avatar.face_rgb, avatar.landmarks)
        responder = create_responder(dialogue, settings, avatar.persona, avatar.display_name)
        stages = SessionStages(
            vad=get_vad(settings=settings),
            recognizer=recognizer_for_language(language, settings),
            responder=responder,
            synthesizer_for=lambda lang: get_synthesizer(lang, settings),
            matcher_for=lambda synth, lang: self._matcher(avatar, synth, lang),
            fallback_lines=dict(FALLBACK_LINES),
        )
        session_id = self.store.open_session(avatar.name, language, dialogue)

        def on_turn(timing: TurnTimings) -> None:
            stage_ms = timing.stage_ms()
            metrics.observe_turn(stage_ms, timing.interrupted, bool(timing.error))
            record = {
                "turn_id": timing.turn_id,
                "language": timing.language,
                "user_text": timing.user_text,
                "reply_text": timing.reply_text,
                "interrupted": timing.interrupted,
                "error": timing.error,
                **stage_ms,
            }
            try:
                self.store.record_turn(session_id, record)
            except Exception:  # noqa: BLE001 - losing a log row must not end a conversation
                log.exception("could not record turn")

        session = ConversationSession(
            AVSynth(renderer), stages, language=language, on_event=emit, on_turn=on_turn
        )
        return LiveSession(session_id, session)

    def close_session(self, session_id: str, reason: str) -> None:
        """Record the end of a session."""
        self.store.close_session(session_id, reason)
