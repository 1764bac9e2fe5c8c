"""The one batching path: token costs, batch sizing by rows and tokens, buckets, isolation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mtx._synth import GENERATORS
from mtx.modalities import get_modality, list_modalities
from mtx.modalities._base import Sample
from mtx.pipeline import Batch, Batcher, BatchLimits, Embedder, EmbedOptions
from mtx.weights import get_preset

TINY = get_preset("tiny")
TINY14 = dataclasses.replace(TINY, name="tiny14", patch=14)  # a patch-14 geometry (as L/14)


@pytest.fixture(scope="module")
def synth_samples(tmp_path_factory):
    """Two generated files of every registered modality, loaded."""
    out = {}
    for mod in list_modalities():
        d = tmp_path_factory.mktemp(mod.name)
        out[mod.name] = [s for f in GENERATORS[mod.name](d, 2) for s in mod.load(f, mod.config())]
    return out


@pytest.mark.parametrize("spec", [TINY, TINY14], ids=["patch16", "patch14"])
@pytest.mark.parametrize("name", [m.name for m in list_modalities()])
def test_cost_is_exactly_what_the_tokenizer_emits(name, spec, synth_samples):
    mod = get_modality(name)
    cfg = mod.config()
    tok = mod.tokenizer(spec, None, cfg)
    for s in synth_samples[name]:
        with torch.inference_mode():
            tokens = tok(mod.collate([s]))
        assert mod.cost(s, spec, cfg) == tokens.x.shape[1]


def test_time_series_cost_follows_the_configured_patches(tmp_path):
    mod = get_modality("time_series")
    cfg = mod.config(patch=8, patch_stride=4)
    (f,) = GENERATORS["time_series"](tmp_path, 1)
    (s,) = mod.load(f, cfg)
    tokens = mod.tokenizer(TINY, None, cfg)(mod.collate([s]))
    assert mod.cost(s, TINY, cfg) == tokens.x.shape[1] != mod.cost(s, TINY, mod.config())


def _rows(n: int, width: int, key: str = "k") -> list[Sample]:
    return [Sample(f"{key}{i}", {"x": np.zeros((1, width), np.float32)}) for i in range(n)]


def _batcher(**limits) -> Batcher:
    return Batcher(BatchLimits(**limits), cost=lambda modality, s: s.arrays["x"].shape[1])


def _fill(b: Batcher, samples: list[Sample], modality: str = "m") -> list[Batch]:
    out = [b.add(s.key, modality, s, key=s.arrays["x"].shape[1]) for s in samples]
    return [x for x in out if x is not None]


def test_image_sized_rows_close_at_batch_size_short_rows_at_the_token_budget():
    limits = dict(rows=32, tokens=32 * 197, max_rows=10_000, queue=10_000, queue_tokens=10**9)
    (full,) = _fill(_batcher(**limits), _rows(40, 197))
    assert len(full.entries) == 32  # as many images as --batch-size
    (full,) = _fill(_batcher(**limits), _rows(1000, 8))
    assert len(full.entries) == 788  # 8-token rows: filled to 32 x 197 tokens
    (full,) = _fill(_batcher(**limits), _rows(40, 1213))
    assert len(full.entries) == 32  # long rows: never fewer than --batch-size rows
    capped = _fill(_batcher(**{**limits, "max_rows": 512}), _rows(1000, 8))
    assert [len(b.entries) for b in capped] == [512]


def test_ragged_rows_count_their_padding_and_pad_only_within_a_key():
    b = _batcher(rows=4, tokens=4 * 50, max_rows=100, queue=1000, queue_tokens=10**9)
    # One key, widths 10 and 50: the batch is padded to 50, so 4 rows reach 200 tokens.
    mixed = [Sample(f"s{i}", {"x": np.zeros((1, 10 if i % 2 else 50), np.float32)}) for i in range(4)]
    out = [b.add(s.key, "m", s, key="one") for s in mixed]
    assert [x is None for x in out] == [True, True, True, False]
    assert len(out[-1].entries) == 4
    # Two keys never share a batch, whatever is buffered.
    _fill(b, _rows(3, 50, "a") + _rows(3, 10, "b"))
    batches = list(b.drain())
    assert [[s.arrays["x"].shape[1] for s in x.samples] for x in batches] == [[50] * 3, [10] * 3]
    assert not b and b.samples == 0 and b.tokens == 0


def test_a_full_queue_sends_the_largest_bucket_and_drop_keeps_the_order():
    b = _batcher(rows=100, tokens=1, max_rows=1000, queue=5, queue_tokens=0)
    assert not _fill(b, _rows(2, 3, "a") + _rows(3, 4, "b"))
    (largest,) = _fill(b, _rows(1, 5, "c"))  # 6 samples > 5: the bucket with most samples goes
    assert [s.key for s in largest.samples] == ["b0", "b1", "b2"]
    _fill(b, _rows(2, 6, "d"))
    b.drop("a0")
    assert b.samples == 4 and b.tokens == 1 * 3 + 1 * 5 + 2 * 6
    assert [[s.key for s in x.samples] for x in b.drain()] == [["a1"], ["c0"], ["d0", "d1"]]


def test_a_bad_sample_fails_alone_and_the_others_keep_their_vectors(tiny_model):
    emb = Embedder(tiny_model, EmbedOptions())
    rng = np.random.default_rng(0)
    good = [Sample("", {"pixels": rng.integers(0, 255, (1, 3, 224, 224), dtype=np.uint8)}) for _ in range(3)]
    bad = Sample("", {"pixels": rng.integers(0, 255, (1, 4, 224, 224), dtype=np.uint8)})  # 4 channels
    batch = Batch("image", [("g0", good[0]), ("bad", bad), ("g1", good[1]), ("g2", good[2])])
    for result in (emb.embed_batch(batch), emb.embed_batch(batch, emb.try_prepare(batch), prepared=True)):
        assert [e[:2] for e in result.errors] == [("bad", "encode")]
        got = {ents[0][0]: v[0] for ents, v, _, _ in result.rows}
        assert sorted(got) == ["g0", "g1", "g2"]
        alone = emb.embed("image", [good[1]])[0][0]
        np.testing.assert_allclose(got["g1"], alone, atol=1e-6)
