"""Shared fixtures for the template's own test suite.

The template is rendered from a snapshot of the working tree (tracked files plus untracked,
non-ignored ones), so uncommitted edits are tested and nothing depends on git tags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    # Copier settings of the machine running the tests must not leak into them: point Copier at
    # an empty settings file (a user's `defaults:` would otherwise replace the template's).
    settings = Path(config.cache.mkdir("copier")) / "settings.yml" if config.cache else None
    if settings is None:  # pragma: no cover - cache provider disabled
        settings = REPO / ".pytest_cache" / "copier-settings.yml"
        settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text("defaults: {}\n")
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


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain (non-git) copy of the working tree: renders are faster and see uncommitted work."""
    dst = tmp_path_factory.mktemp("template") / "flask-celery-template"
    for rel in working_tree_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dst
