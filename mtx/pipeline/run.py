"""One ``mtx embed`` run into one output: resume, decode, batch, compute, write, consolidate.

:func:`run_embed` is the whole run; :class:`Run` holds its parts and handles the decoders'
events; :class:`.books.Books` keeps what became of each input.
"""
from __future__ import annotations

import contextlib
import gc
import json
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import Interrupted
from .batching import Batch
from .books import Books, ProgressFn, RunSummary
from .compute import BatchResult, Compute, Embedder
from .decode import iter_inline
from .events import Done, Dup, Event, Failed, Sampled, Unclaimed
from .inputs import Input, fingerprint, sample_id
from .options import EmbedOptions, modality_defaults, run_config_of
from .workers import WorkerPool, decoders_for, start_workers
from .writer import Writer


def run_embed(items: list[Input], output: str | Path, opts: EmbedOptions, model,
              progress: ProgressFn | None = None, problems: list[tuple[str, str]] | None = None,
              shard: tuple[int, int] | None = None, pool: WorkerPool | None = None) -> dict:
    """Embed ``items`` into ``output`` (resuming committed work) and return the summary.

    With ``shard=(i, n)`` the items are that shard's slice: the work is committed as parts and a
    shard marker, and ``mtx merge`` builds the final file once every shard is done. ``pool``:
    decoder processes started beforehand (:func:`start_workers`), used and closed.
    """
    try:
        run = Run(items, output, opts, model, progress=progress, problems=problems, shard=shard, pool=pool)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    return run.execute().to_dict()


@contextlib.contextmanager
def _frozen_gc():
    """The loaded model, torch and the decoders are hundreds of thousands of long-lived objects:
    keep the cyclic collector, which the per-file objects trigger, from walking them again and
    again (it took about a tenth of the main thread)."""
    frozen = not gc.isenabled() or gc.get_freeze_count() > 0
    if not frozen:
        gc.freeze()
    try:
        yield
    finally:
        if not frozen:
            gc.unfreeze()


@contextlib.contextmanager
def _signals(handler):
    """SIGINT/SIGTERM call ``handler`` (the run then commits and raises Interrupted)."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Run:
    """The state of one run; see :func:`run_embed`."""

    def __init__(self, items: list[Input], output: str | Path, opts: EmbedOptions, model, *,
                 progress: ProgressFn | None = None, problems: list[tuple[str, str]] | None = None,
                 shard: tuple[int, int] | None = None, pool: WorkerPool | None = None):
        from ..store import Store

        self.t0 = time.monotonic()
        self.items, self.opts, self.model, self.shard, self.pool = items, opts, model, shard, pool
        self.problems = problems or []
        self.emb = Embedder(model, opts)
        self.batcher = self.emb.batcher()
        self.configs = opts.modality_configs()
        self.run_config = run_config_of(model, opts)
        # Resolved per-modality configs are checked per modality (a new modality in a later mtx
        # version must not invalidate an output; a changed default of a used one must).
        self.store = Store(output, self.run_config, overwrite=opts.overwrite, store_dtype=opts.store_dtype,
                           part_rows=opts.part_rows, part_seconds=opts.part_seconds,
                           modality_configs=self.configs, shard=shard, modality_defaults=modality_defaults())
        self.summary = RunSummary(str(output), len(items) + len(self.problems))
        self.books = Books(self.summary, progress, self.t0)
        self.todo: list[Input] = []
        self.by_hash: dict[str, Any] = {}  # content hash -> record of an embedded file
        self.signum = 0
        self.writer: Writer | None = None
        self.compute: Compute | None = None
        self._handlers = {"sample": self._on_sample, "done": self._on_done, "fail": self._on_fail,
                          "dup": self._on_dup, "unclaimed": self._on_unclaimed}

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        with _frozen_gc(), _signals(self._on_signal):
            try:
                self.store.open()
                self.writer = Writer(self.store, self.opts.part_rows, self.opts.part_seconds)
                self.writer.start()
                self._plan()
                self.compute = Compute(self.emb)
                self.compute.start()
                self._decode()
                if self.pool is not None:  # decoding is over: its memory goes before consolidation
                    self.pool.stop()
                for batch in self.batcher.drain():
                    self._flush(batch)
                self._settle()
                if self.signum:
                    raise Interrupted(self.signum)
                self.writer.finish()
                self.books.report(final=True)
                self._consolidate()
            finally:
                self._close()
        return self._stamp()

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = signum

    def _plan(self) -> None:
        """Skip inputs finished in committed work; record discovery problems; index the content
        of embedded files (an identical file is copied, not recomputed)."""
        from ..store import h5_text

        done = self.store.done_files()
        for inp in self.items:
            if finished(inp, done):
                self.summary.n_skipped += 1
            else:
                self.todo.append(inp)
        self.books.open(self.todo, self.writer.put)
        self.books.problems(self.problems)
        redo = {h5_text(str(i.path)) for i in self.todo}  # their old rows are being replaced
        self.by_hash = {r.content_hash: r for r in done.values()
                        if r.status == "ok" and r.content_hash and r.path not in redo}

    def _decode(self) -> None:
        """Decode every input (in the decoder processes, or here), handling events as they come."""
        n = len(self.todo)
        if n == 0:
            return
        if self.pool is None:
            self.pool = start_workers(self.opts, n)
        if self.pool is not None:  # now the number of files and the device are known
            self.pool.resize(decoders_for(n, self.opts.workers, self.model.device.type == "cuda"))
        known = frozenset(self.by_hash)
        if self.pool is None:  # --workers 0: here, without a timeout or isolation
            for ev in iter_inline(self.todo, self.opts.modality, self.opts.rules, self.configs, known):
                self.handle(ev)
                if self.signum:
                    break
        else:
            self.pool.set_known(known)
            self._decode_in_pool(list(reversed(self.todo)))

    def _decode_in_pool(self, pending: list[Input]) -> None:
        pool = self.pool
        checked = time.monotonic()
        while self.books.states and not self.signum:
            # A bounded window of files per worker; the decoders run ahead of the encoder.
            pool.submit_from(pending)
            events = pool.get(timeout=0.05)
            self._collect_ready()
            for ev in events:
                self.handle(ev)
                if self.signum:
                    break
            self.books.push()
            now = time.monotonic()
            if events and now - checked < 0.5:
                continue
            # Dead or stuck decoders are looked for at least twice a second, even while the
            # other workers keep the stream full.
            checked = now
            evs, again = pool.check()
            for ev in evs:
                self.handle(ev)
            pending.extend(reversed(again))
            if not events and self.batcher and not self.signum and self.compute.inq.empty():
                self._flush(self.batcher.largest())  # decoders are behind: keep the encoder busy

    def _settle(self) -> None:
        """Wait for every batch handed to the compute thread, collect it, hand records over."""
        self.compute.inq.put(None)
        self.compute.join()
        self._collect_ready()
        self.books.push()

    def _close(self) -> None:
        c = self.compute
        if c is not None and c.is_alive():
            with contextlib.suppress(queue.Full):  # lets it end (and free the model) after a failure
                c.inq.put(None, timeout=5)
        if self.pool is not None:
            self.pool.close()
        if self.writer is not None:
            self.writer.stop()
        self.store.close()

    def _consolidate(self) -> None:
        from ..store import config_hash

        attrs = root_attrs(self.model, self.run_config, config_hash(self.run_config),
                           self.store.merged_modality_configs())
        mod_attrs = {}
        for name in self.summary.by_modality:
            tok = self.emb.tokenizer(name)
            mod_attrs[name] = {**tok.describe(), "pool": self.emb.pool_mode(name),
                               "config_json": json.dumps(self.emb.config(name).to_dict(), default=str)}
        if self.shard is None:
            self.store.consolidate(attrs, mod_attrs)
        else:
            self.store.finish_shard(attrs, mod_attrs, self.summary.to_dict())

    def _stamp(self) -> RunSummary:
        s = self.summary
        el = time.monotonic() - self.t0
        s.elapsed_s = round(el, 3)
        s.samples_per_s = round(s.n_samples / el, 3) if el > 0 else 0.0
        desc = self.model.describe()
        s.device, s.dtype, s.model, s.weights = desc["device"], desc["dtype"], self.model.spec.name, desc["weights_source"]
        return s

    # -- events ----------------------------------------------------------------------------
    def handle(self, ev: Event) -> None:
        self._handlers[ev.kind](ev)

    def _on_sample(self, ev: Sampled) -> None:
        st = self.books.live(ev.file)
        if st is None:
            return
        st.modality = ev.modality
        # Decoder processes compute the batch key; inline decoding leaves it to the batcher.
        batch = self.batcher.add(ev.file, ev.modality, ev.sample, ev.key)
        if batch is not None:
            self._flush(batch)

    def _on_done(self, ev: Done) -> None:
        st = self.books.live(ev.file)
        if st is None:
            return
        st.modality, st.reason, st.fp, st.expected = ev.modality, ev.reason, ev.fp, ev.n
        if st.encoded >= ev.n:
            self.books.finish(st)

    def _on_fail(self, ev: Failed) -> None:
        self._fail(ev.file, ev.modality, ev.stage, ev.message)

    def _on_unclaimed(self, ev: Unclaimed) -> None:
        """No modality claims the file: left out with ``skip_unknown``, else a sniff failure."""
        st = self.books.live(ev.file)
        if st is None:
            return
        if self.opts.skip_unknown:
            self.batcher.drop(ev.file)
            self.books.unclaimed(st, ev.message)
        else:
            self._fail(ev.file, "", "sniff", ev.message)

    def _on_dup(self, ev: Dup) -> None:
        """Same bytes as a file embedded earlier under another name: copy, don't recompute."""
        st = self.books.live(ev.file)
        if st is None:
            return
        src = self.by_hash[ev.fp[2]]
        rows = self.store.rows_of(src.path, src.id, st.inp.id, str(ev.file))
        if rows is None:
            self._fail(ev.file, "", "load", "identical to an embedded file whose rows could not be read")
            return
        self.writer.put(("rows", rows))
        self.summary.n_samples += len(rows.ids)
        st.modality, st.fp, st.expected, st.encoded = src.modality, ev.fp, len(rows.ids), len(rows.ids)
        st.reason = f"identical content to {src.id}"
        self.summary.n_copied += 1
        self.books.finish(st)

    def _fail(self, path: Path, modality: str, stage: str, message: str) -> None:
        from ..store import Failure

        st = self.books.live(path)
        if st is None:
            return
        st.failed = True
        st.modality = st.modality or modality
        self.batcher.drop(path)
        self.books.finish(st, Failure(str(path), st.modality, stage, message))

    # -- batches ---------------------------------------------------------------------------
    def _flush(self, batch: Batch) -> None:
        """Hand a batch to the compute thread (blocks while two batches are in flight)."""
        self.compute.inq.put((batch, self.emb.try_prepare(batch)))
        self._collect_ready()

    def _collect_ready(self) -> None:
        while True:
            try:
                batch, result = self.compute.outq.get_nowait()
            except queue.Empty:
                return
            self._collect(batch, result)

    def _collect(self, batch: Batch, result: BatchResult) -> None:
        from ..store import Rows

        for path, stage, message in result.errors:
            self._fail(path, batch.modality, stage, message)
        for ents, vecs, ntok, toks in result.rows:
            live = [i for i, (p, _) in enumerate(ents) if self.books.live(p) is not None]
            if not live:
                continue
            ents = [ents[i] for i in live]
            self.writer.put(("rows", Rows(
                ids=[sample_id(self.books.states[p].inp.id, s.key) for p, s in ents],
                paths=[str(p) for p, _ in ents], modalities=[batch.modality] * len(ents),
                vectors=vecs[live], n_tokens=ntok[live],
                tokens=[toks[i] for i in live] if toks is not None else None)))
            self.books.encoded([p for p, _ in ents])


def finished(inp: Input, done: dict) -> bool:
    """Whether ``inp`` is embedded, unchanged, in committed work (``done``: Store.done_files()).
    Finished inputs are skipped; failed ones are tried again (the cause may be gone)."""
    from ..store import h5_text

    rec = done.get(h5_text(str(inp.path)))
    try:
        size, mtime = fingerprint(inp.path)
    except OSError:
        size = mtime = -1
    return rec is not None and rec.status == "ok" and rec.size == size and rec.mtime_ns == mtime


def root_attrs(model, run_config: dict, cfg_hash: str, modality_configs: dict) -> dict[str, Any]:
    """The root attributes of an output: format, provenance, the resolved config and its hash."""
    import datetime

    from .. import __version__
    from ..store import FORMAT_NAME, FORMAT_VERSION

    d = model.describe()
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mtx_version": __version__,
        "preset": model.spec.name,
        "geometry_json": json.dumps(model.spec.geometry()),
        "weights_source": d["weights_source"],
        "weights_sha256": d["weights_sha256"],
        "weights_files_json": json.dumps(d["weights_files"], default=str),
        "encoder_sha256": d["encoder_sha256"],
        "compute_dtype": d["dtype"],
        "device_kind": d["device"],
        "config_json": json.dumps(run_config, sort_keys=True, default=str),
        "modality_configs_json": json.dumps(modality_configs, sort_keys=True, default=str),
        "config_sha256": cfg_hash,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
