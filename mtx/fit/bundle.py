"""Fitted tokenizer files: one safetensors file in the mtx bundle layout.

Layout::

    tokenizers.<modality>.<param>   the tokenizer's state dict (float32)
    heads.<modality>.<param>        the task head (linear, or the contrastive projection head)
    __metadata__                    mtx_format=bundle, mtx_bundle=tokenizer, mtx_fit=<JSON>

``mtx_fit`` records what the tokenizer means: modality, encoder preset and the sha256 of the
encoder weights it was trained against, the modality config, pooling, objective, label names,
a data fingerprint, epochs, the best validation metric, the seed and the mtx version. Nothing
in it depends on time or machine, so the same seed and data give the same file bytes; the file
is written here rather than by ``safetensors.save_file`` because that one orders metadata keys
randomly.

The same file is accepted by ``--tokenizer MODALITY=FILE``, ``MTX_TOKENIZERS`` and ``--weights``
(:func:`mtx.weights.resolve` hands such files to :func:`attach`).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, WeightsError

if TYPE_CHECKING:
    import torch

    from ..encoder import Model
    from ..weights import LoadedWeights

BUNDLE_KIND = "tokenizer"
_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
           "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


# ------------------------------------------------------------------------------------------
# Writing and reading
# ------------------------------------------------------------------------------------------


def write_bundle(path: Path, tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> str:
    """Write a deterministic safetensors file atomically (tmp + fsync + rename); returns its sha256."""
    import hashlib

    names = sorted(tensors)
    header: dict[str, Any] = {"__metadata__": {"mtx_format": "bundle", "mtx_bundle": BUNDLE_KIND,
                                               "mtx_fit": json.dumps(meta, sort_keys=True, separators=(",", ":"))}}
    blobs, offset = [], 0
    for n in names:
        t = tensors[n].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b""
        header[n] = {"dtype": _DTYPES[str(t.dtype).removeprefix("torch.")], "shape": list(t.shape),
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header of ``path`` (no tensor is read)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError("header length is implausible")
            head = f.read(n)
        if len(head) != n:
            raise ValueError("truncated header")
        obj = json.loads(head)
        if not isinstance(obj, dict):
            raise ValueError("header is not a JSON object")
        return obj
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise WeightsError(f"{path}: not an mtx tokenizer file (not a readable safetensors file: {e}); "
                           "make one with `mtx fit`") from None


def is_tokenizer_file(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file written by ``mtx fit`` (header only)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        meta = read_header(p).get("__metadata__") or {}
    except WeightsError:
        return False
    return meta.get("mtx_bundle") == BUNDLE_KIND


@dataclass
class FittedTokenizer:
    """A tokenizer file read and checked: its tensors, metadata, path and sha256."""

    path: Path
    sha256: str
    meta: dict[str, Any]
    tokenizer: dict[str, "torch.Tensor"]
    head: dict[str, "torch.Tensor"]

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    def info(self) -> dict[str, str]:
        """Flat string attributes for the store's per-modality record (HDF5 attrs)."""
        m = self.meta
        return {"file_path": str(self.path.resolve()), "file_sha256": self.sha256,
                "fit_json": json.dumps(m, sort_keys=True)}


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``mtx_fit`` metadata of a tokenizer file; one-line refusals for anything else."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{p}: no such tokenizer file")
    meta = read_header(p).get("__metadata__") or {}
    if meta.get("mtx_bundle") != BUNDLE_KIND or "mtx_fit" not in meta:
        raise WeightsError(f"{p}: not an mtx tokenizer file (no mtx_fit metadata: a foreign safetensors "
                           "file); make one with `mtx fit`")
    try:
        fit = json.loads(meta["mtx_fit"])
        fit["modality"], fit["encoder"]["preset"], fit["encoder"]["weights_sha256"]  # noqa: B018
    except (ValueError, KeyError, TypeError):
        raise WeightsError(f"{p}: corrupt mtx tokenizer file (its mtx_fit metadata is unreadable); "
                           "fit it again") from None
    return fit


def read_bundle(path: str | Path) -> FittedTokenizer:
    """Read and verify a tokenizer file (metadata, tensors, one modality)."""
    from ..weights import cached_sha256

    p = Path(path).expanduser()
    fit = read_meta(p)
    try:
        from safetensors import safe_open

        sd: dict[str, torch.Tensor] = {}
        with safe_open(str(p), framework="pt") as f:
            for k in f.keys():
                sd[k] = f.get_tensor(k)
    except Exception as e:  # noqa: BLE001 - a truncated or damaged body
        raise WeightsError(f"{p}: corrupt mtx tokenizer file ({' '.join(str(e).split())[:200]}); "
                           "fit it again") from None
    mod = fit["modality"]
    tok = {k[len(f"tokenizers.{mod}."):]: v for k, v in sd.items() if k.startswith(f"tokenizers.{mod}.")}
    head = {k[len(f"heads.{mod}."):]: v for k, v in sd.items() if k.startswith(f"heads.{mod}.")}
    if not tok or len(tok) + len(head) != len(sd):
        raise WeightsError(f"{p}: corrupt mtx tokenizer file (expected only tokenizers.{mod}.* and "
                           f"heads.{mod}.* tensors); fit it again")
    return FittedTokenizer(p, cached_sha256(p), fit, tok, head)


# ------------------------------------------------------------------------------------------
# Using tokenizer files: --tokenizer, MTX_TOKENIZERS, --weights
# ------------------------------------------------------------------------------------------


def parse_refs(values: list[str] | None, env: bool = True) -> dict[str, Path]:
    """``MODALITY=FILE`` or ``FILE`` values (plus ``MTX_TOKENIZERS``, os.pathsep-separated; the
    command line wins per modality) -> {modality: path}, each file's modality checked."""
    from ..modalities import get_modality

    items: list[tuple[str, str]] = []
    if env and os.environ.get("MTX_TOKENIZERS"):
        items += [("MTX_TOKENIZERS", v) for v in os.environ["MTX_TOKENIZERS"].split(os.pathsep) if v.strip()]
    items += [("--tokenizer", v) for v in values or []]
    out: dict[str, Path] = {}
    for where, raw in items:
        name, sep, file = raw.partition("=")
        if not sep or "/" in name or os.sep in name:
            name, file = "", raw
        p = Path(file.strip()).expanduser()
        meta = read_meta(p)
        if name:
            get_modality(name.strip())
            if meta["modality"] != name.strip():
                raise UsageError(f"{where} {raw}: {p} holds a {meta['modality']} tokenizer, not {name.strip()}")
        out[meta["modality"]] = p
    return out


def recorded_tokenizers(mod_attrs: dict[str, dict[str, Any]], override: dict[str, Path]
                        ) -> tuple[list[str], dict[str, str]]:
    """The tokenizer files a store records (``init=file``), found again: the path given in
    ``override`` (``--tokenizer``) or the recorded one, checked against the recorded sha256.
    Returns (files found, {modality: why not} for the others)."""
    from ..weights import cached_sha256

    found, problems = [], {}
    for mod, ma in sorted(mod_attrs.items()):
        if ma.get("init") != "file":
            continue
        want = str(ma.get("file_sha256", ""))
        p = override.get(mod) or (Path(str(ma["file_path"])) if ma.get("file_path") else None)
        if p is None or not p.is_file():
            problems[mod] = (f"its {mod} vectors were made with the fitted tokenizer {ma.get('file_path', '?')} "
                             f"(sha256 {want[:16]}), which is not there; pass it with --tokenizer {mod}=FILE")
        elif want and cached_sha256(p) != want:
            problems[mod] = (f"its {mod} vectors were made with the tokenizer file sha256 {want[:16]}, {p} has "
                             f"sha256 {cached_sha256(p)[:16]}; pass the file it was made with (--tokenizer {mod}=FILE)")
        else:
            found.append(str(p))
    return found, problems


def resolve_tokenizers(tokenizers: list[str] | None, weights: list[str] | None,
                       options: dict[str, dict[str, Any]] | None
                       ) -> tuple[list[str] | None, list[str], dict[str, dict[str, Any]]]:
    """``--tokenizer`` values, ``MTX_TOKENIZERS`` and tokenizer files among ``--weights`` ->
    (the encoder weights without them, one checked tokenizer path per modality, ``options``
    with each file's recorded config underneath). No tokenizer anywhere: all unchanged."""
    refs = parse_refs(tokenizers)
    enc, in_weights = split_weights(list(weights or [])) if weights else ([], [])
    for p in in_weights:
        refs.setdefault(read_meta(p)["modality"], Path(p).expanduser())
    if not refs:
        return weights, [], dict(options or {})
    paths = [str(p) for _, p in sorted(refs.items())]
    return (enc or None) if weights else weights, paths, tokenizer_options(paths, options)


def split_weights(paths: list[str]) -> tuple[list[str], list[str]]:
    """(encoder weight paths, tokenizer files) of a ``--weights`` list."""
    enc, toks = [], []
    for p in paths:
        (toks if p != "seeded" and is_tokenizer_file(Path(p).expanduser()) else enc).append(p)
    return enc, toks


def tokenizer_options(refs: dict[str, Path] | list[str], options: dict[str, dict[str, Any]] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Modality options with each tokenizer file's recorded config underneath the user's: a
    fitted tokenizer is used with the preprocessing it was trained on (``-O`` still overrides)."""
    paths = refs.values() if isinstance(refs, dict) else refs
    out = {k: dict(v) for k, v in (options or {}).items()}
    for p in paths:
        meta = read_meta(p)
        out[meta["modality"]] = {**meta.get("config", {}), **out.get(meta["modality"], {})}
    return out


def model_options(model: "Model", options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``options`` with the recorded config of each fitted tokenizer the model carries underneath
    (what :func:`tokenizer_options` does from files, for a model already loaded)."""
    out = {k: dict(v) for k, v in (options or {}).items()}
    for mod, info in model.weights.tokenizer_files.items():
        cfg = json.loads(info["fit_json"]).get("config", {})
        out[mod] = {**cfg, **out.get(mod, {})}
    return out


def attach(lw: "LoadedWeights", paths: list[str]) -> None:
    """Add tokenizer files to loaded weights (state dicts + provenance); one per modality."""
    for p in paths:
        ft = read_bundle(p)
        if ft.modality in lw.tokenizer_files and lw.tokenizer_files[ft.modality]["file_sha256"] != ft.sha256:
            raise UsageError(f"two tokenizer files for {ft.modality}: {lw.tokenizer_files[ft.modality]['file_path']} "
                             f"and {ft.path}; pass one")
        lw.tokenizers[ft.modality] = ft.tokenizer
        lw.tokenizer_files[ft.modality] = {**ft.info(), "fit_pool": ft.meta.get("pool", "")}


def encoder_sha256(model: "Model") -> str:
    """The identity of the encoder weights a tokenizer is trained against, independent of the
    compute dtype: the sha256 over the weight files' sha256 (as the store records it), or for
    ``--weights seeded`` the sha256 of the seeded float32 encoder's state."""
    import torch

    from ..weights import weights_digest

    if model.weights.files:
        return weights_digest(model.weights)
    if model.dtype == torch.float32:
        return model.encoder_sha256()
    return _seeded_sha(model.spec.name)


_SEEDED: dict[str, str] = {}


def _seeded_sha(preset: str) -> str:
    if preset not in _SEEDED:
        from ..encoder import build_encoder
        from ..modalities._base import state_sha256
        from ..weights import LoadedWeights, get_preset

        _SEEDED[preset] = state_sha256(build_encoder(get_preset(preset), LoadedWeights(None)))
    return _SEEDED[preset]


def check_encoder(model: "Model") -> None:
    """Refuse tokenizer files trained against another encoder (both hashes named)."""
    if not model.weights.tokenizer_files:
        return
    have = encoder_sha256(model)
    for mod, info in model.weights.tokenizer_files.items():
        fit = json.loads(info["fit_json"])
        enc = fit["encoder"]
        if enc["preset"] != model.spec.name:
            raise WeightsError(f"{info['file_path']}: this {mod} tokenizer was trained for --model {enc['preset']}, "
                               f"not {model.spec.name}; pass --model {enc['preset']}")
        if enc["weights_sha256"] != have:
            raise WeightsError(
                f"{info['file_path']}: this {mod} tokenizer was trained against encoder weights sha256 "
                f"{enc['weights_sha256']} ({enc.get('weights_source', '?')}), but this run's encoder weights have "
                f"sha256 {have} ({model.weights.source}); pass the weights it was trained with (--weights) or fit again")
