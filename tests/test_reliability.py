"""No task lost, no door left open: the generated project's guarantees under fault injection.

Each test breaks something for real — kills a worker's pool process or the whole worker with
SIGKILL, stops a worker with SIGTERM mid-task, takes the broker or the database away — and checks
what a user would see. Brokers and databases that a test breaks are its own (a redis-server or a
PostgreSQL started on a free port and stopped by PID); the machine's shared services are only
used through a fresh RabbitMQ vhost. Select these with ``-m reliability``.

Fault-injection tasks live in a test-only module, ``chaos.py``, written into the generated
project: they use the project's own Celery app and settings (``from app import celery``) and
append "start"/"done" lines to a log file, so the tests can count how often each task ran.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_service
from projects import (
    PrivateRabbitMQ,
    PrivateRedis,
    Project,
    free_port,
    fresh_rabbitmq_vhost,
    install,
    json_request,
    kill_groups,
    listening,
    stop_within,
    wait_until,
)

pytestmark = pytest.mark.reliability

CHAOS = '''\
"""Test-only tasks for fault injection; each run appends to the file CHAOS_LOG."""

import os
import time
from pathlib import Path

from app import celery


def record(event, task_id):
    with Path(os.environ["CHAOS_LOG"]).open("a") as log:
        log.write(f"{event} {task_id} {os.getpid()} {time.time()}\\n")


@celery.task(bind=True, name="chaos.work", ignore_result=False)
def work(self, seconds):
    record("start", self.request.id)
    time.sleep(seconds)
    record("done", self.request.id)
    return seconds


@celery.task(bind=True, name="chaos.crash", ignore_result=False, default_retry_delay=1)
def crash(self):
    """Kills the process that runs it, every time."""
    record("start", self.request.id)
    os.kill(os.getpid(), 9)


@celery.task(bind=True, name="chaos.flaky", ignore_result=False)
def flaky(self, countdown):
    """Fails its first run, and is retried after ``countdown`` seconds."""
    record("start", self.request.id)
    if not self.request.retries:
        raise self.retry(countdown=countdown)
    record("done", self.request.id)


HOARD = []


@celery.task(bind=True, name="chaos.hog", ignore_result=False)
def hog(self, mebibytes):
    """Keeps ``mebibytes`` of memory (written, so resident) for the life of its process."""
    record("start", self.request.id)
    HOARD.append(b"x" * (mebibytes * 1024 * 1024))
    record("done", self.request.id)
'''

BASE = {
    "use_celery_beat": False,
    "use_flower": False,
    "use_docker": True,
    "ci": "none",
    "python_version": "3.11",
}
REDIS_VARIANT = {**BASE, "database": "postgresql", "broker": "redis", "result_backend": "redis"}
RABBITMQ_VARIANT = {
    **BASE,
    "database": "sqlite",
    "broker": "rabbitmq",
    "result_backend": "redis",
    "use_celery_beat": True,  # for test_rabbitmq_blocking_publishers_hangs_no_request_nor_beat
}


@pytest.fixture(scope="module")
def redis_project(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return chaos_project(template_dir, REDIS_VARIANT, tmp_path_factory)


@pytest.fixture(scope="module")
def rabbitmq_project(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return chaos_project(template_dir, RABBITMQ_VARIANT, tmp_path_factory)


def chaos_project(
    template_dir: Path, answers: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Project:
    project = install(template_dir, answers, tmp_path_factory.mktemp("chaos") / "project")
    (project.path / "chaos.py").write_text(CHAOS)
    return project


@dataclass
class Cluster:
    """A generated project's workers on one broker, and the log of the tasks they ran."""

    project: Project
    env: dict[str, str]
    log: Path
    workers: list[subprocess.Popen[bytes]]

    def start_worker(self, *options: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        number = len(self.workers)
        command = ["celery", "-A", "chaos.celery", "worker", "-l", "INFO", "-P", "prefork"]
        command += ["-c", str(concurrency), "-n", f"chaos{number}@%h", *options]
        log = self.log.with_name(f"worker{number}.log")
        worker = self.project.spawn(
            self.project.bin / command[0], *command[1:], env=self.env, log=log
        )
        self.workers.append(worker)
        wait_until("the worker", lambda: " ready." in log.read_text(), 60, self.diagnostics)
        return worker

    def send(self, task: str, *args: Any, count: int = 1) -> list[str]:
        """Enqueue ``count`` runs of a chaos task; their ids."""
        script = (
            "import json, sys; from chaos import celery\n"
            "name, args, count = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])\n"
            "print(json.dumps([celery.send_task(name, args).id for _ in range(count)]))"
        )
        sent = self.project.run(
            self.project.python, "-c", script, task, json.dumps(args), str(count), env=self.env
        )
        assert sent.returncode == 0, sent.stderr
        return json.loads(sent.stdout)

    def state(self, task_id: str) -> str:
        script = (
            "import sys; from chaos import celery; print(celery.AsyncResult(sys.argv[1]).state)"
        )
        return self.project.run(
            self.project.python, "-c", script, task_id, env=self.env
        ).stdout.strip()

    def events(self, kind: str) -> Counter[str]:
        """How many times each task id logged ``kind`` ("start" or "done")."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return Counter(line.split()[1] for line in lines if line.startswith(kind + " "))

    def pid_running(self, task_id: str) -> int:
        lines = self.log.read_text().splitlines()
        return int(next(line.split()[2] for line in lines if line.startswith(f"start {task_id}")))

    def start_times(self, task_id: str) -> list[float]:
        lines = self.log.read_text().splitlines()
        return [float(line.split()[3]) for line in lines if line.startswith(f"start {task_id}")]

    def diagnostics(self) -> str:
        logs = sorted(self.log.parent.glob("worker*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)

    def kill_all(self) -> None:
        kill_groups(self.workers)


@pytest.fixture(params=["redis", "rabbitmq"])
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_project: Project,
    rabbitmq_project: Project,
) -> Iterator[Cluster]:
    """Workers of the redis or the rabbitmq variant on a broker of the test's own."""
    with ExitStack() as stack:
        results = stack.enter_context(PrivateRedis(tmp_path))
        if request.param == "redis":
            project, broker = redis_project, results.url
        else:
            project, broker = rabbitmq_project, stack.enter_context(fresh_rabbitmq_vhost())
        cluster = new_cluster(project, tmp_path, broker, results.url.replace("/0", "/1"))
        stack.callback(cluster.kill_all)
        yield cluster


def new_cluster(project: Project, tmp_path: Path, broker: str, results: str) -> Cluster:
    """``project``'s workers (none yet) on ``broker``, results in ``results``."""
    env = {
        **os.environ,
        "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": results,
        # Longer than any task or retry delay here: only a vanished worker's tasks come back.
        "CELERY_VISIBILITY_TIMEOUT": "60",
        "CHAOS_LOG": str(tmp_path / "tasks.log"),
    }
    return Cluster(project, env, tmp_path / "tasks.log", [])


def test_killed_pool_process_task_is_retried_and_completes(cluster: Cluster) -> None:
    cluster.start_worker()
    (task_id,) = cluster.send("chaos.work", 3)
    wait_until("the task to start", lambda: cluster.events("start")[task_id] == 1, 30)
    os.kill(cluster.pid_running(task_id), signal.SIGKILL)  # an OOM kill, say
    wait_until(
        "the task to run again and finish",
        lambda: cluster.events("done")[task_id] == 1,
        60,
        cluster.diagnostics,
    )
    assert cluster.events("start")[task_id] == 2
    wait_until("its result", lambda: cluster.state(task_id) == "SUCCESS", 15, cluster.diagnostics)


def test_task_that_always_kills_its_process_does_not_loop_forever(cluster: Cluster) -> None:
    cluster.start_worker()
    (task_id,) = cluster.send("chaos.crash")
    wait_until(
        "the task to fail", lambda: cluster.state(task_id) == "FAILURE", 90, cluster.diagnostics
    )
    time.sleep(3)  # any further delivery would show up by now
    assert cluster.events("start")[task_id] == 4  # the first run and max_retries (3) retries


def test_killed_worker_loses_none_of_100_tasks(cluster: Cluster) -> None:
    # Redis gives a vanished worker's tasks back after the visibility timeout: keep it short.
    cluster.env["CELERY_VISIBILITY_TIMEOUT"] = "5"
    task_ids = cluster.send("chaos.work", 0.1, count=100)
    worker = cluster.start_worker()
    wait_until("some tasks to finish", lambda: len(cluster.events("done")) >= 10, 60)
    os.killpg(worker.pid, signal.SIGKILL)  # the whole worker: main process and pool
    worker.wait(timeout=10)
    assert len(cluster.events("done")) < 100, "the worker finished everything before the kill"
    cluster.start_worker()
    wait_until(
        "all 100 tasks to finish",
        lambda: set(cluster.events("done")) == set(task_ids),
        120,
        cluster.diagnostics,
    )
    starts = cluster.events("start")
    assert max(starts[task_id] for task_id in task_ids) <= 2, starts.most_common(3)


def test_sigterm_lets_the_running_task_finish(cluster: Cluster) -> None:
    worker = cluster.start_worker()
    (task_id,) = cluster.send("chaos.work", 3)
    wait_until("the task to start", lambda: cluster.events("start")[task_id] == 1, 30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, cluster.diagnostics()
    assert cluster.events("done")[task_id] == 1
    assert cluster.state(task_id) == "SUCCESS"


def test_retry_waits_its_countdown_and_holds_up_no_other_task(cluster: Cluster) -> None:
    """On Redis the worker keeps the retry until it is due; on RabbitMQ it waits in the broker
    (native delayed delivery, the quorum queue's way). Either way the one pool process is free."""
    countdown = 20
    cluster.start_worker(concurrency=1)
    (retried,) = cluster.send("chaos.flaky", countdown)
    wait_until("the first run", lambda: cluster.events("start")[retried] == 1, 30)
    (other,) = cluster.send("chaos.work", 0)
    wait_until("the other task", lambda: cluster.events("done")[other] == 1, 30)
    assert cluster.events("start")[retried] == 1, "the retry did not wait for its countdown"
    done = cluster.events
    wait_until("the retry", lambda: done("done")[retried] == 1, countdown + 60, cluster.diagnostics)
    first, second = cluster.start_times(retried)
    assert second - first >= countdown - 1  # RabbitMQ's delays count whole seconds
    assert cluster.state(retried) == "SUCCESS"


def test_pool_process_past_its_memory_limit_is_replaced_after_its_task(cluster: Cluster) -> None:
    """The project's default limit, the one .env.example documents: the variable is unset (Celery's
    CLI would read it too, as --max-memory-per-child, so setting it would not test the project)."""
    cluster.env.pop("CELERY_WORKER_MAX_MEMORY_PER_CHILD", None)
    example = (cluster.project.path / ".env.example").read_text()
    limit = re.search(r"^#? ?CELERY_WORKER_MAX_MEMORY_PER_CHILD=(\d+)$", example, re.MULTILINE)
    assert limit, "CELERY_WORKER_MAX_MEMORY_PER_CHILD is not in .env.example"
    worker = cluster.start_worker(concurrency=1)
    (hog,) = cluster.send("chaos.hog", int(limit[1]) // 1024 + 50)  # MiB, past the limit
    wait_until("the task", lambda: cluster.state(hog) == "SUCCESS", 60, cluster.diagnostics)
    (after,) = cluster.send("chaos.work", 0)
    wait_until("the next task", lambda: cluster.state(after) == "SUCCESS", 60, cluster.diagnostics)
    assert cluster.events("start")[hog] == 1, "the task was run again"
    assert cluster.pid_running(after) != cluster.pid_running(hog), "the process was kept"
    assert worker.poll() is None


def rabbitmq_queues(vhost_url: str) -> list[dict[str, Any]]:
    vhost = vhost_url.rsplit("/", 1)[1]
    columns = ["name", "durable", "exclusive", "type", "messages"]
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, *columns, "--formatter", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(listed.stdout)


def test_rabbitmq_tasks_wait_in_a_quorum_queue_and_no_queue_is_transient(
    rabbitmq_project: Project, tmp_path: Path
) -> None:
    """RabbitMQ 4 deprecates transient queues that are not exclusive: the worker's control and
    event queues must be exclusive, the rest durable."""
    with PrivateRedis(tmp_path) as results, fresh_rabbitmq_vhost() as broker, ExitStack() as stack:
        cluster = new_cluster(rabbitmq_project, tmp_path, broker, results.url)
        stack.callback(cluster.kill_all)
        cluster.start_worker("--events")
        (task_id,) = cluster.send("chaos.work", 0)
        wait_until("the task", lambda: cluster.state(task_id) == "SUCCESS", 60)
        queues = {queue["name"]: queue for queue in rabbitmq_queues(broker)}
        assert queues["celery-quorum"]["type"] == "quorum"
        assert "celery" not in queues
        transient = [name for name, queue in queues.items() if not queue["durable"]]
        assert transient, "expected the worker's control and event queues"
        assert [name for name in transient if not queues[name]["exclusive"]] == []


def test_rabbitmq_tasks_of_a_classic_queue_are_drained_after_an_update(
    rabbitmq_project: Project, tmp_path: Path
) -> None:
    """Projects before 0.3.0 queued tasks in Celery's classic "celery" queue: an updated worker
    starts beside it (a quorum queue of another name), and docs/updating.md's
    `celery -A app.celery worker -Q celery` runs what it holds."""
    with PrivateRedis(tmp_path) as results, fresh_rabbitmq_vhost() as broker, ExitStack() as stack:
        cluster = new_cluster(rabbitmq_project, tmp_path, broker, results.url)
        stack.callback(cluster.kill_all)
        script = (
            "import json; from chaos import celery\n"
            "celery.conf.update(task_default_queue='celery', task_default_queue_type='classic',"
            " task_default_exchange_type='direct')  # Celery's defaults, those of 0.2.0\n"
            "print(json.dumps([celery.send_task('chaos.work', [0]).id for _ in range(5)]))"
        )
        sent = cluster.project.run(cluster.project.python, "-c", script, env=cluster.env)
        assert sent.returncode == 0, sent.stderr
        old_ids = json.loads(sent.stdout)
        assert {q["name"]: q["messages"] for q in rabbitmq_queues(broker)} == {"celery": 5}

        cluster.start_worker()
        (new_id,) = cluster.send("chaos.work", 0)
        wait_until("a new task", lambda: cluster.state(new_id) == "SUCCESS", 60)
        assert not set(old_ids) & set(cluster.events("start"))

        cluster.start_worker("--queues", "celery")
        wait_until(
            "the classic queue's tasks",
            lambda: set(cluster.events("done")) >= set(old_ids),
            60,
            cluster.diagnostics,
        )
        assert {q["name"]: q["messages"] for q in rabbitmq_queues(broker)}["celery"] == 0


def test_rabbitmq_restart_loses_no_queued_task(rabbitmq_project: Project, tmp_path: Path) -> None:
    """A RabbitMQ node of the test's own is restarted mid-run: the quorum queue and the delayed
    retry survive it, and the worker carries on once the node is back."""
    node = PrivateRabbitMQ(tmp_path)
    with PrivateRedis(tmp_path) as results, node, ExitStack() as stack:
        cluster = new_cluster(rabbitmq_project, tmp_path, node.url, results.url)
        stack.callback(cluster.kill_all)
        cluster.start_worker()
        (retried,) = cluster.send("chaos.flaky", 20)
        task_ids = cluster.send("chaos.work", 0.5, count=60)  # 15 s of work for two processes
        wait_until("some tasks to finish", lambda: len(cluster.events("done")) >= 5, 60)
        assert cluster.events("start")[retried] == 1  # its retry waits in RabbitMQ
        assert len(cluster.events("done")) < len(task_ids), "no task was left to lose"

        node.stop()
        node.start()
        wait_until(
            "every task to finish",
            lambda: set(cluster.events("done")) >= {*task_ids, retried},
            240,
            cluster.diagnostics,
        )
        starts = cluster.events("start")
        assert max(starts[task_id] for task_id in task_ids) <= 2, starts.most_common(3)


def test_rabbitmq_blocking_publishers_hangs_no_request_nor_beat(
    rabbitmq_project: Project, tmp_path: Path
) -> None:
    """During a memory or disk alarm RabbitMQ stops reading from publishing connections. A request
    that enqueues must still answer (503) before gunicorn's 30 s timeout kills its worker, and beat
    must still stop on SIGTERM: Celery's handler waits for RabbitMQ to answer the close of beat's
    connection, which it never does while the alarm lasts."""
    node = PrivateRabbitMQ(tmp_path)
    with PrivateRedis(tmp_path) as results, node, ExitStack() as stack:
        app = web_app(rabbitmq_project, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", node.url)
        app.env["CELERY_RESULT_BACKEND"] = results.url
        app.env["CELERY_BEAT_SCHEDULE"] = str(tmp_path / "beat" / "schedule")
        app.env["USER_COUNT_INTERVAL"] = "1"
        app.env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT below: every thread's stack to the log
        stack.callback(app.stop)
        app.start("web", "compose/production/flask/start")
        app.start("beat", "compose/production/flask/celery/beat/start")
        beat, beat_log = app.processes[-1], app.logs / "beat.log"
        port = int(app.env["PORT"])
        wait_until("the web app", lambda: listening(port), 60, app.diagnostics)
        wait_until("beat", lambda: "Sending due task" in beat_log.read_text(), 60, app.diagnostics)
        assert app.request("POST", "/tasks/divide", {"x": 1, "y": 2})[0] == 202

        node.block_publishers()
        status, body, seconds = app.request("POST", "/tasks/divide", {"x": 1, "y": 2})
        assert (status, body["message"]) == (503, "The task queue is unavailable; try again later.")
        assert seconds < 25, f"{seconds:.1f} s: gunicorn kills a worker after 30 s"

        sends = beat_log.read_text().count("Sending due task")
        wait_until(  # beat is waiting for RabbitMQ to confirm a task when SIGTERM comes
            "beat to send a task during the alarm",
            lambda: beat_log.read_text().count("Sending due task") > sends,
            30,
            app.diagnostics,
        )
        code = stop_within(beat, beat_log, "beat", 15)
        assert code == 0, beat_log.read_text()[-3000:]


@dataclass
class WebApp:
    """The generated web app under gunicorn (its own start script) and, optionally, a worker."""

    project: Project
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]]

    def start(self, name: str, script: str) -> None:
        log = self.logs / f"{name}.log"
        process = self.project.spawn(self.project.path / script, env=self.env, log=log)
        self.processes.append(process)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        """(status, JSON body, seconds taken)."""
        started = time.monotonic()
        status, answer = json_request(f"http://127.0.0.1:{self.env['PORT']}", method, path, body)
        return status, answer, time.monotonic() - started

    def diagnostics(self) -> str:
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)

    def task_state(self, task_id: str) -> str:
        return self.request("GET", f"/tasks/{task_id}")[1]["state"]

    def stop(self) -> None:
        kill_groups(self.processes)


def web_app(project: Project, tmp_path: Path, database_url: str, broker_url: str) -> WebApp:
    env = {
        **os.environ,
        "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
        "FLASK_CONFIG": "production",
        "FLASK_DEBUG": "0",
        "SECRET_KEY": project.env_file()["SECRET_KEY"],
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "1",  # one process: "the same running web process" recovers
    }
    migrate = project.run(project.bin / "flask", "--app", "app.py", "db", "upgrade", env=env)
    assert migrate.returncode == 0, migrate.stderr
    (tmp_path / "logs").mkdir(exist_ok=True)
    return WebApp(project, env, tmp_path / "logs", [])


def test_broker_outage_is_a_quick_503_and_recovers_without_restart(
    redis_project: Project, tmp_path: Path
) -> None:
    with PrivateRedis(tmp_path) as broker, ExitStack() as stack:
        app = web_app(redis_project, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", broker.url)
        stack.callback(app.stop)
        app.start("web", "compose/production/flask/start")
        app.start("worker", "compose/production/flask/celery/worker/start")
        port = int(app.env["PORT"])
        wait_until("the web app", lambda: listening(port), 60, app.diagnostics)
        status, body, _ = app.request("POST", "/tasks/divide", {"x": 1, "y": 2})
        assert status == 202, body
        wait_until("a task", lambda: app.task_state(body["task_id"]) == "SUCCESS", 60)

        broker.stop()
        # Not only the first request: the result backend (the same Redis) must give up fast too.
        for _ in range(3):
            status, body, seconds = app.request("POST", "/tasks/divide", {"x": 1, "y": 2})
            unavailable = (503, "The task queue is unavailable; try again later.")
            assert (status, body["message"]) == unavailable
            assert seconds < 3
        user = {"username": "outage", "email": "outage@example.com"}
        status, body, seconds = app.request("POST", "/users", user)
        assert (status, body["username"]) == (201, "outage")  # queued later: send-welcomes
        assert seconds < 3
        status, body, seconds = app.request("GET", "/ready")
        assert (status, body["checks"]["broker"]) == (503, "unavailable")
        assert seconds < 3

        broker.start()  # same port: the same web process and worker must carry on
        status, body, _ = app.request("POST", "/tasks/divide", {"x": 3, "y": 4})
        assert status == 202, body
        wait_until(
            "the worker to reconnect and run the task",
            lambda: app.task_state(body["task_id"]) == "SUCCESS",
            90,
            app.diagnostics,
        )
        assert app.request("GET", "/ready")[0] == 200


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temp dir), stopped by its PID."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's temp dirs: as root, those are closed to the postgres user.
        self.data = Path(tempfile.mkdtemp(prefix="template-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            require_service("PostgreSQL", 5432)  # skips locally, fails in CI: not installed
        self.bin = bins[-1]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self) -> dict[str, Any]:
        # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
        return {"user": "postgres"} if os.geteuid() == 0 else {}

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        initdb = subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust"],
            capture_output=True,
            text=True,
            check=False,
            **self._as_postgres(),
        )
        assert initdb.returncode == 0, initdb.stderr

    def start(self) -> None:
        options = ["-p", str(self.port), "-k", str(self.data), "-c", "listen_addresses=127.0.0.1"]
        self.process = subprocess.Popen(
            [self.bin / "postgres", "-D", self.data, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._as_postgres(),
        )
        wait_until(f"PostgreSQL on port {self.port}", lambda: listening(self.port), 30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            self.process.wait(timeout=30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def web_on_private_postgres(
    project: Project, tmp_path: Path
) -> Iterator[tuple[WebApp, PrivatePostgres]]:
    """The web app running on a PostgreSQL cluster of the test's own (and a private Redis)."""
    database = PrivatePostgres()
    with PrivateRedis(tmp_path) as broker, ExitStack() as stack:
        stack.callback(database.remove)
        database.init()
        database.start()
        app = web_app(project, tmp_path, database.url, broker.url)
        stack.callback(app.stop)
        app.start("web", "compose/production/flask/start")
        wait_until("the web app", lambda: listening(int(app.env["PORT"])), 60, app.diagnostics)
        yield app, database


def test_database_outage_is_a_503_and_recovers_without_restart(
    redis_project: Project, tmp_path: Path
) -> None:
    with web_on_private_postgres(redis_project, tmp_path) as (app, database):
        ada = {"username": "ada", "email": "ada@example.com"}
        assert app.request("POST", "/users", ada)[0] == 201

        database.stop()
        status, body, _seconds = app.request("POST", "/users", {**ada, "username": "grace"})
        assert (status, body["message"]) == (503, "The database is unavailable; try again later.")
        status, body, _ = app.request("GET", "/ready")
        assert (status, body["checks"]["database"]) == (503, "unavailable")

        database.start()
        status, body, _ = app.request(
            "POST", "/users", {"username": "grace", "email": "g@example.com"}
        )
        assert status == 201, body
        assert app.request("GET", "/ready")[0] == 200
        users = app.request("GET", "/users")[1]["users"]
        assert [user["username"] for user in users] == ["ada", "grace"]


def test_welcome_is_sent_after_a_database_outage(redis_project: Project, tmp_path: Path) -> None:
    """welcome_user retries database errors with a backoff: the welcome of a user created just
    before the database went away is sent once it is back, with no one running send-welcomes."""
    with web_on_private_postgres(redis_project, tmp_path) as (app, database):
        status, grace, _ = app.request("POST", "/users", {"username": "grace", "email": "g@b.io"})
        assert status == 201, grace  # its welcome waits in the broker: no worker runs yet

        database.stop()
        app.start("worker", "compose/production/flask/celery/worker/start")
        worker_log = app.logs / "worker.log"
        wait_until(
            "the welcome to fail on the database and be retried",
            lambda: "Retry in" in worker_log.read_text(),
            60,
            app.diagnostics,
        )
        database.start()
        wait_until(
            "the welcome to be sent",
            lambda: f"Welcomed user {grace['id']}" in worker_log.read_text(),
            120,
            app.diagnostics,
        )
