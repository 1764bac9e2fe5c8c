"""What a run computes (recorded with the output) and how fast it goes (not recorded)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .._choices import Dtype, Pool, StoreDtype, values
from ..modalities import MODULES
from ..settings import OptionError, check_fields, device_problem, setting
from ..weights import PRESETS

DTYPES, POOLS, STORE_DTYPES = values(Dtype), values(Pool), values(StoreDtype)


@dataclass
class EmbedOptions:
    """Everything that decides what a run computes (recorded) and how fast (not recorded).

    Every field declares its allowed values (:func:`mtx.settings.setting`); they are checked when
    the options are made, and :meth:`validate` checks the per-modality ``options`` too — all
    before any work (a bad value is an :class:`mtx.settings.OptionError`: exit 2, a ValueError).
    """

    model: str = setting("meta-b16", choices=tuple(PRESETS), flag="--model")
    weights: list[str] | None = setting(None, flag="--weights")
    device: str | None = setting(None, check=device_problem, flag="--device")
    dtype: str = setting("float32", choices=DTYPES, flag="--dtype")
    # A batch holds at least ``batch_size`` rows (segments) when they are there, and rows
    # shorter than an image are added until it holds ``batch_tokens`` tokens (default: as many
    # as ``batch_size`` images), up to ``max_rows`` rows (default: 16 x ``batch_size``).
    batch_size: int = setting(32, lo=1, flag="--batch-size")
    batch_tokens: int | None = setting(None, lo=1)
    max_rows: int | None = setting(None, lo=1)
    workers: int | None = setting(None, lo=0, flag="--workers")
    modality: str | None = setting(None, choices=MODULES, flag="--modality")
    rules: list[tuple[str, str]] = setting(default_factory=list, flag="--map")
    pool: str | None = setting(None, choices=POOLS, flag="--pool")
    store_dtype: str = setting("float32", choices=STORE_DTYPES, flag="--store-dtype")
    save_tokens: bool = False
    overwrite: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> config overrides
    timeout: float = setting(600.0, above=0, flag="--timeout")  # seconds without progress
    compile: bool = False  # torch.compile the encoder's block stack (speed only, not recorded)
    queue_size: int = setting(256, lo=1)
    part_rows: int = setting(1024, lo=1, flag="--commit-every")
    part_seconds: float = setting(30.0, above=0)
    skip_unknown: bool = setting(False)  # files no modality claims are left out and listed, not failures
    # Fitted tokenizers (`mtx fit`): MODALITY=FILE or FILE; :meth:`with_fitted` resolves them.
    tokenizers: list[str] = setting(default_factory=list)

    def __post_init__(self) -> None:
        check_fields(self)
        self.rules = check_rules(self.rules)

    def validate(self) -> "EmbedOptions":
        """Check the per-modality ``options`` (each value coerced to its field's type and range);
        imports the modalities (torch). Returns self."""
        self.options = check_modality_options(self.options)
        return self

    def modality_config(self, name: str):
        from ..modalities import get_modality

        mod = get_modality(name)
        try:
            return mod.config(**self.options.get(name, {}))
        except TypeError as e:
            raise OptionError(f"bad option for {name}: {e}") from None

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


def modality_defaults() -> dict[str, dict[str, Any]]:
    """Every modality's config defaults (a field an older output does not record had them)."""
    from ..modalities import list_modalities
    from ..settings import config_defaults

    return {m.name: config_defaults(m.Config) for m in list_modalities()}


def check_rules(rules) -> list[tuple[str, str]]:
    """``--map`` rules as (glob, modality) pairs whose modality exists.

    Raises:
        OptionError: a rule that is not GLOB=MODALITY, or an unknown modality.
    """
    out = []
    for r in rules or []:
        if isinstance(r, str):
            if "=" not in r:
                raise OptionError(f"--map {r!r}: expected GLOB=MODALITY, e.g. '*.dat=point_cloud'")
            r = r.rsplit("=", 1)
        if len(r) != 2 or not str(r[0]).strip():
            raise OptionError(f"--map {r!r}: expected GLOB=MODALITY, e.g. '*.dat=point_cloud'")
        glob, target = str(r[0]), str(r[1]).strip()
        if target not in MODULES:
            raise OptionError(f"--map '{glob}={target}': unknown modality {target!r}{_did_you_mean(target, MODULES)}; "
                              f"choose one of: {', '.join(MODULES)}")
        out.append((glob, target))
    return out


def check_modality_options(options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``-O MODALITY.FIELD=VALUE`` overrides checked against each modality's Config: the
    modality and field exist, each value has the field's type and lies in its range.

    Returns:
        The overrides with each value coerced to its field's type (``"32"`` -> 32).

    Raises:
        OptionError: naming the modality, the field and the values it allows.
    """
    import dataclasses

    from ..modalities import get_modality

    out: dict[str, dict[str, Any]] = {}
    for name, fields in (options or {}).items():
        if name not in MODULES:
            raise OptionError(f"-O {name}.FIELD=…: unknown modality {name!r}{_did_you_mean(name, MODULES)}; "
                              f"choose one of: {', '.join(MODULES)}")
        cfg_cls = get_modality(name).Config
        known = [f.name for f in dataclasses.fields(cfg_cls)]
        bad = sorted(set(fields) - set(known))
        if bad:
            raise OptionError(f"unknown option(s) {', '.join(f'{name}.{b}' for b in bad)}"
                              f"{_did_you_mean(bad[0], known)}; {name} has: {', '.join(known) or 'none'}")
        cfg = cfg_cls(**fields)  # coerces and checks every value (OptionError)
        out[name] = {k: getattr(cfg, k) for k in fields}
    return out


def _did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


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

    tokenizers = {m: t["file_sha256"] for m, t in sorted(model.weights.tokenizer_files.items())}
    return run_config(model.spec, weights_digest(model.weights), str(model.dtype).removeprefix("torch."), opts,
                      tokenizers)


def run_config(spec, weights_sha256: str | None, compute_dtype: str, opts: EmbedOptions,
               tokenizers: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`run_config_of` from its parts (``--dry-run`` has no loaded model); ``tokenizers``:
    modality -> sha256 of the fitted tokenizer file used for it."""
    return {
        "format_version": 1,
        "preset": spec.name,
        "geometry": spec.geometry(),
        "weights_sha256": weights_sha256,
        "compute_dtype": compute_dtype,
        "pool": opts.pool,
        "store_dtype": opts.store_dtype,
        "save_tokens": opts.save_tokens,
        "forced_modality": opts.modality,
        "rules": opts.rules,
        # Fitted tokenizer files (only when used, so other outputs keep their config hash).
        **({"tokenizers": dict(sorted(tokenizers.items()))} if tokenizers else {}),
    }
