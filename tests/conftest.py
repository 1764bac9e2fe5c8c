"""Shared fixtures: a tiny seeded encoder, the real sample files (``MTX_TEST_DATA``, skipped when
absent) and their generated look-alikes, hermetic environment."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch a model hub, nor the user's caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mtx-test-cache-")
os.environ.pop("MTX_WEIGHTS", None)
os.environ.pop("MTX_MODEL", None)
# Numeric comparisons in the suite are made in float32 (the CLI default is --dtype auto, which is
# bfloat16 on CPUs with native bf16); tests of `auto` itself unset this.
os.environ["MTX_DTYPE"] = "float32"

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("real", "generated")


def real_data_root() -> Path:
    """Where the real third-party sample files are: ``$MTX_TEST_DATA`` (a relative path is taken
    from the repository root), by default ``../shared/data`` beside the checkout."""
    env = os.environ.get("MTX_TEST_DATA", "").strip()
    p = Path(env).expanduser() if env else Path("..") / "shared" / "data"
    return (p if p.is_absolute() else ROOT / p).resolve()


class RealData:
    """The real sample files (see their SOURCES.md). A test asks for each file it needs; an absent
    folder or file skips that test with a one-line reason, nothing else."""

    source = "real"

    def __init__(self, root: Path):
        self.root = root

    def path(self, rel: str) -> Path:
        if not self.root.is_dir():
            pytest.skip(f"real sample data not found at {self.root}; set MTX_TEST_DATA")
        p = self.root / rel
        if not p.exists():
            pytest.skip(f"real sample file {rel} not found in {self.root}; set MTX_TEST_DATA")
        return p


class GeneratedData:
    """Small look-alikes of the real files written by tests/samplegen.py under the same relative
    names, one modality folder at a time, on first use (once per session)."""

    source = "generated"

    def __init__(self, root: Path):
        self.root = root
        self._facts: dict[str, dict[str, dict]] = {}

    def _build(self, modality: str) -> dict[str, dict]:
        if modality not in self._facts:
            from samplegen import BUILDERS

            self._facts[modality] = BUILDERS[modality](self.root / modality)
        return self._facts[modality]

    def path(self, rel: str) -> Path:
        self._build(rel.partition("/")[0])
        p = self.root / rel
        assert p.exists(), f"samplegen did not write {rel}"
        return p

    def facts(self, rel: str) -> dict:
        """What the builder put in the file (shapes, ranges, counts)."""
        modality, _, name = rel.partition("/")
        return self._build(modality)[name]


@pytest.fixture(scope="session")
def real_data() -> RealData:
    return RealData(real_data_root())


@pytest.fixture(scope="session")
def generated_data(tmp_path_factory) -> GeneratedData:
    return GeneratedData(tmp_path_factory.mktemp("generated-samples"))


@pytest.fixture(scope="session")
def sample_files(real_data, generated_data) -> dict[str, RealData | GeneratedData]:
    """``sample_files[source].path("graph/karate.gml")`` for source in :data:`SOURCES`: tests
    that run on the real files run on their generated look-alikes too."""
    return {"real": real_data, "generated": generated_data}


@pytest.fixture(scope="session")
def shared_data(real_data) -> Path:
    """The real sample folder as a whole (skips when it is absent); prefer ``real_data.path``."""
    if not real_data.root.is_dir():
        pytest.skip(f"real sample data not found at {real_data.root}; set MTX_TEST_DATA")
    return real_data.root


@pytest.fixture(scope="session")
def tiny_model():
    """The 2-block x 64-dim seeded encoder, on CPU."""
    from mtx.encoder import load_model

    return load_model("tiny", weights="seeded", device="cpu")


@pytest.fixture(scope="session")
def b16_model():
    """A seeded encoder with the real B/16 geometry (for shape contracts at real sizes)."""
    from mtx.encoder import load_model

    return load_model("meta-b16", weights="seeded", device="cpu")


def run_modality(model, path, modality: str | None = None, **cfg):
    """sniff -> load -> collate -> tokenize -> encode for one file; returns (decision, samples,
    tokens, hidden) — the contract every modality must satisfy."""
    from mtx.modalities import get_modality
    from mtx.sniff import sniff

    dec = sniff(path, modality=modality)
    mod = get_modality(dec.modality)
    c = mod.config(**cfg)
    samples = list(mod.load(Path(path), c))
    tok = model.tokenizer(dec.modality, c)
    import torch

    with torch.inference_mode():
        tokens = tok({k: v.to(model.device) for k, v in mod.collate(samples).items()})
    hidden = model.encode_tokens(tokens)
    return dec, samples, tokens, hidden


class _Terminal:
    """A stdout or stderr that says it is a terminal (what ``mtx`` sees in a shell), keeping what
    is written; ``text()`` returns it."""

    def __init__(self):
        import io

        self.buffer = io.BytesIO()
        self._text = io.TextIOWrapper(self.buffer, encoding="utf-8", errors="surrogateescape", write_through=True)

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return self._text.write(s)

    def flush(self) -> None:
        self._text.flush()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def text(self) -> str:
        return self.buffer.getvalue().decode("utf-8", "surrogateescape")


@pytest.fixture
def terminal(monkeypatch):
    """Call it in the test body (pytest's capture resets sys.stdout when the test starts):
    ``t = terminal()`` replaces stdout and stderr by terminals; ``t.out.text()`` is what was printed."""
    import sys
    import types

    def install():
        t = types.SimpleNamespace(out=_Terminal(), err=_Terminal())
        monkeypatch.setattr(sys, "stdout", t.out)
        monkeypatch.setattr(sys, "stderr", t.err)
        return t

    return install
