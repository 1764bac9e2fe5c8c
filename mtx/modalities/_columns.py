"""Delimited-text helpers shared by the column-based modalities (time_series, imu, tabular).

The CSV sniffing ladder (the one place it is written down; ``mtx/sniff.py`` points here).
A CSV/TSV-like file is claimed, strongest first, by:

1. ``imu`` at ``REFINED + 2`` (37): at least three accelerometer-named columns (``acc_x``,
   ``ax``, ``Accelerometer X (g)``, ``accelerometerAccelerationX(G)``...). Reason e.g.
   "CSV with accelerometer columns acc_x, acc_y, acc_z".
2. ``time_series`` at ``REFINED`` (35): a time-like column (datetime strings in any layout
   dateutil reads — ``2003-09-19``, ``19-Sep-03``, ``Sep 19 2003``, ``19.09.2003 14:30`` —, or a
   numeric column named like ``t``, ``time``, ``timestamp``, ``date``, ``year`` that rises or
   falls monotonically: newest-first files are common)
   and at least one other numeric column. Reason e.g. "CSV with time column 'date' (datetime
   %Y-%m-%d %H:%M:%S) and 7 numeric channels".
3. ``tabular`` at ``STRUCTURE`` (30): any delimited table (one sample per row).

The same order holds for Parquet (schema instead of the first lines) and NPY (with path hints).
Only the first 8 KiB are looked at: the delimiter (``,`` ``\\t`` ``;`` ``|``, the one that splits
the lines into the same number of fields), decimal commas (a delimiter other than ``,``, cells
like ``3,14`` or ``1.234,5`` and no plain ``3.14``: those cells are read as numbers), the header
(a first row that is not numeric where the rows below are), and the cell values of the first
rows. Whitespace-aligned text is not a table.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DecodeError
from . import _budget

DELIMITERS = (",", "\t", ";", "|")
NULLS = ("", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a")
HEAD_LIMIT = 8192


@dataclass
class TableHead:
    """What the first lines of a delimited text file say."""

    delimiter: str
    header: bool
    names: list[str]  # unique column names (``col0``... when there is no header)
    rows: list[list[str]]  # the data rows seen in the head (cells as text)
    skip: int = 0  # leading comment lines
    encoding: str = "utf8"
    numeric: list[bool] = field(default_factory=list)  # per column: >= 95 % of cells are numbers
    decimal: str = "."  # "," when the numbers are written with decimal commas (the cells are converted)

    @property
    def numeric_columns(self) -> list[int]:
        return [i for i, n in enumerate(self.numeric) if n]

    def column(self, i: int) -> list[str]:
        return [r[i] for r in self.rows if i < len(r)]


# ----------------------------------------------------------------------------------------------
# Decimal commas (European locales: ``3,14``, ``1.234,5``, ``1 234,5``)
# ----------------------------------------------------------------------------------------------

_THOUSANDS = "[.\u00a0\u202f ]"  # dot, no-break space, narrow no-break space, space
# A number written with a decimal comma, or with thousands separators (groups of three digits).
COMMA_NUMBER = (r"^\s*[+-]?(\d{1,3}(" + _THOUSANDS + r"\d{3})+|\d+)(,\d+)?([eE][+-]?\d+)?\s*$")
_COMMA_NUMBER = re.compile(COMMA_NUMBER)
_HAS_COMMA = re.compile(r"^\s*[+-]?(\d{1,3}(" + _THOUSANDS + r"\d{3})+|\d+),\d+([eE][+-]?\d+)?\s*$")
_GROUPS = re.compile(r"^\s*[+-]?\d{1,3}(\.\d{3}){2,}\s*$")  # 1.234.567: dots can only be thousands
# A dot decimal that cannot be a thousands group (not exactly three digits after the dot).
_DOT_DECIMAL = re.compile(r"^\s*[+-]?\d*\.(\d{1,2}|\d{4,})([eE][+-]?\d+)?\s*$")


def decimal_comma(cells, delimiter: str) -> bool:
    """Whether the cells of a table whose delimiter is not ``,`` write numbers with a decimal comma:
    some cells are such numbers (``3,14``, ``1.234,5``, ``1.234.567``) and none is a plain dot
    decimal (``3.14``)."""
    if delimiter == ",":
        return False
    comma = dot = 0
    for c in cells:
        if _HAS_COMMA.match(c) or _GROUPS.match(c):
            comma += 1
        elif _DOT_DECIMAL.match(c):
            dot += 1
    return comma >= 1 and dot == 0


def comma_to_dot(s: str) -> str:
    """``'1.234,5'`` -> ``'1234.5'`` for a decimal-comma number; other text unchanged."""
    if _COMMA_NUMBER.match(s):
        return re.sub(_THOUSANDS, "", s.strip()).replace(",", ".")
    return s


def comma_to_dot_arrow(arr):
    """:func:`comma_to_dot` over a pyarrow string array, vectorised."""
    import pyarrow.compute as pc

    ok = pc.match_substring_regex(arr, COMMA_NUMBER)
    fixed = pc.replace_substring(pc.replace_substring_regex(pc.utf8_trim_whitespace(arr), _THOUSANDS, ""),
                                 ",", ".")
    return pc.if_else(ok, fixed, arr)


def is_null(s: str) -> bool:
    return s.strip().lower() in NULLS


def to_number(s: str) -> float | None:
    try:
        return float(s.strip())
    except ValueError:
        return None


def _numeric(cells: list[str]) -> bool:
    vals = [c for c in cells if not is_null(c)]
    return bool(vals) and sum(to_number(c) is not None for c in vals) >= 0.95 * len(vals)


def unique_names(names: list[str]) -> list[str]:
    """Column names made non-empty and unique (``a``, ``a.1``, ``col2``)."""
    seen: dict[str, int] = {}
    out = []
    for i, n in enumerate(names):
        n = n.strip() or f"col{i}"
        if n in seen:
            seen[n] += 1
            n = f"{n}.{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def decode_head(head: bytes) -> tuple[str, str] | None:
    """Text of a head that looks like text (no NUL bytes), with the encoding; None otherwise."""
    if b"\x00" in head:
        return None
    for enc, codec in (("utf8", "utf-8-sig"), ("latin-1", "latin-1")):
        try:
            return head.decode(codec), enc
        except UnicodeDecodeError:
            continue
    return None


def sniff_table(head: bytes, min_columns: int = 2) -> TableHead | None:
    """Read the first lines of a delimited text file, or None if it is not one.

    Args:
        head: the first bytes of the file (up to 8 KiB; a cut last line is ignored).
        min_columns: fewest fields per line to count as a table.
    """
    dec = decode_head(head)
    if dec is None:
        return None
    text, enc = dec
    lines = text.splitlines()
    if len(head) >= HEAD_LIMIT and not text.endswith(("\n", "\r")):
        lines = lines[:-1]
    skip = 0
    while skip < len(lines) and lines[skip].lstrip().startswith("#"):
        skip += 1
    lines = [ln for ln in lines[skip:] if ln.strip()]
    if len(lines) < 2:
        return None
    best: tuple[int, str, list[list[str]]] | None = None
    for d in DELIMITERS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=d))
        width = len(rows[0])
        if width < min_columns:
            continue
        if sum(len(r) == width for r in rows) < max(2, 0.9 * len(rows)):
            continue
        if best is None or width > best[0]:
            best = (width, d, rows)
    if best is None:
        return None
    width, delim, rows = best
    rows = [r for r in rows if len(r) == width]
    decimal = "," if decimal_comma((c for r in rows[1:] for c in r), delim) else "."
    if decimal == ",":
        rows = [[comma_to_dot(c) for c in r] for r in rows]
    first, body = rows[0], rows[1:]
    header = not all(to_number(c) is not None or is_null(c) for c in first)
    if header:
        names = unique_names(first)
    else:
        names, body = [f"col{i}" for i in range(width)], rows
    t = TableHead(delim, header, names, body, skip, enc, decimal=decimal)
    t.numeric = [_numeric(t.column(i)) for i in range(width)]
    return t


# ----------------------------------------------------------------------------------------------
# Time columns
# ----------------------------------------------------------------------------------------------

_TIME_NAME = re.compile(
    r"^(t|ts|time|times|timestamp|timestamps|date|datetime|year|epoch|seconds?|secs?|elapsed|"
    r"secondselapsed|unixtime|ms|millis|us|ns)$|time|date")
_UNIT_IN_NAME = (
    (re.compile(r"(\bns\b|nanos|nsec|\(ns\)|\[ns\]|_ns$)"), "ns"),
    (re.compile(r"(\bus\b|µs|micros|usec|\(us\)|\[us\]|_us$)"), "us"),
    (re.compile(r"(\bms\b|millis|msec|\(ms\)|\[ms\]|_ms$)"), "ms"),
    (re.compile(r"(\bs\b|\bsec\b|secs|seconds|\(s\)|\[s\]|_s$)"), "s"),
)
UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

# ISO 8601 dates and datetimes are read by pyarrow's ISO parser directly (``"iso"``).
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
# Worth asking dateutil about: short, with a digit, and only characters dates are written with.
_DATE_LIKE = re.compile(r"^(?=.*\d)[\w ,./:-]{4,40}$")
_SUFFIXES = ("st", "nd", "rd", "th")
_SAMPLES = 8  # values whose format is inferred (spread over the cells)
_VALIDATE = 50  # values every candidate format must parse


@dataclass(frozen=True)
class TimeColumn:
    index: int
    name: str
    kind: str  # "datetime" | "numeric"
    unit: str | None = None  # numeric: s/ms/us/ns from the name, None when the name says nothing
    format: str | None = None  # datetime: "iso" or a strptime format (inferred by dateutil)


def norm_name(name: str) -> str:
    """Lower-case, units in brackets removed, only letters and digits kept."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"[\(\[].*?[\)\]]", "", name.lower()))


def time_unit(name: str) -> str | None:
    low = name.lower()
    for rx, unit in _UNIT_IN_NAME:
        if rx.search(low):
            return unit
    return None


def is_time_name(name: str) -> bool:
    """'time', 'Time (s)', 'timestamp_ms', 't_us', 'date', 'year', 'seconds_elapsed'..."""
    first = re.split(r"[^a-z0-9]+", name.strip().lower())[0]
    return bool(_TIME_NAME.search(norm_name(name)) or _TIME_NAME.match(first))


def datetime_format(cells: list[str]) -> str | None:
    """The format of a column of datetime strings, or None when it is not one.

    ISO 8601 cells give ``"iso"``. Any other layout (``19-Sep-03``, ``Sep 19 2003``,
    ``19 September 2003``, ``19.09.2003 14:30``, ``9/19/2003 2:30 PM``...) is inferred by
    **dateutil**, the parser pandas and matplotlib rely on: a few cells are parsed (month-first
    and day-first), each parse is mapped back to a strptime format (which token is the day, the
    month name, the two-digit year...), and the first candidate that parses *every* sampled
    cell wins — the column is then parsed vectorised by pyarrow with that one format. A format
    must name a year and a month: times of day alone and bare numbers are not dates.
    """
    vals = [c.strip() for c in cells if not is_null(c)]
    if not vals:
        return None
    if all(_ISO.match(v) for v in vals):
        return "iso"
    if not all(_DATE_LIKE.match(v) for v in vals):
        return None
    if infer_datetime_format(vals[0]) is None and infer_datetime_format(vals[0], True) is None:
        return None  # the first cell is no date: not a datetime column (keeps sniffing cheap)
    check = vals[:_VALIDATE]
    picks = sorted({0, len(vals) - 1, *np.linspace(0, len(vals) - 1, _SAMPLES).round().astype(int).tolist()})
    tried: set[str] = set()
    for dayfirst in (False, True):
        for i in picks:
            fmt = infer_datetime_format(vals[i], dayfirst)
            if fmt is None or fmt in tried:
                continue
            tried.add(fmt)
            try:
                parse_datetimes(np.array(check, dtype=object), fmt)
            except DecodeError:
                continue
            return fmt
    return None


_DIRECTIVES = {"%Y", "%y", "%m", "%d", "%b", "%B", "%a", "%A", "%H", "%I", "%M", "%S", "%p", "%f"}


def infer_datetime_format(text: str, dayfirst: bool = False) -> str | None:
    """The strptime format of one datetime string as dateutil reads it, or None.

    dateutil decides what each token is; this maps its answer back onto the tokens, so the
    format reproduces the string (``'19-Sep-03'`` -> ``'%d-%b-%y'``). Fractional seconds
    become ``%f`` after ``%S``. Returns None for what dateutil cannot parse, for tokens it
    ignored (time-zone names, words) and for formats without a year and a month.
    """
    import datetime as _dt

    try:
        from dateutil import parser
    except ImportError:  # pragma: no cover - dependency
        from ..errors import MissingDependency

        raise MissingDependency("python-dateutil is needed to read datetime columns; "
                                "pip install python-dateutil") from None
    try:
        dt = parser.parse(text, dayfirst=dayfirst, default=_dt.datetime(1900, 1, 1))
    except (ValueError, OverflowError, TypeError):
        return None
    tokens = re.findall(r"\d+|[A-Za-z]+|[^\dA-Za-z]+", text)
    ampm = any(t.lower() in ("am", "pm") for t in tokens)
    used: list[str] = []
    out: list[str] = []
    for tok in tokens:
        low = tok.lower()
        if tok.isdigit():
            d = _digit_directive(tok, dt, used, ampm, dayfirst, out[-1] if out else "")
        elif tok.isalpha():
            names = {"%b": dt.strftime("%b"), "%B": dt.strftime("%B"), "%a": dt.strftime("%a"),
                     "%A": dt.strftime("%A")}
            d = next((k for k, v in names.items() if low == v.lower() and k not in used), None)
            if low in ("am", "pm"):
                d = "%p"
            elif d is None and low in _SUFFIXES and used[-1:] == ["%d"]:
                d = tok  # 19th: a literal after the day
            elif d is None and low == "t" and used[-1:] in (["%d"], ["%m"]):
                d = tok  # a date and a time joined by T
        else:
            d = tok.replace("%", "%%")
        if d is None:
            return None
        out.append(d)
        if d in _DIRECTIVES:
            used.append(d)
    have = set(used)
    if not have & {"%Y", "%y"} or not have & {"%m", "%b", "%B"}:
        return None
    return "".join(out)


def _digit_directive(tok: str, dt, used: list[str], ampm: bool, dayfirst: bool, after: str) -> str | None:
    """Which field of ``dt`` the digits ``tok`` are, given the fields already placed."""
    v, n = int(tok), len(tok)
    if used[-1:] == ["%S"] and after in (".", ","):
        return "%f" if "%f" not in used else None
    if n == 4:
        return "%Y" if v == dt.year and "%Y" not in used else None
    if n > 2:
        return None
    hour = "%I" if ampm else "%H"
    checks = {"%d": v == dt.day, "%m": v == dt.month, "%y": n == 2 and v == dt.year % 100,
              hour: v == ((dt.hour % 12 or 12) if ampm else dt.hour), "%M": v == dt.minute,
              "%S": v == dt.second}
    if after == ":":
        order = [hour, "%M", "%S"]
    else:
        date = ["%m", "%d"] if used[:1] in (["%Y"], ["%y"]) or not dayfirst else ["%d", "%m"]
        order = [*date, "%y", hour, "%M", "%S"]
    return next((d for d in order if d not in used and checks[d]), None)


def _monotonic(values: list[float]) -> bool:
    """Rising, or falling (newest first, as finance and logger exports often are), not constant."""
    if len(values) < 2 or values[-1] == values[0]:
        return False
    pairs = list(zip(values, values[1:], strict=False))
    return all(b >= a for a, b in pairs) or all(b <= a for a, b in pairs)


def find_time_column(t: TableHead, require_monotonic: bool = True) -> TimeColumn | None:
    """The time-like column: datetime strings, or a (monotonic) numeric column with a time name."""
    for i, name in enumerate(t.names):
        if not t.numeric[i]:
            fmt = datetime_format(t.column(i))
            if fmt:
                return TimeColumn(i, name, "datetime", format=fmt)
    for i, name in enumerate(t.names):
        if t.numeric[i] and t.header and is_time_name(name):
            vals = [v for v in (to_number(c) for c in t.column(i)) if v is not None]
            if not require_monotonic or _monotonic(vals):
                return TimeColumn(i, name, "numeric", unit=time_unit(name))
    return None


def parse_datetimes(values, fmt: str) -> np.ndarray:
    """Datetime strings -> float64 seconds since the epoch (NaN where missing).

    ``fmt`` is ``"iso"`` or a strptime format; a trailing ``%f`` (fractional seconds, which
    pyarrow's strptime lacks) is split off and added back."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(values, type=pa.string()) if not isinstance(values, pa.Array) else values
    arr = pc.utf8_trim_whitespace(arr)
    frac_us = None
    try:
        if fmt == "iso":
            arr = pc.replace_substring_regex(arr, r"(Z|[+-]\d{2}:?\d{2})$", "")  # local time kept
            arr = pc.replace_substring(arr, "T", " ")
            ts = pc.cast(arr, pa.timestamp("us"))
        else:
            if fmt.endswith("%f") and fmt[-3:-2] in (".", ","):
                parts = pc.extract_regex(arr, r"^(?P<base>.*?)[.,](?P<frac>\d+)$")
                has = pc.is_valid(parts)
                frac = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.struct_field(parts, "frac"), 6, "0"), 0, 6)
                frac_us = pc.fill_null(pc.cast(frac, pa.int64()), 0).to_numpy(zero_copy_only=False)
                arr = pc.if_else(has, pc.struct_field(parts, "base"), arr)
                fmt = fmt[:-3]
            ts = pc.strptime(arr, format=fmt, unit="us", error_is_null=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DecodeError(f"time values do not all parse as {fmt} datetimes: {str(e)[:120]}") from None
    out = pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if frac_us is not None:
        out = out + frac_us
    return out / 1e6


# ----------------------------------------------------------------------------------------------
# Reading columns (streamed in chunks)
# ----------------------------------------------------------------------------------------------


def to_float(arr) -> np.ndarray:
    """A pyarrow array (numbers or text) -> float64 numpy, NaN for missing or non-numeric cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    text = pc.cast(arr, pa.string())
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except pa.ArrowInvalid:
        return np.array([np.nan if (v := to_number(s or "")) is None else v
                         for s in text.to_pylist()], dtype=np.float64)


def iter_csv(path: Path, t: TableHead, columns: list[str], chunk_bytes: int = 1 << 22
             ) -> Iterator[dict[str, object]]:
    """Stream ``columns`` of a delimited file as dicts of pyarrow text arrays, chunk by chunk.

    Rows with the wrong number of fields are skipped.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(skip_rows=t.skip + (1 if t.header else 0), column_names=t.names,
                             block_size=chunk_bytes, encoding=t.encoding)
    parse = pacsv.ParseOptions(delimiter=t.delimiter, invalid_row_handler=lambda row: "skip")
    conv = pacsv.ConvertOptions(include_columns=columns,
                                column_types={c: pa.string() for c in columns},
                                strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=conv)
        for batch in reader:
            yield {c: batch.column(c) for c in columns}
    except (pa.ArrowInvalid, OSError) as e:
        raise DecodeError(f"cannot parse the table: {str(e).splitlines()[0][:200]}") from None


def read_csv_columns(path: Path, t: TableHead, numeric: list[str], time: TimeColumn | None = None,
                     each: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read ``numeric`` columns as float64 (NaN for missing/invalid) and the time column as float64
    seconds (datetime) or raw numbers (numeric time), streaming the file in chunks.

    ``each``: bytes the caller will hold per value (row x column) once everything is read; the
    rows counted so far are checked against the per-sample memory budget after every chunk."""
    cols = list(numeric) + ([time.name] if time and time.name not in numeric else [])
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    tparts: list[np.ndarray] = []
    rows = 0
    for chunk in iter_csv(path, t, cols):
        rows += len(chunk[cols[0]]) if cols else 0
        if each:
            _budget.check(rows * len(cols), f"values ({rows:,} rows x {len(cols)} columns) so far", each, "holds")
        for c in numeric:
            parts[c].append(to_float(comma_to_dot_arrow(chunk[c]) if t.decimal == "," else chunk[c]))
        if time is not None:
            if time.kind == "datetime":
                tparts.append(parse_datetimes(chunk[time.name], time.format or "iso"))
            else:
                tc = chunk[time.name]
                tparts.append(to_float(comma_to_dot_arrow(tc) if t.decimal == "," else tc))
    data = {c: (np.concatenate(parts[c]) if parts[c] else np.zeros(0)) for c in numeric}
    tv = (np.concatenate(tparts) if tparts else np.zeros(0)) if time is not None else None
    return data, tv


def parquet_columns(path: Path) -> list[tuple[str, str]]:
    """(name, kind) per Parquet column from the footer only: kind is number/datetime/text."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad footers
        raise DecodeError(f"cannot read the Parquet schema: {str(e)[:160]}") from None
    out = []
    for f in schema:
        ty = f.type
        if pa.types.is_integer(ty) or pa.types.is_floating(ty) or pa.types.is_decimal(ty):
            kind = "number"
        elif pa.types.is_timestamp(ty) or pa.types.is_date(ty):
            kind = "datetime"
        else:
            kind = "text"
        out.append((f.name, kind))
    return out


def read_parquet_columns(path: Path, columns: list[str], each: float = 0.0) -> dict[str, np.ndarray]:
    """Read Parquet columns batch by batch as float64 (timestamps/dates as epoch seconds).

    ``each``: bytes the caller holds per value; the rows the footer declares are checked against
    the per-sample memory budget before any is read."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    try:
        pf = pq.ParquetFile(path)
        if each:
            rows = int(pf.metadata.num_rows)
            _budget.check(rows * len(columns), f"values ({rows:,} rows x {len(columns)} columns)", each)
        for batch in pf.iter_batches(columns=columns, batch_size=1 << 16):
            for c in columns:
                a = batch.column(c)
                if pa.types.is_timestamp(a.type) or pa.types.is_date(a.type):
                    a = pc.cast(pc.cast(a, pa.timestamp("us")), pa.int64())
                    parts[c].append(a.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6)
                else:
                    parts[c].append(to_float(a))
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DecodeError(f"cannot read Parquet data: {str(e)[:160]}") from None
    return {c: (np.concatenate(p) if p else np.zeros(0)) for c, p in parts.items()}


def read_npy_header(head: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of an ``.npy`` file from its first bytes, or None."""
    if not head.startswith(b"\x93NUMPY"):
        return None
    from numpy.lib import format as npf

    try:
        f = io.BytesIO(head)
        version = npf.read_magic(f)
        reader = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
        shape, _fortran, dtype = reader(f)
    except Exception:  # noqa: BLE001 - any malformed header means "not a readable npy"
        return None
    return tuple(int(s) for s in shape), dtype


def path_has_hint(path: Path, words: tuple[str, ...]) -> str | None:
    """The first of ``words`` that is a path component or a name token (split on _-. and space)."""
    tokens: set[str] = set()
    for part in path.parts[-4:]:
        low = part.lower()
        tokens.add(low)
        tokens.update(t for t in re.split(r"[_\-.\s]+", low) if t)
    for w in words:
        if w in tokens:
            return w
    return None


def load_array(path: Path, each: float = 0.0) -> np.ndarray:
    """A numeric array from .npy (or the largest numeric array of an .npz); never unpickles.

    Only headers are read before the size is known: ``each`` (bytes the caller holds per value)
    times the declared values is checked against the per-sample memory budget, and an .npz
    member's declared size against what its compressed bytes can hold; then only the chosen
    member is decompressed."""
    try:
        if path.suffix.lower() == ".npz":
            return _load_npz_member(path, each)
        a = np.load(path, allow_pickle=False, mmap_mode="r")
    except DecodeError:
        raise
    except ValueError as e:
        if "mmap length" in str(e):  # the header declares more than the file holds: nothing is read
            raise DecodeError(f"truncated NPY: its header declares more data than the file holds ({e})") from None
        raise DecodeError(f"cannot load the array (object arrays are refused): {e}") from None
    except (OSError, EOFError) as e:
        raise DecodeError(f"cannot load the array: {e}") from None
    if a.dtype.kind not in "biuf":
        raise DecodeError(f"array dtype {a.dtype} is not numeric")
    if each:
        _budget.check(a.size, f"values (an NPY array of shape {tuple(a.shape)})", max(each, a.dtype.itemsize))
    return np.asarray(a)


def _load_npz_member(path: Path, each: float) -> np.ndarray:
    """The .npz member with the most values, chosen from the members' NPY headers."""
    import zipfile
    import zlib

    from numpy.lib import format as npf

    try:
        with zipfile.ZipFile(path) as zf:
            heads = []
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = npf.read_magic(f)
                    reader = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
                    shape, fortran, dtype = reader(f)
                if dtype.hasobject:
                    raise ValueError(f"Object arrays cannot be loaded when allow_pickle=False ({info.filename})")
                if dtype.kind in "biuf":
                    heads.append((int(np.prod(shape, dtype=np.int64)), info, shape, dtype))
            if not heads:
                raise DecodeError("the .npz holds no numeric array")
            n, info, shape, dtype = max(heads, key=lambda h: h[0])
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _budget.DEFLATE_RATIO
            _budget.check_stored(n * dtype.itemsize, info.compress_size + 64, ratio,
                                 f"NPZ array {info.filename[:-4]!r} {tuple(shape)}")
            if each:
                _budget.check(n, f"values (NPZ array {info.filename[:-4]!r} of shape {tuple(shape)})",
                              max(each, dtype.itemsize))
            with zf.open(info) as f:
                return npf.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error) as e:
        raise DecodeError(f"corrupt NPZ archive: {e}") from None
