"""Flask's cookie sessions, without rebuilding the signing serializer on every request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask.sessions import SecureCookieSessionInterface

if TYPE_CHECKING:
    from flask import Flask
    from itsdangerous import URLSafeTimedSerializer


class CachedSerializerSessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions, as Flask's default, reusing one serializer per set of keys.

    Flask opens the session on every request and builds a new serializer each time (about a
    fifth of this app's own time per request). This keeps the last one until ``SECRET_KEY`` or
    ``SECRET_KEY_FALLBACKS`` changes. Give each app its own instance.
    """

    _cached: tuple[object, URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._cached
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app))
            self._cached = cached
        return cached[1]
