"""The single writer thread: buffers rows and file records, commits immutable part files."""
from __future__ import annotations

import contextlib
import queue
import threading
import time


class Writer(threading.Thread):
    """Takes ``("rows", Rows)`` and ``("files", [(FileRecord, Failure | None)])`` items (None
    ends it), commits a part every ``part_rows`` rows or ``part_seconds``, and keeps its first
    error for the main thread (:meth:`put` raises it)."""

    def __init__(self, store, part_rows: int, part_seconds: float):
        super().__init__(name="mtx-writer", daemon=True)
        from ..store import PartBuffer

        self.store = store
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.buf = PartBuffer()
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.error: BaseException | None = None
        self.parts = 0

    def run(self) -> None:
        last = time.monotonic()
        while True:
            try:
                item = self.q.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                break
            if self.error is not None:
                continue
            self._add(item)
            if self.buf.n_rows >= self.part_rows or (
                    not self.buf.empty() and time.monotonic() - last > self.part_seconds):
                self._commit()
                last = time.monotonic()
        if self.error is None and not self.buf.empty():
            self._commit()

    def _add(self, item) -> None:
        kind = item[0] if item else ""
        if kind == "rows":
            self.buf.rows.append(item[1])
        elif kind == "files":
            for rec, failure in item[1]:
                self.buf.files.append(rec)
                if failure is not None:
                    self.buf.failures.append(failure)

    def _commit(self) -> None:
        from ..store import PartBuffer

        try:
            self.store.commit(self.buf)
            self.parts += 1
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            self.error = e
        self.buf = PartBuffer()

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def finish(self) -> None:
        """Commit what is buffered and end; raises the first error the thread met."""
        self.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """End the thread when the run ends early (interrupted, or an error elsewhere): what it
        holds is still committed on the way out."""
        if self.is_alive():
            with contextlib.suppress(Exception):
                self.q.put(None)
            self.join(60)
