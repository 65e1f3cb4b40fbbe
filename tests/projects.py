"""Generated projects installed for real, and the fresh resources they run against.

Shared by the covering-variant tests and the native boot tests: generate a variant, install it
into a virtualenv from its own pyproject.toml with its target Python, and give it a fresh
database, Redis database number or RabbitMQ vhost on the machine's services (127.0.0.1).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from conftest import find_python, require_service
from copier import run_copy


@dataclass
class Project:
    path: Path
    answers: dict[str, Any]
    python: Path

    @property
    def bin(self) -> Path:
        return self.python.parent

    @property
    def package(self) -> str:
        return self.answers.get("package_name", "flask_celery_app")

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(arg) for arg in args],
            cwd=self.path,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *args: str | Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running command in the project folder, in its own process group.

        Its output goes to ``log``; ``os.killpg(process.pid, ...)`` reaches all its children.
        """
        with log.open("wb") as output:
            return subprocess.Popen(
                [str(arg) for arg in args],
                cwd=self.path,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def env_file(self) -> dict[str, str]:
        """The generated .env, as a dict."""
        lines = (self.path / ".env").read_text().splitlines()
        pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        return dict(pairs)


def install(template_dir: Path, answers: dict[str, Any], path: Path) -> Project:
    """Generate ``answers`` into ``path`` and install it into ``path/.venv``."""
    interpreter = find_python(answers["python_version"])
    run_copy(str(template_dir), path, data=answers, defaults=True, quiet=True, unsafe=False)
    installed = subprocess.run(
        [sys.executable, "-m", "uv", "sync", "-q", "--locked", "-p", interpreter],
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return Project(path, answers, path / ".venv" / "bin" / "python")


@contextmanager
def fresh_database(project: Project, directory: Path) -> Iterator[str]:
    """A new, empty database of the project's kind; its SQLAlchemy URL. Dropped afterwards."""
    kind = project.answers["database"]
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'fresh.sqlite3'}"
        return
    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    if kind == "postgresql":
        require_service("PostgreSQL", 5432)
        admin = (
            "import psycopg, sys\n"
            "with psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres',"
            " autocommit=True) as c: c.execute(sys.argv[1])"
        )
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    else:
        require_service("MariaDB", 3306)
        admin = (
            "import pymysql, sys\n"
            "c = pymysql.connect(host='127.0.0.1', port=3306, user='root')\n"
            "c.cursor().execute(sys.argv[1])"
        )
        url = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    created = project.run(project.python, "-c", admin, f"CREATE DATABASE {name}")
    assert created.returncode == 0, created.stderr
    try:
        yield url
    finally:
        project.run(project.python, "-c", admin, f"DROP DATABASE IF EXISTS {name}")


@contextmanager
def fresh_redis_db(project: Project, number: int) -> Iterator[str]:
    """Redis database ``number`` of the machine's Redis, emptied before and after."""
    require_service("Redis", 6379)
    flush = (
        "import redis, sys; redis.Redis(host='127.0.0.1', port=6379, db=int(sys.argv[1])).flushdb()"
    )
    assert project.run(project.python, "-c", flush, str(number)).returncode == 0
    try:
        yield f"redis://127.0.0.1:6379/{number}"
    finally:
        project.run(project.python, "-c", flush, str(number))


@contextmanager
def fresh_rabbitmq_vhost() -> Iterator[str]:
    """A new RabbitMQ virtual host for guest; deleted afterwards. Its amqp:// URL."""
    require_service("RabbitMQ", 5672)
    vhost = f"tmpl-{uuid.uuid4().hex[:12]}"

    def rabbitmqctl(*args: str) -> None:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr

    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic_auth(user: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", basic_auth(*auth))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def json_request(
    base_url: str, method: str, path: str, body: Any = None, timeout: float = 30
) -> tuple[int, Any]:
    """``method path`` with ``body`` as JSON: (status, the JSON answer, None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def celery_id(task_id: str) -> str:
    """Celery's id in a task id of the generated API (itsdangerous: base64 JSON, then the
    signature), read without checking the signature."""
    payload = task_id.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def wait_until(what: str, check: Callable[[], bool], timeout: float, diagnostics=str) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds, saying ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{diagnostics()}"
        time.sleep(0.2)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class PrivateServer:
    """A server of the test's own on a free port, started and stopped by its PID; killed when
    the ``with`` block ends. Subclasses say how to ``start`` it and how long it takes to stop."""

    stop_timeout = 10.0

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=self.stop_timeout)
        wait_until(f"port {self.port} to close", lambda: not listening(self.port), 10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class PrivateRedis(PrivateServer):
    """A redis-server of the test's own on a free port, stopped and started by its PID.

    For tests that break the broker: the machine's shared Redis is never touched.
    """

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        require_service("Redis", 6379)  # the Debian package that provides redis-server
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(f"redis-server on port {self.port}", lambda: listening(self.port), 10)


class PrivateRabbitMQ(PrivateServer):
    """A RabbitMQ node of the test's own: its node name, ports and data directory, the Debian
    package's server, no plugin. Stopped by its PID (SIGTERM: a clean shutdown) and started again
    on the same data, as a broker restart would."""

    SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    stop_timeout = 60.0

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(directory),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"tmpl-{uuid.uuid4().hex[:12]}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "data"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),  # absent: the defaults
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RUNNING_UNDER_SYSTEMD": "true",  # the script execs the Erlang VM: its PID is ours
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        if not self.SERVER.exists():
            require_service("RabbitMQ", 5672)  # skips locally, fails in CI: not installed
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [self.SERVER], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(f"RabbitMQ on port {self.port}", lambda: listening(self.port), 120)

    def block_publishers(self) -> None:
        """Raise a memory alarm, as a node short of memory does: RabbitMQ then stops reading from
        every connection that publishes (until the alarm clears)."""
        ctl = [str(self.SERVER.with_name("rabbitmqctl")), "-n", self.env["RABBITMQ_NODENAME"]]
        watermark = [*ctl, "set_vm_memory_high_watermark", "0.000001"]
        subprocess.run(watermark, env=self.env, capture_output=True, check=True, timeout=120)


@dataclass
class Service:
    """A long-running process started by ``Project.spawn``, leading its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def kill_groups(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each process and everything in its process group (see ``Project.spawn``)."""
    for process in processes:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def stop_within(process: subprocess.Popen[bytes], log: Path, name: str, grace: float) -> int:
    """SIGTERM ``process`` and its exit status within ``grace`` seconds. A process that ignores
    it gets SIGABRT (with PYTHONFAULTHANDLER=1 in its environment, every thread's stack goes to
    ``log``) and the test fails with the end of that log."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        process.wait(timeout=10)
        text = log.read_text(errors="replace")[-6000:]
        raise AssertionError(f"{name} ignored SIGTERM for {grace} s\n{text}") from None
