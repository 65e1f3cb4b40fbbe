"""The generated template-update script (ci=github): a pull request per new template release.

The tests run `.github/scripts/template_update.py` of a generated project as its weekly workflow
does: in a shallow clone of the project's "origin" (a bare repository), with a fake `gh` first on
PATH that records its arguments. The template comes from conftest.py's ``template_repo`` (the
working tree as v0.3.0), plus a v0.4.0 made here on top of it: both releases hold the script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import REPO, WORKING_TREE_RELEASE, git
from copier import run_copy, run_update

CURRENT, NEXT = WORKING_TREE_RELEASE, "v0.4.0"
BRANCH = f"template-update/{NEXT}"
SCRIPT = Path(".github/scripts/template_update.py")  # in the generated project
GITHUB_DIR = "template/{% if ci == 'github' %}.github{% endif %}"  # in the template repository
TEMPLATE_SCRIPT = REPO / GITHUB_DIR / "scripts"
# What v0.4.0 changes: a section added to the README, a line of the package changed, a line
# added to the workflow.
WORKFLOW = ".github/workflows/template-update.yml"
NEW_WORKFLOW_LINE = "# Changed in 0.4.0.\n"
NEW_SECTION = "\n## Added in 0.4.0\n\nA section the template added in release 0.4.0.\n"
MAIN = "flask_celery_app/main.py"
OLD_LINE, NEW_LINE = 'return "Hello, World!"', 'return "Hello from 0.4.0!"'
USER_SECTION = "\n## Deployment notes\n\nOur team deploys this with Ansible.\n"
USER_MODULE = '"""Reports: a module the user added."""\n'
FAKE_GH = """\
#!{python}
import json, os, sys

with open(os.environ["FAKE_GH_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_GH_FAIL"):
    sys.exit("pull request create failed: GitHub Actions is not permitted to create pull requests")
print("https://github.com/acme/project/pull/7")
"""


@pytest.fixture(scope="module")
def releases(template_repo: Path) -> Path:
    """The template repository, with a release v0.4.0 after the working tree's v0.3.0."""
    readme = template_repo / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + NEW_SECTION)
    main = template_repo / "template" / "{{ package_name }}" / "main.py"
    text = main.read_text()
    assert OLD_LINE in text
    main.write_text(text.replace(OLD_LINE, NEW_LINE))
    workflow = template_repo / GITHUB_DIR / "workflows" / Path(WORKFLOW).name
    workflow.write_text(workflow.read_text() + NEW_WORKFLOW_LINE)
    git(template_repo, "commit", "-q", "-a", "-m", NEXT)
    git(template_repo, "tag", NEXT)
    return template_repo


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def generate(template: Path, directory: Path, ref: str, edits: bool = False) -> Path:
    """A project generated at ``ref`` (ci=github), committed on main and pushed to a bare
    repository, "origin", which is returned. With ``edits``, the user's work is committed
    first: a README section, a new module."""
    project = directory / "project"
    quiet = {"defaults": True, "quiet": True, "unsafe": True}
    run_copy(str(template), project, data={"ci": "github"}, vcs_ref=ref, **quiet)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", f"Generate from the template {ref}")
    if edits:
        edit(project / "README.md", "\n## Layout\n", f"{USER_SECTION}\n## Layout\n")
        (project / "flask_celery_app" / "reports.py").write_text(USER_MODULE)
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "User edits")
    origin = directory / "origin.git"
    git(directory, "init", "-q", "--bare", "-b", "main", str(origin))
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "-q", "origin", "main")
    return origin


def checkout(origin: Path, directory: Path) -> Path:
    """A shallow clone of ``origin``'s main, as actions/checkout makes."""
    git(directory.parent, "clone", "-q", "--depth", "1", origin.as_uri(), str(directory))
    return directory


class FakeGh:
    """A `gh` executable that records each call's arguments (and fails on demand)."""

    def __init__(self, directory: Path) -> None:
        self.bin = directory / "fake-bin"
        self.bin.mkdir()
        gh = self.bin / "gh"
        gh.write_text(FAKE_GH.format(python=sys.executable))
        gh.chmod(0o755)
        self.log = directory / "gh-calls.jsonl"

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def gh(tmp_path: Path) -> FakeGh:
    return FakeGh(tmp_path)


def run_script(
    project: Path, gh: FakeGh, *args: str, fail_gh: bool = False
) -> subprocess.CompletedProcess[str]:
    """The project's own script, run in it, Copier being this Python's."""
    env = {**os.environ, "PATH": f"{gh.bin}{os.pathsep}{os.environ['PATH']}"}
    env["FAKE_GH_LOG"] = str(gh.log)
    env.pop("FAKE_GH_FAIL", None)
    if fail_gh:
        env["FAKE_GH_FAIL"] = "1"
    copier = shlex.join([sys.executable, "-m", "copier"])
    command = [sys.executable, str(SCRIPT), "--copier", copier, *args]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def remote_branches(origin: Path) -> dict[str, str]:
    """Branch name -> commit, in ``origin``."""
    lines = git(origin, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    return dict(line.split() for line in lines.splitlines())


def show(origin: Path, path: str, ref: str = BRANCH) -> str:
    return git(origin, "show", f"{ref}:{path}")


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_pull_request_brings_the_release_and_keeps_the_users_work(
    releases: Path, tmp_path: Path, gh: FakeGh
) -> None:
    origin = generate(releases, tmp_path, CURRENT, edits=True)
    main_before = remote_branches(origin)["main"]
    clone = checkout(origin, tmp_path / "checkout")

    run = run_script(clone, gh)

    assert run.returncode == 0, run.stdout + run.stderr
    branches = remote_branches(origin)
    assert set(branches) == {"main", BRANCH}
    assert branches["main"] == main_before  # the default branch is left alone
    assert git(origin, "rev-parse", f"{BRANCH}^") == f"{main_before}\n"  # one commit on main
    # The release arrived...
    readme = show(origin, "README.md")
    assert readme.endswith(NEW_SECTION)
    assert NEW_LINE in show(origin, MAIN)
    assert f"_commit: {NEXT}\n" in show(origin, ".copier-answers.yml")
    assert show(origin, WORKFLOW).endswith(NEW_WORKFLOW_LINE)
    # ... the user's work stayed, and nothing is left to resolve.
    assert USER_SECTION in readme
    assert show(origin, "flask_celery_app/reports.py") == USER_MODULE
    files = git(origin, "ls-tree", "-r", "--name-only", BRANCH).split()
    assert ".env" not in files  # git ignores it: the job's fresh one stays out
    assert not [name for name in files if name.endswith(".rej")]
    markers = subprocess.run(
        ["git", "grep", "-l", "-e", "^<<<<<<< ", BRANCH], cwd=origin, capture_output=True
    )
    assert markers.returncode == 1, markers.stdout  # no match

    [call] = gh.calls()
    assert call[:2] == ["pr", "create"]
    assert option(call, "--head") == BRANCH
    assert option(call, "--title") == "Update from the template: 0.3.0 to 0.4.0"
    body = option(call, "--body")
    assert f"from release 0.3.0 to release 0.4.0 of its template (`{releases}`)" in body
    assert f"`CHANGELOG.md` of the template (`{releases}`)" in body
    assert "### Conflicts\n\nNone: every change of the template applied cleanly." in body
    assert "git diff" in body
    assert "uv run pytest" in body
    assert "https://github.com/acme/project/pull/7" in run.stdout


def test_pull_request_lists_the_files_with_conflicts(
    releases: Path, tmp_path: Path, gh: FakeGh
) -> None:
    """The user changed the line v0.4.0 changes: the conflict is committed, for the reviewer."""
    origin = generate(releases, tmp_path, CURRENT)
    project = tmp_path / "project"
    edit(project / MAIN, OLD_LINE, 'return "Hello, team!"')
    git(project, "commit", "-q", "-a", "-m", "Our greeting")
    git(project, "push", "-q", "origin", "main")

    run = run_script(checkout(origin, tmp_path / "checkout"), gh)

    assert run.returncode == 0, run.stdout + run.stderr
    main = show(origin, MAIN)
    for text in ("<<<<<<< ", 'return "Hello, team!"', "=======", NEW_LINE, ">>>>>>> "):
        assert text in main
    assert main.index('"Hello, team!"') < main.index(NEW_LINE)  # before updating, after
    assert NEW_SECTION in show(origin, "README.md")  # the rest of the release applied
    assert MAIN in git(origin, "log", "-1", "--format=%B", BRANCH)
    [call] = gh.calls()
    body = option(call, "--body")
    conflicts = body.split("### Conflicts\n", 1)[1].split("###", 1)[0]
    assert conflicts.strip().endswith(f"\n- `{MAIN}`"), conflicts
    assert "None" not in conflicts
    assert f"  {MAIN}" in run.stdout


def test_nothing_happens_on_the_newest_release(releases: Path, tmp_path: Path, gh: FakeGh) -> None:
    origin = generate(releases, tmp_path, NEXT)
    clone = checkout(origin, tmp_path / "checkout")

    run = run_script(clone, gh)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "newest release of its template: nothing to do" in run.stdout
    assert set(remote_branches(origin)) == {"main"}
    assert git(clone, "branch", "--format=%(refname:short)") == "main\n"
    assert gh.calls() == []


def test_a_second_run_opens_no_second_pull_request(
    releases: Path, tmp_path: Path, gh: FakeGh
) -> None:
    origin = generate(releases, tmp_path, CURRENT)
    first = run_script(checkout(origin, tmp_path / "first"), gh)
    assert first.returncode == 0, first.stdout + first.stderr
    branches = remote_branches(origin)

    # Next week's job: a fresh checkout of main, the release's branch already pushed.
    second = run_script(checkout(origin, tmp_path / "second"), gh)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"origin has the branch {BRANCH} already" in second.stdout
    assert remote_branches(origin) == branches
    assert len(gh.calls()) == 1


def test_a_deleted_workflow_stays_deleted(releases: Path, tmp_path: Path) -> None:
    """How a project turns the weekly update off for good (docs/updating.md): Copier keeps a
    file the project deleted deleted, even when the release changes it."""
    generate(releases, tmp_path, CURRENT)
    project = tmp_path / "project"
    git(project, "rm", "-q", WORKFLOW, str(SCRIPT))
    git(project, "commit", "-q", "-m", "No weekly template update")

    run_update(project, defaults=True, quiet=True, unsafe=True, overwrite=True, vcs_ref=NEXT)

    assert NEW_LINE in (project / MAIN).read_text()  # updated...
    assert not (project / WORKFLOW).exists()  # ... without the workflow
    assert not (project / SCRIPT).exists()
    assert not list(project.rglob("*.rej"))


def test_dry_run_commits_locally_and_pushes_nothing(
    releases: Path, tmp_path: Path, gh: FakeGh
) -> None:
    origin = generate(releases, tmp_path, CURRENT)
    clone = checkout(origin, tmp_path / "checkout")

    run = run_script(clone, gh, "--dry-run")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "nothing pushed" in run.stdout
    assert "from release 0.3.0 to release 0.4.0" in run.stdout  # the pull request's text
    assert git(clone, "branch", "--show-current") == f"{BRANCH}\n"
    assert NEW_LINE in (clone / MAIN).read_text()
    assert git(clone, "status", "--porcelain") == ""  # all committed
    assert set(remote_branches(origin)) == {"main"}
    assert gh.calls() == []


def test_a_failed_pull_request_leaves_no_branch_behind(
    releases: Path, tmp_path: Path, gh: FakeGh
) -> None:
    """Else every later run would find the branch and skip the release for good."""
    origin = generate(releases, tmp_path, CURRENT)

    run = run_script(checkout(origin, tmp_path / "checkout"), gh, fail_gh=True)

    assert run.returncode == 1
    assert "gh pr create failed" in run.stderr
    assert "not permitted to create pull requests" in run.stderr
    assert "Workflow permissions" in run.stderr
    assert len(gh.calls()) == 1
    assert set(remote_branches(origin)) == {"main"}


REJECT_WORKFLOWS = """\
#!/bin/sh
echo 'refusing to allow a GitHub App to create or update workflow' \\
  '`%s` without `workflows` permission' >&2
exit 1
"""


def test_a_refused_push_says_which_token_to_use(releases: Path, tmp_path: Path, gh: FakeGh) -> None:
    """GitHub refuses a push of the job's GITHUB_TOKEN that changes a workflow, as v0.4.0 does."""
    origin = generate(releases, tmp_path, CURRENT)
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(REJECT_WORKFLOWS % WORKFLOW)
    hook.chmod(0o755)

    run = run_script(checkout(origin, tmp_path / "checkout"), gh)

    assert run.returncode == 1
    assert "git push failed" in run.stderr
    assert f"update workflow `{WORKFLOW}` without `workflows` permission" in run.stderr
    assert "a token with the Workflows permission as the secret TEMPLATE_UPDATE_TOKEN" in run.stderr
    assert (set(remote_branches(origin)), gh.calls()) == ({"main"}, [])


def test_refuses_a_dirty_working_tree(releases: Path, tmp_path: Path, gh: FakeGh) -> None:
    origin = generate(releases, tmp_path, CURRENT)
    clone = checkout(origin, tmp_path / "checkout")
    (clone / "notes.txt").write_text("work in progress\n")

    run = run_script(clone, gh)

    assert run.returncode == 1
    assert "the working tree has uncommitted changes" in run.stderr
    assert "notes.txt" in run.stderr
    assert git(clone, "branch", "--format=%(refname:short)") == "main\n"
    assert (set(remote_branches(origin)), gh.calls()) == ({"main"}, [])


def script_only(project: Path) -> Path:
    """A folder holding the template's script, where it is in a generated project."""
    (project / SCRIPT.parent).mkdir(parents=True)
    (project / SCRIPT).write_text((TEMPLATE_SCRIPT / SCRIPT.name).read_text())
    return project


@pytest.mark.parametrize("git_repository", [True, False], ids=["no-answers", "no-git"])
def test_refuses_a_directory_that_is_not_a_copier_project(
    tmp_path: Path, gh: FakeGh, git_repository: bool
) -> None:
    project = script_only(tmp_path / "project")
    if git_repository:
        git(project, "init", "-q")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "Not from Copier")

    run = run_script(project, gh)

    assert run.returncode == 1
    expected = ".copier-answers.yml not found" if git_repository else "is not a git repository"
    assert expected in run.stderr
    assert run.stderr.startswith("template update: error: ")
    assert gh.calls() == []


FAILING_COPIER = """\
import json, sys

if sys.argv[1] == "check-update":
    print(json.dumps({"update_available": True, "current_version": "1.0", "latest_version": "2.0"}))
else:
    sys.exit("Migration failed")
"""


def test_a_failed_copier_update_stops_before_the_push(tmp_path: Path, gh: FakeGh) -> None:
    project = script_only(tmp_path / "project")
    (project / ".copier-answers.yml").write_text("_commit: v1.0\n_src_path: gh:acme/tpl\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated")
    (tmp_path / "copier.py").write_text(FAILING_COPIER)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(project, "remote", "add", "origin", str(origin))

    fake_copier = f"{sys.executable} {tmp_path / 'copier.py'}"
    run = run_script(project, gh, "--copier", fake_copier)  # the last --copier counts

    assert run.returncode == 1
    assert "Migration failed" in run.stderr  # Copier's own message, then the script's
    assert "copier update failed" in run.stderr
    assert "git branch -D template-update/v2.0" in run.stderr
    assert (remote_branches(origin), gh.calls()) == ({}, [])


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    """The template's script, imported (its dataclass needs it in sys.modules meanwhile)."""
    name = "template_update_script"
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_SCRIPT / SCRIPT.name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("src_path", "release", "expected"),
    [
        ("gh:acme/flask-celery-template", "v0.4.0", "acme/flask-celery-template/blob/v0.4.0"),
        ("gh:acme/tpl.git", "0.4.0", "acme/tpl/blob/0.4.0"),
        ("https://github.com/acme/tpl.git", "v1.2.3", "acme/tpl/blob/v1.2.3"),
        ("https://github.com/acme/tpl/", "v1.2.3", "acme/tpl/blob/v1.2.3"),
        ("git@github.com:acme/tpl.git", "v1.0.0", "acme/tpl/blob/v1.0.0"),
        ("gh:acme/tpl", "v1.0.0-3-gabcdef0", "acme/tpl/blob/HEAD"),  # not a tag: the newest
    ],
)
def test_changelog_link_of_a_template_on_github(
    script: Any, src_path: str, release: str, expected: str
) -> None:
    url = f"https://github.com/{expected}/CHANGELOG.md"
    assert script.changelog_link(src_path, release) == f"[CHANGELOG.md]({url})"


@pytest.mark.parametrize(
    "src_path", ["/home/me/flask-celery-template", "https://gitlab.com/acme/tpl.git"]
)
def test_changelog_named_for_a_template_elsewhere(script: Any, src_path: str) -> None:
    assert script.changelog_link(src_path, "v0.4.0") == (
        f"`CHANGELOG.md` of the template (`{src_path}`)"
    )
