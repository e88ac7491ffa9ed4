"""The SQLite store: turns with their end-of-turn decisions, and stores from before them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from realtime_avatar.store.db import Store


def test_a_turn_keeps_its_end_of_turn_decisions(tmp_path: Path) -> None:
    store = Store(tmp_path / "avatar.db")
    session = store.open_session("default", "en", "persona")
    decisions = [{"release": False, "silence_ms": 64.0}, {"release": True, "silence_ms": 180.0}]
    store.record_turn(session, {"turn_id": 1, "user_text": "hi", "end_of_turn": decisions})
    store.record_turn(session, {"turn_id": 2, "user_text": "bye"})
    turns = store.turns(session)
    assert [t["end_of_turn"] for t in turns] == [decisions, []]
    store.close()


def test_a_store_made_before_decisions_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "avatar.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE turns (session_id TEXT, turn_id INTEGER, created_unix REAL, language TEXT,"
        " user_text TEXT, reply_text TEXT, interrupted INTEGER, error TEXT, asr_final_ms REAL,"
        " first_token_ms REAL, first_audio_ms REAL, first_frame_ms REAL, turn_end_ms REAL,"
        " PRIMARY KEY (session_id, turn_id));"
        "INSERT INTO turns (session_id, turn_id, created_unix, user_text) VALUES ('s', 1, 0, 'hi');"
    )
    old.commit()
    old.close()
    store = Store(path)
    assert store.turns("s")[0]["user_text"] == "hi"
    store.record_turn("s", {"turn_id": 2, "end_of_turn": [{"release": True}]})
    assert store.turns("s")[1]["end_of_turn"] == [{"release": True}]
    store.close()
