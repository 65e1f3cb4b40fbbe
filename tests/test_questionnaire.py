"""The questionnaire (copier.yml): invalid answers are refused clearly, valid ones derive sensibly.

Invalid answers are driven through Copier's public API (as `copier copy --data` would pass them),
once through the CLI and once through pytest-copie. Every refusal must name the question, say
what is wrong and leave nothing on disk.
"""

from __future__ import annotations

import keyword
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import copier
import platformdirs
import pytest
import yaml
from copier.errors import InvalidTypeError
from template_data import questions

REPO = Path(__file__).resolve().parent.parent
COPIER_YML: dict[str, Any] = questions()
ANSWERS_FILE = ".copier-answers.yml"
SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def copy(template_dir: Path, dst: Path, **data: Any) -> None:
    """Render like `copier copy --defaults --quiet --data k=v ...` (no --trust)."""
    copier.run_copy(str(template_dir), str(dst), data=data, defaults=True, quiet=True, unsafe=False)


def recorded_answers(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / ANSWERS_FILE).read_text())


def names_question(message: str, question: str) -> bool:
    """Copier quotes the question: "Validation error for question 'x'", "Invalid choice for 'x'",
    'to question "x"'."""
    return f"'{question}'" in message or f'"{question}"' in message


class _Derived:
    def __repr__(self) -> str:
        return "<derived>"


DERIVED = _Derived()  # the question is not answered: its default is derived from `context`


def bad(question: str, value: Any, fragment: str, *, error: type = ValueError, **context: Any):
    """One invalid answer: `question=value` (plus `context` answers) must fail with `fragment`."""
    answers = {**context, question: value}
    case_id = ",".join(f"{name}={answer!r}" for name, answer in answers.items())
    return pytest.param(question, value, context, error, fragment, id=case_id[:70])


STDLIB_MESSAGE = "is a standard library module"
DEPENDENCY_MESSAGE = "is a dependency of the project"
URL_MESSAGE = "expected"

INVALID_ANSWERS = [
    # 1. blank and 2. whitespace-only project name
    bad("project_name", "", "project_name must not be blank"),
    bad("project_name", " \t ", "project_name must not be blank"),
    # 3. empty slug, given or derived from a name with nothing slug-worthy in it
    bad("project_slug", "", "(got '')"),
    bad("project_slug", DERIVED, "(got '')", project_name="!!!"),
    bad("project_slug", DERIVED, "(got '')", project_name="日本語"),
    # 4. slug with uppercase letters or spaces
    bad("project_slug", "My App", "a-z first"),
    bad("project_slug", "my_app", "a-z, 0-9 and single dashes"),
    # 5. slug starting with a digit (also when derived from the name)
    bad("project_slug", "1app", "a-z first"),
    bad("project_slug", DERIVED, "(got '2048-game')", project_name="2048 Game"),
    # 6. slug with a leading, trailing or double dash
    bad("project_slug", "-app", "single dashes"),
    bad("project_slug", "my-app-", "single dashes"),
    bad("project_slug", "my--app", "single dashes"),
    # 7. package name that is not an identifier
    bad("package_name", "my-app", "a-z, 0-9 and _ only"),
    bad("package_name", "1app", "no digit first"),
    bad("package_name", "my app", "a-z, 0-9 and _ only"),
    # 8. uppercase package name
    bad("package_name", "MyApp", "(got 'MyApp')"),
    # 9. Python keywords, soft keywords included
    bad("package_name", "class", "'class' is a Python keyword"),
    bad("package_name", "import", "is a Python keyword"),
    bad("package_name", "match", "is a Python keyword"),
    # 10. standard library modules
    bad("package_name", "json", STDLIB_MESSAGE),
    bad("package_name", "email", STDLIB_MESSAGE),
    bad("package_name", "logging", STDLIB_MESSAGE),
    # 11. the project's own dependencies
    bad("package_name", "flask", DEPENDENCY_MESSAGE),
    bad("package_name", "celery", DEPENDENCY_MESSAGE),
    bad("package_name", "redis", DEPENDENCY_MESSAGE),
    bad("package_name", "kombu", DEPENDENCY_MESSAGE),
    bad("package_name", "sqlalchemy", DEPENDENCY_MESSAGE),
    bad("package_name", "mypy", DEPENDENCY_MESSAGE),  # it would shadow the type checker
    # 12. files and folders of the generated project
    bad("package_name", "app", "is a file or folder of the project"),
    bad("package_name", "tests", "is a file or folder of the project"),
    # 13. invalid email addresses, several shapes
    bad("author_email", "", "expected name@example.com"),
    bad("author_email", "you.example.com", "(got 'you.example.com')"),
    bad("author_email", "you@localhost", "expected name@example.com"),
    bad("author_email", "you@@example.com", "expected name@example.com"),
    bad("author_email", "you @example.com", "expected name@example.com"),
    bad("author_email", "You <you@example.com>", "expected name@example.com"),
    bad("author_email", "a@example.com, b@example.com", "expected name@example.com"),
    bad("author_email", "you@example.c", "expected name@example.com"),
    # 14. blank author name
    bad("author_name", "", "author_name must not be blank"),
    bad("author_name", "   ", "author_name must not be blank"),
    # 15. multi-line author name and description
    bad("author_name", "Ann\nBob", "author_name must be a single line"),
    bad("description", "Line one\nline two", "description must be a single line"),
    # 16. blank description
    bad("description", " ", "description must not be blank"),
    # 17. Python versions outside the supported range
    bad("python_version", "3.10", "'3.10' is not in ['3.11', '3.12', '3.13', '3.14', '3.15']"),
    bad("python_version", "3.16", "'3.16' is not in"),
    bad("python_version", "3", "'3' is not in"),
    # 18. unknown database, 19. unknown broker, 20. unknown result backend, 21. unknown CI
    bad("database", "mongodb", "'mongodb' is not in ['sqlite', 'postgresql', 'mysql']"),
    bad("broker", "kafka", "'kafka' is not in ['redis', 'rabbitmq']"),
    bad("result_backend", "rpc", "'rpc' is not in ['redis', 'database']"),
    bad("ci", "gitlab", "'gitlab' is not in ['github', 'none']"),
    # 22. broker URL whose scheme does not match the broker
    bad("broker_url", "amqp://guest:guest@127.0.0.1:5672//", "is not for redis: use redis, rediss"),
    bad(
        "broker_url",
        "redis://127.0.0.1:6379/0",
        "scheme 'redis' is not for rabbitmq",
        broker="rabbitmq",
    ),
    bad("broker_url", "http://127.0.0.1:6379/0", "scheme 'http' is not for"),
    # 23. broker URL that is not a URL
    bad("broker_url", "127.0.0.1:6379", URL_MESSAGE + " redis://127.0.0.1:6379/0"),
    bad("broker_url", "redis://", URL_MESSAGE),
    bad("broker_url", "redis://host:6379/0 --debug", URL_MESSAGE),
    bad("broker_url", "localhost", URL_MESSAGE + " amqp://", broker="rabbitmq"),
    # 23b. a port or a Redis database number that is not a number
    bad("broker_url", "redis://127.0.0.1:abc/0", "the port must be a number from 1 to 65535"),
    bad("broker_url", "redis://127.0.0.1:/0", "(got '')"),
    bad("broker_url", "redis://127.0.0.1:70000/0", "(got '70000')"),
    bad("broker_url", "amqp://guest@host:x//", "the port must be a number", broker="rabbitmq"),
    bad("broker_url", "redis://host/x", "the Redis database must be a number (got 'x')"),
    bad("broker_url", "redis://host:6379/0/1", "the Redis database must be a number"),
    # 24. a bool answered with `null` (API or --data-file; `--data x=null` means false):
    # Copier raises its InvalidTypeError, a TypeError, not a ValueError
    bad("use_flower", None, 'of type "bool"', error=InvalidTypeError),
    # A known gap of Copier, see the reason: strict, so it shows when Copier starts refusing it.
    pytest.param(
        "use_flower",
        "maybe",
        {},
        ValueError,
        "use_flower",
        id="use_flower='maybe'",
        marks=pytest.mark.xfail(
            strict=True,
            reason="Copier casts any unknown string to True for `type: bool` before validators "
            "run: `--data use_flower=maybe` silently enables Flower",
        ),
    ),
    bad("project_name", "My\nApp", "project_name must be a single line"),
    # 25. long answers are shortened in the message (see VALIDATOR_MESSAGE_WIDTH)
    bad("project_slug", "Long " * 20, "(got 'Long Long Lon...')"),
    bad("package_name", "x-" * 40, "(got 'x-x-x-x-x-x-x...')"),
    bad("author_email", "nobody" * 12, "(got 'nobodynobodyn...')"),
    bad("broker_url", "redis:" + "/" * 60, "(got 'redis:///////...')"),
    bad("broker_url", "verylongscheme" * 3 + "://host", "scheme 'verylon...' is not for redis"),
    bad("broker_url", "redis://host:" + "9" * 40 + "/0", "(got '9999999...')"),
]

# Copier's prompt shows a validator's message on one line cut at the terminal's width.
VALIDATOR_MESSAGE_WIDTH = 70


@pytest.mark.parametrize(("question", "value", "context", "error", "fragment"), INVALID_ANSWERS)
def test_invalid_answer_is_refused(
    template_dir: Path,
    tmp_path: Path,
    question: str,
    value: Any,
    context: dict[str, Any],
    error: type[Exception],
    fragment: str,
) -> None:
    dst = tmp_path / "project"
    with pytest.raises(error) as excinfo:
        copy(template_dir, dst, **context, **({} if value is DERIVED else {question: value}))
    message = str(excinfo.value)
    assert names_question(message, question), message
    assert fragment in message
    assert not dst.exists(), "a refused answer must not write anything"
    shown = message.removeprefix(f"Validation error for question '{question}': ")
    if shown != message:  # our validator's message, not one of Copier's own
        assert len(shown) < VALIDATOR_MESSAGE_WIDTH, shown


@pytest.mark.parametrize(
    ("data", "question", "fragment"),
    [
        ("broker=kafka", "broker", "'kafka' is not in ['redis', 'rabbitmq']"),
        ("package_name=json", "package_name", STDLIB_MESSAGE),
    ],
)
def test_cli_refuses_invalid_answer(
    template_dir: Path, tmp_path: Path, data: str, question: str, fragment: str
) -> None:
    dst = tmp_path / "project"
    cli = [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--data", data]
    proc = subprocess.run(
        [*cli, str(template_dir), str(dst)], check=False, capture_output=True, text=True
    )
    assert proc.returncode != 0
    # Copier 9.19 reports validation errors as an uncaught ValueError: the last line says it all.
    last_line = proc.stderr.strip().splitlines()[-1]
    assert names_question(last_line, question), proc.stderr
    assert fragment in last_line
    assert not dst.exists()


def test_copie_reports_invalid_answer(copie: Any, template_dir: Path) -> None:
    result = copie.copy(extra_answers={"package_name": "celery"}, template_dir=template_dir)
    # A misspelled key would be silently ignored and the copy would succeed (exit code 0).
    assert result.exit_code == -1, result
    assert isinstance(result.exception, ValueError)
    assert names_question(str(result.exception), "package_name")
    assert DEPENDENCY_MESSAGE in str(result.exception)
    assert result.project_dir is None
    # pytest-copie creates the destination beforehand: Copier must leave it empty.
    assert [p for p in copie.test_dir.rglob("*") if not p.is_dir()] == []


@pytest.mark.parametrize(
    ("data", "derived"),
    [
        pytest.param(
            {"project_name": "My Cool App!"},
            {"project_slug": "my-cool-app", "package_name": "my_cool_app"},
            id="punctuation",
        ),
        pytest.param(
            {"project_name": "Web Shop", "package_name": "shop"},
            {"project_slug": "web-shop"},
            id="explicit-package-name",
        ),
        pytest.param(
            {"project_name": "Web Shop", "project_slug": "shop-web"},
            {"package_name": "shop_web"},
            id="package-name-follows-explicit-slug",
        ),
        pytest.param(
            {"broker": "redis"}, {"broker_url": "redis://127.0.0.1:6379/0"}, id="redis-default"
        ),
        pytest.param(
            {"broker": "rabbitmq"},
            {"broker_url": "amqp://guest:guest@127.0.0.1:5672//"},
            id="rabbitmq-default",
        ),
        pytest.param(
            {"broker": "redis", "broker_url": "rediss://cache.example.com:6380/1"}, {}, id="rediss"
        ),
        pytest.param(
            {"broker": "rabbitmq", "broker_url": "amqps://mq.example.com:5671/app"}, {}, id="amqps"
        ),
        pytest.param(
            {"broker_url": "rediss://:secret@cache:6380/2?ssl_cert_reqs=required"}, {}, id="query"
        ),
        pytest.param({"broker_url": "redis://[::1]:6379/0"}, {}, id="ipv6-with-port"),
        pytest.param({"broker_url": "redis://[::1]"}, {}, id="ipv6-no-port-no-database"),
        pytest.param(
            {"use_flower": "false", "use_docker": "no", "use_celery_beat": "0"},
            {"use_flower": False, "use_docker": False, "use_celery_beat": False},
            id="cli-style-bool-strings",
        ),
    ],
)
def test_valid_answers_are_accepted(
    template_dir: Path, tmp_path: Path, data: dict[str, Any], derived: dict[str, Any]
) -> None:
    copy(template_dir, tmp_path, **data)
    answers = recorded_answers(tmp_path)
    expected = {**data, **derived}  # `derived` also holds the cast value of a string answer
    assert {name: answers[name] for name in expected} == expected


def test_non_ascii_project_name_yields_valid_slug(template_dir: Path, tmp_path: Path) -> None:
    copy(template_dir, tmp_path, project_name="Café Ünïcode")
    answers = recorded_answers(tmp_path)
    assert answers["project_name"] == "Café Ünïcode"
    assert SLUG.match(answers["project_slug"]), answers["project_slug"]
    package = answers["package_name"]
    assert package == answers["project_slug"].replace("-", "_")
    assert package.isascii(), package
    assert package.isidentifier(), package


def validator_list(name: str) -> set[str]:
    """The names in `{% set <name> = [...] %}` of package_name's validator."""
    match = re.search(
        rf"set {name} = \[(.*?)\]", COPIER_YML["package_name"]["validator"], re.DOTALL
    )
    assert match, f"no '{name}' list in package_name's validator"
    return set(re.findall(r"'([^']+)'", match.group(1)))


def test_package_name_validator_knows_every_stdlib_module() -> None:
    stdlib = {name.lower() for name in sys.stdlib_module_names if not name.startswith("_")}
    assert stdlib - validator_list("stdlib") == set()


def test_package_name_validator_knows_every_keyword() -> None:
    keywords = {word.lower() for word in keyword.kwlist + keyword.softkwlist} - {"_"}
    assert keywords - validator_list("keywords") == set()


@pytest.mark.parametrize("module", ["secrets", "typing", "zoneinfo", "this"])
def test_stdlib_module_is_refused_as_package_name(
    template_dir: Path, tmp_path: Path, module: str
) -> None:
    assert module in sys.stdlib_module_names
    with pytest.raises(ValueError, match=f"'{module}' {STDLIB_MESSAGE}"):
        copy(template_dir, tmp_path / "project", package_name=module)
    assert not (tmp_path / "project").exists()


def test_every_question_has_type_and_help() -> None:
    questions = {
        name: spec
        for name, spec in COPIER_YML.items()
        if not name.startswith("_") and not (isinstance(spec, dict) and spec.get("when") is False)
    }
    assert "project_name" in questions
    assert "secret_key" not in questions
    for name, spec in questions.items():
        assert isinstance(spec, dict), f"{name}: use the advanced form with type and help"
        assert spec.get("type") in {"str", "int", "float", "bool", "json", "yaml", "path"}, name
        assert str(spec.get("help", "")).strip(), f"{name} has no help"


def test_user_copier_settings_do_not_leak_into_tests(
    template_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards conftest.pytest_configure: a developer's own `~/.config/copier/settings.yml`
    `defaults:` replace the template's defaults, so without the isolation every test that
    relies on a default would silently test the developer's answers instead."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    user_settings = platformdirs.user_config_path("copier", appauthor=False) / "settings.yml"
    assert home in user_settings.parents
    user_settings.parent.mkdir(parents=True)
    leaked = {"project_name": "Leaked Name", "database": "sqlite"}
    user_settings.write_text(yaml.safe_dump({"defaults": leaked}))
    template_defaults = {name: COPIER_YML[name]["default"] for name in leaked}
    assert template_defaults == {"project_name": "Flask Celery App", "database": "postgresql"}

    # Control: without COPIER_SETTINGS_PATH, Copier really reads the file planted above.
    with monkeypatch.context() as unisolated:
        unisolated.delenv("COPIER_SETTINGS_PATH", raising=False)
        copy(template_dir, tmp_path / "unisolated")
    assert {name: recorded_answers(tmp_path / "unisolated")[name] for name in leaked} == leaked

    copy(template_dir, tmp_path / "isolated")
    answers = recorded_answers(tmp_path / "isolated")
    assert {name: answers[name] for name in leaked} == template_defaults
    settings = yaml.safe_load(Path(os.environ["COPIER_SETTINGS_PATH"]).read_text())
    assert not settings.get("defaults")
