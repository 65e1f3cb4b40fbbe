"""Sessions for working on the template: ``nox -l`` lists them."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
import dockerharness  # noqa: E402
from variants import COVERING, local_python, variant_id  # noqa: E402

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
REQUIREMENTS = "requirements-dev.txt"


@nox.session
def lint(session: nox.Session) -> None:
    """Lint the template's own Python, shell and workflow files (generated ones: tests)."""
    session.install("-r", REQUIREMENTS)
    session.run("ruff", "check", "tests", "noxfile.py", "benchmarks")
    session.run("ruff", "format", "--check", "tests", "noxfile.py", "benchmarks")
    session.run("shellcheck", ".ci/run")
    session.run("zizmor", "--offline", "--no-config", ".github/workflows")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the template's whole test suite (pass pytest arguments after --)."""
    session.install("-r", REQUIREMENTS)
    session.run("pytest", *session.posargs)


def generate(session: nox.Session, answers: dict, dest: Path) -> None:
    """Render ``answers`` from the working tree into ``dest``, with a virtualenv in .venv."""
    shutil.rmtree(dest, ignore_errors=True)
    data = [f"--data={key}={value}" for key, value in answers.items()]
    session.run(
        "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD", *data, str(ROOT), str(dest)
    )
    session.chdir(dest)
    session.run("uv", "venv", "-q", "-p", interpreter(answers["python_version"]), ".venv")


def interpreter(version: str) -> str:
    """A local Python ``version``: uv must not try to download one."""
    path = local_python(version)
    if path is None:
        raise SystemExit(f"no Python {version} on this machine")
    return path


def project_checks(session: nox.Session) -> None:
    session.run(".venv/bin/python", "-m", "pytest", "-q", external=True)
    session.run(".venv/bin/ruff", "check", ".", external=True)
    session.run(".venv/bin/ruff", "format", "--check", ".", external=True)
    session.run(".venv/bin/mypy", external=True)


VARIANT_IDS = [variant_id(answers) for answers in COVERING]


@nox.session
@nox.parametrize("answers", COVERING, ids=VARIANT_IDS)
def render(session: nox.Session, answers: dict) -> None:
    """Generate one covering variant into .nox/render/<variant> and run its own checks."""
    session.install("-r", REQUIREMENTS)
    generate(session, answers, ROOT / ".nox" / "render" / variant_id(answers))
    session.run("uv", "sync", "-q", "--locked", "-p", ".venv/bin/python")
    project_checks(session)


@nox.session
@nox.parametrize("answers", COVERING, ids=VARIANT_IDS)
def latest(session: nox.Session, answers: dict) -> None:
    """Like render, but with the newest release of every dependency (uv.lock upgraded first)."""
    session.install("-r", REQUIREMENTS)
    generate(session, answers, ROOT / ".nox" / "latest" / variant_id(answers))
    session.run("uv", "sync", "-q", "--upgrade", "--refresh", "-p", ".venv/bin/python")
    session.run("uv", "pip", "list", "-p", ".venv/bin/python")
    project_checks(session)


@nox.session
def boot(session: nox.Session) -> None:
    """Boot each database x broker pair from its own start scripts against local services."""
    session.install("-r", REQUIREMENTS)
    session.run("pytest", "-m", "boot", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict into site/ (``-- serve`` previews it)."""
    session.install("-r", REQUIREMENTS)
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark the default variant against its baselines: docs/performance.md (args after --)."""
    session.install("-r", REQUIREMENTS)
    if not shutil.which("wrk"):
        if os.geteuid() != 0:
            session.error("wrk is missing: install the Debian package (apt-get install wrk)")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=os.environ | env)
        if installed.returncode != 0:  # a fresh machine may have no package lists yet
            session.run("apt-get", "update", "-qq", external=True, env=env)
            session.run("apt-get", "install", "-y", "-qq", "wrk", external=True, env=env)
    session.run("python", "benchmarks/bench.py", *session.posargs)


LOCK = ROOT / "template" / "uv.lock.jinja"


def lock_variables(project: Path) -> dict[str, str]:
    """What differs between the locks of two projects, as the rendered ``project`` has it, with
    the template variable standing for it: the rest of uv.lock is the same in every project."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    return {
        f'name = "{pyproject["project"]["name"]}"': 'name = "{{ project_slug }}"',
        f'requires-python = "{pyproject["project"]["requires-python"]}"': (
            'requires-python = ">={{ python_version }}"'
        ),
        f"default-groups = {json.dumps(pyproject['tool']['uv']['default-groups'])}": (
            "default-groups = {{ dependency_groups | tojson }}"
        ),
    }


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh template/uv.lock.jinja: the newest versions every project can install.

    One lock serves every project: pyproject.toml declares every integration as a dependency
    group in every project, so only the project's name, its Python and its default groups
    differ, and those are template variables. ``-- --keep`` keeps today's versions where
    pyproject.toml still allows them.
    """
    session.install("-r", REQUIREMENTS)
    project = Path(session.create_tmp()) / "lock"
    shutil.rmtree(project, ignore_errors=True)
    session.run(
        "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD",
        "--data=python_version=3.11", str(ROOT), str(project),
    )  # fmt: skip
    variables = lock_variables(project)
    keep = "--keep" in session.posargs
    if keep:  # today's lock, as this project's
        current = LOCK.read_text()
        for value, variable in variables.items():
            current = current.replace(variable, value)
        (project / "uv.lock").write_text(current)
    python = interpreter("3.11")
    upgrade = [] if keep else ["--upgrade"]
    session.run("uv", "lock", "--quiet", "-p", python, *upgrade, "--project", str(project))
    text = (project / "uv.lock").read_text()
    if any(mark in text for mark in ("{{", "{%", "{#")):
        session.error("uv.lock holds Jinja syntax: it cannot be a template as it is")
    for value, variable in variables.items():
        if text.count(value) != 1:
            session.error(f"expected {value!r} once in uv.lock")
        text = text.replace(value, variable)
    LOCK.write_text(text)
    session.log(f"wrote {LOCK.relative_to(ROOT)}; now run the tests")


@nox.session
def stack(session: nox.Session) -> None:
    """Start a generated project's development stack on Docker and leave it running.

    ``-- --data database=mysql --data broker=rabbitmq`` renders that variant into a new folder,
    ``-- --project PATH`` takes an existing project, ``-- --down`` removes the stack and stops
    the Docker engine started for it (tests/dockerharness.py).
    """
    parser = argparse.ArgumentParser(prog="nox -s stack --")
    parser.add_argument("--data", action="append", default=[], metavar="QUESTION=ANSWER")
    parser.add_argument("--project", type=Path, help="an existing generated project")
    parser.add_argument("--down", action="store_true", help="remove the stack left running")
    args = parser.parse_args(session.posargs)
    try:
        if args.down:
            dockerharness.stack_down()
            return
        if args.project:
            project = args.project.resolve()
        else:
            session.install("-r", REQUIREMENTS)
            answers = dict(item.split("=", 1) for item in args.data)
            name = "-".join(f"{key}-{value}" for key, value in sorted(answers.items()))
            project = ROOT / ".nox" / "stack-projects" / (name or "defaults")
            shutil.rmtree(project, ignore_errors=True)
            data = [f"--data={item}" for item in args.data]
            session.run(
                "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD", *data, str(ROOT),
                str(project),
            )  # fmt: skip
        running = dockerharness.stack_up(project)
    except dockerharness.HarnessError as error:
        session.error(str(error))
    session.log(f"project: {project}")
    for container in running.ps():
        for publisher in container.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                url = f"http://{publisher['URL']}:{publisher['PublishedPort']}"
                session.log(f"{container['Service']}: {url}")
    env = (project / ".env").read_text()
    flower = re.search(r"^FLOWER_BASIC_AUTH=(.*):(.*)$", env, re.M)
    if flower and "flower" in running.config()["services"]:
        session.log(f"flower: user {flower[1]}, password {flower[2]}")
    session.log(f"docker: DOCKER_HOST={running.engine.host} DOCKER_CONFIG={running.engine.config}")
    session.log("remove it with: nox -s stack -- --down")
