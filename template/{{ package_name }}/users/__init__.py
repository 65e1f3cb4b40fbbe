"""Users: an example blueprint with a model, JSON views, Celery tasks and a command."""

from . import commands, tasks
from .views import users_blueprint

__all__ = ["commands", "tasks", "users_blueprint"]
