"""The template's answer space, shared by the render matrix, the install tests and nox."""

from __future__ import annotations

import itertools
from typing import Any

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")

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
