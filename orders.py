"""The shop's orders service: place, list, read, cancel and fulfil orders.

Every route under /api/v1/orders needs a bearer token from the shop's
users service (see auth.py). Every answer, errors included, is JSON.
"""

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import click
import psycopg2
import psycopg2.extensions
from flask import Flask, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

import auth
import db

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")

# Bounds the README documents; a body beyond them is refused whole.
MAX_BODY_BYTES = 64 * 1024
MAX_PRODUCTS_PER_ORDER = 100
MAX_QUANTITY = 1000
MAX_JSON_DEPTH = 8
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_ORDER_ID = 2**63 - 1
DATABASE_RETRY_AFTER_S = 5
READINESS_TIMEOUT_S = 2.0

ORDER_STATUSES = ("placed", "fulfilled", "cancelled")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_IDEMPOTENCY_KEY_CHARS)

ERROR_NAMES = {
    400: "BAD_REQUEST",
    401: "INVALID_TOKEN",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
    503: "DATABASE_UNAVAILABLE",
}


class ConfigError(click.ClickException):
    """A setting is missing or wrong; the message names the variable.

    A click exception, so that `flask --app orders ...` prints it as one
    line rather than a traceback.
    """


class OrderNumberConverter(IntegerConverter):
    """A number in ASCII digits only. Werkzeug's own `int` also takes
    other scripts' digits: an Arabic-Indic one would read order 1."""

    regex = r"[0-9]+"


# ---------------------------------------------------------------------------
# SQL. Each unit of work is one statement, run in autocommit mode, so it
# is stored whole or not at all: mostly a call of a function of
# schema.sql, whose plans PostgreSQL keeps per connection. PostgreSQL
# builds each ORDER as JSON (order_answers in schema.sql). Every
# customer's statement names its owner.

PLACE_ORDER = """
SELECT order_number, order_body
FROM place_order(%(owner)s, %(idempotency_key)s, %(request_digest)s,
                 %(product_uuids)s::uuid[], %(quantities)s::integer[])
"""

FIND_RETRIED_ORDER = """
SELECT request_digest, order_number, order_body
FROM find_retried_order(%(owner)s, %(idempotency_key)s)
"""

FIND_OWN_ORDER = """
SELECT order_status, order_body FROM find_own_order(%(owner)s, %(order_id)s)
"""

# Staff only: an order of any customer, found by its number alone.
FIND_ANY_ORDER = """
SELECT order_status, order_body FROM find_any_order(%(order_id)s)
"""

# A customer's list always names its owner; staff may ask for every owner
# by passing NULL. Pages are keyed on (created_at, id), never OFFSET. A
# plain statement, planned per call for the owner and cursor it names
# (see schema.sql on why).
LIST_ORDERS = """
SELECT o.order_body, o.list_position
FROM order_answers o
WHERE (%(owner)s::uuid IS NULL OR o.owner = %(owner)s)
  AND (%(status)s::text IS NULL OR o.status = %(status)s)
  AND (%(after_time)s::timestamptz IS NULL
       OR (o.created_at, o.id) < (%(after_time)s, %(after_id)s))
ORDER BY o.created_at DESC, o.id DESC
LIMIT %(limit)s
"""

# A change of state happens only from 'placed', in one conditional
# statement, so of two concurrent changes exactly one wins.
CANCEL_OWN_ORDER = """
SELECT order_body FROM cancel_own_order(%(owner)s, %(order_id)s)
"""

# Staff only: fulfil any customer's order by its number.
FULFIL_ANY_ORDER = """
SELECT order_body FROM fulfil_any_order(%(order_id)s)
"""


# ---------------------------------------------------------------------------
# Configuration


def settings_from_environment(environ):
    """Read the service's settings from `environ`.

    Returns a dict of Flask config keys. Raises ConfigError naming the
    variable when a value is missing or malformed. Never logs a secret.
    """
    secret = environ.get("SECRET_KEY", "")
    if not secret:
        raise ConfigError(
            "SECRET_KEY is not set: set it to the secret the users service "
            "signs its tokens with"
        )
    secrets = [secret]
    if environ.get("SECRET_KEY_PREVIOUS"):
        secrets.append(environ["SECRET_KEY_PREVIOUS"])

    algorithms = tuple(
        name.strip()
        for name in environ.get("JWT_ALGORITHMS", "HS512").split(",")
        if name.strip()
    )
    unknown = [name for name in algorithms if name not in auth.HMAC_ALGORITHMS]
    if not algorithms or unknown:
        raise ConfigError(
            "JWT_ALGORITHMS must list only "
            + ", ".join(auth.HMAC_ALGORITHMS)
            + f"; got {environ.get('JWT_ALGORITHMS')!r}"
        )

    leeway_s = int_setting(environ, "JWT_LEEWAY_S", 5, 0, auth.MAX_LEEWAY_S)

    return {
        "TOKEN_SETTINGS": auth.TokenSettings(
            secrets=tuple(secrets),
            audience=environ.get("JWT_AUDIENCE", "shop-example"),
            issuer=environ.get("JWT_ISSUER", "docs_users"),
            algorithms=algorithms,
            leeway_s=leeway_s,
        ),
        # None when no database is configured: the token command needs
        # none, and `prepare_database` refuses to serve without one.
        "DATABASE_DSN": _checked_dsn(environ),
        "DB_POOL_SIZE": int_setting(environ, "DB_POOL_SIZE", 4, 1, 100),
        "DB_TIMEOUT_S": int_setting(environ, "DB_TIMEOUT_S", 5, 1, 60),
    }


def int_setting(environ, name, default, lowest, highest):
    """Return the whole number `environ[name]`, or `default` when unset.

    Raises ConfigError naming the variable when the value is not a whole
    number from `lowest` to `highest`.
    """
    text = environ.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lowest <= value <= highest:
        raise ConfigError(
            f"{name} must be a whole number from {lowest} to {highest}; got {text!r}"
        )
    return value


def _checked_dsn(environ):
    dsn = db.database_dsn(environ)
    if dsn:
        try:
            psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError:
            # psycopg2's message quotes the string, password included.
            raise ConfigError(
                "DATABASE_URL (or the DB_* variables) is not a valid libpq URL "
                "or key=value connection string"
            ) from None
    return dsn


def check_secret_strength(token_settings):
    """Log a warning for each secret shorter than RFC 7518 asks."""
    for position, secret in enumerate(token_settings.secrets):
        if len(secret.encode()) < auth.MIN_SECRET_BYTES:
            name = "SECRET_KEY" if position == 0 else "SECRET_KEY_PREVIOUS"
            log.warning(
                "%s is %d bytes, shorter than the %d bytes RFC 7518 asks of an "
                "HMAC key: have the users service sign with a longer secret",
                name,
                len(secret.encode()),
                auth.MIN_SECRET_BYTES,
            )


# ---------------------------------------------------------------------------
# The application


def create_app(test_config=None):
    """Build the orders application.

    Settings come from the environment, then from `test_config`, which
    may also give whole settings (`TOKEN_SETTINGS`, `DATABASE_DSN`).
    Raises ConfigError when a required setting is missing. Opens no
    database connection: each process connects on its first request.
    """
    # No static files, and no automatic OPTIONS answer: Flask's is an
    # empty text/html 200, and every answer here must be JSON (405).
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.converters["int"] = OrderNumberConverter
    # Werkzeug would answer '//' in a path with an HTML redirect to a URL
    # built from the client's Host header; such a path is simply unknown.
    app.url_map.merge_slashes = False

    environ = dict(os.environ)
    if test_config:
        environ.update({k: v for k, v in test_config.items() if isinstance(v, str)})
    app.config.update(settings_from_environment(environ))
    if test_config:
        # Text values were read as environment above; the rest are whole
        # settings. Never SECRET_KEY itself: Flask would sign sessions.
        app.config.update(
            {k: v for k, v in test_config.items() if not isinstance(v, str)}
        )

    _configure_logging()
    check_secret_strength(app.config["TOKEN_SETTINGS"])

    db.install_deadline()
    app.extensions["orders_db"] = db.Database(
        app.config["DATABASE_DSN"],
        pool_size=app.config["DB_POOL_SIZE"],
        timeout_s=app.config["DB_TIMEOUT_S"],
    )
    app.extensions["openapi"] = OPENAPI_PATH.read_bytes()

    app.before_request(_start_request)
    app.after_request(_finish_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(auth.TokenRefused, _token_refused)
    app.register_error_handler(InvalidRequest, _invalid_request)
    app.register_error_handler(db.DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unexpected_error)
    _register_routes(app)
    _register_commands(app)
    return app


def _configure_logging():
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _database():
    return current_app.extensions["orders_db"]


def _start_request():
    sent_id = request.headers.get("X-Request-ID", "")
    g.request_id = sent_id if _REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
    # gunicorn's access log reads these (see gunicorn.conf.py). The path
    # is logged percent-encoded: a newline, space or '=' sent as %0a, %20
    # or %3d must not start a forged line or field.
    request.environ["orders.request_id"] = g.request_id
    request.environ["orders.user"] = "-"
    request.environ["orders.path"] = urllib.parse.quote(request.path, safe="/")


def _finish_response(response):
    response.headers["X-Request-ID"] = g.get("request_id", "-")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path.startswith(API_PREFIX + "/orders"):
        response.headers["Cache-Control"] = "no-store"
    return response


def json_response(body, status=200, headers=None):
    """Answer with `body`, a dict, or JSON text already built."""
    if not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"))
    return (body, status, {"Content-Type": "application/json", **(headers or {})})


def error_response(status, messages, headers=None):
    """Answer `{"success": false, "messages": [...]}` with `status`."""
    return json_response(
        {"success": False, "messages": list(messages)}, status, headers
    )


def _http_error(error):
    headers = {}
    if getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    name = ERROR_NAMES.get(error.code, error.name.upper().replace(" ", "_"))
    return error_response(error.code, [name], headers)


def _database_unavailable(error):
    log.warning(
        "database unavailable, answering 503: %s request_id=%s; check that "
        "PostgreSQL is up and reachable with the configured DSN",
        error,
        g.get("request_id", "-"),
    )
    return error_response(
        503, ["DATABASE_UNAVAILABLE"], {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
    )


def _unexpected_error(error):
    log.exception("unexpected error, answering 500 request_id=%s", g.get("request_id"))
    return error_response(500, ["INTERNAL_ERROR"])


# ---------------------------------------------------------------------------
# Authentication


def _authenticate():
    """Return the caller's User; raise auth.TokenRefused (401) if none."""
    user = auth.check_bearer_token(
        request.headers.get("Authorization"), current_app.config["TOKEN_SETTINGS"]
    )
    request.environ["orders.user"] = user.uuid
    return user


def _token_refused(refusal):
    log.info("token refused: %s request_id=%s", refusal.reason, g.request_id)
    challenge = 'Bearer realm="orders"'
    if refusal.token_sent:
        challenge += ', error="invalid_token"'
    return error_response(401, ["INVALID_TOKEN"], {"WWW-Authenticate": challenge})


def _invalid_request(invalid):
    return error_response(invalid.status, invalid.messages)


# ---------------------------------------------------------------------------
# Reading a placed order's body


class InvalidRequest(Exception):
    """The request is refused; `messages` name each offending field."""

    def __init__(self, status, messages):
        super().__init__(messages)
        self.status = status
        self.messages = messages


def _refuse_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError("duplicate keys: " + ", ".join(duplicated))
    return dict(pairs)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _depth(value, limit):
    if limit < 0:
        return limit
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return min((_depth(item, limit - 1) for item in value), default=limit - 1)
    return limit


def parse_json_body(raw):
    """Parse a request body as strict JSON.

    Refuses (InvalidRequest, 400) what json.loads would otherwise let in:
    NaN and Infinity, duplicate keys, nesting deeper than MAX_JSON_DEPTH
    and numbers too long to be a quantity.
    """
    if not raw.strip():
        raise InvalidRequest(400, ["body: is empty; send a JSON object"])
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_refuse_duplicate_keys,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise InvalidRequest(400, ["body: is nested too deeply"]) from None
    except ValueError as error:
        message = f"body: is not valid JSON ({_short(error)})"
        raise InvalidRequest(400, [message]) from None
    if _depth(value, MAX_JSON_DEPTH) < 0:
        raise InvalidRequest(400, [f"body: nested deeper than {MAX_JSON_DEPTH} levels"])
    return value


def _short(error):
    return str(error).splitlines()[0][:120]


def validate_order(body):
    """Return the products of an order body as [(uuid, quantity), ...].

    Raises InvalidRequest (422) naming every offending field. Keys other
    than `products`, `uuid` and `quantity` are ignored and never stored.
    A product listed twice is refused, not merged.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(422, ["body: must be a JSON object"])

    products = body.get("products")
    if not isinstance(products, list) or not products:
        raise InvalidRequest(422, ["products: must be a non-empty list"])
    if len(products) > MAX_PRODUCTS_PER_ORDER:
        raise InvalidRequest(
            422, [f"products: must hold at most {MAX_PRODUCTS_PER_ORDER} items"]
        )

    messages = []
    lines = []
    seen = {}
    for position, product in enumerate(products):
        field = f"products[{position}]"
        if not isinstance(product, dict):
            messages.append(f"{field}: must be an object with uuid and quantity")
            continue

        product_uuid = product.get("uuid")
        if not auth.is_canonical_uuid(product_uuid):
            messages.append(f"{field}.uuid: must be a UUID like {uuid.UUID(int=0)}")
            product_uuid = None
        else:
            product_uuid = product_uuid.lower()
            if product_uuid in seen:
                messages.append(
                    f"{field}.uuid: repeats products[{seen[product_uuid]}]; "
                    "list each product once with its whole quantity"
                )
            seen.setdefault(product_uuid, position)

        quantity = product.get("quantity")
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            messages.append(
                f"{field}.quantity: must be a whole number from 1 to {MAX_QUANTITY}"
            )

        lines.append((product_uuid, quantity))

    if messages:
        raise InvalidRequest(422, messages)
    return lines


def _request_digest(lines):
    canonical = json.dumps(lines, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_order_request():
    """Return the products of the request's order, or raise InvalidRequest."""
    if request.mimetype != "application/json":
        raise InvalidRequest(415, ["Content-Type: must be application/json"])
    try:
        raw = request.get_data(cache=False)
    except HTTPException:
        raise
    except Exception:
        # The server could not read the body: broken chunked framing or a
        # client that hung up. Its text may hold anything: never log it.
        raise InvalidRequest(400, ["body: could not be read"]) from None
    # Werkzeug cuts a body sent without Content-Length (chunked) at
    # MAX_BODY_BYTES without a word: a byte left over means too large.
    if len(raw) >= MAX_BODY_BYTES and request.environ["wsgi.input"].read(1):
        raise InvalidRequest(413, [ERROR_NAMES[413]])
    return validate_order(parse_json_body(raw))


# ---------------------------------------------------------------------------
# Paging


def encode_cursor(position):
    """Return an opaque cursor for the list position `position`."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor):
    """Return (created_at, order_id) from a cursor, or raise ValueError."""
    if len(cursor) > 100:
        raise ValueError("too long")
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError):
        raise ValueError("not a cursor") from None
    created_text, _, id_text = text.partition(" ")
    created_at = datetime.datetime.fromisoformat(created_text.replace("Z", "+00:00"))
    order_id = int(id_text)
    # The service writes cursors in UTC; any other offset is forged, and
    # PostgreSQL refuses some that Python accepts (beyond +-15:59).
    if created_at.utcoffset() != datetime.timedelta(0):
        raise ValueError("not a cursor")
    if not 1 <= order_id <= MAX_ORDER_ID:
        raise ValueError("not a cursor")
    return created_at, order_id


def _read_list_query(user):
    """Return the list statement's parameters, or raise InvalidRequest."""
    args = request.args
    messages = []
    params = {
        "owner": user.uuid,
        "status": None,
        "after_time": None,
        "after_id": None,
        "limit": DEFAULT_PAGE_SIZE,
    }

    limit_text = args.get("limit")
    if limit_text is not None:
        is_number = re.fullmatch(r"[0-9]{1,4}", limit_text) is not None
        if is_number and 1 <= int(limit_text) <= MAX_PAGE_SIZE:
            params["limit"] = int(limit_text)
        else:
            messages.append(f"limit: must be a whole number from 1 to {MAX_PAGE_SIZE}")

    status = args.get("status")
    if status is not None:
        if status in ORDER_STATUSES:
            params["status"] = status
        else:
            messages.append("status: must be one of " + ", ".join(ORDER_STATUSES))

    cursor = args.get("after")
    if cursor is not None:
        try:
            params["after_time"], params["after_id"] = decode_cursor(cursor)
        except ValueError:
            messages.append("after: must be the 'next' value of an earlier page")

    wanted_user = args.get("user")
    see_all = args.get("all")
    if see_all is not None and see_all not in ("true", "false"):
        messages.append("all: must be true or false")
    if wanted_user is not None and not auth.is_canonical_uuid(wanted_user):
        messages.append("user: must be a user's UUID")

    if messages:
        raise InvalidRequest(422, messages)

    wants_other = see_all == "true" or (
        wanted_user is not None and wanted_user.lower() != user.uuid
    )
    if wants_other and not user.is_staff:
        raise InvalidRequest(403, ["FORBIDDEN"])
    if see_all == "true":
        params["owner"] = None
    elif wanted_user is not None:
        params["owner"] = wanted_user.lower()
    return params


# ---------------------------------------------------------------------------
# Routes


def _register_routes(app):
    @app.get("/healthz")
    def healthz():
        """Answer 200 while the process serves requests; no database."""
        return json_response({"success": True, "data": {"status": "alive"}})

    @app.get("/readyz")
    def readyz():
        """Answer 200 when the database answers within 2 seconds, else 503."""
        with _database().connection(timeout_s=READINESS_TIMEOUT_S) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        return json_response({"success": True, "data": {"status": "ready"}})

    @app.get(API_PREFIX + "/openapi.json")
    def openapi_document():
        """Answer the OpenAPI 3 description of this API; no token needed."""
        return json_response(app.extensions["openapi"].decode())

    @app.post(API_PREFIX + "/orders")
    def place_order():
        """Place an order for the caller: 201 with Location, or 200 when a
        retry's Idempotency-Key names an order already placed. 401, 400,
        413, 415, 422 and 503 store nothing."""
        user = _authenticate()

        idempotency_key = _read_idempotency_key()
        lines = _read_order_request()

        params = {
            "owner": user.uuid,
            "idempotency_key": idempotency_key,
            "request_digest": _request_digest(lines) if idempotency_key else None,
            "product_uuids": [product_uuid for product_uuid, _ in lines],
            "quantities": [quantity for _, quantity in lines],
        }
        with _database().connection() as conn, conn.cursor() as cursor:
            cursor.execute(PLACE_ORDER, params)
            placed = cursor.fetchone()
            if placed is None:
                cursor.execute(FIND_RETRIED_ORDER, params)
                retried = cursor.fetchone()

        if placed is not None:
            order_id, order = placed
            return _order_answer(order, 201, {"Location": _order_url(order_id)})
        if retried is None:
            # Only possible if the first order vanished between the two
            # statements; nothing deletes orders, so this is a bug.
            raise RuntimeError("idempotency key conflicted with no stored order")

        request_digest, order_id, order = retried
        if request_digest != params["request_digest"]:
            return error_response(422, ["IDEMPOTENCY_KEY_REUSED"])
        return _order_answer(
            order,
            200,
            {"Location": _order_url(order_id), "Idempotent-Replayed": "true"},
        )

    @app.get(API_PREFIX + "/orders")
    def list_orders():
        """List the caller's orders newest first, a page at a time, with
        the cursor of the next page in `next` (null on the last). Staff
        may list one user's (`user=`) or everyone's (`all=true`)."""
        user = _authenticate()

        params = _read_list_query(user)

        wanted = params["limit"]
        params["limit"] = wanted + 1
        with _database().connection() as conn, conn.cursor() as cursor:
            cursor.execute(LIST_ORDERS, params)
            rows = cursor.fetchall()

        next_cursor = "null"
        if len(rows) > wanted:
            rows = rows[:wanted]
            next_cursor = '"' + encode_cursor(rows[-1][1]) + '"'
        orders_json = ",".join(row[0] for row in rows)
        return json_response(
            '{"success":true,"data":[' + orders_json + '],"next":' + next_cursor + "}"
        )

    @app.get(API_PREFIX + "/orders/<int:order_id>")
    def read_order(order_id):
        """Answer one of the caller's orders; 404 when it does not exist
        or is another user's (staff may read any)."""
        user = _authenticate()

        found = _find_order(order_id, user)
        if found is None:
            return error_response(404, ["NOT_FOUND"])
        return _order_answer(found[1], 200)

    @app.post(API_PREFIX + "/orders/<int:order_id>/cancel")
    def cancel_order(order_id):
        """Cancel one of the caller's placed orders. Cancelling it again
        answers 200 unchanged; a fulfilled order answers 409
        ORDER_FULFILLED; another user's order, 404."""
        user = _authenticate()

        order = _change_status(CANCEL_OWN_ORDER, order_id, user.uuid)
        if order is not None:
            return _order_answer(order, 200)

        found = _find_order(order_id, user, own_only=True)
        if found is None:
            return error_response(404, ["NOT_FOUND"])
        status, order = found
        if status == "fulfilled":
            return error_response(409, ["ORDER_FULFILLED"])
        return _order_answer(order, 200)

    @app.post(API_PREFIX + "/orders/<int:order_id>/fulfil")
    def fulfil_order(order_id):
        """Staff only: fulfil a placed order. A customer's token answers
        403 whatever the order; fulfilling again answers 200 unchanged;
        a cancelled order answers 409 ORDER_CANCELLED."""
        user = _authenticate()
        if not user.is_staff:
            return error_response(403, ["FORBIDDEN"])

        order = _change_status(FULFIL_ANY_ORDER, order_id, user.uuid)
        if order is not None:
            return _order_answer(order, 200)

        found = _find_order(order_id, user)
        if found is None:
            return error_response(404, ["NOT_FOUND"])
        status, order = found
        if status == "cancelled":
            return error_response(409, ["ORDER_CANCELLED"])
        return _order_answer(order, 200)


def _read_idempotency_key():
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            422,
            [
                "Idempotency-Key: must be 1 to "
                f"{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
            ],
        )
    return key


def _order_answer(order_json, status, headers=None):
    return json_response('{"success":true,"data":' + order_json + "}", status, headers)


def _order_url(order_id):
    return f"{API_PREFIX}/orders/{order_id}"


def _find_order(order_id, user, own_only=False):
    """Return (status, ORDER JSON) of an order the user may see, or None."""
    statement = FIND_ANY_ORDER if user.is_staff and not own_only else FIND_OWN_ORDER
    return _fetch_one(statement, order_id, user.uuid)


def _change_status(statement, order_id, owner):
    """Return the ORDER JSON the change answers, or None if it changed none."""
    row = _fetch_one(statement, order_id, owner)
    return row[0] if row else None


def _fetch_one(statement, order_id, owner):
    """Run a statement about one order; its first row, or None. A number
    beyond bigint names no order and never reaches the database."""
    if order_id > MAX_ORDER_ID:
        return None
    with _database().connection() as conn, conn.cursor() as cursor:
        cursor.execute(statement, {"owner": owner, "order_id": order_id})
        return cursor.fetchone()


# ---------------------------------------------------------------------------
# Command line: `flask --app orders init-db` and `flask --app orders token`


def _register_commands(app):
    @app.cli.command("init-db")
    def init_db_command():
        """Create the tables the service needs; keep every stored order."""
        db.apply_schema(app.config["DATABASE_DSN"], timeout_s=30)
        click.echo("---> schema applied")

    @app.cli.command("token")
    @click.argument("user_uuid")
    @click.option("--staff", is_flag=True, help="Add the scope that lets staff fulfil.")
    @click.option("--minutes", default=60, show_default=True, help="Lifetime.")
    def token_command(user_uuid, staff, minutes):
        """Print an access token for USER_UUID, signed with SECRET_KEY."""
        if not auth.is_canonical_uuid(user_uuid):
            raise click.BadParameter("must be a UUID", param_hint="USER_UUID")
        settings = app.config["TOKEN_SETTINGS"]
        click.echo(
            auth.mint_token(
                user_uuid.lower(),
                settings.secrets[0],
                settings,
                staff=staff,
                lifetime_s=minutes * 60,
            )
        )


def prepare_database(environ, wait_s=30):
    """Check the settings and apply the schema, once, before serving.

    Retries while the database is not yet reachable, for up to `wait_s`
    seconds. Raises ConfigError or db.DatabaseUnavailable.
    """
    settings = settings_from_environment(environ)
    if settings["DATABASE_DSN"] is None:
        raise ConfigError(
            "no database is configured: set DATABASE_URL, the PG* variables "
            "or DB_HOSTNAME with DB_USERNAME, DB_PASSWORD and DB_DATABASE"
        )

    deadline = time.monotonic() + wait_s
    db.install_deadline()
    while True:
        try:
            db.apply_schema(settings["DATABASE_DSN"])
            return
        except db.DatabaseUnavailable as error:
            if time.monotonic() >= deadline:
                raise
            log.warning("database not reachable yet, retrying: %s", error)
            time.sleep(1)

