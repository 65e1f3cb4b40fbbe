"""use_opentelemetry, booted: one trace from the web server's request into the worker.

A project with use_opentelemetry is installed and started from its own start scripts (as
tests/test_boot.py does: gunicorn with its preloaded app and two forked workers, a Celery worker
with two prefork pool processes) on MariaDB and RabbitMQ (its stack of tests/variants.py's
COVERING), with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a stand-in for an OTLP/HTTP collector run
by the test: an HTTP server that decodes the spans posted to /v1/traces (opentelemetry-proto).
A request that queues a task gives spans of ``<slug>-web`` and ``<slug>-worker`` in one trace:
the request, the publish, the task's run, and the queries of both. With the endpoint a port that
accepts connections and never answers, requests still answer at once while the exporters wait,
tasks still run, and both processes still stop promptly on SIGTERM.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from projects import (
    PrivateRedis,
    Project,
    fresh_database,
    fresh_rabbitmq_vhost,
    install,
    stop_within,
)
from test_boot import GRACE, Stack, poll_task, production_env, start_web_and_worker
from variants import stack_answers, variant_id

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("boot-telemetry")]

ANSWERS = {**stack_answers("mysql", "rabbitmq"), "use_opentelemetry": True}
SLUG = "flask-celery-app"  # the default project_slug
# Seconds the exporter waits for the collector: a request must never wait for it.
EXPORT_TIMEOUT = 5


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    attributes: dict[str, Any]


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP collector, standing in: keeps the spans posted to /v1/traces."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.received: list[Span] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[Span]:
        with self.lock:
            return list(self.received)

    def keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                spans += [
                    Span(
                        service=resource.get("service.name", ""),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=SpanMessage.SpanKind.Name(span.kind),
                        attributes=attributes(span.attributes),
                    )
                    for span in scope_spans.spans
                ]
        with self.lock:
            self.received += spans


class CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        self.server.keep(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def attributes(key_values: Any) -> dict[str, Any]:
    """OTLP's key-value list as a dict of plain values (strings, numbers, booleans)."""
    found = {}
    for pair in key_values:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


class BlackHole:
    """A port that accepts connections and never answers: a collector that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(connection)  # kept open, never read from or answered

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module", params=[ANSWERS], ids=variant_id)  # the pair in the test ids
def project(
    request: pytest.FixtureRequest, template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Project:
    return install(template_dir, request.param, tmp_path_factory.mktemp("otel") / "project")


def start_stack(project: Project, resources: ExitStack, tmp: Path, endpoint: str) -> Stack:
    """The production web server and a worker of ``project``, exporting to ``endpoint``, on a
    migrated database, a RabbitMQ vhost and a Redis (results) of their own."""
    database_url = resources.enter_context(fresh_database(project, tmp))
    redis = resources.enter_context(PrivateRedis(tmp))
    env = production_env(
        project,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=resources.enter_context(fresh_rabbitmq_vhost()),
        CELERY_RESULT_BACKEND=redis.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT),
        OTEL_BSP_SCHEDULE_DELAY="100",  # milliseconds between two exports
    )
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED"):
        env.pop(name, None)
    (tmp / "logs").mkdir()
    stack = Stack(project, env, tmp / "logs")
    resources.callback(stack.stop_all)
    migrate = project.run(project.bin / "flask", "--app", "app.py", "db", "upgrade", env=env)
    assert migrate.returncode == 0, migrate.stderr
    start_web_and_worker(stack)
    return stack


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stack(
    project: Project, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with ExitStack() as resources:
        yield start_stack(project, resources, tmp_path_factory.mktemp("traced"), collector.endpoint)


def send(stack: Stack, path: str, body: Any, request_id: str) -> tuple[int, Any]:
    """POST ``body`` to ``path`` with X-Request-ID: (status, JSON)."""
    request = urllib.request.Request(
        stack.web + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.load(response)


def trace_of(
    stack: Stack, collector: Collector, request_id: str, task: str, timeout: float = 30
) -> list[Span]:
    """The spans of the trace of the request ``request_id``, once the worker's span of its run of
    ``task`` has arrived."""
    found: list[Span] = []

    def arrived() -> bool:
        spans = collector.spans()
        roots = [
            s
            for s in spans
            if s.kind == "SPAN_KIND_SERVER" and s.attributes.get("request.id") == request_id
        ]
        if not roots:
            return False
        found[:] = [s for s in spans if s.trace_id == roots[0].trace_id]
        return any(s.kind == "SPAN_KIND_CONSUMER" and task in s.name for s in found)

    stack.wait_for(f"the spans of {request_id}", arrived, timeout=timeout)
    return found


def only(spans: list[Span], kind: str, name_part: str) -> Span:
    matches = [s for s in spans if s.kind == f"SPAN_KIND_{kind}" and name_part in s.name]
    assert len(matches) == 1, spans
    return matches[0]


def test_one_trace_from_the_request_to_the_task(stack: Stack, collector: Collector) -> None:
    request_id = f"otel-{uuid.uuid4().hex}"
    status, body = send(stack, "/tasks/divide", {"x": 1, "y": 2}, request_id)
    assert status == 202, body
    assert poll_task(stack, body["task_id"])["state"] == "SUCCESS"

    spans = trace_of(stack, collector, request_id, "divide")
    request = only(spans, "SERVER", "/tasks/divide")
    publish = only(spans, "PRODUCER", "divide")
    run = only(spans, "CONSUMER", "divide")
    assert (request.service, publish.service, run.service) == (
        f"{SLUG}-web",
        f"{SLUG}-web",
        f"{SLUG}-worker",
    )
    assert publish.parent_id == request.span_id
    assert run.parent_id == publish.span_id
    assert {s.attributes.get("request.id") for s in (request, publish, run)} == {request_id}


def test_the_queries_of_the_view_and_the_task_are_in_the_trace(
    stack: Stack, collector: Collector
) -> None:
    """POST /users inserts the user (web), then welcome_user queries and inserts (worker)."""
    request_id = f"otel-{uuid.uuid4().hex}"
    name = f"otel{request_id[-8:]}"
    status, user = send(
        stack, "/users", {"username": name, "email": f"{name}@example.com"}, request_id
    )
    assert status == 201, user

    spans = trace_of(stack, collector, request_id, "welcome_user")
    request = only(spans, "SERVER", "/users")
    run = only(spans, "CONSUMER", "welcome_user")
    queries = [
        s
        for s in spans
        if s.kind == "SPAN_KIND_CLIENT" and any(key.startswith("db.") for key in s.attributes)
    ]
    web = [s for s in queries if s.parent_id == request.span_id]
    worker = [s for s in queries if s.parent_id == run.span_id]
    assert web, spans
    assert worker, spans
    assert {s.service for s in web} == {f"{SLUG}-web"}
    assert {s.service for s in worker} == {f"{SLUG}-worker"}


def test_health_checks_are_not_traced(stack: Stack, collector: Collector) -> None:
    """Neither the probes' requests nor their queries (a query, a Redis command no request or
    task started is dropped: it would be a trace of its own every few seconds)."""
    request_id = f"otel-{uuid.uuid4().hex}"
    for path in ("/health", "/ready"):
        probe = urllib.request.Request(stack.web + path, headers={"X-Request-ID": request_id})
        with urllib.request.urlopen(probe, timeout=10) as response:
            assert response.status == 200
    # A later request's spans arriving means the probes' would have too.
    test_one_trace_from_the_request_to_the_task(stack, collector)
    spans = collector.spans()
    assert not [s for s in spans if s.attributes.get("request.id") == request_id]
    assert not [s for s in spans if s.kind == "SPAN_KIND_CLIENT" and not s.parent_id]


def test_a_collector_that_never_answers_delays_no_request(project: Project, tmp_path: Path) -> None:
    """The spans are exported by a background thread: with every export waiting for a collector
    that never answers (EXPORT_TIMEOUT seconds each), requests answer at once and tasks run; the
    processes still stop within their grace period."""
    with ExitStack() as resources:
        hole = BlackHole()
        resources.callback(hole.close)
        stack = start_stack(project, resources, tmp_path, hole.endpoint)
        latencies = []
        deadline = time.monotonic() + 60
        # Requests until the exporters of the web server and of the worker are both stuck on
        # the black hole (at least two connections), and then some more.
        while len(latencies) < 10 or len(hole.accepted) < 2:
            assert time.monotonic() < deadline, f"no export reached the black hole: {latencies}"
            started = time.monotonic()
            status, body = send(stack, "/tasks/divide", {"x": 1, "y": 2}, uuid.uuid4().hex)
            latencies.append(time.monotonic() - started)
            assert status == 202, body
            assert poll_task(stack, body["task_id"])["state"] == "SUCCESS"
        assert max(latencies) < EXPORT_TIMEOUT / 5, latencies
        for name in ("web", "worker"):
            service = stack.services[name]
            code = stop_within(service.process, service.log, name, GRACE[name])
            assert code == 0, f"{name} exited with {code}\n{service.text()[-3000:]}"
