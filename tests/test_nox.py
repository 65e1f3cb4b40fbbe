"""`nox -l` works and lists, with a description, every session the contributing guide tells
about, and the guide tells about every session it lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from variants import COVERING, variant_id

ROOT = Path(__file__).resolve().parents[1]


def nox_list() -> str:
    command = [sys.executable, "-m", "nox", "-l"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def listed_sessions() -> dict[str, str]:
    """Session name (with its parameters) -> description, as `nox -l` prints them."""
    return dict(re.findall(r"^[*-] (\S+) -> (.+)$", nox_list(), flags=re.MULTILINE))


def test_every_session_is_described_here_and_in_the_guide() -> None:
    listed = listed_sessions()
    guide = (ROOT / "docs" / "contributing.md").read_text()
    table = guide[guide.index("## nox sessions") :]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE))
    assert {name.split("(")[0] for name in listed} == documented
    for name, description in listed.items():
        assert len(description) > 20, f"{name}: {description!r}"


def test_render_and_latest_run_once_per_covering_variant() -> None:
    listed = listed_sessions()
    for session in ("render", "latest"):
        assert {name for name in listed if name.startswith(f"{session}(")} == {
            f"{session}({variant_id(answers)})" for answers in COVERING
        }
