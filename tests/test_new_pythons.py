"""The Pythons the machine lacks (``variants.CHROOT_PYTHONS``), tested in a Debian sid chroot.

The machines of the template's CI have Python 3.11-3.13 natively (pyenv); 3.14 and 3.15 come
from Debian's unstable suite, sid: a minimal root file system with ``python3.X`` (debootstrap,
built once a week into the cache, see ``sid_rootfs``). Each command runs in it as root, inside a
mount namespace of its own (``unshare --mount``): /proc, /tmp, the projects, the machine's uv and
uv's cache are mounted there and vanish with it; nothing stays mounted. The chroot shares the
machine's network: its projects reach the PostgreSQL and Redis on 127.0.0.1.

For each version, the default project (PostgreSQL, Redis) is generated, installed with ``uv sync
--locked --all-groups`` and the chroot's interpreter (every dependency group a project may use
must install: psycopg-binary, PyMySQL, redis, Flower, the dev tools), and passes its whole test
suite, tests/test_services.py included, against the machine's servers, and its type check. uv
must also find uv.lock up to date for every set of dependency groups a project on that Python
can have, which tests/test_render.py cannot check without the interpreter.

Needs root, debootstrap and the Debian mirror: skipped without them, failed under CI=true.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from conftest import REPORT, unavailable
from copier import run_copy
from dockerharness import CACHE, DEBIAN_MIRROR, HarnessError, host_ca_files, need_commands
from projects import Project, fresh_database, fresh_redis_db
from test_generated_projects import requirement_versions
from variants import CHROOT_PYTHONS, full_product

pytestmark = pytest.mark.chroot

SUITE = "sid"
VENVS = [(f"python{version}", f"python{version}-venv") for version in CHROOT_PYTHONS]
PACKAGES = ("ca-certificates", *(package for pair in VENVS for package in pair))
WORK = PurePosixPath("/work")  # the test's directory, where the projects are
UV_CACHE = PurePosixPath("/root/.cache/uv")  # the machine's uv cache
# One Redis database number per version (the covering tests use 2-5, the boot tests 8-13).
REDIS_DB = {version: 6 + index for index, version in enumerate(CHROOT_PYTHONS)}
# Variables that enter the chroot as they are: a proxy the machine needs, say.
PASSED_ON = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

# Run in a private mount namespace: $1 the root file system, $2 the directory seen as /work, $3
# the uv binary, $4 uv's cache; then the command, chrooted. The mounts end with the namespace.
ENTER = r"""
set -eu
root=$1 work=$2 uv=$3 cache=$4
shift 4
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/dev/shm"
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
mount --bind "$work" "$root/work"
mount --bind "$uv" "$root/usr/local/bin/uv"
mount --bind "$cache" "$root/root/.cache/uv"
exec chroot "$root" "$@"
"""


def rootfs_key() -> str:
    """What the root file system is made of. sid moves on: the week is part of it."""
    content = hashlib.sha256(f"{SUITE} minbase {' '.join(PACKAGES)} {DEBIAN_MIRROR} v1".encode())
    content.update(time.strftime("%G-W%V").encode())
    for path in host_ca_files():
        content.update(path.read_bytes())
    return content.hexdigest()[:16]


def sid_rootfs() -> Path:
    """Debian sid with CHROOT_PYTHONS and this machine's CA certificates (HTTPS may leave it
    through an intercepting proxy), in the cache; built when missing, under a lock that the
    pytest-xdist workers share, and older ones removed."""
    if os.geteuid() != 0:
        unavailable("the chroot of the newer Pythons needs root (debootstrap, chroot, mount)")
    try:
        need_commands({"debootstrap": "debootstrap", "unshare": "util-linux"})
    except HarnessError as error:
        unavailable(str(error))
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / f"sid-rootfs-{rootfs_key()}"
    with (CACHE / "sid-rootfs.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rootfs.is_dir():  # renamed into place once complete
            return rootfs
        for stale in CACHE.glob("sid-*"):
            if stale.is_dir():
                shutil.rmtree(stale)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="sid-build-") as tmp:
            build = Path(tmp) / "rootfs"
            debootstrap = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
            done = subprocess.run(
                [*debootstrap, SUITE, build, DEBIAN_MIRROR],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            if done.returncode != 0:
                log = build / "debootstrap" / "debootstrap.log"
                details = log.read_text()[-3000:] if log.is_file() else done.stdout[-3000:]
                pytest.fail(f"debootstrap of {SUITE} failed:\n{done.stderr}\n{details}")
            for path in host_ca_files():
                target = build / path.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            subprocess.run(["chroot", build, "update-ca-certificates"], capture_output=True)
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (build / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            # ENTER's mount points.
            (build / "etc" / "resolv.conf").unlink(missing_ok=True)
            (build / "etc" / "resolv.conf").touch()
            (build / "usr" / "local" / "bin" / "uv").touch()
            (build / "root" / ".cache" / "uv").mkdir(parents=True)
            (build / "work").mkdir()
            build.rename(rootfs)
        took = time.monotonic() - started
        REPORT.append(f"debootstrap of {SUITE} with {', '.join(PACKAGES)}: {took:.0f} s")
        return rootfs


@dataclass
class Chroot:
    """The sid root file system, with ``work`` seen as /work."""

    rootfs: Path
    work: Path

    def run(
        self,
        *args: str | PurePosixPath,
        cwd: PurePosixPath = WORK,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the chroot, in ``cwd``, with a clean environment plus ``env``."""
        variables = {
            "HOME": "/root",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",  # for uv: the system's CAs
            "UV_CACHE_DIR": str(UV_CACHE),
            "UV_PYTHON_DOWNLOADS": "never",
            **{name: os.environ[name] for name in PASSED_ON if name in os.environ},
            **(env or {}),
        }
        uv, cache = machine_uv()
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter"]
        command += [str(self.rootfs), str(self.work), str(uv), str(cache)]
        command += ["/usr/bin/env", "-i", f"--chdir={cwd}"]
        command += [f"{name}={value}" for name, value in variables.items()]
        command += [str(arg) for arg in args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def machine_uv() -> tuple[Path, Path]:
    """requirements-dev.txt's uv (a static-enough binary: it runs on sid too) and its cache."""
    import uv  # requirements-dev.txt

    binary = Path(uv.find_uv_bin())
    dirs = subprocess.run([binary, "cache", "dir"], capture_output=True, text=True, check=True)
    cache = Path(dirs.stdout.strip())
    cache.mkdir(parents=True, exist_ok=True)
    return binary, cache


@dataclass
class ChrootProject(Project):
    """A generated project under the chroot's /work: ``python`` is a path in the chroot, and
    ``run`` runs there (so tests/projects.py's fresh_database and fresh_redis_db work)."""

    chroot: Chroot

    @property
    def inside(self) -> PurePosixPath:
        return WORK / self.path.relative_to(self.chroot.work)

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return self.chroot.run(*args, cwd=self.inside, env=env, timeout=timeout)


def generate(
    chroot: Chroot, template_dir: Path, name: str, answers: dict[str, Any]
) -> ChrootProject:
    path = chroot.work / name
    run_copy(str(template_dir), path, data=answers, defaults=True, quiet=True, unsafe=False)
    recorded = yaml.safe_load((path / ".copier-answers.yml").read_text())  # the defaults too
    python = Path(WORK / name / ".venv" / "bin" / "python")
    return ChrootProject(path, {**recorded, **answers}, python, chroot)


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return sid_rootfs()


@pytest.fixture(
    scope="module",
    params=[pytest.param(v, marks=pytest.mark.xdist_group(f"chroot-{v}")) for v in CHROOT_PYTHONS],
)
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def chroot(rootfs: Path, version: str, tmp_path_factory: pytest.TempPathFactory) -> Chroot:
    return Chroot(rootfs, tmp_path_factory.mktemp(f"chroot-{version}"))


@pytest.fixture(scope="module")
def project(chroot: Chroot, version: str, template_dir: Path) -> ChrootProject:
    """The default project on ``version``, installed in the chroot with every dependency group."""
    project = generate(chroot, template_dir, "project", {"python_version": version})
    started = time.monotonic()
    interpreter = f"/usr/bin/python{version}"
    sync = project.run("uv", "sync", "-q", "--locked", "--all-groups", "-p", interpreter)
    assert sync.returncode == 0, sync.stderr[-5000:]
    took = time.monotonic() - started
    REPORT.append(f"uv sync --locked --all-groups, Python {version} in the chroot: {took:.0f} s")
    return project


def test_every_dependency_group_installs(project: ChrootProject, version: str) -> None:
    """psycopg with its binary build, PyMySQL, redis, Flower and the dev tools, each at its
    locked version, on the chroot's Python."""
    code = (
        "import platform, flower, psycopg, pymysql, pytest, redis, ruff, mypy;"
        "print(platform.python_version(), psycopg.pq.__impl__)"
    )
    imported = project.run(project.python, "-c", code)
    assert imported.returncode == 0, imported.stderr
    full_version, psycopg = imported.stdout.split()
    assert full_version.startswith(f"{version}."), imported.stdout
    assert psycopg == "binary", imported.stdout
    REPORT.append(f"Python {full_version} of Debian {SUITE} (host: {platform.python_version()})")

    lock = tomllib.loads((project.path / "uv.lock").read_text())
    pins = {package["name"]: package["version"] for package in lock["package"]}
    freeze = project.run("uv", "pip", "freeze", "-p", project.python)
    assert freeze.returncode == 0, freeze.stderr
    installed = requirement_versions(freeze.stdout.splitlines())
    assert installed
    assert installed == {name: pins.get(name, "not locked") for name in installed}


def test_own_test_suite_passes_against_real_servers(
    project: ChrootProject, version: str, tmp_path: Path
) -> None:
    """The whole suite, tests/test_services.py included, against the machine's PostgreSQL (a
    fresh database) and Redis (a database number of this test's own)."""
    assert (project.answers["database"], project.answers["broker"]) == ("postgresql", "redis")
    with ExitStack() as resources:
        env = {
            "TEST_DATABASE_URL": resources.enter_context(fresh_database(project, tmp_path)),
            "TEST_BROKER_URL": resources.enter_context(fresh_redis_db(project, REDIS_DB[version])),
        }
        command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp=/tmp/pytest"]
        run = project.run(project.python, *command, env=env)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    # Only passes: no test skipped for want of a server, none deselected or xfailed.
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \([\d:]+\))?", summary), run.stdout[-3000:]
    REPORT.append(f"the default project's suite on Python {version} (chroot): {summary}")


def test_type_check_passes(project: ChrootProject) -> None:
    """The project's mypy (strict) on the chroot's Python: typeshed's stubs differ by version."""
    run = project.run(project.bin / "mypy")
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]


def test_lock_is_current_for_every_set_of_groups(
    chroot: Chroot, version: str, template_dir: Path
) -> None:
    """``uv lock --locked`` on the chroot's Python, for one project of each set of dependency
    groups (uv's default groups) the answers can give on this Python version."""
    by_groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for answers in full_product():
        redis = answers["broker"] == "redis" or answers["result_backend"] == "redis"
        key = (answers["database"], redis, answers["use_flower"])
        if answers["python_version"] == version:
            by_groups.setdefault(key, answers)
    assert len(by_groups) == 3 * 2 * 2
    seen = set()
    for index, answers in enumerate(by_groups.values()):
        project = generate(chroot, template_dir, f"groups-{index}", answers)
        pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
        seen.add(tuple(pyproject["tool"]["uv"]["default-groups"]))
        interpreter = f"/usr/bin/python{version}"
        locked = project.run("uv", "lock", "--locked", "--offline", "-q", "-p", interpreter)
        assert locked.returncode == 0, f"uv.lock is stale for {answers}:\n{locked.stderr}"
    assert len(seen) == len(by_groups)  # each project had a set of groups of its own
