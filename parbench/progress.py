"""Progress bars on stderr (rich): long work shows what it does, how fast, and how long is left."""

from __future__ import annotations


def progress_bar(quiet: bool, unit: str = "img"):
    """A rich progress bar on stderr: items done, items/s and ETA; None when quiet."""
    if quiet:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"– {unit}/s" if task.speed is None else f"{task.speed:.1f} {unit}/s")

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
        Speed(),
        TimeRemainingColumn(),
    ]
    return Progress(*cols, console=Console(stderr=True), transient=True)
