"""mkdocs hook: docs/operations.md's table of environment variables, made from environment.yml.

The page holds a marker where the table goes; the table itself lives nowhere but in the built
site, so it cannot fall behind environment.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from template_data import environment_table

MARKER = "<!-- the table of environment.yml -->"


def on_page_markdown(markdown: str, **_: object) -> str:
    return markdown.replace(MARKER, environment_table()) if MARKER in markdown else markdown
