"""Listing orders a page at a time: keyset cursors, filters and bounds."""

import uuid

import pytest

import orders
from test_orders import place

ONE_PRODUCT = {"products": [{"uuid": str(uuid.uuid4()), "quantity": 1}]}


def place_orders(client, headers, count):
    """Place `count` orders; return their ids, newest first."""
    ids = [
        place(client, headers, ONE_PRODUCT).get_json()["data"]["id"]
        for _ in range(count)
    ]
    return ids[::-1]


def list_page(client, headers, query=""):
    response = client.get(f"/api/v1/orders?{query}", headers=headers)
    assert response.status_code == 200, response.data
    body = response.get_json()
    return [order["id"] for order in body["data"]], body["next"]


def list_all_pages(client, headers, query):
    """Follow `next` from the first page to the last; return every page."""
    pages = []
    ids, cursor = list_page(client, headers, query)
    pages.append(ids)
    while cursor is not None:
        ids, cursor = list_page(client, headers, f"{query}&after={cursor}")
        pages.append(ids)
    return pages


def test_list_pages_follow_the_cursor_to_a_null_next(client, as_user, alice, bob):
    newest_first = place_orders(client, as_user(alice), 7)
    place_orders(client, as_user(bob), 2)

    pages = list_all_pages(client, as_user(alice), "limit=3")

    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]


def test_list_last_full_page_has_null_next(client, as_user, alice):
    newest_first = place_orders(client, as_user(alice), 4)

    pages = list_all_pages(client, as_user(alice), "limit=2")

    assert pages == [newest_first[0:2], newest_first[2:4]]


def test_list_default_page_holds_20_orders(client, as_user, alice):
    newest_first = place_orders(client, as_user(alice), orders.DEFAULT_PAGE_SIZE + 1)

    ids, cursor = list_page(client, as_user(alice))

    assert ids == newest_first[: orders.DEFAULT_PAGE_SIZE]
    assert cursor is not None
    assert list_page(client, as_user(alice), f"after={cursor}") == (
        newest_first[orders.DEFAULT_PAGE_SIZE :],
        None,
    )


def test_list_orders_placed_between_pages_shift_no_page(client, as_user, alice):
    older = place_orders(client, as_user(alice), 5)
    first_ids, cursor = list_page(client, as_user(alice), "limit=2")

    newer = place_orders(client, as_user(alice), 3)
    second_ids, cursor = list_page(client, as_user(alice), f"limit=2&after={cursor}")
    third_ids, cursor = list_page(client, as_user(alice), f"limit=2&after={cursor}")

    assert first_ids + second_ids + third_ids == older
    assert cursor is None
    assert list_page(client, as_user(alice), "limit=3")[0] == newer


def test_list_status_filter_pages_through_matching_orders(
    client, as_user, alice, sql
):
    newest_first = place_orders(client, as_user(alice), 6)
    cancelled = newest_first[::2]
    for order_id in cancelled:
        client.post(f"/api/v1/orders/{order_id}/cancel", headers=as_user(alice))

    cancelled_pages = list_all_pages(client, as_user(alice), "status=cancelled&limit=2")
    placed_pages = list_all_pages(client, as_user(alice), "status=placed&limit=5")
    fulfilled_pages = list_all_pages(client, as_user(alice), "status=fulfilled")

    assert cancelled_pages == [cancelled[0:2], cancelled[2:3]]
    assert placed_pages == [newest_first[1::2]]
    assert fulfilled_pages == [[]]


def test_list_largest_page_holds_100_orders(client, as_user, alice, sql):
    place_orders(client, as_user(alice), 3)

    ids, cursor = list_page(client, as_user(alice), f"limit={orders.MAX_PAGE_SIZE}")

    assert len(ids) == 3
    assert cursor is None


def bad_cursor(text):
    """A well-encoded cursor around a position the service never made."""
    return orders.encode_cursor(text)


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=2.5", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("status=lost", "status"),
        ("status=PLACED", "status"),
        ("status=", "status"),
        ("after=", "after"),
        ("after=not*base64", "after"),
        ("after=" + bad_cursor("yesterday 5"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00.000000 5"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00.000000Z 0"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00.000000Z x"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00.000000Z " + "9" * 20), "after"),
        ("after=" + "A" * 101, "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00+16:00 5"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00-23:59 5"), "after"),
        ("after=" + bad_cursor("2025-01-01T00:00:00+01:00 5"), "after"),
        ("user=alice", "user"),
        ("all=yes", "all"),
    ],
    ids=[
        "limit-zero", "limit-over-max", "limit-negative", "limit-word",
        "limit-empty", "limit-fraction", "limit-huge", "status-unknown",
        "status-uppercase", "status-empty", "after-empty", "after-not-base64",
        "after-no-timestamp", "after-no-zone", "after-id-zero", "after-id-word",
        "after-id-beyond-bigint", "after-too-long", "after-zone-beyond-postgres",
        "after-zone-far-west", "after-zone-not-utc", "user-not-uuid",
        "all-not-boolean",
    ],
)
def test_list_bad_parameter_is_422_naming_it(client, as_user, alice, query, parameter):
    response = client.get(f"/api/v1/orders?{query}", headers=as_user(alice))

    assert response.status_code == 422
    body = response.get_json()
    assert body["success"] is False
    assert [message.split(":")[0] for message in body["messages"]] == [parameter]


def test_list_every_bad_parameter_is_named(client, as_user, alice):
    response = client.get(
        "/api/v1/orders?limit=0&status=lost&after=x&user=y&all=z",
        headers=as_user(alice),
    )

    assert response.status_code == 422
    names = [message.split(":")[0] for message in response.get_json()["messages"]]
    assert names == ["limit", "status", "after", "all", "user"]


def test_list_statement_has_no_offset():
    assert "OFFSET" not in orders.LIST_ORDERS.upper()


@pytest.fixture
def many_orders(sql):
    """20,000 orders of 20 customers, a minute apart, one product each.

    Made with SQL rather than the API: the planner needs a table of
    realistic size before it prefers an index to a sequential scan.
    """
    sql(
        """
        INSERT INTO orders (owner, created_at, updated_at)
        SELECT md5((n % 20)::text)::uuid,
               now() - n * interval '1 minute',
               now() - n * interval '1 minute'
        FROM generate_series(1, 20000) AS n
        """
    )
    sql(
        """
        INSERT INTO order_products (owner, order_id, line_no, product_uuid, quantity)
        SELECT owner, id, 1, md5(id::text)::uuid, 1 FROM orders
        """
    )
    sql("ANALYZE orders")
    sql("ANALYZE order_products")
    return sql("SELECT owner::text FROM orders LIMIT 1")[0][0]


@pytest.mark.parametrize(
    "query, index, owner_named",
    [
        ("limit=50", "orders_owner_newest", True),
        ("limit=50&status=placed", "orders_owner_newest", True),
        ("limit=50&all=true", "orders_newest", False),
    ],
    ids=["own-orders", "own-placed-orders", "staff-all-orders"],
)
def test_list_later_page_is_an_index_scan(
    client, as_user, many_orders, sql, query, index, owner_named
):
    owner = many_orders
    headers = as_user(owner, staff=not owner_named)
    first = client.get(f"/api/v1/orders?{query}", headers=headers).get_json()
    after_time, after_id = orders.decode_cursor(first["next"])
    params = {
        "owner": owner if owner_named else None,
        "status": "placed" if "status=placed" in query else None,
        "after_time": after_time,
        "after_id": after_id,
        "limit": 51,
    }

    plan = "\n".join(row[0] for row in sql("EXPLAIN " + orders.LIST_ORDERS, params))

    assert f"Index Scan using {index} on orders" in plan, plan
    assert "ROW(created_at, id) < ROW(" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "Sort" not in plan, plan
