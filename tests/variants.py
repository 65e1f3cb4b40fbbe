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

# copier.yml's python_version choices. The machines of the template's CI have the first three
# natively (pyenv); the newer ones are tested in a Debian sid chroot (tests/test_new_pythons.py).
NATIVE_PYTHONS = ("3.11", "3.12", "3.13")
CHROOT_PYTHONS = ("3.14", "3.15")
PYTHON_VERSIONS = NATIVE_PYTHONS + CHROOT_PYTHONS


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


# The observability questions change one module each and add a dependency group: they rotate
# across the full product (every pair of values meets every value of every axis), not in it.
OBSERVABILITY: list[dict[str, bool]] = [
    {"use_opentelemetry": otel, "use_sentry": sentry}
    for otel, sentry in itertools.product((False, True), repeat=2)
]


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
    optional = {"otel": "use_opentelemetry", "sentry": "use_sentry"}
    flags += [flag for flag, question in optional.items() if answers.get(question)]
    if "python_version" in answers:
        flags.append(f"py{answers['python_version']}")
    return "-".join(flags)


def full_product() -> list[dict[str, Any]]:
    """Every combination of the axes, with python_version and OBSERVABILITY rotating across
    them: each of the four OBSERVABILITY answers meets every pair of values of two axes."""
    combos = itertools.product(*AXES.values())
    return [
        {
            **dict(zip(AXES, combo, strict=True)),
            # i % 4 alone would follow ci and use_docker, whose values change every 1 and 2
            # variants: the shifts every 2 and 8 break that step.
            **OBSERVABILITY[(i + i // 2 + i // 8) % len(OBSERVABILITY)],
            "python_version": PYTHON_VERSIONS[i % len(PYTHON_VERSIONS)],
        }
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
        "use_opentelemetry": True,
        "use_sentry": True,
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
        "use_sentry": True,
        "python_version": "3.11",
    },
]


# --- CI ------------------------------------------------------------------------------------

# Every database with every broker, as the boot and compose tests run them (one CI job each):
# the result backends alternate so that each meets every database and every broker, and the
# native Python versions rotate (they boot natively and in stand-in images built from pyenv's
# interpreters). Beat and Flower are on, to be run too.
STACKS: list[dict[str, Any]] = [
    {
        "database": database,
        "broker": broker,
        "result_backend": result_backend,
        "use_celery_beat": True,
        "use_flower": True,
        "use_docker": True,
        "ci": "none",
        "python_version": NATIVE_PYTHONS[index % len(NATIVE_PYTHONS)],
    }
    for index, (database, broker, result_backend) in enumerate(
        [
            ("sqlite", "redis", "database"),
            ("sqlite", "rabbitmq", "redis"),
            ("postgresql", "redis", "redis"),
            ("postgresql", "rabbitmq", "database"),
            ("mysql", "redis", "database"),
            ("mysql", "rabbitmq", "redis"),
        ]
    )
]


def stack_answers(database: str, broker: str) -> dict[str, Any]:
    """The answers of the stack of ``database`` and ``broker`` (STACKS)."""
    [found] = [s for s in STACKS if (s["database"], s["broker"]) == (database, broker)]
    return found


def servers(answers: dict[str, Any]) -> list[str]:
    """The servers a project of ``answers`` talks to (keys of copier.yml's service_images)."""
    needed = {answers["database"], answers["broker"]} - {"sqlite"}
    if answers["result_backend"] == "redis":
        needed.add("redis")
    return sorted(needed)


def github_matrix() -> dict[str, list[dict[str, Any]]]:
    """The template CI's matrix: one entry per stack of STACKS, a boot and a compose job each.

    ``pair`` selects the pair's boot tests (``pytest -m boot -k <pair>``); ``services`` are the
    servers its boot job starts as service containers (keys of copier.yml's service_images).
    """
    return {
        "include": [
            {
                "pair": f"{answers['database']}-{answers['broker']}",
                "database": answers["database"],
                "broker": answers["broker"],
                "services": servers(answers),
            }
            for answers in STACKS
        ]
    }


def main(argv: list[str]) -> int:
    """``python tests/variants.py github-matrix``: ``matrix=<json>`` and ``images=<json>`` (the
    servers' images), lines for $GITHUB_OUTPUT."""
    if argv != ["github-matrix"]:
        print("usage: python tests/variants.py github-matrix", file=sys.stderr)
        return 2
    from template_data import service_images  # needs PyYAML: not for nox, which imports this

    print(f"matrix={json.dumps(github_matrix(), separators=(',', ':'))}")
    print(f"images={json.dumps(service_images(), separators=(',', ':'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
