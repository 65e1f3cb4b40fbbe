"""use_sentry, booted: the production web server and worker report errors to Sentry.

A project with use_sentry is installed and started from its own start scripts (as
tests/test_boot.py does), with SENTRY_DSN pointing at a stand-in for Sentry's ingest endpoint
run by the test: an HTTP server that keeps the events sentry-sdk posts to it. Its database is
left unmigrated, as after a deploy that forgot ``flask db upgrade``: a view that queries it fails
with an error no handler takes (a 500), which the web process reports; a task that divides by
zero fails in a pool process of the worker, which reports it. Each event carries the id of the
request (the X-Request-ID the client sent) and no personal data. With SENTRY_DSN pointing at a
port that accepts connections and never answers, failing requests still answer at once, tasks
still run, and both processes still stop promptly on SIGTERM.
"""

from __future__ import annotations

import gzip
import importlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from projects import (
    PrivateRedis,
    Project,
    fresh_database,
    install,
    stop_within,
)
from test_boot import Stack, poll_task, production_env, start_web_and_worker
from variants import stack_answers, variant_id

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("boot-sentry")]

ANSWERS = {**stack_answers("postgresql", "redis"), "use_sentry": True}
RELEASE = "flask-celery-app@boot"  # the default project_slug
# What a client sends that must never reach Sentry.
COOKIE, TOKEN = "cookie-secret-4f1c", "token-secret-9b2e"


class Ingest(ThreadingHTTPServer):
    """Sentry's ingest endpoint, standing in: keeps the envelopes posted to it, decompressed."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), IngestHandler)
        self.envelopes: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def raw(self) -> str:
        with self.lock:
            return b"".join(self.envelopes).decode(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            envelopes = list(self.envelopes)
        return [
            json.loads(payload)
            for envelope in envelopes
            for kind, payload in envelope_items(envelope)
            if kind == "event"
        ]

    def event_of(self, request_id: str) -> dict[str, Any] | None:
        tagged = [e for e in self.events() if e.get("tags", {}).get("request_id") == request_id]
        return tagged[0] if tagged else None


class IngestHandler(BaseHTTPRequestHandler):
    server: Ingest

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":  # sentry-sdk uses brotli when the project has it installed
            body = importlib.import_module("brotli").decompress(body)
        with self.server.lock:
            self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def envelope_items(envelope: bytes) -> Iterator[tuple[str, bytes]]:
    """The type and payload of each item of a Sentry envelope (a header line, then items)."""
    rest = envelope.partition(b"\n")[2]
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        yield header["type"], payload


def send(stack: Stack, method: str, path: str, request_id: str, body: Any = None) -> Any:
    """``method path`` with X-Request-ID and credentials a browser would send: (status, JSON)."""
    request = urllib.request.Request(
        stack.web + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
            "Cookie": f"session={COOKIE}",
            "Authorization": f"Bearer {TOKEN}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["X-Request-ID"] == request_id
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module", params=[ANSWERS], ids=variant_id)  # the pair in the test ids
def project(
    request: pytest.FixtureRequest, template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Project:
    return install(template_dir, request.param, tmp_path_factory.mktemp("sentry") / "project")


def start_stack(project: Project, resources: ExitStack, tmp: Path, sentry_dsn: str) -> Stack:
    """The production web server and a worker of ``project``, reporting to ``sentry_dsn``, on an
    unmigrated database and a Redis of their own."""
    database_url = resources.enter_context(fresh_database(project, tmp))
    redis = resources.enter_context(PrivateRedis(tmp))
    env = production_env(
        project,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=redis.url,
        CELERY_RESULT_BACKEND=redis.url,
        SENTRY_DSN=sentry_dsn,
        SENTRY_ENVIRONMENT="boot",
        SENTRY_RELEASE=RELEASE,
    )
    (tmp / "logs").mkdir()
    stack = Stack(project, env, tmp / "logs")
    resources.callback(stack.stop_all)
    start_web_and_worker(stack)
    return stack


@pytest.fixture(scope="module")
def ingest() -> Iterator[Ingest]:
    with Ingest() as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stack(
    project: Project, ingest: Ingest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with ExitStack() as resources:
        yield start_stack(project, resources, tmp_path_factory.mktemp("reporting"), ingest.dsn)


def wait_for_event(stack: Stack, ingest: Ingest, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [event] if (event := ingest.event_of(request_id)) else []
        return bool(found)

    stack.wait_for(f"Sentry's event of request {request_id}", arrived, timeout=30)
    return found[0]


def assert_no_personal_data(event: dict[str, Any], ingest: Ingest) -> None:
    raw = ingest.raw()
    assert COOKIE not in raw
    assert TOKEN not in raw
    assert "user" not in event
    frames = [
        frame
        for value in event["exception"]["values"]
        for frame in (value.get("stacktrace") or {}).get("frames", [])
    ]
    assert frames
    assert all("vars" not in frame for frame in frames)


def test_a_failing_view_is_reported_by_the_web_process(stack: Stack, ingest: Ingest) -> None:
    request_id = f"view-{uuid.uuid4().hex}"
    status, body = send(stack, "GET", "/users/1", request_id)
    assert (status, body["error"]) == (500, "Internal Server Error")  # no table: not migrated
    event = wait_for_event(stack, ingest, request_id)
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ProgrammingError"
    assert exception["mechanism"]["type"] == "flask"
    assert "gunicorn" in " ".join(event["extra"]["sys.argv"])
    assert (event["environment"], event["release"]) == ("boot", RELEASE)
    assert event["request"]["headers"]["Authorization"] == "[Filtered]"
    assert event["request"]["headers"]["Cookie"] == "[Filtered]"
    assert "cookies" not in event["request"]
    assert "REMOTE_ADDR" not in event["request"].get("env", {})
    assert_no_personal_data(event, ingest)


def test_a_failing_task_is_reported_by_the_worker(stack: Stack, ingest: Ingest) -> None:
    request_id = f"task-{uuid.uuid4().hex}"
    status, body = send(stack, "POST", "/tasks/divide", request_id, {"x": 1, "y": 0})
    assert status == 202, body
    event = wait_for_event(stack, ingest, request_id)
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ZeroDivisionError"
    assert exception["mechanism"]["type"] == "celery"
    assert "worker" in event["extra"]["sys.argv"]
    assert event["extra"]["celery-job"]["args"] == "[Filtered]"
    assert_no_personal_data(event, ingest)


@pytest.fixture(scope="module")
def unanswered_stack(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, reporting to a port that accepts connections and never answers."""
    with socket.socket() as listener, ExitStack() as resources:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)  # the kernel completes the handshakes; nobody reads or answers
        dsn = f"http://public@127.0.0.1:{listener.getsockname()[1]}/1"
        yield start_stack(project, resources, tmp_path_factory.mktemp("unanswered"), dsn)


def test_an_unanswering_sentry_delays_no_failing_request(unanswered_stack: Stack) -> None:
    latencies = []
    for attempt in range(10):
        started = time.monotonic()
        status, _ = send(unanswered_stack, "GET", f"/users/{attempt + 1}", f"slow-{attempt}")
        latencies.append(time.monotonic() - started)
        assert status == 500
    assert max(latencies) < 1.5, latencies


def test_an_unanswering_sentry_delays_no_task(unanswered_stack: Stack) -> None:
    for y, state in ((0, "FAILURE"), (0, "FAILURE"), (2, "SUCCESS")):
        status, body = send(unanswered_stack, "POST", "/tasks/divide", "task", {"x": 1, "y": y})
        assert status == 202, body
        started = time.monotonic()
        assert poll_task(unanswered_stack, body["task_id"])["state"] == state
        assert time.monotonic() - started < 5


def test_an_unanswering_sentry_delays_no_shutdown(unanswered_stack: Stack) -> None:
    """SIGTERM: sentry-sdk gives up flushing after its shutdown_timeout (2 s) in each process."""
    for name in ("web", "worker"):
        service = unanswered_stack.services[name]
        started = time.monotonic()
        assert stop_within(service.process, service.log, name, 20) == 0, service.text()[-3000:]
        assert time.monotonic() - started < 15
