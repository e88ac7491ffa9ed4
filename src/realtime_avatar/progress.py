"""The rich progress bar every long command shows."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


def progress_bar(console: Console, *, transient: bool = False) -> Progress:
    """Description, bar, per cent and elapsed time; ``transient`` clears it when done."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
