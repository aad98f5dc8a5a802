"""Headers every answer carries, and what the app hands the access log.

The access line itself is written by gunicorn (see gunicorn.conf.py);
test_processes.py reads it from a real gunicorn. Here: the request id
and user the app puts in the WSGI environ for that line.
"""

import re

import pytest
from flask import request

ORDERS_URL = "/api/v1/orders"
PRODUCT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
ONE_PRODUCT = {"products": [{"uuid": PRODUCT, "quantity": 1}]}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def access_fields(app):
    """The request id and user each request leaves for the access log."""
    seen = []

    @app.after_request
    def remember(response):
        environ = request.environ
        seen.append((environ["orders.request_id"], environ["orders.user"]))
        return response

    return seen


@pytest.mark.parametrize(
    "sent",
    [
        "abc",
        "0b6f2d4e-8a1c-4e3f-9d5b-7c2a1e0f3b4d",
        "gateway:1.2_3-4",
        "x" * 128,
    ],
    ids=["word", "uuid", "punctuation", "128-chars"],
)
def test_sane_request_id_is_echoed(client, access_fields, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent})

    assert response.headers["X-Request-ID"] == sent
    assert access_fields == [(sent, "-")]


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "x" * 129,
        "has space",
        "semi;colon",
        "quote\"d",
        "<script>",
        "line%0Abreak",
        "é-accent",
        "key=value user=admin",
    ],
    ids=[
        "empty", "129-chars", "space", "semicolon", "quote", "markup",
        "encoded-newline", "non-ascii", "log-injection",
    ],
)
def test_insane_request_id_is_replaced_by_a_generated_one(client, access_fields, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent})

    echoed = response.headers["X-Request-ID"]
    assert echoed != sent
    assert GENERATED_ID.fullmatch(echoed)
    assert access_fields == [(echoed, "-")]


def test_missing_request_id_is_generated_fresh_each_time(client):
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]

    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


def test_request_id_is_echoed_on_errors(client):
    headers = {"X-Request-ID": "trace-401"}

    response = client.get(ORDERS_URL, headers=headers)

    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "trace-401"


def test_access_log_user_is_the_token_user(client, access_fields, as_user, alice):
    response = client.get(ORDERS_URL, headers=as_user(alice))

    assert access_fields == [(response.headers["X-Request-ID"], alice)]


def test_access_log_user_is_dash_without_a_valid_token(client, access_fields):
    response = client.get(ORDERS_URL, headers={"Authorization": "Bearer a.b.c"})

    assert access_fields == [(response.headers["X-Request-ID"], "-")]


def _order_answers(client, headers):
    placed = client.post(ORDERS_URL, json=ONE_PRODUCT, headers=headers)
    order_id = placed.get_json()["data"]["id"]
    return {
        "place-201": placed,
        "list-200": client.get(ORDERS_URL, headers=headers),
        "read-200": client.get(f"{ORDERS_URL}/{order_id}", headers=headers),
        "cancel-200": client.post(f"{ORDERS_URL}/{order_id}/cancel", headers=headers),
        "read-404": client.get(f"{ORDERS_URL}/{order_id + 99}", headers=headers),
        "place-422": client.post(ORDERS_URL, json={}, headers=headers),
        "list-401": client.get(ORDERS_URL),
    }


def test_order_answers_are_marked_no_store(client, as_user, alice):
    answers = _order_answers(client, as_user(alice))

    assert answers["place-201"].status_code == 201
    for name, response in answers.items():
        assert response.headers.get("Cache-Control") == "no-store", name


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/nothing-here"),
        ("DELETE", ORDERS_URL),
        ("GET", ORDERS_URL),
        ("POST", ORDERS_URL),
    ],
    ids=["healthz", "readyz", "openapi", "unknown-route", "405", "401", "post-401"],
)
def test_every_answer_is_nosniff(client, method, path):
    response = client.open(path, method=method)

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.mimetype == "application/json"


def test_order_answers_are_nosniff(client, as_user, alice):
    for name, response in _order_answers(client, as_user(alice)).items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", name


def test_unexpected_failure_is_nosniff(app):
    @app.get("/api/v1/orders-explode")
    def explode():
        raise RuntimeError("boom")

    response = app.test_client().get("/api/v1/orders-explode")

    assert response.status_code == 500
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
