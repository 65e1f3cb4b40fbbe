"""The template's answer space, shared by the render matrix, the install tests and nox."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")


def local_python(version: str) -> str | None:
    """A working interpreter for ``version`` on this machine (PATH, then pyenv), or None.

    Generated projects are installed with it: uv must never download an interpreter.
    """
    candidates = [f"python{version}"]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")), reverse=True)
    for candidate in candidates:
        path = shutil.which(candidate)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


# The questions that change which files and services a project gets, with every value.
AXES: dict[str, tuple[Any, ...]] = {
    "database": ("sqlite", "postgresql", "mysql"),
    "broker": ("redis", "rabbitmq"),
    "result_backend": ("redis", "database"),
    "use_celery_beat": (True, False),
    "use_flower": (True, False),
    "use_docker": (True, False),
    "ci": ("github", "none"),
}


def variant_id(answers: dict[str, Any]) -> str:
    """A short readable id: ``postgresql-redis-res_redis-beat-flower-docker-github-py3.13``."""
    flags = [
        answers["database"],
        answers["broker"],
        f"res_{answers['result_backend']}",
        "beat" if answers["use_celery_beat"] else "nobeat",
        "flower" if answers["use_flower"] else "noflower",
        "docker" if answers["use_docker"] else "nodocker",
        f"ci_{answers['ci']}",
    ]
    if "python_version" in answers:
        flags.append(f"py{answers['python_version']}")
    return "-".join(flags)


def full_product() -> list[dict[str, Any]]:
    """Every combination of the axes, with python_version rotating across them."""
    combos = itertools.product(*AXES.values())
    return [
        {**dict(zip(AXES, combo, strict=True)), "python_version": PYTHON_VERSIONS[i % 3]}
        for i, combo in enumerate(combos)
    ]


# A covering subset: every value of every question at least once. These are installed into
# a fresh virtualenv and run their own test suite.
COVERING: list[dict[str, Any]] = [
    {
        "database": "postgresql",
        "broker": "redis",
        "result_backend": "redis",
        "use_celery_beat": True,
        "use_flower": True,
        "use_docker": True,
        "ci": "github",
        "python_version": "3.13",
    },
    {
        "database": "sqlite",
        "broker": "rabbitmq",
        "result_backend": "database",
        "use_celery_beat": False,
        "use_flower": False,
        "use_docker": False,
        "ci": "none",
        "python_version": "3.11",
    },
    {
        "database": "mysql",
        "broker": "rabbitmq",
        "result_backend": "redis",
        "use_celery_beat": True,
        "use_flower": False,
        "use_docker": True,
        "ci": "github",
        "python_version": "3.12",
    },
    {
        "database": "postgresql",
        "broker": "redis",
        "result_backend": "database",
        "use_celery_beat": False,
        "use_flower": True,
        "use_docker": False,
        "ci": "none",
        "python_version": "3.11",
    },
]


# --- CI ------------------------------------------------------------------------------------

# The images of the servers a generated project talks to: docker-compose.yml's, and those of the
# service containers in its CI workflow and in the template's own (.github/workflows/ci.yml).
SERVICE_IMAGES: dict[str, str] = {
    "postgresql": "postgres:18.6-trixie",
    "mysql": "mariadb:11.8.6",
    "redis": "redis:8.10.2-alpine",
    "rabbitmq": "rabbitmq:4.2.5-alpine",
}


def boot_pairs() -> list[tuple[str, str]]:
    """Every database with every broker: the pairs tests/test_boot.py boots, one CI job each."""
    return list(itertools.product(AXES["database"], AXES["broker"]))


def github_matrix() -> dict[str, list[dict[str, Any]]]:
    """The template CI's boot matrix: one entry per database x broker pair.

    ``pair`` selects the pair's boot tests (``pytest -m boot -k <pair>``); ``services`` are the
    servers its job starts as service containers (keys of SERVICE_IMAGES). Redis is always
    there: the boot variants with a RabbitMQ broker alternate between Redis and the database
    for task results.
    """
    return {
        "include": [
            {
                "pair": f"{database}-{broker}",
                "database": database,
                "broker": broker,
                "services": sorted({database, broker, "redis"} - {"sqlite"}),
            }
            for database, broker in boot_pairs()
        ]
    }


def main(argv: list[str]) -> int:
    """``python tests/variants.py github-matrix``: ``matrix=<json>``, a line for $GITHUB_OUTPUT."""
    if argv != ["github-matrix"]:
        print("usage: python tests/variants.py github-matrix", file=sys.stderr)
        return 2
    print(f"matrix={json.dumps(github_matrix(), separators=(',', ':'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
