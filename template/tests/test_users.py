from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

ADA = {"username": "ada", "email": "ada@example.com"}


def test_create_user(client: FlaskClient) -> None:
    response = client.post("/users", json=ADA)
    assert response.status_code == 201
    user = response.get_json()
    assert user == {"id": user["id"], **ADA}
    assert response.headers["Location"] == f"/users/{user['id']}"


def test_created_user_is_read_back(client: FlaskClient) -> None:
    user_id = client.post("/users", json=ADA).get_json()["id"]
    response = client.get(f"/users/{user_id}")
    assert response.status_code == 200
    assert response.get_json() == {"id": user_id, **ADA}


def names(page: dict[str, Any]) -> list[str]:
    return [user["username"] for user in page["users"]]


def test_list_users_in_creation_order(client: FlaskClient) -> None:
    assert client.get("/users").get_json() == {
        "users": [],
        "page": 1,
        "per_page": 20,
        "total": 0,
        "pages": 0,
        "next": None,
        "prev": None,
    }
    client.post("/users", json=ADA)
    client.post("/users", json={"username": "grace", "email": "grace@example.com"})
    assert names(client.get("/users").get_json()) == ["ada", "grace"]


def test_users_come_a_page_at_a_time(client: FlaskClient) -> None:
    for number in range(5):
        user = {"username": f"user{number}", "email": f"user{number}@example.com"}
        assert client.post("/users", json=user).status_code == 201
    first = client.get("/users?per_page=2").get_json()
    assert names(first) == ["user0", "user1"]
    assert (first["total"], first["pages"], first["prev"]) == (5, 3, None)
    second = client.get(first["next"]).get_json()
    assert names(second) == ["user2", "user3"]
    last = client.get(second["next"]).get_json()
    assert names(last) == ["user4"]
    assert (last["next"], last["prev"]) == (None, "/users?page=2&per_page=2")
    assert client.get("/users?page=4&per_page=2").get_json()["users"] == []


def test_pages_are_at_most_100_users(client: FlaskClient) -> None:
    assert client.get("/users?per_page=1000").get_json()["per_page"] == 100


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=two",
        "page=1.5",
        "page=",
        "page=\u00b2",
        "per_page=0",
        "page=" + "9" * 20,
    ],
)
def test_a_page_that_is_not_a_whole_number_from_1_is_400(client: FlaskClient, query: str) -> None:
    response = client.get(f"/users?{query}")
    assert response.status_code == 400
    assert list(response.get_json()["fields"]) == [query.split("=")[0]]


def test_unknown_user_is_404(client: FlaskClient) -> None:
    response = client.get("/users/999")
    assert response.status_code == 404
    assert response.get_json()["message"] == "No user with id 999."


@pytest.mark.parametrize("user_id", ["2147483648", "9223372036854775808", "9" * 4300])
def test_user_id_beyond_any_column_is_404(client: FlaskClient, user_id: str) -> None:
    response = client.get(f"/users/{user_id}")
    assert response.status_code == 404
    assert response.get_json()["message"] == f"No user with id {user_id}."


@pytest.mark.parametrize(
    "duplicate",
    [
        {"username": "ada", "email": "other@example.com"},
        {"username": "other", "email": "ada@example.com"},
    ],
)
def test_duplicate_user_is_409(client: FlaskClient, duplicate: dict[str, str]) -> None:
    assert client.post("/users", json=ADA).status_code == 201
    response = client.post("/users", json=duplicate)
    assert response.status_code == 409
    assert "already exists" in response.get_json()["message"]
    assert client.get("/users").get_json()["total"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ada@example.com"}, "username"),
        ({"username": "ada"}, "email"),
        ({"username": "", "email": "ada@example.com"}, "username"),
        ({"username": 42, "email": "ada@example.com"}, "username"),
        ({"username": "a" * 129, "email": "ada@example.com"}, "username"),
        ({"username": "ada lovelace", "email": "ada@example.com"}, "username"),
        ({"username": "ada", "email": "not-an-email"}, "email"),
        ({"username": "ada", "email": ["ada@example.com"]}, "email"),
        ({"username": "ada", "email": "a" * 250 + "@example.com"}, "email"),
        ({"username": "ada", "email": "ada\x00@example.com"}, "email"),
        ({"username": "ada", "email": "ada\x1b@example.com"}, "email"),
        ({"username": "ada", "email": "\ud800@example.com"}, "email"),
        ({"username": "ada\ud800", "email": "ada@example.com"}, "username"),
    ],
)
def test_invalid_fields_are_400(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/users", json=body)
    assert response.status_code == 400
    error = response.get_json()
    assert list(error["fields"]) == [field]
    assert field in error["message"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("username=ada", "application/x-www-form-urlencoded"),
        ("{not json", "application/json"),
        ('["ada", "ada@example.com"]', "application/json"),
        ("", "application/json"),
        ("[" * 100_000, "application/json"),
    ],
)
def test_body_must_be_a_json_object(client: FlaskClient, data: str, content_type: str) -> None:
    response = client.post("/users", data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.is_json
    assert response.get_json()["error"] == "Bad Request"
