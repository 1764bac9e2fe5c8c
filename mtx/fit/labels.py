"""Labels for ``mtx fit`` and ``mtx probe``: files, folder names, a table column; one report.

A labels file is CSV, TSV or JSON Lines with a ``label`` column and either ``id`` (exactly as
``mtx embed`` writes it: the path relative to the embedded folder, ``#row=N`` for table rows)
or ``path`` (a file path, relative to the labels file's folder or absolute; every sample of
that file gets the label). ``folders`` labels every sample with its file's parent folder name
(the ImageFolder convention). Whatever does not match is counted in one :class:`LabelReport`
(unknown ids, samples without a label, duplicates, failed files), never an exception, except
when nothing usable is left.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

MISSING = frozenset(("", "na", "n/a", "nan", "null", "none"))


@dataclass
class LabelReport:
    """What matched and what did not (a few examples of each kind)."""

    n_samples: int = 0
    n_labelled: int = 0
    unknown: list[str] = field(default_factory=list)  # label rows that match no sample
    missing: list[str] = field(default_factory=list)  # samples without a label
    duplicate: list[str] = field(default_factory=list)  # ids labelled more than once (first kept)
    conflicting: list[str] = field(default_factory=list)  # ... with different labels
    failed: list[str] = field(default_factory=list)  # input files that could not be decoded

    def rows(self) -> list[tuple[str, int, str]]:
        """(kind, count, what + examples) for the kinds that occurred."""
        return report_rows({k: {"count": len(getattr(self, k)), "examples": getattr(self, k)[:3]} for k in _KINDS})

    def to_dict(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "n_labelled": self.n_labelled,
                **{k: {"count": len(getattr(self, k)), "examples": getattr(self, k)[:5]} for k in _KINDS}}


_KINDS = {"unknown": "labels matching no input sample", "missing": "samples without a label (not used)",
          "duplicate": "ids labelled more than once (first kept)", "conflicting": "of those, with different labels",
          "failed": "input files that could not be decoded"}


def report_rows(d: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Rows of a label report (``LabelReport.to_dict()``) for a table: kind, count, examples."""
    out = []
    for kind, what in _KINDS.items():
        r = d.get(kind) or {}
        if r.get("count"):
            ex = list(r.get("examples", []))[:3]
            out.append((kind, r["count"], what + ": " + ", ".join(ex) + (" ..." if r["count"] > len(ex) else "")))
    return out


def read_label_file(path: str | Path) -> list[tuple[str, str, str]]:
    """Rows ``(kind, key, label)`` of a CSV/TSV/JSONL labels file, kind ``id`` or ``path``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--labels {p}: no such file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--labels {p}: cannot read it as UTF-8 text ({e})") from None
    rows: list[dict[str, Any]]
    stripped = text.lstrip()
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json") or stripped.startswith("{"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise UsageError(f"--labels {p}: line {n} is not a JSON object") from None
            if not isinstance(obj, dict):
                raise UsageError(f"--labels {p}: line {n} is not a JSON object")
            rows.append(obj)
    else:
        delim = "\t" if p.suffix.lower() in (".tsv", ".tab") else None
        if delim is None:
            first = text.splitlines()[0] if text else ""
            delim = max("\t,;|", key=first.count) if first else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
    if not rows:
        raise UsageError(f"--labels {p}: no rows")
    cols = set(rows[0])
    kind = "id" if "id" in cols else "path" if "path" in cols else None
    if kind is None or "label" not in cols:
        raise UsageError(f"--labels {p}: needs a 'label' column and an 'id' or 'path' column "
                         f"(found: {', '.join(sorted(map(str, cols)))})")
    base = p.parent
    out = []
    for r in rows:
        key, lab = r.get(kind), r.get("label")
        if key is None or lab is None:
            continue
        key = str(key).strip()
        if kind == "path":
            raw, sep, frag = key.partition("#")
            key = os.path.normpath(raw if os.path.isabs(raw) else os.path.join(base, raw)) + (sep + frag)
        out.append((kind, key, str(lab).strip()))
    return out


def match_labels(ids: list[str], paths: list[str | Path], source: str | Path | dict[str, str],
                 report: LabelReport | None = None) -> tuple[list[str | None], LabelReport]:
    """Per sample its label (None = unlabelled) from a labels file, ``"folders"`` or a
    ready ``{id: label}`` dict; the report lists what did not match."""
    rep = report or LabelReport()
    rep.n_samples = len(ids)
    out: list[str | None] = [None] * len(ids)
    if isinstance(source, str) and source == "folders":
        for i, p in enumerate(paths):
            out[i] = Path(p).parent.name or None
    else:
        by_id: dict[str, str] = {}
        by_path: dict[str, str] = {}
        rows = list(source.items()) if isinstance(source, dict) else None
        entries = [("id", k, v) for k, v in rows] if rows is not None else read_label_file(source)
        for kind, key, lab in entries:
            table = by_id if kind == "id" else by_path
            if key in table:
                rep.duplicate.append(key)
                if table[key] != lab:
                    rep.conflicting.append(key)
                continue
            table[key] = lab
        used: set[tuple[str, str]] = set()
        for i, (sid, p) in enumerate(zip(ids, paths, strict=True)):
            frag = sid.partition("#")[2]
            ap = os.path.normpath(os.path.abspath(p))
            for kind, key in (("id", sid), ("path", ap + ("#" + frag if frag else "")), ("path", ap)):
                table = by_id if kind == "id" else by_path
                if key in table:
                    out[i] = table[key]
                    used.add((kind, key))
                    break
        rep.unknown = [k for k in by_id if ("id", k) not in used] + [k for k in by_path if ("path", k) not in used]
    for i, lab in enumerate(out):
        if lab is not None and lab.lower() in MISSING:
            out[i] = None
    rep.missing = [ids[i] for i, lab in enumerate(out) if lab is None]
    rep.n_labelled = len(ids) - len(rep.missing)
    return out, rep


def check_usable(labels: list[str | None], task: str, source: str) -> None:
    """One-line refusals: nothing matched, one class only, non-numeric regression targets."""
    got = [x for x in labels if x is not None]
    if not got:
        raise UsageError(f"{source}: the labels match no input sample; ids must be as `mtx embed` writes them "
                         "(path relative to the input folder, #row=N for table rows) or use a 'path' column")
    if task == "regression":
        bad = [x for x in got if not _is_number(x)]
        if bad:
            raise UsageError(f"{source}: --task regression needs numeric labels; {bad[0]!r} is not a number")
        return
    if len(set(got)) < 2:
        raise UsageError(f"{source}: every labelled sample has the label {got[0]!r}; "
                         "classification needs at least two classes")


def _is_number(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def read_target(path: Path, config: dict[str, Any], column: str) -> dict[str, str | None]:
    """``{"row=N": value}`` of one column of a table, read with the tabular reader's settings, so
    row numbers are those of the samples (``--target``). Raises UsageError naming the columns
    when the table has no such column."""
    from ..modalities import get_modality
    from ..modalities.tabular import _as_text, open_source

    cfg = get_modality("tabular").config(**{k: v for k, v in config.items() if k != "drop"})
    src = open_source(path, cfg)
    if column not in src.columns:
        cols = ", ".join(src.columns[:12]) + (" ..." if len(src.columns) > 12 else "")
        raise UsageError(f"--target {column!r}: {path.name} has no such column (columns: {cols})")
    j = src.columns.index(column)
    out: dict[str, str | None] = {}
    row = 0
    for cols, _ in src.chunks(cfg.chunk_rows):
        values = cols[j]
        vals = values if isinstance(values, list) else (
            values.tolist() if hasattr(values, "tolist") else values.to_pylist())
        for v in vals:
            s = None if v is None else _as_text(v)
            out[f"row={row}"] = s if s and s.lower() not in MISSING else None
            row += 1
    return out
