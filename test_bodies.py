"""Hostile order bodies: each is a JSON 4xx, none a 500, nothing stored.

The hand-written cases name each fault of issue 5; the property tests
let hypothesis generate bodies for the parser, the validator and the app.
"""

import json
import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import orders

ORDERS_URL = "/api/v1/orders"
PRODUCT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
JSON = "application/json"

# Figures quoted in the README's reliability section.
VALIDATOR_EXAMPLES = 2000
PARSER_EXAMPLES = 1000
APP_EXAMPLES = 400


def one_product(quantity=1, product_uuid=PRODUCT):
    return {"products": [{"uuid": product_uuid, "quantity": quantity}]}


def post_raw(client, headers, data, content_type=JSON):
    return client.post(
        ORDERS_URL, data=data, headers={**headers, "Content-Type": content_type}
    )


def stored_counts(sql):
    orders_count = sql("SELECT count(*) FROM orders")[0][0]
    lines_count = sql("SELECT count(*) FROM order_products")[0][0]
    return orders_count, lines_count


def assert_refused_as_json(response, statuses):
    assert response.status_code in statuses
    assert response.mimetype == JSON
    body = response.get_json()
    assert body["success"] is False
    assert body["messages"] and all(isinstance(m, str) for m in body["messages"])


def _text_bodies():
    product = f'{{"uuid": "{PRODUCT}", "quantity": %s}}'
    return {
        "nul-in-uuid": (
            json.dumps(one_product(product_uuid=PRODUCT[:-1] + "\u0000")),
            422,
        ),
        "nul-only-uuid": (json.dumps(one_product(product_uuid="\u0000")), 422),
        "nul-in-products-key": (
            json.dumps({"products\u0000": one_product()["products"]}),
            422,
        ),
        "nul-in-quantity-string": (json.dumps(one_product(quantity="1\u0000")), 422),
        "raw-nul-byte-in-string": (
            '{"products": [{"uuid": "' + PRODUCT + '\x00", "quantity": 1}]}',
            400,
        ),
        "lone-surrogate-uuid": ('{"products": [' + product.replace(
            PRODUCT, "\\ud800") % 1 + "]}", 422),
        "int-beyond-integer": ('{"products": [' + product % 2**31 + "]}", 422),
        "int-beyond-bigint": ('{"products": [' + product % 2**63 + "]}", 422),
        "int-beyond-numeric": ('{"products": [' + product % 10**200 + "]}", 422),
        "int-bigint-negative": ('{"products": [' + product % -(2**63 + 1) + "]}", 422),
        "int-of-5000-digits": ('{"products": [' + product % ("9" * 5000) + "]}", 400),
        "float-quantity": ('{"products": [' + product % "1.0" + "]}", 422),
        "exponent-quantity": ('{"products": [' + product % "1e2" + "]}", 422),
        "float-beyond-double": ('{"products": [' + product % "1e400" + "]}", 422),
        "nan-quantity": ('{"products": [' + product % "NaN" + "]}", 400),
        "infinity-quantity": ('{"products": [' + product % "Infinity" + "]}", 400),
        "minus-infinity-quantity": (
            '{"products": [' + product % "-Infinity" + "]}",
            400,
        ),
        "nan-elsewhere": ('{"products": [' + product % 1 + '], "x": NaN}', 400),
        "true-quantity": ('{"products": [' + product % "true" + "]}", 422),
        "false-quantity": ('{"products": [' + product % "false" + "]}", 422),
        "null-quantity": ('{"products": [' + product % "null" + "]}", 422),
        "duplicate-top-key": (
            '{"products": [' + product % 1 + '], "products": [' + product % 2 + "]}",
            400,
        ),
        "duplicate-product-key": (
            '{"products": [{"uuid": "%s", "quantity": 1, "quantity": 5}]}' % PRODUCT,
            400,
        ),
        "nested-9-levels": ('{"products": [' + "[" * 8 + "1" + "]" * 8 + "]}", 400),
        "nested-30000-levels": ("[" * 30000 + "]" * 30000, 400),
        "nested-objects": ('{"a":' * 5000 + "1" + "}" * 5000, 400),
        "product-listed-twice": (
            '{"products": [' + product % 1 + ", " + product % 2 + "]}",
            422,
        ),
        "product-listed-twice-other-case": (
            '{"products": [' + product % 1 + ", "
            + (product % 2).replace(PRODUCT, PRODUCT.upper()) + "]}",
            422,
        ),
        "thousand-products": (
            json.dumps(
                {"products": [{"uuid": str(uuid.uuid4()), "quantity": 1}] * 1000},
                separators=(",", ":"),
            ),
            422,
        ),
        "empty-body": ("", 400),
        "whitespace-body": ("  \n\t ", 400),
        "json-null": ("null", 422),
        "json-number": ("42", 422),
        "json-string": ('"products"', 422),
        "trailing-garbage": (json.dumps(one_product()) + " x", 400),
        "two-documents": (json.dumps(one_product()) * 2, 400),
        "byte-order-mark": ("\ufeff" + json.dumps(one_product()), 400),
    }


TEXT_BODIES = _text_bodies()


@pytest.mark.parametrize(
    "text, status", TEXT_BODIES.values(), ids=TEXT_BODIES.keys()
)
def test_hostile_body_is_refused_and_nothing_stored(
    client, as_user, alice, sql, text, status
):
    response = post_raw(client, as_user(alice), text.encode("utf-8", "surrogatepass"))

    assert_refused_as_json(response, {status})
    assert stored_counts(sql) == (0, 0)


BYTE_BODIES = {
    "latin-1": ('{"products": [{"uuid": "\xe9", "quantity": 1}]}').encode("latin-1"),
    "invalid-utf8": b'{"products": [{"uuid": "\xff\xfe", "quantity": 1}]}',
    "utf-16": json.dumps(one_product()).encode("utf-16"),
    "utf-32": json.dumps(one_product()).encode("utf-32"),
    "random-bytes": bytes(range(256)),
    "nul-bytes": b"\x00" * 64,
}


@pytest.mark.parametrize("data", BYTE_BODIES.values(), ids=BYTE_BODIES.keys())
def test_body_not_utf8_is_400(client, as_user, alice, sql, data):
    response = post_raw(client, as_user(alice), data)

    assert_refused_as_json(response, {400})
    assert stored_counts(sql) == (0, 0)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "",
    ],
)
def test_body_with_non_json_content_type_is_415(
    client, as_user, alice, sql, content_type
):
    response = post_raw(
        client, as_user(alice), json.dumps(one_product()), content_type
    )

    assert_refused_as_json(response, {415})
    assert stored_counts(sql) == (0, 0)


def test_json_content_type_with_charset_is_accepted(client, as_user, alice, sql):
    response = post_raw(
        client, as_user(alice), json.dumps(one_product()), JSON + "; charset=utf-8"
    )

    assert response.status_code == 201
    assert stored_counts(sql) == (1, 1)


@pytest.mark.parametrize(
    "extra_bytes", [1, 4096, 10 * orders.MAX_BODY_BYTES], ids=["1", "4k", "10x"]
)
def test_body_over_size_limit_is_413(client, as_user, alice, sql, extra_bytes):
    products = [{"uuid": str(uuid.uuid4()), "quantity": 1}]
    body = json.dumps({"products": products, "padding": ""})
    padding = "p" * (orders.MAX_BODY_BYTES - len(body) + extra_bytes)
    data = json.dumps({"products": products, "padding": padding}).encode()
    assert len(data) == orders.MAX_BODY_BYTES + extra_bytes

    response = post_raw(client, as_user(alice), data)

    assert response.status_code == 413
    assert response.get_json() == {"success": False, "messages": ["BODY_TOO_LARGE"]}
    assert stored_counts(sql) == (0, 0)


def test_body_at_size_limit_is_read(client, as_user, alice, sql):
    products = [{"uuid": str(uuid.uuid4()), "quantity": 1}]
    body = json.dumps({"products": products, "padding": ""})
    padding = "p" * (orders.MAX_BODY_BYTES - len(body))
    data = json.dumps({"products": products, "padding": padding}).encode()

    response = post_raw(client, as_user(alice), data)

    assert response.status_code == 201
    assert stored_counts(sql) == (1, 1)


def test_thousands_of_products_over_size_limit_is_413(client, as_user, alice, sql):
    products = [{"uuid": str(uuid.uuid4()), "quantity": 1} for _ in range(5000)]

    response = client.post(
        ORDERS_URL, json={"products": products}, headers=as_user(alice)
    )

    assert response.status_code == 413
    assert stored_counts(sql) == (0, 0)


def test_most_products_allowed_is_stored_whole(client, as_user, alice, sql):
    products = [
        {"uuid": str(uuid.uuid4()), "quantity": position % orders.MAX_QUANTITY + 1}
        for position in range(orders.MAX_PRODUCTS_PER_ORDER)
    ]

    response = client.post(
        ORDERS_URL, json={"products": products}, headers=as_user(alice)
    )

    assert response.status_code == 201
    assert response.get_json()["data"]["products"] == products
    assert stored_counts(sql) == (1, orders.MAX_PRODUCTS_PER_ORDER)


def test_nul_in_ignored_field_is_never_stored(client, as_user, alice, sql):
    body = {**one_product(), "note\u0000": "gift\u0000wrap"}

    response = client.post(ORDERS_URL, json=body, headers=as_user(alice))

    assert response.status_code == 201
    assert "\u0000" not in response.get_data(as_text=True)
    assert stored_counts(sql) == (1, 1)


# ---------------------------------------------------------------------------
# Property tests

UUIDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda value: str(value).upper()),
    st.sampled_from([PRODUCT, PRODUCT.upper()]),
    st.text(max_size=40),
)
QUANTITIES = st.one_of(
    st.integers(min_value=-5, max_value=orders.MAX_QUANTITY + 5),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.none(),
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=20,
)
PRODUCT_LINES = st.fixed_dictionaries(
    {},
    optional={"uuid": UUIDS, "quantity": QUANTITIES, "note": JSON_LEAVES},
)
VALID_LINES = st.fixed_dictionaries(
    {
        "uuid": st.uuids().map(str),
        "quantity": st.integers(min_value=1, max_value=orders.MAX_QUANTITY),
    }
)
VALID_ORDERS = st.fixed_dictionaries(
    {
        "products": st.lists(
            VALID_LINES,
            min_size=1,
            max_size=orders.MAX_PRODUCTS_PER_ORDER,
            unique_by=lambda line: line["uuid"],
        )
    },
    optional={"extra": ANY_JSON},
)
ORDER_BODIES = st.one_of(
    VALID_ORDERS,
    ANY_JSON,
    st.fixed_dictionaries(
        {"products": st.lists(st.one_of(PRODUCT_LINES, ANY_JSON), max_size=6)}
    ),
    st.fixed_dictionaries(
        {"products": st.lists(PRODUCT_LINES, min_size=1, max_size=4)},
        optional={"extra": ANY_JSON},
    ),
)


def is_valid_order(body):
    """An independent statement of the contract, for the property tests."""
    if not isinstance(body, dict):
        return False
    products = body.get("products")
    if not isinstance(products, list) or not 1 <= len(products) <= 100:
        return False
    seen = set()
    for product in products:
        if not isinstance(product, dict):
            return False
        product_uuid = product.get("uuid")
        quantity = product.get("quantity")
        try:
            canonical = str(uuid.UUID(product_uuid))
        except (TypeError, ValueError, AttributeError):
            return False
        if len(product_uuid) != 36 or canonical in seen:
            return False
        seen.add(canonical)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            return False
        if not 1 <= quantity <= orders.MAX_QUANTITY:
            return False
    return True


@settings(max_examples=VALIDATOR_EXAMPLES, database=None, deadline=None)
@given(ORDER_BODIES)
def test_validate_order_accepts_exactly_the_contract(body):
    try:
        lines = orders.validate_order(body)
    except orders.InvalidRequest as refusal:
        assert refusal.status == 422
        assert refusal.messages
        assert not is_valid_order(body)
        return

    assert is_valid_order(body)
    assert [q for _, q in lines] == [p["quantity"] for p in body["products"]]
    assert [u for u, _ in lines] == [p["uuid"].lower() for p in body["products"]]


@settings(max_examples=PARSER_EXAMPLES, database=None, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200), ANY_JSON.map(lambda v: json.dumps(v).encode())
    )
)
def test_parse_json_body_returns_json_or_refuses_with_400(raw):
    try:
        value = orders.parse_json_body(raw)
    except orders.InvalidRequest as refusal:
        assert refusal.status == 400
        assert refusal.messages
        return

    assert json.loads(raw) == value


@settings(
    max_examples=APP_EXAMPLES,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=ORDER_BODIES)
def test_placing_generated_body_is_201_only_when_valid(
    client, as_user, alice, sql, body
):
    before = stored_counts(sql)

    response = post_raw(client, as_user(alice), json.dumps(body))

    after = stored_counts(sql)
    if is_valid_order(body):
        assert response.status_code == 201
        assert after == (before[0] + 1, before[1] + len(body["products"]))
    else:
        assert_refused_as_json(response, {400, 422})
        assert after == before


@pytest.mark.parametrize("innermost", ["[]", "{}", "[1]"])
def test_body_nested_nine_levels_is_400_even_when_innermost_is_empty(
    client, as_user, alice, sql, innermost
):
    nested = "[" * 8 + innermost + "]" * 8
    data = '{"a": ' + nested + ', "products": ' + json.dumps(
        one_product()["products"]
    ) + "}"

    response = post_raw(client, as_user(alice), data)

    assert_refused_as_json(response, {400})
    assert stored_counts(sql) == (0, 0)
