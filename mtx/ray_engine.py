"""The Ray Data engine (``pip install 'mtx[ray]'``, ``mtx embed ... --engine ray``).

An actor pool where each actor loads the model once and embeds whole shards through the same
engine-neutral :func:`mtx.scale.embed_shard` every engine uses; the driver only plans, collects
summaries and merges. Ray's task retries and actor restarts absorb worker deaths: a retried
shard resumes from its committed parts, so every input still lands exactly once.

Small machines: Ray Data's read tasks need CPU too. If actors reserve every CPU the pipeline
deadlocks (read tasks starve), so actors reserve a fraction of a CPU and leave at least half a
CPU free for Ray Data's own tasks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .errors import MissingDependency
from .pipeline import EmbedOptions, Input


class _ShardEmbedder:
    """Ray actor: model loaded once in ``__init__``; each call embeds the shards in the batch."""

    def __init__(self, output: str, items: list[Input], n_shards: int, opts: EmbedOptions, device: str,
                 problems: list[tuple[str, str]] | None = None):
        from .encoder import load_model

        self.output, self.items, self.n, self.opts, self.problems = output, items, n_shards, opts, problems
        self.model = load_model(opts.model, opts.weights, device, opts.dtype, tokenizers=opts.tokenizers)
        if opts.compile:
            self.model.compile()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        from .scale import embed_shard

        out = []
        for i in batch["shard"]:
            s = embed_shard(self.output, self.items, (int(i), self.n), self.opts, self.model, problems=self.problems)
            out.append(json.dumps({k: s[k] for k in ("n_inputs", "n_embedded", "n_skipped", "n_failed",
                                                      "n_samples", "by_modality", "failures", "weights")}))
        return {"shard": list(batch["shard"]), "summary": out}


def run_ray(output: str | Path, items: list[Input], opts: EmbedOptions, *, address: str | None = None,
            workers: int | None = None, gpus_per_worker: float = 0.0, shards_per_worker: int = 4,
            problems: list[tuple[str, str]] | None = None) -> dict:
    """Embed ``items`` into ``output`` with a Ray Data actor pool, then merge (copy)."""
    import json

    try:
        import ray
    except ImportError:
        raise MissingDependency("--engine ray needs Ray: pip install 'mtx[ray]'") from None
    from .scale import merge

    t0 = time.monotonic()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
        started = True
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        n_actors = workers or max(1, int(ray.cluster_resources().get("GPU", 0) // (gpus_per_worker or 1))
                                  if gpus_per_worker else 1)
        n_actors = max(1, n_actors)
        per_actor_cpu = max(0.25, min(1.0, (cpus - 0.5) / n_actors))
        n_shards = max(1, min(len(items), n_actors * shards_per_worker))
        device = "cuda" if gpus_per_worker else "cpu"
        # Decoding inside an actor runs in-process: Ray already gives the parallelism.
        o = EmbedOptions(**{**vars(opts), "workers": 0})
        ds = ray.data.from_items([{"shard": i} for i in range(n_shards)], override_num_blocks=n_shards)
        res = ds.map_batches(
            _ShardEmbedder, batch_size=1, concurrency=n_actors, num_cpus=per_actor_cpu,
            num_gpus=gpus_per_worker or None,
            fn_constructor_args=(str(output), items, n_shards, o, device, problems),
            max_restarts=-1, max_task_retries=-1,
        ).take_all()
    finally:
        if started:
            ray.shutdown()
    summaries = [json.loads(r["summary"]) for r in res]
    merged = merge(output, copy=True)
    total = {k: sum(s[k] for s in summaries) for k in ("n_embedded", "n_skipped", "n_failed", "n_samples")}
    by_mod: dict[str, int] = {}
    for s in summaries:
        for k, v in s["by_modality"].items():
            by_mod[k] = by_mod.get(k, 0) + v
    el = time.monotonic() - t0
    return {"output": str(output), "n_inputs": len(items) + len(problems or []), **total, "by_modality": by_mod,
            "failures": [f for s in summaries for f in s["failures"]], "elapsed_s": round(el, 3),
            "samples_per_s": round(total["n_samples"] / el, 3) if el else 0.0, "device": device,
            "dtype": opts.dtype, "model": opts.model, "weights": summaries[0]["weights"] if summaries else "",
            "merged": merged, "n_shards": n_shards, "n_actors": n_actors}
