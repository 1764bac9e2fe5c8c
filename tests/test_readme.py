"""README.md and docs/ point only at files the repository has, and name every environment
variable mtx reads (issue 16 item 18)."""
from __future__ import annotations

import glob
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
DOC_FILE = re.compile(r"[A-Za-z0-9_.-]+\.(md|py|sh|toml)")  # a file named on its own (REFERENCE.md)


def _references(md: Path):
    """(text, path or None, test name or None) of each link and each code span naming a file."""
    text = md.read_text(encoding="utf-8")
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1).split("#")[0]
        if target and not re.match(r"^(https?|mailto):", m.group(1)):
            yield target, md.parent / target, None
    for m in re.finditer(r"`([^`\n]+)`", text):
        for tok in m.group(1).split():
            tok = tok.strip("'\",;:()")
            node = None
            if "::" in tok:  # a pytest node id: the file and the test
                tok, node = tok.split("::", 1)
                node = re.sub(r"\[.*", "", node)
            if tok.startswith(("-", "$", "~", "/", ".", "http")) or "=" in tok:
                continue
            if "/" in tok and tok.split("/")[0] in TOP:
                yield tok, ROOT / tok, node
            elif DOC_FILE.fullmatch(tok):
                yield tok, None, node


def _exists(path: Path) -> bool:
    """Placeholders (<name>, {a,b}, *, FILE) match any name."""
    return bool(glob.glob(re.sub(r"<[^>]+>|\{[^}]+\}|\*|\bFILE\b", "*", str(path))))


def test_docs_reference_only_files_in_the_repository():
    names = {p.name for p in ROOT.rglob("*") if ".git" not in p.parts}
    missing = []
    for md in DOCS:
        for text, path, node in _references(md):
            ok = text in names if path is None else _exists(path)
            if ok and node and path is not None and path.is_file():
                ok = f"def {node}(" in path.read_text(encoding="utf-8")
            if not ok:
                missing.append(f"{md.relative_to(ROOT)}: {text}" + (f"::{node}" if node else ""))
    assert not missing, missing


def _variables_read() -> set[str]:
    """Environment variables read anywhere in mtx/: os.environ[...] / .get(...), os.getenv,
    Typer's envvar=, through a module constant too (ENV = "MTX_MAX_SAMPLE_MEMORY")."""
    found = set()
    for py in (ROOT / "mtx").rglob("*.py"):
        src = py.read_text(encoding="utf-8")
        consts = dict(re.findall(r"^([A-Z_]+) = \"([A-Z][A-Z0-9_]+)\"", src, re.M))
        for m in re.finditer(r"(?:environ\.get\(|environ\[|getenv\(|envvar=)\s*(\"([A-Z][A-Z0-9_]+)\"|([A-Z_]+)\b)", src):
            name = m.group(2) or consts.get(m.group(3) or "")
            if name:
                found.add(name)
    return found


def test_readme_lists_every_environment_variable():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    read = _variables_read()
    assert {"MTX_DTYPE", "MTX_WEIGHTS", "MTX_MAX_SAMPLE_MEMORY", "SLURM_ARRAY_TASK_ID"} <= read  # the scan works
    assert not {v for v in read if f"`{v}`" not in readme}, sorted(v for v in read if f"`{v}`" not in readme)


def test_readme_gives_the_install_size_and_a_cpu_only_torch_line():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
    assert re.search(r"Install size:[^\n]*\n?[^\n]*\d+ GB", readme)
