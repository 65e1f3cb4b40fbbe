"""Reading JSON request bodies, and the error that says which fields are wrong."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest


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
