"""The rank service a user would assemble from the same parts, for ``bench.serving`` to beat.

FastAPI + ``FeatureStore.get_online_features`` + ONNX Runtime, written the straightforward
way: one ``POST /api/v1/rank`` taking the platform's request body, Feast's online read of
the candidates' entity rows, a numpy matrix laid out by the model's ``feature_schema``
(metadata.json), ``session.run``, sort. Same artifact, same Feast registry and Redis
online store (Feast's stock ``redis`` type), same ONNX Runtime settings as the platform's
service (one intra-op and one inter-op thread). No cache, routing, events or telemetry.

Run under uvicorn by the benchmark (``--factory``, uvloop + httptools, as many workers as
the platform's service); configured from the environment:

- ``ASSEMBLED_MODEL_DIR``: a model version folder (``model.onnx`` + ``metadata.json``);
- ``ASSEMBLED_FEAST_REPO``: a folder holding the ``feature_store.yaml`` to read with (the
  benchmark writes one for the platform's registry and Redis, ``online_store: redis``).

The route is a plain ``def`` (FastAPI runs it in its thread pool), as FastAPI's docs advise
for blocking calls such as Feast's and ONNX Runtime's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from feast import FeatureStore
from pydantic import BaseModel

MODEL_DIR_ENV = "ASSEMBLED_MODEL_DIR"
FEAST_REPO_ENV = "ASSEMBLED_FEAST_REPO"


class Candidate(BaseModel):
    doc_id: str
    features: dict[str, float] | None = None


class RankRequest(BaseModel):
    query_id: str
    user_id: str | None = None
    candidates: list[Candidate]
    top_k: int | None = None


class RankedDoc(BaseModel):
    doc_id: str
    score: float
    rank: int


class RankResponse(BaseModel):
    model_version: str
    ranked: list[RankedDoc]


def create_app() -> FastAPI:
    model_dir = Path(os.environ[MODEL_DIR_ENV])
    metadata = json.loads((model_dir / "metadata.json").read_text())
    schema = metadata["feature_schema"]
    version = str(metadata.get("version") or model_dir.name)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    store = FeatureStore(repo_path=os.environ[FEAST_REPO_ENV])

    # Which matrix columns come from which view, and from which position of its array.
    views: dict[str, tuple[list[int], list[int]]] = {}
    for column, entry in enumerate(schema):
        if entry.get("source", "request") != "request":
            columns, positions = views.setdefault(entry["source"], ([], []))
            columns.append(column)
            positions.append(entry["index"])
    refs = [f"{view}:features" for view in views]
    defaults = np.array([e.get("default", 0.0) for e in schema], dtype=np.float32)
    column_of = {e["name"]: i for i, e in enumerate(schema)}

    app = FastAPI(title="assembled rank service")

    @app.get("/health")
    async def health() -> dict[str, str]:  # the liveness route anyone would add
        return {"status": "ok"}

    @app.post("/api/v1/rank", response_model=RankResponse)
    def rank(req: RankRequest) -> RankResponse:
        doc_ids = [c.doc_id for c in req.candidates]
        rows = [{"query_id": req.query_id, "doc_id": d} for d in doc_ids]
        online = store.get_online_features(
            features=refs, entity_rows=rows, full_feature_names=True
        ).to_dict()
        x = np.tile(defaults, (len(doc_ids), 1))
        for view, (columns, positions) in views.items():
            values = online[f"{view}__features"]
            found = [i for i, v in enumerate(values) if v is not None]
            if found:
                block = np.array([values[i] for i in found], dtype=np.float32)
                x[np.ix_(found, columns)] = block[:, positions]
        for i, c in enumerate(req.candidates):
            for name, value in (c.features or {}).items():
                if name in column_of:
                    x[i, column_of[name]] = value
        scores = session.run(None, {"features": x})[0].reshape(-1)
        order = np.argsort(-scores)[: req.top_k]
        return RankResponse(
            model_version=version,
            ranked=[
                RankedDoc(doc_id=doc_ids[i], score=float(scores[i]), rank=r)
                for r, i in enumerate(order, start=1)
            ],
        )

    return app
