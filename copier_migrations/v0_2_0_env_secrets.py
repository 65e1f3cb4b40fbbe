"""Copier migration to 0.2.0: `.env` holds the same three secrets in every project.

Up to 0.1.0 the Compose database password was POSTGRES_PASSWORD or MARIADB_PASSWORD, and
FLOWER_BASIC_AUTH existed only with Flower. From 0.2.0 the compose files read DATABASE_PASSWORD,
and every project has all three secrets so that changing answers later needs no new one.
`copier update` never rewrites `.env` (it holds this project's secrets), so this script does,
keeping every value the project already has. It runs in the project folder, after the update.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

RENAMED = ("POSTGRES_PASSWORD", "MARIADB_PASSWORD")


def migrate(env_file: Path) -> list[str]:
    """Rewrite ``env_file`` in place; return what was changed, for the log."""
    if not env_file.exists():
        return []
    lines = env_file.read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    changes = []
    out = []
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name in RENAMED:
            if "DATABASE_PASSWORD" not in names:
                out.append(f"DATABASE_PASSWORD={value}")
                names.add("DATABASE_PASSWORD")
                changes.append(f"renamed {name} to DATABASE_PASSWORD")
            else:
                changes.append(f"removed {name} (DATABASE_PASSWORD is set)")
            continue
        out.append(line)
    if "FLOWER_BASIC_AUTH" not in names:
        out.append(f"FLOWER_BASIC_AUTH=admin:{secrets.token_hex(16)}")
        changes.append("added FLOWER_BASIC_AUTH")
    if "DATABASE_PASSWORD" not in names:
        out.append(f"DATABASE_PASSWORD={secrets.token_hex(16)}")
        changes.append("added DATABASE_PASSWORD")
    if changes:
        env_file.write_text("\n".join(out) + "\n")
    return changes


if __name__ == "__main__":
    for change in migrate(Path(sys.argv[1] if len(sys.argv) > 1 else ".env")):
        print(f".env: {change}")
