"""A covering subset of variants, installed and run for real.

Each project of ``variants.COVERING`` (every value of every question at least once) is
generated, installed into a fresh virtualenv from its own pyproject.toml with its target Python,
and must then: pass its own test suite (and its tests/test_services.py against the real
servers of its kind), create its tables with ``flask db upgrade`` on a real
database of its kind, and start a Celery worker with ``celery -A app.celery worker`` on a real
broker without a single deprecation warning.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import find_python
from copier import run_copy
from projects import (
    PrivateRedis,
    Project,
    free_port,
    fresh_database,
    fresh_rabbitmq_vhost,
    fresh_redis_db,
    http_status,
    install,
)
from variants import COVERING, variant_id


@pytest.fixture(
    scope="module",
    params=[
        # One xdist worker installs a variant and runs all of its tests.
        pytest.param(answers, marks=pytest.mark.xdist_group(f"covering-{variant_id(answers)}"))
        for answers in COVERING
    ],
    ids=variant_id,
)
def project(
    request: pytest.FixtureRequest, template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Project:
    return install(template_dir, request.param, tmp_path_factory.mktemp("installed") / "project")


def own_basetemp(project: Project) -> str:
    """The generated suite's temporary files beside the project, in this suite's own temporary
    directory, not in /tmp/pytest-of-<user>."""
    return f"--basetemp={project.path.parent / 'pytest-tmp'}"


def test_own_test_suite_passes(project: Project) -> None:
    # tests/test_services.py needs servers: test_services_tests_pass_against_real_servers runs it.
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/test_services.py"]
    run = project.run(project.python, *command, own_basetemp(project))
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    assert not re.search(r"\d+ skipped", run.stdout)  # coverage's "files skipped" are fine


@pytest.fixture
def database_url(project: Project, tmp_path: Path) -> Iterator[str]:
    with fresh_database(project, tmp_path) as url:
        yield url


def test_flask_db_upgrade_creates_the_tables(project: Project, database_url: str) -> None:
    env = {"FLASK_APP": "app.py", "DATABASE_URL": database_url}
    flask = project.bin / "flask"
    upgrade = project.run(flask, "db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    current = project.run(flask, "db", "current", env=env)
    assert "0002 (head)" in current.stdout, current.stdout + current.stderr
    columns = project.run(
        project.python,
        "-c",
        "import sqlalchemy as sa, sys; e = sa.create_engine(sys.argv[1]);"
        "print(sorted(c['name'] for c in sa.inspect(e).get_columns('users')))",
        database_url,
        env=env,
    )
    assert columns.stdout.strip() == "['email', 'id', 'username']", columns.stderr


@contextmanager
def own_broker(answers: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The worker's broker (and Redis for results): a redis-server of the test's own, or a
    fresh RabbitMQ vhost; nothing of them is left afterwards."""
    with ExitStack() as resources:
        env = {}
        if answers["broker"] == "rabbitmq":
            env["CELERY_BROKER_URL"] = resources.enter_context(fresh_rabbitmq_vhost())
        if answers["broker"] == "redis" or answers["result_backend"] == "redis":
            redis = resources.enter_context(PrivateRedis(tmp_path))
            env.setdefault("CELERY_BROKER_URL", redis.url)
            if answers["result_backend"] == "redis":
                env["CELERY_RESULT_BACKEND"] = redis.url
        yield env


def test_worker_starts_without_deprecation_warnings(project: Project, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    command = ["celery", "-A", "app.celery", "worker", "-P", "solo", "-l", "INFO"]
    with own_broker(project.answers, tmp_path) as broker:
        env = {
            **os.environ,
            **broker,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}",
            "PYTHONWARNINGS": "default",
        }
        worker = project.spawn(project.bin / command[0], *command[1:], env=env, log=log)
        try:
            deadline = time.monotonic() + 60
            while " ready." not in log.read_text() and worker.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert worker.poll() is None, log.read_text()
        finally:
            worker.send_signal(signal.SIGTERM)
            returncode = worker.wait(timeout=30)
    text = log.read_text()
    assert returncode == 0, text
    assert "celery@" in text
    assert "eprecat" not in text, text


def test_flower_requires_the_generated_password(project: Project, tmp_path: Path) -> None:
    """`celery -A app.celery flower` (the README's command) needs the password from .env."""
    if not project.answers["use_flower"]:
        # Without Flower, the project does not even install it.
        assert project.run(project.python, "-c", "import flower").returncode == 1
        return
    user, password = project.env_file()["FLOWER_BASIC_AUTH"].split(":", 1)
    port = free_port()
    log = tmp_path / "flower.log"
    command = ["celery", "-A", "app.celery", "flower", "--address=127.0.0.1", f"--port={port}"]
    with own_broker(project.answers, tmp_path) as broker:
        env = {**os.environ, **broker}
        env.pop("FLOWER_BASIC_AUTH", None)  # only .env, read by app.py, may provide it
        flower = project.spawn(project.bin / command[0], *command[1:], env=env, log=log)
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + 60
            while True:
                assert flower.poll() is None, log.read_text()
                try:
                    status = http_status(url)
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.3)
            assert status == 401
            assert http_status(url, (user, "wrong-password")) == 401
            assert http_status(url, (user, password)) == 200
        finally:
            flower.terminate()
            flower.wait(timeout=30)


def test_services_tests_pass_against_real_servers(project: Project, tmp_path: Path) -> None:
    """tests/test_services.py, given fresh resources of the machine's servers as the generated CI
    gives it service containers: every test runs, and passes."""
    answers = project.answers
    redis_db = 2 + COVERING.index(answers)  # one Redis database number per variant
    with ExitStack() as resources:
        env = {}
        if answers["database"] != "sqlite":
            env["TEST_DATABASE_URL"] = resources.enter_context(fresh_database(project, tmp_path))
        if answers["broker"] == "redis":
            env["TEST_BROKER_URL"] = resources.enter_context(fresh_redis_db(project, redis_db))
        else:
            env["TEST_BROKER_URL"] = resources.enter_context(fresh_rabbitmq_vhost())
            if answers["result_backend"] == "redis":
                results = resources.enter_context(fresh_redis_db(project, redis_db))
                env["TEST_RESULT_BACKEND"] = results
        command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_services.py"]
        command.append("--no-cov")  # a part of the suite: the coverage floor is the whole's
        run = project.run(project.python, *command, own_basetemp(project), env=env)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    # Only passes: no test skipped for want of a server, none deselected or xfailed.
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \([\d:]+\))?", summary), run.stdout[-3000:]


def requirement_versions(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines (markers and comments dropped), by normalized name."""
    versions = {}
    for line in lines:
        requirement = line.split(";")[0].split("#")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            versions[name.lower().replace("_", "-")] = version
    return versions


def test_installs_exactly_the_locked_versions(project: Project) -> None:
    """Every installed package is in uv.lock, at the locked version."""
    lock = tomllib.loads((project.path / "uv.lock").read_text())
    pins = {package["name"]: package["version"] for package in lock["package"]}
    freeze = project.run(sys.executable, "-m", "uv", "pip", "freeze", "-p", project.python)
    installed = requirement_versions(freeze.stdout.splitlines())  # the project itself: "-e ..."
    assert installed
    assert installed == {name: pins.get(name, "not locked") for name in installed}


def test_pip_alone_installs_the_project(template_dir: Path, tmp_path: Path) -> None:
    """Without uv: the README's pip command (pip 25.1+ installs dependency groups) gives a
    project whose own tests pass, at the newest versions pyproject.toml allows."""
    answers = COVERING[0]
    path = tmp_path / "project"
    run_copy(str(template_dir), path, data=answers, defaults=True, quiet=True)
    venv = path / "venv"
    subprocess.run([find_python(answers["python_version"]), "-m", "venv", venv], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    upgraded = subprocess.run([*pip, "pip>=25.1"], capture_output=True, text=True, check=False)
    assert upgraded.returncode == 0, upgraded.stderr
    readme = (path / "README.md").read_text()
    [command] = re.findall(r"^pip install -e \. .*$", readme, re.MULTILINE)
    installed = subprocess.run(
        [*pip, "-e", ".", *command.split()[4:]], cwd=path, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    tests = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    tests += ["--ignore=tests/test_services.py", f"--basetemp={tmp_path / 'pytest-tmp'}"]
    run = subprocess.run(tests, cwd=path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
