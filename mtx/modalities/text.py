"""text: plain-text documents -> windows of CLIP BPE tokens (<= 78 tokens per window at B/16).

Decoding never crashes on bytes: a byte-order mark wins, then UTF-16/32 without a mark (by the
NUL-byte pattern of mostly-ASCII text), then strict UTF-8 (validated over the
whole file, streaming), then a legacy encoding detected by charset_normalizer (GB2312, Shift-JIS,
cp1252...) decoded with replacement characters. NUL bytes or no plausible encoding mean "binary
content, not text" (a DecodeError), never mojibake.

A document is cut into consecutive windows of ``window`` (75) CLIP BPE tokens; each window is
``<start_of_text> + tokens + <end_of_text>`` (<= 77 ids) and one encoder row (one segment), so
the pipeline pools each window and averages the windows into one vector. Windows are streamed;
above ``max_windows`` a deterministic uniform selection keeps every ``stride``-th window
(``stride`` the smallest power of two that fits the cap), recorded as ``window_stride``, so
memory and compute stay bounded for any file size. The text is read in ~1M-character pieces cut
at whitespace (BPE words never span whitespace, so the ids are those of the whole text); runs of
more than 256 non-space characters get a space every 256 (bounds BPE's quadratic cost).

``unit="line"``: one sample per non-empty line, key ``line=N`` (N 1-based, physical lines with
universal newlines). Tokenizer weights do not depend on the unit, so line and file vectors share
one token table.
"""
from __future__ import annotations

import codecs
import functools
import io
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtx.errors import DecodeError
from mtx.settings import codec_problem, setting

from ._base import (
    EXTENSION,
    HINT,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    pinned,
    seeded,
)
from ._registry import register_modality

VOCAB = 49408  # CLIP BPE: 2 x 256 byte symbols + 48,894 merges + <start_of_text> + <end_of_text>
CONTEXT = 77  # CLIP text positions: <start> + 75 tokens + <end>
SOT, EOT = 49406, 49407

# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 LE BOM"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 BE BOM"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 BOM"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 LE BOM"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 BE BOM"),
)
_DETECT_BYTES = 256 * 1024  # bytes given to the charset detector
_READ_CHARS = 1 << 20  # decoded characters per read when streaming a document
_LONG_RUN = re.compile(r"(\S{256})(?=\S)")  # bounds BPE's quadratic cost on huge "words"
_CACHE_MAX = 100_000  # BPE word cache entries before it is cleared (bounded memory)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEncoding:
    """How a file's bytes become text: codec name, how it was decided, replacement policy."""

    codec: str
    source: str  # "bom" | "utf-8" | "detected" | "forced"
    reason: str
    errors: str = "strict"

    def meta(self) -> dict:
        return {"encoding": self.codec, "encoding_source": self.source, "encoding_reason": self.reason,
                "decode_errors": self.errors}


def bom_encoding(head: bytes) -> tuple[str, str] | None:
    for bom, codec, what in _BOMS:
        if head.startswith(bom):
            return codec, what
    return None


# Where the NUL bytes of mostly-ASCII text fall in each encoding without a byte-order mark:
# share of NUL bytes at each offset modulo 4 (>= the minimum, or <= the maximum).
_NUL_PATTERNS = (
    ("utf-32-le", "UTF-32 LE", {2: 0.95, 3: 0.95, 1: 0.5}, {0: 0.05}),
    ("utf-32-be", "UTF-32 BE", {0: 0.95, 1: 0.95, 2: 0.5}, {3: 0.05}),
    ("utf-16-le", "UTF-16 LE", {1: 0.5, 3: 0.5}, {0: 0.05, 2: 0.05}),
    ("utf-16-be", "UTF-16 BE", {0: 0.5, 2: 0.5}, {1: 0.05, 3: 0.05}),
)


def bomless_utf(head: bytes) -> tuple[str, str] | None:
    """(codec, why) for UTF-16/32 text without a byte-order mark, else None.

    Mostly-ASCII text in UTF-16 LE has a NUL at every odd offset and (almost) none at the even
    ones; UTF-16 BE the reverse; UTF-32 three NULs in every four bytes. The pattern must hold
    over the head and the decoded text must be printable (at most 2 % control characters), so
    binary arrays of small integers are not mistaken for text.
    """
    n = len(head) - len(head) % 4
    if n < 16 or b"\x00" not in head[:n]:
        return None
    zero = (np.frombuffer(head[:n], np.uint8).reshape(-1, 4) == 0).mean(axis=0)
    for codec, name, at_least, at_most in _NUL_PATTERNS:
        if all(zero[k] >= v for k, v in at_least.items()) and all(zero[k] <= v for k, v in at_most.items()):
            text = head[:n].decode(codec, "replace")
            if len(text) > 1:
                text = text[:-1]  # a surrogate pair may be cut by the head
            bad = sum(1 for c in text if (not c.isprintable() and c not in "\t\n\r\f\v") or c == "\ufffd")
            if bad <= 0.02 * len(text):
                return codec, f"{name} without a byte-order mark (NUL-byte pattern of its text)"
    return None


def _detect_legacy(sample: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return None if best is None else str(best.encoding)


def _utf8_error_offset(path: Path, data: bytes | None = None) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence, or None (streams the whole file, or
    checks ``data`` when it holds the whole file)."""
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    done = 0
    with open(path, "rb") if data is None else io.BytesIO(data) as f:
        while chunk := f.read(1 << 22):
            try:
                dec.decode(chunk, final=False)
            except UnicodeDecodeError as e:
                return done + e.start
            done += len(chunk)
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            return done
    return None


def detect_encoding(path: Path, forced: str = "", data: bytes | None = None) -> TextEncoding:
    """Decide how to decode ``path``.

    Args:
        path: the file.
        forced: a Python codec name that overrides detection ('' = detect).
        data: the whole file when sniffing already read all of it (nothing is opened then).

    Returns:
        A :class:`TextEncoding`.

    Raises:
        DecodeError: the bytes are binary (NUL bytes without a UTF-16/32 BOM, or no text
            encoding fits).
    """
    if data is None:
        with open(path, "rb") as f:
            head = f.read(_DETECT_BYTES)
    else:
        head = data[:_DETECT_BYTES]
    if forced:
        return TextEncoding(forced, "forced", "forced by config", "replace")
    bom = bom_encoding(head)
    if bom:
        return TextEncoding(bom[0], "bom", bom[1], "replace")
    utf = bomless_utf(head[:8192])
    if utf:
        return TextEncoding(utf[0], "detected", utf[1], "replace")
    if b"\x00" in head[:8192]:
        raise DecodeError("binary content, not text (NUL bytes in the first 8 KiB); "
                          "pass --modality to embed it as another modality")
    bad = _utf8_error_offset(path, data)
    if bad is None:
        return TextEncoding("utf-8", "utf-8", "valid UTF-8")
    if bad >= _DETECT_BYTES:
        # The detector would only see valid UTF-8; keep UTF-8 and replace the late bad bytes.
        return TextEncoding("utf-8", "utf-8", f"valid UTF-8 up to byte {bad}", "replace")
    enc = _detect_legacy(head)
    if enc is None:
        raise DecodeError(f"binary content, not text (invalid UTF-8 at byte {bad} and no "
                          "legacy encoding fits); pass --text-encoding to force one")
    return TextEncoding(enc, "detected", f"invalid UTF-8 at byte {bad}; charset_normalizer", "replace")


def open_text(path: Path, enc: TextEncoding, data: bytes | None = None) -> io.TextIOWrapper:
    """A streaming text reader (universal newlines) for ``path`` (or the whole file ``data``) in ``enc``."""
    raw = open(path, "rb") if data is None else io.BytesIO(data)  # the wrapper closes it
    return io.TextIOWrapper(raw, encoding=enc.codec, errors=enc.errors, newline=None)


def looks_like_text(head: bytes) -> str | None:
    """Why ``head`` (a file's first bytes) reads as text, or None. Cheap: head only."""
    bom = bom_encoding(head)
    if bom:
        return bom[1]
    utf = bomless_utf(head)
    if utf:
        return utf[1]
    if not head or b"\x00" in head:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
        return "decodes as UTF-8"
    except UnicodeDecodeError:
        pass
    enc = _detect_legacy(head)
    return f"decodes as {enc}" if enc else None


# ----------------------------------------------------------------------------------------------
# BPE windows
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def clip_bpe():
    """open_clip's CLIP BPE tokenizer (its vocabulary file ships inside the package)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:  # pragma: no cover - dependency
        from mtx.errors import MissingDependency

        raise MissingDependency("text needs open-clip-torch for the CLIP BPE vocabulary; "
                                "pip install open-clip-torch") from None
    tok = SimpleTokenizer()
    assert tok.vocab_size == VOCAB and tok.sot_token_id == SOT and tok.eot_token_id == EOT
    return tok


def bpe_ids(text: str) -> list[int]:
    """CLIP BPE ids of ``text`` (no start/end). Runs of > 256 non-space chars are split."""
    tok = clip_bpe()
    if len(tok.cache) > _CACHE_MAX:
        tok.cache = {t: t for t in ("<start_of_text>", "<end_of_text>")}
    return tok.encode(_LONG_RUN.sub(r"\1 ", text))


def _pieces(reader: io.TextIOBase) -> Iterator[str]:
    """Read a document in ~1M-character pieces cut at whitespace (BPE words never span it)."""
    carry = ""
    while chunk := reader.read(_READ_CHARS):
        buf = carry + chunk
        cut = max(buf.rfind(" "), buf.rfind("\n"), buf.rfind("\t"))
        if cut < 0:
            if len(buf) < 4 * _READ_CHARS:
                carry = buf
                continue
            cut = len(buf) - 1
        carry = buf[cut + 1:]
        yield buf[:cut + 1]
    if carry:
        yield carry


def _line_pieces(reader: io.TextIOBase) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, piece, last piece of its line). A line longer than ~1M characters
    comes in pieces cut at whitespace, so memory stays bounded for any line length."""
    lineno, carry, open_line = 1, "", False
    while part := reader.readline(_READ_CHARS):
        buf = carry + part
        if buf.endswith("\n"):
            yield lineno, buf, True
            lineno, carry, open_line = lineno + 1, "", False
            continue
        cut = max(buf.rfind(" "), buf.rfind("\t"))
        if cut < 0:
            if len(buf) < 4 * _READ_CHARS:
                carry = buf
                continue
            cut = len(buf) - 1
        yield lineno, buf[:cut + 1], False
        carry, open_line = buf[cut + 1:], True
    if carry or open_line:
        yield lineno, carry, True


class WindowSelector:
    """Keeps every ``stride``-th window of a stream, doubling ``stride`` to stay <= ``cap``."""

    def __init__(self, width: int, cap: int):
        self.width, self.cap = width, cap
        self.stride, self.total = 1, 0
        self.kept: list[tuple[int, list[int]]] = []
        self._pending: list[int] = []

    def feed(self, ids: list[int]) -> None:
        self._pending.extend(ids)
        w = self.width
        if len(self._pending) >= w:
            full = len(self._pending) // w
            for i in range(full):
                self._take(self._pending[i * w:(i + 1) * w])
            del self._pending[:full * w]

    def _take(self, window: list[int]) -> None:
        index = self.total
        self.total += 1
        if index % self.stride:
            return
        self.kept.append((index, window))
        if len(self.kept) > self.cap:
            self.stride *= 2
            self.kept = [(i, win) for i, win in self.kept if i % self.stride == 0]

    def finish(self) -> None:
        if self._pending:
            self._take(self._pending)
            self._pending = []


def windows_to_arrays(windows: list[list[int]]) -> dict[str, np.ndarray]:
    """BPE windows -> ``ids`` [S, 77] int32 (start/end added, zero padded) + ``n`` [S] lengths."""
    ids = np.zeros((len(windows), CONTEXT), dtype=np.int32)
    n = np.zeros(len(windows), dtype=np.int32)
    for i, win in enumerate(windows):
        row = [SOT, *win, EOT]
        ids[i, :len(row)] = row
        n[i] = len(row)
    return {"ids": ids, "n": n}


def _select(sel: WindowSelector, cfg: "TextConfig") -> tuple[dict[str, np.ndarray], dict]:
    sel.finish()
    arrays = windows_to_arrays([w for _, w in sel.kept])
    meta = {"windows": sel.total, "windows_used": len(sel.kept), "window_stride": sel.stride}
    if sel.stride > 1:
        meta["window_selection"] = (f"{sel.total} windows > max_windows {cfg.max_windows}: kept every "
                                    f"{sel.stride}th window (uniform, deterministic)")
    return arrays, meta


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


@dataclass
class TextConfig(ModalityConfig):
    unit: str = setting("file", choices=("file", "line"), flag="--text-unit")  # file: one sample per file; line: one per non-empty line, key line=N (--text-unit)
    window: int = setting(75, lo=1, hi=CONTEXT - 2)  # BPE tokens per window, 1..75 (+ <start>/<end> = 77 positions)
    max_windows: int = setting(256, lo=1)  # more windows per sample -> keep every 2^k-th window (recorded)
    encoding: str = setting("", check=codec_problem, note="naming a Python codec")  # force a Python codec name ('' = BOM / UTF-8 / detected legacy encoding)


class TextTokenizer(Tokenizer):
    """Token embedding [49408, D] + learned positions [77, D] + CLS + pre-LN.

    Takes ``ids`` [R, L] (L <= 77, zero padded) and ``n`` [R] (valid ids per row); emits
    ``[CLS, ids...]`` with a key-padding mask (True past ``n``). The pre-LN puts the seeded
    tokens on the unit scale the frozen blocks saw after CLIP's ``ln_pre``.
    """

    def __init__(self, spec, seed: int):
        super().__init__()
        d = spec.dim
        with seeded(seed):
            self.embed = nn.Embedding(VOCAB, d)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(CONTEXT, d) * 0.01)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        ids, n = inputs["ids"].long(), inputs["n"].long()
        r, length = ids.shape
        x = self.embed(ids) + self.pos[:length]
        x = torch.cat([self.cls.expand(r, 1, -1), x], dim=1)
        pos = torch.arange(length, device=ids.device)
        pad = torch.cat([torch.zeros(r, 1, dtype=torch.bool, device=ids.device),
                         pos[None, :] >= n[:, None]], dim=1)
        return Tokens(self.norm_pre(x), pad, True)


_FORMATS = {".txt": "plain", ".text": "plain", ".md": "markdown", ".rst": "rst"}


@register_modality
class text(Modality):  # noqa: N801 - class name == registry key == module name
    """A document becomes windows of **CLIP BPE** tokens: each window is `CLS + <start> + up to 75
    tokens + <end>` (≤ 78 tokens); the windows of a document are encoded as one batch and averaged
    into one vector.

    ## Which files

    `.txt .md .rst .text`, and extension-less files whose first bytes read as text (a weak `hint`,
    so any binary format's claim, table or graph reading wins).

    ## From bytes to text

    Decoding never crashes and never produces mojibake silently: a byte-order mark wins (UTF-8/16/32),
    then UTF-16/32 **without a mark**, recognised by the NUL-byte pattern of mostly-ASCII text (a NUL
    at every odd offset for UTF-16 LE, every even one for BE, three in four bytes for UTF-32) and a
    printable decoded text, then strict UTF-8 (validated over the whole file, streaming), then a
    legacy encoding detected by charset-normalizer (GB2312, Shift-JIS, cp1252, ...) with
    replacement characters. Other NUL bytes, or no plausible encoding, mean "binary, not text": a
    recorded failure. The decision is in the sample meta.

    ## From text to windows

    - **CLIP's BPE** (49,408 tokens; the vocabulary ships inside `open-clip-torch`, no download) — the
      tokenizer of the text tower the Meta-Transformer encoder was aligned with.
    - Consecutive windows of 75 BPE tokens, `<start_of_text>` + tokens + `<end_of_text>` (77 ids,
      CLIP's context length). Each window is one encoder row; rows are pooled and averaged. Long
      documents are not truncated to their first 77 tokens.
    - The text is read in ~1M-character pieces cut at whitespace (BPE words never span whitespace,
      so the ids equal those of the whole text); runs of more than 256 non-space characters get a
      space every 256 (bounds BPE's quadratic cost on pathological input).
    - More than 256 windows: every `stride`-th window is kept, `stride` the smallest power of two
      that fits (a deterministic, uniform selection, recorded as `window_stride`) — memory and
      compute stay bounded for any file size.
    - `--text-unit line` gives one sample per non-empty line (ids `FILE#line=N`, 1-based).

    ## Tokens

    `TextTokenizer`: a token-embedding table [49408, D] + learned positions [77, D] + CLS + a
    key-padding mask for short windows + pre-LayerNorm (which puts the seeded tokens on the unit
    scale the frozen blocks saw after CLIP's `ln_pre`).

    ## Weights and pooling

    `init=seeded`: the Meta-Transformer release holds encoder blocks only, no text tokenizer, and
    the CLIP front end mtx can borrow is a *vision* tower's. **Mean** pooling over the non-padding
    tokens, then over windows.

    ## Try it

    ```
    mtx tokenize examples/note.txt
    ```
    """

    name = "text"
    extensions = (".txt", ".md", ".rst", ".text")
    summary = "plain text (.txt .md .rst, extension-less text; BOM/UTF-8/legacy encodings), CLIP BPE"
    tokens = "<= 78 per 75-BPE-token window (CLS + <start> + 75 + <end>); windows averaged"
    clip_init = False
    Config = TextConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        ext = path.suffix.lower()
        if ext in self.extensions:
            return Evidence(self.name, EXTENSION, f"extension {ext}", _FORMATS[ext])
        if ext == "":
            why = looks_like_text(head)
            if why:
                # HINT only: any binary format's claim (and any table/graph reading) beats it.
                return Evidence(self.name, HINT, f"no extension; {why}", "plain")
        return None

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, words: int = 12) -> list[Path]:
        """``n`` one-sentence ``.txt`` notes."""
        rng, out = np.random.default_rng(11), []
        vocab = ("encoder modality token frozen shared vector image sound graph table point cloud series "
                 "signal light heat wave").split()
        for i in range(n):
            p = d / f"note{i:05d}.txt"
            p.write_text(" ".join(vocab[j] for j in rng.integers(0, len(vocab), words)) + ".\n")
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A text file of whitespace only."""
        p = d / "blank.txt"
        p.write_text("  \n\t\n   \n")
        return [p]

    def load(self, path: Path, cfg: TextConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        from ..sniff import HEAD_BYTES

        # A head shorter than sniffing asked for is the whole file: decode it from memory.
        whole = sniffed.head if sniffed is not None and 0 < len(sniffed.head) < HEAD_BYTES else None
        enc = detect_encoding(path, cfg.encoding, whole)
        base = enc.meta()
        try:
            with open_text(path, enc, whole) as reader:
                if cfg.unit == "line":
                    yield from self._lines(reader, cfg, base)
                    return
                sel = WindowSelector(cfg.window, cfg.max_windows)
                n_tokens = 0
                for piece in _pieces(reader):
                    ids = bpe_ids(piece)
                    n_tokens += len(ids)
                    sel.feed(ids)
        except UnicodeDecodeError as e:  # the file changed after it was checked
            raise DecodeError(f"cannot decode as {enc.codec}: {e.reason} at byte {e.start}") from None
        if n_tokens == 0:
            raise DecodeError("no text: the file is empty or only whitespace")
        arrays, meta = _select(sel, cfg)
        yield Sample("", arrays, {**base, "unit": "file", "bpe_tokens": n_tokens, **meta})

    def _lines(self, reader, cfg: TextConfig, base: dict) -> Iterator[Sample]:
        emitted = 0
        sel, n_tokens = WindowSelector(cfg.window, cfg.max_windows), 0
        for lineno, piece, last in _line_pieces(reader):
            if piece.strip():
                ids = bpe_ids(piece)
                n_tokens += len(ids)
                sel.feed(ids)
            if not last:
                continue
            if n_tokens:
                arrays, meta = _select(sel, cfg)
                emitted += 1
                yield Sample(f"line={lineno}", arrays,
                             {**base, "unit": "line", "line": lineno, "bpe_tokens": n_tokens, **meta})
            sel, n_tokens = WindowSelector(cfg.window, cfg.max_windows), 0
        if not emitted:
            raise DecodeError("no text: the file has no non-empty lines")

    def batch_key(self, sample: Sample) -> Hashable:
        return "text"  # every window is [77] ids; collate trims the padding columns

    def collate(self, samples: list[Sample], pin: bool = False, buffers=None) -> dict[str, torch.Tensor]:
        n = np.concatenate([s.arrays["n"] for s in samples])
        width = int(n.max())
        ids = np.concatenate([s.arrays["ids"][:, :width] for s in samples])
        return pinned({"ids": torch.from_numpy(np.ascontiguousarray(ids)), "n": torch.from_numpy(n)}, pin)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + int(sample.arrays["n"].max())

    def content_reason(self, sample: Sample) -> str | None:
        if (sample.arrays["n"] <= 2).any():  # <start> and <end> only
            return "a window holds no BPE token"
        return None

    def seed(self, spec, cfg: ModalityConfig) -> int:
        # Loading options (unit, window, cap, encoding) do not change the tokenizer's weights, so
        # line and file vectors share one token table.
        return super().seed(spec, ModalityConfig())

    def tokenizer(self, spec, front, cfg):
        return TextTokenizer(spec, self.seed(spec, cfg))
