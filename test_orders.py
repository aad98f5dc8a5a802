"""The orders contract: place, list and read, for the token's user only."""

import datetime
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

PRODUCT_A = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
PRODUCT_B = "9b2d4c1e-0a6f-4f3e-8c55-6d7e8f901234"
TWO_PRODUCTS = {
    "products": [
        {"uuid": PRODUCT_A, "quantity": 2},
        {"uuid": PRODUCT_B, "quantity": 1},
    ]
}


def place(client, headers, body=TWO_PRODUCTS):
    return client.post("/api/v1/orders", json=body, headers=headers)


def test_place_order_answers_201_with_location_and_order(client, as_user, alice, sql):
    response = place(client, as_user(alice))

    assert response.status_code == 201
    body = response.get_json()
    assert body["success"] is True
    order = body["data"]
    assert response.headers["Location"] == f"/api/v1/orders/{order['id']}"
    assert order["products"] == TWO_PRODUCTS["products"]
    assert order["status"] == "placed"
    assert order["fulfilled"] is False
    assert order["order_date"].endswith("Z")
    placed_at = datetime.datetime.fromisoformat(
        order["order_date"].replace("Z", "+00:00")
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - placed_at).total_seconds()) < 60

    assert sql("SELECT owner::text, status FROM orders") == [(alice, "placed")]
    assert sql(
        "SELECT product_uuid::text, quantity FROM order_products ORDER BY line_no"
    ) == [(PRODUCT_A, 2), (PRODUCT_B, 1)]


def test_read_order_answers_the_placed_order(client, as_user, alice):
    placed = place(client, as_user(alice)).get_json()["data"]

    response = client.get(f"/api/v1/orders/{placed['id']}", headers=as_user(alice))

    assert response.status_code == 200
    assert response.get_json() == {"success": True, "data": placed}


def test_list_orders_answers_own_orders_newest_first(client, as_user, alice, bob):
    first = place(client, as_user(alice)).get_json()["data"]
    second = place(client, as_user(alice)).get_json()["data"]
    place(client, as_user(bob))

    response = client.get("/api/v1/orders", headers=as_user(alice))

    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert [order["id"] for order in body["data"]] == [second["id"], first["id"]]
    assert body["data"][1] == first


def test_list_orders_of_new_user_is_empty(client, as_user, alice):
    response = client.get("/api/v1/orders", headers=as_user(alice))

    assert response.status_code == 200
    assert response.get_json()["data"] == []


def test_other_users_order_is_404_like_a_missing_one(client, as_user, alice, bob):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]

    others = client.get(f"/api/v1/orders/{order_id}", headers=as_user(bob))
    missing = client.get(f"/api/v1/orders/{order_id + 1000}", headers=as_user(bob))

    for response in (others, missing):
        assert response.status_code == 404
        assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}
    assert others.data == missing.data


@pytest.mark.parametrize(
    "order_number",
    ["0", str(2**63), str(2**64), "9" * 5000],
    ids=["zero", "bigint-plus-one", "beyond-bigint", "5000-digits"],
)
@pytest.mark.parametrize("action", ["", "/cancel", "/fulfil"])
def test_order_number_outside_bigint_is_404(
    client, as_user, alice, order_number, action
):
    method = client.get if not action else client.post
    response = method(
        f"/api/v1/orders/{order_number}{action}", headers=as_user(alice, staff=True)
    )

    assert response.status_code == 404
    assert response.get_json()["messages"] == ["NOT_FOUND"]


@pytest.mark.parametrize(
    "body, field",
    [
        ([], "body"),
        ("products", "body"),
        ({}, "products"),
        ({"products": []}, "products"),
        ({"products": "abc"}, "products"),
        ({"products": [1]}, "products[0]"),
        ({"products": [{"uuid": "not-a-uuid", "quantity": 1}]}, "products[0].uuid"),
        ({"products": [{"uuid": 12, "quantity": 1}]}, "products[0].uuid"),
        ({"products": [{"quantity": 1}]}, "products[0].uuid"),
        ({"products": [{"uuid": PRODUCT_A}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": 0}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": -3}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": 1.5}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": 2.0}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": "2"}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": True}]}, "products[0].quantity"),
        ({"products": [{"uuid": PRODUCT_A, "quantity": 1001}]}, "products[0].quantity"),
        (
            {"products": [{"uuid": PRODUCT_A, "quantity": 2**70}]},
            "products[0].quantity",
        ),
        (
            {"products": [{"uuid": PRODUCT_A, "quantity": 1}] * 2},
            "products[1].uuid",
        ),
        (
            {"products": [{"uuid": str(uuid.uuid4()), "quantity": 1}] * 101},
            "products",
        ),
    ],
    ids=[
        "list-body", "string-body", "no-products", "empty-products",
        "products-not-list", "product-not-object", "bad-uuid", "numeric-uuid",
        "missing-uuid", "missing-quantity", "zero-quantity", "negative-quantity",
        "fractional-quantity", "float-quantity", "string-quantity",
        "boolean-quantity", "quantity-over-bound", "quantity-beyond-bigint",
        "product-listed-twice", "too-many-products",
    ],
)
def test_invalid_order_is_422_naming_the_field(
    client, as_user, alice, sql, body, field
):
    response = place(client, as_user(alice), body)

    assert response.status_code == 422
    payload = response.get_json()
    assert payload["success"] is False
    assert any(message.startswith(field + ":") for message in payload["messages"])
    assert sql("SELECT count(*) FROM orders") == [(0,)]
    assert sql("SELECT count(*) FROM order_products") == [(0,)]


def test_every_offending_field_is_named(client, as_user, alice):
    body = {
        "products": [
            {"uuid": "x", "quantity": 1},
            {"uuid": PRODUCT_A, "quantity": 0},
        ]
    }

    response = place(client, as_user(alice), body)

    assert response.status_code == 422
    fields = [message.split(":")[0] for message in response.get_json()["messages"]]
    assert fields == ["products[0].uuid", "products[1].quantity"]


def test_unparseable_json_is_400(client, as_user, alice, sql):
    response = client.post(
        "/api/v1/orders",
        data=b'{"products": [',
        headers={**as_user(alice), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.get_json()["success"] is False
    assert sql("SELECT count(*) FROM orders") == [(0,)]


def test_oversized_body_is_413_json(client, as_user, alice, sql):
    response = client.post(
        "/api/v1/orders",
        data=b"[" + b" " * (64 * 1024) + b"]",
        headers={**as_user(alice), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.get_json() == {"success": False, "messages": ["BODY_TOO_LARGE"]}
    assert sql("SELECT count(*) FROM orders") == [(0,)]


def test_uppercase_product_uuid_is_stored_lowercase(client, as_user, alice):
    body = {"products": [{"uuid": PRODUCT_A.upper(), "quantity": 1}]}

    response = place(client, as_user(alice), body)

    assert response.status_code == 201
    assert response.get_json()["data"]["products"][0]["uuid"] == PRODUCT_A


def test_unknown_route_is_404_json(client):
    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}


def test_wrong_method_is_405_json_with_allow(client, as_user, alice):
    response = client.delete("/api/v1/orders", headers=as_user(alice))

    assert response.status_code == 405
    assert response.get_json() == {
        "success": False,
        "messages": ["METHOD_NOT_ALLOWED"],
    }
    assert "POST" in response.headers["Allow"]


def test_unexpected_failure_is_500_json_without_trace(app, as_user, alice, caplog):
    @app.get("/api/v1/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/v1/explode")

    assert response.status_code == 500
    assert response.get_json() == {"success": False, "messages": ["INTERNAL_ERROR"]}
    assert b"secret internals" not in response.data
    assert "secret internals" in caplog.text


def test_missing_token_is_401_with_bare_challenge(client):
    response = client.get("/api/v1/orders")

    assert response.status_code == 401
    assert response.get_json() == {"success": False, "messages": ["INVALID_TOKEN"]}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_token_cli_mints_a_token_the_service_accepts(client, runner, alice):
    result = runner.invoke(args=["token", alice])

    assert result.exit_code == 0
    token = result.output.strip()
    headers = {"Authorization": f"Bearer {token}"}
    response = client.get("/api/v1/orders", headers=headers)
    assert response.status_code == 200


def test_token_cli_refuses_a_non_uuid(runner):
    result = runner.invoke(args=["token", "alice"])

    assert result.exit_code != 0
    assert "UUID" in result.output


@pytest.mark.parametrize(
    "path", ["/api/v1//orders", "/api/v1/orders//1", "/api/v1/orders//1/cancel"]
)
def test_doubled_slash_is_404_json_not_a_redirect(client, as_user, alice, path):
    response = client.post(path, headers={**as_user(alice), "Host": "elsewhere"})

    assert response.status_code == 404
    assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}
    assert "Location" not in response.headers


def test_token_command_without_secret_says_what_to_set_in_one_line(tmp_path):
    environ = {
        key: value for key, value in os.environ.items() if key != "SECRET_KEY"
    }

    finished = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "orders", "token", str(uuid.uuid4())],
        cwd=Path(__file__).parent,
        env=environ,
        capture_output=True,
        text=True,
    )

    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr
    assert "SECRET_KEY" in finished.stderr.strip().splitlines()[-1]
