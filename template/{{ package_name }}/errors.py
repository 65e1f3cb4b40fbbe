"""JSON error responses: every error the app answers, as ``{"error", "message"}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable
from werkzeug.wrappers import Response

from .extensions import db
from .validation import ValidationError

logger = logging.getLogger(__name__)


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
    """Answer every error with JSON, never with an HTML page.

    An exception no handler takes is Flask's to handle: in debug mode and in the tests
    (PROPAGATE_EXCEPTIONS) it reaches the debugger or the test; otherwise Flask logs it and
    answers an InternalServerError, which the HTTPException handler below renders as JSON.
    """

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
