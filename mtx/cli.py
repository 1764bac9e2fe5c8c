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

from ._choices import Dtype, Engine, Modality, Pool, Preset, StoreDtype, TextUnit, plain_choices, values
from .errors import MtxError, UsageError

app = typer.Typer(
    name="mtx",
    help="Embed folders of files of twelve modalities with one frozen Meta-Transformer encoder.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
weights_app = typer.Typer(help="Download and inspect encoder weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


# Choice options are Enums declared once in mtx/_choices.py: Typer checks, lists and completes them.
# Kept for the checks still written in the body of `embed` (redundant now; they go with its split).
DTYPE_CHOICES = values(Dtype)
POOL_CHOICES = values(Pool)

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


def _debug() -> bool:
    return os.environ.get("MTX_DEBUG", "") not in ("", "0")


def _parse_map(rules: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for r in rules or []:
        if "=" not in r:
            raise UsageError(f"--map {r!r}: expected GLOB=MODALITY")
        g, m = r.rsplit("=", 1)
        out.append((g, m.strip()))
    return out


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def _parse_options(opts: list[str] | None, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    for o in opts or []:
        key, sep, val = o.partition("=")
        mod, dot, fld = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--option {o!r}: expected MODALITY.FIELD=VALUE")
        out.setdefault(mod.strip(), {})[fld.strip()] = _parse_value(val)
    from .modalities import get_modality

    for mod, fields in out.items():
        cfg_cls = get_modality(mod).Config
        known = set(getattr(cfg_cls, "__dataclass_fields__", {}))
        bad = set(fields) - known
        if bad:
            raise UsageError(f"unknown option(s) {', '.join(sorted(bad))} for {mod}; "
                             f"known: {', '.join(sorted(known)) or 'none'}")
    return out


def _check_choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    """A hand check of a choice; Typer checks every choice option now (see mtx/_choices.py)."""
    if value is not None and value not in choices:
        raise UsageError(f"{name} {value!r}: choose one of {', '.join(choices)}")


def _banner(model, quiet: bool) -> None:
    if quiet:
        return
    import torch

    from ._console import err

    d = model.describe()
    init = "SEEDED (random, not pretrained)" if d["weights_source"] == "seeded" else d["weights_source"]
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
    window: Annotated[float | None, typer.Option("--window", help="Time series (steps) / IMU (seconds): one sample per window of this length.")] = None,
    stride: Annotated[float | None, typer.Option("--stride", help="Time series (steps) / IMU (seconds): window stride (default: the window).")] = None,
    text_unit: Annotated[TextUnit | None, typer.Option("--text-unit", help="Text: one sample per file or per line.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Fail a file whose decoder makes no progress for this many seconds.")] = 600.0,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the encoder (first batches pay the "
                                           "compile time; for long runs).")] = False,
    commit_every: Annotated[int, typer.Option("--commit-every", min=1, help="Rows per committed part file "
                                              "(a crash loses at most one part; also every 30 s).")] = 1024,
    shard: Annotated[str | None, typer.Option("--shard", help="Embed only shard I/N (0-based) of the planned "
                                              "inputs; default from SLURM_ARRAY_TASK_ID/COUNT. Then `mtx merge`.")] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="Comma-separated devices, one process and "
                                                "model copy each, e.g. cuda:0,cuda:1 (cpu,cpu for tests).")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, help="Use the first N CUDA devices (= --devices cuda:0,...).")] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="Where shards run (ray needs the ray extra).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: start a local Ray).")] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="Ray: GPUs per actor.")] = 0.0,
    json_: JsonOpt = False,
    json_lines: Annotated[bool, typer.Option("--json-lines", help="One JSON line per input file on stdout.")] = False,
    null: Annotated[bool, typer.Option("-0", help="The stdin list is NUL-separated.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No banner, no progress.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks and per-file lines.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Embed INPUTS into one HDF5 file (resumes: rerunning skips finished inputs)."""
    if verbose:
        os.environ["MTX_DEBUG"] = "1"
    _check_choice("--dtype", dtype, DTYPE_CHOICES)
    _check_choice("--pool", pool, POOL_CHOICES)
    _check_choice("--store-dtype", store_dtype, ("float32", "float16"))
    _check_choice("--text-unit", text_unit, ("file", "line"))
    from .pipeline import EmbedOptions, discover

    shortcuts = _shortcuts(frames=frames, clips=clips, window=window, stride=stride, text_unit=text_unit)
    opts = EmbedOptions(model=model, weights=weights, device=device, dtype=dtype, batch_size=batch_size,
                        workers=workers, modality=modality, rules=_parse_map(map_), pool=pool,
                        store_dtype=store_dtype, save_tokens=save_tokens, overwrite=overwrite,
                        options=_parse_options(option, shortcuts), timeout=timeout, part_rows=commit_every,
                        compile=compile_)
    if modality:
        from .modalities import get_modality

        get_modality(modality)
    items, problems = discover(inputs, null=null)
    if dry_run:
        raise typer.Exit(_dry_run(items, problems, opts, json_))
    _check_choice("--engine", engine, ("local", "ray"))
    from ._console import Progress, err
    from .pipeline import embed_inputs

    prog = Progress(not (quiet or no_progress or json_ or json_lines))

    def on_model(m) -> None:
        _banner(m, quiet or json_)
        prog.__enter__()

    try:
        summary = embed_inputs(items, output, opts, problems=problems, engine=engine, shard=shard, devices=devices,
                               gpus=gpus, address=address, gpus_per_worker=gpus_per_worker,
                               progress=_file_events(prog, json_lines, quiet, verbose), on_model=on_model)
    finally:
        prog.__exit__(None, None, None)
    _print_summary(summary, json_, quiet)
    if "shard" in summary and not quiet and not json_:
        i, n = summary["shard"]
        err.print(f"shard {i}/{n} committed; when every shard is done: mtx merge {output}")
    raise typer.Exit(EXIT_PARTIAL if summary["n_failed"] else EXIT_OK)


def _shortcuts(**values: Any) -> dict[str, dict[str, Any]]:
    """The per-modality options that ``--frames``, ``--window``... stand for."""
    out: dict[str, dict[str, Any]] = {}
    for mod, fld, name in (("video", "frames", "frames"), ("video", "clips", "clips"),
                           ("time_series", "window", "window"), ("time_series", "stride", "stride"),
                           ("imu", "window", "window"), ("imu", "stride", "stride"), ("text", "unit", "text_unit")):
        if values[name] is not None:
            out.setdefault(mod, {})[fld] = values[name]
    return out


def _dry_run(items, problems: list[tuple[str, str]], opts, json_: bool) -> int:
    """``--dry-run``: each input's modality and the reason; the exit code."""
    from ._console import err, out
    from .sniff import sniff

    rows = []
    for it in items:
        try:
            d = sniff(it.path, modality=opts.modality, rules=opts.rules)
            rows.append({"id": it.id, "path": str(it.path), "modality": d.modality, "reason": d.reason})
        except MtxError as e:
            rows.append({"id": it.id, "path": str(it.path), "modality": None, "reason": e.message})
    if json_:
        out.print_json(json.dumps({"inputs": rows, "problems": problems}))
    else:
        for r in rows:
            out.print(f"{r['modality'] or '-':<14} {r['id']}  [dim]({r['reason']})[/dim]")
        for p, m in problems:
            err.print(f"[red]{p}: {m}[/red]")
    return EXIT_OK if all(r["modality"] for r in rows) and not problems else EXIT_PARTIAL


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
            err.print(f"[yellow]failed[/yellow] {ev['path']}: {ev['stage']}: {ev['message']}")
        elif verbose:
            err.print(f"[dim]ok {ev['id']} ({ev['modality']}, {ev['n_samples']} sample(s))[/dim]")

    return on_event


def _print_summary(summary: dict[str, Any], json_: bool, quiet: bool) -> None:
    from ._console import err, out

    if json_:
        keys = ("output", "n_inputs", "n_embedded", "n_skipped", "n_failed", "n_samples", "by_modality",
                "elapsed_s", "samples_per_s", "device", "dtype", "model", "weights")
        out.print_json(json.dumps({k: summary[k] for k in keys}))
    elif not quiet:
        mods = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_modality"].items())) or "nothing new"
        err.print(f"[bold]{summary['n_embedded']}[/bold] embedded ({mods}), {summary['n_skipped']} already done, "
                  f"{summary['n_failed']} failed; {summary['n_samples']} samples in {summary['elapsed_s']:.1f} s "
                  f"({summary['samples_per_s']:.1f}/s) -> {summary['output']}")


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
    json_: JsonOpt = False,
) -> None:
    """Show what the encoder will receive for each FILE: modality and why, samples, tokens."""
    from ._console import err, out
    from .api import inspect_file
    from .encoder import load_model

    m = load_model(model, weights, device, "float32")
    _banner(m, json_)
    reports = []
    failed = 0
    for i, f in enumerate(files):
        try:
            rep, first_tokens = inspect_file(m, f, modality=modality, rules=_parse_map(map_),
                                             options=_parse_options(option))
        except MtxError as e:
            failed += 1
            reports.append({"path": str(f), "error": e.message})
            if not json_:
                err.print(f"[red]{e.message}[/red]")
            continue
        if save is not None and i == 0:
            import numpy as np

            np.save(save, first_tokens)
            rep["saved"] = str(save)
        reports.append(rep)
        if not json_:
            _print_tokenize(rep)
    if json_:
        out.print_json(json.dumps(reports if len(reports) > 1 else reports[0], default=str))
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


def _print_tokenize(rep: dict[str, Any]) -> None:
    from rich.table import Table

    from ._console import out

    out.print(f"[bold]{rep['path']}[/bold]")
    out.print(f"  modality   {rep['modality']}  [dim]({rep['reason']})[/dim]")
    out.print(f"  tokenizer  {rep['tokenizer']['tokenizer']}  init={rep['tokenizer']['init']}"
              + (f" seed={rep['tokenizer']['seed']}" if rep["tokenizer"]["init"] == "seeded" else "")
              + f"  pool={rep['pool']}")
    out.print(f"  samples    {rep['n_samples']}" + (" (showing the first 5)" if rep["n_samples"] > 5 else ""))
    t = Table(show_edge=False, box=None, pad_edge=False)
    for c in ("sample", "segments", "tokens [N, D]", "padding", "facts"):
        t.add_column(c, overflow="fold")
    for s in rep["samples"][:5]:
        facts = ", ".join(f"{k}={v}" for k, v in s["meta"].items())
        t.add_row(s["id"], str(s["segments"]), f"[{s['tokens']}, {rep['dim']}]", str(s["padding"]), facts)
    out.print(t)
    if rep.get("saved"):
        out.print(f"  saved      {rep['saved']} {rep['saved_shape']}")


# ------------------------------------------------------------------------------------------
# info, modalities, models, weights
# ------------------------------------------------------------------------------------------


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="An mtx HDF5 output (consolidated or merged).")],
    failures: Annotated[bool, typer.Option("--failures", help="List every failure (default: the first 5).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Summarise an embeddings file: rows per modality, model, weights, tokenizers, failures.

    Rich tables on a terminal; JSON with --json or when stdout is not a terminal.
    """
    from ._cli_data import show_info

    show_info(file, failures, json_)


@app.command()
def modalities(json_: JsonOpt = False) -> None:
    """List the registered modalities, their file types, tokens and tokenizer init."""
    from ._console import out
    from .modalities import list_modalities

    rows = [{"name": m.name, "extensions": list(m.extensions), "summary": m.summary, "tokens": m.tokens,
             "init": "clip or seeded" if m.clip_init else "seeded"} for m in list_modalities()]
    if json_:
        out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    t = Table("modality", "files", "tokens (B/16)", "init", box=None)
    for r in rows:
        t.add_row(r["name"], r["summary"] or " ".join(r["extensions"]), r["tokens"], r["init"])
    out.print(t)


@app.command()
def models(json_: JsonOpt = False) -> None:
    """List encoder presets, their geometry, weight sources and whether they are cached."""
    from ._console import out
    from .weights import PRESETS, is_cached

    rows = []
    for spec in PRESETS.values():
        rows.append({"name": spec.name, "description": spec.description, "geometry": spec.geometry(),
                     "sources": [{"repo": s.repo, "file": s.filename, "sha256": s.sha256, "role": s.role}
                                 for s in spec.sources],
                     "cached": is_cached(spec)})
    if json_:
        out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    t = Table("preset", "blocks x dim", "patch", "weights", "cached", box=None)
    for r in rows:
        g = r["geometry"]
        cached = ", ".join("yes" if v else "no" for v in r["cached"].values()) or "-"
        t.add_row(r["name"], f"{g['depth']} x {g['dim']}", str(g["patch"]),
                  "\n".join(f"{s['repo']}/{s['file']}" for s in r["sources"]) or "(none: seeded only)", cached)
    out.print(t)


@app.command()
def merge(
    output: Annotated[Path, typer.Argument(help="The output every shard wrote to.")],
    copy: Annotated[bool, typer.Option("--copy", help="Write one self-contained file (default: an HDF5 "
                                       "virtual dataset over the verified parts).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Verify every shard's parts and build OUT (idempotent: re-merging changes nothing)."""
    from ._console import err, out
    from .scale import merge as do_merge

    r = do_merge(output, copy=copy)
    if json_:
        out.print_json(json.dumps(r))
    elif r.get("merged"):
        err.print(f"merged {r['parts']} part(s) -> {r['output']} ({r['mode']}): {r['n_rows']} rows, "
                  f"{r['n_failures']} failures")
    else:
        err.print(f"{r['output']}: {r['reason']}")


@app.command()
def status(
    output: Annotated[Path, typer.Argument(help="An output being written (sharded or not).")],
    json_: JsonOpt = False,
) -> None:
    """Show done / running / pending shards, committed rows and throughput."""
    from ._console import out
    from .scale import status as get_status

    s = get_status(output)
    if json_ or not out.is_terminal:
        out.print_json(json.dumps(s))
        return
    if not s["planned"]:
        from .scale import describe_run_state

        if s["run"]:
            out.print(describe_run_state(s["output"], s["run"]), markup=False)
        if s["final_rows"] is not None:
            out.print(f"{s['output']}: complete file (not sharded), {s['final_rows']:,} rows", markup=False)
        return
    out.print(f"[bold]{s['output']}[/bold]: {s['done']}/{s['n_shards']} shards done, {s['parts']} parts, "
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
    from ._console import err, out
    from .bench import run_bench

    if not json_:
        err.print(f"[dim]mtx bench: {n} synthetic {modality} inputs, {model}, {dtype} (seeded weights)...[/dim]")
    r = run_bench(modality, model, device, dtype, n)
    if json_:
        out.print_json(json.dumps(r))
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
        err.print(f"cached {p}")


from ._cli_data import export, similar  # noqa: E402 - commands that read an output

app.command()(plain_choices(export))
app.command()(plain_choices(similar))


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
