"""What a run computes (recorded with the output) and how fast it goes (not recorded)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError


@dataclass
class EmbedOptions:
    """Everything that decides what a run computes (recorded) and how fast (not recorded)."""

    model: str = "meta-b16"
    weights: list[str] | None = None
    device: str | None = None
    dtype: str = "float32"
    # A batch holds at least ``batch_size`` rows (segments) when they are there, and rows
    # shorter than an image are added until it holds ``batch_tokens`` tokens (default: as many
    # as ``batch_size`` images), up to ``max_rows`` rows (default: 16 x ``batch_size``).
    batch_size: int = 32
    batch_tokens: int | None = None
    max_rows: int | None = None
    workers: int | None = None
    modality: str | None = None
    rules: list[tuple[str, str]] = field(default_factory=list)
    pool: str | None = None
    store_dtype: str = "float32"
    save_tokens: bool = False
    overwrite: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> config overrides
    timeout: float = 600.0
    compile: bool = False  # torch.compile the encoder's block stack (speed only, not recorded)
    queue_size: int = 256
    part_rows: int = 1024
    part_seconds: float = 30.0
    skip_unknown: bool = False  # files no modality claims are left out and listed, not failures
    # Fitted tokenizers (`mtx fit`): MODALITY=FILE or FILE; :meth:`with_fitted` resolves them.
    tokenizers: list[str] = field(default_factory=list)

    def modality_config(self, name: str):
        from ..modalities import get_modality

        mod = get_modality(name)
        try:
            return mod.config(**self.options.get(name, {}))
        except TypeError as e:
            raise UsageError(f"bad option for {name}: {e}") from None

    def with_fitted(self) -> EmbedOptions:
        """These options with the fitted tokenizers resolved: ``tokenizers``, ``MTX_TOKENIZERS`` and
        tokenizer files given as ``weights`` become checked paths in ``tokenizers`` (one per
        modality), and each one's recorded modality config goes under the user's ``options``
        (a fitted tokenizer runs with the preprocessing it was trained on). Unchanged when
        there are none."""
        from dataclasses import replace

        from ..fit.bundle import resolve_tokenizers

        weights, paths, options = resolve_tokenizers(self.tokenizers, self.weights, self.options)
        if not paths:
            return self
        return replace(self, weights=weights, tokenizers=paths, options=options)

    def modality_configs(self) -> dict[str, dict[str, Any]]:
        """The resolved config of every modality, as recorded (and compared on resume)."""
        from ..modalities import list_modalities

        return {m.name: self.modality_config(m.name).to_dict() for m in list_modalities()}


def default_workers(gpu: bool = False) -> int:
    """Decoder processes for this machine: on CPU half the cores (the encoder's intra-op
    threads take the other half); with a GPU every core but two (the main process collates,
    drives the GPU and writes)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if gpu:
        return max(1, n - 2)
    return max(1, min(8, n // 2))


def gpu_likely(device: str | None) -> bool:
    """Whether ``device`` will be a GPU, answered before torch is imported (the decoders start
    while the model loads); corrected by :meth:`WorkerPool.resize` once it is known."""
    if device is None or device == "auto":
        return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    return device.startswith("cuda")


def run_config_of(model, opts: EmbedOptions) -> dict[str, Any]:
    """What decides the vectors besides the per-modality configs (which are recorded and
    compared one by one): hashed, recorded, compared on resume."""
    from ..weights import weights_digest

    return {
        "format_version": 1,
        "preset": model.spec.name,
        "geometry": model.spec.geometry(),
        "weights_sha256": weights_digest(model.weights),
        "compute_dtype": str(model.dtype).removeprefix("torch."),
        "pool": opts.pool,
        "store_dtype": opts.store_dtype,
        "save_tokens": opts.save_tokens,
        "forced_modality": opts.modality,
        "rules": opts.rules,
        # Fitted tokenizer files (only when used, so other outputs keep their config hash).
        **({"tokenizers": {m: t["file_sha256"] for m, t in sorted(model.weights.tokenizer_files.items())}}
           if model.weights.tokenizer_files else {}),
    }
