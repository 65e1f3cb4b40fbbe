"""Static validation of the container files of every Docker variant (no Docker engine needed).

Each variant is rendered once (per xdist worker: its tests share an xdist group). Checked:
hadolint on the Dockerfile; both compose files against the Compose Specification's JSON schema
(tests/data/compose-spec.json); cross-checks between the compose files, the Dockerfile, the
start scripts, the app's code, `.env` and `.env.example`; the production file's promises (no bind
mount, only web published, restart policies, production config); the start scripts' shape;
`.dockerignore`; and the Dockerfile's final stage (non-root, no compiler, slim pinned base).

The variants: every combination of the answers that change a container file (database, broker,
result_backend, use_celery_beat, use_flower), with python_version rotating across them as in
the render matrix, so that every python_version is covered too. `ci` changes no container file
(test_ci_answer_changes_no_container_file proves it), so each combination is rendered once,
not twice.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import jsonschema
import pytest
import yaml
from conftest import dev_tool
from variants import PYTHON_VERSIONS, full_product, variant_id

DATA = Path(__file__).resolve().parent / "data"
# The start scripts of production, which development shares but for its web server's.
SCRIPTS_DIR = "compose/production/flask"
DEV_START = "compose/local/flask/start"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.prod.yml")
DEV, PROD = COMPOSE_FILES
# The Dockerfile of each compose file.
DOCKERFILES = {DEV: "compose/local/flask/Dockerfile", PROD: f"{SCRIPTS_DIR}/Dockerfile"}
STRICT_MODE = "set -o errexit -o nounset -o pipefail"
SECRET_NAMES = r"PASSWORD|SECRET|AUTH"
# Variables bash sets by itself: a script reading them needs no entry in .env.example.
SHELL_VARIABLES = frozenset(
    {"BASHPID", "BASH_SOURCE", "EUID", "FUNCNAME", "HOME", "HOSTNAME", "IFS", "LINENO"}
    | {"OLDPWD", "OPTARG", "OPTIND", "PATH", "PIPESTATUS", "PPID", "PWD", "RANDOM", "SECONDS"}
    | {"SHELL", "UID"}
)
# The answers that change a container file, and the variants that cover them.
CONTAINER_AXES = ("database", "broker", "result_backend", "use_celery_beat", "use_flower")
VARIANTS = [a for a in full_product() if a["use_docker"] and a["ci"] == "github"]
VARIANT_PARAMS = [
    pytest.param(
        answers, id=variant_id(answers), marks=pytest.mark.xdist_group(variant_id(answers))
    )
    for answers in VARIANTS
]
by_variant = pytest.mark.parametrize("answers", VARIANT_PARAMS)


# --- parsing helpers ------------------------------------------------------------------------


def parse_env(text: str) -> dict[str, str]:
    """NAME=value lines of an env file (comments and blank lines skipped)."""
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def listed_variables(env_example: str) -> set[str]:
    """Variables an env sample documents, set (NAME=...) or commented out (# NAME=...)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", env_example, re.MULTILINE))


DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration_seconds(duration: str) -> float:
    """A Compose duration (Go syntax: 10s, 1m30s, 5m30s, 1h) in seconds."""
    parts = DURATION_PART.findall(duration)
    assert parts, f"not a duration: {duration!r}"
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Interpolation:
    name: str
    op: str  # "" (plain), "-"/":-" (default), "?"/":?" (required), "+"/":+" (alternative)
    arg: str

    @property
    def has_default(self) -> bool:
        return self.op in {"-", ":-"}


def strings(node: Any) -> Iterator[str]:
    """Every string (keys and values) of a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def interpolations(text: str) -> list[Interpolation]:
    """The ${VAR...} and $VAR that Compose interpolates in one string (`$$` is a literal $)."""
    found = []
    for match in INTERPOLATION.finditer(text):
        if match["escaped"]:
            continue
        name = match["braced"] or match["named"]
        found.append(Interpolation(name, match["op"] or "", match["arg"] or ""))
    leftover = INTERPOLATION.sub("", text)
    assert "$" not in leftover, f"malformed interpolation in {text!r}"
    return found


def with_defaults(value: Any) -> str:
    """``value`` with each ${VAR:-default} replaced by its default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(value))


@dataclass(frozen=True)
class Port:
    host_ip: str | None
    published: int | None
    target: int


def ports(service: dict[str, Any]) -> list[Port]:
    """A service's published ports, short ([IP:]HOST:CONTAINER) or long syntax."""
    found = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = with_defaults(entry["published"]) if "published" in entry else None
            host_ip = with_defaults(entry["host_ip"]) if "host_ip" in entry else None
            found.append(Port(host_ip, int(published) if published else None, int(entry["target"])))
            continue
        parts = with_defaults(entry).split("/")[0].rsplit(":", 2)
        target = int(parts[-1])
        published = int(parts[-2]) if len(parts) >= 2 else None
        host_ip = parts[-3] if len(parts) == 3 else None
        found.append(Port(host_ip, published, target))
    return found


def healthcheck_ports(service: dict[str, Any]) -> set[int]:
    test = service.get("healthcheck", {}).get("test", [])
    text = " ".join(test) if isinstance(test, list) else test
    return {int(port) for port in re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/", text)}


def is_app_service(doc: dict[str, Any], service: dict[str, Any]) -> bool:
    """Runs the image built from the project's Dockerfile (web, migrate, the Celery services,
    flower)."""
    built = {other["image"] for other in doc["services"].values() if "build" in other}
    return "build" in service or service.get("image") in built


def one_shot_services(doc: dict[str, Any]) -> set[str]:
    """Services others wait to *complete* (the migrations)."""
    return {
        target
        for service in doc["services"].values()
        for target, dependency in (service.get("depends_on") or {}).items()
        if isinstance(dependency, dict)
        and dependency.get("condition") == "service_completed_successfully"
    }


# Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage (continuation lines joined, comments dropped)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a RUN line, split at &&, ||, ; and | (quotes respected)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def lets_others_run(mode: str) -> bool:
    """Whether a chmod/install mode makes a root-owned file readable and runnable by any user."""
    if re.fullmatch(r"0?[0-7]{3}", mode):
        return int(mode, 8) & 0o005 == 0o005
    symbolic = re.fullmatch(r"([ugoa]*)\+([rwxX]+)", mode)
    # Files a RUN line creates are 0644 (umask 022): other users can already read them.
    return bool(symbolic) and set(symbolic[1] or "a") & {"a", "o"} != set() and "x" in symbolic[2]


@dataclass
class Installed:
    source: str  # path in the build context
    runnable: bool = False  # readable and executable by the unprivileged user


def installed_files(stage: list[Instruction]) -> dict[str, Installed]:
    """Absolute paths a stage creates from build-context files: COPY, and RUN redirections."""
    files: dict[str, Installed] = {}
    for instruction in stage:
        if instruction.keyword in {"COPY", "ADD"}:
            tokens = shlex.split(instruction.args)
            flags = [token for token in tokens if token.startswith("--")]
            if any(flag.startswith("--from") for flag in flags):
                continue
            chmod = next(
                (flag.split("=", 1)[1] for flag in flags if flag.startswith("--chmod=")), ""
            )
            *sources, dest = [token for token in tokens if not token.startswith("--")]
            for source in sources:
                if not dest.startswith("/"):
                    continue  # relative to WORKDIR: the source tree, checked elsewhere
                multiple = len(sources) > 1 or dest.endswith("/")
                target = posixpath.join(dest, posixpath.basename(source)) if multiple else dest
                files[target] = Installed(source, bool(chmod) and lets_others_run(chmod))
        elif instruction.keyword == "RUN":
            for command in shell_commands(instruction.args):
                if ">" in command[:-1]:
                    arrow = command.index(">")
                    if command[arrow + 1] != "/dev/null":
                        files[command[arrow + 1]] = Installed(command[arrow - 1])
                elif command[0] in {"cp", "install"} and not {"-d", "--directory"} & set(command):
                    mode = ""
                    if "-m" in command:
                        mode = command[command.index("-m") + 1]
                    paths = [arg for arg in command[1:] if not arg.startswith("-") and arg != mode]
                    if len(paths) == 2:
                        files[paths[1]] = Installed(paths[0], bool(mode) and lets_others_run(mode))
                elif command[0] == "chmod" and len(command) > 2:
                    for path in command[2:]:
                        if path in files:
                            files[path].runnable = lets_others_run(command[1])
    return files


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec form: {args}"
    return value


# .dockerignore -----------------------------------------------------------------------------


@functools.lru_cache
def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus **)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(dockerignore: str, path: str) -> bool:
    """Whether ``path`` (relative to the build context) is left out of the context: the last
    pattern matching it or one of its parent folders wins; `!` patterns re-include."""
    candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    excluded = False
    for line in dockerignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.removeprefix("!").strip()).lstrip("/")
        if any(_ignore_regex(pattern).match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# --- the rendered variants ------------------------------------------------------------------


class Project:
    def __init__(self, path: Path, answers: dict[str, Any]) -> None:
        self.path = path
        self.answers = answers
        self.package = yaml.safe_load((path / ".copier-answers.yml").read_text())["package_name"]

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()

    @functools.cached_property
    def compose(self) -> dict[str, dict[str, Any]]:
        return {name: yaml.safe_load(self.read(name)) for name in COMPOSE_FILES}

    @functools.cached_property
    def env(self) -> dict[str, str]:
        return parse_env(self.read(".env"))

    @functools.cache  # noqa: B019 (a project lives as long as the module's tests)
    def stages(self, dockerfile: str) -> list[list[Instruction]]:
        return dockerfile_stages(self.read(dockerfile))

    @functools.cached_property
    def scripts(self) -> dict[str, str]:
        """Shell scripts under compose/, by path."""
        found = {}
        for path in sorted((self.path / "compose").rglob("*")):
            if path.is_file() and path.read_bytes().startswith(b"#!"):
                found[path.relative_to(self.path).as_posix()] = path.read_text()
        return found

    def container_files(self) -> dict[str, str]:
        names = [*COMPOSE_FILES, ".dockerignore", ".env.example", *DOCKERFILES.values()]
        names += self.scripts
        return {name: self.read(name) for name in names}


@pytest.fixture(scope="module")
def render(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, Any]], Project]:
    """`render(answers)`: each variant is rendered once per module (and worker)."""
    cache: dict[str, Project] = {}

    def _render(answers: dict[str, Any]) -> Project:
        key = variant_id(answers)
        if key not in cache:
            dst = tmp_path_factory.mktemp("container-files") / "project"
            copier.run_copy(str(template_dir), str(dst), data=answers, defaults=True, quiet=True)
            cache[key] = Project(dst, answers)
        return cache[key]

    return _render


@functools.cache
def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# --- the variant set ------------------------------------------------------------------------


def test_variants_cover_every_container_answer() -> None:
    combinations = {tuple(answers[axis] for axis in CONTAINER_AXES) for answers in VARIANTS}
    assert len(combinations) == len(VARIANTS) == 3 * 2 * 2 * 2 * 2
    assert {answers["python_version"] for answers in VARIANTS} == set(PYTHON_VERSIONS)


def test_ci_answer_changes_no_container_file(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    answers = {**VARIANTS[0]}
    rendered = []
    for ci in ("github", "none"):
        dst = tmp_path_factory.mktemp(f"ci-{ci}") / "project"
        data = {**answers, "ci": ci}
        copier.run_copy(str(template_dir), str(dst), data=data, defaults=True, quiet=True)
        rendered.append(Project(dst, {**answers, "ci": ci}).container_files())
    assert rendered[0] == rendered[1]


# --- Dockerfile -----------------------------------------------------------------------------


@by_variant
@pytest.mark.parametrize("dockerfile", DOCKERFILES.values())
def test_hadolint_finds_nothing(
    render, answers: dict[str, Any], dockerfile: str, tmp_path: Path
) -> None:
    project = render(answers)
    assert not list(project.path.glob(".hadolint.y*ml")), "a config file would relax the rules"
    # No configuration from the machine: an empty HOME and XDG_CONFIG_HOME, no HADOLINT_* vars.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    run = subprocess.run(
        [dev_tool("hadolint"), "--format", "json", "--failure-threshold", "style", dockerfile],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
    )
    findings = json.loads(run.stdout or "null")
    assert findings == [], json.dumps(findings, indent=1) + run.stderr
    assert run.returncode == 0, run.stderr
    lines = project.read(dockerfile).splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#"), f"say why above: {line}"
            assert "hadolint" not in reason, f"say why above: {line}"


@by_variant
@pytest.mark.parametrize("dockerfile", DOCKERFILES.values())
def test_final_stage_runs_as_an_unprivileged_user(
    render, answers: dict[str, Any], dockerfile: str
) -> None:
    final = render(answers).stages(dockerfile)[-1]
    defaults = {}
    for instruction in final:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, value = instruction.args.split("=", 1)
            defaults[name] = value
    users = [instruction.args for instruction in final if instruction.keyword == "USER"]
    assert users, "the final stage has no USER: the app would run as root"
    user = re.sub(r"\$\{?(\w+)\}?", lambda match: defaults.get(match[1], match[0]), users[-1])
    name = user.split(":")[0]
    assert "$" not in name, f"USER {users[-1]} has no default value"
    assert name not in {"0", "root"}, f"USER {users[-1]} is root"


COMPILERS = re.compile(
    r"(?<![\w.-])(gcc|g\+\+|cc|clang|make|build-essential|build-base|libc6?-dev|musl-dev"
    r"|python3?-dev|lib[\w.+-]+-dev)(?![\w.+-])"
)


@by_variant
@pytest.mark.parametrize("dockerfile", DOCKERFILES.values())
def test_final_stage_is_slim_and_installs_no_compiler(
    render, answers: dict[str, Any], dockerfile: str
) -> None:
    stages = render(answers).stages(dockerfile)
    version = re.escape(answers["python_version"])
    for stage in stages:
        base = stage[0].args.split()[0]
        # Pinned to a patch release of the answered Python, on a slim Debian: no compiler in it.
        assert re.fullmatch(rf"python:{version}\.\d+-slim-[a-z]+", base), base
    for instruction in stages[-1]:
        if instruction.keyword == "RUN":
            for command in shell_commands(instruction.args):
                if command[:2] in (["apt-get", "install"], ["apt", "install"], ["apk", "add"]):
                    packages = " ".join(command[2:])
                    assert not COMPILERS.search(packages), (
                        f"compiler in the final stage: {packages}"
                    )


# --- compose files: schema and general rules ------------------------------------------------


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_spec(render, answers: dict[str, Any], name: str) -> None:
    doc = render(answers).compose[name]
    errors = sorted(compose_validator().iter_errors(doc), key=lambda error: list(error.path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors
    )
    assert "version" not in doc, "the top-level version key is obsolete"
    assert doc.get("name"), "a compose project name keeps container names stable"


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_interpolated_variable_has_a_value(
    render, answers: dict[str, Any], name: str
) -> None:
    project = render(answers)
    found = [found for text in strings(project.compose[name]) for found in interpolations(text)]
    for variable in found:
        assert variable.has_default or variable.name in project.env, (
            f"${{{variable.name}}} has no default and the generated .env does not set it"
        )
    # The database's and the broker's passwords: always from .env, never a fixed fallback, in
    # their service and in every URL that carries them.
    secrets = ["BROKER_PASSWORD"] + (
        ["DATABASE_PASSWORD"] if answers["database"] != "sqlite" else []
    )
    for secret in secrets:
        uses = [variable for variable in found if variable.name == secret]
        assert len(uses) >= 2, f"{secret} should be used by its service and by a URL"
        assert {variable.op for variable in uses} == {":?"}, f"{secret} must be required (:?)"
        assert project.env[secret], f".env has no {secret}"
    passwords = {variable.name for variable in found if "PASSWORD" in variable.name}
    assert passwords == set(secrets)


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_dependencies_wait_for_health_or_completion(
    render, answers: dict[str, Any], name: str
) -> None:
    services = render(answers).compose[name]["services"]
    for service_name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{service_name}: depends_on needs conditions"
        for target, dependency in depends_on.items():
            assert target in services, f"{service_name} depends on unknown {target}"
            condition = dependency.get("condition")
            if condition == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check.get("test"), f"{target}: no healthcheck"
                assert not check.get("disable"), f"{target}: healthcheck disabled"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not a one-shot"
            else:
                pytest.fail(f"{service_name} -> {target}: condition {condition!r}")


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_long_running_services_have_a_healthcheck(
    render, answers: dict[str, Any], name: str
) -> None:
    doc = render(answers).compose[name]
    one_shots = one_shot_services(doc)
    assert one_shots == {"migrate"}
    for service_name, service in doc["services"].items():
        if service_name not in one_shots:
            assert service.get("healthcheck", {}).get("test"), f"{service_name}: no healthcheck"


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_app_services_run_under_an_init(render, answers: dict[str, Any], name: str) -> None:
    doc = render(answers).compose[name]
    services = doc["services"]
    app_services = {key for key, service in services.items() if is_app_service(doc, service)}
    assert {"web", "migrate", "celery_worker"} <= app_services
    for service_name in app_services:
        assert services[service_name].get("init") is True, f"{service_name}: init: true"


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_one_service_builds_the_image_every_app_service_runs(
    render, answers: dict[str, Any], name: str
) -> None:
    """Built once per `docker compose build`, not once per service (each build but the last
    would leave a dangling image)."""
    services = render(answers).compose[name]["services"]
    assert [key for key, service in services.items() if "build" in service] == ["web"]
    image = services["web"]["image"]
    runs_it = {key for key, service in services.items() if service.get("image") == image}
    expected = {"web", "migrate", "celery_worker"}
    expected |= {"celery_beat"} if answers["use_celery_beat"] else set()
    expected |= {"flower"} if answers["use_flower"] else set()
    assert runs_it == expected


HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_]\w*")


@by_variant
def test_container_files_work_on_docker_engine_20_10(render, answers: dict[str, Any]) -> None:
    """Debian 12's docker.io (Engine 20.10, API 1.41) refuses heredocs, `COPY --link` and a
    `# syntax=` parser directive (it would pull the frontend) in a Dockerfile, and compose's
    healthcheck.start_interval (Engine 25): current Docker takes the files without them too."""
    project = render(answers)
    for name, path in DOCKERFILES.items():
        dockerfile = project.read(path)
        assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.MULTILINE | re.IGNORECASE)
        assert not HEREDOC.search(dockerfile)
        assert "--link" not in dockerfile
        for service_name, service in project.compose[name]["services"].items():
            assert "start_interval" not in service.get("healthcheck", {}), service_name


def test_engine_20_10_check_sees_a_heredoc() -> None:
    assert HEREDOC.search("RUN <<EOF\necho hi\nEOF")
    assert HEREDOC.search("COPY <<-'EOT' /etc/x")
    assert not HEREDOC.search("RUN echo 1 << 2")


def celery_limits(project: Project) -> dict[str, float]:
    config = project.read(f"{project.package}/config.py")
    names = ("task_time_limit", "task_soft_time_limit", "worker_soft_shutdown_timeout")
    found = {}
    for setting in names:
        match = re.search(rf"[\"']{setting}[\"']\s*:\s*([\d.]+)", config)
        if match:
            found[setting] = float(match[1])
    return found


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_worker_grace_period_outlasts_a_warm_shutdown(
    render, answers: dict[str, Any], name: str
) -> None:
    project = render(answers)
    limits = celery_limits(project)
    # A warm shutdown waits for the running tasks, which the hard time limit bounds; a soft
    # shutdown (worker_soft_shutdown_timeout), if configured, must fit in the grace period too.
    assert "task_time_limit" in limits, "without task_time_limit a warm shutdown is unbounded"
    needed = max(limits.values())
    grace = project.compose[name]["services"]["celery_worker"].get("stop_grace_period", "10s")
    assert duration_seconds(grace) > needed, f"stop_grace_period {grace} <= {needed:g}s ({limits})"


# gunicorn's default --graceful-timeout: how long SIGTERM lets its workers finish requests.
GUNICORN_GRACEFUL_TIMEOUT = 30


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_web_grace_period_outlasts_gunicorns_graceful_stop(
    render, answers: dict[str, Any], name: str
) -> None:
    project = render(answers)
    start = project.read(f"{SCRIPTS_DIR}/start")
    timeout = re.search(r"--graceful-timeout\s+\"?(\d+)", start)
    needed = int(timeout[1]) if timeout else GUNICORN_GRACEFUL_TIMEOUT
    grace = project.compose[name]["services"]["web"].get("stop_grace_period", "10s")
    assert duration_seconds(grace) > needed, f"web: stop_grace_period {grace} <= {needed} s"


def test_duration_parser() -> None:
    assert duration_seconds("60s") == 60
    assert duration_seconds("5m30s") == 330
    assert duration_seconds("1h") == 3600
    assert duration_seconds("1m0.5s") == 60.5
    with pytest.raises(AssertionError):
        duration_seconds("60")


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_ports_match_the_scripts_and_healthchecks(
    render, answers: dict[str, Any], name: str
) -> None:
    project = render(answers)
    services = project.compose[name]["services"]
    exposed = {
        int(port)
        for instruction in project.stages(DOCKERFILES[name])[-1]
        if instruction.keyword == "EXPOSE"
        for port in instruction.args.split()
    }
    script_defaults = {
        "web": ("HOST", "PORT", DEV_START if name == DEV else f"{SCRIPTS_DIR}/start"),
        "flower": ("FLOWER_HOST", "FLOWER_PORT", f"{SCRIPTS_DIR}/celery/flower/start"),
    }
    for service_name, (host_var, port_var, script) in script_defaults.items():
        if service_name not in services:
            continue
        service = services[service_name]
        environment = service["environment"]
        port = int(environment[port_var])
        # The container listens on all its interfaces, or a published port would not answer.
        assert environment[host_var] == "0.0.0.0"
        default = re.search(rf"\$\{{{port_var}:-(\d+)\}}", project.read(script))
        assert default, f"{script} sets no default {port_var}"
        assert int(default[1]) == port, f"{script}: default {port_var} != {port}"
        assert healthcheck_ports(service) == {port}, f"{service_name}: healthcheck port"
        for published in ports(service):
            assert published.target == port, f"{service_name} publishes {published}, not {port}"
            # Nothing is published on every interface by default.
            assert published.host_ip == "127.0.0.1", f"{service_name}: {published}"
        if service_name == "web":
            assert exposed == {port}, f"Dockerfile EXPOSE {exposed}, web listens on {port}"
    published = {key: ports(service) for key, service in services.items() if "ports" in service}
    if name == DEV:
        # The tutorial's ports; the database and the broker stay unpublished.
        expected = {"web": [Port("127.0.0.1", 5010, 5000)]}
        if answers["use_flower"]:
            expected["flower"] = [Port("127.0.0.1", 5557, 5555)]
        assert published == expected
    else:
        assert published == {"web": [Port("127.0.0.1", 8000, 5000)]}


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_secrets_come_from_the_env_file(render, answers: dict[str, Any], name: str) -> None:
    project = render(answers)
    doc = project.compose[name]
    for service_name, service in doc["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict)
        if is_app_service(doc, service):
            assert service.get("env_file") == ".env", f"{service_name}: env_file: .env"
            assert not {"SECRET_KEY", "FLOWER_BASIC_AUTH"} & set(environment)
        for key, value in environment.items():
            if re.search(SECRET_NAMES, key) and "RANDOM" not in key:
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{key}: literal secret"
        secrets = [value for key, value in project.env.items() if re.search(SECRET_NAMES, key)]
        for value in map(str, environment.values()):
            assert not [secret for secret in secrets if secret and secret in value], key


# --- compose files and the image ------------------------------------------------------------


@by_variant
def test_services_run_scripts_the_image_installs(render, answers: dict[str, Any]) -> None:
    project = render(answers)
    scripts_run = set()
    for name, dockerfile in DOCKERFILES.items():
        final = project.stages(dockerfile)[-1]
        installed = installed_files(final)
        assert installed, "the final stage installs no start script"
        for path, file in installed.items():
            source = project.path / file.source
            assert source.is_file(), f"{path} is built from {file.source}, which is not rendered"
            assert os.access(source, os.X_OK), f"{file.source} is not executable in the project"
        commands = [
            exec_form(instruction.args)
            for instruction in final
            if instruction.keyword in {"ENTRYPOINT", "CMD"}
        ]
        doc = project.compose[name]
        assert doc["services"]["web"]["build"]["dockerfile"] == dockerfile
        for service in doc["services"].values():
            if is_app_service(doc, service):
                commands.append(service["command"])
                check = service.get("healthcheck", {}).get("test", [])
                if check[:1] == ["CMD"]:
                    commands.append(check[1:])
        for command in commands:
            assert isinstance(command, list), f"use the exec form: {command}"
            program = command[0]
            if program.startswith("/"):
                assert program in installed, f"{program} is not installed by {dockerfile}"
                assert installed[program].runnable, f"{program} is not executable by the app user"
                scripts_run.add(installed[program].source)
            if "--app" in command:
                assert (project.path / command[command.index("--app") + 1]).is_file()
    # Every start script the template renders is used by some service, and only those.
    assert scripts_run == set(project.scripts)


@by_variant
def test_dev_and_prod_define_the_same_services(render, answers: dict[str, Any]) -> None:
    docs = render(answers).compose
    dev, prod = (docs[name]["services"] for name in COMPOSE_FILES)
    assert set(dev) == set(prod)
    for name in dev:
        for key in ("command", "healthcheck", "depends_on", "stop_grace_period", "init"):
            assert dev[name].get(key) == prod[name].get(key), f"{name}: {key} differs"
        if is_app_service(docs[DEV], dev[name]):
            for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
                assert dev[name]["environment"][key] == prod[name]["environment"][key], key
        else:
            assert dev[name]["image"] == prod[name]["image"]
            assert dev[name].get("environment") == prod[name].get("environment")


# --- the production file --------------------------------------------------------------------


@by_variant
def test_prod_bind_mounts_nothing(render, answers: dict[str, Any]) -> None:
    doc = render(answers).compose[PROD]
    named = set(doc.get("volumes") or {})
    for service_name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                assert volume["type"] == "volume", volume
                assert volume["source"] in named, volume
            else:
                source = volume.split(":")[0]
                assert ":" in volume, f"{service_name}: anonymous volume {volume}"
                assert source in named, f"{service_name} mounts {volume}"


@by_variant
def test_prod_restarts_every_long_running_service(render, answers: dict[str, Any]) -> None:
    doc = render(answers).compose[PROD]
    one_shots = one_shot_services(doc)
    for service_name, service in doc["services"].items():
        policy = service.get("restart")
        if service_name in one_shots:
            assert policy in {"no", "on-failure"}, f"{service_name}: restart {policy}"
        else:
            assert policy in {"always", "unless-stopped"}, f"{service_name}: restart {policy}"


@by_variant
def test_prod_runs_the_production_config_under_gunicorn(render, answers: dict[str, Any]) -> None:
    project = render(answers)
    services = project.compose[PROD]["services"]
    for service_name, service in services.items():
        if is_app_service(project.compose[PROD], service):
            environment = service["environment"]
            assert environment.get("FLASK_CONFIG") == "production", service_name
            assert str(environment.get("FLASK_DEBUG")) == "0", service_name
            assert ":" in service.get("image", ""), f"{service_name}: name and tag the image"
        if service.get("command", [""])[0] == "flask":
            assert "run" not in service["command"], f"{service_name} runs Flask's dev server"
    assert services["web"]["command"] == ["/start"]
    start = project.read(f"{SCRIPTS_DIR}/start")
    assert re.search(r"^exec gunicorn ", start, re.MULTILINE)
    assert "flask run" not in start


# --- data service images ----------------------------------------------------------------------


@by_variant
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_images_are_pinned(render, answers: dict[str, Any], name: str) -> None:
    doc = render(answers).compose[name]
    for service_name, service in doc["services"].items():
        if not is_app_service(doc, service):
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*", image), f"{service_name}: {image}"


# --- start scripts --------------------------------------------------------------------------


def statements(script: str) -> list[str]:
    """Logical lines of a shell script: comments and blank lines dropped, continuations joined."""
    lines, pending = [], ""
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


LOOP = re.compile(r"(?:^|[;&|]\s*)(while|until)\s+(.+?)(?:;\s*do\b|$)")
NETCAT = re.compile(r"(?:^|[\s;|&(`])(nc|ncat|netcat|wait-for-it(?:\.sh)?|wait-for)(?=\s|$)")


def script_problems(script: str, starts_a_service: bool = True) -> list[str]:
    """What a start script does wrong: strict mode, exec, unbounded loops, netcat."""
    problems = []
    body = statements(script)
    if not script.startswith("#!/usr/bin/env bash\n"):
        problems.append("the first line is not #!/usr/bin/env bash")
    if not body or body[0] != STRICT_MODE:
        problems.append(f"the first command is not `{STRICT_MODE}`")
    if starts_a_service and (not body or not body[-1].startswith("exec ")):
        problems.append("the last command does not exec the service (signals would not reach it)")
    for line in body:
        for keyword, condition in LOOP.findall(line):
            bounded = re.search(r"\bSECONDS\b|deadline|\$\(\s*date\b", condition)
            if condition.strip() in {"true", ":"} or not bounded:
                problems.append(f"`{keyword} {condition}` has no time limit")
        if NETCAT.search(line):
            problems.append(f"uses netcat or a wait-for script: {line}")
        if re.search(r"\bsleep\s+infinity\b", line):
            problems.append(f"sleeps forever: {line}")
    return problems


def test_script_checker_catches_bad_scripts() -> None:
    good = f"#!/usr/bin/env bash\n# comment\n{STRICT_MODE}\n\nexec gunicorn \\\n  app:app\n"
    assert script_problems(good) == []
    assert len(script_problems(good.replace(STRICT_MODE, "set -e"))) == 1
    assert len(script_problems(good.replace("exec gunicorn", "gunicorn"))) == 1
    for loop in (
        "until nc -z db 5432; do sleep 1; done",
        "while true; do sleep 1; done",
        "until celery inspect ping; do sleep 1; done",
    ):
        assert script_problems(good.replace("\nexec", f"\n{loop}\nexec")), loop
    bounded = "while (( SECONDS < deadline )); do sleep 1; done"
    assert script_problems(good.replace("\nexec", f"\n{bounded}\nexec")) == []


@by_variant
def test_start_scripts_are_strict_exec_and_bounded(render, answers: dict[str, Any]) -> None:
    scripts = render(answers).scripts
    expected = {"entrypoint", "start", "celery/worker/start", "celery/healthcheck"}
    expected |= {"celery/beat/start"} if answers["use_celery_beat"] else set()
    expected |= {"celery/flower/start"} if answers["use_flower"] else set()
    assert set(scripts) == {f"{SCRIPTS_DIR}/{name}" for name in expected} | {DEV_START}
    for path, text in scripts.items():
        starts_a_service = not path.endswith("/healthcheck")
        assert script_problems(text, starts_a_service) == [], path


VARIABLE_READ_IN_PYTHON = re.compile(
    r"(?:os\.environ\.get|os\.getenv|env_number|env_count|\burl|os\.environ\.setdefault)"
    r"\(\s*[\"']([A-Z][A-Z0-9_]*)"
    r"|os\.environ\[\s*[\"']([A-Z][A-Z0-9_]*)"
)
VARIABLE_READ_IN_SHELL = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")


@by_variant
def test_every_variable_read_is_in_the_env_sample(render, answers: dict[str, Any]) -> None:
    project = render(answers)
    read: dict[str, str] = {}
    sources = [project.path / "app.py", *sorted((project.path / project.package).rglob("*.py"))]
    sources.append(project.path / "migrations" / "env.py")
    for source in sources:
        for match in VARIABLE_READ_IN_PYTHON.finditer(source.read_text()):
            read[match[1] or match[2]] = source.relative_to(project.path).as_posix()
    for path, text in project.scripts.items():
        for line in statements(text):
            for name in VARIABLE_READ_IN_SHELL.findall(line):
                if name not in SHELL_VARIABLES:
                    read[name] = path
    # The scan itself works: it sees what the app and the web script are known to read.
    assert {"SECRET_KEY", "DATABASE_URL", "FLASK_CONFIG", "PORT"} <= set(read)
    listed = listed_variables(project.read(".env.example"))
    missing = {name: where for name, where in read.items() if name not in listed}
    assert not missing, f"read but not in .env.example: {missing}"


# --- .dockerignore --------------------------------------------------------------------------


def test_dockerignore_matcher() -> None:
    rules = ".env\n.env.*\n!.env.example\n.venv/\n**/__pycache__\n*.sqlite3\n/build\n"
    assert dockerignored(rules, ".env")
    assert dockerignored(rules, ".env.local")
    assert not dockerignored(rules, ".env.example")
    assert dockerignored(rules, ".venv/bin/python")
    assert dockerignored(rules, "pkg/sub/__pycache__/x.pyc")
    assert dockerignored(rules, "db.sqlite3")
    assert not dockerignored(rules, "pkg/db.sqlite3")  # Docker anchors patterns at the root
    assert dockerignored(rules, "build/lib/x.py")
    assert not dockerignored(rules, "app.py")
    assert not dockerignored("# .env\n", ".env")


@by_variant
def test_dockerignore_keeps_secrets_and_state_out_but_not_the_sources(
    render, answers: dict[str, Any]
) -> None:
    project = render(answers)
    rules = project.read(".dockerignore")
    for path in (
        ".env",
        ".env.local",
        ".env.production",
        ".venv/bin/python",
        "venv/pyvenv.cfg",
        "db.sqlite3",
        "celerybeat-schedule",
        "celerybeat-schedule.db",
        "celerybeat-schedule.dat",
        ".git/HEAD",
        f"{project.package}/__pycache__/config.cpython-313.pyc",
    ):
        assert dockerignored(rules, path), f"{path} would be sent to the Docker build"
    needed = [".env.example", "pyproject.toml", "app.py", "migrations/env.py"]
    needed += [f"{project.package}/__init__.py", f"{project.package}/config.py"]
    stages = [stage for path in DOCKERFILES.values() for stage in project.stages(path)]
    finals = [project.stages(path)[-1] for path in DOCKERFILES.values()]
    needed += [file.source for final in finals for file in installed_files(final).values()]
    for stage in stages:
        for instruction in stage:
            if instruction.keyword == "COPY" and "--from" not in instruction.args:
                tokens = [token for token in shlex.split(instruction.args) if token[:2] != "--"]
                needed += [source for source in tokens[:-1] if source != "."]
    for path in needed:
        assert (project.path / path).exists(), path
        assert not dockerignored(rules, path), f"the image needs {path}, .dockerignore drops it"
