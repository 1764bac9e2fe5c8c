"""``mtx fit``'s settings: :class:`FitOptions` (one field per flag), its checks, the interruption."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MtxError, UsageError

OBJECTIVES = ("supervised", "contrastive")
TASKS = ("classification", "regression")
POOLS = ("cls", "mean", "max")

ProgressFn = Callable[[dict[str, Any]], None]


class FitInterrupted(MtxError):
    """Ctrl-C / SIGTERM: the checkpoint stays, the best tokenizer so far is written."""

    exit_code = 130


@dataclass
class FitOptions:
    """Everything ``mtx fit`` takes besides the inputs and the output path.

    Attributes mirror the CLI flags; ``options`` are ``-O`` modality config overrides.
    """

    modality: str
    model: str = "meta-b16"
    weights: list[str] | None = None
    device: str | None = None
    dtype: str = "auto"
    objective: str = "supervised"
    task: str = "classification"
    labels: str | None = None  # a labels file, "folders", or None
    val_labels: str | None = None
    target: str | None = None  # tables: a column as the label (left out of the tokens)
    val: float = 0.2
    epochs: int = 30
    lr: float | None = None  # None: 3e-3 for a seeded tokenizer, 3e-4 for one starting from CLIP
    weight_decay: float = 0.05
    batch_size: int = 32
    warmup: float = 0.1  # share of all steps
    patience: int = 8  # epochs without a better validation metric before stopping (0 = never)
    seed: int = 0
    pool: str | None = None
    grad_checkpointing: bool = False
    temperature: float = 0.1
    proj_dim: int = 128
    workers: int | None = None
    timeout: float = 600.0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    overwrite: bool = False

    def check(self) -> None:
        from ..modalities import get_modality

        get_modality(self.modality)
        for name, value, choices in (("--objective", self.objective, OBJECTIVES), ("--task", self.task, TASKS),
                                     ("--pool", self.pool, POOLS)):
            if value is not None and value not in choices:
                raise UsageError(f"{name} {value!r}: choose one of {', '.join(choices)}")
        if self.labels and self.target:
            raise UsageError("--labels and --target are two ways to give labels; pass one")
        if self.target and self.modality != "tabular":
            raise UsageError(f"--target names a table column; it needs --modality tabular, not {self.modality}")
        if self.objective == "supervised" and not (self.labels or self.target):
            raise UsageError("supervised fitting needs labels: --labels FILE, --labels folders or --target COLUMN "
                             "(or --objective contrastive, which needs none)")
        if self.objective == "contrastive" and self.task == "regression":
            raise UsageError("--task regression needs the supervised objective")
        if self.val_labels and not (self.labels or self.target):
            raise UsageError("--val-labels needs --labels for the training samples")
        if not 0.0 <= self.val < 1.0:
            raise UsageError(f"--val {self.val}: a share of the samples in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise UsageError("--epochs, --batch-size and --lr must be positive")
        if self.objective == "contrastive" and self.batch_size < 2:
            raise UsageError("--objective contrastive needs --batch-size of at least 2 (negatives)")


def work_dir_of(output: Path) -> Path:
    return output.with_name(output.name + ".fit")
