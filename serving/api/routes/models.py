"""GET /api/v1/models (what serves, with what weight, per-version counters) and the admin
reload action."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from serving.api.deps import Admin, State
from serving.model_store import ModelNotAvailable
from serving.schemas import ModelsResponse, VersionInfo

router = APIRouter(prefix="/api/v1", tags=["models"])


@router.get("/models", response_model=ModelsResponse)
async def models(state: State) -> ModelsResponse:
    try:
        snap = state.store.snapshot
    except ModelNotAvailable:  # only raised before the first model has loaded
        raise HTTPException(503, "no model is loaded") from None
    cfg = snap.config
    weights = {v.version: v.weight for v in cfg.variants} if cfg.variants else {cfg.production: 100}
    roles: dict[str, list[str]] = {}
    roles.setdefault(cfg.production, []).append("production")
    for v in cfg.variants or []:
        roles.setdefault(v.version, []).append(f"variant:{v.name}")
    if cfg.shadow is not None:
        roles.setdefault(cfg.shadow.version, []).append("shadow")
    if cfg.interleave is not None:
        roles.setdefault(cfg.interleave.a, []).append("interleave:a")
        roles.setdefault(cfg.interleave.b, []).append("interleave:b")
    infos = []
    for version, m in sorted(snap.models.items()):
        infos.append(
            VersionInfo(
                version=version,
                model_type=m.metadata.get("model_type"),
                n_features=m.n_features,
                feature_views=m.schema.view_names,
                requests=m.requests,
                errors=m.errors,
                client_errors=m.client_errors,
                mean_latency_ms=(1000 * m.latency_sum_s / m.requests) if m.requests else None,
                roles=roles.get(version, []),
            )
        )
    return ModelsResponse(
        routing_version=cfg.version,
        strategy=cfg.strategy,
        production=cfg.production,
        weights=weights,
        shadow=cfg.shadow.version if cfg.shadow else None,
        interleave=[cfg.interleave.a, cfg.interleave.b] if cfg.interleave else None,
        versions=infos,
    )


@router.post("/admin/reload", tags=["admin"])
async def reload(state: State, _: Admin) -> dict[str, object]:
    """Re-read routing.json and the artifacts now (admin; needs X-API-Key)."""
    swapped = await asyncio.to_thread(state.poll_store)
    return {
        "swapped": swapped,
        "serving": sorted(state.store.snapshot.models),
        "last_error": state.store.last_error,
    }
