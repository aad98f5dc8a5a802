"""gunicorn settings for the orders service, in every environment.

The S2I Python builder's `run` script starts
`gunicorn "$APP_MODULE" --config "$APP_CONFIG"` when both are set in
.s2i/environment; `make run`, the tests and the benchmark start it the
same way. Values come from the environment the builder and the
Deployment provide.
"""

import os
import sys

import orders

# Listen where OpenShift's probes and Service expect it. With APP_CONFIG
# set, the builder's `run` passes no --bind of its own, and it never
# exports its PORT default, hence ours.
bind = "0.0.0.0:" + os.environ.get("PORT", "8080")


def _whole_number(environ, name, default, lowest, highest):
    try:
        return orders.int_setting(environ, name, default, lowest, highest)
    except orders.ConfigError as error:
        sys.exit(f"ERROR: {error.message}")


# The builder computes WEB_CONCURRENCY from the container's CPU and
# memory limits; two workers when it is unset.
workers = _whole_number(os.environ, "WEB_CONCURRENCY", 2, 1, 64)
worker_class = "gthread"
threads = _whole_number(os.environ, "GUNICORN_THREADS", 4, 1, 64)

# One access line a request, on stdout, with the user and request id the
# app puts in the WSGI environ. Never the query string or a header.
accesslog = "-"
access_log_format = (
    "method=%(m)s path=%({orders.path}e)s status=%(s)s duration_ms=%(M)s "
    "user=%({orders.user}e)s request_id=%({orders.request_id}e)s"
)
errorlog = "-"

# SIGTERM lets requests in flight finish for up to this long; the pod's
# terminationGracePeriodSeconds (30 s by default) must be longer.
graceful_timeout = 20
timeout = 30
keepalive = 5

# gunicorn 25.1 and later open a control socket by default, under
# $XDG_RUNTIME_DIR or else $HOME/.gunicorn. In the builder's image $HOME
# is the source folder: never write there, and nothing uses the socket.
control_socket_disable = True

# Heartbeat files in memory, never in the (read-only) source folder.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _hide_refused_request_text(record):
    # gunicorn logs a request it refuses (a malformed header line, say)
    # with the offending text, which may hold a token: keep only why.
    message = record.getMessage()
    if message.startswith("Invalid request from"):
        record.msg = message.split(": ", 1)[0] + ": refused, request text not logged"
        record.args = ()
    return True


def post_worker_init(worker):
    """Keep refused requests' text, tokens included, out of the log."""
    worker.log.error_log.addFilter(_hide_refused_request_text)


def on_starting(server):
    """Check the settings and apply the schema once, before forking."""
    try:
        orders.prepare_database(os.environ)
    except orders.ConfigError as error:
        sys.exit(f"ERROR: {error.message}")
    except orders.db.DatabaseUnavailable as error:
        sys.exit(f"ERROR: database unreachable, schema not applied: {error}")
