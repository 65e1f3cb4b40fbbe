"""Logging, configured once per process: the web server, Celery's worker and beat, `flask`.

Every module gets its logger with ``logging.getLogger(__name__)``. Its lines at LOG_LEVEL and
above (default INFO) go to standard error, which gunicorn, Celery and Docker show; a line logged
while a Celery task runs names the task and its id.
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from celery import current_task
from celery.signals import setup_logging

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s%(task)s: %(message)s"


class TaskContext(logging.Filter):
    """Gives each record ``task``: " <task name>[<task id>]" while a task runs, else ""."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_task and current_task.request.id  # a proxy: false outside tasks
        record.task = f" {current_task.name}[{current_task.request.id}]" if running else ""
        return True


def configure_logging(level: int | str | None = None) -> None:
    """Send every logger's lines to standard error at ``level`` (default: LOG_LEVEL, INFO)."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"task": {"()": TaskContext}},
            "formatters": {"default": {"format": FORMAT}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "filters": ["task"],
                    "formatter": "default",
                }
            },
            "root": {"level": level or os.environ.get("LOG_LEVEL", "INFO"), "handlers": ["stderr"]},
        }
    )


@setup_logging.connect
def celery_logging(loglevel: int | None = None, **_: Any) -> None:
    """Celery's worker and beat call this instead of setting up logging themselves; their
    ``--loglevel`` (the start scripts pass LOG_LEVEL) sets the level."""
    configure_logging(loglevel)
