"""JSON views of the tasks blueprint: queue ``divide`` and read a task's state and result."""

from __future__ import annotations

import logging
import math

from flask import Blueprint, Response, current_app, jsonify, url_for
from itsdangerous import BadSignature, URLSafeSerializer
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
    task_id = _task_ids().dumps(result.id)
    location = url_for(".task_status", task_id=task_id)
    return jsonify(task_id=task_id), 202, {"Location": location}


@tasks_blueprint.get("/<task_id>")
def task_status(task_id: str) -> Response:
    """The state (Celery's names) of a task this API queued; its result on SUCCESS, the name of
    its error on FAILURE (an exception's text may hold data no client should see).

    The ids this API hands out are Celery's, signed with SECRET_KEY: any other id, a task queued
    some other way included, is a 404 found without a look-up.
    """
    try:
        celery_id = _task_ids().loads(task_id)
    except BadSignature:
        raise NotFound("No task with this id.") from None
    result = current_app.extensions["celery"].AsyncResult(celery_id)
    try:
        state, outcome = result.state, result.result
    except Exception as error:  # each result backend raises its own connection errors
        logger.warning("Result backend unavailable: %s", error)
        raise ServiceUnavailable("The result backend is unavailable; try again later.") from None
    if state == "FAILURE":
        return jsonify(task_id=task_id, state=state, error=type(outcome).__name__)
    return jsonify(task_id=task_id, state=state, result=outcome if state == "SUCCESS" else None)


def _task_ids() -> URLSafeSerializer:
    """Signs Celery's task ids with SECRET_KEY (SECRET_KEY_FALLBACKS still verify)."""
    keys = [*(current_app.config["SECRET_KEY_FALLBACKS"] or []), current_app.secret_key]
    return URLSafeSerializer(keys, salt="task-id")


def _is_number(value: object) -> bool:
    """JSON numbers only: not booleans, strings, NaN or infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
