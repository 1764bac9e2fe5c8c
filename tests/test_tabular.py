"""tabular: sniffing, CSV dialects and header decisions, Parquet/JSON, column types, tokens."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SOURCES, run_modality

from mtx.encoder import pool
from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.modalities._base import STRUCTURE
from mtx.modalities.tabular import CAT_BUCKETS, MISSING_VALUE, bucket, stable_hash
from mtx.sniff import sniff

IRIS_HEAD = "150,4,setosa,versicolor,virginica\n5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,0\n7.0,3.2,4.7,1.4,1\n6.3,3.3,6.0,2.5,2\n"
RECORDS = [
    {"age": 31, "city": "Paris", "score": 0.5, "member": True, "note": "a, b"},
    {"age": 45, "city": "Lyon", "score": None, "member": False, "note": "x"},
    {"age": None, "city": None, "score": 2.25, "member": True, "note": "line\nbreak"},
    {"age": 27, "city": "Paris", "score": -1.0, "member": False, "note": ""},
]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def load(path: Path, **cfg):
    mod = get_modality("tabular")
    return list(mod.load(path, mod.config(**cfg)))


def stack(samples, key):
    return np.concatenate([s.arrays[key] for s in samples])


def records_csv(path: Path) -> Path:
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s

    lines = [",".join(RECORDS[0])] + [",".join(cell(r[k]) for k in RECORDS[0]) for r in RECORDS]
    return write(path, "\n".join(lines) + "\n")


# -- sniffing ----------------------------------------------------------------------------------


def test_sniff_tables(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = records_csv(tmp_path / "t.csv")
    tsv = write(tmp_path / "t.tsv", "a\tb\n1\t2\n")
    jsonl = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in RECORDS))
    arr = write(tmp_path / "t.json", json.dumps(RECORDS))
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "t.data")  # Parquet magic, odd extension
    for p, why in [(csv, "5 columns, delimiter ','"), (tsv, "2 columns, delimiter '\\t'"),
                   (jsonl, "JSON Lines"), (arr, "JSON array of records"), (tmp_path / "t.data", "Parquet")]:
        dec = sniff(p)
        assert dec.modality == "tabular" and dec.candidates[0].strength == STRUCTURE, p
        assert why in dec.reason


@pytest.mark.parametrize("source", SOURCES)
def test_sniff_leaves_graph_json_and_time_series_alone(tmp_path, sample_files, source):
    assert sniff(sample_files[source].path("graph/miserables_nodelink.json")).modality == "graph"
    obj = write(tmp_path / "config.json", '{"a": 1}')
    assert get_modality("tabular").sniff(obj.read_bytes(), obj) is None
    # A time column: time_series (REFINED) beats tabular's STRUCTURE reading.
    ts = write(tmp_path / "series.csv", "time,value\n" + "".join(f"{i},{np.sin(i):.4f}\n" for i in range(50)))
    dec = sniff(ts)
    assert dec.modality != "tabular" and any(c.modality == "tabular" for c in dec.candidates)


# -- shapes ------------------------------------------------------------------------------------


def test_five_column_row_gives_six_tokens_b16(tmp_path, b16_model):
    path = write(tmp_path / "five.csv", "a,b,c,d,e\n1,2,x,4.5,\n3,4,y,,z\n")
    dec, samples, tokens, hidden = run_modality(b16_model, path)
    assert dec.modality == "tabular"
    assert [s.key for s in samples] == ["row=0", "row=1"]
    assert tokens.x.shape == (2, 6, 768) and hidden.shape == (2, 6, 768)
    assert tokens.pad_mask is None and tokens.has_cls
    assert get_modality("tabular").cost(samples[0], b16_model.spec, get_modality("tabular").config()) == 6


# -- CSV dialects and header decisions ---------------------------------------------------------


def test_iris_style_first_line_is_skipped_and_recorded(tmp_path):
    samples = load(write(tmp_path / "iris.csv", IRIS_HEAD))
    assert len(samples) == 4 and samples[0].key == "row=0"
    table = samples[0].meta["table"]
    assert table["header"] == "none" and table["skipped_lines"] == 1
    assert "150,4,setosa" in table["header_reason"] and "skipped" in table["header_reason"]
    assert [c["name"] for c in table["columns"]] == [f"col{i}" for i in range(5)]
    assert all(c["type"] == "numeric" for c in table["columns"])
    first = table["columns"][0]
    assert first["mean"] == pytest.approx(np.mean([5.1, 4.9, 7.0, 6.3]))
    assert first["std"] == pytest.approx(np.std([5.1, 4.9, 7.0, 6.3]))
    np.testing.assert_allclose(samples[0].arrays["num"][0, 0], (5.1 - first["mean"]) / first["std"], rtol=1e-6)
    assert "table" not in samples[1].meta  # file-level facts once, on the first row


@pytest.mark.parametrize("text,header,forced,names", [
    ("name,age\nann,31\nbob,45\n", "first row", "auto", ["name", "age"]),
    ("1,2,3\n4,5,6\n", "none", "auto", ["col0", "col1", "col2"]),
    ("city,country\nParis,France\nLyon,France\n", "first row", "auto", ["city", "country"]),
    ("Paris,France\nLyon,France\nNice,France\n", "none", "auto", ["col0", "col1"]),  # 'France' repeats
    ("x,x,\n1,2,3\n", "first row", "yes", ["x", "x.1", "col2"]),  # duplicate/empty names made unique
    ("a,b\n1,2\n", "none", "no", ["col0", "col1"]),
])
def test_header_decisions(tmp_path, text, header, forced, names):
    samples = load(write(tmp_path / "t.csv", text), header=forced)
    table = samples[0].meta["table"]
    assert table["header"] == header, table["header_reason"]
    assert [c["name"] for c in table["columns"]] == names
    assert len(samples) == text.count("\n") - (header == "first row")


def test_preamble_lines_and_blank_lines(tmp_path):
    samples = load(write(tmp_path / "p.csv", "\n# exported 2024\n\nname,age\nann,31\n\nbob,45\n"))
    table = samples[0].meta["table"]
    assert [c["name"] for c in table["columns"]] == ["name", "age"] and len(samples) == 2
    assert table["header_reason"].startswith("line 2 skipped: 1 fields") and "line 4 ('name,age')" in table["header_reason"]


def test_forced_delimiter(tmp_path):
    samples = load(write(tmp_path / "t.csv", "a;b\n1;2\n"), delimiter=";")
    table = samples[0].meta["table"]
    assert table["delimiter"] == ";" and table["delimiter_reason"] == "forced by config"
    assert [c["name"] for c in table["columns"]] == ["a", "b"]


@pytest.mark.parametrize("name,text,delim", [
    ("semi.csv", "a;b;c\n1;2,5;x\n3;4,5;y\n", ";"),
    ("tabs.tsv", "a\tb\tc\n1\t2\tx y\n3\t4\tz\n", "\t"),
    ("pipes.csv", "a|b|c\n1|2|x\n3|4|y\n", "|"),
])
def test_delimiters(tmp_path, name, text, delim):
    samples = load(write(tmp_path / name, text))
    table = samples[0].meta["table"]
    assert table["delimiter"] == delim and [c["name"] for c in table["columns"]] == ["a", "b", "c"]
    assert len(samples) == 2


def test_quoting_and_embedded_newlines(tmp_path):
    path = write(tmp_path / "q.csv", 'id,text,v\n1,"hello, world",2\n2,"two\nlines",3\n3,"say ""hi""",4\n')
    samples = load(path)
    assert len(samples) == 3
    buckets = stack(samples, "cat")[:, 1]
    assert list(buckets) == [bucket("text", "hello, world"), bucket("text", "two\nlines"), bucket("text", 'say "hi"')]


def test_malformed_rows_are_skipped_and_noted(tmp_path):
    samples = load(write(tmp_path / "r.csv", "a,b,c\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n13,14,15\n"))
    assert len(samples) == 3
    assert "2 malformed row(s) skipped" in samples[0].meta["note"]


# -- formats agree -----------------------------------------------------------------------------


def test_csv_jsonl_json_parquet_give_the_same_tokens(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [records_csv(tmp_path / "t.csv"),
             write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in RECORDS) + "\n"),
             write(tmp_path / "t.json", json.dumps(RECORDS, indent=1))]
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "t.parquet", row_group_size=2)
    paths.append(tmp_path / "t.parquet")
    ref = load(paths[0])
    types = [c["type"] for c in ref[0].meta["table"]["columns"]]
    assert types == ["numeric", "categorical", "numeric", "categorical", "categorical"]
    for p in paths[1:]:
        got = load(p)
        assert [s.key for s in got] == [s.key for s in ref], p
        for key in ("col", "num", "cat"):
            np.testing.assert_allclose(stack(got, key), stack(ref, key), rtol=1e-6, err_msg=f"{p.name} {key}")


def test_json_array_streams_record_by_record(tmp_path):
    rows = [{"k": i, "s": "v" * (i % 7)} for i in range(3000)]
    path = write(tmp_path / "big.json", json.dumps(rows))
    samples = load(path, chunk_rows=128)
    assert len(samples) == 3000 and samples[-1].key == "row=2999"


# -- column types, missing values, statistics --------------------------------------------------


def test_numeric_threshold_and_text_in_numeric_columns(tmp_path):
    body = [str(i) for i in range(30)]
    one_bad = body[:29] + ["oops"]  # 96.7 % numbers -> numeric
    two_bad = body[:28] + ["oops", "eh"]  # 93.3 % -> categorical
    text = "a,b\n" + "".join(f"{x},{y}\n" for x, y in zip(one_bad, two_bad, strict=True))
    samples = load(write(tmp_path / "t.csv", text))
    cols = samples[0].meta["table"]["columns"]
    assert [c["type"] for c in cols] == ["numeric", "categorical"]
    cat = stack(samples, "cat")
    assert (cat[:29, 0] == -1).all() and cat[29, 0] == bucket("a", "oops")
    assert cat[0, 1] == bucket("b", "0")


def test_missing_cells_get_their_own_value(tmp_path, tiny_model):
    path = write(tmp_path / "m.csv", "a,b\n1,x\n,x\nNA,\n1,?\n")
    samples = load(path)
    cat = stack(samples, "cat")
    miss_a, miss_b = bucket("a", MISSING_VALUE), bucket("b", MISSING_VALUE)
    assert list(cat[:, 0]) == [-1, miss_a, miss_a, -1]
    assert list(cat[:, 1]) == [bucket("b", "x"), bucket("b", "x"), miss_b, miss_b]
    assert samples[0].meta["table"]["columns"][0]["missing"] == 2
    _, _, tokens, hidden = run_modality(tiny_model, path)
    v = pool(hidden, tokens, "mean")
    assert not torch.allclose(v[0], v[1])  # a missing value is not the mean value


def test_statistics_come_from_the_first_stats_rows(tmp_path):
    vals = list(range(100))
    samples = load(write(tmp_path / "s.csv", "v\n" + "\n".join(map(str, vals)) + "\n"), stats_rows=10)
    col = samples[0].meta["table"]["columns"][0]
    assert samples[0].meta["table"]["stats_rows"] == 10
    assert col["mean"] == pytest.approx(4.5) and col["std"] == pytest.approx(np.std(range(10)))


def test_column_hashes_and_buckets_are_stable():
    assert stable_hash("age") == stable_hash("age") != stable_hash("Age")
    assert 0 <= bucket("city", "Paris") < CAT_BUCKETS
    # Pinned: a change would silently change every stored tabular vector.
    assert stable_hash("age") == 0x7EAFF8BC5F19E7DB and bucket("city", "Paris") == 26121


def test_max_columns_keeps_a_uniform_selection(tmp_path):
    header = ",".join(f"c{i}" for i in range(10))
    samples = load(write(tmp_path / "w.csv", header + "\n" + ",".join("1" * 10) + "\n"), max_columns=4)
    table = samples[0].meta["table"]
    assert [c["name"] for c in table["columns"]] == ["c0", "c3", "c6", "c9"]
    assert "10 columns > max_columns 4" in table["column_selection"]
    assert samples[0].arrays["col"].shape == (1, 4)


# -- batching and vectors ----------------------------------------------------------------------


def test_rows_batched_across_files_equal_alone(tmp_path, tiny_model):
    mod = get_modality("tabular")
    a = load(write(tmp_path / "a.csv", "p,q,r\n1,x,2\n3,y,4\n"))
    b = load(write(tmp_path / "b.csv", "u,v,w\nfoo,1.5,bar\n"))
    assert mod.batch_key(a[0]) == mod.batch_key(b[0])
    tok = tiny_model.tokenizer("tabular", mod.config())

    def vec(samples):
        with torch.inference_mode():
            t = tok(mod.collate(samples))
        return pool(tiny_model.encode_tokens(t), t, "mean")

    torch.testing.assert_close(vec(a + b), torch.cat([vec(a), vec(b)]), atol=1e-5, rtol=1e-5)
    # Same values under other column names give other vectors (column identity matters).
    c = load(write(tmp_path / "c.csv", "p2,q2,r2\n1,x,2\n3,y,4\n"))
    assert not torch.allclose(vec(a), vec(c), atol=1e-3)


def test_tokenizer_tables(tiny_model):
    mod = get_modality("tabular")
    tok = mod.tokenizer(tiny_model.spec, None, mod.config())
    assert tok.init == "seeded" and tok.cat.weight.shape == (2**16, tiny_model.spec.dim)
    assert mod.seed(tiny_model.spec, mod.config(header="no")) == mod.seed(tiny_model.spec, mod.config())


# -- memory ------------------------------------------------------------------------------------


def test_rows_are_streamed_not_read_up_front(tmp_path, monkeypatch):
    import mtx.modalities.tabular as tabular_mod

    read = []
    original = tabular_mod._Utf8Stream.readinto

    def counting(self, b):
        n = original(self, b)
        read.append(n)
        return n

    monkeypatch.setattr(tabular_mod._Utf8Stream, "readinto", counting)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 3)).round(4)
    path = write(tmp_path / "big.csv", "a,b,c,k\n" + "".join(f"{a},{b},{c},k{int(abs(a) * 10)}\n" for a, b, c in x))
    mod = get_modality("tabular")
    block = 1 << 14
    rows = mod.load(path, mod.config(stats_rows=1000, block_bytes=block))
    first = [next(rows) for _ in range(100)]
    assert first[-1].key == "row=99"
    # Two passes have started (statistics, rows); each holds pyarrow's bounded read-ahead
    # (about 32 blocks), never the file.
    assert sum(read) <= 2 * 40 * block < path.stat().st_size / 2
    assert max(read) <= block
    assert 100 + sum(1 for _ in rows) == 200_000
    # Peak RSS for a 1M-row vs a 4M-row CSV: benchmarks/tabular_memory.py


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,data,match", [
    ("bin.csv", bytes(range(256)) * 8, "binary content"),
    ("empty.csv", b"", "empty"),
    ("head.csv", b"a,b,c\n", "no data rows"),
    ("bad.jsonl", b'{"a": 1}\n{"a": \n', "line 2: invalid JSON"),
    ("cut.json", b'[{"a": 1}, {"a": 2', "invalid JSON array|truncated"),
    ("list.json", b"[[1, 2], [3, 4]]", "not an object"),
    ("bad.parquet", b"PAR1" + b"\x00" * 64, "Parquet"),
])
def test_bad_input_is_a_clear_error(tmp_path, name, data, match):
    with pytest.raises(DecodeError, match=match):
        load(write(tmp_path / name, data))
