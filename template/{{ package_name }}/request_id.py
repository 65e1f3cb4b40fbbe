"""One id per request: on its response, on its log lines, and on the tasks it queues and theirs.

The id is the client's ``X-Request-ID`` when it is well formed (1 to 128 letters, digits, ``-``,
``_`` or ``.``: a proxy's or a load balancer's id, so that one search finds the request in every
log), a new random one otherwise: a malformed id is replaced, never echoed. Tasks queued while
the request is served carry it in a message header, ``request_id``, and so do the tasks those
tasks queue.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from celery import current_task
from celery.signals import before_task_publish
from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-ID"
WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,128}")


def current_request_id() -> str | None:
    """The id of the request being served, or of the request that queued the running task."""
    if has_request_context():
        request_id: str | None = g.get("request_id")
        return request_id
    if current_task and current_task.request.id:
        return getattr(current_task.request, "request_id", None)
    return None


def init_app(app: Flask) -> None:
    """Give every request of ``app`` its id, and every response the ``X-Request-ID`` header."""

    @app.before_request
    def assign_request_id() -> None:
        sent = request.headers.get(HEADER, "")
        g.request_id = sent if WELL_FORMED.fullmatch(sent) else uuid.uuid4().hex

    @app.after_request
    def return_request_id(response: Response) -> Response:
        if request_id := g.get("request_id"):
            response.headers[HEADER] = request_id
        return response


@before_task_publish.connect
def pass_request_id(headers: dict[str, Any], **_: Any) -> None:
    """Put the current request's id on every task queued while serving it."""
    if request_id := current_request_id():
        headers.setdefault("request_id", request_id)
