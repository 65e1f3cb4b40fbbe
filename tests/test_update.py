"""`copier update` never loses a user's work, and brings the template's changes.

The tests run against a temporary git repository holding three releases of this template:
v0.1.0 and v0.2.0, the template as it was released at commits ``V0_1_0`` and ``V0_2_0`` (taken
from this repository's history), and v0.3.0, the working tree. No real tag is needed, and
uncommitted work is tested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import find_python, git
from copier import run_copy, run_update

LATEST = "v0.3.0"  # the working tree (conftest.py: template_repo)
COMMON = {"defaults": True, "quiet": True, "unsafe": True}  # unsafe: updates run _migrations
SECRET_FILES = {".env"}  # random per generation: compared separately


def generate(template_repo: Path, dst: Path, ref: str, **answers: Any) -> Path:
    run_copy(str(template_repo), dst, data=answers, vcs_ref=ref, **COMMON)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", f"Generate from the template {ref}")
    return dst


def tree(project: Path) -> dict[str, str]:
    """Every file of the project (outside .git), by path, with its text."""
    return {
        path.relative_to(project).as_posix(): path.read_text()
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


def env_file(project: Path) -> dict[str, str]:
    lines = (project / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def assert_clean_merge(project: Path) -> None:
    """No conflict marker in any file, no .rej file, nothing left unmerged in git."""
    for rel, text in tree(project).items():
        assert not rel.endswith(".rej"), f"rejected hunks: {rel}"
        assert not re.search(r"^(<<<<<<<|>>>>>>>) ", text, re.MULTILINE), f"conflict in {rel}"
    assert not git(project, "diff", "--name-only", "--diff-filter=U")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


USER_MODULE = '"""Reports: a module the user added."""\n\n\ndef total() -> int:\n    return 0\n'
USER_README = "\n## Deployment notes\n\nOur team deploys this with Ansible.\n"


def make_user_edits(project: Path, package: str = "flask_celery_app") -> None:
    """A view changed, a module added, the README edited: then committed."""
    edit(project / package / "main.py", 'return "Hello, World!"', 'return "Hello, team!"')
    (project / package / "reports.py").write_text(USER_MODULE)
    edit(project / "README.md", "\n## Layout\n", f"{USER_README}\n## Layout\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "User edits")


def test_update_keeps_user_edits_and_brings_template_changes(
    template_repo: Path, tmp_path: Path
) -> None:
    project = generate(template_repo, tmp_path / "project", "v0.1.0")
    secret_key = env_file(project)["SECRET_KEY"]
    old_database_password = env_file(project)["POSTGRES_PASSWORD"]
    make_user_edits(project)

    run_update(project, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == LATEST
    assert_clean_merge(project)
    # The user's work is all there.
    assert 'return "Hello, team!"' in (project / "flask_celery_app" / "main.py").read_text()
    assert (project / "flask_celery_app" / "reports.py").read_text() == USER_MODULE
    assert USER_README in (project / "README.md").read_text()
    # The template's changes arrived: files 0.2.0 added, text it changed.
    assert (project / ".pre-commit-config.yaml").is_file()
    assert "DATABASE_PASSWORD:?" in (project / "docker-compose.yml").read_text()
    assert "## Reliability and security" in (project / "README.md").read_text()
    # The secrets are kept; the v0.2.0 migration renamed the database password.
    env = env_file(project)
    assert env["SECRET_KEY"] == secret_key
    assert env["DATABASE_PASSWORD"] == old_database_password
    assert "POSTGRES_PASSWORD" not in env


def test_migration_adds_secrets_that_old_projects_lack(template_repo: Path, tmp_path: Path) -> None:
    project = generate(
        template_repo, tmp_path / "project", "v0.1.0", database="sqlite", use_flower=False
    )
    before = env_file(project)
    assert "FLOWER_BASIC_AUTH" not in before
    run_update(project, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)
    after = env_file(project)
    assert after["SECRET_KEY"] == before["SECRET_KEY"]
    assert len(after["FLOWER_BASIC_AUTH"].split(":", 1)[1]) >= 32
    assert len(after["DATABASE_PASSWORD"]) >= 32
    assert len(after["BROKER_PASSWORD"]) >= 32
    # Now the user can turn Flower on with an update: its password is already there.
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Update")
    run_update(project, data={"use_flower": True}, vcs_ref=LATEST, overwrite=True, **COMMON)
    assert (project / "compose/production/flask/celery/flower/start").is_file()
    assert env_file(project)["FLOWER_BASIC_AUTH"] == after["FLOWER_BASIC_AUTH"]


def test_update_to_0_3_0_gives_the_broker_a_password(template_repo: Path, tmp_path: Path) -> None:
    project = generate(template_repo, tmp_path / "project", "v0.2.0", broker="rabbitmq")
    with (project / ".env").open("a") as env:
        env.write("CELERY_LOGLEVEL=DEBUG\n")
    before = env_file(project)
    assert "BROKER_PASSWORD" not in before

    run_update(project, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)

    assert_clean_merge(project)
    after = env_file(project)
    assert {name: after[name] for name in ("SECRET_KEY", "DATABASE_PASSWORD")} == {
        name: before[name] for name in ("SECRET_KEY", "DATABASE_PASSWORD")
    }
    assert len(after["BROKER_PASSWORD"]) >= 32
    assert (after["LOG_LEVEL"], "CELERY_LOGLEVEL" in after) == ("DEBUG", False)
    assert "${BROKER_PASSWORD:?" in (project / "docker-compose.prod.yml").read_text()


def test_update_from_0_2_0_installs_from_uv_lock(template_repo: Path, tmp_path: Path) -> None:
    """0.2.0 projects installed from constraints.txt: after the update, uv.lock replaces it, and
    uv finds the lock up to date for the project's answers, as they are."""
    project = generate(template_repo, tmp_path / "project", "v0.2.0", database="mysql")
    assert (project / "constraints.txt").is_file()
    make_user_edits(project)

    run_update(project, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)

    assert_clean_merge(project)
    assert not (project / "constraints.txt").exists()
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["default-groups"] == ["dev", "flower", "mysql", "redis"]
    python = find_python(
        yaml.safe_load((project / ".copier-answers.yml").read_text())["python_version"]
    )
    uv_lock = [sys.executable, "-m", "uv", "lock", "--locked", "--offline", "-q", "-p", python]
    locked = subprocess.run(uv_lock, cwd=project, capture_output=True, text=True, check=False)
    assert locked.returncode == 0, locked.stderr


def test_an_update_without_env_file_works(template_repo: Path, tmp_path: Path) -> None:
    """.env is untracked: a fresh clone or a CI job updates without it."""
    project = generate(template_repo, tmp_path / "project", "v0.1.0")
    (project / ".env").unlink()
    run_update(project, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)
    assert_clean_merge(project)
    # The migrations leave it alone; the update renders a fresh one, as a copy does.
    assert set(env_file(project)) == {
        "SECRET_KEY", "FLOWER_BASIC_AUTH", "DATABASE_PASSWORD", "BROKER_PASSWORD"
    }  # fmt: skip


BASE_ANSWERS = {
    "database": "postgresql",
    "broker": "redis",
    "use_flower": False,
    "use_celery_beat": True,
    "use_docker": True,
}
ANSWER_CHANGES = {
    "flower-on": {"use_flower": True},
    "broker-rabbitmq": {"broker": "rabbitmq", "broker_url": "amqp://guest:guest@127.0.0.1:5672//"},
    "database-sqlite": {"database": "sqlite"},
    "database-mysql-beat-off": {"database": "mysql", "use_celery_beat": False},
    "docker-off": {"use_docker": False},
}


@pytest.mark.parametrize("change", ANSWER_CHANGES.values(), ids=ANSWER_CHANGES.keys())
def test_changing_answers_equals_a_fresh_generation(
    template_repo: Path, tmp_path: Path, change: dict[str, Any]
) -> None:
    project = generate(template_repo, tmp_path / "project", LATEST, **BASE_ANSWERS)
    make_user_edits(project)
    secrets_before = (project / ".env").read_bytes()

    run_update(project, data=change, vcs_ref=LATEST, overwrite=True, conflict="rej", **COMMON)

    assert_clean_merge(project)
    assert (project / ".env").read_bytes() == secrets_before
    fresh = tmp_path / "fresh"
    run_copy(str(template_repo), fresh, data={**BASE_ANSWERS, **change}, vcs_ref=LATEST, **COMMON)
    updated, expected = tree(project), tree(fresh)
    for secrets_file in SECRET_FILES:  # random per generation: same variables, other values
        assert set(env_file(project)) == set(env_file(fresh))
        updated.pop(secrets_file), expected.pop(secrets_file)
    # Apart from the user's edits, the updated project is a fresh generation.
    assert updated.pop("flask_celery_app/reports.py") == USER_MODULE
    updated["README.md"] = updated["README.md"].replace(USER_README, "", 1)
    main = "flask_celery_app/main.py"
    updated[main] = updated[main].replace("Hello, team!", "Hello, World!")
    assert sorted(updated) == sorted(expected)
    for rel, text in expected.items():
        assert updated[rel] == text, f"{rel} differs from a fresh generation"


def test_check_update_reports_the_newer_version(template_repo: Path, tmp_path: Path) -> None:
    project = generate(template_repo, tmp_path / "project", "v0.1.0")
    check = subprocess.run(
        [sys.executable, "-m", "copier", "check-update", "--output-format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout) == {
        "update_available": True,
        "current_version": "0.1.0",
        "latest_version": LATEST.removeprefix("v"),
    }


@pytest.fixture
def committed_project(template_repo: Path, tmp_path: Path) -> Path:
    return generate(template_repo, tmp_path / "project", LATEST, use_docker=False)


def pre_commit(project: Path) -> subprocess.CompletedProcess[str]:
    git(project, "add", "-A")
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files", "--hook-stage", "pre-commit"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PRE_COMMIT_HOME": str(project.parent / "pre-commit")},
    )


def test_pre_commit_accepts_a_clean_project(committed_project: Path) -> None:
    run = pre_commit(committed_project)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize(
    ("path", "text", "hook"),
    [
        (
            "README.md",
            "<<<<<<< before updating\nmine\n=======\ntheirs\n>>>>>>> after updating\n",
            "no-merge-conflict-markers",
        ),
        ("app.py.rej", "@@ -1 +1 @@\n-old\n+new\n", "no-rej-files"),
    ],
)
def test_pre_commit_refuses_update_leftovers(
    committed_project: Path, path: str, text: str, hook: str
) -> None:
    target = committed_project / path
    target.write_text((target.read_text() if target.exists() else "") + text)
    run = pre_commit(committed_project)
    assert run.returncode != 0
    assert f"- hook id: {hook}" in run.stdout
    assert path in run.stdout
