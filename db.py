"""Connections to the orders database, and its schema.

Each process keeps a small pool of connections, made on first use, so a
pool is never shared across a fork. Every connection runs in autocommit
mode and every unit of work is a single SQL statement, so a transaction
is never left open between requests and nothing is ever stored in part.

Every wait on the server, connecting included, is bounded by a deadline
(see `wait_with_deadline`): a server that is down, unreachable or frozen
costs a request a few seconds and a `DatabaseUnavailable`, never a hang.
"""

import contextlib
import contextvars
import logging
import os
import select
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schema.sql")

# Any constant will do: it names the lock that keeps two pods from
# applying the schema at the same moment.
SCHEMA_LOCK_ID = 7_320_145

DEFAULT_TIMEOUT_S = 5.0

_timeout_s = contextvars.ContextVar("db_timeout_s", default=DEFAULT_TIMEOUT_S)


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


def database_dsn(environ):
    """Return the libpq connection string that the environment names.

    In order of preference: `DATABASE_URL`; the deployment variables
    `DB_HOSTNAME`, `DB_PORT`, `DB_USERNAME`, `DB_PASSWORD`,
    `DB_DATABASE`; otherwise an empty string, which lets libpq read its
    own `PG*` variables. Returns None when none of these is set.
    """
    if environ.get("DATABASE_URL"):
        return environ["DATABASE_URL"]

    if environ.get("DB_HOSTNAME"):
        parts = {
            "host": environ["DB_HOSTNAME"],
            "port": environ.get("DB_PORT", ""),
            "user": environ.get("DB_USERNAME", ""),
            "password": environ.get("DB_PASSWORD", ""),
            "dbname": environ.get("DB_DATABASE", ""),
        }
        return " ".join(
            f"{key}='{_quote_libpq(value)}'" for key, value in parts.items() if value
        )

    if any(environ.get(name) for name in ("PGHOST", "PGDATABASE", "PGSERVICE")):
        return ""

    return None


def _quote_libpq(value):
    return value.replace("\\", "\\\\").replace("'", "\\'")


def url_from_parts(host, port, user, dbname, password=None):
    """Return a postgresql:// URL for the given parts, each quoted."""
    credentials = quote(user, safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    return f"postgresql://{credentials}@{host}:{port}/{quote(dbname, safe='')}"


def wait_with_deadline(conn):
    """Wait for libpq like psycopg2 does, but never past the deadline.

    Installed for the whole process by `install_deadline()`. Raises
    psycopg2.OperationalError once the current timeout has passed; the
    connection is then closed, so it is never used again.
    """
    deadline = time.monotonic() + _timeout_s.get()
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            # No conn.close() here: during execute() psycopg2 holds the
            # connection's lock, so close() would wait on it forever.
            # psycopg2 closes the connection itself when this raises.
            raise psycopg2.OperationalError("database did not answer in time")
        if state == psycopg2.extensions.POLL_READ:
            events = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        # poll(), unlike select(), works for descriptors above 1023.
        poller = select.poll()
        poller.register(conn.fileno(), events)
        poller.poll(remaining_s * 1000)


def install_deadline():
    """Bound every wait of every psycopg2 connection in this process."""
    psycopg2.extensions.set_wait_callback(wait_with_deadline)


@contextlib.contextmanager
def timeout(seconds):
    """Within the block, bound each wait on the database by `seconds`."""
    token = _timeout_s.set(seconds)
    try:
        yield
    finally:
        _timeout_s.reset(token)


def _has_pending_input(conn):
    # An idle connection has nothing to read. If it has, the server has
    # sent a termination notice (a restart, an administrator) or closed
    # the socket: the connection is dead even though psycopg2 can't tell.
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Database:
    """A per-process pool of autocommit connections to one database.

    Safe to create before gunicorn forks: it connects on first use and
    starts afresh in any process other than the one that used it last.
    At most `pool_size` connections are lent at once; a further borrower
    waits for one, up to the timeout.
    """

    def __init__(self, dsn, pool_size, timeout_s):
        self.dsn = dsn
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self._reset()

    def _reset(self):
        self._pid = os.getpid()
        self._idle = []
        self._free_slots = threading.BoundedSemaphore(self.pool_size)

    def _take_connection(self, timeout_s):
        if self._pid != os.getpid():
            self._reset()
        if self.dsn is None:
            raise psycopg2.OperationalError("no database is configured")
        if not self._free_slots.acquire(timeout=timeout_s):
            raise psycopg2.OperationalError(
                f"all {self.pool_size} connections of this worker stayed busy"
            )

        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and not _has_pending_input(conn):
                    return conn
                conn.close()
            conn = psycopg2.connect(self.dsn)
            conn.autocommit = True
            return conn
        except BaseException:
            self._free_slots.release()
            raise

    def _give_back(self, conn, broken):
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        if broken or conn.closed or conn.info.transaction_status != idle:
            conn.close()
        else:
            self._idle.append(conn)
        self._free_slots.release()

    @contextlib.contextmanager
    def connection(self, timeout_s=None):
        """Lend a live connection in autocommit mode for one unit of work.

        Raises DatabaseUnavailable when the server can't be reached or a
        wait passes the timeout. A connection that failed is closed, and
        one with a transaction still open is closed rather than reused.
        """
        timeout_s = timeout_s or self.timeout_s
        broken = False
        with timeout(timeout_s):
            try:
                conn = self._take_connection(timeout_s)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                raise DatabaseUnavailable(_first_line(error)) from error
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                broken = True
                raise DatabaseUnavailable(_first_line(error)) from error
            except BaseException:
                broken = conn.closed != 0
                raise
            finally:
                self._give_back(conn, broken)

    def close(self):
        """Close every idle connection of this process."""
        if self._pid == os.getpid():
            while self._idle:
                self._idle.pop().close()


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def apply_schema(dsn, timeout_s=DEFAULT_TIMEOUT_S):
    """Create whatever of `schema.sql` is missing; keep every stored row.

    Holds an advisory lock meanwhile, so pods starting together apply it
    one after another. Raises DatabaseUnavailable when it can't connect.
    """
    schema = SCHEMA_PATH.read_text()

    with timeout(timeout_s):
        try:
            conn = psycopg2.connect(dsn)
        except psycopg2.OperationalError as error:
            raise DatabaseUnavailable(_first_line(error)) from error

        try:
            with conn, conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
                cursor.execute(schema)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            raise DatabaseUnavailable(_first_line(error)) from error
        finally:
            conn.close()
