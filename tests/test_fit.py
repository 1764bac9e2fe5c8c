"""mtx fit / embed --tokenizer / predict / probe: contracts, refusals, resume, determinism."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import mtx
from mtx.cli import main
from mtx.fit.bundle import read_meta
from mtx.fit.tasks import TASKS
from mtx.fit.train import FitInterrupted, FitOptions, fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ["-m", "tiny", "-w", "seeded"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _opts(modality="time_series", **kw) -> FitOptions:
    base = dict(modality=modality, model="tiny", weights=["seeded"], device="cpu", dtype="float32",
                labels="folders", epochs=3, workers=0)
    base.update(kw)
    return FitOptions(**base)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    TASKS["time_series"](d / "data", 6, seed=1)
    return d / "data"


@pytest.fixture(scope="module")
def fitted(series, tmp_path_factory):
    """One small supervised time-series tokenizer, shared by the tests that only use it."""
    out = tmp_path_factory.mktemp("fitted") / "ts.safetensors"
    summary = fit([str(series)], out, _opts(epochs=4))
    return out, summary


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ------------------------------------------------------------------------------------------
# The file and the vectors
# ------------------------------------------------------------------------------------------


def test_tokenizer_file_layout_and_metadata(fitted):
    from safetensors import safe_open

    out, s = fitted
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["mtx_format"] == "bundle" and meta["mtx_bundle"] == "tokenizer"
    assert all(k.startswith(("tokenizers.time_series.", "heads.time_series.")) for k in keys)
    assert any(k.startswith("heads.") for k in keys)
    fit_meta = json.loads(meta["mtx_fit"])
    for key in ("modality", "encoder", "config", "objective", "labels", "data", "epochs", "best", "seed",
                "mtx_version", "pool"):
        assert key in fit_meta, key
    assert fit_meta["encoder"]["preset"] == "tiny" and len(fit_meta["encoder"]["weights_sha256"]) == 64
    assert fit_meta["labels"] == ["p06", "p09", "p14", "p22"]
    assert fit_meta["data"]["count"] == 24 and len(fit_meta["data"]["ids_sha256"]) == 64
    assert s["sha256"] == _sha(out)
    # The same file loads where --weights takes a bundle, seeded encoder included.
    m = mtx.load_model("tiny", ["seeded", str(out)], "cpu", "float32")
    assert m.weights.tokenizer_files["time_series"]["file_sha256"] == s["sha256"]


@pytest.mark.parametrize("modality", ["time_series", "graph"])
def test_embed_tokenizer_equals_the_fit_runs_own_vectors(tmp_path, modality):
    TASKS[modality](tmp_path / "d", 5, seed=3)
    s = fit([str(tmp_path / "d")], tmp_path / "t.safetensors", _opts(modality, epochs=2))
    assert s["val_ids"]
    out = tmp_path / "o.h5"
    assert main(["embed", str(tmp_path / "d"), "-o", str(out), *TINY, "-j", "0", "-q", "--dtype", "float32",
                 "--tokenizer", f"{modality}={tmp_path / 't.safetensors'}"]) == 0
    with h5py.File(out, "r") as f:
        rows = dict(zip(f["id"].asstr()[()], f["embeddings"][()], strict=True))
        attrs = dict(f[f"modalities/{modality}"].attrs)
    got = np.stack([rows[i] for i in s["val_ids"]])
    np.testing.assert_allclose(got, s["val_vectors"], atol=1e-5, rtol=0)
    assert attrs["init"] == "file" and attrs["file_sha256"] == s["sha256"]
    assert json.loads(attrs["fit_json"])["modality"] == modality
    assert attrs["pool"] == s["pool"]


def test_encoder_parameters_bit_identical_after_fit(series, tmp_path):
    from mtx.modalities._base import state_sha256

    m = mtx.load_model("tiny", "seeded", "cpu", "float32")
    before = state_sha256(m.encoder)
    fit([str(series)], tmp_path / "t.safetensors", _opts(epochs=2), model=m)
    assert state_sha256(m.encoder) == before
    assert all(not p.requires_grad and p.grad is None for p in m.encoder.parameters())
    assert not m.tokenizers  # the trained tokenizer was not left installed in the model


def test_same_seed_same_file_other_seed_other_file(series, fitted, tmp_path):
    out, s = fitted
    again = fit([str(series)], tmp_path / "again.safetensors", _opts(epochs=4))
    assert again["sha256"] == s["sha256"] == _sha(tmp_path / "again.safetensors")
    other = fit([str(series)], tmp_path / "other.safetensors", _opts(epochs=4, seed=1))
    assert other["sha256"] != s["sha256"]


def test_interrupt_keeps_best_and_rerun_resumes_to_the_same_file(series, fitted, tmp_path):
    out = tmp_path / "t.safetensors"

    def stop(ev):
        if ev["event"] == "epoch" and ev["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(FitInterrupted) as e:
        fit([str(series)], out, _opts(epochs=4), progress=stop)
    assert e.value.exit_code == 130 and "rerun" in e.value.message
    assert out.exists() and read_meta(out)["complete"] is False
    events = []
    s = fit([str(series)], out, _opts(epochs=4), progress=events.append)
    assert [ev["epoch"] for ev in events if ev["event"] == "resume"] == [2]
    assert [ev["epoch"] for ev in events if ev["event"] == "epoch"] == [3, 4]
    assert s["sha256"] == fitted[1]["sha256"]  # resumed == uninterrupted, byte for byte
    assert not (tmp_path / "t.safetensors.fit").exists()
    # A rerun of a finished fit trains nothing.
    assert fit([str(series)], out, _opts(epochs=4))["already_done"]


def test_kill_9_during_fit_then_rerun_resumes_and_finishes(tmp_path, fitted):
    TASKS["time_series"](tmp_path / "d", 12, seed=5)
    out = tmp_path / "t.safetensors"
    cmd = [sys.executable, "-m", "mtx", "fit", str(tmp_path / "d"), "--modality", "time_series", "--labels",
           "folders", "-o", str(out), *TINY, "--epochs", "8", "--patience", "0", "--dtype", "float32"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "t.safetensors.fit" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    assert ckpt.exists() and not out.exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after epoch" in r.stderr
    first = int(r.stderr.split("resuming after epoch")[1].split()[0])
    assert 1 <= first < 8
    assert out.exists() and not ckpt.parent.exists()
    # The same run without a kill writes the same bytes (the worker pool decoded this one).
    clean = fit([str(tmp_path / "d")], tmp_path / "clean.safetensors",
                _opts(epochs=8, patience=0))
    assert clean["sha256"] == _sha(out)


# ------------------------------------------------------------------------------------------
# Refusals: one line each
# ------------------------------------------------------------------------------------------


def _tiny_weights(path: Path) -> Path:
    """An official-layout block file for the tiny preset (other weights than 'seeded')."""
    import torch

    from mtx.encoder import Encoder
    from mtx.weights import get_preset

    torch.manual_seed(7)
    torch.save(Encoder(get_preset("tiny")).blocks.state_dict(), path)
    return path


def test_refuses_a_tokenizer_trained_against_other_encoder_weights(fitted, tmp_path, capsys):
    out, s = fitted
    w = _tiny_weights(tmp_path / "other.pth")
    rc = main(["embed", str(out.parent), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", str(w), "-j", "0",
               "--tokenizer", f"time_series={out}"])
    line = _err_line(capsys)
    assert rc == 1
    fit_sha = read_meta(out)["encoder"]["weights_sha256"]
    assert fit_sha in line and "other.pth" in line and line.count("sha256") == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "wrong_modality"])
def test_refuses_corrupt_or_foreign_tokenizer_files(fitted, tmp_path, capsys, damage):
    out, _ = fitted
    bad = tmp_path / "bad.safetensors"
    if damage == "truncated":
        bad.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
        want = "corrupt mtx tokenizer file"
    elif damage == "garbage":
        bad.write_bytes(os.urandom(300))
        want = "not an mtx tokenizer file"
    elif damage == "foreign":
        import torch
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(3)}, str(bad))
        want = "not an mtx tokenizer file"
    else:
        bad = out
        want = "holds a time_series tokenizer, not audio"
    arg = f"audio={bad}" if damage == "wrong_modality" else str(bad)
    rc = main(["embed", str(out.parent), "-o", str(tmp_path / "o.h5"), *TINY, "-j", "0", "--tokenizer", arg])
    line = _err_line(capsys)
    assert rc in (1, 2) and want in line, line
    assert "Traceback" not in line


def _write_labels(path: Path, rows: list[tuple[str, str]], key="id") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, "label"])
        w.writerows(rows)
    return path


@pytest.mark.parametrize("case", ["single_class", "no_match", "no_column"])
def test_one_line_label_refusals(series, tmp_path, capsys, case):
    args = ["fit", str(series), "--modality", "time_series", "-o", str(tmp_path / "t.safetensors"), *TINY,
            "-j", "0", "--epochs", "1"]
    if case == "single_class":
        ids = [f"{c}/{p.name}" for c in ("p06", "p09") for p in sorted((series / c).iterdir())]
        args += ["--labels", str(_write_labels(tmp_path / "l.csv", [(i, "same") for i in ids]))]
        want = "at least two classes"
    elif case == "no_match":
        args += ["--labels", str(_write_labels(tmp_path / "l.csv", [("nope/a.csv", "x"), ("nope/b.csv", "y")]))]
        want = "match no input sample"
    else:
        TASKS["tabular"](tmp_path / "tab", 40, seed=1)
        args = ["fit", str(tmp_path / "tab"), "--modality", "tabular", "-o", str(tmp_path / "t.safetensors"),
                *TINY, "-j", "0", "--target", "label"]
        want = "--target 'label': table.csv has no such column (columns: x0, x1"
    rc = main(args)
    line = _err_line(capsys)
    assert rc == 2 and want in line, line
    assert not (tmp_path / "t.safetensors").exists()


def test_unknown_missing_and_duplicate_ids_are_reported_not_fatal(series, tmp_path, capsys):
    ids = sorted(f"{c.name}/{p.name}" for c in series.iterdir() for p in c.iterdir())
    rows = [(i, i.split("/")[0]) for i in ids[2:]] + [(ids[7], "p06"), (ids[4], ids[4].split("/")[0]),
                                                       ("ghost/x.csv", "p06")]
    labels = _write_labels(tmp_path / "l.csv", rows)
    rc = main(["fit", str(series), "--modality", "time_series", "-o", str(tmp_path / "t.safetensors"), *TINY,
               "-j", "0", "--epochs", "1", "--labels", str(labels), "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    rep = s["labels"]
    assert rep["unknown"]["count"] == 1 and rep["unknown"]["examples"] == ["ghost/x.csv"]
    assert rep["missing"]["count"] == 2 and rep["duplicate"]["count"] == 2 and rep["conflicting"]["count"] == 1
    assert s["n_train"] + s["n_val"] == len(ids) - 2


# ------------------------------------------------------------------------------------------
# Using a fitted tokenizer
# ------------------------------------------------------------------------------------------


def test_resume_refuses_a_different_tokenizer_and_info_tokenize_similar_show_it(series, fitted, tmp_path, capsys,
                                                                                monkeypatch):
    out, s = fitted
    store = tmp_path / "o.h5"
    base = ["embed", str(series), "-o", str(store), *TINY, "-j", "0", "-q", "--dtype", "float32"]
    assert main([*base, "--tokenizer", str(out)]) == 0
    other = tmp_path / "other.safetensors"
    fit([str(series)], other, _opts(epochs=2, seed=3))
    assert main([*base, "--tokenizer", str(other)]) == 1
    err = capsys.readouterr().err
    assert "settings differ" in err and "\n  tokenizers: " in err and "same --tokenizer files" in err
    monkeypatch.setenv("MTX_TOKENIZERS", str(out))
    assert main(base) == 0  # the same tokenizer through the environment: nothing to redo
    monkeypatch.delenv("MTX_TOKENIZERS")
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ma = info["modalities"]["time_series"]
    assert ma["init"] == "file" and ma["file_sha256"] == s["sha256"]
    one = next(p for p in sorted((series / "p06").iterdir()))
    assert main(["tokenize", str(one), *TINY, "--tokenizer", str(out), "--json"]) == 0
    (rep,) = json.loads(capsys.readouterr().out)
    assert rep["tokenizer"]["init"] == "file" and rep["tokenizer"]["file_sha256"] == s["sha256"]
    assert main(["similar", str(store), str(one), "-k", "2", "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)
    q = sim["queries"][0]
    assert q["results"][0]["id"] == f"p06/{one.name}" and abs(q["results"][0]["score"] - 1) < 1e-5
    assert any("fitted tokenizer" in n for n in q["notes"])


def test_predict_and_probe(series, fitted, tmp_path, capsys):
    out, s = fitted
    assert main(["predict", str(series), "--tokenizer", str(out), "-j", "0", "--dtype", "float32",
                 "-o", str(tmp_path / "p.csv"), "-q"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 24 and set(rows[0]) == {"id", "path", "label", "p_p06", "p_p09", "p_p14", "p_p22"}
    for r in rows:
        p = [float(r[f"p_{c}"]) for c in ("p06", "p09", "p14", "p22")]
        assert abs(sum(p) - 1) < 1e-4 and r["label"] == ["p06", "p09", "p14", "p22"][int(np.argmax(p))]
    assert main(["predict", str(series / "p06"), "--tokenizer", str(out), "-j", "0", "-f", "jsonl", "-q"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6 and set(lines[0]["probabilities"]) == {"p06", "p09", "p14", "p22"}
    store = tmp_path / "o.h5"
    assert main(["embed", str(series), "-o", str(store), *TINY, "-j", "0", "-q", "--tokenizer", str(out)]) == 0
    assert main(["probe", str(store), "--labels", "folders", "--json", "--folds", "3"]) == 0
    pr = json.loads(capsys.readouterr().out)
    assert pr["n"] == 24 and pr["chance"] == 0.25 and pr["folds"] == 3
    for k in ("linear", "knn"):
        assert 0 <= pr[k]["accuracy"] <= 1 and "macro_f1" in pr[k]
    assert main(["probe", str(store), "--labels", "folders"]) == 0
    assert "chance" in capsys.readouterr().err


def test_contrastive_tokenizer_has_no_label_head_for_predict(series, tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    s = fit([str(series)], out, _opts(objective="contrastive", labels=None, epochs=1))
    assert s["objective"] == "contrastive" and s["report"] is None
    rc = main(["predict", str(series), "--tokenizer", str(out), "-j", "0"])
    assert rc == 2 and "no label head" in _err_line(capsys)
    meta = read_meta(out)
    assert "circular time shift" in meta["augmentations"]


def test_tabular_target_leaves_the_tokens_and_regression(tmp_path, capsys):
    TASKS["tabular"](tmp_path / "d", 60, seed=1)
    out = tmp_path / "t.safetensors"
    assert main(["fit", str(tmp_path / "d"), "--modality", "tabular", "--target", "y", "-o", str(out), *TINY,
                 "-j", "0", "--epochs", "2", "-q"]) == 0
    t = tmp_path / "d" / "table.csv"
    assert main(["tokenize", str(t), *TINY, "--tokenizer", str(out), "--json"]) == 0
    (rep,) = json.loads(capsys.readouterr().out)
    assert rep["samples"][0]["tokens"] == 7  # CLS + x0..x5: y is not a token
    assert rep["config"]["drop"] == ["y"]
    # The same rows without the label column are labelled by the head.
    lines = t.read_text().splitlines()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "rows.csv").write_text("\n".join(",".join(x.split(",")[:6]) for x in lines[:11]) + "\n")
    assert main(["predict", str(tmp_path / "new"), "--tokenizer", str(out), "-j", "0", "-q"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["id"] for r in rows] == [f"rows.csv#row={i}" for i in range(10)] and rows[0]["label"] in ("neg", "pos")
    # Regression on a numeric column.
    (tmp_path / "r").mkdir()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    (tmp_path / "r" / "t.csv").write_text("a,b,c,v\n" + "".join(f"{a:.3f},{b:.3f},{c:.3f},{2 * a - b:.3f}\n"
                                                                   for a, b, c in x))
    assert main(["fit", str(tmp_path / "r"), "--modality", "tabular", "--target", "v", "--task", "regression",
                 "-o", str(tmp_path / "reg.safetensors"), *TINY, "-j", "0", "--epochs", "2", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["task"] == "regression" and "r2" in s["report"]["head"]
    assert main(["predict", str(tmp_path / "r"), "--tokenizer", str(tmp_path / "reg.safetensors"), "-j", "0",
                 "-q"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 60 and set(rows[0]) == {"id", "path", "value"}


def test_val_labels_bf16_and_gradient_checkpointing(series, tmp_path):
    ids = sorted(f"{c.name}/{p.name}" for c in series.iterdir() for p in c.iterdir())
    val = _write_labels(tmp_path / "v.csv", [(i, i.split("/")[0]) for i in ids[::4]])
    s = fit([str(series)], tmp_path / "a.safetensors", _opts(epochs=1, val_labels=str(val)))
    assert s["n_val"] == 6 and sorted(s["val_ids"]) == ids[::4]
    plain = fit([str(series)], tmp_path / "p.safetensors", _opts(epochs=1))
    ckpt = fit([str(series)], tmp_path / "c.safetensors", _opts(epochs=1, grad_checkpointing=True))
    assert abs(plain["history"][0]["train_loss"] - ckpt["history"][0]["train_loss"]) < 1e-5
    bf = fit([str(series)], tmp_path / "b.safetensors", _opts(epochs=1, dtype="bfloat16"))
    assert bf["dtype"] == "bfloat16" and np.isfinite(bf["history"][0]["train_loss"])


def test_head_learning_rate_goes_as_one_over_the_width(series, tmp_path, monkeypatch):
    """The head (D inputs, zero at the start) moves each logit by about lr x D per step: its rate
    is --lr x 64 / D (B/16: 1/12), else it memorises a small training set before the tokenizer
    learns anything (benchmarks/RESULTS.md 7a, B/16 audio)."""
    from mtx.fit import loop

    assert loop.head_lr_scale(768) == pytest.approx(64 / 768) and loop.head_lr_scale(64) == 1.0
    made = []
    monkeypatch.setattr(loop, "adamw", lambda groups, lr, _real=loop.adamw: made.append(_real(groups, lr)) or made[-1])
    monkeypatch.setattr(loop, "HEAD_LR_WIDTH", 16)  # the 64-wide tiny encoder treated as 4x too wide
    steps = []
    s = fit([str(series)], tmp_path / "h.safetensors", _opts(epochs=1, lr=1e-2, warmup=0.0),
            progress=lambda e: steps.append(e) if e.get("event") == "step" else None)
    (optim,) = made
    head = {id(p) for m in optim.param_groups if m["lr_scale"] != 1.0 for p in m["params"]}
    assert head and all(p.numel() > 0 for g in optim.param_groups for p in g["params"])
    lrs = sorted({g["lr"] for g in optim.param_groups})
    assert lrs == pytest.approx([0.25 * steps[-1]["lr"], steps[-1]["lr"]])
    assert read_meta(Path(s["output"]))["hyperparameters"]["head_lr"] == pytest.approx(0.25e-2)


def test_augmentations_keep_batch_keys_and_follow_the_seed(tmp_path):
    from mtx._synth import GENERATORS
    from mtx.fit.augment import AUGMENTERS, DESCRIPTIONS, augment
    from mtx.modalities import get_modality, list_modalities

    assert set(AUGMENTERS) == {m.name for m in list_modalities()}
    small = {"video": dict(seconds=0.5), "audio": dict(seconds=1.0), "imu": dict(seconds=2.0)}
    for name in sorted(AUGMENTERS):
        d = tmp_path / name
        d.mkdir()
        files = GENERATORS[name](d, 2, **small.get(name, {}))
        mod = get_modality(name)
        samples = [s for f in files for s in mod.load(f, mod.config())][:3]
        a = augment(name, samples, np.random.default_rng(1))
        b = augment(name, samples, np.random.default_rng(1))
        assert len(a) == len(samples) and DESCRIPTIONS[name]
        for s, x, y in zip(samples, a, b, strict=True):
            if name != "graph":
                assert mod.batch_key(x) == mod.batch_key(s), name
            for k in x.arrays:
                np.testing.assert_array_equal(x.arrays[k], y.arrays[k])
        changed = any(not np.array_equal(s.arrays[k], x.arrays[k]) for s, x in zip(samples, a, strict=True)
                      for k in s.arrays if s.arrays[k].shape == x.arrays[k].shape)
        assert changed or name == "graph", name
        mod.collate(a)  # the views of a batch still collate


def test_spilled_sample_cache_gives_the_same_file(series, fitted, tmp_path, monkeypatch):
    from mtx.fit.data import SampleCache, decode_samples
    from mtx.pipeline import discover

    items, _ = discover([str(series)])
    mem = decode_samples(items, "time_series", {}, workers=0)
    disk = decode_samples(items, "time_series", {}, workers=0,
                          cache=SampleCache(max_bytes=0, spill=tmp_path / "c.bin"))
    assert disk.cache.spilled == len(disk) == len(mem) and disk.ids == mem.ids
    for i in range(len(mem)):
        for k, a in mem.cache.get(i).arrays.items():
            np.testing.assert_array_equal(disk.cache.get(i).arrays[k], a)
    disk.cache.close()
    assert not (tmp_path / "c.bin").exists()
    monkeypatch.setenv("MTX_FIT_CACHE_MB", "0")  # every decoded sample goes to the cache file
    s = fit([str(series)], tmp_path / "t.safetensors", _opts(epochs=4))
    assert s["sha256"] == fitted[1]["sha256"]
    assert not (tmp_path / "t.safetensors.fit").exists()


def test_labels_by_path_column(series, tmp_path):
    from mtx.fit.labels import match_labels

    files = sorted(p for c in series.iterdir() for p in c.iterdir())
    ids = [f"{p.parent.name}/{p.name}" for p in files]
    rel = _write_labels(series.parent / "by_path.csv",
                        [(os.path.relpath(p, series.parent), "x" if i % 2 else "y") for i, p in enumerate(files)],
                        key="path")
    labels, rep = match_labels(ids, files, rel)
    assert labels == ["x" if i % 2 else "y" for i in range(len(files))] and rep.n_labelled == len(files)


def test_samples_of_different_shapes_train_in_mixed_batches(tmp_path):
    """Series of different lengths do not collate together; each forms its own batch key, and a
    step runs them as sub-batches instead of dropping them."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            n = 40 + 7 * i + (3 if c == "b" else 0)
            x = np.sin(np.arange(n) / (2 if c == "a" else 5)) + 0.1 * rng.standard_normal(n)
            (tmp_path / c / f"s{i}.csv").write_text("t,v\n" + "".join(f"{k},{v:.4f}\n" for k, v in enumerate(x)))
    events = []
    s = fit([str(tmp_path)], tmp_path / "t.safetensors", _opts(epochs=2, val=0.0), progress=events.append)
    steps = [ev for ev in events if ev["event"] == "step" and ev["epoch"] == 0]
    assert sorted(i for ev in steps for i in ev["batch"]) == list(range(10))  # every sample trained
    assert s["n_train"] == 10 and s["epochs"] == 2


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_label_file_formats(tmp_path, fmt):
    from mtx.fit.labels import match_labels

    rows = [("t.csv#row=0", "a"), ("t.csv#row=1", "b"), ("t.csv#row=2", "")]
    p = tmp_path / f"l.{fmt}"
    if fmt == "jsonl":
        p.write_text("".join(json.dumps({"id": i, "label": lab}) + "\n" for i, lab in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        p.write_text(f"id{sep}label\n" + "".join(f"{i}{sep}{lab}\n" for i, lab in rows))
    ids = ["t.csv#row=0", "t.csv#row=1", "t.csv#row=2", "t.csv#row=3"]
    labels, rep = match_labels(ids, [tmp_path / "t.csv"] * 4, p)
    assert labels == ["a", "b", None, None]  # an empty label is no label
    assert rep.missing == ["t.csv#row=2", "t.csv#row=3"] and not rep.unknown


# ------------------------------------------------------------------------------------------
# Through the pipeline package: engines, decoder processes, the batcher
# ------------------------------------------------------------------------------------------


def _rows(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        return (dict(zip(f["id"].asstr()[()], f["embeddings"][()], strict=True)),
                dict(f["modalities/time_series"].attrs))


def test_embed_tokenizer_through_shards_and_weights_equals_the_fit_vectors(series, fitted, tmp_path):
    """``EmbedOptions.tokenizers`` is resolved once by ``embed_inputs`` and loaded by the engine
    that runs: two shards + merge, and the file given as ``--weights`` (a bundle), give the fit
    run's own validation vectors, and record the file."""
    from mtx.pipeline import EmbedOptions, discover, embed_inputs

    out, s = fitted
    items, _ = discover([str(series)])
    opts = EmbedOptions(model="tiny", weights=["seeded"], device="cpu", dtype="float32", workers=0,
                        tokenizers=[f"time_series={out}"])
    sharded = tmp_path / "sharded.h5"
    for i in range(2):
        assert embed_inputs(items, sharded, opts, shard=(i, 2))["shard"] == [i, 2]
    assert main(["merge", str(sharded)]) == 0
    as_weights = tmp_path / "w.h5"
    assert main(["embed", str(series), "-o", str(as_weights), "-m", "tiny", "-w", "seeded", "-w", str(out),
                 "-j", "0", "-q", "--dtype", "float32"]) == 0
    for path in (sharded, as_weights):
        rows, attrs = _rows(path)
        np.testing.assert_allclose(np.stack([rows[i] for i in s["val_ids"]]), s["val_vectors"], atol=1e-5, rtol=0)
        assert attrs["init"] == "file" and attrs["file_sha256"] == s["sha256"] and attrs["pool"] == s["pool"]


def test_bad_files_are_reported_skips_with_decoder_processes(series, tmp_path, capsys):
    """Decoding runs in the pipeline's decoder processes (-j 2): an unreadable file in a class
    folder is one row of the label report, and the fit goes on."""
    import shutil

    d = tmp_path / "d"
    shutil.copytree(series, d)
    (d / "p06" / "broken.csv").write_bytes(b"\x00\xff\x00 not a series \xfe" * 10)
    rc = main(["fit", str(d), "--modality", "time_series", "-o", str(tmp_path / "t.safetensors"), *TINY,
               "-j", "2", "--epochs", "1", "--labels", "folders", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["labels"]["failed"]["count"] == 1 and "broken.csv" in s["labels"]["failed"]["examples"][0]
    assert s["n_train"] + s["n_val"] == 24


def test_training_batches_come_from_the_batcher_one_key_each(tmp_path):
    """Each step's samples share a batch key (the embed Batcher's buckets) and hold at most
    --batch-size rows unless they are the mixed leftovers; the same seed plans the same epochs."""
    from mtx.fit.loop import MIN_BATCH

    rng = np.random.default_rng(0)
    lengths = [40] * 9 + [64] * 7 + [50]  # a rare length: mixed into another batch
    for k, n in enumerate(lengths):
        c = tmp_path / "d" / ("a" if k % 2 else "b")
        c.mkdir(parents=True, exist_ok=True)
        x = np.sin(np.arange(n) / (2 if k % 2 else 5)) + 0.1 * rng.standard_normal(n)
        (c / f"s{k}.csv").write_text("t,v\n" + "".join(f"{i},{v:.4f}\n" for i, v in enumerate(x)))
    runs = []
    for _ in range(2):
        events = []
        s = fit([str(tmp_path / "d")], tmp_path / f"t{len(runs)}.safetensors", _opts(epochs=2, val=0.0, batch_size=4),
                progress=events.append)
        runs.append([ev["batch"] for ev in events if ev["event"] == "step"])
    assert runs[0] == runs[1] and s["n_train"] == len(lengths)
    first = runs[0][: len(runs[0]) // 2]
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    single_key = [b for b in first if len({lengths[i] for i in _file_index(tmp_path / "d", b)}) == 1]
    assert all(len(b) <= 4 for b in single_key) and len(single_key) >= len(first) - 1
    assert all(len(b) >= MIN_BATCH for b in first)


def _file_index(root: Path, batch: list[int]) -> list[int]:
    """Sample index (sorted ids, as discovered) -> the k of its file s{k}.csv."""
    names = sorted(f"{p.parent.name}/{p.name}" for p in root.rglob("*.csv"))
    return [int(names[i].split("/s")[1].removesuffix(".csv")) for i in batch]


def test_cli_choice_values_match_the_library():
    from mtx._choices import Objective, Task, values
    from mtx.fit.options import OBJECTIVES, TASKS

    assert values(Objective) == OBJECTIVES and values(Task) == TASKS


def test_device_processes_and_ray_actors_load_the_resolved_tokenizers(series, fitted, tmp_path):
    """``--devices`` and ``--engine ray`` hand the resolved options to other processes: the
    per-device function (run here, in-process) and the Ray actor load the fitted tokenizer."""
    import queue
    import signal as sig

    from mtx import scale
    from mtx.pipeline import EmbedOptions, discover
    from mtx.ray_engine import _ShardEmbedder

    out, s = fitted
    items, _ = discover([str(series)])
    opts = EmbedOptions(model="tiny", weights=["seeded"], device="cpu", dtype="float32", workers=0,
                        tokenizers=[f"time_series={out}"]).with_fitted()
    assert opts.tokenizers == [str(out)] and opts.weights == ["seeded"]
    assert opts.options["time_series"] == read_meta(out)["config"]
    actor = _ShardEmbedder(str(tmp_path / "r.h5"), items, 1, opts, "cpu")
    assert actor.model.weights.tokenizer_files["time_series"]["file_sha256"] == s["sha256"]
    q: queue.Queue = queue.Queue()
    handler = sig.getsignal(sig.SIGINT)
    try:
        scale._device_main(str(tmp_path / "d.h5"), items, (0, 1), opts, "cpu", q)
    finally:
        sig.signal(sig.SIGINT, handler)
    kind, _, payload = q.get_nowait()
    assert kind == "ok", payload
    scale.merge(tmp_path / "d.h5", copy=True)
    rows, attrs = _rows(tmp_path / "d.h5")
    np.testing.assert_allclose(np.stack([rows[i] for i in s["val_ids"]]), s["val_vectors"], atol=1e-5, rtol=0)
    assert attrs["file_sha256"] == s["sha256"]
