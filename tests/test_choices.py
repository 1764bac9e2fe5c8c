"""Choice options are declared once (mtx/_choices.py), from the registries; Typer checks them with
exit code 2 and a message listing the valid values; command bodies get plain strings."""
from __future__ import annotations

from enum import Enum
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from mtx import _choices as C
from mtx.cli import main


def test_choices_come_from_the_registries():
    from mtx import encoder
    from mtx.export import FORMATS
    from mtx.modalities import list_modalities
    from mtx.weights import PRESETS

    assert C.values(C.Preset) == tuple(PRESETS)
    assert C.values(C.Modality) == tuple(m.name for m in list_modalities())
    assert C.values(C.ExportFormat) == tuple(FORMATS)
    # Copies kept light for `mtx --help` (the originals sit beside torch): they must agree.
    assert C.values(C.Dtype) == ("auto", *encoder.DTYPES)
    assert C.values(C.Pool) == tuple(encoder.POOLS)
    assert C.values(C.TextUnit) == ("file", "line")


@pytest.mark.parametrize("argv,env,shown", [
    (["embed", "x", "-o", "o.h5", "--dtype", "float8"], {}, "'bfloat16'"),
    (["embed", "x", "-o", "o.h5", "--pool", "sum"], {}, "'mean'"),
    (["embed", "x", "-o", "o.h5", "--store-dtype", "int8"], {}, "'float16'"),
    (["embed", "x", "-o", "o.h5", "--modality", "smell"], {}, "'point_cloud'"),
    (["embed", "x", "-o", "o.h5", "--text-unit", "page"], {}, "'line'"),
    (["embed", "x", "-o", "o.h5", "--engine", "spark"], {}, "'ray'"),
    (["embed", "x", "-o", "o.h5"], {"MTX_MODEL": "vit-h"}, "'meta-b16'"),
    (["tokenize", "x", "--modality", "smell"], {}, "'text'"),
    (["bench", "--modality", "smell"], {}, "'imu'"),
    (["export", "x.h5", "-o", "y", "--format", "csv"], {}, "'parquet'"),
    (["similar", "x.h5", "q", "--modality", "smell"], {}, "'graph'"),
    (["weights", "fetch", "vit-h"], {}, "'clip-l14'"),
])
def test_a_bad_choice_is_a_usage_error_naming_the_choices(argv, env, shown, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Invalid value" in err and shown in err, err


Colour = C._choice("Colour", ("red", "green"))


def test_command_bodies_get_plain_strings():
    app = typer.Typer()
    seen = {}

    @app.command()
    @C.plain_choices
    def paint(colour: Annotated[Colour, typer.Option()] = "red",
              other: Annotated[Colour | None, typer.Option()] = None) -> None:
        seen.update(colour=colour, other=other)

    res = CliRunner().invoke(app, ["--colour", "green"])
    assert res.exit_code == 0, res.output
    assert seen == {"colour": "green", "other": None}
    assert type(seen["colour"]) is str and not isinstance(seen["colour"], Enum)
    assert CliRunner().invoke(app, ["--colour", "blue"]).exit_code == 2
