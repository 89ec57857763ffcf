"""Injected dependencies (``Annotated[..., Depends(...)]``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from serving.app_state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ltr
    return state


State = Annotated[AppState, Depends(get_state)]


def require_api_key(
    state: State, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    configured = state.settings.api_key
    if configured is None:
        raise HTTPException(403, "admin API disabled: set LTR_API_KEY to enable it")
    if x_api_key is None or not hmac.compare_digest(
        x_api_key.encode(), configured.get_secret_value().encode()
    ):
        raise HTTPException(401, "missing or wrong X-API-Key")


Admin = Annotated[None, Depends(require_api_key)]
