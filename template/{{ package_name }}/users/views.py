"""JSON views of the users blueprint: create, list and read users."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, NotFound

from ..extensions import db
from ..validation import ValidationError, json_object
from .models import EMAIL_MAX_LENGTH, ID_MAX, USERNAME_MAX_LENGTH, User
from .tasks import welcome_user

logger = logging.getLogger(__name__)

PER_PAGE = 20
MAX_PER_PAGE = 100
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits; more than 9 would be no page anyway
USERNAME_PATTERN = re.compile(r"[\w.-]+")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

users_blueprint = Blueprint("users", __name__, url_prefix="/users")


@users_blueprint.post("")
def create_user() -> tuple[Response, int, dict[str, str]]:
    """Create a user from ``{"username", "email"}``: 201, 400 if invalid, 409 if taken.

    The welcome message is queued after the commit, so the worker always finds the user.
    """
    username, email = _user_fields(json_object())
    user = User(username=username, email=email)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("A user with this username or email already exists.") from None
    try:
        welcome_user.delay(user.id)
    except BrokerError as error:
        # The user exists: answer 201 all the same. `flask users send-welcomes` queues it later.
        logger.error("Could not queue the welcome of user %d: %s", user.id, error)
    location = url_for(".get_user", user_id=user.id)
    return jsonify(user.to_dict()), 201, {"Location": location}


@users_blueprint.get("")
def list_users() -> Response:
    """Users in creation order, a page at a time: ``?page=`` (from 1) and ``?per_page=``
    (default 20, at most 100); 400 if either is not a whole number from 1."""
    page = db.paginate(
        db.select(User).order_by(User.id),
        page=_positive_argument("page", default=1),
        per_page=_positive_argument("per_page", default=PER_PAGE),
        max_per_page=MAX_PER_PAGE,
        error_out=False,  # a page past the last one is empty, not an error
    )

    def link(number: int | None) -> str | None:
        return url_for(".list_users", page=number, per_page=page.per_page) if number else None

    return jsonify(
        users=[user.to_dict() for user in page.items],
        page=page.page,
        per_page=page.per_page,
        total=page.total,
        pages=page.pages,
        next=link(page.next_num),
        prev=link(page.prev_num),
    )


@users_blueprint.get("/<int:user_id>")
def get_user(user_id: int) -> Response:
    description = f"No user with id {user_id}."
    if user_id > ID_MAX:  # no such row, and a number the database driver may refuse to send
        raise NotFound(description)
    user = db.get_or_404(User, user_id, description=description)
    return jsonify(user.to_dict())


def _positive_argument(name: str, default: int) -> int:
    """The query string argument ``name``, a whole number from 1, or a ValidationError."""
    value = request.args.get(name)
    if value is None:
        return default
    if not WHOLE_NUMBER.fullmatch(value) or int(value) < 1:
        raise ValidationError({name: "a whole number from 1"})
    return int(value)


def _user_fields(data: dict[str, Any]) -> tuple[str, str]:
    """``username`` and ``email`` from a request body, or a ValidationError naming each problem."""
    username, email = data.get("username", ""), data.get("email", "")
    problems = {}
    if not isinstance(username, str) or not username:
        problems["username"] = "required, a non-empty string"
    elif len(username) > USERNAME_MAX_LENGTH:
        problems["username"] = f"at most {USERNAME_MAX_LENGTH} characters"
    elif not USERNAME_PATTERN.fullmatch(username):
        problems["username"] = "only letters, digits, '.', '_' and '-'"
    if not isinstance(email, str) or not email:
        problems["email"] = "required, a non-empty string"
    elif len(email) > EMAIL_MAX_LENGTH:
        problems["email"] = f"at most {EMAIL_MAX_LENGTH} characters"
    elif not email.isprintable() or not EMAIL_PATTERN.fullmatch(email):
        # isprintable() is False for NUL, control characters and lone surrogates, which
        # PostgreSQL or the UTF-8 encoder of every driver would refuse.
        problems["email"] = "not an email address"
    if problems:
        raise ValidationError(problems)
    return username, email
