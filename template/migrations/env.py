"""Alembic environment: migrations run against the Flask app's database."""

import logging
from collections.abc import Iterable
from logging.config import fileConfig

from alembic import context
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from flask import current_app

config = context.config
if config.config_file_name is not None:
    # Keep the application's loggers (Celery's, the app's) working after a migration.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

db = current_app.extensions["migrate"].db
target_metadata = db.metadata
# Migrate()'s options, given in create_app: include_name leaves Celery's tables alone.
configure_args = current_app.extensions["migrate"].configure_args


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``flask db upgrade --sql``) instead of running it."""
    url = db.engine.url.render_as_string(hide_password=False)
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, **configure_args
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on a connection to the app's database."""

    def process_revision_directives(
        context: MigrationContext,
        revision: str | Iterable[str | None],
        directives: list[MigrationScript],
    ) -> None:
        # `flask db migrate` with no model change: write no empty revision.
        autogenerate = getattr(config.cmd_opts, "autogenerate", False)
        upgrade_ops = directives[0].upgrade_ops
        if autogenerate and upgrade_ops is not None and upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            process_revision_directives=process_revision_directives,
            **configure_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
