"""Shared fixtures: a tiny seeded encoder, sample-data paths, hermetic environment."""
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
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


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
