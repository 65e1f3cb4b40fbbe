"""Copier migration to 0.3.0: `.env` gains BROKER_PASSWORD, and CELERY_LOGLEVEL is LOG_LEVEL.

From 0.3.0 the Compose broker (Redis or RabbitMQ) has a password, and every project has it in
`.env` whatever its answers, as the other secrets. LOG_LEVEL now sets the level of every process,
the Celery ones included, which CELERY_LOGLEVEL did. `copier update` never rewrites `.env` (it
holds this project's secrets), so this script does, keeping every value the project has. It runs
in the project folder, after the update; a project without `.env` (a fresh clone, a CI job) is
left as it is.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path


def migrate(env_file: Path) -> list[str]:
    """Rewrite ``env_file`` in place; return what was changed, for the log."""
    if not env_file.exists():
        return []
    lines = env_file.read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    changes, out = [], []
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name == "CELERY_LOGLEVEL":
            if "LOG_LEVEL" not in names:
                out.append(f"LOG_LEVEL={value}")
                changes.append("renamed CELERY_LOGLEVEL to LOG_LEVEL")
            else:
                changes.append("removed CELERY_LOGLEVEL (LOG_LEVEL is set)")
            continue
        out.append(line)
    if "BROKER_PASSWORD" not in names:
        out.append(f"BROKER_PASSWORD={secrets.token_hex(16)}")
        changes.append("added BROKER_PASSWORD")
    if changes:
        env_file.write_text("\n".join(out) + "\n")
    return changes


if __name__ == "__main__":
    for change in migrate(Path(sys.argv[1] if len(sys.argv) > 1 else ".env")):
        print(f".env: {change}")
