"""CLI commands around fitted tokenizers: ``fit``, ``predict``, ``probe``; ``--tokenizer`` helpers.

Registered on the app at the end of :mod:`mtx.cli`. Nothing heavy is imported at module level
(torch, sklearn and h5py load inside the commands).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._choices import Dtype, Modality, Objective, Pool, PredictFormat, Preset, Task
from .errors import UsageError

TokenizerOpt = Annotated[list[str] | None, typer.Option(
    "--tokenizer", help="A fitted tokenizer (`mtx fit`) as MODALITY=FILE or FILE (repeatable; also "
    "MTX_TOKENIZERS, os.pathsep-separated). Replaces that modality's built-in tokenizer and brings the "
    "preprocessing and pooling it was trained with.", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def with_tokenizers(tokenizer: list[str] | None, weights: list[str] | None,
                    options: dict[str, dict[str, Any]]) -> tuple[list[str] | None, dict[str, dict[str, Any]]]:
    """``--tokenizer``/``MTX_TOKENIZERS`` (and tokenizer files given to ``--weights``) for a
    command that loads its model itself (``tokenize``) -> (weights incl. the tokenizer files,
    the modality options under their recorded configs); ``embed`` resolves the same through
    :meth:`mtx.pipeline.EmbedOptions.with_fitted`."""
    from .fit.bundle import resolve_tokenizers

    enc, paths, options = resolve_tokenizers(tokenizer, weights, options)
    return ([*(enc or []), *paths] if paths else weights), options


def fit_info_lines(info: dict[str, Any]) -> list[str]:
    """Human lines describing a fitted tokenizer from its recorded ``fit_json`` (info, tokenize)."""
    try:
        fit = json.loads(info.get("fit_json") or "{}")
    except ValueError:
        return []
    best = fit.get("best") or {}
    labels = fit.get("labels") or []
    what = (f"{fit.get('objective')}"
            + (f" {fit['task']}" if fit.get("task") else "")
            + (f", {len(labels)} classes" if labels else "")
            + f", {fit.get('data', {}).get('count', '?')} samples, {fit.get('epochs')} epochs"
            + (f", best validation {best.get('name')} {best['metric']:.4f} (epoch {best.get('epoch')})"
               if best.get("metric") is not None else ""))
    return [f"{info.get('file_path')}  sha256 {str(info.get('file_sha256', ''))[:16]}",
            f"{what}; trained against {fit.get('encoder', {}).get('preset')} weights "
            f"sha256 {str(fit.get('encoder', {}).get('weights_sha256', ''))[:16]}, init {fit.get('init')}, "
            f"pool {fit.get('pool')}"]


# ------------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


class _FitProgress:
    """A rich progress bar on a terminal; per-epoch lines otherwise (stderr)."""

    def __init__(self, enabled: bool, lines: bool):
        from ._console import err

        self.err = err
        self.bar = None
        self.lines = lines
        self.metric = "metric"
        if enabled and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
            self.bar.start()
            self.task = self.bar.add_task("decoding", total=None, info="")
            self.lines = False

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "start":
            self.metric = ev["metric"]
            self.epochs = ev["epochs"]
            if self.lines:
                self.err.print(f"fit: {ev['n_train']} training / {ev['n_val']} validation samples, init {ev['init']}, "
                               f"pool {ev['pool']}, {ev['device']} {ev['dtype']}")
        elif kind == "resume" and (self.lines or self.bar):
            self.err.print(f"resuming after epoch {ev['epoch']} (checkpoint)")
        if self.bar is None:
            if kind == "epoch" and self.lines:
                self.err.print(f"epoch {ev['epoch']}/{ev['epochs']}  train loss {_fmt(ev['train_loss'])}  "
                               f"val loss {_fmt(ev['val_loss'])}  val {ev['metric_name'] or self.metric} "
                               f"{_fmt(ev['metric'])}  (best {_fmt(ev['best_metric'])} @ {ev['best_epoch']})  "
                               f"{ev['seconds']:.1f} s")
            return
        if kind == "decode":
            self.bar.update(self.task, total=ev["total"], completed=ev["done"], info=f"{ev['samples']} samples")
        elif kind == "step":
            self.bar.update(self.task, description=f"epoch {ev['epoch'] + 1}/{self.epochs}", total=ev["steps"],
                            completed=ev["step"], info=f"loss {ev['loss']:.4f}" + getattr(self, "last", ""))
        elif kind == "epoch":
            self.last = f"  val {self.metric} {_fmt(ev['metric'])} (best {_fmt(ev['best_metric'])})"
            self.bar.console.print(f"epoch {ev['epoch']}/{ev['epochs']}  train loss {_fmt(ev['train_loss'])}  "
                                   f"val {self.metric} {_fmt(ev['metric'])}  {ev['seconds']:.1f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_report(report: dict[str, Any] | None, title: str) -> None:
    """A probe-style table: head / linear probe / k-NN accuracy and macro-F1, chance level."""
    from rich.table import Table

    from ._console import err

    if not report:
        return
    t = Table(title=title, box=None, pad_edge=False, title_justify="left")
    for c in ("", "accuracy", "macro-F1"):
        t.add_column(c, justify="right" if c else "left")
    for name, label in (("head", "trained head"), ("linear", "linear probe"), ("knn", f"k-NN (k={report.get('k', 5)})")):
        r = report.get(name)
        if r and "accuracy" in r:
            acc = f"{r['accuracy']:.3f}" + (f" ± {r['accuracy_std']:.3f}" if "accuracy_std" in r else "")
            f1 = f"{r['macro_f1']:.3f}" + (f" ± {r['macro_f1_std']:.3f}" if "macro_f1_std" in r else "")
            t.add_row(label, acc, f1)
        elif r and "r2" in r:
            t.add_row(label, f"R² {r['r2']:.3f}", f"MAE {r['mae']:.4g}")
    if "chance" in report:
        t.add_row("chance (majority class)", f"{report['chance']:.3f}", "")
    err.print(t)
    err.print(f"[dim]{report.get('protocol', '')}: {report.get('n', '?')} samples"
              + (f", {len(report['classes'])} classes" if report.get("classes") else "") + "[/dim]")
    for note in report.get("notes", []):
        err.print(f"[dim]note: {note}[/dim]")


def _print_label_report(rows: list[tuple[str, int, str]]) -> None:
    from rich.table import Table

    from ._console import err

    if not rows:
        return
    t = Table("labels", "count", "examples", box=None, pad_edge=False)
    for kind, n, what in rows:
        t.add_row(kind, str(n), what)
    err.print(t)


def fit(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories (recursive) or globs of one modality.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The tokenizer file to write (.safetensors).")],
    modality: Annotated[Modality, typer.Option("--modality", help="The modality whose tokenizer is trained "
                                          "(every input is read as it).")],
    labels: Annotated[str | None, typer.Option("--labels", help="CSV/TSV/JSONL with id (as `mtx embed` writes it) "
                                               "or path, and label; or 'folders' (the parent folder names the class).",
                                               show_default=False)] = None,
    target: Annotated[str | None, typer.Option("--target", help="Tables: this column is the label (and is left "
                                               "out of the tokens).", show_default=False)] = None,
    objective: Annotated[Objective | None, typer.Option("--objective", help="supervised (the default with labels) or "
                                                  "contrastive (two augmented views, InfoNCE; no labels needed).",
                                                  show_default=False)] = None,
    task: Annotated[Task, typer.Option("--task", help="classification or regression (numeric labels).")] = "classification",
    val: Annotated[float, typer.Option("--val", help="Share of the samples held out for validation (stratified, seeded).")] = 0.2,
    val_labels: Annotated[str | None, typer.Option("--val-labels", help="A labels file naming the validation "
                                                   "samples instead of --val.", show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Most epochs (early stopping may end sooner).")] = 30,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default: 3e-3 for seeded "
                                             "tokenizers, 3e-4 for CLIP-initialised ones).", show_default=False)] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay of linear and "
                                                "convolution weights.")] = 0.05,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=2, help="Encoder rows per step.")] = 32,
    warmup: Annotated[float, typer.Option("--warmup", help="Share of the steps spent warming up the learning rate.")] = 0.1,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Stop after this many epochs without a "
                                          "better validation metric (0 = never).")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Split, batch order, augmentations, head init.")] = 0,
    pool: Annotated[Pool | None, typer.Option("--pool", help="cls, mean or max (default: the modality's pooling "
                                             "for the tokenizer it starts from; recorded).", show_default=False)] = None,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute encoder activations "
                                                     "in the backward pass (less memory, ~30% slower).")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Contrastive: InfoNCE temperature.")] = 0.1,
    model: Annotated[Preset, typer.Option("--model", "-m", envvar="MTX_MODEL", help="Encoder preset.")] = "meta-b16",
    weights: Annotated[list[str] | None, typer.Option("--weights", "-w", help="Encoder weights (as embed), or "
                                                      "'seeded'.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", envvar="MTX_DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[Dtype, typer.Option("--dtype", envvar="MTX_DTYPE", help="auto (bf16 where embed uses it), "
                                       "float32, bfloat16, float16.")] = "auto",
    option: Annotated[list[str] | None, typer.Option("--option", "-O", help="Modality option MODALITY.FIELD=VALUE "
                                                     "(repeatable); recorded and used again by embed.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=0, help="Decoder processes (0 = in-process).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Fail a file whose decoder makes no progress for this long.")] = 600.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over: replace OUTPUT and drop its checkpoint.")] = False,
    json_: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no report.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Per-epoch lines instead of a progress bar.")] = False,
) -> None:
    """Train MODALITY's tokenizer (and a head) against the frozen encoder; write one tokenizer file.

    All of the tokenizer's parameters train; the encoder stays frozen but passes gradients through. Labels come from --labels or --target (supervised), or none are needed (--objective contrastive). Rerunning the same command resumes from the last epoch's checkpoint; Ctrl-C writes the best tokenizer so far. Use the result with `mtx embed --tokenizer MODALITY=OUTPUT` or `mtx predict`.
    """
    from ._console import err, out
    from .cli import _parse_options
    from .fit.train import FitOptions, summary_for_json
    from .fit.train import fit as run_fit

    if objective is None:
        objective = "supervised" if (labels or target) else "contrastive"
    opts = FitOptions(modality=modality, model=model, weights=weights, device=device, dtype=dtype, objective=objective,
                      task=task, labels=labels, val_labels=val_labels, target=target, val=val, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, batch_size=batch_size, warmup=warmup, patience=patience, seed=seed,
                      pool=pool, grad_checkpointing=grad_checkpointing, temperature=temperature, workers=workers,
                      timeout=timeout, options=_parse_options(option), overwrite=overwrite)
    prog = _FitProgress(not (quiet or json_ or no_progress), lines=not quiet)
    t0 = time.monotonic()
    shown = {"labels": False}

    def on_event(ev: dict[str, Any]) -> None:
        if ev["event"] == "labels" and not quiet:
            _print_label_report(ev["report"].rows())
            if ev.get("spilled"):
                err.print(f"[dim]{ev['spilled']} decoded samples kept in a cache file (MTX_FIT_CACHE_MB)[/dim]")
            shown["labels"] = True
        prog(ev)

    try:
        summary = run_fit(inputs, output, opts, progress=on_event)
    finally:
        prog.close()
    if json_:
        out.print_json(json.dumps(summary_for_json(summary), default=str))
        return
    if quiet:
        return
    if summary.get("already_done"):
        err.print(f"{output}: already fitted by this command (sha256 {summary['sha256'][:16]}); nothing to do "
                  "(--overwrite to train again)")
        _print_report(summary.get("report"), "validation")
        return
    best = summary["best"]
    err.print(f"[bold]{modality}[/bold] tokenizer -> {summary['output']} (sha256 {summary['sha256'][:16]}): "
              f"{summary['epochs']} epochs{' (stopped early)' if summary['stopped_early'] else ''}, best epoch "
              f"{best['epoch']}" + (f", validation {best['name']} {best['metric']:.4f}" if best.get("metric") is not None
                                    else "") + f" in {time.monotonic() - t0:.1f} s")
    _print_report(summary.get("report"), "validation split")
    err.print(f"[dim]use it: mtx embed ... --tokenizer {modality}={output}[/dim]")


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------


def predict(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories (recursive) or globs.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="A tokenizer file from `mtx fit` (supervised).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV or JSONL file (default: CSV on stdout).",
                                                show_default=False)] = None,
    format_: Annotated[PredictFormat | None, typer.Option("--format", "-f", help="csv or jsonl (default: from the output's "
                                                "suffix).", show_default=False)] = None,
    weights: Annotated[list[str] | None, typer.Option("--weights", "-w", help="The encoder weights it was trained "
                                                      "with (default: MTX_WEIGHTS / the cache; seeded when it was "
                                                      "trained on seeded weights).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", envvar="MTX_DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[Dtype, typer.Option("--dtype", envvar="MTX_DTYPE", help="auto, float32, bfloat16, float16.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Encoder rows per batch.")] = 32,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=0, help="Decoder processes (0 = in-process).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Label INPUTS with a fitted tokenizer's head: per sample the label and the class probabilities.

    CSV columns: id, path, label, then p_<class> for each class (regression: id, path, value). JSONL: one object per sample with id, path, label and probabilities. Bad files are reported on stderr and skipped (exit code 3).
    """
    from ._console import err
    from .predict import predict as run_predict

    fmt = format_ or (output.suffix.lower().lstrip(".") if output is not None else "csv")
    fmt = {"ndjson": "jsonl", "tsv": "csv"}.get(fmt, fmt)
    if fmt not in ("csv", "jsonl"):
        raise UsageError(f"--format {fmt!r}: choose csv or jsonl")
    stream = open(output, "w", newline="") if output is not None else sys.stdout  # noqa: SIM115
    try:
        res = run_predict(inputs, tokenizer, stream, fmt, weights=weights, device=device, dtype=dtype,
                          batch_size=batch_size, workers=workers)
    finally:
        if output is not None:
            stream.close()
    for f in res["failures"]:
        err.print(f"[yellow]failed[/yellow] {f['path']}: {f['stage']}: {f['message']}")
    if not quiet:
        err.print(f"{res['n_samples']} samples labelled" + (f" -> {output}" if output else "")
                  + (f", {len(res['failures'])} files failed" if res["failures"] else ""))
    raise typer.Exit(3 if res["failures"] else 0)


# ------------------------------------------------------------------------------------------
# probe
# ------------------------------------------------------------------------------------------


def probe(
    file: Annotated[Path, typer.Argument(help="An mtx HDF5 output.")],
    labels: Annotated[str, typer.Option("--labels", help="CSV/TSV/JSONL with id or path, and label; or 'folders'.")],
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 5,
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours of the k-NN vote (cosine).")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Fold assignment.")] = 0,
    modality: Annotated[Modality | None, typer.Option("--modality", help="Only this modality's rows.",
                                                 show_default=False)] = None,
    json_: JsonFlag = False,
) -> None:
    """How well FILE's vectors separate a labelling: cross-validated linear probe and k-NN accuracy and macro-F1, beside the chance level."""
    from ._console import out
    from .probe import probe_store

    res = probe_store(file, labels, folds=folds, k=k, seed=seed, modality=modality)
    if json_:
        out.print_json(json.dumps(res))
        return

    from .fit.labels import report_rows

    _print_label_report(report_rows(res["report"]))
    _print_report(res, f"{file}: {res['n']} labelled rows")

