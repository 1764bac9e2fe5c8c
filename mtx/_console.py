"""Console output: narration and progress on stderr, data on stdout. Only the CLI imports this.

One output rule for every command, decided here and nowhere else:

* data commands print **tables on a terminal and JSON when stdout is piped** or ``--json`` is
  given (:func:`wants_json`, :func:`emit_json`);
* **colour** follows ``--color`` (``mtx --color auto|always|never``, or ``MTX_COLOR``): ``auto``
  colours a stream only when it is a terminal, so a pipe gets plain text even with
  ``FORCE_COLOR`` set, and ``NO_COLOR`` turns it (and bold/dim) off; ``always`` colours pipes
  too; ``never`` never. The decision is made on the real stream (``isatty``), not on rich's guess, which
  ``FORCE_COLOR`` overrides;
* progress bars and live displays only on an interactive stderr (:func:`interactive`).

:func:`configure` builds the two consoles ``err`` and ``out`` for a run; the CLI calls it first.
Every user-supplied string printed through them is escaped with :func:`mtx._help.esc`.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from rich.console import Console

COLOR_MODES = ("auto", "always", "never")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _console(stderr: bool, color: str) -> Console:
    tty = _isatty(sys.stderr if stderr else sys.stdout)
    common: dict[str, Any] = {"stderr": stderr, "highlight": False, "soft_wrap": True}
    if color == "always":
        return Console(force_terminal=True, no_color=False, **common)
    if color == "never" or not tty or os.environ.get("NO_COLOR", ""):
        return Console(force_terminal=tty, no_color=True, color_system=None, **common)
    return Console(force_terminal=True, **common)


def configure(color: str | None = None) -> None:
    """(Re)build ``err`` and ``out`` for this run: ``color`` is auto, always or never (default:
    ``MTX_COLOR``, else auto)."""
    global err, out
    color = color or os.environ.get("MTX_COLOR", "") or "auto"
    if color not in COLOR_MODES:
        from .errors import UsageError

        raise UsageError(f"--color {color!r}: choose one of {', '.join(COLOR_MODES)}")
    err, out = _console(True, color), _console(False, color)


err: Console
out: Console
configure("auto")


def interactive() -> bool:
    """Whether stderr is a terminal a person watches (progress bars, live lines)."""
    return _isatty(sys.stderr)


def wants_json(json_flag: bool) -> bool:
    """The data rule: JSON with ``--json`` or when stdout is not a terminal, else tables."""
    return json_flag or not _isatty(sys.stdout)


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (plain text: no markup, no colour)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


PROGRESS_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


def progress_interval() -> float:
    """``MTX_PROGRESS_INTERVAL`` (seconds; 0 turns the lines off), default 30."""
    try:
        return max(0.0, float(os.environ.get("MTX_PROGRESS_INTERVAL", PROGRESS_INTERVAL)))
    except ValueError:
        return PROGRESS_INTERVAL


def _dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(ev: dict[str, Any], elapsed: float) -> str:
    """One plain line of counts, rate and ETA (for logs: SLURM, nohup, CI)."""
    done, total = ev.get("files_done", 0), ev.get("files_total", 0)
    rate = ev.get("samples", 0) / elapsed if elapsed > 0 else 0.0
    eta = "?"
    if done and total >= done:
        eta = _dur(elapsed / done * (total - done))
    extra = "".join(f", {ev[k]:,} {k}" for k in ("failed", "skipped") if ev.get(k))
    return (f"mtx: progress: {done:,}/{total:,} files{extra}, {ev.get('samples', 0):,} samples, "
            f"{rate:.1f} samples/s, elapsed {_dur(elapsed)}, eta {eta}")


class Progress:
    """Files done/total, per-modality counts, samples/s, ETA: a bar on a terminal; elsewhere
    (a log file, SLURM, nohup) one line every ``MTX_PROGRESS_INTERVAL`` seconds."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and interactive()  # not err.is_terminal: --color always may force that
        self.interval = progress_interval() if enabled and not err.is_terminal else 0.0
        self._p = None
        self._task = None
        self._last = 0.0
        self._ev: dict[str, Any] | None = None
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lines(self) -> None:
        while not self._stop.wait(self.interval):
            ev = self._ev
            if ev is not None:
                err.print(progress_line(ev, time.monotonic() - self._t0), markup=False, highlight=False)

    def __enter__(self) -> "Progress":
        if self.interval > 0 and self._thread is None:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._lines, name="mtx-progress-lines", daemon=True)
            self._thread.start()
        if self.enabled and self._p is None:
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
        self._stop.set()
        if self._p is not None:
            self._p.__exit__(*exc)

    def update(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "tick":
            self._ev = ev
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
