"""The ``avatar`` command: register, say, serve, worker, list."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from .errors import AvatarError
from .progress import progress_bar

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Talk face to face with a digital twin: one photo and a voice sample make an avatar.",
)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress() -> Progress:
    return progress_bar(console)


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="avatar name: lower-case letters, digits, - and _")],
    image: Annotated[Path, typer.Option("--image", help="a frontal photo (JPEG, PNG, WebP, HEIC)")],
    voice: Annotated[
        Path, typer.Option("--voice", help="about 10 s of speech (WAV, MP3, M4A, OGG, FLAC)")
    ],
    persona: Annotated[
        Path | None, typer.Option("--persona", help="Markdown facts and style")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an avatar of the same name")
    ] = False,
    voice_fit: Annotated[
        str | None,
        typer.Option(
            "--voice-fit",
            help="fit the voice to the sample: fast (~15 s), full (~90 s) or off "
            "[default: AVATAR_VOICE_FIT, fast]",
        ),
    ] = None,
) -> None:
    """Make an avatar from one photo and one voice sample."""
    from .avatars.registry import register as do_register

    steps = [
        "reading photo",
        "checking the voice sample",
        "finding the face",
        "computing the voice profile",
        "fitting the voice",
        "saving",
    ]
    with _progress() as bar:
        task = bar.add_task("registering", total=len(steps))
        fit_task: list[TaskID] = []

        def step(label: str) -> None:
            bar.update(
                task, description=label, completed=steps.index(label) if label in steps else 0
            )

        def fit_step(done: int, total: int, what: str) -> None:
            if not fit_task:
                fit_task.append(bar.add_task("voice fit", total=total))
            bar.update(fit_task[0], description=f"voice fit: {what}", completed=done, total=total)

        avatar = do_register(
            name,
            image,
            voice,
            persona,
            force=force,
            progress=step,
            voice_fit=voice_fit,
            fit_progress=fit_step,
        )
        bar.update(task, description="done", completed=len(steps))
    face = avatar.manifest["face"]
    console.print(
        f"[green]registered[/] [bold]{avatar.name}[/] in {avatar.path} "
        f"(face {face['face_size_px']:.0f} px, "
        f"voice {avatar.manifest['voice']['speech_s']:.1f} s of speech)"
    )
    fit = avatar.manifest.get("voice_fit")
    if fit:
        console.print(_fit_line(fit), highlight=False, soft_wrap=True)


def _fit_line(fit: dict[str, Any]) -> str:
    """One line on a voice fit: recipe, held-out similarity before and after, pitch, time."""
    raw, fitted = fit.get("raw") or {}, fit.get("fitted") or {}
    if not fit.get("recipe"):
        return f"voice: {fit.get('describe')}; {fit.get('note', '')}"
    line = (
        f"voice: {fit.get('describe')} ({fit.get('mode')}, {fit.get('measure')}): held-out "
        f"similarity {raw.get('similarity')} -> {fitted.get('similarity')}, median pitch "
        f"{raw.get('median_f0_hz')} -> {fitted.get('median_f0_hz')} Hz "
        f"(person {fit.get('target_median_f0_hz')} Hz), {fit.get('seconds')} s"
    )
    if fit.get("cached"):
        line += ", cached"
    return line + (f"; {fit['note']}" if fit.get("note") else "")


_stop_requested = threading.Event()  # Ctrl-C or SIGTERM arrived
_terminated = threading.Event()  # ... and it was SIGTERM


def _on_stop_signal(signum: int, _frame: object) -> None:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt, so the same clean-up runs (no
    partial MP4, no half-saved avatar), and are remembered for the long loops."""
    _stop_requested.set()
    if signum == signal.SIGTERM:
        _terminated.set()
    raise KeyboardInterrupt


def _remember_ctrl_c() -> threading.Event:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered.

    A native library that checks for signals on the main thread can swallow the
    KeyboardInterrupt (seen once: `say` ran to the end after Ctrl-C); the long loops check
    the flag after each sentence and stop anyway.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_stop_signal)
    return _stop_requested


def _stoppable(
    bar: Progress, task: TaskID, interrupted: threading.Event
) -> Callable[[int, int], None]:
    """A progress callback that moves the bar and stops the work once Ctrl-C was pressed."""

    def report(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if interrupted.is_set():
            raise KeyboardInterrupt

    return report


def _read_text_file(path: Path) -> str:
    """A script file, read up to the script limit (``/dev/zero`` is refused, not read)."""
    from .engine.script import MAX_SCRIPT_BYTES

    limit_mb = MAX_SCRIPT_BYTES / 1e6
    if path.is_dir():
        _fail(f"--text-file {path} is a folder; give a UTF-8 text file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SCRIPT_BYTES + 1)
    except FileNotFoundError:
        _fail(f"text file not found: {path}")
    except PermissionError:
        _fail(f"cannot read {path}: permission denied")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > MAX_SCRIPT_BYTES:
        _fail(
            f"{path} is over {limit_mb:.0f} MB; split the script into smaller files "
            "(1 MB is about 20 hours of speech)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _fail(f"{path} is not UTF-8 text; save it as UTF-8")
    raise AssertionError("unreachable")  # _fail raises


@app.command()
def say(
    text: Annotated[str | None, typer.Argument(help="what the avatar says")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="MP4 file to write")] = Path(
        "out.mp4"
    ),
    avatar: Annotated[str, typer.Option("--avatar", help="registered avatar name")] = "default",
    lang: Annotated[
        str, typer.Option("--lang", help="language code (en, es, zh, …) or auto")
    ] = "auto",
    text_file: Annotated[
        Path | None, typer.Option("--text-file", help="read the script from a file")
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option("--audio", help="lip-sync this recording instead of speaking text"),
    ] = None,
) -> None:
    """Turn a script (or a recording) into a lip-synced talking video (H.264 + AAC MP4)."""
    from .engine.script import render_audio, render_script

    interrupted = _remember_ctrl_c()
    if audio is not None:
        if text is not None or text_file is not None:
            _fail("give either text or --audio, not both")
        with _progress() as bar:
            animated = _stoppable(bar, bar.add_task("animating", total=None), interrupted)
            done = render_audio(audio, output, avatar_name=avatar, progress=animated)
        console.print(
            f"[green]wrote[/] {done.path} ({done.duration_s:.1f} s) in {done.wall_s:.1f} s"
        )
        return

    if text_file is not None:
        if text is not None:
            _fail("give the text either as an argument or with --text-file, not both")
        text = _read_text_file(text_file)
    if text is None:
        _fail('nothing to say: pass the text, e.g. avatar say "Hello!" -o hello.mp4')
    with _progress() as bar:
        advance = _stoppable(bar, bar.add_task("speaking", total=None), interrupted)

        result = render_script(
            text or "", output, avatar_name=avatar, language=lang, progress=advance
        )
    console.print(
        f"[green]wrote[/] {result.path} ({result.duration_s:.1f} s of video, "
        f"{result.sentences} sentence(s), {'/'.join(result.languages)}) in {result.wall_s:.1f} s"
    )


@app.command("eval")
def eval_command(
    suite: Annotated[
        str, typer.Option("--suite", help="quick (minutes), full, or dialogue (seconds)")
    ] = "quick",
    out: Annotated[
        Path, typer.Option("--out", help="folder for report.json and report.html")
    ] = Path("eval-report"),
) -> None:
    """Grade the whole system with independent instruments; writes JSON and HTML.

    ``--suite voices`` scores the voice (fitted and not) on the real-voice set instead:
    resemblyzer similarity, pitch error, envelope distance and WER (voices.json).
    """
    if suite in ("voices", "voices-full"):
        _eval_voices(out, "full" if suite == "voices-full" else "fast")
        return
    from .evaluate.runner import run_suite

    if suite not in ("quick", "full", "dialogue"):
        _fail(f"unknown suite {suite!r}; use --suite quick, full or dialogue")
    with _progress() as bar:
        task = bar.add_task("evaluating", total=None)
        report = run_suite(
            suite,
            out,
            progress=lambda label, d, t: bar.update(task, description=label, completed=d, total=t),
        )
    console.print(f"[green]wrote[/] {report} and {report.with_name('report.html')}")


def _eval_voices(out: Path, mode: str) -> None:
    """``avatar eval --suite voices``: the real-voice set's scores into ``out/voices.json``."""
    import json

    from .evaluate.voices import SYSTEMS, evaluate_voices, voice_set
    from .settings import get_settings

    voices = voice_set()
    with _progress() as bar:
        task = bar.add_task("voices", total=len(voices))
        done = [0]

        def step(label: str) -> None:
            if label.endswith(": fitting (" + mode + ")"):
                done[0] += 1
            bar.update(task, description=label, completed=done[0] - 1)

        result = evaluate_voices(get_settings(), mode, progress=step)
        bar.update(task, description="done", completed=len(voices))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "voices.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    summary = result["summary"]
    for system in SYSTEMS:
        row = summary[system]
        console.print(
            f"{system:8s} similarity mean {row['similarity_mean']:.3f} (min "
            f"{row['similarity_min']:.3f}), pitch error {row['pitch_error_st_mean']:.1f} st, "
            f"envelope {row['envelope_db_mean']:.1f} dB, WER {row['wer_mean']:.3f}",
            highlight=False,
        )
    console.print(f"[green]wrote[/] {path}")


@app.command()
def bench(
    suite: Annotated[
        str, typer.Option("--suite", help="quick (a minute or two) or full (more samples)")
    ] = "quick",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the figures to this JSON file")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="comma-separated groups to run, e.g. render,tts,say"),
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="also write the table as Markdown")
    ] = None,
) -> None:
    """Measure speed and latency figures (render, TTS, `avatar say`, ...) against their goals.

    Uses the data directory from the settings (AVATAR_DATA_DIR). Exits 1 if a group failed.
    """
    from .benchmark.runner import check_json_path, run_bench, select_groups

    if suite not in ("quick", "full"):
        _fail(f"unknown suite {suite!r}; use --suite quick or --suite full")
    groups = [name.strip() for name in only.split(",") if name.strip()] if only else None
    if only is not None and not groups:
        _fail("--only needs at least one group name, e.g. --only render,tts")
    try:
        select_groups(suite, groups)  # refuse bad names before minutes of measuring
        for path in (json_out, markdown):
            if path is not None:
                check_json_path(path)
    except AvatarError as exc:
        _fail(exc.message)
    result = run_bench(suite, json_out, console, only=groups)
    if markdown is not None:
        from .benchmark.report import markdown_table

        markdown.write_text(markdown_table(result), encoding="utf-8")
    if not result["ok"]:
        failed = [name for name, group in result["groups"].items() if group["status"] != "ok"]
        console.print(f"[bold red]error:[/] group(s) failed: {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


@app.command("list")
def list_command() -> None:
    """List the registered avatars."""
    from .avatars.registry import list_avatars, voice_fits

    names = list_avatars()
    if not names:
        typer.echo("no avatars yet (the default one is made on first use)")
        return
    fits = voice_fits(names)
    for name in names:
        fit = fits.get(name)
        if fit is None or not fit.get("recipe"):
            why = f" ({fit['note']})" if fit and fit.get("note") else ""
            typer.echo(f"{name}  voice: not fitted{why}")
            continue
        typer.echo(
            f"{name}  voice: {fit['describe']} ({fit['mode']}, {fit['measure']}), held-out "
            f"similarity {fit['similarity_raw']} -> {fit['similarity_fitted']}, median pitch "
            f"{fit['median_f0_hz']['fitted']} Hz (person {fit['median_f0_hz']['target']} Hz)"
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535)] = None,
) -> None:
    """Start the web app on http://127.0.0.1:8000."""
    from .server.app import create_app
    from .server.cluster import serve as serve_app
    from .settings import get_settings

    settings = get_settings()
    if not 1 <= settings.port <= 65535:
        _fail(f"AVATAR_PORT={settings.port} is not a port; use a number from 1 to 65535")
    bind = host or settings.host
    if bind not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        _fail(
            f"binding to {bind} exposes the avatar to the network; "
            "set AVATAR_TOKEN to a secret first"
        )
    # The node's default public URL and the Host check name what it is bound to.
    settings = settings.model_copy(update={"host": bind, "port": port or settings.port})
    serve_app(create_app(settings), host=bind, port=settings.port)


@app.command("model-service")
def model_service(
    host: Annotated[str | None, typer.Option("--host", help="address to bind")] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
) -> None:
    """Serve the configured renderers and synthesizers to runtimes (AVATAR_MODEL_SERVICE_URL)."""
    from .modelservice.protocol import PROTOCOL_VERSION, is_loopback
    from .modelservice.server import check_port
    from .modelservice.server import serve as serve_models
    from .settings import get_settings

    settings = get_settings()
    bind = host or settings.host
    if not is_loopback(bind) and not settings.token:
        _fail(
            f"binding the model service to {bind} exposes it to the network; "
            "set AVATAR_TOKEN to a secret first (and the same on the runtime)"
        )
    check_port(bind, port)
    console.print(
        f"[green]model service[/] on ws://{bind}:{port}/ws (protocol {PROTOCOL_VERSION}); "
        f"runtimes: AVATAR_MODEL_SERVICE_URL=ws://{bind}:{port}; Ctrl-C to stop",
        highlight=False,
        soft_wrap=True,
    )
    serve_models(settings, bind, port)


@app.command()
def worker(
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=16, help="jobs rendered at once")
    ] = 1,
) -> None:
    """Render video jobs from the Redis queue (AVATAR_REDIS_URL) until stopped.

    SIGTERM or Ctrl-C hands the job being rendered back to the queue after its sentence.
    """
    from .jobs.worker import VideoWorker
    from .settings import get_settings

    settings = get_settings()
    if not settings.redis_url:
        _fail(
            "avatar worker takes jobs from Redis: set AVATAR_REDIS_URL (e.g. "
            "redis://127.0.0.1:6379/0), the same as the server's"
        )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        video_worker = VideoWorker(settings, threads=threads)
        video_worker.store.ping()  # before the models load: an unreachable Redis fails fast
        video_worker.warm_up()
        video_worker.start()
    except Exception as exc:  # noqa: BLE001 - Redis unreachable and the like, in one line
        if isinstance(exc, AvatarError):
            raise
        _fail(f"cannot reach the job queue at AVATAR_REDIS_URL: {exc}")
    console.print(
        f"[green]worker[/] {video_worker.name} taking video jobs "
        f"(jobs folder {video_worker.jobs_root}); Ctrl-C to stop"
    )
    video_worker.wait(stop)
    console.print("stopping: the job being rendered goes back to the queue")
    video_worker.stop(hand_back=True)


def main() -> None:
    """Entry point: user errors become one clear line, never a traceback."""
    level = os.environ.get("AVATAR_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aioice", "aiortc", "asyncio", "numba", "matplotlib", "PIL", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger().level, logging.INFO))
    from pydantic import ValidationError

    signal.signal(signal.SIGTERM, _on_stop_signal)
    try:
        app()
    except AvatarError as exc:
        _error_line(exc.message)
    except ValidationError as exc:
        _error_line(settings_error_message(exc))
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        _error_line(message)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        # Typer turns KeyboardInterrupt into exit status 130 before it gets here.
        if exc.code == 130:
            _interrupted()
        raise


def _error_line(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _interrupted() -> None:
    if _terminated.is_set():
        console.print("[yellow]terminated[/]: nothing was written")
        sys.exit(143)
    console.print("[yellow]interrupted[/]: nothing was written")
    sys.exit(130)


def settings_error_message(exc: Exception) -> str:
    """One line for a setting that does not parse, naming its ``AVATAR_*`` variable."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    parts = []
    for error in errors[:3]:
        field = str(error["loc"][0]) if error.get("loc") else "?"
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"AVATAR_{field.upper()}{shown}: {error.get('msg', 'invalid')}")
    listed = "; ".join(parts) or str(exc).splitlines()[0]
    return f"bad setting {listed}; fix or unset it (environment or AVATAR_CONFIG_FILE)"


_OS_ERRORS = {
    errno.ENOSPC: "no space left on the disk; free some space or pick another place",
    errno.EDQUOT: "disk quota exceeded; free some space or pick another place",
    errno.EFBIG: "the file is too large for this disk or its limits; pick another place",
    errno.EROFS: "the file system is read-only; pick another place",
    errno.EACCES: "permission denied; pick another place",
    errno.EPERM: "operation not permitted; pick another place",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EIO: "the disk reported an input/output error",
}


_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def os_error_message(exc: OSError) -> str | None:
    """One line for the file system errors a user can cause or fix; None for the rest."""
    reason = _OS_ERRORS.get(exc.errno or -1)
    if reason is None:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    verb = "write" if exc.errno in _WRITE_ERRORS else "use"
    return f"cannot {verb} {where}{reason}"


if __name__ == "__main__":
    main()
