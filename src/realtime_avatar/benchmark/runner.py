"""Run a benchmark suite: machine info, each registered figure group in turn, table, JSON.

To add a group, write ``def my_figures(ctx: BenchContext) -> list[Figure]`` and add
``("my-group", my_figures)`` to the suites in ``GROUPS`` (or to ``LIVE_GROUPS`` through
``lazy("module", "function")``, which imports only when the group runs).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from ..errors import AvatarError
from ..progress import progress_bar
from .figures import BenchContext, Figure
from .machine import machine_info
from .offline import render_figures, say_figures, tts_figures
from .report import build_result, render_table, write_json

log = logging.getLogger(__name__)

Group = Callable[[BenchContext], list[Figure]]


class BenchOptionError(AvatarError):
    """An unknown suite or group name, or a JSON path that cannot be written."""


def lazy(module: str, function: str) -> Group:
    """A group imported by name only when it runs: a missing module fails that group, clearly."""

    def run(ctx: BenchContext) -> list[Figure]:
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module == missing or module.startswith(missing + "."):  # not a dependency of it
                raise RuntimeError(
                    f"module {module} not found; write it or unregister the group"
                ) from None
            raise
        figures = getattr(loaded, function, None)
        if not callable(figures):
            raise RuntimeError(f"{module} has no figure function {function}()")
        result: list[Figure] = figures(ctx)
        return result

    run.__name__ = f"{module}:{function}"
    return run


OFFLINE_GROUPS: list[tuple[str, Group]] = [
    ("render", render_figures),
    ("tts", tts_figures),
    ("say", say_figures),
]

# ---------------------------------------------------------------- live (server) groups
# Groups that talk to a running `avatar serve` are registered here, imported lazily by name,
# e.g. ("asr", lazy(LIVE_MODULE, "asr_figures")). They run after the offline groups.
LIVE_MODULE = "realtime_avatar.benchmark.live"
LIVE_GROUPS: list[tuple[str, Group]] = [
    ("asr", lazy(LIVE_MODULE, "asr_figures")),  # the recognizer streamed alone
    # voice to first frame, ASR final live, barge-in: one call through the real server
    ("conversation", lazy(LIVE_MODULE, "conversation_figures")),
    ("fps", lazy(LIVE_MODULE, "fps_figures")),  # 1, 2 and 4 calls; peak RSS with 1 and 4
    ("soak", lazy(LIVE_MODULE, "soak_figures")),  # 2 min (quick) or 30 min (full): RSS flat
    # the pause set: cut-ins and end of speech -> first answer audio, decide vs silence
    ("turns", lazy("realtime_avatar.benchmark.turns", "turns_figures")),
]
# ---------------------------------------------------------------------------------------

# The groups of each suite, in the order they run; the suite name also tells each group
# how many samples to take (ctx.repeats).
GROUPS: dict[str, list[tuple[str, Group]]] = {
    "quick": [*OFFLINE_GROUPS, *LIVE_GROUPS],
    "full": [*OFFLINE_GROUPS, *LIVE_GROUPS],
}


def select_groups(
    suite: str, only: Sequence[str] | None = None, groups: Sequence[tuple[str, Group]] | None = None
) -> list[tuple[str, Group]]:
    """The groups to run: the suite's (or ``groups``), narrowed to ``only``, in suite order."""
    if groups is None:
        if suite not in GROUPS:
            raise BenchOptionError(f"unknown suite {suite!r}; use one of: {', '.join(GROUPS)}")
        groups = GROUPS[suite]
    chosen = list(groups)
    if only:
        known = [name for name, _ in chosen]
        unknown = [name for name in only if name not in known]
        if unknown:
            raise BenchOptionError(
                f"unknown group(s) {', '.join(unknown)}; the {suite} suite has: {', '.join(known)}"
            )
        chosen = [(name, group) for name, group in chosen if name in only]
    return chosen


def check_json_path(path: Path) -> Path:
    """Refuse a JSON path that cannot be written, before minutes of measuring."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BenchOptionError(f"{path} is a folder; give a file name such as {path / 'b.json'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BenchOptionError(f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise BenchOptionError(f"cannot write to {path}: permission denied")
    return path


@contextmanager
def _data_dir_env(data_dir: Path) -> Iterator[None]:
    """Point AVATAR_DATA_DIR at ``data_dir`` for the run, so subprocesses and code that read
    settings themselves use the same avatars and caches."""
    before = os.environ.get("AVATAR_DATA_DIR")
    os.environ["AVATAR_DATA_DIR"] = str(data_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AVATAR_DATA_DIR", None)
        else:
            os.environ["AVATAR_DATA_DIR"] = before


def _progress(console: Console) -> Progress:
    return progress_bar(console, transient=True)  # the table that follows is the result


def _run_group(
    name: str, group: Group, ctx: BenchContext, seen: dict[str, str]
) -> tuple[dict[str, Any], list[Figure]]:
    """Run one group; an exception becomes the group's error instead of ending the run."""
    start = time.perf_counter()
    try:
        figures = group(ctx)
        for fig in figures:
            if not isinstance(fig, Figure):
                raise TypeError(f"group returned {type(fig).__name__}, not a Figure")
            if fig.key in seen:
                raise ValueError(f"figure key {fig.key!r} is already used by group {seen[fig.key]}")
            seen[fig.key] = name
        status: dict[str, Any] = {"status": "ok", "error": None, "traceback": None}
    except Exception as exc:  # noqa: BLE001 - one failed group must not lose the others
        log.debug("group %s failed", name, exc_info=True)
        figures = []
        status = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    return {
        "status": status["status"],
        "duration_s": round(time.perf_counter() - start, 2),
        "figures": [fig.key for fig in figures],
        "error": status["error"],
        "traceback": status["traceback"],
    }, figures


def run_bench(
    suite: str,
    json_path: Path | None,
    console: Console,
    data_dir: Path | None = None,
    *,
    only: Sequence[str] | None = None,
    groups: Sequence[tuple[str, Group]] | None = None,
) -> dict[str, Any]:
    """Run ``suite`` (optionally only some groups), print the table, write the JSON.

    ``data_dir`` defaults to the settings' (AVATAR_DATA_DIR); ``groups`` replaces the
    suite's registered groups (tests). Returns the result; ``result["ok"]`` is False when a
    group failed.
    """
    chosen = select_groups(suite, only, groups)
    if json_path is not None:
        json_path = check_json_path(json_path)
    if data_dir is None:
        from ..settings import get_settings

        data_dir = get_settings().data_dir
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    machine = machine_info()  # load average before our own work raises it
    statuses: dict[str, dict[str, Any]] = {}
    measured: list[tuple[str, Figure]] = []
    seen: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="avatar-bench-") as work,
        _data_dir_env(data_dir),
        _progress(console) as bar,
    ):
        overall = bar.add_task(suite, total=len(chosen))
        step = bar.add_task("", total=None)

        def progress(label: str, done: int, total: int | None) -> None:
            bar.update(step, description=f"  {label}", completed=done, total=total)

        ctx = BenchContext(data_dir=data_dir, suite=suite, work_dir=Path(work), progress=progress)
        for index, (name, group) in enumerate(chosen):
            bar.update(overall, description=f"{name} ({index + 1}/{len(chosen)})", completed=index)
            bar.reset(step, description="  starting", total=None)
            statuses[name], figures = _run_group(name, group, ctx, seen)
            measured += [(name, fig) for fig in figures]
        bar.update(overall, completed=len(chosen))

    result = build_result(
        suite=suite,
        started_at=started_at,
        duration_s=time.perf_counter() - start,
        machine=machine,
        groups=statuses,
        figures=measured,
    )
    render_table(result, console)
    if json_path is not None:
        write_json(result, json_path)
        console.print(f"[green]wrote[/] {json_path}")
    return result
