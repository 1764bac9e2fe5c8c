"""The engine choice is one library function: its refusals come before any model is loaded."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtx.errors import UsageError
from mtx.pipeline import EmbedOptions, Input, embed_inputs
from mtx.pipeline.engine import device_list

ITEMS = [Input(Path("/nonexistent/a.png"), "a.png")]


@pytest.mark.parametrize("kw", [dict(shard="0/2", devices="cpu,cpu"), dict(shard=(1, 2), engine="ray"),
                                dict(gpus=2, engine="ray")])
def test_one_engine_at_a_time(tmp_path, kw):
    with pytest.raises(UsageError, match="choose one of --shard, --devices/--gpus and --engine ray"):
        embed_inputs(ITEMS, tmp_path / "o.h5", EmbedOptions(), **kw)


def test_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(UsageError, match="no input files found"):
        embed_inputs([], tmp_path / "o.h5", EmbedOptions())
    with pytest.raises(UsageError, match="--engine 'spark'"):
        embed_inputs(ITEMS, tmp_path / "o.h5", EmbedOptions(), engine="spark")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    with pytest.raises(UsageError, match="choose one of"):  # the SLURM task is a shard
        embed_inputs(ITEMS, tmp_path / "o.h5", EmbedOptions(), devices="cpu,cpu")


def test_device_lists():
    assert device_list("cuda:0, cuda:1,") == ["cuda:0", "cuda:1"]
    assert device_list(None, gpus=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert device_list(None) == []
