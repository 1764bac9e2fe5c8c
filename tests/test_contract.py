"""The modality contract, parametrized over the registry: every modality, end to end."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mtx.modalities
from mtx._synth import GENERATORS
from mtx.modalities import MODULES, get_modality, list_modalities
from mtx.modalities._base import Tokenizer
from mtx.pipeline import Embedder, EmbedOptions
from mtx.sniff import sniff

NAMES = [m.name for m in list_modalities()]


def test_registry_is_the_modules_list_in_order():
    assert NAMES == list(MODULES) and len(set(NAMES)) == len(NAMES)
    # Every public module of mtx/modalities/ is a modality listed in MODULES (none forgotten).
    files = {p.stem for p in Path(mtx.modalities.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert files == set(NAMES)
    for name in NAMES:
        assert type(get_modality(name)).__module__ == f"mtx.modalities.{name}"
    assert list(GENERATORS) == NAMES  # every modality has synthetic examples (bench, this test)


def test_duplicate_registration_raises():
    from mtx.modalities import register_modality

    with pytest.raises(RuntimeError, match="registered twice"):
        register_modality(type(get_modality("image")))


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name):
    m = get_modality(name)
    assert m.summary and m.tokens and m.extensions
    assert all(e.startswith(".") and e == e.lower() for e in m.extensions)
    assert dataclasses.is_dataclass(m.Config)
    m.config().to_dict()  # JSON-able defaults


@pytest.mark.parametrize("name", NAMES)
def test_sniff_load_tokenize_encode(name, tiny_model, tmp_path):
    files = GENERATORS[name](tmp_path, 3)
    mod = get_modality(name)
    emb = Embedder(tiny_model, EmbedOptions())
    samples = []
    for f in files:
        dec = sniff(f)
        assert dec.modality == name, (f, dec)
        assert dec.reason
        got = list(mod.load(f, emb.config(name)))
        assert got and all(s.n_segments >= 1 for s in got)
        assert all(len({a.shape[0] for a in s.arrays.values()}) == 1 for s in got)  # shared segment axis
        samples += got
    samples = samples[:3]
    tok = emb.tokenizer(name)
    assert isinstance(tok, Tokenizer) and tok.init in ("clip", "seeded", "file")
    d = tok.describe()
    assert len(d["sha256"]) == 64 and (d["seed"] >= 0) == (d["init"] == "seeded")
    # A batch gives the same vectors as each sample alone (padding and batching never leak).
    keys = {mod.batch_key(s) for s in samples}
    together = []
    for k in keys:
        group = [s for s in samples if mod.batch_key(s) == k]
        vecs, ntok, _ = emb.embed(name, group)
        together += list(zip(group, vecs, ntok, strict=True))
    for s, v, n in together:
        alone, n1, _ = emb.embed(name, [s])
        np.testing.assert_allclose(v, alone[0], atol=1e-5, rtol=0)
        assert n == n1[0] and n > 0
        assert np.isfinite(v).all() and v.shape == (64,)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_tokenizers_are_deterministic(name):
    from mtx.weights import LoadedWeights, get_preset

    spec = get_preset("tiny")
    mod = get_modality(name)
    a = mod.tokenizer(spec, None, mod.config())
    b = mod.tokenizer(spec, None, mod.config())
    assert a.describe()["sha256"] == b.describe()["sha256"]
    assert LoadedWeights(None).front is None


@pytest.mark.parametrize("name", NAMES)
def test_cli_end_to_end_into_the_store(name, tmp_path):
    from mtx.cli import main

    d = tmp_path / "in"
    d.mkdir()
    GENERATORS[name](d, 2)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-j", "0", "-q"]) == 0
    with h5py.File(out, "r") as f:
        assert f["embeddings"].shape[0] >= 2 and f["embeddings"].shape[1] == 64
        enum = h5py.check_enum_dtype(f["modality"].dtype)
        assert {k for k, v in enum.items() if v in set(f["modality"][()])} == {name}
        attrs = f[f"modalities/{name}"].attrs
        assert attrs["init"] in ("seeded", "clip") and attrs["pool"] in ("cls", "mean", "max")
        assert (f["n_tokens"][()] > 0).all()
        assert torch.isfinite(torch.from_numpy(f["embeddings"][()])).all()


# -- no content, no vector (issue #17, item 4) -----------------------------------------------
# The rule, for every modality (docs/reliability.md, "No content"): a sample with no decoded
# element (0 samples, points, nodes, rows, frames, tokens), with no finite value, or whose
# modality's own normalisation leaves nothing (a cloud at one point, constant channels or bands)
# is a failure row with a reason, never a vector. Each modality writes such files
# (``Modality.degenerate``); the guard every ``load`` runs under (``Modality.check_sample``)
# refuses empty arrays, non-finite values and padding-only segments for all of them.


@pytest.mark.parametrize("name", NAMES)
def test_content_less_input_is_a_failure_never_a_sample(name, tmp_path):
    from mtx.errors import DecodeError

    mod = get_modality(name)
    files = mod.degenerate(tmp_path)
    assert files
    for f in files:
        dec = sniff(f)
        assert dec.modality == name, (f, dec)
        with pytest.raises(DecodeError) as e:
            list(mod.load(f, mod.config(), dec.sniffed))
        msg = str(e.value)
        assert "\n" not in msg and len(msg) > 15, msg


@pytest.mark.parametrize("name", NAMES)
def test_check_sample_refuses_empty_padding_only_and_nonfinite_arrays(name, tmp_path):
    from mtx.errors import DecodeError
    from mtx.modalities._base import Sample

    mod = get_modality(name)
    (good,) = list(mod.load(GENERATORS[name](tmp_path, 1)[0], mod.config()))[:1]
    mod.check_sample(good)  # what load yields passes
    for k, a in good.arrays.items():
        empty = Sample(good.key, {**good.arrays, k: a[:0]}, dict(good.meta))
        with pytest.raises(DecodeError, match="no content"):
            mod.check_sample(empty)
        if a.dtype.kind == "f":
            bad = a.copy()
            bad.reshape(-1)[0] = np.nan
            with pytest.raises(DecodeError, match="non-finite"):
                mod.check_sample(Sample(good.key, {**good.arrays, k: bad}, dict(good.meta)))
    # Padding only: a per-segment valid-length array set to what means "nothing" (0, or the
    # start/end tokens of a text window) is refused by the modality's content_reason.
    counts = {"imu": ("valid", 0), "audio": ("frames", 0), "text": ("n", 2), "graph": ("type", 1)}
    if name in counts:
        k, v = counts[name]
        with pytest.raises(DecodeError, match="no content"):
            mod.check_sample(Sample(good.key, {**good.arrays, k: np.full_like(good.arrays[k], v)}, dict(good.meta)))


def test_content_less_files_are_failure_rows_and_no_vector_is_stored(tmp_path):
    from mtx.cli import main

    d = tmp_path / "in"
    d.mkdir()
    files = [f for name in NAMES for f in get_modality(name).degenerate(d)]
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-j", "0", "-q"]) == 3
    with h5py.File(out, "r") as f:
        assert f["embeddings"].shape[0] == 0
        stages = list(f["failures/stage"].asstr()[()])
        assert len(stages) == len(files) and set(stages) == {"load"}
