"""The template's own data: copier.yml's questions, and environment.yml rendered for any answers.

Copier renders environment.yml's Jinja for each project; ``environment()`` renders it here with
plain Jinja, for the table of every variable across the whole answer space that the docs show
(tools/docs_hooks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml
from variants import AXES, OBSERVABILITY, full_product

ROOT = Path(__file__).resolve().parent.parent
# What the documentation shows for answers that are names: placeholders.
NAMES = {
    "project_name": "<project_name>",
    "project_slug": "<project_slug>",
    "package_name": "<package_name>",
}


class _Loader(yaml.SafeLoader):
    """Reads copier.yml, whose last document is ``!include environment.yml``."""


_Loader.add_constructor("!include", lambda loader, node: None)


def questions() -> dict[str, Any]:
    """copier.yml's questions and settings (those of environment.yml, which it includes, aside)."""
    documents = yaml.load_all((ROOT / "copier.yml").read_text(), Loader=_Loader)
    return {k: v for document in documents if document for k, v in document.items()}


def service_images() -> dict[str, str]:
    """The image of each server (``postgresql``, ``mysql``, ``redis``, ``rabbitmq``)."""
    return questions()["service_images"]["default"]


def memory_limits() -> dict[str, int]:
    """The memory limit (MiB) of each Compose service."""
    return questions()["memory_limits"]["default"]


def memory_table() -> str:
    """The Markdown table of the Compose services' memory limits."""
    rows = ["| service | `mem_limit` |", "|---|---|"]
    rows += [f"| `{service}` | {mib} MiB |" for service, mib in memory_limits().items()]
    return "\n".join(rows)


def environment(answers: dict[str, Any]) -> list[dict[str, Any]]:
    """environment.yml's variables for ``answers`` (the axes of variants.AXES at least)."""
    jinja = jinja2.Environment(undefined=jinja2.StrictUndefined)
    context = {**NAMES, **answers}
    broker_url = questions()["broker_url"]["default"]
    context.setdefault("broker_url", jinja.from_string(broker_url).render(context).strip())
    source = yaml.safe_load((ROOT / "environment.yml").read_text())["environment"]["default"]
    return yaml.safe_load(jinja.from_string(source).render(context))


# Every question that decides which variables a project reads, with its values.
QUESTIONS = {**AXES, **dict.fromkeys(OBSERVABILITY[0], (False, True))}


def condition(present: list[dict[str, Any]], every: list[dict[str, Any]]) -> str:
    """The answers under which a variable is present, in words: those of ``present`` among
    ``every`` variant, when they are a conjunction of one set of values per question."""
    allowed = {axis: {variant[axis] for variant in present} for axis in QUESTIONS}
    if len(present) != sum(all(v[axis] in allowed[axis] for axis in QUESTIONS) for v in every):
        raise ValueError("the answers of a variable are not one set of values per question")
    words = []
    for axis, values in allowed.items():
        if values == set(QUESTIONS[axis]):
            continue
        if values == {True}:
            words.append(f"`{axis}`")
        elif values == {False}:
            words.append(f"not `{axis}`")
        else:
            words.append(f"`{axis}`: " + ", ".join(f"`{value}`" for value in sorted(values)))
    return "; ".join(words) or "always"


def environment_table() -> str:
    """The Markdown table of every variable of any project, with the answers that bring it."""
    every = full_product()
    by_name: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for answers in every:
        for variable in environment(answers):
            by_name.setdefault(variable["name"], []).append((answers, variable))
    source = (ROOT / "environment.yml").read_text()
    order = sorted(by_name, key=lambda name: source.index(f"- name: {name}\n"))
    rows = ["| variable | default | read by | what it does | present when |", "|---" * 5 + "|"]
    for name in order:
        found = by_name[name]
        defaults = list(dict.fromkeys(variable["default"] for _, variable in found))
        # The fullest description: that of a variant with everything (Docker included) on.
        described = max((variable for _, variable in found), key=lambda v: len(v["help"]))
        present = condition([answers for answers, _ in found], every)
        rows.append(
            f"| `{name}` | {' or '.join(defaults)} | {described['read_by']} "
            f"| {described['help']} | {present} |"
        )
    return "\n".join(rows)
