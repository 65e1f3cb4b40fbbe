"""The documentation: the site builds, and its references keep up with the template.

- `mkdocs build --strict` succeeds (broken links and anchors, pages missing from the nav and any
  other warning fail it), and Mermaid code blocks become diagrams.
- docs/questionnaire.md has a section for every public question of copier.yml (a heading naming
  it in backticks), and that section names each of the question's choices in backticks.
- docs/operations.md's table of environment variables is made from environment.yml (as the
  generated `.env.example` and README table are), with the answers that bring each variable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from template_data import condition, environment, environment_table, questions
from variants import full_product

DOCS = REPO / "docs"
QUESTIONNAIRE = DOCS / "questionnaire.md"
OPERATIONS = DOCS / "operations.md"
HEADING = re.compile(r"^(#{1,6})\s")
BACKTICKED = re.compile(r"`([^`]+)`")
ENV_LINE = re.compile(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def public_questions() -> dict[str, dict[str, Any]]:
    """The questions of copier.yml that Copier asks: not settings (`_...`), not `when: false`."""
    return {
        name: spec
        for name, spec in questions().items()
        if not name.startswith("_") and str(spec.get("when", True)).lower() != "false"
    }


def choice_values(spec: dict[str, Any]) -> list[str]:
    """The values of a question's choices (a list, or a mapping of labels to values)."""
    choices = spec.get("choices") or []
    values = choices.values() if isinstance(choices, dict) else choices
    return [str(value) for value in values]


def section(text: str, heading: re.Pattern[str]) -> str | None:
    """The lines from the first heading matching ``heading`` to the next heading of its level or
    above; None when no heading matches."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        level = HEADING.match(line)
        if level and heading.search(line):
            depth = len(level.group(1))
            end = next(
                (
                    i
                    for i in range(start + 1, len(lines))
                    if (m := HEADING.match(lines[i])) and len(m.group(1)) <= depth
                ),
                len(lines),
            )
            return "\n".join(lines[start:end])
    return None


def undocumented_questions(page: str) -> list[str]:
    """What docs/questionnaire.md fails to document: questions, then ``question=choice``."""
    missing = []
    for name, spec in public_questions().items():
        text = section(page, re.compile(rf"`{re.escape(name)}`"))
        if text is None:
            missing.append(name)
            continue
        documented = set(BACKTICKED.findall(text))
        missing += [f"{name}={value}" for value in choice_values(spec) if value not in documented]
    return missing


def table_variables(text: str) -> set[str]:
    """Names in backticks in the first column of the Markdown tables of ``text``."""
    names: set[str] = set()
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|")
        if line.startswith("|") and not set(cells[0]) <= set("-: "):
            names.update(name for name in BACKTICKED.findall(cells[0]) if name.isupper())
    return names


def env_example_variables(project: Path) -> set[str]:
    """The variables `.env.example` lists, commented-out ones (``# NAME=value``) included."""
    return set(ENV_LINE.findall((project / ".env.example").read_text()))


def test_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # Every page of docs/ is built (strict mode also refuses pages missing from the nav).
    for page in DOCS.glob("*.md"):
        name = "" if page.stem == "index" else page.stem
        assert (tmp_path / name / "index.html").is_file(), f"{page.name} was not built"
    tour = (tmp_path / "project-tour" / "index.html").read_text()
    assert tour.count('<pre class="mermaid">') >= 2, "Mermaid blocks were not turned into diagrams"


def test_questionnaire_page_documents_every_question_and_choice() -> None:
    missing = undocumented_questions(QUESTIONNAIRE.read_text())
    assert not missing, f"docs/questionnaire.md does not document: {', '.join(missing)}"


def test_the_questionnaire_check_sees_a_missing_question() -> None:
    """The check above fails when a question's section, or one of its choices, is removed."""
    page = QUESTIONNAIRE.read_text()
    without_broker = section(page, re.compile(r"`broker`"))
    assert without_broker is not None
    assert "broker" in undocumented_questions(page.replace(without_broker, ""))
    assert "database=mysql" in undocumented_questions(page.replace("`mysql`", "MySQL"))


def test_operations_page_tables_every_variable_with_its_answers(tmp_path: Path) -> None:
    """docs/operations.md's table is made from environment.yml when the site is built."""
    page = (DOCS / "operations.md").read_text()
    assert "<!-- the table of environment.yml -->" in page
    lines = environment_table().splitlines()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[5].strip() for line in lines[2:]}
    assert rows["FLASK_CONFIG"] == "always"
    assert rows["CELERY_VISIBILITY_TIMEOUT"] == "`broker`: `redis`"
    assert rows["DATABASE_PASSWORD"] == "`database`: `mysql`, `postgresql`; `use_docker`"
    every = {v["name"] for answers in full_product() for v in environment(answers)}
    assert set(rows) == every


def test_presence_is_said_only_when_it_can_be_said_exactly() -> None:
    every = full_product()
    docker_or_redis = [a for a in every if a["use_docker"] or a["broker"] == "redis"]
    with pytest.raises(ValueError, match="one set of values per question"):
        condition(docker_or_redis, every)
    assert condition([a for a in every if not a["use_flower"]], every) == "not `use_flower`"


def test_readme_test_commands_are_what_ci_runs() -> None:
    """The README's set-up is two commands, the second the fast tier, which `.ci/run` runs
    first; `.ci/run` then runs each slow tier the README names."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme[readme.index("## Set-up") :], re.S)
    generate, test = blocks[0].strip().splitlines()
    assert "copier copy --defaults --vcs-ref HEAD" in generate
    script = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    runs = [" ".join(line.split()) for line in lines if "pytest" in line]
    assert runs[0] == " ".join(test.split())
    slow = [line.split("#")[0].strip() for line in blocks[1].strip().splitlines()]
    assert runs[1:] == slow


def test_the_update_command_keeps_the_answers() -> None:
    """Without --defaults, `copier update` asks every question again: the first update command
    each page gives keeps the recorded answers."""
    for page in (REPO / "README.md", DOCS / "updating.md", DOCS / "index.md"):
        blocks = "".join(re.findall(r"```bash\n(.*?)```", page.read_text(), re.S))
        commands = re.findall(r"copier update[^\n]*", blocks)
        assert commands, page.name
        assert "--defaults" in commands[0], f"{page.name}: {commands[0]}"
