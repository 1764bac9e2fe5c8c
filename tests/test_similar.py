"""mtx similar: the query itself first with score 1, top-k equal to brute force, refusals explained."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0", "-q"]


def make_inputs(d, n=9):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(n):  # smooth images of different sizes, so rows are not all alike
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((48 + 4 * i, 40), Image.BILINEAR).save(d / f"img{i}.png")
    (d / "a.txt").write_text("Thermal cameras see heat.\n")
    (d / "b.txt").write_text("Point clouds come from LiDAR scanners.\n")
    return d


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = make_inputs(tmp_path_factory.mktemp("in"))
    out = tmp_path_factory.mktemp("store") / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 0
    return d, out


def table(path):
    with h5py.File(path, "r") as f:
        names = {v: k for k, v in h5py.check_enum_dtype(f["modality"].dtype).items()}
        return (f["id"].asstr()[()].tolist(), [names[int(c)] for c in f["modality"][()]],
                f["embeddings"][()].astype(np.float32))


def brute_force(vecs, q, k, mask=None):
    x = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    s = x @ (q / np.linalg.norm(q))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    order = np.argsort(-s, kind="stable")[:k]
    order = order[np.isfinite(s[order])]
    return order, s[order]


def test_query_file_in_store_comes_first_with_score_1(data, capsys):
    d, store = data
    files = [str(d / f"img{i}.png") for i in (0, 4, 8)] + [str(d / "b.txt")]
    assert main(["similar", str(store), *files, "-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [q["query"] for q in res["queries"]] == files and res["k"] == 3
    for q, f in zip(res["queries"], files, strict=True):
        top = q["results"][0]
        assert q["kind"] == "file" and top["id"] == f.rsplit("/", 1)[1]
        assert abs(top["score"] - 1.0) <= 1e-5, top
        assert len(q["results"]) == 3 and top["modality"] == q["modality"]
        assert top["path"] == f


def test_topk_equals_brute_force(data):
    from mtx.similar import similar

    _, store = data
    ids, mods, vecs = table(store)
    rng = np.random.default_rng(0)
    queries = ["img3.png", "a.txt", rng.standard_normal(64).astype(np.float32)]
    for chunk in (2, 3, 1000):  # chunks smaller than k, not dividing N, and one chunk
        for modality in (None, "image"):
            res = similar(store, queries, k=5, modality=modality, chunk_rows=chunk)
            for q, qy in zip(res, queries, strict=True):
                qv = vecs[ids.index(qy)] if isinstance(qy, str) else qy
                mask = None if modality is None else np.array([m == modality for m in mods])
                order, scores = brute_force(vecs, qv, 5, mask)
                assert [r["id"] for r in q["results"]] == [ids[i] for i in order], (chunk, modality, qy)
                np.testing.assert_allclose([r["score"] for r in q["results"]], scores, atol=1e-5)
                assert all(r["modality"] == mods[r["row"]] for r in q["results"])
    # k larger than the store: every row, best first
    res = similar(store, "img0.png", k=100)
    assert len(res[0]["results"]) == len(ids) and res[0]["results"][0]["id"] == "img0.png"
    scores = [r["score"] for r in res[0]["results"]]
    assert scores == sorted(scores, reverse=True)


def test_topk_on_a_synthetic_store_in_chunks(tmp_path):
    """Many rows, many chunks, several queries: equal to one brute-force matrix product."""
    from mtx.export import StoreReader
    from mtx.similar import topk

    rng = np.random.default_rng(1)
    n, dim = 5000, 32
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    path = tmp_path / "s.h5"
    enum = h5py.enum_dtype({"image": 0, "text": 1}, basetype="u1")
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=vecs, chunks=(128, dim))
        f.create_dataset("id", data=np.array([f"r{i}" for i in range(n)], object), dtype=h5py.string_dtype())
        f.create_dataset("path", data=np.array([f"/r{i}" for i in range(n)], object), dtype=h5py.string_dtype())
        f.create_dataset("modality", data=(np.arange(n) % 2).astype(np.uint8), dtype=enum)
        f.attrs["format"] = "mtx-embeddings"
    q = rng.standard_normal((7, dim)).astype(np.float32)
    with StoreReader(path) as r:
        rows, scores = topk(r, q, 20, chunk_rows=300)
        rows_t, _ = topk(r, q, 20, chunk_rows=256, modality="text")
    x = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ x.T
    want = np.argsort(-s, axis=1)[:, :20]
    assert np.array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(s, want, 1), atol=1e-5)
    st = np.where(np.arange(n) % 2 == 1, s, -np.inf)
    assert np.array_equal(rows_t, np.argsort(-st, axis=1)[:, :20])


def test_query_by_id_and_unknown_query(data, capsys):
    _, store = data
    assert main(["similar", str(store), "img5.png", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "img5.png" in text and "1.0000" in text and "image" in text
    assert main(["similar", str(store), "no/such/thing.png"]) == 2
    assert "not a file and not an id" in capsys.readouterr().err
    assert main(["similar", str(store), "img5.png", "--modality", "sonar"]) == 2


def test_non_default_settings_are_reproduced(tmp_path):
    """A store made with other options and pooling: queries use the recorded ones."""
    from mtx.similar import similar

    d = make_inputs(tmp_path / "in", 3)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "-O", "text.window=8", "--pool", "max"]) == 0
    for name in ("img1.png", "b.txt"):
        top = similar(out, str(d / name), k=1)[0]["results"][0]
        assert top["id"] == name and abs(top["score"] - 1) <= 1e-5


def _tiny_checkpoint(path, seed=0):
    import torch
    from timm.models.vision_transformer import Block

    torch.manual_seed(seed)
    seq = torch.nn.Sequential(*[Block(64, 4, 4.0, qkv_bias=True, norm_layer=torch.nn.LayerNorm) for _ in range(2)])
    torch.save(seq.state_dict(), path)
    return path


def test_refuses_other_weights_and_explains(data, tmp_path, capsys):
    d, store = data
    ck = _tiny_checkpoint(tmp_path / "tiny.pth")
    assert main(["similar", str(store), str(d / "img0.png"), "-w", str(ck)]) == 1
    msg = capsys.readouterr().err
    assert "cannot embed queries the way this file was embedded" in msg and "weights differ" in msg
    assert "seeded" in msg and "Traceback" not in msg
    # ...while an id query needs no model at all
    assert main(["similar", str(store), "img0.png", "-w", str(ck)]) == 0


def test_store_made_from_a_weights_file(tmp_path, capsys):
    from mtx.similar import similar

    d = make_inputs(tmp_path / "in", 2)
    ck = _tiny_checkpoint(tmp_path / "tiny.pth")
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", str(ck), "-j", "0", "-q"]) == 0
    top = similar(out, str(d / "img1.png"), k=1, weights=str(ck))[0]["results"][0]
    assert top["id"] == "img1.png" and abs(top["score"] - 1) <= 1e-5
    other = _tiny_checkpoint(tmp_path / "other.pth", seed=1)
    assert main(["similar", str(out), str(d / "img1.png"), "-w", str(other)]) == 1
    assert "weights differ" in capsys.readouterr().err
    assert main(["similar", str(out), str(d / "img1.png")]) == 1  # no weights found: say what to pass
    err = capsys.readouterr().err
    assert "cannot embed queries" in err and "--weights" in err


def _tampered(store, tmp_path, edit):
    p = tmp_path / "t.h5"
    shutil.copy(store, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


@pytest.mark.parametrize("edit,expect", [
    (lambda f: f["modalities/image"].attrs.__setitem__("sha256", "0" * 64),
     "the image tokenizer differs"),
    (lambda f: f.attrs.__setitem__("preset", "meta-h14"),
     "preset 'meta-h14', which this mtx does not know"),
    (lambda f: f.attrs.__setitem__("encoder_sha256", "f" * 64),
     "encoder built from the same weights differs"),
    (lambda f: f.attrs.__setitem__("modality_configs_json", json.dumps(
        {**json.loads(f.attrs["modality_configs_json"]), "image": {"size": 224, "max_pixels": 1, "gamma": 2.2}})),
     "its image options"),
    (lambda f: f["modalities/image"].attrs.__setitem__("pool", "cls"),
     "image pooling differs"),
])
def test_refuses_a_store_made_with_other_settings(data, tmp_path, capsys, edit, expect):
    """What another mtx version / install would have recorded: each difference is named."""
    d, store = data
    bad = _tampered(store, tmp_path, edit)
    assert main(["similar", str(bad), str(d / "img2.png")]) == 1
    err = capsys.readouterr().err
    assert expect in err and "cannot embed queries the way this file was embedded" in err, err
    assert "Traceback" not in err
