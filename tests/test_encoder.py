"""Encoder: key-padding mask semantics, pooling, dtypes, seeded determinism, weights errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtx.encoder import build_encoder, load_model, pool
from mtx.errors import DeviceError, UsageError, WeightsError
from mtx.modalities._base import Tokens
from mtx.weights import LoadedWeights, get_preset


def test_padded_batch_equals_each_alone(tiny_model):
    g = torch.Generator().manual_seed(0)
    lens = [5, 17, 11]
    xs = [torch.randn(n, 64, generator=g) for n in lens]
    n = max(lens)
    x = torch.zeros(len(xs), n, 64)
    mask = torch.ones(len(xs), n, dtype=torch.bool)
    for i, t in enumerate(xs):
        x[i, : len(t)] = t
        x[i, len(t):] = 1e3  # garbage in the padding must not leak
        mask[i, : len(t)] = False
    batch = Tokens(x, mask, True)
    hb = tiny_model.encode_tokens(batch)
    for mode in ("mean", "max", "cls"):
        vb = pool(hb, batch, mode)
        for i, t in enumerate(xs):
            alone = Tokens(t[None], None, True)
            va = pool(tiny_model.encode_tokens(alone), alone, mode)
            torch.testing.assert_close(vb[i], va[0], atol=1e-5, rtol=0)


def test_pool_modes():
    h = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    t = Tokens(h, torch.tensor([[False, False, False, True]]), True)
    assert pool(h, t, "cls").tolist() == [[0, 1, 2]]
    assert pool(h, t, "mean").tolist() == [[4.5, 5.5, 6.5]]
    assert pool(h, t, "max").tolist() == [[6, 7, 8]]
    with pytest.raises(UsageError):
        pool(h, Tokens(h, None, False), "cls")


def test_seeded_encoder_is_deterministic():
    spec = get_preset("tiny")
    a, b = build_encoder(spec, LoadedWeights(None)), build_encoder(spec, LoadedWeights(None))
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


def test_bf16_close_to_fp32():
    m32 = load_model("tiny", "seeded", "cpu", "float32")
    m16 = load_model("tiny", "seeded", "cpu", "bfloat16")
    x = Tokens(torch.randn(2, 20, 64), None, True)
    a, b = pool(m32.encode_tokens(x), x, "mean"), pool(m16.encode_tokens(x), x, "mean")
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99


def test_float16_on_cpu_refused():
    with pytest.raises(DeviceError, match="float16"):
        load_model("tiny", "seeded", "cpu", "float16")


def test_wrong_geometry_and_unknown_layout(tmp_path):
    from timm.models.vision_transformer import Block

    seq = torch.nn.Sequential(*[Block(64, 4, 4.0, qkv_bias=True, norm_layer=torch.nn.LayerNorm) for _ in range(3)])
    torch.save(seq.state_dict(), tmp_path / "three.pth")
    with pytest.raises(WeightsError, match="3 blocks"):
        load_model("tiny", str(tmp_path / "three.pth"), "cpu")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="unknown checkpoint layout"):
        load_model("tiny", str(tmp_path / "odd.pth"), "cpu")


def test_pickle_checkpoint_refused_and_never_executed(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"0.norm1.weight": Evil()}, f)
    with pytest.raises(WeightsError, match="weights_only"):
        load_model("tiny", str(tmp_path / "evil.pth"), "cpu")
    assert not marker.exists()


def test_pinned_sha256_mismatch(tmp_path):
    from mtx.weights import WeightSource, verify_sha256

    p = tmp_path / "w.bin"
    p.write_bytes(b"not the published file")
    with pytest.raises(WeightsError, match="expected 00ff.*got "):
        verify_sha256(p, WeightSource("blocks", "r", "w.bin", "00ff" * 16))


def test_tiny_checkpoint_roundtrip_through_loader(tmp_path):
    """A tiny official-layout checkpoint loads strictly through the real loading code."""
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    seq = torch.nn.Sequential(*[Block(64, 4, 4.0, qkv_bias=True, norm_layer=torch.nn.LayerNorm) for _ in range(2)])
    torch.save(seq.state_dict(), tmp_path / "tiny.pth")
    m = load_model("tiny", str(tmp_path / "tiny.pth"), "cpu")
    x = torch.randn(1, 9, 64)
    ref = torch.nn.functional.layer_norm(seq(x), (64,), eps=1e-5)
    np.testing.assert_allclose(m.encode_tokens(Tokens(x)).numpy(), ref.detach().numpy(), atol=1e-5)


def test_fetch_never_leaves_a_bad_download_in_the_cache(tmp_path, monkeypatch):
    import huggingface_hub

    from mtx.weights import EncoderSpec, WeightSource, fetch

    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    snap = tmp_path / "snapshots" / "w.pth"
    snap.parent.mkdir()

    def fake_download(repo, filename, **kw):
        blob.write_bytes(b"truncated or substituted")
        if not snap.exists():
            snap.symlink_to(blob)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("mtx.weights.hub_unreachable", lambda *a, **k: None)  # the fakes stand for the hub
    spec = EncoderSpec("x", 64, 2, 4, 16, sources=(WeightSource("blocks", "r/x", "w.pth", "ab" * 32),))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        fetch(spec)
    assert not blob.exists() and not snap.exists()

    def offline(repo, filename, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(WeightsError, match="could not download r/x/w.pth"):
        fetch(spec)


def test_dtype_auto_uses_native_bf16_only(monkeypatch):
    from mtx import encoder

    cpu = torch.device("cpu")
    monkeypatch.setattr(encoder, "cpu_has_fast_bf16", lambda: True)
    assert encoder.resolve_dtype("auto", cpu) == "bfloat16"
    monkeypatch.setattr(encoder, "cpu_has_fast_bf16", lambda: False)
    assert encoder.resolve_dtype("auto", cpu) == "float32"
    assert encoder.resolve_dtype("float32", cpu) == "float32"
    with pytest.raises(UsageError, match="auto"):
        encoder.resolve_dtype("int8", cpu)
    m = load_model("tiny", "seeded", "cpu", "auto")
    assert m.dtype == torch.float32 and m.encoder.blocks[0].attn.qkv.weight.dtype == torch.float32


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_encoder_matches_eager_with_padding_and_varying_shapes(backend):
    eager = load_model("tiny", "seeded", "cpu", "float32")
    comp = load_model("tiny", "seeded", "cpu", "float32").compile(backend=backend)
    assert comp.compile() is comp  # compiling twice is a no-op
    g = torch.Generator().manual_seed(0)
    for b, n, padded in [(3, 17, False), (5, 33, True), (2, 9, True)]:  # shapes vary: dynamic graphs
        x = torch.randn(b, n, eager.spec.dim, generator=g)
        pad = None
        if padded:
            pad = torch.zeros(b, n, dtype=torch.bool)
            pad[0, n // 2:] = True
        t = Tokens(x, pad)
        torch.testing.assert_close(comp.encode_tokens(t), eager.encode_tokens(t), atol=1e-5, rtol=1e-5)


def test_embed_compile_flag_gives_the_same_vectors(tmp_path, monkeypatch):
    import h5py
    from PIL import Image

    from mtx.cli import main
    from mtx.encoder import Model

    calls = []
    real = Model.compile
    # The flag's plumbing, with a backend that compiles in seconds (inductor: the slow test above).
    monkeypatch.setattr(Model, "compile", lambda self, backend="inductor", mode=None: calls.append(1)
                        or real(self, backend="aot_eager"))
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    outs = []
    for extra in ([], ["--compile"]):
        out = tmp_path / f"o{len(outs)}.h5"
        assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-q", "-j", "0", *extra]) == 0
        with h5py.File(out) as f:
            outs.append(f["embeddings"][()])
    assert calls == [1]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
