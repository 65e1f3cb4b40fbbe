"""Command-line commands of the users blueprint: ``flask --app app.py users ...``."""

from __future__ import annotations

import click

from ..extensions import db
from .models import User, Welcome
from .tasks import welcome_user
from .views import users_blueprint


@users_blueprint.cli.command("send-welcomes")
def send_welcomes() -> None:
    """Queue the welcome of every user who has none yet (safe to repeat: the task is idempotent)."""
    welcomed = db.select(Welcome.user_id)
    user_ids = db.session.scalars(db.select(User.id).where(User.id.not_in(welcomed))).all()
    for user_id in user_ids:
        welcome_user.delay(user_id)
    click.echo(f"Queued the welcome of {len(user_ids)} user(s).")
