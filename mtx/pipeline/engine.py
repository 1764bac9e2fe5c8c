"""Where a run happens: here (one process), on several devices, in a Ray cluster, or as one
shard of a planned job (``--shard I/N``, or a SLURM array task)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .inputs import Input
from .options import EmbedOptions
from .run import ProgressFn, run_embed
from .workers import start_workers

ENGINES = ("local", "ray")


def device_list(devices: str | list[str] | None, gpus: int | None = None) -> list[str]:
    """``cuda:0,cuda:1`` (or a list) as a list; ``gpus=N`` means the first N CUDA devices."""
    if gpus:
        return [f"cuda:{i}" for i in range(gpus)]
    if isinstance(devices, str):
        devices = devices.split(",")
    return [d.strip() for d in devices or [] if d.strip()]


def embed_inputs(items: list[Input], output: str | Path, opts: EmbedOptions, *,
                 problems: list[tuple[str, str]] | None = None, engine: str = "local",
                 shard: str | tuple[int, int] | None = None, devices: str | list[str] | None = None,
                 gpus: int | None = None, address: str | None = None, gpus_per_worker: float = 0.0,
                 progress: ProgressFn | None = None,
                 on_model: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Embed discovered inputs into ``output`` with the engine the arguments choose.

    Args:
        items, problems: what :func:`mtx.pipeline.discover` returned (problems become failure
            rows of a local run).
        output: the HDF5 output.
        opts: the run's options; the model is loaded from ``opts.model``/``weights``/``device``/
            ``dtype`` (and compiled with ``opts.compile``), with the fitted tokenizers of
            ``opts.tokenizers`` (and ``MTX_TOKENIZERS``), checked here once
            (:meth:`EmbedOptions.with_fitted`) and loaded by whichever engine runs.
        engine: ``local`` (this process and its decoder processes) or ``ray``.
        shard: ``"I/N"`` or ``(I, N)``: embed only shard I of N and commit it for ``mtx merge``;
            None reads ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` when set.
        devices, gpus: one process and model per device (``"cuda:0,cuda:1"``), or the first
            ``gpus`` CUDA devices; the shards are merged at the end.
        address, gpus_per_worker: the Ray cluster (default: a local one) and GPUs per actor.
        progress: called with ``file`` and ``tick`` events (local runs and shards).
        on_model: called with the loaded model before a local run or shard starts.

    Returns:
        The run's summary (:class:`mtx.pipeline.RunSummary` as a dict); a shard's has
        ``shard: [I, N]``.

    Raises:
        UsageError: no inputs, an unknown engine, or more than one of shard/devices/Ray;
            :class:`mtx.settings.OptionError` (a UsageError) for an option out of its range.
    """
    from .. import scale

    opts.validate()  # -O values, before a decoder or the model starts
    if not items and not problems:
        raise UsageError("no input files found")
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    opts = opts.with_fitted()  # --tokenizer files checked once; every engine loads them with the model
    shard_t = shard if isinstance(shard, tuple) else scale.parse_shard(shard)
    dev_list = device_list(devices, gpus)
    if sum(bool(x) for x in (shard_t, dev_list, engine == "ray")) > 1:
        raise UsageError("choose one of --shard, --devices/--gpus and --engine ray")
    from ..store import check_output

    check_output(output)  # a usage problem is told before the model loads
    if shard_t:  # a plan made for other inputs is refused before the model loads
        scale.check_plan(Path(output), scale.read_plan(Path(output)), items, shard_t[1])
    if dev_list:
        return scale.run_devices(output, items, opts, dev_list, problems=problems)
    if engine == "ray":
        from ..ray_engine import run_ray

        return run_ray(output, items, opts, address=address, workers=opts.workers, gpus_per_worker=gpus_per_worker,
                       problems=problems)
    from ..weights import get_preset, locate

    locate(get_preset(opts.model), opts.weights)  # missing weights are reported before anything starts
    pool = start_workers(opts, len(items))  # decoders start while the model loads
    try:
        model = _load_model(opts)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    if on_model is not None:
        on_model(model)
    if shard_t:
        if pool is not None:
            pool.close()
        return {**scale.embed_shard(output, items, shard_t, opts, model, progress=progress, problems=problems),
                "shard": list(shard_t)}
    return run_embed(items, output, opts, model, progress=progress, problems=problems, pool=pool)


def _load_model(opts: EmbedOptions):
    from ..encoder import load_model

    model = load_model(opts.model, opts.weights, opts.device, opts.dtype, tokenizers=opts.tokenizers)
    if opts.compile:
        model.compile()
    return model
