"""The app's project state and its HTTP API through the ASGI app: clicks written before they are acknowledged,
two clients on one project, the token, Host and Origin checks, body limits, and paths that stay inside."""

from __future__ import annotations

import json
import time

import pytest
import torch
from fastapi.testclient import TestClient

from pointseg.app.project import CLICKS, Project, ProjectError
from pointseg.app.server import create_app

TOKEN = "t0ken-for-tests"
ORIGIN = {"origin": "http://127.0.0.1:8765"}


def settled(client: TestClient) -> dict:
    """The latest round's score and click accuracy, once its background work is done."""
    for _ in range(600):
        answer = client.get("/api/accuracy").json()
        if not answer["pending"]:
            return answer
        time.sleep(0.1)
    raise AssertionError("the round's score and click accuracy did not come")


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


def test_a_simulated_analyst_through_the_api_sees_the_mious_evaluate_gives(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from pointseg.app.session import Session
    from pointseg.cli import main
    from pointseg.data.points import corrective_points

    rng = np.random.default_rng(0)
    mask = np.kron(rng.integers(1, 4, (4, 4)), np.ones((32, 32), dtype=np.int64)).astype(np.uint8)  # values 1..3
    mask[:8] = 0  # unlabelled
    colours = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]])
    image = np.clip(colours[mask].transpose(2, 0, 1) + rng.integers(0, 40, (3, 128, 128)), 0, 255).astype(np.uint8)
    profile = {"driver": "GTiff", "width": 128, "height": 128, "crs": "EPSG:32633",
               "transform": from_origin(400000, 5500000, 1, 1)}
    with rasterio.open(tmp_path / "scene.tif", "w", count=3, dtype="uint8", **profile) as ds:
        ds.write(image)
    with rasterio.open(tmp_path / "mask.tif", "w", count=1, dtype="uint8", nodata=0, **profile) as ds:
        ds.write(mask[None])
    table = tmp_path / "classes.csv"
    table.write_text("value,name,r,g,b\n1,red,200,30,30\n2,green,30,200,30\n3,blue,30,30,200\n")
    project = Project.create(tmp_path / "project", {"scene": {"height": 128, "width": 128}},
                             [{"name": n} for n in ("red", "green", "blue")],
                             {"rasters": [str(tmp_path / "scene.tif")], "mask": str(tmp_path / "mask.tif"),
                              "class_values": [1, 2, 3]},
                             {"model": {"encoder_weights": None}, "data": {"cache_dir": str(tmp_path / "cache")},
                              "fast": {"folds": 3}})
    client = TestClient(create_app(project, TOKEN, session=Session(project, project.info["settings"])),
                        base_url="http://127.0.0.1:8765", headers={"authorization": f"Bearer {TOKEN}"})
    labelled = np.where(mask > 0, mask - 1, 255).astype(np.uint8)
    clicks = corrective_points(labelled, labelled, np.zeros((0, 3), np.int64), 6, np.random.default_rng(1))
    for round_ in range(3):
        for row, col, cls in clicks[len(project.clicks()):].tolist():
            assert client.post("/api/clicks", json={"image": "scene", "row": row, "col": col, "class": cls}
                               ).status_code == 201
        assert client.post("/api/update").json()["round"] == round_ + 1
        accuracy = settled(client)  # the score and the click accuracy follow the map, in the background
        reported = accuracy["metrics"]
        assert accuracy["round"] == round_ + 1 and accuracy["click_accuracy"]["folds"] == 3
        run = project.folder / "rounds" / f"{round_ + 1:03d}" / "run"
        assert json.loads((run / "fast.json").read_text())["click_accuracy"]["folds"] == 3
        exported = tmp_path / f"map{round_}.tif"
        exported.write_bytes(client.get("/api/export/map.tif").content)
        assert main(["evaluate", "--map", str(exported), "--mask", str(tmp_path / "mask.tif"), "--classes",
                     str(table), "--out", str(tmp_path / f"m{round_}.json")]) == 0
        evaluated = json.loads((tmp_path / f"m{round_}.json").read_text())
        assert reported["miou"] == pytest.approx(evaluated["miou"], abs=1e-9)
        assert reported["confusion_matrix"] == evaluated["confusion_matrix"]
        with rasterio.open(exported) as ds:
            predicted = ds.read(1)
        clicks = corrective_points(labelled, predicted, clicks, 4, np.random.default_rng(round_))


def test_train_fully_in_the_background_then_its_map_replaces_the_fast_one(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from pointseg.app.session import Session

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
    image[0, :, :32] = 250
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 640, 10, 10)) as ds:
        ds.write(image)
    settings = {"model": {"encoder_weights": None}, "data": {"cache_dir": str(tmp_path / "cache"), "crop": 32},
                "train": {"steps": 3, "batch_size": 2, "amp": False, "checkpoint_every": 3}, "fast": {"folds": 0},
                "optim": {"warmup_steps": 1}}
    project = Project.create(tmp_path / "project", {"scene": {"height": 64, "width": 64}},
                             [{"name": "left"}, {"name": "right"}], {"rasters": [str(tmp_path / "scene.tif")]},
                             settings)
    session = Session(project, settings)
    client = TestClient(create_app(project, TOKEN, session=session), base_url="http://127.0.0.1:8765",
                        headers={"authorization": f"Bearer {TOKEN}"})
    assert client.post("/api/train").json()["detail"].startswith("press Update map first")
    for row, col, cls in ((10, 5, 0), (50, 20, 0), (10, 50, 1), (40, 60, 1)):
        client.post("/api/clicks", json={"image": "scene", "row": row, "col": col, "class": cls})
    client.post("/api/update")
    fast_map = session.classes_of("scene", (0, 0, 64, 64))
    assert client.post("/api/train").json()["state"] == "running"
    assert client.post("/api/train").status_code == 400  # one at a time
    with client.stream("GET", "/api/train/events") as events:
        states = [json.loads(line[6:])["state"] for line in events.iter_lines() if line.startswith("data: ")]
    assert states[-1] == "done" and set(states[:-1]) <= {"running"}
    assert session.full is not None and session.full.cfg["model"]["name"] == "unet-hypercolumn-mobilenetv2"
    full_map = session.classes_of("scene", (0, 0, 64, 64))
    assert full_map is not None and fast_map is not None and full_map.shape == fast_map.shape
    assert client.get("/api/tiles/map/0/0/0.png").status_code == 200
    accuracy = client.get("/api/accuracy").json()
    assert accuracy["model"] == "full" and accuracy["click_accuracy"] is None  # not the fast round's

    # the run's export holds what predict --run needs: not its checkpoints, lock or cached graphs
    import zipfile

    from pointseg.cli import main

    (tmp_path / "run.zip").write_bytes(client.get("/api/export/run.zip").content)
    with zipfile.ZipFile(tmp_path / "run.zip") as archive:
        assert sorted(archive.namelist()) == ["run/config.yaml", "run/loss.png", "run/metrics.jsonl", "run/model.pt",
                                              "run/run.json"]
        archive.extractall(tmp_path / "unpacked")
    assert main(["predict", "--run", str(tmp_path / "unpacked" / "run"), "--input", str(tmp_path / "scene.tif"),
                 "--out", str(tmp_path / "maps")]) == 0
    with rasterio.open(tmp_path / "maps" / "scene.tif") as ds:
        assert ds.read(1).shape == (64, 64)
    (tmp_path / "map.zip").write_bytes(client.get("/api/export/map.zip").content)
    with zipfile.ZipFile(tmp_path / "map.zip") as archive:  # the map with its class names and QGIS style
        assert sorted(archive.namelist()) == ["scene.qml", "scene.tif", "scene.tif.aux.xml"]
        archive.extractall(tmp_path / "map")
    with rasterio.open(tmp_path / "map" / "scene.tif") as ds:
        assert np.array_equal(ds.read(1), full_map) and ds.crs.to_epsg() == 32633
    assert "left" in (tmp_path / "map" / "scene.tif.aux.xml").read_text()

    session.settings = {**settings, "train": {**settings["train"], "steps": 0}}  # a full training that fails
    client.post("/api/train")
    with client.stream("GET", "/api/train/events") as events:
        last = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")][-1]
    assert last["state"] == "failed" and "'train.steps' must be >= 1, got 0" in last["message"]
    session.settings = {**settings, "train": {**settings["train"], "steps": 500}}
    assert client.post("/api/train").json()["state"] == "running"
    cancelled = client.post("/api/train/cancel").json()
    assert cancelled["state"] == "cancelled" and session.training.poll() is not None


def test_a_tile_folder_project_maps_scores_and_exports_every_tile(tmp_path, tiny_loveda):
    import io
    import zipfile

    import numpy as np
    import onnxruntime
    import rasterio

    from pointseg.app.session import Session
    from pointseg.app.start import start_tiles
    from pointseg.cli import main, parser
    from pointseg.data.sources import LoveDA
    from pointseg.metrics import confusion_matrix, summarize

    clicks = tmp_path / "clicks.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--split", "Train", "--per-image", "12",
                 "--out", str(clicks)]) == 0
    sets = ["model.encoder_weights=null", f"data.cache_dir={tmp_path / 'cache'}", "fast.folds=0"]
    args = parser().parse_args(["app", "--data-root", str(tiny_loveda), "--split", "Train", "--points", str(clicks),
                                "--mask", "--project", str(tmp_path / "project"),
                                *[a for s in sets for a in ("--set", s)]])
    project = start_tiles(args)
    ids = ["Rural/0", "Rural/1", "Rural/2", "Rural/3"]
    assert list(project.info["images"]) == ids and len(project.clicks()) == 48
    session = Session(project, project.info["settings"])
    client = TestClient(create_app(project, TOKEN, session=session), base_url="http://127.0.0.1:8765",
                        headers={"authorization": f"Bearer {TOKEN}"})
    assert client.post("/api/classes", json={"name": "x", "color": "#000000"}).json()["detail"].startswith(
        "the classes of a tile folder")
    assert client.get("/api/raster", params={"image": "Rural/2"}).json()["height"] == 64
    assert client.get("/api/raster", params={"image": "../Rural/2"}).status_code == 400
    assert client.get("/api/tiles/image/0/0/0.png", params={"image": "Rural/3"}).status_code == 200
    client.post("/api/update")
    reported = settled(client)["metrics"]

    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    cm = np.zeros((7, 7), dtype=np.int64)
    for ref in source.refs:  # the app's score is the exported maps' against the masks
        answer = client.get("/api/export/map.tif", params={"image": ref.id})
        assert answer.status_code == 200
        with rasterio.open(io.BytesIO(answer.content)) as ds:
            predicted = ds.read(1)
            assert ds.crs is None and predicted.shape == (64, 64)
        tile = client.get("/api/tiles/map/0/0/0.png", params={"image": ref.id})
        assert tile.status_code == 200
        cm += confusion_matrix(torch.from_numpy(predicted.astype(np.int64)),
                               torch.from_numpy(source.read_mask(ref).astype(np.int64)), 7).numpy()
    assert reported == summarize(cm, list(source.classes.names))

    found = client.post("/api/suggestions", params={"k": 3, "image": "Rural/1"}).json()
    assert len(found) == 3 and {s["image"] for s in found} == {"Rural/1"}
    assert project.suggestions() == found  # kept until answered or dismissed
    client.post("/api/clicks", json={"image": "Rural/1", "row": found[0]["row"], "col": found[0]["col"], "class": 1})
    assert project.suggestions() == found[1:]  # answered
    assert client.delete("/api/suggestions", params={"image": "Rural/1"}).json() == {"dismissed": 2}
    assert "no georeferencing" in client.get("/api/export/clicks.gpkg").json()["detail"]
    exported = json.loads(client.get("/api/export/points.json").content)
    assert sorted(exported["images"]) == ids
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/run.zip").content)) as run:
        assert {"run/model.pt", "run/fast.json"} <= set(run.namelist())
        assert not any(name.startswith(("run/checkpoints", "run/onnx", "run/.lock")) for name in run.namelist())
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/map.zip", params={"image": "Rural/1"}).content)) as map_:
        assert sorted(map_.namelist()) == ["Rural_1.qml", "Rural_1.tif", "Rural_1.tif.aux.xml"]
    graph = onnxruntime.InferenceSession(client.get("/api/export/model.onnx").content)
    assert graph.get_inputs()[0].name == "image"

    client.put("/api/view", json={"image": "Rural/1", "center": [20, 30], "zoom": 2})
    reopened = Project.open(project.folder)
    assert reopened.state()["view"] == {"image": "Rural/1", "center": [20, 30], "zoom": 2}
    again = Session(reopened, reopened.info["settings"])  # a restarted server draws the same maps
    for ref in source.refs:
        assert np.array_equal(again.classes_of(ref.id, (0, 0, 64, 64)), session.classes_of(ref.id, (0, 0, 64, 64)))
    assert client.put("/api/view", json={"image": "nope", "center": [1, 2], "zoom": 1}).status_code == 400
    assert client.put("/api/view", json={"image": "Rural/1", "center": "x", "zoom": 1}).status_code == 400


def test_a_setting_that_cannot_work_stops_the_app_at_start_and_set_mends_a_project(tmp_path):
    """A weights file that is not there stopped only "Update map" (with a JSON parse error on the page), and the
    stored bad path could not be changed: now the app refuses to start, in one line, before anything is written;
    ``--project DIR --set`` changes a project's settings and says so; the start command run again reopens it."""
    import subprocess
    import sys

    from tests.test_app_browser import free_port, start_app, write_scene

    scene = write_scene(tmp_path / "scene.tif")
    project = tmp_path / "project"
    start = ["app", "--raster", str(scene), "--project", str(project), "--port", str(free_port()),
             "--set", f"data.cache_dir={tmp_path / 'cache'}"]

    def refused(*args: str) -> str:
        ran = subprocess.run([sys.executable, "-m", "pointseg", *args], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 2, ran.stdout + ran.stderr
        return ran.stderr.strip().splitlines()[-1]

    missing = tmp_path / "nope.pth"
    assert refused(*start, "--set", f"model.encoder_weights={missing}") == (
        f"pointseg: error: model.encoder_weights={missing}: {missing}: encoder weights file not found")
    assert refused(*start, "--mask", str(tmp_path / "no-mask.tif")).endswith("no-mask.tif: no such reference mask "
                                                                              "raster (--mask)")
    assert not (project / "project.json").exists()
    process, _ = start_app(start[1:] + ["--set", "model.encoder_weights=null"], tmp_path / "first.log")
    process.kill()
    process.wait(timeout=10)
    info = json.loads((project / "project.json").read_text())
    assert info["settings"]["model"]["encoder_weights"] is None
    assert refused("app", "--project", str(project), "--set", f"model.encoder_weights={missing}").endswith(
        f"{missing}: encoder weights file not found")
    assert json.loads((project / "project.json").read_text()) == info  # refused before anything was written
    process, _ = start_app(["--project", str(project), "--port", str(free_port()), "--set", "fast.softmax.c=0.5"],
                           tmp_path / "set.log")
    process.kill()
    process.wait(timeout=10)
    assert "settings changed for the next rounds (fast.softmax.c: " in (tmp_path / "set.log").read_text()
    assert json.loads((project / "project.json").read_text())["settings"]["fast"]["softmax"]["c"] == 0.5
    process, _ = start_app(["--raster", str(scene), "--project", str(project), "--port", str(free_port())],
                           tmp_path / "again.log")
    process.kill()
    process.wait(timeout=10)
    assert "reopened the project this command started" in (tmp_path / "again.log").read_text()
    other = write_scene(tmp_path / "other.tif")
    assert "holds a project on other images" in refused("app", "--raster", str(other), "--project", str(project))
