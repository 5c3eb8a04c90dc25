"""No request body reaches a 500 (issue 23, item 4): non-finite numbers get 422 naming the field,
a 422 echoes a bounded excerpt of the input, and generated JSON (hypothesis) sent to the real
uvicorn server only ever gets 200, 413 or 422 with a JSON body."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.requests import MAX_BATCH, MAX_ECHO, MAX_ERRORS


def post_raw(server, path: str, text: str):
    return server.client.post(path, content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body, loc, shown", [
    ("/predict", '{"user_id": NaN, "item_id": 1}', ["body", "user_id"], "NaN"),
    ("/predict", '{"user_id": 1, "item_id": Infinity}', ["body", "item_id"], "Infinity"),
    ("/predict", '{"user_id": 1e400, "item_id": 1}', ["body", "user_id"], "Infinity"),
    ("/predict", '{"user_id": 1, "item_id": -Infinity}', ["body", "item_id"], "-Infinity"),
    ("/predict/batch", '{"requests": [{"user_id": 1, "item_id": 2}, {"user_id": NaN, "item_id": 2}]}',
     ["body", "requests", 1, "user_id"], "NaN"),
    ("/predict/batch", '{"requests": [{"user_id": 1, "item_id": -1e999}]}', ["body", "requests", 0, "item_id"],
     "-Infinity"),
])
def test_non_finite_numbers_get_422_naming_the_field(server, path, body, loc, shown):
    response = post_raw(server, path, body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    error = next(e for e in errors if e["loc"] == loc)
    assert error["input"] == shown
    assert error["msg"].startswith(f"{shown} is not a number JSON can carry (NaN, Infinity or out of range)")


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_not_sent_as_json_gets_422_saying_which_header(server, path, content_type):
    """`curl -d '{...}'` without -H sends a form: the body reaches validation as bytes."""
    body = '{"user_id": 196, "item_id": 242}'
    headers = {"content-type": content_type} if content_type else {}
    response = server.client.post(path, content=body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["input"] == body and error["loc"] == ["body"]
    sent = f"sent as {content_type!r}" if content_type else "sent without a content type"
    assert error["msg"].startswith(f"the body was {sent}, not JSON: send it with 'Content-Type: application/json'"), \
        error["msg"]


def test_a_422_echoes_a_bounded_excerpt_of_the_input(server):
    pairs = [{"user_id": k, "item_id": k} for k in range(MAX_BATCH + 1)]
    response = server.client.post("/predict/batch", json={"requests": pairs})
    assert response.status_code == 422
    assert len(response.content) < 2 * MAX_ECHO + 400  # not the 30 KB of 1,001 pairs
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "requests"] and f"at most {MAX_BATCH} items" in error["msg"]
    assert error["input"].startswith('[{"user_id": 0, "item_id": 0}') and error["input"].endswith("...")
    assert len(error["input"]) == MAX_ECHO + 3

    many_wrong = {"requests": [{"user_id": "x", "item_id": "y"}] * 50}
    body = server.client.post("/predict/batch", json=many_wrong).json()
    assert len(body["detail"]) == MAX_ERRORS and body["more_errors"] == 100 - MAX_ERRORS
    assert body["detail"][0] == {"loc": ["body", "requests", 0, "user_id"], "type": "int_type",
                                 "msg": "Input should be a valid integer", "input": "x"}


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=30))
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                               inner, max_size=4),
                        max_leaves=12)
an_id = st.integers(min_value=-(2**64), max_value=2**64) | any_json
pair = st.fixed_dictionaries({"user_id": an_id, "item_id": an_id},
                             optional={"extra": any_json})
bodies = any_json | pair | st.fixed_dictionaries({"requests": st.lists(pair, max_size=5) | any_json})


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, path=st.sampled_from(["/predict", "/predict/batch"]))
def test_generated_json_never_gets_a_500(server, body, path):
    response = post_raw(server, path, json.dumps(body))  # NaN / Infinity written as Python's json writes them
    assert response.status_code in (200, 413, 422), (path, body, response.status_code, response.text[:500])
    payload = response.json()
    if response.status_code == 422:
        assert all(set(e) == {"loc", "type", "msg", "input"} for e in payload["detail"])
        json.dumps(payload, allow_nan=False)  # what came back is strict JSON
