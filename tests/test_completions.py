"""completions/ are generated from the Typer app and must be current; the bash one must work."""
from __future__ import annotations

import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_completions_are_current(tmp_path):
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_completions.py"))
    for p in gen["generate"](tmp_path):
        committed = ROOT / "completions" / p.name
        assert committed.read_text() == p.read_text(), (
            f"{committed} is stale: run `python scripts/gen_completions.py`")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("words,expect", [
    ("mtx em", "embed"),
    ("mtx embed --mo", "--model"),
    ("mtx embed --model cl", "clip-b16"),
    ("mtx weights f", "fetch"),
    ("mtx embed x --dtype bf", "bfloat16"),
    ("mtx embed x --modality point", "point_cloud"),
    ("mtx embed x -O video.fr", "video.frames="),
    ("mtx export x.h5 -f par", "parquet"),
    ("mtx weights fetch ti", "tiny"),
    ("mtx embed x -w see", "seeded"),
    ("mtx -", "-V"),
    ("mtx embed -", "-h"),
    ("mtx --color al", "always"),
    ("mtx export x.h5 -f ''", "jsonl"),  # export -f <TAB>: every format
    ("mtx weights fetch ''", "meta-l14"),  # weights fetch <TAB>: every preset
    ("mtx embed x --modality ''", "hyperspectral"),
    ("mtx embed x -O ''", "text.unit="),  # -O <TAB>: every MODALITY.FIELD
    ("mtx tokenize x --option imu.", "imu.window="),
    # --map GLOB=<TAB>: bash splits at "=" (COMP_WORDBREAKS) into "*.csv" "=" "ta", or keeps one word
    ("mtx embed x --map '*.csv' = ta", "tabular"),
    ("mtx embed x --map '*.csv' = ''", "time_series"),
    ("mtx embed x --map '*.csv' =", "graph"),
    ("mtx tokenize x --map '*.csv=ti'", "*.csv=time_series"),
])
def test_bash_completion_answers(words, expect):
    script = (f"source {ROOT / 'completions' / 'mtx.bash'}; COMP_WORDS=({words}); "
              f"COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _mtx; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert expect in out, out


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
@pytest.mark.parametrize("line,expect,absent", [
    ("mtx export x.h5 -f ", "parquet", None),
    ("mtx weights fetch ", "meta-b16", "fetch"),  # presets, not the subcommand again
    ("mtx embed x --modality po", "point_cloud", None),
    ("mtx embed x -O video.f", "video.frames=", None),
    ("mtx embed x --map *.csv=ti", "*.csv=time_series", None),
    ("mtx tokenize x --map *.txt=", "*.txt=text", None),
])
def test_fish_completion_answers(line, expect, absent):
    out = subprocess.run(["fish", "-c", f"source {ROOT / 'completions' / 'mtx.fish'}; complete -C '{line}'"],
                         capture_output=True, text=True, check=True).stdout
    words = [x.split("\t")[0] for x in out.splitlines()]
    assert expect in words and absent not in words, words
