"""Injected dependencies (``Annotated[..., Depends(...)]``) and the route class that parses
JSON bodies off the event loop."""

from __future__ import annotations

import email.message
import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

from serving.app_state import AppState
from serving.body_check import BodyChecker
from serving.middleware import RequestGate
from serving.schemas import BODY_PARSERS, BodyLimits, BodyRejected, InvalidBody

#: Bodies up to this size are parsed on the event loop (well under a millisecond): a thread
#: hop would cost more than it saves.
INLINE_BODY_BYTES = 8 * 1024


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a
# worker thread, which would cost two thread hops per request for two attribute reads.
def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ltr
    return state


async def _state_dependency(request: Request) -> AppState:
    return get_state(request)


State = Annotated[AppState, Depends(_state_dependency)]


def get_gate(request: Request) -> RequestGate:
    gate: RequestGate = request.app.state.gate
    return gate


async def _gate_dependency(request: Request) -> RequestGate:
    return get_gate(request)


Gate = Annotated[RequestGate, Depends(_gate_dependency)]


async def require_api_key(
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


# ----------------------------------------------------------------- bodies off the loop
class TruncatedValidationError(RequestValidationError):
    """A 422 whose error list was cut to the first few; ``omitted`` counts the others found,
    ``complete`` is False when validation stopped before the end of the body."""

    def __init__(self, errors: list[dict[str, Any]], omitted: int, complete: bool = True) -> None:
        super().__init__(errors)
        self.omitted = omitted
        self.complete = complete


class _ParsedRequest(Request):
    """The request with its body read, parsed and validated already: FastAPI takes the model
    instance from ``json()`` and does not validate it again (pydantic passes an instance of
    the declared model through as it is)."""

    def __init__(self, request: Request, raw: bytes, value: BaseModel) -> None:
        super().__init__(request.scope, request.receive)
        self._raw = raw
        self._value = value

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._value


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def body_limits(state: AppState) -> BodyLimits:
    s = state.settings
    return BodyLimits(
        max_candidates=s.max_candidates,
        max_features_per_candidate=s.max_features_per_candidate,
        max_batch=s.max_batch,
        max_clicks=s.max_clicks,
    )


class OffloadedJSONRoute(APIRoute):
    """A route whose JSON body (a model of :data:`serving.schemas.BODY_PARSERS`) is parsed
    with orjson, checked against the configurable limits (413) and validated item by item
    in a worker thread of the request gate, instead of on the event loop; a 422 lists at
    most the first few errors. Other bodies take FastAPI's usual path."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = self.body_field.field_info.annotation if self.body_field is not None else None
        parse = None
        if isinstance(model, type) and issubclass(model, BaseModel):
            parse = BODY_PARSERS.get(model)
        if parse is None:
            return handler
        parser, endpoint = parse, self.name

        async def route_handler(request: Request) -> Response:
            if not _is_json(request.headers.get("content-type")):
                return await handler(request)
            raw = await request.body()  # bounded by BodySizeLimit (size and time)
            if not raw:
                return await handler(request)
            state = get_state(request)
            limits = body_limits(state)
            gate = get_gate(request)
            checker: BodyChecker | None = getattr(request.app.state, "body_checker", None)
            try:
                if len(raw) <= INLINE_BODY_BYTES:
                    value = parser(raw, limits)
                elif checker is not None and len(raw) > gate.heavy_body_bytes:
                    # large: parsed in the low-priority helper process (serving.body_check)
                    async with gate.slot():
                        checked = await checker.parse(parser, raw, limits)
                    if checked is None:  # the helper failed: parse here
                        checked = await gate.run(parser, raw, limits)
                    value = checked
                else:
                    value = await gate.run(parser, raw, limits)
            except BodyRejected as exc:
                state.telemetry.errors.labels(kind="limit").inc()
                state.telemetry.requests.labels(endpoint=endpoint, status="413").inc()
                raise HTTPException(413, str(exc)) from None
            except InvalidBody as exc:
                raise TruncatedValidationError(exc.errors, exc.omitted, exc.complete) from None
            return await handler(_ParsedRequest(request, raw, value))

        return route_handler
