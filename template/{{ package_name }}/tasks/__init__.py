"""Tasks: an example blueprint that queues a Celery task and reports on it over HTTP."""

from . import tasks
from .views import tasks_blueprint

__all__ = ["tasks", "tasks_blueprint"]
