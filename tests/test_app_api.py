"""The app's project state and its HTTP API through the ASGI app: clicks written before they are acknowledged,
two clients on one project, the token, Host and Origin checks, body limits, and paths that stay inside."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from pointseg.app.project import CLICKS, Project, ProjectError
from pointseg.app.server import create_app

TOKEN = "t0ken-for-tests"
ORIGIN = {"origin": "http://127.0.0.1:8765"}


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "project", {"scene": {"height": 100, "width": 80}},
                          [{"name": "water"}, {"name": "<img src=x onerror=alert(1)>", "color": "#FF0000"}],
                          {"rasters": ["scene.tif"]})


@pytest.fixture
def client(project):
    client = TestClient(create_app(project, TOKEN), base_url="http://127.0.0.1:8765")
    assert client.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303  # the cookie is set
    return client


def test_a_click_is_on_disk_when_it_is_acknowledged_and_two_clients_keep_each_others(project, client):
    other = TestClient(create_app(Project.open(project.folder), TOKEN), base_url="http://127.0.0.1:8765")
    other.get(f"/?token={TOKEN}", follow_redirects=False)
    first = client.post("/api/clicks", json={"image": "scene", "row": 5, "col": 6, "class": 0}, headers=ORIGIN)
    assert first.status_code == 201
    on_disk = json.loads((project.folder / CLICKS).read_text())["clicks"]
    assert on_disk == [{"id": 1, "image": "scene", "row": 5, "col": 6, "class": 0}]
    assert other.post("/api/clicks", json={"image": "scene", "row": 7, "col": 8, "class": 1},
                      headers=ORIGIN).json()["id"] == 2
    assert [c["id"] for c in client.get("/api/state").json()["clicks"]] == [1, 2]
    assert client.patch("/api/clicks/2", json={"class": 0}, headers=ORIGIN).json()["class"] == 0
    assert client.delete("/api/clicks/1", headers=ORIGIN).status_code == 204
    state = Project.open(project.folder).state()  # a restarted server sees the same
    assert state["clicks"] == [{"id": 2, "image": "scene", "row": 7, "col": 8, "class": 0}]
    assert state["counts"] == [1, 0]
    assert client.delete("/api/clicks/1", headers=ORIGIN).json() == {"detail": "no click 1"}


@pytest.mark.parametrize("click, reason", [
    ({"image": "other", "row": 1, "col": 1, "class": 0}, "not in the project"),
    ({"image": "scene", "row": 100, "col": 1, "class": 0}, "outside scene"),
    ({"image": "scene", "row": 1, "col": 1, "class": 2}, "not in the palette"),
    ({"image": "scene", "row": "1", "col": 1, "class": 0}, "whole numbers"),
])
def test_bad_clicks_are_refused_with_a_reason(client, click, reason):
    answer = client.post("/api/clicks", json=click, headers=ORIGIN)
    assert answer.status_code == 400 and reason in answer.json()["detail"]
    assert client.post("/api/clicks", content=b"{not json", headers={**ORIGIN, "content-type": "application/json"}
                       ).status_code == 400


def test_classes_are_added_checked_and_kept_as_text(project, client):
    assert client.post("/api/classes", json={"name": "road", "color": "#00ff00"}, headers=ORIGIN).status_code == 201
    assert client.post("/api/classes", json={"name": "road", "color": "#00ff00"}, headers=ORIGIN).status_code == 400
    assert client.post("/api/classes", json={"name": "x", "color": "red"}, headers=ORIGIN).status_code == 400
    names = [c["name"] for c in Project.open(project.folder).state()["classes"]]
    assert names == ["water", "<img src=x onerror=alert(1)>", "road"]
    assert "innerHTML" not in client.get("/static/app.js").text  # the page writes user text as text only
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(project.folder, {}, [], {})


def test_without_the_token_nothing_answers(project):
    bare = TestClient(create_app(project, TOKEN), base_url="http://127.0.0.1:8765")
    assert bare.get("/api/state").status_code == 401 and "no token" in bare.get("/api/state").json()["detail"]
    assert bare.get("/").status_code == 401
    assert bare.get("/?token=wrong").status_code == 401
    assert bare.get("/api/state", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    cookie = bare.get(f"/?token={TOKEN}", follow_redirects=False).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_other_hosts_and_origins_are_refused(project, client):
    rebound = TestClient(create_app(project, TOKEN), base_url="http://evil.example:8765")
    assert rebound.get(f"/?token={TOKEN}").status_code == 403  # DNS rebinding: the Host names another server
    click = {"image": "scene", "row": 1, "col": 1, "class": 0}
    assert client.post("/api/clicks", json=click).status_code == 403  # no Origin
    assert client.post("/api/clicks", json=click, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/clicks", json=click, headers={"origin": "http://localhost:8765"}).status_code == 201


def test_bodies_are_limited(client):
    big = json.dumps({"name": "x" * (2 << 20), "color": "#000000"})
    answer = client.post("/api/classes", content=big, headers={**ORIGIN, "content-type": "application/json"})
    assert answer.status_code == 413


@pytest.mark.parametrize("path", ["/static/../project.py", "/static/%2e%2e/project.py", "/static/..%2fserver.py",
                                  "/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/api/../../etc/passwd"])
def test_paths_stay_inside_the_static_folder(client, path):
    answer = client.get(path)
    assert answer.status_code == 404 and "import" not in answer.text and "root:" not in answer.text
