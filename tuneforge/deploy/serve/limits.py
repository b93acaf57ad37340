"""Request body size limit as plain ASGI middleware: it refuses on Content-Length before a
byte of the body is read, and counts the bytes of chunked uploads, so an oversized upload
never reaches the multipart parser or memory (HTTP 413)."""
from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised from `receive` once a chunked body passes the limit; whoever reads the body must
    let it through (not turn it into a 400), so that this middleware answers 413."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _refusal(self) -> JSONResponse:
        return JSONResponse({"detail": f"request body larger than the server's limit of {self.max_bytes} bytes "
                                       "(serve --max-body-mb); send a smaller image"}, status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refusal()(scope, receive, send)
        seen, started = 0, False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._refusal()(scope, receive, send)
