"""``POST /api/v1/avatars`` and ``DELETE /api/v1/avatars/{name}``: validation, limits,
per-field errors, token rules and nothing half-written.

The fast tests stop at checks that need no model (the name, the uploads, the photo's
decoding, the voice's level); making a real avatar loads mediapipe and is slow.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from realtime_avatar.server import avatars_api
from realtime_avatar.server.app import create_app
from realtime_avatar.settings import Settings

LOCAL = "http://127.0.0.1:8000"
TOKEN = "a-token-for-the-avatar-tests"


def _fake_avatar(home: Path, name: str) -> Path:
    """A folder the registry lists as an avatar (a manifest), for routes that need no more."""
    folder = home / "avatars" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "face.png").write_bytes(b"not needed")
    return folder


def _png(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _wav(pcm: np.ndarray, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    sf.write(out, pcm, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


SILENT_WAV = _wav(np.zeros(16_000 * 6, np.float32))


def _on_disk(home: Path) -> set[str]:
    root = home / "avatars"
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _fake_avatar(tmp_path, "default")
    return tmp_path


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=home), warm_up=False)
    yield TestClient(app, base_url=LOCAL, raise_server_exceptions=False)


def _post(client: TestClient, headers: dict[str, str] | None = None, **parts: Any) -> Any:
    data = {k: v for k, v in parts.items() if isinstance(v, str)}
    files = {k: v for k, v in parts.items() if not isinstance(v, str)}
    return client.post("/api/v1/avatars", data=data, files=files, headers=headers or {})


def _error(res: Any, status: int, field: str | None, *words: str) -> str:
    assert res.status_code == status, (res.status_code, res.text)
    body = res.json()
    assert set(body) == {"error", "field"} and body["field"] == field, body
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


GOOD_IMAGE = ("me.png", _png(), "image/png")
GOOD_VOICE = ("me.wav", SILENT_WAV, "audio/wav")  # decodes; only its level is wrong


def test_the_name_is_checked_first(client: TestClient, home: Path) -> None:
    before = _on_disk(home)
    _error(_post(client, image=GOOD_IMAGE, voice=GOOD_VOICE), 422, "name", "name")
    _error(_post(client, name="../x", image=GOOD_IMAGE, voice=GOOD_VOICE), 400, "name", "1-40")
    _error(
        _post(client, name="default", image=GOOD_IMAGE, voice=GOOD_VOICE),
        409,
        "name",
        "already exists",
    )
    assert _on_disk(home) == before


def test_missing_uploads_name_their_field(client: TestClient) -> None:
    _error(_post(client, name="ann", voice=GOOD_VOICE), 422, "image", "photo")
    _error(_post(client, name="ann", image=GOOD_IMAGE), 422, "voice", "record")
    _error(
        _post(client, name="ann", image=("a.png", b"", "image/png"), voice=GOOD_VOICE),
        422,
        "image",
        "empty",
    )


def test_a_text_file_named_jpg_is_refused_as_a_photo(client: TestClient, home: Path) -> None:
    before = _on_disk(home)
    text = ("notes.jpg", b"Dear diary, today I made an avatar.\n" * 40, "image/jpeg")
    message = _error(_post(client, name="ann", image=text, voice=GOOD_VOICE), 400, "image")
    assert "notes.jpg" in message and "not an image" in message
    assert _on_disk(home) == before  # the upload's staging folder is gone too


def test_an_oversized_photo_is_refused_saying_the_limit(client: TestClient, home: Path) -> None:
    before = _on_disk(home)
    big = ("big.jpg", b"\xff" * (avatars_api.IMAGE_MAX_BYTES + 1), "image/jpeg")
    _error(_post(client, name="ann", image=big, voice=GOOD_VOICE), 413, "image", "15.0 MB")
    assert _on_disk(home) == before


def test_an_oversized_voice_file_is_refused_saying_the_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(avatars_api, "VOICE_MAX_BYTES", 1000)
    big = ("long.wav", b"\0" * 5000, "audio/wav")
    _error(_post(client, name="ann", image=GOOD_IMAGE, voice=big), 413, "voice", "0.0 MB")


def test_a_body_over_the_servers_upload_limit_is_stopped(home: Path) -> None:
    app = create_app(Settings(data_dir=home, max_upload_bytes=50_000), warm_up=False)
    client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    big = ("big.png", b"\x89" * 100_000, "image/png")
    res = _post(client, name="ann", image=big, voice=GOOD_VOICE)
    assert res.status_code == 413 and "50000 bytes" in res.json()["error"]
    assert _on_disk(home) == {"default", "default/manifest.json", "default/face.png"}


def test_a_silent_recording_is_refused_and_nothing_is_saved(client: TestClient, home: Path) -> None:
    before = _on_disk(home)
    message = _error(
        _post(client, name="ann", image=GOOD_IMAGE, voice=("take1.wav", SILENT_WAV, "audio/wav")),
        400,
        "voice",
        "silent",
    )
    assert "record" in message
    assert _on_disk(home) == before


def test_an_audio_file_that_is_not_audio_names_the_voice_field(client: TestClient) -> None:
    voice = ("voice.mp3", b"this is not audio at all" * 100, "audio/mpeg")
    _error(_post(client, name="ann", image=GOOD_IMAGE, voice=voice), 400, "voice", "voice.mp3")


def test_the_persona_must_be_utf8_and_bounded(client: TestClient) -> None:
    latin1 = ("me.md", "Soy de Cádiz".encode("latin-1"), "text/markdown")
    _error(
        _post(client, name="ann", image=GOOD_IMAGE, voice=GOOD_VOICE, persona=latin1),
        400,
        "persona",
        "UTF-8",
    )
    _error(
        _post(client, name="ann", image=GOOD_IMAGE, voice=GOOD_VOICE, persona="x" * 300_000),
        400,
        "persona",
        "256 KiB",
    )


def test_a_request_that_is_not_a_form_gets_one_plain_error(client: TestClient) -> None:
    res = client.post("/api/v1/avatars", json={"name": "ann"})
    assert res.status_code == 400 and set(res.json()) == {"error"}
    assert "multipart/form-data" in res.json()["error"]


def test_progress_stream_ends_with_the_error_and_its_field(client: TestClient) -> None:
    res = _post(
        client,
        headers={"Accept": "application/x-ndjson"},
        name="ann",
        image=GOOD_IMAGE,
        voice=GOOD_VOICE,
    )
    assert res.status_code == 200 and res.headers["content-type"].startswith(avatars_api.NDJSON)
    lines = [json.loads(line) for line in res.text.splitlines()]
    steps = [line["step"] for line in lines if line["type"] == "progress"]
    assert steps == ["reading photo", "checking the voice sample"]
    assert lines[-1]["type"] == "error" and lines[-1]["field"] == "voice"
    assert lines[-1]["status"] == 400 and "silent" in lines[-1]["error"]


def test_the_voice_fits_candidates_move_the_progress_within_its_step(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit (AVATAR_VOICE_FIT, minutes of work) reports its candidates; a stand-in
    registration here, as the real fit is slow-tier (tests/test_voice_fit.py)."""
    from realtime_avatar.errors import InvalidAudioError

    def registering(*_args: Any, progress: Any, fit_progress: Any, **_kw: Any) -> None:
        progress("computing the voice profile")
        progress("fitting the voice")
        for done in range(1, 3):
            fit_progress(done, 4, f"candidate {done}")
        raise InvalidAudioError("the voice sample is silent")

    monkeypatch.setattr(avatars_api, "register", registering)
    res = _post(
        client,
        headers={"Accept": avatars_api.NDJSON},
        name="ann",
        image=GOOD_IMAGE,
        voice=GOOD_VOICE,
    )
    lines = [json.loads(line) for line in res.text.splitlines()]
    fit = avatars_api.STEPS.index("fitting the voice")
    assert [(line.get("done"), line.get("detail")) for line in lines[:-1]] == [
        (fit - 1, None),
        (fit, None),
        (fit + 0.25, "candidate 1"),
        (fit + 0.5, "candidate 2"),
    ]
    assert all(line["total"] == len(avatars_api.STEPS) for line in lines[:-1])
    assert lines[-1]["field"] == "voice"


def test_checks_before_the_stream_are_plain_4xx(client: TestClient) -> None:
    res = _post(
        client, headers={"Accept": "application/x-ndjson"}, name="Bad Name!", image=GOOD_IMAGE
    )
    assert res.status_code == 400 and res.json()["field"] == "name"


def test_delete_removes_a_made_avatar_whole(client: TestClient, home: Path) -> None:
    _fake_avatar(home, "ann")
    res = client.delete("/api/v1/avatars/ann")
    assert res.status_code == 200 and res.json() == {"deleted": "ann"}
    assert _on_disk(home) == {"default", "default/manifest.json", "default/face.png"}
    assert client.delete("/api/v1/avatars/ann").status_code == 404


def test_the_default_avatar_cannot_be_deleted(client: TestClient, home: Path) -> None:
    res = client.delete("/api/v1/avatars/default")
    assert res.status_code == 409 and "cannot be deleted" in res.json()["error"]
    assert (home / "avatars" / "default" / "manifest.json").is_file()


def test_delete_refuses_bad_and_unknown_names(client: TestClient) -> None:
    assert client.delete("/api/v1/avatars/..%2Fdefault").status_code in (400, 404)
    assert client.delete("/api/v1/avatars/Not%20Valid").status_code == 400
    res = client.delete("/api/v1/avatars/nobody")
    assert res.status_code == 404 and "nobody" in res.json()["error"]


def test_token_rules_as_the_rest_of_the_api(home: Path) -> None:
    _fake_avatar(home, "ann")
    app = create_app(Settings(data_dir=home, token=TOKEN), warm_up=False)
    client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    assert _post(client, name="bob", image=GOOD_IMAGE, voice=GOOD_VOICE).status_code == 401
    assert client.delete("/api/v1/avatars/ann").status_code == 401
    assert (home / "avatars" / "ann").is_dir()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.delete("/api/v1/avatars/ann", headers=auth).status_code == 200


def test_the_limits_the_page_checks_against(client: TestClient) -> None:
    limits = client.get("/api/v1/avatar-limits").json()
    assert limits["image_max_bytes"] == avatars_api.IMAGE_MAX_BYTES
    assert limits["voice_max_bytes"] == avatars_api.VOICE_MAX_BYTES
    assert limits["min_voice_s"] == 3.0


def test_the_upload_names_are_kept_safe() -> None:
    assert avatars_api._safe_filename("../../etc/passwd", "photo") == "passwd"
    assert avatars_api._safe_filename("my photo (1).JPG", "photo") == "my_photo_1_.JPG"
    assert avatars_api._safe_filename("..", "photo") == "photo"
    assert avatars_api._safe_filename(None, "voice") == "voice"


@pytest.mark.slow
def test_a_plain_post_makes_the_avatar_and_answers_201(default_avatar: Any, tmp_path: Path) -> None:
    """What `curl -F` gets: the same preparation as `avatar register`, then 201 + the avatar."""
    from realtime_avatar.avatars.registry import default_portrait, load_avatar

    home = tmp_path / "data"
    _fake_avatar(home, "default")
    settings = Settings(data_dir=home)
    client = TestClient(create_app(settings, warm_up=False), base_url=LOCAL)
    out = io.BytesIO()
    Image.fromarray(default_portrait()).save(out, "JPEG", quality=92)
    voice = (Path(default_avatar.path) / "voice.wav").read_bytes()
    res = _post(
        client,
        name="ana",
        image=("me.jpg", out.getvalue(), "image/jpeg"),
        voice=("me.wav", voice, "audio/wav"),
        persona="# Ana\nI am Ana, a pilot from Houston.\n",
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["name"] == "ana" and body["display_name"] == "Ana" and body["deletable"]
    assert body["face_size_px"] > 120 and body["voice_speech_s"] > 3
    made = load_avatar("ana", settings=settings)
    assert made.persona.startswith("# Ana") and made.face_rgb.shape[:2] == (512, 512)
    assert not [p for p in (home / "avatars").iterdir() if p.name.startswith(".")]
    # The same name again is refused before any work; the first one is untouched.
    again = _post(client, name="ana", image=GOOD_IMAGE, voice=GOOD_VOICE)
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert client.get("/api/v1/avatars/ana/image").status_code == 200
    assert client.delete("/api/v1/avatars/ana").status_code == 200
    assert not (home / "avatars" / "ana").exists()
