"""Encoder presets, weight resolution and checkpoint formats.

Resolution order (DESIGN.md §5): ``--weights PATH|seeded`` > ``MTX_WEIGHTS`` > the Hugging Face
cache > download (unless ``HF_HUB_OFFLINE``) > a clear error. Never a silent random fallback.

Formats, detected by their keys (one commented branch each in :func:`convert_state_dict`):
official Meta-Transformer block file (``nn.Sequential`` of timm Blocks), timm ViT, OpenCLIP,
and the mtx bundle (safetensors with ``mtx_format`` metadata).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError, WeightsError

if TYPE_CHECKING:
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WeightSource:
    """One downloadable file: a Hugging Face repo, a file name and (when pinned) its sha256."""

    role: str  # "blocks" | "tower" (a whole CLIP vision tower: blocks + front + ln_post)
    repo: str
    filename: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """Geometry and preprocessing constants of an encoder preset."""

    name: str
    dim: int
    depth: int
    heads: int
    patch: int
    img_size: int = 224
    mlp_ratio: float = 4.0
    eps: float = 1e-5
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    sources: tuple[WeightSource, ...] = field(default=())
    description: str = ""

    @property
    def grid(self) -> int:
        return self.img_size // self.patch

    def geometry(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sources")
        d.pop("description")
        return d


_MT_REPO = "kxgong/Meta-Transformer"
_B16_TOWER = WeightSource("tower", "timm/vit_base_patch16_clip_224.laion2b", "model.safetensors")
_L14_TOWER = WeightSource("tower", "timm/vit_large_patch14_clip_224.laion2b", "model.safetensors")

PRESETS: dict[str, EncoderSpec] = {
    "meta-b16": EncoderSpec(
        "meta-b16", 768, 12, 12, 16,
        sources=(
            WeightSource("blocks", _MT_REPO, "Meta-Transformer_base_patch16_encoder.pth",
                         "4972de2b46fb77f3dc06e950ab331e0c0c9aae8f24dde3766745a43070cfc93e", 340_269_743),
            _B16_TOWER,
        ),
        description="Meta-Transformer B/16 blocks (LAION-2B CLIP) + the CLIP B/16 front end",
    ),
    "meta-l14": EncoderSpec(
        "meta-l14", 1024, 24, 16, 14, mean=HALF, std=HALF,
        sources=(
            WeightSource("blocks", _MT_REPO, "Meta-Transformer_large_patch14_encoder.pth",
                         "220febe295066173d45dafd2a97069859befd845555318bf7c06c38cbc8b7672", 1_209_341_743),
            _L14_TOWER,
        ),
        description="Meta-Transformer L/14 blocks (LAION-2B CLIP) + the CLIP L/14 front end",
    ),
    "clip-b16": EncoderSpec("clip-b16", 768, 12, 12, 16, sources=(_B16_TOWER,),
                            description="OpenCLIP ViT-B-16 laion2b_s34b_b88k vision tower"),
    "clip-l14": EncoderSpec("clip-l14", 1024, 24, 16, 14, mean=HALF, std=HALF, sources=(_L14_TOWER,),
                            description="OpenCLIP ViT-L-14 laion2b_s32b_b82k vision tower"),
    "tiny": EncoderSpec("tiny", 64, 2, 4, 16, description="2 blocks x 64 dims, for tests only"),
}


def get_preset(name: str) -> EncoderSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------
# Loaded weights
# --------------------------------------------------------------------------------------------


@dataclass
class ClipFront:
    """The CLIP vision tower parts that Meta-Transformer dropped (REFERENCE.md §2)."""

    patch_weight: "torch.Tensor"  # [D, 3, p, p]
    cls: "torch.Tensor"  # [D]
    pos: "torch.Tensor"  # [1 + g*g, D]
    ln_pre_weight: "torch.Tensor"
    ln_pre_bias: "torch.Tensor"

    def load_into(self, tok) -> None:
        """Copy into an ImagePatchTokenizer (shapes checked)."""
        import torch

        with torch.no_grad():
            for dst, src, what in (
                (tok.proj.weight, self.patch_weight, "patch projection"),
                (tok.cls, self.cls, "class embedding"),
                (tok.pos, self.pos, "positional embedding"),
                (tok.norm_pre.weight, self.ln_pre_weight, "ln_pre weight"),
                (tok.norm_pre.bias, self.ln_pre_bias, "ln_pre bias"),
            ):
                if tuple(dst.shape) != tuple(src.shape):
                    raise WeightsError(
                        f"CLIP {what} has shape {tuple(src.shape)}, the preset needs {tuple(dst.shape)}; "
                        "pass weights that match --model"
                    )
                dst.copy_(src)


@dataclass
class LoadedWeights:
    """What the weight files provided, converted to mtx's layout."""

    blocks: dict[str, "torch.Tensor"] | None  # keys like ``0.norm1.weight`` (official layout)
    front: ClipFront | None = None
    norm: tuple["torch.Tensor", "torch.Tensor"] | None = None  # CLIP ln_post
    tokenizers: dict[str, dict[str, "torch.Tensor"]] = field(default_factory=dict)
    # modality -> provenance of a fitted tokenizer file (mtx.fit.bundle): path, sha256, metadata
    tokenizer_files: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = "seeded"  # human-readable provenance
    files: list[dict[str, Any]] = field(default_factory=list)  # path, format, sha256, size


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _load_failure(e: BaseException) -> str:
    """torch.load's reason in one line, without its advice to retry with weights_only=False."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|Check the documentation|$)", text, re.S)
        why = " ".join(m.group(1).split()).split(" Please ")[0] if m else ""
        return f"the safe unpickler refused it ({why})" if why else "the safe unpickler refused it"
    return (" ".join(text.split())[:300]) or type(e).__name__


def read_state_dict(path: Path) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """Read a checkpoint safely: safetensors, or ``torch.load(weights_only=True)`` — never pickle."""
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        try:
            from safetensors import safe_open

            sd = {}
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    sd[k] = f.get_tensor(k)
            return sd, meta
        except Exception as e:  # noqa: BLE001 - any parse failure is a weights problem
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for our users
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(
            f"{path}: refused or unreadable checkpoint (loaded with weights_only=True, nothing in it "
            f"was run; it holds more than plain tensors or is corrupt): {_load_failure(e)}"
        ) from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    return obj, meta


_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
               "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
               "mlp.fc2.weight", "mlp.fc2.bias")
_OPENCLIP_BLOCK = {"ln_1": "norm1", "attn.in_proj_weight": "attn.qkv.weight",
                   "attn.in_proj_bias": "attn.qkv.bias", "attn.out_proj": "attn.proj",
                   "ln_2": "norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def detect_format(sd: dict[str, Any], meta: dict[str, str]) -> str:
    keys = sd.keys()
    if meta.get("mtx_format") == "bundle":
        return "mtx-bundle"
    if any(k.startswith("0.norm1.") for k in keys):
        return "official"
    if any(k.startswith("blocks.0.") for k in keys):
        return "timm"
    if any(re.match(r"(visual\.)?transformer\.resblocks\.0\.", k) for k in keys):
        return "openclip"
    return "unknown"


def convert_state_dict(sd: dict[str, "torch.Tensor"], meta: dict[str, str], path: Path) -> LoadedWeights:
    """Pure conversion of any supported layout into :class:`LoadedWeights`."""
    fmt = detect_format(sd, meta)
    blocks: dict[str, torch.Tensor] = {}
    front = norm = None
    tokenizers: dict[str, dict[str, torch.Tensor]] = {}
    if fmt == "official":
        # The released file: the state_dict of nn.Sequential(Block...), no prefix, blocks only.
        blocks = dict(sd)
    elif fmt == "timm":
        # timm VisionTransformer (incl. vit_*_clip_224): blocks.{i}.*, patch_embed, cls_token,
        # pos_embed, norm_pre, norm (= CLIP ln_post).
        blocks = {k[len("blocks."):]: v for k, v in sd.items() if k.startswith("blocks.")}
        if "patch_embed.proj.weight" in sd and "norm_pre.weight" in sd:
            front = ClipFront(sd["patch_embed.proj.weight"], sd["cls_token"].reshape(-1),
                              sd["pos_embed"].reshape(-1, sd["pos_embed"].shape[-1]),
                              sd["norm_pre.weight"], sd["norm_pre.bias"])
        if "norm.weight" in sd:
            norm = (sd["norm.weight"], sd["norm.bias"])
    elif fmt == "openclip":
        # OpenCLIP CLIP (visual.* beside the text tower) or a visual-only state dict.
        pre = "visual." if any(k.startswith("visual.") for k in sd) else ""
        rb = f"{pre}transformer.resblocks."
        for k, v in sd.items():
            if not k.startswith(rb):
                continue
            i, rest = k[len(rb):].split(".", 1)
            for old, new in _OPENCLIP_BLOCK.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            blocks[f"{i}.{rest}"] = v
        if f"{pre}conv1.weight" in sd:
            front = ClipFront(sd[f"{pre}conv1.weight"], sd[f"{pre}class_embedding"].reshape(-1),
                              sd[f"{pre}positional_embedding"], sd[f"{pre}ln_pre.weight"],
                              sd[f"{pre}ln_pre.bias"])
        if f"{pre}ln_post.weight" in sd:
            norm = (sd[f"{pre}ln_post.weight"], sd[f"{pre}ln_post.bias"])
    elif fmt == "mtx-bundle":
        # mtx bundle: encoder.blocks.*, encoder.norm.*, front.*, tokenizers.<modality>.*
        blocks = {k[len("encoder.blocks."):]: v for k, v in sd.items() if k.startswith("encoder.blocks.")}
        if "encoder.norm.weight" in sd:
            norm = (sd["encoder.norm.weight"], sd["encoder.norm.bias"])
        if "front.patch_weight" in sd:
            front = ClipFront(*(sd[f"front.{n}"] for n in
                                ("patch_weight", "cls", "pos", "ln_pre_weight", "ln_pre_bias")))
        for k, v in sd.items():
            if k.startswith("tokenizers."):
                mod, rest = k[len("tokenizers."):].split(".", 1)
                tokenizers.setdefault(mod, {})[rest] = v
    else:
        sample = ", ".join(list(sd)[:5])
        raise WeightsError(
            f"{path}: unknown checkpoint layout (first keys: {sample}); expected the official "
            "Meta-Transformer block file, a timm ViT, an OpenCLIP or an mtx bundle state dict"
        )
    return LoadedWeights(blocks or None, front, norm, tokenizers,
                         files=[{"path": str(path), "format": fmt}])


def check_blocks(blocks: dict[str, "torch.Tensor"], spec: EncoderSpec, path: str) -> None:
    """Strict check with a readable key diff: exactly ``spec.depth`` blocks of ``spec.dim``."""
    want = {f"{i}.{k}" for i in range(spec.depth) for k in _BLOCK_KEYS}
    have = set(blocks)
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        depth = len({k.split(".", 1)[0] for k in have})
        raise WeightsError(
            f"{path}: encoder blocks do not match --model {spec.name} ({spec.depth} blocks x {spec.dim}); "
            f"the file has {depth} blocks. missing: {missing[:4]}{'...' if len(missing) > 4 else ''} "
            f"unexpected: {extra[:4]}{'...' if len(extra) > 4 else ''}"
        )
    shape = tuple(blocks["0.norm1.weight"].shape)
    if shape != (spec.dim,):
        raise WeightsError(f"{path}: blocks have width {shape[0]}, --model {spec.name} needs {spec.dim}")


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _hf_cached(src: WeightSource) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    p = try_to_load_from_cache(src.repo, src.filename)
    return Path(p) if isinstance(p, str) else None


def is_cached(spec: EncoderSpec) -> dict[str, bool]:
    return {f"{s.repo}/{s.filename}": _hf_cached(s) is not None for s in spec.sources}


SEEDED_HINT = "or --weights seeded for an explicitly random (not pretrained) encoder"
PROBE_SECONDS = 2.0  # one connection attempt to the hub before a download (no retry loop offline)


def hub_unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``, through the HTTPS proxy when one is set)
    cannot be reached, from one TCP connection attempt of at most ``timeout`` seconds (name
    resolution included); None when it can."""
    import socket
    import threading
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    scheme = urlparse(endpoint).scheme or "https"
    proxy = next((os.environ[k] for k in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
                  if os.environ.get(k)), "")
    target = urlparse(proxy if "://" in proxy else f"http://{proxy}") if proxy else urlparse(endpoint)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return f"HF_ENDPOINT {endpoint!r} is not a URL"
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(e.strerror or str(e) or type(e).__name__)

    t = threading.Thread(target=attempt, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout + 0.5)
    why = result[0] if result else "timed out"
    via = f" (through the proxy {host}:{port})" if proxy else ""
    return None if result and why is None else f"{endpoint} cannot be reached{via}: {why}"


def fetch(spec: EncoderSpec, progress: bool = True) -> list[Path]:
    """Download every source of ``spec`` into the Hugging Face cache (atomic: hf_hub renames
    ``.incomplete`` files only when whole), verifying pinned hashes.

    Raises:
        WeightsError: no downloadable weights, the hub cannot be reached (found out in
            :data:`PROBE_SECONDS`, not after minutes of retries), a failed download, a bad hash.
    """
    if not spec.sources:
        raise WeightsError(f"preset {spec.name} has no downloadable weights; pass --weights PATH, {SEEDED_HINT}")
    why = hub_unreachable()
    if why:
        raise WeightsError(f"cannot download the {spec.name} weights: {why}; run `mtx weights fetch {spec.name}` "
                           f"where the network is reachable (or set HF_ENDPOINT), pass --weights PATH, {SEEDED_HINT}")
    from huggingface_hub import hf_hub_download

    out = []
    for src in spec.sources:
        try:
            p = Path(hf_hub_download(src.repo, src.filename))
        except Exception as e:  # noqa: BLE001 - offline, 404, auth: all end the same way
            raise WeightsError(
                f"could not download {src.repo}/{src.filename} ({type(e).__name__}: {str(e)[:200]}); "
                f"check the network or HF_ENDPOINT, or download the file yourself and pass --weights PATH, {SEEDED_HINT}"
            ) from None
        try:
            verify_sha256(p, src)
        except WeightsError:
            # A corrupt or substituted download must not stay in the cache to be found later.
            for victim in {p.resolve(), p}:
                with contextlib.suppress(OSError):
                    victim.unlink()
            raise
        out.append(p)
    return out


def cached_sha256(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) in the user cache directory."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    base = mtx_cache_dir() / "sha256"
    memo = base / key
    with contextlib.suppress(OSError):
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        base.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{key}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    return digest


def mtx_cache_dir() -> Path:
    """mtx's own cache directory (``$XDG_CACHE_HOME/mtx``, else ``~/.cache/mtx``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtx"


def verify_sha256(path: Path, src: WeightSource) -> str:
    """Verify a pinned file; the result is remembered under mtx's cache directory (never next to
    the file: a Hugging Face snapshot folder is not ours to write in), keyed by the resolved
    path, size, mtime and the expected hash."""
    st = path.stat()
    ident = hashlib.sha256(f"{path.resolve()}".encode()).hexdigest()
    stamp = mtx_cache_dir() / "verified" / ident
    key = f"{st.st_size}:{st.st_mtime_ns}:{src.sha256}"
    with contextlib.suppress(OSError):
        if src.sha256 and stamp.read_text() == key:
            return src.sha256
    digest = sha256_file(path)
    if src.sha256 and digest != src.sha256:
        raise WeightsError(
            f"{path}: sha256 mismatch for {src.filename}: expected {src.sha256}, got {digest}; "
            "the file is corrupt or not the published one; delete it and run `mtx weights fetch`"
        )
    if src.sha256:
        with contextlib.suppress(OSError):
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f"{ident}.{os.getpid()}.tmp")
            tmp.write_text(key)
            os.replace(tmp, stamp)
    return digest


def requested_weights(weights: str | list[str] | None) -> tuple[list[str], list[str]]:
    """(encoder weights, fitted tokenizer files) a run asked for: ``--weights``, else
    ``MTX_WEIGHTS``; tokenizer files (`mtx fit`) ride along with any encoder weights, seeded
    included (read from their header only)."""
    from .fit.bundle import split_weights

    paths, tokenizer_files = split_weights([weights] if isinstance(weights, str) else [w for w in (weights or []) if w])
    if not paths and os.environ.get("MTX_WEIGHTS"):
        paths, more = split_weights([p for p in os.environ["MTX_WEIGHTS"].split(os.pathsep) if p])
        tokenizer_files += more
    return paths, tokenizer_files


def weight_paths(weights: str | list[str] | None) -> list[str]:
    """The weights a run asked for (``--weights``, else ``MTX_WEIGHTS``), checked without loading
    anything: ``["seeded"]``, existing files, or ``[]`` (the Hugging Face cache).

    Raises:
        UsageError: ``seeded`` combined with files, or a path that is not a file.
    """
    paths, _ = requested_weights(weights)
    if "seeded" in paths and paths != ["seeded"]:
        raise UsageError("--weights seeded cannot be combined with weight files")
    for p in paths:
        if p != "seeded" and not Path(p).expanduser().is_file():
            raise UsageError(f"{p}: no such weights file; pass an existing file, or --weights seeded "
                             "for an explicitly random (not pretrained) encoder")
    return paths


def locate(spec: EncoderSpec, weights: str | list[str] | None) -> tuple[list[str], dict[str, WeightSource]]:
    """The weight files a run loads (downloading a preset's when it is not cached), and which
    of them are pinned sources; ``["seeded"]`` for seeded weights. Torch-free: ``mtx embed``
    calls it before starting anything, so missing weights are reported at once.

    Raises:
        UsageError: a bad ``--weights``.
        WeightsError: no weights here and none can be downloaded (offline, the hub unreachable).
    """
    paths = weight_paths(weights)
    pinned: dict[str, WeightSource] = {}
    if paths:
        return paths, pinned
    if not spec.sources:
        raise WeightsError(f"preset {spec.name} has no published weights; pass --weights PATH, {SEEDED_HINT}")
    found = {s: _hf_cached(s) for s in spec.sources}
    if not any(found.values()):
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise WeightsError(
                f"no weights for {spec.name} in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"run `mtx weights fetch {spec.name}` online, or pass --weights PATH, {SEEDED_HINT}"
            )
        fetch(spec)
        found = {s: _hf_cached(s) for s in spec.sources}
    for s, p in found.items():
        if p is not None:
            paths.append(str(p))
            pinned[str(p)] = s
    return paths, pinned


def resolve(spec: EncoderSpec, weights: list[str] | None) -> LoadedWeights:
    """Find and load the weights for ``spec`` (see module docstring for the order)."""
    import torch  # noqa: F401 - fail early and clearly if torch is missing

    from .fit.bundle import attach

    lw = _resolve_encoder(spec, weights)
    attach(lw, requested_weights(weights)[1])
    return lw


def _resolve_encoder(spec: EncoderSpec, weights: list[str] | None) -> LoadedWeights:
    paths, pinned = locate(spec, weights)
    if paths == ["seeded"]:
        return LoadedWeights(None, source="seeded")
    merged = LoadedWeights(None, source="file")
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file; pass an existing file, or --weights seeded "
                               "for an explicitly random (not pretrained) encoder")
        digest = verify_sha256(path, pinned[p]) if p in pinned else cached_sha256(path)
        sd, meta = read_state_dict(path)
        lw = convert_state_dict(sd, meta, path)
        lw.files[0].update(sha256=digest, size=path.stat().st_size)
        if lw.blocks is not None and merged.blocks is None:
            merged.blocks = lw.blocks
        merged.front = merged.front or lw.front
        merged.norm = merged.norm or lw.norm
        merged.tokenizers.update(lw.tokenizers)
        merged.files += lw.files
    if merged.blocks is None:
        raise WeightsError(f"none of {paths} holds encoder blocks; pass the Meta-Transformer "
                           "encoder file or a CLIP vision tower")
    check_blocks(merged.blocks, spec, merged.files[0]["path"])
    merged.source = "+".join(f"{Path(f['path']).name}({f['format']})" for f in merged.files)
    return merged


def planned_digest(spec: EncoderSpec, weights: str | list[str] | None) -> str | None:
    """The :func:`weights_digest` a run with these weights would record, without loading them
    (for ``--dry-run``); None when the weights are not here yet (they would be downloaded)."""
    paths = weight_paths(weights)
    if paths == ["seeded"]:
        return "seeded"
    if not paths:
        found = [_hf_cached(s) for s in spec.sources]
        if not spec.sources or not all(found):
            return None
        digests = [verify_sha256(p, s) for p, s in zip(found, spec.sources, strict=True)]
    else:
        digests = [cached_sha256(Path(p).expanduser()) for p in paths]
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def weights_digest(lw: LoadedWeights) -> str:
    """One sha256 that identifies the weights a run used (for provenance and resume checks)."""
    if not lw.files:
        return "seeded"
    return hashlib.sha256(json.dumps([f.get("sha256") for f in lw.files]).encode()).hexdigest()
