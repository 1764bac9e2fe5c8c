"""What counts as an input (issues 16 and 17): missing paths, discovery failures, hidden files,
--include/--exclude/--skip-unknown, the output's own files, shard plans, special files, words."""
from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0", "--no-progress"]


def _imgs(d: Path, n: int = 2) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``mtx ARGS`` in this process: (exit code, stdout, stderr)."""
    import sys

    o, e = io.StringIO(), io.StringIO()
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            rc = main([str(a) for a in args])
    finally:
        sys.stdin = old
    return rc, o.getvalue(), e.getvalue()


def _json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def _failures(out: Path) -> dict[str, tuple[str, str]]:
    with h5py.File(out, "r") as f:
        g = f["failures"]
        return {p: (s, m) for p, s, m in zip(g["path"].asstr()[()], g["stage"].asstr()[()],
                                             g["message"].asstr()[()], strict=True)}


def _ids(out: Path) -> list[str]:
    with h5py.File(out, "r") as f:
        return sorted(f["id"].asstr()[()])


def _counts_add_up(s: dict) -> None:
    assert s["n_inputs"] == s["n_embedded"] + s["n_skipped"] + s["n_failed"] + s.get("n_unknown", 0), s


# -- 16.4: a path that does not exist ------------------------------------------------------------


def test_missing_path_argument_is_a_usage_error_and_creates_nothing(tmp_path):
    d = _imgs(tmp_path / "in")
    out = tmp_path / "x.h5"
    for extra in ([], ["--dry-run"]):
        rc, _, err = _run("embed", d, tmp_path / "nonexistent", "-o", out, *TINY, *extra)
        assert rc == 2 and f"{tmp_path / 'nonexistent'}: no such file or directory" in err, err
        assert not out.exists() and not (tmp_path / "x.h5.parts").exists() and not (tmp_path / "x.h5.lock").exists()
    # tokenize names the path it cannot find (before loading a model)
    rc, _, err = _run("tokenize", tmp_path / "missing.txt", "-m", "tiny", "-w", "seeded")
    assert rc == 2 and f"{tmp_path / 'missing.txt'}: no such file or directory" in err, err


def test_glob_that_matches_nothing_is_said_and_counted(tmp_path):
    d = _imgs(tmp_path / "in")
    pattern = str(tmp_path / "nothing" / "*.png")
    out = tmp_path / "g.h5"
    rc, stdout, err = _run("embed", d, pattern, "-o", out, *TINY, "--json-lines")
    assert rc == 3
    assert f"{pattern}: discover: glob matched no files" in err, err
    rows = {r["path"]: r for r in _json_lines(stdout)}
    assert rows[pattern]["status"] == "failed" and rows[pattern]["stage"] == "discover"
    assert _failures(out) == {pattern: ("discover", "glob matched no files")}
    rc, stdout, _ = _run("embed", d, pattern, "-o", tmp_path / "h.h5", *TINY, "--json", "-q")
    s = json.loads(stdout)
    assert (s["n_inputs"], s["n_embedded"], s["n_failed"]) == (3, 2, 1)
    _counts_add_up(s)


# -- 16.4 + 17.13: every input discovery cannot reach is a failure row ---------------------------


def _deep_file(root: Path) -> str:
    """A file whose absolute path is over PATH_MAX, in a folder whose path is not."""
    from mtx._files import PATH_MAX

    deep = root / "deep"
    while len(os.fsencode(deep)) + 201 < PATH_MAX - 20:
        deep = deep / ("d" * 200)
    os.makedirs(deep)
    name = "f" * (PATH_MAX - len(os.fsencode(deep)) - 4) + ".txt"  # the path ends at PATH_MAX + 1
    fd = os.open(deep, os.O_RDONLY)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"too deep to open by name\n")
        os.close(f)
    finally:
        os.close(fd)
    path = os.path.join(deep, name)
    assert len(os.fsencode(path)) > PATH_MAX
    return path


def test_discovery_failures_are_rows_reported_everywhere(tmp_path, monkeypatch):
    from mtx.pipeline import discover

    d = _imgs(tmp_path / "in")
    (d / "locked").mkdir()
    (d / "locked" / "inside.png").write_bytes((d / "img0.png").read_bytes())
    os.symlink(tmp_path / "nowhere.png", d / "dangling.png")
    long_path = _deep_file(d)
    real_scandir = os.scandir

    def scandir(path="."):  # an unreadable folder (root ignores file modes, so it is simulated)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([str(d), "-"], stdin=io.StringIO(f"{tmp_path / 'listed_but_missing.png'}\n"))
    items, problems = found
    assert [i.id for i in items] == ["img0.png", "img1.png"]
    problems = dict(problems)
    assert problems[str(d / "locked")] == "permission denied: the files in this folder cannot be listed"
    assert problems[str(d / "dangling.png")] == f"broken symlink: its target {tmp_path / 'nowhere.png'} does not exist"
    assert problems[long_path].startswith("path too long (")
    assert problems[str(tmp_path / "listed_but_missing.png")] == "no such file or directory"

    # the same through the CLI: a stderr line each, --json-lines rows, --json counts, exit code 3
    out = tmp_path / "o.h5"
    rc, stdout, err = _run("embed", d, "-", "-o", out, *TINY, "--json-lines",
                           stdin=f"{tmp_path / 'listed_but_missing.png'}\n")
    assert rc == 3
    for p in problems:
        assert f"failed {p}: discover: " in err
    lines = {r["path"]: r for r in _json_lines(stdout)}
    assert {p for p, r in lines.items() if r["stage"] == "discover"} == set(problems)
    assert "disappeared" not in err
    assert {p for p, (stage, _) in _failures(out).items() if stage == "discover"} == set(problems)
    rc, stdout, _ = _run("embed", d, "-o", tmp_path / "p.h5", *TINY, "--json", "-q")
    s = json.loads(stdout)
    assert rc == 3 and s["n_failed"] == 3 and s["n_embedded"] == 2
    _counts_add_up(s)


# -- 16.12 + 17.14: hidden files, --include/--exclude, --skip-unknown -----------------------------


def _mixed(d: Path) -> Path:
    _imgs(d)
    (d / "notes.txt").write_text("a short note about frozen encoders\n")
    (d / "sub").mkdir()
    _imgs(d / "sub", 1)
    (d / ".hidden.txt").write_text("a hidden note\n")
    (d / ".cache").mkdir()
    (d / ".cache" / "x.txt").write_text("cached text\n")
    (d / "blob.bin").write_bytes(bytes(range(256)) * 3)  # no modality claims it
    return d


def test_hidden_files_are_counted_and_hidden_includes_them(tmp_path):
    d = _mixed(tmp_path / "in")
    rc, stdout, _ = _run("embed", d, "-o", tmp_path / "a.h5", *TINY, "--json", "--skip-unknown")
    s = json.loads(stdout)
    assert rc == 0 and s["n_hidden"] == 2 and s["n_embedded"] == 4
    rc, _, err = _run("embed", d, "-o", tmp_path / "b.h5", *TINY, "--skip-unknown")
    assert "2 hidden (--hidden includes them)" in err
    rc, stdout, _ = _run("embed", d, "-o", tmp_path / "c.h5", *TINY, "--json", "--skip-unknown", "--hidden")
    s = json.loads(stdout)
    assert rc == 0 and s["n_hidden"] == 0 and s["n_embedded"] == 6
    assert {".hidden.txt", ".cache/x.txt"} <= set(_ids(tmp_path / "c.h5"))


def test_include_and_exclude_choose_files(tmp_path):
    d = _mixed(tmp_path / "in")
    rc, stdout, _ = _run("embed", d, "-o", tmp_path / "a.h5", *TINY, "--json", "--include", "*.png",
                         "--exclude", "sub/*")
    s = json.loads(stdout)
    assert rc == 0 and _ids(tmp_path / "a.h5") == ["img0.png", "img1.png"]
    assert s["n_excluded"] == 3 and s["n_inputs"] == 2
    rc, stdout, _ = _run("embed", d, "-o", tmp_path / "b.h5", *TINY, "--json", "--exclude", "*.bin",
                         "--exclude", "*/sub/*")
    assert rc == 0 and _ids(tmp_path / "b.h5") == ["img0.png", "img1.png", "notes.txt"]
    # the Python API discovers the same way
    import mtx
    from mtx.errors import MtxError

    ids, vecs = mtx.embed(d, model="tiny", weights="seeded", include=["*.png", "*.txt"], exclude=["sub/*"],
                          hidden=True)
    assert sorted(ids) == [".cache/x.txt", ".hidden.txt", "img0.png", "img1.png", "notes.txt"]
    assert vecs.shape == (5, 64)
    with pytest.raises(MtxError, match="no modality matched"):
        mtx.embed(d, model="tiny", weights="seeded", include=["*.bin"])
    ids, _ = mtx.embed(d, model="tiny", weights="seeded", skip_unknown=True)
    assert sorted(ids) == ["img0.png", "img1.png", "notes.txt", "sub/img0.png"]
    with pytest.raises(MtxError, match="no such file or directory"):
        mtx.embed(tmp_path / "nope", model="tiny", weights="seeded", on_error="skip")


def test_skip_unknown_lists_them_once_and_is_not_a_failure_on_resume(tmp_path):
    d = _mixed(tmp_path / "in")
    out = tmp_path / "o.h5"
    rc, _, err = _run("embed", d, "-o", out, *TINY)
    assert rc == 3 and str(d / "blob.bin") in _failures(out)
    for _ in range(2):  # the rerun that skips it, and every resume after
        rc, stdout, err = _run("embed", d, "-o", out, *TINY, "--skip-unknown", "--json-lines")
        assert rc == 0, err
        assert f"failed {d / 'blob.bin'}" not in err
        assert err.count(str(d / "blob.bin")) == 1 and "no modality claims" in err
        assert [r["status"] for r in _json_lines(stdout) if r["path"] == str(d / "blob.bin")] == ["skipped"]
        assert _failures(out) == {}
    rc, stdout, _ = _run("embed", d, "-o", out, *TINY, "--skip-unknown", "--json")
    s = json.loads(stdout)
    assert s["n_unknown"] == 1 and s["unknown"] == [str(d / "blob.bin")] and s["n_failed"] == 0
    _counts_add_up(s)
    rc, stdout, _ = _run("embed", d, "-o", out, *TINY, "--skip-unknown", "--dry-run", "--json")
    assert rc == 0 and [r["id"] for r in json.loads(stdout)["inputs"] if r["status"] == "skipped"] == ["blob.bin"]


# -- 17.10: the output and its side files are never inputs ---------------------------------------


def test_output_inside_an_input_folder_and_its_side_files_are_never_inputs(tmp_path):
    d = _imgs(tmp_path / "in")
    out = d / "emb.h5"
    rc, stdout, _ = _run("embed", d, "-o", out, *TINY, "--json", "-q")
    assert rc == 0 and json.loads(stdout)["n_inputs"] == 2
    # what an interrupted run leaves beside it; the output spelled through a symlinked folder
    (d / "emb.h5.lock").write_text("pid 1 on host\n")
    (d / "emb.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (d / "emb.h5.parts").mkdir()
    (d / "emb.h5.parts" / "part-1-000001.h5.tmp").write_bytes(bytes(64))
    (d / "emb.h5.parts" / "run.json.77.tmp").write_text("{}")
    os.symlink(d, tmp_path / "alias")
    rc, stdout, err = _run("embed", d, d / "*", "-o", tmp_path / "alias" / "emb.h5", *TINY, "--json", "-q")
    s = json.loads(stdout)
    assert rc == 0, err
    assert (s["n_inputs"], s["n_skipped"], s["n_failed"]) == (2, 2, 0), s
    from mtx.pipeline import Filters, discover

    items, problems = discover([str(d), str(d / "emb.h5.parts")], filters=Filters(output=tmp_path / "alias" / "emb.h5"))
    assert [i.id for i in items] == ["img0.png", "img1.png"] and not problems


def test_shards_with_the_output_inside_the_input_folder(tmp_path):
    d = _imgs(tmp_path / "in", 3)
    out = d / "s.h5"
    assert _run("embed", d, "-o", out, *TINY, "--shard", "0/2", "-q")[0] == 0
    assert _run("embed", d, "-o", out, *TINY, "--shard", "1/2", "-q")[0] == 0
    assert _run("merge", out)[0] == 0
    assert _ids(out) == ["img0.png", "img1.png", "img2.png"] and _failures(out) == {}


# -- 16.3: shard plans and SLURM variables --------------------------------------------------------


def test_shard_plan_refuses_other_inputs_describing_both(tmp_path):
    a, b = _imgs(tmp_path / "a"), _imgs(tmp_path / "b", 3)
    out = tmp_path / "s.h5"
    assert _run("embed", a, "-o", out, *TINY, "--shard", "0/2", "-q")[0] == 0
    rc, _, err = _run("embed", b, "-o", out, *TINY, "--shard", "1/2")
    assert rc == 2
    assert f"planned: 2 files under {a}" in err and f"given: 3 files under {b}" in err, err
    assert "mtx: device=" not in err  # refused before the model loaded
    assert _run("embed", a, "-o", out, *TINY, "--shard", "1/2", "-q")[0] == 0


@pytest.mark.parametrize(("env", "want"), [
    ({"ID": "5", "COUNT": "2"}, "shard 5 of 2"),
    ({"ID": "0", "COUNT": "2", "MIN": "1"}, "shard -1 of 2"),
    ({"ID": "x", "COUNT": "2"}, "SLURM_ARRAY_TASK_ID='x' is not a whole number"),
    ({"ID": "1", "COUNT": "0"}, "shard 1 of 0"),
])
def test_slurm_shard_numbers_are_range_checked(tmp_path, monkeypatch, env, want):
    for k, v in env.items():
        monkeypatch.setenv(f"SLURM_ARRAY_TASK_{k}", v)
    d = _imgs(tmp_path / "in", 1)
    rc, _, err = _run("embed", d, "-o", tmp_path / "s.h5", *TINY)
    assert rc == 2 and want in err, err
    assert not (tmp_path / "s.h5.parts").exists()


def test_slurm_shard_from_an_array_with_offset_and_step(monkeypatch):
    from mtx.scale import parse_shard

    for env, want in (({"ID": "1", "COUNT": "2", "MIN": "1"}, (0, 2)),
                      ({"ID": "4", "COUNT": "3", "MIN": "0", "STEP": "2"}, (2, 3)),
                      ({"ID": "3", "COUNT": "4"}, (3, 4))):
        for k in ("ID", "COUNT", "MIN", "STEP"):
            monkeypatch.delenv(f"SLURM_ARRAY_TASK_{k}", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(f"SLURM_ARRAY_TASK_{k}", v)
        assert parse_shard(None) == want


# -- 17.12: special files are refused by every command, never waited on ----------------------------


def test_tokenize_refuses_a_fifo_and_a_device_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock() -> None:
        """Were the FIFO opened for reading, this writer would let it go after 30 s."""
        deadline = time.monotonic() + 30
        while not done.is_set():
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.1)

    t = threading.Thread(target=unblock, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        rc, _, err = _run("tokenize", fifo, "/dev/null", "-m", "tiny", "-w", "seeded")
    finally:
        done.set()
        t.join()
    assert rc == 3 and time.monotonic() - t0 < 30  # a CLI start-up on a loaded machine, not a hang
    assert f"{fifo}: not a regular file (a FIFO, socket or device); refusing to read it" in err, err
    assert "/dev/null: not a regular file" in err
    # embed says the same words
    out = tmp_path / "o.h5"
    assert _run("embed", fifo, "-o", out, *TINY, "-q")[0] == 3
    assert _failures(out)[str(fifo)] == ("sniff", "not a regular file (a FIFO, socket or device); refusing to read it")


# -- 16.17: small words ----------------------------------------------------------------------------


def test_words_same_in_dry_run_and_run_no_repeated_path_strength_said_once(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "notes.txt").write_text("a short note\n")
    (d / "blob.bin").write_bytes(bytes(range(256)) * 3)
    os.symlink(d / "gone.png", d / "link.png")
    rc, stdout, err = _run("embed", d, "-o", tmp_path / "o.h5", *TINY, "--dry-run", "--json")
    dry = json.loads(stdout)
    reasons = {r["id"]: r["reason"] for r in dry["inputs"]}
    assert reasons["notes.txt"] == "extension .txt"
    assert str(d) not in reasons["blob.bin"]
    rc, stdout, err = _run("embed", d, "-o", tmp_path / "o.h5", *TINY, "--json-lines")
    run = {r["path"]: r["message"] for r in _json_lines(stdout) if r["status"] == "failed"}
    assert dict(dry["problems"])[str(d / "link.png")] == run[str(d / "link.png")]
    assert run[str(d / "link.png")] == f"broken symlink: its target {d / 'gone.png'} does not exist"
    line = next(x for x in err.splitlines() if "blob.bin" in x)
    assert line.count(str(d / "blob.bin")) == 1 and line.startswith(f"failed {d / 'blob.bin'}: sniff: no modality")
    rc, stdout, err = _run("tokenize", d / "notes.txt", "-m", "tiny", "-w", "seeded", "--json")
    assert json.loads(stdout)[0]["reason"] == "extension .txt"
    rc, _, err = _run("tokenize", d / "link.png", "-m", "tiny", "-w", "seeded")
    assert rc == 3 and f"{d / 'link.png'}: broken symlink: its target {d / 'gone.png'} does not exist" in err
