"""The benchmark's outputs: a table on the console and a JSON file.

Both are made from the same JSON-ready result (see ``build_result``), so a saved JSON can
be shown again with ``render_table``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from .figures import SYMBOLS, Figure

SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null, everywhere in the structure."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def build_result(
    *,
    suite: str,
    started_at: str,
    duration_s: float,
    machine: dict[str, Any],
    groups: dict[str, dict[str, Any]],
    figures: list[tuple[str, Figure]],
) -> dict[str, Any]:
    """The whole run as JSON-ready data; figures keep the order they were measured in.

    ``groups`` maps a group name to its status (``ok``/``error``), ``duration_s``, the
    ``figures`` it made and its ``error`` (None when it ran through).
    """
    return _clean(
        {
            "schema_version": SCHEMA_VERSION,
            "suite": suite,
            "started_at": started_at,
            "duration_s": round(duration_s, 2),
            "ok": all(group["status"] == "ok" for group in groups.values()),
            "machine": machine,
            "groups": groups,
            "figures": {fig.key: {"group": group, **fig.to_json()} for group, fig in figures},
        }
    )


def write_json(result: dict[str, Any], path: Path) -> Path:
    """Write the result as indented JSON (strict: no NaN), atomically."""
    path = Path(path).expanduser()
    text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file
    return path


def format_value(value: float | int | None) -> str:
    """At most six characters: 1234, 123, 12.3, 1.23, 0.123, 0.0012."""
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"  # small ratios such as espeak's RTF; the JSON keeps every digit


def _target_text(target: dict[str, Any] | None) -> str:
    if not target:
        return ""
    symbol = SYMBOLS.get(target["comparison"], target["comparison"])
    return f"{target['statistic']} {symbol} {target['value']:g}"


def _met_text(met: bool | None) -> str:
    if met is None:
        return ""
    return "[green]✓[/]" if met else "[red]✗[/]"


def render_table(result: dict[str, Any], console: Console) -> None:
    """Print the figures of a result, group by group; failed groups in red, their errors below."""
    table = Table(
        title=f"avatar bench --suite {result['suite']} ({result['duration_s']:.0f} s)",
        title_justify="left",
        box=box.SIMPLE_HEAD,  # no vertical rules: fits 80 columns
        pad_edge=False,
    )
    # Titles wrap rather than squeeze the numbers out of an 80-column terminal.
    table.add_column("figure", overflow="fold", max_width=40)
    table.add_column("unit", no_wrap=True)
    for name in ("min", "p50", "p95", "max"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("met", justify="center", no_wrap=True, min_width=3)
    figures = result["figures"]
    for index, (name, group) in enumerate(result["groups"].items()):
        if index:
            table.add_section()
        for key in group["figures"]:
            fig = figures[key]
            table.add_row(
                fig["title"],
                fig["unit"],
                *(format_value(fig[stat]) for stat in ("min", "p50", "p95", "max")),
                _target_text(fig["target"]),
                _met_text(fig["met"]),
            )
        if group["status"] != "ok":
            table.add_row(f"[bold red]{name}: failed[/]", *[""] * 6, "[red]✗[/]")
    console.print(table)
    for name, group in result["groups"].items():
        if group["status"] != "ok":  # below the table, where a long message does not widen it
            console.print(f"[bold red]{name} failed:[/] {group['error']}", highlight=False)
    machine = result["machine"]
    load = machine.get("load_average_at_start")
    console.print(
        f"[dim]{machine.get('cpu_model')}, {machine.get('cpu_count_usable')} usable core(s), "
        f"load at start {load[0] if load else '?'}, Python {machine.get('python')}[/]",
        highlight=False,
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The figures of a result as a Markdown table (for docs/BENCHMARKS.md)."""
    lines = [
        "| figure | unit | n | min | p50 | p95 | max | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | :---: |",
    ]
    for group in result["groups"].values():
        for key in group["figures"]:
            fig = result["figures"][key]
            met = {True: "yes", False: "**no**", None: ""}[fig["met"]]
            stats = " | ".join(format_value(fig[s]) for s in ("min", "p50", "p95", "max"))
            lines.append(
                f"| {fig['title']} (`{key}`) | {fig['unit']} | {fig['n']} | {stats} | "
                f"{_target_text(fig['target'])} | {met} |"
            )
    return "\n".join(lines) + "\n"
