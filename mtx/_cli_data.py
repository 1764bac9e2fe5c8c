"""CLI commands that read an embeddings file: ``info`` (body), ``export`` and ``similar``.

Registered on the app at the end of :mod:`mtx.cli`. Like the rest of the CLI, this module
imports nothing heavy at module level (numpy, h5py, pyarrow and torch load inside commands).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._choices import ExportFormat, Modality

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
    from ._console import err, out
    from .scale import describe_run_state, run_state

    st = run_state(file)
    if st is None:
        return False
    err.print(describe_run_state(file, st), markup=False, highlight=False)
    if file.exists():
        return False
    if json_ or not out.is_terminal:
        out.print_json(json.dumps({"path": str(file), **st}))
    return True


def show_info(file: Path, all_failures: bool, json_: bool) -> None:
    """Print ``mtx info``: rich tables on a terminal, JSON with --json or when piped."""
    from ._console import err, out
    from .export import store_info

    if _unfinished_run(file, json_):
        return
    s = store_info(file, all_failures=all_failures)
    missing = [x["file"] for x in s["sources"] if not x["found"]]
    if missing:
        err.print(f"[red]warning: {len(missing)} source file(s) of this merged file are missing "
                  f"({', '.join(missing[:3])}); their rows read as zeros[/red]")
    if json_ or not out.is_terminal:
        out.print_json(json.dumps(s, default=str))
        return
    from rich.table import Table

    weights = s["weights_source"]
    if weights == "seeded":
        weights = "seeded [yellow](random, not pretrained)[/yellow]"
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("file", f"{s['path']}  ({_size(s['file_size'])}"
                  + (f", {_size(s['total_size'])} with {len(s['sources'])} source file(s)" if s["virtual"] else "")
                  + ")")
    facts.add_row("format", f"{s['format']} v{s['format_version']}, written by mtx {s['mtx_version']} "
                  f"on {s['created']}")
    facts.add_row("rows", f"{s['n_rows']:,} x {s['dim']} {s['store_dtype']}")
    facts.add_row("model", f"{s['preset']}  (compute {s['compute_dtype']} on {s['device_kind']})")
    facts.add_row("weights", f"{weights}  sha256 {s['weights_sha256']}")
    inputs = ", ".join(f"{v:,} {k}" for k, v in sorted(s["files"].items())) or "none recorded"
    facts.add_row("inputs", inputs)
    out.print(facts)
    t = Table("modality", "rows", "tokenizer", "init", "pool", "tokenizer sha256", box=None, pad_edge=False)
    t.columns[1].justify = "right"
    for name in sorted(set(s["rows_by_modality"]) | set(s["modalities"])):
        ma = s["modalities"].get(name, {})
        init = str(ma.get("init", "-"))
        t.add_row(name, f"{s['rows_by_modality'].get(name, 0):,}", str(ma.get("tokenizer", "-")),
                  f"[yellow]{init}[/yellow]" if init == "seeded" else init, str(ma.get("pool", "-")),
                  str(ma.get("sha256", "-"))[:16])
    out.print()
    out.print(t)
    if s["virtual"]:
        out.print()
        st = Table("source file", "size", "found", box=None, pad_edge=False)
        for x in s["sources"]:
            st.add_row(x["file"], _size(x["size"]), "yes" if x["found"] else "[red]MISSING[/red]")
        out.print(st)
    out.print()
    shown = len(s["failures"])
    out.print(f"[bold]failures[/bold] {s['n_failures']:,}"
              + (f" (first {shown}; --failures for all)" if shown < s["n_failures"] else ""))
    for f in s["failures"]:
        msg = f["message"] if f["message"].startswith(f["path"]) else f"{f['path']}: {f['message']}"
        out.print(f"  {f['stage']:<9} {msg}", markup=False, highlight=False)


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------


def export(
    file: StoreArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (a directory for npy).")],
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

    from ._console import err, out
    from .export import export as run_export

    t0 = time.monotonic()
    bar = None
    if not (quiet or json_) and err.is_terminal:
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
        out.print_json(json.dumps(res))
    elif not quiet:
        err.print(f"{res['n_rows']:,} rows x {res['dim']} -> {res['output']} ({res['format']}) "
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
) -> None:
    """Cosine top-k: the rows of FILE most similar to each QUERY (a file or an id).

    A query file is embedded with exactly the model, weights, tokenizers, options and pooling recorded in FILE; when this install cannot reproduce them the query is refused with the reason. Rows are scanned in chunks, so memory stays flat for any store size.
    """
    from ._console import err, out
    from .similar import similar as run_similar

    res = run_similar(file, queries, k=k, modality=modality, weights=weights or None, device=device)
    if not json_:
        for note in {n for q in res for n in q.get("notes", [])}:
            err.print(f"[yellow]note: {note}[/yellow]")
    if json_:
        out.print_json(json.dumps({"store": str(file), "k": k, "modality": modality, "queries": res}))
        return
    _print_similar(res)


def _print_similar(res: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from ._console import out

    for i, q in enumerate(res):
        if i:
            out.print()
        out.print(f"[bold]{q['query']}[/bold]  [dim]({q['kind']}, {q['modality'] or 'vector'})[/dim]",
                  highlight=False)
        t = Table("#", "score", "modality", "id", box=None, pad_edge=False)
        t.columns[0].justify = "right"
        for r in q["results"]:
            t.add_row(str(r["rank"]), f"{r['score']:.4f}", r["modality"], r["id"])
        out.print(t)
