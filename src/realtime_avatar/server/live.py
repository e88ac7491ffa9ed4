"""Process-wide services of the live server: models loaded once, sessions built per peer."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..asr.registry import recognizer_for_language
from ..avatars.registry import Avatar, ensure_default_avatar, list_avatars, load_avatar
from ..constants import ASR_RATE_HZ
from ..dialogue.registry import FALLBACK_LINES, create_responder
from ..engine.conversation import Conversation, EventSink, Stages
from ..engine.endpointing import TurnDecider, make_turn_decider
from ..engine.turns import TurnRecord
from ..engine.voice import AvatarVoice
from ..errors import ConfigurationError
from ..render.registry import create_renderer
from ..settings import Settings
from ..store.db import Store
from ..text.language import normalize_language_code
from ..vad.registry import get_vad
from . import metrics

log = logging.getLogger(__name__)

DIALOGUE_BACKENDS = ("persona", "openai", "llama-cpp")
LANGUAGES = ("auto", "en", "es", "zh")


@dataclass
class LiveSession:
    """A conversation session and its id in the store."""

    session_id: str
    session: Conversation


class LiveServices:
    """Loads models once, keeps the store, and builds one conversation per peer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(Path(settings.data_dir).expanduser() / "avatar.db")
        self._avatars: dict[str, Avatar] = {}
        self._voices: dict[str, AvatarVoice] = {}
        self._decider: TurnDecider | None = None
        self._lock = threading.Lock()
        # SQLite writes leave the event loop on one thread of their own, in order.
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="store")

    def close(self) -> None:
        """Finish pending writes and release the store."""
        self._store_pool.shutdown(wait=True)
        self.store.close()

    def ensure_default(self) -> None:
        """Make the default avatar if this data directory has none."""
        ensure_default_avatar(self.settings)

    def warm_up(self) -> None:
        """Load every default model now so the first visitor does not wait for it."""
        self.ensure_default()
        self._voice(self._avatar("default")).warm_up("en")
        for language in dict.fromkeys(("en", self.settings.language)):
            recognizer = recognizer_for_language(language, self.settings)
            warm_asr = getattr(recognizer, "warm_up", None)
            if callable(warm_asr):
                warm_asr()  # the first decodes of a fresh model run several times slower
        get_vad(settings=self.settings)
        decider = self._turn_decider()
        if decider is not None:  # the prosody model's first run is several times slower
            decider.decide("Hello.", "en", np.zeros(ASR_RATE_HZ, np.float32), 0.0)
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

    def forget_avatar(self, name: str) -> None:
        """Drop what is cached of an avatar that was made anew or deleted."""
        with self._lock:
            self._avatars.pop(name, None)
            self._voices.pop(name, None)

    def _turn_decider(self) -> TurnDecider | None:
        """The end-of-turn decider all sessions share (its model loads once), or None when
        the settings end turns by silence alone."""
        if self.settings.turn_taking == "silence":
            return None
        if self.settings.turn_taking != "decide":
            raise ConfigurationError(
                f"unknown AVATAR_TURN_TAKING {self.settings.turn_taking!r}; use decide or silence"
            )
        with self._lock:
            if self._decider is None:
                self._decider = make_turn_decider(self.settings)
            return self._decider

    def _voice(self, avatar: Avatar) -> AvatarVoice:
        """The avatar's speech stage, shared by its sessions (it caches its matchers)."""
        with self._lock:
            voice = self._voices.get(avatar.name)
            if voice is None:
                voice = self._voices[avatar.name] = AvatarVoice.for_avatar(avatar, self.settings)
            return voice

    async def open_session(
        self,
        avatar_name: str,
        language: str | None,
        dialogue: str | None,
        emit: EventSink,
    ) -> LiveSession:
        """Build a conversation for one peer (heavy parts in a worker thread)."""
        language = normalize_language_code(language or self.settings.language)
        if language not in LANGUAGES:
            language = "auto"
        dialogue = dialogue or self.settings.dialogue
        return await asyncio.to_thread(self._build, avatar_name, language, dialogue, emit)

    def _build(
        self, avatar_name: str, language: str, dialogue: str, emit: EventSink
    ) -> LiveSession:
        settings = self.settings
        avatar = self._avatar(avatar_name)
        stages = Stages(
            vad=get_vad(settings=settings),
            recognizer=recognizer_for_language(language, settings),
            responder=create_responder(dialogue, settings, avatar.persona, avatar.display_name),
            speech=self._voice(avatar),
            renderer=create_renderer(settings.renderer, avatar.face, settings),
            fallback_lines=dict(FALLBACK_LINES),
            turn_decider=self._turn_decider(),
        )
        session_id = self.store.open_session(avatar.name, language, dialogue)

        def on_turn(turn: TurnRecord) -> None:
            stage_ms = turn.stage_ms()
            metrics.observe_turn(stage_ms, turn.interrupted, bool(turn.error))
            row = {
                "turn_id": turn.turn_id,
                "language": turn.language,
                "user_text": turn.user_text,
                "reply_text": turn.reply_text,
                "interrupted": turn.interrupted,
                "error": turn.error,
                "end_of_turn": turn.decisions,
                **stage_ms,
            }
            self._store_pool.submit(self._record_turn, session_id, row)

        session = Conversation(
            stages,
            language=language,
            on_event=emit,
            on_turn=on_turn,
            max_utterance_s=settings.max_utterance_s,
        )
        return LiveSession(session_id, session)

    def _record_turn(self, session_id: str, row: dict[str, Any]) -> None:
        try:
            self.store.record_turn(session_id, row)
        except Exception:  # noqa: BLE001 - losing a log row must not end a conversation
            log.exception("could not record turn")

    def close_session(self, session_id: str, reason: str) -> None:
        """Record the end of a session (on the store's thread, after its turns)."""
        self._store_pool.submit(self.store.close_session, session_id, reason)
