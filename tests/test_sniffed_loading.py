"""Loaders use what sniffing learned (``Sniffed``: head bytes + format) instead of opening the file
again to re-detect its format.

The open counts are pinned per format: sniffing reads the head once, and a loader opens the file
only to decode it (plus the bounded structure checks some sniffers make). A new re-detection in a
loader fails here. Counted with a Python audit hook, so opens inside C decoders (libsndfile,
FFmpeg, HDF5) are not seen; the strace counts behind these numbers are in the issue 14 note.
"""
from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from mtx._synth import GENERATORS
from mtx.modalities import get_modality
from mtx.sniff import sniff

_watch: dict[str, list[str]] = {}  # path -> one entry per open while it is watched


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, Path)) and str(args[0]) in _watch:
        _watch[str(args[0])].append(event)


sys.addaudithook(_audit)  # hooks cannot be removed; this one only counts watched paths


def _opens(path: Path, fn) -> tuple[int, object]:
    _watch[str(path)] = []
    try:
        out = fn()
    finally:
        n = len(_watch.pop(str(path)))
    return n, out


# -- inputs: one small file per format a loader tells apart ------------------------------------------


def _synth(name):
    def make(d: Path) -> Path:
        return GENERATORS[name](d, 1)[0]
    return make


def _write(rel: str, data: str | bytes):
    def make(d: Path) -> Path:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data)
        return p
    return make


def _npy(rel: str, a: np.ndarray):
    def make(d: Path) -> Path:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, a)
        return p
    return make


def _parquet(d: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = d / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), p)
    return p


def _png(d: Path) -> Path:
    from PIL import Image

    p = d / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
    return p


def _flac(d: Path) -> Path:
    import soundfile as sf

    p = d / "a.flac"
    sf.write(p, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    return p


def _gif(d: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    p = d / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return p


def _tiff_cube(d: Path) -> Path:
    import tifffile

    p = d / "cube.tif"
    a = (np.random.default_rng(0).random((8, 16, 16)) * 1000).astype(np.uint16)
    tifffile.imwrite(p, a, planarconfig="separate")
    return p


def _envi(d: Path) -> Path:
    a = (np.arange(6 * 5 * 20) % 97).astype("<u2").reshape(6, 5, 20)
    p = d / "cube.hdr"
    p.write_text("ENVI\nsamples = 5\nlines = 6\nbands = 20\nheader offset = 0\ndata type = 12\n"
                 "interleave = bip\nbyte order = 0\n")
    (d / "cube.raw").write_bytes(a.tobytes())
    return p


def _dicom(d: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "CR", 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 24, 20, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(24 * 20) % 4000).astype("<u2").tobytes()
    p = d / "scan.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def _wav_stereo(d: Path) -> Path:
    p = d / "stereo.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.arange(4000) % 300).astype("<i2").tobytes())
    return p


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    """Varying values (a constant array has no content: its load fails, issue #17 item 4)."""
    return (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(np.float32)


_NODE_LINK = json.dumps({"nodes": [{"id": i} for i in range(4)],
                         "links": [{"source": i, "target": (i + 1) % 4} for i in range(4)]})
_GRAPHML = ('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault='
            '"undirected"><node id="a"/><node id="b"/><node id="c"/><edge source="a" target="b"/>'
            '<edge source="b" target="c"/></graph></graphml>')

# (modality, format named by Evidence.format, opens by sniff + load, maker). Sniffing opens once
# to read the head; the rest is decoding and the bounded checks some sniffers make (FLIR segments
# in a JPEG, .mat variables, TIFF pages, GIF frames). point_cloud's I/O is being rewritten and is
# pinned there.
CASES = [
    ("image", "jpeg", 3, _synth("image")),  # + infrared's FLIR-segment check, + Pillow
    ("image", "png", 2, _png),
    ("infrared", "png", 2, _synth("infrared")),
    ("xray", "png", 2, _synth("xray")),
    ("xray", "dicom", 3, _dicom),  # pydicom opens twice: header, then the pixel data
    ("video", "isobmff", 1, _synth("video")),  # FFmpeg opens it in C
    ("video", "gif", 3, _gif),  # + the frame count in sniff, + Pillow
    ("audio", "wav", 1, _synth("audio")),  # libsndfile opens it in C
    ("audio", "wav", 1, _wav_stereo),
    ("audio", "flac", 1, _flac),
    ("hyperspectral", "mat5", 4, _synth("hyperspectral")),  # + whosmat in sniff and load, + loadmat
    ("hyperspectral", "envi", 2, _envi),  # + the header parse (the data file is another path)
    ("hyperspectral", "tiff", 4, _tiff_cube),  # + infrared's and hyperspectral's page checks, + read
    ("hyperspectral", "npy", 4, _npy("hsi/cube.npy", _ramp((8, 8, 20)))),  # np.load mmap: 3
    ("tabular", "csv", 5, _synth("tabular")),  # + encoding head, + text head, + two passes
    ("tabular", "csv", 5, _write("t.tsv", "a\tb\n1\tx\n2\ty\n")),
    ("tabular", "jsonl", 5, _write("t.jsonl", '{"a": 1}\n{"a": 2}\n')),
    ("tabular", "json", 5, _write("t.json", '[{"a": 1}, {"a": 2}]')),
    ("tabular", "parquet", 1, _parquet),  # pyarrow opens it in C
    ("time_series", "csv", 1, _synth("time_series")),  # the columns are read in C (pyarrow)
    ("time_series", "npy", 4, _npy("series/sig.npy", _ramp((64, 3)))),
    ("imu", "csv", 1, _synth("imu")),
    ("imu", "npy", 4, _npy("imu/rec.npy", _ramp((400, 6)))),
    ("graph", "gml", 3, _synth("graph")),  # + the element count (memory budget), + the reader
    ("graph", "graphml", 3, _write("g.graphml", _GRAPHML)),
    ("graph", "nodelink", 3, _write("g.json", _NODE_LINK)),
    ("graph", "pajek", 2, _write("g.net", "*Vertices 3\n1 a\n2 b\n3 c\n*Edges\n1 2\n2 3\n")),
    ("text", "plain", 1, _synth("text")),  # shorter than the head: decoded from memory
    ("text", "plain", 1, _write("README", "words without an extension\n")),
    # > 8 KiB: + the charset head, + the whole-file UTF-8 check, + decoding
    ("text", "markdown", 4, _write("long.md", "lorem ipsum dolor sit amet. " * 400)),
]


@pytest.mark.parametrize("modality,fmt,expected,make", CASES,
                         ids=[f"{m}-{f}-{i}" for i, (m, f, _, _) in enumerate(CASES)])
def test_sniff_names_the_format_and_load_does_not_reopen_to_detect_it(modality, fmt, expected, make, tmp_path):
    path = make(tmp_path)
    mod = get_modality(modality)
    cfg = mod.config()

    def sniff_and_load():
        dec = sniff(path)
        return dec, list(mod.load(path, cfg, dec.sniffed))

    n, (dec, samples) = _opens(path, sniff_and_load)
    assert (dec.modality, dec.format) == (modality, fmt), dec
    assert samples
    assert n == expected, f"{path.name}: sniff + load opened it {n} times, expected {expected}"
    # Called directly (no sniffing): the loader detects the format itself, same samples.
    direct = list(mod.load(path, cfg))
    assert [s.key for s in direct] == [s.key for s in samples]
    for a, b in zip(direct, samples, strict=True):
        assert a.arrays.keys() == b.arrays.keys()
        for k in a.arrays:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


@pytest.mark.parametrize("modality", ["graph", "tabular", "hyperspectral", "xray", "video", "infrared"])
def test_forced_modality_without_a_format_detects_it_from_the_head(modality, tmp_path):
    """``--modality`` on a file the modality's own sniff does not claim: format '' and the loader
    reads the format off the head it was handed (no extra open)."""
    from mtx.modalities._base import Sniffed

    path = GENERATORS[modality](tmp_path, 1)[0]
    mod = get_modality(modality)
    dec = sniff(path, modality=modality)
    blank = Sniffed(dec.head, "")
    n_known, known = _opens(path, lambda: list(mod.load(path, mod.config(), dec.sniffed)))
    n_blank, got = _opens(path, lambda: list(mod.load(path, mod.config(), blank)))
    assert n_blank == n_known
    for a, b in zip(got, known, strict=True):
        for k in a.arrays:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
