"""Logging, configured once per process: the web server, Celery's worker and beat, `flask`.

Every module gets its logger with ``logging.getLogger(__name__)``. Its lines at LOG_LEVEL and
above (default INFO) go to standard error, which gunicorn, Celery and Docker show. A line logged
while a request is served, or while a task it queued runs, carries the request's id (see
request_id.py); a line logged in a task names the task and its id. LOG_FORMAT=json writes each
line as one JSON object, for log shippers; the default is text.
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from celery import current_task
from celery.signals import setup_logging
from pythonjsonlogger.json import JsonFormatter

from .request_id import current_request_id

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s%(context)s: %(message)s"
# LOG_FORMAT=json: an object a line, with these fields of the record (renamed) and its time, then
# its extras (request_id, task_name, task_id, and those a library passes).
JSON_FIELDS = ["levelname", "processName", "name", "message"]
JSON_NAMES = {"levelname": "level", "processName": "process", "name": "logger"}


class Context(logging.Filter):
    """Gives each record ``request_id``, ``task_name`` and ``task_id`` (None when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_task and current_task.request.id  # a proxy: false outside tasks
        record.request_id = current_request_id()
        record.task_name = current_task.name if running else None
        record.task_id = current_task.request.id if running else None
        return True


class TextFormatter(logging.Formatter):
    """FORMAT, where ``context`` is " <task name>[<task id>]" in a task, then " request=<id>"."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        context = ""
        if task_id := getattr(record, "task_id", None):
            context += f" {getattr(record, 'task_name', None)}[{task_id}]"
        if request_id := getattr(record, "request_id", None):
            context += f" request={request_id}"
        record.context = context
        return super().formatMessage(record)


def configure_logging(level: int | str | None = None) -> None:
    """Send every logger's lines to standard error at ``level`` (default: LOG_LEVEL, INFO), as
    LOG_FORMAT says: ``text`` (the default) or ``json``, an object a line."""
    log_format = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
    formatters: dict[str, dict[str, Any]] = {
        "text": {"()": TextFormatter, "fmt": FORMAT},
        "json": {
            "()": JsonFormatter,
            "fmt": JSON_FIELDS,
            "rename_fields": JSON_NAMES,
            "timestamp": "time",  # ISO 8601, UTC
        },
    }
    if log_format not in formatters:
        raise ValueError(f"LOG_FORMAT must be text or json, got {log_format!r}")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": Context}},
            "formatters": {"default": formatters[log_format]},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "filters": ["context"],
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
