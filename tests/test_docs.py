"""Docs cannot drift: the CLI reference, the modality table and every modality's page are regenerated
and compared, and the Python API page's examples run."""
from __future__ import annotations

import dataclasses
import re
import runpy
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OPTIONAL = {"pandas", "polars", "faiss", "lancedb"}  # a block needing one of these is skipped


def test_generated_docs_are_current(tmp_path):
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_docs.py"))
    for p in gen["generate"](tmp_path):
        committed = DOCS / p.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run `python scripts/gen_docs.py`"
        assert committed.read_text(encoding="utf-8") == p.read_text(encoding="utf-8"), (
            f"{committed} is stale: run `python scripts/gen_docs.py`")


def test_cli_reference_covers_every_command():
    import typer.main

    from mtx.cli import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        for sub in (getattr(cmd, "commands", None) or {name: cmd}):
            title = f"mtx {name}" + (f" {sub}" if sub != name else "")
            assert f"## `{title}`" in text, title
    for opt in ("--format", "--modality", "-k", "--failures", "--json"):
        assert f"`{opt}`" in text, opt


def test_every_modality_has_a_page():
    from mtx.modalities import list_modalities

    table = (DOCS / "modalities.md").read_text(encoding="utf-8")
    for m in list_modalities():
        page = DOCS / "modalities" / f"{m.name}.md"
        assert page.exists(), f"{page} missing"
        text = page.read_text(encoding="utf-8")
        assert f"\n# {m.name}\n" in text and len(text) > 800, page
        for f in dataclasses.fields(m.Config):  # generated from the Config dataclass
            assert f"| `{f.name}` |" in text, (page, f.name)
        assert f"](modalities/{m.name}.md)" in table


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line, code) of every ```python block (```py blocks are illustrative and not run)."""
    out, text = [], path.read_text(encoding="utf-8")
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        out.append((text[: m.start()].count("\n") + 1, m.group(1)))
    return out


def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOCS / "python-api.md")
    assert len(blocks) >= 8
    ex = tmp_path / "examples"
    ex.mkdir()
    for p in (ROOT / "examples").iterdir():
        if p.is_file() and p.suffix != ".py":  # the generator script is not an example input
            shutil.copy(p, ex / p.name)
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__docs__"}
    skipped = []
    for line, code in blocks:
        try:
            exec(compile(code, f"docs/python-api.md:{line}", "exec"), ns)  # noqa: S102
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise
            skipped.append((line, e.name))
    assert (tmp_path / "features.h5").exists() and (tmp_path / "features.parquet").exists()
    if skipped:
        pytest.skip(f"blocks needing optional packages were skipped: {skipped}")
