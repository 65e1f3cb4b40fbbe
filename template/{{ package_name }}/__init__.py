"""The Flask application factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .api import refuse_oversized_body, register_error_handlers
from .celery_utils import celery_init_app
from .config import BASE_DIR, config
from .extensions import db
from .main import main_blueprint
from .sessions import CachedSerializerSessionInterface
from .tasks import tasks_blueprint
from .users import users_blueprint
from .users.models import User, Welcome

__all__ = ["create_app", "db"]


def create_app(config_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Create the Flask app and its Celery app (``app.extensions["celery"]``).

    ``config_name`` picks a configuration from :data:`config.config`; by default the
    FLASK_CONFIG environment variable, else "development". ``overrides`` replace single
    settings after the configuration is loaded (tests use it).
    """
    config_name = config_name or os.environ.get("FLASK_CONFIG", "development")
    if config_name not in config:
        choices = ", ".join(config)
        raise ValueError(f"Unknown configuration {config_name!r} (FLASK_CONFIG): use {choices}")

    app = Flask(__name__)
    app.config.from_object(config[config_name]())
    app.config.update(overrides or {})

    db.init_app(app)
    if app.testing or _run_by_flask_cli():
        from flask_migrate import Migrate  # imports alembic: only `flask db` and tests need it

        Migrate(app, db, directory=str(BASE_DIR / "migrations"))
    celery_init_app(app)
    register_error_handlers(app)
    app.before_request(refuse_oversized_body)
    app.session_interface = CachedSerializerSessionInterface()

    app.register_blueprint(main_blueprint)
    app.register_blueprint(users_blueprint)
    app.register_blueprint(tasks_blueprint)

    @app.shell_context_processor
    def shell_context() -> dict[str, object]:
        return {"app": app, "db": db, "User": User, "Welcome": Welcome}

    return app


def _run_by_flask_cli() -> bool:
    """Whether the ``flask`` command is creating the app (not gunicorn, not Celery)."""
    import click
    from flask.cli import FlaskGroup

    context = click.get_current_context(silent=True)
    return context is not None and isinstance(context.find_root().command, FlaskGroup)
