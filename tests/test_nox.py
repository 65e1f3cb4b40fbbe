"""`nox -l` lists the sessions contributors are told about, each with a one-line description."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from variants import COVERING, variant_id

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = {"lint", "tests", "render", "boot", "latest", "bench", "docs", "lock", "stack"}
PARAMETRIZED = {"render", "latest"}


def nox_list() -> str:
    command = [sys.executable, "-m", "nox", "-l"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def listed_sessions() -> dict[str, str]:
    """Session name (with its parameters) -> description, as `nox -l` prints them."""
    return dict(re.findall(r"^[*-] (\S+) -> (.+)$", nox_list(), flags=re.MULTILINE))


def test_every_session_is_listed_with_a_description() -> None:
    listed = listed_sessions()
    names = {name.split("(")[0] for name in listed}
    assert names == SESSIONS
    for name, description in listed.items():
        assert len(description) > 20, f"{name}: {description!r}"


def test_render_and_latest_run_once_per_covering_variant() -> None:
    listed = listed_sessions()
    for session in PARAMETRIZED:
        assert {name for name in listed if name.startswith(f"{session}(")} == {
            f"{session}({variant_id(answers)})" for answers in COVERING
        }


def test_default_sessions_are_lint_and_tests() -> None:
    selected = re.findall(r"^\* (\S+) ->", nox_list(), flags=re.MULTILINE)
    assert set(selected) == {"lint", "tests"}
