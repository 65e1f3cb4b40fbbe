"""mkdocs hook: docs/operations.md's tables of environment variables (from environment.yml) and
of memory limits (from copier.yml's memory_limits).

The page holds a marker where each table goes; the tables live nowhere but in the built site, so
they cannot fall behind their source.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from template_data import environment_table, memory_table

TABLES = {
    "<!-- the table of environment.yml -->": environment_table,
    "<!-- the table of memory_limits -->": memory_table,
}


def on_page_markdown(markdown: str, **_: object) -> str:
    for marker, table in TABLES.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown
