"""Scaling out: the service behind PgBouncer, and the owner in every query.

Pods scale out only if nothing ties a request to one server session
(PgBouncer in transaction pooling hands each transaction any server
connection), and the tables shard by owner only if every customer's
statement names its owner (Citus then routes it to one shard).
"""

import os
import pwd
import re
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

import bench
import localdb
import orders
from conftest import TEST_SECRET
from test_orders import TWO_PRODUCTS

BOUNCER_START_TIMEOUT_S = 15

# Staff statements find an order by its number alone, on any shard; by
# design they carry no owner. Every other statement on the orders must.
STAFF_ONLY_STATEMENTS = {"FIND_ANY_ORDER", "FULFIL_ANY_ORDER"}

STATEMENT = re.compile(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b")

# A plain statement names its owner as `o.owner = %(owner)s` in its
# top-level WHERE. A call of a function of schema.sql passes the owner
# first, and every query of the function's body names that argument,
# `customer`, in its WHERE, or first in an INSERT's VALUES.
FUNCTION_CALL = re.compile(r"\bFROM (\w+)\((%\(\w+\)s)")
OWNER_IN_WHERE = re.compile(r"\nWHERE [^\n]*\bo\.owner = %\(owner\)s")
CUSTOMER_IN_WHERE = re.compile(r"\bWHERE [^\n]*\b[op]\.owner = customer\b")
CUSTOMER_IN_VALUES = re.compile(r"\bVALUES \(customer\b")


def sql_constants():
    """{text: name} of every SQL statement of orders.py."""
    return {
        value: name
        for name, value in vars(orders).items()
        if name.isupper() and isinstance(value, str) and STATEMENT.match(value)
    }


@pytest.fixture
def function_bodies(sql):
    """{name: source} of every function schema.sql defines."""
    rows = sql(
        "SELECT proname, prosrc FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace"
    )
    return dict(rows)


def names_owner(statement, function_bodies):
    call = FUNCTION_CALL.search(statement)
    if call is None:
        return bool(OWNER_IN_WHERE.search(statement))
    function, first_argument = call.groups()
    return first_argument == "%(owner)s" and body_names_customer(
        function_bodies[function]
    )


def body_names_customer(body):
    """Whether each query the body returns names the customer."""
    queries = re.split(r"\bRETURN\b", body)[1:]
    return bool(queries) and all(
        CUSTOMER_IN_WHERE.search(query) or CUSTOMER_IN_VALUES.search(query)
        for query in queries
    )


@pytest.fixture(scope="module")
def pgbouncer(database_url):
    """PgBouncer in transaction pooling mode before the test database;
    yields the DSN of the test database through it."""
    try:
        bench.ensure_debian_tools("pgbouncer")
    except bench.ToolMissing as error:
        pytest.fail(str(error))

    target = psycopg2.extensions.parse_dsn(database_url)
    port = localdb.free_port()
    with tempfile.TemporaryDirectory(prefix="orders-pgbouncer-") as folder:
        folder = Path(folder)
        server = " ".join(
            f"{key}={value}" for key, value in target.items() if key != "user"
        )
        (folder / "users.txt").write_text(f'"{target.get("user", "postgres")}" ""\n')
        (folder / "pgbouncer.ini").write_text(
            f"""[databases]
{target["dbname"]} = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
logfile = {folder / "pgbouncer.log"}
"""
        )
        command = [bench.tool_path("pgbouncer"), str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it drops to the server user.
            user = pwd.getpwuid(localdb._server_user()).pw_name
            folder.chmod(0o777)
            command[1:1] = ["-u", user]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        bounced = {**target, "host": "127.0.0.1", "port": str(port)}
        bounced_dsn = " ".join(f"{key}='{value}'" for key, value in bounced.items())
        try:
            _wait_for(bounced_dsn, process)
            yield bounced_dsn
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for(dsn, process):
    deadline = time.monotonic() + BOUNCER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited with {process.returncode}; see its log")
        try:
            psycopg2.connect(dsn, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def bounced_client(pgbouncer, empty_database):
    application = orders.create_app(
        {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": pgbouncer, "DB_POOL_SIZE": 4}
    )
    yield application.test_client()
    application.extensions["orders_db"].close()


def test_orders_work_through_pgbouncer_in_transaction_mode(
    bounced_client, as_user, alice, bob, sql
):
    client = bounced_client
    retry = {**as_user(alice), "Idempotency-Key": "checkout-1"}

    placed = client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=retry)
    replayed = client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=retry)
    second = client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=as_user(alice))
    order_id = placed.get_json()["data"]["id"]
    read = client.get(f"/api/v1/orders/{order_id}", headers=as_user(alice))
    hidden = client.get(f"/api/v1/orders/{order_id}", headers=as_user(bob))
    listed = client.get("/api/v1/orders?limit=1", headers=as_user(alice))
    next_page = client.get(
        "/api/v1/orders?limit=1&after=" + listed.get_json()["next"],
        headers=as_user(alice),
    )
    cancelled = client.post(f"/api/v1/orders/{order_id}/cancel", headers=as_user(alice))

    assert (placed.status_code, replayed.status_code) == (201, 200)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.get_json()["data"] == placed.get_json()["data"]
    assert read.get_json()["data"] == placed.get_json()["data"]
    assert hidden.status_code == 404
    assert [order["id"] for order in listed.get_json()["data"]] == [
        second.get_json()["data"]["id"]
    ]
    assert [order["id"] for order in next_page.get_json()["data"]] == [order_id]
    assert cancelled.status_code == 200
    assert cancelled.get_json()["data"]["status"] == "cancelled"
    assert sql("SELECT id, status FROM orders ORDER BY id") == [
        (order_id, "cancelled"),
        (second.get_json()["data"]["id"], "placed"),
    ]


@pytest.fixture
def sent_statements(monkeypatch, client):
    """Every (statement, parameters) sent once the app is made, in order."""
    sent = []

    class RecordingCursor(psycopg2.extensions.cursor):
        def execute(self, query, params=None):
            sent.append((query, params))
            return super().execute(query, params)

    real_connect = psycopg2.connect

    def recording_connect(*args, **kwargs):
        return real_connect(*args, cursor_factory=RecordingCursor, **kwargs)

    monkeypatch.setattr(psycopg2, "connect", recording_connect)
    return sent


def customer_session(client, as_user, owner, other):
    """Every customer request that reaches the database, once or more."""
    headers = as_user(owner)
    retry = {**headers, "Idempotency-Key": "k-1"}
    client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=retry)
    client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=retry)
    client.post("/api/v1/orders", json={"products": TWO_PRODUCTS["products"][:1]},
                headers=retry)
    placed = client.post("/api/v1/orders", json=TWO_PRODUCTS, headers=headers)
    order_id = placed.get_json()["data"]["id"]
    page = client.get("/api/v1/orders?limit=1", headers=headers).get_json()
    client.get("/api/v1/orders?limit=1&after=" + page["next"], headers=headers)
    client.get("/api/v1/orders?status=placed", headers=headers)
    client.get(f"/api/v1/orders/{order_id}", headers=headers)
    client.get(f"/api/v1/orders/{order_id}", headers=as_user(other))
    client.post(f"/api/v1/orders/{order_id}/cancel", headers=headers)
    client.post(f"/api/v1/orders/{order_id}/cancel", headers=headers)
    client.post(f"/api/v1/orders/{order_id}/cancel", headers=as_user(other))
    client.post(f"/api/v1/orders/{order_id}/fulfil", headers=headers)


def test_every_customer_statement_names_its_owner(
    function_bodies, sent_statements, client, as_user, alice, bob
):
    customer_session(client, as_user, alice, bob)

    constants = sql_constants()
    names = set()
    for query, params in sent_statements:
        name = constants.get(query, "an ad-hoc statement")
        names.add(name)
        assert name not in STAFF_ONLY_STATEMENTS, f"a customer request ran {name}"
        assert names_owner(query, function_bodies), f"{name} does not name the owner"
        assert params["owner"] in (alice, bob), f"{name} ran for no caller"

    # Every statement of orders.py on the order tables was exercised,
    # save the staff ones: a new statement can't slip past this test.
    assert names == set(constants.values()) - STAFF_ONLY_STATEMENTS


def test_only_staff_statements_omit_the_owner(function_bodies):
    lacking = {
        name
        for text, name in sql_constants().items()
        if not names_owner(text, function_bodies)
    }

    assert lacking == STAFF_ONLY_STATEMENTS


@pytest.mark.parametrize(
    "function, owner_condition",
    [
        ("find_own_order", "o.owner = customer AND "),
        ("find_retried_order", "o.owner = customer AND "),
        ("cancel_own_order", "o.owner = customer AND "),
        ("place_order", "VALUES (customer, "),
    ],
)
def test_owner_check_fails_without_the_owner_condition(
    function_bodies, function, owner_condition
):
    body = function_bodies[function]
    statement = next(
        text for text in sql_constants() if f"FROM {function}(" in text
    )

    assert owner_condition in body
    assert names_owner(statement, function_bodies)
    stripped = {**function_bodies, function: body.replace(owner_condition, "")}
    assert not names_owner(statement, stripped)
    assert not names_owner(statement.replace("%(owner)s", "NULL", 1), function_bodies)
