"""The embedding pipeline, one concern per module, in the order data flows through it:

- :mod:`.inputs`     discover files (paths, directories, globs, stdin lists); sample ids
- :mod:`.options`    :class:`EmbedOptions`: what a run computes (recorded) and how fast
- :mod:`.events`     typed events a decoder reports per file (sample, done, fail, dup)
- :mod:`.decode`     decoder side: stat, content hash, sniff, load (:func:`process_file`)
- :mod:`.transport`  decoder -> main process: chunks, shared-memory ring, /dev/shm files
- :mod:`.workers`    the decoder processes: pool, health, blame, respawn
- :mod:`.batching`   one :class:`Batcher`: (modality, batch key) buckets, rows + token budget
- :mod:`.compute`    :class:`Embedder` (tokenize, encode, pool) and the compute thread
- :mod:`.writer`     the writer thread: crash-safe HDF5 parts
- :mod:`.books`      what became of each input, the counts (:class:`RunSummary`), progress
- :mod:`.run`        :func:`run_embed`: one run into one output (resume, events, batches)
- :mod:`.engine`     :func:`embed_inputs`: local, several devices, Ray, or one shard
"""
from __future__ import annotations

from ..errors import Interrupted
from .batching import Batch, Batcher, BatchLimits
from .books import ProgressFn, RunSummary
from .compute import BatchResult, Embedder
from .decode import process_file
from .engine import embed_inputs
from .inputs import Discovery, Filters, Input, content_hash, discover, fingerprint, read_stdin_list, sample_id
from .options import EmbedOptions, default_workers, run_config_of
from .run import Run, run_embed
from .workers import WorkerPool, decode_events, start_workers

__all__ = [
    "Batch", "BatchLimits", "BatchResult", "Batcher", "Discovery", "EmbedOptions", "Embedder", "Filters", "Input",
    "Interrupted", "ProgressFn", "Run", "RunSummary", "WorkerPool", "content_hash", "decode_events",
    "default_workers", "discover",
    "embed_inputs", "fingerprint", "process_file", "read_stdin_list", "run_config_of", "run_embed",
    "sample_id", "start_workers",
]
