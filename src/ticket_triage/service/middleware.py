"""The service's ASGI middleware (pure ASGI: cheaper than BaseHTTPMiddleware, and it sees the
raw `receive`), outermost first:

- `Metrics`: counts requests and times them per route template.
- `RequestContext`: a request id (`X-Request-ID`, ours or a sane one the client sent) and the
  security headers on every response; an unexpected exception becomes a JSON 500 that names
  the request id, logged once with its traceback, and the connection stays usable.
- `BodyLimit`: refuses a body over the limit (413) by Content-Length, and for a chunked body
  on the streamed bytes, before anything (authentication included) reads the rest.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse

from .metrics import ServiceMetrics

log = logging.getLogger("ticket_triage.service")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")  # what can go into a log line as is

# The console serves its script and style sheet from /static: no inline code, no CDN.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc come from static/vendor/ and start from static/docs.js (no CDN, no
# inline script); both set inline styles, and ReDoc's search runs in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def request_id_of(scope) -> str | None:
    """The id `RequestContext` gave this request (for handlers that name it in a reply)."""
    return scope.get("state", {}).get("request_id")


def _request_id(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else CONSOLE_CSP
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = rid
                headers.setdefault("Content-Security-Policy", csp)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unexpected error on %s %s (request_id %s)", scope["method"], scope["path"], rid)
            if started:  # half a response is out: nothing sane can follow it on this connection
                raise
            body = {
                "detail": "internal server error: nothing was changed by this request unless it says otherwise; "
                "quote the request_id when you report it",
                "request_id": rid,
            }
            # Answered here rather than re-raised: uvicorn closes the connection of an app that raises.
            await JSONResponse(body, status_code=500)(scope, receive, send_with_headers)


class BodyLimit:
    def __init__(self, app, *, max_request_bytes: int) -> None:
        self.app, self.limit = app, max_request_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse(
            {"detail": f"request body is {size} bytes; the limit is {self.limit}: send less"}, status_code=413
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._too_large(str(int(length)))(scope, receive, send)
        received, refused, started = 0, False, False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await self._too_large(f"more than {self.limit}")(scope, receive, send)
                    # To the app the client has gone: it stops reading and its reply is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            log.debug(
                "request refused at %d bytes; the app's error on the cut body is ignored", received, exc_info=True
            )


class Metrics:
    def __init__(self, app, *, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_code = 500

        async def send_and_note(message):
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", "<unmatched>")
            self.metrics.requests.labels(scope["method"], path, str(status_code)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - started)
