"""The serving API's request bodies and what a bad one gets: 422 naming the field, never a 500.

A 422 lists at most ``MAX_ERRORS`` problems, each with its location, type, message and a bounded
excerpt of the offending input (at most ``MAX_ECHO`` characters of its JSON): a 1,001-pair batch
is not echoed back whole, a non-finite number (``NaN``, ``Infinity``, ``1e400``, which Python's
JSON parser accepts but JSON cannot carry back) is named instead of breaking the reply, and a body
sent under another content type (curl's ``-d`` alone sends a form) is echoed as text and told to
say ``Content-Type: application/json``.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.names import INT64_MAX, INT64_MIN

MAX_BATCH = 1000  # pairs per /predict/batch (more: 422 naming the limit)
MAX_ERRORS = 10  # problems listed in one 422
MAX_ECHO = 200  # characters of the offending input echoed per problem
EntityId = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: EntityId
    item_id: EntityId


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[PredictRequest] = Field(min_length=1, max_length=MAX_BATCH)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float spelt as a string ('NaN', 'Infinity', '-Infinity')."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def excerpt(value: Any, limit: int = MAX_ECHO) -> Any:
    """A JSON-safe echo of an input: a scalar as it is (a non-finite float as its name), anything
    longer than ``limit`` characters of JSON as the first ``limit`` characters and '...'."""
    if isinstance(value, (bool, int, type(None))) and len(str(value)) <= limit:
        return value
    if isinstance(value, float):
        return _finite(value)
    try:
        text = json.dumps(_finite(value), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) <= limit:
        return _finite(value) if not isinstance(value, str) else value
    return text[:limit] + "..."


def _problem(error: dict, content_type: str) -> dict:
    value = error.get("input")
    msg = str(error.get("msg", ""))
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{excerpt(value)} is not a number JSON can carry (NaN, Infinity or out of range): {msg}"
    if isinstance(value, (bytes, bytearray)):  # a body not sent as JSON reaches validation as its bytes
        value = value.decode("utf-8", errors="replace")
        sent = f"sent as {content_type!r}" if content_type else "sent without a content type"
        msg = (f"the body was {sent}, not JSON: send it with "
               f"'Content-Type: application/json' (curl: -H 'Content-Type: application/json'): {msg}")
    return {"loc": [p if isinstance(p, (int, str)) else str(p) for p in error.get("loc", ())],
            "type": str(error.get("type", "")), "msg": msg, "input": excerpt(value)}


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with at most ``MAX_ERRORS`` problems, each with a bounded, JSON-safe excerpt of its input."""
    errors = list(exc.errors())
    content_type = request.headers.get("content-type", "")
    detail = [_problem(e, content_type) for e in errors[:MAX_ERRORS]]
    body: dict[str, Any] = {"detail": detail}
    if len(errors) > MAX_ERRORS:
        body["more_errors"] = len(errors) - MAX_ERRORS
    return JSONResponse(status_code=422, content=body)


def install(app: FastAPI) -> None:
    """Wire the bounded 422 into ``app``."""
    app.add_exception_handler(RequestValidationError, validation_error)
