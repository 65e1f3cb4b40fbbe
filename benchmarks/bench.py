"""``nox -s bench``: the generated default variant measured side by side with its baselines.

Generates the default variant (PostgreSQL + Redis, beat and Flower on) from the working tree with
``copier copy --defaults --vcs-ref HEAD``, installs it, boots it natively from its own production
start scripts against the machine's PostgreSQL and Redis (a fresh database, fresh Redis database
numbers), and measures, in one run:

- HTTP requests/s and p99 latency (wrk, 127.0.0.1) of ``GET /``, ``GET /users/<id>`` and
  ``POST /tasks/divide``; baseline: the same app under ``flask run``; ceiling (``GET /``): a
  hello-world WSGI app served by the same start script;
- Celery round trip p50/p95 of a no-op task against Redis PING, and the throughput of 2,000 no-op
  tasks with the generated worker settings against Celery's defaults;
- cold start (``from app import app``, the worker's time to ready), idle RSS of web and worker;
- ``copier copy`` time, and optionally the wall time of the template's own test suite;
- the cost of each observability option: ``POST /tasks/divide`` req/s and the task round trip of
  the default variant with OpenTelemetry on (exporting to a local sink), with Sentry on (its DSN a
  local sink), and with neither, booted one after the other in ABC CBA order.

It prints a markdown table of ratios with PASS/FAIL per target (it asserts nothing) and writes
benchmarks/results/latest.json and latest.md. docs/performance.md explains every row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import find_python  # noqa: E402
from projects import (  # noqa: E402
    Project,
    Service,
    free_port,
    fresh_database,
    fresh_redis_db,
    group_members,
    listening,
    wait_until,
)

SCRIPTS = "compose/production/flask"
# What the app needs to import whatever it does: the floor of its cold start.
LIBRARIES = "import dotenv, flask, flask_sqlalchemy, sqlalchemy.orm, celery, psycopg"
SERVERS = ("app", "flask_run", "hello")  # the generated app, the baseline, the ceiling
SERVICE_OF = {"app": "web"}  # the HTTP servers' names among the services
PROJECT_FILES = ("bench_hello.py", "bench_tasks.py", "bench_defaults.py", "bench_client.py")
# Redis database numbers of the machine's Redis used here (the template's tests use 8-13, 15).
BROKER_DB, RESULTS_DB = 6, 7
SUITES = {
    "skip": None,
    "fast": ["-q"],  # pyproject.toml's default: the fast tier
    "full": ["-q", "-m", "not compose"],  # the compose tests have their own run (-n 0)
}
# The questions whose cost is measured, with the variables that switch them on (the sink's URL
# filled in). Each is the default variant plus that one question.
OBSERVABILITY = {
    "neither": ({}, {}),
    "OpenTelemetry": (
        {"use_opentelemetry": True},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}", "OTEL_BSP_SCHEDULE_DELAY": "500"},
    ),
    "Sentry": ({"use_sentry": True}, {"SENTRY_DSN": "{scheme}://public@{host}/1"}),
}
TARGETS = {
    "get_vs_flask_run": 3.0,  # GET / req/s, at least 3x the same app under `flask run`
    "get_vs_hello": 0.70,  # ... and at least 70% of the hello-world ceiling
    "roundtrip_vs_ping": 15.0,  # task round trip p50 within 15x Redis PING p50
    "throughput_vs_defaults": 0.90,  # tasks/s with the reliability settings >= 90% of defaults
    "import_ms": 400.0,  # `from app import app`
    "copier_s": 1.5,  # `copier copy` of the default variant
}


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why (and shows the logs that matter)."""


# --- processes -------------------------------------------------------------------------------


def group_memory(pgid: int) -> dict[str, float]:
    """How many processes group ``pgid`` has, and their summed RSS and PSS in MiB."""
    rss = pss = 0
    members = group_members(pgid)
    for pid in members:
        with suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            rss += int(re.search(r"^VmRSS:\s+(\d+)", status, re.M)[1])
        with suppress(OSError, TypeError):
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M)[1])
    return {"processes": len(members), "rss_mib": rss / 1024, "pss_mib": pss / 1024}


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``."""
    ticks = 0
    for pid in group_members(pgid):
        with suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the group that ``process`` leads; SIGKILL to what is left after ``grace`` s."""
    pgid = process.pid
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None and not group_members(pgid):
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)
    wait_until(f"process group {pgid} to end", lambda: not group_members(pgid), 10)


class Services:
    """Every long-running process of the benchmark, each in a process group of its own.

    ``stop_all`` stops each group by its leader's PID: ExitStack calls it whatever happens.
    """

    def __init__(self, project: Project, env: dict[str, str], logs: Path) -> None:
        self.project, self.env, self.logs = project, env, logs
        self.running: dict[str, Service] = {}

    def start(self, name: str, *command: str | Path, env: dict[str, str] | None = None) -> Service:
        log = self.logs / f"{name}.log"
        process = self.project.spawn(*command, env=env or self.env, log=log)
        self.running[name] = Service(name, process, log)
        return self.running[name]

    def stop(self, name: str, grace: float = 30) -> None:
        stop_group(self.running.pop(name).process, grace)

    def stop_all(self) -> None:
        failed = []
        for name in list(self.running):
            try:
                self.stop(name, grace=10)
            except Exception as error:  # go on stopping the others
                failed.append(f"{name}: {error}")
        if failed:
            raise BenchError("could not stop " + "; ".join(failed))

    def diagnostics(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.text()[-3000:]}" for s in self.running.values())

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> float:
        """Poll ``check`` every 50 ms until true; the seconds it took. Fails if a service died."""
        started = time.perf_counter()
        while not check():
            for service in self.running.values():
                if (code := service.process.poll()) is not None:
                    raise BenchError(f"{service.name} exited ({code})\n{self.diagnostics()}")
            if time.perf_counter() - started > timeout:
                raise BenchError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.05)
        return time.perf_counter() - started


def run(
    command: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; a BenchError with its output if it fails."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        shown = " ".join(str(part) for part in command)
        raise BenchError(f"{shown} failed ({done.returncode})\n{done.stdout[-3000:]}{done.stderr}")
    return done


def last_json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


def copy_script(source: Path, target: Path, old: str, new: str) -> Path:
    """A copy of start script ``source`` that serves ``new`` instead of ``old``, all else equal."""
    text = source.read_text()
    pattern = rf"(?<![\w.]){re.escape(old)}(?![\w])"
    if not re.search(pattern, text):
        raise BenchError(f"{source} no longer mentions {old!r}: update benchmarks/bench.py")
    target.write_text(re.sub(pattern, new, text))
    target.chmod(0o755)
    return target


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


# --- measurements ----------------------------------------------------------------------------


def time_copier(work: Path, runs: int) -> tuple[Path, list[float]]:
    """Time ``copier copy --defaults --vcs-ref HEAD`` of this checkout ``runs`` times."""
    copier = Path(sys.executable).parent / "copier"
    settings = work / "copier-settings.yml"  # the machine's Copier defaults must not leak in
    settings.write_text("defaults: {}\n")
    # uv installs no bytecode and these machines set PYTHONDONTWRITEBYTECODE: without this,
    # every run would compile Copier from source, which a user's `pip install copier` never does.
    site_packages = sysconfig.get_paths()["purelib"]
    run([sys.executable, "-m", "compileall", "-q", "-j", "0", site_packages], cwd=work, timeout=600)
    env = {**os.environ, "COPIER_SETTINGS_PATH": str(settings)}
    samples = []
    for index in range(runs):
        dest = work / f"copy{index}"
        command = [copier, "copy", "--defaults", "--quiet", "--vcs-ref", "HEAD", ROOT, dest]
        started = time.perf_counter()
        run(command, cwd=work, env=env)
        samples.append(time.perf_counter() - started)
    for index in range(1, runs):
        shutil.rmtree(work / f"copy{index}")
    return work / "copy0", samples


def install_project(path: Path) -> Project:
    """Install the generated project like tests/projects.py does, then compile its bytecode."""
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    interpreter = find_python(answers["python_version"])
    uv_sync = [sys.executable, "-m", "uv", "sync", "-q", "--locked", "-p", interpreter]
    # nox points uv at its session's virtualenv: the project gets its own, .venv.
    env = {
        k: v for k, v in os.environ.items() if k not in {"UV_PROJECT_ENVIRONMENT", "VIRTUAL_ENV"}
    }
    run(uv_sync, cwd=path, env=env, timeout=600)
    return prepare_project(Project(path, answers, path / ".venv" / "bin" / "python"))


def prepare_project(project: Project) -> Project:
    """Write the benchmark's modules into ``project`` and compile all its bytecode."""
    path, python = project.path, project.python
    for name in PROJECT_FILES:
        shutil.copy2(HERE / "project_files" / name, path / name)
    # Cold starts are measured with bytecode compiled, as in an image built with it (the
    # machine may set PYTHONDONTWRITEBYTECODE, which would otherwise leave none).
    targets = [path / ".venv" / "lib", path / project.package, path / "app.py", *PROJECT_FILES]
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", *targets],
        cwd=path,
        capture_output=True,
        check=False,  # a few files in site-packages are not Python 3 (templates, tests)
    )
    return project


def remove_bench_files(path: Path) -> None:
    for name in [*PROJECT_FILES, ".hyperfine.json"]:
        (path / name).unlink(missing_ok=True)
    for ids in path.glob(".bench-ids-*"):
        ids.unlink()


def run_times(command: list[str], *, cwd: Path, env: dict[str, str], runs: int) -> dict:
    """Median and fastest wall time of ``command`` in ms: hyperfine if present, else timed runs."""
    if shutil.which("hyperfine"):
        export = cwd / ".hyperfine.json"
        shown = shlex.join(command)  # hyperfine -N splits it like a shell, without one
        run(
            ["hyperfine", "-N", "--warmup", "1", "--runs", str(runs), "--export-json", export,
             shown],
            cwd=cwd,
            env=env,
        )  # fmt: skip
        times = json.loads(export.read_text())["results"][0]["times"]
    else:
        run(command, cwd=cwd, env=env)  # warm-up: page cache
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            run(command, cwd=cwd, env=env)
            times.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000}


def import_breakdown(project: Project, env: dict[str, str], top: int = 10) -> list[list[Any]]:
    """``-X importtime``: self time per top-level package, the largest first (ms)."""
    done = run([project.python, "-X", "importtime", "-c", "from app import app"], cwd=project.path,
               env=env)  # fmt: skip
    per_package: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            per_package[match[2].split(".")[0]] += int(match[1])
    return [[name, round(us / 1000, 1)] for name, us in per_package.most_common(top)]


def wrk(url: str, options: argparse.Namespace, duration: int, request: dict[str, Any]) -> dict:
    """One wrk run against ``url``; requests/s, latency percentiles (ms) and error counts."""
    env = {
        **os.environ,
        "BENCH_METHOD": request.get("method", ""),
        "BENCH_BODY": json.dumps(request["body"]) if "body" in request else "",
    }
    command = [
        "wrk", f"-t{options.threads}", f"-c{options.connections}", f"-d{duration}s",
        "--timeout", "5s", "-s", str(HERE / "report.lua"), url,
    ]  # fmt: skip
    done = run(command, cwd=HERE, env=env, timeout=duration + 60)
    match = re.search(r"^BENCH_JSON (.*)$", done.stdout, re.M)
    if not match:
        raise BenchError(f"wrk printed no report\n{done.stdout}{done.stderr}")
    data = json.loads(match[1])
    errors = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "seconds": data["duration_us"] / 1e6,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "requests": data["requests"],
        "errors": {name: data[name] for name in errors if data[name]},
    }


class Sink(ThreadingHTTPServer):
    """Answers 200 to every POST (an OTLP collector's, Sentry's ingest) and counts them by path."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.posts[self.path] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def divide_and_round_trip(
    project: Project, env: dict[str, str], logs: Path, options: argparse.Namespace
) -> dict[str, Any]:
    """Boot ``project``'s web and worker with ``env``; wrk on ``POST /tasks/divide``, then the
    task round trip (ms, bench_client.py); stop them."""
    with ExitStack() as stack:
        services = Services(project, env, logs)
        stack.callback(services.stop_all)
        run([project.bin / "flask", "--app", "app.py", "db", "upgrade"], cwd=project.path, env=env)
        start = project.path / SCRIPTS
        script = copy_script(
            start / "celery" / "worker" / "start",
            logs / "worker",
            "app.celery",
            "bench_tasks.celery",
        )
        worker = services.start("worker", script)
        services.wait_for("the worker", lambda: " ready." in worker.text())
        services.start("web", start / "start")
        web = f"http://127.0.0.1:{env['PORT']}"
        services.wait_for("the web app", lambda: http("GET", web + "/health")[0] == 200)
        url = web + "/tasks/divide"
        request = {"method": "POST", "body": {"x": 1, "y": 2}}
        if options.warmup:
            wrk(url, options, options.warmup, request)
        outcome = wrk(url, options, options.duration, request)
        if outcome["errors"]:
            raise BenchError(f"POST /tasks/divide: errors {outcome['errors']}")
        client = [project.python, "bench_client.py", "roundtrip", str(options.calls)]
        outcome["task_ms"] = last_json(run(client, cwd=project.path, env=env).stdout)["task_ms"]
        return outcome


def measure_observability(
    work: Path, base_env: dict[str, str], options: argparse.Namespace
) -> dict[str, Any]:
    """``POST /tasks/divide`` req/s and the task round trip (ms) of the default variant with
    each option of OBSERVABILITY, its web and worker booted alone, in ABC CBA order."""
    copier = Path(sys.executable).parent / "copier"
    env_copier = {**os.environ, "COPIER_SETTINGS_PATH": str(work / "copier-settings.yml")}
    projects = {}
    for name, (answers, _) in OBSERVABILITY.items():
        path = work / f"observability-{name.lower()}"
        data = [f"--data={question}={value}" for question, value in answers.items()]
        run([copier, "copy", "--defaults", "--quiet", "--vcs-ref", "HEAD", *data, ROOT, path],
            cwd=work, env=env_copier)  # fmt: skip
        projects[name] = install_project(path)
    order = [*OBSERVABILITY, *reversed(OBSERVABILITY)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in OBSERVABILITY}
    sink = Sink()
    try:
        host = sink.url.split("://")[1]
        for index, name in enumerate(order):
            project = projects[name]
            variables = {
                key: value.format(sink=sink.url, scheme="http", host=host)
                for key, value in OBSERVABILITY[name][1].items()
            }
            with ExitStack() as stack:
                database_url = stack.enter_context(fresh_database(project, work))
                broker_url = stack.enter_context(fresh_redis_db(project, BROKER_DB))
                env = {
                    **base_env,
                    **variables,
                    "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
                    "VIRTUAL_ENV": str(project.bin.parent),
                    "DATABASE_URL": database_url,
                    "CELERY_BROKER_URL": broker_url,
                    "CELERY_RESULT_BACKEND": broker_url,
                    "PORT": str(free_port()),
                }
                logs = work / "logs" / f"observability-{index}"
                logs.mkdir(parents=True)
                outcome = divide_and_round_trip(project, env, logs, options)
            runs[name].append(outcome)
            print(f"  {name:<14} {outcome['rps']:>7,.0f} req/s  round trip p50 "
                  f"{statistics.median(outcome['task_ms']):.2f} ms", flush=True)  # fmt: skip
    finally:
        sink.shutdown()
    if not sink.posts["/v1/traces"]:
        raise BenchError("OpenTelemetry exported no span to the sink: it was not on")
    results: dict[str, Any] = {"order": order, "sink_posts": dict(sink.posts)}
    for name, option_runs in runs.items():
        task = [x for r in option_runs for x in r["task_ms"]]
        results[name] = {
            "rps": statistics.mean(r["rps"] for r in option_runs),
            "task_ms": {"p50": statistics.median(task), "p95": percentile(task, 95)},
            "runs": [{k: v for k, v in r.items() if k != "task_ms"} for r in option_runs],
        }
    return results


# --- the table -------------------------------------------------------------------------------


def row(
    measure: str,
    value: str,
    reference: str = "",
    ratio: str = "",
    target: str = "",
    passed: bool | None = None,
) -> dict[str, Any]:
    result = "" if passed is None else ("PASS" if passed else "FAIL")
    return {
        "measure": measure,
        "value": value,
        "reference": reference,
        "ratio": ratio,
        "target": target,
        "result": result,
    }


def build_rows(m: dict[str, Any], suite: str) -> list[dict[str, Any]]:
    rows = []
    for name, endpoint in m["http"].items():
        servers, ratios = endpoint["servers"], endpoint["rps_ratio"]
        app = servers["app"]
        first = name == "GET /"
        for server, label in (("flask_run", "`flask run`"), ("hello", "hello-world")):
            if server not in servers:
                continue
            target = TARGETS["get_vs_flask_run" if server == "flask_run" else "get_vs_hello"]
            shown = f"{ratios[server]:.2f}x" if server == "flask_run" else f"{ratios[server]:.0%}"
            wanted = f">= {target:g}x" if server == "flask_run" else f">= {target:.0%}"
            rows.append(
                row(
                    f"`{name}` req/s vs {label}",
                    f"{app['rps']:,.0f}",
                    f"{servers[server]['rps']:,.0f}",
                    shown,
                    wanted if first else "",
                    ratios[server] >= target if first else None,
                )
            )
        dev = servers["flask_run"]
        rows.append(
            row(
                f"`{name}` p99 latency vs `flask run`",
                f"{app['p99_ms']:.1f} ms",
                f"{dev['p99_ms']:.1f} ms",
                f"{app['p99_ms'] / dev['p99_ms']:.2f}x",
            )
        )
    celery = m["celery"]
    generated, defaults = celery["generated"], celery["defaults"]
    task, ping = generated["task_ms"], generated["ping_ms"]
    rt_ratio = task["p50"] / ping["p50"]
    tp_ratio = generated["tasks_per_s"] / defaults["tasks_per_s"]
    tasks = generated["runs"][0]["throughput"]["tasks"]
    imports = m["cold_start"]
    web, worker, hello = m["memory"]["web"], m["memory"]["worker"], m["memory"]["hello"]
    copier = m["copier"]
    rows += [
        row(
            "Task round trip p50 vs Redis PING p50",
            f"{task['p50']:.2f} ms",
            f"{ping['p50']:.3f} ms",
            f"{rt_ratio:.0f}x",
            f"<= {TARGETS['roundtrip_vs_ping']:g}x",
            rt_ratio <= TARGETS["roundtrip_vs_ping"],
        ),
        row(
            "Task round trip p95 vs Redis PING p95",
            f"{task['p95']:.2f} ms",
            f"{ping['p95']:.3f} ms",
            f"{task['p95'] / ping['p95']:.0f}x",
        ),
        row(
            "Task round trip p50, generated vs Celery defaults",
            f"{task['p50']:.2f} ms",
            f"{defaults['task_ms']['p50']:.2f} ms",
            f"{task['p50'] / defaults['task_ms']['p50']:.2f}x",
        ),
        row(
            f"Throughput, {tasks:,} no-op tasks: generated vs Celery defaults",
            f"{generated['tasks_per_s']:,.0f} tasks/s",
            f"{defaults['tasks_per_s']:,.0f} tasks/s",
            f"{tp_ratio:.0%}",
            f">= {TARGETS['throughput_vs_defaults']:.0%}",
            tp_ratio >= TARGETS["throughput_vs_defaults"],
        ),
        row(
            "Worker CPU per no-op task: generated vs Celery defaults",
            f"{generated['worker_cpu_ms_per_task']:.2f} ms",
            f"{defaults['worker_cpu_ms_per_task']:.2f} ms",
            f"{generated['worker_cpu_ms_per_task'] / defaults['worker_cpu_ms_per_task']:.2f}x",
        ),
        row(
            "Cold start: `from app import app` (median) vs `python -c pass`",
            f"{imports['import_app_ms']:.0f} ms",
            f"{imports['python_ms']:.0f} ms",
            "",
            f"<= {TARGETS['import_ms']:g} ms",
            imports["import_app_ms"] <= TARGETS["import_ms"],
        ),
        row(
            "Cold start: `from app import app` vs importing its libraries alone",
            f"{imports['import_app_ms']:.0f} ms",
            f"{imports['libraries_ms']:.0f} ms",
            f"{imports['import_app_ms'] / imports['libraries_ms']:.2f}x",
        ),
        row("Worker: start script to `ready.`", f"{m['ready']['worker_s']:.2f} s"),
        row("Web: start script to first `GET /health` 200", f"{m['ready']['web_s']:.2f} s"),
        row(
            f"Idle RSS, web ({web['processes']} processes) vs hello-world gunicorn",
            f"{web['rss_mib']:.0f} MiB",
            f"{hello['rss_mib']:.0f} MiB",
            f"{web['rss_mib'] / hello['rss_mib']:.1f}x",
        ),
        row(f"Idle RSS, worker ({worker['processes']} processes)", f"{worker['rss_mib']:.0f} MiB"),
        row(
            "`copier copy` of the default variant (median)",
            f"{copier['median_s']:.2f} s" if copier else "not measured (--project)",
            "",
            "",
            f"<= {TARGETS['copier_s']:g} s",
            copier["median_s"] <= TARGETS["copier_s"] if copier else None,
        ),
    ]
    if m.get("observability"):
        o = m["observability"]
        off = o["neither"]
        for name in ("OpenTelemetry", "Sentry"):
            on = o[name]
            rows += [
                row(
                    f"`POST /tasks/divide` req/s, {name} on vs neither option",
                    f"{on['rps']:,.0f}",
                    f"{off['rps']:,.0f}",
                    f"{on['rps'] / off['rps']:.0%}",
                ),
                row(
                    f"Task round trip p50, {name} on vs neither option",
                    f"{on['task_ms']['p50']:.2f} ms",
                    f"{off['task_ms']['p50']:.2f} ms",
                    f"{on['task_ms']['p50'] / off['task_ms']['p50']:.2f}x",
                ),
            ]
    if m.get("suite"):
        s = m["suite"]
        status = "" if s["returncode"] == 0 else f" (exit {s['returncode']})"
        rows.append(row(f"Template test suite ({suite}) wall time", f"{s['wall_s']:.0f} s{status}"))
    else:
        rows.append(row("Template test suite wall time", "skipped (`--suite fast` or `full`)"))
    return rows


def cpu_table(m: dict[str, Any]) -> str:
    """Server CPU per request (all the server's processes, user + system), per endpoint.

    Steadier than req/s when other work shares the machine: the ratio of two servers' CPU per
    request is what their req/s ratio would be if both were CPU-bound on the same cores.
    """
    lines = [
        "| Endpoint | gunicorn + app | `flask run` | gunicorn + hello-world "
        "| `flask run` / app | hello-world / app |",
        "|---|---|---|---|---|---|",
    ]
    for name, endpoint in m["http"].items():
        cpu = {server: v["cpu_us_per_request"] for server, v in endpoint["servers"].items()}
        cells = [f"{cpu[server]:,.0f} us" if server in cpu else "" for server in SERVERS]
        cells += [
            f"{cpu[server] / cpu['app']:.2f}" if server in cpu else "" for server in SERVERS[1:]
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ["Measure", "Generated app", "Baseline", "Ratio", "Target", "Result"]
    keys = ["measure", "value", "reference", "ratio", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[key] for key in keys) + " |" for r in rows]
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def measure_http(
    services: Services, options: argparse.Namespace, urls: dict[str, str], user_id: int
) -> dict[str, Any]:
    """Every endpoint on every server, in alternating rounds: the servers' runs side by side.

    The machine's speed drifts, so each endpoint gets ``--rounds`` short wrk runs per server,
    the servers' order rotating, and each ratio is the median of the rounds' ratios.
    """
    endpoints = {
        "GET /": ({}, ["app", "flask_run", "hello"], "/"),
        "GET /users/<id>": ({}, ["app", "flask_run"], f"/users/{user_id}"),
        "POST /tasks/divide": (
            {"method": "POST", "body": {"x": 1, "y": 2}},
            ["app", "flask_run"],
            "/tasks/divide",
        ),
    }
    per_round = max(1, options.duration // options.rounds)
    results: dict[str, Any] = {}
    for name, (request, servers, path) in endpoints.items():
        runs: dict[str, list[dict[str, Any]]] = {server: [] for server in servers}
        if options.warmup:
            for server in servers:
                wrk(urls[server] + path, options, options.warmup, request)
        # `GET /` carries the targets: twice the rounds, for a steadier median.
        for index in range(options.rounds * (2 if name == "GET /" else 1)):
            for server in servers[index % len(servers) :] + servers[: index % len(servers)]:
                pgid = services.running[SERVICE_OF.get(server, server)].process.pid
                cpu = group_cpu_s(pgid)
                outcome = wrk(urls[server] + path, options, per_round, request)
                outcome["cpu_us_per_request"] = (
                    (group_cpu_s(pgid) - cpu) / max(outcome["requests"], 1) * 1e6
                )
                if outcome["errors"]:
                    raise BenchError(f"{name} on {server}: errors {outcome['errors']}")
                runs[server].append(outcome)
        summary = {
            server: {
                "rps": sum(r["requests"] for r in rs) / sum(r["seconds"] for r in rs),
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in rs),
            }
            for server, rs in runs.items()
        }
        ratios = {
            server: statistics.median(
                a["rps"] / b["rps"] for a, b in zip(runs["app"], runs[server], strict=True)
            )
            for server in servers[1:]
        }
        results[name] = {"servers": summary, "rps_ratio": ratios, "rounds": runs}
        for server, outcome in summary.items():
            print(
                f"  {name:<20} {server:<10} {outcome['rps']:>8,.0f} req/s"
                f"  p99 {outcome['p99_ms']:6.1f} ms"
                f"  {outcome['cpu_us_per_request']:6.0f} us CPU/request",
                flush=True,
            )
    return results


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def measure_celery(
    services: Services, project: Project, scripts: Path, options: argparse.Namespace
) -> dict[str, Any]:
    """Throughput and round trip with the generated settings and with Celery's defaults.

    Each worker runs ``--celery-rounds`` times, in ABBA order (generated, defaults, defaults,
    generated, ...), so that a drift of the machine's speed weighs on both alike. Each run
    queues the no-op tasks first, then starts the worker: the rate is its steady work on a full
    queue.
    """
    env = services.env
    client = [project.python, "bench_client.py"]
    settings = last_json(run([*client, "settings"], cwd=project.path, env=env).stdout)
    worker_script = project.path / SCRIPTS / "celery" / "worker" / "start"
    modules = {"generated": "bench_tasks", "defaults": "bench_defaults"}
    order = ["generated", "defaults", "defaults", "generated"] * options.celery_rounds
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in modules}
    for index, variant in enumerate(order[: 2 * options.celery_rounds]):
        module = modules[variant]
        script = copy_script(worker_script, scripts / f"worker-{variant}", "app.celery",
                             f"{module}.celery")  # fmt: skip
        ids = project.path / f".bench-ids-{index}"
        enqueued = run([*client, "enqueue", str(options.tasks), ids], cwd=project.path, env=env)
        name = f"worker-{variant}"
        service = services.start(name, script)
        ready = services.wait_for(f"{name} ready", lambda s=service: " ready." in s.text())
        cpu = group_cpu_s(service.process.pid)
        collected = run([*client, "collect", ids], cwd=project.path, env=env, timeout=240)
        cpu = group_cpu_s(service.process.pid) - cpu
        trip = run([*client, "roundtrip", str(options.calls)], cwd=project.path, env=env)
        services.stop(name)
        throughput = last_json(collected.stdout)
        # The worker's CPU while the client waited for the results: the queue's work, and
        # at most 0.1 s of idling after it.
        throughput["worker_cpu_ms_per_task"] = cpu / throughput["tasks"] * 1000
        runs[variant].append(
            {
                "ready_s": ready,
                "enqueue": last_json(enqueued.stdout),
                "throughput": throughput,
                "roundtrip": last_json(trip.stdout),
            }
        )
        print(
            f"  celery {variant:<9} {throughput['tasks_per_s']:>7,.0f} tasks/s"
            f"  {throughput['worker_cpu_ms_per_task']:.2f} ms worker CPU/task",
            flush=True,
        )
    results: dict[str, Any] = {"settings": settings, "order": order[: 2 * options.celery_rounds]}
    for variant, variant_runs in runs.items():
        task = [x for r in variant_runs for x in r["roundtrip"]["task_ms"]]
        ping = [x for r in variant_runs for x in r["roundtrip"]["redis_ping_ms"]]
        mixed = [x for r in variant_runs for x in r["roundtrip"]["redis_ping_interleaved_ms"]]
        results[variant] = {
            "tasks_per_s": statistics.mean(r["throughput"]["tasks_per_s"] for r in variant_runs),
            "worker_cpu_ms_per_task": statistics.mean(
                r["throughput"]["worker_cpu_ms_per_task"] for r in variant_runs
            ),
            "task_ms": {"p50": statistics.median(task), "p95": percentile(task, 95)},
            "ping_ms": {"p50": statistics.median(ping), "p95": percentile(ping, 95)},
            "ping_interleaved_ms": {"p50": statistics.median(mixed), "p95": percentile(mixed, 95)},
            "runs": [
                {key: value for key, value in r.items() if key != "roundtrip"} for r in variant_runs
            ],
        }
        print(
            f"  celery {variant:<9} round trip p50 {results[variant]['task_ms']['p50']:.2f} ms"
            f" (Redis PING p50 {results[variant]['ping_ms']['p50']:.3f} ms)",
            flush=True,
        )
    return results


def bench(options: argparse.Namespace) -> dict[str, Any]:
    work = options.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs, scripts = work / "logs", work / "scripts"
    logs.mkdir()
    scripts.mkdir()
    m: dict[str, Any] = {}

    with ExitStack() as resources:
        if options.project:  # an installed project, patched by hand: no copier timing
            path = options.project.resolve()
            answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
            project = prepare_project(Project(path, answers, path / ".venv" / "bin" / "python"))
            resources.callback(remove_bench_files, path)
            m["copier"] = None
        else:
            print("copier copy ...", flush=True)
            path, samples = time_copier(work, options.copier_runs)
            m["copier"] = {"runs_s": samples, "median_s": statistics.median(samples)}
            print("installing the generated project ...", flush=True)
            project = install_project(path)

        database_url = resources.enter_context(fresh_database(project, work))
        broker_url = resources.enter_context(fresh_redis_db(project, BROKER_DB))
        results_url = resources.enter_context(fresh_redis_db(project, RESULTS_DB))
        generated = project.env_file()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"WEB_CONCURRENCY", "CELERY_WORKER_CONCURRENCY", "FLASK_APP"}
        }
        env.update(
            {
                "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}",
                "VIRTUAL_ENV": str(project.bin.parent),
                "FLASK_CONFIG": "production",
                "FLASK_DEBUG": "0",
                "SECRET_KEY": generated["SECRET_KEY"],
                "DATABASE_URL": database_url,
                "CELERY_BROKER_URL": broker_url,
                "CELERY_RESULT_BACKEND": results_url,
                "HOST": "127.0.0.1",
                "PORT": str(free_port()),
                "CELERY_BEAT_SCHEDULE": str(work / "beat" / "schedule"),
                "FLOWER_HOST": "127.0.0.1",
                "FLOWER_PORT": str(free_port()),
                "FLOWER_BASIC_AUTH": generated["FLOWER_BASIC_AUTH"],
            }
        )
        services = Services(project, env, logs)
        resources.callback(services.stop_all)  # runs first: nothing holds the database then

        print("cold start ...", flush=True)
        python = str(project.python)
        timing = run_times(
            [python, "-c", "from app import app"],
            cwd=project.path,
            env=env,
            runs=options.import_runs,
        )
        floor = run_times([python, "-c", "pass"], cwd=project.path, env=env, runs=5)
        libraries = run_times([python, "-c", LIBRARIES], cwd=project.path, env=env, runs=5)
        m["cold_start"] = {
            "import_app_ms": timing["median_ms"],
            "import_app_min_ms": timing["min_ms"],
            "python_ms": floor["median_ms"],
            "libraries_ms": libraries["median_ms"],
            "runs": options.import_runs,
            "by_package_ms": import_breakdown(project, env),
        }

        print("booting the stack from its start scripts ...", flush=True)
        run([project.bin / "flask", "--app", "app.py", "db", "upgrade"], cwd=project.path, env=env)
        start = project.path / SCRIPTS
        web_url = f"http://127.0.0.1:{env['PORT']}"
        worker = services.start("worker", start / "celery" / "worker" / "start")
        ready = {"worker_s": services.wait_for("the worker", lambda: " ready." in worker.text())}
        services.start("web", start / "start")
        ready["web_s"] = services.wait_for(
            "the web app", lambda: http("GET", web_url + "/health")[0] == 200
        )
        services.start("beat", start / "celery" / "beat" / "start")
        services.start("flower", start / "celery" / "flower" / "start")
        services.wait_for("Flower", lambda: listening(int(env["FLOWER_PORT"])), timeout=90)
        time.sleep(options.settle)
        m["ready"] = ready
        m["memory"] = {
            name: group_memory(services.running[name].process.pid)
            for name in ("web", "worker", "beat", "flower")
        }
        # Beat, Flower and this worker have been measured; the Celery runs need the broker to
        # themselves (Flower would also switch task events on in the benchmark's workers).
        for name in ("flower", "beat", "worker"):
            services.stop(name)

        print("celery ...", flush=True)
        m["celery"] = measure_celery(services, project, scripts, options)

        print("http ...", flush=True)
        status, body = http(
            "POST", web_url + "/users", {"username": "bench", "email": "bench@example.com"}
        )
        if status != 201:
            raise BenchError(f"POST /users answered {status}: {body[:500]!r}")
        user_id = json.loads(body)["id"]
        flask_port, hello_port = free_port(), free_port()
        services.start(
            "flask_run",
            project.bin / "flask", "--app", "app.py", "run", "--host", "127.0.0.1",
            "--port", str(flask_port),
        )  # fmt: skip
        hello_script = copy_script(start / "start", scripts / "hello", "app:app", "bench_hello:app")
        hello = services.start("hello", hello_script, env={**env, "PORT": str(hello_port)})
        urls = {
            "app": web_url,
            "flask_run": f"http://127.0.0.1:{flask_port}",
            "hello": f"http://127.0.0.1:{hello_port}",
        }
        for server in ("flask_run", "hello"):
            services.wait_for(server, lambda u=urls[server]: http("GET", u + "/")[0] == 200)
        time.sleep(options.settle)
        m["memory"]["hello"] = group_memory(hello.process.pid)
        m["http"] = measure_http(services, options, urls, user_id)
        services.stop_all()

    if options.observability and not options.project:
        print("observability options ...", flush=True)
        m["observability"] = measure_observability(work, env, options)

    if SUITES[options.suite]:
        print(f"template test suite ({options.suite}) ...", flush=True)
        command = [sys.executable, "-m", "pytest", *SUITES[options.suite]]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        m["suite"] = {
            "command": shlex.join(["python", *command[1:]]),
            "wall_s": time.perf_counter() - started,
            "returncode": done.returncode,
            "summary": done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else [],
        }
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    return m


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nox -s bench --", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds of wrk per endpoint and server (5)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs the duration is cut in")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each run")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (4)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per throughput run")
    parser.add_argument("--calls", type=int, default=200, help="round trips timed per worker")
    parser.add_argument(
        "--celery-rounds", type=int, default=3, help="runs of each worker, in ABBA order (3)"
    )
    parser.add_argument("--import-runs", type=int, default=7, help="cold imports timed (7)")
    parser.add_argument("--copier-runs", type=int, default=3, help="copier copies timed (3)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS")
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default=os.environ.get("BENCH_SUITE", "skip"),
        help="time the template's test suite: fast = its default tier (about 5 minutes on 2 "
        "cores), full = boot and fault injection too, or skip (default; env BENCH_SUITE)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / ".nox" / "bench-work", help="scratch folder"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated project and logs")
    parser.add_argument(
        "--no-observability",
        dest="observability",
        action="store_false",
        help="skip the cost of the OpenTelemetry and Sentry options (3 more installs, 2 minutes)",
    )
    parser.add_argument(
        "--project",
        type=Path,
        help="benchmark this generated and installed project (.venv inside) instead of a new "
        "copy: to measure a change by hand, before and after",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    # A SIGTERM (a CI time-out) unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"bench: note: load average {load_before[0]:.1f} before starting: something else "
              "is running, and the ratios will be noisier", file=sys.stderr)  # fmt: skip
    try:
        m = bench(options)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except pytest.skip.Exception as error:  # a service or an interpreter is missing
        print(f"bench: {error.msg}", file=sys.stderr)
        return 1
    rows = build_rows(m, options.suite)
    table = markdown(rows)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "template", "copier.yml")),
        "cpus": os.cpu_count(),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("\n")[0].strip(),
        "wall_s": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "options": {k: str(v) for k, v in vars(options).items()},
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "targets": TARGETS, "rows": rows, "measurements": m}
    options.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    cpu = cpu_table(m)
    options.output.with_suffix(".md").write_text(f"{table}\n\nServer CPU per request:\n\n{cpu}\n")
    print()
    print(table)
    print()
    print("Server CPU per request (user + system, all of the server's processes):")
    print(cpu)
    print()
    breakdown = ", ".join(f"{name} {ms:g}" for name, ms in m["cold_start"]["by_package_ms"])
    print(f"Import self time by package (ms, -X importtime): {breakdown}")
    failed = [r["measure"] for r in rows if r["result"] == "FAIL"]
    print(f"{len(failed)} target(s) missed" + (f": {'; '.join(failed)}" if failed else ""))
    print(f"wrote {options.output} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
