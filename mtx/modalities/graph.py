"""graph: GML, GraphML, GEXF, Pajek, edge/adjacency lists, node-link JSON -> TokenGT tokens.

TokenGT (Kim et al. 2022): one token per node, one per edge, plus a graph token (CLS), so a graph
gives ``1 + |V| + |E|`` tokens (Zachary's karate club: 1 + 34 + 78 = 113).

Normalisation, the same for every format (all recorded in the sample meta):
- Direction is ignored: every edge becomes an undirected pair (a directed GEXF header and a
  reciprocal arc pair both give one edge). Parallel edges are collapsed to one; self-loops stay
  as edge tokens ``[P_v, P_v]`` but do not enter the Laplacian.
- Nodes are put in a canonical order computed from the structure alone (colour refinement, i.e.
  1-WL, seeded by degree, then individualisation-refinement of the smallest tied class until every
  node is distinguished or 1024 steps are spent; leftover ties fall back to file order). The
  Laplacian is therefore the same matrix, entry for entry, whatever the file's node ids, labels
  or order, so the same graph in GEXF, GraphML and node-link JSON gives the same vector.
- Node identifiers: the first ``k`` = 16 eigenvectors (ascending eigenvalue) of the normalised
  Laplacian ``I - D^-1/2 A D^-1/2``, each sign-fixed so that its entry of largest magnitude
  (first such node in canonical order) is positive, scaled by sqrt(|V|) so entries have unit RMS
  at any graph size, zero-padded to ``k`` for graphs with fewer than ``k`` nodes.
- Attributes: structure only by default (the three Les Miserables files carry different
  attributes, so any attribute use would make them differ). With ``attributes=True`` every
  numeric node/edge attribute ``name: x`` adds ``sign(name) * asinh(x)`` to slot
  ``hash(name) mod attr_dim`` of a fixed-width vector (the hashing trick), projected to D.
- Cap: a graph over ``max_tokens`` (2048) keeps all nodes and a deterministic edge subsample
  (uniform positions in canonical edge order). A graph with more than ``max_tokens - 1`` nodes
  first keeps ``(max_tokens - 1) // 2`` nodes at uniform positions in canonical order (this
  order starts with the lowest degrees, so the subsample is stratified by degree) and their
  induced edges.

Pooling is the mean over node tokens: the tokenizer marks them in ``Tokens.pool_mask``.
Pickles (``.gpickle``) are refused: never unpickle user data.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtx.errors import DecodeError
from mtx.settings import setting

from . import _budget
from ._base import (
    CLAIM,
    EXTENSION,
    REFINED,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    pinned,
    seeded,
    sniffed_or_read,
)
from ._registry import register_modality

FORMATS = ("auto", "gml", "graphml", "gexf", "pajek", "edgelist", "adjlist", "nodelink")
_EXT_FORMAT = {".gml": "gml", ".graphml": "graphml", ".gexf": "gexf", ".net": "pajek", ".pajek": "pajek",
               ".edgelist": "edgelist", ".edges": "edgelist", ".adjlist": "adjlist", ".json": "nodelink"}
_PICKLE_EXT = (".gpickle", ".pickle", ".pkl")
_IGNORED_ATTRS = {"id", "label", "name", "index", "key", "source", "target"}
_INDIVIDUALIZE_STEPS = 1024
# Bytes held per node or edge until the graph is tokenized (peaks measured with tracemalloc on
# 200k-item files, rounded up for the allocator): our own readers keep a Python id, an index
# entry and an attribute dict per node and a tuple + dict per edge, then numpy work arrays;
# networkx's XML readers also hold the whole element tree; node-link JSON holds every JSON value.
# Checked against the per-sample budget (mtx.modalities._budget) before a graph is built.
COST_PARSED = 350  # pajek, edge list, adjacency list: per node or edge
COST_XML = 1400  # GraphML / GEXF through networkx: per <node> or <edge> element
COST_GML = 800  # GML through networkx: per node [ ] or edge [ ] block
COST_JSON = 300  # node-link JSON: per JSON value ({, [ or , in the file)
_CHECK_EVERY = 65536  # streaming readers recount every this many lines

_GML = re.compile(r"(?m)^\s*graph\s*\[")
_XML_ROOT = re.compile(r"<\s*(graphml|gexf)\b", re.I)
_PAJEK = re.compile(r"\A\s*(?:%[^\n]*\n\s*)*\*(?:vertices|network|arcs|edges)\b", re.I)


# ----------------------------------------------------------------------------------------------
# Reading: every format becomes a RawGraph (nodes in file order, edges as index pairs)
# ----------------------------------------------------------------------------------------------


@dataclass
class RawGraph:
    nodes: list[Hashable]
    edges: list[tuple[int, int]]
    fmt: str
    directed: bool = False
    node_attrs: list[dict] = field(default_factory=list)
    edge_attrs: list[dict] = field(default_factory=list)


class _Nodes:
    """Node ids in first-seen order -> index."""

    def __init__(self):
        self.index: dict[Hashable, int] = {}

    def __call__(self, v: Hashable) -> int:
        i = self.index.get(v)
        if i is None:
            i = self.index[v] = len(self.index)
        return i

    @property
    def names(self) -> list[Hashable]:
        return list(self.index)


def _from_networkx(g, fmt: str) -> RawGraph:
    nodes = list(g.nodes)
    idx = {v: i for i, v in enumerate(nodes)}
    edges, eattrs = [], []
    for u, v, d in g.edges(data=True):
        edges.append((idx[u], idx[v]))
        eattrs.append(d)
    return RawGraph(nodes, edges, fmt, bool(g.is_directed()),
                    [dict(g.nodes[v]) for v in nodes], eattrs)


def _gml_lines(raw, codec: str):
    """The lines of an open binary file decoded as ``codec`` (the handle stays open)."""
    raw.seek(0)
    text = io.TextIOWrapper(raw, encoding=codec, newline=None)
    try:
        yield from text
    finally:
        text.detach()


def _read_gml(path: Path) -> RawGraph:
    """GML as text: networkx's reader wants 7-bit ASCII bytes (the spec's ``&#...;`` entities for
    anything else), but real files (networkx's own writer, Gephi, igraph) carry raw UTF-8 labels.
    Decoded here — a byte-order mark, else UTF-8, else ISO-8859-1 (the spec's character set) —
    and parsed as lines, so entities still work and the file is not held twice."""
    from .text import bom_encoding

    with open(path, "rb") as raw:
        bom = bom_encoding(raw.read(4))
        if bom:
            return _parse_gml(raw, bom[0])
        try:
            return _parse_gml(raw, "utf-8")
        except UnicodeDecodeError:
            return _parse_gml(raw, "latin-1")


def _parse_gml(raw, codec: str) -> RawGraph:
    import networkx as nx

    try:
        g = nx.parse_gml(_gml_lines(raw, codec), label=None)
    except nx.NetworkXError as e:
        if "duplicated" not in str(e):
            raise
        # Parallel edges in a file that does not declare ``multigraph 1``: read it as one.
        text = "".join(_gml_lines(raw, codec))
        g = nx.parse_gml(_GML.sub(lambda m: m.group(0) + "\n  multigraph 1", text, count=1), label=None)
    return _from_networkx(g, "gml")


def _read_graphml(path: Path) -> RawGraph:
    import networkx as nx

    return _from_networkx(nx.read_graphml(path), "graphml")


def _read_gexf(path: Path) -> RawGraph:
    import networkx as nx

    return _from_networkx(nx.read_gexf(path), "gexf")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            s = line.strip()
            if s and s[0] not in "#%":
                yield lineno, s


def _read_pajek(path: Path) -> RawGraph:
    """Pajek .net, tolerant: ``*vertices N`` with or without vertex lines (networkx's reader
    needs one line per vertex); ``*edges``/``*arcs`` pairs, ``*edgeslist``/``*arcslist``
    rows and ``*matrix``."""
    import shlex

    n = None
    labels: dict[str, int] = {}
    edges: list[tuple[int, int]] = []
    eattrs: list[dict] = []
    section, directed, row = None, False, 0

    def vid(tok: str, lineno: int) -> int:
        if tok.lstrip("-").isdigit():
            i = int(tok)
            if n is not None and not 1 <= i <= n:
                raise DecodeError(f"Pajek line {lineno}: vertex {i} outside 1..{n}")
            return i - 1
        if tok in labels:
            return labels[tok]
        raise DecodeError(f"Pajek line {lineno}: unknown vertex {tok!r}")

    for lineno, s in _lines(path):
        if lineno % _CHECK_EVERY == 0:
            _check_parsed(n or 0, len(edges), "holds")
        if s.startswith("*"):
            head = s.split()
            section = head[0].lower()
            if section == "*vertices":
                if len(head) < 2 or not head[1].isdigit():
                    raise DecodeError(f"Pajek line {lineno}: '*vertices' needs a vertex count")
                n = int(head[1])
                _budget.check(n, "vertices", COST_PARSED)  # vertex lines are optional: 32 bytes can say 2e9
            elif section in ("*arcs", "*arcslist"):
                directed = True
            elif section == "*matrix":
                row = 0
            continue
        if n is None:
            raise DecodeError(f"Pajek line {lineno}: data before '*vertices N'")
        try:
            toks = shlex.split(s, posix=True)
        except ValueError:
            toks = s.split()
        if section == "*vertices":
            if len(toks) >= 2:
                labels[toks[1]] = vid(toks[0], lineno)
        elif section in ("*edges", "*arcs"):
            if len(toks) < 2:
                raise DecodeError(f"Pajek line {lineno}: an edge needs two vertices")
            edges.append((vid(toks[0], lineno), vid(toks[1], lineno)))
            eattrs.append({"weight": _number(toks[2])} if len(toks) > 2 and _number(toks[2]) is not None else {})
        elif section in ("*edgeslist", "*arcslist"):
            u = vid(toks[0], lineno)
            for t in toks[1:]:
                edges.append((u, vid(t, lineno)))
                eattrs.append({})
        elif section == "*matrix":
            for j, t in enumerate(toks):
                w = _number(t)
                if w:
                    edges.append((row, j))
                    eattrs.append({"weight": w})
            row += 1
    if n is None:
        raise DecodeError("not a Pajek file: no '*vertices N' line")
    inv = {i: lab for lab, i in labels.items()}
    nodes: list[Hashable] = [inv.get(i, i + 1) for i in range(n)]
    return RawGraph(nodes, edges, "pajek", directed, [{} for _ in range(n)], eattrs)


def _split(s: str) -> list[str]:
    return [t for t in re.split(r"[\s,;]+", s) if t]


def _read_edgelist(path: Path) -> RawGraph:
    """``u v [weight | {attr dict}]`` per line (whitespace, comma or semicolon separated)."""
    import ast

    names = _Nodes()
    edges, eattrs = [], []
    for lineno, s in _lines(path):
        if lineno % _CHECK_EVERY == 0:
            _check_parsed(len(names.index), len(edges), "holds")
        dict_part = None
        if "{" in s:  # networkx write_edgelist: "u v {'weight': 3.0}"
            s, _, rest = s.partition("{")
            dict_part = "{" + rest
        toks = _split(s)
        if len(toks) == 1 and dict_part is None:
            names(toks[0])  # an isolated node
            continue
        if len(toks) < 2:
            raise DecodeError(f"edge list line {lineno}: expected 'u v [weight]', got {s[:60]!r}")
        attrs: dict = {}
        if dict_part is not None:
            try:
                lit = ast.literal_eval(dict_part)
                attrs = lit if isinstance(lit, dict) else {}
            except (ValueError, SyntaxError):
                attrs = {}
        elif len(toks) >= 3 and _number(toks[2]) is not None:
            attrs = {"weight": _number(toks[2])}
        edges.append((names(toks[0]), names(toks[1])))
        eattrs.append(attrs)
    nodes = names.names
    return RawGraph(nodes, edges, "edgelist", False, [{} for _ in nodes], eattrs)


def _read_adjlist(path: Path) -> RawGraph:
    """``u v1 v2 ...`` per line (networkx adjlist)."""
    names = _Nodes()
    edges = []
    for lineno, s in _lines(path):
        toks = _split(s)
        u = names(toks[0])
        edges.extend((u, names(t)) for t in toks[1:])
        if lineno % _CHECK_EVERY == 0 or len(toks) > _CHECK_EVERY:
            _check_parsed(len(names.index), len(edges), "holds")
    nodes = names.names
    return RawGraph(nodes, edges, "adjlist", False, [{} for _ in nodes], [{} for _ in edges])


def _read_nodelink(path: Path) -> RawGraph:
    """networkx / d3 node-link JSON; ``directed``, ``multigraph``, ``graph`` keys optional,
    links under ``links`` or ``edges``, endpoints as node ids or positional indices."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(f"invalid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise DecodeError("not node-link JSON: expected an object with a 'nodes' list")
    links = data.get("links", data.get("edges", []))
    if not isinstance(links, list):
        raise DecodeError("node-link JSON: 'links'/'edges' must be a list")
    raw_nodes = data["nodes"]
    use_id = bool(raw_nodes) and all(isinstance(d, dict) and "id" in d for d in raw_nodes)
    nodes: list[Hashable] = []
    nattrs: list[dict] = []
    for i, d in enumerate(raw_nodes):
        if isinstance(d, dict):
            nodes.append(_hashable(d["id"]) if use_id else i)
            nattrs.append({k: v for k, v in d.items() if k != "id"})
        else:
            nodes.append(_hashable(d))
            nattrs.append({})
    idx = {v: i for i, v in enumerate(nodes)}
    if len(idx) != len(nodes):
        raise DecodeError("node-link JSON: duplicate node ids")

    def end(x: Any, i: int, which: str) -> int:
        if isinstance(x, dict):  # d3 replaces ids by the node objects
            x = x.get("id", x.get("index"))
        x = _hashable(x)
        if x in idx:
            return idx[x]
        if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < len(nodes):
            return x
        raise DecodeError(f"node-link JSON: link {i} has an unknown {which} {x!r}")

    edges, eattrs = [], []
    for i, ln in enumerate(links):
        if not isinstance(ln, dict) or "source" not in ln or "target" not in ln:
            raise DecodeError(f"node-link JSON: link {i} needs 'source' and 'target'")
        edges.append((end(ln["source"], i, "source"), end(ln["target"], i, "target")))
        eattrs.append({k: v for k, v in ln.items() if k not in ("source", "target")})
    return RawGraph(nodes, edges, "nodelink", bool(data.get("directed", False)), nattrs, eattrs)


def _check_parsed(nodes: int, edges: int, verb: str, each: int = COST_PARSED, what: str = "") -> None:
    """Budget check of a graph of ``nodes`` + ``edges`` items at ``each`` bytes apiece."""
    _budget.check(nodes + edges, what or f"nodes and edges ({nodes:,} + {edges:,})", each, verb)


# What a file's bytes say about its size before a reader builds anything: (pattern, bytes each).
_ITEM_PATTERNS = {
    "graphml": (re.compile(rb"<(?:[\w.-]+:)?(?:node|edge|hyperedge)[\s/>]"), COST_XML),
    "gexf": (re.compile(rb"<(?:[\w.-]+:)?(?:node|edge)[\s/>]"), COST_XML),
    "gml": (re.compile(rb"\b(?:node|edge)\s{0,16}\["), COST_GML),
}
_COUNT_BLOCK = 1 << 22


def count_items(path: Path, fmt: str) -> int:
    """Nodes + edges a GML/GraphML/GEXF file holds (elements counted in one streaming pass), or
    the JSON values of a node-link file (an upper bound on what ``json.load`` builds)."""
    n = 0
    with open(path, "rb") as f:
        if fmt == "nodelink":
            while block := f.read(_COUNT_BLOCK):
                n += block.count(b"{") + block.count(b"[") + block.count(b",")
            return n + 1
        rx = _ITEM_PATTERNS[fmt][0]
        tail = b""
        while block := f.read(_COUNT_BLOCK):
            buf = tail + block
            # a match wholly inside the tail was counted with the previous block
            n += sum(1 for m in rx.finditer(buf) if m.end() > len(tail))
            tail = buf[-64:]
    return n


def check_file_size(path: Path, fmt: str) -> None:
    """Budget check of a whole-file graph reader (networkx, json.load) before it runs."""
    if fmt == "nodelink":
        _budget.check(count_items(path, fmt), "JSON values (nodes, links and their fields)", COST_JSON, "holds")
    elif fmt in _ITEM_PATTERNS:
        _budget.check(count_items(path, fmt), "nodes and edges", _ITEM_PATTERNS[fmt][1], "holds")


def _hashable(x: Any) -> Hashable:
    return json.dumps(x, sort_keys=True) if isinstance(x, (dict, list)) else x


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            v = float(x)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


_READERS = {"gml": _read_gml, "graphml": _read_graphml, "gexf": _read_gexf, "pajek": _read_pajek,
            "edgelist": _read_edgelist, "adjlist": _read_adjlist, "nodelink": _read_nodelink}


def detect_format(head: bytes, path: Path) -> str | None:
    """The graph format named by content (preferred) or extension, or None."""
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    m = _XML_ROOT.search(text[:4096])
    if m:
        return m.group(1).lower()
    if _PAJEK.match(text):
        return "pajek"
    stripped = text.lstrip()
    if stripped.startswith("{") and '"nodes"' in text:
        return "nodelink"
    if not stripped.startswith(("<", "{", "[")) and _GML.search(text):
        return "gml"
    return _EXT_FORMAT.get(path.suffix.lower())


def read_graph(path: Path, fmt: str = "auto", sniffed: Sniffed | None = None) -> RawGraph:
    """Read any supported graph file into a :class:`RawGraph`.

    ``fmt`` 'auto' takes the format sniffing found (``sniffed``), else detects it from the head.

    Raises:
        DecodeError: a pickle, an unknown format or a malformed file.
    """
    if path.suffix.lower() in _PICKLE_EXT:
        raise DecodeError(f"refusing to unpickle {path.suffix} (pickles can run code); "
                          "save the graph as GraphML, GML or node-link JSON instead")
    known = sniffed_or_read(path, sniffed)
    head = known.head
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DecodeError("binary content, not a text graph file (NUL bytes in the first 8 KiB)")
    if fmt == "auto":
        fmt = known.format or detect_format(head, path) or "edgelist"
    try:
        check_file_size(path, fmt)
        return _READERS[fmt](path)
    except DecodeError:
        raise
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, MemoryError):
        raise DecodeError(f"cannot read as {fmt}: not a text graph file") from None
    except Exception as e:  # noqa: BLE001 - networkx/XML readers raise many types on bad input
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise DecodeError(f"cannot read as {fmt}: {msg}") from None


# ----------------------------------------------------------------------------------------------
# Canonical form: undirected simple graph in a structural node order
# ----------------------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fixed, well-spread hash of non-negative integers."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _rank(*keys: np.ndarray) -> np.ndarray:
    """Dense ranks of the rows of ``keys`` (the first key most significant)."""
    order = np.lexsort(keys[::-1])
    change = np.zeros(len(order), dtype=bool)
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.cumsum(change)
    return ranks


def _refine(colors: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Colour refinement (1-WL) to a stable partition; colours stay canonical dense ranks."""
    n_classes = int(colors.max()) + 1 if len(colors) else 0
    while True:
        h = _mix(colors)[indices]
        with np.errstate(over="ignore"):
            cs = np.concatenate([[np.uint64(0)], np.cumsum(h, dtype=np.uint64)])
            nb = cs[indptr[1:]] - cs[indptr[:-1]]  # multiset hash of the neighbours' colours
        new = _rank(colors, nb)
        k = int(new.max()) + 1
        if k == n_classes:
            return new
        colors, n_classes = new, k


def canonical_order(n: int, pairs: np.ndarray, individualize: int = _INDIVIDUALIZE_STEPS
                    ) -> tuple[np.ndarray, dict]:
    """A structural node order: ``order[i]`` is the file index of the i-th canonical node.

    Isomorphic graphs get the same permuted adjacency matrix whenever the refinement (with up
    to ``individualize`` individualisation steps) separates every node or the remaining ties
    are automorphic; leftover ties are broken by file order.
    """
    u = np.concatenate([pairs[:, 0], pairs[:, 1]]) if len(pairs) else np.zeros(0, np.int64)
    v = np.concatenate([pairs[:, 1], pairs[:, 0]]) if len(pairs) else np.zeros(0, np.int64)
    o = np.argsort(u, kind="stable")
    indices = v[o]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=n))])
    colors = _refine(_rank(np.diff(indptr)), indptr, indices)
    wl_classes = int(colors.max()) + 1
    steps = 0
    while steps < individualize and int(colors.max()) + 1 < n:
        counts = np.bincount(colors)
        c = int(np.flatnonzero(counts > 1)[0])
        node = int(np.flatnonzero(colors == c)[0])
        key = colors * 2 + 1
        key[node] -= 1
        colors = _refine(_rank(key), indptr, indices)
        steps += 1
    ties = n - (int(colors.max()) + 1)
    order = np.lexsort((np.arange(n), colors))
    return order, {"wl_classes": wl_classes, "individualized": steps, "ties_broken_by_file_order": ties}


def laplacian_ids(n: int, pairs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``k`` normalised-Laplacian eigenvectors [n, k] (sign fixed, sqrt(n)-scaled, zero
    padded) and their eigenvalues, for nodes 0..n-1 in canonical order."""
    a = np.zeros((n, n), dtype=np.float64)
    loops = pairs[:, 0] == pairs[:, 1]
    p = pairs[~loops]
    a[p[:, 0], p[:, 1]] = 1.0
    a[p[:, 1], p[:, 0]] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    lap = np.diag((deg > 0).astype(np.float64)) - inv[:, None] * a * inv[None, :]
    w, vec = np.linalg.eigh(lap)
    m = min(k, n)
    w, vec = w[:m], vec[:, :m]
    mag = np.abs(vec)
    # Largest-magnitude entry positive; ties (within 1e-9) go to the first node in canonical order.
    pivot = np.argmax(mag >= mag.max(0, keepdims=True) - 1e-9, axis=0)
    vec = vec * np.where(vec[pivot, np.arange(m)] < 0, -1.0, 1.0)
    out = np.zeros((n, k), dtype=np.float32)
    out[:, :m] = vec * math.sqrt(n)
    return out, w


def _attr_vector(attrs: dict, width: int) -> tuple[np.ndarray, list[str]]:
    out = np.zeros(width, dtype=np.float32)
    used = []
    for name, val in attrs.items():
        if str(name).lower() in _IGNORED_ATTRS:
            continue
        x = _number(val)
        if x is None:
            continue
        h = int.from_bytes(hashlib.blake2b(str(name).encode(), digest_size=8).digest(), "little")
        out[h % width] += (1.0 if (h >> 32) & 1 else -1.0) * math.asinh(x)
        used.append(str(name))
    return out, used


def tokenize_graph(raw: RawGraph, cfg: "GraphConfig") -> tuple[dict[str, np.ndarray], dict]:
    """RawGraph -> TokenGT arrays (``ids`` [1, T, 2k], ``type`` [1, T], ``attr`` [1, T, A]) + meta."""
    n0 = len(raw.nodes)
    if n0 == 0:
        raise DecodeError("graph has no nodes")
    e = np.asarray(raw.edges, dtype=np.int64).reshape(-1, 2)
    meta: dict[str, Any] = {"format": raw.fmt, "nodes": n0, "edges_in_file": len(e),
                            "directed_input": raw.directed}
    if raw.directed:
        meta["direction"] = "ignored: arcs made undirected, reciprocal arcs merged"
    lo, hi = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    pairs, first = np.unique(np.stack([lo, hi], 1), axis=0, return_index=True) if len(e) else (
        np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    if len(pairs) < len(e):
        meta["parallel_edges_collapsed"] = int(len(e) - len(pairs))
    nodes_kept = np.arange(n0)
    order, canon = canonical_order(n0, pairs, individualize=0 if n0 > cfg.max_tokens - 1 else
                                   _INDIVIDUALIZE_STEPS)
    if n0 > cfg.max_tokens - 1:
        keep_n = (cfg.max_tokens - 1) // 2
        nodes_kept = np.sort(order[np.linspace(0, n0 - 1, keep_n).round().astype(np.int64)])
        remap = np.full(n0, -1, dtype=np.int64)
        remap[nodes_kept] = np.arange(keep_n)
        inside = (remap[pairs[:, 0]] >= 0) & (remap[pairs[:, 1]] >= 0)
        pairs, first = remap[pairs[inside]], first[inside]
        meta["node_subsample"] = (f"{n0} nodes > max_tokens - 1: kept {keep_n} at uniform positions in "
                                  "canonical order, with their induced edges")
        order, canon = canonical_order(keep_n, pairs)
    n = len(nodes_kept)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    meta.update(canon)
    # Canonical edges: endpoints as canonical ranks (a <= b), sorted.
    ca, cb = rank[pairs[:, 0]], rank[pairs[:, 1]]
    a, b = np.minimum(ca, cb), np.maximum(ca, cb)
    eorder = np.lexsort((b, a))
    a, b, first = a[eorder], b[eorder], first[eorder]
    loops = int((a == b).sum())
    if loops:
        meta["self_loops"] = loops
    meta["edges"] = int(len(a))
    ids, eig = laplacian_ids(n, np.stack([a, b], 1), cfg.k)
    meta["laplacian_eigenvalues"] = [round(float(x), 6) + 0.0 for x in eig]
    budget = cfg.max_tokens - 1 - n
    if len(a) > budget:
        sel = np.unique(np.linspace(0, len(a) - 1, budget).round().astype(np.int64)) if budget > 0 else \
            np.zeros(0, np.int64)
        meta["edge_subsample"] = (f"{1 + n + len(a)} tokens > max_tokens {cfg.max_tokens}: kept {len(sel)} "
                                  f"of {len(a)} edges at uniform positions in canonical edge order")
        a, b, first = a[sel], b[sel], first[sel]
    meta["nodes_used"], meta["edges_used"] = n, int(len(a))
    t = n + len(a)
    tok = np.empty((t, 2 * cfg.k), dtype=np.float32)
    tok[:n, :cfg.k] = ids
    tok[:n, cfg.k:] = ids
    tok[n:, :cfg.k] = ids[a]
    tok[n:, cfg.k:] = ids[b]
    typ = np.zeros(t, dtype=np.int64)
    typ[n:] = 1
    attr = np.zeros((t, cfg.attr_dim), dtype=np.float32)
    if cfg.attributes:
        names: set[str] = set()
        file_of = nodes_kept[order]  # canonical position -> file index
        for i, fi in enumerate(file_of):
            if raw.node_attrs:
                attr[i], used = _attr_vector(raw.node_attrs[fi], cfg.attr_dim)
                names.update(used)
        for j, fe in enumerate(first):
            if raw.edge_attrs:
                attr[n + j], used = _attr_vector(raw.edge_attrs[fe], cfg.attr_dim)
                names.update(used)
        meta["attributes"] = sorted(names)
    else:
        meta["attributes"] = "ignored (structure only; attributes=True to add numeric ones)"
    meta["tokens"] = 1 + t
    return {"ids": tok[None], "type": typ[None], "attr": attr[None]}, meta


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


@dataclass
class GraphConfig(ModalityConfig):
    format: str = setting("auto", choices=FORMATS)  # auto (content, then extension) | gml | graphml | gexf | pajek | edgelist | adjlist | nodelink
    k: int = setting(16, lo=1)  # Laplacian eigenvectors per node identifier
    max_tokens: int = setting(2048, lo=4)  # 1 + |V| + |E| cap: edge subsample above it (recorded)
    attributes: bool = setting(False)  # add numeric node/edge attributes (hashed to attr_dim slots)
    attr_dim: int = setting(16, lo=1)  # width of the hashed attribute vector


@dataclass
class _GraphTokenizerConfig(ModalityConfig):
    k: int = 16
    attr_dim: int = 16


class GraphTokenizer(Tokenizer):
    """TokenGT: Linear(2k -> D) of [P_u, P_v] + node/edge type embedding + Linear(attr -> D)
    + a graph token (CLS) + pre-LN. Marks node tokens in ``Tokens.pool_mask``."""

    def __init__(self, spec, seed: int, k: int, attr_dim: int):
        super().__init__()
        d = spec.dim
        with seeded(seed):
            self.proj = nn.Linear(2 * k, d)
            nn.init.normal_(self.proj.weight, std=0.02)
            nn.init.zeros_(self.proj.bias)
            self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)
            self.attr_proj = nn.Linear(attr_dim, d, bias=False)
            nn.init.normal_(self.attr_proj.weight, std=0.02)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        ids, typ = inputs["ids"].float(), inputs["type"].long()
        pad = inputs.get("pad_mask")
        if pad is None:
            pad = torch.zeros(typ.shape, dtype=torch.bool, device=typ.device)
        x = self.proj(ids) + self.type_embed[typ] + self.attr_proj(inputs["attr"].float())
        r = x.shape[0]
        x = torch.cat([self.cls.expand(r, 1, -1), x], dim=1)
        no = torch.zeros(r, 1, dtype=torch.bool, device=x.device)
        tokens = Tokens(self.norm_pre(x), torch.cat([no, pad.bool()], dim=1), True)
        # Pool over node tokens only (graph token, edges and padding excluded). encoder.pool
        # reads this when Tokens carries ``pool_mask``; set as an attribute so this also runs
        # against a Tokens without the field.
        tokens.pool_mask = torch.cat([no, (typ == 0) & ~pad.bool()], dim=1)
        return tokens


@register_modality
class graph(Modality):  # noqa: N801 - class name == registry key == module name
    """A graph becomes **TokenGT** tokens (Kim et al. 2022, the design of the official graph
    tokenizer): one token per node, one per edge, plus a graph token — `1 + |V| + |E|`
    (Zachary's karate club: 1 + 34 + 78 = 113).

    ## Which files

    GML (`graph [` block; UTF-8 labels as real files carry them, ISO-8859-1, `&#...;` entities),
    GraphML and GEXF (their XML root elements), Pajek `.net` (`*vertices`),
    edge lists (`u v [weight | {attrs}]`), adjacency lists, node-link JSON (an object with `nodes`).
    Content decides before the extension. `.gpickle` is **refused**: mtx never unpickles user data.

    ## From file to a canonical graph

    Every format becomes the same normalised graph, so **the same graph in GEXF, GraphML and
    node-link JSON gives the same vector** (tested on the shared samples):

    - Direction is ignored (every edge becomes an undirected pair); parallel edges collapse to one;
      self-loops stay as edge tokens but do not enter the Laplacian.
    - Nodes are put in a **canonical order computed from the structure alone**: colour refinement
      (1-WL) seeded by degree, then individualisation–refinement of the smallest tied class until
      every node is distinguished (up to 1024 steps; leftover ties fall back to file order). File
      node ids, labels and order therefore do not change the tokens.
    - **Node identifiers**: the first k = 16 eigenvectors (ascending eigenvalue) of the normalised
      Laplacian `I − D^-1/2 A D^-1/2`, each sign-fixed so that its largest-magnitude entry is
      positive (eigenvectors have no intrinsic sign), scaled by √|V| so entries have unit RMS at any
      graph size, zero-padded for graphs with fewer than 16 nodes.
    - **Attributes**: structure only by default — files of the same graph often carry different
      attributes. With `-O graph.attributes=true`, every numeric node/edge attribute adds
      `sign · asinh(x)` to a hashed slot of a 16-wide vector (the hashing trick), projected to D.
    - **Cap**: over 2048 tokens, all nodes are kept with a deterministic edge subsample (uniform
      positions in canonical edge order); with more than 2047 nodes, 1023 nodes at uniform positions
      in canonical order (which starts with low degrees, so the subsample is stratified by degree) and
      their induced edges. Recorded.

    ## Tokens

    `GraphTokenizer`: a node token gets `[P_v, P_v]`, an edge token `[P_u, P_v]`, projected by
    Linear(2k → D); + a node/edge type embedding; + Linear(attributes → D); + the graph token (CLS);
    pre-LayerNorm. Batches are padded and masked.

    ## Weights and pooling

    `init=seeded`; **mean over the node tokens** only (the graph token, edge tokens and padding are
    excluded through the tokens' pool mask): the graph is summarised by its nodes, whose number does
    not swing with edge density.

    ## Try it

    ```
    mtx tokenize examples/triangles.gml ../shared/data/graph/karate.gml ../shared/data/graph/karate.net
    ```
    """

    name = "graph"
    extensions = (".gml", ".graphml", ".gexf", ".net", ".pajek", ".edgelist", ".edges", ".adjlist", ".gpickle")
    summary = "GML, GraphML, GEXF, Pajek, edge/adjacency lists, node-link JSON (TokenGT tokens)"
    tokens = "1 + |V| + |E| (karate club: 113)"
    clip_init = False
    Config = GraphConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        ext = path.suffix.lower()
        if ext == ".gpickle":
            return Evidence(self.name, EXTENSION, "extension .gpickle (refused at load: never unpickled)",
                            "gpickle")
        text = head.decode("utf-8", "replace").lstrip("\ufeff")
        m = _XML_ROOT.search(text[:4096])
        if m:
            return Evidence(self.name, CLAIM, f"<{m.group(1)}> root element", m.group(1).lower())
        if _PAJEK.match(text):
            return Evidence(self.name, CLAIM, "Pajek '*vertices' header", "pajek")
        stripped = text.lstrip()
        if stripped.startswith("{") and '"nodes"' in text:
            has_links = '"links"' in text or '"edges"' in text
            return Evidence(self.name, REFINED, "JSON object with 'nodes'"
                            + (" and 'links'/'edges' (node-link graph)" if has_links else " (node-link graph)"),
                            "nodelink")
        if not stripped.startswith(("<", "{", "[")) and _GML.search(text):
            return Evidence(self.name, CLAIM, "GML 'graph [' block", "gml")
        if ext in self.extensions:
            # what read_graph makes of it: the extension's format, else an edge list
            return Evidence(self.name, EXTENSION, f"extension {ext}", _EXT_FORMAT.get(ext, "edgelist"))
        return None

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, nodes: int = 34, edges: int = 78) -> list[Path]:
        """``n`` random GML graphs of ``nodes`` nodes and ``edges`` edges."""
        rng, out = np.random.default_rng(8), []
        for i in range(n):
            pairs = set()
            while len(pairs) < edges:
                a, b = sorted(rng.integers(0, nodes, 2).tolist())
                if a != b:
                    pairs.add((a, b))
            lines = ["graph [", "  directed 0", *[f"  node [ id {k} ]" for k in range(nodes)],
                     *[f"  edge [ source {a} target {b} ]" for a, b in sorted(pairs)], "]"]
            p = d / f"graph{i:05d}.gml"
            p.write_text("\n".join(lines) + "\n")
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A Pajek file declaring 0 vertices."""
        p = d / "empty.net"
        p.write_text("*Vertices 0\n*Edges\n")
        return [p]

    def load(self, path: Path, cfg: GraphConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        raw = read_graph(path, cfg.format, sniffed)
        arrays, meta = tokenize_graph(raw, cfg)
        yield Sample("", arrays, meta)

    def batch_key(self, sample: Sample) -> Hashable:
        return "graph"  # ragged: collate pads to the longest graph and masks the padding

    def collate(self, samples: list[Sample], pin: bool = False, buffers=None) -> dict[str, torch.Tensor]:
        lens = [s.arrays["type"].shape[1] for s in samples]
        t = max(lens)
        r = len(samples)
        k2 = samples[0].arrays["ids"].shape[2]
        a = samples[0].arrays["attr"].shape[2]
        ids = np.zeros((r, t, k2), dtype=np.float32)
        typ = np.zeros((r, t), dtype=np.int64)
        attr = np.zeros((r, t, a), dtype=np.float32)
        pad = np.ones((r, t), dtype=bool)
        for i, (s, m) in enumerate(zip(samples, lens, strict=True)):
            ids[i, :m] = s.arrays["ids"][0]
            typ[i, :m] = s.arrays["type"][0]
            attr[i, :m] = s.arrays["attr"][0]
            pad[i, :m] = False
        return pinned({"ids": torch.from_numpy(ids), "type": torch.from_numpy(typ),
                       "attr": torch.from_numpy(attr), "pad_mask": torch.from_numpy(pad)}, pin)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + int(sample.arrays["type"].shape[1])

    def content_reason(self, sample: Sample) -> str | None:
        if not (sample.arrays["type"] == 0).any():
            return "the graph has no node token"
        return None

    def seed(self, spec, cfg: GraphConfig) -> int:
        # Only the tokenizer's shape matters for its weights, not the reading options.
        return super().seed(spec, _GraphTokenizerConfig(cfg.k, cfg.attr_dim))

    def tokenizer(self, spec, front, cfg: GraphConfig):
        return GraphTokenizer(spec, self.seed(spec, cfg), cfg.k, cfg.attr_dim)
