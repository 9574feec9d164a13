"""A job's progress, one line per table or check: bar, rows, rows/s and time left."""

from __future__ import annotations

from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from ..running_job import ItemProgress
from ..text import literal


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class JobProgress(Widget):
    """Set `items` and `now` (and call refresh); width decides how wide the bars are."""

    DEFAULT_CSS = "JobProgress { height: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: list[ItemProgress] = []
        self.now = 0.0

    def render(self) -> RenderableType:
        if not self.items:
            return Text("waiting for the first figures…", style="dim")
        now = self.now
        bar_width = max(8, min(40, self.size.width - 62))
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", expand=False)
        for name, justify in (("table", "left"), ("", "left"), ("%", "right"), ("rows", "right"),
                              ("rows/s", "right"), ("left", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for item in self.items:
            share = min(item.done / item.total, 1.0) if item.total else 1.0
            finished = item.total <= item.done
            table.add_row(literal(item.name, "green" if finished else ""),
                          ProgressBar(total=1.0, completed=share, width=bar_width),
                          Text(f"{share:4.0%}"), Text(f"{item.done:,}/{item.total:,}"),
                          Text(f"{item.rows_per_second(now):,.0f}"),
                          Text("done" if finished else duration(item.eta(now)), style="green" if finished else ""))
        return table
