"""Celery set up the way Flask documents it: one Celery app per Flask app."""

from __future__ import annotations

from typing import Any, cast

from celery import Celery, Task
from celery.signals import celeryd_init
from flask import Flask
from kombu.connection import ConnectionPool
from kombu.exceptions import OperationalError


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for ``app`` from ``app.config["CELERY"]``.

    Every task runs inside the Flask app context, so it can use ``db.session`` and
    ``current_app`` like a view does.
    """

    class FlaskTask(Task[Any, Any]):
        # Seconds before a retry: after `self.retry()`, or after the worker process running
        # the task died (see task_retry_on_worker_lost in config.py).
        default_retry_delay = 5

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return super().__call__(*args, **kwargs)

        def apply_async(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().apply_async(*args, **kwargs)
            except RuntimeError as error:
                # Celery's Redis result backend reports that it cannot reach Redis with a bare
                # RuntimeError: raise it as the broker's errors are raised (views answer 503).
                if isinstance(error.__cause__, getattr(self.backend, "connection_errors", ())):
                    raise OperationalError(f"The result backend is unreachable: {error}") from error
                raise

    celery_app: Celery = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


@celeryd_init.connect
def keep_default_result_retries(conf: Any = None, **_: Any) -> None:
    """In a worker, retry result writes as long as Celery does by default (about 20 s).

    config.py gives up after about a second, which is right for a web request enqueueing a task
    but would lose the results of tasks that finish during a short Redis restart.
    """
    options = conf.result_backend_transport_options if conf is not None else None
    if options and "retry_policy" in options:
        conf.result_backend_transport_options = {
            name: value for name, value in options.items() if name != "retry_policy"
        }


def broker_available(celery_app: Celery, timeout: float = 2.0) -> bool:
    """Whether the broker answers within ``timeout`` seconds.

    On a connection of Celery's pool: a probe every few seconds opens no new connection.
    """
    pool = cast(ConnectionPool, celery_app.pool)  # celery-types has it a ProducerPool
    try:
        with pool.acquire(block=True, timeout=timeout) as connection:
            try:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
                # A round trip, since an open connection may be stale.
                if connection.transport.driver_type == "redis":
                    # A PING on the pooled socket (a new channel would open a new socket).
                    connection.default_channel.client.ping()
                else:
                    connection.channel().close()
            except Exception:
                connection.collect()  # a broken connection: the next probe opens a new one
                raise
    except Exception:  # any failure means "not ready"; the reason is in the broker's logs
        return False
    return True
