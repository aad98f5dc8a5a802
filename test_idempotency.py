"""Safe retries: an Idempotency-Key places one order, however often sent."""

import psycopg2
import pytest

from test_lifecycle import run_together
from test_orders import TWO_PRODUCTS
from test_orders import place

RACERS = 6
ROUNDS = 10


def with_key(headers, key):
    return {**headers, "Idempotency-Key": key}


def count_orders(sql):
    return sql("SELECT count(*) FROM orders")[0][0]


def test_retry_with_same_key_answers_200_with_the_first_order(
    client, as_user, alice, sql
):
    headers = with_key(as_user(alice), "checkout-7f3a")
    first = place(client, headers)

    retry = place(client, headers)

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.get_json() == first.get_json()
    assert count_orders(sql) == 1
    assert sql("SELECT count(*) FROM order_products") == [(2,)]


def test_retry_ignores_unknown_keys_like_the_first_request(client, as_user, alice, sql):
    headers = with_key(as_user(alice), "checkout-1")
    first = place(client, headers)

    retry = place(client, headers, {**TWO_PRODUCTS, "coupon": "SPRING"})

    assert retry.status_code == 200
    assert retry.get_json()["data"]["id"] == first.get_json()["data"]["id"]
    assert count_orders(sql) == 1


def test_retry_after_cancel_answers_the_order_as_it_is_now(client, as_user, alice):
    headers = with_key(as_user(alice), "checkout-1")
    order_id = place(client, headers).get_json()["data"]["id"]
    client.post(f"/api/v1/orders/{order_id}/cancel", headers=as_user(alice))

    retry = place(client, headers)

    assert retry.status_code == 200
    assert retry.get_json()["data"]["id"] == order_id
    assert retry.get_json()["data"]["status"] == "cancelled"


def test_same_key_with_other_products_is_422(client, as_user, alice, sql):
    headers = with_key(as_user(alice), "checkout-1")
    place(client, headers)
    other_products = {"products": TWO_PRODUCTS["products"][:1]}
    reordered = {"products": TWO_PRODUCTS["products"][::-1]}

    answers = [place(client, headers, body) for body in (other_products, reordered)]

    for response in answers:
        assert response.status_code == 422
        assert response.get_json() == {
            "success": False,
            "messages": ["IDEMPOTENCY_KEY_REUSED"],
        }
    assert count_orders(sql) == 1


def test_same_key_of_two_users_places_two_orders(client, as_user, alice, bob, sql):
    alices = place(client, with_key(as_user(alice), "checkout-1"))
    bobs = place(client, with_key(as_user(bob), "checkout-1"))

    assert (alices.status_code, bobs.status_code) == (201, 201)
    assert alices.get_json()["data"]["id"] != bobs.get_json()["data"]["id"]
    assert sorted(sql("SELECT owner::text FROM orders")) == sorted([(alice,), (bob,)])


def test_orders_without_key_are_never_replayed(client, as_user, alice, sql):
    answers = [place(client, as_user(alice)) for _ in range(2)]

    assert [response.status_code for response in answers] == [201, 201]
    assert count_orders(sql) == 2


def test_concurrent_retries_with_same_key_place_one_order(app, as_user, alice, sql):
    for round_number in range(ROUNDS):
        headers = with_key(as_user(alice), f"checkout-{round_number}")
        call = ("POST", "/api/v1/orders", {"headers": headers, "json": TWO_PRODUCTS})

        answers = run_together(app, [call] * RACERS)

        statuses = sorted(response.status_code for response in answers)
        assert statuses == [200] * (RACERS - 1) + [201]
        assert len({response.get_json()["data"]["id"] for response in answers}) == 1

    assert count_orders(sql) == ROUNDS
    assert sql("SELECT count(*) FROM order_products") == [(2 * ROUNDS,)]


@pytest.mark.parametrize(
    "key",
    ["", " ", "has space", "tab\there", "x" * 256, "caf\xe9"],
    ids=["empty", "blank", "inner-space", "tab", "too-long", "not-ascii"],
)
def test_bad_idempotency_key_is_422_and_stores_nothing(
    client, as_user, alice, sql, key
):
    response = place(client, with_key(as_user(alice), key))

    assert response.status_code == 422
    messages = response.get_json()["messages"]
    assert [message.split(":")[0] for message in messages] == ["Idempotency-Key"]
    assert count_orders(sql) == 0


def test_longest_idempotency_key_is_accepted(client, as_user, alice):
    headers = with_key(as_user(alice), "~" * 255)

    answers = [place(client, headers) for _ in range(2)]

    assert [response.status_code for response in answers] == [201, 200]


def test_database_refuses_a_second_order_with_the_same_key(
    client, as_user, alice, sql
):
    place(client, with_key(as_user(alice), "checkout-1"))

    with pytest.raises(psycopg2.errors.UniqueViolation):
        sql(
            "INSERT INTO orders (owner, idempotency_key, request_digest) "
            "VALUES (%s, 'checkout-1', 'another digest')",
            (alice,),
        )
