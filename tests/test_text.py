"""text: sniffing, encodings, CLIP BPE windows, masks, line units, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_modality

from mtx.encoder import pool
from mtx.errors import DecodeError, UnknownModality
from mtx.modalities import get_modality
from mtx.modalities._base import EXTENSION, HINT
from mtx.modalities.text import EOT, SOT, bpe_ids
from mtx.sniff import sniff

SENTENCE = "The quick brown fox jumps over the lazy dog today."  # 10 words
ZH = "今天天气很好，我们一起去公园散步吧。这是一个用于测试编码检测的中文句子。"
JA = "今日はとても良い天気ですね。一緒に公園を散歩しましょう。これは文字コード判定のテストです。"


def write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def vectors(model, samples, **cfg) -> list[torch.Tensor]:
    """One vector per sample: segments encoded in one padded batch, mean-pooled, averaged."""
    mod = get_modality("text")
    c = mod.config(**cfg)
    tok = model.tokenizer("text", c)
    with torch.inference_mode():
        tokens = tok(mod.collate(samples))
    pooled = pool(model.encode_tokens(tokens), tokens, "mean")
    out, i = [], 0
    for s in samples:
        out.append(pooled[i:i + s.n_segments].mean(0))
        i += s.n_segments
    return out


def load(path: Path, **cfg):
    mod = get_modality("text")
    return list(mod.load(path, mod.config(**cfg)))


# -- sniffing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "b.md", "c.rst", "d.text"])
def test_sniff_extensions(tmp_path, name):
    dec = sniff(write(tmp_path / name, "hello"))
    assert dec.modality == "text" and dec.candidates[0].strength == EXTENSION


def test_sniff_extensionless_text_is_a_hint(tmp_path):
    dec = sniff(write(tmp_path / "README", "Some notes\nwith two lines\n"))
    assert dec.modality == "text"
    assert dec.candidates[0].strength == HINT and "UTF-8" in dec.reason
    legacy = sniff(write(tmp_path / "NOTES", ZH * 3, "gb2312"))
    assert legacy.modality == "text"


def test_sniff_extensionless_binary_and_claimed_formats_are_not_text(tmp_path):
    with pytest.raises(UnknownModality):
        sniff(write(tmp_path / "blob", bytes(range(256)) * 4))
    # A GML graph without extension: the graph CLAIM beats text's HINT.
    gml = write(tmp_path / "network", "graph [\n  node [ id 1 ]\n  node [ id 2 ]\n  edge [ source 1 target 2 ]\n]\n")
    assert sniff(gml).modality == "graph"


# -- shapes and masks --------------------------------------------------------------------------


def test_ten_word_sentence_shape_and_mask_b16(tmp_path, b16_model):
    short = write(tmp_path / "s.txt", SENTENCE)
    dec, samples, tokens, hidden = run_modality(b16_model, short)
    ids = samples[0].arrays["ids"]
    n = int(samples[0].arrays["n"][0])
    assert dec.modality == "text" and ids.shape == (1, 77)
    assert n == len(bpe_ids(SENTENCE)) + 2 and ids[0, 0] == SOT and ids[0, n - 1] == EOT
    assert tokens.x.shape == (1, 1 + n, 768) and 1 + n <= 78
    assert hidden.shape == (1, 1 + n, 768)
    assert tokens.pad_mask is not None and not tokens.pad_mask.any()
    # Batched with a full window, the short row is padded to 78 and the padding is masked.
    long = load(write(tmp_path / "l.txt", "word " * 200))
    mod = get_modality("text")
    tok = b16_model.tokenizer("text", mod.config())
    with torch.inference_mode():
        both = tok(mod.collate(samples + long))
    assert both.x.shape[1] == 78 and both.x.shape[0] == 1 + long[0].n_segments
    expected = torch.arange(78) >= 1 + n
    assert torch.equal(both.pad_mask[0], expected)
    assert not both.pad_mask[1].any()  # a full window: 1 + 77 real tokens


def test_padding_never_changes_a_vector(tmp_path, tiny_model):
    a = load(write(tmp_path / "a.txt", "short one"))
    b = load(write(tmp_path / "b.txt", SENTENCE + " And a second sentence that is longer."))
    c = load(write(tmp_path / "c.txt", "lorem ipsum dolor " * 60))  # several windows
    together = vectors(tiny_model, a + b + c)
    for alone, batched in zip([vectors(tiny_model, s)[0] for s in (a, b, c)], together, strict=True):
        torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


def test_long_document_is_windowed(tmp_path):
    text = " ".join(f"word{i}" for i in range(300))
    n_ids = len(bpe_ids(text))
    (s,) = load(write(tmp_path / "doc.txt", text))
    ids, n = s.arrays["ids"], s.arrays["n"]
    assert s.meta["bpe_tokens"] == n_ids and s.meta["windows"] == -(-n_ids // 75)
    assert ids.shape == (s.meta["windows"], 77) and (ids[:, 0] == SOT).all()
    assert (n[:-1] == 77).all() and n.sum() == n_ids + 2 * len(n)
    assert all(ids[i, n[i] - 1] == EOT for i in range(len(n)))
    # The windows are consecutive: stripping start/end gives the document's ids back.
    assert [t for i in range(len(n)) for t in ids[i, 1:n[i] - 1]] == bpe_ids(text)


def test_window_cap_keeps_a_uniform_subset(tmp_path):
    text = "alpha beta gamma delta " * 400  # 1600 BPE tokens -> 22 windows
    (full,) = load(write(tmp_path / "doc.txt", text))
    (capped,) = load(tmp_path / "doc.txt", max_windows=5)
    assert full.meta["windows"] == 22 and full.meta["window_stride"] == 1
    assert capped.meta["windows"] == 22 and capped.meta["windows_used"] <= 5
    stride = capped.meta["window_stride"]
    assert stride == 8 and "kept every 8th window" in capped.meta["window_selection"]
    np.testing.assert_array_equal(capped.arrays["ids"], full.arrays["ids"][::stride])


def test_line_unit(tmp_path, tiny_model):
    path = write(tmp_path / "lines.txt", "first line\n\n   \nthird line here\r\nlast")
    samples = load(path, unit="line")
    assert [s.key for s in samples] == ["line=1", "line=4", "line=5"]
    assert [s.meta["line"] for s in samples] == [1, 4, 5]
    # A line embeds exactly as a file holding only that line (one shared token table).
    (single,) = load(write(tmp_path / "one.txt", "third line here"))
    v_line = vectors(tiny_model, samples[1:2], unit="line")[0]
    v_file = vectors(tiny_model, [single])[0]
    torch.testing.assert_close(v_line, v_file, atol=1e-6, rtol=1e-6)
    mod = get_modality("text")
    assert mod.seed(tiny_model.spec, mod.config(unit="line")) == mod.seed(tiny_model.spec, mod.config())


# -- encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,encoding,expect", [
    (ZH, "gb2312", "detected"),
    (JA, "shift_jis", "detected"),
    (ZH * 20, "utf-16", "bom"),  # Python's utf-16 codec writes a BOM
    ("Grüße, naïve café", "utf-8-sig", "bom"),
])
def test_encodings_decode_and_embed(tmp_path, tiny_model, text, encoding, expect):
    path = write(tmp_path / "doc.txt", text, encoding)
    dec, samples, tokens, hidden = run_modality(tiny_model, path)
    (s,) = samples
    assert s.meta["encoding_source"] == expect
    reference = load(write(tmp_path / "utf8.txt", text))[0]
    np.testing.assert_array_equal(s.arrays["ids"], reference.arrays["ids"])  # same text, same ids
    assert torch.isfinite(hidden).all()


def test_tiny_utf16_file_is_sniffed_as_text(tmp_path):
    path = write(tmp_path / "tiny.txt", "hi there", "utf-16")
    assert sniff(path).modality == "text"


def test_tiny_utf16_file_loads(tmp_path):
    (s,) = load(write(tmp_path / "tiny.txt", "hi there", "utf-16"))
    assert s.meta["encoding"] == "utf-16" and s.arrays["n"][0] == len(bpe_ids("hi there")) + 2


def test_binary_renamed_txt_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert sniff(path).modality == "image"  # its magic bytes win over the .txt extension
    with pytest.raises(DecodeError, match="binary content, not text"):
        load(path)
    noisy = write(tmp_path / "noise.txt", rng.integers(1, 256, 5000, dtype=np.uint8).tobytes())  # no NULs
    with pytest.raises(DecodeError, match="binary content, not text"):
        load(noisy)


def test_bad_utf8_late_in_a_file_never_crashes(tmp_path):
    data = ("plain ascii text " * 20000).encode() + b"\xff\xfe broken tail"
    (s,) = load(write(tmp_path / "big.txt", data))
    assert s.meta["encoding"] == "utf-8" and s.meta["decode_errors"] == "replace"


def test_empty_text_is_a_clear_error(tmp_path):
    with pytest.raises(DecodeError, match="no text"):
        load(write(tmp_path / "blank.txt", " \n\t\n"))
    with pytest.raises(DecodeError, match="no non-empty lines"):
        load(write(tmp_path / "blank2.txt", "\n\n"), unit="line")


def test_tokenizer_is_seeded_and_deterministic(tiny_model):
    mod = get_modality("text")
    spec = tiny_model.spec
    t1, t2 = mod.tokenizer(spec, None, mod.config()), mod.tokenizer(spec, None, mod.config())
    assert t1.init == "seeded" and t1.seed == mod.seed(spec, mod.config())
    assert t1.embed.weight.shape == (49408, spec.dim) and t1.pos.shape == (77, spec.dim)
    assert t1.describe()["sha256"] == t2.describe()["sha256"]


def test_reading_in_pieces_does_not_change_tokens(tmp_path, monkeypatch):
    import mtx.modalities.text as text_mod

    doc = "First line of words.\n" + "a much longer second line, " * 40 + "\nthird\n"
    path = write(tmp_path / "doc.txt", doc)
    whole_file, whole_lines = load(path), load(path, unit="line")
    monkeypatch.setattr(text_mod, "_READ_CHARS", 16)  # force many pieces per line and per file
    for unit, ref in (("file", whole_file), ("line", whole_lines)):
        got = load(path, unit=unit)
        assert [s.key for s in got] == [s.key for s in ref]
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a.arrays["ids"], b.arrays["ids"])
