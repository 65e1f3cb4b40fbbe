"""Every combination of answers renders into a clean project.

For each variant of the full product (python_version rotating across it): no leftover Jinja, the
files and compose services that match the answers and no others, every Python file compiles,
every YAML and TOML file parses, ruff check, ruff format and mypy are clean, shellcheck passes,
and the text has none of the stray blank lines or trailing spaces that Jinja tends to leave.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import find_python
from copier import run_copy
from variants import CHROOT_PYTHONS, full_product, variant_id

LEFTOVER_JINJA = re.compile(r"\{\{|\{%|%\}|\{#")
SHELLCHECK = "shellcheck"


def rendered_files(project: Path) -> dict[str, Path]:
    return {
        path.relative_to(project).as_posix(): path
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.parts
    }


def expected_paths(answers: dict[str, Any], package: str) -> dict[str, bool]:
    """Paths whose presence depends on the answers: path -> whether it must exist."""
    docker = answers["use_docker"]
    scripts = "compose/production/flask"
    return {
        "app.py": True,
        f"{package}/__init__.py": True,
        f"{package}/config.py": True,
        f"{package}/celery_utils.py": True,
        f"{package}/errors.py": True,
        f"{package}/validation.py": True,
        f"{package}/main.py": True,
        f"{package}/users/models.py": True,
        f"{package}/users/tasks.py": True,
        f"{package}/users/views.py": True,
        f"{package}/users/commands.py": True,
        f"{package}/tasks/tasks.py": True,
        f"{package}/tasks/views.py": True,
        "migrations/env.py": True,
        "migrations/versions/0001_create_users_table.py": True,
        "pyproject.toml": True,
        "uv.lock": True,
        ".python-version": True,
        "README.md": True,
        ".gitignore": True,
        ".env": True,
        ".env.example": True,
        "tests/conftest.py": True,
        "tests/test_beat.py": answers["use_celery_beat"],
        "docker-compose.yml": docker,
        "docker-compose.prod.yml": docker,
        ".dockerignore": docker,
        "compose/local/flask/Dockerfile": docker,
        "compose/local/flask/start": docker,
        f"{scripts}/Dockerfile": docker,
        f"{scripts}/entrypoint": docker,
        f"{scripts}/start": docker,
        f"{scripts}/celery/worker/start": docker,
        f"{scripts}/celery/beat/start": docker and answers["use_celery_beat"],
        f"{scripts}/celery/flower/start": docker and answers["use_flower"],
        ".github/workflows/ci.yml": answers["ci"] == "github",
        ".github/dependabot.yml": answers["ci"] == "github",
        ".editorconfig": True,
        "Procfile": True,
    }


def expected_services(answers: dict[str, Any]) -> set[str]:
    services = {"web", "migrate", "celery_worker"}
    if answers["use_celery_beat"]:
        services.add("celery_beat")
    if answers["use_flower"]:
        services.add("flower")
    if answers["database"] != "sqlite":
        services.add("db")
    if answers["broker"] == "rabbitmq":
        services.add("rabbitmq")
    if answers["broker"] == "redis" or answers["result_backend"] == "redis":
        services.add("redis")
    return services


def expected_dependencies(answers: dict[str, Any]) -> dict[str, bool]:
    """Distribution names (as written in pyproject) -> whether the variant needs them."""
    redis = answers["broker"] == "redis" or answers["result_backend"] == "redis"
    return {
        "celery[redis]": redis,
        "psycopg[binary]": answers["database"] == "postgresql",
        "pymysql": answers["database"] == "mysql",
        "flower": answers["use_flower"],
        "gunicorn": True,
        "flask": True,
        "flask-migrate": True,
        "flask-sqlalchemy": True,
    }


def check_dependabot(project: Path, config: dict[str, Any], answers: dict[str, Any]) -> None:
    """Every file Dependabot can update has an entry, each entry a file to update, and a week
    brings one grouped pull request per ecosystem."""
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    docker = {"docker", "docker-compose"} if answers["use_docker"] else set()
    assert set(updates) == {"uv", "github-actions"} | docker
    manifests = {
        "uv": "uv.lock",
        "github-actions": ".github/workflows/ci.yml",
        "docker": "Dockerfile",
        "docker-compose": "docker-compose.yml",
    }
    for ecosystem, update in updates.items():
        for directory in update.get("directories", [update.get("directory")]):
            assert (project / directory.lstrip("/") / manifests[ecosystem]).is_file(), ecosystem
        assert update["schedule"]["interval"] == "weekly"
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]], ecosystem
    if docker:
        dockerfiles = project.glob("compose/*/*/Dockerfile")
        directories = {f"/{path.parent.relative_to(project).as_posix()}" for path in dockerfiles}
        assert set(updates["docker"]["directories"]) == directories


def check_editorconfig(text: dict[str, str]) -> None:
    """Every file follows the project's .editorconfig: the settings of each section whose
    pattern matches it (``*``, ``*.ext`` and ``*.{a,b}`` patterns)."""
    config = configparser.ConfigParser()
    config.read_string("[preamble]\n" + text[".editorconfig"])  # `root = true` comes first
    assert config["preamble"]["root"] == "true"
    patterns = config.sections()[1:]
    assert patterns[0] == "*", "the first section applies to every file"
    for name, content in text.items():
        settings: dict[str, str] = {}
        for pattern in patterns:
            choices = re.fullmatch(r"\*\.\{(.+)\}", pattern)
            globs = [f"*.{ext}" for ext in choices[1].split(",")] if choices else [pattern]
            if any(fnmatch.fnmatch(Path(name).name, glob) for glob in globs):
                settings.update(config[pattern])
        assert (settings["charset"], settings["end_of_line"]) == ("utf-8", "lf"), name
        assert "\r" not in content, f"CRLF in {name}"
        assert settings["indent_style"] == "space"
        assert not re.search(r"^ *\t", content, re.MULTILINE), f"tab indentation in {name}"
        if name.endswith((".yml", ".yaml", ".json")):
            size = int(settings["indent_size"])
            indents = {len(line) - len(line.lstrip(" ")) for line in content.splitlines()}
            assert all(indent % size == 0 for indent in indents), f"indentation of {name}"


@pytest.fixture(scope="session")
def typing_python(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a virtualenv with every dependency group of uv.lock (not the project):
    every variant's mypy runs on it, since one lock serves them all."""
    project = tmp_path_factory.mktemp("typing") / "project"
    run_copy(str(template_dir), project, defaults=True, quiet=True)
    venv = project.parent / "venv"
    sync = [sys.executable, "-m", "uv", "sync", "-q", "--locked", "--all-groups"]
    sync += ["--no-install-project", "-p", find_python("3.13")]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    run = subprocess.run(sync, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return venv / "bin" / "python"


def mypy(project: Path, python: Path, python_version: str) -> subprocess.CompletedProcess[str]:
    """The project's `mypy` (its [tool.mypy]), checking the code as ``python_version`` runs it."""
    cache = python.parent.parent.parent / "mypy-cache"  # shared: the libraries are checked once
    command = [python, "-m", "mypy", "--cache-dir", cache, "--python-version", python_version]
    return subprocess.run(command, cwd=project, capture_output=True, text=True)


def test_mypy_reports_a_type_error(template_dir: Path, tmp_path: Path, typing_python: Path) -> None:
    """The type check is no formality: a view that returns a number where a response is due,
    and a task called with a string, fail it."""
    project = tmp_path / "project"
    run_copy(str(template_dir), project, defaults=True, quiet=True)
    package = project / "flask_celery_app"
    assert mypy(project, typing_python, "3.13").returncode == 0
    views = package / "users" / "views.py"
    views.write_text(views.read_text().replace("return jsonify(user.to_dict())", "return 42", 1))
    tasks = package / "tasks" / "views.py"
    tasks.write_text(tasks.read_text() + '\n\ndef misuse() -> None:\n    divide.delay("x")\n')
    run = mypy(project, typing_python, "3.13")
    assert run.returncode == 1
    errors = {line.split(":")[0] for line in run.stdout.splitlines() if ": error:" in line}
    expected = {f"flask_celery_app/{blueprint}/views.py" for blueprint in ("users", "tasks")}
    assert errors == expected, run.stdout


def is_shell_script(path: Path) -> bool:
    with path.open("rb") as file:
        first_line = file.readline()
    return first_line.startswith(b"#!") and (b"bash" in first_line or b"sh" in first_line.split())


@pytest.mark.parametrize("answers", full_product(), ids=variant_id)
def test_variant_renders_clean(
    copie, template_dir: Path, typing_python: Path, answers: dict[str, Any]
) -> None:
    result = copie.copy(extra_answers=answers, template_dir=template_dir)
    assert result.exit_code == 0, result.exception
    # pytest-copie passes answers as defaults: a misspelled key would silently test the default.
    assert {key: result.answers[key] for key in answers} == answers

    project = result.project_dir
    files = rendered_files(project)
    package = result.answers["package_name"]

    for path, present in expected_paths(answers, package).items():
        assert (path in files) is present, f"{path} should {'' if present else 'not '}exist"

    text = {name: path.read_text() for name, path in files.items()}
    for name, content in text.items():
        allowed = name.startswith(".github/") and "${{" in content
        assert allowed or not LEFTOVER_JINJA.search(content), f"leftover Jinja in {name}"
        assert not re.search(r"[ \t]+$", content, re.MULTILINE), f"trailing spaces in {name}"
        assert "\n\n\n" not in content or name.endswith((".py", ".mako")), f"blank lines: {name}"
        if content:
            assert content.endswith("\n"), f"no newline at the end of {name}"
            assert not content.endswith("\n\n"), f"blank lines at the end of {name}"

    check_editorconfig(text)
    processes = [line.split(":")[0] for line in text["Procfile"].splitlines() if line[:1].isalpha()]
    optional = {"beat": answers["use_celery_beat"], "flower": answers["use_flower"]}
    assert processes == ["web", "worker"] + [name for name, chosen in optional.items() if chosen]

    for name, content in text.items():
        if name.endswith(".py"):
            compile(content, name, "exec")
        elif name.endswith((".yml", ".yaml")):
            assert yaml.safe_load(content) is not None, name
        elif name.endswith(".toml"):
            tomllib.loads(content)

    pyproject = tomllib.loads(text["pyproject.toml"])
    assert pyproject["project"]["requires-python"] == f">={answers['python_version']}"
    # The `ruff check` below runs bandit's security rules (S) on the application code.
    assert "S" in pyproject["tool"]["ruff"]["lint"]["select"]
    assert "S" not in str(pyproject["tool"]["ruff"]["lint"].get("ignore", []))
    # What `uv sync` installs: the dependencies and the default groups (dev aside, the tools).
    groups = pyproject["tool"]["uv"]["default-groups"]
    assert "dev" in groups
    requirements = pyproject["project"]["dependencies"] + [
        requirement
        for group in groups
        if group != "dev"
        for requirement in pyproject["dependency-groups"][group]
    ]
    dependencies = {re.split(r"[<>=~!]", dep)[0] for dep in requirements}
    for dependency, needed in expected_dependencies(answers).items():
        assert (dependency in dependencies) is needed, f"dependency {dependency}"

    assert text[".python-version"] == f"{answers['python_version']}\n"  # for pyenv and uv
    # .env.example's URLs are those of the project's database and broker only.
    schemes = set(re.findall(r"(?:db\+)?([a-z]+)(?:\+\w+)?://", text[".env.example"]))
    database_scheme = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}
    allowed = {database_scheme[answers["database"]], "redis", "amqp"}
    assert schemes <= allowed, schemes - allowed
    env_names = {line.split("=")[0] for line in text[".env"].splitlines() if "=" in line}
    assert env_names == {"SECRET_KEY", "FLOWER_BASIC_AUTH", "DATABASE_PASSWORD", "BROKER_PASSWORD"}
    if answers["use_docker"]:
        for name in ("docker-compose.yml", "docker-compose.prod.yml"):
            compose = yaml.safe_load(text[name])
            assert set(compose["services"]) == expected_services(answers), name

    # One lock serves every variant: uv finds it up to date for these answers, offline. uv needs
    # the answered Python: tests/test_new_pythons.py checks CHROOT_PYTHONS' in its chroot.
    if answers["python_version"] not in CHROOT_PYTHONS:
        python = find_python(answers["python_version"])
        uv_lock = [sys.executable, "-m", "uv", "lock", "--locked", "--offline", "-q", "-p", python]
        run = subprocess.run(uv_lock, cwd=project, capture_output=True, text=True)
        assert run.returncode == 0, f"uv.lock is stale for this variant:\n{run.stderr}"
    lock = tomllib.loads(text["uv.lock"])
    [own] = [package for package in lock["package"] if package.get("source") == {"editable": "."}]
    assert set(own["dev-dependencies"]) == set(pyproject["dependency-groups"])

    if answers["ci"] == "github":
        check_dependabot(project, yaml.safe_load(text[".github/dependabot.yml"]), answers)

    ruff = [sys.executable, "-m", "ruff"]
    for command in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        run = subprocess.run([*ruff, *command], cwd=project, capture_output=True, text=True)
        assert run.returncode == 0, f"ruff {command[0]}:\n{run.stdout}{run.stderr}"
    run = mypy(project, typing_python, answers["python_version"])
    assert run.returncode == 0, f"mypy:\n{run.stdout}{run.stderr}"

    scripts = [path for path in files.values() if is_shell_script(path)]
    assert bool(scripts) is answers["use_docker"]
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script.relative_to(project)} is not executable"
    if scripts:
        run = subprocess.run(
            [SHELLCHECK, *map(str, scripts)], cwd=project, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
