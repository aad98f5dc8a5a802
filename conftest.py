"""Fixtures: one scratch PostgreSQL database a run, emptied before each test.

The database lives on the server that TEST_DATABASE_URL names (any
database URL on it; the scratch database is made beside it), or, when
that is unset, on a private server the suite starts in a temporary folder.
"""

import os
import tempfile
import time
import uuid

import jwt
import psycopg2
import pytest

import auth
import db
import localdb
import orders

TEST_SECRET = "test-secret-" + "s" * 64
OTHER_SECRET = "another-secret-" + "o" * 64


@pytest.fixture(scope="session")
def server_url():
    """The URL of a PostgreSQL server the suite may create databases on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return

    with tempfile.TemporaryDirectory(prefix="orders-test-pg-") as folder:
        server = localdb.LocalPostgres(os.path.join(folder, "data"), durable=False)
        server.start()
        try:
            yield server.url()
        finally:
            server.stop("immediate")


@pytest.fixture(scope="session")
def database_url(server_url):
    """A scratch database with the schema applied, dropped after the run."""
    name = "orders_test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')

    scratch_url = psycopg2.extensions.parse_dsn(server_url)
    scratch_url["dbname"] = name
    url = " ".join(f"{key}='{value}'" for key, value in scratch_url.items())
    db.apply_schema(url)
    try:
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def run_sql(database_url, statement, params=None):
    """Run one statement on the test database; return its rows, if any."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        conn.close()


@pytest.fixture
def sql(database_url):
    """Run SQL on the test database: `sql("SELECT ...", params)`."""
    return lambda statement, params=None: run_sql(database_url, statement, params)


@pytest.fixture
def empty_database(database_url):
    run_sql(database_url, "TRUNCATE order_products, orders")
    return database_url


@pytest.fixture
def app(empty_database):
    application = orders.create_app(
        {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": empty_database}
    )
    yield application
    application.extensions["orders_db"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def make_claims(user_uuid, **overrides):
    """The claims the users service puts in an access token, overridden."""
    now = int(time.time())
    claims = {
        "sub": f"UUID:{user_uuid}",
        "aud": "shop-example",
        "iss": "docs_users",
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "typ": "access",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def sign(claims, secret=TEST_SECRET, algorithm="HS512", headers=None):
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


@pytest.fixture
def token_for():
    """`token_for(user_uuid, staff=False, **claim_overrides)` -> a JWT."""

    def make(user_uuid, staff=False, **overrides):
        if staff:
            overrides.setdefault("scope", auth.STAFF_SCOPE)
        return sign(make_claims(user_uuid, **overrides))

    return make


@pytest.fixture
def as_user(token_for):
    """`as_user(user_uuid)` -> headers that authenticate as that user."""
    return lambda user_uuid, staff=False: {
        "Authorization": "Bearer " + token_for(user_uuid, staff=staff)
    }


@pytest.fixture
def alice():
    return str(uuid.uuid4())


@pytest.fixture
def bob():
    return str(uuid.uuid4())
