"""No secret in tracked files: the template side.

Copier computes SECRET_KEY and the Flower password (`secret: true`, `when: false`) and renders
them only into `.env`. They must be strong and fresh per render, never recorded in the answers
file, absent from every file git would commit, and `.env` must be kept out of git (out of the
Docker build context: tests/test_container_files.py, and the production image itself:
tests/test_compose.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml

ANSWERS_FILE = ".copier-answers.yml"
SECRET_QUESTIONS = ("secret_key", "flower_password", "database_password")

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {"use_flower": True, "use_docker": True, "database": "postgresql", "ci": "github"},
    "bare": {"use_flower": False, "use_docker": False, "database": "sqlite", "ci": "none"},
    "flower-no-docker": {
        "use_flower": True,
        "use_docker": False,
        "database": "sqlite",
        "ci": "github",
        "broker": "rabbitmq",
    },
    "docker-no-flower": {
        "use_flower": False,
        "use_docker": True,
        "database": "mysql",
        "ci": "none",
        "result_backend": "database",
    },
}


def git(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Ignore the machine's git config: a global excludesFile listing `.env` must not make the
    # template's own .gitignore look sufficient.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", *args], cwd=project, env=env, check=check, capture_output=True, text=True
    )


def parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not a NAME=value line in .env: {line!r}"
            env[name.strip()] = value.strip().strip("'\"")
    return env


@dataclass(frozen=True)
class Project:
    path: Path
    answers: dict[str, Any]
    env: dict[str, str]
    tracked: list[str]  # what `git add -A` stages in a fresh repository

    @property
    def secret_key(self) -> str:
        return self.env["SECRET_KEY"]

    @property
    def flower_password(self) -> str:
        user, sep, password = self.env["FLOWER_BASIC_AUTH"].partition(":")
        assert user, "FLOWER_BASIC_AUTH must be user:password"
        assert sep, "FLOWER_BASIC_AUTH must be user:password"
        return password

    @property
    def database_password(self) -> str:
        """The password of the Compose database service."""
        return self.env["DATABASE_PASSWORD"]

    @property
    def secrets(self) -> list[str]:
        return [self.secret_key, self.flower_password, self.database_password]


def render(template_dir: Path, dst: Path, data: dict[str, Any]) -> Project:
    copier.run_copy(str(template_dir), str(dst), data=data, defaults=True, quiet=True)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    tracked = git(dst, "ls-files", "-z").stdout.split("\0")
    return Project(
        path=dst,
        answers=yaml.safe_load((dst / ANSWERS_FILE).read_text()),
        env=parse_env((dst / ".env").read_text()),
        tracked=[path for path in tracked if path],
    )


@pytest.fixture(scope="module")
def generate(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Project]:
    """`generate(variant, copy=0)`: each (variant, copy) is rendered once per module."""
    cache: dict[tuple[str, int], Project] = {}

    def _generate(variant: str, copy: int = 0) -> Project:
        if (variant, copy) not in cache:
            dst = tmp_path_factory.mktemp(f"secrets-{variant}-{copy}") / "project"
            cache[variant, copy] = render(template_dir, dst, VARIANTS[variant])
        return cache[variant, copy]

    return _generate


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_answers_are_the_ones_asked(generate: Callable[..., Project], variant: str) -> None:
    answers = generate(variant).answers
    assert {name: answers[name] for name in VARIANTS[variant]} == VARIANTS[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_secret_key_is_long_and_random_looking(
    generate: Callable[..., Project], variant: str
) -> None:
    key = generate(variant).secret_key
    assert len(key) >= 32, key
    assert len(set(key)) >= 10, f"SECRET_KEY does not look random: {key!r}"
    assert key.isprintable()
    assert " " not in key


@pytest.mark.parametrize("variant", VARIANTS)
def test_flower_password_is_long_and_random_looking(
    generate: Callable[..., Project], variant: str
) -> None:
    password = generate(variant).flower_password
    assert len(password) >= 16, password
    assert len(set(password)) >= 8, f"Flower password does not look random: {password!r}"


def test_every_render_gets_fresh_secrets(generate: Callable[..., Project]) -> None:
    first, second = generate("defaults"), generate("defaults", copy=1)
    assert first.secret_key != second.secret_key
    assert first.flower_password != second.flower_password
    keys = [generate(variant).secret_key for variant in VARIANTS]
    assert len(set(keys)) == len(keys)
    assert first.flower_password not in first.secret_key  # two secrets, not one reused


@pytest.mark.parametrize("variant", VARIANTS)
def test_answers_file_holds_no_secret(generate: Callable[..., Project], variant: str) -> None:
    project = generate(variant)
    assert not set(SECRET_QUESTIONS) & set(project.answers)
    text = (project.path / ANSWERS_FILE).read_text()
    for secret in project.secrets:
        assert secret not in text


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_tracked_file_holds_a_secret(generate: Callable[..., Project], variant: str) -> None:
    project = generate(variant)
    assert ANSWERS_FILE in project.tracked
    assert ".gitignore" in project.tracked
    assert ".env" not in project.tracked
    for path in project.tracked:
        content = (project.path / path).read_bytes()
        for secret in project.secrets:
            assert secret.encode() not in content, f"a secret is in tracked file {path}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_env_is_ignored_by_the_projects_gitignore(
    generate: Callable[..., Project], variant: str
) -> None:
    project = generate(variant)
    check = git(project.path, "check-ignore", "--verbose", ".env", check=False)
    assert check.returncode == 0, ".env is not ignored by git"
    assert check.stdout.split(":", 1)[0] == ".gitignore", check.stdout  # source:line:pattern


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gets_every_secret(generate: Callable[..., Project], variant: str) -> None:
    """The same four secrets whatever the answers: a later `copier update` that turns Flower on
    or switches databases needs no secret that .env (never rewritten by updates) would lack."""
    project = generate(variant)
    assert set(project.env) == {
        "SECRET_KEY", "FLOWER_BASIC_AUTH", "DATABASE_PASSWORD", "BROKER_PASSWORD"
    }  # fmt: skip
    assert len(project.database_password) >= 32
    assert project.database_password != generate(variant, copy=1).database_password
