"""Evaluation commands: ``ltr evaluate-run`` (TREC files) and, later, ``ltr evaluate`` (a model).

Only Typer is imported at module level so that ``ltr --help`` stays fast; NumPy and the
metric library are imported inside the commands.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ltr.cli.output import emit_json, fail

DEFAULT_METRICS_TEXT = "ndcg@1,ndcg@5,ndcg@10,map,mrr"  # mirrors ltr.metrics.DEFAULT_METRICS


class Gain(StrEnum):
    exp = "exp"
    linear = "linear"


class NoRelevant(StrEnum):
    skip = "skip"
    zero = "zero"
    one = "one"


class Ties(StrEnum):
    pessimistic = "pessimistic"
    input_order = "input_order"


# Options shared by the evaluation commands.
MetricsOpt = Annotated[
    str,
    typer.Option(
        "--metrics",
        "-m",
        help="Comma-separated metrics: ndcg, ndcg@k, err, err@k, p@k, map, mrr.",
    ),
]
GainOpt = Annotated[Gain, typer.Option(help="Gain: exp = 2^rel - 1, linear = rel (trec_eval).")]
NoRelevantOpt = Annotated[
    NoRelevant,
    typer.Option(help="Queries without a relevant document: skip them, or score 0 or 1."),
]
TiesOpt = Annotated[
    Ties,
    typer.Option(
        help="Equal scores: pessimistic = lower labels first; input_order = trec_eval's "
        "order (docid descending)."
    ),
]
MaxGradeOpt = Annotated[
    float | None,
    typer.Option(help="ERR's maximum grade (default: the largest label in the qrels)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _split_metrics(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        fail("--metrics is empty")
    return names


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)


def evaluate_run_command(
    qrels: Annotated[Path, typer.Argument(help="TREC qrels file: 'qid 0 docid rel'.")],
    run: Annotated[Path, typer.Argument(help="TREC run file: 'qid Q0 docid rank score tag'.")],
    metrics: MetricsOpt = DEFAULT_METRICS_TEXT,
    gain: GainOpt = Gain.exp,
    no_relevant: NoRelevantOpt = NoRelevant.skip,
    ties: TiesOpt = Ties.pessimistic,
    max_grade: MaxGradeOpt = None,
    as_json: JsonOpt = False,
    per_query: Annotated[
        bool, typer.Option("--per-query", help="Also print each query's values.")
    ] = False,
) -> None:
    """Score a TREC run file against qrels and print the averaged metrics.

    trec_eval's numbers: --gain linear --no-relevant zero --ties input_order.
    """
    from ltr.metrics.ranking import MetricOptions, metric_key
    from ltr.metrics.trec import evaluate_run, read_qrels, read_run

    names = _split_metrics(metrics)
    try:
        keys = list(dict.fromkeys(metric_key(name) for name in names))
        options = MetricOptions(
            gain=gain.value,
            no_relevant=no_relevant.value,
            ties=ties.value,
            max_grade=max_grade,
        )
    except ValueError as exc:
        fail(str(exc))
    for what, path in (("qrels", qrels), ("run", run)):
        if not path.is_file():
            fail(f"{what} file not found: {path}")
    try:
        judgments = read_qrels(qrels)
        ranked = read_run(run)
        means, values = evaluate_run(judgments, ranked, keys, options)
    except (ValueError, OSError) as exc:
        fail(str(exc))

    skipped = sum(1 for row in values.values() if all(math.isnan(v) for v in row.values()))
    evaluated = len(values) - skipped
    run_only = sum(1 for q in ranked if q not in judgments)
    qrels_only = sum(1 for q in judgments if q not in ranked)

    if as_json:
        payload: dict[str, Any] = {
            "means": means,
            "n_queries": evaluated,
            "skipped": skipped,
            "run_queries_without_qrels": run_only,
            "qrels_queries_without_run": qrels_only,
            "options": {
                "gain": options.gain,
                "no_relevant": options.no_relevant,
                "ties": options.ties,
                "max_grade": options.max_grade,
            },
        }
        if per_query:
            payload["per_query"] = {
                qid: {k: _nan_to_none(v) for k, v in row.items()} for qid, row in values.items()
            }
        emit_json(payload)
        return

    if per_query:
        header = ["query", *keys]
        rows = [
            [qid, *("-" if math.isnan(row[k]) else f"{row[k]:.4f}" for k in keys)]
            for qid, row in values.items()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            typer.echo(
                "  ".join(
                    cell.rjust(w) if i else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(r, widths, strict=True))
                )
            )
        typer.echo("")
    typer.echo(_table([("metric", "value"), *((k, f"{means[k]:.4f}") for k in keys)]))
    note = f"queries: {evaluated} evaluated, {skipped} skipped (no relevant document)"
    if run_only or qrels_only:
        note += f"; ignored: {run_only} run-only, {qrels_only} qrels-only"
    typer.echo(note)


# --- ltr evaluate (model on a dataset) -------------------------------------------------------
def evaluate_command(
    model: Annotated[
        Path,
        typer.Argument(help="Checkpoint folder, model version folder (model.onnx) or .onnx file."),
    ],
    data: Annotated[Path, typer.Argument(help="LETOR/SVMlight file to score.")],
    metrics: MetricsOpt = DEFAULT_METRICS_TEXT,
    gain: GainOpt = Gain.exp,
    no_relevant: NoRelevantOpt = NoRelevant.skip,
    ties: TiesOpt = Ties.pessimistic,
    missing: Annotated[
        str, typer.Option(help="NULL/NaN/inf feature values: reject or impute (with 0).")
    ] = "reject",
    run_out: Annotated[
        Path | None, typer.Option("--run-out", help="Also write the scores as a TREC run file.")
    ] = None,
    as_json: JsonOpt = False,
    per_query: Annotated[
        bool, typer.Option("--per-query", help="Also print each query's values.")
    ] = False,
) -> None:
    """Score a LETOR file with a model (checkpoint or exported ONNX) and print its metrics."""
    from ltr.data.letor import read_letor
    from ltr.evaluation import load_scorer
    from ltr.metrics.ranking import MetricOptions, evaluate_per_query, metric_key

    names = _split_metrics(metrics)
    if missing not in ("reject", "impute"):
        fail(f"--missing must be reject or impute, not {missing!r}")
    try:
        keys = list(dict.fromkeys(metric_key(name) for name in names))
        options = MetricOptions(gain=gain.value, no_relevant=no_relevant.value, ties=ties.value)
        scorer = load_scorer(model)
        ds = read_letor(data, n_features=scorer.n_features, missing=missing)  # type: ignore[arg-type]
        scores = scorer.score(ds)
        values = evaluate_per_query(ds.labels, scores, ds.offsets, keys, options)
    except (ValueError, OSError, KeyError) as exc:
        fail(str(exc))
    import numpy as np

    means: dict[str, float | None] = {}
    for k in keys:
        v = values[k]
        if np.all(np.isnan(v)):
            fail(f"no query of {data} has a relevant document; {k} is undefined")
        means[k] = float(np.nanmean(v))
    skipped = int(np.isnan(values[keys[0]]).sum())
    if run_out is not None:
        from ltr.metrics.trec import write_run

        write_run(run_out, ds.qids, ds.doc_ids, scores)
    qids = ds.query_ids
    if as_json:
        payload: dict[str, Any] = {
            "model": scorer.description,
            "data": str(data),
            "n_queries": ds.n_queries,
            "skipped": skipped,
            "metrics": means,
            "options": {"gain": gain.value, "no_relevant": no_relevant.value, "ties": ties.value},
        }
        if per_query:
            payload["per_query"] = {
                q: {k: _nan_to_none(float(values[k][i])) for k in keys} for i, q in enumerate(qids)
            }
        emit_json(payload)
        return
    typer.echo(f"model: {scorer.description}")
    typer.echo(f"data:  {data} ({ds.n_queries} queries, {ds.n_docs} docs, {skipped} skipped)")
    typer.echo(_table([(k, f"{v:.4f}") for k, v in means.items() if v is not None]))
    if per_query:
        for i, q in enumerate(qids):
            typer.echo(f"{q}\t" + "\t".join(f"{k}={values[k][i]:.4f}" for k in keys))


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the ``ltr`` app."""
    app.command("evaluate-run")(evaluate_run_command)
    app.command("evaluate")(evaluate_command)
