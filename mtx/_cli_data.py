"""CLI commands that read an embeddings file: ``info`` (body), ``export`` and ``similar``.

Registered on the app at the end of :mod:`mtx.cli`. Like the rest of the CLI, this module
imports nothing heavy at module level (numpy, h5py, pyarrow and torch load inside commands).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._choices import ExportFormat, Modality
from ._help import esc

StoreArg = Annotated[Path, typer.Argument(help="An mtx HDF5 output (consolidated or merged).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


# ------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _unfinished_run(file: Path, json_: bool) -> bool:
    """A run writing ``file`` that has not finished is told (one stderr line: in progress or
    interrupted, its counts, rerun to resume); True when there is no final file to show."""
    from ._console import emit_json, err
    from .scale import describe_run_state, run_state

    st = run_state(file)
    if st is None:
        return False
    err.print(describe_run_state(file, st), markup=False, highlight=False)
    if file.exists():
        return False
    if json_:
        emit_json({"path": str(file), **st})
    return True


def show_info(file: Path, all_failures: bool, json_: bool, limit: int | None = None) -> None:
    """Print ``mtx info``: rich tables on a terminal (the first 5 failures unless ``--failures``),
    JSON with --json or when piped (every failure); ``--limit N`` lists at most N either way."""
    from ._console import emit_json, out, wants_json
    from .export import store_info

    json_ = wants_json(json_)
    if _unfinished_run(file, json_):
        return
    shown = limit if limit is not None else (None if all_failures or json_ else 5)
    s = store_info(file, all_failures=shown is None, first=shown or 0)
    missing = [x["file"] for x in s["sources"] if not x["found"]]
    if json_:
        emit_json(s)
        _missing_parts(file, missing, len(s["sources"]))
        return
    from rich.table import Table

    weights = s["weights_source"]
    if weights == "seeded":
        weights = "seeded [yellow](random, not pretrained)[/yellow]"
    else:
        weights = esc(weights)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("file", f"{esc(s['path'])}  ({_size(s['file_size'])}"
                  + (f", {_size(s['total_size'])} with {len(s['sources'])} source file(s)" if s["virtual"] else "")
                  + ")")
    facts.add_row("format", f"{s['format']} v{s['format_version']}, written by mtx {s['mtx_version']} "
                  f"on {s['created']}")
    facts.add_row("rows", f"{s['n_rows']:,} x {s['dim']} {s['store_dtype']}")
    facts.add_row("model", f"{s['preset']}  (compute {s['compute_dtype']} on {s['device_kind']})")
    facts.add_row("weights", f"{weights}  sha256 {s['weights_sha256']}")
    inputs = ", ".join(f"{v:,} {k}" for k, v in sorted(s["files"].items())) or "none recorded"
    facts.add_row("inputs", esc(inputs))
    out.print(facts)
    t = Table("modality", "rows", "tokenizer", "init", "pool", "tokenizer sha256", box=None, pad_edge=False)
    t.columns[1].justify = "right"
    for name in sorted(set(s["rows_by_modality"]) | set(s["modalities"])):
        ma = s["modalities"].get(name, {})
        init = str(ma.get("init", "-"))
        t.add_row(name, f"{s['rows_by_modality'].get(name, 0):,}", esc(ma.get("tokenizer", "-")),
                  f"[yellow]{init}[/yellow]" if init == "seeded" else esc(init), esc(ma.get("pool", "-")),
                  esc(str(ma.get("sha256", "-"))[:16]))
    out.print()
    out.print(t)
    fitted = {name: ma for name, ma in s["modalities"].items() if ma.get("init") == "file"}
    if fitted:
        from ._cli_fit import fit_info_lines

        out.print()
        for name, ma in sorted(fitted.items()):
            for i, line in enumerate(fit_info_lines(ma)):
                out.print(f"[bold]{'fitted ' + name if i == 0 else ''}[/bold]  {line}" if i == 0 else
                          f"{'':<{len('fitted ' + name)}}  {line}", highlight=False)
    if s["virtual"]:
        out.print()
        st = Table("source file", "size", "found", box=None, pad_edge=False)
        for x in s["sources"]:
            st.add_row(esc(x["file"]), _size(x["size"]), "yes" if x["found"] else "[red]MISSING[/red]")
        out.print(st)
    out.print()
    shown = len(s["failures"])
    out.print(f"[bold]failures[/bold] {s['n_failures']:,}"
              + (f" (first {shown}; --failures for all)" if shown < s["n_failures"] else ""))
    for f in s["failures"]:
        msg = f["message"] if f["message"].startswith(f["path"]) else f"{f['path']}: {f['message']}"
        out.print(f"  {f['stage']:<9} {msg}", markup=False, highlight=False)
    _missing_parts(file, missing, len(s["sources"]))


def _missing_parts(file: Path, missing: list[str], total: int) -> None:
    """A merged file whose parts are gone cannot be read: say so last, exit 1."""
    if missing:
        from .errors import StoreError
        from .store import missing_sources_message

        raise StoreError(missing_sources_message(file, missing, total))


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------


def export(
    file: StoreArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (a directory for npy), or - "
                                         "for stdout: jsonl (the default there) or npy (the [N, D] array alone).")],
    format_: Annotated[ExportFormat | None, typer.Option(
        "--format", "-f", help="Output format (default: from the output's suffix).", show_default=False)] = None,
    modality: Annotated[Modality | None, typer.Option("--modality", help="Export only this modality's rows.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    json_: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary line.")] = False,
) -> None:
    """Stream the vectors with their ids, modality and path to npy, Parquet, JSON Lines or safetensors.

    npy writes a directory: embeddings.npy [N, D] float32, rows.jsonl (id, modality, path of row i) and meta.json. Parquet has columns id, modality, path and embedding (fixed_size_list<float32>[D]), one row group per chunk. safetensors holds embeddings, modality codes, and the ids and paths as UTF-8 bytes + offsets. Memory stays flat for any store size.
    """
    import time

    from ._console import emit_json, err, interactive
    from .errors import UsageError
    from .export import STREAM
    from .export import export as run_export

    if str(output) == STREAM and json_:
        raise UsageError("--json prints the summary on stdout, which -o - fills with the data; drop one")

    t0 = time.monotonic()
    bar = None
    if not (quiet or json_) and interactive():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=err, transient=True)
        bar.start()
        task = bar.add_task("export", total=None)
    try:
        res = run_export(file, output, format_, modality=modality, overwrite=overwrite,
                         progress=(lambda d, t: bar.update(task, completed=d, total=t)) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    el = time.monotonic() - t0
    res["elapsed_s"] = round(el, 3)
    res["rows_per_s"] = round(res["n_rows"] / el, 1) if el > 0 else 0.0
    if json_:
        emit_json(res)
    elif not quiet:
        where = "stdout" if res["output"] == STREAM else esc(res["output"])
        err.print(f"{res['n_rows']:,} rows x {res['dim']} -> {where} ({res['format']}) "
                  f"in {el:.1f} s ({res['rows_per_s']:,.0f} rows/s)")


# ------------------------------------------------------------------------------------------
# similar
# ------------------------------------------------------------------------------------------


def similar(
    file: StoreArg,
    queries: Annotated[list[str], typer.Argument(
        help="Files (embedded with the store's recorded settings) or ids already in the store.",
        show_default=False)],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Results per query.")] = 10,
    modality: Annotated[Modality | None, typer.Option("--modality", help="Only rank rows of this modality.")] = None,
    weights: Annotated[list[str] | None, typer.Option(
        "--weights", "-w", help="Weight files the store was made with, when MTX_WEIGHTS / the Hugging Face "
        "cache do not hold them.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", envvar="MTX_DEVICE",
                                        help="Where query files are embedded: auto, cpu, cuda or cuda:N.")] = "auto",
    json_: JsonFlag = False,
    tokenizer: Annotated[list[str] | None, typer.Option(
        "--tokenizer", help="MODALITY=FILE: where a fitted tokenizer the store records now is (checked against "
        "its recorded sha256).", show_default=False)] = None,
) -> None:
    """Cosine top-k: the rows of FILE most similar to each QUERY (a file or an id).

    A query file is embedded with exactly the model, weights, tokenizers, options and pooling recorded in FILE; when this install cannot reproduce them the query is refused with the reason. Rows are scanned in chunks, so memory stays flat for any store size.
    """
    from ._console import emit_json, err, wants_json
    from .settings import check_device
    from .similar import similar as run_similar
    from .weights import weight_paths

    check_device(device)  # usage errors before torch loads
    if weights:
        weight_paths(weights)
    json_ = wants_json(json_)

    res = run_similar(file, queries, k=k, modality=modality, weights=weights or None, device=device,
                      tokenizers=tokenizer)
    if not json_:
        for note in {n for q in res for n in q.get("notes", [])}:
            err.print(f"[yellow]note: {esc(note)}[/yellow]")
    if json_:
        emit_json({"store": str(file), "k": k, "modality": modality, "queries": res})
        return
    _print_similar(res)


def _print_similar(res: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from ._console import out

    for i, q in enumerate(res):
        if i:
            out.print()
        out.print(f"[bold]{esc(q['query'])}[/bold]  [dim]({q['kind']}, {q['modality'] or 'vector'})[/dim]",
                  highlight=False)
        t = Table("#", "score", "modality", "id", box=None, pad_edge=False)
        t.columns[0].justify = "right"
        for r in q["results"]:
            t.add_row(str(r["rank"]), f"{r['score']:.4f}", esc(r["modality"]), esc(r["id"]))
        out.print(t)
