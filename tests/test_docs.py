"""The documentation: the site builds, and its references keep up with the template.

- `mkdocs build --strict` succeeds (broken links and anchors, pages missing from the nav and any
  other warning fail it), and Mermaid code blocks become diagrams.
- docs/questionnaire.md has a section for every public question of copier.yml (a heading naming
  it in backticks), and that section names each of the question's choices in backticks.
- Every variable of a generated `.env.example` is in the environment variables table of
  docs/operations.md, and the generated README's settings table lists exactly those of its
  variant.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from variants import COVERING, variant_id

DOCS = REPO / "docs"
QUESTIONNAIRE = DOCS / "questionnaire.md"
OPERATIONS = DOCS / "operations.md"
HEADING = re.compile(r"^(#{1,6})\s")
BACKTICKED = re.compile(r"`([^`]+)`")
ENV_LINE = re.compile(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def public_questions() -> dict[str, dict[str, Any]]:
    """The questions of copier.yml that Copier asks: not settings (`_...`), not `when: false`."""
    questions = yaml.safe_load((REPO / "copier.yml").read_text())
    return {
        name: spec
        for name, spec in questions.items()
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


@pytest.fixture(scope="module")
def operations_variables() -> set[str]:
    text = section(OPERATIONS.read_text(), re.compile(r"^## Environment variables"))
    assert text is not None, "docs/operations.md has no '## Environment variables' section"
    return table_variables(text)


# Between them, the covering variants use every value of every question, so every variable.
@pytest.mark.parametrize("answers", COVERING, ids=variant_id)
def test_every_env_variable_is_documented(
    copie, template_dir: Path, operations_variables: set[str], answers: dict[str, Any]
) -> None:
    result = copie.copy(extra_answers=answers, template_dir=template_dir)
    assert result.exit_code == 0, result.exception
    variables = env_example_variables(result.project_dir)
    assert variables, ".env.example lists no variable"

    missing = sorted(variables - operations_variables)
    assert not missing, f"not in the table of docs/operations.md: {', '.join(missing)}"

    settings = section((result.project_dir / "README.md").read_text(), re.compile(r"^## Settings"))
    assert settings is not None, "the generated README has no '## Settings' section"
    documented = table_variables(settings)
    assert not sorted(variables - documented), "missing from the README's settings table"
    assert not sorted(documented - variables), "the README's settings table lists extra names"


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's set-up: two commands, the second the one `.ci/run` ends with."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Set-up on a fresh machine\n.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no set-up commands"
    generate, test = block[1].strip().splitlines()
    assert "copier copy --defaults --vcs-ref HEAD" in generate
    script = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    last = [line for line in script.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert " ".join(last.split()) == " ".join(test.split())
