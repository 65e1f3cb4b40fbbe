"""Users: an example blueprint with a model, JSON views and Celery tasks."""

from . import tasks
from .views import users_blueprint

__all__ = ["tasks", "users_blueprint"]
