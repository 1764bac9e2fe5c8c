"""Black-box parity with references built from timm in the test itself (issue #2 acceptance)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mtx.cli import main


def _image(path, size=(224, 224), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return path


def _randomize_norms(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    """A random checkpoint in the official layout: state_dict of nn.Sequential(12 timm Blocks)."""
    from timm.models.vision_transformer import Block

    torch.manual_seed(1)
    seq = torch.nn.Sequential(*[Block(768, 12, 4.0, qkv_bias=True, norm_layer=torch.nn.LayerNorm,
                                      act_layer=torch.nn.GELU) for _ in range(12)]).eval()
    _randomize_norms(seq, 2)
    path = tmp_path_factory.mktemp("ckpt") / "Meta-Transformer_base_patch16_encoder.pth"
    torch.save(seq.state_dict(), path)
    return path, seq


def test_official_blocks_parity_tokenize_and_embed(official_ckpt, tmp_path, capsys):
    ckpt, seq = official_ckpt
    img = _image(tmp_path / "photo.png", (256, 240))
    t_path = tmp_path / "t.npy"
    assert main(["tokenize", str(img), "-m", "meta-b16", "-w", str(ckpt), "--save", str(t_path), "--json"]) == 0
    [rep] = json.loads(capsys.readouterr().out)
    assert rep["modality"] == "image" and rep["samples"][0]["tokens"] == 197
    assert rep["tokenizer"]["init"] == "seeded"  # the official file has no CLIP front end
    t = np.load(t_path)
    assert t.shape == (197, 768) and t.dtype == np.float32
    with torch.no_grad():
        ref = torch.nn.functional.layer_norm(seq(torch.from_numpy(t)[None]), (768,), eps=1e-5)[0]
    out = tmp_path / "o.h5"
    assert main(["embed", str(img), "-o", str(out), "-m", "meta-b16", "-w", str(ckpt), "--save-tokens",
                 "-j", "0", "-q"]) == 0
    with h5py.File(out, "r") as f:
        vec = f["embeddings"][0]
        saved = f["tokens/data"][()]
        assert f.attrs["weights_source"].endswith("(official)")
        assert f["modalities/image"].attrs["init"] == "seeded"
    np.testing.assert_allclose(saved, t, atol=1e-6)
    # Seeded tokenizer -> mean pooling over the non-CLS tokens of LN(blocks(t)).
    np.testing.assert_allclose(vec, ref[1:].mean(0).numpy(), atol=1e-5)


def _timm_clip(seed: int):
    import timm

    torch.manual_seed(seed)
    m = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=512).eval()
    _randomize_norms(m, seed + 1)
    with torch.no_grad():
        m.cls_token.normal_(0, 0.5)
        m.pos_embed.normal_(0, 0.5)
    return m


def _to_openclip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm -> OpenCLIP layout (the inverse of REFERENCE.md §2)."""
    out = {"visual.conv1.weight": sd["patch_embed.proj.weight"],
           "visual.class_embedding": sd["cls_token"].reshape(-1),
           "visual.positional_embedding": sd["pos_embed"][0],
           "visual.ln_pre.weight": sd["norm_pre.weight"], "visual.ln_pre.bias": sd["norm_pre.bias"],
           "visual.ln_post.weight": sd["norm.weight"], "visual.ln_post.bias": sd["norm.bias"],
           "visual.proj": sd["head.weight"].t().contiguous(),
           "text_projection": torch.zeros(512, 512)}  # a text tower beside it must be ignored
    ren = {"norm1": "ln_1", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
           "attn.proj": "attn.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            for a, b in ren.items():
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[f"visual.transformer.resblocks.{i}.{rest}"] = v
    return out


@pytest.mark.parametrize("layout", ["timm", "openclip"])
def test_clip_tower_parity_with_timm(layout, tmp_path):
    m = _timm_clip(3)
    sd = m.state_dict()
    wpath = tmp_path / f"{layout}.pth"
    if layout == "timm":
        torch.save(sd, wpath)
    else:
        from safetensors.torch import save_file

        wpath = tmp_path / "open_clip_model.safetensors"
        save_file(_to_openclip(sd), str(wpath))
    img = _image(tmp_path / "x.png", (224, 224), seed=5)
    out = tmp_path / "o.h5"
    assert main(["embed", str(img), "-o", str(out), "-m", "clip-b16", "-w", str(wpath), "--pool", "cls",
                 "-j", "0", "-q"]) == 0
    with h5py.File(out, "r") as f:
        vec = f["embeddings"][0]
        assert f["modalities/image"].attrs["init"] == "clip"
    x = torch.from_numpy(np.asarray(Image.open(img), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = m.forward_head(m.forward_features((x - mean) / std), pre_logits=True)[0].numpy()
    np.testing.assert_allclose(vec, ref, atol=1e-4)


def test_clip_front_default_pool_is_cls(tmp_path):
    """With CLIP weights the image tokenizer is clip-initialised and pools the CLS token."""
    from mtx.encoder import load_model

    wpath = tmp_path / "w.pth"
    torch.save(_timm_clip(4).state_dict(), wpath)
    model = load_model("clip-b16", str(wpath), "cpu")
    from mtx.pipeline import Embedder, EmbedOptions

    e = Embedder(model, EmbedOptions())
    assert e.tokenizer("image").init == "clip"
    assert e.pool_mode("image") == "cls"
