"""How the CLI reads (issue 16: 5, 10, 11, 13, 14, 17): names printed as written, help in CLI
notation that matches docs/cli.md, -h/-V, the output rule (tables on a terminal, JSON when piped,
colour only where asked), export to stdout, and hints that name the caller's own argument."""
from __future__ import annotations

import inspect
import io
import json
import re
import typing
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer.main
from PIL import Image
from rich.text import Text

from mtx.cli import app, main

TINY = ["-m", "tiny", "-w", "seeded"]
ROOT = Path(__file__).resolve().parents[1]
ESC = "\x1b["


def _commands():
    """(path, click command) of every command, the root and groups included."""
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        out.append((path, cmd))
        for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
            walk(sub, (*path, name))

    walk(root, ())
    return out


def _declared_helps():
    """{(command path, parameter name): help as written in mtx/cli.py and mtx/_cli_data.py}, read
    from the functions' annotations (typer.Option(help=...)), independently of any rendering."""
    found = {}

    def read(path, callback):
        for name, ann in typing.get_type_hints(callback, include_extras=True).items():
            for meta in getattr(ann, "__metadata__", ()):
                if getattr(meta, "help", None):
                    found[(path, name)] = meta.help
        doc = inspect.getdoc(callback)
        if doc:
            found[(path, None)] = doc

    for info in app.registered_commands:
        read((info.name or info.callback.__name__,), info.callback)
    for group in app.registered_groups:
        for info in group.typer_instance.registered_commands:
            read((group.name, info.name), info.callback)
    read((), app.registered_callback.callback)
    found[((), None)] = app.info.help  # the app's help, not its callback's docstring
    for group in app.registered_groups:
        found[(group.name,), None] = group.typer_instance.info.help
    return found


@pytest.fixture(scope="module")
def bracket_store(tmp_path_factory):
    """A store whose file names look like rich markup, plus one failure of that kind."""
    d = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(0)
    for name in ("photo[copy].png", "bad[red].png", "ok.png"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(d / name)
    (d / "broken[bold].png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    out = tmp_path_factory.mktemp("store") / "s.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "-j", "0", "-q"]) == 3
    return d, out


# ------------------------------------------------------------------------------------------
# 16.5: user strings and help texts are not markup
# ------------------------------------------------------------------------------------------


def test_file_names_print_as_written_everywhere(bracket_store, terminal, tmp_path, monkeypatch):
    d, store = bracket_store
    monkeypatch.setenv("MTX_DEBUG", "")  # `embed -v` sets it for the process; undone after the test
    t = terminal()
    rc = main(["embed", str(d), "-o", str(tmp_path / "v.h5"), *TINY, "-j", "0", "-v"])  # colour: a terminal
    assert rc == 3
    err = t.err.text()
    assert "photo[copy].png" in err and "bad[red].png" in err  # the -v lines
    assert "broken[bold].png" in err  # the failure line
    assert "\x1b[31mbad" not in err and "\x1b[1mbroken" not in err  # not read as [red] / [bold]
    for argv in (["embed", str(d), "-o", str(tmp_path / "w.h5"), "--dry-run"], ["info", str(store), "--failures"],
                 ["similar", str(store), "photo[copy].png", "-k", "3"],
                 ["tokenize", str(d / "photo[copy].png"), *TINY]):
        t = terminal()
        main(argv)
        text = t.out.text() + t.err.text()
        for name in ("photo[copy].png", "bad[red].png") if argv[0] in ("embed", "similar") else ():
            assert name in text, (argv, name, text)
        if argv[0] == "info":
            assert "broken[bold].png" in text, text
        if argv[0] == "tokenize":
            assert "photo[copy].png" in text, text


def test_every_help_text_keeps_its_brackets():
    """Each declared help text and docstring renders to itself: nothing in [] is swallowed."""
    declared = _declared_helps()
    assert any("[" in h for h in declared.values())  # the scan has something to find
    by_path = {path: cmd for path, cmd in _commands()}
    checked = 0
    for (path, name), raw in declared.items():
        cmd = by_path[path]
        if name is None:
            shown = cmd.help
        else:
            [p] = [p for p in cmd.params if p.name == name]
            shown = p.help
        assert Text.from_markup(shown).plain == raw, (path, name)
        checked += 1
    assert checked > 60


def test_live_help_shows_the_ray_extra(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["embed", "--help"]) == 0
    assert "pip install 'mtx[ray]'" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# 16.10, 16.11: -V, -h and help that reads like a CLI, equal to docs/cli.md
# ------------------------------------------------------------------------------------------


def test_version_and_short_help(capsys):
    from mtx import __version__

    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out.strip() == f"mtx {__version__}"
    for path, _ in _commands():
        assert main([*path, "-h"]) == 0, path
        assert "Usage: mtx" in capsys.readouterr().out, path


def test_help_reads_like_a_cli_and_matches_the_docs(capsys, monkeypatch):
    from mtx._help import value_name

    monkeypatch.setenv("COLUMNS", "400")
    docs = (ROOT / "docs" / "cli.md").read_text()
    for path, cmd in _commands():
        assert main([*path, "--help"]) == 0
        text = capsys.readouterr().out
        for bad in ("<bool>", "<list[", "<str>", "<int", "<float>", "<path>", "{"):
            assert bad not in text, (path, bad)
        for p in cmd.params:
            if p.param_type_name != "option" or p.name in ("help", "install_completion", "show_completion"):
                continue
            v = value_name(p)
            row = next(line for line in text.splitlines()  # its row in the options table, not the prose
                       if line.strip(" │*").startswith("-") and p.opts[0] in line.split())
            assert (v in row) if v else not re.search(r"\b(TEXT|INTEGER|FLOAT|PATH)\b|\[\w+\|", row), (path, row)
            if path:  # the command's docs table gives the same value
                names = ", ".join(f"`{o}`" for o in sorted([*p.opts, *p.secondary_opts],
                                                           key=lambda o: (not o.startswith("--"), o)))
                doc_value = v.replace("|", "\\|") if v else "flag"
                assert f"| {names} | {doc_value}" in docs, (path, names, doc_value)
    assert main(["embed", "--help"]) == 0
    assert "Usage: mtx embed [OPTIONS] INPUTS..." in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# 16.13: export -o - and embed -o out.parquet
# ------------------------------------------------------------------------------------------


def test_export_streams_jsonl_and_npy_to_stdout(bracket_store, capsysbinary):
    _, store = bracket_store
    with h5py.File(store) as f:
        n, dim = f["embeddings"].shape
        vecs = f["embeddings"][()].astype(np.float32)
    assert main(["export", str(store), "-o", "-", "-q"]) == 0  # jsonl by default
    lines = capsysbinary.readouterr().out.decode().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == n and {"id", "modality", "path", "embedding"} <= set(rows[0])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], np.float32), vecs, rtol=1e-6)
    assert main(["export", str(store), "-o", "-", "-f", "npy"]) == 0
    cap = capsysbinary.readouterr()
    np.testing.assert_array_equal(np.load(io.BytesIO(cap.out)), vecs)
    assert b"-> stdout (npy)" in cap.err


@pytest.mark.parametrize("argv,words", [
    (["-f", "parquet"], ["parquet cannot be written to stdout", "--format jsonl"]),
    (["-f", "safetensors"], ["safetensors cannot be written to stdout"]),
    (["--json"], ["--json", "-o -"]),
])
def test_export_to_stdout_refuses_what_cannot_stream(bracket_store, capsysbinary, argv, words):
    _, store = bracket_store
    assert main(["export", str(store), "-o", "-", *argv]) == 2
    cap = capsysbinary.readouterr()
    assert cap.out == b""
    for w in words:
        assert w.encode() in cap.err, cap.err


@pytest.mark.parametrize("name", ["out.parquet", "out.npy", "out.jsonl", "out.csv", "features", "-"])
def test_embed_refuses_an_output_named_for_another_format(tmp_path, capsys, name):
    (tmp_path / "a.txt").write_text("hello")
    out = tmp_path / name if name != "-" else Path("-")
    assert main(["embed", str(tmp_path / "a.txt"), "-o", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "writes HDF5" in err and ".h5" in err and not out.exists()
    if name == "out.parquet":
        assert "mtx export" in err


# ------------------------------------------------------------------------------------------
# 16.14: one output rule
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["modalities"], ["models"], ["info", "{store}"],
                                  ["similar", "{store}", "ok.png", "-k", "2"]])
def test_data_commands_print_json_when_piped_and_tables_on_a_terminal(bracket_store, capsys, terminal,
                                                                      monkeypatch, argv):
    _, store = bracket_store
    argv = [a.replace("{store}", str(store)) for a in argv]
    monkeypatch.setenv("FORCE_COLOR", "1")  # does not reach a pipe
    assert main(argv) == 0
    cap = capsys.readouterr()
    json.loads(cap.out)
    assert ESC not in cap.out and ESC not in cap.err
    t = terminal()
    assert main(argv) == 0
    text = t.out.text()
    assert not text.lstrip().startswith(("{", "[")) and ESC in text, text


def test_colour_follows_color_and_no_color(terminal, monkeypatch, capsys):
    t = terminal()
    assert main(["--color", "never", "models"]) == 0
    assert ESC not in t.out.text()
    monkeypatch.setenv("NO_COLOR", "1")
    t = terminal()
    assert main(["models"]) == 0
    assert ESC not in t.out.text()
    t = terminal()
    assert main(["--color", "always", "models"]) == 0  # an explicit --color beats NO_COLOR
    assert ESC in t.out.text()


def test_color_reaches_a_pipe_only_with_color_always(bracket_store, capsys, monkeypatch, tmp_path):
    d, _ = bracket_store
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("MTX_DEBUG", "")  # `embed -v` sets it for the process; undone after the test
    argv = ["embed", str(d / "ok.png"), "-o", str(tmp_path / "o.h5"), *TINY, "-j", "0", "-v"]
    assert main(argv) == 0
    assert ESC not in capsys.readouterr().err  # the banner and -v lines are dim on a terminal only
    assert main(["--color", "always", *argv]) == 0
    assert ESC in capsys.readouterr().err


def test_tokenize_json_is_a_list_for_one_file_and_many(bracket_store, capsys):
    d, _ = bracket_store
    assert main(["tokenize", str(d / "ok.png"), *TINY, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["tokenize", str(d / "ok.png"), str(d / "bad[red].png"), *TINY, "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert isinstance(one, list) and isinstance(two, list) and len(one) == 1 and len(two) == 2
    assert set(one[0]) == set(two[0]) == set(two[1])


# ------------------------------------------------------------------------------------------
# 16.17: hints name the caller's argument
# ------------------------------------------------------------------------------------------


def test_api_errors_name_the_api_argument(bracket_store, tmp_path, capsys):
    import mtx
    from mtx.errors import MtxError
    from mtx.store import Store

    _, store = bracket_store
    dest = tmp_path / "x.jsonl"
    dest.write_text("")
    with pytest.raises(MtxError) as e:
        mtx.export(store, dest)
    assert "overwrite=True" in e.value.message and "--overwrite" not in e.value.message
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(MtxError) as e:
        Store(other, {"geometry": {"dim": 64}}).open()
    assert "overwrite=True" in e.value.message and "--" not in e.value.message
    assert main(["export", str(store), "-o", str(dest)]) == 2  # the CLI names its flag
    assert "pass --overwrite" in capsys.readouterr().err
    with pytest.raises(MtxError) as e:  # the CLI's wording does not leak into later API calls
        mtx.export(store, dest)
    assert "overwrite=True" in e.value.message
