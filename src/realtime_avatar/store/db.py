"""SQLite store (WAL) for sessions and turns with their transcripts and timings.

Video jobs keep their records in ``jobs/store.py`` (SQLite or Redis).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    avatar TEXT NOT NULL,
    language TEXT NOT NULL,
    dialogue TEXT NOT NULL,
    started_unix REAL NOT NULL,
    ended_unix REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    turn_id INTEGER NOT NULL,
    created_unix REAL NOT NULL,
    language TEXT,
    user_text TEXT,
    reply_text TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    asr_final_ms REAL,
    first_token_ms REAL,
    first_audio_ms REAL,
    first_frame_ms REAL,
    turn_end_ms REAL,
    end_of_turn TEXT,
    PRIMARY KEY (session_id, turn_id)
);
"""


class Store:
    """A small thread-safe wrapper over one SQLite connection in WAL mode."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions added to a store an earlier one made."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(turns)")}
        if "end_of_turn" not in columns:
            self._db.execute("ALTER TABLE turns ADD COLUMN end_of_turn TEXT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def open_session(self, avatar: str, language: str, dialogue: str) -> str:
        """Record a new session; returns its id."""
        session_id = uuid.uuid4().hex
        self._exec(
            "INSERT INTO sessions (id, avatar, language, dialogue, started_unix) "
            "VALUES (?,?,?,?,?)",
            (session_id, avatar, language, dialogue, time.time()),
        )
        return session_id

    def close_session(self, session_id: str, reason: str) -> None:
        """Mark a session ended."""
        self._exec(
            "UPDATE sessions SET ended_unix=?, end_reason=? WHERE id=? AND ended_unix IS NULL",
            (time.time(), reason, session_id),
        )

    def record_turn(self, session_id: str, turn: dict[str, Any]) -> None:
        """Insert or replace one turn's transcript and stage timings (ms after speech end)."""
        self._exec(
            """INSERT OR REPLACE INTO turns (session_id, turn_id, created_unix, language,
               user_text, reply_text, interrupted, error, asr_final_ms, first_token_ms,
               first_audio_ms, first_frame_ms, turn_end_ms, end_of_turn)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                session_id,
                turn["turn_id"],
                time.time(),
                turn.get("language"),
                turn.get("user_text"),
                turn.get("reply_text"),
                int(bool(turn.get("interrupted"))),
                turn.get("error") or None,
                turn.get("asr_final_ms"),
                turn.get("first_token_ms"),
                turn.get("first_audio_ms"),
                turn.get("first_frame_ms"),
                turn.get("turn_end_ms"),
                json.dumps(turn["end_of_turn"]) if turn.get("end_of_turn") else None,
            ),
        )

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        """Every recorded turn of a session, in order."""
        rows = self._exec("SELECT * FROM turns WHERE session_id=? ORDER BY turn_id", (session_id,))
        turns = [dict(r) for r in rows]
        for turn in turns:  # the end-of-turn decisions, in order, as they were recorded
            turn["end_of_turn"] = json.loads(turn["end_of_turn"]) if turn["end_of_turn"] else []
        return turns

    def sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent sessions."""
        rows = self._exec("SELECT * FROM sessions ORDER BY started_unix DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]
