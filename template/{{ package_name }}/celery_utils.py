"""Celery set up the way Flask documents it: one Celery app per Flask app."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for ``app`` from ``app.config["CELERY"]``.

    Every task runs inside the Flask app context, so it can use ``db.session`` and
    ``current_app`` like a view does.
    """

    class FlaskTask(Task):
        # Seconds before a retry: after `self.retry()`, or after the worker process running
        # the task died (see task_retry_on_worker_lost in config.py).
        default_retry_delay = 5

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return super().__call__(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def broker_available(celery_app: Celery, timeout: float = 2.0) -> bool:
    """Whether the broker accepts a connection within ``timeout`` seconds."""
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception:  # any failure means "not ready"; the reason is in the broker's logs
        return False
    return True
