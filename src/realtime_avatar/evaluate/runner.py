"""Run a suite of the gold set and write the report: what ``avatar eval`` calls.

    python -m realtime_avatar.evaluate.runner --suite quick --out eval-out

Say scenarios run in this process through ``render_script``; live scenarios share one
real ``avatar serve`` subprocess started for the run. A scenario that crashes is recorded
with its error and the run goes on; the report says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .. import __version__
from ..avatars.registry import load_avatar
from ..engine.script import render_script
from ..errors import AvatarError
from ..settings import Settings, get_settings
from . import dialogue_gold
from .instruments import RENDER_CLOCK, Instruments
from .live_scoring import run_live
from .manifest import Manifest, Scenario, load_manifest
from .report import build_json, write_report
from .say import run_say
from .scores import Score, apply_thresholds
from .scoring import ScenarioOutcome
from .server_proc import ServerStartError, running_server

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
WARM_UP_TEXT = {"en": "Hello.", "es": "Hola.", "zh": "你好。"}


class OutputDirError(AvatarError):
    """The report folder cannot be created or written."""


def run_suite(
    suite: str,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    manifest_path: Path | None = None,
    settings: Settings | None = None,
    keep_media: bool = True,
) -> Path:
    """Run ``suite`` of the gold set, write report.json and report.html into ``out_dir``.

    Returns the path of report.json. ``progress(label, done, total)`` is called as
    scenarios start and finish. ``keep_media=False`` deletes the rendered MP4s once they
    are scored (the report names them; the manifest makes them again).
    """
    started_wall = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    settings = settings or get_settings()
    manifest = load_manifest(manifest_path)
    scenarios = manifest.suite(suite)
    out_dir = _prepare_out_dir(Path(out_dir))
    media_dir = out_dir / "media"
    media_dir.mkdir(exist_ok=True)
    says = [s for s in scenarios if s.kind == "say"]
    lives = [s for s in scenarios if s.kind == "live"]
    total = len(scenarios) + 3
    step: Progress = progress or _no_progress

    # The dialogue gold set is text in, text out: no model, a second or so, every suite.
    step("dialogue gold set", 0, total)
    suite_scores, dialogue = dialogue_gold.eval_dialogue(manifest.avatar, settings)
    done = 1
    inst: Instruments | None = None
    if says or lives:
        step("loading instruments", done, total)
        avatar = load_avatar(manifest.avatar, settings=settings)
        inst = Instruments.load(settings, avatar)
    if says:
        step("warming up the say pipeline", done, total)
        suite_scores += _warm_up(settings, manifest.avatar, says)
    done += 1
    outcomes: list[ScenarioOutcome] = []
    try:
        for scenario in says:
            step(f"say: {scenario.id}", done, total)
            assert inst is not None
            outcomes.append(_guarded(scenario, partial(run_say, scenario, inst, media_dir)))
            done += 1
        if lives:
            assert inst is not None
            done = _run_live_scenarios(
                lives, inst, settings, out_dir, outcomes, suite_scores, step, done, total
            )
    finally:
        if inst is not None:
            inst.close()
    step("writing the report", done, total)
    scores = suite_scores + [s for o in outcomes for s in o.scores]
    apply_thresholds(scores, manifest.thresholds)
    context: dict[str, Any] = {}
    if inst is not None and inst.reference_self_similarity is not None:
        context["voice.reference_self_similarity"] = round(inst.reference_self_similarity, 4)
    elif inst is not None and inst.speaker_reason:
        context["voice.reference_self_similarity"] = f"not measured: {inst.speaker_reason}"
    instruments = inst.describe() if inst is not None else {}
    instruments[dialogue_gold.INSTRUMENT] = {
        **dialogue_gold.INSTRUMENT_DESCRIPTION,
        "package": f"realtime-avatar {__version__}, {dialogue['gold_set']['path']}",
        "model_sha256": dialogue["gold_set"]["sha256"],
    }
    report = build_json(
        manifest=manifest,
        suite=suite,
        outcomes=outcomes,
        scores=scores,
        instruments=instruments,
        context=context,
        meta=_meta(settings, manifest, suite, out_dir, started_at, started_wall),
    )
    report["dialogue"] = dialogue
    if not keep_media:
        for video in media_dir.glob("*.mp4"):
            video.unlink()
        if not any(media_dir.iterdir()):
            media_dir.rmdir()
        report["media_kept"] = False
    path = write_report(report, outcomes, out_dir)
    step("done", total, total)
    log.info("wrote %s", path)
    return path


def _no_progress(label: str, done: int, total: int) -> None:
    """Progress goes nowhere when nobody asked for it."""


def _prepare_out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise OutputDirError(
            f"cannot write the report into {out_dir}: {error}; pick another --out folder"
        ) from error
    return out_dir


def _warm_up(settings: Settings, avatar: str, says: list[Scenario]) -> list[Score]:
    """Render one short line in each language the say scenarios use, before timing them.

    The first render in a language loads its synthesizer and measures that voice for the
    matcher; that one-off cost is reported on its own as the cold start, so the scenarios'
    real-time factors are steady-state figures.
    """
    languages: dict[str, str] = {}
    for scenario in says:
        for segment in scenario.segments:
            languages.setdefault(segment.language, WARM_UP_TEXT.get(segment.language, segment.text))
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        for language, text in languages.items():
            started = time.perf_counter()
            render_script(
                text,
                Path(tmp) / f"warm-{language}.mp4",
                avatar_name=avatar,
                language=language,
                settings=settings,
            )
            wall = time.perf_counter() - started
            scores.append(
                Score(
                    "suite",
                    "say.cold_start_s",
                    wall,
                    "s",
                    RENDER_CLOCK,
                    "latency",
                    detail=f"first render in {language} ({text!r}): models load",
                    language=language,
                )
            )
    return scores


def _guarded(scenario: Scenario, run: Callable[[], ScenarioOutcome]) -> ScenarioOutcome:
    """Run one scenario; a crash becomes the scenario's recorded error."""
    started = time.perf_counter()
    try:
        outcome = run()
    except Exception as error:  # noqa: BLE001 - one broken scenario must not lose the run
        log.exception("scenario %s failed", scenario.id)
        outcome = ScenarioOutcome(scenario, error=f"{type(error).__name__}: {error}")
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _run_live_scenarios(
    lives: list[Scenario],
    inst: Instruments,
    settings: Settings,
    out_dir: Path,
    outcomes: list[ScenarioOutcome],
    suite_scores: list[Score],
    step: Progress,
    done: int,
    total: int,
) -> int:
    """Start one server for every live scenario and run them in turn."""
    step("starting avatar serve", done, total)
    finished = 0
    try:
        with running_server(Path(settings.data_dir).expanduser(), out_dir / "logs") as server:
            suite_scores.append(
                Score(
                    "suite",
                    "server.ready_s",
                    server.ready_s,
                    "s",
                    "clock.client",
                    "latency",
                    detail="avatar serve start to a healthy /health (models warm)",
                )
            )
            for scenario in lives:
                label = f"live: {scenario.id}"
                step(label, done, total)

                def on_turn(n: int, label: str = label, done: int = done) -> None:
                    step(f"{label} (turn {n})", done, total)

                run = partial(run_live, scenario, inst, server.base_url, on_turn=on_turn)
                outcomes.append(_guarded(scenario, run))
                done += 1
                finished += 1
    except ServerStartError as error:
        log.error("avatar serve did not start: %s", error)
        for scenario in lives[finished:]:
            outcomes.append(ScenarioOutcome(scenario, error=f"avatar serve did not start: {error}"))
            done += 1
    return done


def _git_commit() -> str | None:
    """The checked-out commit, read-only (``None`` outside a git checkout)."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return f"{commit}+dirty" if dirty.stdout.strip() else commit


def _meta(
    settings: Settings,
    manifest: Manifest,
    suite: str,
    out_dir: Path,
    started_at: dt.datetime,
    started_wall: float,
) -> dict[str, Any]:
    return {
        "command": f"python -m realtime_avatar.evaluate.runner --suite {suite} --out {out_dir}",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started_wall, 1),
        "system": {
            "realtime_avatar": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "git_commit": _git_commit(),
        },
        "settings": {
            "renderer": settings.renderer,
            "voice_matcher": settings.voice_matcher,
            "tts_english": settings.tts_english,
            "tts_other": settings.tts_other,
            "asr": settings.asr,
            "asr_multilingual": settings.asr_multilingual,
            "dialogue": "persona",
            "avatar": manifest.avatar,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run a suite, print where the report is."""
    parser = argparse.ArgumentParser(description="Grade the avatar with the gold-set scenarios.")
    parser.add_argument(
        "--suite", default="quick", help="quick (CI, ~3 min), full, or dialogue (seconds)"
    )
    parser.add_argument("--out", type=Path, default=Path("eval-report"), help="report folder")
    parser.add_argument("--manifest", type=Path, default=None, help="another scenario manifest")
    parser.add_argument(
        "--no-media", action="store_true", help="delete the rendered MP4s after scoring"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def progress(label: str, done: int, total: int) -> None:
        sys.stderr.write(f"\r[{done}/{total}] {label[:70]:<70}")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\n")

    try:
        path = run_suite(
            args.suite,
            args.out,
            progress,
            manifest_path=args.manifest,
            keep_media=not args.no_media,
        )
    except AvatarError as error:
        sys.stderr.write(f"\nerror: {error.message}\n")
        return 2
    sys.stdout.write(f"{path}\n{path.with_name('report.html')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
