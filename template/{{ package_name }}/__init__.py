"""The Flask application factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .celery_utils import celery_init_app
from .config import BASE_DIR, config, from_environment
from .errors import register_error_handlers
from .extensions import db, include_name
from .logs import configure_logging
from .main import main_blueprint
from .request_id import init_app as init_request_id
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
    app.config.from_object(config[config_name])
    if not app.testing:  # the tests set what they need, and pytest captures the logs
        configure_logging()
        app.config.from_mapping(from_environment(production=config_name == "production"))
        app.config.from_prefixed_env()
    app.config.update(overrides or {})

    if hops := app.config.get("PROXY_HOPS"):
        # Behind proxies: the scheme, host and client address are those the first proxy saw.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    init_request_id(app)  # first: every other hook and view may log
    db.init_app(app)
    if app.testing or _run_by_flask_cli():
        # Only `flask db` and the tests need Flask-Migrate: it imports alembic, 10% of the web
        # processes' memory (the template's docs/performance.md has the figures).
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(BASE_DIR / "migrations"), include_name=include_name)
    celery_init_app(app)
    register_error_handlers(app)

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
