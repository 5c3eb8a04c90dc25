"""The HTTP API's response bodies and the request size limit (``serving.server`` serves them; the request
bodies and their 422s are ``serving.requests``'s)."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

MAX_BODY_BYTES = 256 * 1024  # a full batch is ~40 KB (more: 413 naming the limit)


# --- response bodies --------------------------------------------------------------------


class Unknown(BaseModel):
    user: bool  # the user id is outside the model's vocabulary: scored with the OOV embedding
    item: bool


class Prediction(BaseModel):
    user_id: int
    item_id: int
    click_probability: float
    model_name: str
    model_version: int
    feature_timestamps: dict[str, str | None]  # feature view -> event time of the version served (None: no row)
    unknown: Unknown


class BatchPrediction(BaseModel):
    model_name: str
    model_version: int
    predictions: list[Prediction]


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 naming the limit, by its
    Content-Length or, for a chunked body, as soon as the chunks pass it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse(status_code=413, content={
            "detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(length.decode())(scope, receive, send)
            return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading on
                raise HTTPException(413, f"request body of more than {self.max_bytes} bytes exceeds the limit "
                                         f"of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)
