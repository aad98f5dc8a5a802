"""Cancel and fulfil: who may, from which status, and under contention."""

import concurrent.futures
import threading
import uuid

from test_orders import place

ROUNDS = 25


def run_together(app, calls):
    """Send each (method, url, request arguments) from its own thread,
    all released at the same moment; return the answers in call order."""
    barrier = threading.Barrier(len(calls))

    def send(method, url, arguments):
        client = app.test_client()
        barrier.wait()
        return client.open(url, method=method, **arguments)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(send, *call) for call in calls]
        return [future.result() for future in futures]


def cancel(client, headers, order_id):
    return client.post(f"/api/v1/orders/{order_id}/cancel", headers=headers)


def fulfil(client, headers, order_id):
    return client.post(f"/api/v1/orders/{order_id}/fulfil", headers=headers)


def stored_status(sql, order_id):
    return sql("SELECT status FROM orders WHERE id = %s", (order_id,))[0][0]


def test_cancel_placed_order_answers_cancelled_order(client, as_user, alice, sql):
    placed = place(client, as_user(alice)).get_json()["data"]

    response = cancel(client, as_user(alice), placed["id"])

    assert response.status_code == 200
    order = response.get_json()["data"]
    assert order["status"] == "cancelled"
    assert order["fulfilled"] is False
    assert order["updated_at"] > placed["updated_at"]
    assert order["order_date"] == placed["order_date"]
    assert order["products"] == placed["products"]
    assert stored_status(sql, placed["id"]) == "cancelled"


def test_cancel_cancelled_order_answers_200_unchanged(client, as_user, alice):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    first = cancel(client, as_user(alice), order_id)

    again = cancel(client, as_user(alice), order_id)

    assert again.status_code == 200
    assert again.get_json() == first.get_json()


def test_cancel_fulfilled_order_is_409(client, as_user, alice, sql):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    fulfil(client, as_user(str(uuid.uuid4()), staff=True), order_id)

    response = cancel(client, as_user(alice), order_id)

    assert response.status_code == 409
    assert response.get_json() == {"success": False, "messages": ["ORDER_FULFILLED"]}
    assert stored_status(sql, order_id) == "fulfilled"


def test_cancel_other_users_order_is_404_like_a_missing_one(
    client, as_user, alice, bob, sql
):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]

    others = cancel(client, as_user(bob), order_id)
    by_staff = cancel(client, as_user(bob, staff=True), order_id)
    missing = cancel(client, as_user(bob), order_id + 1000)

    for response in (others, by_staff, missing):
        assert response.status_code == 404
        assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}
    assert stored_status(sql, order_id) == "placed"


def test_fulfil_by_staff_answers_fulfilled_order(client, as_user, alice, sql):
    placed = place(client, as_user(alice)).get_json()["data"]

    response = fulfil(client, as_user(str(uuid.uuid4()), staff=True), placed["id"])

    assert response.status_code == 200
    order = response.get_json()["data"]
    assert order["status"] == "fulfilled"
    assert order["fulfilled"] is True
    assert order["user"] == alice
    assert order["updated_at"] > placed["updated_at"]
    assert stored_status(sql, placed["id"]) == "fulfilled"


def test_fulfil_fulfilled_order_answers_200_unchanged(client, as_user, alice):
    staff = as_user(str(uuid.uuid4()), staff=True)
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    first = fulfil(client, staff, order_id)

    again = fulfil(client, staff, order_id)

    assert again.status_code == 200
    assert again.get_json() == first.get_json()


def test_fulfil_cancelled_order_is_409(client, as_user, alice, sql):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    cancel(client, as_user(alice), order_id)

    response = fulfil(client, as_user(str(uuid.uuid4()), staff=True), order_id)

    assert response.status_code == 409
    assert response.get_json() == {"success": False, "messages": ["ORDER_CANCELLED"]}
    assert stored_status(sql, order_id) == "cancelled"


def test_fulfil_missing_order_by_staff_is_404(client, as_user):
    response = fulfil(client, as_user(str(uuid.uuid4()), staff=True), 10**12)

    assert response.status_code == 404
    assert response.get_json() == {"success": False, "messages": ["NOT_FOUND"]}


def test_fulfil_by_customer_is_403_whichever_order(client, as_user, alice, bob, sql):
    own = place(client, as_user(alice)).get_json()["data"]["id"]
    others = place(client, as_user(bob)).get_json()["data"]["id"]

    answers = [
        fulfil(client, as_user(alice), order_id)
        for order_id in (own, others, others + 1000, 2**70)
    ]

    for response in answers:
        assert response.status_code == 403
        assert response.get_json() == {"success": False, "messages": ["FORBIDDEN"]}
    assert sql("SELECT DISTINCT status FROM orders") == [("placed",)]


def test_staff_list_one_users_orders_with_user(client, as_user, alice, bob):
    alices = place(client, as_user(alice)).get_json()["data"]["id"]
    place(client, as_user(bob))

    response = client.get(
        f"/api/v1/orders?user={alice.upper()}", headers=as_user(bob, staff=True)
    )

    assert response.status_code == 200
    assert [order["id"] for order in response.get_json()["data"]] == [alices]


def test_staff_list_every_users_orders_with_all(client, as_user, alice, bob):
    first = place(client, as_user(alice)).get_json()["data"]["id"]
    second = place(client, as_user(bob)).get_json()["data"]["id"]

    response = client.get(
        "/api/v1/orders?all=true", headers=as_user(str(uuid.uuid4()), staff=True)
    )

    assert response.status_code == 200
    body = response.get_json()
    assert [order["id"] for order in body["data"]] == [second, first]
    assert [order["user"] for order in body["data"]] == [bob, alice]


def test_staff_read_any_users_order(client, as_user, alice):
    placed = place(client, as_user(alice)).get_json()["data"]

    response = client.get(
        f"/api/v1/orders/{placed['id']}", headers=as_user(str(uuid.uuid4()), True)
    )

    assert response.status_code == 200
    assert response.get_json()["data"] == placed


def test_customer_list_others_orders_is_403(client, as_user, alice, bob):
    place(client, as_user(bob))

    for query in (f"user={bob}", "all=true", f"all=true&user={alice}"):
        response = client.get(f"/api/v1/orders?{query}", headers=as_user(alice))

        assert response.status_code == 403, query
        assert response.get_json() == {"success": False, "messages": ["FORBIDDEN"]}


def test_customer_list_own_orders_with_own_user_and_all_false(
    client, as_user, alice, bob
):
    order_id = place(client, as_user(alice)).get_json()["data"]["id"]
    place(client, as_user(bob))

    for query in (f"user={alice}", "all=false"):
        response = client.get(f"/api/v1/orders?{query}", headers=as_user(alice))

        assert response.status_code == 200, query
        assert [order["id"] for order in response.get_json()["data"]] == [order_id]


def test_concurrent_cancel_and_fulfil_exactly_one_wins(app, as_user, alice, sql):
    client = app.test_client()
    staff = as_user(str(uuid.uuid4()), staff=True)

    for _ in range(ROUNDS):
        order_id = place(client, as_user(alice)).get_json()["data"]["id"]
        url = f"/api/v1/orders/{order_id}"

        cancelled, fulfilled = run_together(
            app,
            [
                ("POST", url + "/cancel", {"headers": as_user(alice)}),
                ("POST", url + "/fulfil", {"headers": staff}),
            ],
        )

        statuses = (cancelled.status_code, fulfilled.status_code)
        assert statuses in ((200, 409), (409, 200))
        winner = "cancelled" if cancelled.status_code == 200 else "fulfilled"
        loser = fulfilled if winner == "cancelled" else cancelled
        assert loser.get_json()["messages"] == [
            "ORDER_CANCELLED" if winner == "cancelled" else "ORDER_FULFILLED"
        ]
        assert stored_status(sql, order_id) == winner

    assert sql("SELECT count(*) FROM orders WHERE status = 'placed'") == [(0,)]
