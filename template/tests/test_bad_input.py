"""Bad input, generated: no request makes the app fail, and every refusal is a JSON error.

Hypothesis sends malformed JSON, wrong types, huge and unicode strings (NUL and lone surrogates
included), missing and extra fields, zero and non-numeric divisors, huge numbers, NaN and Infinity
literals, wrong content types, arbitrary methods and path segments and oversized bodies to every
endpoint. Every answer must be below 500, and every 4xx a JSON object with "error" and "message".

How many requests: each test sends one request per example through ``Fuzzer``, which counts them,
and asserts that it sent at least its quota from ``REQUESTS`` (Hypothesis would run fewer examples
than asked if it ran out of new ones). Inputs that once broke the app are sent every time as well
(``@example``), on top of the quota.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

# A failing example may be a megabyte long: report it rather than fail on the warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

# Requests each test sends, at least: one per Hypothesis example.
REQUESTS = {
    "plain_endpoints": 60,
    "any_method": 100,
    "user_bodies": 250,
    "raw_bodies": 150,
    "user_ids": 150,
    "pages": 100,
    "divide_bodies": 200,
    "task_ids": 100,
    "oversized_bodies": 20,
}

# Werkzeug redirects a path with doubled slashes (%2F decodes to one) to the path without them.
MERGE_SLASHES = 308

PATHS = ["/", "/health", "/ready", "/users", "/users/1", "/tasks/divide", "/tasks/0", "/nowhere"]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
CONTENT_TYPES = [
    None,
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/problem+json",
    "text/json",
    "text/plain",
    "text/html; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "json",
    ";;;",
]


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for ``examples`` examples, fast enough for every test run."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written to the project folder; a failure prints its example
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def raw(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates included (which makes it invalid UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


def json_text(value: Any) -> str:
    """JSON with NaN and Infinity written as the (non-standard) literals Python accepts."""
    return json.dumps(value, allow_nan=True)


# Any code point: NUL, control characters and lone surrogates included.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=40)
# Strings far longer than any field allows (but the bodies they make mostly fit the limit).
huge_text = st.builds(
    lambda unit, count: unit * count,
    st.text(any_char, min_size=1, max_size=3),
    st.integers(min_value=100, max_value=60_000),
)
# Integers up to 4,300 digits, the most Python's JSON parser accepts.
huge_ints = st.builds(
    lambda digits, sign: sign * int("9" * digits),
    st.integers(min_value=19, max_value=4300),
    st.sampled_from([1, -1]),
)
# Floats of every kind: NaN and the infinities are sent as the NaN and Infinity literals.
numbers = st.integers() | huge_ints | st.floats() | st.sampled_from([0, 0.0, -0.0, 1e308, 5e-324])
json_scalars = st.none() | st.booleans() | numbers | any_text | huge_text
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=8,
)
extra_fields = st.dictionaries(any_text, json_values, max_size=3)
# Characters that databases, drivers or encoders are known to choke on.
nasty_chars = st.sampled_from(
    ["\x00", "\x1b", "\x7f", "\ud800", "\udfff", "\u200b", "\u202e", "\ufeff", "\U0001f600", "\xe9"]
)
# Email-shaped strings of any other characters (NUL, controls, surrogates), which pass a naive
# pattern and so reach the database.
email_char = nasty_chars | any_char.filter(lambda char: char != "@" and not char.isspace())
email_shaped = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(email_char, min_size=1, max_size=10),
    st.text(email_char, min_size=1, max_size=10),
    st.text(email_char, min_size=1, max_size=4),
)
usernames = st.from_regex(r"[\w.-]{1,130}", fullmatch=True)
# Path segments: arbitrary text, raw or percent-encoded (invalid UTF-8 bytes too), huge numbers.
segments = st.one_of(
    any_text.map(lambda text: quote(raw(text), safe="")),
    st.binary(max_size=20).map(lambda octets: quote(octets, safe="")),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#")),
    st.integers(min_value=0).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda digits: "9" * digits),
    st.sampled_from(["0", "-1", "00001", "1.5", "1e3", "\u0663", "\uff11", "%00", "%zz", ".."]),
)
query_strings = st.one_of(
    st.just(""),
    any_text.map(lambda text: "?" + quote(raw(text), safe="=&")),
)


@st.composite
def broken_json(draw: st.DrawFn) -> str:
    """JSON text with a slice cut out and garbage put in: almost always malformed."""
    text = json_text(draw(json_values))
    start = draw(st.integers(min_value=0, max_value=len(text)))
    end = draw(st.integers(min_value=start, max_value=len(text)))
    garbage = draw(st.sampled_from(["", ",", "}", "]", "'", '"', "\\", "NaN", "/*", "\x00"]))
    return text[:start] + garbage + text[end:]


@st.composite
def nested_json(draw: st.DrawFn) -> str:
    """Arrays or objects nested 512 to 65,536 deep, closed or not.

    Python's parser gives up (RecursionError) past about 1,000 levels on 3.11, 10,000 on 3.13.
    """
    depth: int = 2 ** draw(st.integers(min_value=9, max_value=16))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"x":', "}"), ('{"x":[', "]}")]))
    value = draw(st.sampled_from(["", "1", "NaN"]))
    return opening * depth + value + (closing * depth if draw(st.booleans()) else "")


malformed_bodies = st.one_of(
    st.binary(max_size=100),
    any_text.map(raw),
    broken_json(),
    json_values.map(lambda value: json_text(value).encode("utf-16")),
    json_values.map(lambda value: b"\xef\xbb\xbf" + json_text(value).encode()),
    nested_json(),
    st.integers(min_value=4301, max_value=20_000).map(lambda digits: '{"x": ' + "1" * digits + "}"),
    st.sampled_from(
        [
            "NaN",
            "-Infinity",
            '{"x": NaN, "y": Infinity}',
            '{"x": 1e999, "y": -1e999}',
            '{"x": 1, "x": "1", "y": 0}',
            '{"x": 1, "y": 2,}',
            "{'x': 1, 'y': 2}",
            '{"username": "ada", "email": "ada@example.com"',
            "null",
            "[]",
            '""',
        ]
    ),
)


class Fuzzer:
    """Sends requests through the test client, checks every answer, and counts the requests."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.sent = 0

    def send(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        response = self.client.open(path, method=method, **kwargs)
        self.sent += 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        if 400 <= response.status_code < 500 and method != "HEAD":
            assert response.is_json, (response.status_code, response.text[:500])
            error = response.get_json()
            assert isinstance(error, dict), error
            assert isinstance(error.get("error"), str), error
            assert isinstance(error.get("message"), str), error
            assert error["message"], error
        return response


@pytest.fixture
def fuzzer(client: FlaskClient) -> Fuzzer:
    return Fuzzer(client)


def test_plain_endpoints_ignore_what_they_do_not_read(fuzzer: Fuzzer) -> None:
    @fuzz(REQUESTS["plain_endpoints"])
    @given(
        path=st.sampled_from(["/", "/health", "/ready", "/users"]),
        query=query_strings,
        body=st.one_of(st.none(), any_text.map(raw), st.binary(max_size=50)),
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def check(path: str, query: str, body: bytes | None, content_type: str | None) -> None:
        response = fuzzer.send("GET", path + query, data=body, content_type=content_type)
        if path == "/users" and "page=" in query:  # ?page= and ?per_page= are read: see below
            assert response.status_code in {200, 400}
        else:
            assert response.status_code == 200

    check()
    assert fuzzer.sent >= REQUESTS["plain_endpoints"]


def test_any_method_on_any_path(fuzzer: Fuzzer) -> None:
    methods = st.sampled_from(METHODS) | st.text(
        st.characters(min_codepoint=ord("A"), max_codepoint=ord("Z")), min_size=1, max_size=12
    )

    @fuzz(REQUESTS["any_method"])
    @given(
        method=methods,
        path=st.sampled_from(PATHS),
        body=st.one_of(st.none(), malformed_bodies, json_values.map(json_text)),
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def check(method: str, path: str, body: str | bytes | None, content_type: str | None) -> None:
        fuzzer.send(method, path, data=body, content_type=content_type)

    check()
    assert fuzzer.sent >= REQUESTS["any_method"]


def test_post_users_with_any_fields(fuzzer: Fuzzer) -> None:
    field = st.one_of(json_values, usernames, st.emails(), email_shaped, huge_text)
    nearly_valid = {"username": usernames, "email": st.emails() | email_shaped}

    @fuzz(REQUESTS["user_bodies"])
    @given(
        fields=st.fixed_dictionaries(nearly_valid)
        | st.fixed_dictionaries({}, optional={"username": field, "email": field}),
        extra=extra_fields,
    )
    @example(fields={"username": "ada", "email": "\ud800@example.com"}, extra={})
    @example(fields={"username": "ada", "email": "\x00@example.com"}, extra={})
    def check(fields: dict[str, Any], extra: dict[str, Any]) -> None:
        body = {**extra, **fields}
        response = fuzzer.send(
            "POST", "/users", data=json_text(body), content_type="application/json"
        )
        assert response.status_code in {201, 400, 409, 413}

    check()
    assert fuzzer.sent >= REQUESTS["user_bodies"]


def test_post_endpoints_with_malformed_bodies(fuzzer: Fuzzer) -> None:
    @fuzz(REQUESTS["raw_bodies"])
    @given(
        path=st.sampled_from(["/users", "/tasks/divide"]),
        body=nested_json() | malformed_bodies,
        content_type=st.sampled_from(["application/json", *CONTENT_TYPES]),
    )
    @example(path="/users", body="[" * 100_000, content_type="application/json")
    @example(path="/tasks/divide", body='{"x":' * 100_000, content_type="application/json")
    def check(path: str, body: str | bytes, content_type: str | None) -> None:
        response = fuzzer.send("POST", path, data=body, content_type=content_type)
        assert response.status_code in {201, 202, 400, 409, 413}

    check()
    assert fuzzer.sent >= REQUESTS["raw_bodies"]


def test_list_users_with_any_page(fuzzer: Fuzzer) -> None:
    values = st.one_of(st.integers(min_value=-3, max_value=10**11).map(str), any_text)

    def whole_number_from_1(value: str) -> bool:
        return re.fullmatch(r"[0-9]{1,9}", value) is not None and int(value) >= 1

    @fuzz(REQUESTS["pages"])
    @given(page=values, per_page=values)
    def check(page: str, per_page: str) -> None:
        query = f"page={quote(raw(page))}&per_page={quote(raw(per_page))}"
        response = fuzzer.send("GET", f"/users?{query}")
        if whole_number_from_1(page) and whole_number_from_1(per_page):
            assert response.status_code == 200
            assert response.get_json()["per_page"] == min(int(per_page), 100)
        else:
            assert response.status_code == 400

    check()
    assert fuzzer.sent >= REQUESTS["pages"]


def test_get_user_with_any_id(fuzzer: Fuzzer) -> None:
    user_id = fuzzer.client.post("/users", json={"username": "ada", "email": "ada@example.com"})
    assert user_id.status_code == 201

    @fuzz(REQUESTS["user_ids"])
    @given(segment=segments, query=query_strings)
    @example(segment=str(2**63), query="")
    def check(segment: str, query: str) -> None:
        response = fuzzer.send("GET", f"/users/{segment}{query}")
        assert response.status_code in {200, MERGE_SLASHES, 404}

    check()
    assert fuzzer.sent >= REQUESTS["user_ids"]


def is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or value - value == 0  # NaN and infinities are not


def test_divide_with_any_operands(fuzzer: Fuzzer) -> None:
    operand = st.one_of(numbers, json_values)

    @fuzz(REQUESTS["divide_bodies"])
    @given(
        fields=st.fixed_dictionaries({}, optional={"x": operand, "y": operand}),
        extra=extra_fields,
    )
    def check(fields: dict[str, Any], extra: dict[str, Any]) -> None:
        body = {**extra, **fields}
        response = fuzzer.send(
            "POST", "/tasks/divide", data=json_text(body), content_type="application/json"
        )
        valid = all(is_finite_number(body.get(name)) for name in ("x", "y"))
        if response.status_code != 413:
            assert response.status_code == (202 if valid else 400), body

    check()
    assert fuzzer.sent >= REQUESTS["divide_bodies"]


def test_task_status_with_any_id(fuzzer: Fuzzer) -> None:
    task_ids = st.one_of(
        segments,
        st.uuids().map(str),
        st.uuids().map(lambda uuid: uuid.hex),
        st.uuids().map(lambda uuid: "{" + str(uuid) + "}"),
        st.uuids().map(lambda uuid: f"urn:uuid:{uuid}"),
    )

    @fuzz(REQUESTS["task_ids"])
    @given(task_id=task_ids, query=query_strings)
    def check(task_id: str, query: str) -> None:
        response = fuzzer.send("GET", f"/tasks/{task_id}{query}")
        assert response.status_code in {200, MERGE_SLASHES, 404}

    check()
    assert fuzzer.sent >= REQUESTS["task_ids"]


def test_oversized_bodies_are_refused(app: Flask, fuzzer: Fuzzer) -> None:
    """A JSON body over MAX_CONTENT_LENGTH is refused (413) before it is parsed; a body of any
    other type is refused for its type (400), unread."""
    limit = app.config["MAX_CONTENT_LENGTH"]

    @fuzz(REQUESTS["oversized_bodies"])
    @given(
        path=st.sampled_from(["/users", "/tasks/divide"]),
        excess=st.integers(min_value=1, max_value=64 * 1024),
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def check(path: str, excess: int, content_type: str | None) -> None:
        body = b'{"x": "' + b"9" * (limit + excess) + b'"}'
        response = fuzzer.send("POST", path, data=body, content_type=content_type)
        if Request.from_values(content_type=content_type).is_json:
            assert response.status_code == 413
            assert response.get_json()["error"] == "Request Entity Too Large"
        else:
            assert response.status_code == 400

    check()
    assert fuzzer.sent >= REQUESTS["oversized_bodies"]
