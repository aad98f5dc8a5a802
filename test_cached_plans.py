"""The plans PostgreSQL keeps for the functions of schema.sql.

A PL/pgSQL function's statements are planned once per connection and
then, most of the time, run with a generic plan made for any argument.
Each such plan must still seek an index for any customer and order.
"""

import psycopg2
import pytest

import orders
from test_orders import TWO_PRODUCTS

CUSTOMERS = 20
ORDERS = 20_000


@pytest.fixture
def many_orders(empty_database, sql):
    """ORDERS orders of CUSTOMERS customers, each with a retry key and a
    product: enough rows for the planner to prefer an index."""
    sql(
        """
        INSERT INTO orders (owner, idempotency_key, request_digest)
        SELECT md5((n %% %(customers)s)::text)::uuid, 'key-' || n, 'digest'
        FROM generate_series(1, %(orders)s) AS n
        """,
        {"customers": CUSTOMERS, "orders": ORDERS},
    )
    sql(
        """
        INSERT INTO order_products (owner, order_id, line_no, product_uuid, quantity)
        SELECT owner, id, 1, md5(id::text)::uuid, 1 FROM orders
        """
    )
    sql("ANALYZE orders")
    sql("ANALYZE order_products")
    return sql("SELECT owner::text, id FROM orders LIMIT 1")[0]


def generic_plans(database_url, statement, params):
    """Run `statement` with every function plan generic; return the plans
    of the queries it ran inside functions, as auto_explain reports them."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("LOAD 'auto_explain'")
            cursor.execute("SET auto_explain.log_min_duration = 0")
            cursor.execute("SET auto_explain.log_nested_statements = on")
            cursor.execute("SET auto_explain.log_level = notice")
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(statement, params)
        return [notice for notice in conn.notices if "$1" in notice]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "FIND_OWN_ORDER",
        "FIND_ANY_ORDER",
        "FIND_RETRIED_ORDER",
        "CANCEL_OWN_ORDER",
        "FULFIL_ANY_ORDER",
    ],
)
def test_function_plans_seek_an_index_for_any_customer(
    database_url, many_orders, statement
):
    owner, order_id = many_orders
    params = {"owner": owner, "order_id": order_id, "idempotency_key": "key-1"}

    plans = generic_plans(database_url, getattr(orders, statement), params)

    assert plans
    for plan in plans:
        assert "Index Scan" in plan, plan
        assert "Seq Scan" not in plan, plan


def test_placing_twice_with_one_key_stores_one_order(client, as_user, alice, sql):
    headers = {**as_user(alice), "Idempotency-Key": "cached-plan-1"}

    # More calls than PostgreSQL makes custom plans before it may keep a
    # generic one: the kept plan must still find the retried order.
    answers = [
        client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=headers)
        for _ in range(8)
    ]

    assert [answer.status_code for answer in answers] == [201] + [200] * 7
    assert len({answer.get_json()["data"]["id"] for answer in answers}) == 1
    assert sql("SELECT count(*) FROM orders") == [(1,)]
    assert sql("SELECT count(*) FROM order_products") == [(2,)]
