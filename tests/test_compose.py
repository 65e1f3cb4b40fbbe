"""The generated Compose stacks, built and run for real on a Docker engine (``-m compose``).

tests/dockerharness.py gives the engine (a private dockerd when none answers), Compose v2 and the
images: where no registry answers, stand-ins built from Debian's packages under the official
names. Every database x broker pair is brought up from its development compose file with
``docker compose up --build --detach --wait`` and used through its published port 5010, as a
user would. Two pairs (PostgreSQL + Redis, MariaDB + RabbitMQ) go through the rest: Flower,
beat, warm shutdown, a killed worker, a restart of the whole stack, a code change on the bind
mount, and then the production compose file. One class per stack; the stacks run one after the
other on the compose files' fixed ports, so run these tests without xdist: ``-m compose -n 0``.
The last test checks that nothing is left behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from conftest import REPORT
from copier import run_copy
from dockerharness import (
    BRIDGE,
    ENGINE_STATE,
    Engine,
    HarnessError,
    Stack,
    ensure_images,
    netfilter_changes,
    process_alive,
)
from projects import basic_auth, celery_id, http_status, json_request, listening
from template_data import memory_limits
from variants import stack_answers

# One xdist worker runs them all, in order, should they be collected with the parallel tests.
pytestmark = [pytest.mark.compose, pytest.mark.xdist_group("compose")]

WEB = "http://127.0.0.1:5010"
FLOWER = "http://127.0.0.1:5557"
PRODUCTION_WEB = "http://127.0.0.1:8000"
# Ports of the machine's own servers: nothing here may publish on them.
SERVER_PORTS = {5432, 3306, 6379, 5672}

# A test-only task the worker imports through CELERY_WORKER_INCLUDE (Celery reads its command-line
# options from CELERY_<COMMAND>_<OPTION> variables): the shipped commands stay as they are.
SLOW_TASKS = '''\
"""Test-only task for the compose tests: sleeps, logging when it starts."""

import time

from celery import shared_task
from celery.utils.log import get_task_logger

logger = get_task_logger(__name__)


@shared_task(name="compose_tests.slow")
def slow(seconds):
    logger.info("slow task started")
    time.sleep(seconds)
    return seconds
'''


def wait_until(what: str, check: Callable[[], bool], timeout: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            diagnostics = stack.diagnostics()
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics}")
        time.sleep(0.5)


def containers(stack: Stack) -> dict[str, dict[str, Any]]:
    return {container["Service"]: container for container in stack.ps()}


def published(stack: Stack) -> set[tuple[str, int]]:
    return {
        (publisher["URL"], publisher["PublishedPort"])
        for container in stack.ps()
        for publisher in container.get("Publishers") or []
        if publisher.get("PublishedPort")
    }


def assert_all_healthy(stack: Stack) -> None:
    """Every service of the file has its container: migrate completed, the others healthy."""
    found = containers(stack)
    assert set(found) == set(stack.config()["services"])
    for name, container in found.items():
        if name == "migrate":
            assert (container["State"], container["ExitCode"]) == ("exited", 0)
        else:
            assert (container["State"], container["Health"]) == ("running", "healthy"), name


def worker_log_has(stack: Stack, text: str) -> bool:
    return text in stack.logs("celery_worker")


def poll_task(stack: Stack, base_url: str, task_id: str) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []

    def finished() -> bool:
        answers.append(json_request(base_url, "GET", f"/tasks/{task_id}", timeout=10)[1])
        return answers[-1]["state"] in {"SUCCESS", "FAILURE"}

    wait_until(f"task {task_id}", finished, 60, stack)
    return answers[-1]


def wait_healthy(stack: Stack, service: str, timeout: float = 120) -> None:
    wait_until(
        f"{service} to be healthy",
        lambda: containers(stack)[service].get("Health") == "healthy",
        timeout,
        stack,
    )


def enqueue_slow(stack: Stack, seconds: float) -> str:
    """Queue the test-only slow task from the web container, as `celery call` does."""
    called = stack.compose(
        "exec", "-T", "web", "celery", "-A", "app.celery", "call", "compose_tests.slow",
        "--args", f"[{seconds}]",
    )  # fmt: skip
    return called.stdout.strip().splitlines()[-1]


def unexpected_tracebacks(log: str) -> list[str]:
    """Tracebacks in a service's log that end in anything but the ZeroDivisionError that the
    tests provoke: a traceback's lines are indented, up to the exception's own line."""
    found, block = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            block = [line]
        elif block is not None:
            block.append(line)
            if line and not line[0].isspace():
                if not line.startswith("ZeroDivisionError"):
                    found.append("\n".join(block))
                block = None
    return found


class StackTests:
    """The settings of one class's stack; its fixture brings it up for the class's tests."""

    answers: ClassVar[dict[str, Any]]
    compose_file: ClassVar[str] = "docker-compose.yml"
    # Extra lines for the project's .env: the project's own settings, as a user would set them.
    settings: ClassVar[dict[str, str]] = {}


@pytest.fixture(scope="class")
def stack(
    request: pytest.FixtureRequest,
    docker_engine: Engine,
    template_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    cls: type[StackTests] = request.cls
    project = tmp_path_factory.mktemp("compose") / "project"
    run_copy(str(template_dir), project, data=cls.answers, defaults=True, quiet=True, unsafe=False)
    (project / "compose_tests.py").write_text(SLOW_TASKS)
    with (project / ".env").open("a") as env:
        env.write("CELERY_WORKER_INCLUDE=compose_tests\n")
        env.writelines(f"{name}={value}\n" for name, value in cls.settings.items())
    # A repository, as users have one: the production image must not hold it.
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "generated"], cwd=project, check=True)

    stack = Stack(docker_engine, project, file=cls.compose_file)
    for port in (5010, 5557, 8000):
        if listening(port):
            pytest.fail(f"port {port} is taken: stop what holds it (nox -s stack -- --down?)")
    try:
        seconds = stack.up()
        REPORT.append(f"{request.cls.__name__}: up --build --wait took {seconds:.0f} s")
        yield stack
    finally:
        stack.down()


class Development(StackTests):
    """What every pair must do from its development compose file."""

    def test_every_service_is_healthy_and_migrate_completed(self, stack: Stack) -> None:
        assert_all_healthy(stack)

    def test_only_web_and_flower_are_published_on_loopback(self, stack: Stack) -> None:
        ports = published(stack)
        assert ports == {("127.0.0.1", 5010), ("127.0.0.1", 5557)}
        assert not {port for _, port in ports} & SERVER_PORTS

    def test_ready_and_a_user_round_trip(self, stack: Stack) -> None:
        assert json_request(WEB, "GET", "/ready") == (
            200,
            {"status": "ready", "checks": {"database": "ok", "broker": "ok"}},
        )
        status, user = json_request(WEB, "POST", "/users", {"username": "ada", "email": "a@b.io"})
        assert status == 201, user
        assert json_request(WEB, "GET", f"/users/{user['id']}") == (200, user)

    def test_divide_runs_in_the_worker_container(self, stack: Stack) -> None:
        status, body = json_request(WEB, "POST", "/tasks/divide", {"x": 1, "y": 2})
        assert status == 202, body
        task_id = body["task_id"]
        assert poll_task(stack, WEB, task_id) == {
            "task_id": task_id,
            "state": "SUCCESS",
            "result": 0.5,
        }
        # The worker logs the success just after storing the result.
        wait_until(
            "the worker container's log of the task",
            lambda: f"divide[{celery_id(task_id)}] succeeded" in stack.logs("celery_worker"),
            30,
            stack,
        )

        task_id = json_request(WEB, "POST", "/tasks/divide", {"x": 1, "y": 0})[1]["task_id"]
        assert poll_task(stack, WEB, task_id) == {
            "task_id": task_id,
            "state": "FAILURE",
            "error": "ZeroDivisionError",
        }


class Operations(StackTests):
    """Everything else a user does with the development stack."""

    settings: ClassVar[dict[str, str]] = {
        "USER_COUNT_INTERVAL": "2",  # beat's periodic task, every 2 s instead of every minute
        # Redis redelivers a killed worker's task after this; RabbitMQ at once.
        "CELERY_VISIBILITY_TIMEOUT": "30",
    }

    def test_flower_wants_the_credentials_from_env(self, stack: Stack) -> None:
        user, password = stack_env(stack)["FLOWER_BASIC_AUTH"].split(":", 1)
        assert http_status(FLOWER + "/") == 401
        assert http_status(FLOWER + "/", (user, "wrong")) == 401
        assert http_status(FLOWER + "/", (user, password)) == 200
        request = urllib.request.Request(FLOWER + "/api/workers?refresh=1")
        request.add_header("Authorization", basic_auth(user, password))
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

    def test_beat_runs_the_periodic_task_in_the_worker(self, stack: Stack) -> None:
        task = "users.tasks.report_user_count"
        wait_until(
            "beat's periodic task in the worker's log",
            lambda: re.search(rf"{task}\[[\w-]+\] succeeded", stack.logs("celery_worker")),
            60,
            stack,
        )
        assert "Sending due task report-user-count" in stack.logs("celery_beat")

    def test_code_change_on_the_bind_mount_is_served_without_a_rebuild(self, stack: Stack) -> None:
        views = stack.project / "flask_celery_app" / "main.py"
        original = views.read_text()
        route = '\n\n@main_blueprint.get("/changed")\ndef changed() -> str:\n    return "changed"\n'

        def status() -> int | None:
            return answered_status(WEB + "/changed")

        views.write_text(original + route)
        try:
            wait_until("gunicorn to reload the change", lambda: status() == 200, 60, stack)
        finally:
            views.write_text(original)
        wait_until("gunicorn to reload the original", lambda: status() == 404, 60, stack)

    def test_stop_lets_the_running_task_finish(self, stack: Stack) -> None:
        task_id = enqueue_slow(stack, 10)
        wait_until(
            "the slow task to start",
            lambda: worker_log_has(stack, f"slow[{task_id}]: slow task started"),
            60,
            stack,
        )
        stack.compose("stop", "celery_worker", timeout=400)  # SIGTERM: a warm shutdown
        worker = containers(stack)["celery_worker"]
        assert (worker["State"], worker["ExitCode"]) == ("exited", 0)
        assert re.search(rf"slow\[{task_id}\] succeeded in 1\d", stack.logs("celery_worker"))
        stack.compose("start", "celery_worker")
        wait_healthy(stack, "celery_worker")

    def test_a_killed_worker_loses_no_task(self, stack: Stack) -> None:
        task_id = enqueue_slow(stack, 5)
        started = f"slow[{task_id}]: slow task started"
        wait_until("the slow task to start", lambda: worker_log_has(stack, started), 60, stack)
        stack.compose("kill", "--signal", "KILL", "celery_worker")
        stack.compose("start", "celery_worker")
        wait_until(
            "the killed worker's task to run again and succeed",
            lambda: re.search(rf"slow\[{task_id}\] succeeded", stack.logs("celery_worker")),
            180,
            stack,
        )
        wait_healthy(stack, "celery_worker")


class Restart(StackTests):
    """Runs last: the containers it recreates start new logs."""

    def test_data_survives_down_and_up(self, stack: Stack) -> None:
        status, user = json_request(WEB, "POST", "/users", {"username": "kept", "email": "k@b.io"})
        assert status == 201, user
        stack.compose("down", "--timeout", "60", timeout=300)  # no --volumes
        stack.up()
        assert json_request(WEB, "GET", f"/users/{user['id']}") == (200, user)


class CleanLogs(StackTests):
    def test_logs_hold_no_traceback_but_the_expected_failure(self, stack: Stack) -> None:
        logs = {service: stack.logs(service) for service in stack.config()["services"]}
        assert "ZeroDivisionError" in logs["celery_worker"]  # tracebacks are there to be found
        assert {service: unexpected_tracebacks(log) for service, log in logs.items()} == {
            service: [] for service in logs
        }


class Production(StackTests):
    """docker-compose.prod.yml: gunicorn, production settings, only web published."""

    compose_file: ClassVar[str] = "docker-compose.prod.yml"

    def test_every_service_is_healthy_and_migrate_completed(self, stack: Stack) -> None:
        assert_all_healthy(stack)

    def test_only_the_web_port_is_published_on_loopback(self, stack: Stack) -> None:
        assert published(stack) == {("127.0.0.1", 8000)}

    def test_serves_users_and_tasks_with_gunicorn(self, stack: Stack) -> None:
        web = containers(stack)["web"]["Name"]
        processes = stack.engine.docker("top", web, "-o", "pid,args").stdout
        assert "/opt/venv/bin/gunicorn --bind 0.0.0.0:5000" in processes, processes
        assert json_request(PRODUCTION_WEB, "GET", "/ready")[0] == 200
        user = {"username": "prod", "email": "prod@example.com"}
        status, created = json_request(PRODUCTION_WEB, "POST", "/users", user)
        assert status == 201, created
        body = json_request(PRODUCTION_WEB, "POST", "/tasks/divide", {"x": 3, "y": 4})[1]
        assert poll_task(stack, PRODUCTION_WEB, body["task_id"])["result"] == 0.75

    def test_app_containers_run_as_a_non_root_user(self, stack: Stack) -> None:
        services = stack.config()["services"]
        app = [name for name, service in services.items() if service["image"] == image_of(stack)]
        running = sorted(set(app) - {"migrate"})
        assert running == ["celery_beat", "celery_worker", "flower", "web"]
        uids = {
            name: stack.compose("exec", "-T", name, "id", "-u").stdout.strip() for name in running
        }
        assert all(uid.isdigit() for uid in uids.values()), uids
        assert "0" not in uids.values(), uids

    def test_every_service_runs_within_its_memory_limit(self, stack: Stack) -> None:
        """The kernel enforces each service's limit; Redis and RabbitMQ know theirs."""
        limits = {name: mib * 1024 * 1024 for name, mib in memory_limits().items()}
        running = set(containers(stack)) - {"migrate"}
        cgroup = "cat /sys/fs/cgroup/memory.max || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
        enforced = {
            name: int(stack.compose("exec", "-T", name, "sh", "-c", cgroup).stdout)
            for name in running
        }
        assert enforced == {name: limits[name] for name in running}
        if "redis" in running:
            told = stack.compose("exec", "-T", "redis", "redis-cli", "config", "get", "maxmemory")
            assert int(told.stdout.split()[-1]) == limits["redis"] * 3 // 4
        if "rabbitmq" in running:
            total = "vm_memory_monitor:get_total_memory()."
            told = stack.compose("exec", "-T", "rabbitmq", "rabbitmqctl", "-q", "eval", total)
            assert int(told.stdout) == limits["rabbitmq"]

    def test_image_holds_neither_env_nor_git(self, stack: Stack) -> None:
        listing = stack.engine.docker(
            "run", "--rm", "--entrypoint", "ls", image_of(stack), "-a", "/app"
        ).stdout.split()
        assert "app.py" in listing
        assert ".env" not in listing
        assert ".git" not in listing
        # The package runs from /app, and only from there: no stale copy in site-packages.
        probe = "import importlib.util as u; print(u.find_spec('flask_celery_app').origin)"
        origin = stack.engine.docker(
            "run", "--rm", "--entrypoint", "python", image_of(stack), "-c", probe
        ).stdout.strip()
        assert origin == "/app/flask_celery_app/__init__.py"
        installed = stack.engine.docker(
            "run", "--rm", "--entrypoint", "sh", image_of(stack), "-c",
            "ls /opt/venv/lib/python3*/site-packages",
        ).stdout.split()  # fmt: skip
        assert not [name for name in installed if name.startswith("flask_celery_app")]
        size = stack.engine.docker("image", "inspect", "--format", "{{.Size}}", image_of(stack))
        megabytes = int(size.stdout) / 1e6
        REPORT.append(f"{type(self).__name__}: image {image_of(stack)}: {megabytes:.0f} MB")


def image_of(stack: Stack) -> str:
    return stack.config()["services"]["web"]["image"]


def stack_env(stack: Stack) -> dict[str, str]:
    lines = (stack.project / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def answered_status(url: str) -> int | None:
    """The status of ``GET url``; None while gunicorn reloads (it drops the connection)."""
    try:
        return http_status(url)
    except (ConnectionError, urllib.error.URLError):
        return None


# --- The stacks, in the order they run ---------------------------------------------------------
# Each database with each broker, as tests/variants.py's STACKS answers them. pytest runs the
# tests a class inherits from its last base to its first: Development, Operations, CleanLogs,
# then Restart.


class TestSqliteRedis(CleanLogs, Development):
    answers = stack_answers("sqlite", "redis")


class TestSqliteRabbitmq(CleanLogs, Development):
    answers = stack_answers("sqlite", "rabbitmq")


class TestPostgresqlRedis(Restart, CleanLogs, Operations, Development):
    answers = stack_answers("postgresql", "redis")  # the default answers


class TestPostgresqlRabbitmq(CleanLogs, Development):
    answers = stack_answers("postgresql", "rabbitmq")


class TestMysqlRedis(CleanLogs, Development):
    answers = stack_answers("mysql", "redis")


class TestMysqlRabbitmq(Restart, CleanLogs, Operations, Development):
    answers = stack_answers("mysql", "rabbitmq")


class TestProductionPostgresqlRedis(Production):
    answers = TestPostgresqlRedis.answers


class TestProductionMysqlRabbitmq(Production):
    answers = TestMysqlRabbitmq.answers


# --- The image, built alone -------------------------------------------------------------------


@pytest.fixture(scope="class")
def image_project(
    docker_engine: Engine, template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The default answers under a name of their own, so that its images are new."""
    project = tmp_path_factory.mktemp("image") / "project"
    run_copy(str(template_dir), project, data={"project_name": "Image Check"}, defaults=True)
    stack = Stack(docker_engine, project)
    yield stack
    images = docker_engine.docker("images", "--quiet", "image-check").stdout.split()
    if images:
        docker_engine.docker("rmi", "--force", *set(images))


class TestAppImage:
    def test_compose_build_builds_one_image_for_every_app_service(
        self, image_project: Stack
    ) -> None:
        engine = image_project.engine
        ensure_images(engine, image_project.images())
        before = set(engine.docker("images", "--all", "--quiet", "--no-trunc").stdout.split())
        image_project.compose("build")
        after = set(engine.docker("images", "--all", "--quiet", "--no-trunc").stdout.split())
        tagged = engine.docker("images", "--quiet", "--no-trunc", "image-check:local").stdout
        assert after - before == set(tagged.split()), "one new image, the tagged one"

    @pytest.mark.parametrize(
        ("uid", "gid"), [("0", "0"), ("1000", "100"), ("501", "20")], ids=["root", "users", "staff"]
    )
    def test_any_developer_ids_build_and_run(
        self, image_project: Stack, uid: str, gid: str
    ) -> None:
        """APP_UID/APP_GID of any developer: root (CI machines), a primary group that the image
        already has (100 "users" on Linux, 20 "staff" on macOS)."""
        ids = {"APP_UID": uid, "APP_GID": gid}
        Stack(image_project.engine, image_project.project, env=ids).compose("build", "web")
        probe = "id -u; id -g; test -w /var/lib/celery/beat && echo writable"
        out = image_project.engine.docker(
            "run", "--rm", "--entrypoint", "sh", "image-check:local", "-c", probe
        ).stdout.split()
        assert out == [uid, gid, "writable"]


# --- The generated workflow's docker job, run here ---------------------------------------------


def test_generated_workflow_docker_job_brings_the_stack_up(
    docker_engine: Engine, template_dir: Path, tmp_path: Path
) -> None:
    """The `run` steps of the docker job of a generated .github/workflows/ci.yml, in order, as
    GitHub runs them (bash -eo pipefail; `if: failure()` / `always()` honoured), in the project
    the workflow would check out."""
    project = tmp_path / "project"
    run_copy(str(template_dir), project, data={"ci": "github"}, defaults=True, quiet=True)
    ensure_images(docker_engine, Stack(docker_engine, project).images())
    job = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step for step in job["jobs"]["docker"]["steps"] if "run" in step]
    failed, transcript = False, []
    for step in steps:
        condition = step.get("if", "success()")
        if {"success()": failed, "failure()": not failed, "always()": False}[condition]:
            continue
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=project,
            env=docker_engine.env,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        transcript.append(f"$ {step['run']}\n{done.stdout}{done.stderr}")
        failed = failed or done.returncode != 0
    assert not failed, "\n".join(transcript)
    assert '"status":"ready"' in "".join(transcript[-2].split())  # the curl step's answer
    assert not [o for o in docker_engine.objects() if "flask-celery-app" in o]


# --- The harness itself: a stack that never turns healthy, and what the tests leave ------------

BROKEN = """\
name: broken-stack
services:
  noisy:
    image: {image}
    command: ["sh", "-c", "for i in $$(seq 1 60); do echo line-$$i; done; exec sleep 300"]
    init: true
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      retries: 2
"""


def test_harness_reports_a_service_that_never_turns_healthy_with_its_log(
    docker_engine: Engine, tmp_path: Path
) -> None:
    image = "python:3.13.15-slim-trixie"
    (tmp_path / "docker-compose.yml").write_text(BROKEN.format(image=image))
    stack = Stack(docker_engine, tmp_path)
    try:
        with pytest.raises(HarnessError) as failure:
            stack.up(timeout=30)
    finally:
        stack.down()
    message = str(failure.value)
    assert "noisy: running unhealthy" in message
    lines = message.splitlines()
    assert "line-11" in lines  # the last 50 lines of its log
    assert "line-60" in lines
    assert "line-10" not in lines
    assert not [o for o in docker_engine.objects() if "broken-stack" in o]


def test_harness_leaves_nothing_behind(docker_engine: Engine) -> None:
    """Runs last: no container, volume or network; an engine started here stops and takes its
    iptables rules, bridge and process with it."""
    assert docker_engine.objects() == docker_engine.objects_at_start
    if docker_engine.owner is None:
        return  # not ours to stop
    state = json.loads(ENGINE_STATE.read_text())
    docker_engine.stop()
    assert not process_alive(state["pid"])
    assert not Path(f"/sys/class/net/{BRIDGE}").exists()
    assert netfilter_changes(state["netfilter"]) == []
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == state["ip_forward"]
