"""Console output: narration and progress on stderr, data on stdout. Only the CLI imports this."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class Progress:
    """Files done/total, per-modality counts, samples/s, ETA — on a TTY only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and err.is_terminal
        self._p = None
        self._task = None
        self._last = 0.0

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RP

            self._p = RP(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                         TimeRemainingColumn(), console=err, transient=False)
            self._p.__enter__()
            self._task = self._p.add_task("embed", total=None, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def update(self, ev: dict[str, Any]) -> None:
        if self._p is None or ev.get("event") != "tick":
            return
        now = time.monotonic()
        if now - self._last < 0.1 and not ev.get("final"):
            return
        self._last = now
        rate = ev["samples"] / ev["elapsed"] if ev["elapsed"] > 0 else 0.0
        mods = " ".join(f"{k}:{v}" for k, v in sorted(ev["by_modality"].items()))
        info = f"{rate:.1f} samples/s  {mods}" + (f"  [red]failed:{ev['failed']}" if ev["failed"] else "")
        self._p.update(self._task, total=ev["files_total"], completed=ev["files_done"], info=info)


def is_tty_stdout() -> bool:
    return sys.stdout.isatty()
