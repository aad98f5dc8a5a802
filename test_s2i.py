"""The service started the way the S2I Python builder starts it.

What `assemble` does: a fresh virtual environment with requirements.txt
alone, the source copied into the home folder. What `run` does: the
variables of .s2i/environment, the source folder as working directory
and PYTHONPATH, WEB_CONCURRENCY exported, then
`gunicorn "$APP_MODULE" --config "$APP_CONFIG"`. As on OpenShift, the
server runs under an arbitrary user id in group 0 (when the suite runs
as root) with a group-writable home, and the home is then checked for
anything written at run time.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import localdb
from conftest import TEST_SECRET

ROOT = Path(__file__).parent

# A user id like those OpenShift's restricted policy hands out, in group 0.
ARBITRARY_UID = 1000770000
START_TIMEOUT_S = 60
PRODUCT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

pytestmark = pytest.mark.process


def s2i_environment():
    environ = {}
    for line in (ROOT / ".s2i" / "environment").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            environ[name] = value
    return environ


def _others_can_reach(path):
    return all(
        parent.stat().st_mode & 0o005 == 0o005
        for parent in [*Path(path).resolve().parents][:-1]
    )


def python_for_image():
    """A Python 3.11+ that an arbitrary user id may run, and whether the
    server can run under one: only as root, with such a Python."""
    if os.geteuid() != 0:
        return sys.executable, False
    candidates = (sys.executable, shutil.which("python3") or "", "/usr/bin/python3")
    for candidate in candidates:
        if not candidate or not _others_can_reach(candidate):
            continue
        version = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True, text=True,
        ).stdout.strip()
        base = subprocess.run(
            [candidate, "-c", "import sys; print(sys.base_prefix)"],
            capture_output=True, text=True,
        ).stdout.strip()
        if version == "True" and _others_can_reach(Path(base) / "lib"):
            return candidate, True
    return sys.executable, False


def snapshot(folder):
    """Every path under `folder` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [folder, *folder.rglob("*")]
    }


@pytest.fixture(scope="module")
def image():
    """A folder laid out as `assemble` leaves the image: a venv with
    requirements.txt installed, and the repository's files in src/."""
    with tempfile.TemporaryDirectory(prefix="orders-s2i-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        venv = root / "venv"
        python, as_other_user = python_for_image()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet",
             "--disable-pip-version-check", "-r", str(ROOT / "requirements.txt")],
            check=True,
        )

        source = root / "src"
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".local", ".ci", "__pycache__", ".pytest_cache",
                "*.pyc",
            ),
        )
        # As `fix-permissions` leaves it: group 0, group-writable.
        for path in [source, *source.rglob("*")]:
            if as_other_user:
                os.chown(path, 1001, 0)
            path.chmod(0o775 if path.is_dir() else 0o664)
        yield venv, source, snapshot(source), as_other_user


@pytest.fixture
def served(image, database_url, tmp_path):
    """gunicorn started as the builder's `run` starts it; its base URL."""
    venv, source, pristine, as_other_user = image
    port = localdb.free_port()
    environ = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(source),
        "PYTHONPATH": str(source),
        "PYTHONUNBUFFERED": "1",
        "WEB_CONCURRENCY": "2",
        "PORT": str(port),
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": database_url,
        **s2i_environment(),
    }
    command = [
        str(venv / "bin" / "gunicorn"),
        environ["APP_MODULE"],
        "--config",
        environ["APP_CONFIG"],
    ]
    as_openshift = {}
    if as_other_user:
        as_openshift = {"user": ARBITRARY_UID, "group": 0, "extra_groups": []}

    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command, cwd=source, env=environ, stdout=log, stderr=subprocess.STDOUT,
            **as_openshift,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(server, base_url, log_path)
        yield base_url, environ, source, pristine, log_path
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def wait_until_listening(server, base_url, log_path):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited {server.returncode}:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(base_url + "/healthz", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer:\n{log_path.read_text()}")


def call(base_url, path, body=None, token=None):
    """Send one request; return (status, headers, parsed JSON body)."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(base_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


def mint_token(environ, user_uuid):
    """A token from the image's own CLI, as an operator would make one."""
    flask = environ["PATH"].split(":")[0] + "/flask"
    result = subprocess.run(
        [flask, "--app", "orders", "token", user_uuid],
        cwd=environ["PYTHONPATH"], env=environ, capture_output=True, text=True,
        check=True,
    )
    return result.stdout.strip()


def test_builder_started_server_answers_health_and_readiness(served):
    base_url, *_ = served

    assert call(base_url, "/healthz")[:3:2] == (200, {"success": True,
                                                     "data": {"status": "alive"}})
    assert call(base_url, "/readyz")[:3:2] == (200, {"success": True,
                                                    "data": {"status": "ready"}})


def test_builder_started_server_places_and_reads_an_order(served):
    base_url, environ, *_ = served
    user_uuid = str(uuid.uuid4())
    token = mint_token(environ, user_uuid)

    order = {"products": [{"uuid": PRODUCT, "quantity": 2}]}

    status, headers, body = call(base_url, "/api/v1/orders", order, token)

    assert status == 201
    assert body["data"]["products"] == [{"uuid": PRODUCT, "quantity": 2}]
    status, _, read = call(base_url, headers["Location"], token=token)
    assert (status, read) == (200, body)


def test_builder_started_server_runs_the_asked_workers_and_logs_access(served):
    base_url, _, _, _, log_path = served

    call(base_url, "/healthz")

    # Workers boot one after another: wait for the second, however long.
    deadline = time.monotonic() + START_TIMEOUT_S
    while log_path.read_text().count("Booting worker") < 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    log = log_path.read_text()
    assert log.count("Booting worker with pid") == 2
    assert "method=GET path=/healthz status=200" in log
    assert "control socket" not in log.lower()


def test_builder_started_server_writes_nothing_to_home_or_source(served):
    base_url, _, source, pristine, _ = served

    call(base_url, "/readyz")

    assert snapshot(source) == pristine
