"""The books of a run: what became of each input, the counts, the records for the writer."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .events import Fingerprint
from .inputs import Input, fingerprint

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class RunSummary:
    """The counts of a run (also the JSON summary of ``mtx embed --json``)."""

    output: str
    n_inputs: int
    n_embedded: int = 0
    n_samples: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    by_modality: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    n_copied: int = 0  # inputs whose rows were copied from identical content
    n_unknown: int = 0  # inputs no modality claims, left out (``--skip-unknown``)
    unknown: list[str] = field(default_factory=list)  # their paths
    elapsed_s: float = 0.0
    samples_per_s: float = 0.0
    device: str = ""
    dtype: str = ""
    model: str = ""
    weights: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileState:
    """An input being embedded: its samples come back encoded one batch at a time."""

    inp: Input
    modality: str = ""
    expected: int | None = None  # samples, known once its decoder is done with it
    encoded: int = 0
    failed: bool = False
    fp: Fingerprint | None = None
    reason: str = ""


class Books:
    """Files in flight (:class:`FileState`), the finished ones' records on their way to the
    writer (``put``), the counts (:class:`RunSummary`) and the progress events."""

    def __init__(self, summary: RunSummary, progress: ProgressFn | None = None, t0: float | None = None):
        self.t0 = time.monotonic() if t0 is None else t0
        self.summary = summary
        self.progress = progress
        self.states: dict[Path, FileState] = {}
        self.finished: list[tuple] = []  # (FileRecord, Failure | None) not yet handed over
        self.files_done = 0
        self.total = 0
        self.put: Callable[[tuple], None] | None = None  # the writer's, from open()
        self._reported = 0.0  # when the last tick was sent

    def open(self, todo: list[Input], put: Callable[[tuple], None]) -> None:
        """Start the books of ``todo``; finished files' records go to ``put`` in groups."""
        self.states = {inp.path: FileState(inp) for inp in todo}
        self.total = len(todo)
        self.put = put

    def live(self, path) -> FileState | None:
        """The state of a file still in flight (None once it finished or failed)."""
        st = self.states.get(path)
        return None if st is None or st.failed else st

    def problems(self, problems: list[tuple[str, str]]) -> None:
        """Inputs discovery could not reach (a broken symlink, an unreadable folder, a glob
        without match...) are failures of stage ``discover``, reported like any other."""
        from ..store import Failure, FileRecord

        if not problems:
            return
        for raw, msg in problems:
            self.summary.n_failed += 1
            self.summary.failures.append({"path": raw, "modality": "", "stage": "discover", "message": msg})
            if self.progress:
                self.progress({"event": "file", "path": raw, "id": raw, "modality": "", "status": "failed",
                               "n_samples": 0, "stage": "discover", "message": msg})
        self.put(("files", [(FileRecord(raw, raw, "", -1, -1, "", 0, "failed"), Failure(raw, "", "discover", msg))
                            for raw, msg in problems]))

    def unclaimed(self, st: FileState, message: str) -> None:
        """No modality claims ``st``'s file and the run skips such files: counted, listed at
        the end, not a failure. Its ``skipped`` record replaces an earlier failure of the file;
        a later run looks at it again (a newer mtx may read it)."""
        from ..store import FileRecord

        size = mtime = -1
        with contextlib.suppress(OSError):
            size, mtime = fingerprint(st.inp.path)
        self.finished.append((FileRecord(str(st.inp.path), st.inp.id, "", size, mtime, "", 0, "skipped"), None))
        self.files_done += 1
        self.summary.n_unknown += 1
        self.summary.unknown.append(str(st.inp.path))
        self.states.pop(st.inp.path, None)
        if self.progress:
            self.progress({"event": "file", "path": str(st.inp.path), "id": st.inp.id, "modality": "",
                           "status": "skipped", "n_samples": 0, "stage": "sniff", "message": message})
        self.report()

    def encoded(self, paths: list[Path]) -> None:
        """One sample of each of ``paths`` was embedded: files whose samples are all in finish."""
        self.summary.n_samples += len(paths)
        for p in paths:
            st = self.states[p]
            st.encoded += 1
            if st.expected is not None and st.encoded >= st.expected:
                self.finish(st)
        if time.monotonic() - self._reported > 1.0:  # a file of many samples shows life too
            self.report()

    def finish(self, st: FileState, failure=None) -> None:
        """``st`` is complete (or failed): its record goes to the writer, progress is told."""
        from ..store import FileRecord

        self.files_done += 1
        size, mtime, chash = st.fp if st.fp else (-1, -1, "")
        s = self.summary
        if failure is None:
            rec = FileRecord(str(st.inp.path), st.inp.id, st.modality, size, mtime, chash, st.expected or 0, "ok")
            s.n_embedded += 1
            s.by_modality[st.modality] = s.by_modality.get(st.modality, 0) + 1
        else:
            if size < 0:
                with contextlib.suppress(OSError):
                    size, mtime = fingerprint(st.inp.path)
            rec = FileRecord(str(st.inp.path), st.inp.id, st.modality, size, mtime, chash, 0, "failed")
            s.n_failed += 1
            s.failures.append({"path": failure.path, "modality": failure.modality,
                               "stage": failure.stage, "message": failure.message})
        self.finished.append((rec, failure))
        if len(self.finished) >= 256:
            self.push()
        self.states.pop(st.inp.path, None)
        if self.progress:
            self.progress({"event": "file", "path": str(st.inp.path), "id": st.inp.id,
                           "modality": st.modality, "status": rec.status, "n_samples": rec.n_samples,
                           "stage": failure.stage if failure else None,
                           "message": failure.message if failure else None})
        self.report()

    def push(self) -> None:
        """Hand the finished files' records to the writer (one message per group)."""
        if self.finished:
            self.put(("files", self.finished.copy()))
            self.finished.clear()

    def report(self, final: bool = False) -> None:
        self._reported = time.monotonic()
        if self.progress:
            s = self.summary
            self.progress({"event": "tick", "files_done": self.files_done, "files_total": self.total,
                           "skipped": s.n_skipped,
                           "samples": s.n_samples, "failed": s.n_failed, "by_modality": dict(s.by_modality),
                           "elapsed": time.monotonic() - self.t0, "final": final})
