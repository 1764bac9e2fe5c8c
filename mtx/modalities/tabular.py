"""tabular: CSV/TSV, Parquet, JSON Lines, JSON arrays of records -> one sample per row.

FT-Transformer tokens (Gorishniy et al. 2021): one token per column plus CLS, so a row of C
columns gives C + 1 tokens. Rows are streamed in chunks (``chunk_rows``), so memory does not
grow with the file (measured by ``benchmarks/tabular_memory.py``).

Reading (all decisions are recorded in the ``table`` meta of the file's first sample):
- CSV/TSV: encoding = BOM, else UTF-8 (bad bytes replaced), else a detected legacy encoding.
  Delimiter = the one of ``, TAB ; |`` that splits the first lines into the most consistent
  number of fields (>= 2); the first lines are read whole (a 5,000-column header), up to
  ``max_record_bytes``. Decimal commas (``3,14``, ``1.234,5``) are detected when the delimiter
  is not ``,`` and no cell reads ``3.14``; those cells become numbers. Leading lines whose
  field count differs from the table's, or that are neither a header nor a data row (e.g. sklearn's iris.csv ``150,4,setosa,versicolor,
  virginica`` above numeric rows: numbers where a header has names, text where the rows have
  numbers), are skipped. A header is a first line of non-numeric names that does not fit the
  column types of the rows below. Without a header, columns are named ``col0, col1, ...``.
  Rows are parsed by pyarrow's streaming CSV reader (quoting, embedded newlines) in 1 MiB
  blocks (``block_bytes``; it reads about 32 blocks ahead, so memory stays ~tens of MB; a record
  longer than a block makes the blocks grow fourfold, up to ``max_record_bytes``, 64 MiB); rows
  with another field count are skipped and counted in a note on the first row of
  their block. Keys: ``row=N``, N counting the data rows from 0.
- Parquet: streamed by record batches (pyarrow); JSON Lines: one object per line; JSON arrays:
  parsed incrementally, one record at a time. Nested values are categorical (their JSON text).
- Column types from the first ``stats_rows`` (100k) rows: numeric when >= 95 % of the non-missing
  cells parse as numbers, else categorical. Missing cells (``"", NA, N/A, nan, null, None, -, ?,
  #N/A``, non-finite numbers, JSON null) get their own value. A non-numeric cell in a numeric column is treated as a
  categorical value of that column.
- Numeric cells are standardised with the mean/std of those first rows (recorded).

Tokenizer inputs per row: ``col`` (a 63-bit hash of each column name, any name works),
``num`` (standardised value) and ``cat`` (a hashed (column, value) bucket in [0, 2^16), or -1
where the cell is a numeric value). Column identity, w_col and b_col come from two seeded
tables of 4096 rows indexed by independent 12-bit slices of the name hash (2^24 distinct
columns); categorical values from a seeded table of 2^16 rows.
"""
from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import json
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtx.errors import DecodeError, MissingDependency
from mtx.settings import codec_problem, one_char, setting

from . import _budget
from ._base import (
    EXTENSION,
    STRUCTURE,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    seeded,
    sniffed_or_read,
)
from ._columns import comma_to_dot, comma_to_dot_arrow, decimal_comma, unique_names
from ._registry import register_modality
from .text import bom_encoding, bomless_utf

FORMATS = ("auto", "csv", "parquet", "jsonl", "json")
DELIMITERS = (",", "\t", ";", "|")
MISSING = frozenset(("", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a",
                     "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"))  # non-finite = missing
_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
MISSING_VALUE = "\x00missing"  # what a missing cell hashes as (its own categorical value)
CAT_BUCKETS = 1 << 16
COL_ROWS = 4096  # rows of each of the two column tables (12-bit slices of the name hash)
_CSV_EXT = (".csv", ".tsv", ".tab", ".psv")
_JSONL_EXT = (".jsonl", ".ndjson")
_PARQUET_EXT = (".parquet", ".pq")
_HEAD = 64 * 1024  # bytes read to sniff delimiter and header
_SNIFF_ROWS = 200
_MAX_PREAMBLE = 10
_JSON_CHAR_BYTES = 32  # one JSON record in memory: its text, then up to ~30 bytes of Python values per character
_F32_MAX = float(np.finfo(np.float32).max)


def stable_hash(text: str) -> int:
    """A 63-bit hash that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little") & (2**63 - 1)


def bucket(column: str, value: str) -> int:
    """The categorical table row of ``value`` in ``column``."""
    return stable_hash(column + "\x1f" + value) % CAT_BUCKETS


def _is_missing_str(s: str) -> bool:
    return s.strip().lower() in MISSING


def _as_number(v: Any) -> float | None:
    """A finite float for numeric cells, None otherwise (bools are categorical)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, str):
        return _is_missing_str(v)
    return False


def _as_text(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ----------------------------------------------------------------------------------------------
# Column chunks: numbers (float64, NaN = no number) + which cells are missing
# ----------------------------------------------------------------------------------------------


def _parse(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """-> (float64 numbers with NaN where a cell is not a finite number, bool missing).

    ``values``: a pyarrow array (CSV columns, Parquet strings), a float ndarray (Parquet
    numbers, NaN = null) or a list of Python values (JSON)."""
    if isinstance(values, np.ndarray):
        x = values.astype(np.float64)
        bad = ~np.isfinite(x)
        return np.where(bad, np.nan, x), bad
    if not isinstance(values, list):
        return _parse_arrow(values)
    n = len(values)
    x = np.full(n, np.nan)
    miss = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        f = _as_number(v)
        if f is not None:
            x[i] = f
        elif _is_missing(v):
            miss[i] = True
    return x, miss


def _parse_arrow(arr) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return _parse(arr.to_pylist())
    t = pc.utf8_trim_whitespace(arr)
    nulls = pc.is_null(t).to_numpy(zero_copy_only=False)
    try:
        x = pc.cast(t, pa.float64()).to_numpy(zero_copy_only=False)  # fast path: all numbers
        bad = ~np.isfinite(x)
        return np.where(bad, np.nan, x), bad
    except pa.ArrowInvalid:
        pass
    miss = pc.is_in(pc.utf8_lower(t), value_set=_missing_array()).to_numpy(zero_copy_only=False) | nulls
    ok = pc.match_substring_regex(t, _NUMBER_RE)
    try:
        x = pc.cast(pc.if_else(ok, t, None), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # pragma: no cover - the regex only admits what arrow parses
        return _parse(arr.to_pylist())
    x = np.where(np.isfinite(x), x, np.nan)
    return x, miss


@functools.lru_cache(maxsize=1)
def _missing_array():
    import pyarrow as pa

    return pa.array(sorted(MISSING), type=pa.string())


def _texts(values: Any) -> list:
    return values if isinstance(values, list) else values.to_pylist()


@dataclass
class _ColumnStats:
    """Chan's parallel mean/variance over the numeric cells, plus type counts."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    present: int = 0  # non-missing cells
    numeric: int = 0

    def update(self, x: np.ndarray, miss: np.ndarray) -> None:
        self.present += int((~miss).sum())
        v = x[np.isfinite(x)]
        self.numeric += len(v)
        if not len(v):
            return
        nb, mb = len(v), float(v.mean())
        m2b = float(((v - mb) ** 2).sum())
        d = mb - self.mean
        tot = self.n + nb
        self.mean += d * nb / tot
        self.m2 += m2b + d * d * self.n * nb / tot
        self.n = tot

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else 0.0


# ----------------------------------------------------------------------------------------------
# Sources: each yields column-major chunks (list of per-column lists/arrays) + row notes
# ----------------------------------------------------------------------------------------------


@dataclass
class _Source:
    fmt: str
    columns: list[str]
    info: dict = field(default_factory=dict)

    def chunks(self, rows: int) -> Iterator[tuple[list, list[str | None]]]:
        raise NotImplementedError


def _table_encoding(head: bytes, forced: str) -> tuple[str, str]:
    """(codec, how it was decided) for a delimited/JSON text table."""
    if forced:
        return forced, "forced by config"
    bom = bom_encoding(head) or bomless_utf(head[:8192])
    if bom:
        return bom[0], bom[1]
    if b"\x00" in head[:8192]:
        raise DecodeError("binary content, not a text table (NUL bytes in the first 8 KiB)")
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
        return "utf-8", "valid UTF-8 in the first 64 KiB (later invalid bytes are replaced)"
    except UnicodeDecodeError:
        pass
    from .text import _detect_legacy

    enc = _detect_legacy(head)
    if enc is None:
        raise DecodeError("binary content, not a text table (no text encoding fits)")
    return enc, "detected by charset_normalizer"


def _open_text(path: Path, codec: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(open(path, "rb"), encoding=codec, errors="replace", newline="")


def _line_ends(text: str) -> int:
    return text.count("\n") or text.count("\r")


def _head_text(path: Path, codec: str, limit: int) -> tuple[str, bool]:
    """The first 64 KiB of text, read on until it holds whole lines: at least the header and the
    first data row (four lines when they are short), however long they are, up to ``limit``
    characters. Returns (text, whether it reaches the end of the file)."""
    with _open_text(path, codec) as f:
        text = f.read(_HEAD)
        at_eof = len(text) < _HEAD
        while not at_eof and len(text) < limit:
            ends = _line_ends(text)
            if ends >= 4 or (ends >= 2 and len(text) >= _HEAD):
                break
            more = f.read(min(max(len(text), _HEAD), limit - len(text)))
            at_eof = not more
            text += more
        if not at_eof:
            at_eof = not f.read(1)
    if not at_eof and _line_ends(text) == 0:
        raise DecodeError(f"the first line is longer than {limit:,} characters (max_record_bytes); "
                          "raise it with -O tabular.max_record_bytes=N if the header is really this long")
    return text, at_eof


def _sniff_delimiter(lines: list[str], preferred: str | None = None) -> tuple[str, int, float]:
    """(delimiter, modal field count, share of lines with that count)."""
    best = (",", 1, 0.0)
    best_score = (-1.0, 0, 0)
    order = ((preferred,) if preferred else ()) + tuple(d for d in DELIMITERS if d != preferred)
    for rank, d in enumerate(order):
        counts = [len(r) for r in csv.reader(lines, delimiter=d) if r]
        if not counts:
            continue
        values, freq = np.unique(counts, return_counts=True)
        mode = int(values[np.argmax(freq)])
        share = float(freq.max() / len(counts))
        if mode < 2:
            continue
        score = (round(share, 2), mode, -rank)
        if score > best_score:
            best, best_score = (d, mode, share), score
    return best


def _column_kinds(rows: list[list[str]], width: int) -> list[bool]:
    kinds = []
    for j in range(width):
        cells = [r[j] for r in rows if j < len(r) and not _is_missing_str(r[j])]
        num = sum(_as_number(c) is not None for c in cells)
        kinds.append(bool(cells) and num >= 0.95 * len(cells))
    return kinds


def decide_header(rows: list[list[str]], width: int, header: str = "auto",
                  lines: list[int] | None = None) -> tuple[int, bool, str]:
    """Look at the first parsed rows of a delimited file.

    Args:
        rows: the first non-empty records.
        width: the table's field count.
        header: ``auto``, or ``yes``/``no`` to force the decision.
        lines: the physical line each record starts on (for the messages; default i + 1).

    Returns:
        (leading records to skip, whether the next record is a header, the reason in words).
    """
    skipped: list[str] = []
    lines = lines or list(range(1, len(rows) + 1))
    i = 0
    while True:
        if i >= len(rows):
            raise DecodeError("no table rows: every line was skipped as a preamble")
        cand = rows[i]
        body = [r for r in rows[i + 1:] if len(r) == width]
        if len(cand) != width and i < _MAX_PREAMBLE and body:
            skipped.append(f"line {lines[i]} skipped: {len(cand)} fields, the table has {width}")
            i += 1
            continue
        if header in ("yes", "no"):
            return i, header == "yes", "; ".join(skipped + [f"header={header} (forced)"])
        kinds = _column_kinds(body, width)
        cells = cand[:width]
        names_like = all(c.strip() and _as_number(c) is None for c in cells)
        fits = all(_is_missing_str(c) or not k or _as_number(c) is not None
                   for c, k in zip(cells, kinds, strict=False))
        text = ",".join(c.strip() for c in cells)[:60]
        if names_like and not fits:
            why = f"line {lines[i]} ({text!r}) is a header: names above numeric columns"
            return i, True, "; ".join(skipped + [why])
        if names_like and fits:
            # All columns are text: a header if its names are distinct and not values below.
            seen = [{r[j].strip() for r in body} for j in range(width)]
            fresh = len({c.strip() for c in cells}) == len(cells) and not any(
                c.strip() in s for c, s in zip(cells, seen, strict=False))
            why = (f"line {lines[i]} ({text!r}) is a header: distinct names that never occur as values"
                   if fresh or not body else f"line {lines[i]} ({text!r}) is data: its cells occur as values")
            return i, fresh or not body, "; ".join(skipped + [why])
        if fits or not body:
            why = f"no header: line {lines[i]} ({text!r}) fits the column types of the rows below"
            return i, False, "; ".join(skipped + [why])
        if i >= _MAX_PREAMBLE:
            raise DecodeError(f"cannot find where the table starts in the first {_MAX_PREAMBLE} lines")
        bad = next(j for j, (c, k) in enumerate(zip(cells, kinds, strict=False))
                   if k and not _is_missing_str(c) and _as_number(c) is None)
        skipped.append(f"line {lines[i]} ({text!r}) skipped: neither a header (it has numbers) nor a "
                       f"data row (text in numeric column {bad})")
        i += 1


class _CsvSource(_Source):
    def __init__(self, path: Path, cfg: "TabularConfig"):
        with open(path, "rb") as f:
            head = f.read(_HEAD)
        if not head.strip():
            raise DecodeError("empty table: no rows")
        self.path = path
        self.codec, why = _table_encoding(head, cfg.encoding)
        self.max_record = cfg.max_record_bytes
        if csv.field_size_limit() < self.max_record:
            csv.field_size_limit(self.max_record)  # sniffing parses whole lines of the head
        text, at_eof = _head_text(path, self.codec, self.max_record)
        lines = list(io.StringIO(text, newline=""))
        if not at_eof and len(lines) > 1:
            lines = lines[:-1]  # the last line of the head may be cut
        lines = lines[:_SNIFF_ROWS]
        self.block_size = cfg.block_bytes
        ext = path.suffix.lower()
        if cfg.delimiter:
            delim = "\t" if cfg.delimiter in ("\\t", "tab") else cfg.delimiter
            counts = [len(r) for r in csv.reader(lines, delimiter=delim) if r]
            width = int(np.bincount(counts).argmax()) if counts else 1
            dwhy = "forced by config"
        else:
            delim, width, share = _sniff_delimiter(lines, "\t" if ext in (".tsv", ".tab") else
                                                   "|" if ext == ".psv" else None)
            dwhy = f"{share:.0%} of the first {len(lines)} lines split into {width} fields"
            if width < 2:
                delim, width, dwhy = ",", 1, "no delimiter splits the lines: one column"
        self.delim = delim
        self.decimal = cfg.decimal
        reader = csv.reader(lines, delimiter=delim)
        rows, starts, ends = [], [], []  # non-empty records, the lines each starts and ends on
        last = 0
        try:
            for r in reader:
                if r:
                    rows.append(r)
                    starts.append(last + 1)
                    ends.append(reader.line_num)
                last = reader.line_num
        except csv.Error as e:
            raise DecodeError(f"malformed CSV near line {reader.line_num}: {e}") from None
        if not rows:
            raise DecodeError("empty table: no rows")
        decimal_why = "forced by config" if cfg.decimal else "numbers written with decimal points"
        if not cfg.decimal:
            self.decimal = "," if decimal_comma((c for r in rows[1:] for c in r), delim) else "."
            if self.decimal == ",":
                decimal_why = (f"delimiter {delim!r} and numbers like 3,14 or 1.234,5 (none like 3.14): "
                               "decimal commas, '.' and spaces between digit groups are thousands separators")
        if self.decimal == ",":
            rows = [[comma_to_dot(c) for c in r] for r in rows]
        skip, has_header, hwhy = decide_header(rows, width, cfg.header, starts)
        used = skip + int(has_header)
        self.skip_lines = ends[used - 1] if used else 0
        names = unique_names(rows[skip][:width] + [""] * (width - len(rows[skip]))) if has_header \
            else [f"col{j}" for j in range(width)]
        super().__init__("csv", names, {
            "encoding": self.codec, "encoding_reason": why,
            "delimiter": delim, "delimiter_reason": dwhy,
            "header": "first row" if has_header else "none",
            "skipped_lines": skip, "header_reason": hwhy,
            "decimal": self.decimal, "decimal_reason": decimal_why,
        })

    def chunks(self, rows: int) -> Iterator[tuple[list, list[str | None]]]:
        """Record batches of ~1 MiB from pyarrow's streaming CSV reader, every column as text.

        Rows whose field count differs from the table's are skipped (pyarrow cannot pad them)
        and counted in a note on the first row of their block. A record (a row, or one huge
        cell) longer than a block makes pyarrow stop ("straddling object"): the file is read
        again with blocks four times larger, up to ``max_record_bytes``, from where the rows
        already given left off, and the block size used is recorded."""
        import pyarrow as pa

        block = self.block_size
        state = {"given": 0, "reported": 0}
        while True:
            try:
                yield from self._read(block, state)
                return
            except pa.ArrowInvalid as e:
                msg = " ".join(str(e).split())
                if "straddl" not in msg and "block size" not in msg:
                    raise DecodeError(f"malformed CSV: {msg[:200]}") from None
                if block >= self.max_record:
                    raise DecodeError(f"a CSV record (a row, or one cell) is longer than {self.max_record:,} "
                                      "bytes (max_record_bytes); raise it with -O tabular.max_record_bytes=N"
                                      ) from None
                block = min(self.max_record, block * 4)
                self.info["block_bytes"] = f"{block:,} (a record longer than the {self.block_size:,}-byte blocks)"

    def _read(self, block: int, state: dict) -> Iterator[tuple[list, list[str | None]]]:
        """One pass of pyarrow's reader with ``block``-byte blocks. ``state`` counts the rows and
        malformed rows handed out, so that a later pass skips them."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        bad: list[str] = []
        seen_bad = [0]
        reported = state["reported"]

        def invalid(row) -> str:
            seen_bad[0] += 1
            if seen_bad[0] <= reported:  # noted by an earlier pass
                return "skip"
            if len(bad) < 5:
                bad.append(f"{row.actual_columns} fields, expected {row.expected_columns}: {row.text[:40]!r}")
            else:
                bad.append("")
            return "skip"

        names = [f"f{j}" for j in range(len(self.columns))]  # arrow-safe names, any header text
        stream = _Utf8Stream(self.path, self.codec)
        skip, done = state["given"], 0
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(skip_rows=self.skip_lines, column_names=names,
                                               block_size=block, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=self.delim, newlines_in_values=True,
                                                 ignore_empty_lines=True, invalid_row_handler=invalid),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                     strings_can_be_null=False,
                                                     quoted_strings_can_be_null=False))
            for batch in reader:
                if done < skip:  # rows an earlier pass gave already
                    drop = min(batch.num_rows, skip - done)
                    done += drop
                    batch = batch.slice(drop)
                if not batch.num_rows:
                    continue
                notes: list[str | None] = [None] * batch.num_rows
                if bad:
                    # pyarrow parses a block at a time: the note goes on the block's first row.
                    shown = "; ".join(b for b in bad if b)
                    notes[0] = (f"{len(bad)} malformed row(s) skipped in this block of "
                                f"{batch.num_rows + len(bad)} rows ({shown})")
                    bad.clear()
                state["given"] += batch.num_rows
                state["reported"] = seen_bad[0]
                columns = list(batch.columns)
                if self.decimal == ",":
                    columns = [comma_to_dot_arrow(c) for c in columns]
                yield columns, notes
        finally:
            stream.close()
        if bad:
            # A last block of only malformed rows has no row to carry the note: fail loudly.
            raise DecodeError(f"{len(bad)} malformed row(s) at the end of the file: "
                              + "; ".join(b for b in bad if b))


class _Utf8Stream(io.RawIOBase):
    """A file decoded with its codec (bad bytes replaced) and re-encoded as UTF-8 for pyarrow."""

    def __init__(self, path: Path, codec: str):
        self._text = _open_text(path, codec)
        self._cur = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out):
            if self._pos >= len(self._cur):
                chunk = self._text.read(1 << 18)
                if not chunk:
                    break
                self._cur, self._pos = chunk.encode("utf-8", "surrogatepass"), 0
            k = min(len(out) - n, len(self._cur) - self._pos)
            out[n:n + k] = self._cur[self._pos:self._pos + k]
            n += k
            self._pos += k
        return n

    def close(self) -> None:
        self._text.close()
        super().close()


def _records_to_columns(records: list[dict], columns: list[str]) -> list[list]:
    return [[r.get(c) for r in records] for c in columns]


class _JsonSource(_Source):
    """JSON Lines or a JSON array of flat records; columns = keys of the first ``stats_rows``."""

    def __init__(self, path: Path, cfg: "TabularConfig", fmt: str):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(_HEAD)
        self.codec, why = _table_encoding(head, cfg.encoding)
        super().__init__(fmt, [], {"encoding": self.codec, "encoding_reason": why})
        cols: dict[str, None] = {}
        for n, rec in enumerate(self.records()):
            if n >= cfg.stats_rows:
                break
            for k in rec:
                cols.setdefault(str(k), None)
        if not cols:
            raise DecodeError("empty table: no records with fields")
        self.columns = list(cols)
        self.info["columns_from"] = "keys of the first records (in first-seen order)"

    def records(self) -> Iterator[dict]:
        it = self._lines() if self.fmt == "jsonl" else self._array()
        for i, rec in enumerate(it):
            if not isinstance(rec, dict):
                raise DecodeError(f"record {i} is a {type(rec).__name__}, not an object of fields")
            yield {str(k): v for k, v in rec.items()}

    def _lines(self) -> Iterator[Any]:
        limit = _budget.allowed(_JSON_CHAR_BYTES)  # characters of one record held and parsed
        with _open_text(self.path, self.codec) as f:
            lineno = 0
            while line := f.readline(limit + 1):
                lineno += 1
                if len(line) > limit and not line.endswith("\n"):
                    _budget.check(len(line), f"characters in JSON Lines line {lineno} (one record) at least",
                                  _JSON_CHAR_BYTES, "holds")
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DecodeError(f"JSON Lines line {lineno}: invalid JSON ({e.msg})") from None

    def _array(self) -> Iterator[Any]:
        dec = json.JSONDecoder()
        step = 1 << 20
        with _open_text(self.path, self.codec) as f:
            buf, pos = f.read(step).lstrip("\ufeff"), 0
            pos = _skip_ws(buf, pos)
            if buf[pos:pos + 1] != "[":
                raise DecodeError("not a JSON array of records (expected '[')")
            pos += 1
            eof = False
            while True:
                while True:
                    pos = _skip_ws(buf, pos, ",")
                    if pos < len(buf) or eof:
                        break
                    more = f.read(step)
                    eof = not more
                    buf, pos = buf[pos:] + more, 0
                if pos >= len(buf):
                    raise DecodeError("truncated JSON array (no closing ']')")
                if buf[pos] == "]":
                    return
                try:
                    obj, end = dec.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    # one record must fit the per-sample budget (its text and its parsed values)
                    _budget.check(len(buf) - pos, "characters in one JSON record at least", _JSON_CHAR_BYTES, "holds")
                    more = "" if eof else f.read(max(step, len(buf)))
                    if not more:
                        raise DecodeError(f"invalid JSON array: {e.msg}") from None
                    buf, pos = buf[pos:] + more, 0
                    continue
                yield obj
                pos = end
                if pos > step:
                    buf, pos = buf[pos:], 0

    def chunks(self, rows: int) -> Iterator[tuple[list, list[str | None]]]:
        known = set(self.columns)
        buf: list[dict] = []
        notes: list[str | None] = []
        for rec in self.records():
            extra = [k for k in rec if k not in known]
            notes.append(f"fields not in the first records ignored: {', '.join(extra)[:200]}" if extra else None)
            buf.append(rec)
            if len(buf) == rows:
                yield _records_to_columns(buf, self.columns), notes
                buf, notes = [], []
        if buf:
            yield _records_to_columns(buf, self.columns), notes


def _skip_ws(buf: str, pos: int, extra: str = "") -> int:
    n = len(buf)
    while pos < n and (buf[pos].isspace() or buf[pos] in extra):
        pos += 1
    return pos


class _ParquetSource(_Source):
    def __init__(self, path: Path, cfg: "TabularConfig"):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - dependency
            raise MissingDependency("Parquet needs pyarrow; pip install pyarrow") from None
        try:
            self.pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError variants
            raise DecodeError(f"cannot open Parquet: {' '.join(str(e).split())[:200]}") from None
        schema = self.pf.schema_arrow
        md = self.pf.metadata
        for i in range(md.num_row_groups):  # pyarrow reads a row group's column chunks whole
            rg = md.row_group(i)
            comp = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
            _budget.check(comp, f"compressed bytes in Parquet row group {i} ({rg.num_rows:,} rows, read whole)", 2)
        super().__init__("parquet", unique_names([str(n) for n in schema.names]), {
            "rows_in_file": md.num_rows, "row_groups": md.num_row_groups,
            "arrow_types": {n: str(t) for n, t in zip(schema.names, schema.types, strict=True)},
        })

    def chunks(self, rows: int) -> Iterator[tuple[list, list[str | None]]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            for batch in self.pf.iter_batches(batch_size=rows):
                cols: list = []
                for arr in batch.columns:
                    t = arr.type
                    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
                        cols.append(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False))
                    elif pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
                        as_int = arr.cast(pa.int64()) if not pa.types.is_date32(t) else arr.cast(pa.int32())
                        cols.append(pc.cast(as_int, pa.float64()).to_numpy(zero_copy_only=False))
                    else:
                        cols.append(arr.to_pylist())
                yield cols, [None] * batch.num_rows
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt pages raise several pyarrow types
            raise DecodeError(f"corrupt Parquet: {' '.join(str(e).split())[:200]}") from None


def table_format(head: bytes, path: Path) -> str | None:
    """csv | parquet | jsonl | json from magic bytes, then extension; None if not a table."""
    if head.startswith(b"PAR1"):
        return "parquet"
    ext = path.suffix.lower()
    if ext in _PARQUET_EXT:
        return "parquet"
    if ext in _JSONL_EXT:
        return "jsonl"
    if ext == ".json":
        s = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        return "json" if s.startswith("[") else None  # an object is not a table (graph JSON is)
    if ext in _CSV_EXT:
        return "csv"
    return None


def open_source(path: Path, cfg: "TabularConfig", sniffed: Sniffed | None = None) -> _Source:
    fmt = cfg.format
    if fmt == "auto":
        known = sniffed_or_read(path, sniffed)
        if not known.head:
            raise DecodeError("empty file (0 bytes)")
        fmt = known.format or table_format(known.head, path) or "csv"
    if fmt == "parquet":
        return _ParquetSource(path, cfg)
    if fmt in ("jsonl", "json"):
        return _JsonSource(path, cfg, fmt)
    return _CsvSource(path, cfg)


# ----------------------------------------------------------------------------------------------
# Rows -> arrays
# ----------------------------------------------------------------------------------------------


class _Encoder:
    """Turns column chunks into the tokenizer's per-row arrays, with bucket memos per column."""

    def __init__(self, columns: list[str], numeric: list[bool], mean: np.ndarray, std: np.ndarray):
        self.columns, self.numeric = columns, numeric
        self.mean, self.std = mean, std
        self.col = np.array([[stable_hash(c) for c in columns]], dtype=np.int64)
        self.missing = [bucket(c, MISSING_VALUE) for c in columns]
        self.memo: list[dict[str, int]] = [{} for _ in columns]

    def _bucket(self, j: int, v: Any) -> int:
        s = _as_text(v)
        memo = self.memo[j]
        b = memo.get(s)
        if b is None:
            if len(memo) > 65536:
                memo.clear()
            b = memo[s] = bucket(self.columns[j], s)
        return b

    def _categorical(self, j: int, values: Any) -> np.ndarray:
        """Buckets of a categorical column chunk (missing cells -> the column's missing bucket)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(values, np.ndarray):
            values = values.tolist()
        if not isinstance(values, list) and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            t = pc.utf8_trim_whitespace(values)
            miss = pc.is_in(pc.utf8_lower(t), value_set=_missing_array()).to_numpy(zero_copy_only=False)
            miss |= pc.is_null(t).to_numpy(zero_copy_only=False)
            d = pc.dictionary_encode(t)
            uniq = np.array([self._bucket(j, v) for v in d.dictionary.to_pylist()] or [0], dtype=np.int32)
            out = uniq[d.indices.fill_null(0).to_numpy(zero_copy_only=False)]
            out[miss] = self.missing[j]
            return out
        values = _texts(values)
        out = np.full(len(values), self.missing[j], dtype=np.int32)
        for i, v in enumerate(values):
            if not _is_missing(v):
                out[i] = self._bucket(j, v)
        return out

    def encode(self, cols: list) -> tuple[np.ndarray, np.ndarray]:
        m = len(cols[0])
        c = len(self.columns)
        num = np.zeros((m, c), dtype=np.float32)
        cat = np.empty((m, c), dtype=np.int32)
        for j, values in enumerate(cols):
            if not self.numeric[j]:
                cat[:, j] = self._categorical(j, values)
                continue
            x, miss = _parse(values)
            ok = np.isfinite(x)
            with np.errstate(all="ignore"):  # beyond float32: saturate (never inf in a sample)
                z = np.where(ok, (x - self.mean[j]) / self.std[j], 0.0)
            num[:, j] = np.nan_to_num(z, nan=0.0, posinf=_F32_MAX, neginf=-_F32_MAX).clip(-_F32_MAX, _F32_MAX)
            cat[:, j] = np.where(ok, -1, self.missing[j])
            text = np.flatnonzero(~ok & ~miss)
            if len(text):  # text in a numeric column: a categorical value of that column
                cells = _texts(values) if not isinstance(values, np.ndarray) else values.tolist()
                for i in text:
                    cat[i, j] = self._bucket(j, cells[i])
        return num, cat


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


@dataclass
class TabularConfig(ModalityConfig):
    format: str = setting("auto", choices=FORMATS)  # auto (magic bytes, extension) | csv | parquet | jsonl | json
    delimiter: str = setting("", check=one_char, note="of one character")  # '' = sniff from the first lines (, TAB ; |)
    header: str = setting("auto", choices=("auto", "yes", "no"))  # auto | yes | no
    encoding: str = setting("", check=codec_problem, note="naming a Python codec")  # '' = BOM / UTF-8 / detected legacy encoding
    stats_rows: int = setting(100_000, lo=1)  # rows of the first pass: column types, mean/std
    numeric_share: float = setting(0.95, above=0, hi=1)  # a column is numeric when this share of its cells are numbers
    chunk_rows: int = setting(4096, lo=1)  # rows per chunk for Parquet/JSON (bounds memory)
    block_bytes: int = setting(1 << 20, lo=1)  # bytes per CSV block (bounds memory)
    decimal: str = setting("", choices=("", ".", ","))  # '' = detect (',' when the delimiter is not ',' and cells read 3,14 / 1.234,5) | . | ,
    max_record_bytes: int = setting(64 << 20, lo=1)  # longest CSV line/record (a header, one huge cell) read; blocks grow to it
    max_columns: int = setting(2047, lo=1)  # more columns -> a uniform selection of this many (recorded)
    drop: list[str] = setting(default_factory=list)  # columns left out of the tokens (`mtx fit --target`)

    def __post_init__(self) -> None:
        if isinstance(self.drop, str):  # -O tabular.drop=a,b
            self.drop = [c for c in self.drop.split(",") if c]
        self.drop = [str(c) for c in self.drop]
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if not d["drop"]:
            del d["drop"]  # absent unless used: outputs written before the option keep their config
        return d


class TabularTokenizer(Tokenizer):
    """FT-Transformer feature tokenizer: CLS + per column (identity + value) + pre-LN.

    numeric cell: e_col + x * w_col + b_col; categorical or missing cell: e_col + T[bucket].
    ``e_col, w_col, b_col`` = A[h mod 4096] + B[(h >> 12) mod 4096] (split in three) for the
    column-name hash ``h``; T has 2^16 rows.
    """

    def __init__(self, spec, seed: int):
        super().__init__()
        d = spec.dim
        self.dim = d
        with seeded(seed):
            self.col_a = nn.Parameter(torch.randn(COL_ROWS, 3 * d) * 0.02)
            self.col_b = nn.Parameter(torch.randn(COL_ROWS, 3 * d) * 0.02)
            self.cat = nn.Embedding(CAT_BUCKETS, d)
            nn.init.normal_(self.cat.weight, std=0.02)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        h = inputs["col"].long()
        num = inputs["num"].float()
        cat = inputs["cat"].long()
        mask = COL_ROWS - 1
        e, w, b = (self.col_a[h & mask] + self.col_b[(h >> 12) & mask]).split(self.dim, dim=-1)
        value = torch.where((cat < 0)[..., None], num[..., None] * w + b, self.cat(cat.clamp_min(0)))
        x = e + value
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
        return Tokens(self.norm_pre(x), None, True)


@register_modality
class tabular(Modality):  # noqa: N801 - class name == registry key == module name
    """A table gives **one sample per row**, ids `FILE#row=N` (N counts data rows from 0). A row of C
    columns becomes **C + 1 tokens** (FT-Transformer: one token per column plus CLS; a 5-column row:
    6).

    ## Which files

    CSV/TSV and other delimited text, Parquet (magic bytes), JSON Lines, JSON arrays of flat
    records. Delimited files are the ones several modalities share; the ladder, strongest first:
    [imu](imu.md) (≥ 3 accelerometer-named columns), [time_series](time_series.md) (a time column
    and numeric channels), then tabular — any delimited table. Only the first 8 KiB are looked at.

    ## From file to rows

    - **Encoding**: BOM, else UTF-8 (bad bytes replaced), else a detected legacy encoding.
    - **Delimiter**: the one of `,` TAB `;` `|` that splits the first lines into the most consistent
      number of fields (≥ 2). The first lines are read whole however long they are (a header of
      5,000 columns is ~100 KB), up to `max_record_bytes` (64 MiB; beyond it, one clear error).
    - **Decimal commas** (European locales): with a delimiter other than `,`, cells such as `3,14`,
      `1.234,5` or `1 234,5` and no cell such as `3.14` mean decimal commas, with `.` and spaces
      between digit groups as thousands separators; those cells are read as numbers (recorded as
      `decimal`; `-O tabular.decimal=,` or `.` forces it).
    - **Header**: a first line of non-numeric names that does not fit the column types of the rows
      below; leading lines that are neither header nor data (sklearn's `iris.csv` has
      `150,4,setosa,versicolor,virginica` above the rows) are skipped. Without a header, columns are
      `col0, col1, ...`.
    - **Streaming**: pyarrow's streaming CSV reader (quoting, embedded newlines) in 1 MiB blocks,
      Parquet by record batches, JSON incrementally — memory does not grow with the file (a 10 GB
      CSV streams). Rows with another field count are skipped and counted in a note. A record
      longer than a block (one cell of 50 MB) is read with blocks grown fourfold up to
      `max_record_bytes`, from where the rows already read left off (recorded as `block_bytes`);
      a longer one fails with one line naming the limit.
    - **Column types** from the first 100k rows: numeric when ≥ 95 % of the non-missing cells parse
      as numbers, else categorical. Missing cells (`""`, `NA`, `N/A`, `nan`, `null`, `None`, `-`,
      `?`, `#N/A`, non-finite numbers, JSON null) get their own value — missingness is information.
    - Numeric cells are **standardised** with the mean/std of those first rows (recorded), so
      columns in different units contribute on one scale.
    - Every decision is recorded in the `table` meta of the file's first sample (`mtx tokenize`).

    ## Tokens

    `TabularTokenizer` (FT-Transformer feature tokenizer): per column a column-identity embedding
    plus a value embedding — numeric: `e_col + x · w_col + b_col`; categorical or missing:
    `e_col + T[bucket]` with `bucket` a hash of (column, value) into a seeded table of 2¹⁶ rows.
    Columns are identified by a **hash of their name** (two seeded 4096-row tables indexed by
    independent 12-bit slices: 2²⁴ distinct columns), so any table works without a fitted
    vocabulary, and the same column name means the same thing across files. CLS first;
    pre-LayerNorm. More than 2047 columns: a uniform selection of 2047 (recorded).

    ## Weights and pooling

    `init=seeded` (FT-Transformer tokenizers are trained per dataset; the release has none);
    **mean** pooling.

    ## Try it

    ```
    mtx tokenize examples/people.csv
    ```
    """

    name = "tabular"
    extensions = _CSV_EXT + _PARQUET_EXT + _JSONL_EXT + (".json",)
    summary = "CSV/TSV, Parquet, JSON Lines, JSON record arrays: one sample per row (FT-Transformer)"
    tokens = "columns + 1 (a 5-column row: 6)"
    clip_init = False
    Config = TabularConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = table_format(head, path)
        if fmt == "parquet" and head.startswith(b"PAR1"):
            return Evidence(self.name, STRUCTURE, "Parquet magic bytes (a table)", fmt)
        if fmt == "json":
            s = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")[1:].lstrip()
            if s.startswith("{"):
                return Evidence(self.name, STRUCTURE, "JSON array of records", fmt)
            return None
        if fmt == "jsonl":
            first = head.split(b"\n", 1)[0].strip()
            if first.startswith(b"{"):
                return Evidence(self.name, STRUCTURE, "JSON Lines records", fmt)
        if fmt == "csv":
            if b"\x00" in head:
                return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()} (binary content)", fmt)
            text = head.decode("utf-8", "replace").lstrip("\ufeff")
            lines = text.splitlines(keepends=True)
            cut = len(head) >= 8192
            if cut and len(lines) > 1:
                lines = lines[:-1]
            d, width, _ = _sniff_delimiter(lines, "\t" if path.suffix.lower() in (".tsv", ".tab") else None)
            what = f"{width} columns, delimiter {d!r}" if width >= 2 else "one column"
            if cut and len(lines) == 1 and width >= 2:  # the header alone fills the head
                what = f"over {width - 1} columns (the header runs past the first 8 KiB), delimiter {d!r}"
            return Evidence(self.name, STRUCTURE, f"delimited table ({what})", fmt)
        ext = path.suffix.lower()
        if ext in self.extensions and ext != ".json":  # a JSON object is not a table
            return Evidence(self.name, EXTENSION, f"extension {ext}", fmt or "csv")  # as load reads it
        return None

    def _first_pass(self, src: _Source, cfg: TabularConfig) -> tuple[list[bool], list[_ColumnStats], int]:
        stats = [_ColumnStats() for _ in src.columns]
        seen = 0
        for cols, _ in src.chunks(min(cfg.chunk_rows, cfg.stats_rows)):
            take = min(len(cols[0]), cfg.stats_rows - seen)
            for j, values in enumerate(cols):
                x, miss = _parse(values[:take])
                stats[j].update(x, miss)
            seen += take
            if seen >= cfg.stats_rows:
                break
        numeric = [s.present > 0 and s.numeric >= cfg.numeric_share * s.present for s in stats]
        return numeric, stats, seen

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, files: int = 1) -> list[Path]:
        """``n`` rows (the samples) spread over ``files`` CSV files of 5 columns."""
        rng, out = np.random.default_rng(7), []
        cities = ["Berlin", "Lagos", "Lima", "Osaka", "Quito"]
        per = max(1, n // files)
        for f in range(files):
            p = d / f"table{f:03d}.csv"
            with open(p, "w") as fh:
                fh.write("age,income,city,score,member\n")
                for r in range(per):
                    fh.write(f"{rng.integers(18, 90)},{rng.integers(10, 200) * 1000},{cities[r % 5]},"
                             f"{rng.random():.4f},{'yes' if r % 3 else 'no'}\n")
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A CSV with a header and no row."""
        p = d / "header_only.csv"
        p.write_text("a,b,c\n")
        return [p]

    def load(self, path: Path, cfg: TabularConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        src = open_source(path, cfg, sniffed)
        numeric, stats, seen = self._first_pass(src, cfg)
        if seen == 0:
            raise DecodeError("empty table: a header but no data rows")
        names = src.columns
        keep = np.array([j for j, c in enumerate(names) if c not in cfg.drop], np.int64)
        if not len(keep):
            raise DecodeError(f"no columns left after drop={cfg.drop}")
        if len(keep) > cfg.max_columns:
            keep = keep[np.unique(np.linspace(0, len(keep) - 1, cfg.max_columns).round().astype(np.int64))]
        cols_meta = []
        for j in keep:
            s = stats[j]
            entry: dict[str, Any] = {"name": names[j], "type": "numeric" if numeric[j] else "categorical",
                                     "missing": seen - s.present}
            if numeric[j]:
                std = s.std if s.std > 0 else 1.0
                entry.update(mean=s.mean, std=std, **({"std_note": "constant column: std 1"} if s.std == 0 else {}))
            cols_meta.append(entry)
        table = {"format": src.fmt, **src.info, "columns": cols_meta, "stats_rows": seen,
                 "numeric_rule": f">= {cfg.numeric_share:.0%} of non-missing cells are numbers"}
        if cfg.drop:
            table["dropped"] = [c for c in cfg.drop if c in names]
        if len(keep) < len(names) - len(table.get("dropped", ())):
            table["column_selection"] = (f"{len(names)} columns > max_columns {cfg.max_columns}: kept "
                                         f"{len(keep)} at uniform positions")
        enc = _Encoder([names[j] for j in keep], [numeric[j] for j in keep],
                       np.array([c.get("mean", 0.0) for c in cols_meta]),
                       np.array([c.get("std", 1.0) for c in cols_meta]))
        row = 0
        for cols, notes in src.chunks(cfg.chunk_rows):
            num, cat = enc.encode([cols[j] for j in keep])
            col = enc.col
            for i in range(num.shape[0]):
                meta: dict[str, Any] = {"row": row}
                if notes[i]:
                    meta["note"] = notes[i]
                if row == 0:
                    meta["table"] = table
                yield Sample(f"row={row}", {"col": col, "num": num[i:i + 1], "cat": cat[i:i + 1]}, meta)
                row += 1

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + int(sample.arrays["col"].shape[1])

    def batch_key(self, sample: Sample) -> Hashable:
        return ("tabular", int(sample.arrays["col"].shape[1]))

    def seed(self, spec, cfg: ModalityConfig) -> int:
        # Reading options do not change the tokenizer's weights.
        return super().seed(spec, ModalityConfig())

    def tokenizer(self, spec, front, cfg):
        return TabularTokenizer(spec, self.seed(spec, cfg))
