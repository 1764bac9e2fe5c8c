"""Tokenize, encode and pool batches: the :class:`Embedder` and the compute thread."""
from __future__ import annotations

import queue
import threading
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ..errors import TokenizeError, short
from .batching import Batch, Batcher, BatchLimits
from .options import EmbedOptions


class BatchResult(NamedTuple):
    """What became of a batch: ``rows`` are ``(entries, vectors [n, D], n_tokens [n], tokens or
    None)`` for the samples that were embedded, ``errors`` ``(owner, stage, message)`` for the
    samples that failed."""

    rows: list[tuple[list, np.ndarray, np.ndarray, list[np.ndarray] | None]]
    errors: list[tuple[Hashable, str, str]]


def _stage_of(e: BaseException) -> str:
    return "tokenize" if isinstance(e, TokenizeError) else "encode"


class Embedder:
    """Turns batches of samples into vectors with one loaded model (no store involved)."""

    def __init__(self, model, opts: EmbedOptions):
        from ..modalities._base import BufferPool

        self.model = model
        self.opts = opts
        self.configs = {}
        self.pools: dict[str, str] = {}
        self._costs: dict[str, Any] = {}
        # On CUDA the collate writes into torch's pinned-memory cache instead.
        self.buffers = BufferPool() if model.device.type == "cpu" else None

    def config(self, modality: str):
        if modality not in self.configs:
            self.configs[modality] = self.opts.modality_config(modality)
        return self.configs[modality]

    def tokenizer(self, modality: str):
        return self.model.tokenizer(modality, self.config(modality))

    def pool_mode(self, modality: str) -> str:
        if modality not in self.pools:
            from ..modalities import get_modality

            tok = self.tokenizer(modality)
            fitted = (tok.file_info or {}).get("fit_pool")  # a fitted tokenizer: the pooling it was trained with
            self.pools[modality] = self.opts.pool or fitted or get_modality(modality).default_pool(tok.init)
        return self.pools[modality]

    def cost(self, modality: str, sample) -> int:
        """Tokens of each row of ``sample`` at this model's geometry and the modality's config."""
        fn = self._costs.get(modality)
        if fn is None:  # called per sample: bind the modality, geometry and config once
            from ..modalities import get_modality

            mod, spec, cfg = get_modality(modality), self.model.spec, self.config(modality)
            fn = self._costs[modality] = lambda s: mod.cost(s, spec, cfg)
        return fn(sample)

    def batcher(self) -> Batcher:
        """A batcher sized by the options' rows and token budget for this model."""
        return Batcher(BatchLimits.of(self.opts, self.model.spec), self.cost)

    def prepare(self, modality: str, samples: list) -> dict:
        """Collate on the CPU and start the copy to the device (pinned, non-blocking on CUDA)."""
        from ..modalities import get_modality

        dev = self.model.device
        inputs = get_modality(modality).collate(samples, pin=dev.type == "cuda", buffers=self.buffers)
        return {k: v.to(dev, non_blocking=dev.type == "cuda") for k, v in inputs.items()}

    def try_prepare(self, batch: Batch) -> dict | None:
        """:meth:`prepare`, or None when collating fails (:meth:`embed_batch` then tries each
        sample alone)."""
        try:
            return self.prepare(batch.modality, batch.samples)
        except Exception:  # noqa: BLE001 - embed_batch isolates the bad sample
            return None

    def release(self, inputs: dict) -> None:
        """The encoder is done with ``inputs``: their buffers may hold the next batch."""
        if self.buffers is not None:
            self.buffers.give_back(inputs.values())

    def tokens(self, modality: str, samples: list, inputs: dict | None = None):
        import torch

        if inputs is None:
            inputs = self.prepare(modality, samples)
        with torch.inference_mode(), self.model.autocast():
            return self.tokenizer(modality)(inputs)

    def embed(self, modality: str, samples: list, inputs: dict | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        """Vectors [n, D], token counts [n] and (with save_tokens) per-sample token arrays."""
        import torch

        from ..encoder import pool

        tokens = self.tokens(modality, samples, inputs)
        hidden = self.model.encode_tokens(tokens)
        rows = pool(hidden, tokens, self.pool_mode(modality)).float()
        segs = torch.tensor([s.n_segments for s in samples], device=rows.device)
        owner = torch.repeat_interleave(torch.arange(len(samples), device=rows.device), segs)
        vecs = torch.zeros(len(samples), rows.shape[1], device=rows.device).index_add_(0, owner, rows)
        vecs = vecs / segs[:, None].to(vecs.dtype)
        n_row = (torch.full((rows.shape[0],), tokens.x.shape[1], device=rows.device)
                 if tokens.pad_mask is None else (~tokens.pad_mask).sum(1))
        ntok = torch.zeros(len(samples), dtype=torch.long, device=rows.device).index_add_(0, owner, n_row)
        saved = self._saved_tokens(tokens, owner, len(samples)) if self.opts.save_tokens else None
        return vecs.cpu().numpy().astype(np.float32), ntok.cpu().numpy().astype(np.int32), saved

    @staticmethod
    def _saved_tokens(tokens, owner, n: int) -> list[np.ndarray]:
        """Each sample's non-padding encoder-input tokens (its rows concatenated)."""
        x = tokens.x.float().cpu()
        keep = None if tokens.pad_mask is None else (~tokens.pad_mask).cpu()
        per_row = [x[r] if keep is None else x[r][keep[r]] for r in range(x.shape[0])]
        owner_l = owner.cpu().tolist()
        return [np.concatenate([per_row[r].numpy() for r in range(len(owner_l)) if owner_l[r] == i])
                for i in range(n)]

    def embed_batch(self, batch: Batch, inputs: dict | None = None, *, prepared: bool = False) -> BatchResult:
        """Embed ``batch`` (from ``inputs`` when ``prepared``; None = its collate failed). When
        the batch fails, each sample is tried alone, so one bad sample fails only itself."""
        rows, errors = [], []
        entries = batch.entries
        try:
            if prepared and inputs is None:
                raise RuntimeError("collate failed")
            rows.append((entries, *self.embed(batch.modality, batch.samples, inputs)))
            if inputs is not None:
                self.release(inputs)
        except Exception as e:  # noqa: BLE001 - isolate the bad sample(s)
            if len(entries) == 1 and (inputs is not None or not prepared):
                errors.append((entries[0][0], _stage_of(e), short(e)))
            else:
                for ent in entries:
                    try:
                        rows.append(([ent], *self.embed(batch.modality, [ent[1]])))
                    except Exception as e1:  # noqa: BLE001
                        errors.append((ent[0], _stage_of(e1), short(e1)))
        return BatchResult(rows, errors)

    def embed_stream(self, samples: Iterable[tuple[Hashable, str, Any]]) -> Iterator[BatchResult]:
        """Batch ``(owner, modality, sample)`` triples and embed them, in this thread."""
        batcher = self.batcher()
        for owner, modality, sample in samples:
            if (batch := batcher.add(owner, modality, sample)) is not None:
                yield self.embed_batch(batch)
        for batch in batcher.drain():
            yield self.embed_batch(batch)


class Compute(threading.Thread):
    """Runs tokenizer + encoder on prepared batches, so the main thread can decode-collate the
    next batch (and the device copy can run) while this one computes. A failing batch is split
    and each sample retried alone, so one bad sample fails only its own file."""

    def __init__(self, emb: Embedder):
        super().__init__(name="mtx-compute", daemon=True)
        self.emb = emb
        self.inq: queue.Queue = queue.Queue(maxsize=2)
        self.outq: queue.Queue = queue.Queue()

    def run(self) -> None:
        while (item := self.inq.get()) is not None:
            batch, inputs = item
            self.outq.put((batch, self.emb.embed_batch(batch, inputs, prepared=True)))
