"""mtx info and mtx export: every format round-trips ids, modality, path and float32 vectors exactly."""
from __future__ import annotations

import json
import shutil
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0", "-q"]
FORMATS = ["npy", "parquet", "jsonl", "safetensors"]
SUFFIX = {"npy": "", "parquet": ".parquet", "jsonl": ".jsonl", "safetensors": ".safetensors"}


def make_inputs(d, n_images=4):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "note.txt").write_text("A short note about thermal cameras and point clouds.\n")
    (d / "sub" / "ünïcode näme.txt").write_text("Non-ASCII ids must survive every export format.\n")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return d


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = make_inputs(tmp_path_factory.mktemp("in"))
    out = tmp_path_factory.mktemp("store") / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 3  # broken.png is a recorded failure
    return out


def stored(path, modality=None):
    with h5py.File(path, "r") as f:
        ids = f["id"].asstr()[()].tolist()
        paths = f["path"].asstr()[()].tolist()
        names = {v: k for k, v in h5py.check_enum_dtype(f["modality"].dtype).items()}
        mods = [names[int(c)] for c in f["modality"][()]]
        vecs = f["embeddings"][()].astype(np.float32)
    keep = [i for i, m in enumerate(mods) if modality in (None, m)]
    return [ids[i] for i in keep], [mods[i] for i in keep], [paths[i] for i in keep], vecs[keep]


def load_native(fmt, out):
    """Read an export with the format's own library (not mtx): (ids, modalities, paths, vectors)."""
    if fmt == "npy":
        vecs = np.load(out / "embeddings.npy", allow_pickle=False)
        rows = [json.loads(x) for x in (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
        assert json.loads((out / "meta.json").read_text())["n_rows"] == len(rows)
        return [r["id"] for r in rows], [r["modality"] for r in rows], [r["path"] for r in rows], vecs
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        emb = t.column("embedding").combine_chunks()
        vecs = emb.flatten().to_numpy().reshape(len(t), emb.type.list_size)
        return t.column("id").to_pylist(), t.column("modality").to_pylist(), t.column("path").to_pylist(), vecs
    if fmt == "jsonl":
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        return ([r["id"] for r in rows], [r["modality"] for r in rows], [r["path"] for r in rows],
                np.array([r["embedding"] for r in rows], np.float64).astype(np.float32))
    from safetensors import safe_open
    from safetensors.numpy import load_file

    t = load_file(str(out))
    with safe_open(str(out), "numpy") as f:
        names = json.loads(f.metadata()["modalities"])

    def strings(col):
        blob, offs = t[f"{col}_bytes"].tobytes(), t[f"{col}_offsets"]
        return [blob[offs[i]:offs[i + 1]].decode() for i in range(len(offs) - 1)]

    return strings("id"), [names[c] for c in t["modality"]], strings("path"), t["embeddings"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_roundtrip_every_format(store, tmp_path, fmt, capsys):
    out = tmp_path / f"x{SUFFIX[fmt]}"
    assert main(["export", str(store), "-o", str(out), "--format", fmt, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    ids, mods, paths, vecs = stored(store)
    assert rep["n_rows"] == len(ids) == 6 and rep["format"] == fmt and rep["dim"] == 64
    got = load_native(fmt, out)
    assert got[0] == ids and got[1] == mods and got[2] == paths
    assert got[3].dtype == np.float32 and got[3].shape == (6, 64)
    assert np.array_equal(got[3].view(np.uint32), vecs.view(np.uint32))  # bit for bit
    assert "sub/ünïcode näme.txt" in got[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_one_modality_in_small_chunks(store, tmp_path, fmt):
    from mtx.export import export, read_export

    out = tmp_path / f"x{SUFFIX[fmt]}"
    rep = export(store, out, fmt, modality="image", chunk_rows=3)  # several chunks, one partial
    ids, mods, paths, vecs = stored(store, "image")
    assert rep["n_rows"] == len(ids) == 4
    got = load_native(fmt, out)
    assert got[0] == ids and set(got[1]) == {"image"} and got[2] == paths
    assert np.array_equal(got[3], vecs)
    rid, rmod, rvec = read_export(out)  # the documented reader agrees
    assert rid == ids and rmod == mods and np.array_equal(rvec, vecs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_no_rows_is_valid_and_empty(store, tmp_path, fmt):
    from mtx.export import export, read_export

    out = tmp_path / f"x{SUFFIX[fmt]}"
    assert export(store, out, fmt, modality="video")["n_rows"] == 0  # known modality, no rows
    ids, mods, vecs = read_export(out)
    assert ids == [] and mods == [] and len(vecs) == 0


def test_parquet_schema_in_pyarrow_and_pandas(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "x.parquet"
    assert main(["export", str(store), "-o", str(out), "-q"]) == 0  # format from the suffix
    schema = pq.read_schema(out)
    assert schema.field("id").type == pa.string() and schema.field("modality").type == pa.string()
    assert schema.field("path").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 64)  # fixed_size_list<float>[64]
    meta = json.loads(schema.metadata[b"mtx"])
    assert meta["preset"] == "tiny" and meta["weights_source"] == "seeded" and meta["dim"] == 64
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(out)
    assert list(df.columns) == ["id", "modality", "path", "embedding"] and len(df) == 6
    ids, mods, _, vecs = stored(store)
    assert df["id"].tolist() == ids and df["modality"].tolist() == mods
    assert np.array_equal(np.stack(df["embedding"].to_numpy()).astype(np.float32), vecs)


def test_float16_store_exports_float32(tmp_path):
    d = make_inputs(tmp_path / "in", 2)
    shutil.rmtree(d / "sub")
    (d / "broken.png").unlink()
    out = tmp_path / "h.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "--store-dtype", "float16"]) == 0
    from mtx.export import export, read_export

    export(out, tmp_path / "h.safetensors")
    _, _, vecs = read_export(tmp_path / "h.safetensors")
    with h5py.File(out, "r") as f:
        assert f["embeddings"].dtype == np.float16
        assert vecs.dtype == np.float32 and np.array_equal(vecs, f["embeddings"][()].astype(np.float32))


def test_export_errors(store, tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    assert main(["export", str(store), "-o", str(out), "-q"]) == 0
    assert main(["export", str(store), "-o", str(out), "-q"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(store), "-o", str(out), "-q", "--overwrite"]) == 0
    assert main(["export", str(store), "-o", str(tmp_path / "x.bin")]) == 2
    assert "pass --format" in capsys.readouterr().err
    assert main(["export", str(store), "-o", str(tmp_path / "y.jsonl"), "--format", "csv"]) == 2
    assert "'csv' is not one of" in capsys.readouterr().err  # Typer checks the declared choices
    assert main(["export", str(store), "-o", str(tmp_path / "y.jsonl"), "--modality", "sonar"]) == 2
    err = capsys.readouterr().err
    assert "'sonar' is not one of" in err and "'point_cloud'" in err
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    assert main(["export", str(tmp_path / "plain.h5"), "-o", str(tmp_path / "z.jsonl")]) == 1
    assert "not a readable HDF5 file" in capsys.readouterr().err
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    assert main(["info", str(tmp_path / "other.h5")]) == 1
    assert "not an mtx embeddings file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------


def test_info_json(store, capsys):
    assert main(["info", str(store), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows_by_modality"] == {"image": 4, "text": 2} and s["n_rows"] == 6 and s["dim"] == 64
    assert s["store_dtype"] == "float32" and s["preset"] == "tiny" and s["format_version"] == 1
    assert s["weights_source"] == "seeded" and s["weights_sha256"] == "seeded"
    assert s["modalities"]["image"]["init"] == "seeded" and s["modalities"]["image"]["config"]["size"] == 224
    assert s["modalities"]["text"]["tokenizer"] and len(s["modalities"]["text"]["sha256"]) == 64
    assert s["n_failures"] == 1 and s["failures"][0]["path"].endswith("broken.png")
    assert s["files"] == {"ok": 6, "failed": 1} and s["file_size"] > 0 and s["created"]
    assert s["virtual"] is False


def test_info_on_a_terminal_shows_tables(store, terminal, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    t = terminal()
    assert main(["--color", "never", "info", str(store)]) == 0
    text = t.out.text()
    for word in ("tiny", "seeded", "not pretrained", "image", "text", "ImagePatchTokenizer", "failures 1",
                 "broken.png", "6 x 64 float32"):
        assert word in text, (word, text)


def test_info_failures_flag_lists_all(tmp_path, capsys, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(7):
        (d / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(d / "ok.png")
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 3
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0  # JSON lists every failure
    s = json.loads(capsys.readouterr().out)
    assert s["n_failures"] == 7 and len(s["failures"]) == 7
    assert main(["info", str(out), "--json", "--limit", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["failures"]) == 3
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # tables: the first 5 unless --failures
    assert main(["--color", "never", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "failures 7 (first 5; --failures for all)" in text and "bad5.png" not in text
    assert main(["--color", "never", "info", str(out), "--failures"]) == 0
    assert "bad6.png" in capsys.readouterr().out


def _virtual_merge(sources, dest):
    """A merged file whose row datasets are HDF5 virtual datasets over ``sources`` (what a
    VDS merge produces); the small groups and attributes are copied from the first source."""
    with h5py.File(sources[0], "r") as f0:
        dim = f0["embeddings"].shape[1]
    counts = []
    for s in sources:
        with h5py.File(s, "r") as f:
            counts.append(f["embeddings"].shape[0])
    n = sum(counts)
    with h5py.File(dest, "w") as out, h5py.File(sources[0], "r") as f0:
        for name in ("embeddings", "id", "path", "modality", "n_tokens"):
            ds0 = f0[name]
            layout = h5py.VirtualLayout(shape=(n, dim) if name == "embeddings" else (n,), dtype=ds0.dtype)
            at = 0
            for s, c in zip(sources, counts, strict=True):
                layout[at:at + c] = h5py.VirtualSource(str(s.name), name,
                                                       shape=(c, dim) if name == "embeddings" else (c,))
                at += c
            out.create_virtual_dataset(name, layout)
        for g in ("files", "failures", "modalities"):
            f0.copy(f0[g], out, g)
        for k, v in f0.attrs.items():
            out.attrs[k] = v


def test_info_export_similar_on_a_virtual_merge(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(5)
    parts = []
    for p in range(2):
        d = tmp_path / f"in{p}"
        d.mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"p{p}_{i}.png")
        out = tmp_path / f"part{p}.h5"
        assert main(["embed", str(d), "-o", str(out), *TINY]) == 0
        parts.append(out)
    merged = tmp_path / "merged.h5"
    _virtual_merge(parts, merged)
    monkeypatch.chdir(tmp_path / "in0")  # HDF5 also finds the sources beside the merged file
    capsys.readouterr()
    assert main(["info", str(merged), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["virtual"] is True and s["n_rows"] == 6 and s["rows_by_modality"] == {"image": 6}
    assert sorted(x["file"] for x in s["sources"]) == ["part0.h5", "part1.h5"]
    assert all(x["found"] for x in s["sources"]) and s["total_size"] > s["file_size"]
    from mtx.export import export, read_export
    from mtx.similar import similar

    export(merged, tmp_path / "m.parquet", chunk_rows=4)
    ids, _, vecs = read_export(tmp_path / "m.parquet")
    want = [stored(p) for p in parts]
    assert ids == want[0][0] + want[1][0]
    assert np.array_equal(vecs, np.concatenate([want[0][3], want[1][3]]))
    hits = similar(merged, [str(tmp_path / "in1" / "p1_2.png")], k=2)
    assert hits[0]["results"][0]["id"] == "p1_2.png" and abs(hits[0]["results"][0]["score"] - 1) < 1e-5
    parts[1].rename(tmp_path / "gone.h5")
    assert main(["info", str(merged), "--json"]) == 1  # shown, and an error: its rows cannot be read
    res = capsys.readouterr()
    assert "1 of 2 part file(s) not found (part1.h5)" in res.err and "mtx merge --copy" in res.err
    assert [x["found"] for x in sorted(json.loads(res.out)["sources"], key=lambda x: x["file"])] == [True, False]
