"""The generated app's Celery app plus one no-op task, for workers started with -A bench_tasks.

Nothing of the app's configuration changes: the task runs through its FlaskTask (inside an app
context) and stores its result in the configured backend, like the app's own tasks.
"""

import time

from app import celery


@celery.task(name="bench.noop", ignore_result=False)
def noop() -> float:
    """Does nothing; returns when it ran (the worker's clock), which the throughput uses."""
    return time.time()
