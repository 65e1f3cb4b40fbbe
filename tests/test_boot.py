"""Every database x broker pair boots from its own start scripts, natively.

The generated project is installed into a virtualenv (as someone running it without Docker
would) and the very scripts its production containers run (compose/production/flask/...) are
started as host processes against the machine's PostgreSQL, MariaDB, Redis and RabbitMQ, each
variant with a fresh database and a fresh Redis database number or RabbitMQ vhost: migrations,
the web app under gunicorn in production mode, a worker, beat and Flower. Then it is driven over
HTTP like a user would, and every process must stop on SIGTERM within its grace period. Select
these with ``-m boot``; tests/test_compose.py runs the same stacks in containers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from projects import (
    PrivateRedis,
    Project,
    Service,
    basic_auth,
    free_port,
    fresh_database,
    fresh_rabbitmq_vhost,
    fresh_redis_db,
    group_members,
    http_status,
    install,
    json_request,
    listening,
    stop_within,
)
from variants import COVERING, STACKS, variant_id

pytestmark = pytest.mark.boot

SCRIPTS = "compose/production/flask"
# Seconds each service may take to stop after SIGTERM. The services are idle here; a busy
# worker finishes its running tasks first, which compose's stop_grace_period allows for.
GRACE = {"web": 30, "worker": 60, "beat": 15, "flower": 15}


@dataclass
class Stack:
    project: Project
    env: dict[str, str]
    logs: Path
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def flower(self) -> str:
        return f"http://127.0.0.1:{self.env['FLOWER_PORT']}"

    @property
    def flower_auth(self) -> tuple[str, str]:
        user, password = self.env["FLOWER_BASIC_AUTH"].split(":", 1)
        return user, password

    def start(self, name: str, script: str) -> Service:
        log = self.logs / f"{name}.log"
        process = self.project.spawn(self.project.path / script, env=self.env, log=log)
        self.services[name] = Service(name, process, log)
        return self.services[name]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.text()[-3000:]}" for s in self.services.values())

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for service in self.services.values():
                code = service.process.poll()
                assert code is None, f"{service.name} exited ({code})\n{self.diagnostics()}"
            assert time.monotonic() < deadline, f"timed out: {what}\n{self.diagnostics()}"
            time.sleep(0.25)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return json_request(self.web, method, path, body, timeout=10)

    def stop_all(self) -> None:
        """Kill every process of every service by its process group, and make sure it is gone."""
        for service in self.services.values():
            with suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=10)
        for service in self.services.values():
            assert not group_alive(service.process.pid, timeout=10), f"{service.name} left running"


def production_env(project: Project, **variables: str) -> dict[str, str]:
    """The environment of ``project``'s production start scripts here: the machine's, production
    settings, a free port on 127.0.0.1, two web and two worker processes, then ``variables``."""
    return {
        **os.environ,
        "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
        "FLASK_CONFIG": "production",
        "FLASK_DEBUG": "0",
        # A service that ignores SIGTERM is sent SIGABRT: its threads' stacks go to its log.
        "PYTHONFAULTHANDLER": "1",
        "SECRET_KEY": project.env_file()["SECRET_KEY"],
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
        "CELERY_WORKER_CONCURRENCY": "2",
        **variables,
    }


def start_web_and_worker(stack: Stack) -> None:
    """Start the web server's and the worker's scripts; wait until both serve."""
    stack.start("web", f"{SCRIPTS}/start")
    stack.start("worker", f"{SCRIPTS}/celery/worker/start")
    stack.wait_for("the web app", lambda: listening(int(stack.env["PORT"])))
    stack.wait_for("the worker", lambda: " ready." in stack.services["worker"].text())


def group_alive(pgid: int, timeout: float) -> bool:
    """Whether any process of group ``pgid`` is still alive (zombies aside) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(answers, marks=pytest.mark.xdist_group(f"boot-{variant_id(answers)}"))
        for answers in STACKS
    ],
    ids=variant_id,
)
def stack(
    request: pytest.FixtureRequest, template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    answers = request.param
    tmp = tmp_path_factory.mktemp("boot")
    project = install(template_dir, answers, tmp / "project")
    redis_db = 8 + STACKS.index(answers)  # one Redis database number per variant
    with ExitStack() as resources:
        database_url = resources.enter_context(fresh_database(project, tmp))
        if answers["broker"] == "redis":
            broker_url = resources.enter_context(fresh_redis_db(project, redis_db))
        else:
            broker_url = resources.enter_context(fresh_rabbitmq_vhost())
        if answers["result_backend"] == "database":
            result_backend = f"db+{database_url}"
        elif answers["broker"] == "redis":
            result_backend = broker_url
        else:
            result_backend = resources.enter_context(fresh_redis_db(project, redis_db))
        generated = project.env_file()
        env = production_env(
            project,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=broker_url,
            CELERY_RESULT_BACKEND=result_backend,
            CELERY_BEAT_SCHEDULE=str(tmp / "beat" / "schedule"),
            USER_COUNT_INTERVAL="1",
            FLOWER_HOST="127.0.0.1",
            FLOWER_PORT=str(free_port()),
            FLOWER_BASIC_AUTH=generated["FLOWER_BASIC_AUTH"],
        )
        (tmp / "logs").mkdir()
        stack = Stack(project, env, tmp / "logs")
        resources.callback(stack.stop_all)

        # The compose `migrate` service's command, then every long-running service's script.
        migrate = project.run(project.bin / "flask", "--app", "app.py", "db", "upgrade", env=env)
        assert migrate.returncode == 0, migrate.stderr
        start_web_and_worker(stack)
        stack.start("beat", f"{SCRIPTS}/celery/beat/start")
        stack.start("flower", f"{SCRIPTS}/celery/flower/start")
        stack.wait_for("Flower", lambda: listening(int(env["FLOWER_PORT"])), timeout=90)
        yield stack


def test_ready_when_database_and_broker_answer(stack: Stack) -> None:
    assert stack.request("GET", "/health") == (200, {"status": "ok"})
    assert stack.request("GET", "/ready") == (
        200,
        {"status": "ready", "checks": {"database": "ok", "broker": "ok"}},
    )


def test_user_is_stored_in_the_real_database(stack: Stack) -> None:
    status, user = stack.request("POST", "/users", {"username": "ada", "email": "ada@example.com"})
    assert status == 201, user
    assert stack.request("GET", f"/users/{user['id']}") == (200, user)
    assert stack.request("POST", "/users", {"username": "ada", "email": "x@example.com"})[0] == 409


def test_a_request_id_is_on_the_lines_of_both_processes(stack: Stack) -> None:
    """The id a client sends comes back, and is on the web server's access line and on the
    worker's lines of the task the request queued."""
    request_id = f"boot-{uuid.uuid4().hex}"
    name = f"rid{request_id[-8:]}"
    request = urllib.request.Request(
        f"{stack.web}/users",
        data=json.dumps({"username": name, "email": f"{name}@example.com"}).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Request-ID"] == request_id
        user_id = json.load(response)["id"]
    web, worker = stack.services["web"], stack.services["worker"]
    stack.wait_for("the id on the access line", lambda: f"request={request_id}" in web.text())
    welcomed = re.compile(rf"welcome_user\[[^]]+\] request={request_id}: Welcomed user {user_id}\b")
    stack.wait_for("the id on the worker's line", lambda: bool(welcomed.search(worker.text())))


def poll_task(stack: Stack, task_id: str, timeout: float = 30) -> dict[str, Any]:
    last: list[dict[str, Any]] = []

    def finished() -> bool:
        last[:] = [stack.request("GET", f"/tasks/{task_id}")[1]]
        return last[0]["state"] in {"SUCCESS", "FAILURE"}

    stack.wait_for(f"task {task_id}", finished, timeout=timeout)
    return last[0]


def test_divide_runs_on_the_worker(stack: Stack) -> None:
    status, body = stack.request("POST", "/tasks/divide", {"x": 1, "y": 2})
    assert status == 202, body
    task_id = body["task_id"]
    assert poll_task(stack, task_id) == {"task_id": task_id, "state": "SUCCESS", "result": 0.5}


def test_division_by_zero_ends_as_failure(stack: Stack) -> None:
    task_id = stack.request("POST", "/tasks/divide", {"x": 1, "y": 0})[1]["task_id"]
    assert poll_task(stack, task_id) == {
        "task_id": task_id,
        "state": "FAILURE",
        "error": "ZeroDivisionError",
    }


def test_beat_runs_the_periodic_task_on_the_worker(stack: Stack) -> None:
    task = f"{stack.project.package}.users.tasks.report_user_count"
    worker = stack.services["worker"]
    stack.wait_for(
        "beat's periodic task on the worker",
        lambda: any(task in line and "succeeded" in line for line in worker.text().splitlines()),
        timeout=30,
    )
    assert f"Sending due task report-user-count ({task})" in stack.services["beat"].text()


def test_flower_requires_basic_auth_and_lists_the_worker(stack: Stack) -> None:
    assert http_status(stack.flower + "/") == 401
    assert http_status(stack.flower + "/api/workers") == 401
    assert http_status(stack.flower + "/", (stack.flower_auth[0], "wrong")) == 401
    assert http_status(stack.flower + "/", stack.flower_auth) == 200
    workers: dict[str, Any] = {}

    def listed() -> bool:
        request = urllib.request.Request(stack.flower + "/api/workers?refresh=1")
        request.add_header("Authorization", basic_auth(*stack.flower_auth))
        with urllib.request.urlopen(request, timeout=15) as response:
            workers.update(json.loads(response.read()))
        return any(name.startswith("celery@") for name in workers)

    stack.wait_for("Flower to list the worker", listed, timeout=30)


@pytest.mark.parametrize("name", ["web", "worker", "beat", "flower"])
def test_script_execs_its_server(stack: Stack, name: str) -> None:
    """The script's process became the server (exec): signals reach it, no shell in between."""
    pid = stack.services[name].process.pid
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    program = b" ".join(command[:3]).decode()
    assert "bash" not in program, program
    assert ("gunicorn" if name == "web" else "celery") in program


def test_sigterm_stops_every_service_cleanly(stack: Stack) -> None:
    """SIGTERM to each start script's process stops it, and all its children, within its grace."""
    for name in ("flower", "beat", "web", "worker"):
        service = stack.services[name]
        code = stop_within(service.process, service.log, name, GRACE[name])
        assert code == 0, f"{name} exited with {code}\n{service.text()[-3000:]}"
        assert not group_alive(service.process.pid, timeout=10), f"{name} left children behind"


def test_honcho_runs_the_whole_project_with_one_command(template_dir: Path, tmp_path: Path) -> None:
    """The README's native run: `honcho start` (Procfile) brings up the web app, a worker, beat
    and Flower; a task runs end to end; Ctrl+C stops every process it started."""
    answers = COVERING[0]
    assert (answers["use_celery_beat"], answers["use_flower"]) == (True, True)
    project = install(template_dir, answers, tmp_path / "project")
    with ExitStack() as resources:
        redis = resources.enter_context(PrivateRedis(tmp_path))
        env = {
            **os.environ,
            "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
            "DATABASE_URL": resources.enter_context(fresh_database(project, tmp_path)),
            "CELERY_BROKER_URL": redis.url,
            "CELERY_RESULT_BACKEND": redis.url,
            "FLASK_RUN_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "CELERY_BEAT_SCHEDULE": str(tmp_path / "beat-schedule"),
            "USER_COUNT_INTERVAL": "1",
        }
        migrate = project.run(project.bin / "flask", "--app", "app.py", "db", "upgrade", env=env)
        assert migrate.returncode == 0, migrate.stderr
        log = tmp_path / "honcho.log"
        honcho = project.spawn(project.bin / "honcho", "start", env=env, log=log)

        def started() -> list[int]:
            """honcho's processes, each the leader of a process group of its own."""
            return [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", log.read_text())]

        def kill_everything() -> None:
            for pgid in [honcho.pid, *started()]:
                with suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            honcho.wait(timeout=10)

        resources.callback(kill_everything)
        web = f"http://127.0.0.1:{env['FLASK_RUN_PORT']}"

        def wait(what: str, check: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 90
            while not check():
                assert honcho.poll() is None, f"honcho exited\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"timed out: {what}\n{log.read_text()[-4000:]}"
                time.sleep(0.25)

        wait("the web app", lambda: listening(int(env["FLASK_RUN_PORT"])))
        wait("the worker", lambda: " ready." in log.read_text())
        wait("Flower", lambda: listening(int(env["FLOWER_PORT"])))
        wait("beat", lambda: "Sending due task report-user-count" in log.read_text())
        status, body = json_request(web, "POST", "/tasks/divide", {"x": 1, "y": 2}, timeout=10)
        assert status == 202, body
        state: list[Any] = []

        def finished() -> bool:
            state[:] = [json_request(web, "GET", f"/tasks/{body['task_id']}", timeout=10)[1]]
            return state[0]["state"] == "SUCCESS"

        wait("the task", finished)
        assert state[0]["result"] == 0.5

        processes = started()
        assert len(processes) == 4, log.read_text()[-4000:]  # web, worker, beat, flower
        honcho.send_signal(signal.SIGINT)  # Ctrl+C
        honcho.wait(timeout=60)
        alive = [pid for pid in processes if group_alive(pid, timeout=30)]
        assert not alive, log.read_text()[-4000:]
