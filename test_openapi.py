"""The published API description: valid, complete and true to the service.

`openapi.json` is written by hand. These tests keep it honest: its routes
are exactly the routes the app registers, and real answers of the service
(successes and every kind of refusal) validate against its schemas and
headers.
"""

import json
import re
import uuid

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_schema_validator import oas30_format_checker
from openapi_spec_validator import validate

import localdb
import orders
from conftest import TEST_SECRET
from test_orders import TWO_PRODUCTS
from test_orders import place

DOCUMENT = json.loads(orders.OPENAPI_PATH.read_text())
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def resolve(node):
    """Return `node` with every local $ref replaced by what it names."""
    if isinstance(node, list):
        return [resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolve(target)
    return {key: resolve(value) for key, value in node.items()}


def documented_answer(path, method, status):
    """The document's answer object for one status of one operation."""
    operation = DOCUMENT["paths"][path][method.lower()]
    answers = operation["responses"]
    assert str(status) in answers, f"{method} {path} does not document {status}"
    return resolve(answers[str(status)])


def check_answer(response, path, method):
    """Assert that `response` is what the document says `method path` sends.

    The status must be documented; the body must be JSON valid against
    its schema; every documented header must be present when required
    and match its schema when present.
    """
    answer = documented_answer(path, method, response.status_code)
    check_against(response, answer)


def check_against(response, answer):
    assert response.mimetype == "application/json"
    schema = answer["content"]["application/json"]["schema"]
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(
        json.loads(response.data)
    )
    for name, header in answer.get("headers", {}).items():
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"required header {name} is missing"
            continue
        OAS30Validator(header["schema"]).validate(value)


def documented_routes():
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def as_openapi_path(rule):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def example_path(path):
    return path.replace("{order_id}", "1")


def test_document_is_valid_openapi():
    validate(DOCUMENT)


def test_document_lists_exactly_the_registered_routes(app):
    registered = set()
    for rule in app.url_map.iter_rules():
        methods = rule.methods - {"HEAD"}
        # Werkzeug answers HEAD for every GET route; nothing else has it.
        assert "HEAD" not in rule.methods or "GET" in rule.methods, rule.rule
        registered |= {(method, as_openapi_path(rule.rule)) for method in methods}

    assert registered == documented_routes()


def test_openapi_document_is_served_as_is_without_token(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert response.data == orders.OPENAPI_PATH.read_bytes()
    check_answer(response, "/api/v1/openapi.json", "GET")


@pytest.mark.parametrize(
    "method, path",
    [
        (method, path)
        for path in DOCUMENT["paths"]
        for method in METHODS
        if method.lower() not in DOCUMENT["paths"][path]
    ],
)
def test_undocumented_method_is_405_json_with_allow(
    client, as_user, alice, method, path
):
    response = client.open(example_path(path), method=method, headers=as_user(alice))

    assert response.status_code == 405
    refusal = DOCUMENT["components"]["responses"]["MethodNotAllowed"]
    check_against(response, resolve(refusal))
    allowed = {name.upper() for name in DOCUMENT["paths"][path]} & set(METHODS)
    if "GET" in allowed:
        allowed.add("HEAD")
    assert set(response.headers["Allow"].split(", ")) == allowed


def test_probes_answer_as_documented(client):
    for path in ("/healthz", "/readyz"):
        response = client.get(path)

        assert response.status_code == 200
        check_answer(response, path, "GET")


def test_unreachable_database_answers_503_as_documented(as_user, alice):
    # Nothing listens on this port: every connection is refused at once.
    port = localdb.free_port()
    app = orders.create_app(
        {
            "SECRET_KEY": TEST_SECRET,
            "DATABASE_URL": f"postgresql://orders@127.0.0.1:{port}/orders",
        }
    )
    client = app.test_client()
    headers = as_user(alice, staff=True)
    calls = [
        ("GET", "/readyz", "/readyz", {}),
        ("POST", "/api/v1/orders", "/api/v1/orders", {"json": TWO_PRODUCTS}),
        ("GET", "/api/v1/orders", "/api/v1/orders", {}),
        ("GET", "/api/v1/orders/1", "/api/v1/orders/{order_id}", {}),
        ("POST", "/api/v1/orders/1/cancel", "/api/v1/orders/{order_id}/cancel", {}),
        ("POST", "/api/v1/orders/1/fulfil", "/api/v1/orders/{order_id}/fulfil", {}),
    ]

    for method, url, path, extra in calls:
        response = client.open(url, method=method, headers=headers, **extra)

        assert response.status_code == 503, url
        assert response.get_json()["messages"] == ["DATABASE_UNAVAILABLE"]
        check_answer(response, path, method)


def test_order_calls_answer_as_documented(client, as_user, alice, bob):
    staff = as_user(str(uuid.uuid4()), staff=True)
    json_body = {**as_user(alice), "Content-Type": "application/json"}
    retry = {**as_user(alice), "Idempotency-Key": "checkout-1"}
    other_products = {"products": [{"uuid": str(uuid.uuid4()), "quantity": 9}]}
    placed = place(client, as_user(alice))
    first_try = place(client, retry)
    for response in (placed, first_try):
        assert response.status_code == 201
        check_answer(response, "/api/v1/orders", "POST")
    order_id = placed.get_json()["data"]["id"]
    replayed_id = first_try.get_json()["data"]["id"]
    orders_path = "/api/v1/orders"
    order_path = orders_path + "/{order_id}"
    # (status, method, documented path, URL, request arguments)
    calls = [
        (200, "POST", orders_path, "", {"headers": retry, "json": TWO_PRODUCTS}),
        (422, "POST", orders_path, "", {"headers": retry, "json": other_products}),
        (422, "POST", orders_path, "",
         {"headers": {**retry, "Idempotency-Key": "\t"}, "json": TWO_PRODUCTS}),
        (422, "POST", orders_path, "",
         {"headers": as_user(alice), "json": {"products": []}}),
        (401, "POST", orders_path, "", {"json": TWO_PRODUCTS}),
        (400, "POST", orders_path, "", {"headers": json_body, "data": b"{"}),
        (415, "POST", orders_path, "", {"headers": as_user(alice), "data": b"{}"}),
        (413, "POST", orders_path, "",
         {"headers": json_body, "data": b" " * (orders.MAX_BODY_BYTES + 1)}),
        (200, "GET", orders_path, "?limit=1", {"headers": as_user(alice)}),
        (422, "GET", orders_path, "?limit=0&status=lost", {"headers": as_user(alice)}),
        (403, "GET", orders_path, "?all=true", {"headers": as_user(bob)}),
        (200, "GET", orders_path, "?all=true", {"headers": staff}),
        (401, "GET", orders_path, "",
         {"headers": {"Authorization": "Bearer x.y.z"}}),
        (200, "GET", order_path, f"/{order_id}", {"headers": as_user(alice)}),
        (404, "GET", order_path, f"/{order_id}", {"headers": as_user(bob)}),
        (403, "POST", order_path + "/fulfil", f"/{order_id}/fulfil",
         {"headers": as_user(alice)}),
        (200, "POST", order_path + "/fulfil", f"/{order_id}/fulfil",
         {"headers": staff}),
        (404, "POST", order_path + "/fulfil", f"/{order_id + 1000}/fulfil",
         {"headers": staff}),
        (409, "POST", order_path + "/cancel", f"/{order_id}/cancel",
         {"headers": as_user(alice)}),
        (404, "POST", order_path + "/cancel", f"/{order_id + 1000}/cancel",
         {"headers": as_user(alice)}),
        (200, "POST", order_path + "/cancel", f"/{replayed_id}/cancel",
         {"headers": as_user(alice)}),
        (409, "POST", order_path + "/fulfil", f"/{replayed_id}/fulfil",
         {"headers": staff}),
    ]

    for status, method, path, url_tail, arguments in calls:
        url = orders_path + url_tail
        response = client.open(url, method=method, **arguments)

        assert response.status_code == status, (method, url, response.data)
        check_answer(response, path, method)


def test_unexpected_failure_answers_the_documented_500(app, as_user, alice):
    @app.get("/api/v1/orders/explode")
    def explode():
        raise RuntimeError("internals")

    response = app.test_client().get("/api/v1/orders/explode")

    assert response.status_code == 500
    check_answer(response, "/api/v1/orders/{order_id}", "GET")


def test_order_number_in_non_ascii_digits_is_404(client, as_user, alice):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    # The same number in Arabic-Indic digits, which int() would accept.
    other_digits = "".join(chr(0x0660 + int(digit)) for digit in str(order_id))

    response = client.get(f"/api/v1/orders/{other_digits}", headers=as_user(alice))

    assert response.status_code == 404
    assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}
