"""Shared request checks: bounded parameters, a JSON body reader that refuses what cannot be
stored (invalid UTF-8, NaN, nesting past the metadata limit), validation replies that can
always be encoded, and the error statuses each route documents."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Callable

from fastapi import HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from ..schemas import DB_INT_MAX, Message, Str, UTCDateTime, encodable

# -- parameters ---------------------------------------------------------------------------------
# Out-of-range ids are 422 (the OpenAPI document states the range), not 404: no row can have them.
TicketId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description=f"a ticket id (1 to {DB_INT_MAX})")]
NotificationId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description=f"a notification id (1 to {DB_INT_MAX})")]
Offset = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
QueryStr = Annotated[Str | None, Query(max_length=100)]
DateQuery = Annotated[UTCDateTime | None, Query(description="ISO date-time (no offset: UTC); years 1 to 9999 in UTC")]


# -- documented error replies -------------------------------------------------------------------
def _reply(description: str, headers: dict | None = None) -> dict:
    return {"model": Message, "description": description, **({"headers": headers} if headers else {})}


AUTH = {
    401: _reply("no API key, an unknown one, or a revoked one", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    403: _reply("the API key has the other role"),
}
DATABASE = {
    503: _reply(
        "the database is unavailable: nothing was stored; retry (see Retry-After)",
        {"Retry-After": {"schema": {"type": "string"}}},
    )
}
BODY = {
    400: _reply("the body could not be read"),
    413: _reply("the body, or a text in it, is over its size limit"),
}
NOT_FOUND = {404: _reply("no such row")}


# -- the JSON body ----------------------------------------------------------------------------
def _body_error(msg: str, loc: list[str | int] | None = None, kind: str = "json_invalid") -> HTTPException:
    return HTTPException(422, [{"loc": loc or ["body"], "msg": msg, "type": kind}])


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _body_error(f"the number {text[:40]} is too large for a float: send a finite number")
    return value


def _reject_constant(name: str):
    raise _body_error(f"{name} is not JSON (nor storable): send a finite number or null")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` levels ({} and [] are one): iterative, early exit."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json_body(body: bytes, max_depth: int) -> Any:
    """The request's JSON; 422 for bytes that are not UTF-8, NaN/Infinity, numbers past a
    float or past Python's 4300-digit int limit, and fields nested deeper than `max_depth`
    levels (only metadata nests). Malformed JSON is left to FastAPI (its 422 json_invalid)."""
    try:
        text = body.decode("utf-8")  # strict: an encoded surrogate is refused here too
    except UnicodeDecodeError as exc:
        raise _body_error(f"the body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_reject_constant)
    except RecursionError:
        raise _body_error(f"the body nests too deeply: metadata may nest at most {max_depth} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _body_error(f"the body holds a value that cannot be read ({exc})") from None
    # Only nested values cost a walk, and only a body with more brackets than the limit can nest that deep.
    if isinstance(value, dict) and body.count(b"[") + body.count(b"{") > max_depth:
        for key, field in value.items():
            if isinstance(field, (dict, list)) and _deeper_than(field, max_depth):
                raise _body_error(
                    f"nests more than {max_depth} levels deep; the limit is TRIAGE_METADATA_MAX_DEPTH={max_depth}",
                    ["body", key],
                    "value_error",
                )
    elif isinstance(value, list) and _deeper_than(value, max_depth):
        raise _body_error(f"the body nests more than {max_depth} levels deep", kind="value_error")
    return value


class GuardedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body(), self.app.state.triage.settings.metadata_max_depth)
        return self._json


class GuardedRoute(APIRoute):
    """Reads JSON bodies with `parse_json_body`, and makes validation replies encodable: they
    echo the input, which may hold the very surrogate they refuse."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(GuardedRequest(request.scope, request.receive))
            except RequestValidationError as exc:
                raise RequestValidationError(encodable(list(exc.errors())), body=None) from None

        return guarded


# -- sizes --------------------------------------------------------------------------------------
def check_text_size(text: str, limit: int, what: str) -> None:
    size = len(text.encode("utf-8"))
    if size > limit:
        raise HTTPException(
            413,
            f"{what} is {size} bytes; the limit is {limit} bytes ({limit // 1024} KiB): shorten it or attach the rest elsewhere",
        )


def check_metadata_size(metadata: dict, limit: int) -> None:
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limit:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "metadata"],
                    "msg": f"metadata is {size} bytes as compact JSON; the limit is TRIAGE_METADATA_MAX_BYTES={limit}: keep large data elsewhere and link it",
                    "type": "value_error",
                }
            ],
        )


def unknown_category(category: str, labels: list[str], field: str = "category") -> HTTPException:
    return HTTPException(
        422,
        [
            {
                "loc": ["body", field],
                "msg": f"unknown category {category!r}; use one of {labels}",
                "type": "value_error",
                "input": category,
            }
        ],
    )
