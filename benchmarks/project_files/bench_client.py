"""The Celery side of the benchmark, run with the generated project's Python and environment.

    python bench_client.py enqueue COUNT IDS_FILE   queue COUNT no-op tasks (no worker running)
    python bench_client.py collect IDS_FILE         wait for their results: tasks/s
    python bench_client.py roundtrip CALLS          enqueue-to-result and Redis PING times
    python bench_client.py settings                 the reliability settings and their defaults

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

WARMUP_CALLS = 20


def enqueue(count: int, ids_file: Path) -> dict[str, float]:
    from bench_tasks import celery, noop

    started = time.perf_counter()
    with celery.producer_or_acquire() as producer:  # one connection for every publish
        ids = [noop.apply_async(producer=producer).id for _ in range(count)]
    elapsed = time.perf_counter() - started
    ids_file.write_text("\n".join(ids) + "\n")
    return {"tasks": count, "enqueue_s": elapsed, "enqueued_per_s": count / elapsed}


def collect(ids_file: Path, timeout: float = 180) -> dict[str, float]:
    """Wait until every task of ``ids_file`` has a result; the rate between the first and last.

    Each no-op task returns the moment it ran, so the rate covers the worker's steady work,
    not its boot: (tasks - 1) / (last - first).
    """
    from bench_tasks import celery

    ids = ids_file.read_text().split()
    backend = celery.backend
    keys = [backend.get_key_for_task(task_id) for task_id in ids]
    deadline = time.monotonic() + timeout
    while True:
        values = backend.client.mget(keys)
        done = sum(value is not None for value in values)
        if done == len(keys):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done} of {len(keys)} tasks finished in {timeout} s")
        time.sleep(0.1)
    metas = [json.loads(value) for value in values]
    failed = [meta for meta in metas if meta["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(f"{len(failed)} tasks did not succeed, e.g. {failed[0]}")
    stamps = sorted(meta["result"] for meta in metas)
    span = stamps[-1] - stamps[0]
    return {"tasks": len(ids), "span_s": span, "tasks_per_s": (len(ids) - 1) / span}


def roundtrip(calls: int) -> dict[str, list[float]]:
    """``noop.delay().get()`` ``calls`` times, one after the other, and Redis PINGs (ms).

    The floor is PING back to back (half of them before the tasks, half after, so both see the
    same machine); a PING right after each task is kept too, as "interleaved": it is slower,
    its caches cold, and would flatter the ratio.
    """
    import redis
    from bench_tasks import celery, noop

    client = redis.Redis.from_url(celery.conf.broker_url)

    def pings(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    pings(WARMUP_CALLS)
    floor = pings(calls // 2)
    task, interleaved = [], []
    for index in range(WARMUP_CALLS + calls):
        started = time.perf_counter()
        noop.delay().get(timeout=10)
        middle = time.perf_counter()
        client.ping()
        ended = time.perf_counter()
        if index >= WARMUP_CALLS:
            task.append((middle - started) * 1000)
            interleaved.append((ended - middle) * 1000)
    floor += pings(calls - calls // 2)
    return {"task_ms": task, "redis_ping_ms": floor, "redis_ping_interleaved_ms": interleaved}


def settings() -> dict[str, dict[str, object]]:
    from bench_defaults import GENERATED, RESET

    return {"generated": GENERATED, "celery_defaults": RESET}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "enqueue":
        result = enqueue(int(args[0]), Path(args[1]))
    elif command == "collect":
        result = collect(Path(args[0]))
    elif command == "roundtrip":
        result = roundtrip(int(args[0]))
    elif command == "settings":
        result = settings()
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
