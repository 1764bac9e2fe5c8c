"""Scale beyond one process: shard plans, merge, status, several devices, Ray Data.

The unit of distributed work is a **shard**: a fixed contiguous slice of the sorted input list,
planned once (``OUT.h5.parts/plan.json``, pinned with the config hash) and embedded by one
engine-neutral function, :func:`embed_shard`, into committed part files plus a shard marker.
Engines only decide where shards run: ``--shard I/N`` (SLURM arrays, any batch scheduler),
``--devices cuda:0,cuda:1`` (one process per device on one node), ``--engine ray`` (an actor
pool). ``mtx merge`` verifies every part and builds the final file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import StoreError, UsageError
from .pipeline import EmbedOptions, Input
from .store import config_hash, fsync_dir, parts_dir_of

PLAN_VERSION = 1


# ------------------------------------------------------------------------------------------
# Plans and shards
# ------------------------------------------------------------------------------------------


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` (0-based I) -> (I, N); or from SLURM array variables when ``text`` is None."""
    if text is None:
        return _slurm_shard()
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def _slurm_shard() -> tuple[int, int] | None:
    """Shard I of N from a SLURM array task: I counts the task's place in the array
    (``(ID - MIN) / STEP``), N is ``SLURM_ARRAY_TASK_COUNT``; both checked."""
    env = {"ID": os.environ.get("SLURM_ARRAY_TASK_ID"), "COUNT": os.environ.get("SLURM_ARRAY_TASK_COUNT"),
           "MIN": os.environ.get("SLURM_ARRAY_TASK_MIN"), "STEP": os.environ.get("SLURM_ARRAY_TASK_STEP")}
    if env["ID"] is None or env["COUNT"] is None:
        return None
    vals = {}
    for k, default in (("ID", None), ("COUNT", None), ("MIN", "0"), ("STEP", "1")):
        v = env[k] if env[k] is not None else default
        try:
            vals[k] = int(v)
        except ValueError:
            raise UsageError(f"SLURM_ARRAY_TASK_{k}={v!r} is not a whole number; pass --shard I/N") from None
    tid, n, lo, step = vals["ID"], vals["COUNT"], vals["MIN"], max(1, vals["STEP"])
    said = ", ".join(f"SLURM_ARRAY_TASK_{k}={env[k]}" for k in env if env[k] is not None)
    i, off = divmod(tid - lo, step)
    if n < 1 or off or not 0 <= i < n:
        raise UsageError(f"{said}: that is shard {(tid - lo) / step:g} of {n}, outside 0..{max(n - 1, 0)}; "
                         "submit a contiguous array (--array=0-<N-1>), or pass --shard I/N explicitly")
    return i, n


def shard_slice(n_items: int, i: int, n: int) -> slice:
    return slice(i * n_items // n, (i + 1) * n_items // n)


def _items_digest(items: list[Input]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\0{it.path}\n".encode())
    return h.hexdigest()


def load_or_create_plan(output: Path, items: list[Input], n_shards: int, cfg_hash: str,
                        config: dict[str, Any] | None = None) -> list[Input]:
    """The plan is written once; later shards use its item list (the source of truth)."""
    pdir = parts_dir_of(output)
    pdir.mkdir(exist_ok=True)
    path = pdir / "plan.json"
    if not path.exists():
        data = {"version": PLAN_VERSION, "n_shards": n_shards, "config_sha256": cfg_hash,
                "items_sha256": _items_digest(items),
                "items": [[it.id, str(it.path)] for it in items],
                "shards": [[shard_slice(len(items), i, n_shards).start, shard_slice(len(items), i, n_shards).stop]
                           for i in range(n_shards)],
                "created": time.time()}
        tmp = pdir / f"plan.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic create-if-absent: the first shard's plan wins
        tmp.unlink()
        fsync_dir(pdir)
    plan = json.loads(path.read_text())
    check_plan(output, plan, items, n_shards)
    if plan["config_sha256"] != cfg_hash:
        old = {}
        with contextlib.suppress(OSError, ValueError, KeyError):
            old = json.loads((pdir / "run.json").read_text())["config"]
        from .settings import mismatch, refusal

        lines, fixes = mismatch(f"{output} shard plan", old, config or {})
        raise StoreError(refusal(f"{output}: the shard plan was made with other settings",
                                 lines or ["the recorded settings hash differs"], fixes,
                                 f"remove {pdir} to plan again"))
    return [Input(Path(p), i) for i, p in plan["items"]]


def check_plan(output: Path, plan: dict[str, Any] | None, items: list[Input], n_shards: int) -> None:
    """Refuse a shard whose shard count or inputs are not the plan's, describing both."""
    if plan is None:
        return
    if plan["n_shards"] != n_shards:
        raise UsageError(f"{output}: planned for {plan['n_shards']} shards, this run says {n_shards}")
    planned = [p for _, p in plan["items"]]
    given = [str(it.path) for it in items]
    if planned == given:
        return
    first = next((k for k, (a, b) in enumerate(zip(planned, given, strict=False)) if a != b), min(len(planned), len(given)))
    raise UsageError(f"{output}: these inputs are not the ones the shard plan was made for (planned: "
                     f"{describe_inputs(planned)}; given: {describe_inputs(given)}; first difference at "
                     f"input {first + 1}: planned {_nth(planned, first)}, given {_nth(given, first)}); pass "
                     f"every shard the same inputs, or remove {parts_dir_of(output)} to plan again")


def _nth(paths: list[str], k: int) -> str:
    return paths[k] if k < len(paths) else "(none)"


def describe_inputs(paths: list[str]) -> str:
    """``N files under ROOT`` (or ``no files``): enough to tell two input sets apart."""
    if not paths:
        return "no files"
    if len(paths) == 1:
        return f"1 file, {paths[0]}"
    try:
        root = os.path.commonpath(paths)
    except ValueError:
        root = "/"
    return f"{len(paths):,} files under {root}"


def read_plan(output: Path) -> dict[str, Any] | None:
    p = parts_dir_of(output) / "plan.json"
    return json.loads(p.read_text()) if p.exists() else None


def embed_shard(output: str | Path, items: list[Input], shard: tuple[int, int], opts: EmbedOptions,
                model, progress=None, problems: list[tuple[str, str]] | None = None) -> dict:
    """The engine-neutral unit: plan (or reuse the plan), embed shard ``i`` of ``n``, commit.

    ``problems``: discovery failures (``discover`` rows), recorded by shard 0 only.
    """
    from .pipeline import run_config_of, run_embed

    output = Path(output)
    i, n = shard
    cfg = run_config_of(model, opts)
    planned = load_or_create_plan(output, items, n, config_hash(cfg), cfg)
    mine = planned[shard_slice(len(planned), i, n)]
    return run_embed(mine, output, opts, model, progress=progress, shard=shard,
                     problems=problems if i == 0 else None)


# ------------------------------------------------------------------------------------------
# Status and merge
# ------------------------------------------------------------------------------------------


def _markers(pdir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for m in sorted(pdir.glob("shard-*-of-*.json")):
        with contextlib.suppress(ValueError, OSError):
            d = json.loads(m.read_text())
            out[int(d["shard"])] = d
    return out


def run_state(output: str | Path) -> dict[str, Any] | None:
    """The unsharded run writing ``output`` that has not finished: ``in progress`` (its lock is
    held) or ``interrupted``, with what it committed; None when there is none."""
    import h5py

    output = Path(output)
    pdir = parts_dir_of(output)
    if not pdir.is_dir() or (pdir / "plan.json").exists():
        return None
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((pdir / "run.json").read_text())
    parts = sorted(p for p in pdir.glob("part-*.h5") if not p.name.startswith("part-s"))
    if not meta and not parts:
        return None
    rows, files = 0, {}
    for p in sorted(parts, key=lambda p: p.stat().st_mtime_ns):
        with contextlib.suppress(Exception), h5py.File(p, "r") as f:
            rows += int(f.attrs["n_rows"])
            files.update(zip(f["files/path"].asstr()[()], f["files/status"].asstr()[()], strict=True))
    lock = output.with_name(output.name + ".lock")
    running = _locked(lock)
    holder = ""
    if running:
        with contextlib.suppress(OSError):
            holder = lock.read_text().strip()
    n_failed = sum(v == "failed" for v in files.values())
    return {"state": "in progress" if running else "interrupted", "holder": holder or None,
            "parts": len(parts), "rows_committed": rows, "files_embedded": len(files) - n_failed,
            "files_failed": n_failed, "replaces_output": bool(meta.get("replaces_output"))}


def describe_run_state(output: str | Path, st: dict[str, Any]) -> str:
    """One line for ``mtx info``/``status``: where the unfinished run stands, what to do."""
    line = (f"{output}: {st['state']}: {st['parts']} part(s) committed, {st['rows_committed']:,} rows from "
            f"{st['files_embedded']:,} file(s), {st['files_failed']:,} failed")
    if st["state"] == "in progress":
        line += f" ({st['holder'] or 'another process'})"
    else:
        line += "; rerun the same command to resume"
    if st["replaces_output"] and Path(output).exists():
        line += " (it replaces the existing file, which is kept as it is until then)"
    return line


def status(output: str | Path) -> dict[str, Any]:
    """Done / pending shards, committed rows and throughput of a (sharded) run; for an
    unsharded output its ``state`` (complete, in progress, interrupted) and ``run``."""
    import h5py

    output = Path(output)
    pdir = parts_dir_of(output)
    plan = read_plan(output)
    run = None if plan else run_state(output)
    if plan is None and run is None and not output.exists():
        raise StoreError(f"{output}: no such output (no file, no run writing it)")
    markers = _markers(pdir) if pdir.exists() else {}
    parts = sorted(pdir.glob("part-*.h5")) if pdir.exists() else []
    rows_by_shard: dict[str, int] = {}
    for p in parts:
        key = p.name.split("-")[1] if p.name.startswith("part-s") else "-"
        with contextlib.suppress(Exception), h5py.File(p, "r") as f:
            rows_by_shard[key] = rows_by_shard.get(key, 0) + int(f.attrs["n_rows"])
    n = plan["n_shards"] if plan else 0
    locks = {int(p.name.split("-")[1]) for p in pdir.glob("shard-*.lock")} if pdir.exists() else set()
    shards = []
    for i in range(n):
        a, b = plan["shards"][i]
        m = markers.get(i)
        state = "done" if m else ("running" if i in locks and _locked(pdir / f"shard-{i:04d}-of-{n:04d}.lock")
                                  else "pending")
        entry = {"shard": i, "state": state, "inputs": b - a, "rows_committed": rows_by_shard.get(f"s{i:04d}", 0)}
        if m:
            entry.update({k: m["summary"][k] for k in ("n_embedded", "n_failed", "n_samples")})
        shards.append(entry)
    final_rows = None
    if output.exists():
        with contextlib.suppress(Exception), h5py.File(output, "r") as f:
            final_rows = int(f["embeddings"].shape[0])
    t_first = min((p.stat().st_mtime for p in parts), default=None)
    t_last = max((p.stat().st_mtime for p in parts), default=None)
    rows = sum(rows_by_shard.values())
    rate = rows / (t_last - t_first) if t_first and t_last and t_last > t_first else None
    state = "sharded" if plan else (run["state"] if run else "complete")
    return {"output": str(output), "planned": plan is not None, "state": state, "run": run, "n_shards": n,
            "n_inputs": len(plan["items"]) if plan else None, "shards": shards,
            "done": sum(s["state"] == "done" for s in shards), "parts": len(parts),
            "rows_committed": rows, "rows_per_s": rate, "final_rows": final_rows}


def _locked(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no flock on this file system: nothing can tell
        return False
    finally:
        os.close(fd)


def merge(output: str | Path, copy: bool = False) -> dict[str, Any]:
    """Verify every part of a sharded run and build ``output`` (virtual by default, or a copy).

    Refuses when a shard has no completion marker or a part fails verification: a virtual
    dataset would silently read a missing part as zeros.
    """
    import h5py

    from .consolidation import consolidate
    from .store import verify_part

    output = Path(output)
    pdir = parts_dir_of(output)
    plan = read_plan(output)
    if plan is None:
        if output.exists() and not pdir.exists():
            return {"output": str(output), "merged": False, "reason": "already merged, nothing to do"}
        raise StoreError(f"{output}: no shard plan found in {pdir}; run `mtx embed ... --shard I/N` first")
    n = plan["n_shards"]
    markers = _markers(pdir)
    missing = [i for i in range(n) if i not in markers]
    if missing:
        raise StoreError(f"{output}: shard(s) {', '.join(map(str, missing))} of {n} have not finished "
                         "(no completion marker); run them (the same command with --shard I/N), then merge")
    cfg = plan["config_sha256"]
    parts = sorted(pdir.glob("part-*.h5"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    leftovers = sorted(pdir.glob("part-*.tmp"))
    # A real (copied or consolidated) output holds earlier committed work the shards skipped:
    # it is merged first, and the result must then be a copy (a virtual dataset cannot point
    # into the file it replaces).
    base: list[Path] = []
    if output.exists():
        with contextlib.suppress(Exception), h5py.File(output, "r") as f:
            if f.attrs.get("merge_mode") != "virtual":
                base = [output]
    copy = copy or bool(base)
    digest = hashlib.sha256()
    for p in parts:
        verify_part(p, cfg)
        with h5py.File(p, "r") as f:
            digest.update(f"{p.name}:{f.attrs['sha256']}\n".encode())
    key = digest.hexdigest()
    if output.exists():
        with contextlib.suppress(Exception), h5py.File(output, "r") as f:
            if f.attrs.get("merged_parts_sha256") == key and f.attrs.get("merge_mode") == ("copy" if copy else "virtual"):
                return {"output": str(output), "merged": False, "reason": "up to date", "parts": len(parts)}
    attrs = dict(markers[0]["attrs"])
    mod_attrs: dict[str, dict[str, Any]] = {}
    for m in markers.values():
        for name, a in m["modality_attrs"].items():
            mod_attrs.setdefault(name, a)
    attrs.update(merged_parts_sha256=key, merge_mode="copy" if copy else "virtual", n_shards=n)
    dim = int(json.loads(attrs["geometry_json"])["dim"])
    store_dtype = json.loads(attrs["config_json"])["store_dtype"]
    tmp = output.with_name(output.name + ".tmp")
    if copy:
        from .store import check_space

        check_space(output, sum(p.stat().st_size for p in base + parts))
    info = consolidate(base + parts, tmp, attrs, mod_attrs, store_dtype, dim, virtual=not copy)
    os.replace(tmp, output)
    fsync_dir(output.parent)
    if copy:
        for p in [*pdir.iterdir()]:
            p.unlink()
        pdir.rmdir()
    return {"output": str(output), "merged": True, "mode": "copy" if copy else "virtual",
            "parts": len(parts), "ignored_tmp": len(leftovers), **info}


# ------------------------------------------------------------------------------------------
# Several devices on one node
# ------------------------------------------------------------------------------------------


def _device_main(output: str, items: list[Input], shard: tuple[int, int], opts: EmbedOptions,
                 device: str, q, problems: list[tuple[str, str]] | None = None) -> None:
    import signal

    from .encoder import load_model

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = load_model(opts.model, opts.weights, device, opts.dtype, tokenizers=opts.tokenizers)
        if opts.compile:
            model.compile()
        s = embed_shard(output, items, shard, opts, model, problems=problems)
        q.put(("ok", shard[0], s))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        from .errors import short

        q.put(("error", shard[0], short(e)))


def run_devices(output: str | Path, items: list[Input], opts: EmbedOptions, devices: list[str],
                problems: list[tuple[str, str]] | None = None) -> dict:
    """One spawned process per device, each with its own model, one shard each; then merge."""
    import multiprocessing as mp

    n = len(devices)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = max(0, (opts.workers if opts.workers is not None else 0) // n) if opts.workers is not None else None
    o = EmbedOptions(**{**vars(opts), "workers": per})
    procs = [ctx.Process(target=_device_main, args=(str(output), items, (i, n), o, dev, q, problems), daemon=False)
             for i, dev in enumerate(devices)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results: dict[int, tuple] = {}
    while len(results) < n:
        try:
            kind, i, payload = q.get(timeout=1.0)
            results[i] = (kind, payload)
        except Exception:  # noqa: BLE001 - queue.Empty; check for dead children
            for i, p in enumerate(procs):
                if i not in results and not p.is_alive() and p.exitcode not in (0, None):
                    results[i] = ("error", f"device process {devices[i]} died (exit code {p.exitcode})")
    for p in procs:
        p.join()
    errors = [f"shard {i} on {devices[i]}: {r[1]}" for i, r in sorted(results.items()) if r[0] == "error"]
    if errors:
        raise StoreError("; ".join(errors) + " — committed parts are kept; rerun to resume")
    merged = merge(output, copy=True)
    summaries = [results[i][1] for i in range(n)]
    out = {k: sum(s[k] for s in summaries) for k in ("n_inputs", "n_embedded", "n_skipped", "n_failed", "n_samples")}
    by_mod: dict[str, int] = {}
    for s in summaries:
        for k, v in s["by_modality"].items():
            by_mod[k] = by_mod.get(k, 0) + v
    el = time.monotonic() - t0
    out.update(output=str(output), by_modality=by_mod, failures=[f for s in summaries for f in s["failures"]],
               elapsed_s=round(el, 3), samples_per_s=round(out["n_samples"] / el, 3) if el else 0.0,
               device=",".join(devices), dtype=opts.dtype, model=opts.model,
               weights=summaries[0]["weights"], merged=merged)
    return out
