"""The home page and the health endpoints used by load balancers and Docker Compose."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .celery_utils import broker_available
from .extensions import db

logger = logging.getLogger(__name__)

main_blueprint = Blueprint("main", __name__)


@main_blueprint.get("/")
def index() -> str:
    return "Hello, World!"


@main_blueprint.get("/health")
def health() -> Response:
    """Liveness: 200 as long as the process answers."""
    return jsonify(status="ok")


@main_blueprint.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: 200 when the database and the broker answer, 503 otherwise."""
    checks = {
        "database": "ok" if _database_available() else "unavailable",
        "broker": "ok" if broker_available(current_app.extensions["celery"]) else "unavailable",
    }
    if all(state == "ok" for state in checks.values()):
        return jsonify(status="ready", checks=checks), 200
    return jsonify(status="unavailable", checks=checks), 503


def _database_available() -> bool:
    try:
        db.session.execute(db.text("SELECT 1"))
    except SQLAlchemyError as error:
        logger.warning("Readiness check: database unavailable: %s", error)
        db.session.rollback()
        return False
    return True
