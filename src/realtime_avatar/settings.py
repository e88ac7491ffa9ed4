"""Settings from ``AVATAR_*`` environment variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .constants import RENDER_SIZE_PX


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "realtime-avatar"


class Settings(BaseSettings):
    """Every option of the product, with its default where it is declared."""

    model_config = SettingsConfigDict(env_prefix="AVATAR_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    config_file: Path | None = None

    render_size_px: int = RENDER_SIZE_PX
    renderer: str = "mesh2d"  # a name in render/registry.py RENDERERS
    renderer_model_path: Path | None = None  # weights a neural renderer loads (its own layout)
    wav2lip_checkpoint: Path | None = None  # wav2lip.pth / wav2lip_gan.pth (issue's name)
    renderer_device: str = "cpu"  # "cpu" or "cuda[:N]" for renderers that can use a GPU
    voice_matcher: str = "world"
    tts_english: str = "piper"
    tts_other: str = "espeak"
    piper_model: Path | None = None  # another Piper voice (.onnx with its .onnx.json)
    # XTTS-v2 (tts/xtts.py; AVATAR_TTS_ENGLISH/AVATAR_TTS_OTHER=xtts): the folder downloaded
    # from coqui/XTTS-v2 (config.json, model.pth, vocab.json, speakers_xtts.pth).
    xtts_model_dir: Path | None = None
    xtts_device: str = "cpu"  # or "cuda[:N]"
    # The model service (`avatar model-service`, realtime_avatar.modelservice): with its
    # URL (ws://gpu-box:8765) the runtime renders and/or speaks there, falling back to
    # these models here while it is unreachable. Token: AVATAR_MODEL_SERVICE_TOKEN, else
    # AVATAR_TOKEN (the service checks its own AVATAR_TOKEN).
    model_service_url: str | None = None
    model_service_token: str | None = None
    model_service_stages: str = "render,tts"  # which stages go to the service
    model_service_timeout_s: float = Field(default=20.0, gt=0)  # to connect; for each reply
    model_service_frame_codec: str = "auto"  # raw, jpeg, or auto: raw on loopback, else jpeg
    model_service_ahead_frames: int = Field(default=8, ge=1, le=250)  # drawn ahead of display
    # Voice fitting at registration (voice/fit.py): off, fast (about 15 s) or full (90 s).
    voice_fit: str = "fast"

    max_image_pixels: int = 40_000_000
    max_upload_bytes: int = 25 * 1024 * 1024
    min_face_px: int = 120
    min_voice_s: float = 3.0

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_sessions: int = 2
    # The call's video (server/encoders.py), encoded on the session's render thread.
    # Codecs in order of preference; the first one the peer's offer has is sent (H.264
    # first: every browser decodes it, most in hardware; same encode cost as VP8 here).
    video_codecs: str = "h264,vp8"
    # Target rate of a 512x512, 25 fps call. Face SSIM while speaking, received
    # (bench/video_quality.py, docs/BENCHMARKS.md): H.264 0.9916 at 1200, 0.9936 at 2000;
    # VP8 0.9927 at 1200, 0.9933 at 2000 (it spends ~1.4 Mbit/s at most on a face).
    video_bitrate_kbps: int = 2000
    # Evaluation only: every rendered frame of each call, raw RGB, into this folder
    # (786 KB a frame at 512 px, 20 MB/s), so what a client receives can be scored
    # against what the renderer made (evaluate/video_quality.py). Never in production.
    video_reference_dir: Path | None = None
    # Host names the server answers to besides loopback names and IP literals, comma
    # separated: a foreign Host header is how DNS rebinding reaches a loopback server.
    allowed_hosts: str = ""
    # Origins allowed to call the API from another site, comma separated; none: CORS off.
    cors_origins: str = ""
    max_json_bytes: int = 256 * 1024  # a JSON request body (an SDP offer is ~5 KB)
    # A call whose ICE/DTLS is not connected by then is closed and its slot freed.
    session_connect_timeout_s: float = 10.0
    # A connected peer that sends no microphone packets for this long has vanished.
    peer_silent_timeout_s: float = 5.0
    # WebRTC offers per client address: a burst, then this many a minute (429 past it).
    offer_burst: int = 5
    offers_per_minute: float = 12.0
    # glibc heap arenas for the server's threads (fewer: memory freed by closed sessions
    # is reused and trimmed instead of piling up); 0 leaves glibc's default (8 per core).
    heap_arenas: int = 4
    # Several nodes (server/cluster.py): with AVATAR_REDIS_URL (declared with the video jobs
    # below) each `avatar serve` registers its load there, and an offer a full node cannot
    # take is passed on to a node with room.
    public_url: str | None = None  # how peers reach this node; default http://HOST:PORT
    node_id: str | None = None  # this node's name in Redis; default HOSTNAME:PORT
    node_heartbeat_s: float = Field(default=2.0, gt=0)  # load re-published this often
    node_ttl_s: float = Field(default=10.0, gt=0)  # a node silent this long is gone
    # On SIGTERM: no new sessions; running ones may go on this long, then are closed.
    drain_timeout_s: float = Field(default=30.0, ge=0)

    # Video jobs (realtime_avatar.jobs). No Redis URL: jobs run in this process, one at a
    # time. With one: the server enqueues on Redis and `avatar worker` processes run them;
    # jobs_dir must then be the same folder (a shared mount) on the server and the workers.
    redis_url: str | None = None
    jobs_dir: Path | None = None  # default: <data_dir>/videos
    job_max_text_chars: int = 5000  # a script longer than this is refused (422)
    job_max_queued: int = 8  # queued or running jobs per token (429 past it)
    job_timeout_s: float = 900.0  # one attempt at a job that runs longer fails, "timed out"
    # A worker that stops beating this long is dead: its job goes back to the queue.
    job_heartbeat_timeout_s: float = 30.0

    # Live conversation.
    asr: str = "whisper-tiny-en"  # English default; es/zh/auto use the multilingual base
    asr_model_dir: Path | None = None  # a faster-whisper model folder the user brings
    asr_multilingual: str = "whisper-base"
    asr_compute_type: str = "int8"
    asr_cpu_threads: int = 1
    asr_beam_size: int = 1
    vad: str = "silero"
    vad_threshold: float = 0.5
    vad_neg_threshold: float = 0.35
    vad_min_speech_ms: float = 64.0
    vad_min_silence_ms: float = 300.0  # silence that ends the user's turn
    # Silence after which the reply starts speculatively (transcript, first words), held
    # back until the turn really ends and dropped if the user goes on; None turns it off.
    vad_pause_ms: float | None = 64.0
    max_utterance_s: float = 30.0  # a user who talks this long without a pause is answered
    # End of turn (engine/endpointing.py): at each pause, the words so far, the smart-turn
    # model's reading of the audio and the silence decide whether the user is done. A turn
    # that sounds unfinished is released after turn_max_wait_ms of silence anyway.
    turn_taking: str = "decide"  # "decide"; "silence": the VAD's end (vad_min_silence_ms) ends it
    turn_max_wait_ms: float = 2000.0
    turn_recheck_ms: float = 200.0  # while waiting, decide again at least this often
    turn_prosody: bool = True  # use smart-turn v3.2 (from the pipecat-ai wheel) when present
    turn_model_path: Path | None = None  # another smart-turn ONNX file
    # English listens with Whisper tiny.en (the fast default); "auto", "es" and "zh" with the
    # multilingual base, about three times slower per decode.
    language: str = "en"
    dialogue: str = "persona"
    # OpenAI-compatible endpoint (OpenAI, Gemini, Ollama, vLLM, llama.cpp server).
    llm_base_url: str = "https://api.openai.com/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    llm_timeout_s: float = 30.0
    llm_first_token_timeout_s: float = 8.0
    llm_max_tokens: int = 160
    llm_temperature: float = 0.7
    # A local GGUF model run in-process by llama-cpp-python.
    llama_model_path: Path | None = None
    llama_n_ctx: int = 2048
    llama_n_threads: int = 1
    llama_chat_format: str | None = None

    @field_validator("video_codecs")
    @classmethod
    def _known_video_codecs(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in ("h264", "vp8")]
        if not names or unknown:
            raise ValueError(
                f"AVATAR_VIDEO_CODECS={value!r}: name h264 and/or vp8, in order of "
                "preference (e.g. h264,vp8)"
            )
        return ",".join(names)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("AVATAR_CONFIG_FILE")
        if toml_path and Path(toml_path).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def get_settings(**overrides: Any) -> Settings:
    """Current settings: environment, then the TOML file, then defaults."""
    return Settings(**overrides)
