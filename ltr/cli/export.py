"""``ltr export`` (ONNX artifact with a parity gate) and ``ltr benchmark`` (latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail


def export(
    checkpoint: Annotated[Path, typer.Argument(help="run folder written by `ltr train`")],
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="model store root (default var/models)")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="version name (default: the run name)")
    ] = None,
    valid_path: Annotated[
        Path | None, typer.Option("--valid", help="LETOR file for the parity check")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="max abs score difference allowed")] = 1e-5,
    opset: Annotated[int, typer.Option(help="ONNX opset (LightGBM uses at most 15)")] = 17,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="skip latency timing")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing version")] = False,
    online_features: Annotated[
        bool,
        typer.Option(
            "--online-features",
            help="the served model reads its features from the Feast online store (layout "
            "of the ingested offline tables) instead of from the request",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export a checkpoint to models/versions/<version>/{model.onnx,metadata.json}."""
    from ltr.export.onnx_export import ExportParityError, export_checkpoint
    from ltr.settings import get_settings

    validation = None
    try:
        if valid_path is not None:
            from ltr.data.letor import read_letor
            from ltr.training.checkpoint import read_checkpoint_meta

            meta = read_checkpoint_meta(checkpoint)
            validation = read_letor(valid_path, n_features=meta["n_features"])
        extra: dict[str, object] = {}
        if online_features:
            from ltr.features.definitions import DEFAULT_FEATURE_SERVICE, online_schema
            from ltr.features.ingest import read_layout
            from ltr.features.store import offline_dir
            from ltr.training.checkpoint import read_checkpoint_meta

            layout = read_layout(offline_dir())
            if layout is None:
                raise ValueError("--online-features: nothing ingested yet (run `ltr data ingest`)")
            names = read_checkpoint_meta(checkpoint)["feature_names"]
            if layout["n_features"] != len(names):
                raise ValueError(
                    f"--online-features: the offline store holds {layout['n_features']} "
                    f"features, the model takes {len(names)}"
                )
            schema, views = online_schema(names, layout["doc_features"])
            extra = {
                "feature_sources": schema,
                "feature_views": views,
                "feature_service": DEFAULT_FEATURE_SERVICE,
            }
        result = export_checkpoint(
            checkpoint,
            models_dir or get_settings().models_dir,
            validation=validation,
            **extra,
            version=version,
            tolerance=tolerance,
            opset=opset,
            latency=not no_latency,
            overwrite=overwrite,
        )
    except ExportParityError as exc:
        fail(str(exc), code=3)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result)
        return
    typer.echo(f"exported   {result['version']} -> {result['path']}")
    typer.echo(f"sha256     {result['sha256']}")
    p = result["parity"]
    typer.echo(
        f"parity     max abs diff {p['max_abs_diff']:.2e} (tolerance {p['tolerance']:.0e}, "
        f"{p['n_queries']} queries)"
    )


def benchmark(
    checkpoint: Annotated[Path, typer.Argument(help="run folder written by `ltr train`")],
    sizes: Annotated[str, typer.Option(help="comma-separated list sizes")] = "1,10,100,1000",
    repeats: Annotated[int, typer.Option(help="timed calls per size")] = 200,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Latency of the source model (PyTorch / LightGBM) vs ONNX Runtime, p50 and p99."""
    import tempfile

    from ltr.export.latency import measure_latency
    from ltr.export.onnx_export import write_onnx
    from ltr.training.checkpoint import load_checkpoint

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
        if not size_list or min(size_list) < 1:
            raise ValueError("sizes must be positive integers")
        ranker, meta = load_checkpoint(checkpoint)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(ranker, path)
        rows = measure_latency(
            ranker.score_features,
            str(path),
            len(ranker.feature_names),
            sizes=size_list,
            repeats=repeats,
        )
    source = "lightgbm" if meta["model_type"] == "lightgbm" else "pytorch"
    if json_out:
        emit_json({"model_type": meta["model_type"], "source": source, "latency_ms": rows})
        return
    typer.echo(f"{meta['model_type']} ({source} vs onnxruntime, 1 thread each), milliseconds")
    typer.echo(
        f"{'rows':>6} {source + ' p50':>13} {source + ' p99':>13} {'onnx p50':>10} "
        f"{'onnx p99':>10} {'speed-up':>9}"
    )
    for r in rows:
        typer.echo(
            f"{int(r['rows']):>6} {r['source_p50_ms']:>13.3f} {r['source_p99_ms']:>13.3f} "
            f"{r['onnx_p50_ms']:>10.3f} {r['onnx_p99_ms']:>10.3f} "
            f"{r['source_p50_ms'] / r['onnx_p50_ms']:>8.1f}x"
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("benchmark")(benchmark)
