"""bench_tasks with the generated reliability settings switched back to Celery's defaults."""

from bench_tasks import celery, noop
from celery.app.defaults import DEFAULTS

# The worker-side settings the generated config.py sets for reliability (see its comments).
RELIABILITY_SETTINGS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_retry_on_worker_lost",
    "worker_prefetch_multiplier",
    "task_soft_time_limit",
    "task_time_limit",
    "worker_cancel_long_running_tasks_on_connection_loss",
)
GENERATED = {name: celery.conf.get(name) for name in RELIABILITY_SETTINGS if name in DEFAULTS}
RESET = {name: DEFAULTS[name] for name in GENERATED}
celery.conf.update(RESET)

__all__ = ["GENERATED", "RESET", "celery", "noop"]
