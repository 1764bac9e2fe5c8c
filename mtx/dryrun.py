"""``mtx embed --dry-run``: what a run would do, read from the inputs and the existing output.

Nothing is written and no model is loaded. Each input gets its modality and the reason, and a
status against the output: ``done`` (embedded, unchanged), ``embed`` (would be embedded) or
``unknown`` (no modality claims it); discovery problems are listed as failures would be. The
settings the run would record are compared with the output's, exactly as the run compares them
(a difference the run would refuse is reported, exit 1).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import MtxError
from .pipeline.options import EmbedOptions

EXIT_OK, EXIT_REFUSED, EXIT_PARTIAL = 0, 1, 3


def dry_run(items, problems: list[tuple[str, str]], output: Path, opts: EmbedOptions, *,
            json_: bool = False, json_lines: bool = False, left: dict[str, int] | None = None) -> int:
    """Report what ``mtx embed`` would do with ``items`` into ``output``; returns the exit code.
    ``left``: what discovery left out (``n_hidden``, ``n_excluded``)."""
    from .errors import UnknownModality
    from .sniff import sniff

    check = output_check(output, opts)
    done = check.pop("done_files")
    rows = []
    for it in items:
        try:
            d = sniff(it.path, modality=opts.modality, rules=opts.rules)
            mod, reason = d.modality, d.reason
        except MtxError as e:
            mod, reason = None, e.reason
            if opts.skip_unknown and isinstance(e, UnknownModality):
                mod = "skipped"
        status = ("unknown" if mod is None else "skipped" if mod == "skipped"
                  else "done" if _finished(it, done, opts) else "embed")
        mod = None if mod == "skipped" else mod
        rows.append({"id": it.id, "path": str(it.path), "modality": mod, "reason": reason, "status": status})
    counts = {**_counts(rows, problems), **(left or {})}
    refused = bool(check["differences"]) and not opts.overwrite
    if json_lines:
        _print_lines(rows, problems, counts, check)
    elif json_:
        from ._console import out

        out.print_json(json.dumps({"inputs": rows, "problems": problems, "output": check, "counts": counts},
                                  default=str))
    else:
        _print_text(rows, problems, counts, check, refused)
    if refused:
        return EXIT_REFUSED
    return EXIT_PARTIAL if counts["unknown"] or problems else EXIT_OK


def output_check(output: Path, opts: EmbedOptions) -> dict[str, Any]:
    """The existing output as a run would find it: whether it exists, its settings compared with
    the ones this run would record, and the committed work (``done_files``)."""
    from .pipeline.options import modality_defaults
    from .store import Store, parts_dir_of

    exists = output.exists() or (parts_dir_of(output) / "run.json").exists()
    res: dict[str, Any] = {"path": str(output), "exists": exists, "overwrite": opts.overwrite,
                           "differences": [], "keep_with": [], "notes": [], "done_files": {}}
    if not exists:
        return res
    config, note = planned_config(opts)
    if note:
        res["notes"].append(note)
    store = Store(output, config, modality_configs=opts.modality_configs(), modality_defaults=modality_defaults())
    old_hash, old_config, _ = store.existing_settings()
    if note and old_config:  # weights or tokenizers not read here: their digests are not compared
        if config.get("weights_sha256") is None:
            config["weights_sha256"] = old_config.get("weights_sha256")
        if "tokenizers" in note and "tokenizers" in old_config:
            config["tokenizers"] = old_config["tokenizers"]
        store = Store(output, config, modality_configs=opts.modality_configs(),
                      modality_defaults=modality_defaults())
        old_hash = store.existing_settings()[0]
    res["differences"], res["keep_with"] = store.differences(old_hash)
    if not opts.overwrite:
        res["done_files"] = store.done_files()
    return res


def planned_config(opts: EmbedOptions) -> tuple[dict[str, Any], str]:
    """The run settings a run with ``opts`` would record, without loading the model; a note when
    a part of them cannot be known yet."""
    from .encoder import resolve_device, resolve_dtype
    from .pipeline.options import run_config
    from .weights import get_preset, planned_digest, requested_weights

    spec = get_preset(opts.model)
    digest = planned_digest(spec, opts.weights)
    dtype = resolve_dtype(opts.dtype, resolve_device(opts.device))
    notes = [] if digest is not None else [f"the {spec.name} weights are not cached: not compared"]
    if opts.tokenizers or requested_weights(opts.weights)[1]:
        notes.append("fitted tokenizer files are not read by a dry run: not compared")
    return run_config(spec, digest, dtype, opts), "; ".join(notes)


def _finished(it, done: dict, opts: EmbedOptions) -> bool:
    from .pipeline.run import finished

    return not opts.overwrite and finished(it, done)


def _counts(rows: list[dict[str, Any]], problems: list) -> dict[str, Any]:
    by_mod: dict[str, int] = {}
    for r in rows:
        if r["status"] == "embed":
            by_mod[r["modality"]] = by_mod.get(r["modality"], 0) + 1
    return {"inputs": len(rows) + len(problems), "done": sum(r["status"] == "done" for r in rows),
            "embed": sum(by_mod.values()), "unknown": sum(r["status"] == "unknown" for r in rows),
            "skipped": sum(r["status"] == "skipped" for r in rows),
            "problems": len(problems), "embed_by_modality": dict(sorted(by_mod.items()))}


def _print_lines(rows, problems, counts, check) -> None:
    """``--json-lines``: one JSON object per input, per discovery problem, then a summary; only JSON."""
    w = sys.stdout.write
    for r in rows:
        w(json.dumps({"event": "input", **r}) + "\n")
    for path, message in problems:
        w(json.dumps({"event": "input", "id": path, "path": path, "modality": None, "reason": message,
                      "status": "failed", "stage": "discover"}) + "\n")
    w(json.dumps({"event": "summary", "dry_run": True, **counts, "output": check}, default=str) + "\n")
    sys.stdout.flush()


def _print_text(rows, problems, counts, check, refused: bool) -> None:
    from rich.markup import escape

    from ._console import err, out

    for r in rows:
        out.print(f"{r['status']:<7} {r['modality'] or '-':<14} {escape(r['id'])}  [dim]({escape(r['reason'])})[/dim]",
                  highlight=False)
    for p, m in problems:
        err.print(f"[red]failed  {escape(p)}: discover: {escape(m)}[/red]", highlight=False)
    mods = ", ".join(f"{k} {v}" for k, v in counts["embed_by_modality"].items())
    state = ("new output" if not check["exists"] else "would replace it (--overwrite)" if check["overwrite"]
             else "settings differ" if check["differences"] else "same settings")
    err.print(f"dry run: {counts['inputs']} input(s): {counts['done']} already done, {counts['embed']} would be "
              f"embedded{f' ({mods})' if mods else ''}, {counts['unknown']} not recognised, "
              f"{counts['problems']} not found -> {escape(check['path'])} ({state})", highlight=False)
    from .pipeline.inputs import left_out

    left = left_out({**counts, "n_unknown": counts["skipped"]})
    if left:
        err.print(f"[dim]{escape(left)}[/dim]", highlight=False)
    for note in check["notes"]:
        err.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)
    if check["differences"]:
        from .settings import refusal

        head = (f"{check['path']}: the run would refuse it: settings differ from the run that wrote it" if refused
                else f"{check['path']}: settings differ (replaced with --overwrite)")
        text = refusal(head, check["differences"], check["keep_with"] if refused else [],
                       "--overwrite to replace it, or write to another output")
        err.print(escape(text), style="red" if refused else "yellow", highlight=False)
