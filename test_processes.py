"""The service as it runs: real gunicorn on a PostgreSQL the test owns.

Every test here starts its own gunicorn on 127.0.0.1 and talks to it over
HTTP; the module's PostgreSQL lives in a temporary folder, so stopping,
freezing or locking it touches nothing else. Marked `process`: run with
`make test-heavy` (pytest -m process).
"""

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

import auth
import conftest
import db
import localdb
import orders
from conftest import TEST_SECRET
from conftest import make_claims
from conftest import sign

pytestmark = pytest.mark.process

HERE = Path(__file__).parent
ORDERS_URL = "/api/v1/orders"
START_WAIT_S = 60
DB_TIMEOUT_S = 3
# A request may take the database timeout twice (borrow, then query)
# plus gunicorn's own overhead; past this the client gives up and the
# test fails: "answers within a few seconds".
CLIENT_TIMEOUT_S = 3 * DB_TIMEOUT_S
GRACEFUL_TIMEOUT_S = 20

# Figures quoted in the README's reliability section.
CONCURRENT_THREADS = 8
ORDERS_PER_THREAD = 250
CONCURRENT_USERS = 10
SCHEMATHESIS_EXAMPLES = 200
SCHEMATHESIS_MIN_REQUESTS = 1000


# ---------------------------------------------------------------------------
# The database and the server


@pytest.fixture(scope="module")
def workdir():
    """A folder of this module's own, outside pytest's shared tmp tree."""
    with tempfile.TemporaryDirectory(prefix="orders-process-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def postgres(workdir):
    """A durable PostgreSQL of our own: immediate stops must lose nothing."""
    server = localdb.LocalPostgres(workdir / "data")
    server.start()
    localdb.create_database(server.url(), "orders")
    yield server
    server.stop("immediate")


def database_url(postgres):
    return postgres.url("orders")


def run_sql(postgres, statement, params=None):
    return conftest.run_sql(database_url(postgres), statement, params)


@pytest.fixture
def empty_orders(postgres):
    """The module's database with its tables made and emptied."""
    db.apply_schema(database_url(postgres))
    run_sql(postgres, "TRUNCATE order_products, orders")
    return postgres


class Gunicorn:
    """One gunicorn process serving the app, its output kept in files."""

    def __init__(self, folder, postgres, workers, extra_env=None):
        self.port = localdb.free_port()
        self.stdout_path = folder / f"gunicorn-{self.port}.out"
        self.stderr_path = folder / f"gunicorn-{self.port}.err"
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PG", "DB_", "DATABASE_", "SECRET_KEY", "JWT_"))
        }
        environ.update(
            {
                "SECRET_KEY": TEST_SECRET,
                "DATABASE_URL": database_url(postgres),
                "WEB_CONCURRENCY": str(workers),
                "DB_TIMEOUT_S": str(DB_TIMEOUT_S),
                "PYTHONUNBUFFERED": "1",
            }
        )
        environ.update(extra_env or {})
        command = [
            sys.executable, "-m", "gunicorn",
            "--config", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{self.port}",
            "orders:create_app()",
        ]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command, cwd=HERE, env=environ, stdout=out, stderr=err
            )
        self._wait_until_serving()

    def _wait_until_serving(self):
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.request("GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start:\n{self.output()}")

    def request(self, method, path, body=None, headers=None, timeout=CLIENT_TIMEOUT_S):
        """Return (status, headers, parsed JSON or raw bytes) of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None
            headers = dict(headers or {})
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw
            return response.status, response.headers, payload
        finally:
            conn.close()

    def output(self):
        paths = (self.stdout_path, self.stderr_path)
        return "".join(path.read_text(errors="replace") for path in paths)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=GRACEFUL_TIMEOUT_S + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_gunicorn(workdir, empty_orders):
    """`start_gunicorn(workers=2, **env)` -> a serving Gunicorn."""
    started = []

    def start(workers=2, **extra_env):
        server = Gunicorn(workdir, empty_orders, workers, extra_env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def bearer(user_uuid, staff=False):
    claims = make_claims(user_uuid, exp=int(time.time()) + 3600)
    if staff:
        claims["scope"] = auth.STAFF_SCOPE
    return {"Authorization": "Bearer " + sign(claims)}


def order_body(size=2):
    return {
        "products": [
            {"uuid": str(uuid.uuid4()), "quantity": position + 1}
            for position in range(size)
        ]
    }


def stored_orders(postgres):
    """{order id: [(product uuid, quantity), ...]} of every stored order."""
    rows = run_sql(
        postgres,
        """SELECT o.id, p.product_uuid::text, p.quantity
           FROM orders o LEFT JOIN order_products p
             ON p.owner = o.owner AND p.order_id = o.id
           ORDER BY o.id, p.line_no""",
    )
    stored = {}
    for order_id, product_uuid, quantity in rows:
        lines = stored.setdefault(order_id, [])
        if product_uuid is not None:
            lines.append((product_uuid, quantity))
    return stored


def lines_of(body):
    return [(p["uuid"], p["quantity"]) for p in body["products"]]


def assert_no_secret_in_output(server):
    """Neither the secret nor any part of a token the tests send is logged."""
    everything = server.output()
    assert TEST_SECRET not in everything
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}", everything)


def assert_database_unavailable(answer):
    status, headers, payload = answer
    assert status == 503
    assert payload == {"success": False, "messages": ["DATABASE_UNAVAILABLE"]}
    assert int(headers["Retry-After"]) > 0


def postgres_pids(postgres):
    """The postmaster's pid and those of all its children."""
    postmaster = int((postgres.datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(entry.name))
    return pids


class OrderAttempts:
    """Orders placed with unique Idempotency-Keys, and what each answered."""

    def __init__(self, server, user):
        self.server = server
        self.user = user
        self.attempts = []
        self.lock = threading.Lock()

    def place(self):
        key = uuid.uuid4().hex
        body = order_body(3)
        headers = {**bearer(self.user), "Idempotency-Key": key}
        status, _, payload = self.server.request("POST", ORDERS_URL, body, headers)
        with self.lock:
            self.attempts.append({"key": key, "body": body, "status": status,
                                  "payload": payload})
        return status, payload

    def retry_unanswered(self):
        """Retry each attempt not answered 201; return their new statuses."""
        statuses = []
        for attempt in self.attempts:
            if attempt["status"] == 201:
                continue
            headers = {**bearer(self.user), "Idempotency-Key": attempt["key"]}
            status, _, payload = self.server.request(
                "POST", ORDERS_URL, attempt["body"], headers
            )
            statuses.append(status)
            attempt["status"], attempt["payload"] = status, payload
        return statuses

    def assert_all_stored_whole(self, postgres):
        stored = stored_orders(postgres)
        for attempt in self.attempts:
            order_id = attempt["payload"]["data"]["id"]
            assert stored[order_id] == lines_of(attempt["body"])
        assert all(stored.values()), "an order without products was stored"


# ---------------------------------------------------------------------------
# (a) Database outage


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_outage_answers_503_and_recovers_without_loss(
    start_gunicorn, empty_orders, mode
):
    postgres = empty_orders
    server = start_gunicorn(workers=2)
    attempts = OrderAttempts(server, str(uuid.uuid4()))
    for _ in range(10):
        assert attempts.place()[0] == 201

    stop_placing = threading.Event()

    def keep_placing():
        while not stop_placing.is_set():
            attempts.place()

    placer = threading.Thread(target=keep_placing)
    placer.start()
    try:
        postgres.stop(mode)
        during = [
            server.request("POST", ORDERS_URL, order_body(), bearer(str(uuid.uuid4())))
            for _ in range(10)
        ]
        listed = server.request("GET", ORDERS_URL, headers=bearer(attempts.user))
        ready = server.request("GET", "/readyz")
        alive = server.request("GET", "/healthz")
    finally:
        stop_placing.set()
        placer.join()
        postgres.start()

    for answer in [*during, listed, ready]:
        assert_database_unavailable(answer)
    assert alive[0] == 200
    assert {a["status"] for a in attempts.attempts} <= {201, 503}

    after = [
        server.request("POST", ORDERS_URL, order_body(), bearer(attempts.user))
        for _ in range(20)
    ]
    assert [answer[0] for answer in after] == [201] * 20
    assert server.request("GET", "/readyz")[0] == 200

    assert set(attempts.retry_unanswered()) <= {200, 201}
    attempts.assert_all_stored_whole(postgres)
    stored = stored_orders(postgres)
    assert len(stored) == len(attempts.attempts) + len(after)
    for status, _, payload in after:
        assert payload["data"]["id"] in stored
    assert "DATABASE_UNAVAILABLE" not in server.output()
    assert "database unavailable, answering 503" in server.output()
    assert_no_secret_in_output(server)


# ---------------------------------------------------------------------------
# (b) A frozen database


def test_frozen_database_answers_503_within_the_deadline(start_gunicorn, empty_orders):
    postgres = empty_orders
    server = start_gunicorn(workers=2)
    attempts = OrderAttempts(server, str(uuid.uuid4()))
    assert attempts.place()[0] == 201

    pids = postgres_pids(postgres)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        placed = attempts.place()
        listed = server.request("GET", ORDERS_URL, headers=bearer(attempts.user))
        # /readyz gives the database READINESS_TIMEOUT_S (2 s) to answer.
        ready = server.request(
            "GET", "/readyz", timeout=2 * orders.READINESS_TIMEOUT_S + 1
        )
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    assert placed[0] == 503
    assert_database_unavailable(listed)
    assert_database_unavailable(ready)

    assert server.request("GET", ORDERS_URL, headers=bearer(attempts.user))[0] == 200
    assert set(attempts.retry_unanswered()) <= {200, 201}
    attempts.assert_all_stored_whole(postgres)
    assert len(stored_orders(postgres)) == len(attempts.attempts)
    assert_no_secret_in_output(server)


def test_query_past_deadline_is_unavailable_and_never_hangs(empty_orders):
    # A frozen server, as seen from a connection already in the pool: the
    # statement was sent and no answer comes. Once closed the connection
    # from inside psycopg2's wait callback, which deadlocked the thread.
    db.install_deadline()
    database = db.Database(database_url(empty_orders), pool_size=1, timeout_s=1)
    outcome = []

    def sleep_past_deadline():
        with database.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        try:
            with database.connection() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(30)")
        except db.DatabaseUnavailable:
            outcome.append("unavailable")
        with database.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 2")
            outcome.append(cursor.fetchone()[0])

    worker = threading.Thread(target=sleep_past_deadline, daemon=True)
    worker.start()
    worker.join(CLIENT_TIMEOUT_S)
    database.close()

    assert not worker.is_alive(), "the thread hung past the deadline"
    assert outcome == ["unavailable", 2]


@pytest.mark.parametrize("failing", [True, False], ids=["aborted", "left-open"])
def test_transaction_never_reaches_the_next_borrower(empty_orders, failing):
    database = db.Database(database_url(empty_orders), pool_size=1, timeout_s=5)
    idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
    try:
        expected = pytest.raises(psycopg2.errors.DivisionByZero)
        with expected if failing else contextlib.nullcontext():
            with database.connection() as conn, conn.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT 1 / %s", (0 if failing else 1,))

        with database.connection() as conn, conn.cursor() as cursor:
            assert conn.info.transaction_status == idle
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        database.close()


# ---------------------------------------------------------------------------
# (c) Concurrency


def test_concurrent_orders_are_all_stored_whole(start_gunicorn, empty_orders):
    server = start_gunicorn(workers=4)
    users = [str(uuid.uuid4()) for _ in range(CONCURRENT_USERS)]

    def place_many(thread_number):
        answers = []
        for position in range(ORDERS_PER_THREAD):
            user = users[(thread_number + position) % len(users)]
            body = order_body(1 + position % 4)
            status, _, payload = server.request("POST", ORDERS_URL, body, bearer(user))
            answers.append((status, body, payload, user))
        return answers

    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_THREADS) as pool:
        results = list(pool.map(place_many, range(CONCURRENT_THREADS)))
    answers = [answer for result in results for answer in result]

    statuses = [status for status, _, _, _ in answers]
    assert len(answers) == CONCURRENT_THREADS * ORDERS_PER_THREAD
    assert not [status for status in statuses if status >= 500]
    stored = stored_orders(empty_orders)
    placed = [answer for answer in answers if answer[0] == 201]
    assert len(stored) == len(placed)
    for _, body, payload, _ in placed:
        assert stored[payload["data"]["id"]] == lines_of(body)
    owners = run_sql(
        empty_orders, "SELECT owner::text, count(*) FROM orders GROUP BY 1"
    )
    expected = {}
    for _, _, _, user in placed:
        expected[user] = expected.get(user, 0) + 1
    assert dict(owners) == expected


def run_together(count, action):
    """Run `action(i)` in `count` threads released at one moment."""
    barrier = threading.Barrier(count)

    def wait_then_act(number):
        barrier.wait()
        return action(number)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(wait_then_act, range(count)))


def test_concurrent_retries_with_one_key_place_one_order(start_gunicorn, empty_orders):
    server = start_gunicorn(workers=4)
    user = str(uuid.uuid4())

    for round_number in range(10):
        body = order_body(2)
        headers = {**bearer(user), "Idempotency-Key": f"retry-{round_number}"}
        answers = run_together(
            16, lambda _: server.request("POST", ORDERS_URL, body, headers)
        )

        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * 15 + [201]
        assert len({payload["data"]["id"] for _, _, payload in answers}) == 1

    stored = stored_orders(empty_orders)
    assert len(stored) == 10
    assert all(len(lines) == 2 for lines in stored.values())


def test_concurrent_cancel_and_fulfil_have_one_winner(start_gunicorn, empty_orders):
    server = start_gunicorn(workers=4)
    customer = str(uuid.uuid4())
    staff = str(uuid.uuid4())
    losing_message = {"cancelled": "ORDER_CANCELLED", "fulfilled": "ORDER_FULFILLED"}
    winners = set()

    for _ in range(15):
        _, _, placed = server.request(
            "POST", ORDERS_URL, order_body(), bearer(customer)
        )
        order_id = placed["data"]["id"]

        def change(number):
            if number % 2:
                path, headers = f"{ORDERS_URL}/{order_id}/cancel", bearer(customer)
            else:
                path, headers = f"{ORDERS_URL}/{order_id}/fulfil", bearer(staff, True)
            return server.request("POST", path, headers=headers)

        answers = run_together(12, change)

        [(final_status,)] = run_sql(
            empty_orders, "SELECT status FROM orders WHERE id = %s", (order_id,)
        )
        winners.add(final_status)
        for status, _, payload in answers:
            if status == 200:
                assert payload["data"]["status"] == final_status
            else:
                assert status == 409
                assert payload["messages"] == [losing_message[final_status]]
    assert winners <= {"cancelled", "fulfilled"}


# ---------------------------------------------------------------------------
# (d) Shutdown


def test_sigterm_lets_requests_in_flight_finish(start_gunicorn, empty_orders):
    # Room for every request in one worker: all six must be in flight.
    server = start_gunicorn(
        workers=2, DB_TIMEOUT_S="30", GUNICORN_THREADS="8", DB_POOL_SIZE="8"
    )
    user = str(uuid.uuid4())
    locker = psycopg2.connect(database_url(empty_orders))
    waiting_sql = "SELECT count(*) FROM pg_locks WHERE NOT granted"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        try:
            with locker.cursor() as cursor:
                cursor.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                bodies = [order_body() for _ in range(4)]
                posts = [
                    pool.submit(
                        server.request, "POST", ORDERS_URL, body, bearer(user), 60
                    )
                    for body in bodies
                ]
                lists = [
                    pool.submit(
                        server.request, "GET", ORDERS_URL, None, bearer(user), 60
                    )
                    for _ in range(2)
                ]
                while run_sql(empty_orders, waiting_sql)[0][0] < 6:
                    time.sleep(0.05)

                server.process.send_signal(signal.SIGTERM)
                while "Handling signal: term" not in server.output():
                    time.sleep(0.05)
        finally:
            locker.rollback()
            locker.close()

        post_answers = [future.result() for future in posts]
        list_answers = [future.result() for future in lists]

    assert server.process.wait(timeout=GRACEFUL_TIMEOUT_S) == 0
    assert [answer[0] for answer in post_answers] == [201] * 4
    assert [answer[0] for answer in list_answers] == [200] * 2
    stored = stored_orders(empty_orders)
    for body, (_, _, payload) in zip(bodies, post_answers):
        assert stored[payload["data"]["id"]] == lines_of(body)


# ---------------------------------------------------------------------------
# (e) Access log

ACCESS_LINE = re.compile(
    r"method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d{3}) "
    r"duration_ms=(?P<duration>\d+) user=(?P<user>\S+) request_id=(?P<id>\S+)"
)


def test_access_log_has_one_line_per_request_and_no_secrets(start_gunicorn):
    server = start_gunicorn(workers=2)
    user = str(uuid.uuid4())
    headers = bearer(user)
    body = order_body()
    sent = [
        ("POST", ORDERS_URL, body, headers, 201, user),
        ("GET", ORDERS_URL + "?limit=7", None, headers, 200, user),
        ("GET", ORDERS_URL, None, {"Authorization": "Bearer a.b.c"}, 401, "-"),
        ("GET", ORDERS_URL, None, {}, 401, "-"),
        ("POST", ORDERS_URL, {"products": []}, headers, 422, user),
        ("GET", "/healthz", None, {}, 200, "-"),
        ("GET", "/nowhere", None, {}, 404, "-"),
    ]

    request_ids = []
    for number, (method, path, request_body, request_headers, status, _) in enumerate(
        sent
    ):
        request_id = f"log-test-{number}"
        request_ids.append(request_id)
        answer = server.request(
            method, path, request_body, {**request_headers, "X-Request-ID": request_id}
        )
        assert answer[0] == status
    unnamed = server.request("GET", "/healthz")
    server.stop()

    stdout = server.stdout_path.read_text()
    lines = [match.groupdict() for match in ACCESS_LINE.finditer(stdout)]
    by_id = {}
    for line in lines:
        by_id.setdefault(line["id"], []).append(line)
    for request_id, (method, path, _, _, status, logged_user) in zip(request_ids, sent):
        [line] = by_id[request_id]
        assert line["method"] == method
        assert line["path"] == path.split("?")[0]
        assert line["status"] == str(status)
        assert line["user"] == logged_user
    assert len(by_id[unnamed[1]["X-Request-ID"]]) == 1
    assert len(lines) == len(sent) + 2  # and the start-up probe

    everything = server.output()
    token = headers["Authorization"].split()[1]
    for part in token.split("."):
        assert part not in everything
    assert TEST_SECRET not in everything
    assert body["products"][0]["uuid"] not in everything
    assert "limit=7" not in everything


# ---------------------------------------------------------------------------
# (f) gunicorn's header limit

# gunicorn's limit_request_field_size: a header line, "Name: value" and
# its CRLF, may hold this many bytes. A longer one never reaches the app.
GUNICORN_FIELD_LIMIT_BYTES = 8190
LONGEST_AUTHORIZATION_VALUE = GUNICORN_FIELD_LIMIT_BYTES - len("Authorization: \r\n")


def raw_exchange(port, request_bytes):
    address = ("127.0.0.1", port)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT_S) as conn:
        conn.sendall(request_bytes)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def send_authorization(port, value_bytes):
    """Return (status line and headers, body) for a GET with that header."""
    value = b"Bearer " + b"A" * (value_bytes - len(b"Bearer "))
    request = (
        b"GET " + ORDERS_URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nAuthorization: " + value + b"\r\n\r\n"
    )
    head, _, body = raw_exchange(port, request).partition(b"\r\n\r\n")
    return head, body


def test_token_at_header_limit_reaches_the_app(start_gunicorn):
    server = start_gunicorn(workers=1)

    head, body = send_authorization(server.port, LONGEST_AUTHORIZATION_VALUE)

    assert head.startswith(b"HTTP/1.1 401")
    assert json.loads(body) == {"success": False, "messages": ["INVALID_TOKEN"]}


def test_header_over_limit_is_refused_by_gunicorn_not_json(start_gunicorn):
    server = start_gunicorn(workers=1)

    head, body = send_authorization(server.port, LONGEST_AUTHORIZATION_VALUE + 1)

    assert head.startswith(b"HTTP/1.1 431")
    assert b"application/json" not in head
    with pytest.raises(ValueError):
        json.loads(body)
    assert "path=" + ORDERS_URL not in server.output()


# ---------------------------------------------------------------------------
# schemathesis against the served OpenAPI document

SCHEMATHESIS_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.mark.parametrize("staff", [False, True], ids=["customer", "staff"])
def test_schemathesis_finds_no_server_error_or_nonconforming_answer(
    start_gunicorn, workdir, staff
):
    server = start_gunicorn(workers=2)
    base_url = f"http://127.0.0.1:{server.port}"
    user_headers = bearer(str(uuid.uuid4()), staff=staff)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        base_url + "/api/v1/openapi.json",
        # Every request goes to our gunicorn, whatever `servers` says.
        "--url", base_url,
        "--header", "Authorization: " + user_headers["Authorization"],
        "--checks", SCHEMATHESIS_CHECKS,
        "--max-examples", str(SCHEMATHESIS_EXAMPLES),
        "--seed", "20261204",
        "--workers", "1",
        "--request-timeout", str(CLIENT_TIMEOUT_S),
        "--generation-database", "none",
        "--no-color",
    ]

    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=900
    )

    summary = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated, summary
    assert int(generated[1]) == int(generated[2]) >= SCHEMATHESIS_MIN_REQUESTS
    assert not re.search(r"status=5\d\d", server.output())


# ---------------------------------------------------------------------------
# Hostile requests only a real server can carry


def post_chunked(port, parts):
    """POST `parts` as a chunked order body; return (head, body) answered."""
    token = bearer(str(uuid.uuid4()))["Authorization"].encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
    request = (
        b"POST " + ORDERS_URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nAuthorization: " + token + b"\r\n\r\n"
        + chunks + b"0\r\n\r\n"
    )
    head, _, body = raw_exchange(port, request).partition(b"\r\n\r\n")
    return head, body


def _whole_order_then_more():
    # The first MAX_BODY_BYTES are a whole order; what follows must not be
    # cut off and ignored.
    order = json.dumps(order_body()).encode()
    return [order + b" " * (orders.MAX_BODY_BYTES - len(order)), b"garbage"]


@pytest.mark.parametrize(
    "make_parts",
    [lambda: [b"[" + b" " * 16383] * 8, _whole_order_then_more],
    ids=["128k-of-junk", "valid-order-then-more"],
)
def test_chunked_body_over_size_limit_is_413_json(
    start_gunicorn, empty_orders, make_parts
):
    server = start_gunicorn(workers=1)

    head, body = post_chunked(server.port, make_parts())

    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body) == {"success": False, "messages": ["BODY_TOO_LARGE"]}
    assert stored_orders(empty_orders) == {}


def test_two_authorization_headers_are_401(start_gunicorn):
    server = start_gunicorn(workers=1)
    token = bearer(str(uuid.uuid4()))["Authorization"].encode()
    request = (
        b"GET " + ORDERS_URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nAuthorization: " + token + b"\r\n"
        b"Authorization: " + token + b"\r\n\r\n"
    )

    head, _, body = raw_exchange(server.port, request).partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 401")
    assert json.loads(body) == {"success": False, "messages": ["INVALID_TOKEN"]}


def test_malformed_chunked_body_is_400_json_and_not_logged(
    start_gunicorn, empty_orders
):
    server = start_gunicorn(workers=1)
    token = bearer(str(uuid.uuid4()))["Authorization"].encode()
    request = (
        b"POST " + ORDERS_URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nAuthorization: " + token + b"\r\n\r\n"
        b"BODYCANARY\r\nxx\r\n0\r\n\r\n"
    )

    head, _, body = raw_exchange(server.port, request).partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["success"] is False
    assert stored_orders(empty_orders) == {}
    server.stop()
    assert "BODYCANARY" not in server.output()
    assert "Traceback" not in server.output()


def test_newline_in_path_cannot_forge_a_log_line(start_gunicorn):
    server = start_gunicorn(workers=1)

    status, _, _ = server.request("GET", ORDERS_URL + "/%0aFORGED%20status=200")

    assert status == 404
    server.stop()
    logged = server.output().splitlines()
    assert not any(line.startswith("FORGED") for line in logged)
    assert "%0AFORGED" in server.output()


def test_spaces_in_path_cannot_forge_log_fields(start_gunicorn):
    server = start_gunicorn(workers=1)
    forged = "/1%20status=200%20user=someone%20request_id=forged"

    status, headers, _ = server.request("GET", ORDERS_URL + forged)

    assert status == 404
    server.stop()
    [line] = [
        line
        for line in server.output().splitlines()
        if headers["X-Request-ID"] in line and line.startswith("method=")
    ]
    fields = dict(field.split("=", 1) for field in line.split(" "))
    assert fields["status"] == "404"
    assert fields["user"] == "-"
    assert "%20status%3D200" in fields["path"]


def test_request_gunicorn_refuses_is_logged_without_its_text(start_gunicorn):
    server = start_gunicorn(workers=1)
    token = bearer(str(uuid.uuid4()))["Authorization"].encode()
    request = (
        b"GET " + ORDERS_URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n" + token.replace(b": ", b" ") + b"\r\n\r\n"
    )

    head = raw_exchange(server.port, request).partition(b"\r\n\r\n")[0]

    assert head.startswith(b"HTTP/1.1 400")
    server.stop()
    assert token.split()[-1].decode() not in server.output()
    assert "Invalid request from" in server.output()


def start_gunicorn_expecting_failure(postgres, **environ):
    """Start gunicorn with `environ`; return (exit status, stderr text)."""
    command = [
        sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
        "--bind", f"127.0.0.1:{localdb.free_port()}", "orders:create_app()",
    ]
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DB_", "DATABASE_", "SECRET_KEY", "WEB_"))
    }
    clean.update(
        {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": database_url(postgres), **environ}
    )
    finished = subprocess.run(
        command, cwd=HERE, env=clean, capture_output=True, text=True, timeout=60
    )
    return finished.returncode, finished.stderr


@pytest.mark.parametrize(
    "setting, variable",
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"GUNICORN_THREADS": "-1"}, "GUNICORN_THREADS"),
        ({"DATABASE_URL": "garbage://"}, "DATABASE_URL"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ],
    ids=["no-workers", "negative-threads", "bad-url", "no-secret"],
)
def test_bad_setting_stops_the_server_with_one_line(postgres, setting, variable):
    status, stderr = start_gunicorn_expecting_failure(postgres, **setting)

    assert status != 0
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("ERROR: ") and variable in last_line
