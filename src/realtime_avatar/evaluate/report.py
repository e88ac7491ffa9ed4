"""The evaluation report: ``report.json`` (every score, traceable) and a self-contained HTML.

The HTML embeds its plots and sample frames as base64 PNG/JPEG, so the one file can be
mailed or committed; the same images are also written beside it (``plots/``, ``frames/``)
and named in the JSON.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest
from .scores import Score, Summary, Threshold
from .scoring import ScenarioOutcome

log = logging.getLogger(__name__)

# The metrics of the per-scenario matrix, in column order: (metric, column title).
MATRIX = [
    ("lipsync.offset_ms", "A/V offset ms"),
    ("lipsync.correlation", "sync r"),
    ("lipsync.drift_ms_per_min", "drift ms/min"),
    ("voice.similarity", "voice sim"),
    ("voice.similarity_gain", "sim gain"),
    ("asr.wer", "WER"),
    ("asr.cer", "CER"),
    ("language.audio", "audio lang"),
    ("language.text", "text lang"),
    ("language.heard", "heard lang"),
    ("identity.appearance_ssim", "identity SSIM"),
    ("say.rtf", "RTF"),
    ("latency.voice_to_first_audio_ms", "voice→audio ms"),
    ("barge_in.audio_stop_ms", "barge-in ms"),
    ("video.fps", "fps"),
]
STAGE_LABELS = [
    ("asr_final_ms", "speech end → ASR final"),
    ("first_token_ms", "→ first dialogue token"),
    ("first_audio_ms", "→ first TTS audio"),
    ("first_frame_ms", "→ first video frame"),
]


def build_json(
    *,
    manifest: Manifest,
    suite: str,
    outcomes: list[ScenarioOutcome],
    scores: list[Score],
    instruments: dict[str, Any],
    context: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    errors = sum(1 for o in outcomes if o.error)
    summary = Summary.of(scores, errors)
    return {
        "schema": 1,
        "suite": suite,
        "suite_description": manifest.suites.get(suite, ""),
        **meta,
        "manifest": {
            "path": str(manifest.path.name),
            "sha256": manifest.sha256,
            "version": manifest.version,
            "avatar": manifest.avatar,
        },
        "thresholds": [_threshold_json(t) for t in manifest.thresholds],
        "instruments": instruments,
        "context": context,
        "summary": summary.__dict__,
        "scenarios": [
            {
                "id": o.scenario.id,
                "kind": o.scenario.kind,
                "description": o.scenario.description,
                "languages": list(o.scenario.languages),
                "status": "error" if o.error else "ok",
                "error": o.error,
                "wall_s": round(o.wall_s, 2),
                "details": _jsonable(o.details),
            }
            for o in outcomes
        ],
        "scores": [
            {**s.to_json(), "instrument_version": _version_of(instruments, s.instrument)}
            for s in scores
        ],
    }


def _version_of(instruments: dict[str, Any], name: str) -> str:
    """One line naming the instrument's package and model, for a score in the JSON."""
    info = instruments.get(name, {})
    parts = [info.get("package", ""), info.get("model_sha256", "")[:12]]
    return " · model sha256 ".join(p for p in parts if p) or "this program's clock"


def _threshold_json(rule: Threshold) -> dict[str, Any]:
    return {
        "metric": rule.metric,
        "language": rule.language,
        "min": rule.minimum,
        "max": rule.maximum,
        "equals": "expected" if rule.equals_expected else None,
        "rule": rule.describe(),
        "why": rule.why,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------------------------- plots


def _png(fig: Any, path: Path) -> str:
    """Save ``fig`` to ``path`` and return it base64-encoded."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def make_plots(report: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Every plot of the report: name -> base64 PNG (also written to ``out_dir/plots``)."""
    import matplotlib

    matplotlib.use("Agg")
    plots: dict[str, str] = {}
    makers = (
        ("latency", _plot_latency),
        ("lipsync", _plot_lipsync),
        ("traces", _plot_traces),
        ("similarity", _plot_similarity),
        ("drift", _plot_drift),
    )
    for name, maker in makers:
        try:
            fig = maker(report)
        except Exception:  # noqa: BLE001 - a broken plot must not lose the report
            log.exception("plot %s failed", name)
            continue
        if fig is not None:
            plots[name] = _png(fig, out_dir / "plots" / f"{name}.png")
    return plots


def _plot_latency(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    rows: list[tuple[str, list[float], float | None]] = []
    for scenario in report["scenarios"]:
        turns = scenario["details"].get("turns") or []
        if len(turns) > 8:  # a long session: its medians, not 30 bars
            turns = []
        for index, turn in enumerate(turns):
            stages = turn.get("stage_ms") or {}
            if not all(k in stages for k, _ in STAGE_LABELS):
                continue
            marks = [float(stages[k]) for k, _ in STAGE_LABELS]
            parts = [marks[0]] + [max(b - a, 0.0) for a, b in zip(marks, marks[1:], strict=False)]
            label = f"{scenario['id']} t{index + 1} ({turn['language']})"
            rows.append((label, parts, turn.get("voice_to_first_audio_ms")))
    say = [
        (s["id"], s["details"].get("rtf"))
        for s in report["scenarios"]
        if s["kind"] == "say" and s["details"].get("rtf") is not None
    ]
    if not rows and not say:
        return None
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(12, max(3.0, 0.38 * max(len(rows), len(say)) + 1.6)),
        gridspec_kw={"width_ratios": [3, 2]},
    )
    ax = axes[0]
    colours = ["#4c78a8", "#f58518", "#54a24b", "#b279a2"]
    if rows:
        y = np.arange(len(rows))
        left = np.zeros(len(rows))
        for k, (_, name) in enumerate(STAGE_LABELS):
            widths = np.array([r[1][k] for r in rows])
            ax.barh(y, widths, left=left, color=colours[k], label=name)
            left += widths
        client = [(i, r[2]) for i, r in enumerate(rows) if r[2] is not None]
        if client:
            ax.scatter(
                [c[1] for c in client],
                [c[0] for c in client],
                marker="D",
                color="black",
                zorder=3,
                label="client: end of speech → first sound",
            )
        ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms after the end of the user's speech")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    else:
        ax.text(0.5, 0.5, "no live turns", ha="center", va="center")
    ax.set_title("Live turn latency by stage (server marks)")
    ax = axes[1]
    if say:
        ax.barh(np.arange(len(say)), [v for _, v in say], color="#4c78a8")
        ax.set_yticks(np.arange(len(say)), [k for k, _ in say], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="#d62728", linestyle="--", linewidth=1, label="real time")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_xlabel("wall time / video duration")
    ax.set_title("avatar say real-time factor")
    fig.tight_layout()
    return fig


def _plot_lipsync(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    curves = [
        (s["id"], s["kind"], s["details"]["lipsync"])
        for s in report["scenarios"]
        if s["details"].get("lipsync")
    ]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(12, 4.6))
    colours = plt.get_cmap("tab20")
    low, high = _offset_window(report)
    ax.axvspan(low, high, color="#54a24b", alpha=0.12, label="pass window")
    for index, (sid, kind, data) in enumerate(curves):
        lags_ms = np.array(data["lags"]) * 40.0
        curve = np.array([np.nan if v is None else v for v in data["curve"]], dtype=float)
        ax.plot(
            lags_ms,
            curve,
            marker="." if kind == "say" else "s",
            markersize=4,
            linewidth=1.2 if kind == "say" else 2.0,
            linestyle="-" if kind == "say" else "--",
            color=colours(index % 20),
            label=f"{sid} ({data['offset_ms']:+.0f} ms)",
        )
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("lag (ms); > 0: the mouth moves after the sound")
    ax.set_ylabel("Pearson r, mouth opening vs audio level")
    ax.set_title("Lip-sync cross-correlation per scenario (dashed: live, at the client)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _plot_traces(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    traced = [s for s in report["scenarios"] if s["details"].get("trace")]
    medium = [s for s in traced if "medium" in s["id"]]
    chosen = (medium or traced)[:3]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 2.3 * len(chosen)), squeeze=False)
    for ax, scenario in zip(axes[:, 0], chosen, strict=True):
        trace = scenario["details"]["trace"]
        mouth = np.array(trace["mouth_opening"], dtype=float)
        audio = np.array(trace["audio_db"], dtype=float)
        seconds = np.arange(len(mouth)) / 25.0
        ax.plot(seconds, _unit(audio), color="#bab0ac", linewidth=1.2, label="audio level (dB)")
        ax.plot(seconds, _unit(mouth), color="#d62728", linewidth=1.2, label="mouth opening")
        ax.set_ylabel("scaled 0-1")
        ax.set_title(f"{scenario['id']}: the two series the cross-correlation aligns", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds into the video")
    fig.tight_layout()
    return fig


def _unit(values: np.ndarray) -> np.ndarray:
    span = float(np.nanmax(values) - np.nanmin(values)) or 1.0
    return (values - np.nanmin(values)) / span


def _offset_window(report: dict[str, Any]) -> tuple[float, float]:
    for rule in report["thresholds"]:
        if rule["metric"] == "lipsync.offset_ms":
            return float(rule["min"] or -125), float(rule["max"] or 45)
    return -125.0, 45.0


def _plot_similarity(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    rows: dict[str, dict[str, list[float]]] = {}
    for score in report["scores"]:
        if score["metric"] in ("voice.similarity", "voice.similarity_raw") and score["measured"]:
            kind = "matched" if score["metric"] == "voice.similarity" else "raw"
            rows.setdefault(score["scenario"], {"matched": [], "raw": []})[kind].append(
                score["value"]
            )
    if not rows:
        return None
    names = list(rows)
    matched = [float(np.mean(rows[n]["matched"])) if rows[n]["matched"] else np.nan for n in names]
    raw = [float(np.mean(rows[n]["raw"])) if rows[n]["raw"] else np.nan for n in names]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(names) + 2.2))
    y = np.arange(len(names))
    ax.barh(y - 0.2, raw, height=0.4, color="#bab0ac", label="raw TTS voice")
    ax.barh(y + 0.2, matched, height=0.4, color="#4c78a8", label="avatar output (voice matched)")
    reference = report["context"].get("voice.reference_self_similarity")
    if reference is not None:
        ax.axvline(reference, color="#54a24b", linestyle=":", label="reference vs itself (halves)")
    for rule in report["thresholds"]:
        if rule["metric"] == "voice.similarity" and rule["min"] is not None:
            ax.axvline(rule["min"], color="#d62728", linestyle="--", linewidth=1, label="threshold")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("resemblyzer cosine similarity to the avatar's reference voice (mean of turns)")
    ax.set_title("Speaker similarity per scenario")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    fig.tight_layout()
    return fig


def _plot_drift(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    series = [
        (s["id"], s["details"]["windows"])
        for s in report["scenarios"]
        if s["details"].get("windows")
    ]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for sid, windows in series:
        points = [
            ((w["start_s"] + w["end_s"]) / 120.0, w["offset_ms"])
            for w in windows
            if w["offset_ms"] is not None
        ]
        if not points:
            continue
        x, y = np.array(points).T
        line = ax.plot(x, y, marker="o", label=sid)[0]
        if len(points) >= 3:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 10)
            ax.plot(
                grid,
                slope * grid + intercept,
                linestyle="--",
                color=line.get_color(),
                linewidth=1,
                label=f"{sid} fit: {slope:+.1f} ms/min",
            )
    low, high = _offset_window(report)
    ax.axhspan(low, high, color="#54a24b", alpha=0.1, label="pass window")
    ax.set_xlabel("minutes into the recording (window centre)")
    ax.set_ylabel("A/V offset (ms)")
    ax.set_title("Lip-sync drift over long recordings")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- frames


def save_frames(outcomes: list[ScenarioOutcome], out_dir: Path) -> list[tuple[str, str, str]]:
    """Write each scenario's sample frames as JPEG; (caption, relative path, base64)."""
    import cv2

    out: list[tuple[str, str, str]] = []
    folder = out_dir / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    for outcome in outcomes:
        for index, (caption, rgb) in enumerate(outcome.samples):
            small = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(
                ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
            )
            if not ok:
                continue
            name = f"{outcome.scenario.id}-{index}.jpg"
            (folder / name).write_bytes(data.tobytes())
            out.append((caption, f"frames/{name}", base64.b64encode(data.tobytes()).decode()))
    return out


# ---------------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,'Noto Sans CJK SC','PingFang SC',
  'Microsoft YaHei',sans-serif;margin:24px auto;
  max-width:1200px;color:#222;line-height:1.4;padding:0 16px}
h1{margin-bottom:4px}
h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}
.meta code{font-size:12px}
.badges span{display:inline-block;padding:6px 12px;margin:4px 6px 4px 0;border-radius:14px;
  font-weight:600}
.pass{background:#d8f0d8;color:#1d5e1d}
.fail{background:#f8d7d7;color:#8a1c1c}
.nm{background:#eee;color:#555}
.info{background:#e3ecf7;color:#24476b}
.err{background:#fbe3c0;color:#7a4a00}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.pass,td.fail,td.nm,td.info{font-weight:600}
.matrix td{text-align:center;white-space:nowrap}
img.plot{max-width:100%;border:1px solid #eee;margin:8px 0}
.frames{display:flex;flex-wrap:wrap;gap:10px}
.frames figure{margin:0;width:180px;font-size:11px;color:#555}
.frames img{width:180px;height:180px;border:1px solid #ddd}
details summary{cursor:pointer;font-weight:600;margin:8px 0}
.small{font-size:12px;color:#555}
"""


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and unit in ("ms", "ms/min"):
        return f"{value:+.0f}" if unit == "ms/min" or value < 0 else f"{value:.0f}"
    if isinstance(value, float) and unit in ("s", "fps"):
        return f"{value:.2f}" if unit == "s" else f"{value:.1f}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return str(value)


def _status(score: dict[str, Any]) -> tuple[str, str]:
    if not score["measured"]:
        return "nm", "not measured"
    if score["passed"] is None:
        return "info", "info"
    return ("pass", "pass") if score["passed"] else ("fail", "FAIL")


def _esc(text: Any) -> str:
    return html.escape(str(text))


def render_html(
    report: dict[str, Any], plots: dict[str, str], frames: list[tuple[str, str, str]]
) -> str:
    """The report page (self-contained)."""
    summary = report["summary"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>avatar eval — {_esc(report['suite'])}</title><style>{CSS}</style></head><body>",
        f"<h1>avatar eval: {_esc(report['suite'])} suite</h1>",
        "<div class='meta'>",
        f"{_esc(report.get('finished_at', ''))} · {report.get('duration_s', 0):.0f} s · "
        f"realtime-avatar {_esc(report['system'].get('realtime_avatar', ''))} · commit "
        f"<code>{_esc(report['system'].get('git_commit') or 'unknown')}</code> · "
        f"{_esc(report['system'].get('cpus'))} CPUs · manifest "
        f"<code>{_esc(report['manifest']['path'])}</code> "
        f"sha256 <code>{_esc(report['manifest']['sha256'][:16])}…</code><br>",
        f"Command: <code>{_esc(report.get('command', ''))}</code><br>",
        f"{_esc(report.get('suite_description', ''))}</div>",
        "<div class='badges'>",
        f"<span class='pass'>{summary['passed']} passed</span>",
        f"<span class='fail'>{summary['failed']} failed</span>",
        f"<span class='nm'>{summary['not_measured']} not measured</span>",
        f"<span class='info'>{summary['informational']} informational</span>",
        f"<span class='err'>{summary['scenario_errors']} scenario errors</span></div>",
    ]
    parts.append(_matrix_html(report))
    parts.append(_dialogue_html(report))
    errors = [s for s in report["scenarios"] if s["status"] == "error"]
    if errors:
        parts.append("<h2>Scenario errors</h2><ul>")
        parts += [f"<li><b>{_esc(s['id'])}</b>: {_esc(s['error'])}</li>" for s in errors]
        parts.append("</ul>")
    failed = [s for s in report["scores"] if s["measured"] and s["passed"] is False]
    if failed:
        parts.append("<h2>Failures</h2>")
        parts.append(_scores_table(failed))
    titles = {
        "latency": "Latency breakdown per stage",
        "lipsync": "Lip-sync cross-correlation",
        "traces": "Lip-sync: mouth opening against the audio",
        "similarity": "Voice similarity per scenario",
        "drift": "Lip-sync drift",
    }
    for name, title in titles.items():
        if name in plots:
            parts.append(
                f"<h2>{title}</h2><img class='plot' alt='{name}' "
                f"src='data:image/png;base64,{plots[name]}'>"
            )
    if frames:
        parts.append("<h2>Sample frames</h2><div class='frames'>")
        parts += [
            f"<figure><img alt='{_esc(c)}' src='data:image/jpeg;base64,{b}'><figcaption>{_esc(c)}"
            "</figcaption></figure>"
            for c, _, b in frames
        ]
        parts.append("</div>")
    parts.append(_turns_html(report))
    nm = [s for s in report["scores"] if not s["measured"]]
    if nm:
        parts.append("<h2>Not measured, and why</h2>")
        parts.append(_scores_table(nm))
    parts.append(
        "<h2>All scores</h2><details><summary>"
        f"{len(report['scores'])} scores (scenario, metric, instrument)</summary>"
    )
    parts.append(_scores_table(report["scores"]))
    parts.append("</details>")
    parts.append(_instruments_html(report))
    parts.append(_thresholds_html(report))
    context = report.get("context") or {}
    if context:
        parts.append("<h2>Context figures</h2><ul>")
        parts += [f"<li>{_esc(k)}: {_esc(_fmt(v))}</li>" for k, v in context.items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _matrix_html(report: dict[str, Any]) -> str:
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for score in report["scores"]:
        cells.setdefault((score["scenario"], score["metric"]), []).append(score)
    columns = [(m, t) for m, t in MATRIX if any(k[1] == m for k in cells)]
    rows = [
        "<h2>Summary</h2><p class='small'>Each cell: the scenario's value (the worst turn "
        "or segment where there are several); green passes its threshold, red fails, grey "
        "was not measured, blue has no threshold. Every figure is in the tables below and "
        "in report.json.</p><table class='matrix'><tr><th>scenario</th>"
    ]
    rows += [f"<th>{_esc(t)}</th>" for _, t in columns]
    rows.append("</tr>")
    for scenario in report["scenarios"]:
        sid = scenario["id"]
        rows.append(
            f"<tr><td style='text-align:left'><b>{_esc(sid)}</b>"
            f"<br><span class='small'>{_esc(scenario['kind'])} · "
            f"{_esc('→'.join(scenario['languages']))}</span></td>"
        )
        for metric, _ in columns:
            rows.append(_cell(cells.get((sid, metric), [])))
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _dialogue_html(report: dict[str, Any]) -> str:
    """The dialogue gold set: score per language, then every item that failed."""
    section = report.get("dialogue")
    if not section:
        return ""
    rules = {
        s["language"]: s
        for s in report["scores"]
        if s["metric"] == "dialogue.gold_score" and s["measured"]
    }
    out = [
        "<h2>Dialogue gold set</h2><p class='small'>"
        f"{_esc(section['responder'])} responder on the persona of "
        f"{_esc(section['persona_name'])} (<code>{_esc(section['persona_source'])}</code>); "
        f"{_esc(section['gold_set']['items'])} items of <code>"
        f"{_esc(section['gold_set']['path'])}</code>; answers took "
        f"{section['answer_ms_mean']:.2f} ms on average (max {section['answer_ms_max']:.1f} "
        "ms).</p><table><tr><th>language</th><th>items</th><th>answered well</th>"
        "<th>score</th><th>threshold</th><th>persona facts in it</th></tr>"
    ]
    for lang, entry in section["scores"].items():
        score = rules.get(lang, {})
        css, label = _status(score) if score else ("info", "info")
        out.append(
            f"<tr><td>{_esc(lang)}</td><td class='num'>{entry['items']}</td>"
            f"<td class='num'>{entry['passed']}</td><td class='{css}'>"
            f"{entry['score']:.0%} {label}</td><td>{_esc(score.get('threshold', ''))}</td>"
            f"<td class='num'>{section['facts_by_language'].get(lang, 0)}</td></tr>"
        )
    out.append("</table>")
    failed = [item for item in section["items"] if not item["passed"]]
    if failed:
        out.append(f"<details><summary>{len(failed)} items not answered well</summary><table>")
        out.append("<tr><th>item</th><th>visitor</th><th>avatar</th><th>what is wrong</th></tr>")
        for item in failed:
            for turn in item["turns"]:
                out.append(
                    f"<tr><td>{_esc(item['id'])}</td><td>{_esc(turn['say'])}</td>"
                    f"<td>{_esc(turn['answer'])}</td><td>{_esc('; '.join(turn['problems']))}"
                    "</td></tr>"
                )
        out.append("</table></details>")
    return "".join(out)


def _cell(scores: list[dict[str, Any]]) -> str:
    if not scores:
        return "<td></td>"
    failed = [s for s in scores if s["measured"] and s["passed"] is False]
    measured = [s for s in scores if s["measured"]]
    pick = failed[0] if failed else (measured[-1] if measured else scores[0])
    css, _ = _status(pick)
    title = _esc(pick["reason"] or pick["detail"] or "")
    value = _fmt(pick["value"], pick["unit"]) if pick["measured"] else "n/m"
    more = f" ({len(scores)})" if len(scores) > 1 else ""
    return f"<td class='{css}' title='{title}'>{_esc(value)}<span class='small'>{more}</span></td>"


def _scores_table(scores: list[dict[str, Any]]) -> str:
    rows = [
        "<table><tr><th>scenario</th><th>detail</th><th>metric</th><th>value</th>"
        "<th>unit</th><th>threshold</th><th>result</th><th>instrument</th><th>note</th></tr>"
    ]
    for s in scores:
        css, label = _status(s)
        note = s["reason"]
        extra = s.get("extra") or {}
        if not note and "heard" in extra:
            note = f"heard: {extra['heard']}"
        if not note and s.get("expected"):
            note = f"requested: {s['expected']}"
            if "probability" in extra:
                note += f"; detector's confidence {extra['probability']:.2f}"
        rows.append(
            f"<tr><td>{_esc(s['scenario'])}</td><td>{_esc(s['detail'])}</td>"
            f"<td>{_esc(s['metric'])}</td><td class='num'>{_esc(_fmt(s['value'], s['unit']))}</td>"
            f"<td>{_esc(s['unit'])}</td><td>{_esc(s['threshold'])}</td>"
            f"<td class='{css}'>{label}</td><td>{_esc(s['instrument'])}</td>"
            f"<td>{_esc(note)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _turns_html(report: dict[str, Any]) -> str:
    out = []
    for scenario in report["scenarios"]:
        turns = scenario["details"].get("turns")
        if not turns:
            continue
        shown = turns if len(turns) <= 12 else turns[:12]
        out.append(f"<h2>Live turns: {_esc(scenario['id'])}</h2>")
        if len(turns) > len(shown):
            out.append(
                f"<p class='small'>First {len(shown)} of {len(turns)} turns; all are in "
                "report.json.</p>"
            )
        out.append(
            "<table><tr><th>#</th><th>said</th><th>server heard</th><th>reply</th>"
            "<th>first sound ms</th><th>interrupted</th></tr>"
        )
        for index, turn in enumerate(shown):
            out.append(
                f"<tr><td>{index + 1}</td><td>{_esc(turn['said'])} "
                f"<span class='small'>({_esc(turn['language'])}"
                f"{', barge-in' if turn['barge_in'] else ''})</span></td>"
                f"<td>{_esc(turn['heard'])} <span class='small'>({_esc(turn['heard_language'])})"
                f"</span></td><td>{_esc(turn['reply_text'])}</td>"
                f"<td class='num'>{_esc(_fmt(turn.get('voice_to_first_audio_ms')))}</td>"
                f"<td>{_esc(turn['interrupted'])}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _instruments_html(report: dict[str, Any]) -> str:
    out = [
        "<h2>Instruments</h2><table><tr><th>id</th><th>measures</th><th>independent of</th>"
        "<th>versions</th></tr>"
    ]
    for name, info in report["instruments"].items():
        versions = " · ".join(
            f"{k}: {v}" for k, v in info.items() if k in ("package", "model", "model_sha256") and v
        )
        out.append(
            f"<tr><td><code>{_esc(name)}</code></td><td>{_esc(info.get('measures', ''))}"
            f"</td><td>{_esc(info.get('independent_of', ''))}</td>"
            f"<td class='small'>{_esc(versions)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _thresholds_html(report: dict[str, Any]) -> str:
    out = [
        "<h2>Thresholds (from the manifest)</h2><table><tr><th>metric</th><th>language</th>"
        "<th>rule</th><th>why</th></tr>"
    ]
    for rule in report["thresholds"]:
        out.append(
            f"<tr><td>{_esc(rule['metric'])}</td><td>{_esc(rule['language'] or 'any')}</td>"
            f"<td>{_esc(rule['rule'])}</td><td>{_esc(rule['why'])}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def write_report(report: dict[str, Any], outcomes: list[ScenarioOutcome], out_dir: Path) -> Path:
    """Write plots, frames, report.json and report.html into ``out_dir``; the JSON's path."""
    frames = save_frames(outcomes, out_dir)
    plots = make_plots(report, out_dir)
    report["images"] = {
        "plots": [f"plots/{name}.png" for name in plots],
        "frames": [{"caption": c, "path": p} for c, p, _ in frames],
    }
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(report, plots, frames), encoding="utf-8")
    return json_path


def rebuild(out_dir: Path) -> Path:
    """Redraw the plots and the HTML of an existing report from its report.json alone.

    Every plot is made from the data in report.json, so this shows that each figure is
    traceable to the recorded scores (and lets the page be improved without re-running).
    """
    json_path = Path(out_dir) / "report.json"
    report = json.loads(json_path.read_text(encoding="utf-8"))
    plots = make_plots(report, Path(out_dir))
    frames = []
    for item in report.get("images", {}).get("frames", []):
        image = Path(out_dir) / item["path"]
        if image.is_file():
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            frames.append((item["caption"], item["path"], data))
    report.setdefault("images", {})["plots"] = [f"plots/{name}.png" for name in plots]
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    html_path = Path(out_dir) / "report.html"
    html_path.write_text(render_html(report, plots, frames), encoding="utf-8")
    return html_path


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m realtime_avatar.evaluate.report REPORT_DIR\n")
        sys.exit(2)
    sys.stdout.write(f"{rebuild(Path(sys.argv[1]))}\n")
