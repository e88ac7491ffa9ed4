"""`avatar bench`: figure statistics, failed groups, and the quick suite's offline groups.

No timing assertions here: the numbers depend on the machine; the tests check that they
are measured and reported (finite, ordered, in valid JSON with the documented keys).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from realtime_avatar.benchmark.figures import BenchContext, Figure, Target
from realtime_avatar.benchmark.runner import lazy, run_bench

AVATAR = [sys.executable, "-m", "realtime_avatar.cli"]
SUMMARY_KEYS = {"min", "p50", "p95", "max", "n"}
FIGURE_KEYS = SUMMARY_KEYS | {"group", "title", "unit", "target", "met", "notes", "command"}


def test_figure_summary_and_target() -> None:
    fig = Figure("x_ms", "x", "ms", [float(v) for v in range(100, 0, -1)], Target("<=", 60.0))
    assert fig.summary() == {"min": 1.0, "p50": 50.5, "p95": 95.05, "max": 100.0, "n": 100}
    assert fig.met is True
    assert Figure("x", "x", "ms", [70.0, 80.0], Target("<=", 60.0)).met is False
    assert Figure("x", "x", "ms", [1.0, 9.0], Target(">=", 9.0, "max")).met is True
    assert Figure("x", "x", "ms", [5.0]).met is None  # no target
    empty = Figure("x", "x", "ms", [], Target("<=", 1.0))
    assert empty.summary()["n"] == 0 and empty.summary()["p50"] is None
    assert empty.met is None
    assert Target("<=", 6.0).describe() == "p50 ≤ 6"


def _ok_group(ctx: BenchContext) -> list[Figure]:
    ctx.progress("counting", 1, 2)
    return [Figure("ok_ms", "ok", "ms", [1.0, 2.0, float("nan")], Target("<=", 5.0))]


def _failing_group(ctx: BenchContext) -> list[Figure]:
    raise RuntimeError("the server did not start")


def test_failed_group_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    console = Console(file=io.StringIO(), width=100)
    result = run_bench(
        "quick",
        out,
        console,
        tmp_path / "data",
        groups=[
            ("boom", _failing_group),
            ("ok", _ok_group),
            ("missing", lazy("realtime_avatar.benchmark.no_such_module", "figures")),
        ],
    )
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved == result
    assert result["ok"] is False
    assert result["groups"]["boom"]["status"] == "error"
    assert "the server did not start" in result["groups"]["boom"]["error"]
    assert "no_such_module not found" in result["groups"]["missing"]["error"]
    assert result["groups"]["ok"]["status"] == "ok"
    ok = result["figures"]["ok_ms"]
    assert ok["n"] == 2 and ok["met"] is True  # the NaN sample is left out, not propagated
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "boom failed" in text and "the server did not start" in text


def _bench_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), COLUMNS="100")
    return subprocess.run(
        [*AVATAR, "bench", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # runs the avatar CLI in a subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "huge"], "unknown suite 'huge'"),
        (["--only", "render,warp"], "unknown group(s) warp"),
        (["--json", "/no/such/folder/b.json"], "does not exist"),
    ],
)
def test_bad_options_give_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = _bench_cli(*args, data_dir=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # registers the default avatar, renders ~450 frames, loads Piper: ~30 s
def test_quick_suite_offline_groups_on_a_fresh_data_dir(tmp_path: Path) -> None:
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    done = _bench_cli(
        "--suite", "quick", "--only", "render,tts", "--json", str(out), "--markdown", str(table),
        data_dir=tmp_path / "data",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"suite", "started_at", "duration_s", "machine", "groups", "figures"} <= set(result)
    assert result["suite"] == "quick" and result["ok"] is True
    assert list(result["groups"]) == ["render", "tts"]
    assert result["machine"]["cpu_count_logical"] >= 1
    assert "numpy" in result["machine"]["packages"]
    expected = {"render_ms", "render_h264_ms"} | {
        f"tts_{kind}_{lang}" for kind in ("first_audio_ms", "rtf") for lang in ("en", "es", "zh")
    }
    assert set(result["figures"]) == expected
    for key, fig in result["figures"].items():
        assert FIGURE_KEYS <= set(fig), key
        assert fig["n"] >= 1, key
        stats = [fig[name] for name in ("min", "p50", "p95", "max")]
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in stats), key
        assert stats == sorted(stats), key
        assert fig["met"] in (True, False, None)
    assert result["figures"]["render_ms"]["target"] == {
        "statistic": "p50",
        "comparison": "<=",
        "value": 6.0,
    }
    assert "render frame" in done.stderr  # the table
    rows = table.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 + len(expected)
    assert any("`render_ms`" in row and "p50 ≤ 6" in row for row in rows)
