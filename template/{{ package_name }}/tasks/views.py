"""JSON views of the tasks blueprint: queue ``divide`` and read a task's state and result."""

from __future__ import annotations

import logging
import math
import uuid

from flask import Blueprint, Response, current_app, jsonify, url_for
from werkzeug.exceptions import NotFound, ServiceUnavailable

from ..validation import ValidationError, json_object
from .tasks import divide

logger = logging.getLogger(__name__)

tasks_blueprint = Blueprint("tasks", __name__, url_prefix="/tasks")


@tasks_blueprint.post("/divide")
def enqueue_divide() -> tuple[Response, int, dict[str, str]]:
    """Queue ``divide(x, y)``; answers 202 with the task id to poll."""
    data = json_object()
    problems = {
        name: "required, a finite number" for name in ("x", "y") if not _is_number(data.get(name))
    }
    if problems:
        raise ValidationError(problems)
    result = divide.delay(data["x"], data["y"])
    location = url_for(".task_status", task_id=result.id)
    return jsonify(task_id=result.id), 202, {"Location": location}


@tasks_blueprint.get("/<task_id>")
def task_status(task_id: str) -> Response:
    """A task's state (Celery's names); its result on SUCCESS, its error on FAILURE.

    Celery cannot tell an unknown id from a queued task: both are PENDING.
    """
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"No task {task_id!r}: task ids are UUIDs.") from None
    result = current_app.extensions["celery"].AsyncResult(task_id)
    try:
        state, outcome = result.state, result.result
    except Exception as error:  # each result backend raises its own connection errors
        logger.warning("Result backend unavailable: %s", error)
        raise ServiceUnavailable("The result backend is unavailable; try again later.") from None
    if state == "FAILURE":
        return jsonify(task_id=task_id, state=state, error=f"{type(outcome).__name__}: {outcome}")
    return jsonify(task_id=task_id, state=state, result=outcome if state == "SUCCESS" else None)


def _is_number(value: object) -> bool:
    """JSON numbers only: not booleans, strings, NaN or infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
