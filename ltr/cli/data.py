"""``ltr data``: generate, validate and convert ranking data; build cross-validation folds.

Only Typer is imported at module level so that ``ltr --help`` stays fast; NumPy, sklearn
and pyarrow are imported inside the commands.
"""

from __future__ import annotations

import typer

from ltr.cli.data_common import (
    Format,
    ImputeOpt,
    JsonOpt,
    Missing,
    MissingOpt,
    QueryFileOpt,
    summarize,
)
from ltr.cli.data_files import convert, folds, synth
from ltr.cli.data_ingest import ingest
from ltr.cli.data_validate import validate

data_app = typer.Typer(
    help="Ranking data: generate, validate, convert (LETOR <-> Parquet), build folds.",
    no_args_is_help=True,
)

# Registered in this order, which is the order ``ltr data --help`` lists them in.
for _command in (validate, synth, convert, folds, ingest):
    data_app.command()(_command)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


__all__ = [
    "Format",
    "ImputeOpt",
    "JsonOpt",
    "Missing",
    "MissingOpt",
    "QueryFileOpt",
    "convert",
    "data_app",
    "folds",
    "ingest",
    "register",
    "summarize",
    "synth",
    "validate",
]
