"""Sessions for working on the template: ``nox -l`` lists them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
from variants import COVERING, variant_id  # noqa: E402

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
REQUIREMENTS = "requirements-dev.txt"


@nox.session
def lint(session: nox.Session) -> None:
    """Lint the template's own Python and shell files."""
    session.install("-r", REQUIREMENTS)
    session.run("ruff", "check", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "tests", "noxfile.py")
    session.run("shellcheck", ".ci/run")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the template's whole test suite (pass pytest arguments after --)."""
    session.install("-r", REQUIREMENTS)
    session.run("pytest", *session.posargs)


@nox.session
@nox.parametrize("answers", COVERING, ids=[variant_id(answers) for answers in COVERING])
def render(session: nox.Session, answers: dict) -> None:
    """Generate one covering variant into .nox/render/<variant> and run its own tests."""
    session.install("-r", REQUIREMENTS)
    dest = ROOT / ".nox" / "render" / variant_id(answers)
    shutil.rmtree(dest, ignore_errors=True)
    data = [f"--data={key}={value}" for key, value in answers.items()]
    session.run(
        "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD", *data, str(ROOT), str(dest)
    )
    session.chdir(dest)
    session.run("uv", "venv", "-q", "-p", answers["python_version"], ".venv")
    session.run("uv", "pip", "install", "-q", "-p", ".venv/bin/python", "-e", ".[dev]")
    session.run(".venv/bin/python", "-m", "pytest", "-q", external=True)
    session.run(".venv/bin/ruff", "check", ".", external=True)
    session.run(".venv/bin/ruff", "format", "--check", ".", external=True)
