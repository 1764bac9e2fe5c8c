"""The ``mtx`` command line: thin commands over the library, one error boundary.

Heavy modules (torch, timm, h5py, decoders) are imported inside commands, never at module level,
so ``mtx --help`` and shell completion stay fast (a test enforces it).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._choices import (
    Color,
    Dtype,
    Engine,
    Modality,
    Pool,
    Preset,
    StoreDtype,
    TextUnit,
    plain_choices,
)
from ._cli_fit import TokenizerOpt, fit_info_lines, with_tokenizers
from ._help import CliTyper, esc
from .errors import MtxError, UsageError, cli_frontend

app = CliTyper(
    name="mtx",
    help="Embed folders of files of twelve modalities with one frozen Meta-Transformer encoder.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help texts are escaped (mtx/_help.py): only their words show
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = CliTyper(help="Download and inspect encoder weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


# Option types shared by several commands.
ModelOpt = Annotated[Preset, typer.Option("--model", "-m", envvar="MTX_MODEL",
                                          help="Encoder preset (`mtx models` lists them).")]
WeightsOpt = Annotated[list[str] | None, typer.Option(
    "--weights", "-w", help="Weights file(s), or 'seeded' for an explicitly random (NOT pretrained) "
    "encoder. Default: MTX_WEIGHTS, then the Hugging Face cache. Repeat to combine a block file "
    "with a CLIP tower.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", envvar="MTX_DEVICE", help="auto, cpu, cuda or cuda:N.")]
ModalityOpt = Annotated[Modality | None, typer.Option("--modality", help="Force this modality for every input.")]
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="GLOB=MODALITY rule (repeatable; first match wins).")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", "-O", help="Modality option MODALITY.FIELD=VALUE (repeatable), e.g. video.frames=32.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
IncludeOpt = Annotated[list[str] | None, typer.Option(
    "--include", help="Only files matching GLOB (repeatable), matched against the path relative to "
    "the input folder, the name and the absolute path; * also matches /.")]
ExcludeOpt = Annotated[list[str] | None, typer.Option("--exclude", help="Leave out files matching GLOB "
                                                      "(repeatable; matched like --include).")]
HiddenOpt = Annotated[bool, typer.Option("--hidden", help="Also take hidden files and folders (names "
                                         "starting with a dot) inside input folders.")]
MaxMemOpt = Annotated[str | None, typer.Option(
    "--max-sample-memory", metavar="SIZE", help="Memory one sample may take while it is decoded, e.g. 512M, 2G, "
    "bytes or unlimited (default 256M, or MTX_MAX_SAMPLE_MEMORY); larger inputs are subsampled or refused.",
    show_default=False)]


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"mtx {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _global(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_show_version,
                                          help="Print the version and exit.")] = False,
    color: Annotated[Color, typer.Option("--color", envvar="MTX_COLOR", show_default=False, help=(
        "Colour: auto (only on a terminal; NO_COLOR turns it off, FORCE_COLOR does not reach a "
        "pipe), always or never. Default: auto."))] = "auto",
) -> None:
    """The options before the command: version and colour."""
    from ._console import configure

    configure(getattr(color, "value", color))
    ctx.with_resource(cli_frontend())  # library hints name flags (--overwrite) while a command runs


def _debug() -> bool:
    return os.environ.get("MTX_DEBUG", "") not in ("", "0")


def _parse_map(rules: list[str] | None) -> list[tuple[str, str]]:
    from .pipeline.options import check_rules

    return check_rules(rules)


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def _parse_options(opts: list[str] | None, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``-O MODALITY.FIELD=VALUE`` as overrides (values are checked by ``EmbedOptions.validate``)."""
    out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    for o in opts or []:
        key, sep, val = o.partition("=")
        mod, dot, fld = key.partition(".")
        if not sep or not dot or not mod.strip() or not fld.strip():
            raise UsageError(f"--option {o!r}: expected MODALITY.FIELD=VALUE, e.g. video.frames=32")
        out.setdefault(mod.strip(), {})[fld.strip()] = _parse_value(val)
    return out


def _banner(model, quiet: bool) -> None:
    if quiet:
        return
    import torch

    from ._console import err

    d = model.describe()
    init = "SEEDED (random, not pretrained)" if d["weights_source"] == "seeded" else esc(d["weights_source"])
    err.print(f"[dim]mtx: device={d['device']} dtype={d['dtype']} threads={torch.get_num_threads()} "
              f"model={model.spec.name} weights={init}[/dim]")


# ------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------


@app.command()
@plain_choices
def embed(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories (recursive), globs, or - for a list on stdin.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 output file.")],
    model: ModelOpt = "meta-b16",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    dtype: Annotated[Dtype, typer.Option("--dtype", envvar="MTX_DTYPE", help="Compute dtype; auto: bfloat16 on "
                                         "CUDA and CPUs with native bf16, else float32.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Encoder rows per batch; shorter "
                                            "rows (table rows, series, text) are added until the batch holds as many "
                                            "tokens as N images (N x 197 at B/16), up to 16 x N rows.")] = 32,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=0,
                                                help="Decoder processes; 0 = decode in the main process: no "
                                                "isolation (no --timeout, a decoder crash ends the run). Default: "
                                                "one per 8 files, up to half the cores (at most 8) on CPU, all but "
                                                "two with a GPU.")] = None,
    modality: ModalityOpt = None,
    map_: MapOpt = None,
    pool: Annotated[Pool | None, typer.Option("--pool", help="Pooling (default: per modality).")] = None,
    store_dtype: Annotated[StoreDtype, typer.Option("--store-dtype", help="Dtype of the stored vectors.")] = "float32",
    save_tokens: Annotated[bool, typer.Option("--save-tokens", help="Also store the encoder-input tokens.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an output made with other settings "
                                            "(the old file stays until the new one is complete).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List inputs with their modality and reason; embed nothing.")] = False,
    option: OptionOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Video: frames per clip.")] = None,
    clips: Annotated[int | None, typer.Option("--clips", help="Video: clips per video (averaged).")] = None,
    window: Annotated[float | None, typer.Option("--window", help="Time series (steps) / IMU (seconds): one sample per window of this length (a fractional value applies to IMU only).")] = None,
    stride: Annotated[float | None, typer.Option("--stride", help="Time series (steps) / IMU (seconds): window stride (default: the window; a fractional value applies to IMU only).")] = None,
    text_unit: Annotated[TextUnit | None, typer.Option("--text-unit", help="Text: one sample per file or per line.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Fail a file whose decoder makes no progress for this many seconds.")] = 600.0,
    max_sample_memory: MaxMemOpt = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the encoder (first batches pay the "
                                           "compile time; for long runs).")] = False,
    commit_every: Annotated[int, typer.Option("--commit-every", min=1, help="Rows per committed part file "
                                              "(a crash loses at most one part; also every 30 s).")] = 1024,
    shard: Annotated[str | None, typer.Option("--shard", help="Embed only shard I/N (0-based) of the planned "
                                              "inputs; default from SLURM_ARRAY_TASK_ID/COUNT. Then `mtx merge`.")] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="Comma-separated devices, one process and "
                                                "model copy each, e.g. cuda:0,cuda:1 (cpu,cpu for tests).")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, help="Use the first N CUDA devices (= --devices cuda:0,...).")] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="Where shards run; ray needs pip install 'mtx[ray]'.")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: start a local Ray).")] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="Ray: GPUs per actor.")] = 0.0,
    json_: JsonOpt = False,
    json_lines: Annotated[bool, typer.Option("--json-lines", help="One JSON line per input file on stdout.")] = False,
    null: Annotated[bool, typer.Option("-0", help="The stdin list is NUL-separated.")] = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    hidden: HiddenOpt = False,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Leave out files no modality claims: "
                                               "counted and listed at the end, not failures.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No banner, no progress.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks and per-file lines.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    tokenizer: TokenizerOpt = None,
) -> None:
    """Embed INPUTS into one HDF5 file (resumes: rerunning skips finished inputs).

    Folders are walked recursively; hidden files and folders (names starting with a dot) are
    skipped and counted unless --hidden; --include/--exclude choose files by glob. The output
    and its side files (OUT.parts/, OUT.lock, OUT.tmp) are never inputs.
    """
    if verbose:
        os.environ["MTX_DEBUG"] = "1"
    # Usage errors first, before torch loads (each answers at once, exit 2).
    _check_output_name(output)
    _check_arguments(inputs)
    from .scale import parse_shard

    shard_t = parse_shard(shard)  # --shard or the SLURM array variables, range-checked at once
    _set_sample_memory(max_sample_memory)
    shortcuts = _shortcuts(frames=frames, clips=clips, window=window, stride=stride, text_unit=text_unit)
    opts = _options(model=model, weights=weights, device=device, dtype=dtype, batch_size=batch_size,
                    workers=workers, modality=modality, rules=_parse_map(map_), pool=pool, store_dtype=store_dtype,
                    save_tokens=save_tokens, overwrite=overwrite, options=_parse_options(option, shortcuts),
                    timeout=timeout, part_rows=commit_every, compile=compile_, skip_unknown=skip_unknown,
                    tokenizers=tokenizer or [])
    _check_output_dir(output)
    opts.validate()  # -O values against their fields (imports the modalities)
    from .pipeline import Filters, discover

    found = discover(inputs, null=null, filters=Filters(tuple(include or ()), tuple(exclude or ()), hidden, output))
    _check_found(found)
    items, problems = found
    if dry_run:
        from .dryrun import dry_run as plan_run

        raise typer.Exit(plan_run(items, problems, output, opts, json_=json_, json_lines=json_lines,
                                  left={"n_hidden": found.hidden, "n_excluded": found.excluded}))
    from ._console import Progress, err
    from .pipeline import embed_inputs

    prog = Progress(not (quiet or no_progress or json_ or json_lines))

    def on_model(m) -> None:
        _banner(m, quiet or json_)
        prog.__enter__()

    try:
        summary = embed_inputs(items, output, opts, problems=problems, engine=engine, shard=shard_t, devices=devices,
                               gpus=gpus, address=address, gpus_per_worker=gpus_per_worker,
                               progress=_file_events(prog, json_lines, quiet, verbose), on_model=on_model)
    finally:
        prog.__exit__(None, None, None)
    summary.update(n_hidden=found.hidden, n_excluded=found.excluded)
    _print_summary(summary, json_, quiet)
    if "shard" in summary and not quiet and not json_:
        i, n = summary["shard"]
        err.print(f"shard {i}/{n} committed; when every shard is done: mtx merge {esc(output)}")
    raise typer.Exit(EXIT_PARTIAL if summary["n_failed"] else EXIT_OK)


def _check_arguments(paths: list[str]) -> None:
    """A path argument that does not exist is a usage error, before any work (a glob that
    matches nothing is reported by discovery instead)."""
    from ._files import check_argument

    missing = [p for p in paths if p != "-" and not any(c in p for c in "*?[") and check_argument(p)]
    if missing:
        raise UsageError("; ".join(f"{p}: no such file or directory" for p in missing)
                         + "; check the path" + ("s" if len(missing) > 1 else ""))


def _check_found(found) -> None:
    """Nothing to embed at all is a usage error that says what was left out and why."""
    if found.missing:
        _check_arguments(found.missing)
    if found.items or found.problems:
        return
    from .pipeline.inputs import left_out_parts

    left = left_out_parts(found.hidden, found.excluded)
    raise UsageError("no input files found" + (f": {', '.join(left)} left out" if left else ""))


def _check_output_name(output: Path) -> None:
    """``embed`` writes HDF5 only: an output named for another format (out.parquet, out.npy,
    out.csv) is refused before any work, naming the HDF5 name and the export that makes the format.
    Refused rather than warned: the run would otherwise write hours of HDF5 under a name that
    promises Parquet, and every later tool (pandas, np.load) would fail on it."""
    from .export import HDF5_SUFFIXES, infer_format

    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give the output file, e.g. {output / 'embeddings.h5'}")
    suffix = output.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return
    if str(output) == "-":
        raise UsageError("--output -: mtx embed writes HDF5 files, not streams; pass -o OUT.h5, then "
                         "`mtx export OUT.h5 -o -` streams it")
    h5 = output.with_suffix(".h5") if suffix else output.with_name(output.name + ".h5")
    fmt = infer_format(output)
    then = f"; then `mtx export {h5} -o {output}` writes {fmt}" if fmt else ""
    raise UsageError(f"--output {output}: mtx embed writes HDF5 (.h5); name it {h5}{then}")


def _shortcuts(**values: Any) -> dict[str, dict[str, Any]]:
    """The per-modality options that ``--frames``, ``--window``... stand for (a time series
    window counts whole steps: a fractional ``--window``/``--stride`` sets the IMU's only)."""
    out: dict[str, dict[str, Any]] = {}
    for mod, fld, name in (("video", "frames", "frames"), ("video", "clips", "clips"),
                           ("time_series", "window", "window"), ("time_series", "stride", "stride"),
                           ("imu", "window", "window"), ("imu", "stride", "stride"), ("text", "unit", "text_unit")):
        v = values[name]
        if v is None or (mod == "time_series" and isinstance(v, float) and v > 0 and not v.is_integer()):
            continue
        out.setdefault(mod, {})[fld] = v
    return out


def _options(**kw: Any):
    """:class:`EmbedOptions` from the command line: every value checked (exit 2), nothing heavy
    imported; a ``--weights`` path must exist."""
    from .pipeline.options import EmbedOptions
    from .weights import weight_paths

    opts = EmbedOptions(**kw)
    weight_paths(opts.weights)
    return opts


def _set_sample_memory(value: str | None) -> None:
    """``--max-sample-memory`` (or a set MTX_MAX_SAMPLE_MEMORY) checked now; the decoder
    processes inherit it through the environment."""
    from .modalities._budget import max_sample_memory, set_max_sample_memory

    if value is not None:
        set_max_sample_memory(value)
    else:
        max_sample_memory()  # a nonsense MTX_MAX_SAMPLE_MEMORY is refused here, not in every decoder


def _check_output_dir(output: Path) -> None:
    parent = output.expanduser().absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{output}: directory {parent} does not exist; create it first or choose another output")


def _file_events(prog, json_lines: bool, quiet: bool, verbose: bool):
    """The progress callback of ``mtx embed``: the bar, NDJSON lines, failure lines."""
    from ._console import err

    def on_event(ev: dict[str, Any]) -> None:
        prog.update(ev)
        if ev.get("event") != "file":
            return
        if json_lines:
            sys.stdout.write(json.dumps({k: ev[k] for k in ("id", "path", "modality", "status", "n_samples",
                                                             "stage", "message")}) + "\n")
            sys.stdout.flush()
        if ev["status"] == "failed" and not quiet:
            err.print(f"[yellow]failed[/yellow] {esc(ev['path'])}: {ev['stage']}: {esc(ev['message'])}")
        elif verbose and ev["status"] == "ok":
            err.print(f"[dim]ok {esc(ev['id'])} ({ev['modality']}, {ev['n_samples']} sample(s))[/dim]")

    return on_event


def _print_summary(summary: dict[str, Any], json_: bool, quiet: bool) -> None:
    from ._console import err, out

    if json_:
        keys = ("output", "n_inputs", "n_embedded", "n_skipped", "n_failed", "n_samples", "by_modality",
                "elapsed_s", "samples_per_s", "device", "dtype", "model", "weights")
        extra = {k: summary.get(k, 0) for k in ("n_unknown", "n_hidden", "n_excluded")}
        out.print_json(json.dumps({**{k: summary[k] for k in keys}, **extra, "unknown": summary.get("unknown", [])}))
    elif not quiet:
        mods = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_modality"].items())) or "nothing new"
        unknown = summary.get("unknown") or []
        if unknown:
            err.print(f"{len(unknown)} file(s) no modality claims, left out (--skip-unknown):")
            for p in unknown:
                err.print(f"  {p}", markup=False, highlight=False)
        from .pipeline.inputs import left_out

        left = left_out(summary)
        err.print(f"[bold]{summary['n_embedded']}[/bold] embedded ({mods}), {summary['n_skipped']} already done, "
                  f"{summary['n_failed']} failed; {summary['n_samples']} samples in {summary['elapsed_s']:.1f} s "
                  f"({summary['samples_per_s']:.1f}/s) -> {esc(summary['output'])}" + (f"; {esc(left)}" if left else ""))


# ------------------------------------------------------------------------------------------
# tokenize
# ------------------------------------------------------------------------------------------


@app.command()
@plain_choices
def tokenize(
    files: Annotated[list[Path], typer.Argument(help="Files to inspect.")],
    model: ModelOpt = "meta-b16",
    weights: WeightsOpt = None,
    modality: ModalityOpt = None,
    map_: MapOpt = None,
    option: OptionOpt = None,
    device: DeviceOpt = "cpu",
    save: Annotated[Path | None, typer.Option("--save", help="Write the encoder-input tokens [N, D] "
                                              "(float32) of the first sample to this .npy file.")] = None,
    max_sample_memory: MaxMemOpt = None,
    json_: JsonOpt = False,
    tokenizer: TokenizerOpt = None,
) -> None:
    """Show what the encoder will receive for each FILE: modality and why, samples, tokens."""
    _check_arguments([str(f) for f in files])
    _set_sample_memory(max_sample_memory)
    opts = _options(model=model, weights=weights, device=device, modality=modality, rules=_parse_map(map_),
                    options=_parse_options(option))
    if save is not None:
        _check_output_dir(save)
    opts.validate()
    from ._console import emit_json, err, wants_json
    from .api import inspect_file
    from .encoder import load_model

    json_ = wants_json(json_)
    weights, options = with_tokenizers(tokenizer, weights, opts.options)
    m = load_model(model, weights, device, "float32")
    _banner(m, json_)
    reports = []
    failed = 0
    for i, f in enumerate(files):
        try:
            rep, first_tokens = inspect_file(m, f, modality=modality, rules=opts.rules, options=options)
        except MtxError as e:
            failed += 1
            reports.append({"path": str(f), "error": e.message})
            err.print(f"[red]{esc(e.message)}[/red]")  # diagnostics on stderr, also when JSON goes to stdout
            continue
        if save is not None and i == 0:
            import numpy as np

            np.save(save, first_tokens)
            rep["saved"] = str(save)
        reports.append(rep)
        if not json_:
            _print_tokenize(rep)
    if json_:  # one shape for one file and many: a list of reports
        emit_json(reports)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


def _print_tokenize(rep: dict[str, Any]) -> None:
    from rich.table import Table

    from ._console import out

    out.print(f"[bold]{esc(rep['path'])}[/bold]")
    out.print(f"  modality   {rep['modality']}  [dim]({esc(rep['reason'])})[/dim]")
    out.print(f"  tokenizer  {esc(rep['tokenizer']['tokenizer'])}  init={rep['tokenizer']['init']}"
              + (f" seed={rep['tokenizer']['seed']}" if rep["tokenizer"]["init"] == "seeded" else "")
              + f"  pool={rep['pool']}")
    if rep["tokenizer"].get("file_path"):
        for i, line in enumerate(fit_info_lines(rep["tokenizer"])):
            out.print(f"  {'fitted' if i == 0 else '':<10} {line}", highlight=False)
    out.print(f"  samples    {rep['n_samples']}" + (" (showing the first 5)" if rep["n_samples"] > 5 else ""))
    t = Table(show_edge=False, box=None, pad_edge=False)
    for c in ("sample", "segments", "tokens [N, D]", "padding", "facts"):
        t.add_column(c, overflow="fold")
    for s in rep["samples"][:5]:
        facts = ", ".join(f"{k}={v}" for k, v in s["meta"].items())
        t.add_row(esc(s["id"]), str(s["segments"]), esc(f"[{s['tokens']}, {rep['dim']}]"), str(s["padding"]),
                  esc(facts))
    out.print(t)
    if rep.get("saved"):
        out.print(f"  saved      {esc(rep['saved'])} {rep['saved_shape']}")


# ------------------------------------------------------------------------------------------
# info, modalities, models, weights
# ------------------------------------------------------------------------------------------


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="An mtx HDF5 output (consolidated or merged).")],
    failures: Annotated[bool, typer.Option("--failures", help="List every failure in the tables (default: "
                                           "the first 5; JSON always lists every one).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="List at most N failures (tables and JSON).",
                                              show_default=False)] = None,
    json_: JsonOpt = False,
) -> None:
    """Summarise an embeddings file: rows per modality, model, weights, tokenizers, failures.

    Tables on a terminal; JSON with --json or when stdout is not a terminal.
    """
    from ._cli_data import show_info

    show_info(file, failures, json_, limit)


@app.command()
def modalities(json_: JsonOpt = False) -> None:
    """List the registered modalities, their file types, tokens and tokenizer init."""
    from ._console import emit_json, out, wants_json
    from .modalities import list_modalities

    rows = [{"name": m.name, "extensions": list(m.extensions), "summary": m.summary, "tokens": m.tokens,
             "init": "clip or seeded" if m.clip_init else "seeded"} for m in list_modalities()]
    if wants_json(json_):
        emit_json(rows)
        return
    from rich.table import Table

    t = Table("modality", "files", "tokens (B/16)", "init", box=None)
    for r in rows:
        t.add_row(r["name"], esc(r["summary"] or " ".join(r["extensions"])), esc(r["tokens"]), r["init"])
    out.print(t)


@app.command()
def models(json_: JsonOpt = False) -> None:
    """List encoder presets, their geometry, weight sources and whether they are cached."""
    from ._console import emit_json, out, wants_json
    from .weights import PRESETS, is_cached

    rows = []
    for spec in PRESETS.values():
        rows.append({"name": spec.name, "description": spec.description, "geometry": spec.geometry(),
                     "sources": [{"repo": s.repo, "file": s.filename, "sha256": s.sha256, "role": s.role}
                                 for s in spec.sources],
                     "cached": is_cached(spec)})
    if wants_json(json_):
        emit_json(rows)
        return
    from rich.table import Table

    t = Table("preset", "blocks x dim", "patch", "weights", "cached", box=None)
    for r in rows:
        g = r["geometry"]
        cached = ", ".join("yes" if v else "no" for v in r["cached"].values()) or "-"
        t.add_row(r["name"], f"{g['depth']} x {g['dim']}", str(g["patch"]),
                  esc("\n".join(f"{s['repo']}/{s['file']}" for s in r["sources"]) or "(none: seeded only)"), cached)
    out.print(t)


@app.command()
def merge(
    output: Annotated[Path, typer.Argument(help="The output every shard wrote to.")],
    copy: Annotated[bool, typer.Option("--copy", help="Write one self-contained file (default: an HDF5 "
                                       "virtual dataset over the verified parts).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Verify every shard's parts and build OUT (idempotent: re-merging changes nothing)."""
    from ._console import emit_json, err
    from .scale import merge as do_merge

    r = do_merge(output, copy=copy)
    if json_:
        emit_json(r)
    elif r.get("merged"):
        err.print(f"merged {r['parts']} part(s) -> {esc(r['output'])} ({r['mode']}): {r['n_rows']} rows, "
                  f"{r['n_failures']} failures")
    else:
        err.print(f"{esc(r['output'])}: {esc(r['reason'])}")


@app.command()
def status(
    output: Annotated[Path, typer.Argument(help="An output being written (sharded or not).")],
    json_: JsonOpt = False,
) -> None:
    """Show done / running / pending shards, committed rows and throughput."""
    from ._console import emit_json, out, wants_json
    from .scale import status as get_status

    s = get_status(output)
    if wants_json(json_):
        emit_json(s)
        return
    if not s["planned"]:
        from .scale import describe_run_state

        if s["run"]:
            out.print(describe_run_state(s["output"], s["run"]), markup=False, highlight=False)
        if s["final_rows"] is not None:
            out.print(f"{s['output']}: complete file (not sharded), {s['final_rows']:,} rows", markup=False,
                      highlight=False)
        return
    out.print(f"[bold]{esc(s['output'])}[/bold]: {s['done']}/{s['n_shards']} shards done, {s['parts']} parts, "
              f"{s['rows_committed']:,} rows committed"
              + (f", {s['rows_per_s']:.1f} rows/s" if s["rows_per_s"] else "")
              + (f"; final file has {s['final_rows']:,} rows" if s["final_rows"] is not None else ""))
    for sh in s["shards"]:
        out.print(f"  shard {sh['shard']:>4}  {sh['state']:<8} inputs {sh['inputs']:>8}  rows {sh['rows_committed']:>8}")


@app.command()
@plain_choices
def bench(
    modality: Annotated[Modality, typer.Option("--modality", help="Modality to measure.")] = "image",
    model: ModelOpt = "meta-b16",
    device: DeviceOpt = "auto",
    dtype: Annotated[Dtype, typer.Option("--dtype", envvar="MTX_DTYPE", help="Compute dtype.")] = "auto",
    n: Annotated[int, typer.Option("--n", min=2, help="Synthetic inputs to generate.")] = 32,
    json_: JsonOpt = False,
) -> None:
    """Measure this machine on synthetic inputs (seeded weights) and suggest --batch-size/--workers."""
    from .settings import check_device

    check_device(device)
    from ._console import emit_json, err, out, wants_json
    from .bench import run_bench

    json_ = wants_json(json_)
    if not json_:
        err.print(f"[dim]mtx bench: {n} synthetic {modality} inputs, {model}, {esc(dtype)} (seeded weights)...[/dim]")
    r = run_bench(modality, model, device, dtype, n)
    if json_:
        emit_json(r)
        return
    for bs, rate in r["encoder"].items():
        out.print(f"  encoder, batch {bs:>3}: {rate:8.2f} samples/s")
    out.print(f"  decoding (one core): {r['decode_samples_per_s_one_core']:8.2f} samples/s")
    out.print(f"  end to end (mtx embed): {r['end_to_end_samples_per_s']:8.2f} samples/s "
              f"({100 * r['efficiency']:.0f}% of the encoder)")
    out.print(f"[bold]suggested:[/bold] --batch-size {r['best_batch_size']} --workers {r['suggested_workers']}"
              + ("  (this CPU has native bf16: --dtype auto uses it)" if dtype == "float32" and r["device"] == "cpu"
                 and _fast_bf16() else ""))


def _fast_bf16() -> bool:
    from .encoder import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


@weights_app.command("fetch")
@plain_choices
def weights_fetch(name: Annotated[Preset, typer.Argument(help="Preset to download.")] = "meta-b16") -> None:
    """Download a preset's weights into the Hugging Face cache (verifying pinned sha256)."""
    from ._console import err
    from .weights import fetch, get_preset

    paths = fetch(get_preset(name))
    for p in paths:
        err.print(f"cached {esc(p)}")


from ._cli_data import export, similar  # noqa: E402 - commands that read an output
from ._cli_fit import fit, predict, probe  # noqa: E402 - fitted tokenizers

app.command()(plain_choices(export))
app.command()(plain_choices(similar))
app.command()(plain_choices(fit))
app.command()(plain_choices(predict))
app.command()(plain_choices(probe))


# ------------------------------------------------------------------------------------------
# Entry point: the one error boundary
# ------------------------------------------------------------------------------------------


def _tolerant_stdio() -> None:
    """File names that are not UTF-8 reach Python as surrogate escapes; print them as their own
    bytes (as ls does) instead of ending with UnicodeEncodeError on a strict UTF-8 stdout."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="surrogateescape")
            except Exception:  # noqa: BLE001 - a stream that cannot be reconfigured stays as it is
                pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map MtxError to one stderr line and an exit code (tracebacks with MTX_DEBUG=1)."""
    _tolerant_stdio()
    try:
        rc = app(args=argv, prog_name="mtx", standalone_mode=False)
    except MtxError as e:
        if _debug():
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"mtx: error: {e.message}\n")
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("mtx: interrupted\n")
        return 130
    except Exception as e:  # click usage errors and anything unexpected
        name = type(e).__name__
        if name in ("UsageError", "BadParameter", "NoSuchOption", "MissingParameter", "BadOptionUsage",
                    "BadArgumentUsage", "NoArgsIsHelpError"):
            show = getattr(e, "show", None)
            if callable(show):
                show()
            else:
                sys.stderr.write(f"mtx: error: {e}\n")
            return EXIT_USAGE
        if name == "Abort":
            return 130
        if _debug():
            raise
        sys.stderr.write(f"mtx: internal error: {name}: {e} (rerun with MTX_DEBUG=1 for a traceback)\n")
        return EXIT_FATAL
    return rc if isinstance(rc, int) else EXIT_OK


def run() -> None:
    sys.exit(main())
