"""JSON helpers shared by the views: reading request bodies and JSON error responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, request
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from .extensions import db

logger = logging.getLogger(__name__)


class ValidationError(BadRequest):
    """A JSON body whose fields are missing or invalid; ``fields`` maps each to the problem."""

    def __init__(self, fields: dict[str, str]) -> None:
        problems = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
        super().__init__(f"Invalid request body: {problems}")
        self.fields = fields


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 error that says what is wrong."""
    if not request.is_json:
        raise BadRequest("Send a JSON object with the header Content-Type: application/json.")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # Python's parser recurses once per [ or {: a few thousand suffice
        raise BadRequest("The JSON body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    return data


def refuse_oversized_body() -> None:
    """Refuse a body longer than MAX_CONTENT_LENGTH (413) before any view runs.

    Werkzeug enforces the limit only when a view reads the body; this refuses it even when the
    view would not read it (a wrong content type, say), so the answer does not depend on that.
    """
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()


def _json_error(error: HTTPException) -> Response:
    """``error`` as a JSON body ``{"error", "message"}``, keeping its status and headers."""
    response = error.get_response()
    body: dict[str, Any] = {"error": error.name, "message": error.description}
    if isinstance(error, ValidationError):
        body["fields"] = error.fields
    response.data = json.dumps(body)
    response.content_type = "application/json"
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer every error with JSON, never with an HTML page."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _json_error(error)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error: Exception) -> Response:
        logger.warning("Database unavailable: %s", error)
        db.session.rollback()
        return _json_error(ServiceUnavailable("The database is unavailable; try again later."))

    @app.errorhandler(BrokerError)
    def broker_unavailable(error: Exception) -> Response:
        logger.warning("Broker unavailable: %s", error)
        return _json_error(ServiceUnavailable("The task queue is unavailable; try again later."))

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("Unhandled error", exc_info=error)
        return _json_error(InternalServerError("An unexpected error occurred."))
