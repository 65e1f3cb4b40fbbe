"""Shared fixtures for the template's own test suite.

The template is rendered from a snapshot of the working tree (tracked files plus untracked,
non-ignored ones), so uncommitted edits are tested and nothing depends on git tags.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from dockerharness import Engine, HarnessError, engine
from variants import local_python

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Figures worth reading in the test output (timings, image sizes), printed in the summary.
REPORT: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Copier settings of the machine running the tests must not leak into them: point Copier at
    # an empty settings file (a user's `defaults:` would otherwise replace the template's).
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    settings = Path(cache.mkdir("copier")) / "settings.yml" if cache else None
    if settings is None:
        settings = REPO / ".pytest_cache" / "copier-settings.yml"
        settings.parent.mkdir(parents=True, exist_ok=True)
    # Every xdist worker runs this while the others may be reading the file: replace it whole.
    partial = settings.with_name(f"{settings.name}.{os.getpid()}")
    partial.write_text("defaults: {}\n")
    partial.replace(settings)
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    # Git identity for commits made by tests, whatever the machine's git config says.
    for var, value in {
        "GIT_AUTHOR_NAME": "Template Tests",
        "GIT_AUTHOR_EMAIL": "tests@example.com",
        "GIT_COMMITTER_NAME": "Template Tests",
        "GIT_COMMITTER_EMAIL": "tests@example.com",
    }.items():
        os.environ.setdefault(var, value)
    # pytest-copie resolves its --template option against the current directory.
    if hasattr(config.option, "template"):
        config.option.template = str(REPO)


def working_tree_files(repo: Path = REPO) -> list[str]:
    """Paths git would commit from ``repo``: tracked and untracked files, minus ignored ones."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def git(cwd: Path, *args: str) -> str:
    """The output of ``git *args`` run in ``cwd``; CalledProcessError when it fails."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


V0_1_0 = "f2999c3769b38c4f179b95ec23a10ddd34d09756"  # the commit released as v0.1.0
V0_2_0 = "1cecb315b8898240bb2ed1573a3555db9418892b"  # the commit released as v0.2.0
WORKING_TREE_RELEASE = "v0.3.0"  # the tag template_repo gives the working tree


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template repository tagged v0.1.0 and v0.2.0 (the released commits) and v0.3.0 (the
    working tree): what `copier update` reads releases from (tests/test_update.py and
    tests/test_template_update.py). One per test module: a module may add releases on top."""
    repo = tmp_path_factory.mktemp("releases") / "flask-celery-template"
    repo.mkdir()
    git(repo, "init", "-q")
    for commit, tag in ((V0_1_0, "v0.1.0"), (V0_2_0, "v0.2.0")):
        git(repo, "rm", "-q", "-r", "--ignore-unmatch", ".")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", tag)
        git(repo, "tag", tag)
    git(repo, "rm", "-q", "-r", ".")
    for rel in working_tree_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", WORKING_TREE_RELEASE)
    git(repo, "tag", WORKING_TREE_RELEASE)
    return repo


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain (non-git) copy of the working tree: renders are faster and see uncommitted work."""
    dst = tmp_path_factory.mktemp("template") / "flask-celery-template"
    for rel in working_tree_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dst


def find_python(version: str) -> str:
    """A working interpreter for ``version`` (PATH, then pyenv); skipped locally, failed in CI."""
    path = local_python(version)
    if path:
        return path
    unavailable(f"no Python {version} interpreter on this machine")


def dev_tool(name: str) -> str:
    """The executable ``name`` that requirements-dev.txt installs (beside this Python first)."""
    beside_python = Path(sys.executable).with_name(name)
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -r requirements-dev.txt")
    return found


def require_service(name: str, port: int, host: str = "127.0.0.1") -> None:
    """Skip (locally) or fail (under CI=true) when a service does not accept connections."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        unavailable(f"{name} is not reachable on {host}:{port}")


def unavailable(message: str) -> NoReturn:
    """Skip the test (locally) or fail it (under CI=true): something it needs is missing."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("figures")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """A Docker engine with Compose v2 (tests/dockerharness.py); one started here stops at the
    end, whatever the tests did."""
    try:
        found = engine(owner="pytest")
    except HarnessError as error:
        unavailable(str(error))
    found.objects_at_start = found.objects()
    try:
        yield found
    finally:
        found.stop()
