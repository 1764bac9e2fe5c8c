"""Mistakes caught before work starts (issue 16 items 1, 2, 6-9; issue 17 item 17): option values
against their declared ranges, usage errors before torch, settings refusals that name the real
difference, offline weights, --dry-run against the existing output, --max-sample-memory, merged
files away from their parts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0"]


def _imgs(d, n=2):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


@pytest.fixture
def restore_budget():
    """``--max-sample-memory`` sets the environment of this process (in-process CLI): undo it."""
    from mtx.modalities import _budget

    before = os.environ.get(_budget.ENV)
    yield
    _budget.set_max_sample_memory(None)
    if before is not None:
        os.environ[_budget.ENV] = before


# ------------------------------------------------------------------------------------------
# Option values (16.6, 17.17)
# ------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["-O", "image.size=abc"], "image.size='abc': expected an integer from 16 to 4096"),
    (["-O", "image.size=0"], "image.size=0: expected an integer from 16 to 4096"),
    (["-O", "image.size=32.5"], "image.size=32.5: expected an integer"),
    (["-O", "hyperspectral.grid=0"], "hyperspectral.grid=0: expected an integer from 1"),
    (["-O", "audio.quality=XQ"], "audio.quality='XQ': expected one of: QQ, LQ, MQ, HQ, VHQ"),
    (["-O", "audio.per_window=maybe"], "audio.per_window='maybe': expected true or false"),
    (["-O", "tabular.numeric_share=2"], "tabular.numeric_share=2: expected a number > 0 and <= 1"),
    (["-O", "text.encoding=utf-9"], "text.encoding='utf-9': unknown text encoding"),
    (["-O", "imag.size=64"], "unknown modality 'imag' (did you mean image?)"),
    (["-O", "image.siz=64"], "image.siz (did you mean size?)"),
    (["--map", "*.csv=timeseries"], "--map '*.csv=timeseries': unknown modality 'timeseries' (did you mean time_series?)"),
    (["--timeout", "0"], "timeout=0.0 (--timeout): expected a number > 0"),
    (["--window", "-5"], "(--window): expected"),
    (["--frames", "3"], "video.frames=3 (--frames): expected an integer >= 2, a multiple of 2"),
    (["--max-sample-memory", "lots"], "max sample memory 'lots' is not a size"),
]


@pytest.mark.parametrize("args,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_bad_option_values_are_refused_before_any_work(tmp_path, capsys, restore_budget, args, message, dry):
    d = _imgs(tmp_path / "in", 1)
    out = tmp_path / "o.h5"
    rc = main(["embed", str(d), "-o", str(out), *TINY, *args, *(["--dry-run"] if dry else [])])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "o.h5.parts").exists()  # nothing made, nothing recorded


def test_good_values_are_coerced_to_their_field_types():
    from mtx.pipeline import EmbedOptions

    opts = EmbedOptions(options={"image": {"size": "64"}, "imu": {"rate": 100}, "audio": {"per_window": "yes"}})
    assert opts.validate().options == {"image": {"size": 64}, "imu": {"rate": 100.0}, "audio": {"per_window": True}}
    assert isinstance(opts.options["imu"]["rate"], float)


def test_every_config_field_declares_its_values():
    """Every modality option has a declared type and range that the docs show."""
    import dataclasses

    from mtx.modalities import list_modalities
    from mtx.settings import KEY, allowed

    for m in list_modalities():
        for f in dataclasses.fields(m.Config):
            assert KEY in f.metadata, f"{m.name}.{f.name} declares no allowed values (mtx.settings.setting)"
            assert allowed(f), f"{m.name}.{f.name}"
    page = (os.path.dirname(__file__) + "/../docs/modalities/image.md")
    assert "an integer from 16 to 4096" in open(page, encoding="utf-8").read()


def test_api_refuses_bad_options_with_a_value_error_before_loading(tmp_path, monkeypatch):
    import mtx
    from mtx import encoder

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(encoder, "load_model", no_model)
    d = _imgs(tmp_path / "in", 1)
    for kw, text in ((dict(options={"image": {"size": 0}}), "image.size=0"),
                     (dict(batch_size=0), "batch_size"),
                     (dict(pool="maximum"), "pool"),
                     (dict(options={"video": {"frames": 3}}), "video.frames=3")):
        with pytest.raises(ValueError, match=text.replace(".", r"\.")):
            mtx.embed(d, model="tiny", weights="seeded", **kw)


# ------------------------------------------------------------------------------------------
# Usage errors answer at once, with one exit code (16.7)
# ------------------------------------------------------------------------------------------


def test_usage_errors_answer_before_torch_loads(tmp_path):
    d = _imgs(tmp_path / "in", 1)
    cases = [
        ["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tinyy", "-w", "seeded"],
        ["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", "seeded", "--device", "gpu"],
        ["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", str(tmp_path / "none.pth")],
        ["embed", str(d), "-o", str(tmp_path / "missing" / "o.h5"), "-m", "tiny", "-w", "seeded"],
        ["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", "seeded", "--timeout", "0"],
        ["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", "seeded", "--map", "*.png=imag"],
        ["tokenize", str(d / "img0.png"), "-m", "tiny", "-w", "seeded", "--device", "gpu"],
        ["export", str(tmp_path / "o.h5"), "-o", str(tmp_path / "missing" / "x.npy")],
        ["similar", str(tmp_path / "o.h5"), "img0.png", "--device", "gpu"],
        ["bench", "--device", "gpu"],
    ]
    code = ("import json, sys, time; from mtx.cli import main; res = []\n"
            f"for argv in {cases!r}:\n"
            "    t = time.perf_counter(); rc = main(argv)\n"
            "    res.append([rc, round(time.perf_counter() - t, 2), 'torch' in sys.modules])\n"
            "print('RESULT', json.dumps(res))")
    env = {**os.environ, "MTX_MODEL": ""}
    env.pop("MTX_MODEL")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    res = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT"))[7:])
    for argv, (rc, _dt, torch_loaded) in zip(cases, res, strict=True):
        assert rc == 2, (argv, p.stderr)
        assert not torch_loaded, f"torch was imported before refusing {argv}"
    assert "directory" in p.stderr and "does not exist" in p.stderr and "none.pth: no such weights file" in p.stderr


# ------------------------------------------------------------------------------------------
# Settings refusals (16.1)
# ------------------------------------------------------------------------------------------


def test_settings_refusal_lists_only_the_real_differences(tmp_path, capsys):
    d = _imgs(tmp_path / "in", 1)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "-q"]) == 0
    capsys.readouterr()
    assert main(["embed", str(d), "-o", str(out), *TINY, "-q", "--pool", "max"]) == 1
    err = capsys.readouterr().err
    assert 'pool: unset -> "max"' in err and "to continue it, pass no --pool" in err
    assert "geometry" not in err and "--dtype" not in err and "mean" not in err  # no phantom difference
    assert main(["embed", str(d), "-o", str(out), *TINY, "-q", "-O", "image.size=64"]) == 1
    err = capsys.readouterr().err
    assert "image.size: 224 -> 64" in err and "-O image.size=224" in err and "pool" not in err
    assert max(len(line) for line in err.splitlines()) < 200
    # The same settings spelled differently are the same: no refusal.
    assert main(["embed", str(d), "-o", str(out), *TINY, "-q", "-O", "image.size=224.0", "-O", "imu.rate=200"]) == 0


def test_differences_compare_canonical_forms():
    from mtx.settings import differences, mismatch

    old = {"geometry": {"mean": [0.5, 0.5], "dim": 64}, "pool": None, "rules": [["*.x", "text"]]}
    new = {"geometry": {"dim": 64, "mean": (0.5, 0.5)}, "pool": None, "rules": [("*.x", "text")], "extra": False}
    assert differences(old, new, {"extra": False}) == []
    assert differences({"rate": 200}, {"rate": 200.0}) == []
    lines, fixes = mismatch("o.h5", {**old, "compute_dtype": "float32"}, {**new, "compute_dtype": "bfloat16"})
    assert lines == ['compute_dtype: "float32" -> "bfloat16"', 'extra: unset -> false']
    assert fixes[0].startswith("--dtype float32")


def test_shard_plan_refusal_names_the_difference(tmp_path):
    from mtx.errors import StoreError
    from mtx.pipeline import Input
    from mtx.scale import load_or_create_plan
    from mtx.store import config_hash, parts_dir_of

    out = tmp_path / "s.h5"
    old = {"geometry": {"mean": (0.5, 0.5)}, "pool": None, "compute_dtype": "float32"}
    items = [Input(tmp_path / "a.png", "a.png")]
    load_or_create_plan(out, items, 2, config_hash(old), old)
    (parts_dir_of(out) / "run.json").write_text(json.dumps({"config": old}))
    new = {**old, "pool": "max"}
    with pytest.raises(StoreError) as e:
        load_or_create_plan(out, items, 2, config_hash(new), new)
    assert 'pool: unset -> "max"' in e.value.message and "geometry" not in e.value.message
    assert "no --pool" in e.value.message


# ------------------------------------------------------------------------------------------
# Offline without cached weights (16.8)
# ------------------------------------------------------------------------------------------


def test_unreachable_hub_fails_fast_with_the_seeded_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: never a real download
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False, raising=False)
    d = _imgs(tmp_path / "in", 1)
    t = time.perf_counter()
    rc = main(["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "meta-b16", "-j", "0"])
    dt = time.perf_counter() - t
    err = capsys.readouterr().err
    assert rc == 1 and "Retrying" not in err
    assert "cannot be reached" in err and "--weights seeded" in err
    assert dt < 20, dt  # the retries took 23-50 s; one probe + start-up, even on a loaded machine


def test_hub_probe_is_one_short_attempt(monkeypatch):
    import socket

    from mtx.weights import hub_unreachable

    for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        assert hub_unreachable() is None
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert "http://127.0.0.1:9 cannot be reached" in hub_unreachable()
    monkeypatch.setenv("http_proxy", "127.0.0.1:9")  # a proxy is what must answer
    assert "through the proxy 127.0.0.1:9" in hub_unreachable()


# ------------------------------------------------------------------------------------------
# --dry-run against the existing output (16.9)
# ------------------------------------------------------------------------------------------


def test_dry_run_reports_the_existing_output(tmp_path, capsys):
    d = _imgs(tmp_path / "in", 2)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "-q"]) == 0
    _imgs(tmp_path / "in2", 1)
    (d / "img2.png").write_bytes((tmp_path / "in2" / "img0.png").read_bytes())
    (d / "junk.zzz").write_bytes(b"\x00\x01junk")
    capsys.readouterr()
    mtime = out.stat().st_mtime_ns
    assert main(["embed", str(d), "-o", str(out), *TINY, "--dry-run", "--json"]) == 3
    r = json.loads(capsys.readouterr().out)
    assert {x["id"]: x["status"] for x in r["inputs"]} == {"img0.png": "done", "img1.png": "done",
                                                           "img2.png": "embed", "junk.zzz": "unknown"}
    assert r["counts"]["done"] == 2 and r["counts"]["embed"] == 1 and r["counts"]["unknown"] == 1
    assert r["output"]["exists"] and r["output"]["differences"] == []
    # A difference the run would refuse is reported, with the run's exit code.
    assert main(["embed", str(d), "-o", str(out), *TINY, "--dry-run", "--pool", "max"]) == 1
    cap = capsys.readouterr()
    assert 'pool: unset -> "max"' in cap.err and "2 already done, 1 would be embedded" in cap.err
    assert "done" in cap.out and "embed" in cap.out
    # --json-lines: JSON lines only on stdout.
    assert main(["embed", str(d), "-o", str(out), *TINY, "--dry-run", "--json-lines", "--pool", "max"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["event"] for x in lines] == ["input"] * 4 + ["summary"]
    assert lines[-1]["output"]["differences"] == ['pool: unset -> "max"']
    assert out.stat().st_mtime_ns == mtime  # nothing written


# ------------------------------------------------------------------------------------------
# --max-sample-memory (decoder processes see it)
# ------------------------------------------------------------------------------------------


def test_max_sample_memory_reaches_the_decoder_processes(tmp_path, capsys, restore_budget):
    d = tmp_path / "in"
    d.mkdir()
    (d / "big.net").write_text("*Vertices 100000\n*Edges\n1 2\n")
    _imgs(d, 1)
    out = tmp_path / "o.h5"
    rc = main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-j", "1", "-q",
               "--max-sample-memory", "1M"])
    assert rc == 3
    import h5py

    with h5py.File(out) as f:
        assert list(f["id"].asstr()[()]) == ["img0.png"]
        msg = f["failures/message"].asstr()[0]
    assert "over the limit of 1 MiB per sample" in msg, msg


# ------------------------------------------------------------------------------------------
# A merged (virtual) file away from its parts (16.2)
# ------------------------------------------------------------------------------------------


def test_merged_file_without_its_parts_refuses_every_read(tmp_path, capsys, monkeypatch):
    d = _imgs(tmp_path / "in", 2)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for i in range(2):
        assert main(["embed", str(d), "-o", "s.h5", *TINY, "-q", "--shard", f"{i}/2"]) == 0
    assert main(["merge", "s.h5"]) == 0
    away = tmp_path / "away"
    away.mkdir()
    shutil.copy(work / "s.h5", away / "s.h5")
    monkeypatch.chdir(away)
    capsys.readouterr()
    assert main(["export", "s.h5", "-o", "x.npy", "-q"]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 part file(s) not found" in err and "s.h5.parts/part-" in err and "mtx merge --copy" in err
    assert not (away / "x.npy").exists()
    assert main(["similar", "s.h5", "img0.png"]) == 1  # a query by id reads a stored vector
    assert "part file(s) not found" in capsys.readouterr().err
    assert main(["info", "s.h5", "--json"]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["sources"][0]["found"] is False and "mtx merge --copy" in cap.err
    from mtx.errors import StoreError
    from mtx.store import read

    with pytest.raises(StoreError, match="part file"):
        read("s.h5")
    monkeypatch.chdir(work)  # beside its parts it reads as before
    ids, vecs = read("s.h5")
    assert len(ids) == 2 and np.isfinite(vecs).all()
